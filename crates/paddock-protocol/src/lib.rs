//! The wire contract of Paddock's HTTP API (`shared/spec/API.md`).
//!
//! This is the only crate that defines the JSON clients see. It knows nothing of tokio, SQL or
//! HTTP frameworks, so the server, the typed client and the tests all share one definition.

pub mod automation;
pub mod error;
pub mod event;
pub mod ids;
pub mod knowledge;
pub mod requests;
pub mod resources;
pub mod time;

pub use automation::*;
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{EventType, StoredEvent};
pub use knowledge::*;
pub use requests::*;
pub use resources::*;
