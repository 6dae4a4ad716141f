//! The deployment event stream through real HTTP/SSE: framing (§7.2), ids, replay, resume and
//! retention (§7.3, guarantees 26–31), per-run event order (§7.4, guarantee 32), filters
//! (§7.1), steering input as seen by the stream and the model (§4.2, guarantees 9–15),
//! cancellation (§5.3) and deletion (§3.8, guarantee 42).
//!
//! Every wait is on bytes, events, fake-model requests or gates, each bounded by
//! [`common::WAIT`]; nothing sleeps for correctness.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use paddock_client::{EventStream, EventsQuery, SseEvent};
use paddock_protocol::EventType;
use paddock_protocol::time::now_unix;
use paddock_server::AppState;
use paddock_store::NewEvent;
use paddock_test_support::{Gate, Script};
use serde_json::{Value, json};

use common::{TestServer, WAIT, collect_until, is_terminal, open_events};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// How long an idle stream with a 100 ms heartbeat interval may stay silent in these tests:
/// generous for a loaded machine, far below the 15 s default.
const PING_DEADLINE: Duration = Duration::from_secs(5);

/// One event as a subscriber sees it: type, numeric id (`None` only for `replay_truncated`)
/// and data. Raw frames and typed-client events both become this, so they compare directly.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    event: String,
    id: Option<i64>,
    data: Value,
}

impl Ev {
    fn seq(&self) -> i64 {
        self.id
            .unwrap_or_else(|| panic!("event without an id: {self:?}"))
    }

    fn run_id(&self) -> Option<&str> {
        self.data["run_id"].as_str()
    }

    fn is_terminal_of(&self, run_id: &str) -> bool {
        self.event == "run_status"
            && self.run_id() == Some(run_id)
            && matches!(self.data["status"].as_str(), Some("completed" | "error"))
    }
}

fn ev(e: &SseEvent) -> Ev {
    Ev {
        event: e.event.clone(),
        id: e.seq(),
        data: e.data.clone(),
    }
}

fn evs(events: &[SseEvent]) -> Vec<Ev> {
    events.iter().map(ev).collect()
}

fn state(t: &TestServer) -> &AppState {
    t.server.as_ref().expect("server running").state()
}

/// Reads a typed stream up to and including the terminal `run_status` of `run_id`.
async fn until_terminal(stream: &mut EventStream, run_id: &str) -> Vec<Ev> {
    evs(&collect_until(stream, |e| is_terminal(e, run_id)).await)
}

/// Reads exactly `n` events from a typed stream.
async fn take(stream: &mut EventStream, n: usize) -> Vec<Ev> {
    if n == 0 {
        return Vec::new();
    }
    let mut count = 0;
    evs(&collect_until(stream, |_| {
        count += 1;
        count == n
    })
    .await)
}

/// Opens a typed stream with `query`.
async fn events_with(t: &TestServer, deployment_id: &str, query: EventsQuery) -> EventStream {
    t.admin.events(deployment_id, query).await
}

/// Sends `content` to `thread` (default thread when `None`) and returns the run id.
async fn send(t: &TestServer, deployment_id: &str, content: &str, thread: Option<&str>) -> String {
    let accepted = t
        .admin
        .send_message(deployment_id, content, thread, &[])
        .await
        .expect("send message");
    assert_eq!(accepted.status, "running");
    accepted.run_id
}

/// `GET …/events` with a raw HTTP client: `query` is appended verbatim (e.g. `"?after=evt_3"`).
async fn raw_get(
    t: &TestServer,
    deployment_id: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = t
        .http()
        .get(t.url(&format!("/v1/deployments/{deployment_id}/events{query}")))
        .bearer_auth(&t.admin_key)
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .expect("timed out opening the event stream")
        .expect("GET events")
}

/// An event stream read as raw bytes, frame by frame (a frame ends at a blank line), to check
/// the wire format itself. Every frame is validated as it is parsed.
struct RawSse {
    headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl RawSse {
    /// Opens the stream, expects `200`, and checks that the very first bytes are the frame
    /// `retry: 3000` followed by a blank line.
    async fn open(
        t: &TestServer,
        deployment_id: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> RawSse {
        let response = raw_get(t, deployment_id, query, headers).await;
        assert_eq!(response.status(), 200, "GET events{query}");
        let mut sse = RawSse {
            headers: response.headers().clone(),
            response,
            buf: Vec::new(),
        };
        let first = sse
            .next_frame()
            .await
            .expect("the stream sends a first frame");
        assert_eq!(
            first, "retry: 3000",
            "the first frame must be exactly `retry: 3000` and a blank line"
        );
        sse
    }

    /// The next frame without its terminating blank line; `None` once the server has closed
    /// the stream. No deadline: callers bound it.
    async fn read_frame(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(String::from_utf8(frame[..end].to_vec()).expect("frames are UTF-8"));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next frame, within [`WAIT`].
    async fn next_frame(&mut self) -> Option<String> {
        match tokio::time::timeout(WAIT, self.read_frame()).await {
            Ok(frame) => frame,
            Err(_) => panic!(
                "no complete SSE frame within {WAIT:?}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next frame, which must arrive within `deadline` (for heartbeats).
    async fn ping_within(&mut self, deadline: Duration) -> String {
        match tokio::time::timeout(deadline, self.read_frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("the stream ended while waiting for a heartbeat"),
            Err(_) => panic!("no frame within {deadline:?} on an idle stream"),
        }
    }

    /// The next event frame within [`WAIT`], skipping `: ping` comments; `None` once closed.
    async fn next_event(&mut self) -> Option<Ev> {
        let read = async {
            loop {
                let frame = self.read_frame().await?;
                if frame != ": ping" {
                    return Some(parse_event_frame(&frame));
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no event frame within {WAIT:?}"))
    }

    /// Reads event frames until `done` returns true for one; returns all read, in order.
    async fn until(&mut self, mut done: impl FnMut(&Ev) -> bool) -> Vec<Ev> {
        let mut seen = Vec::new();
        let read = async {
            loop {
                let Some(frame) = self.read_frame().await else {
                    return false;
                };
                if frame == ": ping" {
                    continue;
                }
                let e = parse_event_frame(&frame);
                let stop = done(&e);
                seen.push(e);
                if stop {
                    return true;
                }
            }
        };
        match tokio::time::timeout(WAIT, read).await {
            Ok(true) => seen,
            Ok(false) => panic!("the stream ended early; saw {seen:#?}"),
            Err(_) => panic!("timed out waiting for an event; saw {seen:#?}"),
        }
    }

    /// Reads until the server closes the stream (within [`WAIT`]); returns the event frames
    /// that arrived first.
    async fn until_closed(&mut self) -> Vec<Ev> {
        let mut seen = Vec::new();
        let read = async {
            while let Some(frame) = self.read_frame().await {
                if frame != ": ping" {
                    seen.push(parse_event_frame(&frame));
                }
            }
        };
        if tokio::time::timeout(WAIT, read).await.is_err() {
            panic!("the stream was not closed within {WAIT:?}; saw {seen:#?}");
        }
        seen
    }
}

/// Parses one event frame, checking the framing of §7.2: `event: <type>`, `id: evt_<n>`
/// (absent only for `replay_truncated`) and one `data:` line holding a JSON object; nothing
/// else.
fn parse_event_frame(frame: &str) -> Ev {
    let lines: Vec<&str> = frame.split('\n').collect();
    let event = lines[0]
        .strip_prefix("event: ")
        .unwrap_or_else(|| panic!("not an event frame (nor `: ping`): {frame:?}"));
    let (id, data) = if event == "replay_truncated" {
        assert_eq!(
            lines.len(),
            2,
            "replay_truncated is `event:` and `data:` only, with no `id:`: {frame:?}"
        );
        (None, lines[1])
    } else {
        assert_eq!(
            lines.len(),
            3,
            "an event frame is exactly three lines: {frame:?}"
        );
        let digits = lines[1]
            .strip_prefix("id: evt_")
            .unwrap_or_else(|| panic!("second line must be `id: evt_<n>`: {frame:?}"));
        assert!(
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0')),
            "ids are evt_<n> without leading zeros: {frame:?}"
        );
        (Some(digits.parse::<i64>().expect("id fits i64")), lines[2])
    };
    let data = data
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("last line must be `data: <json>`: {frame:?}"));
    let data: Value =
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {frame:?}"));
    assert!(data.is_object(), "data must be a JSON object: {frame:?}");
    Ev {
        event: event.to_owned(),
        id,
        data,
    }
}

/// Checks ids strictly increase (hence are unique) over `events`.
fn assert_strictly_increasing(events: &[Ev]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].seq() < pair[1].seq(),
            "ids must strictly increase: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// The per-run rules of §7.4 (guarantee 32) for `run_id` within a deployment-wide,
/// unfiltered sequence `all`: the input `message` comes just before the run's first event,
/// `run_status` `running`/`started`; the last event is the one terminal `run_status`; every
/// `tool_call` has exactly one `tool_result` with its `call_id` after it and before the end,
/// and every `tool_result` answers an earlier `tool_call`.
fn assert_run_invariants(all: &[Ev], run_id: &str) {
    let run: Vec<&Ev> = all.iter().filter(|e| e.run_id() == Some(run_id)).collect();
    assert!(run.len() >= 3, "run {run_id} has too few events: {run:#?}");
    assert_eq!(run[0].event, "message", "{run:#?}");
    assert_eq!(run[0].data["role"], "user", "{run:#?}");
    assert_eq!(run[1].event, "run_status", "{run:#?}");
    assert_eq!(run[1].data["status"], "running", "{run:#?}");
    assert_eq!(run[1].data["reason"], "started", "{run:#?}");
    assert_eq!(
        run[1].seq(),
        run[0].seq() + 1,
        "the input message comes just before the run's first event"
    );
    let started = run
        .iter()
        .filter(|e| e.event == "run_status" && e.data["reason"] == "started")
        .count();
    assert_eq!(started, 1, "one start per run: {run:#?}");
    let terminals: Vec<usize> = run
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_terminal_of(run_id))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        terminals,
        [run.len() - 1],
        "exactly one terminal run_status, and it is last: {run:#?}"
    );
    let thread = &run[0].data["thread_id"];
    for e in &run {
        assert_eq!(
            &e.data["thread_id"], thread,
            "run events carry the thread: {e:?}"
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
            "exactly one tool_result for {call:?}: {run:#?}"
        );
        assert!(
            results[0] > i,
            "the tool_result follows its tool_call: {run:#?}"
        );
    }
    for (j, result) in run
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event == "tool_result")
    {
        let calls = run[..j]
            .iter()
            .filter(|e| e.event == "tool_call" && e.data["call_id"] == result.data["call_id"])
            .count();
        assert_eq!(
            calls, 1,
            "a tool_result answers one earlier tool_call: {result:?}"
        );
    }
}

/// Events of `all` that a stream with these filters must carry.
fn filtered(all: &[Ev], thread_id: Option<&str>, run_id: Option<&str>, types: &[&str]) -> Vec<Ev> {
    all.iter()
        .filter(|e| thread_id.is_none_or(|t| e.data["thread_id"].as_str() == Some(t)))
        .filter(|e| run_id.is_none_or(|r| e.run_id() == Some(r)))
        .filter(|e| types.is_empty() || types.contains(&e.event.as_str()))
        .cloned()
        .collect()
}

/// The `messages` of the fake model's request number `index` (from 0).
fn model_messages(t: &TestServer, index: usize) -> Vec<Value> {
    let requests = t.fake.requests();
    requests[index]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("request {index} has messages: {:?}", requests[index]))
        .clone()
}

fn position(messages: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    messages
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no {what} in the model request: {messages:#?}"))
}

// ---------------------------------------------------------------------------------------------
// §7.2 framing, headers, heartbeats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stream_framing_headers_and_pings_follow_the_spec() {
    let t = TestServer::start_with(|s| s.sse_ping_interval = Duration::from_millis(100)).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    t.fake
        .push(Script::new().text("Writing ").text("it.").tool_call(
            "call_frame1",
            "write_file",
            json!({"path": "framing.txt", "content": "line one\nline \"two\" ☃"}),
        ));

    let mut sse = RawSse::open(&t, dep, "", &[("x-request-id", "sse-test.42")]).await;
    let h = &sse.headers;
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(
        h["x-request-id"], "sse-test.42",
        "a sent x-request-id is echoed"
    );

    // An idle stream carries `: ping`: the interval is 100 ms here, so it must come well
    // before the 15 s default would send one.
    assert_eq!(sse.ping_within(PING_DEADLINE).await, ": ping");

    let run_id = send(&t, dep, "Write a file", None).await;
    let seen = sse.until(|e| e.is_terminal_of(&run_id)).await;
    assert_strictly_increasing(&seen);
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    for kind in ["message", "run_status", "token", "tool_call", "tool_result"] {
        assert!(kinds.contains(&kind), "expected a {kind} frame: {kinds:?}");
    }
    // Data with newlines and quotes inside strings still travels on one `data:` line.
    let call = seen
        .iter()
        .find(|e| e.event == "tool_call")
        .expect("tool_call");
    assert_eq!(
        call.data["arguments"]["content"],
        "line one\nline \"two\" ☃"
    );
    assert_eq!(seen.last().expect("terminal").data["status"], "completed");

    // Silence after the run: the next frame is a heartbeat, byte for byte `: ping\n\n`.
    assert_eq!(sse.ping_within(PING_DEADLINE).await, ": ping");

    // Without an x-request-id the server makes one up.
    let response = raw_get(&t, dep, "", &[]).await;
    assert_eq!(response.status(), 200);
    let generated = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(generated.starts_with("req_"), "{generated}");
}

#[tokio::test]
async fn malformed_cursors_and_unknown_types_are_rejected() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    // (query, Last-Event-ID header, the `param` the error names)
    let cases = [
        ("?after=42", None, "after"),
        ("?after=evt_", None, "after"),
        ("?after=evt_-1", None, "after"),
        ("", Some("7"), "Last-Event-ID"),
        ("", Some("evt_x"), "Last-Event-ID"),
        ("?types=token,no_such_type", None, "types"),
    ];
    for (query, last_event_id, param) in cases {
        let headers: Vec<(&str, &str)> = last_event_id
            .map(|id| ("last-event-id", id))
            .into_iter()
            .collect();
        let response = raw_get(&t, dep, query, &headers).await;
        assert_eq!(response.status(), 400, "{query} {headers:?}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.expect("error body");
        assert_eq!(body["error"]["code"], "validation_error", "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    // Leading zeros are accepted on input.
    let response = raw_get(&t, dep, "?after=evt_000", &[("last-event-id", "evt_0007")]).await;
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// §7.3 resume, live-only streams
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_resumed_stream_gets_every_missed_event_exactly_once_then_live_events() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let gate = Gate::new();
    t.fake.push(
        Script::new()
            .text("Hel")
            .text("lo")
            .hold(&gate)
            .text(" there")
            .tool_call(
                "call_res1",
                "write_file",
                json!({"path": "r.txt", "content": "r"}),
            ),
    );
    t.fake.push(Script::new().text("Written.").usage(5, 1));

    let mut control = open_events(&t.admin, dep).await;
    let mut away = open_events(&t.admin, dep).await;
    let run1 = send(&t, dep, "First task", None).await;

    // The subscriber sees the start of the run (the model is held mid-answer), then leaves.
    let before = evs(&collect_until(&mut away, |e| e.event == "token").await);
    let k = before.last().expect("saw events").seq();
    drop(away);

    // While it is away the run streams on, calls a tool and completes.
    gate.open();
    let control_run1 = until_terminal(&mut control, &run1).await;
    assert_eq!(
        &control_run1[..before.len()],
        &before[..],
        "same events before leaving"
    );
    let missed: Vec<Ev> = control_run1
        .iter()
        .filter(|e| e.seq() > k)
        .cloned()
        .collect();
    let missed_kinds: Vec<&str> = missed.iter().map(|e| e.event.as_str()).collect();
    for kind in ["token", "tool_call", "tool_result", "run_status"] {
        assert!(
            missed_kinds.contains(&kind),
            "the gap holds a {kind}: {missed_kinds:?}"
        );
    }

    let cursor = format!("evt_{k}");
    let leading_zeros = format!("evt_000{k}");
    let newest = control_run1.last().expect("terminal").seq();
    let resumes = [
        (
            "Last-Event-ID",
            EventsQuery {
                last_event_id: Some(cursor.clone()),
                ..EventsQuery::default()
            },
        ),
        (
            "after",
            EventsQuery {
                after: Some(cursor.clone()),
                ..EventsQuery::default()
            },
        ),
        (
            "Last-Event-ID with leading zeros",
            EventsQuery {
                last_event_id: Some(leading_zeros),
                ..EventsQuery::default()
            },
        ),
        (
            "after wins over an older Last-Event-ID",
            EventsQuery {
                after: Some(cursor.clone()),
                last_event_id: Some("evt_1".to_owned()),
                ..EventsQuery::default()
            },
        ),
        (
            "after wins over a newer Last-Event-ID",
            EventsQuery {
                after: Some(cursor.clone()),
                last_event_id: Some(format!("evt_{}", newest + 1000)),
                ..EventsQuery::default()
            },
        ),
    ];
    let mut resumed = Vec::new();
    for (how, query) in resumes {
        let mut stream = events_with(&t, dep, query).await;
        let replay = until_terminal(&mut stream, &run1).await;
        assert_eq!(
            replay, missed,
            "resume with {how}: every missed event once, in order"
        );
        resumed.push((how, stream));
    }

    // Then they go live: the next run arrives on every resumed stream exactly as on the
    // control stream, with nothing repeated or skipped at the seam.
    let run2 = send(&t, dep, "Second task", None).await;
    let control_run2 = until_terminal(&mut control, &run2).await;
    assert_eq!(
        control_run2[0].seq(),
        newest + 1,
        "no event between the runs"
    );
    for (how, stream) in &mut resumed {
        let live = until_terminal(stream, &run2).await;
        assert_eq!(live, control_run2, "live events after resuming with {how}");
    }
    let mut all = control_run1;
    all.extend(control_run2);
    assert_strictly_increasing(&all);
    assert_run_invariants(&all, &run1);
    assert_run_invariants(&all, &run2);
}

#[tokio::test]
async fn a_resume_in_the_middle_of_a_run_meets_the_live_feed_without_a_seam() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let first = Gate::new();
    let second = Gate::new();
    t.fake
        .push(Script::new().text("Step one").hold(&first).tool_call(
            "call_mid1",
            "write_file",
            json!({"path": "m.txt", "content": "m"}),
        ));
    t.fake
        .push(Script::new().text("Step ").hold(&second).text("two."));

    let mut control = open_events(&t.admin, dep).await;
    let mut away = open_events(&t.admin, dep).await;
    let run = send(&t, dep, "Two steps", None).await;
    let before = evs(&collect_until(&mut away, |e| e.event == "run_status").await);
    let k = before.last().expect("run_status").seq();
    drop(away);

    // Missed while away: the first answer, its tool call and result, the second answer's
    // first token. The run is still going (held at the second gate) when the stream resumes.
    first.open();
    let missed =
        evs(&collect_until(&mut control, |e| e.event == "token" && e.data["step"] == 2).await);
    let missed: Vec<Ev> = missed.into_iter().filter(|e| e.seq() > k).collect();
    let mut resumed = events_with(
        &t,
        dep,
        EventsQuery {
            last_event_id: Some(format!("evt_{k}")),
            ..EventsQuery::default()
        },
    )
    .await;
    let replay = take(&mut resumed, missed.len()).await;
    assert_eq!(replay, missed);

    second.open();
    let rest = until_terminal(&mut control, &run).await;
    let live = until_terminal(&mut resumed, &run).await;
    assert_eq!(
        live, rest,
        "the live part follows the replay with no gap or repeat"
    );
}

#[tokio::test]
async fn a_stream_without_a_cursor_carries_only_events_committed_after_it_opened() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let mut control = open_events(&t.admin, dep).await;
    let run1 = send(&t, dep, "Earlier", None).await;
    let earlier = until_terminal(&mut control, &run1).await;
    let newest = earlier.last().expect("terminal").seq();

    let mut fresh = open_events(&t.admin, dep).await;
    let run2 = send(&t, dep, "Later", None).await;
    let expected = until_terminal(&mut control, &run2).await;
    let got = until_terminal(&mut fresh, &run2).await;
    assert_eq!(got, expected);
    assert_eq!(
        got[0].seq(),
        newest + 1,
        "starts with the first event after opening"
    );
    assert_eq!(got[0].event, "message");
    assert!(got.iter().all(|e| e.run_id() == Some(run2.as_str())));
}

#[tokio::test]
async fn a_cursor_above_the_newest_id_gives_a_live_only_stream() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let mut control = open_events(&t.admin, dep).await;
    let run1 = send(&t, dep, "Earlier", None).await;
    let newest = until_terminal(&mut control, &run1)
        .await
        .last()
        .expect("terminal")
        .seq();

    let far = format!("evt_{}", newest + 1000);
    let mut by_header = events_with(
        &t,
        dep,
        EventsQuery {
            last_event_id: Some(far.clone()),
            ..EventsQuery::default()
        },
    )
    .await;
    let mut by_after = events_with(
        &t,
        dep,
        EventsQuery {
            after: Some(far),
            ..EventsQuery::default()
        },
    )
    .await;
    let run2 = send(&t, dep, "Later", None).await;
    let expected = until_terminal(&mut control, &run2).await;
    assert_eq!(expected[0].seq(), newest + 1);
    assert_eq!(until_terminal(&mut by_header, &run2).await, expected);
    assert_eq!(until_terminal(&mut by_after, &run2).await, expected);
}

// ---------------------------------------------------------------------------------------------
// §7.3 ids under concurrency, §7.4 per-run order
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ids_strictly_increase_and_runs_keep_their_order_under_concurrency() {
    const RUNS: usize = 6;
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;

    // Every run's first answer is held until all of them are in flight; half of those answers
    // call tools (a write, then a read of the same file).
    let gate = Gate::new();
    for i in 0..RUNS {
        let script = if i % 2 == 0 {
            Script::new()
                .text(format!("Run {i} "))
                .text("writes. ")
                .tool_call(
                    format!("call_cw{i}"),
                    "write_file",
                    json!({"path": format!("c/{i}.txt"), "content": format!("file {i}")}),
                )
                .tool_call(
                    format!("call_cr{i}"),
                    "read_file",
                    json!({"path": format!("c/{i}.txt")}),
                )
                .hold(&gate)
        } else {
            Script::new()
                .text("Run ")
                .text(format!("{i} "))
                .text("answers ")
                .hold(&gate)
                .text("now.")
        };
        t.fake.push(script);
    }
    t.fake.set_default(
        Script::new()
            .text("Done")
            .text(" with")
            .text(" step")
            .text(" two."),
    );

    let mut events = open_events(&t.admin, dep).await;
    let t_ref = &t;
    let sends =
        (0..RUNS).map(|i| async move { send(t_ref, dep, &format!("Task {i}"), Some("new")).await });
    let runs: Vec<String> = futures::future::join_all(sends).await;
    assert_eq!(
        runs.iter().collect::<HashSet<_>>().len(),
        RUNS,
        "one run each"
    );
    t.fake.wait_for_requests(RUNS).await;
    gate.reached().await;
    gate.open();

    let mut open: HashSet<&str> = runs.iter().map(String::as_str).collect();
    let all = evs(&collect_until(&mut events, |e| {
        if e.event == "run_status"
            && matches!(e.data["status"].as_str(), Some("completed" | "error"))
        {
            open.remove(e.data["run_id"].as_str().unwrap_or_default());
        }
        open.is_empty()
    })
    .await);

    assert_strictly_increasing(&all);
    let threads: HashSet<&Value> = all.iter().map(|e| &e.data["thread_id"]).collect();
    assert_eq!(threads.len(), RUNS, "each run has its own new thread");
    for run in &runs {
        assert_run_invariants(&all, run);
        let terminal = all
            .iter()
            .find(|e| e.is_terminal_of(run))
            .expect("terminal");
        assert_eq!(terminal.data["status"], "completed", "{terminal:?}");
    }
    let calls = all.iter().filter(|e| e.event == "tool_call").count();
    assert_eq!(
        calls, RUNS,
        "a write and a read in each of the tool-calling answers"
    );
    for read in all
        .iter()
        .filter(|e| e.event == "tool_result" && e.data["tool"] == "read_file")
    {
        assert_eq!(read.data["is_error"], false, "calls run in order: {read:?}");
        assert!(
            read.data["result"]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("file ")),
            "{read:?}"
        );
    }
    // The runs really overlapped: some run's events come between another's start and end.
    let spans: Vec<(i64, i64)> = runs
        .iter()
        .map(|r| {
            let mine: Vec<i64> = all
                .iter()
                .filter(|e| e.run_id() == Some(r.as_str()))
                .map(Ev::seq)
                .collect();
            (mine[0], mine[mine.len() - 1])
        })
        .collect();
    assert!(
        spans
            .iter()
            .any(|a| spans.iter().any(|b| a != b && b.0 > a.0 && b.0 < a.1)),
        "runs did not overlap: {spans:?}"
    );

    // A replay of the same range is the same sequence: live order is commit order.
    let mut replay = events_with(
        &t,
        dep,
        EventsQuery {
            after: Some(format!("evt_{}", all[0].seq() - 1)),
            ..EventsQuery::default()
        },
    )
    .await;
    assert_eq!(take(&mut replay, all.len()).await, all);
}

// ---------------------------------------------------------------------------------------------
// §7.3 token coalescing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn many_small_deltas_reach_the_client_as_few_token_events() {
    const DELTAS: usize = 200;
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789 é☃".chars().collect();
    let deltas: Vec<String> = (0..DELTAS)
        .map(|i| alphabet[i % alphabet.len()].to_string())
        .collect();
    let full: String = deltas.concat();
    let mut script = Script::new();
    for delta in &deltas {
        script = script.text(delta.clone());
    }
    t.fake.push(script);

    let mut events = open_events(&t.admin, dep).await;
    let run = send(&t, dep, "Stream a lot", None).await;
    let seen = until_terminal(&mut events, &run).await;
    let tokens: Vec<&Ev> = seen.iter().filter(|e| e.event == "token").collect();
    let text: String = tokens
        .iter()
        .map(|e| e.data["delta"].as_str().expect("delta"))
        .collect();
    assert_eq!(
        text, full,
        "the merged deltas are exactly the streamed text"
    );
    assert!(!tokens.is_empty());
    assert!(
        tokens.len() <= DELTAS / 10,
        "{DELTAS} quick deltas should be merged into far fewer events, got {}",
        tokens.len()
    );
    assert!(tokens.iter().all(|e| e.data["step"] == 1));
    let agent = seen
        .iter()
        .find(|e| e.event == "message" && e.data["role"] == "agent")
        .expect("agent message");
    assert_eq!(agent.data["content"], full.as_str());
    assert!(tokens.iter().all(|e| e.seq() < agent.seq()));
}

// ---------------------------------------------------------------------------------------------
// §4.2 steering input (guarantee 11)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_to_a_running_thread_join_the_run_after_its_tool_calls() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let gate = Gate::new();
    t.fake.push(
        Script::new()
            .text("Writing the plan.")
            .tool_call(
                "call_steer1",
                "write_file",
                json!({"path": "plan.md", "content": "# Plan"}),
            )
            .hold(&gate),
    );
    t.fake.push(Script::new().text("Plan updated."));

    let mut events = open_events(&t.admin, dep).await;
    let first = t
        .admin
        .send_message(dep, "Write a plan", None, &[])
        .await
        .expect("send");
    let run = first.run_id.clone();
    gate.reached().await;

    // Two messages while the model is mid-answer: both join the running run.
    let mut steering_ids = Vec::new();
    for content in ["Also add a budget", "And a timeline"] {
        let accepted = t
            .admin
            .send_message(dep, content, None, &[])
            .await
            .expect("steering send");
        assert_eq!(
            accepted.run_id, run,
            "a running thread's run takes the message"
        );
        assert_eq!(accepted.thread_id, d.thread_id);
        assert_eq!(accepted.status, "running");
        // Its `message` event is emitted at once, while the model is still held.
        let seen = collect_until(&mut events, |e| {
            e.event == "message" && e.data["content"] == content
        })
        .await;
        let message = ev(seen.last().expect("message"));
        assert_eq!(message.run_id(), Some(run.as_str()));
        assert_eq!(message.data["role"], "user");
        assert_eq!(message.data["message_id"], accepted.message_id.as_str());
        steering_ids.push(message.seq());
    }
    assert!(!gate.is_open());
    assert_eq!(
        t.fake.requests().len(),
        1,
        "no model call while the first is in flight"
    );

    gate.open();
    let rest = until_terminal(&mut events, &run).await;
    assert_eq!(rest.last().expect("terminal").data["status"], "completed");
    let call = rest
        .iter()
        .find(|e| e.event == "tool_call")
        .expect("tool_call");
    assert!(call.seq() > steering_ids[1]);
    assert_eq!(
        rest.iter().filter(|e| e.event == "run_status").count(),
        1,
        "no new run, no status change before the end: {rest:#?}"
    );

    // The next model call sees the tool result, then both messages in arrival order, last.
    assert_eq!(t.fake.requests().len(), 2);
    let messages = model_messages(&t, 1);
    let result = position(&messages, "tool result", |m| {
        m["role"] == "tool" && m["tool_call_id"] == "call_steer1"
    });
    let budget = position(&messages, "first steering message", |m| {
        m["role"] == "user" && m["content"] == "Also add a budget"
    });
    let timeline = position(&messages, "second steering message", |m| {
        m["role"] == "user" && m["content"] == "And a timeline"
    });
    assert!(result < budget && budget < timeline, "{messages:#?}");
    assert_eq!(timeline, messages.len() - 1, "{messages:#?}");
    assert!(
        !model_messages(&t, 0)
            .iter()
            .any(|m| m["content"] == "Also add a budget"),
        "the first call started before the message arrived"
    );

    let thread = t
        .admin
        .get_thread(dep, &d.thread_id, None, None)
        .await
        .expect("thread");
    let users: Vec<(&str, Option<&str>)> = thread
        .messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| (m.content.as_str(), m.run_id.as_deref()))
        .collect();
    assert_eq!(
        users,
        [
            ("Write a plan", Some(run.as_str())),
            ("Also add a budget", Some(run.as_str())),
            ("And a timeline", Some(run.as_str())),
        ]
    );
    let runs = t
        .admin
        .list_runs(dep, &Default::default())
        .await
        .expect("runs");
    assert_eq!(runs.data.len(), 1, "steering input starts no run");
}

#[tokio::test]
async fn a_message_during_a_final_answer_keeps_the_run_going_until_the_model_saw_it() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let first = Gate::new();
    let second = Gate::new();
    t.fake
        .push(Script::new().text("Draft").hold(&first).text(" answer."));
    t.fake
        .push(Script::new().text("Revised").hold(&second).text(" answer."));

    let mut events = open_events(&t.admin, dep).await;
    let run = send(&t, dep, "Answer me", None).await;
    first.reached().await;
    let accepted = t
        .admin
        .send_message(dep, "Make it shorter", None, &[])
        .await
        .expect("steering send");
    assert_eq!(accepted.run_id, run);
    collect_until(&mut events, |e| {
        e.event == "message" && e.data["content"] == "Make it shorter"
    })
    .await;

    // The held answer had no tool calls, so it would have ended the run: instead the model is
    // called again with the queued message, and the run is still running meanwhile.
    first.open();
    second.reached().await;
    assert_eq!(t.fake.requests().len(), 2);
    let messages = model_messages(&t, 1);
    let draft = position(&messages, "recorded draft", |m| {
        m["role"] == "assistant" && m["content"] == "Draft answer."
    });
    let queued = position(&messages, "queued message", |m| {
        m["role"] == "user" && m["content"] == "Make it shorter"
    });
    assert!(
        draft < queued && queued == messages.len() - 1,
        "{messages:#?}"
    );
    let status = t.admin.get_run(dep, &run).await.expect("run").status;
    assert_eq!(
        status, "running",
        "no completion before the model saw the message"
    );

    second.open();
    let seen = until_terminal(&mut events, &run).await;
    let terminals: Vec<&Ev> = seen.iter().filter(|e| e.event == "run_status").collect();
    assert_eq!(
        terminals.len(),
        1,
        "one terminal status, after the second answer: {seen:#?}"
    );
    assert_eq!(terminals[0].data["status"], "completed");
    let agents: Vec<&str> = seen
        .iter()
        .filter(|e| e.event == "message" && e.data["role"] == "agent")
        .map(|e| e.data["content"].as_str().expect("content"))
        .collect();
    assert_eq!(agents, ["Draft answer.", "Revised answer."]);

    let thread = t
        .admin
        .get_thread(dep, &d.thread_id, None, None)
        .await
        .expect("thread");
    let users: Vec<(&str, Option<&str>)> = thread
        .messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| (m.content.as_str(), m.run_id.as_deref()))
        .collect();
    assert_eq!(
        users,
        [
            ("Answer me", Some(run.as_str())),
            ("Make it shorter", Some(run.as_str()))
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// §7.1 filters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn filters_combine_with_and_on_replay_and_live() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let a = d.thread_id.clone();
    let b = t
        .admin
        .create_thread(dep, Some("B"))
        .await
        .expect("thread")
        .thread_id;
    let types = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let mut control = open_events(&t.admin, dep).await;
    let mut live_thread = events_with(
        &t,
        dep,
        EventsQuery {
            thread_id: Some(a.clone()),
            ..EventsQuery::default()
        },
    )
    .await;
    let mut live_types = events_with(
        &t,
        dep,
        EventsQuery {
            types: types(&["run_status", "tool_result"]),
            ..EventsQuery::default()
        },
    )
    .await;
    let mut live_thread_types = events_with(
        &t,
        dep,
        EventsQuery {
            thread_id: Some(b.clone()),
            types: types(&["token", "message"]),
            ..EventsQuery::default()
        },
    )
    .await;

    // Two runs at once on two threads, one of them with a tool call.
    t.fake
        .push(Script::new().text("One ").text("two.").tool_call(
            "call_filter1",
            "write_file",
            json!({"path": "f.txt", "content": "f"}),
        ));
    t.fake.push(Script::new().text("Three ").text("four."));
    let (run_a1, run_b1) = futures::future::join(
        send(&t, dep, "A first", None),
        send(&t, dep, "B first", Some(&b)),
    )
    .await;
    let mut open: HashSet<String> = [run_a1.clone(), run_b1.clone()].into();
    let mut all = evs(&collect_until(&mut control, |e| {
        if is_terminal(e, &run_a1) || is_terminal(e, &run_b1) {
            open.remove(e.data["run_id"].as_str().unwrap_or_default());
        }
        open.is_empty()
    })
    .await);
    assert_eq!(t.fake.pending_scripts(), 0);

    // A third run, held before it streams anything; run_id filters open now, live, and see a
    // run on the other thread go by before the held run continues.
    let gate = Gate::new();
    t.fake
        .push(Script::new().hold(&gate).text("Five ").text("six."));
    let run_a2 = send(&t, dep, "A second", None).await;
    gate.reached().await;
    all.extend(evs(&collect_until(&mut control, |e| {
        e.event == "run_status" && e.data["run_id"] == run_a2.as_str()
    })
    .await));
    let opened_after = all.last().expect("started").seq();
    let mut live_run = events_with(
        &t,
        dep,
        EventsQuery {
            run_id: Some(run_a2.clone()),
            ..EventsQuery::default()
        },
    )
    .await;
    let mut live_run_types = events_with(
        &t,
        dep,
        EventsQuery {
            run_id: Some(run_a2.clone()),
            types: types(&["run_status", "token"]),
            ..EventsQuery::default()
        },
    )
    .await;
    let mut live_all_three = events_with(
        &t,
        dep,
        EventsQuery {
            thread_id: Some(a.clone()),
            run_id: Some(run_a2.clone()),
            types: types(&["token"]),
            ..EventsQuery::default()
        },
    )
    .await;
    t.fake.push(Script::new().text("Seven ").text("eight."));
    let run_b2 = send(&t, dep, "B second", Some(&b)).await;
    all.extend(until_terminal(&mut control, &run_b2).await);
    gate.open();
    all.extend(until_terminal(&mut control, &run_a2).await);
    assert_strictly_increasing(&all);
    let later: Vec<Ev> = all
        .iter()
        .filter(|e| e.seq() > opened_after)
        .cloned()
        .collect();

    let live_cases: Vec<(&str, &mut EventStream, Vec<Ev>)> = vec![
        (
            "thread_id",
            &mut live_thread,
            filtered(&all, Some(&a), None, &[]),
        ),
        (
            "types",
            &mut live_types,
            filtered(&all, None, None, &["run_status", "tool_result"]),
        ),
        (
            "thread_id+types",
            &mut live_thread_types,
            filtered(&all, Some(&b), None, &["token", "message"]),
        ),
        (
            "run_id",
            &mut live_run,
            filtered(&later, None, Some(&run_a2), &[]),
        ),
        (
            "run_id+types",
            &mut live_run_types,
            filtered(&later, None, Some(&run_a2), &["run_status", "token"]),
        ),
        (
            "thread_id+run_id+types",
            &mut live_all_three,
            filtered(&later, Some(&a), Some(&run_a2), &["token"]),
        ),
    ];
    for (name, stream, expected) in live_cases {
        assert!(
            !expected.is_empty() && expected.len() < all.len(),
            "{name}: the filter must select some events, not all"
        );
        assert_eq!(take(stream, expected.len()).await, expected, "live, {name}");
    }

    // The same filters on a replay of everything.
    let after = Some(format!("evt_{}", all[0].seq() - 1));
    let replay_cases = [
        (
            EventsQuery {
                thread_id: Some(a.clone()),
                ..EventsQuery::default()
            },
            filtered(&all, Some(&a), None, &[]),
        ),
        (
            EventsQuery {
                run_id: Some(run_b1.clone()),
                ..EventsQuery::default()
            },
            filtered(&all, None, Some(&run_b1), &[]),
        ),
        (
            EventsQuery {
                types: types(&["run_status", "tool_result"]),
                ..EventsQuery::default()
            },
            filtered(&all, None, None, &["run_status", "tool_result"]),
        ),
        (
            EventsQuery {
                thread_id: Some(b.clone()),
                types: types(&["token", "message"]),
                ..EventsQuery::default()
            },
            filtered(&all, Some(&b), None, &["token", "message"]),
        ),
        (
            EventsQuery {
                thread_id: Some(a.clone()),
                run_id: Some(run_a2.clone()),
                types: types(&["run_status", "message"]),
                ..EventsQuery::default()
            },
            filtered(&all, Some(&a), Some(&run_a2), &["run_status", "message"]),
        ),
        (
            EventsQuery {
                run_id: Some(run_a2.clone()),
                types: types(&["token"]),
                ..EventsQuery::default()
            },
            filtered(&all, None, Some(&run_a2), &["token"]),
        ),
    ];
    for (query, expected) in replay_cases {
        assert!(
            !expected.is_empty() && expected.len() < all.len(),
            "{query:?}: the filter must select some events, not all"
        );
        let name = format!("{query:?}");
        let mut stream = events_with(
            &t,
            dep,
            EventsQuery {
                after: after.clone(),
                ..query
            },
        )
        .await;
        assert_eq!(
            take(&mut stream, expected.len()).await,
            expected,
            "replay, {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// §7.3 retention (guarantee 29)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replay_past_retention_starts_with_replay_truncated() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let mut control = open_events(&t.admin, dep).await;
    let run1 = send(&t, dep, "Soon forgotten", None).await;
    let old = until_terminal(&mut control, &run1).await;
    let dropped_up_to = old.last().expect("terminal").seq();

    let pruned = state(&t)
        .store
        .prune_events(now_unix() + 1)
        .await
        .expect("prune");
    assert!(pruned >= old.len() as u64, "pruned {pruned}");

    let run2 = send(&t, dep, "Kept", None).await;
    let kept = until_terminal(&mut control, &run2).await;
    assert_eq!(kept[0].seq(), dropped_up_to + 1);

    // Events after evt_1 were dropped: replay_truncated first (no id), then what is left.
    let mut sse = RawSse::open(&t, dep, "", &[("last-event-id", "evt_1")]).await;
    let first = sse.next_event().await.expect("frame");
    assert_eq!(first.event, "replay_truncated");
    assert_eq!(first.id, None);
    assert_eq!(
        first.data,
        json!({
            "requested_after": "evt_1",
            "oldest_available": format!("evt_{}", dropped_up_to + 1),
        })
    );
    let replay = sse.until(|e| e.is_terminal_of(&run2)).await;
    assert_eq!(replay, kept);

    // It ignores filters (here: a type nothing matches), and is written without leading zeros.
    let mut filtered = RawSse::open(&t, dep, "?after=evt_0002&types=steering_request", &[]).await;
    let first = filtered.next_event().await.expect("frame");
    assert_eq!(first.event, "replay_truncated");
    assert_eq!(first.data["requested_after"], "evt_2");

    // Nothing after the cursor was dropped: no replay_truncated.
    let mut intact = RawSse::open(
        &t,
        dep,
        "",
        &[("last-event-id", &format!("evt_{dropped_up_to}"))],
    )
    .await;
    let first = intact.next_event().await.expect("frame");
    assert_eq!(first, kept[0]);
}

// ---------------------------------------------------------------------------------------------
// §3.8 deletion, §5.3 cancel
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_deployment_closes_its_streams_and_reconnecting_gets_404() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let other = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("Working").hold(&gate).text(" on it."));

    let mut sse = RawSse::open(&t, dep, "", &[]).await;
    let mut filtered = RawSse::open(&t, dep, "?types=steering_request", &[]).await;
    let mut other_events = open_events(&t.admin, &other.deployment_id).await;
    let run = send(&t, dep, "Work", None).await;
    sse.until(|e| e.event == "token" && e.run_id() == Some(run.as_str()))
        .await;

    let deleted = t.admin.delete_deployment(dep, false).await.expect("delete");
    assert_eq!(deleted.status, "deleted");
    let after_delete = sse.until_closed().await;
    assert!(
        after_delete.is_empty(),
        "nothing is written after the delete: {after_delete:#?}"
    );
    assert!(filtered.until_closed().await.is_empty());
    gate.open();

    for (query, headers) in [("", &[][..]), ("", &[("last-event-id", "evt_1")][..])] {
        let response = raw_get(&t, dep, query, headers).await;
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("error body");
        assert_eq!(body["error"]["code"], "not_found");
    }

    // Another deployment's stream is untouched.
    let other_run = send(&t, &other.deployment_id, "Still here?", None).await;
    let seen = until_terminal(&mut other_events, &other_run).await;
    assert_eq!(seen.last().expect("terminal").data["status"], "completed");
}

#[tokio::test]
async fn cancel_during_a_model_call_ends_the_run_and_nothing_follows() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let gate = Gate::new();
    t.fake.push(Script::new().tool_call(
        "call_cm1",
        "write_file",
        json!({"path": "done.txt", "content": "done"}),
    ));
    t.fake
        .push(Script::new().text("Thinking").hold(&gate).text(" more."));

    let mut events = open_events(&t.admin, dep).await;
    let run = send(&t, dep, "Do it", None).await;
    gate.reached().await;
    let before =
        evs(&collect_until(&mut events, |e| e.event == "token" && e.data["step"] == 2).await);
    let result = before
        .iter()
        .find(|e| e.event == "tool_result")
        .expect("the first call finished before the second model call");
    assert_eq!(result.data["is_error"], false);

    let cancelled = t.admin.cancel_run(dep, &run).await.expect("cancel");
    assert_eq!(cancelled.status, "error");
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled")
    );
    let end = until_terminal(&mut events, &run).await;
    assert_eq!(
        end.len(),
        1,
        "the finished call gets no second result: {end:#?}"
    );
    assert_eq!(end[0].data["status"], "error");
    assert_eq!(end[0].data["error"]["code"], "cancelled");
    assert!(
        end[0].data.get("usage").is_some(),
        "usage on error: {:?}",
        end[0]
    );

    // The abandoned model call resumes streaming; none of it may reach the stream. A later run
    // on another thread is the fence.
    gate.open();
    let fence = send(&t, dep, "Next", Some("new")).await;
    let after = until_terminal(&mut events, &fence).await;
    assert!(
        after.iter().all(|e| e.run_id() != Some(run.as_str())),
        "events of the cancelled run after its end: {after:#?}"
    );
    let mut all = before;
    all.extend(end);
    all.extend(after);
    assert_run_invariants(&all, &run);
    assert_run_invariants(&all, &fence);

    // Cancelling again changes nothing.
    let again = t.admin.cancel_run(dep, &run).await.expect("cancel again");
    assert_eq!(again.status, "error");
    assert_eq!(again.updated_at, cancelled.updated_at);
}

/// A tool call that is still executing (a `read_file` blocked on a FIFO with no writer) and
/// a recorded call that has not started are both answered `{"error": "cancelled"}` before the
/// terminal status, and the pending call never runs.
#[cfg(unix)]
#[tokio::test]
async fn cancel_answers_unfinished_tool_calls_then_ends_the_run() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let workspace = state(&t).settings.workspaces_dir().join(dep);
    let fifo = workspace.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    t.fake.push(
        Script::new()
            .tool_call("call_cx1", "shell", json!({"command": "cat pipe"}))
            .tool_call(
                "call_cx2",
                "write_file",
                json!({"path": "after.txt", "content": "too late"}),
            ),
    );

    let mut events = open_events(&t.admin, dep).await;
    let run = send(&t, dep, "Read the pipe, then write", None).await;
    let before = evs(&collect_until(&mut events, |e| {
        e.event == "tool_call" && e.data["call_id"] == "call_cx2"
    })
    .await);

    // Opening the FIFO for writing returns once the command has opened it for reading: the
    // call is then executing, blocked reading until the writer closes.
    let path = fifo.clone();
    let opening =
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path));
    let writer = match tokio::time::timeout(WAIT, opening).await {
        Ok(joined) => joined.expect("join").expect("open the FIFO for writing"),
        Err(_) => {
            // Unblock the waiting opener so the runtime can shut down, then fail.
            let _ = std::fs::File::open(&fifo);
            panic!("the shell call never opened the FIFO");
        }
    };

    let cancelled = t.admin.cancel_run(dep, &run).await.expect("cancel");
    assert_eq!(cancelled.status, "error");
    let end = until_terminal(&mut events, &run).await;
    let shape: Vec<(&str, &Value)> = end
        .iter()
        .map(|e| (e.event.as_str(), &e.data["call_id"]))
        .collect();
    assert_eq!(
        shape,
        [
            ("tool_result", &json!("call_cx1")),
            ("tool_result", &json!("call_cx2")),
            ("run_status", &Value::Null),
        ],
        "{end:#?}"
    );
    for result in &end[..2] {
        assert_eq!(result.data["is_error"], true, "{result:?}");
        assert_eq!(
            result.data["result"],
            json!({"error": "cancelled"}),
            "{result:?}"
        );
    }
    assert_eq!(end[2].data["status"], "error");
    assert_eq!(end[2].data["error"]["code"], "cancelled");

    // The cancel killed the command; close our end too. The pending write never starts. A
    // later run is the fence.
    drop(writer);
    let fence = send(&t, dep, "Next", Some("new")).await;
    let after = until_terminal(&mut events, &fence).await;
    assert!(
        after.iter().all(|e| e.run_id() != Some(run.as_str())),
        "events of the cancelled run after its end: {after:#?}"
    );
    assert!(
        !workspace.join("after.txt").exists(),
        "a tool call started after the cancel"
    );
    let mut all = before;
    all.extend(end);
    all.extend(after);
    assert_run_invariants(&all, &run);
}

// ---------------------------------------------------------------------------------------------
// §7.3 slow subscribers
// ---------------------------------------------------------------------------------------------

/// A subscriber that stops reading while a burst far larger than every buffer on the way is
/// committed is disconnected; what it did get has no gap, and it resumes from there.
#[tokio::test]
async fn a_subscriber_too_slow_to_keep_up_is_disconnected_not_skipped() {
    const BURST: usize = 12_000;
    const BATCH: usize = 500;
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let st = state(&t);

    let mut slow = RawSse::open(&t, dep, "", &[]).await;
    let pad = "x".repeat(1024);
    let mut first = None;
    let mut last = 0;
    for b in 0..BURST / BATCH {
        let batch: Vec<NewEvent> = (0..BATCH)
            .map(|i| NewEvent {
                kind: EventType::Filesystem,
                thread_id: None,
                run_id: None,
                data: json!({"change": "modified", "path": format!("burst/{b}/{i}"), "pad": pad}),
            })
            .collect();
        let guard = st.runtime.bus().lock(dep).await;
        let stored = st
            .store
            .append_events(dep, batch, now_unix())
            .await
            .expect("append");
        guard.publish(&stored);
        drop(guard);
        first.get_or_insert(stored[0].seq);
        last = stored[stored.len() - 1].seq;
    }
    let first = first.expect("burst");

    // Now read: the buffered frames arrive in order without a gap, then the stream ends
    // before the burst does.
    let got = slow.until_closed().await;
    assert!(!got.is_empty(), "the buffered part is delivered");
    assert!(
        got.len() < BURST,
        "a subscriber that fell {BURST} events behind must be disconnected"
    );
    let ids: Vec<i64> = got.iter().map(Ev::seq).collect();
    let contiguous: Vec<i64> = (first..first + ids.len() as i64).collect();
    assert_eq!(ids, contiguous, "nothing skipped before the disconnect");

    // It resumes where it stopped.
    let resume = format!("evt_{}", ids[ids.len() - 1]);
    let mut again = RawSse::open(&t, dep, "", &[("last-event-id", &resume)]).await;
    let next = again.next_event().await.expect("event");
    assert_eq!(next.seq(), ids[ids.len() - 1] + 1);
    assert!(next.seq() <= last);
}
