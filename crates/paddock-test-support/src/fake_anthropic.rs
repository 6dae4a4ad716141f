//! A fake Anthropic Messages API server for deterministic tests.
//!
//! It answers `POST /v1/messages` with the real streaming format: named events
//! `message_start` (with the input usage), `content_block_start` / `content_block_delta`
//! (`text_delta`, `input_json_delta` fragments) / `content_block_stop`, `ping`,
//! `message_delta` (stop reason, output usage) and `message_stop`; `event: error` mid-stream;
//! and Anthropic's error bodies (`overloaded_error` for 529, `rate_limit_error` for 429, with
//! `retry-after`). Like the real API it refuses requests without `x-api-key` (401) or
//! `anthropic-version` (400). Scripts are the shared [`Script`](crate::Script)s.
//!
//! ```no_run
//! # async fn demo() {
//! use paddock_test_support::{FakeAnthropic, Script};
//! use serde_json::json;
//!
//! let fake = FakeAnthropic::start().await;
//! fake.push(Script::error(529, "Overloaded"));
//! fake.push(Script::new().text("Let me check.").tool_call("toolu_1", "ls", json!({})));
//! // … point a provider at fake.base_url() …
//! # }
//! ```

use std::ops::Deref;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake_server::{
    End, ErrorScript, FakeServer, Frame, RecordedRequest, Step, StreamScript, Wire,
    split_fragments, with_retry_after,
};

/// A running fake Messages API server on `127.0.0.1` with a random port. The scripting and
/// recording methods are those of [`FakeServer`]; [`FakeServer::base_url`] is
/// `http://127.0.0.1:PORT` (the API root, as Anthropic's own base URL).
///
/// Dropping it stops accepting connections and cuts any stream still waiting at a
/// [`Gate`](crate::Gate).
#[derive(Debug)]
pub struct FakeAnthropic(FakeServer);

impl FakeAnthropic {
    /// Binds `127.0.0.1:0` and serves on a background task.
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start() -> FakeAnthropic {
        FakeAnthropic(FakeServer::start(Box::new(AnthropicWire)).await)
    }
}

impl Deref for FakeAnthropic {
    type Target = FakeServer;

    fn deref(&self) -> &FakeServer {
        &self.0
    }
}

struct AnthropicWire;

impl Wire for AnthropicWire {
    fn name(&self) -> &'static str {
        "fake Anthropic"
    }

    fn base_path(&self) -> &'static str {
        ""
    }

    fn reject(&self, request: &RecordedRequest) -> Option<Response> {
        let path = request.path.split('?').next().unwrap_or("");
        if path != "/v1/messages" {
            return Some(error_body(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("Not found: {path}"),
            ));
        }
        if !request.headers.contains_key("x-api-key") {
            return Some(error_body(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "x-api-key header is required",
            ));
        }
        if !request.headers.contains_key("anthropic-version") {
            return Some(error_body(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "anthropic-version: header is required",
            ));
        }
        None
    }

    fn frames(&self, request: &RecordedRequest, number: usize, stream: StreamScript) -> Vec<Frame> {
        let model = request
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("claude-fake");
        frames(&format!("msg_fake_{number}"), model, stream)
    }

    fn error(&self, error: &ErrorScript) -> Response {
        let status =
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let response = error_body(status, error_type(error.status), &error.message);
        with_retry_after(response, error.retry_after)
    }
}

/// The error type Anthropic uses for each HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}, "request_id"}`.
fn error_body(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_fake",
    });
    (status, axum::Json(body)).into_response()
}

/// The kind of the content block currently open.
#[derive(PartialEq)]
enum Open {
    None,
    Text,
}

/// Expands a script into the exact sequence of events (and pauses) to send.
fn frames(id: &str, model: &str, stream: StreamScript) -> Vec<Frame> {
    let event = |value: Value| {
        let name = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_owned();
        Frame::named(&name, value.to_string())
    };
    let (input, output) = stream.usage.unwrap_or((0, 0));
    let (read, written) = stream.cache.unwrap_or((0, 0));
    let mut out = vec![event(json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": input.saturating_sub(read + written),
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "output_tokens": 1,
            },
        },
    }))];
    let mut index = 0u64;
    let mut open = Open::None;
    let mut started = false;
    let mut any_tool = false;
    let mut start_block = |out: &mut Vec<Frame>, index: u64, block: Value| {
        out.push(event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        })));
        if !started {
            started = true;
            out.push(event(json!({"type": "ping"})));
        }
    };
    let stop_block = |out: &mut Vec<Frame>, index: u64| {
        out.push(event(json!({"type": "content_block_stop", "index": index})))
    };
    for step in stream.steps {
        match step {
            Step::Text(text) => {
                if open != Open::Text {
                    start_block(&mut out, index, json!({"type": "text", "text": ""}));
                    open = Open::Text;
                }
                out.push(event(json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": text},
                })));
            }
            Step::ToolCall {
                id: call_id,
                name,
                arguments,
            } => {
                if open == Open::Text {
                    stop_block(&mut out, index);
                    index += 1;
                    open = Open::None;
                }
                any_tool = true;
                start_block(
                    &mut out,
                    index,
                    json!({"type": "tool_use", "id": call_id, "name": name, "input": {}}),
                );
                // Anthropic's first input delta is often empty.
                let fragments = std::iter::once(String::new()).chain(split_fragments(&arguments));
                for fragment in fragments {
                    out.push(event(json!({
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    })));
                }
                stop_block(&mut out, index);
                index += 1;
            }
            Step::Hold(gate) => out.push(Frame::Hold(gate)),
        }
    }
    match stream.end {
        End::Finish => {}
        End::Cut => {
            out.push(Frame::Cut);
            return out;
        }
        End::Fail { kind, message } => {
            out.push(event(json!({
                "type": "error",
                "error": {"type": kind, "message": message},
            })));
            return out;
        }
    }
    if open == Open::Text {
        stop_block(&mut out, index);
    }
    let reason = stream
        .stop_reason
        .unwrap_or_else(|| if any_tool { "tool_use" } else { "end_turn" }.to_owned());
    out.push(event(json!({
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": null},
        "usage": {"output_tokens": output},
    })));
    out.push(event(json!({"type": "message_stop"})));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Script;

    async fn post(fake: &FakeAnthropic, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/messages", fake.base_url()))
            .json(&json!({"model": "claude-test", "messages": []}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    const AUTH: [(&str, &str); 2] = [("x-api-key", "k"), ("anthropic-version", "2023-06-01")];

    #[tokio::test]
    async fn streams_named_events_with_tool_input_fragments() {
        let fake = FakeAnthropic::start().await;
        fake.push(
            Script::new()
                .text("Hi")
                .tool_call("toolu_1", "echo", json!({"a": 1}))
                .usage(5, 7),
        );
        let body = post(&fake, &AUTH).await.text().await.unwrap();
        let names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert!(body.contains(r#""stop_reason":"tool_use""#), "{body}");
        assert!(body.contains(r#""input_tokens":5"#), "{body}");
        assert!(body.contains(r#""output_tokens":7"#), "{body}");
        assert_eq!(fake.requests()[0]["model"], "claude-test");
    }

    #[tokio::test]
    async fn refuses_requests_without_key_or_version() {
        let fake = FakeAnthropic::start().await;
        let response = post(&fake, &[("anthropic-version", "2023-06-01")]).await;
        assert_eq!(response.status().as_u16(), 401);
        let response = post(&fake, &[("x-api-key", "k")]).await;
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(fake.pending_scripts(), 0);
    }

    #[tokio::test]
    async fn overloaded_and_rate_limited_errors() {
        let fake = FakeAnthropic::start().await;
        fake.push(Script::error(529, "Overloaded"));
        fake.push(Script::error(429, "slow down").retry_after(7));
        let response = post(&fake, &AUTH).await;
        assert_eq!(response.status().as_u16(), 529);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "overloaded_error");
        let response = post(&fake, &AUTH).await;
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
}
