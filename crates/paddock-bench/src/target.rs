//! What the scenarios drive: a Paddock server started in this process, or one already running
//! (`--url`), and the fake model, in this process or in a child `paddock-bench fake-model`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use paddock_server::{Server, ServerSettings};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::api::Api;
use crate::fake::FakeModel;

/// Where the fake model runs.
pub enum Fake {
    /// In this process (tests; small sizes).
    InProcess(FakeModel),
    /// A child `paddock-bench fake-model`, so its sockets and memory are not the server's.
    Child { child: Child, base_url: String },
    /// Started by someone else (`--fake-url`).
    External { base_url: String },
}

impl Fake {
    /// A fake in a child process when `exe` is given, else in this process.
    pub async fn start(exe: Option<&PathBuf>) -> anyhow::Result<Fake> {
        let Some(exe) = exe else {
            return Ok(Fake::InProcess(
                FakeModel::start(([127, 0, 0, 1], 0).into()).await?,
            ));
        };
        let mut child = Command::new(exe)
            .args(["fake-model", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {} fake-model", exe.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("fake model did not start")??
            .context("fake model exited")?;
        let base_url = line
            .strip_prefix("LISTENING ")
            .context("unexpected fake-model output")?
            .trim()
            .to_owned();
        Ok(Fake::Child { child, base_url })
    }

    /// The OpenAI-compatible base URL (`http://ADDR/v1`).
    pub fn base_url(&self) -> String {
        match self {
            Fake::InProcess(f) => f.base_url(),
            Fake::Child { base_url, .. } | Fake::External { base_url } => base_url.clone(),
        }
    }

    /// `GET /stats`: streams in flight (`active`), `peak_active`, `requests`.
    pub async fn stats(&self, http: &reqwest::Client) -> anyhow::Result<Value> {
        let root = self.base_url();
        let root = root.trim_end_matches("/v1");
        Ok(http
            .get(format!("{root}/stats"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Streams in flight right now.
    pub async fn active(&self, http: &reqwest::Client) -> u64 {
        self.stats(http)
            .await
            .ok()
            .and_then(|v| v["active"].as_u64())
            .unwrap_or(0)
    }

    /// The child's pid, if any.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Fake::Child { child, .. } => child.id(),
            _ => None,
        }
    }
}

/// Which server the scenarios drive.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// Start one in this process for each scenario.
    InProcess,
    /// A server already running, whose provider `provider` points at the fake
    /// (`paddock-bench fake-model`); `pid` lets the bench read its RSS.
    Remote {
        url: String,
        key: String,
        provider: String,
        pid: Option<u32>,
    },
}

/// A server under test.
pub struct Target {
    pub api: Api,
    /// The provider name that reaches the fake (`fake`).
    pub provider: String,
    /// The pid whose RSS is the server's (`None`: this process).
    pub pid: Option<u32>,
    pub in_process: bool,
    server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
}

/// Settings every in-process bench server gets: the fake as provider `fake`, per-deployment
/// run limit lifted, lease renewal as by default.
pub fn bench_settings(dir: &std::path::Path, fake_base_url: &str) -> ServerSettings {
    let mut s = ServerSettings::new(dir.to_path_buf());
    s.listen = ([127, 0, 0, 1], 0).into();
    s.default_model = "fake/instant".to_owned();
    s.providers.insert(
        "fake".to_owned(),
        paddock_model::ProviderConfig {
            kind: paddock_model::ProviderKind::Openai,
            base_url: fake_base_url.to_owned(),
            api_key_env: None,
            headers: Default::default(),
            models: Default::default(),
            idle_timeout_secs: None,
        },
    );
    s.rate_limits.max_active_runs_per_deployment = 1_000_000;
    s.shutdown_grace = Duration::from_secs(5);
    s
}

impl Target {
    /// Starts a target per `spec`; `tweak` changes in-process settings (ignored for remote).
    pub async fn start(
        spec: &TargetSpec,
        fake: &Fake,
        tweak: impl FnOnce(&mut ServerSettings),
    ) -> anyhow::Result<Target> {
        match spec {
            TargetSpec::InProcess => {
                let dir = tempfile::tempdir()?;
                let mut settings = bench_settings(dir.path(), &fake.base_url());
                tweak(&mut settings);
                Target::in_process(settings, dir, None).await
            }
            TargetSpec::Remote {
                url,
                key,
                provider,
                pid,
            } => {
                crate::api::check_loopback(url)?;
                Ok(Target {
                    api: Api::new(url.clone(), key.clone()),
                    provider: provider.clone(),
                    pid: *pid,
                    in_process: false,
                    server: None,
                    _dir: None,
                })
            }
        }
    }

    /// Starts a server in this process with `settings` (whose data directory is `dir`, kept
    /// until the target is dropped). `key`: the admin key to use when the database is not
    /// fresh (another node made it); `None` needs the key this start bootstraps.
    async fn in_process(
        settings: ServerSettings,
        dir: tempfile::TempDir,
        key: Option<String>,
    ) -> anyhow::Result<Target> {
        let server = Server::start(settings).await?;
        let key = match key {
            Some(k) => k,
            None => server
                .bootstrap_key()
                .context("fresh server made no admin key")?
                .to_owned(),
        };
        let api = Api::new(format!("http://{}", server.local_addr()), key);
        Ok(Target {
            api,
            provider: "fake".to_owned(),
            pid: None,
            in_process: true,
            server: Some(server),
            _dir: Some(dir),
        })
    }

    /// `provider/profile`, e.g. `fake/instant`.
    pub fn model(&self, profile: &str) -> String {
        format!("{}/{profile}", self.provider)
    }

    /// The server's RSS in bytes (in-process: this whole process).
    pub fn rss(&self) -> Option<u64> {
        if self.in_process || self.pid.is_some() {
            crate::machine::rss_bytes(self.pid)
        } else {
            None
        }
    }

    /// The store of an in-process server (to fill an event log quickly).
    pub fn store(&self) -> Option<std::sync::Arc<dyn paddock_store::Store>> {
        self.server.as_ref().map(|s| s.state().store.clone())
    }

    /// Stops an in-process server (graceful; bounded by its 5 s grace).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(30), server.shutdown()).await {
                Ok(r) => r?,
                Err(_) => bail!("server shutdown took over 30 s"),
            }
        }
        Ok(())
    }
}

/// `url` with every connection's `search_path` set to `schema` (sqlx passes `options` on to
/// PostgreSQL), so a node started on it keeps its tables there.
pub fn schema_url(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// Several in-process nodes on one PostgreSQL schema (`docs/scaling-out.md`): distinct node
/// ids and data directories, one shared directory and one master key. The schema is made
/// fresh by [`Cluster::start`] and dropped by [`Cluster::stop`].
pub struct Cluster {
    /// The nodes, in start order; the first made the admin key every node's API uses.
    pub nodes: Vec<Target>,
    database_url: String,
    schema: String,
    shared: tempfile::TempDir,
}

/// `url` with its password, if any, replaced by `***`: for messages and the report's command.
pub fn redact_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Cannot fail: a URL that has a password has a host.
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Runs `sql` on its own short-lived connection to `database_url`.
async fn execute(database_url: &str, sql: &str) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .with_context(|| format!("connect to PostgreSQL at {}", redact_password(database_url)))?;
    let done = sqlx::query(sql).execute(&pool).await;
    pool.close().await;
    done.with_context(|| format!("PostgreSQL: {sql}"))?;
    Ok(())
}

impl Cluster {
    /// Creates schema `schema` (letters, digits, `_`) in the database at `database_url`
    /// (loopback only), then starts `n` nodes on it one after another: the first start runs
    /// the migrations, writes the shared directory's identity and bootstraps the admin key,
    /// which the others then find. `tweak` changes every node's settings. On failure the
    /// nodes started so far are stopped and the schema is dropped.
    pub async fn start(
        database_url: &str,
        schema: &str,
        n: usize,
        fake: &Fake,
        tweak: impl Fn(&mut ServerSettings),
    ) -> anyhow::Result<Cluster> {
        crate::api::check_loopback(database_url)?;
        anyhow::ensure!(
            schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "schema name {schema:?}: letters, digits and `_` only"
        );
        execute(database_url, &format!("CREATE SCHEMA {schema}")).await?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database_url: database_url.to_owned(),
            schema: schema.to_owned(),
            shared: tempfile::tempdir()?,
        };
        match cluster.start_nodes(n, fake, tweak).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                if let Err(stop) = cluster.stop().await {
                    eprintln!("[bench] cleaning up after a failed cluster start: {stop:#}");
                }
                Err(e)
            }
        }
    }

    async fn start_nodes(
        &mut self,
        n: usize,
        fake: &Fake,
        tweak: impl Fn(&mut ServerSettings),
    ) -> anyhow::Result<()> {
        // Secrets written by one node must open on every other.
        let master_key =
            paddock_store::SecretBox::parse(&paddock_store::SecretBox::generate_key_text())?;
        let url = schema_url(&self.database_url, &self.schema);
        for i in 0..n {
            let dir = tempfile::tempdir()?;
            let mut s = bench_settings(dir.path(), &fake.base_url());
            s.database.url = Some(url.clone());
            s.shared_dir = Some(self.shared.path().to_path_buf());
            s.node_id = Some(format!("node_bench{i}"));
            s.master_key = Some(master_key.clone());
            tweak(&mut s);
            let key = self.nodes.first().map(|t| t.api.key.clone());
            let node = Target::in_process(s, dir, key)
                .await
                .with_context(|| format!("start node {i} of {n}"))?;
            self.nodes.push(node);
        }
        Ok(())
    }

    /// Every node's API, in start order.
    pub fn apis(&self) -> Vec<Api> {
        self.nodes.iter().map(|t| t.api.clone()).collect()
    }

    /// Stops every node (last first), then drops the schema, even when a stop failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        while let Some(node) = self.nodes.pop() {
            if let Err(e) = node.stop().await {
                first_err.get_or_insert(e);
            }
        }
        let dropped = execute(
            &self.database_url,
            &format!("DROP SCHEMA {} CASCADE", self.schema),
        )
        .await;
        match (first_err, dropped) {
            (Some(e), _) => Err(e),
            (None, r) => r,
        }
    }
}
