//! Spec §15.3: a secret's value never appears in the logs, at any level. The real `paddock`
//! binary runs with `RUST_LOG=trace` (everything every crate logs, rmcp's JSON-RPC messages
//! included) while a secret travels in an MCP header, the fixture MCP server echoes it back in a
//! tool result, and the model quotes it in its answer; its whole stderr must not hold the value
//! in any form a log line could carry it (as is, or escaped by `Debug` or JSON).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{Home, Paddock, WAIT, describe, fake_model_config};
use paddock_test_support::{FakeMcp, FakeOpenAi, Script};
use serde_json::json;

/// The secret. A quote and a backslash make its `Debug` and JSON forms differ from it, so the
/// test also sees a value that reaches a log line escaped.
const VALUE: &str = "tok-\"LOGSECRET\\4711-zq";

/// Every form in which `VALUE` could show up in a log line: as is, `Debug`-escaped (fields
/// logged with `?`), JSON-escaped (`--log-format json`), and both nested either way.
fn forms() -> Vec<String> {
    let unquote = |s: String| s[1..s.len() - 1].to_owned();
    let debug = unquote(format!("{VALUE:?}"));
    let json = unquote(serde_json::to_string(VALUE).unwrap());
    vec![
        VALUE.to_owned(),
        json.clone(),
        unquote(serde_json::to_string(&debug).unwrap()),
        unquote(format!("{json:?}")),
        debug,
    ]
}

/// Runs the MCP + secret flow on a `paddock serve` started with `env`, stops it, and returns
/// its whole stderr with the deployment's id.
async fn logs_of_the_mcp_secret_flow(env: &[(&str, &str)]) -> (Vec<String>, String) {
    let fake = FakeOpenAi::start().await;
    let mcp = FakeMcp::start().await;
    let home = Home::new(&format!(
        "{}\n[outbound]\nallowed_hosts = [\"127.0.0.1\"]\n",
        fake_model_config(&fake.base_url())
    ));
    let mut server = Paddock::start_with_env(&home, env).await;
    let api = server.api(&server.admin_key.clone().unwrap());

    let secret = api
        .post_expect(
            "/v1/secrets",
            &json!({"value": VALUE, "name": "media-token"}),
            201,
        )
        .await;
    let dep = api
        .create_ready_deployment(&json!({
            "customer_id": "cus_logs",
            "name": "Logs agent",
            "system_prompt": "You are a test agent.",
            "sandbox": {"enabled": false},
            "secrets": {"MEDIA_TOKEN": secret["secret_id"]},
            "mcp_servers": [{"name": "media", "url": mcp.url(),
                             "headers": {"Authorization": "Bearer ${MEDIA_TOKEN}"}}],
        }))
        .await;
    let dep_id = dep["deployment_id"].as_str().unwrap().to_owned();
    let mut live = api.events(&dep_id, "").await;

    // The model calls `echo` (the server answers the request headers), then quotes the value.
    fake.push(Script::new().tool_call("call_echo", "media__echo", json!({})));
    fake.push(Script::new().text(format!("Your token is {VALUE}, keep it safe.")));
    let sent = api
        .send_message(&dep_id, &json!({"content": "Check the headers."}))
        .await;
    let run_id = sent["run_id"].as_str().unwrap().to_owned();
    let done = live.until(WAIT, |e| e.is_terminal(&run_id)).await;
    assert!(
        done.is_status(&run_id, "completed"),
        "{}",
        describe(&live.seen)
    );

    // The flow really happened: the server got the value, the model got the redacted echo.
    let calls = mcp.requests();
    assert!(
        calls.iter().any(|r| r.rpc_method() == Some("tools/call")),
        "{calls:?}"
    );
    let bearer = format!("Bearer {VALUE}");
    for r in &calls {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(bearer.as_str())
        );
    }
    let second = fake.requests()[1].to_string();
    assert!(second.contains("Bearer [secret:MEDIA_TOKEN]"), "{second}");

    // Stop it and read its stderr to the end (`stopped` is the last thing it logs).
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let last = |l: &String| l.ends_with(": stopped") || l.contains(r#""message":"stopped""#);
    while !server.stderr.snapshot().iter().any(last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `stopped` line on stderr:\n{}",
            server.stderr.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (server.stderr.snapshot(), dep_id)
}

/// Checks what an operator finds in `lines`: the run's activity down to rmcp's trace output,
/// the echo of the value redacted, and the value itself in no form.
fn assert_logs_hold_no_secret(lines: &[String], dep_id: &str) {
    let all = lines.join("\n");
    // Not vacuous: trace output of every layer of the flow is there.
    assert!(lines.len() > 100, "only {} log lines:\n{all}", lines.len());
    let messages = format!("/v1/deployments/{dep_id}/messages");
    assert!(
        all.contains(&messages),
        "no request to {messages} in the logs"
    );
    assert!(all.contains("TRACE"), "no trace-level lines in the logs");
    assert!(
        all.contains("CallToolRequest"),
        "rmcp's trace of the tools/call is not in the logs"
    );
    for form in forms() {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(&form)).collect();
        assert!(
            leaks.is_empty(),
            "{} log lines hold the secret as `{form}`, e.g.:\n{}",
            leaks.len(),
            leaks
                .iter()
                .take(5)
                .map(|l| l.chars().take(600).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The tool result carrying the echo was logged, with the value redacted.
    assert!(
        all.contains("[secret:MEDIA_TOKEN]"),
        "the echoed tool result is not in the logs"
    );
}

#[tokio::test]
async fn no_secret_value_reaches_the_text_logs_at_trace_level() {
    let (lines, dep_id) = logs_of_the_mcp_secret_flow(&[("RUST_LOG", "trace")]).await;
    assert_logs_hold_no_secret(&lines, &dep_id);
}

#[tokio::test]
async fn no_secret_value_reaches_the_json_logs_at_trace_level() {
    let (lines, dep_id) =
        logs_of_the_mcp_secret_flow(&[("RUST_LOG", "trace"), ("PADDOCK_LOG_FORMAT", "json")]).await;
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    assert_logs_hold_no_secret(&lines, &dep_id);
}
