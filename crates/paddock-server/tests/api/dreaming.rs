//! Dreaming (spec §3.4, §10, guarantee 40): an idle deployment with `features.dreaming` gets
//! one pass (`trigger: "dreaming"`, no thread) that merges its duplicate memories through the
//! `memory` tool, cannot touch `source: "api"` memories, writes its journal
//! `.paddock/dreams/<run_id>.md`, and does not run again before its interval.
//!
//! Time is a `TestClock` the tests set; the passes are seen on the event stream, and the
//! "nothing started" checks are explicit ticks of the server's dreamer (which decide against
//! the same clock), never sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use paddock_client::ListRunsQuery;
use paddock_core::dreaming::{Dreamer, SYSTEM_PROMPT, journal_path};
use paddock_core::scheduler::TestClock;
use paddock_protocol::time::now_unix;
use paddock_test_support::Script;
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

const IDLE: i64 = 1800;
const INTERVAL: i64 = 86400;

/// A server whose dreamer reads `clock` and ticks on its own every `tick` as well.
async fn server(clock: &Arc<TestClock>, tick: Duration) -> TestServer {
    let clock = clock.clone();
    TestServer::start_with(move |s| {
        s.dreaming.clock = clock;
        s.dreaming.tick_interval = tick;
    })
    .await
}

fn dreamer(t: &TestServer) -> &Arc<Dreamer> {
    t.server.as_ref().expect("server running").dreamer()
}

/// `(status, body)` of a raw request; a body that is not JSON comes back as a string.
async fn call(t: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = t
        .http()
        .request(method, t.url(path))
        .bearer_auth(&t.admin_key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The deployment's memories by content, newest first.
async fn memories(t: &TestServer, dep: &str) -> Vec<Value> {
    let (status, body) = call(t, "GET", &format!("/v1/deployments/{dep}/memories"), None).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

fn by_content<'a>(list: &'a [Value], content: &str) -> &'a Value {
    list.iter()
        .find(|m| m["content"] == content)
        .unwrap_or_else(|| panic!("no memory {content:?} in {list:#?}"))
}

async fn dreaming_runs(t: &TestServer, dep: &str) -> Vec<paddock_protocol::Run> {
    let query = ListRunsQuery {
        trigger: Some("dreaming".to_owned()),
        ..ListRunsQuery::default()
    };
    t.admin.list_runs(dep, &query).await.unwrap().data
}

/// Sends `content` and waits for its run to complete; the model answers with `scripts`.
async fn converse(t: &TestServer, dep: &str, content: &str, scripts: Vec<Script>) {
    for s in scripts {
        t.fake.push(s);
    }
    let mut stream = open_events(&t.admin, dep).await;
    let accepted = t.admin.send_message(dep, content, None, &[]).await.unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &accepted.run_id)).await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
}

const METRIC: &str = "The customer prefers metric units.";
const METRIC_AGAIN: &str = "Customer wants metric units.";
const MERGED: &str = "The customer wants metric units (km, kg, °C) in every answer.";
const LOGO: &str = "Always end videos with the Acme logo sting.";

/// A ready deployment with `features`, an `api` memory, and one finished conversation in which
/// the agent saved two memories saying the same thing.
async fn deployment_with_duplicates(t: &TestServer, features: Value) -> String {
    let d = t.ready_deployment(json!({ "features": features })).await;
    let dep = d.deployment_id;
    let (status, body) = call(
        t,
        "POST",
        &format!("/v1/deployments/{dep}/memories"),
        Some(json!({ "content": LOGO })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    converse(
        t,
        &dep,
        "Use metric units, please. Metric!",
        vec![
            Script::new()
                .tool_call("c1", "memory", json!({"action": "add", "content": METRIC}))
                .tool_call(
                    "c2",
                    "memory",
                    json!({"action": "add", "content": METRIC_AGAIN}),
                ),
            Script::new().text("Noted."),
        ],
    )
    .await;
    dep
}

/// The events of the next dreaming run on `stream`, through its terminal `run_status`.
async fn next_pass(stream: &mut paddock_client::EventStream) -> Vec<paddock_client::SseEvent> {
    let mut run_id: Option<String> = None;
    collect_until(stream, |e| {
        if run_id.is_none() && e.event == "run_status" && e.data["trigger"] == "dreaming" {
            run_id = e.data["run_id"].as_str().map(str::to_owned);
        }
        run_id.as_deref().is_some_and(|r| is_terminal(e, r))
    })
    .await
    .into_iter()
    .skip_while(|e| !(e.event == "run_status" && e.data["trigger"] == "dreaming"))
    .collect()
}

#[tokio::test]
async fn an_idle_deployment_with_duplicates_gets_one_pass_that_merges_them() {
    let clock = TestClock::at(now_unix());
    // The dreamer also ticks by itself: the pass is whichever tick sees it first.
    let t = server(&clock, Duration::from_millis(20)).await;
    let dep = deployment_with_duplicates(&t, json!({"dreaming": true})).await;
    let off = deployment_with_duplicates(&t, json!({"dreaming": false})).await;

    // Just after a run: not idle, so no pass (for either).
    assert_eq!(dreamer(&t).tick().await.unwrap(), Vec::<String>::new());
    assert!(dreaming_runs(&t, &dep).await.is_empty());

    let before = memories(&t, &dep).await;
    let (logo, metric, again) = (
        by_content(&before, LOGO).clone(),
        by_content(&before, METRIC).clone(),
        by_content(&before, METRIC_AGAIN).clone(),
    );
    assert_eq!(
        (&logo["source"], &metric["source"], &again["source"]),
        (&json!("api"), &json!("agent"), &json!("agent"))
    );
    let (logo_id, metric_id, again_id) = (
        logo["memory_id"].as_str().unwrap(),
        metric["memory_id"].as_str().unwrap(),
        again["memory_id"].as_str().unwrap(),
    );
    // The pass: merge the two into one, and try to rewrite the api memory too.
    t.fake.push(
        Script::new()
            .tool_call(
                "d1",
                "memory",
                json!({"action": "update", "memory_id": metric_id, "content": MERGED}),
            )
            .tool_call(
                "d2",
                "memory",
                json!({"action": "delete", "memory_id": again_id}),
            )
            .tool_call(
                "d3",
                "memory",
                json!({"action": "update", "memory_id": logo_id, "content": "No logo."}),
            ),
    );
    t.fake
        .push(Script::new().text("Merged two memories about metric units."));
    let requests_before = t.fake.requests().len();

    let mut stream = open_events(&t.admin, &dep).await;
    clock.advance(IDLE + 60);
    let events = next_pass(&mut stream).await;

    // On the wire: a run without a thread, started by dreaming, that completes.
    let first = &events[0];
    assert_eq!(first.data["status"], "running", "{events:#?}");
    assert_eq!(first.data["reason"], "started");
    assert_eq!(first.data["thread_id"], Value::Null);
    let run_id = first.data["run_id"].as_str().unwrap().to_owned();
    let last = events.last().unwrap();
    assert_eq!(
        (&last.data["status"], &last.data["trigger"]),
        (&json!("completed"), &json!("dreaming"))
    );
    for e in &events {
        assert_eq!(e.data["thread_id"], Value::Null, "{e:?}");
    }
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "tool_result")
        .map(|e| &e.data)
        .collect();
    assert_eq!(results.len(), 3, "{events:#?}");
    assert_eq!(results[0]["is_error"], false, "{:?}", results[0]);
    assert_eq!(results[1]["is_error"], false, "{:?}", results[1]);
    // The api memory cannot be changed by dreaming: the call is an error result.
    assert_eq!(results[2]["is_error"], true, "{:?}", results[2]);
    assert!(
        results[2]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("API"),
        "{:?}",
        results[2]
    );

    let runs = dreaming_runs(&t, &dep).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].run_id, run_id);
    assert_eq!(runs[0].thread_id, None);
    assert_eq!(runs[0].status, "completed");

    // What the model was given: the pass's own prompt, only read_file and memory, and every
    // memory with its id and source.
    let request = &t.fake.requests()[requests_before];
    assert_eq!(request["messages"][0]["content"], SYSTEM_PROMPT);
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["read_file", "memory"]);
    let input = request["messages"][1]["content"].as_str().unwrap();
    for (id, source, content) in [
        (logo_id, "api", LOGO),
        (metric_id, "agent", METRIC),
        (again_id, "agent", METRIC_AGAIN),
    ] {
        assert!(
            input.contains(&format!("- {id} [{source}] {content}")),
            "{input}"
        );
    }

    // The duplicates are one memory now; the api one is exactly as it was.
    let after = memories(&t, &dep).await;
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_eq!(by_content(&after, LOGO), &logo);
    let merged = by_content(&after, MERGED);
    assert_eq!(merged["memory_id"], metric_id);
    assert_eq!(merged["source"], "agent");

    // The journal, through the Files API: every change with its before and after text.
    let (status, journal) = call(
        &t,
        "GET",
        &format!(
            "/v1/deployments/{dep}/files/content?path={}",
            journal_path(&run_id)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{journal}");
    let journal = journal.as_str().unwrap();
    let updated = journal
        .find(&format!("## 1. Updated `{metric_id}`"))
        .unwrap();
    let deleted = journal
        .find(&format!("## 2. Deleted `{again_id}`"))
        .unwrap();
    let update_text = &journal[updated..deleted];
    assert!(
        update_text.contains(&format!("Before:\n\n```text\n{METRIC}\n```")),
        "{journal}"
    );
    assert!(
        update_text.contains(&format!("After:\n\n```text\n{MERGED}\n```")),
        "{journal}"
    );
    assert!(
        journal[deleted..].contains(&format!("Before:\n\n```text\n{METRIC_AGAIN}\n```")),
        "{journal}"
    );
    assert!(!journal.contains("## 3."), "{journal}");
    assert!(
        journal.contains(&format!("- `update` of `{logo_id}`: ")),
        "{journal}"
    );

    // Idle, duplicates, a finished run, never dreamt: but `features.dreaming` is off.
    assert_eq!(dreamer(&t).tick().await.unwrap(), Vec::<String>::new());
    assert!(dreaming_runs(&t, &off).await.is_empty());

    // A new conversation finishes, the deployment is idle again, yet the interval has not
    // passed: no second pass.
    converse(&t, &dep, "Hello again.", vec![Script::new().text("Hi.")]).await;
    let pass_at = clock_of(&runs[0]);
    clock.set(now_unix() + IDLE + 60);
    assert!(clock_now(&clock) < pass_at + INTERVAL);
    assert_eq!(dreamer(&t).tick().await.unwrap(), Vec::<String>::new());
    assert_eq!(dreaming_runs(&t, &dep).await.len(), 1);

    // Past the interval, the next pass comes (so it was the interval that held it back).
    t.fake.push(Script::new().text("Nothing to change."));
    let mut stream = open_events(&t.admin, &dep).await;
    clock.set(pass_at + INTERVAL + 1);
    let second = next_pass(&mut stream).await;
    assert_ne!(second[0].data["run_id"], run_id.as_str());
    assert_eq!(second.last().unwrap().data["status"], "completed");
    assert_eq!(dreaming_runs(&t, &dep).await.len(), 2);
    assert!(dreaming_runs(&t, &off).await.is_empty());
}

/// When the run was created, in the clock's seconds (the dreamer stamps it with its clock).
fn clock_of(run: &paddock_protocol::Run) -> i64 {
    paddock_protocol::time::parse_timestamp(&run.created_at).unwrap()
}

fn clock_now(clock: &TestClock) -> i64 {
    paddock_core::scheduler::Clock::now(clock)
}

/// Two claims of one pass straight on the store, as two nodes would make them (no shared
/// in-process lock), and four ticks of this node at once: each pass starts once.
#[tokio::test]
async fn racing_ticks_and_nodes_start_exactly_one_pass() {
    let clock = TestClock::at(now_unix());
    // No ticking of its own: only the ticks below look.
    let t = server(&clock, Duration::from_secs(3600)).await;
    let a = deployment_with_duplicates(&t, json!({"dreaming": true})).await;
    let b = deployment_with_duplicates(&t, json!({"dreaming": true})).await;
    t.fake.set_default(Script::new().text("Nothing to change."));
    clock.advance(IDLE + 60);

    // "Two nodes": the same pass of `b` claimed twice concurrently.
    let store = t.server.as_ref().unwrap().state().store.clone();
    let claim = |run_id: &str| paddock_store::StartDreaming {
        deployment_id: b.clone(),
        run_id: run_id.to_owned(),
        rules: paddock_store::DreamingRules {
            idle_secs: IDLE,
            interval_secs: INTERVAL,
        },
        input: "Review these memories.".to_owned(),
        restrict: paddock_core::dreaming::restrict_config,
        now: clock_now(&clock),
    };
    let mut b_stream = open_events(&t.admin, &b).await;
    let (one, two) = tokio::join!(
        store.start_dreaming(claim("run_nodeOne1")),
        store.start_dreaming(claim("run_nodeTwo2"))
    );
    let won: Vec<String> = [one.unwrap(), two.unwrap()]
        .into_iter()
        .flatten()
        .map(|p| p.run.id)
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    t.server.as_ref().unwrap().state().runtime.wake();

    // Four ticks at once: `a` gets one pass; `b` (its pass is under way) none.
    let mut a_stream = open_events(&t.admin, &a).await;
    let d = dreamer(&t);
    let (w, x, y, z) = tokio::join!(d.tick(), d.tick(), d.tick(), d.tick());
    let started: Vec<String> = [w, x, y, z].into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(started.len(), 1, "{started:?}");
    let events = next_pass(&mut a_stream).await;
    assert_eq!(events[0].data["run_id"], started[0].as_str());
    collect_until(&mut b_stream, |e| is_terminal(e, &won[0])).await;

    // Both ended and the deployments are idle, but nothing else has finished since their
    // passes: later ticks start nothing.
    assert_eq!(d.tick().await.unwrap(), Vec::<String>::new());
    assert_eq!(dreaming_runs(&t, &a).await.len(), 1);
    let runs = dreaming_runs(&t, &b).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, won[0]);
}
