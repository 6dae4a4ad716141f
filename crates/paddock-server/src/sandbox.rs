//! The sandbox backend this server runs tool commands with (spec §3.3): chosen once at start
//! from the settings, probed for `/readyz` and provisioning. There is never a fallback: a
//! backend that cannot start is a start error, and one that stops working fails `/readyz`,
//! provisioning and the `shell` calls that need it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_sandbox::{
    BubblewrapConfig, BubblewrapSandbox, HostSandbox, HostSandboxConfig, Sandbox, SandboxError,
};

use crate::settings::ServerSettings;

/// The backends this build can run.
pub const BACKENDS: [&str; 2] = ["bubblewrap", "host"];

/// Why the configured backend could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("sandbox backend `{0}` does not exist in this build (available: bubblewrap, host)")]
    Unknown(String),
    #[error(
        "the `host` sandbox backend runs commands with no isolation at all; set \
         `allow_host = true` in [sandbox] to use it (development only)"
    )]
    HostNotAllowed,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Starts the backend the settings name.
pub fn build(settings: &ServerSettings) -> Result<Arc<dyn Sandbox>, BackendError> {
    match settings.sandbox_default.as_str() {
        "bubblewrap" => {
            let mut config = BubblewrapConfig::default();
            if let Some(dir) = &settings.sandbox_runtime_dir {
                config.runtime_dir = dir.clone();
            }
            Ok(Arc::new(BubblewrapSandbox::new(config)?))
        }
        "host" if !settings.sandbox_allow_host => Err(BackendError::HostNotAllowed),
        "host" => Ok(Arc::new(HostSandbox::new(HostSandboxConfig {
            allow_unsafe_host: true,
            ..HostSandboxConfig::default()
        })?)),
        other => Err(BackendError::Unknown(other.to_owned())),
    }
}

/// How long a probe result is reused, so `/readyz` stays cheap under frequent polling.
const PROBE_TTL: Duration = Duration::from_secs(5);

/// [`Sandbox::probe`] with a short-lived cache. Concurrent callers share one probe.
pub struct ProbeCache {
    sandbox: Arc<dyn Sandbox>,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl ProbeCache {
    /// A cache over `sandbox` that has not probed yet.
    pub fn new(sandbox: Arc<dyn Sandbox>) -> Self {
        Self {
            sandbox,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the backend runs a command end to end, at most [`PROBE_TTL`] old; the error
    /// is the backend's reason.
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < PROBE_TTL
        {
            return result.clone();
        }
        let result = self.sandbox.probe().await.map_err(|e| e.to_string());
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
