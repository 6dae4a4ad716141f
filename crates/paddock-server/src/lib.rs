//! Paddock's HTTP server: the `/v1` API of `shared/spec/API.md` over axum, wired to the store,
//! the agent runtime and the model providers.
//!
//! [`Server::start`] opens the store (creating the first admin key on an empty database),
//! resumes interrupted work, binds the listener and serves until [`Server::shutdown`].

mod auth;
mod body;
pub mod error;
mod idempotency;
pub mod keys;
mod metrics;
mod openapi;
mod paging;
mod provisioning;
mod request_id;
mod routes;
pub mod sandbox;
mod scheduler;
pub mod settings;
mod shared_dir;
mod skills;
mod state;
mod validate;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use paddock_core::{Runtime, RuntimeSettings};
use paddock_model::ProviderRegistry;
use paddock_store::{PgSettings, PgStore, SqliteStore, Store};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::{AutomationSettings, DatabaseSettings, Limits, RateLimits, ServerSettings};
pub use state::AppState;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("could not prepare the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not open the database: {0}")]
    Store(#[from] paddock_store::StoreError),
    #[error("shared directory: {0}")]
    SharedDir(String),
    #[error("could not create the first admin key: {0}")]
    Bootstrap(#[from] keys::BootstrapError),
    #[error("model configuration: {0}")]
    Models(#[from] paddock_model::RegistryError),
    #[error("default_model `{model}` is not usable: {reason}")]
    DefaultModel { model: String, reason: String },
    #[error("could not read or create the node id file {path}")]
    NodeId {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("sandbox: {0}")]
    Sandbox(#[from] sandbox::BackendError),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store `settings` name: PostgreSQL when `database.url` is set, else SQLite in the
/// data directory (created if missing).
pub async fn open_store(settings: &ServerSettings) -> Result<Arc<dyn Store>, StartError> {
    match &settings.database.url {
        Some(url) => {
            let mut pg = PgSettings::new(url.clone());
            pg.max_connections = settings.database.max_connections;
            pg.acquire_timeout = settings.database.acquire_timeout;
            Ok(Arc::new(PgStore::connect(&pg).await?))
        }
        None => {
            std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
                path: settings.data_dir.display().to_string(),
                source,
            })?;
            Ok(Arc::new(
                SqliteStore::open(&settings.database_path()).await?,
            ))
        }
    }
}

/// This node's id from `path`, creating the file with a new id on first use.
fn node_id(path: &std::path::Path) -> Result<String, StartError> {
    let failed = |source| StartError::NodeId {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if paddock_protocol::ids::is_id_shaped(text.trim()) => Ok(text.trim().to_owned()),
        Ok(_) => Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file does not hold a node id",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = paddock_protocol::ids::new_id("node_");
            std::fs::write(path, format!("{id}\n")).map_err(failed)?;
            Ok(id)
        }
        Err(e) => Err(failed(e)),
    }
}

/// The key secrets are encrypted with (spec §15.2): the configured one, else
/// `PADDOCK_MASTER_KEY`, else the key file in the data directory (created on first start).
fn master_key(settings: &ServerSettings) -> Result<paddock_store::SecretBox, StartError> {
    if let Some(key) = &settings.master_key {
        return Ok(key.clone());
    }
    if let Ok(text) = std::env::var("PADDOCK_MASTER_KEY") {
        return paddock_store::SecretBox::parse(&text)
            .map_err(|e| StartError::MasterKey(format!("PADDOCK_MASTER_KEY: {e}")));
    }
    let path = settings.master_key_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = paddock_store::SecretBox::generate_key_text();
            keys::write_secret_file(&path, &format!("{text}\n")).map_err(|e| {
                StartError::MasterKey(format!("could not create {}: {e}", path.display()))
            })?;
            tracing::info!(path = %path.display(), "created a new master key for secrets");
            text
        }
        Err(e) => {
            return Err(StartError::MasterKey(format!(
                "could not read {}: {e}",
                path.display()
            )));
        }
    };
    paddock_store::SecretBox::parse(&text)
        .map_err(|e| StartError::MasterKey(format!("{}: {e}", path.display())))
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    bootstrap_key: Option<String>,
    state: AppState,
    shutdown: CancellationToken,
    serving: JoinHandle<std::io::Result<()>>,
    dreamer: Arc<paddock_core::dreaming::Dreamer>,
}

impl Server {
    /// Opens the store, bootstraps the first admin key on an empty database, resumes runs that
    /// were `running` and deployments still `provisioning`, and starts serving.
    pub async fn start(settings: ServerSettings) -> Result<Server, StartError> {
        for dir in [
            settings.data_dir.clone(),
            settings.workspaces_dir(),
            settings.snapshots_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let store = open_store(&settings).await?;
        shared_dir::check(store.as_ref(), settings.shared_root()).await?;
        let bootstrap_key = keys::bootstrap(store.as_ref(), &settings.admin_key_path()).await?;

        let models = Arc::new(ProviderRegistry::new(
            settings.providers.clone(),
            settings.local_models.clone(),
            settings.local_threads,
        )?);
        models
            .validate(&settings.default_model)
            .map_err(|e| StartError::DefaultModel {
                model: settings.default_model.clone(),
                reason: e.to_string(),
            })?;
        let node_id = match &settings.node_id {
            Some(id) => id.clone(),
            None => node_id(&settings.node_id_path())?,
        };
        let secret_box = master_key(&settings)?;
        let mut settings = settings;
        let backend = sandbox::build(&settings)?;
        // Deployments can name only the backend actually used (spec §3.3).
        settings.sandbox_backends = vec![backend.name().to_owned()];
        settings.sandbox_default = backend.name().to_owned();
        // The sandbox uids must traverse (not list) the workspaces directory to reach theirs.
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = settings.workspaces_dir();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(
                |source| StartError::DataDir {
                    path: dir.display().to_string(),
                    source,
                },
            )?;
        }
        let runtime = Runtime::new(
            store.clone(),
            models,
            RuntimeSettings {
                workspaces_dir: settings.workspaces_dir(),
                max_steps: settings.max_steps,
                model_retry_window: settings.model_retry_window,
                max_output_tokens: settings.max_output_tokens,
                token_coalesce: settings.token_coalesce,
                node_id,
                lease_duration: settings.lease_duration,
                heartbeat_interval: settings.heartbeat_interval,
                claim_poll_interval: settings.claim_poll_interval,
                event_poll_interval: settings.database.event_poll_interval,
                max_concurrent_runs: settings.max_concurrent_runs,
                steering_timeout: settings.steering_timeout,
                memory_context_tokens: settings.memory_context_tokens,
                park_timeout: settings
                    .shutdown_grace
                    .min(std::time::Duration::from_secs(10)),
                mcp_connect_timeout: settings.mcp_connect_timeout,
                mcp_call_timeout: settings.mcp_call_timeout,
                outbound: settings.outbound.clone(),
                secret_box: Some(secret_box),
                shell: paddock_core::tools::ShellSettings {
                    timeout: settings.sandbox_command_timeout,
                    output_cap: settings.sandbox_output_cap,
                },
                sandbox_max_processes: settings.sandbox_max_processes,
                large_output: paddock_core::tools::LargeOutputSettings {
                    threshold_bytes: settings.large_output_bytes,
                    preview_bytes: settings.large_output_preview_bytes,
                },
                attachments: paddock_core::attachments::AttachmentSettings {
                    max_bytes: settings.attachment_max_bytes,
                    timeout: settings.attachment_timeout,
                },
                automations: paddock_core::automations::AutomationSettings {
                    clock: settings.automations.clock.clone(),
                    min_interval_secs: settings.automations.min_interval_secs,
                },
            },
            backend.clone(),
        );

        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;

        let shutdown = CancellationToken::new();
        let state = AppState::new(store, runtime, settings, shutdown.clone());

        // The worker claims every runnable run: new ones, answered ones, and those that were
        // `running` when this node's previous process stopped (they resume from their
        // checkpoint with `reason: "resumed"`).
        state.runtime.start_workers().await?;
        provisioning::resume(&state).await?;
        state::spawn_maintenance(&state);
        // Dreaming passes (spec §3.4): this node's own ticker; it only creates runs, which the
        // worker claims like any other.
        let dreamer = paddock_core::dreaming::Dreamer::new(
            state.runtime.clone(),
            state.settings.dreaming.clone(),
        );
        dreamer.spawn(shutdown.clone());
        scheduler::spawn(&state);

        let app = routes::router(state.clone());
        let stop = shutdown.clone();
        let serving = tokio::spawn(async move {
            // Small writes (SSE frames, token events) must not wait for Nagle's algorithm and
            // the peer's delayed ACK (tens of milliseconds).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            });
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        });
        tracing::info!(%addr, "paddock is listening");
        Ok(Server {
            addr,
            bootstrap_key,
            state,
            shutdown,
            serving,
            dreamer,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin key created on this start, when the database was empty.
    pub fn bootstrap_key(&self) -> Option<&str> {
        self.bootstrap_key.as_deref()
    }

    /// The dreaming ticker (spec §3.4): [`Dreamer::tick`](paddock_core::dreaming::Dreamer::tick)
    /// runs one look at once, for tests and embedders that drive time themselves.
    pub fn dreamer(&self) -> &Arc<paddock_core::dreaming::Dreamer> {
        &self.dreamer
    }

    /// Shared state, for embedding and tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Graceful shutdown: stops accepting, closes event streams, lets in-flight requests
    /// finish (up to the configured grace period), then parks running runs at their next
    /// checkpoint and releases their leases, so the next start (or another node) resumes them
    /// at once.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let grace = self.state.settings.shutdown_grace;
        let served = match tokio::time::timeout(grace, self.serving).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the grace period");
                Ok(())
            }
        };
        self.state.runtime.shutdown().await;
        served
    }
}
