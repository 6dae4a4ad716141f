//! The run queue and its leases (spec §5.4; DESIGN "the run queue and leases"), and steering
//! state, at the store's interface: what every implementation must do; each test runs on SQLite
//! and on PostgreSQL (`common`). Time is passed in explicitly, so lease expiry is tested without waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use paddock_protocol::{DeploymentConfig, EventType, Features, Sandbox, SteeringRequest};
use paddock_store::{
    AccountRecord, AnswerOutcome, Decision, DeploymentRecord, Lease, ModelResponse, NewEvent,
    NewToolCall, PauseRun, SendMessage, SteeringAnswer, Store, StoreError, ThreadTarget,
};
use serde_json::json;

use crate::common;
use common::{Backend, TestDatabase};

const DEP: &str = "dep_leases";

async fn store(backend: Backend) -> (TestDatabase, Arc<dyn Store>) {
    store_with_balance(backend, None).await
}

/// A store with account `acct_1` (balance `balance_micros`) and its ready deployment [`DEP`].
pub(crate) async fn store_with_balance(
    backend: Backend,
    balance_micros: Option<i64>,
) -> (TestDatabase, Arc<dyn Store>) {
    let (db, store) = common::open(backend).await;
    store
        .create_account(&AccountRecord {
            id: "acct_1".into(),
            name: "default".into(),
            balance_micros,
            created_at: 0,
        })
        .await
        .unwrap();
    let config = DeploymentConfig {
        model: "fake/m".into(),
        system_prompt: "Test.".into(),
        sandbox: Sandbox {
            enabled: false,
            kind: "bubblewrap".into(),
            persistent_filesystem: true,
            image: None,
            cpus: 1.0,
            memory_mb: 2048,
            network: "none".into(),
        },
        features: Features::default(),
        mcp_servers: Vec::new(),
        skills: Vec::new(),
        secrets: BTreeMap::new(),
        tool_policies: BTreeMap::new(),
        disabled_tools: Default::default(),
    };
    store
        .create_deployment(&DeploymentRecord {
            id: DEP.into(),
            account_id: "acct_1".into(),
            customer_id: "cus_1".into(),
            name: "Leases".into(),
            runtime: "paddock".into(),
            status: "ready".into(),
            error: None,
            default_thread_id: "thr_default_leases".into(),
            config,
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    (db, store)
}

/// A new run on a new thread; returns its id.
pub(crate) async fn new_run(store: &dyn Store, n: usize) -> String {
    let out = store
        .send_message(SendMessage {
            deployment_id: DEP.into(),
            target: ThreadTarget::New,
            message_id: format!("msg_{n}"),
            content: format!("message {n}"),
            attachments: Vec::new(),
            new_run_id: format!("run_{n:03}"),
            new_thread_id: format!("thr_{n}"),
            answer: Decision::Respond,
            max_active_runs: 1000,
            now: n as i64,
        })
        .await
        .unwrap();
    assert!(out.started_run);
    out.run.id
}

pub(crate) fn lease(run_id: &str, node: &str) -> Lease {
    Lease {
        run_id: run_id.into(),
        node_id: node.into(),
    }
}

fn token(run_id: &str) -> NewEvent {
    NewEvent {
        kind: EventType::Token,
        thread_id: None,
        run_id: Some(run_id.into()),
        data: json!({"delta": "x"}),
    }
}

async fn a_claim_is_exclusive_until_its_lease_expires_then_any_node_takes_over(backend: Backend) {
    let (_dir, store) = store(backend).await;
    let runs: Vec<String> = futures_join(&*store, 3).await;

    // Node A takes the two oldest; node B gets only the third; nothing is left.
    let a = store
        .claim_runnable_runs("node_a", 2, 1000, 1030)
        .await
        .unwrap();
    let a_ids: Vec<&str> = a.iter().map(|c| c.run.id.as_str()).collect();
    assert_eq!(a_ids, [runs[0].as_str(), runs[1].as_str()], "oldest first");
    assert!(
        a.iter().all(|c| !c.resumed),
        "a first claim is not a resume"
    );
    let b = store
        .claim_runnable_runs("node_b", 10, 1000, 1100)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].run.id, runs[2]);
    assert!(
        store
            .claim_runnable_runs("node_b", 10, 1029, 1059)
            .await
            .unwrap()
            .is_empty(),
        "live leases are not claimable"
    );

    // Node A's progress is accepted while it holds the runs.
    store
        .append_run_events(&lease(&runs[0], "node_a"), vec![token(&runs[0])], 1001)
        .await
        .unwrap();
    let stolen = store
        .append_run_events(&lease(&runs[0], "node_b"), vec![token(&runs[0])], 1001)
        .await;
    assert!(matches!(stolen, Err(StoreError::LeaseLost)), "{stolen:?}");

    // A dies: once its leases expire, B takes the runs over, as resumes.
    let taken = store
        .claim_runnable_runs("node_b", 10, 1030, 1100)
        .await
        .unwrap();
    let taken_ids: HashSet<&str> = taken.iter().map(|c| c.run.id.as_str()).collect();
    assert_eq!(
        taken_ids,
        HashSet::from([runs[0].as_str(), runs[1].as_str()])
    );
    assert!(taken.iter().all(|c| c.resumed), "a takeover is a resume");
    // From now on A's writes are refused: two nodes never record progress for one run.
    for (what, result) in [
        (
            "append",
            store
                .append_run_events(&lease(&runs[0], "node_a"), vec![token(&runs[0])], 1031)
                .await
                .map(|_| ()),
        ),
        (
            "start_tool_call",
            store
                .start_tool_call(&lease(&runs[1], "node_a"), "call_x")
                .await,
        ),
        (
            "begin_step",
            store
                .begin_step(&lease(&runs[1], "node_a"), 1031)
                .await
                .map(|_| ()),
        ),
    ] {
        assert!(
            matches!(result, Err(StoreError::LeaseLost)),
            "{what}: {result:?}"
        );
    }
    store
        .append_run_events(&lease(&runs[0], "node_b"), vec![token(&runs[0])], 1031)
        .await
        .unwrap();
}

async fn futures_join(store: &dyn Store, n: usize) -> Vec<String> {
    let mut runs = Vec::new();
    for i in 0..n {
        runs.push(new_run(store, i).await);
    }
    runs
}

async fn the_heartbeat_renews_held_leases_and_reports_which_runs_are_still_held(backend: Backend) {
    let (_dir, store) = store(backend).await;
    let runs = futures_join(&*store, 2).await;
    store
        .claim_runnable_runs("node_a", 10, 100, 130)
        .await
        .unwrap();
    let mut held = store.renew_leases("node_a", 200).await.unwrap();
    held.sort();
    assert_eq!(held, runs);
    // Renewed: still A's well past the first expiry.
    assert!(
        store
            .claim_runnable_runs("node_b", 10, 150, 180)
            .await
            .unwrap()
            .is_empty()
    );
    // A run that ended (cancelled from any node) is no longer reported held.
    store
        .fail_run(
            &runs[0],
            paddock_protocol::ErrorInfo {
                code: "cancelled".into(),
                message: "x".into(),
            },
            json!({"error": "cancelled"}),
            160,
        )
        .await
        .unwrap();
    assert_eq!(
        store.renew_leases("node_a", 300).await.unwrap(),
        [runs[1].clone()]
    );
    assert!(store.renew_leases("node_b", 300).await.unwrap().is_empty());
}

async fn released_leases_are_claimable_at_once_and_the_next_claim_is_a_resume(backend: Backend) {
    let (_dir, store) = store(backend).await;
    let runs = futures_join(&*store, 2).await;
    store
        .claim_runnable_runs("node_a", 10, 100, 130)
        .await
        .unwrap();
    assert_eq!(store.release_leases("node_a").await.unwrap(), 2);
    let again = store
        .claim_runnable_runs("node_a", 10, 101, 131)
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|c| c.resumed));
    assert_eq!(again[0].run.id, runs[0]);
}

async fn concurrent_claimers_never_get_the_same_run(backend: Backend) {
    let (_dir, store) = store(backend).await;
    let runs = futures_join(&*store, 30).await;
    let mut tasks = Vec::new();
    for node in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = store
                    .claim_runnable_runs(&format!("node_{node}"), 2, 10, 40)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|c| c.run.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a run was claimed twice: {all:?}");
    assert_eq!(unique.len(), runs.len(), "every run was claimed");
}

/// Claims `run_id` for node `n1`, records a response with calls `call_a` and `call_b`, and
/// pauses on `call_a`.
async fn paused(store: &dyn Store, run_id: &str, kind: &str, now: i64) -> String {
    let claimed = store
        .claim_runnable_runs("n1", 10, now, now + 30)
        .await
        .unwrap();
    assert!(claimed.iter().any(|c| c.run.id == run_id));
    let l = lease(run_id, "n1");
    store.begin_step(&l, now).await.unwrap();
    store
        .record_model_response(
            &l,
            ModelResponse {
                step: 1,
                item: json!({"type": "assistant", "text": "", "tool_calls": []}),
                agent_message: None,
                tool_calls: ["call_a", "call_b"]
                    .iter()
                    .map(|id| NewToolCall {
                        id: format!("{run_id}_{id}"),
                        tool: "write_file".into(),
                        origin: "builtin".into(),
                        arguments: json!({"path": "x", "content": "y"}),
                    })
                    .collect(),
                usage: Default::default(),
                events: Vec::new(),
                now,
            },
        )
        .await
        .unwrap();
    let request_id = format!("srq_{run_id}");
    store
        .pause_run(
            &l,
            PauseRun {
                request: SteeringRequest {
                    request_id: request_id.clone(),
                    kind: kind.into(),
                    summary: "Run tool write_file?".into(),
                    tool: Some("write_file".into()),
                    origin: Some("builtin".into()),
                    arguments: Some(json!({"path": "x", "content": "y"})),
                    call_id: format!("{run_id}_call_a"),
                    created_at: "1970-01-01T00:00:00Z".into(),
                },
                events: Vec::new(),
                now,
            },
        )
        .await
        .unwrap();
    request_id
}

async fn a_paused_run_holds_no_lease_and_an_answer_makes_it_claimable_as_a_continuation(
    backend: Backend,
) {
    let (_dir, store) = store(backend).await;
    let run = new_run(&*store, 1).await;
    let request_id = paused(&*store, &run, "tool_call", 100).await;
    let waiting = store.get_run(DEP, &run).await.unwrap();
    assert_eq!(waiting.status, "waiting_on_human");
    assert_eq!(
        waiting.steering_request.as_ref().unwrap().request_id,
        request_id
    );
    // Nothing holds it, and nothing can claim it while it waits.
    assert!(store.renew_leases("n1", 200).await.unwrap().is_empty());
    assert!(
        store
            .claim_runnable_runs("n2", 10, 10_000, 10_030)
            .await
            .unwrap()
            .is_empty()
    );

    let answer = |request_id: &str, decision| SteeringAnswer {
        deployment_id: DEP.into(),
        run_id: run.clone(),
        request_id: request_id.into(),
        decision,
        message: Some(("msg_answer".into(), "Go.".into())),
        now: 101,
    };
    let wrong = store
        .answer_steering(answer("srq_other", Decision::Approve))
        .await
        .unwrap();
    assert!(matches!(wrong, AnswerOutcome::WrongRequest(_)), "{wrong:?}");
    let resolved = store
        .answer_steering(answer(&request_id, Decision::Approve))
        .await
        .unwrap();
    let AnswerOutcome::Resolved(run_after, events) = resolved else {
        panic!("not resolved: {resolved:?}");
    };
    assert_eq!(run_after.status, "running");
    assert_eq!(run_after.steering_request, None);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["message", "steering_resolved", "run_status"]);
    assert!(events[2].data.contains(r#""reason":"answered""#));

    // Repeating the decision changes nothing; another decision is refused.
    let same = store
        .answer_steering(SteeringAnswer {
            message: None,
            ..answer(&request_id, Decision::Approve)
        })
        .await
        .unwrap();
    assert!(matches!(same, AnswerOutcome::Unchanged(_)), "{same:?}");
    let other = store
        .answer_steering(answer(&request_id, Decision::Reject))
        .await
        .unwrap();
    assert!(
        matches!(other, AnswerOutcome::OtherDecision(_, Decision::Approve)),
        "{other:?}"
    );
    let stray = store
        .answer_steering(answer("srq_never", Decision::Approve))
        .await
        .unwrap();
    assert!(matches!(stray, AnswerOutcome::NotWaiting(_)), "{stray:?}");

    // The answered run is claimable at once, and it is a continuation, not a resume.
    let claimed = store.claim_runnable_runs("n2", 10, 102, 132).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!claimed[0].resumed);
    let ctx = store.step_context(&run).await.unwrap();
    assert_eq!(
        ctx.unfinished_calls.len(),
        2,
        "the held call and the next wait"
    );
    assert_eq!(ctx.steering.len(), 1);
    assert_eq!(ctx.steering[0].decision, Some(Decision::Approve));
    assert_eq!(ctx.steering[0].message.as_deref(), Some("Go."));
}

async fn an_overdue_request_ends_its_run_with_steering_timeout(backend: Backend) {
    let (_dir, store) = store(backend).await;
    let run = new_run(&*store, 1).await;
    let request_id = paused(&*store, &run, "tool_call", 100).await;
    assert!(store.overdue_steering(99, 10).await.unwrap().is_empty());
    let due = store.overdue_steering(100, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].request_id, request_id);
    assert_eq!(
        store
            .expire_steering(&run, &request_id, 99, 200)
            .await
            .unwrap(),
        None,
        "not due before its time"
    );
    let events = store
        .expire_steering(&run, &request_id, 100, 200)
        .await
        .unwrap()
        .expect("expired");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "tool_result",
            "tool_result",
            "steering_resolved",
            "run_status"
        ]
    );
    assert!(events[2].data.contains(r#""decision":"timeout""#));
    assert!(events[3].data.contains("steering_timeout"));
    let ended = store.get_run(DEP, &run).await.unwrap();
    assert_eq!(ended.status, "error");
    assert_eq!(ended.error.unwrap().code, "steering_timeout");
    assert_eq!(
        store
            .expire_steering(&run, &request_id, 100, 201)
            .await
            .unwrap(),
        None,
        "once"
    );
}

/// Spec §4.3: a queued message reaches the conversation only once every attachment has a final
/// outcome (so a resumed run knows what is fetched), and its user item carries the outcomes.
async fn attachments_hold_their_message_until_their_outcomes_are_recorded(backend: Backend) {
    use paddock_protocol::Attachment;
    use paddock_store::AttachmentOutcome;

    let (_dir, store) = store(backend).await;
    let out = store
        .send_message(SendMessage {
            deployment_id: DEP.into(),
            target: ThreadTarget::New,
            message_id: "msg_att".into(),
            content: "look".into(),
            attachments: vec![
                Attachment {
                    kind: "image".into(),
                    url: "https://cdn.example.com/a.png".into(),
                },
                Attachment {
                    kind: "video".into(),
                    url: "https://cdn.example.com/b.mp4".into(),
                },
            ],
            new_run_id: "run_att".into(),
            new_thread_id: "thr_att".into(),
            answer: Decision::Respond,
            max_active_runs: 1000,
            now: 1,
        })
        .await
        .unwrap();
    let run_id = out.run.id;
    store
        .claim_runnable_runs("node_a", 1, 10, 40)
        .await
        .unwrap();
    let l = lease(&run_id, "node_a");

    let pending = store.pending_attachments(&l).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_id, "msg_att");
    assert!(pending[0].outcomes.is_empty());

    // One outcome, one fetch in progress: still held back.
    let partial = vec![
        AttachmentOutcome::Saved {
            path: ".paddock/attachments/msg_att/1-a.png".into(),
            media_type: Some("image/png".into()),
            bytes: 8,
        },
        AttachmentOutcome::Fetching { attempts: 1 },
    ];
    store
        .set_attachment_outcomes(&l, "msg_att", &partial)
        .await
        .unwrap();
    let step = store.begin_step(&l, 11).await.unwrap();
    assert!(step.items.is_empty(), "{:?}", step.items);
    assert_eq!(
        store.pending_attachments(&l).await.unwrap()[0].outcomes,
        partial,
        "a resumed run sees where it was"
    );

    let done = vec![
        partial[0].clone(),
        AttachmentOutcome::Failed {
            reason: "refused x".into(),
        },
    ];
    store
        .set_attachment_outcomes(&l, "msg_att", &done)
        .await
        .unwrap();
    assert!(store.pending_attachments(&l).await.unwrap().is_empty());
    let step = store.begin_step(&l, 12).await.unwrap();
    assert_eq!(
        step.items,
        [json!({"type": "user", "content": "look", "attachments": [
            {"type": "image", "url": "https://cdn.example.com/a.png", "state": "saved",
             "path": ".paddock/attachments/msg_att/1-a.png", "media_type": "image/png", "bytes": 8},
            {"type": "video", "url": "https://cdn.example.com/b.mp4", "state": "failed",
             "reason": "refused x"},
        ]})]
    );
    // Consumed: no longer settable, and another node's lease is refused.
    assert!(matches!(
        store.set_attachment_outcomes(&l, "msg_att", &done).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .set_attachment_outcomes(&lease(&run_id, "node_b"), "msg_att", &done)
            .await,
        Err(StoreError::LeaseLost)
    ));
}

on_both_backends!(
    a_claim_is_exclusive_until_its_lease_expires_then_any_node_takes_over,
    the_heartbeat_renews_held_leases_and_reports_which_runs_are_still_held,
    released_leases_are_claimable_at_once_and_the_next_claim_is_a_resume,
    concurrent_claimers_never_get_the_same_run,
    a_paused_run_holds_no_lease_and_an_answer_makes_it_claimable_as_a_continuation,
    an_overdue_request_ends_its_run_with_steering_timeout,
    attachments_hold_their_message_until_their_outcomes_are_recorded,
);
