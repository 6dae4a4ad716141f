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
    /// Where workspaces and snapshots live, when not under `data_dir`: on several nodes, one
    /// filesystem they all mount (NFS, CephFS, EFS…), checked at start-up
    /// (`docs/scaling-out.md`).
    pub shared_dir: Option<PathBuf>,
    /// The database: SQLite in `data_dir` unless a PostgreSQL URL is set.
    pub database: DatabaseSettings,
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
    /// The sandbox backend this server runs commands with (`bubblewrap`, the default, or
    /// `host`, which needs `sandbox_allow_host`). Deployments get it when they name none.
    pub sandbox_default: String,
    /// The `sandbox.type` values deployments may name. [`crate::Server::start`] sets it to the
    /// one backend it started, so a deployment can only name the backend actually used.
    pub sandbox_backends: Vec<String>,
    /// The operator's explicit consent to the `host` backend, which runs commands with no
    /// isolation at all (development only). Default `false`.
    pub sandbox_allow_host: bool,
    /// Upper bounds a deployment's `sandbox` may ask for.
    pub sandbox_max_cpus: f64,
    pub sandbox_max_memory_mb: u32,
    /// Default timeout of a `shell` command and the cap of its `timeout_s` (default 300 s).
    pub sandbox_command_timeout: Duration,
    /// Cap on processes and threads of one deployment's commands (default 512).
    pub sandbox_max_processes: u32,
    /// Bytes kept of each of a command's stdout and stderr (default 1 MiB).
    pub sandbox_output_cap: usize,
    /// Where the bubblewrap backend keeps its generated files; `None`: its default
    /// (`/run/paddock-sandbox` as root).
    pub sandbox_runtime_dir: Option<PathBuf>,
    /// A tool result longer than this is saved to the workspace and cut (spec §13.1; default
    /// 32 KiB).
    pub large_output_bytes: usize,
    /// How much of a cut result the model still gets (default 16 KiB).
    pub large_output_preview_bytes: usize,
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
    /// How often the worker looks for runnable runs nothing woke it for (runs of a dead
    /// node whose lease expired, steering requests past the timeout).
    pub claim_poll_interval: Duration,
    /// Runs this node drives at once; more runnable runs wait in the store.
    pub max_concurrent_runs: usize,
    /// Steering requests unanswered this long end their run with `steering_timeout` (spec
    /// §6.5); `None` is off.
    pub steering_timeout: Option<Duration>,
    /// Budget of the memory block put into each run's context, in estimated tokens (a quarter
    /// of the characters); past it, the memories most relevant to the thread are chosen
    /// (spec §10).
    pub memory_context_tokens: u64,
    /// Which addresses outbound requests for clients (attachments, `url` skills, MCP servers)
    /// may reach beyond the public internet (spec §1.13). Default: none.
    pub outbound: paddock_net::AddressPolicy,
    /// Largest attachment a run fetches, in bytes (spec §4.3; default 50 MiB).
    pub attachment_max_bytes: u64,
    /// How long fetching one attachment may take in all (spec §4.3; default 60 s).
    pub attachment_timeout: Duration,
    /// How long connecting to an MCP server and listing its tools may take at a run start
    /// (spec §14.2; default 10 s).
    pub mcp_connect_timeout: Duration,
    /// How long one MCP tool call may take before it fails (spec §14.2; default 120 s).
    pub mcp_call_timeout: Duration,
    /// The master key secrets are encrypted with (spec §15.2). `None`: `PADDOCK_MASTER_KEY`
    /// from the environment (32 bytes as base64 or hex), else `<data_dir>/master.key` (created
    /// with a random key, mode 0600, on first start). Its `Debug` shows nothing of the key.
    pub master_key: Option<paddock_store::SecretBox>,
    /// Dreaming passes (spec §3.4): idle time, interval, how often to look, and the clock.
    pub dreaming: paddock_core::dreaming::DreamingSettings,
    /// Token that `/metrics` requires, if any.
    pub metrics_token: Option<String>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Automations (spec §9): the scheduler's tick, the catch-up window after downtime, the
    /// shortest schedule interval, and the clock (tests inject a `TestClock`).
    pub automations: AutomationSettings,
}

/// The `[database]` settings.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// `postgres://…`: the PostgreSQL database several nodes share. `None`: SQLite at
    /// `<data_dir>/paddock.db`.
    pub url: Option<String>,
    /// Connections this node opens to PostgreSQL.
    pub max_connections: u32,
    /// How long a request waits for a free PostgreSQL connection.
    pub acquire_timeout: Duration,
    /// How often a node looks for events other nodes committed, in case their notification
    /// was missed (a missed one only delays delivery by up to this long).
    pub event_poll_interval: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            event_poll_interval: Duration::from_secs(2),
        }
    }
}

// The URL may carry a password: `Debug` shows only whether one is set.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_ref().map(|_| "[set]"))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("event_poll_interval", &self.event_poll_interval)
            .finish()
    }
}

/// The `[automations]` settings.
#[derive(Debug, Clone)]
pub struct AutomationSettings {
    /// How often the scheduler looks for due automations and held firings.
    pub tick_interval: Duration,
    /// A missed time this recent still fires once after downtime; older ones are dropped.
    pub catch_up_window_secs: i64,
    /// Schedules firing more often than this are refused (`param: "schedule"`).
    pub min_interval_secs: u64,
    /// Where "now" comes from for firing decisions and `next_run_at`.
    pub clock: std::sync::Arc<dyn paddock_core::scheduler::Clock>,
}

impl Default for AutomationSettings {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_secs(1),
            catch_up_window_secs: 3600,
            min_interval_secs: paddock_core::automations::DEFAULT_MIN_INTERVAL_SECS,
            clock: std::sync::Arc::new(paddock_core::scheduler::SystemClock),
        }
    }
}

/// Size and count limits (spec §1.12).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum JSON request body, in bytes.
    pub json_body_bytes: usize,
    /// Maximum characters of a message's `content` and of a `system_prompt`.
    pub content_chars: usize,
    /// Maximum bytes of file content a Files API upload may carry (spec §1.12); the JSON
    /// (base64) form may have a body up to 4/3 of this plus 64 KiB.
    pub file_upload_bytes: usize,
}

impl Limits {
    /// The largest body `PUT …/files` reads in its JSON form: base64 of the largest file plus
    /// room for the rest of the object.
    pub fn file_json_body_bytes(&self) -> usize {
        self.file_upload_bytes
            .saturating_mul(4)
            .div_ceil(3)
            .saturating_add(64 * 1024)
    }
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
            shared_dir: None,
            database: DatabaseSettings::default(),
            public_url: "http://localhost:8787".to_owned(),
            default_model: format!("local/{}", paddock_model::pull::DEFAULT_LOCAL_MODEL),
            providers: BTreeMap::new(),
            local_models: BTreeMap::new(),
            local_threads: 2,
            limits: Limits {
                json_body_bytes: 1024 * 1024,
                content_chars: 100_000,
                file_upload_bytes: 50 * 1024 * 1024,
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
            sandbox_allow_host: false,
            sandbox_max_cpus: 4.0,
            sandbox_max_memory_mb: 16384,
            sandbox_command_timeout: Duration::from_secs(300),
            sandbox_max_processes: 512,
            sandbox_output_cap: paddock_sandbox::DEFAULT_OUTPUT_CAP,
            sandbox_runtime_dir: None,
            large_output_bytes: 32 * 1024,
            large_output_preview_bytes: 16 * 1024,
            max_steps: 200,
            model_retry_window: Duration::from_secs(600),
            max_output_tokens: None,
            token_coalesce: Duration::from_millis(100),
            node_id: None,
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            claim_poll_interval: Duration::from_secs(1),
            max_concurrent_runs: 256,
            steering_timeout: None,
            memory_context_tokens: paddock_core::memory::DEFAULT_CONTEXT_TOKENS,
            outbound: paddock_net::AddressPolicy::default(),
            attachment_max_bytes: 50 * 1024 * 1024,
            attachment_timeout: Duration::from_secs(60),
            mcp_connect_timeout: Duration::from_secs(10),
            mcp_call_timeout: Duration::from_secs(120),
            master_key: None,
            dreaming: paddock_core::dreaming::DreamingSettings::default(),
            metrics_token: None,
            shutdown_grace: Duration::from_secs(30),
            automations: AutomationSettings::default(),
        }
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("paddock.db")
    }

    /// The directory that holds workspaces and snapshots (`shared_dir`, else `data_dir`).
    pub fn shared_root(&self) -> &std::path::Path {
        self.shared_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Where deployments' workspaces live.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.shared_root().join("workspaces")
    }

    /// The generated master key file, used when no master key is configured.
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }

    /// Where model files live.
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }

    /// Where workspaces of deleted deployments are archived (`retain_filesystem=true`).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.shared_root().join("snapshots")
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
