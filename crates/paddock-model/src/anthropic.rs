//! Anthropic's Messages API (streaming, tool use, prompt caching).
//!
//! The canonical conversation maps onto alternating `user` / `assistant` messages of content
//! blocks: assistant tool calls become `tool_use` blocks, tool results become `tool_result`
//! blocks of the following user message (matched by `tool_use_id`). The system prompt and the
//! tool definitions are the stable prefix of every request in a thread, so both carry a
//! `cache_control` mark and repeated turns read them from Anthropic's prompt cache.

use std::collections::{BTreeMap, VecDeque};

use eventsource_stream::Event;
use reqwest::header::HeaderName;
use serde_json::{Map, Value, json};

use crate::catalog::{self, Vendor};
use crate::http::{self, Endpoint, ErrorFormat};
use crate::{
    Item, Media, MediaKind, MediaSource, ModelError, ModelEvent, ModelProvider, ModelRequest,
    ModelStream, ToolCall, ToolSpec, Usage,
};

/// The API version Paddock speaks (`anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when neither the request nor the model table gives one. Anthropic requires
/// the field and counts it against output-token rate limits up front, so the default stays
/// modest; operators raise it with `runs.max_output_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A client for one Messages API endpoint.
pub struct AnthropicProvider {
    endpoint: Endpoint,
    url: reqwest::Url,
}

impl AnthropicProvider {
    /// `base_url` is the API root, e.g. `https://api.anthropic.com`; `/v1/messages` is appended
    /// (only `/messages` if it already ends with `/v1`).
    ///
    /// `api_key` is sent as `x-api-key`; `headers` are added to every request and may override
    /// it or `anthropic-version` (e.g. to add `anthropic-beta`).
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        headers: &BTreeMap<String, String>,
    ) -> Result<Self, ModelError> {
        let path = if base_url.trim_end_matches('/').ends_with("/v1") {
            "/messages"
        } else {
            "/v1/messages"
        };
        let url = http::endpoint_url(base_url, path)?;
        let endpoint = Endpoint::new(
            "anthropic",
            ErrorFormat {
                message: error_message,
                retry_after: http::no_body_retry_after,
            },
            api_key.map(|key| (HeaderName::from_static("x-api-key"), key)),
            &[(HeaderName::from_static("anthropic-version"), API_VERSION)],
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
impl ModelProvider for AnthropicProvider {
    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ModelError> {
        let body = request_body(&request);
        tracing::debug!(
            url = %self.url,
            model = %request.model,
            items = request.items.len(),
            tools = request.tools.len(),
            "starting anthropic message"
        );
        self.endpoint
            .stream(self.url.clone(), &body, Decoder::default())
            .await
    }
}

/// The prompt-caching mark: cache everything up to and including this block.
fn cache_mark() -> Value {
    json!({"type": "ephemeral"})
}

/// Builds the Messages API request JSON for `request`.
fn request_body(request: &ModelRequest) -> Value {
    let max_tokens = request.max_output_tokens.unwrap_or_else(|| {
        catalog::lookup(Vendor::Anthropic, &request.model)
            .and_then(|info| info.max_output_tokens)
            .map_or(DEFAULT_MAX_TOKENS, |max| max.min(DEFAULT_MAX_TOKENS))
    });
    let mut body = Map::new();
    body.insert("model".to_owned(), json!(request.model));
    body.insert("max_tokens".to_owned(), json!(max_tokens));
    body.insert("stream".to_owned(), json!(true));
    if !request.system.is_empty() {
        body.insert(
            "system".to_owned(),
            json!([{"type": "text", "text": request.system, "cache_control": cache_mark()}]),
        );
    }
    body.insert(
        "messages".to_owned(),
        Value::Array(messages(&request.items)),
    );
    if !request.tools.is_empty() {
        let mut tools: Vec<Value> = request.tools.iter().map(tool_json).collect();
        if let Some(Value::Object(last)) = tools.last_mut() {
            last.insert("cache_control".to_owned(), cache_mark());
        }
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    Value::Object(body)
}

fn tool_json(tool: &ToolSpec) -> Value {
    let mut object = Map::new();
    object.insert("name".to_owned(), json!(tool.name));
    if !tool.description.is_empty() {
        object.insert("description".to_owned(), json!(tool.description));
    }
    let schema = if tool.parameters.is_object() {
        tool.parameters.clone()
    } else {
        json!({"type": "object", "properties": {}})
    };
    object.insert("input_schema".to_owned(), schema);
    Value::Object(object)
}

/// One message being built: a role and its content blocks.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Renders the canonical items as Messages API messages. Consecutive items of the same role
/// share one message (tool results after the assistant turn that asked for them, then any
/// user text), and within a user message the `tool_result` blocks come first, as the API
/// requires. Items with nothing to say (an empty answer) are left out.
fn messages(items: &[Item]) -> Vec<Value> {
    let mut turns: Vec<Turn> = Vec::new();
    let mut push = |role: &'static str, block: Value| {
        let is_result = block.get("type").and_then(Value::as_str) == Some("tool_result");
        match turns.last_mut() {
            Some(turn) if turn.role == role => {
                if is_result {
                    let at = turn
                        .blocks
                        .iter()
                        .take_while(|b| {
                            b.get("type").and_then(Value::as_str) == Some("tool_result")
                        })
                        .count();
                    turn.blocks.insert(at, block);
                } else {
                    turn.blocks.push(block);
                }
            }
            _ => turns.push(Turn {
                role,
                blocks: vec![block],
            }),
        }
    };
    for item in items {
        match item {
            Item::User { content, media } => {
                for part in media {
                    push("user", media_block(part));
                }
                if !content.is_empty() {
                    push("user", json!({"type": "text", "text": content}));
                }
            }
            Item::Assistant { text, tool_calls } => {
                if !text.is_empty() {
                    push("assistant", json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    let input = if call.arguments.is_object() {
                        call.arguments.clone()
                    } else {
                        json!({})
                    };
                    push(
                        "assistant",
                        json!({
                            "type": "tool_use",
                            "id": tool_use_id(&call.id),
                            "name": call.name,
                            "input": input,
                        }),
                    );
                }
            }
            Item::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => {
                let mut block = Map::new();
                block.insert("type".to_owned(), json!("tool_result"));
                block.insert("tool_use_id".to_owned(), json!(tool_use_id(call_id)));
                if !content.is_empty() {
                    block.insert("content".to_owned(), json!(content));
                }
                if *is_error {
                    block.insert("is_error".to_owned(), json!(true));
                }
                push("user", Value::Object(block));
            }
        }
    }
    turns
        .into_iter()
        .map(|turn| json!({"role": turn.role, "content": turn.blocks}))
        .collect()
}

/// One media block: images as `image` blocks (inline base64 or by URL). The Messages API takes
/// no audio or video, so those become a text block saying so.
fn media_block(media: &Media) -> Value {
    match (media.kind, &media.source) {
        (MediaKind::Image, MediaSource::Base64 { media_type, data }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        (MediaKind::Image, MediaSource::Url { url, .. }) => json!({
            "type": "image",
            "source": {"type": "url", "url": url},
        }),
        (kind @ (MediaKind::Audio | MediaKind::Video), _) => json!({
            "type": "text",
            "text": media.unsupported_note(&format!("this API does not take {kind}")),
        }),
    }
}

/// Anthropic accepts tool-use ids of `[A-Za-z0-9_-]` only; ids made by other vendors are
/// mapped onto that alphabet (the same way for a call and its result, so they still match).
fn tool_use_id(id: &str) -> String {
    let mapped: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if mapped.is_empty() {
        "call".to_owned()
    } else {
        mapped
    }
}

/// The HTTP status Anthropic documents for each error type.
fn error_status(kind: &str) -> Option<u16> {
    Some(match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    })
}

/// `{"type": "error", "error": {"type": "rate_limit_error", "message": "…"}}` becomes
/// `rate_limit_error: …`; other bodies are read as usual.
fn error_message(body: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<Value>(body)
        && let Some(message) = json.pointer("/error/message").and_then(Value::as_str)
    {
        return Some(match json.pointer("/error/type").and_then(Value::as_str) {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_owned(),
        });
    }
    http::generic_error_message(body)
}

/// A `tool_use` block whose input is still arriving.
struct PartialCall {
    index: u64,
    id: String,
    name: String,
    /// Input given whole in `content_block_start` (normally `{}`).
    initial: Value,
    /// Concatenated `input_json_delta` fragments.
    json: String,
}

/// Turns Messages API stream events into canonical [`ModelEvent`]s.
#[derive(Default)]
struct Decoder {
    /// `tool_use` blocks in progress, by content block index.
    open: BTreeMap<u64, PartialCall>,
    /// Tool-use blocks that have stopped, in order; emitted when the message stops, once the
    /// stop reason says whether their input is complete.
    done: Vec<PartialCall>,
    /// Token counts as last reported: uncached input, cache writes, cache reads, output.
    counts: [u64; 4],
    saw_usage: bool,
    stop_reason: Option<String>,
}

impl Decoder {
    fn handle(&mut self, data: &Value, out: &mut VecDeque<ModelEvent>) -> Result<bool, ModelError> {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage") {
                    self.read_usage(usage);
                }
            }
            "content_block_start" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str)
                            && !text.is_empty()
                        {
                            out.push_back(ModelEvent::TextDelta(text.to_owned()));
                        }
                    }
                    Some("tool_use") => {
                        let text = |key: &str| {
                            block
                                .get(key)
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned()
                        };
                        self.open.insert(
                            index,
                            PartialCall {
                                index,
                                id: text("id"),
                                name: text("name"),
                                initial: block.get("input").cloned().unwrap_or(Value::Null),
                                json: String::new(),
                            },
                        );
                    }
                    // Thinking, redacted thinking and server-side tool blocks are not part of
                    // the canonical conversation.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(text) = delta.get("text").and_then(Value::as_str)
                            && !text.is_empty()
                        {
                            out.push_back(ModelEvent::TextDelta(text.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let piece = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match self.open.get_mut(&index) {
                            Some(call) => call.json.push_str(piece),
                            None => {
                                return Err(ModelError::Protocol(format!(
                                    "input_json_delta for content block {index}, which is not an open tool_use block"
                                )));
                            }
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(call) = self.open.remove(&index) {
                    self.done.push(call);
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(usage) = data.get("usage") {
                    self.read_usage(usage);
                }
            }
            "message_stop" => {
                self.finish(out)?;
                return Ok(true);
            }
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let kind = error
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned();
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| error.to_string());
                tracing::warn!(%kind, %message, "anthropic stream error");
                return Err(ModelError::StreamError {
                    status: error_status(&kind),
                    kind,
                    message,
                });
            }
            // `ping`, and event types added after this adapter was written.
            _ => {}
        }
        Ok(false)
    }

    /// Reads a `usage` object: `message_start` has the input counts, `message_delta` the
    /// final (cumulative) output count and sometimes the input counts again.
    fn read_usage(&mut self, usage: &Value) {
        const KEYS: [&str; 4] = [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        ];
        for (slot, key) in self.counts.iter_mut().zip(KEYS) {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *slot = n;
                self.saw_usage = true;
            }
        }
    }

    fn finish(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        let reason = self.stop_reason.as_deref().unwrap_or("end_turn");
        if reason == "refusal" {
            return Err(ModelError::Refused(
                "the model stopped with stop_reason `refusal`".to_owned(),
            ));
        }
        let truncated = matches!(reason, "max_tokens" | "model_context_window_exceeded");
        let mut calls = std::mem::take(&mut self.done);
        // A block the stream never stopped is as incomplete as a truncated one.
        calls.extend(std::mem::take(&mut self.open).into_values());
        calls.sort_by_key(|call| call.index);
        for call in calls {
            if call.name.is_empty() {
                return Err(ModelError::Protocol(format!(
                    "tool_use block {} has no name",
                    call.index
                )));
            }
            let arguments = if call.json.trim().is_empty() {
                http::object_arguments(&call.name, call.initial)
            } else {
                http::parse_arguments(&call.name, &call.json)
            };
            let arguments = match arguments {
                Ok(arguments) => arguments,
                Err(_) if truncated => {
                    return Err(ModelError::Protocol(format!(
                        "the response stopped ({reason}) inside the input of tool call `{}`; raise the output token limit",
                        call.name
                    )));
                }
                Err(e) => return Err(e),
            };
            let id = if call.id.is_empty() {
                format!("toolu_{}", call.index)
            } else {
                call.id
            };
            out.push_back(ModelEvent::ToolCall(ToolCall {
                id,
                name: call.name,
                arguments,
            }));
        }
        if self.saw_usage {
            let [uncached, written, read, output] = self.counts;
            out.push_back(ModelEvent::Usage(Usage {
                input_tokens: uncached + written + read,
                output_tokens: output,
                cache_read_tokens: read,
                cache_write_tokens: written,
            }));
        }
        out.push_back(ModelEvent::Finished);
        Ok(())
    }
}

impl http::Decoder for Decoder {
    fn event(&mut self, event: &Event, out: &mut VecDeque<ModelEvent>) -> Result<bool, ModelError> {
        let data = http::parse_json(&event.data)?;
        self.handle(&data, out)
    }

    fn end(&mut self, _out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        // Without `message_stop` the message may be incomplete, even after a stop reason.
        Err(http::ended_early())
    }
}
