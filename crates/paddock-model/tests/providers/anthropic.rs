#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Anthropic Messages API provider against the fake Anthropic server: what it yields from
//! each streamed shape, and exactly what it sends.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;

use common::{collect, text, usage};
use futures::StreamExt;
use paddock_model::anthropic::AnthropicProvider;
use paddock_model::{
    Item, Media, MediaKind, ModelError, ModelEvent, ModelProvider, ModelRequest, ToolCall,
    ToolSpec, Usage,
};
use paddock_test_support::{FakeAnthropic, Gate, Script};
use serde_json::json;

fn provider(fake: &FakeAnthropic) -> AnthropicProvider {
    AnthropicProvider::new(
        &fake.base_url(),
        Some("sk-ant-test".to_owned()),
        &BTreeMap::new(),
    )
    .unwrap()
}

fn request(text: &str) -> ModelRequest {
    common::request_to("claude-test", text)
}

async fn run(fake: &FakeAnthropic, script: Script) -> (Vec<ModelEvent>, Option<ModelError>) {
    fake.push(script);
    let stream = provider(fake).stream(request("hi")).await.unwrap();
    collect(stream).await
}

#[tokio::test]
async fn streams_text_deltas_then_usage_and_finish() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(&fake, Script::new().text("Hel").text("lo!").usage(25, 9)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![text("Hel"), text("lo!"), usage(25, 9), ModelEvent::Finished]
    );
}

#[tokio::test]
async fn deltas_arrive_while_the_model_is_still_generating() {
    let fake = FakeAnthropic::start().await;
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
async fn assembles_tool_input_from_json_fragments() {
    let fake = FakeAnthropic::start().await;
    let args = json!({"path": "notes/todo.md", "lines": [1, 20], "note": "Zürich ☃"});
    let (events, error) = run(
        &fake,
        Script::new()
            .text("Let me look.")
            .tool_call("toolu_01A", "read_file", args.clone())
            .tool_call("toolu_01B", "list_files", json!({}))
            .usage(100, 40),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            text("Let me look."),
            ModelEvent::ToolCall(ToolCall {
                id: "toolu_01A".to_owned(),
                name: "read_file".to_owned(),
                arguments: args,
            }),
            ModelEvent::ToolCall(ToolCall {
                id: "toolu_01B".to_owned(),
                name: "list_files".to_owned(),
                arguments: json!({}),
            }),
            usage(100, 40),
            ModelEvent::Finished,
        ]
    );
}

#[tokio::test]
async fn empty_tool_input_is_an_empty_object() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(&fake, Script::new().tool_call_raw("toolu_1", "list", "")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events[0],
        ModelEvent::ToolCall(ToolCall {
            id: "toolu_1".to_owned(),
            name: "list".to_owned(),
            arguments: json!({}),
        })
    );
}

#[tokio::test]
async fn invalid_tool_input_is_a_protocol_error_naming_the_tool() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(
        &fake,
        Script::new().tool_call_raw("toolu_1", "write_file", "{\"path\": \"a.txt\", "),
    )
    .await;
    assert!(!events.contains(&ModelEvent::Finished));
    match error {
        Some(error @ ModelError::Protocol(_)) => {
            assert!(error.to_string().contains("write_file"), "{error}");
            assert!(!error.is_retryable());
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn max_tokens_inside_a_tool_call_says_so() {
    let fake = FakeAnthropic::start().await;
    let (_, error) = run(
        &fake,
        Script::new()
            .tool_call_raw("toolu_1", "write_file", "{\"path\": \"a.txt\", \"cont")
            .stop_reason("max_tokens"),
    )
    .await;
    let message = error.unwrap().to_string();
    assert!(
        message.contains("max_tokens") && message.contains("write_file"),
        "{message}"
    );
}

#[tokio::test]
async fn max_tokens_after_text_finishes_normally() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("A long answer that was cut")
            .stop_reason("max_tokens"),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.last(), Some(&ModelEvent::Finished));
}

#[tokio::test]
async fn refusal_stop_reason_is_a_final_error() {
    let fake = FakeAnthropic::start().await;
    let (_, error) = run(&fake, Script::new().text("I").stop_reason("refusal")).await;
    match error {
        Some(error @ ModelError::Refused(_)) => assert!(!error.is_retryable()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn usage_counts_cache_reads_and_writes_as_input() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("Hi")
            .usage(1200, 5)
            .cache_usage(1000, 150),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events[1],
        ModelEvent::Usage(Usage {
            input_tokens: 1200,
            output_tokens: 5,
            cache_read_tokens: 1000,
            cache_write_tokens: 150,
        })
    );
}

#[tokio::test]
async fn overloaded_error_mid_stream_is_retryable_and_named() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("par")
            .fail("overloaded_error", "Overloaded"),
    )
    .await;
    assert_eq!(events, vec![text("par")]);
    let error = error.unwrap();
    assert!(error.is_retryable(), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("overloaded_error") && message.contains("Overloaded"),
        "{message}"
    );
    match error {
        ModelError::StreamError { kind, status, .. } => {
            assert_eq!(kind, "overloaded_error");
            assert_eq!(status, Some(529));
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_request_error_mid_stream_is_final() {
    let fake = FakeAnthropic::start().await;
    let (_, error) = run(
        &fake,
        Script::new().fail("invalid_request_error", "bad block"),
    )
    .await;
    let error = error.unwrap();
    assert!(!error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn overloaded_status_is_retryable_with_the_vendor_error_type() {
    let fake = FakeAnthropic::start().await;
    fake.push(Script::error(529, "Overloaded"));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 529 must fail the call");
    };
    assert!(error.is_retryable());
    match error {
        ModelError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 529);
            assert_eq!(message, "overloaded_error: Overloaded");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limit_surfaces_retry_after() {
    let fake = FakeAnthropic::start().await;
    fake.push(
        Script::error(429, "Number of request tokens has exceeded your rate limit").retry_after(17),
    );
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 429 must fail the call");
    };
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(17)));
    assert!(error.to_string().contains("rate_limit_error"), "{error}");
}

#[tokio::test]
async fn authentication_error_is_final() {
    let fake = FakeAnthropic::start().await;
    let provider = AnthropicProvider::new(&fake.base_url(), None, &BTreeMap::new()).unwrap();
    let Err(error) = provider.stream(request("hi")).await else {
        panic!("no key must fail the call");
    };
    assert!(!error.is_retryable());
    assert!(
        matches!(error, ModelError::Status { status: 401, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("authentication_error"),
        "{error}"
    );
}

#[tokio::test]
async fn dropped_connection_mid_tool_call_is_a_transport_error_without_partial_calls() {
    let fake = FakeAnthropic::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("par")
            .tool_call("toolu_1", "read_file", json!({"path": "a"}))
            .cut(),
    )
    .await;
    assert_eq!(events, vec![text("par")]);
    match error {
        Some(error @ ModelError::Transport(_)) => assert!(error.is_retryable()),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".to_owned(),
        description: "Current weather for a city.".to_owned(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        }),
    }
}

fn call(id: &str, city: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: "get_weather".to_owned(),
        arguments: json!({"city": city}),
    }
}

fn result(id: &str, content: &str, is_error: bool) -> Item {
    Item::ToolResult {
        call_id: id.to_owned(),
        name: "get_weather".to_owned(),
        content: content.to_owned(),
        is_error,
    }
}

#[tokio::test]
async fn maps_the_canonical_request_to_the_messages_api() {
    let fake = FakeAnthropic::start().await;
    let headers = BTreeMap::from([("anthropic-beta".to_owned(), "test-beta".to_owned())]);
    // A trailing slash on the base URL must not produce `//v1/messages`.
    let base_url = format!("{}/", fake.base_url());
    let provider =
        AnthropicProvider::new(&base_url, Some("sk-ant-test".to_owned()), &headers).unwrap();
    let list_tool = ToolSpec {
        name: "list_files".to_owned(),
        description: String::new(),
        parameters: json!({"type": "object", "properties": {}}),
    };
    let request = ModelRequest {
        model: "claude-test".to_owned(),
        system: "You are Paddock.".to_owned(),
        items: vec![
            Item::user("Weather in Paris and Rome?".to_owned()),
            Item::Assistant {
                text: "Checking both.".to_owned(),
                // An id from another vendor, with characters Anthropic does not accept.
                tool_calls: vec![call("call_1", "Paris"), call("fc:2/x", "Rome")],
            },
            // Results in completion order, not call order: matched by id.
            result("fc:2/x", "service unavailable", true),
            result("call_1", "sunny", false),
            Item::user("And tomorrow?".to_owned()),
            // An empty answer says nothing and is left out.
            Item::Assistant {
                text: String::new(),
                tool_calls: Vec::new(),
            },
            Item::Assistant {
                text: "Paris stays sunny.".to_owned(),
                tool_calls: Vec::new(),
            },
            Item::user("Thanks".to_owned()),
        ],
        tools: vec![weather_tool(), list_tool],
        max_output_tokens: Some(256),
    };
    let (_, error) = collect(provider.stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");

    let recorded = fake.recorded();
    assert_eq!(recorded[0].path, "/v1/messages");
    assert_eq!(
        recorded[0].body,
        json!({
            "model": "claude-test",
            "max_tokens": 256,
            "stream": true,
            "system": [{
                "type": "text",
                "text": "You are Paddock.",
                "cache_control": {"type": "ephemeral"},
            }],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "fc_2_x", "name": "get_weather", "input": {"city": "Rome"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "fc_2_x", "content": "service unavailable", "is_error": true},
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "text", "text": "And tomorrow?"},
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "Paris stays sunny."}]},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
                {
                    "name": "list_files",
                    "input_schema": {"type": "object", "properties": {}},
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        })
    );
    let headers = &recorded[0].headers;
    assert_eq!(headers["x-api-key"], "sk-ant-test");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["anthropic-beta"], "test-beta");
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers.contains_key("authorization"));
}

#[tokio::test]
async fn tool_results_come_before_user_text_in_one_message() {
    let fake = FakeAnthropic::start().await;
    let mut request = request("Weather?");
    request.items.extend([
        Item::Assistant {
            text: String::new(),
            tool_calls: vec![call("toolu_1", "Paris")],
        },
        // Steering input that reached the conversation before the result did.
        Item::user("Use Celsius.".to_owned()),
        result("toolu_1", "21 C", false),
    ]);
    request.system = String::new();
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    let body = &fake.requests()[0];
    assert!(body.get("system").is_none(), "{body}");
    assert!(body.get("tools").is_none(), "{body}");
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"},
            {"type": "text", "text": "Use Celsius."},
        ]})
    );
}

#[tokio::test]
async fn max_tokens_is_required_so_it_has_a_default() {
    let fake = FakeAnthropic::start().await;
    for (model, expected) in [
        ("claude-test", 4096),
        ("claude-sonnet-4-5-20250929", 4096),
        ("claude-3-haiku-20240307", 4096),
    ] {
        let mut request = request("hi");
        request.model = model.to_owned();
        let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        let body = fake.requests().pop().unwrap();
        assert_eq!(body["max_tokens"], expected, "{model}");
    }
}

#[tokio::test]
async fn base_url_may_include_the_version() {
    let fake = FakeAnthropic::start().await;
    let provider = AnthropicProvider::new(
        &format!("{}/v1", fake.base_url()),
        Some("k".to_owned()),
        &BTreeMap::new(),
    )
    .unwrap();
    let (_, error) = collect(provider.stream(request("hi")).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(fake.request_paths(), ["/v1/messages"]);
}

#[tokio::test]
async fn sends_images_as_image_blocks_and_names_audio_and_video_in_text() {
    let fake = FakeAnthropic::start().await;
    let mut request = request("");
    request.items = vec![
        Item::User {
            content: "What is in these?".to_owned(),
            media: vec![
                Media::base64(MediaKind::Image, "image/jpeg", "/9j/4AAQ"),
                Media::url(MediaKind::Image, "https://example.com/cat.png"),
                Media::base64(MediaKind::Audio, "audio/wav", "UklGRg==").with_name("hello.wav"),
                Media::url(MediaKind::Video, "https://example.com/clip.mp4"),
            ],
        },
        Item::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "toolu_1".to_owned(),
                name: "look".to_owned(),
                arguments: json!({}),
            }],
        },
        Item::ToolResult {
            call_id: "toolu_1".to_owned(),
            name: "look".to_owned(),
            content: "done".to_owned(),
            is_error: false,
        },
        // Media right after a tool result shares its user message, after the result.
        Item::User {
            content: String::new(),
            media: vec![Media::base64(MediaKind::Image, "image/png", "iVBORw0KGgo=")],
        },
    ];
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        fake.requests()[0]["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "text", "text": "[audio attachment \"hello.wav\" (audio/wav) not shown: this API does not take audio]"},
                {"type": "text", "text": "[video attachment \"https://example.com/clip.mp4\" not shown: this API does not take video]"},
                {"type": "text", "text": "What is in these?"},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
        ])
    );
}

#[tokio::test]
async fn an_idle_stream_times_out_retryably() {
    let fake = FakeAnthropic::start().await;
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
