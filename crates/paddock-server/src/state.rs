//! What every handler shares: the store, the runtime, the settings, metrics and the in-memory
//! rate-limit books.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use paddock_core::Runtime;
use paddock_protocol::time::now_unix;
use paddock_store::Store;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::settings::ServerSettings;

/// Shared server state; cheap to clone (everything is behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<Runtime>,
    pub settings: Arc<ServerSettings>,
    pub metrics: Arc<Metrics>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) touches: Arc<crate::auth::TouchBook>,
    /// Cancelled when the server shuts down: open event streams end.
    pub shutdown: CancellationToken,
    /// The sandbox backend's cached probe (`/readyz`).
    pub(crate) sandbox_probe: Arc<crate::sandbox::ProbeCache>,
    /// Wakes the automation scheduler before its next tick: a run changed status here, so a
    /// held firing may be able to start (spec §9.3).
    pub(crate) scheduler_wake: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        settings: ServerSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let observer = metrics.clone();
        let scheduler_wake = Arc::new(tokio::sync::Notify::new());
        let wake = scheduler_wake.clone();
        runtime.bus().set_observer(Arc::new(move |e| {
            observer.observe_event(e);
            if e.kind == paddock_protocol::EventType::RunStatus {
                wake.notify_one();
            }
        }));
        let observer = metrics.clone();
        runtime.set_usage_observer(Arc::new(move |provider, input, output| {
            observer.observe_tokens(provider, input, output);
        }));
        let sandbox_probe = Arc::new(crate::sandbox::ProbeCache::new(runtime.sandbox().clone()));
        Self {
            sandbox_probe,
            scheduler_wake,
            store,
            runtime,
            metrics,
            limiter: Arc::new(RateLimiter::default()),
            touches: Arc::new(crate::auth::TouchBook::default()),
            settings: Arc::new(settings),
            shutdown,
        }
    }
}

/// Per-key token buckets and open-stream counts (spec §1.11), in this node's memory. The
/// buckets are used only when the store is not shared (one node); nodes sharing a store take
/// from buckets in it. Open-stream counts are always this node's own.
#[derive(Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    streams: Mutex<HashMap<String, u32>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// Takes one request token for `key_id`; `Err(seconds)` to wait when the bucket is empty.
    pub(crate) fn take(&self, key_id: &str, rate: f64, burst: u32) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(key_id.to_owned()).or_insert(Bucket {
            tokens: f64::from(burst),
            refilled: now,
        });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(burst.max(1)));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate.max(f64::MIN_POSITIVE);
            Err(wait.ceil().clamp(1.0, 3600.0) as u64)
        }
    }

    /// Registers an open stream for `key_id` unless it already has `max`.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        key_id: &str,
        max: Option<u32>,
    ) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = streams.entry(key_id.to_owned()).or_insert(0);
        if max.is_some_and(|m| *n >= m) {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            limiter: self.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

/// An open SSE stream counted against its key; released on drop.
pub(crate) struct StreamSlot {
    limiter: Arc<RateLimiter>,
    key_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .limiter
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.key_id);
            }
        }
    }
}

/// Background housekeeping: drops events past retention, idempotency records past 24 h and
/// expired workspace snapshots, once at start and then hourly, until shutdown.
pub(crate) fn spawn_maintenance(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::provisioning::SNAPSHOT_PRUNE_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = state.shutdown.cancelled() => return,
            }
            let now = now_unix();
            let retention =
                i64::try_from(state.settings.event_retention.as_secs()).unwrap_or(i64::MAX);
            match state
                .store
                .prune_events(now.saturating_sub(retention))
                .await
            {
                Ok(n) if n > 0 => tracing::info!(events = n, "pruned events past retention"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not prune events"),
            }
            if let Err(e) = state.store.prune_idempotency(now - 24 * 3600).await {
                tracing::warn!(error = %e, "could not prune idempotency keys");
            }
            crate::provisioning::prune_snapshots(&state).await;
        }
    });
}
