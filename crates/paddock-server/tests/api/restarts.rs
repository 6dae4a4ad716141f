//! Durable execution across restarts of the server on one data directory (spec §5.4, §6.5;
//! guarantees 17–20): a waiting run holds nothing and survives restarts; a run interrupted at
//! any checkpoint resumes from the store (`reason: "resumed"`), reusing recorded results,
//! repeating only a `read_file` that started without a result and telling the model the other
//! started calls were interrupted, and redoing an unfinished model call under the same step;
//! a lease another live node holds is left alone; a graceful stop releases its leases.
//!
//! The crash states are written through the store's own interface while the server is stopped
//! (a dead node's claim and its partial progress), so each one is exact. The real `kill -9`
//! of the binary is `crates/paddock-cli/tests/binary/crash.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use paddock_client::{Client, EventsQuery, SseEvent};
use paddock_protocol::EventType;
use paddock_protocol::time::now_unix;
use paddock_server::Server;
use paddock_store::{
    Decision, Lease, ModelResponse, NewEvent, NewToolCall, SendMessage, Store, ThreadTarget,
};
use paddock_test_support::{Gate, Script};
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events, settings_for};

/// Stops the server gracefully and starts it again on the same data directory (and the same
/// fake model), with `node_id` if given; the clients follow it to its new address.
async fn restart(t: &mut TestServer, node_id: Option<&str>) {
    let server = t.server.take().expect("running");
    server.shutdown().await.expect("graceful shutdown");
    start_again(t, node_id).await;
}

async fn start_again(t: &mut TestServer, node_id: Option<&str>) {
    let mut settings = settings_for(t.dir.path(), &t.fake);
    settings.node_id = node_id.map(str::to_owned);
    let server = Server::start(settings).await.expect("restart");
    t.base_url = format!("http://{}", server.local_addr());
    t.admin = Client::new(&t.base_url, Some(t.admin_key.clone()));
    t.server = Some(server);
}

fn active_runs(t: &TestServer) -> usize {
    t.server.as_ref().unwrap().state().runtime.active_runs()
}

async fn metrics(t: &TestServer) -> String {
    t.http()
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every event of the deployment so far, by replay from `evt_0`, up to the terminal status of
/// each of `runs`.
async fn replay_until_done(t: &TestServer, dep: &str, runs: &[&str]) -> Vec<SseEvent> {
    let mut stream = t
        .admin
        .events(
            dep,
            EventsQuery {
                after: Some("evt_0".into()),
                ..EventsQuery::default()
            },
        )
        .await;
    let mut open: Vec<&str> = runs.to_vec();
    collect_until(&mut stream, |e| {
        open.retain(|r| !is_terminal(e, r));
        open.is_empty()
    })
    .await
}

fn of_run<'a>(events: &'a [SseEvent], run_id: &str) -> Vec<&'a SseEvent> {
    events
        .iter()
        .filter(|e| e.data["run_id"] == run_id)
        .collect()
}

/// §7.4 rules 1–4 for `run_id` over a full replay.
fn assert_run_invariants(all: &[SseEvent], run_id: &str) {
    let run = of_run(all, run_id);
    let shape: Vec<String> = run
        .iter()
        .map(|e| format!("{}/{}", e.event, e.data["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(run[0].event, "message", "{shape:?}");
    assert_eq!(run[1].data["reason"], "started", "{shape:?}");
    let terminals = run.iter().filter(|e| is_terminal(e, run_id)).count();
    assert_eq!(terminals, 1, "{shape:?}");
    assert!(is_terminal(run[run.len() - 1], run_id), "{shape:?}");
    for (open, close, key) in [
        ("tool_call", "tool_result", "call_id"),
        ("steering_request", "steering_resolved", "request_id"),
    ] {
        for e in run.iter().filter(|e| e.event == open) {
            let n = run
                .iter()
                .filter(|c| c.event == close && c.data[key] == e.data[key])
                .count();
            assert_eq!(n, 1, "one {close} for {}: {shape:?}", e.data[key]);
        }
    }
}

fn result_seen_by_model(requests: &[Value], call_id: &str) -> Value {
    for r in requests.iter().rev() {
        if let Some(m) = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
        {
            return serde_json::from_str(m["content"].as_str().unwrap()).unwrap();
        }
    }
    panic!("the model never saw a result for {call_id}");
}

#[tokio::test]
async fn a_waiting_run_survives_three_restarts_holding_nothing_then_an_answer_completes_it() {
    let mut t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"tool_policies": {"write_file": "always_ask"}}))
        .await;
    let dep = d.deployment_id.clone();
    t.fake.push(Script::new().tool_call(
        "call_publish",
        "write_file",
        json!({"path": "published.txt", "content": "5 ads"}),
    ));
    let mut stream = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Publish the ads.", None, &[])
        .await
        .unwrap()
        .run_id;
    let paused = collect_until(&mut stream, |e| {
        e.event == "run_status" && e.data["status"] == "waiting_on_human"
    })
    .await;
    let request_id = paused
        .iter()
        .find(|e| e.event == "steering_request")
        .unwrap()
        .data["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(stream);
    let workspace = t.dir.path().join("workspaces").join(&dep);

    for round in 1..=3 {
        restart(&mut t, None).await;
        let run = t.admin.get_run(&dep, &run_id).await.unwrap();
        assert_eq!(run.status, "waiting_on_human", "after restart {round}");
        assert_eq!(
            run.steering_request.as_ref().unwrap().request_id,
            request_id,
            "the same request after restart {round}"
        );
        // A run on another thread is the fence: once it completed, the worker has looked for
        // runnable runs since this start, and it took none for the waiting run.
        let mut events = open_events(&t.admin, &dep).await;
        let asked = t.fake.requests().len();
        let fence = t
            .admin
            .send_message(&dep, &format!("fence {round}"), Some("new"), &[])
            .await
            .unwrap();
        collect_until(&mut events, |e| is_terminal(e, &fence.run_id)).await;
        // No model connection either: the fence's call is the only one since the restart.
        let requests = t.fake.requests();
        assert_eq!(requests.len(), asked + 1, "round {round}: {requests:#?}");
        assert!(
            requests[asked]
                .to_string()
                .contains(&format!("fence {round}")),
            "round {round}: {}",
            requests[asked]
        );
        let deadline = tokio::time::Instant::now() + common::WAIT;
        while active_runs(&t) != 0 {
            assert!(tokio::time::Instant::now() < deadline, "a task lingers");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let text = metrics(&t).await;
        assert!(
            text.contains("paddock_runs_active{status=\"running\"} 0"),
            "round {round}: {text}"
        );
        assert!(!workspace.join("published.txt").exists());
    }

    t.fake.push(Script::new().text("Published.").usage(3, 1));
    let run = t
        .admin
        .respond_steering(&dep, &run_id, &request_id, "approve", None)
        .await
        .unwrap();
    assert_eq!(run.status, "running");
    let all = replay_until_done(&t, &dep, &[&run_id]).await;
    let end = of_run(&all, &run_id);
    assert_eq!(end.last().unwrap().data["status"], "completed");
    assert_eq!(
        std::fs::read_to_string(workspace.join("published.txt")).unwrap(),
        "5 ads"
    );
    assert!(
        end.iter().all(|e| e.data["reason"] != "resumed"),
        "a waiting run is not resumed by a restart: it was not running"
    );
    assert_run_invariants(&all, &run_id);
    for pair in all.windows(2) {
        assert!(pair[0].seq() < pair[1].seq(), "ids strictly increase");
    }
}

/// The partial progress a dead node left behind, written through the store.
struct Crashed {
    /// Recorded a response with three calls: a `write_file` and a `read_file` that started
    /// without a result, and a `write_file` that never started.
    mid_tools: String,
    /// Began its first model call, never recorded a response.
    mid_model: String,
    /// Claimed by a node that is alive (its lease runs for an hour).
    held_elsewhere: String,
}

async fn crash_state(store: &dyn Store, dep: &str) -> Crashed {
    let now = now_unix();
    let mut runs = Vec::new();
    for n in 0..3 {
        let sent = store
            .send_message(SendMessage {
                deployment_id: dep.to_owned(),
                target: ThreadTarget::New,
                message_id: format!("msg_crash{n}"),
                content: format!("task {n}"),
                attachments: Vec::new(),
                new_run_id: format!("run_crash{n}"),
                new_thread_id: format!("thr_crash{n}"),
                answer: Decision::Respond,
                max_active_runs: 8,
                now,
            })
            .await
            .unwrap();
        runs.push(sent.run.id);
    }
    // A live node holds the oldest; the dead node's leases are already past their expiry.
    let alive = store
        .claim_runnable_runs("node_alive", 1, now, now + 3600)
        .await
        .unwrap();
    assert_eq!(alive[0].run.id, runs[0]);
    let dead = store
        .claim_runnable_runs("node_dead", 2, now, now - 1)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    let held_elsewhere = runs.remove(0);

    let lease = Lease {
        run_id: runs[0].clone(),
        node_id: "node_dead".into(),
    };
    let ctx = store.begin_step(&lease, now).await.unwrap();
    assert_eq!(ctx.run.step, 1);
    let calls = [
        (
            "call_w_started",
            "write_file",
            json!({"path": "a.txt", "content": "a"}),
        ),
        ("call_r_started", "read_file", json!({"path": "seed.txt"})),
        (
            "call_w_pending",
            "write_file",
            json!({"path": "b.txt", "content": "b"}),
        ),
    ];
    let thread = Some("thr_crash1".to_owned());
    store
        .record_model_response(
            &lease,
            ModelResponse {
                step: 1,
                item: json!({"type": "assistant", "text": "", "tool_calls": calls
                    .iter()
                    .map(|(id, name, args)| json!({"id": id, "name": name, "arguments": args}))
                    .collect::<Vec<_>>()}),
                agent_message: None,
                tool_calls: calls
                    .iter()
                    .map(|(id, name, args)| NewToolCall {
                        id: (*id).into(),
                        tool: (*name).into(),
                        origin: "builtin".into(),
                        arguments: args.clone(),
                    })
                    .collect(),
                usage: Default::default(),
                events: calls
                    .iter()
                    .map(|(id, name, args)| NewEvent {
                        kind: EventType::ToolCall,
                        thread_id: thread.clone(),
                        run_id: Some(runs[0].clone()),
                        data: json!({"run_id": runs[0], "thread_id": thread, "step": 1,
                            "call_id": id, "tool": name, "origin": "builtin", "arguments": args}),
                    })
                    .collect(),
                now,
            },
        )
        .await
        .unwrap();
    store
        .start_tool_call(&lease, "call_w_started")
        .await
        .unwrap();
    store
        .start_tool_call(&lease, "call_r_started")
        .await
        .unwrap();

    let lease = Lease {
        run_id: runs[1].clone(),
        node_id: "node_dead".into(),
    };
    assert_eq!(store.begin_step(&lease, now).await.unwrap().run.step, 1);
    Crashed {
        mid_tools: runs[0].clone(),
        mid_model: runs[1].clone(),
        held_elsewhere,
    }
}

#[tokio::test]
async fn another_node_takes_over_expired_runs_and_resumes_them_from_their_checkpoints() {
    let mut t = TestServer::start_with(|s| s.node_id = Some("node_live".into())).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.clone();
    let workspace = t.dir.path().join("workspaces").join(&dep);
    std::fs::write(workspace.join("seed.txt"), "seed").unwrap();
    t.server.take().unwrap().shutdown().await.unwrap();

    let crashed = {
        let store = paddock_server::open_store(&settings_for(t.dir.path(), &t.fake))
            .await
            .unwrap();
        crash_state(store.as_ref(), &dep).await
    };
    t.fake
        .set_default(Script::new().text("Finished.").usage(7, 1));
    let requests_before = t.fake.requests().len();
    start_again(&mut t, Some("node_live")).await;

    let all = replay_until_done(&t, &dep, &[&crashed.mid_tools, &crashed.mid_model]).await;
    for run_id in [&crashed.mid_tools, &crashed.mid_model] {
        let run = of_run(&all, run_id);
        let first_after = run
            .iter()
            .position(|e| e.event == "run_status" && e.data["reason"] == "resumed")
            .unwrap_or_else(|| panic!("{run_id} was not resumed: {run:#?}"));
        // Before the crash: the input, the start and (for one of them) the recorded calls.
        assert!(
            run[..first_after].iter().all(|e| e.event == "message"
                || e.event == "tool_call"
                || e.data["reason"] == "started"),
            "{run:#?}"
        );
        assert_eq!(run.last().unwrap().data["status"], "completed", "{run:#?}");
        assert_run_invariants(&all, run_id);
    }

    // Recorded work is reused, not repeated; a started write is reported interrupted; a
    // started read is repeated; the call that never started runs now.
    let results: Vec<(&str, &Value, &Value)> = of_run(&all, &crashed.mid_tools)
        .into_iter()
        .filter(|e| e.event == "tool_result")
        .map(|e| {
            (
                e.data["call_id"].as_str().unwrap(),
                &e.data["result"],
                &e.data["is_error"],
            )
        })
        .collect();
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0].0, "call_w_started");
    assert_eq!(results[0].1["error"], "interrupted");
    assert!(
        results[0].1["message"]
            .as_str()
            .unwrap()
            .contains("may or may not have taken effect")
    );
    assert_eq!(results[0].2, &json!(true));
    assert_eq!(results[1].0, "call_r_started");
    assert_eq!(results[1].1["content"], "seed");
    assert_eq!(results[2].0, "call_w_pending");
    assert_eq!(results[2].2, &json!(false));
    assert!(
        !workspace.join("a.txt").exists(),
        "the interrupted write is not redone"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("b.txt")).unwrap(),
        "b"
    );
    let requests = t.fake.requests()[requests_before..].to_vec();
    assert_eq!(
        result_seen_by_model(&requests, "call_w_started")["error"],
        "interrupted"
    );

    // The unfinished model call is redone under the same step (spec §5.4).
    let tokens: Vec<&Value> = of_run(&all, &crashed.mid_model)
        .into_iter()
        .filter(|e| e.event == "token")
        .map(|e| &e.data["step"])
        .collect();
    assert_eq!(tokens, [&json!(1)], "redone as step 1");
    let steps: Vec<&Value> = of_run(&all, &crashed.mid_tools)
        .into_iter()
        .filter(|e| e.event == "token")
        .map(|e| &e.data["step"])
        .collect();
    assert_eq!(steps, [&json!(2)], "the next step after the recorded one");

    // The run a live node holds is left alone: no resume, still running here.
    assert!(
        of_run(&all, &crashed.held_elsewhere)
            .iter()
            .all(|e| e.data["reason"] != "resumed"),
        "a live lease was taken over"
    );
    let held = t
        .admin
        .get_run(&dep, &crashed.held_elsewhere)
        .await
        .unwrap();
    assert_eq!(held.status, "running");
    assert_eq!(active_runs(&t), 0, "this node does not drive it");
    // Cancel works from any node.
    let cancelled = t
        .admin
        .cancel_run(&dep, &crashed.held_elsewhere)
        .await
        .unwrap();
    assert_eq!(cancelled.status, "error");
}

#[tokio::test]
async fn a_graceful_stop_releases_leases_so_the_next_start_resumes_at_once() {
    let mut t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.clone();
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("Par").hold(&gate).text("tial"));
    let mut stream = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Talk.", None, &[])
        .await
        .unwrap()
        .run_id;
    gate.reached().await;
    let token = collect_until(&mut stream, |e| e.event == "token").await;
    let step = token.last().unwrap().data["step"].clone();
    drop(stream);
    t.server.take().unwrap().shutdown().await.unwrap();

    {
        // Released, not merely expired: another node may claim it at once.
        let store = paddock_server::open_store(&settings_for(t.dir.path(), &t.fake))
            .await
            .unwrap();
        let now = now_unix();
        let claimed = store
            .claim_runnable_runs("node_probe", 10, now, now + 30)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].run.id, run_id);
        assert!(claimed[0].resumed);
        store.release_leases("node_probe").await.unwrap();
    }
    gate.open();
    t.fake.push(Script::new().text("Hello again."));
    start_again(&mut t, None).await;
    let all = replay_until_done(&t, &dep, &[&run_id]).await;
    let run = of_run(&all, &run_id);
    assert_eq!(run.last().unwrap().data["status"], "completed");
    let resumed = run
        .iter()
        .position(|e| e.data["reason"] == "resumed")
        .expect("resumed");
    let redone: Vec<&Value> = run[resumed..]
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| &e.data["step"])
        .collect();
    assert!(!redone.is_empty());
    assert!(redone.iter().all(|s| **s == step), "same step: {redone:?}");
    assert_run_invariants(&all, &run_id);
}
