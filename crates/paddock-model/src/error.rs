use thiserror::Error;

/// Why a model call failed. `is_retryable` tells the agent loop whether backing off and
/// trying again can help.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The provider answered with an HTTP error status.
    #[error("provider answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The connection failed, timed out or dropped mid-stream.
    #[error("transport error: {0}")]
    Transport(String),
    /// The provider sent something this adapter cannot understand.
    #[error("unexpected response from provider: {0}")]
    Protocol(String),
    /// The model is not configured here (unknown provider, missing setting, missing file).
    #[error("{0}")]
    NotConfigured(String),
    /// The embedded runtime failed.
    #[error("local model error: {0}")]
    Local(String),
}

impl ModelError {
    /// Transient failures (429, 5xx, transport) are worth retrying; everything else is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Status { status, .. } => *status == 429 || *status >= 500,
            ModelError::Transport(_) => true,
            ModelError::Protocol(_) | ModelError::NotConfigured(_) | ModelError::Local(_) => false,
        }
    }
}
