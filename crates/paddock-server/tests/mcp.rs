//! MCP servers in runs (spec §14, §13.3, §6.1, §1.13; guarantee 37): discovery filtered by
//! `tools`, model-facing names, calls with `tool`/`origin` events, the customer and deployment
//! ids on every request, the destructive default policy, call timeouts and error results, an
//! unreachable server as a run warning, and the outbound address policy.
//!
//! The MCP server is `FakeMcp` on 127.0.0.1, which the test settings allow-list (loopback is
//! refused by default). Waits are on events, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use paddock_client::SseEvent;
use paddock_server::ServerSettings;
use paddock_test_support::{FakeMcp, Script};
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

fn allow_loopback(s: &mut ServerSettings) {
    s.outbound.allowed_hosts = vec!["127.0.0.1".to_owned()];
}

fn offered_tools(t: &TestServer, index: usize) -> Vec<String> {
    t.fake.requests()[index]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn find<'a>(events: &'a [SseEvent], kind: &str, call_id: &str) -> &'a SseEvent {
    events
        .iter()
        .find(|e| e.event == kind && e.data["call_id"] == call_id)
        .unwrap_or_else(|| panic!("no {kind} for {call_id}: {events:#?}"))
}

async fn run_to_end(t: &TestServer, dep: &str, text: &str) -> (String, Vec<SseEvent>) {
    let mut stream = open_events(&t.admin, dep).await;
    let run_id = t
        .admin
        .send_message(dep, text, None, &[])
        .await
        .unwrap()
        .run_id;
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    (run_id, events)
}

#[tokio::test]
async fn allowed_tools_are_offered_by_model_facing_name_and_calls_round_trip_with_ids() {
    let mcp = FakeMcp::start().await;
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{
            "name": "media", "url": mcp.url(),
            "tools": ["echo", "create_video", "fail", "not_listed"],
        }]}))
        .await;
    let dep = d.deployment_id.clone();
    t.fake
        .push(Script::new().tool_call("call_echo", "media__echo", json!({"text": "hi"})));
    t.fake.push(Script::new().text("Done."));
    let (run_id, events) = run_to_end(&t, &dep, "Echo something.").await;
    let last = events.last().unwrap();
    assert_eq!(last.data["status"], "completed", "{events:#?}");

    let run = t.admin.get_run(&dep, &run_id).await.unwrap();
    assert!(
        run.warnings.is_empty(),
        "{:?} {:#?}",
        run.warnings,
        mcp.requests()
    );
    // Exactly the allowed tools the server lists, named `<server>__<tool>`, after built-ins.
    let offered = offered_tools(&t, 0);
    let mcp_tools: Vec<&String> = offered.iter().filter(|n| n.contains("__")).collect();
    assert_eq!(
        mcp_tools,
        ["media__create_video", "media__echo", "media__fail"],
        "{offered:?}"
    );

    // Events carry the server's tool name and the server as origin.
    let call = find(&events, "tool_call", "call_echo");
    assert_eq!(
        (call.data["tool"].as_str(), call.data["origin"].as_str()),
        (Some("echo"), Some("media"))
    );
    let result = find(&events, "tool_result", "call_echo");
    assert_eq!(result.data["tool"], "echo");
    assert_eq!(result.data["origin"], "media");
    assert_eq!(result.data["is_error"], false);
    let echoed = &result.data["result"];
    assert_eq!(echoed["headers"]["x-customer-id"], d.customer_id);
    assert_eq!(echoed["headers"]["x-deployment-id"], dep);
    assert_eq!(echoed["meta"]["customer_id"], d.customer_id);
    assert_eq!(echoed["arguments"], json!({"text": "hi"}));
    // The model saw the same result under the model-facing name.
    let messages = t.fake.requests()[1]["messages"].as_array().unwrap().clone();
    let tool_msg = messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_echo")
        .unwrap();
    let seen: Value = serde_json::from_str(tool_msg["content"].as_str().unwrap()).unwrap();
    assert_eq!(seen["meta"]["customer_id"], d.customer_id);

    // Every HTTP request to the server carried both ids; list and call carried `_meta`.
    let requests = mcp.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.rpc_method() == Some("tools/list"))
    );
    assert!(
        requests
            .iter()
            .any(|r| r.rpc_method() == Some("tools/call"))
    );
    for r in &requests {
        assert_eq!(
            r.headers.get("x-customer-id"),
            Some(&d.customer_id),
            "{r:?}"
        );
        assert_eq!(r.headers.get("x-deployment-id"), Some(&dep), "{r:?}");
        if matches!(r.rpc_method(), Some("tools/list" | "tools/call")) {
            assert_eq!(
                r.body["params"]["_meta"]["customer_id"], d.customer_id,
                "{r:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_destructive_tool_pauses_by_default_and_runs_after_approval() {
    let mcp = FakeMcp::start().await;
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "media", "url": mcp.url()}]}))
        .await;
    let dep = d.deployment_id.clone();
    t.fake.push(Script::new().tool_call(
        "call_video",
        "media__create_video",
        json!({"text": "cats"}),
    ));
    let mut stream = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Make a video.", None, &[])
        .await
        .unwrap()
        .run_id;
    let seen = collect_until(&mut stream, |e| {
        is_terminal(e, &run_id)
            || (e.event == "run_status" && e.data["status"] == "waiting_on_human")
    })
    .await;
    let request = seen
        .iter()
        .find(|e| e.event == "steering_request")
        .unwrap_or_else(|| panic!("no pause: {seen:#?}"));
    let req = &request.data;
    assert_eq!(req["kind"], "tool_call", "{request:?}");
    assert_eq!(req["tool"], "create_video");
    assert_eq!(req["origin"], "media");
    assert_eq!(req["summary"], "Run tool media__create_video?");
    assert!(
        !mcp.requests()
            .iter()
            .any(|r| r.rpc_method() == Some("tools/call")),
        "the held call must not execute before approval"
    );
    let request_id = req["request_id"].as_str().unwrap().to_owned();
    t.fake.push(Script::new().text("Video made."));
    t.admin
        .respond_steering(&dep, &run_id, &request_id, "approve", None)
        .await
        .unwrap();
    let rest = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    assert_eq!(
        rest.last().unwrap().data["status"],
        "completed",
        "{rest:#?}"
    );
    let result = find(&rest, "tool_result", "call_video");
    assert_eq!(result.data["result"]["video"], "created");
    assert_eq!(result.data["origin"], "media");
}

#[tokio::test]
async fn a_slow_call_times_out_and_an_mcp_error_is_an_error_result() {
    let mcp = FakeMcp::start().await;
    mcp.slow_for(Duration::from_secs(10));
    let t = TestServer::start_with(|s| {
        allow_loopback(s);
        s.mcp_call_timeout = Duration::from_millis(500);
    })
    .await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "media", "url": mcp.url()}]}))
        .await;
    t.fake.push(
        Script::new()
            .tool_call("call_slow", "media__slow", json!({}))
            .tool_call("call_fail", "media__fail", json!({})),
    );
    t.fake.push(Script::new().text("Both failed."));
    let (_, events) = run_to_end(&t, &d.deployment_id, "Try both.").await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
    let slow = find(&events, "tool_result", "call_slow");
    assert_eq!(slow.data["is_error"], true, "{slow:?}");
    let fail = find(&events, "tool_result", "call_fail");
    assert_eq!(fail.data["is_error"], true, "{fail:?}");
    assert_eq!(
        fail.data["result"],
        json!({"content": [{"type": "text", "text": "the tool broke"}]})
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_run_warning_and_the_run_completes() {
    let mcp = FakeMcp::start().await;
    let url = mcp.url();
    mcp.stop();
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "gone", "url": url}]}))
        .await;
    t.fake.push(Script::new().text("Working without it."));
    let (run_id, events) = run_to_end(&t, &d.deployment_id, "Hello.").await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
    let run = t.admin.get_run(&d.deployment_id, &run_id).await.unwrap();
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    assert_eq!(run.warnings[0]["code"], "mcp_unavailable");
    assert_eq!(run.warnings[0]["server"], "gone");
    assert!(
        run.warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("gone")
    );
    // The model was told, and offered no tool of that server.
    let request = &t.fake.requests()[0];
    assert!(request.to_string().contains("`gone`"), "{request}");
    assert!(!offered_tools(&t, 0).iter().any(|n| n.starts_with("gone__")));
}

#[tokio::test]
async fn a_loopback_server_is_refused_unless_the_operator_allows_it() {
    let mcp = FakeMcp::start().await;
    // Default policy: loopback is refused before any connection.
    let t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "local", "url": mcp.url()}]}))
        .await;
    t.fake.push(Script::new().text("No tools."));
    let (run_id, events) = run_to_end(&t, &d.deployment_id, "Hello.").await;
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let run = t.admin.get_run(&d.deployment_id, &run_id).await.unwrap();
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    let message = run.warnings[0]["message"].as_str().unwrap();
    assert!(
        message.contains("127.0.0.1") && message.contains("refused"),
        "{message}"
    );
    assert!(
        mcp.requests().is_empty(),
        "no request may reach a refused address"
    );
}
