//! A fake Gemini API server for deterministic tests.
//!
//! It answers `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` with the real
//! streaming format: `data:` chunks of `GenerateContentResponse` (`candidates[0].content.parts`
//! with `text` or whole `functionCall`s, which carry no id; `usageMetadata` on every chunk,
//! complete on the last; `finishReason` on the last), no end marker (the connection closes);
//! an `{"error": …}` chunk mid-stream; and Google's error bodies (`RESOURCE_EXHAUSTED` with a
//! `RetryInfo` delay for 429). Like the real API it refuses requests without
//! `x-goog-api-key` (403) and answers only `alt=sse`. Scripts are the shared
//! [`Script`](crate::Script)s; the ids of scripted tool calls are not sent.

use std::ops::Deref;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake_server::{
    End, ErrorScript, FakeServer, Frame, RecordedRequest, Step, StreamScript, Wire,
};

/// A running fake Gemini API server on `127.0.0.1` with a random port. The scripting and
/// recording methods are those of [`FakeServer`]; [`FakeServer::base_url`] is
/// `http://127.0.0.1:PORT/v1beta`, and [`FakeServer::request_paths`] shows the model each
/// request named.
///
/// Dropping it stops accepting connections and cuts any stream still waiting at a
/// [`Gate`](crate::Gate).
#[derive(Debug)]
pub struct FakeGemini(FakeServer);

impl FakeGemini {
    /// Binds `127.0.0.1:0` and serves on a background task.
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start() -> FakeGemini {
        FakeGemini(FakeServer::start(Box::new(GeminiWire)).await)
    }
}

impl Deref for FakeGemini {
    type Target = FakeServer;

    fn deref(&self) -> &FakeServer {
        &self.0
    }
}

struct GeminiWire;

/// The model named by a `…/models/{model}:streamGenerateContent` path.
fn model_of(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or("");
    path.strip_prefix("/v1beta/models/")?
        .strip_suffix(":streamGenerateContent")
        .filter(|m| !m.is_empty() && !m.contains('/'))
}

impl Wire for GeminiWire {
    fn name(&self) -> &'static str {
        "fake Gemini"
    }

    fn base_path(&self) -> &'static str {
        "/v1beta"
    }

    fn reject(&self, request: &RecordedRequest) -> Option<Response> {
        if model_of(&request.path).is_none() {
            return Some(error_body(
                404,
                &format!("Requested entity was not found: {}", request.path),
                None,
            ));
        }
        let query = request.path.split_once('?').map_or("", |(_, q)| q);
        if !query.split('&').any(|pair| pair == "alt=sse") {
            return Some(error_body(400, "this fake only streams with alt=sse", None));
        }
        if !request.headers.contains_key("x-goog-api-key") {
            return Some(error_body(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                None,
            ));
        }
        None
    }

    fn frames(&self, request: &RecordedRequest, number: usize, stream: StreamScript) -> Vec<Frame> {
        let model = model_of(&request.path).unwrap_or("gemini-fake");
        frames(&format!("fake-response-{number}"), model, stream)
    }

    fn error(&self, error: &ErrorScript) -> Response {
        error_body(error.status, &error.message, error.retry_after)
    }
}

/// The `google.rpc.Code` name Google uses for each HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// The HTTP status of a `google.rpc.Code` name.
fn status_code(name: &str) -> u16 {
    [400, 401, 403, 404, 409, 429, 499, 500, 503, 504]
        .into_iter()
        .find(|s| status_name(*s) == name)
        .unwrap_or(500)
}

fn error_json(code: u16, message: &str, retry_after: Option<u64>) -> Value {
    let mut error = json!({"code": code, "message": message, "status": status_name(code)});
    if let Some(seconds) = retry_after {
        error["details"] = json!([
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")},
        ]);
    }
    json!({"error": error})
}

fn error_body(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(error_json(status, message, retry_after))).into_response()
}

/// Expands a script into the exact sequence of chunks (and pauses) to send.
fn frames(id: &str, model: &str, stream: StreamScript) -> Vec<Frame> {
    let (input, output) = stream.usage.unwrap_or((0, 0));
    let cached = stream.cache.map_or(0, |(read, _)| read);
    let chunk = |parts: Vec<Value>, finish: Option<&str>| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        // Intermediate chunks count only the prompt; the last one everything.
        let mut usage = json!({"promptTokenCount": input, "totalTokenCount": input});
        if let Some(reason) = finish {
            candidate["finishReason"] = json!(reason);
            usage = json!({
                "promptTokenCount": input,
                "candidatesTokenCount": output,
                "totalTokenCount": input + output,
            });
            if cached > 0 {
                usage["cachedContentTokenCount"] = json!(cached);
            }
        }
        Frame::data(
            json!({
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": id,
            })
            .to_string(),
        )
    };
    let mut out = Vec::new();
    let mut first_call = true;
    for step in stream.steps {
        match step {
            Step::Text(text) => out.push(chunk(vec![json!({"text": text})], None)),
            Step::ToolCall {
                name, arguments, ..
            } => {
                let args =
                    serde_json::from_str::<Value>(&arguments).unwrap_or(Value::String(arguments));
                let mut part = json!({"functionCall": {"name": name, "args": args}});
                // Thinking models sign their first function call of a turn.
                if first_call {
                    part["thoughtSignature"] = json!("ZmFrZS1zaWduYXR1cmU=");
                    first_call = false;
                }
                out.push(chunk(vec![part], None));
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
            let code = status_code(&kind);
            let mut error = error_json(code, &message, None);
            error["error"]["status"] = json!(kind);
            out.push(Frame::data(error.to_string()));
            return out;
        }
    }
    let reason = stream.stop_reason.unwrap_or_else(|| "STOP".to_owned());
    out.push(chunk(vec![json!({"text": ""})], Some(&reason)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Script;

    #[test]
    fn model_comes_from_the_path() {
        assert_eq!(
            model_of("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            Some("gemini-2.5-flash")
        );
        assert_eq!(model_of("/v1beta/models/:streamGenerateContent"), None);
        assert_eq!(model_of("/v1/chat/completions"), None);
    }

    #[tokio::test]
    async fn streams_chunks_and_records_the_path() {
        let fake = FakeGemini::start().await;
        fake.push(
            Script::new()
                .text("Hi")
                .tool_call("ignored", "echo", json!({"a": 1}))
                .usage(5, 7),
        );
        let url = format!(
            "{}/models/gemini-test:streamGenerateContent?alt=sse",
            fake.base_url()
        );
        let body = reqwest::Client::new()
            .post(url)
            .header("x-goog-api-key", "k")
            .json(&json!({"contents": []}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let chunks: Vec<Value> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks.len(), 3, "{body}");
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
            "Hi"
        );
        let call = &chunks[1]["candidates"][0]["content"]["parts"][0]["functionCall"];
        assert_eq!(call, &json!({"name": "echo", "args": {"a": 1}}));
        assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[2]["usageMetadata"]["candidatesTokenCount"], 7);
        assert_eq!(chunks[2]["modelVersion"], "gemini-test");
        assert_eq!(
            fake.request_paths(),
            ["/v1beta/models/gemini-test:streamGenerateContent?alt=sse"]
        );
    }

    #[tokio::test]
    async fn rate_limit_carries_retry_info() {
        let fake = FakeGemini::start().await;
        fake.push(Script::error(429, "Quota exceeded").retry_after(12));
        let url = format!(
            "{}/models/gemini-test:streamGenerateContent?alt=sse",
            fake.base_url()
        );
        let client = reqwest::Client::new();
        let response = client
            .post(&url)
            .header("x-goog-api-key", "k")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["error"]["details"][1]["retryDelay"], "12s");
        // Without a key: 403, and no script is used up.
        let response = client.post(&url).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403);
    }
}
