//! Configuration: `paddock.toml`, `PADDOCK_*` environment variables and flags, merged into
//! [`ServerSettings`].
//!
//! Precedence, low to high: the built-in defaults ([`ServerSettings::new`]), `paddock.toml`,
//! `PADDOCK_*` environment variables, command-line flags. Every key is documented with its
//! default in `docs/configuration.md`; a test checks that the complete example there parses
//! and yields exactly the built-in defaults.
//!
//! Merging is done here, from plain values ([`Layer`]s), rather than by clap, so that the
//! precedence rules live in one place and can be tested without touching the process
//! environment.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use paddock_model::ProviderConfig;
use paddock_server::{DatabaseSettings, ServerSettings};
use serde::Deserialize;

/// The file looked for in the current directory when no `--config` is given.
pub const CONFIG_FILE_NAME: &str = "paddock.toml";
/// `data_dir` when nothing sets it.
pub const DEFAULT_DATA_DIR: &str = "./paddock-data";

/// The contents of `paddock.toml`. Every key is optional; a missing key keeps its default.
/// Unknown keys are errors that name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on, `IP:PORT`.
    pub listen: Option<String>,
    /// Where the database, workspaces, models and key files live.
    pub data_dir: Option<PathBuf>,
    /// Where workspaces and snapshots live instead of `data_dir`: on several nodes, a
    /// filesystem all of them mount.
    pub shared_dir: Option<PathBuf>,
    /// Base URL used in URLs Paddock returns.
    pub public_url: Option<String>,
    /// The model a deployment gets when it names none (`provider/name`).
    pub default_model: Option<String>,
    /// Threads the embedded model may use.
    pub local_threads: Option<usize>,
    /// Token that `/metrics` requires.
    pub metrics_token: Option<String>,
    /// Seconds in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace_secs: Option<u64>,
    /// Operator-declared model providers, by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Embedded models usable as `local/<name>`: name → GGUF path.
    #[serde(default)]
    pub local_models: BTreeMap<String, PathBuf>,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseSection,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[rate_limits]`.
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    /// `[events]`.
    #[serde(default)]
    pub events: EventsSection,
    /// `[provisioning]`.
    #[serde(default)]
    pub provisioning: ProvisioningSection,
    /// `[sandbox]`.
    #[serde(default)]
    pub sandbox: SandboxSection,
    /// `[workspaces]`.
    #[serde(default)]
    pub workspaces: WorkspacesSection,
    /// `[runs]`.
    #[serde(default)]
    pub runs: RunsSection,
    /// `[outbound]`.
    #[serde(default)]
    pub outbound: OutboundSection,
    /// `[memory]`.
    #[serde(default)]
    pub memory: MemorySection,
    /// `[attachments]`.
    #[serde(default)]
    pub attachments: AttachmentsSection,
    /// `[dreaming]`.
    #[serde(default)]
    pub dreaming: DreamingSection,
    /// `[automations]`.
    #[serde(default)]
    pub automations: AutomationsSection,
}

/// `[database]`: SQLite in the data directory, or a PostgreSQL database several nodes share.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://…` or `postgresql://…`; unset: SQLite at `<data_dir>/paddock.db`.
    pub url: Option<String>,
    /// Connections this node opens to PostgreSQL.
    pub max_connections: Option<u32>,
    /// Seconds a request waits for a free PostgreSQL connection.
    pub acquire_timeout_secs: Option<u64>,
    /// Milliseconds between looks for events other nodes committed.
    pub event_poll_interval_ms: Option<u64>,
}

// The URL may carry a password: `Debug` shows only whether one is set, as
// `DatabaseSettings` does.
impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &self.url.as_ref().map(|_| "[set]"))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("event_poll_interval_ms", &self.event_poll_interval_ms)
            .finish()
    }
}

/// `[attachments]`: fetching the attachments of messages (spec §4.3).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentsSection {
    /// Largest attachment fetched, in bytes.
    pub max_bytes: Option<u64>,
    /// Seconds one attachment's fetch may take in all.
    pub timeout_secs: Option<u64>,
}

/// `[dreaming]`: idle-time memory consolidation passes (spec §3.4).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DreamingSection {
    /// Seconds a deployment must have had no active run before a pass.
    pub idle_secs: Option<u64>,
    /// Least seconds between two passes of a deployment.
    pub interval_secs: Option<u64>,
    /// Milliseconds between looks for deployments due a pass.
    pub tick_interval_ms: Option<u64>,
}

/// `[automations]`: the scheduler (spec §9.3) and the schedule minimum (§9.2).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationsSection {
    /// How often the scheduler looks for due automations, in milliseconds.
    pub tick_interval_ms: Option<u64>,
    /// How old a missed time may be and still fire once after downtime, in seconds.
    pub catch_up_window_secs: Option<u64>,
    /// The shortest interval a schedule may have, in seconds.
    pub min_interval_secs: Option<u64>,
}

/// `[memory]`: memories in the agent's context (spec §10).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// Budget of the memory block put into each run's context, in estimated tokens.
    pub context_tokens: Option<u64>,
}

/// `[outbound]`: exceptions to the address rules of outbound requests made for clients
/// (attachments, `url` skills, MCP servers; spec §1.13).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSection {
    /// Host names whose addresses are not checked (e.g. an internal MCP server).
    pub allowed_hosts: Option<Vec<String>>,
    /// Networks (CIDR or single addresses) that are allowed whatever their class.
    pub allowed_networks: Option<Vec<String>>,
    /// Allow every loopback, private, link-local and carrier-grade NAT address.
    pub allow_private_networks: Option<bool>,
}

/// `[limits]`: request and field sizes (spec §1.12).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Maximum JSON request body, in bytes.
    pub json_body_bytes: Option<usize>,
    /// Maximum characters of a message's `content` and of a `system_prompt`.
    pub content_chars: Option<usize>,
    /// Maximum bytes of file content in one Files API upload.
    pub file_upload_bytes: Option<usize>,
}

/// `[rate_limits]` (spec §1.11).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSection {
    /// Sustained requests per second per key (token bucket); unset is off.
    pub requests_per_second: Option<f64>,
    /// Burst size of the per-key token bucket.
    pub request_burst: Option<u32>,
    /// Open SSE streams per key; unset is off.
    pub max_streams_per_key: Option<u32>,
    /// Active (`running`) runs per deployment.
    pub max_active_runs_per_deployment: Option<u32>,
}

/// `[events]`: the event log and its streams (spec §7).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Seconds events are kept for replay.
    pub retention_secs: Option<u64>,
    /// Seconds of silence after which a stream gets `: ping`.
    pub sse_ping_interval_secs: Option<u64>,
}

/// `[provisioning]` (spec §3.2).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSection {
    /// Seconds provisioning may take before the deployment goes to `error`.
    pub timeout_secs: Option<u64>,
}

/// `[sandbox]`: the sandbox backends and their bounds (spec §3.3).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// The backend this server runs tool commands with: `bubblewrap` or `host`.
    pub backend: Option<String>,
    /// Largest `sandbox.cpus` a deployment may ask for.
    pub max_cpus: Option<f64>,
    /// Largest `sandbox.memory_mb` a deployment may ask for.
    pub max_memory_mb: Option<u32>,
    /// Consent to the `host` backend (no isolation; development only).
    pub allow_host: Option<bool>,
    /// Default and maximum seconds of one `shell` command.
    pub command_timeout_secs: Option<u64>,
    /// Cap on processes and threads of one deployment's commands.
    pub max_processes: Option<u32>,
    /// Bytes kept of each of a command's stdout and stderr.
    pub output_cap_bytes: Option<usize>,
    /// A tool result longer than this many bytes is saved to the workspace and cut.
    pub large_output_bytes: Option<usize>,
    /// Bytes of a cut result the model still gets.
    pub large_output_preview_bytes: Option<usize>,
}

/// `[workspaces]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacesSection {
    /// Seconds an archived workspace (delete with `retain_filesystem=true`) is kept.
    pub snapshot_retention_secs: Option<u64>,
}

/// `[runs]`: knobs of the run loop (spec §5).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsSection {
    /// Maximum model calls in one run.
    pub max_steps: Option<i64>,
    /// Seconds a failing model call is retried before the run fails.
    pub model_retry_window_secs: Option<u64>,
    /// Cap on output tokens per model call; unset leaves it to the model.
    pub max_output_tokens: Option<u32>,
    /// Milliseconds within which consecutive `token` deltas may be merged into one event.
    pub token_coalesce_ms: Option<u64>,
    /// This node's id, the owner written on the run leases it takes; unset: the id kept in
    /// `<data_dir>/node_id`.
    pub node_id: Option<String>,
    /// Seconds a run's lease lasts without renewal.
    pub lease_duration_secs: Option<u64>,
    /// Seconds between renewals of this node's leases; less than `lease_duration_secs`.
    pub heartbeat_interval_secs: Option<u64>,
    /// Milliseconds between looks for runnable runs nothing woke the worker for.
    pub claim_poll_interval_ms: Option<u64>,
    /// Runs this node drives at once.
    pub max_concurrent_runs: Option<usize>,
    /// Seconds a steering request may stay unanswered before its run ends with
    /// `steering_timeout`; unset waits forever.
    pub steering_timeout_secs: Option<u64>,
}

/// A loaded `paddock.toml` (or none), with relative paths already resolved against the file's
/// directory.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where the file was read from; `None` when no file is used.
    pub path: Option<PathBuf>,
    /// Its contents.
    pub config: FileConfig,
}

impl ConfigFile {
    /// Parses `text` as the file at `path`. Relative `data_dir`, `shared_dir` and
    /// `[local_models]` paths are taken relative to the directory of `path`.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let mut config: FileConfig = toml::from_str(text)
            .with_context(|| format!("invalid configuration file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        if let Some(dir) = config.data_dir.take() {
            config.data_dir = Some(
                resolve_path(base, dir)
                    .with_context(|| format!("`data_dir` in {}", path.display()))?,
            );
        }
        if let Some(dir) = config.shared_dir.take() {
            config.shared_dir = Some(
                resolve_path(base, dir)
                    .with_context(|| format!("`shared_dir` in {}", path.display()))?,
            );
        }
        config.local_models = std::mem::take(&mut config.local_models)
            .into_iter()
            .map(|(name, file)| {
                let file = resolve_path(base, file)
                    .with_context(|| format!("`local_models.{name}` in {}", path.display()))?;
                Ok((name, file))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            config,
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the configuration file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The file to use: `explicit` (which must exist) if given, else `fallback` if it exists,
    /// else none.
    pub fn discover(explicit: Option<&Path>, fallback: &Path) -> anyhow::Result<Self> {
        match explicit {
            Some(path) => Self::load(path),
            None if fallback.is_file() => Self::load(fallback),
            None => Ok(Self::default()),
        }
    }

    /// How a key of this file is named in messages.
    fn describe(&self, key: &str) -> String {
        match &self.path {
            Some(path) => format!("`{key}` in {}", path.display()),
            None => format!("`{key}`"),
        }
    }
}

/// `path` relative to `base` unless absolute, made absolute against the current directory.
fn resolve_path(base: &Path, path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.as_os_str().is_empty() {
        bail!("the path is empty");
    }
    let joined = if path.is_absolute() || base.as_os_str().is_empty() || base == Path::new(".") {
        path
    } else {
        base.join(path)
    };
    Ok(std::path::absolute(&joined)?)
}

/// The environment variable of `listen`.
pub const ENV_LISTEN: &str = "PADDOCK_LISTEN";
/// The environment variable of `data_dir`.
pub const ENV_DATA_DIR: &str = "PADDOCK_DATA_DIR";
/// The environment variable of `shared_dir`.
pub const ENV_SHARED_DIR: &str = "PADDOCK_SHARED_DIR";
/// The environment variable of `database.url` (preferable to the flag for a URL with a
/// password: flags show in the process list).
pub const ENV_DATABASE_URL: &str = "PADDOCK_DATABASE_URL";
/// The environment variable of `public_url`.
pub const ENV_PUBLIC_URL: &str = "PADDOCK_PUBLIC_URL";
/// The environment variable of `default_model`.
pub const ENV_DEFAULT_MODEL: &str = "PADDOCK_DEFAULT_MODEL";
/// The environment variable of `metrics_token` (there is no flag: a flag would show the token
/// in the process list).
pub const ENV_METRICS_TOKEN: &str = "PADDOCK_METRICS_TOKEN";

/// The settings that can also come from the environment or from flags. One `Layer` holds the
/// values of one source; unset is `None`.
#[derive(Debug, Default, Clone)]
pub struct Layer {
    /// `listen` / `PADDOCK_LISTEN` / `--listen`.
    pub listen: Option<String>,
    /// `data_dir` / `PADDOCK_DATA_DIR` / `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `shared_dir` / `PADDOCK_SHARED_DIR` / `--shared-dir`.
    pub shared_dir: Option<PathBuf>,
    /// `database.url` / `PADDOCK_DATABASE_URL` / `--database-url`.
    pub database_url: Option<String>,
    /// `public_url` / `PADDOCK_PUBLIC_URL` / `--public-url`.
    pub public_url: Option<String>,
    /// `default_model` / `PADDOCK_DEFAULT_MODEL` / `--default-model`.
    pub default_model: Option<String>,
    /// `metrics_token` / `PADDOCK_METRICS_TOKEN`.
    pub metrics_token: Option<String>,
}

impl Layer {
    /// The environment layer, read through `lookup` (`std::env::var` in the binary, a map in
    /// tests). Empty values count as unset.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            listen: get(ENV_LISTEN),
            data_dir: get(ENV_DATA_DIR).map(PathBuf::from),
            shared_dir: get(ENV_SHARED_DIR).map(PathBuf::from),
            database_url: get(ENV_DATABASE_URL),
            public_url: get(ENV_PUBLIC_URL),
            default_model: get(ENV_DEFAULT_MODEL),
            metrics_token: get(ENV_METRICS_TOKEN),
        }
    }
}

/// The `--config` and `--data-dir` options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file. Without it, ./paddock.toml is read if it exists.
    #[arg(long, env = "PADDOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (database, workspaces, models, admin.key)
    /// [env: PADDOCK_DATA_DIR] [default: ./paddock-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The `--database-url` option of the commands that open the database (`serve`, `keys`).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL database shared by several nodes, postgres://USER@HOST/DB. A URL with a
    /// password is better given in PADDOCK_DATABASE_URL or paddock.toml: flags show in `ps`
    /// [env: PADDOCK_DATABASE_URL] [default: SQLite at <data_dir>/paddock.db]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl ConfigArgs {
    /// Reads the configuration file and the process environment; `flags` are the command's own
    /// flags (its `data_dir` is taken from these arguments).
    pub fn sources(&self, mut flags: Layer) -> anyhow::Result<Sources> {
        flags.data_dir = self.data_dir.clone();
        Ok(Sources {
            file: ConfigFile::discover(self.config.as_deref(), Path::new(CONFIG_FILE_NAME))?,
            env: Layer::from_env(|name| std::env::var(name).ok()),
            flags,
        })
    }
}

/// Every source of configuration, lowest precedence first.
#[derive(Debug, Default)]
pub struct Sources {
    /// `paddock.toml`.
    pub file: ConfigFile,
    /// `PADDOCK_*` variables.
    pub env: Layer,
    /// Flags.
    pub flags: Layer,
}

/// The first value set among flag, environment and file, with a description of where it came
/// from for error messages.
fn pick<T>(
    sources: &Sources,
    key: &str,
    env: &str,
    flag: Option<&str>,
    get: impl Fn(&Layer) -> Option<T>,
    file: Option<T>,
) -> Option<(T, String)> {
    if let (Some(v), Some(flag)) = (get(&sources.flags), flag) {
        return Some((v, flag.to_owned()));
    }
    if let Some(v) = get(&sources.env) {
        return Some((v, env.to_owned()));
    }
    file.map(|v| (v, sources.file.describe(key)))
}

impl Sources {
    /// The data directory, made absolute.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = pick(
            self,
            "data_dir",
            ENV_DATA_DIR,
            Some("--data-dir"),
            |l| l.data_dir.clone(),
            self.file.config.data_dir.clone(),
        )
        .map(|(dir, _)| dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        std::path::absolute(&dir)
            .with_context(|| format!("invalid data directory `{}`", dir.display()))
    }

    /// The shared directory (workspaces, snapshots), made absolute; `None`: the data directory.
    pub fn shared_dir(&self) -> anyhow::Result<Option<PathBuf>> {
        pick(
            self,
            "shared_dir",
            ENV_SHARED_DIR,
            Some("--shared-dir"),
            |l| l.shared_dir.clone(),
            self.file.config.shared_dir.clone(),
        )
        .map(|(dir, origin)| {
            std::path::absolute(&dir).with_context(|| {
                format!(
                    "invalid shared directory `{}` (from {origin})",
                    dir.display()
                )
            })
        })
        .transpose()
    }

    /// The `[database]` settings: the URL from flag, environment or file, the pool and poll
    /// settings from the file. `keys` needs these without the rest of the server's settings.
    pub fn database(&self) -> anyhow::Result<DatabaseSettings> {
        let mut d = DatabaseSettings::default();
        if let Some((url, origin)) = pick(
            self,
            "database.url",
            ENV_DATABASE_URL,
            Some("--database-url"),
            |l| l.database_url.clone(),
            self.file.config.database.url.clone(),
        ) {
            let url = url.trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                // The message names where the URL came from, never the URL: it may hold a
                // password.
                bail!(
                    "invalid database URL (from {origin}): it must start with postgres:// or \
                     postgresql:// (leave database.url unset for SQLite in the data directory)"
                );
            }
            d.url = Some(url.to_owned());
        }
        let file = &self.file;
        let c = &file.config.database;
        let positive = |key: &str, value: u64| -> anyhow::Result<()> {
            if value == 0 {
                bail!("{} must be at least 1", file.describe(key));
            }
            Ok(())
        };
        if let Some(n) = c.max_connections {
            positive("database.max_connections", n.into())?;
            d.max_connections = n;
        }
        if let Some(secs) = c.acquire_timeout_secs {
            positive("database.acquire_timeout_secs", secs)?;
            d.acquire_timeout = Duration::from_secs(secs);
        }
        if let Some(ms) = c.event_poll_interval_ms {
            positive("database.event_poll_interval_ms", ms)?;
            d.event_poll_interval = Duration::from_millis(ms);
        }
        Ok(d)
    }

    /// The server's settings: defaults overlaid with the file, then the environment, then the
    /// flags, validated.
    pub fn server_settings(self) -> anyhow::Result<ServerSettings> {
        let mut s = ServerSettings::new(self.data_dir()?);
        s.shared_dir = self.shared_dir()?;
        s.database = self.database()?;

        if let Some((text, origin)) = pick(
            &self,
            "listen",
            ENV_LISTEN,
            Some("--listen"),
            |l| l.listen.clone(),
            self.file.config.listen.clone(),
        ) {
            s.listen = parse_listen(&text)
                .with_context(|| format!("invalid listen address `{text}` (from {origin})"))?;
        }

        s.public_url = match pick(
            &self,
            "public_url",
            ENV_PUBLIC_URL,
            Some("--public-url"),
            |l| l.public_url.clone(),
            self.file.config.public_url.clone(),
        ) {
            Some((url, origin)) => normalize_public_url(&url)
                .with_context(|| format!("invalid public URL `{url}` (from {origin})"))?,
            None => derive_public_url(s.listen),
        };

        if let Some((model, origin)) = pick(
            &self,
            "default_model",
            ENV_DEFAULT_MODEL,
            Some("--default-model"),
            |l| l.default_model.clone(),
            self.file.config.default_model.clone(),
        ) {
            let model = model.trim();
            match model.split_once('/') {
                Some((provider, name)) if !provider.is_empty() && !name.is_empty() => {}
                _ => bail!(
                    "invalid default model `{model}` (from {origin}): expected provider/name, \
                     e.g. local/smollm2-135m or openai/gpt-4o-mini"
                ),
            }
            s.default_model = model.to_owned();
        }

        if let Some((token, origin)) = pick(
            &self,
            "metrics_token",
            ENV_METRICS_TOKEN,
            None,
            |l| l.metrics_token.clone(),
            self.file.config.metrics_token.clone(),
        ) {
            if token.trim().is_empty() {
                bail!("{origin} is empty; remove it to leave /metrics open");
            }
            s.metrics_token = Some(token);
        }

        let file = &self.file;
        let c = &file.config;
        let positive = |key: &str, value: u64| -> anyhow::Result<()> {
            if value == 0 {
                bail!("{} must be at least 1", file.describe(key));
            }
            Ok(())
        };

        if let Some(n) = c.local_threads {
            positive("local_threads", n as u64)?;
            s.local_threads = n;
        }
        if let Some(secs) = c.shutdown_grace_secs {
            s.shutdown_grace = Duration::from_secs(secs);
        }
        for (name, provider) in &c.providers {
            if let Err((key, problem)) = provider.check() {
                bail!(
                    "{} {problem}",
                    file.describe(&format!("providers.{name}.{key}"))
                );
            }
        }
        s.providers = c.providers.clone();
        s.local_models = c.local_models.clone();

        if let Some(n) = c.limits.json_body_bytes {
            positive("limits.json_body_bytes", n as u64)?;
            s.limits.json_body_bytes = n;
        }
        if let Some(n) = c.limits.content_chars {
            positive("limits.content_chars", n as u64)?;
            s.limits.content_chars = n;
        }
        if let Some(n) = c.limits.file_upload_bytes {
            positive("limits.file_upload_bytes", n as u64)?;
            s.limits.file_upload_bytes = n;
        }

        let r = &c.rate_limits;
        if let Some(rps) = r.requests_per_second {
            if !(rps.is_finite() && rps > 0.0) {
                bail!(
                    "{} must be a positive number",
                    file.describe("rate_limits.requests_per_second")
                );
            }
            s.rate_limits.requests_per_second = Some(rps);
        }
        if let Some(n) = r.request_burst {
            positive("rate_limits.request_burst", n.into())?;
            s.rate_limits.request_burst = Some(n);
        }
        if let Some(n) = r.max_streams_per_key {
            positive("rate_limits.max_streams_per_key", n.into())?;
            s.rate_limits.max_streams_per_key = Some(n);
        }
        if let Some(n) = r.max_active_runs_per_deployment {
            positive("rate_limits.max_active_runs_per_deployment", n.into())?;
            s.rate_limits.max_active_runs_per_deployment = n;
        }

        if let Some(secs) = c.events.retention_secs {
            positive("events.retention_secs", secs)?;
            s.event_retention = Duration::from_secs(secs);
        }
        if let Some(secs) = c.events.sse_ping_interval_secs {
            positive("events.sse_ping_interval_secs", secs)?;
            s.sse_ping_interval = Duration::from_secs(secs);
        }
        if let Some(secs) = c.provisioning.timeout_secs {
            positive("provisioning.timeout_secs", secs)?;
            s.provisioning_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = c.workspaces.snapshot_retention_secs {
            positive("workspaces.snapshot_retention_secs", secs)?;
            s.snapshot_retention = Duration::from_secs(secs);
        }

        let sb = &c.sandbox;
        if let Some(backend) = &sb.backend {
            if !matches!(backend.as_str(), "bubblewrap" | "host") {
                bail!(
                    "{} must be \"bubblewrap\" or \"host\", not {backend:?}",
                    file.describe("sandbox.backend")
                );
            }
            s.sandbox_default = backend.clone();
            s.sandbox_backends = vec![backend.clone()];
        }
        if let Some(cpus) = sb.max_cpus {
            if !(cpus.is_finite() && cpus >= 0.25) {
                bail!(
                    "{} must be at least 0.25",
                    file.describe("sandbox.max_cpus")
                );
            }
            s.sandbox_max_cpus = cpus;
        }
        if let Some(mb) = sb.max_memory_mb {
            if mb < 256 {
                bail!(
                    "{} must be at least 256",
                    file.describe("sandbox.max_memory_mb")
                );
            }
            s.sandbox_max_memory_mb = mb;
        }
        if let Some(allow) = sb.allow_host {
            s.sandbox_allow_host = allow;
        }
        if let Some(secs) = sb.command_timeout_secs {
            positive("sandbox.command_timeout_secs", secs)?;
            s.sandbox_command_timeout = Duration::from_secs(secs);
        }
        if let Some(n) = sb.max_processes {
            if n < 8 {
                bail!(
                    "{} must be at least 8",
                    file.describe("sandbox.max_processes")
                );
            }
            s.sandbox_max_processes = n;
        }
        if let Some(n) = sb.output_cap_bytes {
            positive("sandbox.output_cap_bytes", n as u64)?;
            s.sandbox_output_cap = n;
        }
        if let Some(n) = sb.large_output_bytes {
            positive("sandbox.large_output_bytes", n as u64)?;
            s.large_output_bytes = n;
        }
        if let Some(n) = sb.large_output_preview_bytes {
            positive("sandbox.large_output_preview_bytes", n as u64)?;
            s.large_output_preview_bytes = n;
        }

        let out = &c.outbound;
        if let Some(hosts) = &out.allowed_hosts {
            if hosts.iter().any(|h| h.trim().is_empty()) {
                bail!(
                    "{} must not contain an empty host name",
                    file.describe("outbound.allowed_hosts")
                );
            }
            s.outbound.allowed_hosts = hosts.clone();
        }
        if let Some(networks) = &out.allowed_networks {
            s.outbound.allowed_networks = networks
                .iter()
                .map(|n| n.parse::<paddock_net::Cidr>())
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    anyhow::anyhow!("{}: {e}", file.describe("outbound.allowed_networks"))
                })?;
        }
        if let Some(allow) = out.allow_private_networks {
            s.outbound.allow_private_networks = allow;
        }

        if let Some(n) = c.attachments.max_bytes {
            positive("attachments.max_bytes", n)?;
            s.attachment_max_bytes = n;
        }
        if let Some(secs) = c.attachments.timeout_secs {
            positive("attachments.timeout_secs", secs)?;
            s.attachment_timeout = Duration::from_secs(secs);
        }

        if let Some(n) = c.memory.context_tokens {
            positive("memory.context_tokens", n)?;
            s.memory_context_tokens = n;
        }

        let dreaming = &c.dreaming;
        if let Some(secs) = dreaming.idle_secs {
            positive("dreaming.idle_secs", secs)?;
            s.dreaming.idle = Duration::from_secs(secs);
        }
        if let Some(secs) = dreaming.interval_secs {
            positive("dreaming.interval_secs", secs)?;
            s.dreaming.interval = Duration::from_secs(secs);
        }
        if let Some(ms) = dreaming.tick_interval_ms {
            positive("dreaming.tick_interval_ms", ms)?;
            s.dreaming.tick_interval = Duration::from_millis(ms);
        }
        let auto = &c.automations;
        if let Some(ms) = auto.tick_interval_ms {
            positive("automations.tick_interval_ms", ms)?;
            s.automations.tick_interval = Duration::from_millis(ms);
        }
        if let Some(secs) = auto.catch_up_window_secs {
            s.automations.catch_up_window_secs = i64::try_from(secs).unwrap_or(i64::MAX);
        }
        if let Some(secs) = auto.min_interval_secs {
            positive("automations.min_interval_secs", secs)?;
            s.automations.min_interval_secs = secs;
        }

        let runs = &c.runs;
        if let Some(n) = runs.max_steps {
            if n < 1 {
                bail!("{} must be at least 1", file.describe("runs.max_steps"));
            }
            s.max_steps = n;
        }
        if let Some(secs) = runs.model_retry_window_secs {
            s.model_retry_window = Duration::from_secs(secs);
        }
        if let Some(n) = runs.max_output_tokens {
            positive("runs.max_output_tokens", n.into())?;
            s.max_output_tokens = Some(n);
        }
        if let Some(ms) = runs.token_coalesce_ms {
            s.token_coalesce = Duration::from_millis(ms);
        }
        if let Some(id) = &runs.node_id {
            // The shape of the ids Paddock makes itself (`<data_dir>/node_id`).
            let shaped = !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !shaped {
                bail!(
                    "{} must be 1 to 64 letters, digits or `_`, got `{id}`",
                    file.describe("runs.node_id")
                );
            }
            s.node_id = Some(id.clone());
        }
        if let Some(secs) = runs.lease_duration_secs {
            positive("runs.lease_duration_secs", secs)?;
            s.lease_duration = Duration::from_secs(secs);
        }
        if let Some(secs) = runs.heartbeat_interval_secs {
            positive("runs.heartbeat_interval_secs", secs)?;
            s.heartbeat_interval = Duration::from_secs(secs);
        }
        // Checked on the merged values: either key alone can break the rule.
        if s.heartbeat_interval >= s.lease_duration {
            bail!(
                "runs.heartbeat_interval_secs ({}) must be less than runs.lease_duration_secs \
                 ({}), or a live node loses its runs between two renewals",
                s.heartbeat_interval.as_secs(),
                s.lease_duration.as_secs()
            );
        }
        if let Some(ms) = runs.claim_poll_interval_ms {
            positive("runs.claim_poll_interval_ms", ms)?;
            s.claim_poll_interval = Duration::from_millis(ms);
        }
        if let Some(n) = runs.max_concurrent_runs {
            positive("runs.max_concurrent_runs", n as u64)?;
            s.max_concurrent_runs = n;
        }
        if let Some(secs) = runs.steering_timeout_secs {
            positive("runs.steering_timeout_secs", secs)?;
            s.steering_timeout = Some(Duration::from_secs(secs));
        }
        Ok(s)
    }
}

/// Parses `IP:PORT`.
fn parse_listen(text: &str) -> anyhow::Result<SocketAddr> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("expected IP:PORT, e.g. 127.0.0.1:8787 or 0.0.0.0:8787"))
}

/// Checks a public URL and drops trailing slashes.
fn normalize_public_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| anyhow::anyhow!("it must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        bail!("it must name a host, e.g. https://paddock.example.com");
    }
    Ok(url.to_owned())
}

/// The public URL when none is configured: `http://<listen>`, with `localhost` for loopback
/// and unspecified (`0.0.0.0`, `::`) addresses. The default listen address gives the
/// documented default `http://localhost:8787`.
fn derive_public_url(listen: SocketAddr) -> String {
    let ip = listen.ip();
    let host = if ip.is_loopback() || ip.is_unspecified() {
        "localhost".to_owned()
    } else {
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    };
    format!("http://{host}:{}", listen.port())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use paddock_model::ProviderKind;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(text, Path::new("paddock.toml")).unwrap()
    }

    fn sources(text: &str, env: Layer, flags: Layer) -> Sources {
        Sources {
            file: file(text),
            env,
            flags,
        }
    }

    fn settings(text: &str) -> ServerSettings {
        sources(text, Layer::default(), Layer::default())
            .server_settings()
            .unwrap()
    }

    fn error(text: &str) -> String {
        let err = match ConfigFile::parse(text, Path::new("paddock.toml")) {
            Ok(file) => Sources {
                file,
                ..Sources::default()
            }
            .server_settings()
            .unwrap_err(),
            Err(e) => e,
        };
        format!("{err:#}")
    }

    #[test]
    fn empty_file_gives_the_built_in_defaults() {
        let s = settings("");
        let defaults = ServerSettings::new(std::path::absolute(DEFAULT_DATA_DIR).unwrap());
        assert_eq!(format!("{s:?}"), format!("{defaults:?}"));
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 8787)));
        assert_eq!(s.public_url, "http://localhost:8787");
        assert_eq!(s.default_model, "local/smollm2-135m");
    }

    #[test]
    fn every_key_parses() {
        let s = settings(
            r#"
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/paddock"
            shared_dir = "/mnt/paddock"
            public_url = "https://paddock.example.com/"
            default_model = "openrouter/meta-llama/llama-3.1-8b-instruct"
            local_threads = 6
            metrics_token = "s3cret"
            shutdown_grace_secs = 5

            [providers.openrouter]
            kind = "openai"
            base_url = "https://openrouter.ai/api/v1"
            api_key_env = "OPENROUTER_API_KEY"
            headers = { "X-Title" = "Paddock" }

            [providers.openrouter.models."meta-llama/llama-3.1-8b-instruct"]
            context_window = 131072
            input_price = 0.02
            output_price = 0.03

            [providers.claude]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            api_key_env = "ANTHROPIC_API_KEY"

            [providers.gemini]
            kind = "google"
            base_url = "https://generativelanguage.googleapis.com/v1beta"

            [local_models]
            qwen = "/models/qwen.gguf"

            [database]
            url = "postgresql://paddock:pw@db.internal:5432/paddock"
            max_connections = 40
            acquire_timeout_secs = 3
            event_poll_interval_ms = 500

            [limits]
            json_body_bytes = 2048
            content_chars = 500

            [rate_limits]
            requests_per_second = 20
            request_burst = 40
            max_streams_per_key = 10000
            max_active_runs_per_deployment = 2

            [events]
            retention_secs = 3600
            sse_ping_interval_secs = 5

            [provisioning]
            timeout_secs = 60

            [sandbox]
            backend = "host"
            max_cpus = 2
            max_memory_mb = 4096

            [workspaces]
            snapshot_retention_secs = 86400

            [runs]
            max_steps = 50
            model_retry_window_secs = 30
            max_output_tokens = 4096
            token_coalesce_ms = 250
            node_id = "node_eu_1"
            lease_duration_secs = 20
            heartbeat_interval_secs = 5
            claim_poll_interval_ms = 250
            max_concurrent_runs = 32
            steering_timeout_secs = 86400
            "#,
        );
        assert_eq!(s.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(s.data_dir, Path::new("/var/lib/paddock"));
        assert_eq!(s.shared_dir.as_deref(), Some(Path::new("/mnt/paddock")));
        assert_eq!(
            s.database.url.as_deref(),
            Some("postgresql://paddock:pw@db.internal:5432/paddock")
        );
        assert_eq!(s.database.max_connections, 40);
        assert_eq!(s.database.acquire_timeout, Duration::from_secs(3));
        assert_eq!(s.database.event_poll_interval, Duration::from_millis(500));
        assert_eq!(s.public_url, "https://paddock.example.com");
        assert_eq!(
            s.default_model,
            "openrouter/meta-llama/llama-3.1-8b-instruct"
        );
        assert_eq!(s.local_threads, 6);
        assert_eq!(s.metrics_token.as_deref(), Some("s3cret"));
        assert_eq!(s.shutdown_grace, Duration::from_secs(5));
        let provider = &s.providers["openrouter"];
        assert_eq!(provider.base_url, "https://openrouter.ai/api/v1");
        assert_eq!(provider.api_key_env.as_deref(), Some("OPENROUTER_API_KEY"));
        assert_eq!(provider.headers["X-Title"], "Paddock");
        let llama = &provider.models["meta-llama/llama-3.1-8b-instruct"];
        assert_eq!(llama.context_window, Some(131072));
        assert_eq!(llama.input_price, Some(0.02));
        assert_eq!(llama.output_price, Some(0.03));
        assert_eq!(s.providers["claude"].kind, ProviderKind::Anthropic);
        assert_eq!(s.providers["gemini"].kind, ProviderKind::Google);
        assert_eq!(s.local_models["qwen"], Path::new("/models/qwen.gguf"));
        assert_eq!(s.limits.json_body_bytes, 2048);
        assert_eq!(s.limits.content_chars, 500);
        assert_eq!(s.rate_limits.requests_per_second, Some(20.0));
        assert_eq!(s.rate_limits.request_burst, Some(40));
        assert_eq!(s.rate_limits.max_streams_per_key, Some(10000));
        assert_eq!(s.rate_limits.max_active_runs_per_deployment, 2);
        assert_eq!(s.event_retention, Duration::from_secs(3600));
        assert_eq!(s.sse_ping_interval, Duration::from_secs(5));
        assert_eq!(s.provisioning_timeout, Duration::from_secs(60));
        assert_eq!(s.sandbox_default, "host");
        assert_eq!(s.sandbox_backends, ["host"]);
        assert_eq!(s.sandbox_max_cpus, 2.0);
        assert_eq!(s.sandbox_max_memory_mb, 4096);
        assert_eq!(s.snapshot_retention, Duration::from_secs(86400));
        assert_eq!(s.max_steps, 50);
        assert_eq!(s.model_retry_window, Duration::from_secs(30));
        assert_eq!(s.max_output_tokens, Some(4096));
        assert_eq!(s.token_coalesce, Duration::from_millis(250));
        assert_eq!(s.node_id.as_deref(), Some("node_eu_1"));
        assert_eq!(s.lease_duration, Duration::from_secs(20));
        assert_eq!(s.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(s.claim_poll_interval, Duration::from_millis(250));
        assert_eq!(s.max_concurrent_runs, 32);
        assert_eq!(s.steering_timeout, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn dreaming_settings_are_read_and_validated() {
        let defaults = settings("");
        assert_eq!(
            (
                defaults.dreaming.idle,
                defaults.dreaming.interval,
                defaults.dreaming.tick_interval
            ),
            (
                Duration::from_secs(1800),
                Duration::from_secs(86400),
                Duration::from_secs(60)
            )
        );
        let s =
            settings("[dreaming]\nidle_secs = 60\ninterval_secs = 3600\ntick_interval_ms = 500");
        assert_eq!(
            (
                s.dreaming.idle,
                s.dreaming.interval,
                s.dreaming.tick_interval
            ),
            (
                Duration::from_secs(60),
                Duration::from_secs(3600),
                Duration::from_millis(500)
            )
        );
        for key in ["idle_secs", "interval_secs", "tick_interval_ms"] {
            let zero = error(&format!("[dreaming]\n{key} = 0"));
            assert!(
                zero.contains(&format!("dreaming.{key}")) && zero.contains("at least 1"),
                "{zero}"
            );
        }
        assert!(error("[dreaming]\nidle = 5").contains("idle"));
    }

    #[test]
    fn database_settings_are_read_and_validated() {
        let defaults = settings("");
        assert_eq!(
            defaults.database.url, None,
            "unset: SQLite in the data directory"
        );
        assert_eq!(defaults.shared_dir, None, "unset: the data directory");
        assert_eq!(defaults.database.max_connections, 10);
        assert_eq!(defaults.database.acquire_timeout, Duration::from_secs(10));
        assert_eq!(
            defaults.database.event_poll_interval,
            Duration::from_secs(2)
        );
        assert_eq!(
            settings("[database]\nurl = \" postgres://db/paddock \"")
                .database
                .url
                .as_deref(),
            Some("postgres://db/paddock"),
            "trimmed"
        );
        for key in [
            "max_connections",
            "acquire_timeout_secs",
            "event_poll_interval_ms",
        ] {
            let zero = error(&format!("[database]\n{key} = 0"));
            assert!(
                zero.contains(&format!("database.{key}")) && zero.contains("at least 1"),
                "{zero}"
            );
        }
        assert!(error("[database]\nmax_connections = -1").contains("max_connections"));
        assert!(error("[database]\nuri = \"postgres://db/p\"").contains("uri"));

        // A wrong scheme names the key, or the variable or flag it came from, but never the
        // URL: it may hold a password.
        for bad in [
            "mysql://u:hunter2@db/p",
            "",
            "db.internal:5432",
            "sqlite://hunter2",
        ] {
            let e = error(&format!("[database]\nurl = \"{bad}\""));
            assert!(
                e.contains("`database.url` in paddock.toml") && e.contains("postgres://"),
                "{bad:?}: {e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
        let bad = Layer {
            database_url: Some("mysql://u:hunter2@db/p".into()),
            ..Layer::default()
        };
        let from_env = sources("", bad.clone(), Layer::default())
            .server_settings()
            .unwrap_err();
        let from_env = format!("{from_env:#}");
        assert!(
            from_env.contains(ENV_DATABASE_URL) && !from_env.contains("hunter2"),
            "{from_env}"
        );
        let from_flag = sources("", Layer::default(), bad)
            .server_settings()
            .unwrap_err();
        assert!(
            format!("{from_flag:#}").contains("--database-url"),
            "{from_flag:#}"
        );
    }

    #[test]
    fn run_lease_settings_are_validated() {
        let defaults = settings("");
        assert_eq!(
            defaults.node_id, None,
            "unset: the id in <data_dir>/node_id"
        );
        assert_eq!(defaults.steering_timeout, None, "off by default");
        // Each key alone, checked against the other's default (lease 30 s, heartbeat 10 s).
        assert_eq!(
            settings("[runs]\nlease_duration_secs = 11").lease_duration,
            Duration::from_secs(11)
        );
        let short = error("[runs]\nlease_duration_secs = 10");
        assert!(
            short.contains("heartbeat_interval_secs (10)") && short.contains("(10)"),
            "{short}"
        );
        let slow = error("[runs]\nheartbeat_interval_secs = 30");
        assert!(
            slow.contains("less than runs.lease_duration_secs (30)"),
            "{slow}"
        );
        let s = settings("[runs]\nlease_duration_secs = 2\nheartbeat_interval_secs = 1");
        assert_eq!(
            (s.lease_duration, s.heartbeat_interval),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
        for key in [
            "lease_duration_secs",
            "heartbeat_interval_secs",
            "claim_poll_interval_ms",
            "max_concurrent_runs",
            "steering_timeout_secs",
        ] {
            let zero = error(&format!("[runs]\n{key} = 0"));
            assert!(
                zero.contains(&format!("runs.{key}")) && zero.contains("at least 1"),
                "{zero}"
            );
        }
        for bad in ["", "node one", "node-1", &"n".repeat(65)] {
            let e = error(&format!("[runs]\nnode_id = \"{bad}\""));
            assert!(e.contains("runs.node_id"), "{bad:?}: {e}");
        }
        assert_eq!(
            settings(&format!("[runs]\nnode_id = \"{}\"", "n".repeat(64)))
                .node_id
                .map(|id| id.len()),
            Some(64)
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let top = error("listn = \"0.0.0.0:1\"");
        assert!(top.contains("listn"), "{top}");
        assert!(top.contains("paddock.toml"), "{top}");
        let nested = error("[runs]\nmax_step = 3");
        assert!(nested.contains("max_step"), "{nested}");
        let provider =
            error("[providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\napi_key = \"k\"");
        assert!(provider.contains("api_key"), "{provider}");
        let model_key = error(
            "[providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\n[providers.x.models.m]\nprice = 1",
        );
        assert!(model_key.contains("price"), "{model_key}");
        let price = error(
            "[providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\n[providers.x.models.m]\ninput_price = -1",
        );
        assert!(
            price.contains("`providers.x.models.m.input_price` in") && price.contains("≥ 0"),
            "{price}"
        );
        let kind = error("[providers.x]\nkind = \"cohere\"\nbase_url = \"http://h\"");
        assert!(kind.contains("cohere"), "{kind}");
        let section = error("[limit]\ncontent_chars = 1");
        assert!(section.contains("limit"), "{section}");
    }

    #[test]
    fn outbound_exceptions_parse_and_bad_networks_are_named() {
        let s = settings(
            r#"
            [outbound]
            allowed_hosts = ["mcp.internal"]
            allowed_networks = ["10.20.0.0/16", "fd00::7"]
            allow_private_networks = true
            "#,
        );
        assert_eq!(s.outbound.allowed_hosts, ["mcp.internal"]);
        assert_eq!(
            s.outbound.allowed_networks,
            [
                "10.20.0.0/16".parse::<paddock_net::Cidr>().unwrap(),
                "fd00::7/128".parse().unwrap()
            ]
        );
        assert!(s.outbound.allow_private_networks);
        assert_eq!(settings("").outbound, paddock_net::AddressPolicy::default());
        let bad = error("[outbound]\nallowed_networks = [\"10.0.0.0/40\"]");
        assert!(
            bad.contains("outbound.allowed_networks") && bad.contains("10.0.0.0/40"),
            "{bad}"
        );
        assert!(error("[outbound]\nallowed_hosts = [\" \"]").contains("allowed_hosts"));
    }

    #[test]
    fn wrong_types_and_bad_values_are_errors() {
        assert!(error("local_threads = \"four\"").contains("local_threads"));
        assert!(error("[events]\nretention_secs = -1").contains("retention_secs"));
        assert!(error("local_threads = 0").contains("local_threads"));
        let docker = error("[sandbox]\nbackend = \"docker\"");
        assert!(
            docker.contains("sandbox.backend") && docker.contains("bubblewrap"),
            "{docker}"
        );
        assert!(error("metrics_token = \"\"").contains("metrics_token"));
        let listen = error("listen = \"localhost\"");
        assert!(
            listen.contains("listen") && listen.contains("paddock.toml"),
            "{listen}"
        );
        let model = error("default_model = \"gpt-4o\"");
        assert!(model.contains("provider/name"), "{model}");
        let url = error("public_url = \"paddock.example.com\"");
        assert!(url.contains("http://"), "{url}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let text = r#"
            listen = "127.0.0.1:1111"
            data_dir = "/from/file"
            shared_dir = "/shared/file"
            public_url = "http://file.example"
            default_model = "file/model"
            metrics_token = "file-token"
            [database]
            url = "postgres://file/db"
        "#;
        let env = Layer {
            listen: Some("127.0.0.1:2222".into()),
            data_dir: Some("/from/env".into()),
            shared_dir: Some("/shared/env".into()),
            database_url: Some("postgres://env/db".into()),
            public_url: Some("http://env.example".into()),
            default_model: Some("env/model".into()),
            metrics_token: Some("env-token".into()),
        };
        let flags = Layer {
            listen: Some("127.0.0.1:3333".into()),
            data_dir: Some("/from/flag".into()),
            shared_dir: Some("/shared/flag".into()),
            database_url: Some("postgresql://flag/db".into()),
            public_url: Some("http://flag.example".into()),
            default_model: Some("flag/model".into()),
            // There is no --metrics-token flag; a value here must be ignored.
            metrics_token: Some("flag-token".into()),
        };

        let file_only = settings(text);
        assert_eq!(file_only.listen.port(), 1111);
        assert_eq!(file_only.data_dir, Path::new("/from/file"));
        assert_eq!(
            file_only.shared_dir.as_deref(),
            Some(Path::new("/shared/file"))
        );
        assert_eq!(
            file_only.database.url.as_deref(),
            Some("postgres://file/db")
        );
        assert_eq!(file_only.public_url, "http://file.example");
        assert_eq!(file_only.default_model, "file/model");
        assert_eq!(file_only.metrics_token.as_deref(), Some("file-token"));

        let with_env = sources(text, env.clone(), Layer::default())
            .server_settings()
            .unwrap();
        assert_eq!(with_env.listen.port(), 2222);
        assert_eq!(with_env.data_dir, Path::new("/from/env"));
        assert_eq!(
            with_env.shared_dir.as_deref(),
            Some(Path::new("/shared/env"))
        );
        assert_eq!(with_env.database.url.as_deref(), Some("postgres://env/db"));
        assert_eq!(with_env.public_url, "http://env.example");
        assert_eq!(with_env.default_model, "env/model");
        assert_eq!(with_env.metrics_token.as_deref(), Some("env-token"));

        let with_flags = sources(text, env, flags).server_settings().unwrap();
        assert_eq!(with_flags.listen.port(), 3333);
        assert_eq!(with_flags.data_dir, Path::new("/from/flag"));
        assert_eq!(
            with_flags.shared_dir.as_deref(),
            Some(Path::new("/shared/flag"))
        );
        assert_eq!(
            with_flags.database.url.as_deref(),
            Some("postgresql://flag/db")
        );
        assert_eq!(with_flags.public_url, "http://flag.example");
        assert_eq!(with_flags.default_model, "flag/model");
        assert_eq!(with_flags.metrics_token.as_deref(), Some("env-token"));
    }

    #[test]
    fn each_setting_falls_through_independently() {
        // A flag for one setting does not hide the environment's value of another.
        let env = Layer {
            public_url: Some("http://env.example".into()),
            ..Layer::default()
        };
        let flags = Layer {
            listen: Some("127.0.0.1:3333".into()),
            ..Layer::default()
        };
        let s = sources("default_model = \"file/model\"", env, flags)
            .server_settings()
            .unwrap();
        assert_eq!(s.listen.port(), 3333);
        assert_eq!(s.public_url, "http://env.example");
        assert_eq!(s.default_model, "file/model");
    }

    #[test]
    fn errors_name_the_source_of_the_value() {
        let env = Layer {
            listen: Some("nonsense".into()),
            ..Layer::default()
        };
        let err = sources("", env.clone(), Layer::default())
            .server_settings()
            .unwrap_err();
        assert!(format!("{err:#}").contains(ENV_LISTEN), "{err:#}");
        let flags = Layer {
            listen: Some("also nonsense".into()),
            ..Layer::default()
        };
        let err = sources("", env, flags).server_settings().unwrap_err();
        assert!(format!("{err:#}").contains("--listen"), "{err:#}");
    }

    #[test]
    fn environment_is_read_through_the_lookup() {
        let vars: HashMap<&str, &str> = [
            (ENV_LISTEN, "0.0.0.0:8080"),
            (ENV_DATA_DIR, "/srv/paddock"),
            (ENV_PUBLIC_URL, ""),
            (ENV_METRICS_TOKEN, "t"),
            (ENV_DATABASE_URL, "postgres://db/paddock"),
            (ENV_SHARED_DIR, " "),
            ("PADDOCK_UNRELATED", "x"),
        ]
        .into_iter()
        .collect();
        let env = Layer::from_env(|name| vars.get(name).map(|v| (*v).to_owned()));
        assert_eq!(env.listen.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(env.data_dir.as_deref(), Some(Path::new("/srv/paddock")));
        assert_eq!(env.public_url, None, "empty counts as unset");
        assert_eq!(env.default_model, None);
        assert_eq!(env.metrics_token.as_deref(), Some("t"));
        assert_eq!(env.database_url.as_deref(), Some("postgres://db/paddock"));
        assert_eq!(env.shared_dir, None, "blank counts as unset");
    }

    #[test]
    fn public_url_is_derived_from_listen_when_not_given() {
        let with_listen = |listen: &str| {
            sources(
                "",
                Layer::default(),
                Layer {
                    listen: Some(listen.into()),
                    ..Layer::default()
                },
            )
            .server_settings()
            .unwrap()
            .public_url
        };
        assert_eq!(with_listen("127.0.0.1:8787"), "http://localhost:8787");
        assert_eq!(with_listen("127.0.0.1:9000"), "http://localhost:9000");
        assert_eq!(with_listen("0.0.0.0:9000"), "http://localhost:9000");
        assert_eq!(with_listen("10.1.2.3:80"), "http://10.1.2.3:80");
        assert_eq!(with_listen("[fd00::1]:8787"), "http://[fd00::1]:8787");
        assert_eq!(with_listen("[::1]:8787"), "http://localhost:8787");
        // An explicit public URL wins over the derived one, whatever its layer.
        let s = sources(
            "public_url = \"https://p.example/\"",
            Layer::default(),
            Layer {
                listen: Some("0.0.0.0:9000".into()),
                ..Layer::default()
            },
        )
        .server_settings()
        .unwrap();
        assert_eq!(s.public_url, "https://p.example");
    }

    #[test]
    fn relative_paths_in_the_file_are_relative_to_its_directory() {
        let file = ConfigFile::parse(
            "data_dir = \"data\"\nshared_dir = \"../shared\"\n\
             [local_models]\nm = \"models/m.gguf\"\nabs = \"/m/abs.gguf\"",
            Path::new("/etc/paddock/paddock.toml"),
        )
        .unwrap();
        assert_eq!(
            file.config.data_dir.as_deref(),
            Some(Path::new("/etc/paddock/data"))
        );
        // Made absolute, not normalised: `..` stays, as for data_dir.
        assert_eq!(
            file.config.shared_dir.as_deref(),
            Some(Path::new("/etc/paddock/../shared"))
        );
        assert_eq!(
            file.config.local_models["m"],
            Path::new("/etc/paddock/models/m.gguf")
        );
        assert_eq!(file.config.local_models["abs"], Path::new("/m/abs.gguf"));
        // Paths from the environment or flags are relative to the current directory.
        let s = Sources {
            file,
            env: Layer::default(),
            flags: Layer {
                data_dir: Some("here".into()),
                shared_dir: Some("there".into()),
                ..Layer::default()
            },
        };
        assert_eq!(s.data_dir().unwrap(), std::path::absolute("here").unwrap());
        assert_eq!(
            s.shared_dir().unwrap(),
            Some(std::path::absolute("there").unwrap())
        );
    }

    #[test]
    fn discovery_uses_the_explicit_file_or_an_existing_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("paddock.toml");
        std::fs::write(&present, "local_threads = 3").unwrap();
        let missing = dir.path().join("missing.toml");

        let none = ConfigFile::discover(None, &missing).unwrap();
        assert!(none.path.is_none());
        let fallback = ConfigFile::discover(None, &present).unwrap();
        assert_eq!(fallback.config.local_threads, Some(3));
        let err = ConfigFile::discover(Some(&missing), &present).unwrap_err();
        assert!(format!("{err:#}").contains("missing.toml"), "{err:#}");
    }

    /// The complete example in docs/configuration.md lists every key with its default: it must
    /// parse, and give exactly the built-in defaults.
    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let doc = include_str!("../../../docs/configuration.md");
        let start = doc
            .find("<!-- defaults:begin -->")
            .expect("defaults block start");
        let end = doc
            .find("<!-- defaults:end -->")
            .expect("defaults block end");
        let block = &doc[start..end];
        let toml = block
            .split_once("```toml\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(toml, _)| toml)
            .expect("a toml code block");
        let documented = settings(toml);
        assert_eq!(format!("{documented:?}"), format!("{:?}", settings("")));
        // Commented-out keys are the ones without a default; each must still parse once
        // uncommented (catches typos in their names).
        let uncommented: String = toml
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = "))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        ConfigFile::parse(&uncommented, Path::new("paddock.toml")).unwrap();
    }
}
