//! Paddock's storage.
//!
//! [`Store`] is the one interface the rest of Paddock uses for persistence; it speaks in domain
//! operations (send a message, record a model response, append events), each one atomic.
//! [`SqliteStore`] (one file, one node) is the default; [`PgStore`] lets several nodes share
//! one PostgreSQL database. Both run the same statements (`src/sql/`); only this crate knows
//! SQL.
//!
//! Runs are a queue: a worker claims a runnable run with a lease (owner node, expiry renewed by
//! a heartbeat), drives it, and every progress write checks the lease, so a run is driven by at
//! most one node and a dead node's runs are picked up from their last checkpoint.

mod automation;
mod cursor;
mod error;
mod memory;
mod postgres;
mod rows;
mod secret_box;
mod skill;
mod sqlite;
mod store;

pub use automation::{AutomationRecord, FireAutomation, FiringKind, FiringResult, StartedRun};
pub use cursor::{Cursor, PageRequest};
pub use error::StoreError;
pub use memory::{MemoryFilter, MemoryRecord, fts_any_terms};
pub use postgres::{PgSettings, PgStore};
pub use rows::*;
pub use secret_box::{SecretBox, SecretBoxError};
pub use skill::SkillRecord;
pub use sqlite::SqliteStore;
pub use store::{
    BalanceChange, EventNotice, FailOutcome, IdempotencyFingerprint, Paged, Store, ToolCallOutcome,
};
