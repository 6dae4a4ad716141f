//! Paddock's agent runtime.
//!
//! [`Runtime`] owns the running work of a server: it executes runs (model call → tools →
//! model call …), records every step in the [`Store`](paddock_store::Store) before the next
//! begins, and publishes committed events to live subscribers through the [`EventBus`]. It
//! knows nothing of HTTP or SQL.

mod bus;
mod prompt;
mod runner;
mod runtime;
pub mod tools;
pub mod workspace;

pub use bus::{EventBus, EventObserver, Subscription};
pub use runtime::{CancelError, Runtime, RuntimeSettings, UsageObserver};
pub use workspace::{PathError, Workspace};
