//! Automations (spec §9, the `automations` tool of §13.1): the API with every error row of
//! §9.4, and the scheduler against a `TestClock` the tests set: firing at the scheduled
//! instants, once per time across a restart, deferral on a busy thread, catch-up after
//! downtime, pause and resume, and an automation the agent creates in conversation.
//!
//! Time is the injected clock only; waits are on events (or on the firing counters of
//! `/metrics`), never on time. A "fence" automation of another deployment that fires at the
//! instant the clock is set to shows that the scheduler has ticked at that instant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use paddock_client::SseEvent;
use paddock_core::scheduler::{Clock, TestClock};
use paddock_server::{AppState, Server};
use paddock_store::{BalanceChange, FireAutomation, FiringKind, FiringResult};
use paddock_test_support::{Gate, Script};
use serde_json::{Value, json};

use common::{TestServer, WAIT, collect_until, is_terminal, open_events, settings_for};

fn at(s: &str) -> i64 {
    paddock_protocol::time::parse_timestamp(s).unwrap()
}

fn state(t: &TestServer) -> &AppState {
    t.server.as_ref().expect("server running").state()
}

async fn start(clock: &Arc<TestClock>) -> TestServer {
    let clock = clock.clone();
    TestServer::start_with(move |s| tweak(s, clock)).await
}

fn tweak(s: &mut paddock_server::ServerSettings, clock: Arc<TestClock>) {
    s.automations.clock = clock;
    s.automations.tick_interval = Duration::from_millis(10);
}

/// Stops the server gracefully and starts it again on the same data directory and clock.
async fn restart(t: &mut TestServer, clock: &Arc<TestClock>, between: impl FnOnce()) {
    let server = t.server.take().expect("running");
    server.shutdown().await.expect("graceful shutdown");
    between();
    let mut settings = settings_for(t.dir.path(), &t.fake);
    tweak(&mut settings, clock.clone());
    let server = Server::start(settings).await.expect("restart");
    t.base_url = format!("http://{}", server.local_addr());
    t.admin = paddock_client::Client::new(&t.base_url, Some(t.admin_key.clone()));
    t.server = Some(server);
}

/// `(status, body)` of a raw request with `key` (the admin key by default).
async fn call_as(
    t: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = t.http().request(method, t.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn call(t: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(t, &t.admin_key.clone(), method, path, body).await
}

async fn create(t: &TestServer, dep: &str, body: Value) -> Value {
    let (status, a) = call(
        t,
        "POST",
        &format!("/v1/deployments/{dep}/automations"),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    a
}

async fn get(t: &TestServer, dep: &str, id: &str) -> Value {
    let (status, a) = call(
        t,
        "GET",
        &format!("/v1/deployments/{dep}/automations/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{a}");
    a
}

async fn runs_of(t: &TestServer, dep: &str, id: &str) -> Vec<Value> {
    let (status, page) = call(
        t,
        "GET",
        &format!("/v1/deployments/{dep}/runs?automation_id={id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

fn assert_error(got: &(u16, Value), status: u16, code: &str, param: Option<&str>) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    if let Some(p) = param {
        assert_eq!(got.1["error"]["param"], p, "{}", got.1);
    }
}

/// Whether `e` is the start of a run fired by automation `id`.
fn fired(e: &SseEvent, id: &str) -> bool {
    e.event == "run_status" && e.data["automation_id"] == id && e.data["reason"] == "started"
}

/// Reads the stream until automation `id` started a run and that run ended; returns the run id.
async fn wait_fired_and_done(stream: &mut paddock_client::EventStream, id: &str) -> String {
    let mut run = None::<String>;
    collect_until(stream, |e| {
        if fired(e, id) {
            run = e.data["run_id"].as_str().map(str::to_owned);
        }
        run.as_deref().is_some_and(|r| is_terminal(e, r))
    })
    .await;
    run.unwrap()
}

/// A counter of `paddock_automation_firings_total`.
async fn firings(t: &TestServer, outcome: &str) -> u64 {
    let text = t
        .http()
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle = format!("paddock_automation_firings_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

/// Waits (bounded) until the `outcome` counter reaches `n`.
async fn wait_firings(t: &TestServer, outcome: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while firings(t, outcome).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{outcome} never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fence: an automation on its own deployment due at `cron`'s next time, whose run shows the
/// scheduler ticked at the instant the clock was set to.
struct Fence {
    dep: String,
    id: String,
    stream: paddock_client::EventStream,
}

impl Fence {
    async fn new(t: &TestServer, cron: &str) -> Fence {
        let d = t.ready_deployment(json!({})).await;
        let a = create(
            t,
            &d.deployment_id,
            json!({"name": "fence", "schedule": cron, "instructions": "fence"}),
        )
        .await;
        let stream = open_events(&t.admin, &d.deployment_id).await;
        Fence {
            dep: d.deployment_id,
            id: a["automation_id"].as_str().unwrap().to_owned(),
            stream,
        }
    }

    /// Waits for the fence's firing to end: the scheduler has ticked at the current time.
    async fn passed(&mut self) {
        wait_fired_and_done(&mut self.stream, &self.id).await;
    }
}

#[tokio::test]
async fn crud_and_every_error_row() {
    let clock = TestClock::at(at("2026-06-11T21:20:10Z"));
    let t = start(&clock).await;
    t.fake.set_default(Script::new().text("ok"));
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let base = format!("/v1/deployments/{dep}/automations");

    let a = create(
        &t,
        dep,
        json!({"name": "Weekly video variations", "schedule": "every Monday at 9am",
               "instructions": "Look at last week's best video and make five variations."}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("auto_"), "{a}");
    assert_eq!(a["schedule"], "0 9 * * 1");
    assert_eq!(a["schedule_text"], "every Monday at 9am");
    assert_eq!(a["enabled"], true);
    assert_eq!(a["created_by"], "api");
    assert_eq!(a["deployment_id"], dep);
    // 2026-06-11 is a Thursday: the next Monday is the 15th.
    assert_eq!(a["next_run_at"], "2026-06-15T09:00:00Z");
    assert_eq!(a["last_run_at"], Value::Null);
    assert_eq!(a["last_run_status"], Value::Null);
    assert_eq!(a["created_at"], "2026-06-11T21:20:10Z");
    // Its own thread, titled with the name and pointing back at it.
    let thread_id = a["thread_id"].as_str().unwrap();
    let (status, thread) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/threads/{thread_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{thread}");
    assert_eq!(thread["title"], "Weekly video variations");
    assert_eq!(thread["automation_id"], id.as_str());
    // The thread an automation targets cannot be deleted from under it.
    let got = call(
        &t,
        "DELETE",
        &format!("/v1/deployments/{dep}/threads/{thread_id}"),
        None,
    )
    .await;
    assert_error(&got, 409, "conflict", None);

    // Cron as given, on an existing thread, disabled (a second later: lists are newest first).
    clock.advance(1);
    let b = create(
        &t,
        dep,
        json!({"name": "b", "schedule": "30   17 * * 1,4", "instructions": "b",
               "thread_id": d.thread_id, "enabled": false}),
    )
    .await;
    let bid = b["automation_id"].as_str().unwrap().to_owned();
    assert_eq!(b["schedule"], "30 17 * * 1,4");
    assert_eq!(b["schedule_text"], Value::Null);
    assert_eq!(b["thread_id"], d.thread_id.as_str());
    assert_eq!(b["next_run_at"], Value::Null);

    // List: newest first, paged.
    let (status, page) = call(&t, "GET", &format!("{base}?limit=1"), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["data"][0]["automation_id"], bid.as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = call(&t, "GET", &format!("{base}?limit=1&cursor={cursor}"), None).await;
    assert_eq!(page2["data"][0]["automation_id"], id.as_str());
    assert_eq!(page2["next_cursor"], Value::Null);

    // Get: with an empty history.
    let got = get(&t, dep, &id).await;
    assert_eq!(got["runs"], json!([]));

    // PATCH merges; a new schedule recomputes `next_run_at`; pause and resume.
    let (status, p) = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"name": "Renamed", "schedule": "daily at 9am"})),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["name"], "Renamed");
    assert_eq!(p["schedule"], "0 9 * * *");
    assert_eq!(p["instructions"], a["instructions"]);
    assert_eq!(p["next_run_at"], "2026-06-12T09:00:00Z");
    let (_, p) = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(p["enabled"], false);
    assert_eq!(p["next_run_at"], Value::Null);
    let (_, p) = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(p["next_run_at"], "2026-06-12T09:00:00Z");

    // Trigger: now, `manual`, while disabled too, `next_run_at` untouched.
    let mut stream = open_events(&t.admin, dep).await;
    let (status, fired_now) = call(&t, "POST", &format!("{base}/{bid}/trigger"), None).await;
    assert_eq!(status, 202, "{fired_now}");
    assert_eq!(fired_now["automation_id"], bid.as_str());
    assert_eq!(fired_now["thread_id"], d.thread_id.as_str());
    assert_eq!(fired_now["status"], "running");
    let run_id = fired_now["run_id"].as_str().unwrap().to_owned();
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let message = events.iter().find(|e| e.event == "message").unwrap();
    assert_eq!(message.data["automation_id"], bid.as_str());
    assert_eq!(message.data["content"], "b");
    let started = events
        .iter()
        .find(|e| e.event == "run_status" && e.data["reason"] == "started")
        .unwrap();
    assert_eq!(started.data["trigger"], "manual");
    assert_eq!(started.data["automation_id"], bid.as_str());
    let b_now = get(&t, dep, &bid).await;
    assert_eq!(b_now["next_run_at"], Value::Null);
    assert_eq!(b_now["last_run_status"], "completed");
    assert_eq!(b_now["last_run_at"], "2026-06-11T21:20:11Z");
    assert_eq!(b_now["runs"][0]["run_id"], run_id.as_str());
    assert_eq!(b_now["runs"][0]["trigger"], "manual");
    assert_eq!(b_now["runs"][0]["status"], "completed");
    assert_eq!(b_now["runs"][0]["thread_id"], d.thread_id.as_str());
    let runs = runs_of(&t, dep, &bid).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["automation_id"], bid.as_str());
    assert!(runs_of(&t, dep, &id).await.is_empty());
    // The instructions are a `user` message of the thread, with `automation_id`.
    let (_, thread) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/threads/{}", d.thread_id),
        None,
    )
    .await;
    let user = thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    assert_eq!(user["automation_id"], bid.as_str());

    // 400s name their field.
    for (body, param) in [
        (json!({"schedule": "hourly", "instructions": "x"}), "name"),
        (
            json!({"name": "", "schedule": "hourly", "instructions": "x"}),
            "name",
        ),
        (
            json!({"name": "x".repeat(201), "schedule": "hourly", "instructions": "x"}),
            "name",
        ),
        (
            json!({"name": 5, "schedule": "hourly", "instructions": "x"}),
            "name",
        ),
        (json!({"name": "n", "instructions": "x"}), "schedule"),
        (
            json!({"name": "n", "schedule": "whenever you like", "instructions": "x"}),
            "schedule",
        ),
        (
            json!({"name": "n", "schedule": "daily at 9am PST", "instructions": "x"}),
            "schedule",
        ),
        (
            json!({"name": "n", "schedule": "61 * * * *", "instructions": "x"}),
            "schedule",
        ),
        (
            json!({"name": "n", "schedule": "x".repeat(201), "instructions": "x"}),
            "schedule",
        ),
        (json!({"name": "n", "schedule": "hourly"}), "instructions"),
        (
            json!({"name": "n", "schedule": "hourly", "instructions": "x".repeat(20_001)}),
            "instructions",
        ),
        (
            json!({"name": "n", "schedule": "hourly", "instructions": "x", "thread_id": 7}),
            "thread_id",
        ),
        (
            json!({"name": "n", "schedule": "hourly", "instructions": "x", "enabled": "yes"}),
            "enabled",
        ),
    ] {
        let got = call(&t, "POST", &base, Some(body.clone())).await;
        assert_error(&got, 400, "validation_error", Some(param));
    }
    let got = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"schedule": "sometimes"})),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("schedule"));
    let got = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"instructions": ""})),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("instructions"));

    // 404 for a thread that is not this deployment's, in the body (create and patch).
    let other = t.ready_deployment(json!({})).await;
    for body in [
        json!({"name": "n", "schedule": "hourly", "instructions": "x",
               "thread_id": other.thread_id}),
        json!({"name": "n", "schedule": "hourly", "instructions": "x", "thread_id": "thr_nope"}),
    ] {
        let got = call(&t, "POST", &base, Some(body)).await;
        assert_error(&got, 404, "not_found", Some("thread_id"));
    }
    let got = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"thread_id": other.thread_id})),
    )
    .await;
    assert_error(&got, 404, "not_found", Some("thread_id"));

    // 404 for unknown automations, identical for another account's.
    let foreign_account = t.admin.create_account("other-account", None).await.unwrap();
    let foreign_key = t
        .admin
        .create_key(
            "other",
            &["deployments:read", "deployments:write"],
            Some(&foreign_account.account_id),
            None,
        )
        .await
        .unwrap()
        .key
        .unwrap();
    let foreign_dep = {
        let client = t.client(Some(&foreign_key));
        common::ready_deployment(&client, json!({})).await
    };
    let foreign = call_as(
        &t,
        &foreign_key,
        "POST",
        &format!("/v1/deployments/{}/automations", foreign_dep.deployment_id),
        Some(json!({"name": "f", "schedule": "hourly", "instructions": "f"})),
    )
    .await;
    assert_eq!(foreign.0, 201, "{}", foreign.1);
    let fid = foreign.1["automation_id"].as_str().unwrap();
    for (method, suffix) in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/trigger"),
    ] {
        let body = (method == "PATCH").then(|| json!({"name": "x"}));
        let (s1, b1) = call(
            &t,
            method,
            &format!("{base}/auto_unknown{suffix}"),
            body.clone(),
        )
        .await;
        let (s2, b2) = call(&t, method, &format!("{base}/{fid}{suffix}"), body).await;
        assert_eq!(s1, 404, "{method} {b1}");
        assert_eq!(s2, 404, "{method} {b2}");
        assert_eq!(
            b1["error"]["message"]
                .as_str()
                .unwrap()
                .replace("auto_unknown", "ID"),
            b2["error"]["message"].as_str().unwrap().replace(fid, "ID"),
        );
        assert_eq!(b1["error"]["code"], b2["error"]["code"]);
    }
    // Another account's deployment is the unknown-deployment 404.
    let got = call(
        &t,
        "GET",
        &format!("/v1/deployments/{}/automations", foreign_dep.deployment_id),
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", None);

    // Trigger while the thread has an active run: 409.
    let gate = Gate::new();
    t.fake.push(Script::new().text("busy").hold(&gate));
    let busy_run = t
        .admin
        .send_message(dep, "keep busy", None, &[])
        .await
        .unwrap()
        .run_id;
    gate.reached().await;
    let got = call(&t, "POST", &format!("{base}/{bid}/trigger"), None).await;
    assert_error(&got, 409, "conflict", None);
    // Active-run limit: a trigger on another idle thread would be the 9th... the server's limit is
    // 8; with the limit at one running run it is a 429 (see `trigger_limits` below).
    gate.open();
    let mut stream = open_events(&t.admin, dep).await;
    if t.admin.get_run(dep, &busy_run).await.unwrap().status == "running" {
        collect_until(&mut stream, |e| is_terminal(e, &busy_run)).await;
    }

    // Balance ≤ 0: 402, nothing started.
    let account_id = state(&t)
        .store
        .deployment_by_id(dep)
        .await
        .unwrap()
        .account_id;
    state(&t)
        .store
        .update_balance(&account_id, BalanceChange::Set(Some(0)))
        .await
        .unwrap();
    let got = call(&t, "POST", &format!("{base}/{bid}/trigger"), None).await;
    assert_error(&got, 402, "insufficient_credits", None);
    assert_eq!(runs_of(&t, dep, &bid).await.len(), 1);
    state(&t)
        .store
        .update_balance(&account_id, BalanceChange::Set(None))
        .await
        .unwrap();

    // Deployment not ready: 409 deployment_not_ready.
    let mut record = state(&t).store.deployment_by_id(dep).await.unwrap();
    record.status = "provisioning".to_owned();
    state(&t)
        .store
        .set_deployment_status(&record)
        .await
        .unwrap();
    let got = call(&t, "POST", &format!("{base}/{bid}/trigger"), None).await;
    assert_error(&got, 409, "deployment_not_ready", None);
    record.status = "ready".to_owned();
    state(&t)
        .store
        .set_deployment_status(&record)
        .await
        .unwrap();

    // `features.automations` false: create and trigger are 409s; `next_run_at` shows null.
    let (status, _) = call(
        &t,
        "PATCH",
        &format!("/v1/deployments/{dep}"),
        Some(json!({"features": {"automations": false}})),
    )
    .await;
    assert_eq!(status, 200);
    let got = call(
        &t,
        "POST",
        &base,
        Some(json!({"name": "n", "schedule": "hourly", "instructions": "x"})),
    )
    .await;
    assert_error(&got, 409, "conflict", None);
    let got = call(&t, "POST", &format!("{base}/{bid}/trigger"), None).await;
    assert_error(&got, 409, "conflict", None);
    assert_eq!(get(&t, dep, &id).await["next_run_at"], Value::Null);
    let (status, _) = call(
        &t,
        "PATCH",
        &format!("/v1/deployments/{dep}"),
        Some(json!({"features": {"automations": true}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&t, dep, &id).await["next_run_at"],
        "2026-06-12T09:00:00Z"
    );

    // Delete: 200, then 404; the thread and the history stay.
    let (status, gone) = call(&t, "DELETE", &format!("{base}/{bid}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(gone, json!({"automation_id": bid, "status": "deleted"}));
    let got = call(&t, "GET", &format!("{base}/{bid}"), None).await;
    assert_error(&got, 404, "not_found", None);
    let got = call(&t, "DELETE", &format!("{base}/{bid}"), None).await;
    assert_error(&got, 404, "not_found", None);
    assert_eq!(runs_of(&t, dep, &bid).await.len(), 1);

    // At most 100 per deployment.
    let (_, page) = call(&t, "GET", &format!("{base}?limit=100"), None).await;
    let existing = page["data"].as_array().unwrap().len();
    for i in existing..100 {
        create(
            &t,
            dep,
            json!({"name": format!("n{i}"), "schedule": "hourly", "instructions": "x"}),
        )
        .await;
    }
    let got = call(
        &t,
        "POST",
        &base,
        Some(json!({"name": "101st", "schedule": "hourly", "instructions": "x"})),
    )
    .await;
    assert_error(&got, 409, "conflict", None);
}

#[tokio::test]
async fn trigger_limits_and_the_server_minimum_interval() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let c = clock.clone();
    let t = TestServer::start_with(move |s| {
        tweak(s, c);
        s.rate_limits.max_active_runs_per_deployment = 1;
        s.automations.min_interval_secs = 300;
    })
    .await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let base = format!("/v1/deployments/{dep}/automations");
    // Every minute is more often than this server's five minutes.
    let got = call(
        &t,
        "POST",
        &base,
        Some(json!({"name": "n", "schedule": "every minute", "instructions": "x"})),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("schedule"));
    let a = create(
        &t,
        dep,
        json!({"name": "n", "schedule": "every 15 minutes", "instructions": "x"}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap();
    // One run on the default thread fills the deployment's one slot: 429 on another thread.
    let gate = Gate::new();
    t.fake.push(Script::new().text("busy").hold(&gate));
    t.admin.send_message(dep, "busy", None, &[]).await.unwrap();
    gate.reached().await;
    let got = call(&t, "POST", &format!("{base}/{id}/trigger"), None).await;
    assert_error(&got, 429, "rate_limited", None);
    gate.open();
}

#[tokio::test]
async fn fires_at_the_scheduled_instants_only() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let t = start(&clock).await;
    t.fake.set_default(Script::new().text("done"));
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let a = create(
        &t,
        dep,
        json!({"name": "q", "schedule": "*/15 * * * *", "instructions": "Quarter-hourly check."}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap().to_owned();
    assert_eq!(a["next_run_at"], "2026-06-11T10:15:00Z");
    let mut fence = Fence::new(&t, "14 10 * * *").await;
    let mut stream = open_events(&t.admin, dep).await;

    // One second early: the fence (due at 10:14) fires, the automation does not.
    clock.set(at("2026-06-11T10:14:59Z"));
    fence.passed().await;
    assert!(runs_of(&t, dep, &id).await.is_empty());

    clock.set(at("2026-06-11T10:15:00Z"));
    let first = wait_fired_and_done(&mut stream, &id).await;
    let run = t.admin.get_run(dep, &first).await.unwrap();
    assert_eq!(run.trigger, "schedule");
    assert_eq!(run.automation_id.as_deref(), Some(id.as_str()));
    assert_eq!(run.thread_id.as_deref(), a["thread_id"].as_str());
    assert_eq!(run.created_at, "2026-06-11T10:15:00Z");
    let now = get(&t, dep, &id).await;
    assert_eq!(now["next_run_at"], "2026-06-11T10:30:00Z");
    assert_eq!(now["last_run_at"], "2026-06-11T10:15:00Z");
    assert_eq!(now["last_run_status"], "completed");
    // The model saw the instructions as the user's message.
    let last = t.fake.requests().last().unwrap().clone();
    assert!(last.to_string().contains("Quarter-hourly check."), "{last}");

    clock.set(at("2026-06-11T10:30:02Z"));
    let second = wait_fired_and_done(&mut stream, &id).await;
    assert_ne!(first, second);
    let runs = runs_of(&t, dep, &id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["created_at"], "2026-06-11T10:30:02Z");
    assert_eq!(
        get(&t, dep, &id).await["next_run_at"],
        "2026-06-11T10:45:00Z"
    );
    assert_eq!(firings(&t, "fired").await, 3, "two firings and the fence's");
    let _ = fence.dep;
}

#[tokio::test]
async fn a_time_fires_once_across_a_restart_mid_firing() {
    let clock = TestClock::at(at("2026-06-11T08:59:00Z"));
    let mut t = start(&clock).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.clone();
    let a = create(
        &t,
        &dep,
        json!({"name": "daily", "schedule": "0 9 * * *", "instructions": "Daily report."}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap().to_owned();
    let gate = Gate::new();
    t.fake.push(Script::new().text("report").hold(&gate));
    t.fake.set_default(Script::new().text("report"));
    clock.set(at("2026-06-11T09:00:00Z"));
    // The firing's run is in its model call when the server stops.
    gate.reached().await;
    let runs = runs_of(&t, &dep, &id).await;
    assert_eq!(runs.len(), 1);
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    restart(&mut t, &clock, || gate.open()).await;
    // The same instant and later: the claimed time is not fired again, and a second claim of
    // it through the store (a scheduler that read the old `next_run_at`) is refused.
    let claim = state(&t)
        .store
        .fire_automation(FireAutomation {
            automation_id: id.clone(),
            kind: FiringKind::Scheduled {
                expected: at("2026-06-11T09:00:00Z"),
                next: Some(at("2026-06-12T09:00:00Z")),
                fire: Some(at("2026-06-11T09:00:00Z")),
            },
            run_id: "run_secondclaim".to_owned(),
            message_id: "msg_secondclaim".to_owned(),
            max_active_runs: 8,
            now: clock.now(),
        })
        .await
        .unwrap();
    assert_eq!(claim, FiringResult::NotClaimed);
    let mut stream = open_events(&t.admin, &dep).await;
    if t.admin.get_run(&dep, &run_id).await.unwrap().status == "running" {
        collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    }
    let mut fence = Fence::new(&t, "1 9 * * *").await;
    clock.set(at("2026-06-11T09:01:00Z"));
    fence.passed().await;
    let runs = runs_of(&t, &dep, &id).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(
        get(&t, &dep, &id).await["next_run_at"],
        "2026-06-12T09:00:00Z"
    );

    // The next day's time fires, once.
    clock.set(at("2026-06-12T09:00:00Z"));
    wait_fired_and_done(&mut stream, &id).await;
    assert_eq!(runs_of(&t, &dep, &id).await.len(), 2);
}

#[tokio::test]
async fn a_busy_thread_holds_one_firing_and_drops_the_rest() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let t = start(&clock).await;
    t.fake.set_default(Script::new().text("done"));
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let a = create(
        &t,
        dep,
        json!({"name": "five", "schedule": "*/5 * * * *", "instructions": "Every five.",
               "thread_id": d.thread_id}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap().to_owned();
    let gate = Gate::new();
    t.fake.push(Script::new().text("long task").hold(&gate));
    let mut stream = open_events(&t.admin, dep).await;
    let busy = t
        .admin
        .send_message(dep, "a long task", None, &[])
        .await
        .unwrap()
        .run_id;
    gate.reached().await;

    clock.set(at("2026-06-11T10:05:00Z"));
    wait_firings(&t, "deferred", 1).await;
    clock.set(at("2026-06-11T10:10:00Z"));
    wait_firings(&t, "dropped", 1).await;
    clock.set(at("2026-06-11T10:15:00Z"));
    wait_firings(&t, "dropped", 2).await;
    assert!(runs_of(&t, dep, &id).await.is_empty());
    assert_eq!(
        get(&t, dep, &id).await["next_run_at"],
        "2026-06-11T10:20:00Z"
    );

    // The thread's run ends: the held firing starts, once.
    gate.open();
    let mut seen = Vec::new();
    let mut started = None::<String>;
    let events = collect_until(&mut stream, |e| {
        if fired(e, &id) {
            started = e.data["run_id"].as_str().map(str::to_owned);
        }
        started.as_deref().is_some_and(|r| is_terminal(e, r))
    })
    .await;
    seen.extend(events);
    let busy_end = seen.iter().position(|e| is_terminal(e, &busy)).unwrap();
    let fired_at = seen.iter().position(|e| fired(e, &id)).unwrap();
    assert!(busy_end < fired_at);
    assert_eq!(firings(&t, "deferred_started").await, 1);
    let runs = runs_of(&t, dep, &id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["trigger"], "schedule");

    // Nothing else was held: the next firing is the 10:20 one.
    let mut fence = Fence::new(&t, "19 10 * * *").await;
    clock.set(at("2026-06-11T10:19:00Z"));
    fence.passed().await;
    assert_eq!(runs_of(&t, dep, &id).await.len(), 1);
    assert_eq!(firings(&t, "deferred_started").await, 1);
}

#[tokio::test]
async fn after_downtime_the_latest_missed_time_fires_once_within_the_window() {
    let clock = TestClock::at(at("2026-06-11T08:00:00Z"));
    let mut t = start(&clock).await;
    t.fake.set_default(Script::new().text("done"));
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.clone();
    let daily = create(
        &t,
        &dep,
        json!({"name": "daily", "schedule": "0 9 * * *", "instructions": "daily"}),
    )
    .await;
    let daily = daily["automation_id"].as_str().unwrap().to_owned();
    let hourly = create(
        &t,
        &dep,
        json!({"name": "hourly", "schedule": "hourly", "instructions": "hourly"}),
    )
    .await;
    let hourly = hourly["automation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&t, &dep, &daily).await["next_run_at"],
        "2026-06-11T09:00:00Z"
    );
    assert_eq!(
        get(&t, &dep, &hourly).await["next_run_at"],
        "2026-06-11T09:00:00Z"
    );

    // Down from 08:00 to 13:20: the daily 09:00 is more than an hour old by then; the hourly
    // 09:00 to 13:00 were missed and 13:00 is within the hour.
    restart(&mut t, &clock, || clock.set(at("2026-06-11T13:20:00Z"))).await;
    let mut stream = t
        .admin
        .events(
            &dep,
            paddock_client::EventsQuery {
                after: Some("evt_0".into()),
                ..Default::default()
            },
        )
        .await;
    wait_fired_and_done(&mut stream, &hourly).await;
    wait_firings(&t, "missed", 1).await;
    let runs = runs_of(&t, &dep, &hourly).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["created_at"], "2026-06-11T13:20:00Z");
    assert_eq!(
        get(&t, &dep, &hourly).await["next_run_at"],
        "2026-06-11T14:00:00Z"
    );
    assert!(runs_of(&t, &dep, &daily).await.is_empty());
    assert_eq!(
        get(&t, &dep, &daily).await["next_run_at"],
        "2026-06-12T09:00:00Z"
    );
    assert_eq!(firings(&t, "fired").await, 1);
}

#[tokio::test]
async fn pause_and_resume() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let t = start(&clock).await;
    t.fake.set_default(Script::new().text("done"));
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    // Through the typed client.
    let a = t
        .admin
        .create_automation(
            dep,
            &json!({"name": "ten", "schedule": "*/10 * * * *", "instructions": "ten"}),
        )
        .await
        .unwrap();
    let id = a.automation_id.clone();
    let p = t
        .admin
        .update_automation(dep, &id, &json!({"enabled": false}))
        .await
        .unwrap();
    assert!(!p.enabled);
    assert_eq!(p.next_run_at, None);
    let mut fence = Fence::new(&t, "5 11 * * *").await;
    clock.set(at("2026-06-11T11:05:00Z"));
    fence.passed().await;
    assert!(runs_of(&t, dep, &id).await.is_empty());

    // Resumed from now: the paused hour is not caught up.
    let p = t
        .admin
        .update_automation(dep, &id, &json!({"enabled": true}))
        .await
        .unwrap();
    assert_eq!(p.next_run_at.as_deref(), Some("2026-06-11T11:10:00Z"));
    let mut stream = open_events(&t.admin, dep).await;
    clock.set(at("2026-06-11T11:10:00Z"));
    wait_fired_and_done(&mut stream, &id).await;
    let runs = runs_of(&t, dep, &id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["created_at"], "2026-06-11T11:10:00Z");
    // A manual run now leaves `next_run_at` alone (a second later, so it is the newest).
    clock.set(at("2026-06-11T11:10:01Z"));
    let manual = t.admin.trigger_automation(dep, &id).await.unwrap();
    assert_eq!(manual.status, "running");
    collect_until(&mut stream, |e| is_terminal(e, &manual.run_id)).await;
    let after = t.admin.get_automation(dep, &id).await.unwrap();
    assert_eq!(after.next_run_at.as_deref(), Some("2026-06-11T11:20:00Z"));
    assert_eq!(after.runs.unwrap()[0].trigger, "manual");

    // `features.automations` false stops firing altogether.
    let (status, _) = call(
        &t,
        "PATCH",
        &format!("/v1/deployments/{dep}"),
        Some(json!({"features": {"automations": false}})),
    )
    .await;
    assert_eq!(status, 200);
    let mut fence = Fence::new(&t, "20 11 * * *").await;
    clock.set(at("2026-06-11T11:20:00Z"));
    fence.passed().await;
    assert_eq!(
        runs_of(&t, dep, &id).await.len(),
        2,
        "the 11:10 and the manual run"
    );
    let gone = t.admin.delete_automation(dep, &id).await.unwrap();
    assert_eq!(gone.status, "deleted");
}

#[tokio::test]
async fn the_agent_creates_an_automation_that_the_api_shows_and_that_fires() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let t = start(&clock).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    t.fake.push(Script::new().tool_call(
        "call_bad",
        "automations",
        json!({"action": "create", "name": "Morning digest", "schedule": "every so often",
               "instructions": "Summarise yesterday."}),
    ));
    t.fake.push(Script::new().tool_call(
        "call_auto",
        "automations",
        json!({"action": "create", "name": "Morning digest", "schedule": "daily at 9am",
               "instructions": "Summarise yesterday."}),
    ));
    t.fake.push(Script::new().text("Every day at 9."));
    t.fake.set_default(Script::new().text("Digest."));
    let mut stream = open_events(&t.admin, dep).await;
    let run_id = t
        .admin
        .send_message(dep, "Send me a digest every morning at 9.", None, &[])
        .await
        .unwrap()
        .run_id;
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let results: Vec<&SseEvent> = events.iter().filter(|e| e.event == "tool_result").collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].data["is_error"], true, "{:?}", results[0].data);
    assert!(
        results[0].data.to_string().contains("schedule"),
        "{:?}",
        results[0].data
    );
    assert_eq!(results[1].data["is_error"], false, "{:?}", results[1].data);
    // The tool was offered with the feature on.
    let first = &t.fake.requests()[0];
    assert!(first["tools"].to_string().contains("\"automations\""));

    // Through the typed client: the API shows what the agent made.
    let page = t
        .admin
        .list_automations(dep, &paddock_client::PageQuery::default())
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    let a = &page.data[0];
    assert_eq!(a.created_by, "agent");
    assert_eq!(a.name, "Morning digest");
    assert_eq!(a.schedule, "0 9 * * *");
    assert_eq!(a.schedule_text.as_deref(), Some("daily at 9am"));
    assert_eq!(a.next_run_at.as_deref(), Some("2026-06-12T09:00:00Z"));
    assert!(a.runs.is_none(), "lists carry no history");
    let id = a.automation_id.clone();
    let thread_id = a.thread_id.clone();

    clock.set(at("2026-06-12T09:00:00Z"));
    let fired_run = wait_fired_and_done(&mut stream, &id).await;
    let run = t.admin.get_run(dep, &fired_run).await.unwrap();
    assert_eq!(run.trigger, "schedule");
    assert_eq!(run.thread_id.as_deref(), Some(thread_id.as_str()));
    let one = t.admin.get_automation(dep, &id).await.unwrap();
    let history = one.runs.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].run_id, fired_run);
    assert_eq!(history[0].trigger, "schedule");
    assert_eq!(history[0].started_at, "2026-06-12T09:00:00Z");

    // Pause, resume and delete through the tool too.
    t.fake.push(Script::new().tool_call(
        "call_pause",
        "automations",
        json!({"action": "pause", "automation_id": id}),
    ));
    t.fake
        .push(Script::new().tool_call("call_list", "automations", json!({"action": "list"})));
    t.fake.push(Script::new().text("Paused."));
    let run_id = t
        .admin
        .send_message(dep, "Pause it.", None, &[])
        .await
        .unwrap()
        .run_id;
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let listed = events.iter().rfind(|e| e.event == "tool_result").unwrap();
    assert_eq!(
        listed.data["result"]["automations"][0]["enabled"], false,
        "{:?}",
        listed.data
    );
    assert_eq!(get(&t, dep, &id).await["enabled"], false);
    // Resume, then change the schedule and the instructions.
    t.fake.push(Script::new().tool_call(
        "call_resume",
        "automations",
        json!({"action": "resume", "automation_id": id}),
    ));
    t.fake.push(Script::new().tool_call(
        "call_update",
        "automations",
        json!({"action": "update", "automation_id": id, "schedule": "0 10 * * *",
               "instructions": "Summarise the news at ten."}),
    ));
    t.fake.push(Script::new().text("Changed."));
    let run_id = t
        .admin
        .send_message(dep, "Resume it at ten.", None, &[])
        .await
        .unwrap()
        .run_id;
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let updated = events.iter().rfind(|e| e.event == "tool_result").unwrap();
    assert_eq!(updated.data["is_error"], false, "{:?}", updated.data);
    let now = get(&t, dep, &id).await;
    assert_eq!(now["enabled"], true, "{now}");
    assert_eq!(now["schedule"], "0 10 * * *", "{now}");
    assert_eq!(now["instructions"], "Summarise the news at ten.", "{now}");
    assert_eq!(now["created_by"], "agent", "{now}");
    t.fake.push(Script::new().tool_call(
        "call_delete",
        "automations",
        json!({"action": "delete", "automation_id": id}),
    ));
    t.fake.push(Script::new().text("Deleted."));
    let run_id = t
        .admin
        .send_message(dep, "Delete it.", None, &[])
        .await
        .unwrap()
        .run_id;
    collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let got = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/automations/{id}"),
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", None);

    // Without the feature the tool is not offered.
    let off = t
        .ready_deployment(json!({"features": {"automations": false}}))
        .await;
    let mut stream = open_events(&t.admin, &off.deployment_id).await;
    let asked = t.fake.requests().len();
    let run_id = t
        .admin
        .send_message(&off.deployment_id, "hi", None, &[])
        .await
        .unwrap()
        .run_id;
    collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let request = &t.fake.requests()[asked];
    assert!(!request["tools"].to_string().contains("\"automations\""));
}

#[tokio::test]
async fn a_firing_without_credits_ends_at_once_with_insufficient_credits() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let t = start(&clock).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let a = create(
        &t,
        dep,
        json!({"name": "h", "schedule": "hourly", "instructions": "Hourly."}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap().to_owned();
    let account_id = state(&t)
        .store
        .deployment_by_id(dep)
        .await
        .unwrap()
        .account_id;
    state(&t)
        .store
        .update_balance(&account_id, BalanceChange::Set(Some(0)))
        .await
        .unwrap();
    let mut stream = open_events(&t.admin, dep).await;
    clock.set(at("2026-06-11T11:00:00Z"));
    let run_id = wait_fired_and_done(&mut stream, &id).await;
    let run = t.admin.get_run(dep, &run_id).await.unwrap();
    assert_eq!(run.status, "error");
    assert_eq!(run.error.unwrap().code, "insufficient_credits");
    assert_eq!(run.trigger, "schedule");
    assert!(t.fake.requests().is_empty(), "no model call was made");
    let now = get(&t, dep, &id).await;
    assert_eq!(now["last_run_status"], "error");
    assert_eq!(now["runs"][0]["run_id"], run_id.as_str());
    assert_eq!(now["next_run_at"], "2026-06-11T12:00:00Z");
}

/// With an hour between ticks, only the run-status wake-up can start the held firing: it
/// starts as the thread's run ends.
#[tokio::test]
async fn a_held_firing_starts_when_the_threads_run_ends_not_at_the_next_tick() {
    let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
    let c = clock.clone();
    let t = TestServer::start_with(move |s| {
        tweak(s, c);
        s.automations.tick_interval = Duration::from_secs(3600);
    })
    .await;
    t.fake.set_default(Script::new().text("done"));
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let a = create(
        &t,
        dep,
        json!({"name": "five", "schedule": "*/5 * * * *", "instructions": "Every five.",
               "thread_id": d.thread_id}),
    )
    .await;
    let id = a["automation_id"].as_str().unwrap().to_owned();
    let gate = Gate::new();
    t.fake.push(Script::new().text("long task").hold(&gate));
    let mut stream = open_events(&t.admin, dep).await;
    t.admin
        .send_message(dep, "a long task", None, &[])
        .await
        .unwrap();
    gate.reached().await;
    // The time comes; a run on another thread changes status, which makes the scheduler look.
    clock.set(at("2026-06-11T10:05:00Z"));
    let other = t
        .admin
        .send_message(dep, "elsewhere", Some("new"), &[])
        .await
        .unwrap()
        .run_id;
    collect_until(&mut stream, |e| is_terminal(e, &other)).await;
    wait_firings(&t, "deferred", 1).await;
    gate.open();
    wait_fired_and_done(&mut stream, &id).await;
    assert_eq!(firings(&t, "deferred_started").await, 1);
}
