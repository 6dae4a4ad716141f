#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `openai` adapter against a real OpenAI-compatible server: llama.cpp's `llama-server`
//! serving the default model (SmolLM2-135M-Instruct), with `--jinja` so it renders tools and
//! parses tool calls with the model's own chat template.
//!
//! Needs `PADDOCK_TEST_LLAMA_SERVER` (the binary `scripts/setup` builds into
//! `~/.cache/paddock/llama-server-0.3.16/`) and `PADDOCK_TEST_GGUF` (the model); `scripts/test` sets both.
//! The server samples greedily (`--temp 0`), so the answers are the same on every run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use paddock_model::openai::OpenAiProvider;
use paddock_model::{
    Item, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream, ToolCall, ToolSpec,
};
use serde_json::json;

/// How long the server may take to load the model and answer `/health` with 200.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// The path in environment variable `var`, or a failure saying how to set it.
fn required_path(var: &str, how: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{var}={} is not a file; {how}",
                path.display()
            );
            path
        }
        _ => panic!("{var} is not set; {how}"),
    }
}

/// A running `llama-server`, killed when dropped.
struct LlamaServer {
    child: Child,
    base_url: String,
    log: tempfile::NamedTempFile,
}

impl LlamaServer {
    /// Starts `llama-server` on a free port and waits until `/health` says the model is loaded.
    async fn start() -> LlamaServer {
        let binary = required_path(
            "PADDOCK_TEST_LLAMA_SERVER",
            "run scripts/setup (it builds ~/.cache/paddock/llama-server-0.3.16/llama-server) and set \
             PADDOCK_TEST_LLAMA_SERVER to that file, or run the tests with scripts/test",
        );
        let model = required_path(
            "PADDOCK_TEST_GGUF",
            "run scripts/setup (it fetches the default model into paddock-data/models/) and set \
             PADDOCK_TEST_GGUF to the .gguf file, or run the tests with scripts/test",
        );
        // A port the OS just handed out and released; llama-server takes no port 0.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(&binary)
            .arg("-m")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "2048", "--jinja", "--temp", "0", "--seed", "1"])
            // One thread: tests run side by side on few cores, and llama.cpp's threads spin.
            .args(["--threads", "1"])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = LlamaServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_until_healthy().await;
        server
    }

    /// The server's output so far, for failure messages.
    fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Polls `/health` until it answers 200 (it answers 503 while the model loads).
    async fn wait_until_healthy(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("{}/health", self.base_url);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("server status") {
                panic!("llama-server exited with {status}:\n{}", self.output());
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "llama-server did not become healthy within {STARTUP_LIMIT:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn provider(&self) -> OpenAiProvider {
        OpenAiProvider::new(&format!("{}/v1", self.base_url), None, &BTreeMap::new()).unwrap()
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the whole stream, failing on an error.
async fn collect(server: &LlamaServer, mut stream: ModelStream) -> Vec<ModelEvent> {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => panic!(
                "stream failed after {events:?}: {error}\nserver output:\n{}",
                server.output()
            ),
        }
    }
    events
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".to_owned(),
        description: "Weather for a city".to_owned(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        }),
    }
}

#[tokio::test]
async fn streams_a_text_answer_with_usage() {
    let server = LlamaServer::start().await;
    let request = ModelRequest {
        model: "smollm2".to_owned(),
        system: "You are a friendly assistant. Answer briefly.".to_owned(),
        items: vec![Item::user("Say hello.")],
        tools: Vec::new(),
        max_output_tokens: Some(24),
    };
    let stream = server.provider().stream(request).await.unwrap();
    let events = collect(&server, stream).await;

    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::TextDelta(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!deltas.is_empty(), "no text: {events:?}");
    assert!(deltas.iter().all(|d| !d.is_empty()), "{deltas:?}");
    assert!(!deltas.concat().trim().is_empty(), "{deltas:?}");
    let usage = events.iter().find_map(|e| match e {
        ModelEvent::Usage(usage) => Some(*usage),
        _ => None,
    });
    let usage = usage.unwrap_or_else(|| panic!("no usage: {events:?}"));
    assert!(usage.input_tokens > 0, "{usage:?}");
    assert!(
        (1..=24).contains(&usage.output_tokens),
        "the limit was 24: {usage:?}"
    );
    assert_eq!(events.last(), Some(&ModelEvent::Finished), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ModelEvent::Finished))
            .count(),
        1
    );
}

#[tokio::test]
async fn calls_a_tool_and_reads_its_result() {
    let server = LlamaServer::start().await;
    let provider = server.provider();
    let mut request = ModelRequest {
        model: "smollm2".to_owned(),
        system: "You are terse.".to_owned(),
        items: vec![Item::user("What is the weather in Paris?")],
        tools: vec![weather_tool()],
        max_output_tokens: Some(100),
    };
    let events = collect(&server, provider.stream(request.clone()).await.unwrap()).await;
    let calls: Vec<ToolCall> = events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::ToolCall(call) => Some(call.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    let call = &calls[0];
    assert_eq!(call.name, "get_weather");
    assert_eq!(call.arguments, json!({"city": "Paris"}));
    assert!(!call.id.is_empty());
    assert!(
        events.iter().any(|e| matches!(e, ModelEvent::Usage(_))),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&ModelEvent::Finished));

    // The call and its result, sent back as history: the server must accept the assistant
    // `tool_calls` message and the `role: "tool"` result, and the model answers.
    request.items.push(Item::Assistant {
        text: String::new(),
        tool_calls: calls.clone(),
    });
    request.items.push(Item::ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: "Sunny, 21 °C".to_owned(),
        is_error: false,
    });
    request.max_output_tokens = Some(40);
    // llama.cpp's server may close the kept-alive connection of the first (streamed) answer
    // just as the client reuses it; that is a transport error the agent loop retries, and so
    // does this test, once.
    let stream = match provider.stream(request.clone()).await {
        Err(ModelError::Transport(why)) => {
            eprintln!("retrying once after a transport error: {why}");
            provider.stream(request).await.unwrap()
        }
        other => other.unwrap(),
    };
    let events = collect(&server, stream).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ModelEvent::TextDelta(_) | ModelEvent::ToolCall(_))),
        "no answer after the tool result: {events:?}"
    );
    assert_eq!(events.last(), Some(&ModelEvent::Finished), "{events:?}");
}
