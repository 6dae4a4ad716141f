//! Paddock's agent runtime.
//!
//! [`Runtime`] owns the running work of a node: its worker claims runnable runs from the
//! [`Store`](paddock_store::Store) with a lease and executes them (model call → tools, gated by
//! steering → model call …), records every step before the next begins, and publishes committed
//! events to live subscribers through the [`EventBus`]. It knows nothing of HTTP or SQL.

pub mod attachments;
pub mod automations;
mod bus;
pub mod compaction;
pub mod credit_hold;
pub mod dreaming;
mod mcp;
pub mod memory;
mod prompt;
pub mod redaction;
mod run_context;
mod runner;
mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod skills;
pub mod steering;
pub mod tools;
pub mod workspace;
pub mod workspace_index;

pub use bus::{EventBus, EventObserver, Subscription};
pub use mcp::ListedMcpTool;
pub use prompt::{fixed_prompt, system_prompt};
pub use runtime::{CancelError, Runtime, RuntimeSettings, UsageObserver};
pub use workspace::{PathError, Workspace};
