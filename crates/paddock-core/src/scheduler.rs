//! The automation scheduler's decisions (spec §9.3), independent of storage and of real time.
//!
//! Time comes from a [`Clock`] (the system clock in the server, a settable [`TestClock`] in
//! tests: nothing here sleeps for correctness). Firings are claimed through a [`FiringStore`]
//! (in the server, [`crate::automations::StoreFirings`] over the `Store`)
//! whose [`FiringStore::fire`] must be one transaction that advances `next_run_at` only if it
//! still holds the value the scheduler read (`UPDATE … WHERE id = ? AND next_run_at = ?`) and,
//! in the same transaction, records the run or the deferral. So a scheduled time is claimed by
//! exactly one caller, whichever node or process asks, and a crash leaves it either fired or
//! not, never fired twice.
//!
//! Rules:
//! - At each tick, every enabled automation whose `next_run_at` is at or before now is due.
//!   The latest scheduled time not after now is fired once if it is within the catch-up window
//!   (one hour by default), else dropped (`missed`); earlier missed times are never fired.
//!   `next_run_at` becomes the first scheduled time after now.
//! - A firing whose target thread has an active run is deferred: the automation holds at most
//!   one deferred firing, started when the thread is idle; further firings meanwhile are
//!   dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::schedule;

/// Where "now" comes from (Unix seconds).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        paddock_protocol::time::now_unix()
    }
}

/// A clock tests set and advance by hand.
#[derive(Debug, Default)]
pub struct TestClock(AtomicI64);

impl TestClock {
    /// A clock showing `now`.
    pub fn at(now: i64) -> Arc<TestClock> {
        Arc::new(TestClock(AtomicI64::new(now)))
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An automation as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub automation_id: String,
    /// Whose events the firing appends (the caller takes the deployment's append lock).
    pub deployment_id: String,
    pub cron: String,
    /// The `next_run_at` the store holds; the claim is conditional on it.
    pub next_run_at: i64,
}

/// What [`FiringStore::fire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// The run started (the instructions are in the thread, `trigger: "schedule"`).
    Started,
    /// The thread was busy; the firing is now the automation's deferred one.
    Deferred,
    /// The thread was busy and a firing was already deferred; this one is dropped.
    Dropped,
    /// The time was claimed without firing: `fire` was unset, or the deployment cannot run
    /// automations now (not `ready`, or `features.automations` off).
    Skipped,
    /// `next_run_at` no longer held the expected value: someone else claimed this time (another
    /// node, or an earlier process before a restart), or the automation changed. Nothing done.
    NotClaimed,
}

/// Why a firing produced no run now: the labels of `paddock_automation_firings_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Fired,
    Deferred,
    Dropped,
    Missed,
    DeferredStarted,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fired => "fired",
            Outcome::Deferred => "deferred",
            Outcome::Dropped => "dropped",
            Outcome::Missed => "missed",
            Outcome::DeferredStarted => "deferred_started",
        }
    }
}

/// Storage operations the scheduler needs; each is atomic.
#[async_trait::async_trait]
pub trait FiringStore: Send + Sync {
    /// Enabled automations (of deployments with `features.automations`) whose `next_run_at` is
    /// at or before `now`.
    async fn due(&self, now: i64) -> Vec<Due>;
    /// In one transaction: if the automation's `next_run_at` is still `expected`, set it to
    /// `next` and, when `fire` is set, start the run for scheduled time `scheduled_at` (or defer
    /// or drop it if the thread is busy). With `fire` unset the time is only skipped.
    async fn fire(&self, due: &Due, next: Option<i64>, fire: Option<i64>, now: i64) -> FireOutcome;
    /// Starts deferred firings whose thread is now idle (clearing them in the same
    /// transaction); returns the automations started.
    async fn start_deferred(&self, now: i64) -> Vec<String>;
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// How far back a missed time may be and still fire once after downtime.
    pub catch_up_window_secs: i64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            catch_up_window_secs: 3600,
        }
    }
}

/// The latest time of `cron` in `[from, now]`, `from` being a scheduled time not after `now`.
/// A binary search on "the first scheduled time at or after x is not after now", so weeks of
/// downtime of an every-minute schedule take a few dozen evaluations.
fn latest_at_or_before(cron: &str, from: i64, now: i64) -> i64 {
    let (mut lo, mut hi) = (from, now.max(from));
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        if schedule::next_after(cron, mid - 1).is_some_and(|t| t <= now) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// One pass of the scheduler at the clock's current time. Returns what happened, per
/// automation, for metrics and tests.
pub async fn tick(
    store: &dyn FiringStore,
    clock: &dyn Clock,
    settings: SchedulerSettings,
) -> Vec<(String, Outcome)> {
    let now = clock.now();
    let mut out = Vec::new();
    for id in store.start_deferred(now).await {
        out.push((id, Outcome::DeferredStarted));
    }
    for due in store.due(now).await {
        let latest = latest_at_or_before(&due.cron, due.next_run_at, now);
        let next = schedule::next_after(&due.cron, now);
        let within = now - latest <= settings.catch_up_window_secs;
        let fire = within.then_some(latest);
        let outcome = store.fire(&due, next, fire, now).await;
        let label = match (outcome, within) {
            (FireOutcome::NotClaimed, _) => continue,
            (_, false) => Outcome::Missed,
            (FireOutcome::Skipped, true) => continue,
            (FireOutcome::Started, true) => Outcome::Fired,
            (FireOutcome::Deferred, true) => Outcome::Deferred,
            (FireOutcome::Dropped, true) => Outcome::Dropped,
        };
        out.push((due.automation_id, label));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[derive(Debug, Clone)]
    struct Row {
        cron: String,
        enabled: bool,
        next_run_at: Option<i64>,
        deferred: Option<i64>,
        busy: bool,
        /// Scheduled times that started a run, in order.
        runs: Vec<i64>,
    }

    /// An in-memory store whose operations are atomic under one lock, as the SQL ones are
    /// under one transaction.
    #[derive(Default)]
    struct MemStore(Mutex<BTreeMap<String, Row>>);

    impl MemStore {
        fn add(&self, id: &str, cron: &str, now: i64) {
            self.0.lock().unwrap().insert(
                id.to_owned(),
                Row {
                    cron: cron.to_owned(),
                    enabled: true,
                    next_run_at: schedule::next_after(cron, now),
                    deferred: None,
                    busy: false,
                    runs: Vec::new(),
                },
            );
        }
        fn row(&self, id: &str) -> Row {
            self.0.lock().unwrap()[id].clone()
        }
        fn with(&self, id: &str, f: impl FnOnce(&mut Row)) {
            f(self.0.lock().unwrap().get_mut(id).unwrap());
        }
    }

    #[async_trait::async_trait]
    impl FiringStore for MemStore {
        async fn due(&self, now: i64) -> Vec<Due> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, r)| r.enabled && r.next_run_at.is_some_and(|n| n <= now))
                .map(|(id, r)| Due {
                    automation_id: id.clone(),
                    deployment_id: "dep_test".to_owned(),
                    cron: r.cron.clone(),
                    next_run_at: r.next_run_at.unwrap(),
                })
                .collect()
        }
        async fn fire(
            &self,
            due: &Due,
            next: Option<i64>,
            fire: Option<i64>,
            _now: i64,
        ) -> FireOutcome {
            let expected = due.next_run_at;
            let mut rows = self.0.lock().unwrap();
            let row = rows.get_mut(&due.automation_id).unwrap();
            if row.next_run_at != Some(expected) || !row.enabled {
                return FireOutcome::NotClaimed;
            }
            row.next_run_at = next;
            let Some(t) = fire else {
                return FireOutcome::Started;
            };
            if !row.busy {
                row.runs.push(t);
                FireOutcome::Started
            } else if row.deferred.is_none() {
                row.deferred = Some(t);
                FireOutcome::Deferred
            } else {
                FireOutcome::Dropped
            }
        }
        async fn start_deferred(&self, _now: i64) -> Vec<String> {
            let mut started = Vec::new();
            for (id, row) in self.0.lock().unwrap().iter_mut() {
                if !row.busy
                    && let Some(t) = row.deferred.take()
                {
                    row.runs.push(t);
                    started.push(id.clone());
                }
            }
            started
        }
    }

    fn settings() -> SchedulerSettings {
        SchedulerSettings::default()
    }

    #[tokio::test]
    async fn fires_at_the_scheduled_instants_and_only_then() {
        let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
        let store = MemStore::default();
        store.add("auto_a", "*/15 * * * *", clock.now());
        assert_eq!(
            store.row("auto_a").next_run_at,
            Some(at("2026-06-11T10:15:00Z"))
        );

        clock.set(at("2026-06-11T10:14:59Z"));
        assert!(tick(&store, clock.as_ref(), settings()).await.is_empty());
        clock.set(at("2026-06-11T10:15:00Z"));
        assert_eq!(
            tick(&store, clock.as_ref(), settings()).await,
            vec![("auto_a".to_owned(), Outcome::Fired)]
        );
        clock.set(at("2026-06-11T10:15:40Z"));
        assert!(tick(&store, clock.as_ref(), settings()).await.is_empty());
        clock.set(at("2026-06-11T10:30:02Z"));
        tick(&store, clock.as_ref(), settings()).await;
        let row = store.row("auto_a");
        assert_eq!(
            row.runs,
            vec![at("2026-06-11T10:15:00Z"), at("2026-06-11T10:30:00Z")]
        );
        assert_eq!(row.next_run_at, Some(at("2026-06-11T10:45:00Z")));
    }

    #[tokio::test]
    async fn a_time_fires_once_whoever_ticks_and_across_a_restart() {
        let clock = TestClock::at(at("2026-06-11T08:59:00Z"));
        let store = Arc::new(MemStore::default());
        store.add("auto_a", "0 9 * * *", clock.now());
        clock.set(at("2026-06-11T09:00:00Z"));

        // Two schedulers (two nodes, or the process before and after a restart) read the same
        // due row; only one claim succeeds.
        let due = store.due(clock.now()).await;
        assert_eq!(due.len(), 1);
        let first = store
            .fire(
                &due[0],
                Some(at("2026-06-12T09:00:00Z")),
                Some(due[0].next_run_at),
                clock.now(),
            )
            .await;
        // The second one read `due` before the first claim committed.
        let second = store
            .fire(
                &due[0],
                Some(at("2026-06-12T09:00:00Z")),
                Some(due[0].next_run_at),
                clock.now(),
            )
            .await;
        assert_eq!(
            (first, second),
            (FireOutcome::Started, FireOutcome::NotClaimed)
        );

        // Concurrent ticks: still one run.
        let (a, b) = tokio::join!(
            tick(store.as_ref(), clock.as_ref(), settings()),
            tick(store.as_ref(), clock.as_ref(), settings())
        );
        assert!(a.is_empty() && b.is_empty(), "already claimed: {a:?} {b:?}");
        // "Restart": a fresh scheduler at the same instant and a minute later.
        clock.advance(60);
        assert!(
            tick(store.as_ref(), clock.as_ref(), settings())
                .await
                .is_empty()
        );
        assert_eq!(store.row("auto_a").runs, vec![at("2026-06-11T09:00:00Z")]);
    }

    #[tokio::test]
    async fn a_busy_thread_defers_one_firing_and_drops_the_rest() {
        let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
        let store = MemStore::default();
        store.add("auto_a", "*/5 * * * *", clock.now());
        store.with("auto_a", |r| r.busy = true);
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            clock.advance(300);
            outcomes.extend(tick(&store, clock.as_ref(), settings()).await);
        }
        assert_eq!(
            outcomes.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
            vec![Outcome::Deferred, Outcome::Dropped, Outcome::Dropped]
        );
        assert!(store.row("auto_a").runs.is_empty());
        // The thread's run ends: the one deferred firing starts, once.
        store.with("auto_a", |r| r.busy = false);
        clock.advance(1);
        assert_eq!(
            tick(&store, clock.as_ref(), settings()).await,
            vec![("auto_a".to_owned(), Outcome::DeferredStarted)]
        );
        clock.advance(1);
        assert!(tick(&store, clock.as_ref(), settings()).await.is_empty());
        assert_eq!(store.row("auto_a").runs, vec![at("2026-06-11T10:05:00Z")]);
    }

    #[tokio::test]
    async fn downtime_fires_once_within_the_window_and_drops_older_times() {
        // Hourly, down from 10:30 to 13:20: 11:00, 12:00, 13:00 were missed; 13:00 is within
        // the hour, so it fires once, and 14:00 is next.
        let clock = TestClock::at(at("2026-06-11T10:30:00Z"));
        let store = MemStore::default();
        store.add("hourly", "0 * * * *", clock.now());
        store.add("daily", "0 9 * * *", at("2026-06-11T08:00:00Z"));
        clock.set(at("2026-06-11T13:20:00Z"));
        let mut outcomes = tick(&store, clock.as_ref(), settings()).await;
        outcomes.sort();
        assert_eq!(
            outcomes,
            vec![
                ("daily".to_owned(), Outcome::Missed),
                ("hourly".to_owned(), Outcome::Fired),
            ]
        );
        assert_eq!(store.row("hourly").runs, vec![at("2026-06-11T13:00:00Z")]);
        assert_eq!(
            store.row("hourly").next_run_at,
            Some(at("2026-06-11T14:00:00Z"))
        );
        // Daily at 9 missed by more than an hour: dropped, next is tomorrow.
        assert!(store.row("daily").runs.is_empty());
        assert_eq!(
            store.row("daily").next_run_at,
            Some(at("2026-06-12T09:00:00Z"))
        );

        // A wider window catches the daily one up.
        let store = MemStore::default();
        store.add("daily", "0 9 * * *", at("2026-06-11T08:00:00Z"));
        let wide = SchedulerSettings {
            catch_up_window_secs: 6 * 3600,
        };
        assert_eq!(
            tick(&store, clock.as_ref(), wide).await,
            vec![("daily".to_owned(), Outcome::Fired)]
        );
        assert_eq!(store.row("daily").runs, vec![at("2026-06-11T09:00:00Z")]);
    }

    #[tokio::test]
    async fn paused_automations_do_not_fire_and_resume_from_now() {
        let clock = TestClock::at(at("2026-06-11T10:00:00Z"));
        let store = MemStore::default();
        store.add("auto_a", "*/10 * * * *", clock.now());
        // Pause: `next_run_at` is null while disabled (spec §9.1).
        store.with("auto_a", |r| {
            r.enabled = false;
            r.next_run_at = None;
        });
        clock.set(at("2026-06-11T11:05:00Z"));
        assert!(tick(&store, clock.as_ref(), settings()).await.is_empty());
        // Resume: the next time is computed from now; the paused period is not caught up.
        store.with("auto_a", |r| {
            r.enabled = true;
            r.next_run_at = schedule::next_after(&r.cron, at("2026-06-11T11:05:00Z"));
        });
        assert!(tick(&store, clock.as_ref(), settings()).await.is_empty());
        clock.set(at("2026-06-11T11:10:00Z"));
        tick(&store, clock.as_ref(), settings()).await;
        assert_eq!(store.row("auto_a").runs, vec![at("2026-06-11T11:10:00Z")]);
    }

    #[test]
    fn the_latest_missed_time_is_found_from_either_side() {
        let cron = "0 * * * *";
        let from = at("2026-06-11T11:00:00Z");
        assert_eq!(
            latest_at_or_before(cron, from, at("2026-06-11T13:20:00Z")),
            at("2026-06-11T13:00:00Z")
        );
        assert_eq!(
            latest_at_or_before(cron, from, at("2026-06-11T13:00:00Z")),
            at("2026-06-11T13:00:00Z")
        );
        assert_eq!(latest_at_or_before(cron, from, from), from);
        // Weeks of downtime of an every-minute schedule are answered quickly.
        let m = "* * * * *";
        assert_eq!(
            latest_at_or_before(m, from, at("2026-07-30T05:07:30Z")),
            at("2026-07-30T05:07:00Z")
        );
    }
}
