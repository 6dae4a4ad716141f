//! Helpers shared by the vendor adapter tests (`openai.rs`, `anthropic.rs`, `google.rs`).

// Each test binary uses a different subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use paddock_model::{Item, ModelError, ModelEvent, ModelRequest, ModelStream, Usage};

/// A one-message request to `model` with a short system prompt and no tools.
pub fn request_to(model: &str, text: &str) -> ModelRequest {
    ModelRequest {
        model: model.to_owned(),
        system: "You are terse.".to_owned(),
        items: vec![Item::user(text.to_owned())],
        tools: Vec::new(),
        max_output_tokens: None,
    }
}

/// Reads the whole stream; an error is the last element.
pub async fn collect(mut stream: ModelStream) -> (Vec<ModelEvent>, Option<ModelError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                assert!(
                    stream.next().await.is_none(),
                    "stream continued after {error}"
                );
                return (events, Some(error));
            }
        }
    }
    (events, None)
}

pub fn text(s: &str) -> ModelEvent {
    ModelEvent::TextDelta(s.to_owned())
}

pub fn usage(input: u64, output: u64) -> ModelEvent {
    ModelEvent::Usage(Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    })
}
