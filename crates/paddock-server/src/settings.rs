//! Everything the server can be told at start-up. The CLI builds this from `paddock.toml`,
//! `PADDOCK_*` environment variables and flags (in that order of precedence); tests build it
//! directly. Every field's default is documented in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use paddock_model::ProviderConfig;

/// The server's configuration. Owned by [`crate::Server`] once started.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Where the database, workspaces, models and key files live.
    pub data_dir: PathBuf,
    /// Base URL used in URLs Paddock returns (`events.url`), without a trailing slash.
    pub public_url: String,
    /// The model a deployment gets when it names none (`provider/name`).
    pub default_model: String,
    /// Operator-declared providers (`[providers.NAME]`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Embedded models usable as `local/<name>`, by name → GGUF path.
    pub local_models: BTreeMap<String, PathBuf>,
    /// Threads the embedded model may use.
    pub local_threads: usize,
    /// Limits on requests and fields (spec §1.12).
    pub limits: Limits,
    /// Rate limits (spec §1.11).
    pub rate_limits: RateLimits,
    /// How long events are kept (spec §7.3).
    pub event_retention: Duration,
    /// How often a silent stream gets `: ping`.
    pub sse_ping_interval: Duration,
    /// How long provisioning may take before the deployment goes to `error`.
    pub provisioning_timeout: Duration,
    /// How long a retained workspace archive is kept after a deployment is deleted.
    pub snapshot_retention: Duration,
    /// The sandbox backend deployments get when they name none, and the ones they may name.
    pub sandbox_default: String,
    pub sandbox_backends: Vec<String>,
    /// Upper bounds a deployment's `sandbox` may ask for.
    pub sandbox_max_cpus: f64,
    pub sandbox_max_memory_mb: u32,
    /// Knobs of the run loop.
    pub max_steps: i64,
    pub model_retry_window: Duration,
    pub max_output_tokens: Option<u32>,
    pub token_coalesce: Duration,
    /// This node's id, written as the owner of the run leases it takes. `None`: the id kept in
    /// `<data_dir>/node_id` (created on first start), so a restart takes back its runs at once.
    /// Must be unique among the nodes sharing a database.
    pub node_id: Option<String>,
    /// How long a run's lease lasts without renewal: how long a dead node's runs wait before
    /// another node may take them over.
    pub lease_duration: Duration,
    /// How often a node renews the leases of the runs it drives.
    pub heartbeat_interval: Duration,
    /// Steering requests unanswered this long end their run with `steering_timeout` (spec
    /// §6.5); `None` is off.
    pub steering_timeout: Option<Duration>,
    /// Token that `/metrics` requires, if any.
    pub metrics_token: Option<String>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// Size and count limits (spec §1.12).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum JSON request body, in bytes.
    pub json_body_bytes: usize,
    /// Maximum characters of a message's `content` and of a `system_prompt`.
    pub content_chars: usize,
}

/// Rate limits (spec §1.11); `None` is off.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Token bucket per key: sustained requests per second and burst.
    pub requests_per_second: Option<f64>,
    pub request_burst: Option<u32>,
    /// Open SSE streams per key.
    pub max_streams_per_key: Option<u32>,
    /// Active (`running`) runs per deployment.
    pub max_active_runs_per_deployment: u32,
}

impl ServerSettings {
    /// Defaults for a server rooted at `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir,
            public_url: "http://localhost:8787".to_owned(),
            default_model: format!("local/{}", paddock_model::pull::DEFAULT_LOCAL_MODEL),
            providers: BTreeMap::new(),
            local_models: BTreeMap::new(),
            local_threads: 2,
            limits: Limits {
                json_body_bytes: 1024 * 1024,
                content_chars: 100_000,
            },
            rate_limits: RateLimits {
                requests_per_second: None,
                request_burst: None,
                max_streams_per_key: None,
                max_active_runs_per_deployment: 8,
            },
            event_retention: Duration::from_secs(7 * 24 * 3600),
            sse_ping_interval: Duration::from_secs(15),
            provisioning_timeout: Duration::from_secs(300),
            snapshot_retention: Duration::from_secs(30 * 24 * 3600),
            sandbox_default: "bubblewrap".to_owned(),
            sandbox_backends: vec!["bubblewrap".to_owned()],
            sandbox_max_cpus: 4.0,
            sandbox_max_memory_mb: 16384,
            max_steps: 200,
            model_retry_window: Duration::from_secs(600),
            max_output_tokens: None,
            token_coalesce: Duration::from_millis(100),
            node_id: None,
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            steering_timeout: None,
            metrics_token: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("paddock.db")
    }

    /// Where deployments' workspaces live.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.data_dir.join("workspaces")
    }

    /// Where model files live.
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }

    /// Where workspaces of deleted deployments are archived (`retain_filesystem=true`).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// The file that keeps this node's id when `node_id` is not configured.
    pub fn node_id_path(&self) -> PathBuf {
        self.data_dir.join("node_id")
    }

    /// The file the first admin key is written to.
    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
}
