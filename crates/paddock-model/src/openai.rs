//! OpenAI Chat Completions (streaming, tool calls), usable for any compatible endpoint.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error as _;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::{
    Item, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream, ToolCall, ToolSpec,
    Usage,
};

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the provider may stay silent (before the headers or between chunks). Generous
/// because a slow model can think for a while before its first token.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of an unparseable error body is quoted in a [`ModelError`].
const MAX_QUOTED_BODY: usize = 500;

/// A client for one Chat Completions endpoint.
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl OpenAiProvider {
    /// `base_url` ends with the API version (`…/v1`); `/chat/completions` is appended.
    ///
    /// `api_key` is sent as `Authorization: Bearer …`; `headers` are added to every request
    /// (they may override the authorization header, for vendors that want another scheme).
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        headers: &BTreeMap<String, String>,
    ) -> Result<Self, ModelError> {
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&url).map_err(|e| {
            ModelError::NotConfigured(format!("invalid base URL `{base_url}`: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ModelError::NotConfigured(format!(
                "base URL `{base_url}` must use http or https"
            )));
        }

        let mut header_map = HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ModelError::NotConfigured(
                    "the API key contains characters not allowed in an HTTP header".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            header_map.insert(AUTHORIZATION, value);
        }
        for (name, value) in headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ModelError::NotConfigured(format!("invalid HTTP header name `{name}`"))
            })?;
            let header_value = HeaderValue::from_str(value).map_err(|_| {
                ModelError::NotConfigured(format!("invalid value for HTTP header `{name}`"))
            })?;
            header_map.insert(header_name, header_value);
        }

        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| ModelError::NotConfigured(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            url,
            headers: header_map,
        })
    }
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiProvider {
    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ModelError> {
        let body = request_body(&request);
        tracing::debug!(
            url = %self.url,
            model = %request.model,
            items = request.items.len(),
            tools = request.tools.len(),
            "starting chat completion"
        );
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;

        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = error_message(&text)
                .or_else(|| status.canonical_reason().map(str::to_owned))
                .unwrap_or_else(|| "no error message".to_owned());
            tracing::warn!(status = status.as_u16(), %message, "chat completion failed");
            return Err(ModelError::Status {
                status: status.as_u16(),
                message,
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
            let text = response.text().await.unwrap_or_default();
            return Err(ModelError::Protocol(format!(
                "expected an event stream, got `{content_type}`: {}",
                truncate(&text)
            )));
        }

        let events = Box::pin(response.bytes_stream().eventsource());
        Ok(Box::pin(decode(events)))
    }
}

/// Builds the Chat Completions request JSON for `request`.
fn request_body(request: &ModelRequest) -> Value {
    let mut messages = Vec::with_capacity(request.items.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for item in &request.items {
        messages.push(match item {
            Item::User { content } => json!({"role": "user", "content": content}),
            Item::Assistant { text, tool_calls } => {
                let mut message = Map::new();
                message.insert("role".to_owned(), json!("assistant"));
                // OpenAI rejects an empty string next to tool calls but wants *some* content
                // on a plain assistant turn.
                let content = if text.is_empty() && !tool_calls.is_empty() {
                    Value::Null
                } else {
                    json!(text)
                };
                message.insert("content".to_owned(), content);
                if !tool_calls.is_empty() {
                    let calls: Vec<Value> = tool_calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {
                                    "name": call.name,
                                    "arguments": call.arguments.to_string(),
                                },
                            })
                        })
                        .collect();
                    message.insert("tool_calls".to_owned(), Value::Array(calls));
                }
                Value::Object(message)
            }
            // Chat Completions has no error flag on tool results; the content is what the
            // model sees, so it is passed through unchanged.
            Item::ToolResult {
                call_id, content, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        });
    }

    let mut body = Map::new();
    body.insert("model".to_owned(), json!(request.model));
    body.insert("messages".to_owned(), Value::Array(messages));
    body.insert("stream".to_owned(), json!(true));
    body.insert("stream_options".to_owned(), json!({"include_usage": true}));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request.tools.iter().map(tool_json).collect();
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(max) = request.max_output_tokens {
        // `max_tokens` rather than `max_completion_tokens`: deprecated at OpenAI for
        // reasoning models but the only one most compatible servers understand.
        body.insert("max_tokens".to_owned(), json!(max));
    }
    Value::Object(body)
}

fn tool_json(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// Pulls the human-readable message out of an error body: OpenAI's
/// `{"error": {"message": …}}`, the `{"error": "…"}` or `{"message": …}` some compatible servers
/// send, or else the (truncated) body itself.
fn error_message(body: &str) -> Option<String> {
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

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Describes a reqwest failure with its causes: reqwest's own message ("error sending
/// request") rarely says what went wrong.
fn transport_error(error: reqwest::Error) -> ModelError {
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
    tracing::warn!(%message, "chat completion transport error");
    ModelError::Transport(message)
}

/// A tool call whose fragments are still arriving.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns SSE events into canonical [`ModelEvent`]s.
struct Decoder {
    /// Tool calls by their `index` in the choice, assembled until the choice finishes.
    calls: BTreeMap<u64, PartialCall>,
    /// The latest usage seen; emitted once, just before `Finished`, because some compatible
    /// servers repeat (cumulative) usage on several chunks.
    usage: Option<Usage>,
    /// Whether the choice reported a `finish_reason`.
    finished_choice: bool,
}

impl Decoder {
    fn new() -> Self {
        Self {
            calls: BTreeMap::new(),
            usage: None,
            finished_choice: false,
        }
    }

    /// Handles one `data:` payload (other than `[DONE]`), appending events to `out`.
    fn chunk(&mut self, data: &str, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            ModelError::Protocol(format!(
                "stream chunk is not JSON ({e}): {}",
                truncate(data)
            ))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(ModelError::Protocol(format!(
                "provider reported an error mid-stream: {message}"
            )));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(Usage {
                input_tokens: count("prompt_tokens"),
                output_tokens: count("completion_tokens"),
            });
        }
        // Paddock always asks for one choice (`n` unset), so only the first is read.
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            for key in ["content", "refusal"] {
                if let Some(text) = delta.get(key).and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push_back(ModelEvent::TextDelta(text.to_owned()));
                }
            }
            if let Some(fragments) = delta.get("tool_calls").and_then(Value::as_array) {
                for fragment in fragments {
                    self.tool_fragment(fragment);
                }
            }
        }
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            self.finished_choice = true;
            self.flush_calls(out)?;
        }
        Ok(())
    }

    fn tool_fragment(&mut self, fragment: &Value) {
        let id = fragment
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let index = match fragment.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Some compatible servers leave out `index`: a new id starts a new call, anything
            // else continues the latest one.
            None => {
                let last = self.calls.last_key_value();
                match (id, last) {
                    (Some(id), Some((&k, call))) if call.id == id => k,
                    (None, Some((&k, _))) => k,
                    (_, Some((&k, _))) => k + 1,
                    (_, None) => 0,
                }
            }
        };
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id {
            call.id = id.to_owned();
        }
        if let Some(function) = fragment.get("function") {
            if let Some(name) = function.get("name").and_then(Value::as_str)
                && !name.is_empty()
            {
                call.name = name.to_owned();
            }
            match function.get("arguments") {
                Some(Value::String(piece)) => call.arguments.push_str(piece),
                // A few servers send the arguments as an object in one piece.
                Some(object @ Value::Object(_)) => call.arguments = object.to_string(),
                _ => {}
            }
        }
    }

    /// Emits every assembled tool call, in index order.
    fn flush_calls(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(ModelError::Protocol(format!(
                    "tool call #{index} has no function name"
                )));
            }
            let raw = call.arguments.trim();
            let arguments = if raw.is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_str::<Value>(raw).map_err(|e| {
                    ModelError::Protocol(format!(
                        "arguments of tool call `{}` are not valid JSON ({e}): {}",
                        call.name,
                        truncate(raw)
                    ))
                })?
            };
            let arguments = match arguments {
                Value::Null => Value::Object(Map::new()),
                object @ Value::Object(_) => object,
                other => {
                    return Err(ModelError::Protocol(format!(
                        "arguments of tool call `{}` are not a JSON object: {}",
                        call.name,
                        truncate(&other.to_string())
                    )));
                }
            };
            // Tool results are matched by id, so a server that omits it still needs one.
            let id = if call.id.is_empty() {
                format!("call_{index}")
            } else {
                call.id
            };
            out.push_back(ModelEvent::ToolCall(ToolCall {
                id,
                name: call.name,
                arguments,
            }));
        }
        Ok(())
    }

    /// Emits what is left at the end of a complete response.
    fn finish(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        self.flush_calls(out)?;
        if let Some(usage) = self.usage.take() {
            out.push_back(ModelEvent::Usage(usage));
        }
        out.push_back(ModelEvent::Finished);
        Ok(())
    }
}

struct DecodeState<S> {
    events: S,
    decoder: Decoder,
    pending: VecDeque<ModelEvent>,
    /// Set once nothing more is read from `events`.
    done: bool,
    /// Delivered after `pending`, so events decoded before a failure are not lost.
    error: Option<ModelError>,
}

/// Decodes an SSE stream of `chat.completion.chunk`s. The stream ends after `Finished` or after
/// the first error.
fn decode<S>(events: S) -> impl Stream<Item = Result<ModelEvent, ModelError>> + Send
where
    S: Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send + Unpin,
{
    let state = DecodeState {
        events,
        decoder: Decoder::new(),
        pending: VecDeque::new(),
        done: false,
        error: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.done {
                return state.error.take().map(|error| (Err(error), state));
            }
            let step = match state.events.next().await {
                Some(Ok(event)) if event.data.trim() == "[DONE]" => {
                    state.done = true;
                    state.decoder.finish(&mut state.pending)
                }
                Some(Ok(event)) => state.decoder.chunk(&event.data, &mut state.pending),
                Some(Err(EventStreamError::Transport(e))) => Err(transport_error(e)),
                Some(Err(EventStreamError::Utf8(e))) => Err(ModelError::Protocol(format!(
                    "stream is not valid UTF-8: {e}"
                ))),
                Some(Err(EventStreamError::Parser(e))) => Err(ModelError::Protocol(format!(
                    "stream is not valid server-sent events: {e}"
                ))),
                None if state.decoder.finished_choice => {
                    // The choice finished and the connection closed cleanly; only `[DONE]`
                    // is missing, which some compatible servers never send.
                    state.done = true;
                    state.decoder.finish(&mut state.pending)
                }
                None => Err(ModelError::Transport(
                    "the stream ended before the response was complete".to_owned(),
                )),
            };
            if let Err(error) = step {
                state.done = true;
                state.error = Some(error);
            }
        }
    })
}
