use std::time::Duration;

use thiserror::Error;

/// Why a model call failed. [`ModelError::is_retryable`] tells the agent loop whether backing
/// off and trying again can help, and [`ModelError::retry_after`] how long the provider asked it
/// to wait first.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The provider answered with an HTTP error status. `message` names the vendor's error
    /// (e.g. `rate_limit_error: …`) when the body said one.
    #[error("provider answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The delay the provider asked for (`retry-after`, `retry-after-ms`, or Google's
        /// `RetryInfo`), if it said one.
        retry_after: Option<Duration>,
    },
    /// The provider accepted the request but reported an error inside the stream (Anthropic's
    /// `event: error`, an `error` chunk). `kind` is the vendor's error type, e.g.
    /// `overloaded_error`; `status` is the HTTP status the vendor documents for it (529 for
    /// `overloaded_error`), when there is one.
    #[error("provider reported {kind} mid-stream: {message}")]
    StreamError {
        kind: String,
        status: Option<u16>,
        message: String,
    },
    /// The provider sent nothing at all (no headers, no chunk, no keep-alive) for `idle`, the
    /// provider's idle timeout: before answering, or mid-stream.
    #[error("the provider sent nothing for {idle:?} (idle timeout)")]
    IdleTimeout { idle: Duration },
    /// The connection failed, timed out or dropped mid-stream.
    #[error("transport error: {0}")]
    Transport(String),
    /// The provider sent something this adapter cannot understand.
    #[error("unexpected response from provider: {0}")]
    Protocol(String),
    /// The provider declined to answer the request (e.g. a prompt blocked by a safety filter).
    #[error("the provider refused the request: {0}")]
    Refused(String),
    /// The model is not configured here (unknown provider, missing setting, missing file).
    #[error("{0}")]
    NotConfigured(String),
    /// The embedded runtime failed.
    #[error("local model error: {0}")]
    Local(String),
}

impl ModelError {
    /// Transient failures (429, 5xx, a mid-stream overload or server error, transport, an idle
    /// timeout) are
    /// worth retrying; everything else is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Status { status, .. } => retryable_status(*status),
            ModelError::StreamError { status, .. } => status.is_some_and(retryable_status),
            ModelError::Transport(_) | ModelError::IdleTimeout { .. } => true,
            ModelError::Protocol(_)
            | ModelError::Refused(_)
            | ModelError::NotConfigured(_)
            | ModelError::Local(_) => false,
        }
    }

    /// How long the provider asked the caller to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::Status { retry_after, .. } => *retry_after,
            ModelError::StreamError { .. }
            | ModelError::IdleTimeout { .. }
            | ModelError::Transport(_)
            | ModelError::Protocol(_)
            | ModelError::Refused(_)
            | ModelError::NotConfigured(_)
            | ModelError::Local(_) => None,
        }
    }
}

/// 408 (request timeout), 409 (conflict, e.g. a lock), 429 (rate limited) and every 5xx
/// (including Anthropic's 529 overloaded) are transient: the statuses the vendors' own SDKs
/// retry.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}
