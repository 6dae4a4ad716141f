//! The OpenAI Chat Completions provider against the fake OpenAI server.

// Clippy's `allow-unwrap-in-tests` covers `#[test]` functions only, not the shared helpers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;

use common::collect;
use futures::StreamExt;
use paddock_model::openai::OpenAiProvider;
use paddock_model::{
    Item, Media, MediaKind, ModelError, ModelEvent, ModelProvider, ModelRequest, ToolCall,
    ToolSpec, Usage,
};
use paddock_test_support::{FakeOpenAi, Gate, Script};
use serde_json::json;

fn provider(fake: &FakeOpenAi) -> OpenAiProvider {
    OpenAiProvider::new(&fake.base_url(), None, &BTreeMap::new()).unwrap()
}

fn request(text: &str) -> ModelRequest {
    common::request_to("gpt-test", text)
}

async fn run(fake: &FakeOpenAi, script: Script) -> (Vec<ModelEvent>, Option<ModelError>) {
    fake.push(script);
    let stream = provider(fake).stream(request("hi")).await.unwrap();
    collect(stream).await
}

#[tokio::test]
async fn streams_text_deltas() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(&fake, Script::new().text("Hel").text("lo!")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("Hel".to_owned()),
            ModelEvent::TextDelta("lo!".to_owned()),
            ModelEvent::Finished,
        ]
    );
}

#[tokio::test]
async fn default_script_answers_ok() {
    let fake = FakeOpenAi::start().await;
    let stream = provider(&fake).stream(request("hi")).await.unwrap();
    let (events, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("OK.".to_owned()),
            ModelEvent::Finished
        ]
    );
}

#[tokio::test]
async fn deltas_arrive_while_the_model_is_still_generating() {
    let fake = FakeOpenAi::start().await;
    let gate = Gate::new();
    fake.push(Script::new().text("first").hold(&gate).text("second"));
    let mut stream = provider(&fake).stream(request("hi")).await.unwrap();

    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first, ModelEvent::TextDelta("first".to_owned()));
    gate.reached().await;
    assert!(!gate.is_open());

    gate.open();
    let (rest, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        rest,
        vec![
            ModelEvent::TextDelta("second".to_owned()),
            ModelEvent::Finished
        ]
    );
}

#[tokio::test]
async fn assembles_a_tool_call_split_across_chunks() {
    let fake = FakeOpenAi::start().await;
    let args = json!({"path": "notes/todo.md", "lines": [1, 20], "note": "Zürich ☃"});
    let (events, error) = run(
        &fake,
        Script::new()
            .text("Let me look.")
            .tool_call("call_abc", "read_file", args.clone()),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("Let me look.".to_owned()),
            ModelEvent::ToolCall(ToolCall {
                id: "call_abc".to_owned(),
                name: "read_file".to_owned(),
                arguments: args,
            }),
            ModelEvent::Finished,
        ]
    );
}

#[tokio::test]
async fn assembles_parallel_tool_calls_in_order() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .tool_call("call_1", "get_weather", json!({"city": "Paris"}))
            .tool_call("call_2", "get_time", json!({"zone": "Europe/Paris"})),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ModelEvent::ToolCall(ToolCall {
                id: "call_1".to_owned(),
                name: "get_weather".to_owned(),
                arguments: json!({"city": "Paris"}),
            }),
            ModelEvent::ToolCall(ToolCall {
                id: "call_2".to_owned(),
                name: "get_time".to_owned(),
                arguments: json!({"zone": "Europe/Paris"}),
            }),
            ModelEvent::Finished,
        ]
    );
}

#[tokio::test]
async fn empty_tool_arguments_become_an_empty_object() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(&fake, Script::new().tool_call_raw("call_1", "list", "")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ModelEvent::ToolCall(ToolCall {
                id: "call_1".to_owned(),
                name: "list".to_owned(),
                arguments: json!({}),
            }),
            ModelEvent::Finished,
        ]
    );
}

#[tokio::test]
async fn invalid_tool_arguments_are_a_protocol_error_naming_the_tool() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(
        &fake,
        Script::new().tool_call_raw("call_1", "write_file", "{\"path\": \"a.txt\", "),
    )
    .await;
    assert!(!events.contains(&ModelEvent::Finished));
    match error {
        Some(ModelError::Protocol(message)) => {
            assert!(message.contains("write_file"), "{message}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn reports_usage_before_finishing() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(&fake, Script::new().text("Hi").usage(42, 7)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("Hi".to_owned()),
            ModelEvent::Usage(Usage {
                input_tokens: 42,
                output_tokens: 7,
                ..Usage::default()
            }),
            ModelEvent::Finished,
        ]
    );
}

#[tokio::test]
async fn rate_limit_status_is_retryable_with_the_providers_message() {
    let fake = FakeOpenAi::start().await;
    fake.push(Script::error(429, "Rate limit reached for gpt-test"));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 429 must fail the call");
    };
    assert!(error.is_retryable());
    match error {
        ModelError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(message, "Rate limit reached for gpt-test");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_request_status_is_final() {
    let fake = FakeOpenAi::start().await;
    fake.push(Script::error(400, "Invalid schema for function 'x'"));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 400 must fail the call");
    };
    assert!(!error.is_retryable());
    match error {
        ModelError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(message, "Invalid schema for function 'x'");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn server_error_status_is_retryable() {
    let fake = FakeOpenAi::start().await;
    fake.push(Script::error(503, "overloaded"));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 503 must fail the call");
    };
    assert!(error.is_retryable());
    assert!(matches!(error, ModelError::Status { status: 503, .. }));
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(&fake, Script::drop_connection()).await;
    assert_eq!(events, vec![ModelEvent::TextDelta("par".to_owned())]);
    match error {
        Some(error @ ModelError::Transport(_)) => assert!(error.is_retryable()),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn cut_mid_tool_call_emits_no_partial_call() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .tool_call("call_1", "read_file", json!({"path": "a"}))
            .cut(),
    )
    .await;
    assert!(events.is_empty(), "{events:?}");
    assert!(matches!(error, Some(ModelError::Transport(_))), "{error:?}");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // A port that was just free: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let provider =
        OpenAiProvider::new(&format!("http://{addr}/v1"), None, &BTreeMap::new()).unwrap();
    let Err(error) = provider.stream(request("hi")).await else {
        panic!("nothing listens at {addr}");
    };
    assert!(matches!(error, ModelError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn invalid_configuration_is_rejected() {
    let empty = BTreeMap::new();
    assert!(matches!(
        OpenAiProvider::new("not a url", None, &empty),
        Err(ModelError::NotConfigured(_))
    ));
    let bad_header = BTreeMap::from([("bad header".to_owned(), "x".to_owned())]);
    assert!(matches!(
        OpenAiProvider::new("http://localhost/v1", None, &bad_header),
        Err(ModelError::NotConfigured(_))
    ));
}

#[tokio::test]
async fn maps_the_canonical_request_to_chat_completions() {
    let fake = FakeOpenAi::start().await;
    let headers = BTreeMap::from([
        ("X-Title".to_owned(), "Paddock".to_owned()),
        ("OpenAI-Organization".to_owned(), "org-1".to_owned()),
    ]);
    // A trailing slash on the base URL must not produce `//chat/completions`.
    let base_url = format!("{}/", fake.base_url());
    let provider = OpenAiProvider::new(&base_url, Some("sk-test".to_owned()), &headers).unwrap();
    let request = ModelRequest {
        model: "gpt-test".to_owned(),
        system: "You are Paddock.".to_owned(),
        items: vec![
            Item::user("Weather in Paris and Rome?".to_owned()),
            Item::Assistant {
                text: String::new(),
                tool_calls: vec![
                    ToolCall {
                        id: "call_1".to_owned(),
                        name: "get_weather".to_owned(),
                        arguments: json!({"city": "Paris"}),
                    },
                    ToolCall {
                        id: "call_2".to_owned(),
                        name: "get_weather".to_owned(),
                        arguments: json!({"city": "Rome"}),
                    },
                ],
            },
            Item::ToolResult {
                call_id: "call_1".to_owned(),
                name: "get_weather".to_owned(),
                content: "sunny".to_owned(),
                is_error: false,
            },
            Item::ToolResult {
                call_id: "call_2".to_owned(),
                name: "get_weather".to_owned(),
                content: "service unavailable".to_owned(),
                is_error: true,
            },
            Item::Assistant {
                text: "Paris is sunny.".to_owned(),
                tool_calls: Vec::new(),
            },
            Item::user("Thanks".to_owned()),
        ],
        tools: vec![ToolSpec {
            name: "get_weather".to_owned(),
            description: "Current weather for a city.".to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }),
        }],
        max_output_tokens: Some(256),
    };
    let stream = provider.stream(request).await.unwrap();
    let (_, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");

    fake.wait_for_requests(1).await;
    let body = &fake.requests()[0];
    assert_eq!(
        body,
        &json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "You are Paddock."},
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "service unavailable"},
                {"role": "assistant", "content": "Paris is sunny."},
                {"role": "user", "content": "Thanks"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }],
            "max_tokens": 256,
        })
    );

    let headers = &fake.request_headers()[0];
    assert_eq!(headers["authorization"], "Bearer sk-test");
    assert_eq!(headers["x-title"], "Paddock");
    assert_eq!(headers["openai-organization"], "org-1");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn omits_empty_system_tools_key_and_limit() {
    let fake = FakeOpenAi::start().await;
    let mut request = request("hi");
    request.system = String::new();
    let stream = provider(&fake).stream(request).await.unwrap();
    let (_, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");

    let body = &fake.requests()[0];
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    assert!(body.get("tools").is_none(), "{body}");
    assert!(body.get("max_tokens").is_none(), "{body}");
    assert!(
        !fake.request_headers()[0].contains_key("authorization"),
        "no key configured, no Authorization header"
    );
}

#[tokio::test]
async fn rate_limit_surfaces_retry_after() {
    let fake = FakeOpenAi::start().await;
    fake.push(Script::error(429, "Rate limit reached").retry_after(3));
    let Err(error) = provider(&fake).stream(request("hi")).await else {
        panic!("a 429 must fail the call");
    };
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(3)));
}

#[tokio::test]
async fn error_chunk_mid_stream_is_a_stream_error_retryable_when_transient() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(
        &fake,
        Script::new()
            .text("par")
            .fail("server_error", "The server had an error"),
    )
    .await;
    assert_eq!(events, vec![ModelEvent::TextDelta("par".to_owned())]);
    match error {
        Some(error @ ModelError::StreamError { .. }) => {
            assert!(error.is_retryable());
            assert!(error.to_string().contains("server_error"), "{error}");
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    let (_, error) = run(&fake, Script::new().fail("invalid_request_error", "bad")).await;
    assert!(!error.unwrap().is_retryable());
}

#[tokio::test]
async fn reports_cached_prompt_tokens() {
    let fake = FakeOpenAi::start().await;
    let (events, error) = run(
        &fake,
        Script::new().text("Hi").usage(2000, 7).cache_usage(1536, 0),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events[1],
        ModelEvent::Usage(Usage {
            input_tokens: 2000,
            output_tokens: 7,
            cache_read_tokens: 1536,
            cache_write_tokens: 0,
        })
    );
}

/// A user item carrying one of each kind of media, by URL and inline.
fn media_request() -> ModelRequest {
    ModelRequest {
        model: "gpt-test".to_owned(),
        system: String::new(),
        items: vec![Item::User {
            content: "What is in these?".to_owned(),
            media: vec![
                Media::url(MediaKind::Image, "https://example.com/cat.png"),
                Media::base64(MediaKind::Image, "image/png", "iVBORw0KGgo="),
                Media::base64(MediaKind::Audio, "audio/wav", "UklGRg==").with_name("hello.wav"),
                Media::base64(MediaKind::Audio, "audio/mpeg", "SUQz"),
                Media::url(MediaKind::Audio, "https://example.com/talk.mp3"),
                Media::base64(MediaKind::Audio, "audio/ogg", "T2dnUw==").with_name("note.ogg"),
                Media::url(MediaKind::Video, "https://example.com/clip.mp4")
                    .with_media_type("video/mp4")
                    .with_name("clip.mp4"),
            ],
        }],
        tools: Vec::new(),
        max_output_tokens: None,
    }
}

#[tokio::test]
async fn sends_media_as_content_parts_and_names_what_chat_completions_cannot_take() {
    let fake = FakeOpenAi::start().await;
    let stream = provider(&fake).stream(media_request()).await.unwrap();
    let (_, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        fake.requests()[0]["messages"],
        json!([{
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                {"type": "text", "text": "[audio attachment \"https://example.com/talk.mp3\" not shown: this API takes audio only inline, not by URL]"},
                {"type": "text", "text": "[audio attachment \"note.ogg\" (audio/ogg) not shown: this API takes audio only as WAV or MP3]"},
                {"type": "text", "text": "[video attachment \"clip.mp4\" (video/mp4) not shown: this API does not take video]"},
                {"type": "text", "text": "What is in these?"},
            ],
        }])
    );
}

#[tokio::test]
async fn media_without_text_sends_only_the_media() {
    let fake = FakeOpenAi::start().await;
    let mut request = request("");
    request.items = vec![Item::User {
        content: String::new(),
        media: vec![Media::url(MediaKind::Image, "https://example.com/a.jpg")],
    }];
    let (_, error) = collect(provider(&fake).stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        fake.requests()[0]["messages"][1],
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        ]})
    );
}

#[tokio::test]
async fn a_stream_silent_for_the_idle_timeout_fails_retryably_naming_it() {
    let fake = FakeOpenAi::start().await;
    let gate = Gate::new();
    fake.push(Script::new().text("Hel").hold(&gate).text("lo"));
    let provider = provider(&fake).with_idle_timeout(Duration::from_millis(300));
    let stream = provider.stream(request("hi")).await.unwrap();
    let (events, error) = collect(stream).await;
    assert_eq!(events, vec![ModelEvent::TextDelta("Hel".to_owned())]);
    let error = error.expect("an idle timeout");
    assert!(
        matches!(error, ModelError::IdleTimeout { idle } if idle == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), None);
    assert_eq!(
        error.to_string(),
        "the provider sent nothing for 300ms (idle timeout)"
    );
    assert!(!gate.is_open());
}

#[tokio::test]
async fn a_stream_silent_from_its_start_times_out_too() {
    let fake = FakeOpenAi::start().await;
    let gate = Gate::new();
    // The fake sends its headers, then holds before the first chunk.
    fake.push(Script::new().hold(&gate).text("late"));
    let provider = provider(&fake).with_idle_timeout(Duration::from_millis(300));
    let (events, error) = collect(provider.stream(request("hi")).await.unwrap()).await;
    assert_eq!(events, vec![]);
    assert!(
        matches!(error, Some(ModelError::IdleTimeout { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_slow_stream_that_keeps_sending_is_not_idle() {
    let fake = FakeOpenAi::start().await;
    // Each chunk comes 40 ms after the last: the whole answer takes longer than the idle
    // timeout, no silence does.
    fake.push(
        Script::new()
            .text("a")
            .text("b")
            .text("c")
            .text("d")
            .chunk_delay(Duration::from_millis(40)),
    );
    let provider = provider(&fake).with_idle_timeout(Duration::from_millis(150));
    let (events, error) = collect(provider.stream(request("hi")).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events.last(), Some(&ModelEvent::Finished));
}
