//! The spine end to end: a message in, the fake model's streamed answer out on SSE.

use crate::common;

use paddock_test_support::Script;
use serde_json::json;

use common::{TestServer, collect_until, is_terminal, open_events};

#[tokio::test]
async fn a_message_streams_tokens_and_completes() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    t.fake
        .push(Script::new().text("Hello").text(", world").usage(10, 2));
    let mut events = open_events(&t.admin, &d.deployment_id).await;

    let accepted = t
        .admin
        .send_message(&d.deployment_id, "Say hello", None, &[])
        .await
        .expect("send");
    assert_eq!(accepted.status, "running");
    assert_eq!(accepted.thread_id, d.thread_id);

    let seen = collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"message"), "{kinds:?}");
    assert_eq!(seen[1].event, "run_status");
    assert_eq!(seen[1].data["reason"], "started");
    let text: String = seen
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["delta"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(text, "Hello, world");
    let last = seen.last().expect("terminal");
    assert_eq!(last.data["status"], "completed", "{last:?}");
    assert_eq!(last.data["usage"]["input_tokens"], 10);

    let run = t
        .admin
        .get_run(&d.deployment_id, &accepted.run_id)
        .await
        .expect("run");
    assert_eq!(run.status, "completed");
    let thread = t
        .admin
        .get_thread(&d.deployment_id, &d.thread_id, None, None)
        .await
        .expect("thread");
    let roles: Vec<&str> = thread.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "agent"]);
    assert_eq!(thread.messages[1].content, "Hello, world");
}

/// Providers only promise call ids unique within a conversation (some servers number them
/// `call_0`, `call_1`…): two runs of two deployments reusing an id both complete, and the
/// second call of a run may reuse the first run's id on the same thread.
#[tokio::test]
async fn a_call_id_reused_by_the_provider_in_other_runs_is_recorded_per_run() {
    let t = TestServer::start().await;
    let a = t.ready_deployment(json!({})).await;
    let b = t.ready_deployment(json!({})).await;
    for d in [&a, &b, &a] {
        t.fake.push(Script::new().tool_call(
            "call_0",
            "write_file",
            json!({"path": "note.txt", "content": "hi"}),
        ));
        t.fake.push(Script::new().text("done"));
        let mut events = open_events(&t.admin, &d.deployment_id).await;
        let accepted = t
            .admin
            .send_message(&d.deployment_id, "Write a note", None, &[])
            .await
            .expect("send");
        let seen = collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await;
        let last = seen.last().expect("terminal");
        assert_eq!(last.data["status"], "completed", "{seen:#?}");
        let result = seen
            .iter()
            .find(|e| e.event == "tool_result")
            .expect("a tool_result");
        assert_eq!(result.data["call_id"], "call_0");
        assert_eq!(result.data["is_error"], false, "{result:?}");
    }
}
