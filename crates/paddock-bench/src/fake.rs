//! A fake OpenAI-compatible Chat Completions server whose latency profile is chosen per
//! request by the model name, so one fake serves every scenario (and every peer):
//!
//! - `instant`: the whole answer at once (`OK.`).
//! - `stream-<ttft_ms>-<tokens_per_s>-<tokens>`: the first token after `ttft_ms`, then one token
//!   every `1/tokens_per_s` seconds.
//! - `tokens-<n>`: `n` one-word tokens at once (used to fill an event log quickly).
//! - `slow-<ms>`: the role chunk at once, the answer after `ms` (a run that stays active).
//! - `tools-<k>`: asks for a `read_file` tool call until the conversation holds `k` tool
//!   results, then answers.
//!
//! The first content chunk of every answer starts with `t<unix micros> `, the wall-clock time
//! the fake wrote it, so a client (in this process or another) measures the time from the
//! model's first byte to its own first token. `GET /stats` reports streams in flight.
//!
//! Unlike `paddock-test-support`'s `FakeOpenAi`, nothing is recorded per request, so memory
//! stays flat under millions of requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Counters shared by the fake's handlers.
#[derive(Debug, Default)]
pub struct FakeStats {
    /// Streams currently open.
    pub active: AtomicU64,
    /// Highest `active` seen.
    pub peak_active: AtomicU64,
    /// Requests answered so far.
    pub requests: AtomicU64,
}

/// A running fake model server.
pub struct FakeModel {
    addr: SocketAddr,
    stats: Arc<FakeStats>,
    task: JoinHandle<()>,
}

impl FakeModel {
    /// Binds `listen` (use port 0 for a free port) and serves in the background.
    pub async fn start(listen: SocketAddr) -> anyhow::Result<FakeModel> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(FakeStats::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/chat/completions", post(completions))
            .route("/stats", get(stats_handler))
            .with_state(stats.clone());
        // No Nagle: each chunk leaves when written, as the timings assume.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake model stopped: {e}");
            }
        });
        Ok(FakeModel { addr, stats, task })
    }

    /// The OpenAI-compatible base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live counters.
    pub fn stats(&self) -> &FakeStats {
        &self.stats
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stats_handler(State(stats): State<Arc<FakeStats>>) -> axum::Json<Value> {
    axum::Json(json!({
        "active": stats.active.load(Ordering::Relaxed),
        "peak_active": stats.peak_active.load(Ordering::Relaxed),
        "requests": stats.requests.load(Ordering::Relaxed),
    }))
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Parses the `t<unix micros>` stamp at the start of `text`.
pub fn parse_stamp(text: &str) -> Option<u64> {
    let rest = text.trim_start().strip_prefix('t')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What one answer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// Everything at once.
    Instant,
    /// First token after `ttft`, then `tokens - 1` more at `interval`.
    Stream {
        ttft: Duration,
        interval: Duration,
        tokens: usize,
    },
    /// `n` tokens at once.
    Tokens(usize),
    /// Answer after a pause.
    Slow(Duration),
    /// Tool calls until `k` results are in the conversation.
    Tools(usize),
}

impl Profile {
    /// The profile a model name asks for (`instant` for names it does not know).
    pub fn parse(model: &str) -> Profile {
        let name = model.rsplit('/').next().unwrap_or(model);
        let parts: Vec<&str> = name.split('-').collect();
        let num = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        match parts.first().copied() {
            Some("stream") => {
                let ttft = num(1).unwrap_or(50);
                let tps = num(2).unwrap_or(100).max(1);
                let tokens = num(3).unwrap_or(20).max(1);
                Profile::Stream {
                    ttft: Duration::from_millis(ttft),
                    interval: Duration::from_micros(1_000_000 / tps),
                    tokens: usize::try_from(tokens).unwrap_or(1),
                }
            }
            Some("tokens") => Profile::Tokens(usize::try_from(num(1).unwrap_or(100)).unwrap_or(1)),
            Some("slow") => Profile::Slow(Duration::from_millis(num(1).unwrap_or(30_000))),
            Some("tools") => Profile::Tools(usize::try_from(num(1).unwrap_or(1)).unwrap_or(1)),
            _ => Profile::Instant,
        }
    }
}

/// One piece of the answer: wait `delay`, then send the chunk.
enum Piece {
    /// A text delta; `stamp` prefixes it with the send time.
    Text {
        text: String,
        stamp: bool,
    },
    ToolCall {
        id: String,
        arguments: String,
    },
    Finish(&'static str),
    Usage,
    Done,
}

struct Plan {
    pieces: std::collections::VecDeque<(Duration, Piece)>,
    model: String,
    _guard: ActiveGuard,
}

struct ActiveGuard(Arc<FakeStats>);

impl ActiveGuard {
    fn new(stats: Arc<FakeStats>) -> Self {
        let now = stats.active.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_active.fetch_max(now, Ordering::Relaxed);
        ActiveGuard(stats)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn plan(profile: &Profile, body: &Value) -> Vec<(Duration, Piece)> {
    let text = |t: &str, stamp: bool| Piece::Text {
        text: t.to_owned(),
        stamp,
    };
    let zero = Duration::ZERO;
    let mut out = Vec::new();
    match profile {
        Profile::Instant => {
            out.push((zero, text("OK.", true)));
            out.push((zero, Piece::Finish("stop")));
        }
        Profile::Stream {
            ttft,
            interval,
            tokens,
        } => {
            out.push((*ttft, text("tok", true)));
            for _ in 1..*tokens {
                out.push((*interval, text(" tok", false)));
            }
            out.push((zero, Piece::Finish("stop")));
        }
        Profile::Tokens(n) => {
            out.push((zero, text("tok", true)));
            for _ in 1..*n {
                out.push((zero, text(" tok", false)));
            }
            out.push((zero, Piece::Finish("stop")));
        }
        Profile::Slow(pause) => {
            out.push((*pause, text("done.", true)));
            out.push((zero, Piece::Finish("stop")));
        }
        Profile::Tools(k) => {
            let results = body["messages"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
            if results < *k {
                out.push((
                    zero,
                    Piece::ToolCall {
                        id: format!("call_bench_{results}"),
                        arguments: json!({"path": format!("bench-{results}.txt")}).to_string(),
                    },
                ));
                out.push((zero, Piece::Finish("tool_calls")));
            } else {
                out.push((zero, text("Done.", true)));
                out.push((zero, Piece::Finish("stop")));
            }
        }
    }
    out.push((zero, Piece::Usage));
    out.push((zero, Piece::Done));
    out
}

fn chunk(model: &str, delta: Value, finish: Value) -> String {
    json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
    .to_string()
}

fn render(model: &str, piece: Piece) -> String {
    let data = match piece {
        Piece::Text { text, stamp } => {
            let content = if stamp {
                format!("t{} {text}", unix_micros())
            } else {
                text
            };
            chunk(model, json!({"content": content}), Value::Null)
        }
        Piece::ToolCall { id, arguments } => chunk(
            model,
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": "read_file", "arguments": arguments}}]}),
            Value::Null,
        ),
        Piece::Finish(reason) => chunk(model, json!({}), json!(reason)),
        Piece::Usage => json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })
        .to_string(),
        Piece::Done => "[DONE]".to_owned(),
    };
    format!("data: {data}\n\n")
}

async fn completions(State(stats): State<Arc<FakeStats>>, body: Bytes) -> Response {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    };
    let model = body["model"].as_str().unwrap_or("instant").to_owned();
    let profile = Profile::parse(&model);
    let pieces = plan(&profile, &body);
    if body["stream"] != Value::Bool(true) {
        return whole_answer(&model, pieces).await;
    }
    // The role chunk goes out at once, as OpenAI's does.
    let first = format!(
        "data: {}\n\n",
        chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            Value::Null
        )
    );
    let state = Plan {
        pieces: pieces.into(),
        model,
        _guard: ActiveGuard::new(stats),
    };
    let rest = futures::stream::unfold(state, |mut state| async move {
        let (delay, piece) = state.pieces.pop_front()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let text = render(&state.model, piece);
        Some((Ok::<_, Infallible>(Bytes::from(text)), state))
    });
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(first)) }),
        rest,
    );
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// A non-streamed answer (`stream: false`), after the profile's total delay.
async fn whole_answer(model: &str, pieces: Vec<(Duration, Piece)>) -> Response {
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let mut finish = "stop";
    for (delay, piece) in pieces {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match piece {
            Piece::Text { text, stamp } => {
                if stamp {
                    content.push_str(&format!("t{} ", unix_micros()));
                }
                content.push_str(&text);
            }
            Piece::ToolCall { id, arguments } => tool_calls.push(json!({
                "id": id, "type": "function",
                "function": {"name": "read_file", "arguments": arguments},
            })),
            Piece::Finish(reason) => finish = reason,
            Piece::Usage | Piece::Done => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
        message["content"] = Value::Null;
    }
    axum::Json(json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_from_model_names() {
        assert_eq!(Profile::parse("fake/instant"), Profile::Instant);
        assert_eq!(
            Profile::parse("slow-250"),
            Profile::Slow(Duration::from_millis(250))
        );
        assert_eq!(
            Profile::parse("stream-50-100-20"),
            Profile::Stream {
                ttft: Duration::from_millis(50),
                interval: Duration::from_millis(10),
                tokens: 20
            }
        );
        assert_eq!(Profile::parse("tools-2"), Profile::Tools(2));
        assert_eq!(parse_stamp("t123 OK."), Some(123));
        assert_eq!(parse_stamp("OK."), None);
    }
}
