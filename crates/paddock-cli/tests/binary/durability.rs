//! Crash safety of the real binary (spec §5.4, guarantees 17–21): a `kill -9` of `paddock
//! serve` followed by a restart on the same data directory loses no accepted message, event,
//! thread or deployment, and the run that was running is resumed (`reason: "resumed"`) and
//! finishes instead of staying `running`.
//!
//! The model is a [`FakeOpenAi`] owned by the test, so it outlives the first server process
//! and answers the second one's redone call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Event, Home, Paddock, WAIT, describe, fake_model_config};
use paddock_test_support::{FakeOpenAi, Gate, Script};
use serde_json::{Value, json};

fn messages_of(thread: &Value) -> Vec<Value> {
    thread["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn kill_9_and_restart_lose_nothing_and_resume_the_running_run() {
    let fake = FakeOpenAi::start().await;
    let home = Home::new(&fake_model_config(&fake.base_url()));
    let mut server = Paddock::start(&home).await;
    let admin_key = server.admin_key.clone().expect("first start prints a key");
    let saved_key = std::fs::read_to_string(home.admin_key_path()).unwrap();
    let api = server.api(&admin_key);

    let dep = api
        .create_ready_deployment(&json!({
            "customer_id": "cus_durable",
            "name": "Durable agent",
            "system_prompt": "You are a test agent.",
        }))
        .await;
    let dep_id = dep["deployment_id"].as_str().unwrap().to_owned();
    let default_thread = dep["thread_id"].as_str().unwrap().to_owned();
    let mut live = api.events(&dep_id, "").await;

    // A finished run on the default thread: history with an agent message, a full run's events.
    fake.push(Script::new().text("Noted, blue.").usage(11, 3));
    let first = api
        .send_message(&dep_id, &json!({"content": "Remember: blue."}))
        .await;
    let first_run = first["run_id"].as_str().unwrap().to_owned();
    let done = live.until(WAIT, |e| e.is_terminal(&first_run)).await;
    assert!(done.is_status(&first_run, "completed"), "{done:?}");

    // A second thread whose run is held mid-stream by the model.
    let second = api
        .post_expect(
            &format!("/v1/deployments/{dep_id}/threads"),
            &json!({"title": "Second"}),
            201,
        )
        .await;
    let second_thread = second["thread_id"].as_str().unwrap().to_owned();
    let gate = Gate::new();
    fake.push(
        Script::new()
            .text("Hel")
            .hold(&gate)
            .text("lo")
            .usage(20, 2),
    );
    let held = api
        .send_message(
            &dep_id,
            &json!({"content": "Hold this thought.", "thread_id": second_thread}),
        )
        .await;
    let held_run = held["run_id"].as_str().unwrap().to_owned();
    gate.reached().await;
    // The text before the hold becomes a token event: the run has recorded progress.
    let token = live
        .until(WAIT, |e| {
            e.event == "token" && e.data["run_id"] == held_run.as_str()
        })
        .await;
    let held_step = token.data["step"].clone();

    // Nothing more happens while the model is held, so this is the complete state.
    let before_events: Vec<Event> = live.seen.clone();
    let last_id = before_events.last().unwrap().id.clone();
    let mut replay = api.events(&dep_id, "?after=evt_0").await;
    replay.until(WAIT, |e| e.id == last_id).await;
    assert_eq!(
        replay.seen, before_events,
        "a replay from evt_0 has exactly the events the live stream saw"
    );
    drop(replay);
    let dep_before = api.get_ok(&format!("/v1/deployments/{dep_id}")).await;
    let threads_before = api
        .get_ok(&format!("/v1/deployments/{dep_id}/threads"))
        .await;
    let default_before = api
        .get_ok(&format!(
            "/v1/deployments/{dep_id}/threads/{default_thread}"
        ))
        .await;
    let second_before = api
        .get_ok(&format!("/v1/deployments/{dep_id}/threads/{second_thread}"))
        .await;
    assert_eq!(second_before["status"], "running", "{second_before}");
    let run_before = api
        .get_ok(&format!("/v1/deployments/{dep_id}/runs/{held_run}"))
        .await;
    assert_eq!(run_before["status"], "running", "{run_before}");

    // A message accepted (202) right before the crash: it joins the running run.
    let last_words = api
        .send_message(
            &dep_id,
            &json!({"content": "And this, too.", "thread_id": second_thread}),
        )
        .await;
    assert_eq!(last_words["run_id"], held_run.as_str(), "{last_words}");
    let last_message_id = last_words["message_id"].as_str().unwrap().to_owned();

    server.kill9().await;
    drop(live);

    // The redone model call (and any further one) gets an ordinary answer.
    fake.push(Script::new().text("Hello again.").usage(30, 3));
    let requests_before_restart = fake.requests().len();
    let server = Paddock::start(&home).await;
    assert_eq!(
        server.admin_key, None,
        "a restart on an existing database must not make a new admin key"
    );
    assert_eq!(
        std::fs::read_to_string(home.admin_key_path()).unwrap(),
        saved_key,
        "admin.key is unchanged"
    );
    let api = server.api(&admin_key);

    // Every event is still there, same ids and data, then the rest of the held run.
    let mut after = api.events(&dep_id, "?after=evt_0").await;
    let terminal = after.until(WAIT, |e| e.is_terminal(&held_run)).await;
    let all = describe(&after.seen);
    assert!(
        after.seen.len() > before_events.len(),
        "events after restart: {all}"
    );
    assert_eq!(
        after.seen[..before_events.len()],
        before_events[..],
        "events before the crash survive with the same ids and data; after restart:\n{all}"
    );
    let rest = &after.seen[before_events.len()..];
    let joined = rest
        .iter()
        .position(|e| e.event == "message" && e.data["message_id"] == last_message_id.as_str())
        .unwrap_or_else(|| panic!("no message event of the message sent before the kill: {all}"));
    assert_eq!(rest[joined].data["run_id"], held_run.as_str(), "{all}");
    assert_eq!(rest[joined].data["content"], "And this, too.", "{all}");
    let resumed = rest
        .iter()
        .position(|e| e.is_status(&held_run, "running"))
        .unwrap_or_else(|| panic!("no run_status running after the restart: {all}"));
    assert_eq!(
        rest[resumed].data["reason"], "resumed",
        "the first status after a restart is running/resumed: {all}"
    );
    assert!(
        rest[..resumed]
            .iter()
            .all(|e| e.data["run_id"] != held_run.as_str() || e.event == "message"),
        "only the queued message may precede the resume of the run: {all}"
    );
    assert!(
        terminal.is_status(&held_run, "completed"),
        "the resumed run completes: {all}"
    );
    // Spec §5.4: the model call that was in flight is redone under the same step.
    let redone_tokens: Vec<_> = rest
        .iter()
        .filter(|e| e.event == "token" && e.data["run_id"] == held_run.as_str())
        .collect();
    assert!(
        !redone_tokens.is_empty(),
        "the redone call streamed no tokens: {all}"
    );
    assert_eq!(
        redone_tokens[0].data["step"], held_step,
        "the model call in flight at the crash is redone under the same step: {all}"
    );
    // The model saw the message that arrived before the crash before the run completed.
    let requests = fake.requests();
    assert!(
        requests.len() > requests_before_restart,
        "the restarted server made no model call"
    );
    let last_request = requests.last().unwrap().to_string();
    assert!(
        last_request.contains("And this, too.") && last_request.contains("Hold this thought."),
        "the final model call has both messages of the thread: {last_request}"
    );

    // The deployment, its threads and their histories are intact.
    let dep_after = api.get_ok(&format!("/v1/deployments/{dep_id}")).await;
    assert_eq!(dep_after, dep_before, "the deployment is unchanged");
    let threads_after = api
        .get_ok(&format!("/v1/deployments/{dep_id}/threads"))
        .await;
    let ids = |list: &Value| -> Vec<Value> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!([t["thread_id"], t["title"], t["is_default"], t["created_at"]]))
            .collect()
    };
    assert_eq!(ids(&threads_after), ids(&threads_before), "{threads_after}");
    let default_after = api
        .get_ok(&format!(
            "/v1/deployments/{dep_id}/threads/{default_thread}"
        ))
        .await;
    assert_eq!(
        messages_of(&default_after),
        messages_of(&default_before),
        "the idle thread's history is unchanged"
    );
    assert_eq!(messages_of(&default_before).len(), 2, "{default_before}");
    let second_after = api
        .get_ok(&format!("/v1/deployments/{dep_id}/threads/{second_thread}"))
        .await;
    let history = messages_of(&second_after);
    let earlier = messages_of(&second_before);
    assert!(
        history.len() >= earlier.len() + 2,
        "the held thread gains the last message and an answer: {second_after}"
    );
    assert_eq!(history[..earlier.len()], earlier[..], "{second_after}");
    let queued = &history[earlier.len()];
    assert_eq!(
        queued["message_id"],
        last_message_id.as_str(),
        "{second_after}"
    );
    assert_eq!(queued["role"], "user", "{second_after}");
    assert_eq!(queued["run_id"], held_run.as_str(), "{second_after}");
    assert_eq!(queued["content"], "And this, too.", "{second_after}");
    let answer = history.last().unwrap();
    assert_eq!(answer["role"], "agent", "{second_after}");
    assert_eq!(answer["run_id"], held_run.as_str(), "{second_after}");

    // No run is left running.
    let run_after = api
        .get_ok(&format!("/v1/deployments/{dep_id}/runs/{held_run}"))
        .await;
    assert_eq!(run_after["status"], "completed", "{run_after}");
    let running = api
        .get_ok(&format!("/v1/deployments/{dep_id}/runs?status=running"))
        .await;
    assert_eq!(running["data"], json!([]), "{running}");
    assert_eq!(second_after["status"], "idle", "{second_after}");
}
