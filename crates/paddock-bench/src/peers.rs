//! Peers side by side: the accept, runs/s and time-to-first-token scenarios against
//! LangGraph's dev server (`langgraph dev`, in-memory), driven like Paddock over HTTP/SSE with
//! the same fake model, and the ratios.
//!
//! LangGraph's equivalents: accept = `POST /threads/{id}/runs` (a background run on a new
//! thread, `if_not_exists: create`) answered 200; a run end to end = `POST
//! /threads/{id}/runs/wait`; first token = the first streamed chunk of `POST
//! /threads/{id}/runs/stream` with `stream_mode: messages-tuple` that carries the fake's
//! stamp.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::api::{check_loopback, http_client};
use crate::fake::unix_micros;
use crate::report::Row;
use crate::scenarios::Scale;
use crate::stats::Summary;

/// A LangGraph API server.
#[derive(Clone)]
pub struct LangGraph {
    http: reqwest::Client,
    base: String,
}

static THREAD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh UUID-shaped thread id (LangGraph wants UUIDs).
fn new_uuid() -> String {
    let n = THREAD_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = unix_micros();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (t >> 16) as u32,
        (t & 0xffff) as u16,
        std::process::id() & 0xfff,
        (n >> 48) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// Finds the first `t<16+ digits>` stamp anywhere in `text`.
fn find_stamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    for i in 0..b.len() {
        if b[i] == b't' {
            let digits: String = text[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if digits.len() >= 15 {
                return digits.parse().ok();
            }
        }
    }
    None
}

impl LangGraph {
    /// A handle on the server at `base` (loopback only).
    pub fn new(base: &str) -> anyhow::Result<LangGraph> {
        check_loopback(base)?;
        Ok(LangGraph {
            http: http_client(),
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn input() -> Value {
        json!({"messages": [{"role": "user", "content": "hello"}]})
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(Duration, Value)> {
        let t0 = Instant::now();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let took = t0.elapsed();
        if !status.is_success() {
            bail!("POST {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok((took, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn new_thread(&self) -> anyhow::Result<String> {
        let (_, v) = self.post("/threads", &json!({})).await?;
        Ok(v["thread_id"].as_str().context("no thread_id")?.to_owned())
    }

    /// Accept latency at `c` clients: background run on a new thread → 200.
    pub async fn accept(&self, c: usize, total: usize) -> (Vec<f64>, usize, Option<String>) {
        let next = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for _ in 0..c {
            let (lg, next) = (self.clone(), next.clone());
            set.spawn(async move {
                let (mut lat, mut errors, mut first) = (Vec::new(), 0usize, None);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let body = json!({"assistant_id": "instant", "input": Self::input(),
                        "if_not_exists": "create"});
                    match lg
                        .post(&format!("/threads/{}/runs", new_uuid()), &body)
                        .await
                    {
                        Ok((d, _)) => lat.push(d.as_secs_f64() * 1000.0),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (lat, errors, first)
            });
        }
        let (mut all, mut errors, mut first) = (Vec::new(), 0, None);
        while let Some(Ok((l, e, f))) = set.join_next().await {
            all.extend(l);
            errors += e;
            first = first.or(f);
        }
        (all, errors, first)
    }

    /// Waits (bounded) until LangGraph has no pending or running run in the threads it knows.
    pub async fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let busy = self
                .post("/threads/search", &json!({"status": "busy", "limit": 1}))
                .await
                .map(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false);
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs end to end at concurrency `c` for `duration`: one thread per client,
    /// `runs/wait` in a loop.
    pub async fn runs(
        &self,
        c: usize,
        duration: Duration,
        max: usize,
    ) -> anyhow::Result<(Vec<f64>, usize, Duration)> {
        let started = Instant::now();
        let deadline = started + duration;
        let count = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for _ in 0..c {
            let (lg, count) = (self.clone(), count.clone());
            set.spawn(async move {
                let thread = lg.new_thread().await?;
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline && count.fetch_add(1, Ordering::Relaxed) < max {
                    let t0 = Instant::now();
                    let body = json!({"assistant_id": "instant", "input": Self::input()});
                    match lg
                        .post(&format!("/threads/{thread}/runs/wait"), &body)
                        .await
                    {
                        Ok(_) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => errors += 1,
                    }
                }
                anyhow::Ok((lat, errors))
            });
        }
        let (mut all, mut errors) = (Vec::new(), 0);
        while let Some(j) = set.join_next().await {
            let (l, e) = j??;
            all.extend(l);
            errors += e;
        }
        Ok((all, errors, started.elapsed()))
    }

    /// Time to first token over `runs` sequential streamed runs of graph `stream`.
    pub async fn ttft(&self, runs: usize) -> anyhow::Result<Vec<f64>> {
        let thread = self.new_thread().await?;
        let mut out = Vec::new();
        for _ in 0..runs {
            let body = json!({"assistant_id": "stream", "input": Self::input(),
                "stream_mode": ["messages-tuple"]});
            let resp = self
                .http
                .post(format!("{}/threads/{thread}/runs/stream", self.base))
                .json(&body)
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("runs/stream: {}", resp.status());
            }
            let mut stream = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
            let mut first = None;
            let read = tokio::time::timeout(Duration::from_secs(60), async {
                while let Some(e) = stream.next().await {
                    let e = e.map_err(|e| anyhow::anyhow!("sse: {e}"))?;
                    if first.is_none() && e.event.starts_with("messages") {
                        let now = unix_micros();
                        if let Some(s) = find_stamp(&e.data) {
                            first = Some(now.saturating_sub(s) as f64 / 1000.0);
                        }
                    }
                }
                anyhow::Ok(())
            })
            .await;
            read.context("stream did not end in 60 s")??;
            out.extend(first);
        }
        Ok(out)
    }
}

/// The LangGraph rows: accept latency per level, runs/s per level, time to first token.
pub async fn langgraph_rows(lg: &LangGraph, scale: &Scale) -> Vec<Row> {
    let mut rows = Vec::new();
    for &c in &scale.accept_levels {
        let total = (c * scale.accept_per_client).max(scale.accept_min_requests);
        let _ = lg.accept(c, c).await;
        lg.drain(Duration::from_secs(60)).await;
        let (lat, errors, first) = lg.accept(c, total).await;
        lg.drain(Duration::from_secs(120)).await;
        let mut row = Row::dist(
            "accept latency",
            format!("langgraph dev, {c} clients"),
            "ms",
            &lat,
        )
        .note("POST /threads/{new}/runs (background run, if_not_exists create) → 200");
        if errors > 0 {
            row = row.note(format!("{errors} errors: {}", first.unwrap_or_default()));
        }
        rows.push(row);
    }
    for &c in &scale.runs_levels {
        match lg.runs(c, scale.runs_duration, scale.runs_max).await {
            Ok((lat, errors, elapsed)) => {
                rows.push(
                    Row::value("end-to-end runs/s", format!("langgraph dev, concurrency {c}"), "runs/s", lat.len() as f64 / elapsed.as_secs_f64())
                        .note(format!("{} runs, {errors} errors, in {:.1} s; POST /threads/{{id}}/runs/wait, one thread per client", lat.len(), elapsed.as_secs_f64())),
                );
                rows.push(Row::dist(
                    "end-to-end runs/s",
                    format!("langgraph dev, concurrency {c}: per-run latency"),
                    "ms",
                    &lat,
                ));
            }
            Err(e) => rows.push(
                Row::value(
                    "end-to-end runs/s",
                    format!("langgraph dev, concurrency {c}"),
                    "",
                    f64::NAN,
                )
                .note(format!("FAILED: {e:#}")),
            ),
        }
        lg.drain(Duration::from_secs(60)).await;
    }
    match lg.ttft(scale.ttft_runs).await {
        Ok(lat) => rows.push(
            Row::dist("time to first token", "langgraph dev", "ms", &lat).note(format!(
                "runs/stream, stream_mode messages-tuple; model `{}`",
                scale.ttft_profile
            )),
        ),
        Err(e) => rows.push(
            Row::value("time to first token", "langgraph dev", "", f64::NAN)
                .note(format!("FAILED: {e:#}")),
        ),
    }
    rows
}

fn find<'a>(rows: &'a [Row], scenario: &str, case: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.case == case)
}

/// Ratio rows Paddock : peer for each comparable row; the runs/s rows carry the ≥ 50× target.
pub fn ratios(paddock: &[Row], peer: &[Row], peer_name: &str, scale: &Scale) -> Vec<Row> {
    let mut out = Vec::new();
    let p99 = |r: Option<&Row>| r.and_then(|r| r.summary).map(|s: Summary| s.p99);
    let med = |r: Option<&Row>| r.and_then(|r| r.summary).map(|s: Summary| s.median);
    for &c in &scale.accept_levels {
        let p = find(paddock, "accept latency", &format!("paddock, {c} clients"));
        let l = find(peer, "accept latency", &format!("{peer_name}, {c} clients"));
        if let (Some(a), Some(b), Some(am), Some(bm)) = (p99(p), p99(l), med(p), med(l)) {
            out.push(
                Row::value(
                    "ratio",
                    format!("accept latency, {c} clients: {peer_name} p99 / paddock p99"),
                    "×",
                    b / a.max(1e-9),
                )
                .note(format!(
                    "medians: {peer_name} {bm:.2} ms, paddock {am:.2} ms ({:.1}×)",
                    bm / am.max(1e-9)
                )),
            );
        } else {
            out.push(
                Row::value(
                    "ratio",
                    format!("accept latency, {c} clients"),
                    "",
                    f64::NAN,
                )
                .note("one side has no figure"),
            );
        }
    }
    for &c in &scale.runs_levels {
        let p = find(
            paddock,
            "end-to-end runs/s",
            &format!("paddock, concurrency {c}"),
        )
        .and_then(|r| r.value);
        let l = find(
            peer,
            "end-to-end runs/s",
            &format!("{peer_name}, concurrency {c}"),
        )
        .and_then(|r| r.value);
        match (p, l) {
            (Some(a), Some(b)) if b > 0.0 && a.is_finite() => {
                let ratio = a / b;
                let how = if ratio >= 50.0 {
                    format!("{ratio:.1}× ≥ 50×")
                } else {
                    format!(
                        "missed: {ratio:.1}× (needs 50×; {:.1}× short)",
                        50.0 / ratio.max(1e-9)
                    )
                };
                out.push(
                    Row::value(
                        "ratio",
                        format!("runs/s, concurrency {c}: paddock / {peer_name}"),
                        "×",
                        ratio,
                    )
                    .note(format!("paddock {a:.1} runs/s, {peer_name} {b:.1} runs/s"))
                    .target(
                        "≥ 50× the peer's runs/s",
                        Some(ratio >= 50.0),
                        how,
                    ),
                );
            }
            _ => out.push(
                Row::value("ratio", format!("runs/s, concurrency {c}"), "", f64::NAN)
                    .note("one side has no figure"),
            ),
        }
    }
    let pt = find(
        paddock,
        "time to first token",
        "paddock, token_coalesce 100 ms (default)",
    );
    let lt = find(peer, "time to first token", peer_name);
    if let (Some(a), Some(b)) = (med(pt), med(lt)) {
        out.push(Row::value(
            "ratio",
            format!(
                "time to first token: {peer_name} median / paddock median (default coalescing)"
            ),
            "×",
            b / a.max(1e-9),
        ));
    }
    let pt0 = find(
        paddock,
        "time to first token",
        "paddock, token_coalesce 0 ms (non-default)",
    );
    if let (Some(a), Some(b)) = (med(pt0), med(lt)) {
        out.push(Row::value(
            "ratio",
            format!("time to first token: {peer_name} median / paddock median (coalescing 0 ms)"),
            "×",
            b / a.max(1e-9),
        ));
    }
    out
}
