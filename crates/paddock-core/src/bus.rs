//! Live delivery of committed events to subscribers of a deployment's stream.
//!
//! The store is the truth; the bus only carries events that are already committed. Appends for
//! one deployment on this node happen under that deployment's lock and are published before it
//! is released, so subscribers see events in sequence order, and a subscriber that registers
//! under the lock knows exactly which sequence number its live feed starts after.
//!
//! Several nodes can append to one deployment (PostgreSQL). Each channel remembers the last
//! sequence number it delivered; events of other nodes are read from the store by a catch-up
//! (on a store notice, a poll, or a gap) under the same lock, and a local publish that would
//! skip a number leaves its events to that catch-up, so every subscriber still gets every event
//! once, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use paddock_protocol::StoredEvent;
use paddock_store::{Store, StoreError};
use tokio::sync::{OwnedMutexGuard, broadcast};

/// Events buffered per deployment for slow subscribers; one that falls further behind is
/// disconnected (spec §7.3) and resumes with `Last-Event-ID`.
const CHANNEL_CAPACITY: usize = 4096;

/// Events read per store query when catching up.
const CATCH_UP_BATCH: u32 = 500;

/// `Channel::delivered` before anything is known.
const UNKNOWN: i64 = -1;

struct Channel {
    append: Arc<tokio::sync::Mutex<()>>,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    /// The last sequence number sent to subscribers, or [`UNKNOWN`]. Changed only under
    /// `append`.
    delivered: AtomicI64,
}

/// Sees every committed event as it is published (metrics derive their counts from this).
pub type EventObserver = Arc<dyn Fn(&StoredEvent) + Send + Sync>;

/// Per-deployment append locks and broadcast channels. Owned by the [`Runtime`](crate::Runtime)
/// and shared with the HTTP layer.
#[derive(Default)]
pub struct EventBus {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    observer: OnceLock<EventObserver>,
    /// Where a publish that found a gap asks for a catch-up of its deployment (the runtime's
    /// event feed task).
    catch_up: OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// Held while appending events for one deployment; publish them before dropping it.
pub struct AppendGuard {
    _lock: OwnedMutexGuard<()>,
    deployment_id: String,
    channel: Arc<Channel>,
    observer: Option<EventObserver>,
    catch_up: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl AppendGuard {
    /// Sends events this node committed to live subscribers, in order. Events a catch-up has
    /// already delivered are skipped; if another node's events came first and have not been
    /// delivered yet, these are left to the catch-up it asks for, which reads both from the
    /// store in order.
    pub fn publish(&self, events: &[StoredEvent]) {
        let mut gap = false;
        for e in events {
            if let Some(observe) = &self.observer {
                observe(e);
            }
            let delivered = self.channel.delivered.load(Ordering::Acquire);
            if gap || (delivered != UNKNOWN && e.seq <= delivered) {
                continue;
            }
            if delivered != UNKNOWN && e.seq != delivered + 1 {
                gap = true;
                continue;
            }
            // No receivers is fine: nobody is listening right now.
            let _ = self.channel.tx.send(Arc::new(e.clone()));
            self.channel.delivered.store(e.seq, Ordering::Release);
        }
        if gap && let Some(catch_up) = &self.catch_up {
            let _ = catch_up.send(self.deployment_id.clone());
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
                    delivered: AtomicI64::new(UNKNOWN),
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
            deployment_id: deployment_id.to_owned(),
            channel,
            observer: self.observer.get().cloned(),
            catch_up: self.catch_up.get().cloned(),
        }
    }

    /// Installs where publishes that found a gap ask for a catch-up; only the first call has
    /// an effect.
    pub fn set_catch_up(&self, requests: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.catch_up.set(requests);
    }

    /// Delivers to this node's subscribers of `deployment_id` the events committed after the
    /// last one they got, whichever node committed them, reading them from the store. Nothing
    /// is read for a deployment nobody here subscribes to. `known_last`, when given, is a
    /// sequence number known to be committed: if it was delivered already, nothing is read.
    pub async fn catch_up(
        &self,
        store: &dyn Store,
        deployment_id: &str,
        known_last: Option<i64>,
    ) -> Result<(), StoreError> {
        let channel = {
            let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(deployment_id) {
                Some(c) => c.clone(),
                None => return Ok(()),
            }
        };
        if let Some(last) = known_last
            && channel.delivered.load(Ordering::Acquire) >= last
        {
            return Ok(());
        }
        let _lock = channel.append.clone().lock_owned().await;
        deliver_missed(&channel, store, deployment_id).await
    }

    /// Catches up every deployment somebody on this node subscribes to.
    pub async fn catch_up_all(&self, store: &dyn Store) -> Result<(), StoreError> {
        let watched: Vec<String> = {
            let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(_, c)| c.tx.receiver_count() > 0)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in watched {
            self.catch_up(store, &id, None).await?;
        }
        Ok(())
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
        let (_, last) = store.event_bounds(deployment_id).await?;
        let channel = &guard.channel;
        let delivered = channel.delivered.load(Ordering::Acquire);
        if delivered == UNKNOWN || channel.tx.receiver_count() == 0 {
            // Nobody here to deliver to: the new subscriber's replay covers all until `last`.
            channel.delivered.store(last, Ordering::Release);
        } else if delivered < last {
            // Another node's events, not delivered yet: the subscribers already here get them
            // first, so the new one's live feed starts exactly after its replay.
            deliver_missed(channel, store, deployment_id).await?;
        }
        let receiver = channel.tx.subscribe();
        let after_seq = channel.delivered.load(Ordering::Acquire).max(last);
        drop(guard);
        Ok(Subscription {
            receiver,
            after_seq,
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

/// Reads and sends the events after `channel.delivered`; the caller holds the append lock.
async fn deliver_missed(
    channel: &Channel,
    store: &dyn Store,
    deployment_id: &str,
) -> Result<(), StoreError> {
    let mut after = channel.delivered.load(Ordering::Acquire);
    if after == UNKNOWN || channel.tx.receiver_count() == 0 {
        // Nobody to deliver to; the next subscriber starts from the store's head.
        channel.delivered.store(UNKNOWN, Ordering::Release);
        return Ok(());
    }
    loop {
        let batch = store
            .events_after(deployment_id, after, CATCH_UP_BATCH)
            .await?;
        for e in &batch {
            let _ = channel.tx.send(Arc::new(e.clone()));
            after = e.seq;
        }
        channel.delivered.store(after, Ordering::Release);
        if batch.len() < CATCH_UP_BATCH as usize {
            return Ok(());
        }
    }
}
