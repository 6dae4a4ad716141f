//! A fake OpenAI-compatible Chat Completions server for deterministic tests.
//!
//! The fake speaks the real wire protocol (`POST …/chat/completions`, answered with
//! `text/event-stream` chunks of `chat.completion.chunk` objects and a final `data: [DONE]`), so
//! the production HTTP client is exercised end to end. Each request is answered with the next
//! queued [`Script`]; every request body and header map is recorded.
//!
//! ```no_run
//! # async fn demo() {
//! use paddock_test_support::{FakeOpenAi, Gate, Script};
//!
//! let fake = FakeOpenAi::start().await;
//! let gate = Gate::new();
//! fake.push(Script::new().text("Hel").hold(&gate).text("lo").usage(12, 3));
//! // … point a client at fake.base_url() and start a call …
//! gate.reached().await; // "Hel" has been sent; the model is mid-stream
//! gate.open();
//! fake.wait_for_requests(1).await;
//! assert_eq!(fake.requests()[0]["model"], "gpt-test");
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the waiting helpers wait before panicking: far longer than any healthy test needs,
/// short enough that a hung test fails with a message instead of a CI timeout.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A running fake Chat Completions server on `127.0.0.1` with a random port.
///
/// Dropping it stops accepting connections and cuts any stream still waiting at a [`Gate`].
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    queue: Mutex<VecDeque<Script>>,
    default: Mutex<Script>,
    requests: Mutex<Vec<Recorded>>,
    /// Number of requests received so far; watched by `wait_for_requests`.
    count: watch::Sender<usize>,
    /// Flips to `true` when the fake is dropped so held streams end instead of hanging.
    shutdown: watch::Sender<bool>,
}

struct Recorded {
    body: Value,
    headers: HeaderMap,
}

impl FakeOpenAi {
    /// Binds `127.0.0.1:0` and serves `POST /v1/chat/completions` (and `/chat/completions`)
    /// on a background task.
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start() -> FakeOpenAi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake OpenAI: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake OpenAI: local address");
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Script::new().text("OK.")),
            requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake OpenAI server stopped: {e}");
            }
        });
        FakeOpenAi {
            addr,
            shared,
            server,
        }
    }

    /// The base URL to configure a provider with: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `script` as the answer to the next request that finds the queue non-empty
    /// (first in, first out).
    pub fn push(&self, script: Script) {
        self.shared.queue.lock().unwrap().push_back(script);
    }

    /// Replaces the script answered when the queue is empty (initially a single text `OK.`
    /// finishing with `stop`).
    pub fn set_default(&self, script: Script) {
        *self.shared.default.lock().unwrap() = script;
    }

    /// How many pushed scripts have not been used yet.
    pub fn pending_scripts(&self) -> usize {
        self.shared.queue.lock().unwrap().len()
    }

    /// The JSON bodies of all requests received so far, in arrival order. A body that was not
    /// JSON is recorded as a JSON string holding its text.
    pub fn requests(&self) -> Vec<Value> {
        let requests = self.shared.requests.lock().unwrap();
        requests.iter().map(|r| r.body.clone()).collect()
    }

    /// The HTTP headers of all requests received so far, in arrival order.
    pub fn request_headers(&self) -> Vec<HeaderMap> {
        let requests = self.shared.requests.lock().unwrap();
        requests.iter().map(|r| r.headers.clone()).collect()
    }

    /// Waits until at least `n` requests have arrived.
    ///
    /// # Panics
    /// If that takes longer than 30 seconds.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut count = self.shared.count.subscribe();
        let waited = tokio::time::timeout(WAIT_LIMIT, count.wait_for(|c| *c >= n)).await;
        match waited {
            Ok(Ok(_)) => {}
            // The sender lives in `self`, so the channel cannot close while we wait.
            Ok(Err(_)) => unreachable!("fake OpenAI request counter closed"),
            Err(_) => panic!(
                "fake OpenAI: waited {WAIT_LIMIT:?} for {n} request(s), only {} arrived",
                *self.shared.count.borrow()
            ),
        }
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.server.abort();
    }
}

impl fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("addr", &self.addr)
            .field("requests", &*self.shared.count.borrow())
            .finish_non_exhaustive()
    }
}

/// One scripted answer of the fake server.
///
/// Build a streamed answer with [`Script::new`] and the builder methods, which are played in
/// the order they are called. The end of the stream is implicit: a final chunk with
/// `finish_reason` `tool_calls` (if the script has any tool call) or `stop`, then the usage
/// chunk if [`Script::usage`] was set, then `data: [DONE]` — unless [`Script::cut`] was called.
#[derive(Clone, Debug)]
pub struct Script {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Stream {
        steps: Vec<Step>,
        usage: Option<(u64, u64)>,
        cut: bool,
    },
    Error {
        status: u16,
        message: String,
    },
}

#[derive(Clone, Debug)]
enum Step {
    Text(String),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    Hold(Gate),
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    /// An empty streamed answer (on its own: no content, `finish_reason: stop`, `[DONE]`).
    pub fn new() -> Script {
        Script {
            kind: Kind::Stream {
                steps: Vec::new(),
                usage: None,
                cut: false,
            },
        }
    }

    /// An answer with HTTP status `status` and an OpenAI-style error body
    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn error(status: u16, message: impl Into<String>) -> Script {
        Script {
            kind: Kind::Error {
                status,
                message: message.into(),
            },
        }
    }

    /// A stream that sends one text chunk (`"par"`) and then drops the connection without
    /// finishing; shorthand for `Script::new().text("par").cut()`.
    pub fn drop_connection() -> Script {
        Script::new().text("par").cut()
    }

    /// Sends `delta` as the `content` of one chunk.
    pub fn text(mut self, delta: impl Into<String>) -> Script {
        self.steps().push(Step::Text(delta.into()));
        self
    }

    /// Sends one tool call the way OpenAI streams it: a first chunk with `id`, `name` and empty
    /// `arguments`, then the serialized `arguments` in two or three fragments. Tool calls are
    /// numbered (`index`) in the order they appear in the script.
    pub fn tool_call(
        self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Script {
        self.tool_call_raw(id, name, arguments.to_string())
    }

    /// Like [`Script::tool_call`] but sends `arguments` verbatim, e.g. text that is not JSON.
    pub fn tool_call_raw(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Script {
        self.steps().push(Step::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        });
        self
    }

    /// Sends a usage chunk (`prompt_tokens`, `completion_tokens`) after the finish chunk.
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Script {
        if let Kind::Stream { usage, .. } = &mut self.kind {
            *usage = Some((input_tokens, output_tokens));
        }
        self
    }

    /// Pauses the stream at this point until `gate` is opened; everything before it has been
    /// flushed to the client by then. [`Gate::reached`] tells the test the pause has begun.
    pub fn hold(mut self, gate: &Gate) -> Script {
        self.steps().push(Step::Hold(gate.clone()));
        self
    }

    /// Ends the stream here by aborting the connection: no finish chunk, no usage, no `[DONE]`,
    /// and no clean end of the chunked body either, so the client sees a transport error.
    pub fn cut(mut self) -> Script {
        if let Kind::Stream { cut, .. } = &mut self.kind {
            *cut = true;
        }
        self
    }

    fn steps(&mut self) -> &mut Vec<Step> {
        match &mut self.kind {
            Kind::Stream { steps, .. } => steps,
            Kind::Error { .. } => panic!("Script::error(..) takes no stream steps"),
        }
    }
}

/// A point a scripted stream pauses at (see [`Script::hold`]) until the test opens it.
///
/// Clones share the same state. Once opened, a gate stays open.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    open: watch::Sender<bool>,
    reached: watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &*self.inner.open.borrow())
            .field("reached", &*self.inner.reached.borrow())
            .finish()
    }
}

impl Gate {
    /// A closed gate that no stream has reached yet.
    pub fn new() -> Gate {
        Gate {
            inner: Arc::new(GateInner {
                open: watch::Sender::new(false),
                reached: watch::Sender::new(false),
            }),
        }
    }

    /// Lets every stream held at this gate (now or later) continue.
    pub fn open(&self) {
        self.inner.open.send_replace(true);
    }

    /// Whether [`Gate::open`] has been called.
    pub fn is_open(&self) -> bool {
        *self.inner.open.borrow()
    }

    /// Resolves once a stream has arrived at this gate, i.e. every chunk scripted before the
    /// hold has been handed to the connection.
    ///
    /// # Panics
    /// If no stream reaches the gate within 30 seconds.
    pub async fn reached(&self) {
        let mut reached = self.inner.reached.subscribe();
        match tokio::time::timeout(WAIT_LIMIT, reached.wait_for(|r| *r)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => unreachable!("gate sender lives as long as the gate"),
            Err(_) => panic!("fake OpenAI: no stream reached the gate within {WAIT_LIMIT:?}"),
        }
    }

    /// Marks the gate reached and waits for it to open. Returns `false` if `shutdown` fired
    /// first.
    async fn pass(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        self.inner.reached.send_replace(true);
        let mut open = self.inner.open.subscribe();
        tokio::select! {
            result = open.wait_for(|o| *o) => result.is_ok(),
            _ = shutdown.wait_for(|s| *s) => false,
        }
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    shared
        .requests
        .lock()
        .unwrap()
        .push(Recorded { body, headers });
    let number = {
        let mut n = 0;
        shared.count.send_modify(|c| {
            *c += 1;
            n = *c;
        });
        n
    };
    let script = shared.queue.lock().unwrap().pop_front();
    let script = script.unwrap_or_else(|| shared.default.lock().unwrap().clone());

    match script.kind {
        Kind::Error { status, message } => error_response(status, &message),
        Kind::Stream { steps, usage, cut } => {
            let id = format!("chatcmpl-fake-{number}");
            let frames = frames(&id, &model, steps, usage, cut);
            let shutdown = shared.shutdown.subscribe();
            let stream = futures::stream::unfold(
                (VecDeque::from(frames), shutdown),
                |(mut frames, mut shutdown)| async move {
                    loop {
                        match frames.pop_front()? {
                            Frame::Data(data) => {
                                let bytes = Bytes::from(format!("data: {data}\n\n"));
                                return Some((Ok(bytes), (frames, shutdown)));
                            }
                            Frame::Hold(gate) => {
                                if !gate.pass(&mut shutdown).await {
                                    frames.clear();
                                    return Some((Err(cut_error()), (frames, shutdown)));
                                }
                            }
                            Frame::Cut => {
                                // An error from the body stream makes hyper abort the
                                // connection without the terminating chunk, which is what a
                                // real mid-stream disconnect looks like to the client. Hyper
                                // drops unflushed output on that error, so first return
                                // `Pending` once: hyper flushes the earlier chunks then.
                                tokio::task::yield_now().await;
                                frames.clear();
                                return Some((Err(cut_error()), (frames, shutdown)));
                            }
                        }
                    }
                },
            );
            let mut response = Body::from_stream(stream.boxed()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "fake OpenAI: scripted connection drop",
    )
}

fn error_response(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        401 => "invalid_request_error",
        429 => "rate_limit_exceeded",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    });
    (status, axum::Json(body)).into_response()
}

enum Frame {
    /// The payload of one `data:` line.
    Data(String),
    Hold(Gate),
    Cut,
}

/// Expands a script into the exact sequence of SSE payloads (and pauses) to send.
fn frames(
    id: &str,
    model: &str,
    steps: Vec<Step>,
    usage: Option<(u64, u64)>,
    cut: bool,
) -> Vec<Frame> {
    let chunk = |delta: Value, finish_reason: Value| {
        Frame::Data(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "system_fingerprint": null,
                "choices": [{
                    "index": 0,
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": finish_reason,
                }],
            })
            .to_string(),
        )
    };
    // OpenAI's first chunk carries only the role.
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let mut tool_index = 0usize;
    for step in steps {
        match step {
            Step::Text(text) => out.push(chunk(json!({"content": text}), Value::Null)),
            Step::ToolCall {
                id: call_id,
                name,
                arguments,
            } => {
                out.push(chunk(
                    json!({"tool_calls": [{
                        "index": tool_index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    Value::Null,
                ));
                for fragment in split_fragments(&arguments) {
                    out.push(chunk(
                        json!({"tool_calls": [{
                            "index": tool_index,
                            "function": {"arguments": fragment},
                        }]}),
                        Value::Null,
                    ));
                }
                tool_index += 1;
            }
            Step::Hold(gate) => out.push(Frame::Hold(gate)),
        }
    }
    if cut {
        out.push(Frame::Cut);
        return out;
    }
    let finish = if tool_index > 0 { "tool_calls" } else { "stop" };
    out.push(chunk(json!({}), json!(finish)));
    if let Some((input, output)) = usage {
        out.push(Frame::Data(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "system_fingerprint": null,
                "choices": [],
                "usage": {
                    "prompt_tokens": input,
                    "completion_tokens": output,
                    "total_tokens": input + output,
                },
            })
            .to_string(),
        ));
    }
    out.push(Frame::Data("[DONE]".to_owned()));
    out
}

/// Splits `text` into up to three non-empty pieces on character boundaries.
fn split_fragments(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let pieces = chars.len().min(3);
    let size = chars.len().div_ceil(pieces);
    chars
        .chunks(size)
        .map(|c| c.iter().collect::<String>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_cover_text_on_char_boundaries() {
        for text in ["", "a", "ab", "{\"x\":1}", "{\"städte\":\"Zürich ☃\"}"] {
            let parts = split_fragments(text);
            assert!(parts.len() <= 3);
            assert!(parts.iter().all(|p| !p.is_empty()));
            assert_eq!(parts.concat(), text);
            if text.chars().count() >= 3 {
                assert!(parts.len() >= 2);
            }
        }
    }

    #[tokio::test]
    async fn streams_script_and_records_request() {
        let fake = FakeOpenAi::start().await;
        fake.push(
            Script::new()
                .text("Hi")
                .tool_call("call_1", "echo", json!({"a": 1}))
                .usage(5, 7),
        );
        let client = reqwest::Client::new();
        let body = client
            .post(format!("{}/chat/completions", fake.base_url()))
            .header("x-test", "yes")
            .json(&json!({"model": "m1", "messages": []}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains(r#""content":"Hi""#), "{body}");
        assert!(body.contains(r#""finish_reason":"tool_calls""#), "{body}");
        assert!(body.contains(r#""prompt_tokens":5"#), "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        fake.wait_for_requests(1).await;
        assert_eq!(fake.requests()[0]["model"], "m1");
        assert_eq!(fake.request_headers()[0]["x-test"], "yes");
    }

    #[tokio::test]
    async fn default_script_and_error_script() {
        let fake = FakeOpenAi::start().await;
        fake.push(Script::error(429, "slow down"));
        let client = reqwest::Client::new();
        let url = format!("{}/chat/completions", fake.base_url());
        let response = client.post(&url).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "slow down");

        let body = client
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains(r#""content":"OK.""#), "{body}");
        assert!(body.contains(r#""finish_reason":"stop""#), "{body}");
        fake.wait_for_requests(2).await;
    }

    #[tokio::test]
    async fn hold_delivers_earlier_chunks_and_cut_drops_connection() {
        let fake = FakeOpenAi::start().await;
        let gate = Gate::new();
        fake.push(Script::new().text("before").hold(&gate).text("after").cut());
        let client = reqwest::Client::new();
        let mut response = client
            .post(format!("{}/chat/completions", fake.base_url()))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        gate.reached().await;
        let mut seen = String::new();
        while !seen.contains("before") {
            let chunk = response.chunk().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(!seen.contains("after"));
        gate.open();
        let rest = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(seen.contains("after"));
        assert!(!seen.contains("[DONE]"));
        assert!(rest.is_err(), "a cut stream must not end cleanly");
    }
}
