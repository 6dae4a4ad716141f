//! Live delivery of committed events to subscribers of a deployment's stream.
//!
//! The store is the truth; the bus only carries events that are already committed. Appends for
//! one deployment happen under that deployment's lock and are published before it is released,
//! so subscribers see events in sequence order, and a subscriber that registers under the lock
//! knows exactly which sequence number its live feed starts after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use paddock_protocol::StoredEvent;
use paddock_store::{Store, StoreError};
use tokio::sync::{OwnedMutexGuard, broadcast};

/// Events buffered per deployment for slow subscribers; one that falls further behind is
/// disconnected (spec §7.3) and resumes with `Last-Event-ID`.
const CHANNEL_CAPACITY: usize = 4096;

struct Channel {
    append: Arc<tokio::sync::Mutex<()>>,
    tx: broadcast::Sender<Arc<StoredEvent>>,
}

/// Sees every committed event as it is published (metrics derive their counts from this).
pub type EventObserver = Arc<dyn Fn(&StoredEvent) + Send + Sync>;

/// Per-deployment append locks and broadcast channels. Owned by the [`Runtime`](crate::Runtime)
/// and shared with the HTTP layer.
#[derive(Default)]
pub struct EventBus {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    observer: OnceLock<EventObserver>,
}

/// Held while appending events for one deployment; publish them before dropping it.
pub struct AppendGuard {
    _lock: OwnedMutexGuard<()>,
    channel: Arc<Channel>,
    observer: Option<EventObserver>,
}

impl AppendGuard {
    /// Sends committed events to live subscribers, in order.
    pub fn publish(&self, events: &[StoredEvent]) {
        for e in events {
            if let Some(observe) = &self.observer {
                observe(e);
            }
            // No receivers is fine: nobody is listening right now.
            let _ = self.channel.tx.send(Arc::new(e.clone()));
        }
    }
}

/// A live feed of one deployment's events, starting after `after_seq`.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<StoredEvent>>,
    /// The last sequence number committed when the subscription began: live events have
    /// larger ones, replay covers everything up to it.
    pub after_seq: i64,
}

impl EventBus {
    fn channel(&self, deployment_id: &str) -> Arc<Channel> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(deployment_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Channel {
                    append: Arc::new(tokio::sync::Mutex::new(())),
                    tx: broadcast::channel(CHANNEL_CAPACITY).0,
                })
            })
            .clone()
    }

    /// Takes the deployment's append lock.
    pub async fn lock(&self, deployment_id: &str) -> AppendGuard {
        let channel = self.channel(deployment_id);
        let lock = channel.append.clone().lock_owned().await;
        AppendGuard {
            _lock: lock,
            channel,
            observer: self.observer.get().cloned(),
        }
    }

    /// Installs the observer of published events; only the first call has an effect.
    pub fn set_observer(&self, observer: EventObserver) {
        let _ = self.observer.set(observer);
    }

    /// Registers a live subscriber and reads, under the append lock, the last committed
    /// sequence number, so replay and live feed meet with no gap and no duplicate.
    pub async fn subscribe(
        &self,
        store: &dyn Store,
        deployment_id: &str,
    ) -> Result<Subscription, StoreError> {
        let guard = self.lock(deployment_id).await;
        let receiver = guard.channel.tx.subscribe();
        let (_, last) = store.event_bounds(deployment_id).await?;
        drop(guard);
        Ok(Subscription {
            receiver,
            after_seq: last,
        })
    }

    /// Number of live subscribers across all deployments.
    pub fn subscriber_count(&self) -> usize {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|c| c.tx.receiver_count()).sum()
    }

    /// Forgets a deleted deployment: its subscribers see the channel close.
    pub fn close(&self, deployment_id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(deployment_id);
    }
}
