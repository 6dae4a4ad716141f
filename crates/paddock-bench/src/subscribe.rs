//! SSE fan-out subscribers: `count` streams on one deployment, each timing the delivery of
//! the user `message` events whose content carries a `t<unix micros>` send stamp. Run in this
//! process for small counts, or in a child (`paddock-bench subscribe`) so 10,000 client
//! sockets do not share the server's open-file limit.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Api;
use crate::fake::{parse_stamp, unix_micros};

/// The prefix of the messages the fan-out scenario sends.
pub const FANOUT_PREFIX: &str = "fanout ";

/// What the subscribers saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Streams that connected.
    pub connected: usize,
    /// Streams that received every message.
    pub complete: usize,
    /// Send-to-receive time of every received message at every stream, ms.
    pub latencies_ms: Vec<f64>,
    /// Streams that failed (connect or mid-stream), with the first error.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Connected subscribers, reading in the background.
pub struct Subscribers {
    tasks: JoinSet<anyhow::Result<Vec<f64>>>,
    connected: usize,
    failed: usize,
    first_error: Option<String>,
}

/// Opens `count` streams on `deployment` (at most 200 connecting at once); each then reads
/// until it has seen `messages` stamped messages. Returns once every stream has connected or
/// failed to.
pub async fn connect(
    api: &Api,
    deployment: &str,
    count: usize,
    messages: usize,
) -> anyhow::Result<Subscribers> {
    let gate = Arc::new(Semaphore::new(200));
    let mut connecting = JoinSet::new();
    for _ in 0..count {
        let api = api.clone();
        let dep = deployment.to_owned();
        let gate = gate.clone();
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            api.events(&dep, None).await
        });
    }
    let mut subs = Subscribers {
        tasks: JoinSet::new(),
        connected: 0,
        failed: 0,
        first_error: None,
    };
    while let Some(joined) = connecting.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(mut events) => {
                subs.connected += 1;
                subs.tasks.spawn(async move {
                    let mut seen = Vec::with_capacity(messages);
                    while seen.len() < messages {
                        let Some(e) = events.next().await else {
                            anyhow::bail!("stream ended");
                        };
                        let e = e?;
                        if e.event != "message" || !e.data.contains(FANOUT_PREFIX) {
                            continue;
                        }
                        let now = unix_micros();
                        let d: Value = serde_json::from_str(&e.data)?;
                        let content = d["content"].as_str().unwrap_or_default();
                        if d["role"] == "user"
                            && let Some(stamp) =
                                content.strip_prefix(FANOUT_PREFIX).and_then(parse_stamp)
                        {
                            seen.push(now.saturating_sub(stamp) as f64 / 1000.0);
                        }
                    }
                    Ok(seen)
                });
            }
            Err(e) => {
                subs.failed += 1;
                subs.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(subs)
}

impl Subscribers {
    /// Streams connected.
    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Waits (at most `limit`) for every stream to see its messages.
    pub async fn finish(mut self, limit: Duration) -> Outcome {
        let mut out = Outcome {
            connected: self.connected,
            failed: self.failed,
            first_error: self.first_error.take(),
            ..Outcome::default()
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(lat) => {
                        out.complete += 1;
                        out.latencies_ms.extend(lat);
                    }
                    Err(e) => {
                        out.failed += 1;
                        out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                },
                Ok(None) => break,
                Err(_) => {
                    out.first_error
                        .get_or_insert_with(|| format!("{} streams timed out", self.tasks.len()));
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        out
    }
}

/// The fan-out run in a child process: spawns `exe subscribe …`, waits for `READY`, runs
/// `send` (which posts the messages), and returns the child's outcome.
pub async fn in_child<F, Fut>(
    exe: &Path,
    api: &Api,
    deployment: &str,
    count: usize,
    messages: usize,
    limit: Duration,
    send: F,
) -> anyhow::Result<Outcome>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut child = Command::new(exe)
        .args([
            "subscribe",
            "--url",
            &api.base,
            "--key",
            &api.key,
            "--deployment",
            deployment,
            "--count",
            &count.to_string(),
            "--messages",
            &messages.to_string(),
            "--timeout-secs",
            &limit.as_secs().to_string(),
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn subscribe child")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(limit, lines.next_line())
        .await
        .context("subscribers did not connect in time")??
        .context("subscribe child exited")?;
    anyhow::ensure!(ready.starts_with("READY"), "unexpected: {ready}");
    send().await?;
    let result = tokio::time::timeout(limit + Duration::from_secs(10), lines.next_line())
        .await
        .context("subscribe child did not report")??
        .context("subscribe child exited without a report")?;
    let _ = child.wait().await;
    Ok(serde_json::from_str(&result)?)
}
