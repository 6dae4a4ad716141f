//! HTTP and server-sent-event plumbing shared by the remote providers: one client per
//! provider, error statuses turned into [`ModelError`]s (with the vendor's message and any
//! retry delay), and one SSE decoding loop driven by a vendor-specific [`Decoder`].

use std::collections::{BTreeMap, VecDeque};
use std::error::Error as _;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::{ModelError, ModelEvent, ModelStream};

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a provider may send nothing at all (no headers, no event, not even a keep-alive
/// comment) before the call fails with [`ModelError::IdleTimeout`], unless the provider is
/// configured otherwise (`idle_timeout_secs`). Generous because a reasoning model can think
/// for minutes before its first token, and some vendors send nothing meanwhile.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of an unparseable body is quoted in a [`ModelError`].
const MAX_QUOTED_BODY: usize = 500;

/// How a vendor words its error bodies.
pub(crate) struct ErrorFormat {
    /// The human-readable message of an error body, if one can be found.
    pub message: fn(&str) -> Option<String>,
    /// A retry delay stated in the body (Google's `RetryInfo`), if any.
    pub retry_after: fn(&str) -> Option<Duration>,
}

/// One provider's HTTP client with the headers every request carries.
pub(crate) struct Endpoint {
    client: reqwest::Client,
    headers: HeaderMap,
    /// Names the vendor in logs.
    vendor: &'static str,
    errors: ErrorFormat,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    idle_timeout: Duration,
}

impl Endpoint {
    /// `auth` is the header carrying the API key (`None` sends none); `fixed` are headers the
    /// vendor requires; `extra` are the operator's headers, which may override both.
    pub fn new(
        vendor: &'static str,
        errors: ErrorFormat,
        auth: Option<(HeaderName, String)>,
        fixed: &[(HeaderName, &'static str)],
        extra: &BTreeMap<String, String>,
    ) -> Result<Self, ModelError> {
        let mut headers = HeaderMap::new();
        for (name, value) in fixed {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
        if let Some((name, key)) = auth {
            let mut value = HeaderValue::from_str(&key).map_err(|_| {
                ModelError::NotConfigured(
                    "the API key contains characters not allowed in an HTTP header".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        for (name, value) in extra {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ModelError::NotConfigured(format!("invalid HTTP header name `{name}`"))
            })?;
            let header_value = HeaderValue::from_str(value).map_err(|_| {
                ModelError::NotConfigured(format!("invalid value for HTTP header `{name}`"))
            })?;
            headers.insert(header_name, header_value);
        }
        // No read timeout here: silence is timed by `idle_timeout`, which names itself in the
        // error instead of reqwest's generic "operation timed out".
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ModelError::NotConfigured(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            headers,
            vendor,
            errors,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// Sets how long the provider may send nothing before a call fails with
    /// [`ModelError::IdleTimeout`] (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle_timeout = idle;
    }

    /// POSTs `body` to `url` and returns its event stream decoded by `decoder`. An error
    /// status becomes [`ModelError::Status`] with the vendor's message and retry delay; a
    /// provider silent for the idle timeout, before its headers or mid-stream,
    /// [`ModelError::IdleTimeout`].
    pub async fn stream<D: Decoder + 'static>(
        &self,
        url: reqwest::Url,
        body: &Value,
        decoder: D,
    ) -> Result<ModelStream, ModelError> {
        let idle = self.idle_timeout;
        let send = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(body)
            .send();
        let response = tokio::time::timeout(idle, send)
            .await
            .map_err(|_| self.idle_error())?
            .map_err(transport_error)?;

        let status = response.status();
        if !status.is_success() {
            let header_delay = retry_after(response.headers());
            let text = tokio::time::timeout(idle, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = (self.errors.message)(&text)
                .or_else(|| status.canonical_reason().map(str::to_owned))
                .unwrap_or_else(|| "no error message".to_owned());
            let retry_after = header_delay.or_else(|| (self.errors.retry_after)(&text));
            tracing::warn!(
                vendor = self.vendor,
                status = status.as_u16(),
                %message,
                ?retry_after,
                "model call failed"
            );
            return Err(ModelError::Status {
                status: status.as_u16(),
                message,
                retry_after,
            });
        }

        // A compatible server that ignores `stream: true` (or a proxy answering with an HTML
        // page) would otherwise look like an empty, cut-off stream and be retried forever.
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !content_type.is_empty() && !content_type.starts_with("text/event-stream") {
            let text = tokio::time::timeout(idle, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(ModelError::Protocol(format!(
                "expected an event stream, got `{content_type}`: {}",
                truncate(&text)
            )));
        }

        let body = idle_limited(response.bytes_stream(), idle);
        let events = Box::pin(body.eventsource());
        Ok(Box::pin(decode(events, decoder, self.vendor)))
    }

    fn idle_error(&self) -> ModelError {
        tracing::warn!(
            vendor = self.vendor,
            idle = ?self.idle_timeout,
            "model call timed out waiting for the provider"
        );
        ModelError::IdleTimeout {
            idle: self.idle_timeout,
        }
    }
}

/// Why reading a response body stopped.
#[derive(Debug)]
enum BodyError {
    Http(reqwest::Error),
    /// Nothing arrived for this long.
    Idle(Duration),
}

/// `body` that fails with [`BodyError::Idle`] (and then ends) when no bytes arrive for `idle`.
/// Counted in bytes, not events, so a vendor's keep-alive comments keep a slow stream alive.
fn idle_limited<S>(
    body: S,
    idle: Duration,
) -> impl Stream<Item = Result<bytes::Bytes, BodyError>> + Send + Unpin
where
    S: Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin,
{
    Box::pin(futures::stream::unfold(
        Some(body),
        move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
                Ok(Some(Err(e))) => Some((Err(BodyError::Http(e)), Some(body))),
                Ok(None) => None,
                Err(_) => Some((Err(BodyError::Idle(idle)), None)),
            }
        },
    ))
}

/// Parses `base_url` (with `path` appended) as an http(s) URL.
pub(crate) fn endpoint_url(base_url: &str, path: &str) -> Result<reqwest::Url, ModelError> {
    let joined = format!("{}{path}", base_url.trim_end_matches('/'));
    let url = reqwest::Url::parse(&joined)
        .map_err(|e| ModelError::NotConfigured(format!("invalid base URL `{base_url}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ModelError::NotConfigured(format!(
            "base URL `{base_url}` must use http or https"
        )));
    }
    Ok(url)
}

/// The delay asked for by `retry-after-ms` (milliseconds, OpenAI) or `retry-after` (seconds;
/// the HTTP-date form is not used by model vendors and is ignored).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// Pulls a message out of an error body: `{"error": {"message": …}}` (OpenAI, Google,
/// Anthropic), the `{"error": "…"}` or `{"message": …}` some compatible servers send, or else
/// the (truncated) body itself.
pub(crate) fn generic_error_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<Value>(body) {
        let found = json
            .pointer("/error/message")
            .or_else(|| json.get("error").filter(|e| e.is_string()))
            .or_else(|| json.get("message"))
            .or_else(|| json.get("detail"))
            .and_then(Value::as_str);
        if let Some(message) = found {
            return Some(message.to_owned());
        }
    }
    Some(truncate(body))
}

/// For error formats without a retry delay in the body.
pub(crate) fn no_body_retry_after(_body: &str) -> Option<Duration> {
    None
}

/// Cuts `text` to a length fit for an error message.
pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parses one SSE `data` payload as JSON.
pub(crate) fn parse_json(data: &str) -> Result<Value, ModelError> {
    serde_json::from_str(data).map_err(|e| {
        ModelError::Protocol(format!(
            "stream chunk is not JSON ({e}): {}",
            truncate(data)
        ))
    })
}

/// The error of a stream that closed before the vendor said the response was complete.
pub(crate) fn ended_early() -> ModelError {
    ModelError::Transport("the stream ended before the response was complete".to_owned())
}

/// Parses the accumulated text of a streamed tool call's arguments: empty (or `null`) is an
/// empty object, anything else must be a JSON object.
pub(crate) fn parse_arguments(name: &str, raw: &str) -> Result<Value, ModelError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    let value = serde_json::from_str::<Value>(raw).map_err(|e| {
        ModelError::Protocol(format!(
            "arguments of tool call `{name}` are not valid JSON ({e}): {}",
            truncate(raw)
        ))
    })?;
    object_arguments(name, value)
}

/// Checks that tool arguments are a JSON object (`null` counts as an empty one).
pub(crate) fn object_arguments(name: &str, value: Value) -> Result<Value, ModelError> {
    match value {
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        object @ Value::Object(_) => Ok(object),
        other => Err(ModelError::Protocol(format!(
            "arguments of tool call `{name}` are not a JSON object: {}",
            truncate(&other.to_string())
        ))),
    }
}

/// Describes a reqwest failure with its causes: reqwest's own message ("error sending
/// request") rarely says what went wrong.
pub(crate) fn transport_error(error: reqwest::Error) -> ModelError {
    let mut message = if error.is_timeout() {
        format!("timed out: {error}")
    } else {
        error.to_string()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::warn!(%message, "model call transport error");
    ModelError::Transport(message)
}

/// Turns one vendor's server-sent events into canonical [`ModelEvent`]s.
pub(crate) trait Decoder: Send {
    /// Handles one event, appending what it yields to `out`. Returns `true` when the event
    /// completed the response (nothing more is read after it).
    fn event(&mut self, event: &Event, out: &mut VecDeque<ModelEvent>) -> Result<bool, ModelError>;

    /// The connection closed cleanly before an event completed the response: appends what is
    /// left if what arrived is nevertheless a complete response, or says why it is not.
    fn end(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError>;
}

struct DecodeState<S, D> {
    events: S,
    decoder: D,
    pending: VecDeque<ModelEvent>,
    /// Set once nothing more is read from `events`.
    done: bool,
    /// Delivered after `pending`, so events decoded before a failure are not lost.
    error: Option<ModelError>,
}

/// Decodes an SSE stream with `decoder`. The stream ends after the response completes or
/// after the first error.
fn decode<S, D>(
    events: S,
    decoder: D,
    vendor: &'static str,
) -> impl Stream<Item = Result<ModelEvent, ModelError>> + Send
where
    S: Stream<Item = Result<Event, EventStreamError<BodyError>>> + Send + Unpin,
    D: Decoder,
{
    let state = DecodeState {
        events,
        decoder,
        pending: VecDeque::new(),
        done: false,
        error: None,
    };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.done {
                return state.error.take().map(|error| (Err(error), state));
            }
            let step = match state.events.next().await {
                Some(Ok(event)) => match state.decoder.event(&event, &mut state.pending) {
                    Ok(complete) => {
                        state.done = complete;
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Some(Err(EventStreamError::Transport(BodyError::Http(e)))) => {
                    Err(transport_error(e))
                }
                Some(Err(EventStreamError::Transport(BodyError::Idle(idle)))) => {
                    tracing::warn!(vendor, ?idle, "model stream went silent");
                    Err(ModelError::IdleTimeout { idle })
                }
                Some(Err(EventStreamError::Utf8(e))) => Err(ModelError::Protocol(format!(
                    "stream is not valid UTF-8: {e}"
                ))),
                Some(Err(EventStreamError::Parser(e))) => Err(ModelError::Protocol(format!(
                    "stream is not valid server-sent events: {e}"
                ))),
                None => {
                    state.done = true;
                    state.decoder.end(&mut state.pending)
                }
            };
            if let Err(error) = step {
                state.done = true;
                state.error = Some(error);
            }
        }
    })
}
