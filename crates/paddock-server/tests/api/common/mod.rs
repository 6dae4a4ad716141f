//! The harness: boots a Paddock server on `127.0.0.1:0` against a fresh data directory and a
//! [`FakeOpenAi`] model, with an admin client and helpers that wait on events, never on time.
//! Shared by every integration test binary of this crate (`mod common;`); not every binary
//! uses every helper.
#![allow(dead_code)]

use std::time::Duration;

use futures::{Stream, StreamExt};
use paddock_client::{Client, EventsQuery, SseEvent};
use paddock_protocol::Deployment;
use paddock_server::{Server, ServerSettings};
use paddock_test_support::FakeOpenAi;
use serde_json::{Value, json};

/// Longest any wait in a test may take before it fails with a message.
pub const WAIT: Duration = Duration::from_secs(30);

/// The model every test deployment uses: the fake server's.
pub const MODEL: &str = "fake/test-model";

/// A running server with its fake model and an admin client.
pub struct TestServer {
    pub server: Option<Server>,
    pub fake: FakeOpenAi,
    pub admin: Client,
    pub admin_key: String,
    pub base_url: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with default settings (plus the fake model provider).
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose settings `tweak` may change before it starts.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerSettings)) -> TestServer {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings_for(dir.path(), &fake);
        tweak(&mut settings);
        let server = Server::start(settings).await.expect("server starts");
        let admin_key = server
            .bootstrap_key()
            .expect("first start creates an admin key")
            .to_owned();
        let base_url = format!("http://{}", server.local_addr());
        let admin = Client::new(&base_url, Some(admin_key.clone()));
        TestServer {
            server: Some(server),
            fake,
            admin,
            admin_key,
            base_url,
            dir,
        }
    }

    /// A client with another key (or none).
    pub fn client(&self, key: Option<&str>) -> Client {
        Client::new(&self.base_url, key.map(str::to_owned))
    }

    /// A plain HTTP client for requests the typed client would not send.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Creates a deployment with `extra` fields merged into a minimal valid body, and waits
    /// until it is `ready`.
    pub async fn ready_deployment(&self, extra: Value) -> Deployment {
        ready_deployment(&self.admin, extra).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Server::shutdown is async; a dropped test server just stops being polled. The
        // runtime of the test ends with the test.
        drop(self.server.take());
    }
}

/// Settings for a test server rooted at `dir` with `fake` as provider `fake`.
pub fn settings_for(dir: &std::path::Path, fake: &FakeOpenAi) -> ServerSettings {
    let mut settings = ServerSettings::new(dir.to_path_buf());
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    settings.default_model = MODEL.to_owned();
    settings.providers.insert(
        "fake".to_owned(),
        paddock_model::ProviderConfig {
            kind: paddock_model::ProviderKind::Openai,
            base_url: fake.base_url(),
            api_key_env: None,
            headers: Default::default(),
            models: Default::default(),
            idle_timeout_secs: None,
        },
    );
    settings.model_retry_window = Duration::from_secs(2);
    settings.shutdown_grace = Duration::from_secs(5);
    // The sandbox uids must traverse the data directory to reach their workspaces (a
    // tempdir is 0700), and each server keeps its own sandbox runtime files.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .expect("chmod data dir");
    }
    settings.sandbox_runtime_dir = Some(dir.join("sandbox-runtime"));
    if let Some(url) = postgres_store_url() {
        settings.database.url = Some(postgres_schema_url(&url, dir));
        // Some tests start dozens of servers, each keeping its pool until the test ends: few
        // connections each keep PostgreSQL's limit (100 by default) out of reach.
        settings.database.max_connections = 2;
    }
    settings
}

/// With `PADDOCK_TEST_STORE=postgres`, every test server keeps its data in PostgreSQL (at
/// `PADDOCK_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`) instead of
/// SQLite: the whole suite then runs on the PostgreSQL store.
pub fn postgres_store_url() -> Option<String> {
    match std::env::var("PADDOCK_TEST_STORE").as_deref() {
        Ok("postgres") => Some(
            std::env::var("PADDOCK_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        ),
        _ => None,
    }
}

/// A URL of `url`'s database whose connections use a schema of their own for data directory
/// `dir` (created if missing), so a restart on the same directory finds the same data and
/// tests never see each other's.
fn postgres_schema_url(url: &str, dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    let schema = format!("srv_test_{:016x}", hasher.finish());
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    let admin_url = url.to_owned();
    // `settings_for` is not async and may run inside a current-thread runtime: the schema is
    // made on a thread of its own.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url}: {e}"));
            sqlx::query(&create)
                .execute(&pool)
                .await
                .expect("create schema");
            pool.close().await;
        });
    })
    .join()
    .expect("schema thread");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A minimal valid create body with `extra` merged in.
pub fn deployment_body(extra: Value) -> Value {
    let mut body = json!({
        "customer_id": "cus_test",
        "name": "Test agent",
        "system_prompt": "You are a test agent.",
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

/// Creates a deployment and polls until it leaves `provisioning` (the spec's documented way).
pub async fn ready_deployment(client: &Client, extra: Value) -> Deployment {
    let created = client
        .create_deployment(&deployment_body(extra))
        .await
        .expect("create deployment");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = client
            .get_deployment(&created.deployment_id)
            .await
            .expect("get deployment");
        if d.status != "provisioning" {
            assert_eq!(d.status, "ready", "deployment did not become ready: {d:?}");
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment still provisioning"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads events from `stream` until `done` returns true for one; returns all read, in order.
pub async fn collect_until<S>(
    stream: &mut S,
    mut done: impl FnMut(&SseEvent) -> bool,
) -> Vec<SseEvent>
where
    S: Stream<Item = Result<SseEvent, paddock_client::ClientError>> + Unpin,
{
    let mut seen = Vec::new();
    let result = tokio::time::timeout(WAIT, async {
        while let Some(e) = stream.next().await {
            let e = e.expect("event stream error");
            let stop = done(&e);
            seen.push(e);
            if stop {
                return;
            }
        }
        panic!("event stream ended early");
    })
    .await;
    assert!(
        result.is_ok(),
        "timed out waiting for an event; saw {seen:#?}"
    );
    seen
}

/// Whether `e` is the terminal `run_status` of `run_id`.
pub fn is_terminal(e: &SseEvent, run_id: &str) -> bool {
    e.event == "run_status"
        && e.data["run_id"] == run_id
        && matches!(e.data["status"].as_str(), Some("completed" | "error"))
}

/// Reads `stream` until run `run_id` waits on a human (or ends, which fails the test); returns
/// the events read and the pending steering request's id.
pub async fn until_paused<S>(stream: &mut S, run_id: &str) -> (Vec<SseEvent>, String)
where
    S: Stream<Item = Result<SseEvent, paddock_client::ClientError>> + Unpin,
{
    let seen = collect_until(stream, |e| {
        is_terminal(e, run_id)
            || (e.event == "run_status"
                && e.data["run_id"] == run_id
                && e.data["status"] == "waiting_on_human")
    })
    .await;
    let request_id = seen
        .iter()
        .find(|e| e.event == "steering_request")
        .and_then(|e| e.data["request_id"].as_str())
        .unwrap_or_else(|| panic!("no pause: {seen:#?}"))
        .to_owned();
    (seen, request_id)
}

/// Opens the deployment's stream from now on (no replay); connected when this returns.
pub async fn open_events(client: &Client, deployment_id: &str) -> paddock_client::EventStream {
    client.events(deployment_id, EventsQuery::default()).await
}
