//! Graceful shutdown of the real binary: SIGTERM (or SIGINT, Ctrl-C) while an event stream is
//! open and a run is held mid-stream by the model. The process closes the stream, exits 0 within the grace
//! period, and the next start resumes the run instead of losing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{End, Home, Paddock, WAIT, describe, fake_model_config};
use paddock_test_support::{FakeOpenAi, Gate, Script};
use serde_json::json;

/// `shutdown_grace_secs` of [`fake_model_config`].
const GRACE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn sigterm_mid_run_exits_0_promptly_and_the_run_resumes_after_restart() {
    stop_mid_run_and_resume("TERM").await;
}

#[tokio::test]
async fn sigint_mid_run_exits_0_promptly_and_the_run_resumes_after_restart() {
    stop_mid_run_and_resume("INT").await;
}

/// Sends `signal` while a run is held mid-stream, then restarts; see the module documentation.
async fn stop_mid_run_and_resume(signal: &str) {
    let fake = FakeOpenAi::start().await;
    let home = Home::new(&fake_model_config(&fake.base_url()));
    let mut server = Paddock::start(&home).await;
    let key = server.admin_key.clone().unwrap();
    let api = server.api(&key);
    let dep = api
        .create_ready_deployment(&json!({
            "customer_id": "cus_shutdown",
            "name": "Shutdown agent",
            "system_prompt": "You are a test agent.",
        }))
        .await;
    let dep_id = dep["deployment_id"].as_str().unwrap().to_owned();

    let mut stream = api.events(&dep_id, "").await;
    let gate = Gate::new();
    fake.push(
        Script::new()
            .text("Partial")
            .hold(&gate)
            .text(" answer.")
            .usage(9, 2),
    );
    let accepted = api
        .send_message(&dep_id, &json!({"content": "Tell me something."}))
        .await;
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    gate.reached().await;
    let token = stream
        .until(WAIT, |e| {
            e.event == "token" && e.data["run_id"] == run_id.as_str()
        })
        .await;

    let signalled = Instant::now();
    server.signal(signal);
    // The open stream is closed by the server, not left hanging until the grace period.
    let end = stream.until_end(GRACE).await;
    assert_eq!(end, End::Clean, "the event stream ends cleanly on shutdown");
    let status = server.wait_exit(GRACE + Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}"
    );
    assert!(
        took < GRACE,
        "shutdown took {took:?}, not less than the grace period {GRACE:?}: something held it"
    );
    let logs = server.stderr.snapshot().join("\n");
    assert!(
        !logs.contains("did not finish within the grace period"),
        "in-flight requests held the shutdown:\n{logs}"
    );
    eprintln!("SIG{signal} to exit: {took:?}");
    let all = describe(&stream.seen);
    assert!(
        !stream.seen.iter().any(|e| e.is_terminal(&run_id)),
        "shutdown must park the run, not end it: {all}"
    );
    let last_id = stream.seen.last().unwrap().id.clone();
    drop(server);

    // The next start resumes the run; the redone call gets the whole answer.
    fake.push(Script::new().text("Whole answer.").usage(9, 3));
    let server = Paddock::start(&home).await;
    assert_eq!(server.admin_key, None);
    let api = server.api(&key);
    let mut resumed = api.events(&dep_id, &format!("?after={last_id}")).await;
    let terminal = resumed.until(WAIT, |e| e.is_terminal(&run_id)).await;
    let all = describe(&resumed.seen);
    let first = &resumed.seen[0];
    assert!(
        first.is_status(&run_id, "running") && first.data["reason"] == "resumed",
        "the first event after the restart is run_status running/resumed: {all}"
    );
    assert!(terminal.is_status(&run_id, "completed"), "{all}");
    let agent = resumed
        .seen
        .iter()
        .find(|e| e.event == "message" && e.data["role"] == "agent")
        .unwrap_or_else(|| panic!("no agent message after the restart: {all}"));
    assert_eq!(agent.data["content"], "Whole answer.", "{all}");
    let redone = resumed
        .seen
        .iter()
        .find(|e| e.event == "token")
        .unwrap_or_else(|| panic!("no token after the restart: {all}"));
    assert_eq!(
        redone.data["step"], token.data["step"],
        "the interrupted model call is redone under the same step (spec §5.4): {all}"
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "one call before the shutdown, one redone after it"
    );
    let run = api
        .get_ok(&format!("/v1/deployments/{dep_id}/runs/{run_id}"))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
}
