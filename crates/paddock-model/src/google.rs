//! Google's Gemini API: `models/{model}:streamGenerateContent?alt=sse`, with function calling.
//!
//! The canonical conversation maps onto `user` / `model` contents of parts: assistant tool
//! calls become `functionCall` parts and tool results `functionResponse` parts of the
//! following user content. Gemini's calls carry no ids, so the adapter makes one for each call
//! it receives, and when rendering history it pairs responses with calls by name and position:
//! the responses of a turn are sent in the order of the calls that asked for them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use eventsource_stream::Event;
use reqwest::header::HeaderName;
use serde_json::{Map, Value, json};

use crate::http::{self, Endpoint, ErrorFormat};
use crate::{
    Item, Media, MediaSource, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream,
    ToolCall, ToolSpec, Usage,
};

/// Sent as the `thoughtSignature` of replayed function calls for models that require one
/// (Gemini 3). Paddock does not keep Gemini's signatures in its vendor-neutral history, and
/// this is the value Google documents for history that did not come from the model itself.
const REPLAYED_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// A client for the Gemini API at one base URL.
pub struct GoogleProvider {
    endpoint: Endpoint,
    base_url: reqwest::Url,
}

impl GoogleProvider {
    /// `base_url` ends with the API version, e.g.
    /// `https://generativelanguage.googleapis.com/v1beta`; each call goes to
    /// `{base_url}/models/{model}:streamGenerateContent?alt=sse`.
    ///
    /// `api_key` is sent as `x-goog-api-key`; `headers` are added to every request.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        headers: &BTreeMap<String, String>,
    ) -> Result<Self, ModelError> {
        let base_url = http::endpoint_url(base_url, "")?;
        if base_url.cannot_be_a_base() {
            return Err(ModelError::NotConfigured(format!(
                "base URL `{base_url}` cannot have paths appended"
            )));
        }
        let endpoint = Endpoint::new(
            "google",
            ErrorFormat {
                message: error_message,
                retry_after: body_retry_after,
            },
            api_key.map(|key| (HeaderName::from_static("x-goog-api-key"), key)),
            &[],
            headers,
        )?;
        Ok(Self { endpoint, base_url })
    }

    fn url(&self, model: &str) -> Result<reqwest::Url, ModelError> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| ModelError::NotConfigured("base URL cannot be a base".to_owned()))?
            .pop_if_empty()
            .push("models")
            .push(&format!("{model}:streamGenerateContent"));
        url.set_query(Some("alt=sse"));
        Ok(url)
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
impl ModelProvider for GoogleProvider {
    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ModelError> {
        let url = self.url(&request.model)?;
        let body = request_body(&request);
        tracing::debug!(
            %url,
            items = request.items.len(),
            tools = request.tools.len(),
            "starting gemini generation"
        );
        self.endpoint
            .stream(url, &body, Decoder::new(rand::random()))
            .await
    }
}

/// Builds the `GenerateContentRequest` JSON for `request`.
fn request_body(request: &ModelRequest) -> Value {
    let mut body = Map::new();
    let signatures = needs_thought_signatures(&request.model);
    body.insert(
        "contents".to_owned(),
        Value::Array(contents(&request.items, signatures)),
    );
    if !request.system.is_empty() {
        body.insert(
            "systemInstruction".to_owned(),
            json!({"parts": [{"text": request.system}]}),
        );
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request.tools.iter().map(declaration).collect();
        body.insert(
            "tools".to_owned(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(max) = request.max_output_tokens {
        body.insert(
            "generationConfig".to_owned(),
            json!({"maxOutputTokens": max}),
        );
    }
    Value::Object(body)
}

/// Gemini 3 models reject replayed function calls without a thought signature.
fn needs_thought_signatures(model: &str) -> bool {
    let model = model.strip_prefix("models/").unwrap_or(model);
    model.to_ascii_lowercase().starts_with("gemini-3")
}

/// A function declaration. The schema goes in `parametersJsonSchema`, which takes JSON Schema
/// as tools define it (the older `parameters` accepts only an OpenAPI subset).
fn declaration(tool: &ToolSpec) -> Value {
    let mut object = Map::new();
    object.insert("name".to_owned(), json!(tool.name));
    if !tool.description.is_empty() {
        object.insert("description".to_owned(), json!(tool.description));
    }
    if tool.parameters.is_object() {
        object.insert("parametersJsonSchema".to_owned(), tool.parameters.clone());
    }
    Value::Object(object)
}

/// One content being built.
struct Content {
    role: &'static str,
    parts: Vec<Value>,
    /// For the leading `functionResponse` parts, the position of the call each answers.
    answered: Vec<usize>,
}

/// Renders the canonical items as Gemini contents. Consecutive items of one role share a
/// content; the tool results answering a model turn are sent first in the user content that
/// follows it, in the order of that turn's calls (Gemini pairs them by position and name).
fn contents(items: &[Item], signatures: bool) -> Vec<Value> {
    let mut out: Vec<Content> = Vec::new();
    // The calls of the latest model turn: id → (position, name).
    let mut calls: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for item in items {
        match item {
            Item::User { content, media } => {
                for part in media {
                    push(&mut out, "user", media_part(part));
                }
                if !content.is_empty() {
                    push(&mut out, "user", json!({"text": content}));
                }
            }
            Item::Assistant { text, tool_calls } => {
                if text.is_empty() && tool_calls.is_empty() {
                    continue;
                }
                if out.last().is_none_or(|c| c.role != "model") {
                    calls.clear();
                }
                if !text.is_empty() {
                    push(&mut out, "model", json!({"text": text}));
                }
                for (i, call) in tool_calls.iter().enumerate() {
                    let args = if call.arguments.is_object() {
                        call.arguments.clone()
                    } else {
                        json!({})
                    };
                    let mut part = Map::new();
                    part.insert(
                        "functionCall".to_owned(),
                        json!({"name": call.name, "args": args}),
                    );
                    if signatures && i == 0 {
                        part.insert(
                            "thoughtSignature".to_owned(),
                            json!(REPLAYED_THOUGHT_SIGNATURE),
                        );
                    }
                    calls.insert(call.id.as_str(), (calls.len(), call.name.as_str()));
                    push(&mut out, "model", Value::Object(part));
                }
            }
            Item::ToolResult {
                call_id,
                name,
                content,
                is_error,
            } => {
                let (position, name) = calls
                    .get(call_id.as_str())
                    .copied()
                    .unwrap_or((usize::MAX, name.as_str()));
                let key = if *is_error { "error" } else { "output" };
                let part = json!({"functionResponse": {"name": name, "response": {key: content}}});
                if out.last().is_none_or(|c| c.role != "user") {
                    out.push(Content {
                        role: "user",
                        parts: Vec::new(),
                        answered: Vec::new(),
                    });
                }
                if let Some(content) = out.last_mut() {
                    // Among the responses, by the position of the call answered (results of
                    // unknown calls last, in arrival order); before any text.
                    let at = content.answered.partition_point(|&p| p <= position);
                    content.answered.insert(at, position);
                    content.parts.insert(at, part);
                }
            }
        }
    }
    out.into_iter()
        .map(|c| json!({"role": c.role, "parts": c.parts}))
        .collect()
}

/// One media part, images, audio and video alike: inline bytes as `inlineData`, a URL (a
/// Files API or `gs://` URI, or a public URL the model fetches) as `fileData`.
fn media_part(media: &Media) -> Value {
    match &media.source {
        MediaSource::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        MediaSource::Url { url, media_type } => {
            let mut file = Map::new();
            if let Some(media_type) = media_type {
                file.insert("mimeType".to_owned(), json!(media_type));
            }
            file.insert("fileUri".to_owned(), json!(url));
            json!({"fileData": file})
        }
    }
}

fn push(out: &mut Vec<Content>, role: &'static str, part: Value) {
    match out.last_mut() {
        Some(content) if content.role == role => content.parts.push(part),
        _ => out.push(Content {
            role,
            parts: vec![part],
            answered: Vec::new(),
        }),
    }
}

/// The `error` object of a Google error body (`{"error": …}`, or `[{"error": …}]`).
fn error_object(body: &str) -> Option<Value> {
    let json = serde_json::from_str::<Value>(body).ok()?;
    let json = match json {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    json.get("error").filter(|e| e.is_object()).cloned()
}

/// `{"error": {"code": 429, "message": "…", "status": "RESOURCE_EXHAUSTED"}}` becomes
/// `RESOURCE_EXHAUSTED: …`.
fn error_message(body: &str) -> Option<String> {
    if let Some(error) = error_object(body)
        && let Some(message) = error.get("message").and_then(Value::as_str)
    {
        return Some(match error.get("status").and_then(Value::as_str) {
            Some(status) => format!("{status}: {message}"),
            None => message.to_owned(),
        });
    }
    http::generic_error_message(body)
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail, e.g. `"37s"` or `"1.5s"`.
fn body_retry_after(body: &str) -> Option<Duration> {
    let error = error_object(body)?;
    error
        .get("details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|delay| delay.strip_suffix('s'))
        .and_then(|secs| secs.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Turns `GenerateContentResponse` chunks into canonical [`ModelEvent`]s.
struct Decoder {
    /// Makes the ids of this response's calls unique: `call_<nonce>_<n>`.
    nonce: u64,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

impl Decoder {
    fn new(nonce: u64) -> Self {
        Self {
            nonce,
            calls: Vec::new(),
            usage: None,
            finish_reason: None,
        }
    }

    fn chunk(&mut self, data: &str, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        let chunk = http::parse_json(data)?;
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let kind = error
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned();
            return Err(ModelError::StreamError {
                kind,
                status,
                message,
            });
        }
        if let Some(usage) = chunk.get("usageMetadata").filter(|u| u.is_object()) {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
            // Usage is cumulative on every chunk; the last one counts.
            self.usage = Some(Usage {
                input_tokens: count("promptTokenCount") + count("toolUsePromptTokenCount"),
                output_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
                cache_read_tokens: count("cachedContentTokenCount"),
                cache_write_tokens: 0,
            });
        }
        if let Some(reason) = chunk
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            return Err(ModelError::Refused(format!(
                "Gemini blocked the prompt (blockReason {reason})"
            )));
        }
        // Paddock asks for one candidate (`candidateCount` unset).
        let Some(candidate) = chunk
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts {
            // Thought summaries are not part of the answer.
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(text) = part.get("text").and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push_back(ModelEvent::TextDelta(text.to_owned()));
            }
            if let Some(call) = part.get("functionCall") {
                let name = call
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        ModelError::Protocol("a functionCall part has no name".to_owned())
                    })?
                    .to_owned();
                let arguments = http::object_arguments(
                    &name,
                    call.get("args").cloned().unwrap_or(Value::Null),
                )?;
                let id = match call.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => format!("call_{:016x}_{}", self.nonce, self.calls.len()),
                };
                self.calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        let reason = self.finish_reason.as_deref().unwrap_or("STOP");
        match reason {
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
            | "IMAGE_SAFETY" | "LANGUAGE" => {
                return Err(ModelError::Refused(format!(
                    "Gemini stopped the response (finishReason {reason})"
                )));
            }
            "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => {
                return Err(ModelError::Protocol(format!(
                    "Gemini could not make a valid function call (finishReason {reason})"
                )));
            }
            _ => {}
        }
        for call in std::mem::take(&mut self.calls) {
            out.push_back(ModelEvent::ToolCall(call));
        }
        if let Some(usage) = self.usage.take() {
            out.push_back(ModelEvent::Usage(usage));
        }
        out.push_back(ModelEvent::Finished);
        Ok(())
    }
}

impl http::Decoder for Decoder {
    fn event(&mut self, event: &Event, out: &mut VecDeque<ModelEvent>) -> Result<bool, ModelError> {
        // Gemini has no end-of-stream event: the response is complete when the connection
        // closes after a chunk with a `finishReason`.
        self.chunk(&event.data, out)?;
        Ok(false)
    }

    fn end(&mut self, out: &mut VecDeque<ModelEvent>) -> Result<(), ModelError> {
        if self.finish_reason.is_some() {
            self.finish(out)
        } else {
            Err(http::ended_early())
        }
    }
}
