//! Cancel (spec §5.3, guarantee 15), the parts the other suites do not cover: queued steering
//! messages stay in the history and start no run, and a model response still streaming at the
//! cancel (tool calls included) is abandoned: none of its calls is recorded or started, and
//! the run makes no further model call.
//!
//! Covered elsewhere: the model call abandoned with its late text going nowhere
//! (`resources.rs`, `events.rs`), open tool calls closed with `{"error": "cancelled"}` and a
//! pending call never started (`events.rs`), a pending steering request resolved `cancelled`
//! (`steering.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use paddock_client::ListRunsQuery;
use paddock_test_support::{Gate, Script};
use serde_json::json;

use common::{TestServer, collect_until, is_terminal, open_events};

#[tokio::test]
async fn queued_steering_messages_stay_in_the_history_and_start_no_run() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.clone();
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("Thinking").hold(&gate).text(" done."));
    let mut events = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Start working.", None, &[])
        .await
        .unwrap()
        .run_id;
    gate.reached().await;

    let mut queued = Vec::new();
    for text in ["Queued one.", "Queued two."] {
        let accepted = t
            .admin
            .send_message(&dep, text, Some(&d.thread_id), &[])
            .await
            .unwrap();
        assert_eq!(accepted.run_id, run_id, "steering input joins the run");
        queued.push(accepted.message_id);
    }
    let cancelled = t.admin.cancel_run(&dep, &run_id).await.unwrap();
    assert_eq!(cancelled.status, "error");
    assert_eq!(cancelled.error.as_ref().unwrap().code, "cancelled");
    gate.open();

    // A run on another thread is the fence: the worker has run since the cancel.
    let fence = t
        .admin
        .send_message(&dep, "Fence.", Some("new"), &[])
        .await
        .unwrap();
    let seen = collect_until(&mut events, |e| is_terminal(e, &fence.run_id)).await;
    let started: Vec<&str> = seen
        .iter()
        .filter(|e| e.event == "run_status" && e.data["reason"] == "started")
        .map(|e| e.data["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        started,
        [run_id.as_str(), fence.run_id.as_str()],
        "only the cancelled run and the fence started: {seen:#?}"
    );

    let thread = t
        .admin
        .get_thread(&dep, &d.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.status, "idle");
    let history: Vec<(&str, &str, Option<&str>)> = thread
        .messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str(), m.run_id.as_deref()))
        .collect();
    let run = Some(run_id.as_str());
    assert_eq!(
        history,
        [
            ("user", "Start working.", run),
            ("user", "Queued one.", run),
            ("user", "Queued two.", run),
        ],
        "the queued messages stay, with the cancelled run's id"
    );
    assert_eq!(
        thread
            .messages
            .iter()
            .skip(1)
            .map(|m| m.message_id.clone())
            .collect::<Vec<_>>(),
        queued
    );
    let runs = t
        .admin
        .list_runs(
            &dep,
            &ListRunsQuery {
                thread_id: Some(d.thread_id.clone()),
                ..ListRunsQuery::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = runs.data.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [run_id.as_str()], "no run for the queued messages");
    // The model saw neither: the call in flight was abandoned and none followed.
    let requests: Vec<String> = t.fake.requests().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        requests.len(),
        2,
        "the cancelled run's call and the fence's"
    );
    assert!(
        requests.iter().all(|r| !r.contains("Queued")),
        "{requests:#?}"
    );

    // The thread takes a new message as a new run.
    let next = t
        .admin
        .send_message(&dep, "Again.", Some(&d.thread_id), &[])
        .await
        .unwrap();
    assert_ne!(next.run_id, run_id);
    let end = collect_until(&mut events, |e| is_terminal(e, &next.run_id)).await;
    assert_eq!(end.last().unwrap().data["status"], "completed");
}

#[tokio::test]
async fn tool_calls_still_streaming_at_the_cancel_are_never_recorded_or_started() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.clone();
    let workspace = t.dir.path().join("workspaces").join(&dep);
    let gate = Gate::new();
    t.fake.push(
        Script::new()
            .text("Writing it now.")
            .tool_call(
                "call_early",
                "write_file",
                json!({"path": "early.txt", "content": "x"}),
            )
            .hold(&gate)
            .tool_call(
                "call_late",
                "write_file",
                json!({"path": "late.txt", "content": "x"}),
            ),
    );
    let mut events = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Write the files.", None, &[])
        .await
        .unwrap()
        .run_id;
    gate.reached().await;
    // The text before the hold has reached the stream: the call is in flight.
    let before = collect_until(&mut events, |e| {
        e.event == "token" && e.data["run_id"] == run_id.as_str()
    })
    .await;

    let cancelled = t.admin.cancel_run(&dep, &run_id).await.unwrap();
    assert_eq!(cancelled.status, "error");
    // Let the abandoned response finish; it must change nothing.
    gate.open();
    let fence = t
        .admin
        .send_message(&dep, "Fence.", Some("new"), &[])
        .await
        .unwrap();
    let after = collect_until(&mut events, |e| is_terminal(e, &fence.run_id)).await;
    let of_run: Vec<(&str, &str)> = before
        .iter()
        .chain(&after)
        .filter(|e| e.data["run_id"] == run_id.as_str())
        .filter(|e| e.event != "token")
        .map(|e| {
            let detail = e.data["status"].as_str().or(e.data["role"].as_str());
            (e.event.as_str(), detail.unwrap_or(""))
        })
        .collect();
    assert_eq!(
        of_run,
        [
            ("message", "user"),
            ("run_status", "running"),
            ("run_status", "error")
        ],
        "no tool_call, tool_result or agent message of the abandoned response: {after:#?}"
    );
    let end = after
        .iter()
        .find(|e| is_terminal(e, &run_id))
        .expect("terminal");
    assert_eq!(end.data["error"]["code"], "cancelled");
    assert!(!workspace.join("early.txt").exists());
    assert!(!workspace.join("late.txt").exists());
    assert_eq!(
        t.fake.requests().len(),
        2,
        "no model call for the cancelled run after the cancel"
    );
    let run = t.admin.get_run(&dep, &run_id).await.unwrap();
    assert_eq!(run.status, "error");
    assert_eq!(
        run.updated_at, cancelled.updated_at,
        "nothing changed it later"
    );
}
