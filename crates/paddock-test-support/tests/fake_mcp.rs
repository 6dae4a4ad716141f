//! The fake MCP server answers the MCP handshake over Streamable HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use paddock_test_support::FakeMcp;
use serde_json::json;

#[tokio::test]
async fn initialize_is_answered_as_sse_or_json() {
    let mcp = FakeMcp::start().await;
    let r = reqwest::Client::new()
        .post(mcp.url())
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r.headers().get("content-type").cloned();
    let body = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{status} {ct:?} {body}");
    assert!(ct.is_some(), "{status} {body}");
    assert_eq!(mcp.requests().len(), 1);
}
