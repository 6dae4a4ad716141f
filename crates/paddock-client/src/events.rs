//! A deployment's event stream (spec §7): SSE framing parsed by `eventsource-stream`, resumed
//! with `Last-Event-ID` whenever the connection drops.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{BoxStream, Stream, StreamExt};
use paddock_protocol::EventType;
use paddock_protocol::ids::parse_event_id;
use reqwest::Method;
use reqwest::header::ACCEPT;
use serde_json::Value;

use crate::{Client, ClientError, seg};

/// Filters and starting point of `GET /v1/deployments/:dep/events` (spec §7.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Only events of this thread (`thread_id=`).
    pub thread_id: Option<String>,
    /// Only events of this run (`run_id=`).
    pub run_id: Option<String>,
    /// Only these event types (`types=a,b`); empty means all.
    pub types: Vec<String>,
    /// Replay retained events after this `evt_N`, sent as the `after=` query on the first
    /// connection. Reconnections always use `Last-Event-ID` instead.
    pub after: Option<String>,
    /// Replay retained events after this `evt_N`, sent as the `Last-Event-ID` header on the first
    /// connection (`after` wins on the server if both are given).
    pub last_event_id: Option<String>,
}

/// How an [`EventStream`] reconnects after its connection drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePolicy {
    /// Consecutive connection attempts that may fail with a transport error (refused, reset,
    /// timed out) before the stream yields that error and ends. A successful connection resets
    /// the count. Values below 1 count as 1.
    pub max_failed_attempts: u32,
    /// The wait before each reconnection attempt until the server sends a `retry:` value that
    /// reaches the client (see [`Client::events`]).
    pub default_retry: Duration,
    /// A connection that delivers no bytes at all (not even a `: ping`) for this long is treated
    /// as dropped. `None` waits forever. Paddock pings every 15 s.
    pub idle_timeout: Option<Duration>,
}

impl Default for ResumePolicy {
    /// Five attempts, 3 s apart (the spec's `retry: 3000`), and a 45 s idle limit.
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            default_retry: Duration::from_millis(3000),
            idle_timeout: Some(Duration::from_secs(45)),
        }
    }
}

/// One event from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` type, e.g. `run_status`. Unknown types are passed through.
    pub event: String,
    /// The `id:` (`evt_<n>`), or `None` for frames without one, such as `replay_truncated`.
    pub id: Option<String>,
    /// The `data:` JSON object.
    pub data: Value,
}

impl SseEvent {
    /// The `n` of `evt_<n>`, for comparing ids as integers (spec §1.5).
    pub fn seq(&self) -> Option<i64> {
        self.id.as_deref().and_then(parse_event_id)
    }

    /// The event type, if it is one this version of the protocol knows.
    pub fn kind(&self) -> Option<EventType> {
        EventType::parse(&self.event)
    }
}

/// The stream returned by [`Client::events`]: yields events in order across reconnections and
/// ends after yielding a terminal error.
///
/// Errors: [`ClientError::Api`] / [`ClientError::UnexpectedStatus`] when a (re)connection is
/// answered with a non-2xx status, and [`ClientError::Transport`] when
/// [`ResumePolicy::max_failed_attempts`] consecutive attempts failed; both end the stream. A
/// [`ClientError::Decode`] for an event whose `data` is not JSON does not end it.
pub struct EventStream {
    inner: BoxStream<'static, Result<SseEvent, ClientError>>,
    last_event_id: Option<String>,
}

impl EventStream {
    /// The id the stream would resume after: the last received event id, or the starting point
    /// given in [`EventsQuery`] if none has arrived yet.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<SseEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(SseEvent { id: Some(id), .. }))) = &poll {
            self.last_event_id = Some(id.clone());
        }
        poll
    }
}

impl Client {
    /// Opens `GET /v1/deployments/:dep/events` and returns a stream that resumes across dropped
    /// connections.
    ///
    /// The first connection is made before this returns, so events committed afterwards are
    /// never missed: open the stream, then send the message. If that connection is refused, the
    /// returned stream's first item is the error. When a connection ends or fails, the stream
    /// waits the retry delay and reconnects with `Last-Event-ID` set to the last received id (no
    /// `after=`), so nothing is skipped or repeated; events without an id do not move it.
    ///
    /// The retry delay is the server's `retry:` value when it arrives on a frame that carries an
    /// event, otherwise [`ResumePolicy::default_retry`]: `eventsource-stream` drops a frame that
    /// holds only `retry:` (like Paddock's first frame, which says 3000 ms anyway).
    pub async fn events(&self, deployment_id: &str, query: EventsQuery) -> EventStream {
        let cursor = query.after.clone().or_else(|| query.last_event_id.clone());
        let mut resumer = Resumer {
            client: self.clone(),
            path: format!("/v1/deployments/{}/events", seg(deployment_id)),
            query,
            policy: self.resume,
            retry: self.resume.default_retry,
            cursor: cursor.clone(),
            connected_once: false,
            frames: None,
            last_id_on_connection: None,
            pending_error: None,
            done: false,
        };
        if let Err(e) = resumer.connect().await {
            resumer.pending_error = Some(e);
        }
        let inner = futures::stream::unfold(resumer, |mut r| async move {
            let item = r.next().await?;
            Some((item, r))
        })
        .boxed();
        EventStream {
            inner,
            last_event_id: cursor,
        }
    }
}

/// Why a connection stopped delivering bytes.
#[derive(Debug)]
enum Interrupted {
    Transport(reqwest::Error),
    Idle(Duration),
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interrupted::Transport(e) => write!(f, "transport error: {e}"),
            Interrupted::Idle(d) => write!(f, "no bytes for {d:?}"),
        }
    }
}

/// The parsed frames of one connection.
type Frames = BoxStream<'static, Result<Event, EventStreamError<Interrupted>>>;

/// The state behind an [`EventStream`]: the current connection and where to resume.
struct Resumer {
    client: Client,
    path: String,
    query: EventsQuery,
    policy: ResumePolicy,
    /// The wait before a reconnection attempt.
    retry: Duration,
    /// The id to resume after.
    cursor: Option<String>,
    /// Whether any connection has been established (later ones send `Last-Event-ID`).
    connected_once: bool,
    frames: Option<Frames>,
    /// The last id seen on the current connection. `eventsource-stream` copies the previous id
    /// onto frames without an `id:` line; ids strictly increase, so a repeat means "no id".
    last_id_on_connection: Option<String>,
    /// The failure of the first connection, yielded as the first item.
    pending_error: Option<ClientError>,
    done: bool,
}

impl Resumer {
    /// The next event, reconnecting as needed; `None` once a terminal error has been yielded.
    async fn next(&mut self) -> Option<Result<SseEvent, ClientError>> {
        if let Some(e) = self.pending_error.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            if self.done {
                return None;
            }
            let Some(frames) = self.frames.as_mut() else {
                if let Err(e) = self.connect().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            match frames.next().await {
                Some(Ok(event)) => return Some(self.accept(event)),
                Some(Err(e)) => {
                    tracing::debug!(path = %self.path, error = %e, "event stream interrupted");
                    self.frames = None;
                }
                None => {
                    tracing::debug!(path = %self.path, "event stream ended by the server");
                    self.frames = None;
                }
            }
        }
    }

    /// Establishes a connection, retrying transport failures within the policy's budget.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let max = self.policy.max_failed_attempts.max(1);
        let mut failures = 0u32;
        loop {
            if self.connected_once || failures > 0 {
                tokio::time::sleep(self.retry).await;
            }
            match open(self.request(), self.policy.idle_timeout).await {
                Ok(frames) => {
                    self.frames = Some(frames);
                    self.connected_once = true;
                    self.last_id_on_connection = None;
                    return Ok(());
                }
                Err(ClientError::Transport(e)) => {
                    failures += 1;
                    if failures >= max {
                        return Err(ClientError::Transport(e));
                    }
                    tracing::debug!(path = %self.path, error = %e, failures, "event stream connect failed");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The request of the next connection attempt, with filters and resume point.
    fn request(&self) -> reqwest::RequestBuilder {
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = &self.query.thread_id {
            params.push(("thread_id", t));
        }
        if let Some(r) = &self.query.run_id {
            params.push(("run_id", r));
        }
        let types = self.query.types.join(",");
        if !types.is_empty() {
            params.push(("types", &types));
        }
        let mut req = self
            .client
            .raw(Method::GET, &self.path)
            .header(ACCEPT, "text/event-stream");
        if !self.connected_once {
            if let Some(after) = &self.query.after {
                params.push(("after", after));
            }
            if let Some(id) = &self.query.last_event_id {
                req = req.header("Last-Event-ID", id);
            }
        } else if let Some(id) = &self.cursor {
            req = req.header("Last-Event-ID", id);
        }
        req.query(&params)
    }

    /// Converts a parsed frame and advances the cursor if it carries a new id.
    fn accept(&mut self, event: Event) -> Result<SseEvent, ClientError> {
        if let Some(retry) = event.retry {
            self.retry = retry;
        }
        let id = (!event.id.is_empty()
            && self.last_id_on_connection.as_deref() != Some(event.id.as_str()))
        .then_some(event.id);
        if let Some(id) = &id {
            self.cursor = Some(id.clone());
            self.last_id_on_connection = Some(id.clone());
        }
        match serde_json::from_str(&event.data) {
            Ok(data) => Ok(SseEvent {
                event: event.event,
                id,
                data,
            }),
            Err(source) => Err(ClientError::Decode {
                status: 200,
                body: event.data,
                source,
            }),
        }
    }
}

/// One connection attempt: sends `req`, checks the status, and starts the frame parser.
async fn open(req: reqwest::RequestBuilder, idle: Option<Duration>) -> Result<Frames, ClientError> {
    let resp = req.send().await?;
    if !resp.status().is_success() {
        return Err(ClientError::from_response(resp).await);
    }
    Ok(guard_idle(resp.bytes_stream(), idle).eventsource().boxed())
}

/// Passes `bytes` through, ending with [`Interrupted::Idle`] if no chunk arrives within `idle`.
fn guard_idle<S, B>(
    bytes: S,
    idle: Option<Duration>,
) -> impl Stream<Item = Result<B, Interrupted>> + Send + 'static
where
    S: Stream<Item = reqwest::Result<B>> + Send + 'static,
    B: Send + 'static,
{
    futures::stream::unfold(Some(Box::pin(bytes)), move |state| async move {
        let mut bytes = state?;
        let next = match idle {
            Some(limit) => match tokio::time::timeout(limit, bytes.next()).await {
                Ok(next) => next,
                Err(_) => return Some((Err(Interrupted::Idle(limit)), None)),
            },
            None => bytes.next().await,
        };
        match next? {
            Ok(chunk) => Some((Ok(chunk), Some(bytes))),
            Err(e) => Some((Err(Interrupted::Transport(e)), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use paddock_protocol::ErrorCode;

    use super::*;

    /// What the fake server answers on one connection.
    #[derive(Clone)]
    enum Reply {
        /// These SSE chunks, then close (or hang if `hang`).
        Sse(Vec<&'static str>, bool),
        /// A status with a JSON body.
        Status(u16, &'static str),
    }

    /// `(Last-Event-ID, raw query)` of one connection.
    type Seen = (Option<String>, Option<String>);

    #[derive(Clone, Default)]
    struct Script {
        replies: Arc<Mutex<Vec<Reply>>>,
        /// `(Last-Event-ID, raw query)` of every connection.
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    async fn handler(
        State(script): State<Script>,
        headers: HeaderMap,
        RawQuery(query): RawQuery,
    ) -> Response {
        let last = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reply = {
            let mut seen = script.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.push((last, query));
            let replies = script.replies.lock().unwrap_or_else(|e| e.into_inner());
            replies
                .get(seen.len() - 1)
                .cloned()
                .unwrap_or(Reply::Status(500, "{}"))
        };
        match reply {
            Reply::Sse(chunks, hang) => {
                let body = futures::stream::iter(
                    chunks
                        .into_iter()
                        .map(|c| Ok::<_, std::io::Error>(c.to_owned())),
                );
                let body = if hang {
                    body.chain(futures::stream::pending()).boxed()
                } else {
                    body.boxed()
                };
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(body),
                )
                    .into_response()
            }
            Reply::Status(code, body) => (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [
                    ("content-type", "application/json"),
                    ("x-request-id", "req_test"),
                ],
                body,
            )
                .into_response(),
        }
    }

    async fn serve(replies: Vec<Reply>) -> (Client, Script) {
        let script = Script {
            replies: Arc::new(Mutex::new(replies)),
            ..Script::default()
        };
        let app = Router::new()
            .route("/v1/deployments/{dep}/events", get(handler))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(format!("http://{addr}"), Some("pdk_test".into()))
            .with_resume_policy(fast_policy());
        (client, script)
    }

    fn fast_policy() -> ResumePolicy {
        ResumePolicy {
            max_failed_attempts: 3,
            default_retry: Duration::from_millis(10),
            idle_timeout: Some(Duration::from_millis(300)),
        }
    }

    const NOT_FOUND: &str =
        r#"{"error":{"code":"not_found","message":"No deployment dep_1.","param":null}}"#;

    #[tokio::test]
    async fn resumes_with_last_event_id_and_ends_on_http_error() {
        let (client, script) = serve(vec![
            Reply::Sse(
                vec![
                    "retry: 3000\n\n",
                    "event: message\nid: evt_1\ndata: {\"n\":1}\n\n: ping\n\n",
                    "event: token\nid: evt_2\ndata: {\"n\":2}\n\n",
                ],
                false,
            ),
            Reply::Sse(
                vec![
                    "event: replay_truncated\ndata: {\"requested_after\":\"evt_2\",\"oldest_available\":\"evt_4\"}\n\n",
                    "event: run_status\nid: evt_5\ndata: {\"n\":5}\n\n",
                    "event: future_type\ndata: {\"n\":6}\n\n",
                ],
                false,
            ),
            Reply::Status(404, NOT_FOUND),
        ])
        .await;
        let query = EventsQuery {
            types: vec!["message".into(), "token".into()],
            after: Some("evt_0".into()),
            ..EventsQuery::default()
        };
        let mut stream = client.events("dep_1", query).await;
        let mut got = Vec::new();
        let mut error = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => got.push((ev.event, ev.id, ev.data["n"].clone())),
                Err(e) => error = Some(e),
            }
        }
        let ids: Vec<_> = got
            .iter()
            .map(|(e, id, _)| (e.as_str(), id.as_deref()))
            .collect();
        assert_eq!(
            ids,
            [
                ("message", Some("evt_1")),
                ("token", Some("evt_2")),
                ("replay_truncated", None),
                ("run_status", Some("evt_5")),
                ("future_type", None),
            ]
        );
        let error = error.unwrap();
        assert_eq!(error.code(), Some(ErrorCode::NotFound));
        assert_eq!(error.status(), Some(404));
        assert_eq!(error.request_id(), Some("req_test"));
        assert_eq!(stream.last_event_id(), Some("evt_5"));

        let seen = script.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (None, Some("types=message%2Ctoken&after=evt_0".into())),
                (Some("evt_2".into()), Some("types=message%2Ctoken".into())),
                (Some("evt_5".into()), Some("types=message%2Ctoken".into())),
            ]
        );
    }

    #[tokio::test]
    async fn an_idle_connection_is_replaced() {
        let (client, script) = serve(vec![
            Reply::Sse(
                vec!["retry: 3000\n\n", "event: token\nid: evt_7\ndata: {}\n\n"],
                true,
            ),
            Reply::Sse(vec!["event: token\nid: evt_8\ndata: {}\n\n"], true),
        ])
        .await;
        let query = EventsQuery {
            last_event_id: Some("evt_6".into()),
            ..EventsQuery::default()
        };
        let mut stream = client.events("dep_1", query).await;
        let a = stream.next().await.unwrap().unwrap();
        let b = stream.next().await.unwrap().unwrap();
        assert_eq!((a.seq(), b.seq()), (Some(7), Some(8)));
        assert_eq!(a.kind(), Some(EventType::Token));
        let seen = script.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [(Some("evt_6".into()), None), (Some("evt_7".into()), None)]
        );
    }

    #[tokio::test]
    async fn a_retry_on_an_event_frame_sets_the_reconnect_delay() {
        let (client, _script) = serve(vec![
            Reply::Sse(
                vec!["retry: 20\nevent: token\nid: evt_1\ndata: {}\n\n"],
                false,
            ),
            Reply::Sse(vec!["event: token\nid: evt_2\ndata: {}\n\n"], true),
        ])
        .await;
        let slow_default = ResumePolicy {
            default_retry: Duration::from_secs(30),
            ..fast_policy()
        };
        let mut stream = client
            .with_resume_policy(slow_default)
            .events("dep_1", EventsQuery::default())
            .await;
        let a = stream.next().await.unwrap().unwrap();
        let b = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((a.seq(), b.seq()), (Some(1), Some(2)));
    }

    #[tokio::test]
    async fn an_error_status_on_first_connect_is_the_first_item() {
        let (client, script) = serve(vec![Reply::Status(
            400,
            r#"{"error":{"code":"validation_error","message":"bad","param":"types"}}"#,
        )])
        .await;
        let mut stream = client.events("dep_1", EventsQuery::default()).await;
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::ValidationError));
        assert_eq!(err.param(), Some("types"));
        assert!(stream.next().await.is_none());
        assert_eq!(script.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_failure_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(format!("http://{addr}"), None).with_resume_policy(fast_policy());
        let mut stream = client.events("dep_1", EventsQuery::default()).await;
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err}");
        assert!(stream.next().await.is_none());
    }
}
