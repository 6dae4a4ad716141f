//! Paddock's agent runtime.
//!
//! [`Runtime`] owns the running work of a node: its worker claims runnable runs from the
//! [`Store`](paddock_store::Store) with a lease and executes them (model call → tools, gated by
//! steering → model call …), records every step before the next begins, and publishes committed
//! events to live subscribers through the [`EventBus`]. It knows nothing of HTTP or SQL.

mod bus;
mod prompt;
mod runner;
mod runtime;
pub mod steering;
pub mod tools;
pub mod workspace;

pub use bus::{EventBus, EventObserver, Subscription};
pub use runtime::{CancelError, Runtime, RuntimeSettings, UsageObserver};
pub use workspace::{PathError, Workspace};
