//! Automation records (spec §9) and the firing operation the scheduler claims times with.

use paddock_protocol::StoredEvent;

use crate::RunRecord;

/// An automation as stored, with the status of its latest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationRecord {
    pub id: String,
    pub deployment_id: String,
    pub name: String,
    /// Five-field UTC cron.
    pub schedule: String,
    /// The English text the client sent, or `None` for cron.
    pub schedule_text: Option<String>,
    pub instructions: String,
    pub thread_id: String,
    pub enabled: bool,
    /// `api` or `agent`.
    pub created_by: String,
    /// The next scheduled time not yet claimed; `None` while disabled.
    pub next_run_at: Option<i64>,
    /// The scheduled time of the one firing held while the thread was busy.
    pub deferred_at: Option<i64>,
    /// Derived from the latest run started by the automation (read only).
    pub last_run_at: Option<i64>,
    pub last_run_status: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What kind of firing [`Store::fire_automation`](crate::Store::fire_automation) makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiringKind {
    /// A scheduled time. Claimed only if `next_run_at` still equals `expected`; it becomes
    /// `next`. With `fire` set (the scheduled time to fire for) a run starts, or the firing is
    /// deferred or dropped when the thread is busy; with `fire` unset the time is only skipped.
    /// A deployment that is not `ready` or has `features.automations` off only advances.
    Scheduled {
        expected: i64,
        next: Option<i64>,
        fire: Option<i64>,
    },
    /// The automation's deferred firing, if it still holds one and its thread is idle now.
    Deferred,
    /// The trigger endpoint (`trigger: "manual"`): `Conflict` when the thread is busy,
    /// `LimitReached` at the active-run limit. Does not touch `next_run_at`.
    Manual,
}

/// One firing attempt, all in one transaction.
#[derive(Debug, Clone)]
pub struct FireAutomation {
    pub automation_id: String,
    pub kind: FiringKind,
    /// Ids used if a run starts.
    pub run_id: String,
    pub message_id: String,
    /// Active (`running`) runs allowed per deployment.
    pub max_active_runs: u32,
    pub now: i64,
}

/// A run an automation started: the instructions are a `user` message of its thread.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedRun {
    pub run: RunRecord,
    pub thread_id: String,
    /// `message` then `run_status` `running`/`started`, as for any new run.
    pub events: Vec<StoredEvent>,
}

/// What a firing did.
#[derive(Debug, Clone, PartialEq)]
pub enum FiringResult {
    Started(Box<StartedRun>),
    /// The thread was busy (or the active-run limit reached); this firing is now held.
    Deferred,
    /// The thread was busy and a firing was already held; this one is dropped.
    Dropped,
    /// The time was claimed (`next_run_at` advanced) without firing.
    Advanced,
    /// Nothing changed: another caller claimed the time, the automation changed or is gone,
    /// or (deferred) there is nothing to start yet.
    NotClaimed,
}
