//! The crate's one error type.

use std::io;

/// Why a sandbox operation failed.
///
/// A command that *ran* and failed (non-zero exit, killed by a limit, timed out, cancelled) is not
/// an error: it is a [`CommandOutput`](crate::CommandOutput). These variants mean the sandbox
/// could not do what was asked; the server maps them to `sandbox_error`.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The backend cannot work on this host at all (a missing binary, an unsupported
    /// architecture, user namespaces refused, the host backend without its explicit opt-in).
    #[error("sandbox backend unavailable: {0}")]
    Unavailable(String),

    /// The [`DeploymentSandbox`](crate::DeploymentSandbox) is malformed (bad deployment id, relative
    /// or symlinked workspace, out-of-range limits).
    #[error("invalid sandbox specification: {0}")]
    InvalidSpec(String),

    /// The [`Command`](crate::Command) is malformed (NUL bytes, an oversized script, a bad
    /// environment variable name, a zero timeout).
    #[error("invalid command: {0}")]
    InvalidCommand(String),

    /// Setting the sandbox up failed: workspace ownership, cgroups, bubblewrap itself refusing to
    /// start. The message carries bubblewrap's own diagnostics when there are any.
    #[error("sandbox setup failed: {0}")]
    Setup(String),

    /// `network = internet` was requested but cannot be provided safely here; the command was
    /// not started (the sandbox fails closed rather than running without the egress filter).
    #[error("network mode `internet` is unavailable: {0}")]
    NetworkUnavailable(String),

    /// [`Sandbox::probe`](crate::Sandbox::probe) ran `true` and it did not succeed.
    #[error("sandbox probe failed: {0}")]
    Probe(String),

    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the sandbox was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl SandboxError {
    /// Wraps an [`io::Error`] with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
