//! The slice of Paddock's HTTP API the scenarios drive, over plain reqwest (so the client adds
//! as little as possible to what is measured) and `eventsource-stream` for SSE.

use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A boxed SSE event stream.
pub type Events = Pin<Box<dyn Stream<Item = anyhow::Result<Event>> + Send>>;

/// A server to talk to: base URL and API key.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

/// Refuses any URL whose host is not loopback (the bench only ever targets this machine).
pub fn check_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("{url}: only loopback addresses (127.0.0.0/8, ::1, localhost) may be targeted");
    }
    Ok(())
}

/// An HTTP client suited to many concurrent connections to one host.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The parsed answer to `POST …/messages`.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Time from sending the request to receiving the whole 202 response.
    pub latency: Duration,
    pub run_id: String,
    pub thread_id: String,
}

impl Api {
    /// An API handle for `base` with `key`.
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Api {
        Api {
            http: http_client(),
            base: base.into().trim_end_matches('/').to_owned(),
            key: key.into(),
        }
    }

    /// Creates a deployment on `model` and waits until it is `ready`; returns its id.
    pub async fn ready_deployment(&self, model: &str, name: &str) -> anyhow::Result<String> {
        let body = json!({
            "customer_id": "cus_bench",
            "name": name,
            "system_prompt": "You are a benchmark agent.",
            "model": model,
            // The bench measures the control plane; no tool it scripts needs a container.
            "sandbox": {"enabled": false},
        });
        let resp = self
            .http
            .post(format!("{}/v1/deployments", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let created: Value = resp.json().await?;
        if !status.is_success() {
            bail!("create deployment: {status}: {created}");
        }
        let id = created["deployment_id"]
            .as_str()
            .context("no deployment_id")?
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d: Value = self
                .http
                .get(format!("{}/v1/deployments/{id}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await?
                .json()
                .await?;
            match d["status"].as_str() {
                Some("ready") => return Ok(id),
                Some("provisioning") if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => bail!(
                    "deployment {id} did not become ready: {other:?}: {}",
                    d["error"]
                ),
            }
        }
    }

    /// Creates `n` ready deployments on `model`, a few at a time.
    pub async fn ready_deployments(&self, n: usize, model: &str) -> anyhow::Result<Vec<String>> {
        ready_deployments_across(std::slice::from_ref(self), n, model).await
    }

    /// `POST /v1/deployments/:dep/messages`; `thread` `None` is the default thread.
    pub async fn post_message(
        &self,
        deployment: &str,
        thread: Option<&str>,
        content: &str,
    ) -> anyhow::Result<Accepted> {
        let mut body = json!({"content": content});
        if let Some(t) = thread {
            body["thread_id"] = json!(t);
        }
        let started = Instant::now();
        let resp = self
            .http
            .post(format!(
                "{}/v1/deployments/{deployment}/messages",
                self.base
            ))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let latency = started.elapsed();
        if status != StatusCode::ACCEPTED {
            bail!(
                "POST messages: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let v: Value = serde_json::from_slice(&bytes)?;
        Ok(Accepted {
            latency,
            run_id: v["run_id"].as_str().unwrap_or_default().to_owned(),
            thread_id: v["thread_id"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Opens the deployment's event stream (after `evt_<after>` when given); connected when
    /// this returns.
    pub async fn events(&self, deployment: &str, after: Option<i64>) -> anyhow::Result<Events> {
        let mut req = self
            .http
            .get(format!("{}/v1/deployments/{deployment}/events", self.base))
            .bearer_auth(&self.key)
            .header("Accept", "text/event-stream");
        if let Some(n) = after {
            req = req.query(&[("after", format!("evt_{n}"))]);
        }
        let resp = req.send().await?;
        if !resp.status().is_success() {
            bail!("GET events: {}", resp.status());
        }
        Ok(Box::pin(
            resp.bytes_stream()
                .eventsource()
                .map(|e| e.map_err(|e| anyhow::anyhow!("sse: {e}"))),
        ))
    }
}

/// Creates `n` ready deployments on `model`, a few at a time, the `i`th through
/// `apis[i % apis.len()]` (several nodes of one cluster: each client's deployment is made on
/// the node that client talks to).
pub async fn ready_deployments_across(
    apis: &[Api],
    n: usize,
    model: &str,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(!apis.is_empty(), "no server to create deployments on");
    let made: Vec<anyhow::Result<String>> = futures::stream::iter(0..n)
        .map(|i| async move {
            apis[i % apis.len()]
                .ready_deployment(model, &format!("bench {i}"))
                .await
        })
        .buffered(16)
        .collect()
        .await;
    made.into_iter().collect()
}

/// The `n` of an event's `evt_<n>` id.
pub fn seq(event: &Event) -> Option<i64> {
    event.id.strip_prefix("evt_")?.parse().ok()
}

/// Reads `events` until the terminal `run_status` of `run_id`; calls `on_token` with the
/// delta of each `token` event of that run. Returns the terminal status and its event's seq.
pub async fn wait_terminal(
    events: &mut Events,
    run_id: &str,
    mut on_token: impl FnMut(&str),
) -> anyhow::Result<(String, Option<i64>)> {
    while let Some(e) = events.next().await {
        let e = e?;
        match e.event.as_str() {
            "token" => {
                let d: Value = serde_json::from_str(&e.data)?;
                if d["run_id"] == run_id {
                    on_token(d["delta"].as_str().unwrap_or_default());
                }
            }
            "run_status" => {
                let d: Value = serde_json::from_str(&e.data)?;
                if d["run_id"] == run_id
                    && let Some(s @ ("completed" | "error")) = d["status"].as_str()
                {
                    return Ok((s.to_owned(), seq(&e)));
                }
            }
            _ => {}
        }
    }
    bail!("event stream ended before run {run_id} finished")
}
