//! Paddock's storage.
//!
//! [`Store`] is the one interface the rest of Paddock uses for persistence; it speaks in domain
//! operations (send a message, record a model response, append events), each one atomic, so a
//! PostgreSQL implementation can follow without callers changing. [`SqliteStore`] is the
//! default implementation. Only this crate knows SQL.

mod cursor;
mod error;
mod rows;
mod sqlite;
mod store;

pub use cursor::{Cursor, PageRequest};
pub use error::StoreError;
pub use rows::*;
pub use sqlite::SqliteStore;
pub use store::{
    BalanceChange, FailOutcome, IdempotencyFingerprint, Paged, Store, ToolCallOutcome,
};
