//! Several nodes on one PostgreSQL database (docs/scaling-out.md): three real `paddock serve`
//! processes on their own loopback ports and data directories share one database (a fresh
//! schema per test, at `PADDOCK_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and one shared directory of workspaces.
//!
//! - Messages sent to any node are streamed by every node, each event exactly once, in order.
//! - A run driven by a node that is killed with SIGKILL is resumed by another node once the
//!   dead node's lease expires, without repeating the tool call it had recorded.
//! - An automation fires once per scheduled time although three schedulers look at it.
//! - A node whose shared directory is not the one the others use refuses to start.
//!
//! PostgreSQL must be reachable: these tests fail without it, they are never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Api, Event, Home, Paddock, Sse, WAIT, describe, run_paddock, toml_string};
use paddock_test_support::{FakeOpenAi, Gate, RecordedRequest, Script};
use serde_json::{Value, json};

/// Every node's master key: secrets written by one node are read by the others.
const MASTER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// A run's lease, in seconds: how long a dead node's runs wait before another takes them.
const LEASE_SECS: u64 = 2;

fn database_url() -> String {
    std::env::var("PADDOCK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Three nodes sharing a schema and a shared directory. Dropping it kills the nodes and
/// drops the schema.
struct Cluster {
    nodes: Vec<Option<Paddock>>,
    _homes: Vec<Home>,
    shared: tempfile::TempDir,
    /// The database URL of the nodes (with the schema as search path).
    url: String,
    schema: String,
    key: String,
}

/// `paddock.toml` of node `n`: the fake model, the shared database and directory, short
/// leases and polls.
fn node_config(n: usize, url: &str, shared: &std::path::Path, fake: &FakeOpenAi) -> String {
    format!(
        "default_model = \"fake/m\"\nshutdown_grace_secs = 2\nshared_dir = {}\n\n\
         [database]\nurl = {}\nevent_poll_interval_ms = 200\n\n\
         [providers.fake]\nkind = \"openai\"\nbase_url = {}\n\n\
         [rate_limits]\nmax_active_runs_per_deployment = 100\n\n\
         [runs]\nmodel_retry_window_secs = 5\nnode_id = \"node_{n}\"\n\
         lease_duration_secs = {LEASE_SECS}\nheartbeat_interval_secs = 1\n\
         claim_poll_interval_ms = 100\n",
        toml_string(&shared.display().to_string()),
        toml_string(url),
        toml_string(&fake.base_url())
    )
}

impl Cluster {
    async fn start(fake: &FakeOpenAi) -> Cluster {
        static N: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "cluster_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let pool = sqlx::PgPool::connect(&database_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", database_url()));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let url = format!("{}?options=-c%20search_path%3D{schema}", database_url());
        let shared = tempfile::tempdir().unwrap();
        {
            // The sandbox uids must traverse the shared directory to reach their workspaces.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o711))
                .unwrap();
        }
        let mut homes = Vec::new();
        let mut nodes = Vec::new();
        for n in 0..3 {
            let home = Home::new(&node_config(n, &url, shared.path(), fake));
            let node = Paddock::start_with_env(&home, &[("PADDOCK_MASTER_KEY", MASTER_KEY)]).await;
            homes.push(home);
            nodes.push(Some(node));
        }
        let key = nodes[0]
            .as_ref()
            .unwrap()
            .admin_key
            .clone()
            .expect("the first node bootstraps the admin key");
        for node in &nodes[1..] {
            assert!(
                node.as_ref().unwrap().admin_key.is_none(),
                "only the first node of a database prints an admin key"
            );
        }
        Cluster {
            nodes,
            _homes: homes,
            shared,
            url,
            schema,
            key,
        }
    }

    fn api(&self, n: usize) -> Api {
        self.nodes[n]
            .as_ref()
            .expect("node is running")
            .api(&self.key)
    }

    /// The node id holding `run_id`'s lease, read from the database.
    async fn lease_owner(&self, run_id: &str) -> Option<String> {
        let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
        let owner: Option<String> = sqlx::query_scalar(&format!(
            "SELECT lease_owner FROM {}.runs WHERE id = $1",
            self.schema
        ))
        .bind(run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        owner
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let schema = self.schema.clone();
        // The tests run on a multi-threaded runtime, so this may block on the drop.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&database_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        });
    }
}

fn deployment_body(customer: &str, extra: Value) -> Value {
    let mut body = json!({
        "customer_id": customer,
        "name": "Cluster",
        "system_prompt": "You are a test agent.",
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// Checks that `events` are consecutive ids, each once.
fn assert_consecutive(events: &[Event], node: usize) {
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].seq(),
            pair[0].seq() + 1,
            "node {node}'s stream skipped or repeated an event:\n{}",
            describe(events)
        );
    }
}

/// Reads `sse` until every run of `runs` has ended.
async fn until_all_ended(sse: &mut Sse, runs: &HashSet<String>) {
    let mut open = runs.clone();
    while !open.is_empty() {
        let e = sse
            .until(WAIT, |e| {
                e.event == "run_status"
                    && matches!(e.data["status"].as_str(), Some("completed" | "error"))
            })
            .await;
        open.remove(e.data["run_id"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_streams_every_event_of_runs_sent_to_any_node_once_in_order() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(
        Script::new()
            .text("Hello ")
            .text("from ")
            .text("a node.")
            .usage(5, 3),
    );
    let cluster = Cluster::start(&fake).await;
    let dep = cluster
        .api(0)
        .create_ready_deployment(&deployment_body("cus_cluster", json!({})))
        .await;
    let dep = dep["deployment_id"].as_str().unwrap().to_owned();

    let mut streams = Vec::new();
    for n in 0..3 {
        streams.push(cluster.api(n).events(&dep, "").await);
    }
    let mut runs = HashSet::new();
    for k in 0..9 {
        // Messages go to every node in turn, on new threads, so runs overlap.
        let accepted = cluster
            .api(k % 3)
            .send_message(
                &dep,
                &json!({"content": format!("Message {k}"), "thread_id": "new"}),
            )
            .await;
        runs.insert(accepted["run_id"].as_str().unwrap().to_owned());
    }
    for (n, sse) in streams.iter_mut().enumerate() {
        until_all_ended(sse, &runs).await;
        assert_consecutive(&sse.seen, n);
    }
    // Every node saw the same events (ids, types and payloads) as the others…
    let first = &streams[0].seen;
    for (n, sse) in streams.iter().enumerate().skip(1) {
        let len = first.len().min(sse.seen.len());
        assert_eq!(
            &sse.seen[..len],
            &first[..len],
            "node {n}'s stream differs from node 0's"
        );
    }
    // …and exactly what a replay from the start holds.
    let last = first.last().unwrap().seq();
    let mut replay = cluster.api(1).events(&dep, "?after=evt_0").await;
    replay.until(WAIT, |e| e.seq() == last).await;
    let replayed: Vec<&Event> = replay
        .seen
        .iter()
        .filter(|e| e.seq() >= first[0].seq())
        .collect();
    assert_eq!(
        replayed,
        first.iter().collect::<Vec<_>>(),
        "the live streams match the stored log"
    );
    for run in &runs {
        let starts = first.iter().filter(|e| e.is_status(run, "running")).count();
        assert_eq!(starts, 1, "run {run} started once:\n{}", describe(first));
    }
}

/// The model of the failover test: one `edit_file` call that appends its id to the ledger,
/// then, once its result is in the conversation, an answer held at `gate`.
fn ledger_model(request: &RecordedRequest, gate: &Gate) -> Script {
    let messages = request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if messages.iter().any(|m| m["role"] == "tool") {
        return Script::new()
            .hold(gate)
            .text("Ledger updated.")
            .usage(20, 3);
    }
    Script::new()
        .text("Updating the ledger.")
        .tool_call(
            "call_ledger_1",
            "edit_file",
            json!({"path": "ledger.txt", "old_string": "END", "new_string": "call_ledger_1\nEND"}),
        )
        .usage(10, 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_killed_node_is_resumed_by_another_without_repeating_its_recorded_tool_call() {
    let fake = FakeOpenAi::start().await;
    let gate = Gate::new();
    {
        let gate = gate.clone();
        fake.set_responder(move |request| ledger_model(request, &gate));
    }
    let mut cluster = Cluster::start(&fake).await;
    let dep = cluster
        .api(0)
        .create_ready_deployment(&deployment_body("cus_failover", json!({})))
        .await;
    let dep = dep["deployment_id"].as_str().unwrap().to_owned();
    let ledger = cluster
        .shared
        .path()
        .join("workspaces")
        .join(&dep)
        .join("ledger.txt");
    std::fs::write(&ledger, "END").unwrap();

    let mut streams = Vec::new();
    for n in 0..3 {
        streams.push(Some(cluster.api(n).events(&dep, "").await));
    }
    let accepted = cluster
        .api(1)
        .send_message(&dep, &json!({"content": "Update the ledger."}))
        .await;
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    // The call is recorded and the next model call waits at the gate.
    gate.reached().await;
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap(),
        "call_ledger_1\nEND"
    );
    let owner = cluster
        .lease_owner(&run)
        .await
        .expect("the running run is leased");
    let victim: usize = owner
        .strip_prefix("node_")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected lease owner {owner}"));
    let mut dead = cluster.nodes[victim].take().unwrap();
    dead.kill9().await;
    streams[victim] = None;
    let killed_at = Instant::now();
    gate.open();

    let mut survivors = Vec::new();
    for (n, sse) in streams.iter_mut().enumerate() {
        let Some(sse) = sse.as_mut() else { continue };
        let resumed = sse
            .until(WAIT, |e| {
                e.is_status(&run, "running") && e.data["reason"] == "resumed"
            })
            .await;
        if survivors.is_empty() {
            let took = killed_at.elapsed();
            eprintln!("node {victim} killed; its run resumed after {took:?} ({resumed:?})");
            // The lease runs out at most one lease after the kill (the last renewal came
            // before it); a claim poll and a process's scheduling are the rest.
            assert!(
                took < Duration::from_secs(LEASE_SECS + 3),
                "resumed {took:?} after the kill, lease {LEASE_SECS} s"
            );
        }
        sse.until(WAIT, |e| e.is_terminal(&run)).await;
        assert_consecutive(&sse.seen, n);
        survivors.push(n);
    }
    assert_eq!(survivors.len(), 2);
    let new_owner_stream = streams[survivors[0]].as_ref().unwrap();
    let seen = &new_owner_stream.seen;
    let end = seen.iter().find(|e| e.is_terminal(&run)).unwrap();
    assert_eq!(end.data["status"], "completed", "{}", describe(seen));
    let results = seen
        .iter()
        .filter(|e| e.event == "tool_result" && e.data["call_id"] == "call_ledger_1")
        .count();
    assert_eq!(
        results,
        1,
        "the recorded call is not run again:\n{}",
        describe(seen)
    );
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap(),
        "call_ledger_1\nEND",
        "the edit took effect once"
    );
    let alive = survivors[1];
    let run_view = cluster
        .api(alive)
        .get_ok(&format!("/v1/deployments/{dep}/runs/{run}"))
        .await;
    assert_eq!(run_view["status"], "completed", "{run_view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automation_fires_once_per_scheduled_time_with_three_nodes_running() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Script::new().text("Tick done.").usage(5, 2));
    let cluster = Cluster::start(&fake).await;
    let dep = cluster
        .api(0)
        .create_ready_deployment(&deployment_body(
            "cus_schedule",
            json!({"features": {"automations": true}}),
        ))
        .await;
    let dep = dep["deployment_id"].as_str().unwrap().to_owned();
    let mut sse = cluster.api(2).events(&dep, "").await;
    let automation = cluster
        .api(1)
        .post_expect(
            &format!("/v1/deployments/{dep}/automations"),
            &json!({"name": "Every minute", "schedule": "* * * * *", "instructions": "Tick."}),
            201,
        )
        .await;
    let automation_id = automation["automation_id"].as_str().unwrap().to_owned();

    // Two scheduled times, a minute apart: by the second, every node's scheduler has long
    // looked at the first.
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let e = sse
            .until(Duration::from_secs(150), |e| {
                e.event == "run_status"
                    && matches!(e.data["status"].as_str(), Some("completed" | "error"))
            })
            .await;
        ended.push(e.data["run_id"].as_str().unwrap().to_owned());
    }
    cluster
        .api(0)
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/deployments/{dep}/automations/{automation_id}"),
            Some(&json!({"enabled": false})),
        )
        .await;
    let runs = cluster
        .api(1)
        .get_ok(&format!("/v1/deployments/{dep}/runs?limit=100"))
        .await;
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "one run per scheduled time: {runs:?}");
    for r in runs {
        assert_eq!(r["trigger"], "schedule", "{r}");
        assert_eq!(r["automation_id"], automation_id.as_str(), "{r}");
    }
    let starts: HashSet<&str> = runs
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "two distinct firings: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_shared_dir_is_not_the_clusters_refuses_to_start() {
    let fake = FakeOpenAi::start().await;
    let cluster = Cluster::start(&fake).await;
    let marker = cluster.shared.path().join("cluster_id");
    let identity = std::fs::read_to_string(&marker).expect("the first node wrote the marker");
    assert!(identity.trim().starts_with("cls"), "{identity}");

    // An empty directory (say, the share is not mounted) and another installation's share.
    let empty = tempfile::tempdir().unwrap();
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("cluster_id"), "cls_someoneelse\n").unwrap();
    for (dir, expected) in [
        (
            empty.path(),
            "is missing, but another node has already written it",
        ),
        (foreign.path(), "belongs to another Paddock installation"),
    ] {
        let home = Home::new(&node_config(7, &cluster.url, dir, &fake));
        let out = run_paddock(
            home.dir.path(),
            &[
                "serve",
                "--config",
                home.config.to_str().unwrap(),
                "--data-dir",
                home.data_dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
        )
        .await;
        assert!(
            !out.status.success(),
            "the node must not start: {}",
            out.stderr
        );
        assert!(out.stderr.contains(expected), "{}", out.stderr);
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    }
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        identity,
        "unchanged"
    );
}
