//! OpenAI Chat Completions (streaming, tool calls), usable for any compatible endpoint.

use std::collections::{BTreeMap, VecDeque};

use eventsource_stream::Event;
use reqwest::header::AUTHORIZATION;
use serde_json::{Map, Value, json};

use crate::http::{self, Endpoint, ErrorFormat};
use crate::{
    Item, Media, MediaKind, MediaSource, ModelError, ModelEvent, ModelProvider, ModelRequest,
    ModelStream, ToolCall, ToolSpec, Usage,
};

/// A client for one Chat Completions endpoint.
pub struct OpenAiProvider {
    endpoint: Endpoint,
    url: reqwest::Url,
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
        let url = http::endpoint_url(base_url, "/chat/completions")?;
        let endpoint = Endpoint::new(
            "openai",
            ErrorFormat {
                message: http::generic_error_message,
                retry_after: http::no_body_retry_after,
            },
            api_key.map(|key| (AUTHORIZATION, format!("Bearer {key}"))),
            &[],
            headers,
        )?;
        Ok(Self { endpoint, url })
    }

    /// Sets how long the provider may send nothing (no headers, no chunk, no keep-alive)
    /// before a call fails with the retryable [`ModelError::IdleTimeout`]; the default is
    /// [`crate::DEFAULT_IDLE_TIMEOUT`].
    pub fn with_idle_timeout(mut self, idle: std::time::Duration) -> Self {
        self.endpoint.set_idle_timeout(idle);
        self
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
        self.endpoint
            .stream(self.url.clone(), &body, Decoder::new())
            .await
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
            Item::User { content, media } => user_message(content, media),
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

/// A user message: plain text content, or with media an array of content parts (the media
/// first, then the text).
fn user_message(content: &str, media: &[Media]) -> Value {
    if media.is_empty() {
        return json!({"role": "user", "content": content});
    }
    let mut parts: Vec<Value> = media.iter().map(media_part).collect();
    if !content.is_empty() {
        parts.push(json!({"type": "text", "text": content}));
    }
    json!({"role": "user", "content": parts})
}

/// One media content part: images as `image_url` (a URL, or inline bytes as a `data:` URL),
/// WAV and MP3 audio given inline as `input_audio`. What Chat Completions cannot take (audio
/// by URL or in another format, video) becomes a text part saying so.
fn media_part(media: &Media) -> Value {
    let note = |why: &str| json!({"type": "text", "text": media.unsupported_note(why)});
    match (media.kind, &media.source) {
        (MediaKind::Image, MediaSource::Url { url, .. }) => {
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        (MediaKind::Image, MediaSource::Base64 { media_type, data }) => {
            json!({"type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{data}")}})
        }
        (MediaKind::Audio, MediaSource::Base64 { media_type, data }) => {
            match audio_format(media_type) {
                Some(format) => {
                    json!({"type": "input_audio", "input_audio": {"data": data, "format": format}})
                }
                None => note("this API takes audio only as WAV or MP3"),
            }
        }
        (MediaKind::Audio, MediaSource::Url { .. }) => {
            note("this API takes audio only inline, not by URL")
        }
        (MediaKind::Video, _) => note("this API does not take video"),
    }
}

/// The `input_audio` format of an audio media type, for the two Chat Completions accepts.
fn audio_format(media_type: &str) -> Option<&'static str> {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "audio/wav" | "audio/wave" | "audio/x-wav" | "audio/vnd.wave" => Some("wav"),
        "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg-3" => Some("mp3"),
        _ => None,
    }
}

/// An `error` object inside a stream: OpenAI's `{"message", "type", "code"}`, or the
/// `{"code": 502, "message"}` of OpenRouter and others, where `code` is an HTTP status.
fn stream_error(error: &Value) -> ModelError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    let kind = error
        .get("type")
        .or_else(|| error.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_owned();
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .or(match kind.as_str() {
            "server_error" => Some(500),
            "rate_limit_exceeded" | "rate_limit_error" => Some(429),
            _ => None,
        });
    ModelError::StreamError {
        kind,
        status,
        message,
    }
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
        let chunk = http::parse_json(data)?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(error));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
            let cached = usage
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            self.usage = Some(Usage {
                input_tokens: count("prompt_tokens"),
                output_tokens: count("completion_tokens"),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
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
            let arguments = http::parse_arguments(&call.name, &call.arguments)?;
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

impl http::Decoder for Decoder {
    fn event(&mut self, event: &Event, out: &mut VecDeque<ModelEvent>) -> Result<bool, ModelError> {
        if event.data.trim() == "[DONE]" {
            self.finish(out)?;
            return Ok(true);
        }
        self.chunk(&event.data, out)?;
        Ok(false)
    }

    fn end(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        if self.finished_choice {
            // The choice finished and the connection closed cleanly; only `[DONE]` is
            // missing, which some compatible servers never send.
            self.finish(out)
        } else {
            Err(http::ended_early())
        }
    }
}
