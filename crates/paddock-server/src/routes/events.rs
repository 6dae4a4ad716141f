//! `GET /v1/deployments/:dep/events`: the deployment's SSE stream (spec §7).
//!
//! A subscriber registers for live events first and learns the last committed id under the
//! deployment's append lock; it then replays from the store up to that id and continues with
//! the live feed above it, so the seam has no gap and no duplicate.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use paddock_protocol::ids::{event_id, parse_event_id};
use paddock_protocol::{EventType, StoredEvent};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{PathIds, deployment_of};
use crate::auth::Caller;
use crate::body::QueryMap;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, StreamSlot};

/// Events read from the store per replay query.
const REPLAY_BATCH: u32 = 500;
/// Frames buffered between the producer task and the HTTP body.
const FRAME_BUFFER: usize = 256;
/// What the client is told to wait before reconnecting.
const RETRY: Duration = Duration::from_millis(3000);

/// Which events a subscriber wants (filters combine with AND).
struct Filter {
    thread_id: Option<String>,
    run_id: Option<String>,
    types: Option<HashSet<EventType>>,
}

impl Filter {
    fn matches(&self, e: &StoredEvent) -> bool {
        if let Some(t) = &self.thread_id
            && e.thread_id.as_deref() != Some(t.as_str())
        {
            return false;
        }
        if let Some(r) = &self.run_id
            && e.run_id.as_deref() != Some(r.as_str())
        {
            return false;
        }
        self.types.as_ref().is_none_or(|t| t.contains(&e.kind))
    }
}

fn parse_after(value: &str, param: &str) -> ApiResult<i64> {
    parse_event_id(value)
        .or_else(|| {
            // `evt_<digits>` too large for an i64 is above every id: a live-only stream (§7.3).
            let digits = value.strip_prefix("evt_")?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(i64::MAX)
        })
        .ok_or_else(|| {
            ApiError::validation(
                param,
                format!("`{param}` must look like evt_<digits>, got `{value}`."),
            )
        })
}

fn frame(e: &StoredEvent) -> Event {
    Event::default()
        .event(e.kind.as_str())
        .id(event_id(e.seq))
        .data(&e.data)
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/events",
    operation_id = "subscribe_events",
    tag = "events",
    summary = "Stream events (SSE)",
    description = "Scope `deployments:read`. One long-lived Server-Sent Events stream of every event of the deployment, across runs. Frames are `event: <type>`, `id: evt_<n>`, `data: <JSON object>`; the first frame is `retry: 3000`; `: ping` after 15 s of silence. Filters combine with AND (spec §7).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("thread_id" = Option<String>, Query, description = "Only events with this `thread_id` (events without a thread are excluded)."),
        ("run_id" = Option<String>, Query, description = "Only events with this `run_id`."),
        ("types" = Option<String>, Query, description = "Comma-separated event types, e.g. `run_status,steering_request`."),
        ("after" = Option<String>, Query, description = "`evt_<n>`: replay retained events with a larger id, then go live. Wins over `Last-Event-ID`."),
        ("Last-Event-ID" = Option<String>, Header, description = "`evt_<n>`: replay retained events with a larger id, then go live."),
    ),
    responses(
        (status = 200, description = "The event stream (`Cache-Control: no-cache`, `X-Accel-Buffering: no`).", content_type = "text/event-stream", body = String),
        (status = 400, description = "`validation_error`: `Last-Event-ID`/`after` not `evt_<digits>`; an unknown name in `types`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the key already has the maximum number of open streams, or hit its request limit.", body = paddock_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying (≥ 1)."))),
        crate::openapi::CommonErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let after = match query.get("after") {
        Some(a) => Some(parse_after(a, "after")?),
        None => match headers.get("last-event-id") {
            None => None,
            Some(v) => {
                let text = v.to_str().map_err(|_| {
                    ApiError::validation(
                        "Last-Event-ID",
                        "`Last-Event-ID` must look like evt_<digits>.",
                    )
                })?;
                Some(parse_after(text.trim(), "Last-Event-ID")?)
            }
        },
    };
    let types = match query.get("types") {
        None => None,
        Some(list) => {
            let mut set = HashSet::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let kind = EventType::parse(name).ok_or_else(|| {
                    ApiError::validation("types", format!("`{name}` is not an event type."))
                })?;
                set.insert(kind);
            }
            Some(set)
        }
    };
    let filter = Filter {
        thread_id: query.get("thread_id").map(str::to_owned),
        run_id: query.get("run_id").map(str::to_owned),
        types,
    };
    let Some(slot) = state.limiter.open_stream(
        &caller.key_id,
        state.settings.rate_limits.max_streams_per_key,
    ) else {
        return Err(ApiError::rate_limited(
            "This key already has the maximum number of open event streams.",
            5,
        ));
    };
    let subscription = state
        .runtime
        .bus()
        .subscribe(state.store.as_ref(), &d.id)
        .await?;
    // A delete that ran between the lookup above and the subscription would have closed the
    // channel before this subscriber joined a fresh one that nothing ever closes: look again.
    if let Err(gone) = deployment_of(&state, &caller, &d.id).await {
        state.runtime.bus().close(&d.id);
        return Err(gone);
    }
    let (oldest, _) = state.store.event_bounds(&d.id).await?;

    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(FRAME_BUFFER);
    let producer = Producer {
        state: state.clone(),
        deployment_id: d.id,
        filter,
        tx,
        _slot: slot,
    };
    tokio::spawn(producer.run(after, oldest, subscription.after_seq, subscription.receiver));

    let sse = Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new()
            .interval(state.settings.sse_ping_interval)
            .text("ping"),
    );
    let mut response = sse.into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Feeds one subscriber: the retry frame, the replay, then live events, until the client goes
/// away, falls too far behind, the deployment is deleted or the server shuts down.
struct Producer {
    state: AppState,
    deployment_id: String,
    filter: Filter,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    _slot: StreamSlot,
}

impl Producer {
    async fn send(&self, event: Event) -> bool {
        self.tx.send(Ok(event)).await.is_ok()
    }

    async fn run(
        self,
        after: Option<i64>,
        oldest: Option<i64>,
        live_after: i64,
        mut live: broadcast::Receiver<Arc<StoredEvent>>,
    ) {
        let gauge = self.state.metrics.sse_connections.clone();
        gauge.inc();
        let _ = self.stream(after, oldest, live_after, &mut live).await;
        gauge.dec();
    }

    /// `None` when the stream should end.
    async fn stream(
        &self,
        after: Option<i64>,
        oldest: Option<i64>,
        live_after: i64,
        live: &mut broadcast::Receiver<Arc<StoredEvent>>,
    ) -> Option<()> {
        if !self.send(Event::default().retry(RETRY)).await {
            return None;
        }
        let mut last = live_after;
        if let Some(n) = after.filter(|n| *n < live_after) {
            let first_kept = oldest.unwrap_or(live_after + 1);
            if first_kept > n + 1 {
                let data = serde_json::json!({
                    "requested_after": event_id(n),
                    "oldest_available": event_id(first_kept),
                });
                let truncated = Event::default()
                    .event(EventType::ReplayTruncated.as_str())
                    .data(data.to_string());
                if !self.send(truncated).await {
                    return None;
                }
            }
            let mut cursor = n;
            while cursor < live_after {
                let batch = tokio::select! {
                    b = self.state.store.events_after(&self.deployment_id, cursor, REPLAY_BATCH) => b,
                    () = self.state.shutdown.cancelled() => return None,
                };
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "replay failed; closing the stream");
                        return None;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for e in &batch {
                    if e.seq > live_after {
                        break;
                    }
                    cursor = e.seq;
                    if self.filter.matches(e) && !self.send(frame(e)).await {
                        return None;
                    }
                }
                if batch.last().is_some_and(|e| e.seq >= live_after) {
                    break;
                }
            }
        }
        loop {
            let next = tokio::select! {
                n = live.recv() => n,
                () = self.state.shutdown.cancelled() => return None,
                () = self.tx.closed() => return None,
            };
            match next {
                Ok(e) => {
                    if e.seq <= last {
                        continue;
                    }
                    last = e.seq;
                    if self.filter.matches(&e) && !self.send(frame(&e)).await {
                        return None;
                    }
                }
                // Too slow to keep up: disconnect rather than skip (spec §7.3); the client
                // resumes with Last-Event-ID.
                Err(broadcast::error::RecvError::Lagged(_)) => return None,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
