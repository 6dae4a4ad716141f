//! The crash harness (spec §5.4, §7.4, guarantees 11, 17–21, 26, 32): the real `paddock`
//! binary is killed with SIGKILL at random moments, many times, while runs on several
//! deployments call a slow model and make tool calls with non-idempotent side effects, and is
//! restarted on the same data directory each time. At the end nothing accepted is lost,
//! every run has ended as its script says, no tool call has taken effect twice, and the event
//! log keeps every per-run rule.
//!
//! The side effect: each job has a ledger file `ledger_<tag>.txt` holding `END`; each of its
//! tool calls is an `edit_file` that replaces `END` with `<call_id>\nEND`, so a call executed
//! twice leaves its id twice in the file.
//!
//! The fake model decides from the request, not from a queue: the newest `job <tag>` user
//! message names the job, and the number of tool results after it says how far the job is.
//! A model call redone after a crash repeats its request and gets the same answer (same call
//! ids), exactly as a real model would be asked again.
//!
//! The kill times, the messages and their targets come from a seeded RNG; the seed is printed
//! and `PADDOCK_CRASH_SEED=<seed>` replays a run of the harness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Api, Event, Home, Paddock, WAIT, describe, toml_string};
use paddock_test_support::{FakeOpenAi, Gate, RecordedRequest, Script};
use serde_json::{Value, json};

/// Deployments the jobs are spread over.
const DEPLOYMENTS: usize = 5;
/// SIGKILLs of the server.
const KILLS: usize = 52;
/// Tool calls in one model response, and in one job.
const CALLS_PER_STEP: usize = 2;
const CALLS_PER_JOB: usize = 4;
/// The slow model: a pause before every chunk of every answer.
const CHUNK_DELAY: Duration = Duration::from_millis(25);

/// SplitMix64: small, seedable, good enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

fn seed() -> u64 {
    match std::env::var("PADDOCK_CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("PADDOCK_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

fn call_id(tag: &str, k: usize) -> String {
    format!("call_{tag}_{k}")
}

fn ledger_name(tag: &str) -> String {
    format!("ledger_{tag}.txt")
}

/// The text of a message of a Chat Completions request (a string, or text parts).
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The job's tag from a message text `job <tag>`.
fn job_tag(text: &str) -> Option<&str> {
    text.strip_prefix("job ")
        .and_then(|rest| rest.split_whitespace().next())
}

/// Whether the job is scripted to fail: its model refuses (400) after its first step.
fn failing(tag: &str) -> bool {
    tag.starts_with("fail")
}

/// The model: answers from the conversation in the request.
fn respond(request: &RecordedRequest) -> Script {
    let messages = request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some((at, tag)) = messages.iter().enumerate().rev().find_map(|(i, m)| {
        let text = text_of(m);
        (m["role"] == "user")
            .then(|| job_tag(&text).map(|t| (i, t.to_owned())))
            .flatten()
    }) else {
        return Script::new().text("No job here.").chunk_delay(CHUNK_DELAY);
    };
    let done = messages[at + 1..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .count();
    if failing(&tag) && done >= CALLS_PER_STEP {
        return Script::error(400, format!("scripted refusal for {tag}"));
    }
    if done >= CALLS_PER_JOB {
        return Script::new()
            .text("Done with ")
            .text(tag.clone())
            .text(".")
            .usage(40, 4)
            .chunk_delay(CHUNK_DELAY);
    }
    let mut script = Script::new()
        .text(format!("Working on {tag}, "))
        .text("step by step.");
    for k in done..done + CALLS_PER_STEP {
        let id = call_id(&tag, k);
        script = script.tool_call(
            id.clone(),
            "edit_file",
            json!({"path": ledger_name(&tag), "old_string": "END", "new_string": format!("{id}\nEND")}),
        );
    }
    script.usage(30, 8).chunk_delay(CHUNK_DELAY)
}

/// `paddock.toml`: the fake model, short leases, a fast claim poll, room for every run.
fn config(base_url: &str, node_id: &str) -> String {
    format!(
        "default_model = \"fake/m\"\nshutdown_grace_secs = 2\n\n\
         [providers.fake]\nkind = \"openai\"\nbase_url = {}\n\n\
         [rate_limits]\nmax_active_runs_per_deployment = 100\n\n\
         [runs]\nmodel_retry_window_secs = 5\nnode_id = \"{node_id}\"\n\
         lease_duration_secs = 2\nheartbeat_interval_secs = 1\nclaim_poll_interval_ms = 100\n\
         max_concurrent_runs = 64\n",
        toml_string(base_url)
    )
}

/// A message the harness sent.
#[derive(Debug, Clone)]
struct Sent {
    dep: String,
    tag: String,
    content: String,
    /// The thread it was sent to (`None`: `"new"`).
    thread: Option<String>,
    /// The 202's body, if one arrived before the kill.
    accepted: Option<Value>,
}

/// POSTs a message; `None` if the server died before answering.
async fn try_send(api: Api, dep: String, body: Value) -> Option<Value> {
    let response = api
        .http
        .post(format!("{}/v1/deployments/{dep}/messages", api.base))
        .bearer_auth(&api.key)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.ok()?;
    assert_eq!(status, 202, "send {body}: {text}");
    Some(serde_json::from_str(&text).expect("a 202 body is JSON"))
}

/// Every event of `dep` from `evt_0` until each run of the deployment has ended.
async fn replay_all(api: &Api, dep: &str) -> (Vec<Event>, Vec<Value>) {
    let runs = api
        .get_ok(&format!("/v1/deployments/{dep}/runs?limit=100"))
        .await;
    assert_eq!(runs["next_cursor"], Value::Null, "more than 100 runs");
    let runs = runs["data"].as_array().unwrap().clone();
    let mut open: HashSet<String> = runs
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    let mut sse = api.events(dep, "?after=evt_0").await;
    if !open.is_empty() {
        sse.until(Duration::from_secs(60), |e| {
            if e.event == "run_status"
                && matches!(e.data["status"].as_str(), Some("completed" | "error"))
            {
                open.remove(e.data["run_id"].as_str().unwrap_or(""));
            }
            open.is_empty()
        })
        .await;
    }
    (sse.seen, runs)
}

/// Spec §7.4 rules 1–4 for one run over the full log, with the resumes a crash adds: the
/// input `message`, then `running`/`started`; later `running` statuses are resumes; one
/// terminal status, last; each `tool_call` has exactly one later `tool_result` (and no result
/// lacks its call); no steering here. Returns the tag of the run's input.
fn assert_run_invariants(all: &[Event], run_id: &str) -> String {
    let run: Vec<&Event> = all.iter().filter(|e| e.data["run_id"] == run_id).collect();
    let shape = || describe(&run.iter().map(|e| (*e).clone()).collect::<Vec<_>>());
    assert!(run.len() >= 3, "too few events for {run_id}:\n{}", shape());
    assert_eq!(run[0].event, "message", "{}", shape());
    assert_eq!(run[0].data["role"], "user", "{}", shape());
    assert!(run[1].is_status(run_id, "running"), "{}", shape());
    assert_eq!(run[1].data["reason"], "started", "{}", shape());
    let last = run[run.len() - 1];
    assert!(
        last.is_terminal(run_id),
        "the last event is terminal:\n{}",
        shape()
    );
    assert_eq!(
        run.iter().filter(|e| e.is_terminal(run_id)).count(),
        1,
        "one terminal status:\n{}",
        shape()
    );
    for e in &run[2..] {
        if e.is_status(run_id, "running") {
            assert_eq!(e.data["reason"], "resumed", "{}", shape());
        }
        assert!(
            !matches!(e.event.as_str(), "steering_request" | "steering_resolved"),
            "{}",
            shape()
        );
    }
    for (i, call) in run
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event == "tool_call")
    {
        let results: Vec<usize> = run
            .iter()
            .enumerate()
            .filter(|(_, e)| e.event == "tool_result" && e.data["call_id"] == call.data["call_id"])
            .map(|(j, _)| j)
            .collect();
        assert_eq!(
            results.len(),
            1,
            "one result for {}:\n{}",
            call.data["call_id"],
            shape()
        );
        assert!(results[0] > i, "the result follows its call:\n{}", shape());
    }
    for result in run.iter().filter(|e| e.event == "tool_result") {
        let calls = run
            .iter()
            .filter(|e| e.event == "tool_call" && e.data["call_id"] == result.data["call_id"])
            .count();
        assert_eq!(calls, 1, "{}: {}", result.data["call_id"], shape());
    }
    job_tag(run[0].data["content"].as_str().unwrap_or(""))
        .unwrap_or_else(|| panic!("the input of {run_id} is no job:\n{}", shape()))
        .to_owned()
}

/// The call ids in a ledger file, in order; panics unless it still ends with `END`.
fn ledger_ids(path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        lines.pop().as_deref(),
        Some("END"),
        "{} lost its marker: {text:?}",
        path.display()
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_repeats_no_side_effect() {
    let seed = seed();
    println!("crash harness seed: {seed} (rerun with PADDOCK_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let fake = FakeOpenAi::start().await;
    fake.set_responder(respond);
    let home = Home::new(&config(&fake.base_url(), "node_a"));
    let workspaces = home.data_dir.join("workspaces");

    let mut server = Paddock::start(&home).await;
    let key = server.admin_key.clone().expect("first start prints a key");
    let mut api = server.api(&key);
    let mut deps = Vec::new();
    for n in 0..DEPLOYMENTS {
        let d = api
            .create_ready_deployment(&json!({
                "customer_id": format!("cus_crash{n}"),
                "name": format!("Crash {n}"),
                "system_prompt": "You are a test agent.",
            }))
            .await;
        deps.push(d["deployment_id"].as_str().unwrap().to_owned());
    }
    let new_ledger = |dep: &str, tag: &str| -> PathBuf {
        let path = workspaces.join(dep).join(ledger_name(tag));
        std::fs::write(&path, "END\n").unwrap();
        path
    };

    let mut sent: Vec<Sent> = Vec::new();
    let mut jobs = 0usize;
    // Threads that may take follow-ups, (deployment, thread): no failing job is ever on them,
    // so a follow-up may join their running run as steering input.
    let mut threads: Vec<(String, String)> = Vec::new();
    let mut kills = 0usize;
    let mut node = "node_a";

    while kills < KILLS {
        // The next job(s) of this cycle, each sent at a random moment of it: before the kill
        // (accepted), or racing it (maybe never answered).
        let kill_at = rng.range(60, 700);
        let mut sends = Vec::new();
        let first_cycle = kills == 0;
        let count = if first_cycle {
            DEPLOYMENTS
        } else {
            rng.range(0, 3) as usize
        };
        for i in 0..count {
            jobs += 1;
            let follow_up = !first_cycle && !threads.is_empty() && rng.chance(40);
            let fail = !follow_up && rng.chance(12);
            let tag = format!("{}{jobs}", if fail { "fail" } else { "j" });
            let (dep, thread) = if follow_up {
                // Mostly a thread whose run started lately, so it is likely still running and
                // the message joins it as steering input; else any thread.
                let recent = if rng.chance(70) { 3 } else { threads.len() };
                let from = threads.len().saturating_sub(recent);
                let pick = rng.range(from as u64, threads.len() as u64) as usize;
                let (dep, thread) = threads[pick].clone();
                (dep, Some(thread))
            } else if first_cycle {
                (deps[i].clone(), None)
            } else {
                (
                    deps[rng.range(0, DEPLOYMENTS as u64) as usize].clone(),
                    None,
                )
            };
            new_ledger(&dep, &tag);
            let content = format!("job {tag}");
            let body = match &thread {
                Some(t) => json!({"content": content, "thread_id": t}),
                None => json!({"content": content, "thread_id": "new"}),
            };
            let offset = if first_cycle {
                0
            } else {
                rng.range(0, kill_at + 60)
            };
            let (a, d) = (api.clone(), dep.clone());
            let task = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(offset)).await;
                try_send(a, d, body).await
            });
            sends.push((
                Sent {
                    dep,
                    tag,
                    content,
                    thread,
                    accepted: None,
                },
                task,
            ));
        }

        tokio::time::sleep(Duration::from_millis(kill_at)).await;
        server.kill9().await;
        kills += 1;

        for (mut s, task) in sends {
            s.accepted = task.await.unwrap();
            if let Some(a) = &s.accepted
                && !failing(&s.tag)
            {
                let thread = a["thread_id"].as_str().unwrap().to_owned();
                threads.retain(|(_, t)| *t != thread);
                threads.push((s.dep.clone(), thread));
            }
            sent.push(s);
        }

        // Now and then another node id: the dead node's leases must expire before the new
        // one takes its runs over.
        if kills.is_multiple_of(9) {
            node = if node == "node_a" { "node_b" } else { "node_a" };
            std::fs::write(&home.config, config(&fake.base_url(), node)).unwrap();
        }
        server = Paddock::start(&home).await;
        assert_eq!(server.admin_key, None, "a restart makes no new admin key");
        // The client follows the server to its new port.
        api = server.api(&key);
    }

    // The last start runs everything to its end.
    let mut figures = (0usize, 0usize, 0usize, 0usize); // runs, resumes, interrupted, duplicates
    let mut seen_ids: HashSet<(String, u64)> = HashSet::new();
    let mut results: HashMap<String, (bool, Value)> = HashMap::new(); // call id → (interrupted, event)
    let mut run_tags: BTreeMap<String, (String, String)> = BTreeMap::new(); // run → (dep, tag)
    let mut terminal: HashMap<String, Value> = HashMap::new();
    for dep in &deps {
        let (all, runs) = replay_all(&api, dep).await;
        // Ids strictly increase (the reader checks it) and none repeats.
        for e in &all {
            assert!(
                seen_ids.insert((dep.clone(), e.seq())),
                "event id {} twice in {dep}",
                e.id
            );
        }
        for r in &runs {
            let run_id = r["run_id"].as_str().unwrap();
            let tag = assert_run_invariants(&all, run_id);
            let end = all.iter().find(|e| e.is_terminal(run_id)).unwrap();
            terminal.insert(run_id.to_owned(), end.data.clone());
            run_tags.insert(run_id.to_owned(), (dep.clone(), tag));
            let got = api
                .get_ok(&format!("/v1/deployments/{dep}/runs/{run_id}"))
                .await;
            assert_eq!(got["status"], end.data["status"], "{got}");
        }
        figures.0 += runs.len();
        figures.1 += all
            .iter()
            .filter(|e| e.event == "run_status" && e.data["reason"] == "resumed")
            .count();
        for e in all.iter().filter(|e| e.event == "tool_result") {
            let interrupted = e.data["result"]["error"] == "interrupted";
            if interrupted {
                assert_eq!(e.data["is_error"], true, "{e:?}");
                assert!(
                    e.data["result"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("may or may not")),
                    "{e:?}"
                );
                figures.2 += 1;
            } else {
                assert_eq!(e.data["is_error"], false, "an edit failed: {e:?}");
            }
            let id = e.data["call_id"].as_str().unwrap().to_owned();
            assert!(
                results
                    .insert(id.clone(), (interrupted, e.data.clone()))
                    .is_none(),
                "two tool_result events for {id}"
            );
        }
        let running = api
            .get_ok(&format!("/v1/deployments/{dep}/runs?status=running"))
            .await;
        assert_eq!(running["data"], json!([]), "{running}");
    }

    // Every run ended as its script says: a failing job with `model_error`, the rest completed.
    for (run_id, (_, tag)) in &run_tags {
        let end = &terminal[run_id];
        if failing(tag) {
            assert_eq!(end["status"], "error", "{run_id} ({tag}): {end}");
            assert_eq!(
                end["error"]["code"], "model_error",
                "{run_id} ({tag}): {end}"
            );
        } else {
            assert_eq!(end["status"], "completed", "{run_id} ({tag}): {end}");
        }
    }

    // Every accepted message is in its thread's history, with the run the 202 named; a
    // message that joined a running run reached the model (guarantees 11, 21).
    let requests: Vec<String> = fake.requests().iter().map(Value::to_string).collect();
    let mut accepted = 0;
    let mut steering = 0;
    for s in &sent {
        let Some(a) = &s.accepted else { continue };
        accepted += 1;
        let thread = a["thread_id"].as_str().unwrap();
        let run_id = a["run_id"].as_str().unwrap();
        if let Some(t) = &s.thread {
            assert_eq!(thread, t, "{a}");
        }
        let history = api
            .get_ok(&format!(
                "/v1/deployments/{}/threads/{thread}?messages_limit=500",
                s.dep
            ))
            .await;
        assert_eq!(history["has_more_messages"], false);
        assert_eq!(history["status"], "idle", "{history}");
        let stored: Vec<&Value> = history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["message_id"] == a["message_id"])
            .collect();
        assert_eq!(stored.len(), 1, "message {a} not in its thread: {history}");
        assert_eq!(stored[0]["content"], s.content.as_str());
        assert_eq!(stored[0]["run_id"], run_id);
        assert_eq!(stored[0]["role"], "user");
        // A message that started its run is that run's input; otherwise it joined a running
        // run as steering input.
        if run_tags[run_id].1 != s.tag {
            assert!(
                s.thread.is_some(),
                "a message to a new thread joined {run_id}"
            );
            steering += 1;
            assert!(
                requests.iter().any(|r| r.contains(&s.content)),
                "steering input `{}` of {run_id} never reached the model",
                s.content
            );
            assert_eq!(terminal[run_id]["status"], "completed");
        }
    }

    // The side effects: no call took effect twice; every result that is not `interrupted`
    // took effect exactly once; nothing took effect without a recorded result.
    let mut in_files: HashMap<String, usize> = HashMap::new();
    for s in &sent {
        let ids = ledger_ids(&workspaces.join(&s.dep).join(ledger_name(&s.tag)));
        for id in ids {
            assert!(
                id.starts_with(&format!("call_{}_", s.tag)),
                "{id} in the ledger of {}",
                s.tag
            );
            *in_files.entry(id).or_default() += 1;
        }
    }
    let duplicates: Vec<(&String, &usize)> = in_files.iter().filter(|(_, n)| **n > 1).collect();
    figures.3 = duplicates.iter().map(|(_, n)| **n - 1).sum();
    for (id, (interrupted, data)) in &results {
        let n = in_files.get(id).copied().unwrap_or(0);
        if !interrupted {
            assert_eq!(n, 1, "{id} has a result but took effect {n} times: {data}");
        }
    }
    for id in in_files.keys() {
        assert!(
            results.contains_key(id),
            "{id} took effect but no tool_result was recorded"
        );
    }

    println!(
        "crash harness: seed {seed}, kills {kills}, deployments {DEPLOYMENTS}, runs {}, \
         messages accepted {accepted} (steering input {steering}), resumes {}, tool results {}, \
         interrupted results {}, duplicates found {}",
        figures.0,
        figures.1,
        results.len(),
        figures.2,
        figures.3
    );
    assert_eq!(figures.3, 0, "calls executed twice: {duplicates:?}");
    assert!(figures.0 >= 20, "only {} runs", figures.0);
    assert!(kills >= 50);
    assert!(
        figures.1 > 0,
        "no run was ever resumed: the kills hit nothing"
    );
    drop(server);
}

/// Guarantee 11 across a crash: a message queued as steering input to a running run before a
/// SIGKILL reaches the model after the restart, and the run does not complete before that.
/// The model answers so that a call without the message would end the run at once.
#[tokio::test]
async fn steering_input_queued_before_a_sigkill_reaches_the_model_after_the_restart() {
    let fake = FakeOpenAi::start().await;
    let home = Home::new(&config(&fake.base_url(), "node_a"));
    let mut server = Paddock::start(&home).await;
    let key = server.admin_key.clone().expect("first start prints a key");
    let api = server.api(&key);
    let dep = api
        .create_ready_deployment(&json!({
            "customer_id": "cus_steer",
            "name": "Steered",
            "system_prompt": "You are a test agent.",
        }))
        .await;
    let dep_id = dep["deployment_id"].as_str().unwrap().to_owned();
    let thread = dep["thread_id"].as_str().unwrap().to_owned();

    // The first call is held mid-answer; every later one ends the run with text that says
    // whether it saw the queued message.
    let gate = Gate::new();
    fake.push(Script::new().text("Thinking").hold(&gate).text(" done."));
    fake.set_responder(|request| {
        if request.body.to_string().contains("Use teal") {
            Script::new().text("Teal it is.")
        } else {
            Script::new().text("Finished without it.")
        }
    });
    let mut live = api.events(&dep_id, "").await;
    let run = api
        .send_message(&dep_id, &json!({"content": "Pick a colour."}))
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    gate.reached().await;
    let token = live
        .until(WAIT, |e| {
            e.event == "token" && e.data["run_id"] == run_id.as_str()
        })
        .await;
    let step = token.data["step"].clone();

    let queued = api
        .send_message(
            &dep_id,
            &json!({"content": "Use teal.", "thread_id": thread}),
        )
        .await;
    assert_eq!(queued["run_id"], run_id.as_str(), "{queued}");
    let queued_id = queued["message_id"].as_str().unwrap().to_owned();
    live.until(WAIT, |e| {
        e.event == "message" && e.data["message_id"] == queued_id.as_str()
    })
    .await;
    assert_eq!(fake.requests().len(), 1);
    assert!(!fake.requests()[0].to_string().contains("Use teal"));
    server.kill9().await;
    drop(live);

    let server = Paddock::start(&home).await;
    let api = server.api(&key);
    let mut all = api.events(&dep_id, "?after=evt_0").await;
    let end = all.until(WAIT, |e| e.is_terminal(&run_id)).await;
    let log = describe(&all.seen);
    assert!(end.is_status(&run_id, "completed"), "{log}");
    let run_events: Vec<&Event> = all
        .seen
        .iter()
        .filter(|e| e.data["run_id"] == run_id.as_str())
        .collect();
    let resumed = run_events
        .iter()
        .position(|e| e.is_status(&run_id, "running") && e.data["reason"] == "resumed")
        .unwrap_or_else(|| panic!("not resumed: {log}"));
    let answers: Vec<&str> = run_events
        .iter()
        .filter(|e| e.event == "message" && e.data["role"] == "agent")
        .map(|e| e.data["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        answers,
        ["Teal it is."],
        "the only answer, the one that ended the run, saw the queued message: {log}"
    );
    // The call in flight at the kill is redone under its step, with the message in it.
    let redone = run_events[resumed..]
        .iter()
        .find(|e| e.event == "token")
        .unwrap_or_else(|| panic!("no token after the resume: {log}"));
    assert_eq!(redone.data["step"], step, "{log}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "one redone call after the restart");
    let last = requests[1].to_string();
    assert!(
        last.contains("Pick a colour.") && last.contains("Use teal."),
        "{last}"
    );
    let history = api
        .get_ok(&format!("/v1/deployments/{dep_id}/threads/{thread}"))
        .await;
    let contents: Vec<(&str, &str)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        contents,
        [
            ("user", "Pick a colour."),
            ("user", "Use teal."),
            ("agent", "Teal it is.")
        ],
        "{history}"
    );
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["run_id"] == run_id.as_str())
    );
    drop(gate);
}

/// A tiny HTTP server on 127.0.0.2 for attachments: `/cat.png` answers a PNG at once, `/slow`
/// sends its headers and a few bytes, then nothing for as long as the test runs. The watch
/// counts the requests of each (`[cat, slow]`).
async fn attachment_host() -> (
    std::net::SocketAddr,
    tokio::sync::watch::Receiver<[usize; 2]>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hits, rx) = tokio::sync::watch::channel([0usize; 2]);
    let hits = std::sync::Arc::new(hits);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                if text.starts_with("GET /cat.png ") {
                    hits.send_modify(|h| h[0] += 1);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        PNG.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(PNG).await;
                } else if text.starts_with("GET /slow ") {
                    hits.send_modify(|h| h[1] += 1);
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n\x89PNG")
                        .await;
                    // Hold the connection open, sending nothing more.
                    std::future::pending::<()>().await;
                } else {
                    let _ = socket
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (addr, rx)
}

/// Spec §4.3 and §5.4: an attachment's outcome is recorded before the next fetch, so a run
/// killed during a fetch does not fetch again what it already saved; an attachment whose fetch
/// was interrupted by two kills is given up (the model is told) instead of being tried forever.
#[tokio::test]
async fn attachment_fetches_survive_sigkills_without_refetching_forever() {
    let fake = FakeOpenAi::start().await;
    let (host, mut hits) = attachment_host().await;
    let home = Home::new(&format!(
        "{}\n[outbound]\nallowed_networks = [\"127.0.0.2/32\"]\n\n[attachments]\ntimeout_secs = 600\n",
        config(&fake.base_url(), "node_a")
    ));
    let mut server = Paddock::start(&home).await;
    let key = server.admin_key.clone().expect("first start prints a key");
    let api = server.api(&key);
    let dep = api
        .create_ready_deployment(&json!({
            "customer_id": "cus_att",
            "name": "Attachments",
            "system_prompt": "You are a test agent.",
        }))
        .await;
    let dep_id = dep["deployment_id"].as_str().unwrap().to_owned();
    let cat = format!("http://{host}/cat.png");
    let slow = format!("http://{host}/slow");
    let run = api
        .send_message(
            &dep_id,
            &json!({"content": "Look.", "attachments": [
                {"type": "image", "url": cat}, {"type": "image", "url": slow},
            ]}),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let message_id = run["message_id"].as_str().unwrap().to_owned();

    // Killed twice while `/slow` is being fetched (the second time by the resumed run).
    for attempt in 1..=2 {
        tokio::time::timeout(WAIT, hits.wait_for(|h| h[1] >= attempt))
            .await
            .expect("the slow attachment is requested")
            .unwrap();
        server.kill9().await;
        server = Paddock::start(&home).await;
    }
    let api = server.api(&key);
    let mut all = api.events(&dep_id, "?after=evt_0").await;
    let end = all.until(WAIT, |e| e.is_terminal(&run_id)).await;
    assert!(
        end.is_status(&run_id, "completed"),
        "{}",
        describe(&all.seen)
    );
    assert_eq!(
        *hits.borrow(),
        [1, 2],
        "cat fetched once, slow twice, then given up"
    );

    let requests = fake.requests();
    assert_eq!(
        requests.len(),
        1,
        "the model was called once, after the fetches"
    );
    let request = requests[0].to_string();
    assert!(
        request.contains(&format!(
            "[image attachment 2 ({slow}) could not be fetched: the fetch was interrupted 2 times (the server stopped during it)]"
        )),
        "{request}"
    );
    assert!(
        request.contains(&format!(
            "[image attachment 1 ({cat}) saved in the workspace at .paddock/attachments/{message_id}/1-cat.png"
        )),
        "{request}"
    );
}
