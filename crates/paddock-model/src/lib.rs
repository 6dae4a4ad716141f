//! Model providers for Paddock.
//!
//! Every provider turns one canonical [`ModelRequest`] into a stream of canonical
//! [`ModelEvent`]s. Vendor JSON lives only in this crate: the agent loop in `paddock-core`
//! never sees an OpenAI or llama.cpp type, so a deployment can switch `model` between runs
//! without losing its history.

pub mod anthropic;
mod canonical;
pub mod catalog;
mod error;
pub mod google;
mod http;
pub mod openai;
mod provider;
mod registry;

#[cfg(feature = "local")]
pub mod local;
pub mod pull;

pub use canonical::{
    Item, Media, MediaKind, MediaSource, ModelEvent, ModelRequest, ToolCall, ToolSpec, Usage,
};
pub use catalog::ModelInfo;
pub use error::ModelError;
pub use http::DEFAULT_IDLE_TIMEOUT;
pub use provider::{ModelProvider, ModelStream};
pub use registry::{
    ModelOverrides, ProviderConfig, ProviderKind, ProviderRegistry, RegistryError,
    builtin_providers,
};
