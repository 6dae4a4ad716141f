//! Steering (spec §6; guarantees 12, 22–25, 32): what pauses a run, the order of the events a
//! pause and an answer produce, what the model gets back, answering by message and by the
//! steering endpoint, cancel and timeout of a waiting run, and `features.steering` off.
//!
//! `write_file` is the consequential tool: its side effect is a workspace file, so "the tool
//! executed" is checked on disk as well as in the results. Waits are on events, never on time
//! (the steering timeout test waits for the timeout it configures).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use paddock_client::{Client, EventStream, SseEvent};
use paddock_protocol::Run;
use paddock_server::AppState;
use paddock_test_support::Script;
use serde_json::{Value, json};

use common::{TestServer, WAIT, collect_until, is_terminal, open_events};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn state(t: &TestServer) -> &AppState {
    t.server.as_ref().expect("server running").state()
}

/// Waits (bounded) until this node drives no run: a waiting run holds no task.
async fn until_no_active_runs(t: &TestServer) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while state(t).runtime.active_runs() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a run task is still alive: {} active",
            state(t).runtime.active_runs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until `run_id` pauses (`run_status` `waiting_on_human`) or ends.
async fn until_paused_or_ended(stream: &mut EventStream, run_id: &str) -> Vec<SseEvent> {
    collect_until(stream, |e| {
        is_terminal(e, run_id)
            || (e.event == "run_status"
                && e.data["run_id"] == run_id
                && e.data["status"] == "waiting_on_human")
    })
    .await
}

fn of_run<'a>(events: &'a [SseEvent], run_id: &str) -> Vec<&'a SseEvent> {
    events
        .iter()
        .filter(|e| e.data["run_id"] == run_id)
        .collect()
}

/// The per-run rules of §7.4 (guarantee 32) on the run's events in deployment order: input
/// `message` then `run_status` `running`/`started`; exactly one terminal `run_status`, last;
/// every `tool_call` with exactly one later `tool_result`; every `steering_request` with
/// exactly one later `steering_resolved`.
fn assert_run_invariants(all: &[SseEvent], run_id: &str) {
    let run = of_run(all, run_id);
    let kinds: Vec<String> = run
        .iter()
        .map(|e| format!("{}:{}", e.event, e.data["status"].as_str().unwrap_or("")))
        .collect();
    assert!(run.len() >= 3, "{kinds:?}");
    assert_eq!(run[0].event, "message", "{kinds:?}");
    assert_eq!(run[1].data["reason"], "started", "{kinds:?}");
    assert_eq!(run[1].seq().unwrap(), run[0].seq().unwrap() + 1);
    let terminal: Vec<usize> = (0..run.len())
        .filter(|&i| is_terminal(run[i], run_id))
        .collect();
    assert_eq!(terminal, [run.len() - 1], "one terminal, last: {kinds:?}");
    for pair in run.windows(2) {
        assert!(pair[0].seq() < pair[1].seq());
    }
    for (open, close, key) in [
        ("tool_call", "tool_result", "call_id"),
        ("steering_request", "steering_resolved", "request_id"),
    ] {
        for (i, e) in run.iter().enumerate().filter(|(_, e)| e.event == open) {
            let closes: Vec<usize> = (0..run.len())
                .filter(|&j| run[j].event == close && run[j].data[key] == e.data[key])
                .collect();
            assert_eq!(closes.len(), 1, "one {close} for {e:?}: {kinds:?}");
            assert!(closes[0] > i, "{close} after {open}: {kinds:?}");
        }
        for e in run.iter().filter(|e| e.event == close) {
            assert!(
                run.iter()
                    .any(|o| o.event == open && o.data[key] == e.data[key]),
                "{close} without {open}: {e:?}"
            );
        }
    }
}

/// The content the model was shown for `call_id` in fake request number `index`, parsed.
fn result_seen_by_model(t: &TestServer, index: usize, call_id: &str) -> Value {
    let requests = t.fake.requests();
    let messages = requests[index]["messages"].as_array().unwrap();
    let m = messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
        .unwrap_or_else(|| panic!("no result for {call_id} in request {index}: {messages:#?}"));
    serde_json::from_str(m["content"].as_str().unwrap()).unwrap()
}

fn offered_tools(t: &TestServer, index: usize) -> Vec<String> {
    t.fake.requests()[index]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn workspace_file(t: &TestServer, dep: &str, path: &str) -> Option<String> {
    let file = state(t).settings.workspaces_dir().join(dep).join(path);
    std::fs::read_to_string(file).ok()
}

async fn answer_by_endpoint(
    client: &Client,
    dep: &str,
    run_id: &str,
    request_id: &str,
    decision: &str,
    message: Option<&str>,
) -> Run {
    client
        .respond_steering(dep, run_id, request_id, decision, message)
        .await
        .unwrap_or_else(|e| panic!("steering {decision}: {e}"))
}

/// `POST …/runs/:run/steering` with a raw body: (status, body).
async fn steering_raw(t: &TestServer, dep: &str, run_id: &str, body: Value) -> (u16, Value) {
    let r = t
        .http()
        .post(t.url(&format!("/v1/deployments/{dep}/runs/{run_id}/steering")))
        .bearer_auth(&t.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------
// The approval matrix
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// The model calls `request_approval` (kind `approval`).
    RequestApproval,
    /// The model calls `write_file`, whose policy decides (kind `tool_call` when asked).
    Policy,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AnswerPath {
    Message,
    Endpoint,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Approve,
    Reject,
    Respond,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    steering: bool,
    ask: bool,
    source: Source,
    path: AnswerPath,
    answer: Answer,
}

impl Case {
    /// How this case answers: the decision the request gets, the text it carries, and what to
    /// send. `None` where the path cannot express the decision: a message is approve or
    /// respond (§6.3a), the endpoint approve or reject (§6.4).
    fn reply(&self) -> Option<(&'static str, Option<&'static str>)> {
        match (self.path, self.answer) {
            (AnswerPath::Message, Answer::Approve) => Some(("approve", Some("Yes."))),
            (AnswerPath::Message, Answer::Respond) => {
                Some(("respond", Some("Write only the summary, please")))
            }
            (AnswerPath::Endpoint, Answer::Approve) => Some(("approve", None)),
            (AnswerPath::Endpoint, Answer::Reject) => Some(("reject", Some("Not now"))),
            (AnswerPath::Message, Answer::Reject) | (AnswerPath::Endpoint, Answer::Respond) => None,
        }
    }
}

/// What the model's one response asks for: the source call, then a trailing `write_file`.
const SOURCE_CALL: &str = "call_source";
const TRAILING_CALL: &str = "call_trailing";

/// What a call should come to.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// It executed (its file exists; the model got the real result).
    Executed,
    /// The model got this result and nothing executed.
    Result(Value),
}

/// The model of §6 this test checks the server against: which calls pause (kind), in order,
/// and what each call comes to.
/// What a case leads to: the (call id, tool) pairs that pause, in order, and what each call
/// comes to.
type Expectation = (
    Vec<(&'static str, &'static str)>,
    Vec<(&'static str, Expect)>,
);

fn expected(case: &Case) -> Expectation {
    let calls = [
        (
            SOURCE_CALL,
            match case.source {
                Source::RequestApproval => "request_approval",
                Source::Policy => "write_file",
            },
        ),
        (TRAILING_CALL, "write_file"),
    ];
    let mut pauses = Vec::new();
    let mut results = Vec::new();
    let mut skipping = false;
    for (call, tool) in calls {
        if skipping {
            results.push((
                call,
                Expect::Result(json!({"executed": false, "reason": "skipped_after_rejection"})),
            ));
            continue;
        }
        let kind = match tool {
            "request_approval" if case.steering => Some("approval"),
            "request_approval" => {
                // Not offered with steering off; a call to it anyway is refused.
                results.push((
                    call,
                    Expect::Result(
                        json!({"error": "unknown or unavailable tool `request_approval`"}),
                    ),
                ));
                continue;
            }
            _ if case.steering && case.ask => Some("tool_call"),
            _ => None,
        };
        let Some(kind) = kind else {
            results.push((call, Expect::Executed));
            continue;
        };
        pauses.push((call, kind));
        let (decision, text) = case.reply().expect("applicable case");
        let message = text.map_or(Value::Null, |m| json!(m));
        let outcome = match (kind, decision) {
            ("approval", d) => Expect::Result(json!({"decision": d, "message": message})),
            (_, "approve") => Expect::Executed,
            (_, d) => {
                skipping = true;
                Expect::Result(json!({"executed": false, "decision": d, "message": message}))
            }
        };
        results.push((call, outcome));
    }
    (pauses, results)
}

/// Runs one case on its own server and checks everything the spec says about it.
async fn run_case(case: Case) {
    let label = format!("{case:?}");
    let t = TestServer::start().await;
    let policy = if case.ask {
        "always_ask"
    } else {
        "always_allow"
    };
    let d = t
        .ready_deployment(json!({
            "features": {"steering": case.steering},
            "tool_policies": {"write_file": policy},
        }))
        .await;
    let dep = d.deployment_id.as_str();
    let source = match case.source {
        Source::RequestApproval => Script::new().tool_call(
            SOURCE_CALL,
            "request_approval",
            json!({"summary": "About to write the report files. OK to proceed?"}),
        ),
        Source::Policy => Script::new().tool_call(
            SOURCE_CALL,
            "write_file",
            json!({"path": "held.txt", "content": "held"}),
        ),
    };
    t.fake.push(
        source
            .tool_call(
                TRAILING_CALL,
                "write_file",
                json!({"path": "trailing.txt", "content": "trailing"}),
            )
            .usage(10, 5),
    );
    t.fake.push(Script::new().text("Done.").usage(20, 2));
    let (pauses, results) = expected(&case);

    let mut stream = open_events(&t.admin, dep).await;
    let accepted = t
        .admin
        .send_message(dep, "Write the report.", None, &[])
        .await
        .unwrap();
    let run_id = accepted.run_id.clone();
    let mut all = Vec::new();
    for (call, kind) in &pauses {
        let seen = until_paused_or_ended(&mut stream, &run_id).await;
        all.extend(seen);
        let last = all.last().unwrap();
        assert_eq!(
            last.data["status"], "waiting_on_human",
            "{label}: expected a pause on {call}, got {last:?}"
        );
        // The request as event and on the run object.
        let request = all
            .iter()
            .rev()
            .find(|e| e.event == "steering_request")
            .unwrap()
            .clone();
        assert_eq!(request.data["kind"], *kind, "{label}");
        assert_eq!(request.data["call_id"], *call, "{label}");
        if *kind == "tool_call" {
            assert_eq!(request.data["summary"], "Run tool write_file?", "{label}");
            assert_eq!(request.data["tool"], "write_file", "{label}");
            assert_eq!(request.data["origin"], "builtin", "{label}");
            assert!(request.data["arguments"].is_object(), "{label}");
        } else {
            assert_eq!(
                request.data["summary"], "About to write the report files. OK to proceed?",
                "{label}"
            );
            for absent in ["tool", "origin", "arguments"] {
                assert!(request.data.get(absent).is_none(), "{label}: {absent}");
            }
        }
        let request_id = request.data["request_id"].as_str().unwrap().to_owned();
        let run = t.admin.get_run(dep, &run_id).await.unwrap();
        assert_eq!(run.status, "waiting_on_human", "{label}");
        let pending = run.steering_request.clone().expect("pending request");
        assert_eq!(pending.request_id, request_id, "{label}");
        assert_eq!(pending.kind, *kind, "{label}");
        assert_eq!(pending.call_id, *call, "{label}");
        let thread = t
            .admin
            .get_thread(dep, &d.thread_id, None, None)
            .await
            .unwrap();
        assert_eq!(thread.thread.status, "waiting_on_human", "{label}");
        // The held call has not run, and nothing of the run is in memory.
        if *call == SOURCE_CALL && case.source == Source::Policy {
            assert_eq!(workspace_file(&t, dep, "held.txt"), None, "{label}");
        }
        assert_eq!(workspace_file(&t, dep, "trailing.txt"), None, "{label}");
        until_no_active_runs(&t).await;

        let (decision, text) = case.reply().unwrap();
        match case.path {
            AnswerPath::Message => {
                let answered = t
                    .admin
                    .send_message(dep, text.unwrap(), None, &[])
                    .await
                    .unwrap();
                assert_eq!(answered.run_id, run_id, "{label}: the waiting run's id");
                assert_eq!(answered.status, "running", "{label}");
            }
            AnswerPath::Endpoint => {
                let run =
                    answer_by_endpoint(&t.admin, dep, &run_id, &request_id, decision, text).await;
                assert_eq!(run.status, "running", "{label}");
                assert_eq!(run.steering_request, None, "{label}");
            }
        }
    }
    all.extend(collect_until(&mut stream, |e| is_terminal(e, &run_id)).await);
    let terminal = all.last().unwrap();
    assert_eq!(
        terminal.data["status"], "completed",
        "{label}: {terminal:?}"
    );
    assert_run_invariants(&all, &run_id);

    // Spec §6.2 order around each pause: tool_call → steering_request → waiting → [answer
    // message] → steering_resolved → running/answered → tool_result of the held call.
    let run_events = of_run(&all, &run_id);
    let steering_count = run_events
        .iter()
        .filter(|e| e.event == "steering_request")
        .count();
    assert_eq!(steering_count, pauses.len(), "{label}: pauses");
    for (call, _) in &pauses {
        let at = |what: &str| {
            run_events
                .iter()
                .position(|e| {
                    e.event == what
                        && (e.data["call_id"] == *call || what == "steering_resolved")
                        && (what != "steering_resolved"
                            || run_events.iter().any(|r| {
                                r.event == "steering_request"
                                    && r.data["call_id"] == *call
                                    && r.data["request_id"] == e.data["request_id"]
                            }))
                })
                .unwrap_or_else(|| panic!("{label}: no {what} for {call}"))
        };
        let call_at = at("tool_call");
        let request_at = at("steering_request");
        let resolved_at = at("steering_resolved");
        let result_at = at("tool_result");
        assert!(call_at < request_at, "{label}");
        let waiting = run_events[request_at + 1];
        assert_eq!(
            (waiting.event.as_str(), &waiting.data["status"]),
            ("run_status", &json!("waiting_on_human")),
            "{label}"
        );
        let (decision, text) = case.reply().unwrap();
        let mut next = request_at + 2;
        if let Some(text) = text {
            let m = run_events[next];
            assert_eq!(m.event, "message", "{label}: the answer's message");
            assert_eq!(m.data["role"], "user");
            assert_eq!(m.data["content"], text);
            next += 1;
        }
        assert_eq!(next, resolved_at, "{label}: nothing else while waiting");
        let resolved = run_events[resolved_at];
        assert_eq!(resolved.data["decision"], decision, "{label}");
        assert_eq!(
            resolved.data.get("message").and_then(Value::as_str),
            text,
            "{label}"
        );
        let running = run_events[resolved_at + 1];
        assert_eq!(running.data["status"], "running", "{label}");
        assert_eq!(running.data["reason"], "answered", "{label}");
        assert_eq!(result_at, resolved_at + 2, "{label}: then the held result");
    }

    // What executed, and what the model was told.
    let offered = offered_tools(&t, 0);
    assert_eq!(
        offered.contains(&"request_approval".to_owned()),
        case.steering,
        "{label}: request_approval offered only with steering: {offered:?}"
    );
    assert_eq!(t.fake.requests().len(), 2, "{label}: two model calls");
    for (call, expect) in &results {
        let seen = result_seen_by_model(&t, 1, call);
        let file = match *call {
            SOURCE_CALL => "held.txt",
            _ => "trailing.txt",
        };
        let applies_to_file = *call == TRAILING_CALL || case.source == Source::Policy;
        match expect {
            Expect::Executed => {
                assert_eq!(seen["path"], file, "{label}: {call} real result: {seen}");
                assert!(workspace_file(&t, dep, file).is_some(), "{label}: {file}");
            }
            Expect::Result(v) => {
                assert_eq!(&seen, v, "{label}: {call}");
                if applies_to_file {
                    assert_eq!(
                        workspace_file(&t, dep, file),
                        None,
                        "{label}: {file} must not exist"
                    );
                }
            }
        }
        let event = run_events
            .iter()
            .find(|e| e.event == "tool_result" && e.data["call_id"] == *call)
            .unwrap();
        assert_eq!(
            event.data["result"], seen,
            "{label}: the event carries the same"
        );
    }
    // The answer text is in the thread, with the run's id.
    if let Some(text) = case
        .reply()
        .and_then(|(_, t)| t)
        .filter(|_| !pauses.is_empty())
    {
        let thread = t
            .admin
            .get_thread(dep, &d.thread_id, None, None)
            .await
            .unwrap();
        let answers: Vec<_> = thread
            .messages
            .iter()
            .filter(|m| m.role == "user" && m.content == text)
            .collect();
        assert_eq!(
            answers.len(),
            pauses.len(),
            "{label}: {:#?}",
            thread.messages
        );
        assert!(answers.iter().all(|m| m.run_id.as_deref() == Some(&run_id)));
    }
    let run = t.admin.get_run(dep, &run_id).await.unwrap();
    assert_eq!(run.status, "completed", "{label}");
    assert_eq!(run.steering_request, None);
}

/// The matrix: `features.steering` on/off × `write_file` policy allow/ask × source
/// `request_approval`/policy × answer by message/endpoint × approve/reject/respond. The two
/// combinations a path cannot express (a message cannot reject, the endpoint cannot respond)
/// are skipped; every other cell runs on a fresh server.
#[tokio::test]
async fn the_approval_matrix() {
    let mut ran = 0;
    let mut paused = 0;
    for steering in [true, false] {
        for ask in [false, true] {
            for source in [Source::Policy, Source::RequestApproval] {
                for path in [AnswerPath::Message, AnswerPath::Endpoint] {
                    for answer in [Answer::Approve, Answer::Reject, Answer::Respond] {
                        let case = Case {
                            steering,
                            ask,
                            source,
                            path,
                            answer,
                        };
                        if case.reply().is_none() {
                            continue;
                        }
                        paused += usize::from(!expected(&case).0.is_empty());
                        run_case(case).await;
                        ran += 1;
                    }
                }
            }
        }
    }
    eprintln!("approval matrix: {ran} cases, {paused} of them paused");
    assert_eq!(ran, 32);
}

// ---------------------------------------------------------------------------------------------
// The steering endpoint (§6.4)
// ---------------------------------------------------------------------------------------------

/// A ready deployment whose `write_file` always asks, a run paused on its first call, and the
/// events so far. The model's response is `write_file` `held.txt` then `trailing.txt`.
async fn paused_run(t: &TestServer) -> (String, String, String, EventStream) {
    let d = t
        .ready_deployment(json!({"tool_policies": {"write_file": "always_ask"}}))
        .await;
    let dep = d.deployment_id.clone();
    t.fake.push(
        Script::new()
            .tool_call(
                "call_held",
                "write_file",
                json!({"path": "held.txt", "content": "held"}),
            )
            .tool_call("call_next", "read_file", json!({"path": "held.txt"})),
    );
    let mut stream = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Write it.", None, &[])
        .await
        .unwrap()
        .run_id;
    let seen = until_paused_or_ended(&mut stream, &run_id).await;
    let request = seen
        .iter()
        .find(|e| e.event == "steering_request")
        .unwrap_or_else(|| panic!("no pause: {seen:#?}"));
    let request_id = request.data["request_id"].as_str().unwrap().to_owned();
    (dep, run_id, request_id, stream)
}

#[tokio::test]
async fn the_endpoint_is_idempotent_and_answers_409_402_400_as_specified() {
    let t = TestServer::start().await;
    let (dep, run_id, request_id, mut stream) = paused_run(&t).await;

    // 400s name the field.
    for (body, param) in [
        (json!({"decision": "approve"}), "request_id"),
        (
            json!({"request_id": request_id, "decision": "respond"}),
            "decision",
        ),
        (json!({"request_id": request_id}), "decision"),
        (
            json!({"request_id": request_id, "decision": "approve", "message": ""}),
            "message",
        ),
        (
            json!({"request_id": request_id, "decision": "approve", "message": "x".repeat(100_001)}),
            "message",
        ),
    ] {
        let (status, err) = steering_raw(&t, &dep, &run_id, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }
    // Another request id: 409, and the request stays pending.
    let (status, err) = steering_raw(
        &t,
        &dep,
        &run_id,
        json!({"request_id": "srq_notthisone", "decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "conflict");
    // An unknown run: 404.
    let (status, err) = steering_raw(
        &t,
        &dep,
        "run_doesnotexist",
        json!({"request_id": request_id, "decision": "approve"}),
    )
    .await;
    assert_eq!(status, 404, "{err}");

    // No credits: 402 and the request stays pending.
    let accounts = t
        .admin
        .list_accounts(&Default::default())
        .await
        .unwrap()
        .data;
    let account = &accounts[0].account_id;
    t.admin
        .update_credits(account, paddock_client::CreditsChange::Set(Some(0.0)))
        .await
        .unwrap();
    let (status, err) = steering_raw(
        &t,
        &dep,
        &run_id,
        json!({"request_id": request_id, "decision": "approve"}),
    )
    .await;
    assert_eq!(status, 402, "{err}");
    assert_eq!(err["error"]["code"], "insufficient_credits");
    let run = t.admin.get_run(&dep, &run_id).await.unwrap();
    assert_eq!(run.status, "waiting_on_human");
    assert_eq!(run.steering_request.unwrap().request_id, request_id);
    t.admin
        .update_credits(account, paddock_client::CreditsChange::Set(None))
        .await
        .unwrap();

    // Reject: 200 with the run running and no request; the model plans again.
    t.fake.push(Script::new().text("Understood, not writing."));
    let run = answer_by_endpoint(&t.admin, &dep, &run_id, &request_id, "reject", None).await;
    assert_eq!(run.status, "running");
    assert_eq!(run.steering_request, None);
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let last_id = events.last().unwrap().seq().unwrap();
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let resolved = events
        .iter()
        .find(|e| e.event == "steering_resolved")
        .unwrap();
    assert_eq!(resolved.data["decision"], "reject");
    assert!(resolved.data.get("message").is_none(), "{resolved:?}");
    assert_eq!(
        result_seen_by_model(&t, 1, "call_held"),
        json!({"executed": false, "decision": "reject", "message": null})
    );
    assert_eq!(
        result_seen_by_model(&t, 1, "call_next"),
        json!({"executed": false, "reason": "skipped_after_rejection"})
    );
    assert_eq!(workspace_file(&t, &dep, "held.txt"), None);

    // The same decision again: 200, the current run, nothing changes.
    let again = answer_by_endpoint(&t.admin, &dep, &run_id, &request_id, "reject", None).await;
    assert_eq!(again.status, "completed");
    // Another decision: 409.
    let (status, err) = steering_raw(
        &t,
        &dep,
        &run_id,
        json!({"request_id": request_id, "decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    // A request id the run never had, on a run that is not waiting: 409.
    let (status, err) = steering_raw(
        &t,
        &dep,
        &run_id,
        json!({"request_id": "srq_never", "decision": "reject"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waiting_on_human"),
        "{err}"
    );
    // Nothing was appended by the repeats: the next event is a fence's.
    let fence = t
        .admin
        .send_message(&dep, "fence", Some("new"), &[])
        .await
        .unwrap();
    let next = collect_until(&mut stream, |e| is_terminal(e, &fence.run_id)).await;
    assert_eq!(next[0].data["run_id"], fence.run_id.as_str());
    assert!(next[0].seq().unwrap() > last_id);
    // The fence's run made the only model call after the two of the answered run (counted
    // once the fence has ended: its own call races with its first event).
    assert_eq!(
        t.fake.requests().len(),
        3,
        "no model call for the repeats, one for the fence"
    );
}

#[tokio::test]
async fn an_approved_call_executes_and_the_endpoint_message_follows_its_result() {
    let t = TestServer::start().await;
    let (dep, run_id, request_id, mut stream) = paused_run(&t).await;
    // The second call of the response is ungated (read_file): after the approval it runs.
    t.fake.push(Script::new().text("Written."));
    let run = answer_by_endpoint(
        &t.admin,
        &dep,
        &run_id,
        &request_id,
        "approve",
        Some("Also note the date."),
    )
    .await;
    assert_eq!(run.status, "running");
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    assert_eq!(events.last().unwrap().data["status"], "completed");
    assert_eq!(
        workspace_file(&t, &dep, "held.txt").as_deref(),
        Some("held")
    );
    let read = result_seen_by_model(&t, 1, "call_next");
    assert_eq!(read["content"], "held", "{read}");

    // The model's next request: both results, then the endpoint's message as a user turn.
    let requests = t.fake.requests();
    let messages = requests[1]["messages"].as_array().unwrap();
    let pos = |pred: &dyn Fn(&Value) -> bool| messages.iter().position(pred).unwrap();
    let held = pos(&|m| m["tool_call_id"] == "call_held");
    let next = pos(&|m| m["tool_call_id"] == "call_next");
    let note = pos(&|m| m["role"] == "user" && m["content"] == "Also note the date.");
    assert!(held < next && next < note, "{messages:#?}");
    let thread = t
        .admin
        .get_thread(&dep, &run.thread_id.clone().unwrap(), None, None)
        .await
        .unwrap();
    assert!(
        thread
            .messages
            .iter()
            .any(|m| m.content == "Also note the date." && m.run_id.as_deref() == Some(&run_id))
    );
}

#[tokio::test]
async fn cancelling_a_waiting_run_resolves_its_request_and_closes_its_calls() {
    let t = TestServer::start().await;
    let (dep, run_id, request_id, mut stream) = paused_run(&t).await;
    let cancelled = t.admin.cancel_run(&dep, &run_id).await.unwrap();
    assert_eq!(cancelled.status, "error");
    assert_eq!(cancelled.error.as_ref().unwrap().code, "cancelled");
    assert_eq!(cancelled.steering_request, None);
    let end = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let shape: Vec<(&str, Value)> = end
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                json!([e.data["call_id"], e.data["decision"], e.data["result"]]),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "tool_result",
                json!(["call_held", null, {"error": "cancelled"}])
            ),
            (
                "tool_result",
                json!(["call_next", null, {"error": "cancelled"}])
            ),
            ("steering_resolved", json!([null, "cancelled", null])),
            ("run_status", json!([null, null, null])),
        ],
        "spec §5.3 order: {end:#?}"
    );
    assert_eq!(end[2].data["request_id"], request_id.as_str());
    assert_eq!(end[3].data["error"]["code"], "cancelled");
    assert_eq!(workspace_file(&t, &dep, "held.txt"), None);
    // The request cannot be answered any more.
    let (status, _) = steering_raw(
        &t,
        &dep,
        &run_id,
        json!({"request_id": request_id, "decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409);
    // The thread is idle again: a message starts a new run.
    let next = t
        .admin
        .send_message(&dep, "Hello", None, &[])
        .await
        .unwrap();
    assert_ne!(next.run_id, run_id);
    collect_until(&mut stream, |e| is_terminal(e, &next.run_id)).await;
}

#[tokio::test]
async fn an_unanswered_request_times_out_when_a_steering_timeout_is_set() {
    let t = TestServer::start_with(|s| s.steering_timeout = Some(Duration::from_secs(1))).await;
    let (dep, run_id, request_id, mut stream) = paused_run(&t).await;
    let end = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    let resolved = end
        .iter()
        .find(|e| e.event == "steering_resolved")
        .unwrap_or_else(|| panic!("{end:#?}"));
    assert_eq!(resolved.data["request_id"], request_id.as_str());
    assert_eq!(resolved.data["decision"], "timeout");
    let last = end.last().unwrap();
    assert_eq!(last.data["status"], "error");
    assert_eq!(last.data["error"]["code"], "steering_timeout");
    let run = t.admin.get_run(&dep, &run_id).await.unwrap();
    assert_eq!(run.error.unwrap().code, "steering_timeout");
    assert_eq!(workspace_file(&t, &dep, "held.txt"), None, "never executed");
    assert_eq!(t.fake.requests().len(), 1);
}

#[tokio::test]
async fn turning_steering_off_does_not_release_a_waiting_run_but_changes_the_next_run() {
    let t = TestServer::start().await;
    let (dep, run_id, request_id, mut stream) = paused_run(&t).await;
    t.admin
        .update_deployment(&dep, &json!({"features": {"steering": false}}))
        .await
        .unwrap();
    let run = t.admin.get_run(&dep, &run_id).await.unwrap();
    assert_eq!(run.status, "waiting_on_human", "the PATCH released nothing");
    // The waiting run keeps the configuration it started with: it still waits for an answer.
    t.fake.push(Script::new().text("Done."));
    answer_by_endpoint(&t.admin, &dep, &run_id, &request_id, "approve", None).await;
    collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    assert_eq!(
        workspace_file(&t, &dep, "held.txt").as_deref(),
        Some("held")
    );

    // A run started after the PATCH: no request_approval offered, nothing pauses.
    t.fake.push(Script::new().tool_call(
        "call_after",
        "write_file",
        json!({"path": "after.txt", "content": "x"}),
    ));
    t.fake.push(Script::new().text("Done again."));
    let next = t
        .admin
        .send_message(&dep, "Again", None, &[])
        .await
        .unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &next.run_id)).await;
    assert!(
        events.iter().all(|e| e.event != "steering_request"),
        "{events:#?}"
    );
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let index = t.fake.requests().len() - 2;
    assert!(!offered_tools(&t, index).contains(&"request_approval".to_owned()));
    assert!(workspace_file(&t, &dep, "after.txt").is_some());
}

#[tokio::test]
async fn a_request_approval_with_a_bad_summary_is_an_error_result_not_a_pause() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    t.fake.push(
        Script::new()
            .tool_call("call_empty", "request_approval", json!({"summary": ""}))
            .tool_call(
                "call_long",
                "request_approval",
                json!({"summary": "x".repeat(1001)}),
            ),
    );
    t.fake.push(Script::new().text("OK."));
    let mut stream = open_events(&t.admin, dep).await;
    let run = t.admin.send_message(dep, "Hi", None, &[]).await.unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &run.run_id)).await;
    assert!(events.iter().all(|e| e.event != "steering_request"));
    assert_eq!(events.last().unwrap().data["status"], "completed");
    for call in ["call_empty", "call_long"] {
        let seen = result_seen_by_model(&t, 1, call);
        assert!(
            seen["error"].as_str().unwrap().contains("summary"),
            "{seen}"
        );
    }
}

#[tokio::test]
async fn a_policy_names_the_model_facing_tool_and_only_its_calls_pause() {
    // `read_file` asks, `write_file` (default) runs: the pause is at the first gated call,
    // after the earlier one ran (spec §6.1).
    let t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"tool_policies": {"read_file": "always_ask"}}))
        .await;
    let dep = d.deployment_id.as_str();
    t.fake.push(
        Script::new()
            .tool_call(
                "call_w",
                "write_file",
                json!({"path": "first.txt", "content": "1"}),
            )
            .tool_call("call_r", "read_file", json!({"path": "first.txt"})),
    );
    let mut stream = open_events(&t.admin, dep).await;
    let run = t.admin.send_message(dep, "Go", None, &[]).await.unwrap();
    let seen = until_paused_or_ended(&mut stream, &run.run_id).await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|e| e.data["run_id"] == run.run_id.as_str())
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "run_status",
            "tool_call",
            "tool_call",
            "tool_result",
            "steering_request",
            "run_status"
        ],
        "{seen:#?}"
    );
    assert_eq!(workspace_file(&t, dep, "first.txt").as_deref(), Some("1"));
    let request = seen.iter().find(|e| e.event == "steering_request").unwrap();
    assert_eq!(request.data["call_id"], "call_r");
    assert_eq!(request.data["summary"], "Run tool read_file?");
    // "ok" approves.
    t.fake.push(Script::new().text("Read it."));
    t.admin.send_message(dep, "OK!", None, &[]).await.unwrap();
    let end = collect_until(&mut stream, |e| is_terminal(e, &run.run_id)).await;
    assert_eq!(end.last().unwrap().data["status"], "completed");
    assert_eq!(result_seen_by_model(&t, 1, "call_r")["content"], "1");
}
