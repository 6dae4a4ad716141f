#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Gemini provider against the fake Gemini server: what it yields from each streamed
//! shape, and exactly what it sends.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;

use common::{collect, text, usage};
use futures::StreamExt;
use paddock_model::google::GoogleProvider;
use paddock_model::{
    Item, Media, MediaKind, ModelError, ModelEvent, ModelProvider, ModelRequest, ToolCall,
    ToolSpec, Usage,
};
use paddock_test_support::{FakeGemini, Gate, Script};
use serde_json::{Value, json};

fn provider(fake: &FakeGemini) -> GoogleProvider {
    GoogleProvider::new(
        &fake.base_url(),
        Some("gm-test".to_owned()),
        &BTreeMap::new(),
    )
    .unwrap()
}

fn request(text: &str) -> ModelRequest {
    common::request_to("gemini-test", text)
}

async fn run(fake: &FakeGemini, script: Script) -> (Vec<ModelEvent>, Option<ModelError>) {
    fake.push(script);
    let stream = provider(fake).stream(request("hi")).await.unwrap();
    collect(stream).await
}

/// The calls among `events`.
fn calls(events: &[ModelEvent]) -> Vec<ToolCall> {
    events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::ToolCall(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn streams_text_then_the_last_usage_and_finish() {
    let fake = FakeGemini::start().await;
    let (events, error) = run(&fake, Script::new().text("Hel").text("lo!").usage(25, 9)).await;
    assert!(error.is_none(), "{error:?}");
    // Every chunk carries usage; only the final, complete count is reported.
    assert_eq!(
        events,
        vec![text("Hel"), text("lo!"), usage(25, 9), ModelEvent::Finished]
    );
}

#[tokio::test]
async fn deltas_arrive_while_the_model_is_still_generating() {
    let fake = FakeGemini::start().await;
    let gate = Gate::new();
    fake.push(Script::new().text("first").hold(&gate).text("second"));
    let mut stream = provider(&fake).stream(request("hi")).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), text("first"));
    gate.reached().await;
    gate.open();
    let (rest, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        rest,
        vec![text("second"), usage(0, 0), ModelEvent::Finished]
    );
}

#[tokio::test]
async fn function_calls_get_unique_ids() {
    let fake = FakeGemini::start().await;
    let script = Script::new()
        .text("Checking.")
        .tool_call("ignored", "get_weather", json!({"city": "Paris"}))
        .tool_call("ignored", "get_weather", json!({"city": "Rome"}));
    let (events, error) = run(&fake, script.clone()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events[0], text("Checking."));
    assert_eq!(events.last(), Some(&ModelEvent::Finished));
    let first = calls(&events);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].name, "get_weather");
    assert_eq!(first[0].arguments, json!({"city": "Paris"}));
    assert_eq!(first[1].arguments, json!({"city": "Rome"}));
    assert_ne!(first[0].id, first[1].id);
    for call in &first {
        assert!(
            call.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{}",
            call.id
        );
    }
    // Another response's calls never reuse an id (the store keeps ids unique).
    let (events, _) = run(&fake, script).await;
    let second = calls(&events);
    assert!(second.iter().all(|c| !first.iter().any(|f| f.id == c.id)));
}

#[tokio::test]
async fn arguments_that_are_not_an_object_are_a_protocol_error() {
    let fake = FakeGemini::start().await;
    let (_, error) = run(
        &fake,
        Script::new().tool_call_raw("x", "write_file", "not json"),
    )
    .await;
    match error {
        Some(error @ ModelError::Protocol(_)) => {
            assert!(error.to_string().contains("write_file"), "{error}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn cached_tokens_are_counted() {
    let fake = FakeGemini::start().await;
    let (events, error) = run(
        &fake,
        Script::new().text("Hi").usage(1200, 5).cache_usage(1000, 0),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events[1],
        ModelEvent::Usage(Usage {
            input_tokens: 1200,
            output_tokens: 5,
            cache_read_tokens: 1000,
            cache_write_tokens: 0,
        })
    );
}

#[tokio::test]
async fn max_tokens_finishes_normally_and_safety_is_a_refusal() {
    let fake = FakeGemini::start().await;
    let (events, error) = run(&fake, Script::new().text("cut").stop_reason("MAX_TOKENS")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.last(), Some(&ModelEvent::Finished));

    let (_, error) = run(&fake, Script::new().stop_reason("SAFETY")).await;
    match error {
        Some(error @ ModelError::Refused(_)) => {
            assert!(!error.is_retryable());
            assert!(error.to_string().contains("SAFETY"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let (_, error) = run(&fake, Script::new().stop_reason("MALFORMED_FUNCTION_CALL")).await;
    assert!(
        matches!(error, Some(ModelError::Protocol(ref m)) if m.contains("MALFORMED_FUNCTION_CALL")),
        "{error:?}"
    );
}

#[tokio::test]
async fn error_chunk_mid_stream_is_named_and_retryable_when_transient() {
    let fake = FakeGemini::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("par")
            .fail("UNAVAILABLE", "The model is overloaded."),
    )
    .await;
    assert_eq!(events, vec![text("par")]);
    let error = error.unwrap();
    assert!(error.is_retryable(), "{error:?}");
    assert!(error.to_string().contains("UNAVAILABLE"), "{error}");

    let (_, error) = run(&fake, Script::new().fail("INVALID_ARGUMENT", "bad part")).await;
    assert!(!error.unwrap().is_retryable());
}

#[tokio::test]
async fn rate_limit_surfaces_the_retry_info_delay() {
    let fake = FakeGemini::start().await;
    fake.push(Script::error(429, "Quota exceeded for metric").retry_after(37));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 429 must fail the call");
    };
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(37)));
    match error {
        ModelError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(message, "RESOURCE_EXHAUSTED: Quota exceeded for metric");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_request_and_missing_key_are_final() {
    let fake = FakeGemini::start().await;
    fake.push(Script::error(400, "Invalid JSON payload"));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 400 must fail the call");
    };
    assert!(!error.is_retryable());

    let keyless = GoogleProvider::new(&fake.base_url(), None, &BTreeMap::new()).unwrap();
    let Err(error) = keyless.stream(request("hi")).await else {
        panic!("no key must fail the call");
    };
    assert!(
        matches!(error, ModelError::Status { status: 403, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("PERMISSION_DENIED"), "{error}");
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error() {
    let fake = FakeGemini::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("par")
            .tool_call("x", "read_file", json!({"path": "a"}))
            .cut(),
    )
    .await;
    // Calls are only emitted once the response is known to be complete.
    assert_eq!(events, vec![text("par")]);
    assert!(matches!(error, Some(ModelError::Transport(_))), "{error:?}");
}

fn weather_call(id: &str, city: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: "get_weather".to_owned(),
        arguments: json!({"city": city}),
    }
}

fn result(id: &str, name: &str, content: &str, is_error: bool) -> Item {
    Item::ToolResult {
        call_id: id.to_owned(),
        name: name.to_owned(),
        content: content.to_owned(),
        is_error,
    }
}

fn history() -> Vec<Item> {
    vec![
        Item::user("Weather in Paris and Rome, and the time?".to_owned()),
        Item::Assistant {
            text: "Checking.".to_owned(),
            tool_calls: vec![
                weather_call("toolu_A", "Paris"),
                weather_call("toolu_B", "Rome"),
                ToolCall {
                    id: "toolu_C".to_owned(),
                    name: "get_time".to_owned(),
                    arguments: json!({}),
                },
            ],
        },
        // Completion order differs from call order; Gemini pairs by position.
        result("toolu_C", "get_time", "12:00", false),
        result("toolu_B", "get_weather", "service unavailable", true),
        result("toolu_A", "get_weather", "sunny", false),
        Item::Assistant {
            text: "Paris is sunny.".to_owned(),
            tool_calls: Vec::new(),
        },
        Item::user("Thanks".to_owned()),
    ]
}

#[tokio::test]
async fn maps_the_canonical_request_to_generate_content() {
    let fake = FakeGemini::start().await;
    let headers = BTreeMap::from([("x-goog-user-project".to_owned(), "proj".to_owned())]);
    let base_url = format!("{}/", fake.base_url());
    let provider = GoogleProvider::new(&base_url, Some("gm-test".to_owned()), &headers).unwrap();
    let request = ModelRequest {
        model: "gemini-2.5-flash".to_owned(),
        system: "You are Paddock.".to_owned(),
        items: history(),
        tools: vec![ToolSpec {
            name: "get_weather".to_owned(),
            description: "Current weather for a city.".to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": false,
            }),
        }],
        max_output_tokens: Some(256),
    };
    let (_, error) = collect(provider.stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");

    let recorded = fake.recorded();
    assert_eq!(
        recorded[0].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        recorded[0].body,
        json!({
            "systemInstruction": {"parts": [{"text": "You are Paddock."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome, and the time?"}]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "service unavailable"}}},
                    {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                ]},
                {"role": "model", "parts": [{"text": "Paris is sunny."}]},
                {"role": "user", "parts": [{"text": "Thanks"}]},
            ],
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parametersJsonSchema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": false,
                },
            }]}],
            "generationConfig": {"maxOutputTokens": 256},
        })
    );
    let headers = &recorded[0].headers;
    assert_eq!(headers["x-goog-api-key"], "gm-test");
    assert_eq!(headers["x-goog-user-project"], "proj");
    assert!(!headers.contains_key("authorization"));
}

#[tokio::test]
async fn gemini_3_replays_calls_with_a_thought_signature() {
    let fake = FakeGemini::start().await;
    let mut request = request("x");
    request.model = "gemini-3-pro-preview".to_owned();
    request.items = history();
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    let body = &fake.requests()[0];
    let parts = body["contents"][1]["parts"].as_array().unwrap();
    let signatures: Vec<&Value> = parts.iter().map(|p| &p["thoughtSignature"]).collect();
    assert_eq!(
        signatures,
        [
            &Value::Null,
            &json!("skip_thought_signature_validator"),
            &Value::Null,
            &Value::Null
        ]
    );
}

#[tokio::test]
async fn omits_empty_system_tools_and_limit() {
    let fake = FakeGemini::start().await;
    let mut request = request("hi");
    request.system = String::new();
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        fake.requests()[0],
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
}

#[tokio::test]
async fn a_model_name_with_the_models_prefix_is_not_doubled() {
    let fake = FakeGemini::start().await;
    let mut request = request("hi");
    request.model = "models/gemini-test".to_owned();
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        fake.request_paths(),
        ["/v1beta/models/gemini-test:streamGenerateContent?alt=sse"]
    );
}

#[tokio::test]
async fn sends_images_audio_and_video_as_inline_data_or_file_data() {
    let fake = FakeGemini::start().await;
    let mut request = request("");
    request.items = vec![Item::User {
        content: "Describe these.".to_owned(),
        media: vec![
            Media::base64(MediaKind::Image, "image/png", "iVBORw0KGgo="),
            Media::base64(MediaKind::Audio, "audio/mp3", "SUQz"),
            Media::base64(MediaKind::Video, "video/mp4", "AAAAIGZ0eXA="),
            Media::url(
                MediaKind::Video,
                "https://generativelanguage.googleapis.com/v1beta/files/abc123",
            )
            .with_media_type("video/mp4"),
            Media::url(MediaKind::Image, "gs://bucket/cat.jpg"),
        ],
    }];
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        fake.requests()[0]["contents"],
        json!([{"role": "user", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
            {"inlineData": {"mimeType": "video/mp4", "data": "AAAAIGZ0eXA="}},
            {"fileData": {"mimeType": "video/mp4", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
            {"fileData": {"fileUri": "gs://bucket/cat.jpg"}},
            {"text": "Describe these."},
        ]}])
    );
}

#[tokio::test]
async fn an_idle_stream_times_out_retryably() {
    let fake = FakeGemini::start().await;
    let gate = Gate::new();
    fake.push(Script::new().text("Hel").hold(&gate).text("lo"));
    let provider = provider(&fake).with_idle_timeout(Duration::from_millis(300));
    let (events, error) = collect(provider.stream(request("hi")).await.unwrap()).await;
    assert_eq!(events, vec![ModelEvent::TextDelta("Hel".to_owned())]);
    let error = error.expect("an idle timeout");
    assert!(
        matches!(error, ModelError::IdleTimeout { idle } if idle == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(error.is_retryable());
}
