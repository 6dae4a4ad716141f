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

use std::ops::Deref;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake_server::{
    End, ErrorScript, FakeServer, Frame, RecordedRequest, Step, StreamScript, Wire,
    split_fragments, with_retry_after,
};
pub use crate::fake_server::{Gate, Script};

/// A running fake Chat Completions server on `127.0.0.1` with a random port, answering
/// `POST /v1/chat/completions` (and `/chat/completions`). All the scripting and recording
/// methods are those of [`FakeServer`].
///
/// Dropping it stops accepting connections and cuts any stream still waiting at a [`Gate`].
#[derive(Debug)]
pub struct FakeOpenAi(FakeServer);

impl FakeOpenAi {
    /// Binds `127.0.0.1:0` and serves on a background task; [`FakeServer::base_url`] is
    /// `http://127.0.0.1:PORT/v1`.
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start() -> FakeOpenAi {
        FakeOpenAi(FakeServer::start(Box::new(OpenAiWire)).await)
    }
}

impl Deref for FakeOpenAi {
    type Target = FakeServer;

    fn deref(&self) -> &FakeServer {
        &self.0
    }
}

struct OpenAiWire;

impl Wire for OpenAiWire {
    fn name(&self) -> &'static str {
        "fake OpenAI"
    }

    fn base_path(&self) -> &'static str {
        "/v1"
    }

    fn reject(&self, request: &RecordedRequest) -> Option<Response> {
        let path = request.path.split('?').next().unwrap_or("");
        if matches!(path, "/v1/chat/completions" | "/chat/completions") {
            None
        } else {
            Some(error_body(
                StatusCode::NOT_FOUND,
                &format!("Unknown path {path}"),
            ))
        }
    }

    fn frames(&self, request: &RecordedRequest, number: usize, stream: StreamScript) -> Vec<Frame> {
        let model = request
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("fake-model");
        frames(&format!("chatcmpl-fake-{number}"), model, stream)
    }

    fn error(&self, error: &ErrorScript) -> Response {
        let status =
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        with_retry_after(error_body(status, &error.message), error.retry_after)
    }
}

/// OpenAI's error body `{"error": {"message", "type", "param", "code"}}`.
fn error_body(status: StatusCode, message: &str) -> Response {
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

/// Expands a script into the exact sequence of SSE payloads (and pauses) to send.
fn frames(id: &str, model: &str, stream: StreamScript) -> Vec<Frame> {
    let chunk = |delta: Value, finish_reason: Value| {
        Frame::data(
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
    for step in stream.steps {
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
    match stream.end {
        End::Finish => {}
        End::Cut => {
            out.push(Frame::Cut);
            return out;
        }
        End::Fail { kind, message } => {
            out.push(Frame::data(
                json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                    .to_string(),
            ));
            return out;
        }
    }
    let finish = stream
        .stop_reason
        .unwrap_or_else(|| if tool_index > 0 { "tool_calls" } else { "stop" }.to_owned());
    out.push(chunk(json!({}), json!(finish)));
    if let Some((input, output)) = stream.usage {
        let cached = stream.cache.map_or(0, |(read, _)| read);
        out.push(Frame::data(
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
                    "prompt_tokens_details": {"cached_tokens": cached},
                },
            })
            .to_string(),
        ));
    }
    out.push(Frame::data("[DONE]"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn a_responder_answers_from_the_request_after_the_queue_and_slowly() {
        let fake = FakeOpenAi::start().await;
        fake.push(Script::new().text("queued"));
        fake.set_responder(|request| {
            let n = request.body["messages"].as_array().map_or(0, Vec::len);
            Script::new()
                .text(format!("saw {n}"))
                .chunk_delay(std::time::Duration::from_millis(30))
        });
        let client = reqwest::Client::new();
        let url = format!("{}/chat/completions", fake.base_url());
        let ask = |n: usize| {
            client
                .post(&url)
                .json(&json!({"messages": vec![json!({"role": "user"}); n]}))
                .send()
        };
        let first = ask(1).await.unwrap().text().await.unwrap();
        assert!(first.contains(r#""content":"queued""#), "{first}");
        let started = std::time::Instant::now();
        for n in [2, 2, 5] {
            let body = ask(n).await.unwrap().text().await.unwrap();
            assert!(body.contains(&format!(r#""content":"saw {n}""#)), "{body}");
        }
        // Each answer has at least four events (role, text, finish, [DONE]) of 30 ms each.
        assert!(started.elapsed() >= std::time::Duration::from_millis(3 * 4 * 30));
    }
}
