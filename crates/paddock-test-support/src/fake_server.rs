//! The machinery every fake vendor server shares: a scripted queue of answers, a recording of
//! every request, [`Gate`]s that pause a stream, and the SSE response that plays a script.
//! Each vendor module ([`crate::fake_openai`], [`crate::fake_anthropic`],
//! [`crate::fake_gemini`]) only renders a [`Script`] in its own wire format.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the waiting helpers wait before panicking: far longer than any healthy test needs,
/// short enough that a hung test fails with a message instead of a CI timeout.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One vendor's wire format, as the shared server needs it.
pub(crate) trait Wire: Send + Sync + 'static {
    /// How the fake names itself in messages, e.g. `fake OpenAI`.
    fn name(&self) -> &'static str;
    /// What [`FakeServer::base_url`] appends to `http://ADDR`, e.g. `/v1`.
    fn base_path(&self) -> &'static str;
    /// The answer to a request the vendor would refuse (wrong path, missing key), if
    /// `request` is one; no script is used up then.
    fn reject(&self, request: &RecordedRequest) -> Option<Response>;
    /// The events (and pauses) that play `stream` as the answer to `request`, the `number`th
    /// request of this fake.
    fn frames(&self, request: &RecordedRequest, number: usize, stream: StreamScript) -> Vec<Frame>;
    /// The vendor's HTTP error answer.
    fn error(&self, error: &ErrorScript) -> Response;
}

/// A running fake vendor server on `127.0.0.1` with a random port. The vendor types
/// ([`crate::FakeOpenAi`], [`crate::FakeAnthropic`], [`crate::FakeGemini`]) dereference to it.
///
/// Dropping it stops accepting connections and cuts any stream still waiting at a [`Gate`].
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    wire: Box<dyn Wire>,
    queue: Mutex<VecDeque<Script>>,
    /// Answers requests the queue has nothing for, from the request itself.
    responder: Mutex<Option<Responder>>,
    default: Mutex<Script>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Number of requests received so far; watched by `wait_for_requests`.
    count: watch::Sender<usize>,
    /// Flips to `true` when the fake is dropped so held streams end instead of hanging.
    shutdown: watch::Sender<bool>,
}

/// Decides the answer to a request from the request itself (see [`FakeServer::set_responder`]).
pub type Responder = Arc<dyn Fn(&RecordedRequest) -> Script + Send + Sync>;

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The path and query, e.g. `/v1beta/models/gemini-test:streamGenerateContent?alt=sse`.
    pub path: String,
    pub headers: HeaderMap,
    /// The JSON body; a body that was not JSON is a JSON string holding its text.
    pub body: Value,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and answers every POST on a background task.
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub(crate) async fn start(wire: Box<dyn Wire>) -> FakeServer {
        let name = wire.name();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{name}: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{name}: local address: {e}"));
        let shared = Arc::new(Shared {
            wire,
            queue: Mutex::new(VecDeque::new()),
            responder: Mutex::new(None),
            default: Mutex::new(Script::new().text("OK.")),
            requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        });
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("{name} server stopped: {e}");
            }
        });
        FakeServer {
            addr,
            shared,
            server,
        }
    }

    /// The base URL to configure a provider with, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.shared.wire.base_path())
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
    /// that finishes normally).
    pub fn set_default(&self, script: Script) {
        *self.shared.default.lock().unwrap() = script;
    }

    /// Answers every request the queue has nothing for with `responder(request)`, instead of
    /// the default script. Unlike the queue, the answer depends on what was asked, not on
    /// arrival order: a client that repeats a request (a retry, a redone call after a crash)
    /// gets the same answer again.
    pub fn set_responder(
        &self,
        responder: impl Fn(&RecordedRequest) -> Script + Send + Sync + 'static,
    ) {
        *self.shared.responder.lock().unwrap() = Some(Arc::new(responder));
    }

    /// How many pushed scripts have not been used yet.
    pub fn pending_scripts(&self) -> usize {
        self.shared.queue.lock().unwrap().len()
    }

    /// Every request received so far, in arrival order.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
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

    /// The paths (with query) of all requests received so far, in arrival order.
    pub fn request_paths(&self) -> Vec<String> {
        let requests = self.shared.requests.lock().unwrap();
        requests.iter().map(|r| r.path.clone()).collect()
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
            Ok(Err(_)) => unreachable!("fake server request counter closed"),
            Err(_) => panic!(
                "{}: waited {WAIT_LIMIT:?} for {n} request(s), only {} arrived",
                self.shared.wire.name(),
                *self.shared.count.borrow()
            ),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.server.abort();
    }
}

impl fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.shared.wire.name())
            .field("addr", &self.addr)
            .field("requests", &*self.shared.count.borrow())
            .finish_non_exhaustive()
    }
}

/// One scripted answer of a fake server, vendor-neutral: each fake plays it in its own format.
///
/// Build a streamed answer with [`Script::new`] and the builder methods, which are played in
/// the order they are called. The end of the stream is implicit: the vendor's finish (stop
/// reason `tool_calls`/`tool_use` if the script has a tool call, else a normal stop), its usage
/// report if [`Script::usage`] was set, and its end-of-stream marker — unless [`Script::cut`]
/// or [`Script::fail`] ends the stream otherwise.
#[derive(Clone, Debug)]
pub struct Script {
    pub(crate) kind: Kind,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Stream(StreamScript),
    Error(ErrorScript),
}

/// A streamed answer.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamScript {
    pub steps: Vec<Step>,
    /// Input and output tokens.
    pub usage: Option<(u64, u64)>,
    /// Input tokens read from and written to the prompt cache (part of the input).
    pub cache: Option<(u64, u64)>,
    /// The vendor's own stop reason, replacing the implicit one.
    pub stop_reason: Option<String>,
    pub end: End,
    /// A pause before each event of the stream (a slow model).
    pub chunk_delay: Option<Duration>,
}

/// How a streamed answer ends.
#[derive(Clone, Debug, Default)]
pub(crate) enum End {
    /// The vendor's normal finish.
    #[default]
    Finish,
    /// The connection is aborted.
    Cut,
    /// The vendor's mid-stream error event, then the stream closes.
    Fail { kind: String, message: String },
}

/// An HTTP error answer.
#[derive(Clone, Debug)]
pub(crate) struct ErrorScript {
    pub status: u16,
    pub message: String,
    /// Seconds the vendor asks the client to wait.
    pub retry_after: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
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
    /// An empty streamed answer (on its own: no content, a normal stop, end of stream).
    pub fn new() -> Script {
        Script {
            kind: Kind::Stream(StreamScript::default()),
        }
    }

    /// An answer with HTTP status `status` and the vendor's error body carrying `message`
    /// (with the error type the vendor uses for that status, e.g. Anthropic's
    /// `overloaded_error` for 529).
    pub fn error(status: u16, message: impl Into<String>) -> Script {
        Script {
            kind: Kind::Error(ErrorScript {
                status,
                message: message.into(),
                retry_after: None,
            }),
        }
    }

    /// On an error answer: asks the client to wait `seconds` before retrying, the way the
    /// vendor says it (a `retry-after` header; Google: a `RetryInfo` detail in the body).
    ///
    /// # Panics
    /// On a streamed answer.
    pub fn retry_after(mut self, seconds: u64) -> Script {
        match &mut self.kind {
            Kind::Error(error) => error.retry_after = Some(seconds),
            Kind::Stream(_) => panic!("Script::retry_after(..) applies to Script::error(..)"),
        }
        self
    }

    /// A stream that sends one text chunk (`"par"`) and then drops the connection without
    /// finishing; shorthand for `Script::new().text("par").cut()`.
    pub fn drop_connection() -> Script {
        Script::new().text("par").cut()
    }

    /// Sends `delta` as one text chunk.
    pub fn text(mut self, delta: impl Into<String>) -> Script {
        self.stream().steps.push(Step::Text(delta.into()));
        self
    }

    /// Sends one tool call the way the vendor streams it (OpenAI and Anthropic: the arguments
    /// in two or three fragments; Gemini: whole, without the id). Tool calls are numbered in
    /// the order they appear in the script.
    pub fn tool_call(
        self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Script {
        self.tool_call_raw(id, name, arguments.to_string())
    }

    /// Like [`Script::tool_call`] but sends `arguments` verbatim, e.g. text that is not JSON
    /// (Gemini, which sends arguments as JSON, sends text that does not parse as a string).
    pub fn tool_call_raw(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Script {
        self.stream().steps.push(Step::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        });
        self
    }

    /// Reports `input_tokens` and `output_tokens` the way the vendor does (OpenAI: a final
    /// usage chunk; Anthropic: `message_start` and `message_delta`; Gemini: `usageMetadata`).
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Script {
        self.stream().usage = Some((input_tokens, output_tokens));
        self
    }

    /// Reports that `read` input tokens came from the prompt cache and `written` were added to
    /// it (both counted in the input of [`Script::usage`]).
    pub fn cache_usage(mut self, read: u64, written: u64) -> Script {
        self.stream().cache = Some((read, written));
        self
    }

    /// Finishes with the vendor's own stop reason, e.g. `length` (OpenAI), `max_tokens`
    /// (Anthropic) or `MAX_TOKENS` (Gemini), instead of the implicit one.
    pub fn stop_reason(mut self, reason: impl Into<String>) -> Script {
        self.stream().stop_reason = Some(reason.into());
        self
    }

    /// Waits `delay` before sending each event of the stream, the first included: a slow
    /// model, whose answer is in flight for a while.
    pub fn chunk_delay(mut self, delay: Duration) -> Script {
        self.stream().chunk_delay = Some(delay);
        self
    }

    /// Pauses the stream at this point until `gate` is opened; everything before it has been
    /// flushed to the client by then. [`Gate::reached`] tells the test the pause has begun.
    pub fn hold(mut self, gate: &Gate) -> Script {
        self.stream().steps.push(Step::Hold(gate.clone()));
        self
    }

    /// Ends the stream after the steps by aborting the connection: no finish, no usage, no end
    /// marker, and no clean end of the chunked body either, so the client sees a transport
    /// error.
    pub fn cut(mut self) -> Script {
        self.stream().end = End::Cut;
        self
    }

    /// Ends the stream after the steps with the vendor's mid-stream error event of type `kind`
    /// (e.g. Anthropic's `overloaded_error`, Gemini's `UNAVAILABLE`, OpenAI's `server_error`),
    /// then closes it cleanly.
    pub fn fail(mut self, kind: impl Into<String>, message: impl Into<String>) -> Script {
        self.stream().end = End::Fail {
            kind: kind.into(),
            message: message.into(),
        };
        self
    }

    fn stream(&mut self) -> &mut StreamScript {
        match &mut self.kind {
            Kind::Stream(stream) => stream,
            Kind::Error(_) => panic!("Script::error(..) takes no stream steps"),
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
            Err(_) => panic!("fake server: no stream reached the gate within {WAIT_LIMIT:?}"),
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

/// One piece of a scripted SSE response.
pub(crate) enum Frame {
    /// One server-sent event: an optional `event:` name and the `data:` payload.
    Event {
        name: Option<String>,
        data: String,
    },
    Hold(Gate),
    Cut,
}

impl Frame {
    /// A `data:`-only event.
    pub fn data(data: impl Into<String>) -> Frame {
        Frame::Event {
            name: None,
            data: data.into(),
        }
    }

    /// A named event.
    pub fn named(name: &str, data: impl Into<String>) -> Frame {
        Frame::Event {
            name: Some(name.to_owned()),
            data: data.into(),
        }
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let request = RecordedRequest {
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers,
        body,
    };
    shared.requests.lock().unwrap().push(request.clone());
    let number = {
        let mut n = 0;
        shared.count.send_modify(|c| {
            *c += 1;
            n = *c;
        });
        n
    };
    if method != Method::POST {
        return (
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            format!("{} answers POST only", shared.wire.name()),
        )
            .into_response();
    }
    if let Some(response) = shared.wire.reject(&request) {
        return response;
    }
    let script = shared.queue.lock().unwrap().pop_front();
    let responder = shared.responder.lock().unwrap().clone();
    let script = script
        .or_else(|| responder.map(|respond| respond(&request)))
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());
    match script.kind {
        Kind::Error(error) => shared.wire.error(&error),
        Kind::Stream(stream) => {
            let delay = stream.chunk_delay;
            let frames = shared.wire.frames(&request, number, stream);
            sse_response(frames, delay, shared.shutdown.subscribe())
        }
    }
}

/// Plays `frames` as a `text/event-stream` body, waiting `delay` before each event.
fn sse_response(
    frames: Vec<Frame>,
    delay: Option<Duration>,
    shutdown: watch::Receiver<bool>,
) -> Response {
    let stream = futures::stream::unfold(
        (VecDeque::from(frames), shutdown),
        move |(mut frames, mut shutdown)| async move {
            loop {
                match frames.pop_front()? {
                    Frame::Event { name, data } => {
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        let text = match name {
                            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
                            None => format!("data: {data}\n\n"),
                        };
                        return Some((Ok(Bytes::from(text)), (frames, shutdown)));
                    }
                    Frame::Hold(gate) => {
                        if !gate.pass(&mut shutdown).await {
                            frames.clear();
                            return Some((Err(cut_error()), (frames, shutdown)));
                        }
                    }
                    Frame::Cut => {
                        // An error from the body stream makes hyper abort the connection
                        // without the terminating chunk, which is what a real mid-stream
                        // disconnect looks like to the client. Hyper drops unflushed output on
                        // that error, so first return `Pending` once: hyper flushes the
                        // earlier chunks then.
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

fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "fake server: scripted connection drop",
    )
}

/// Adds `retry-after: SECONDS` to `response` when the script asks for it.
pub(crate) fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Splits `text` into up to three non-empty pieces on character boundaries.
pub(crate) fn split_fragments(text: &str) -> Vec<String> {
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
}
