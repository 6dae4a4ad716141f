//! The harness of the `paddock` binary tests: a temporary home (config file + data directory),
//! the real binary started as a child process, a small HTTP API client and a raw SSE reader.
//!
//! Every wait has a deadline and waits on something observable (an output line, an event, an
//! HTTP answer), never on time alone. A [`Paddock`] kills its process when dropped, so a failing
//! test leaves nothing running; on a panic it also prints what the server wrote.
//!
//! Shared by every test binary of this crate (`mod common;`); not each one uses every helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The binary under test.
pub const PADDOCK: &str = env!("CARGO_BIN_EXE_paddock");

/// The longest an ordinary wait may take before the test fails with a message.
pub const WAIT: Duration = Duration::from_secs(30);

/// The public URL every test server is given (`--public-url`): the servers listen on port 0,
/// so the derived one (`http://localhost:0`) would be wrong.
pub const PUBLIC_URL: &str = "http://paddock-public.test:8787";

/// `PADDOCK_*` variables of the environment running the tests; removed from every child so
/// the tests see only the configuration they write.
const PADDOCK_ENV: &[&str] = &[
    "PADDOCK_CONFIG",
    "PADDOCK_LISTEN",
    "PADDOCK_DATA_DIR",
    "PADDOCK_PUBLIC_URL",
    "PADDOCK_DEFAULT_MODEL",
    "PADDOCK_METRICS_TOKEN",
    "PADDOCK_LOG_FORMAT",
    "PADDOCK_DATABASE_URL",
    "PADDOCK_SHARED_DIR",
    "PADDOCK_MASTER_KEY",
];

/// A temporary directory holding `paddock.toml` and the data directory `data/`. The
/// directory is removed when this is dropped.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
}

impl Home {
    /// A fresh home whose `paddock.toml` is `config`.
    pub fn new(config: &str) -> Home {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let config_path = dir.path().join("paddock.toml");
        std::fs::write(&config_path, config).expect("write paddock.toml");
        let data_dir = dir.path().join("data");
        Home {
            dir,
            config: config_path,
            data_dir,
        }
    }

    /// `<data_dir>/admin.key`.
    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }

    /// `<data_dir>/paddock.db`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("paddock.db")
    }
}

/// A `paddock` command with a clean environment (no inherited `PADDOCK_*`), run in `cwd` (so no
/// stray `./paddock.toml` is picked up), stdin closed.
pub fn paddock(cwd: &Path) -> Command {
    let mut command = Command::new(PADDOCK);
    command.current_dir(cwd).stdin(Stdio::null());
    for name in PADDOCK_ENV {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "info");
    command
}

/// A TOML basic string holding `text`.
pub fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `paddock.toml` that makes `fake/m` (a [`paddock_test_support::FakeOpenAi`] at `base_url`)
/// the default model, with a 5 second shutdown grace period.
pub fn fake_model_config(base_url: &str) -> String {
    format!(
        "default_model = \"fake/m\"\nshutdown_grace_secs = 5\n\n\
         [providers.fake]\nkind = \"openai\"\nbase_url = {}\n\n\
         [runs]\nmodel_retry_window_secs = 5\n",
        toml_string(base_url)
    )
}

/// Whether `text` looks like an API key: `pdk_` and 40 base62 characters (spec §1.2).
pub fn is_api_key(text: &str) -> bool {
    text.strip_prefix("pdk_")
        .is_some_and(|rest| rest.len() == 40 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Output lines of a child process, collected as they arrive.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }

    /// The last `n` lines, one per line.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.snapshot();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }
}

/// A running `paddock serve`. Dropping it kills the process (SIGKILL).
pub struct Paddock {
    child: Child,
    pid: u32,
    /// The admin key this start printed (only the first start on a data directory prints one).
    pub admin_key: Option<String>,
    /// The address from `Paddock is listening on http://ADDR (public URL …)`.
    pub addr: SocketAddr,
    /// The public URL that line names.
    pub public_url: String,
    /// Everything written on stdout so far (the reader keeps appending).
    pub stdout: Lines,
    /// Everything written on stderr so far (the logs).
    pub stderr: Lines,
    /// Stdout lines not yet consumed by [`Paddock::start`].
    stdout_rx: mpsc::UnboundedReceiver<String>,
    exited: Option<ExitStatus>,
}

impl Paddock {
    /// `paddock serve --config <home>/paddock.toml --data-dir <home>/data --listen
    /// 127.0.0.1:0 --public-url PUBLIC_URL`; returns once it prints its listening address.
    ///
    /// Port 0 avoids the race of picking a free port first: the server binds, and its stdout
    /// says where.
    pub async fn start(home: &Home) -> Paddock {
        Paddock::start_with_env(home, &[]).await
    }

    /// [`Paddock::start`] with extra environment variables (e.g. `RUST_LOG=trace`), set after
    /// the defaults of [`paddock`] so they win.
    pub async fn start_with_env(home: &Home, env: &[(&str, &str)]) -> Paddock {
        let mut command = paddock(home.dir.path());
        command.envs(env.iter().copied());
        command
            .arg("serve")
            .arg("--config")
            .arg(&home.config)
            .arg("--data-dir")
            .arg(&home.data_dir)
            .args(["--listen", "127.0.0.1:0", "--public-url", PUBLIC_URL])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn paddock serve");
        let pid = child.id().expect("child pid");
        let stdout = Lines::default();
        let stderr = Lines::default();
        let (tx, stdout_rx) = mpsc::unbounded_channel();
        {
            let out = child.stdout.take().expect("stdout is piped");
            let lines = stdout.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        {
            let err = child.stderr.take().expect("stderr is piped");
            let lines = stderr.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(err).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.push(line);
                }
            });
        }
        let mut server = Paddock {
            child,
            pid,
            admin_key: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: String::new(),
            stdout,
            stderr,
            stdout_rx,
            exited: None,
        };
        server.wait_until_listening(WAIT).await;
        server
    }

    /// Reads stdout until the listening line, recording the admin key line on the way.
    async fn wait_until_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout_rx.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    let status = self.child.wait().await.ok();
                    panic!(
                        "paddock serve exited ({status:?}) before listening;\nstdout:\n{}\nstderr:\n{}",
                        self.stdout.tail(50),
                        self.stderr.tail(50)
                    );
                }
                Err(_) => panic!(
                    "paddock serve did not print its listening address within {limit:?};\n\
                     stdout:\n{}\nstderr:\n{}",
                    self.stdout.tail(50),
                    self.stderr.tail(50)
                ),
            };
            if let Some(rest) = line.strip_prefix("Admin API key (shown once, also saved to ") {
                let (_, key) = rest
                    .rsplit_once("): ")
                    .unwrap_or_else(|| panic!("malformed admin key line: {line}"));
                assert!(
                    self.admin_key.is_none(),
                    "two admin key lines: {:?}",
                    self.stdout.snapshot()
                );
                self.admin_key = Some(key.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("Paddock is listening on http://") {
                let (addr, public) = rest
                    .split_once(" (public URL ")
                    .unwrap_or_else(|| panic!("malformed listening line: {line}"));
                self.addr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address in `{line}`: {e}"));
                self.public_url = public
                    .strip_suffix(')')
                    .unwrap_or_else(|| panic!("malformed listening line: {line}"))
                    .to_owned();
                return;
            }
            panic!(
                "unexpected line on stdout before the listening address: {line:?}\n\
                 (stdout must carry only the admin key and the address)"
            );
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An API client of this server with `key`.
    pub fn api(&self, key: &str) -> Api {
        Api::new(&self.base_url(), key)
    }

    /// Sends SIGTERM (through `kill(1)`, to need no signal crate).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (as `kill -<name>` takes it, e.g. `INT`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid
        );
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL paddock");
        self.exited = self.child.wait().await.ok();
    }

    /// Waits for the process to exit; panics (and the guard kills it) after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                status
            }
            Ok(Err(e)) => panic!("waiting for paddock failed: {e}"),
            Err(_) => panic!(
                "paddock did not exit within {limit:?};\nstderr:\n{}",
                self.stderr.tail(40)
            ),
        }
    }
}

impl Drop for Paddock {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- paddock serve (pid {}) stdout ----\n{}\n---- stderr (last 80 lines) ----\n{}\n----",
                self.pid,
                self.stdout.tail(80),
                self.stderr.tail(80)
            );
        }
    }
}

/// Output of a finished command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `paddock ARGS` in `cwd` to completion (within [`WAIT`]).
pub async fn run_paddock(cwd: &Path, args: &[&str]) -> Output {
    let mut command = paddock(cwd);
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("paddock {args:?} did not finish within {WAIT:?}"))
        .expect("run paddock");
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A JSON API client with one key.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        Api {
            base: base.to_owned(),
            key: key.to_owned(),
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("http client"),
        }
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// GET that must answer 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POST that must answer `expected`.
    pub async fn post_expect(&self, path: &str, body: &Value, expected: u16) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert_eq!(status, expected, "POST {path} {body}: {answer}");
        answer
    }

    /// Creates a deployment with `body` (201) and polls GET until it is no longer
    /// `provisioning`, which must be `ready`; returns the ready deployment.
    pub async fn create_ready_deployment(&self, body: &Value) -> Value {
        let created = self.post_expect("/v1/deployments", body, 201).await;
        let id = created["deployment_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no deployment_id in {created}"))
            .to_owned();
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.get_ok(&format!("/v1/deployments/{id}")).await;
            if d["status"] != "provisioning" {
                assert_eq!(d["status"], "ready", "deployment did not become ready: {d}");
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} still provisioning after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a message (202) and returns the acceptance.
    pub async fn send_message(&self, deployment_id: &str, body: &Value) -> Value {
        self.post_expect(
            &format!("/v1/deployments/{deployment_id}/messages"),
            body,
            202,
        )
        .await
    }

    /// Opens the deployment's SSE stream with `query` (e.g. `"?after=evt_0"` or `""`). The
    /// server has registered the subscription when this returns (the response headers come
    /// after it), so every event committed from now on will arrive.
    pub async fn events(&self, deployment_id: &str, query: &str) -> Sse {
        let response = self
            .http_for_streams()
            .get(format!(
                "{}/v1/deployments/{deployment_id}/events{query}",
                self.base
            ))
            .bearer_auth(&self.key)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .expect("open the event stream");
        assert_eq!(response.status(), StatusCode::OK, "event stream status");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "event stream content type: {content_type}"
        );
        Sse::new(response)
    }

    /// The stream must not time out as a whole, unlike ordinary requests.
    fn http_for_streams(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

/// One SSE frame as it came over the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub event: Option<String>,
    pub id: Option<String>,
    /// The `data:` lines, in order.
    pub data: Vec<String>,
    pub retry: Option<String>,
    /// Comment lines (`: ping`) without the colon and leading space.
    pub comments: Vec<String>,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `event:`.
    pub event: String,
    /// `id:` (`evt_<n>`); empty for `replay_truncated`.
    pub id: String,
    /// `data:` parsed as JSON.
    pub data: Value,
}

impl Event {
    /// The number in `evt_<n>`.
    pub fn seq(&self) -> u64 {
        self.id
            .strip_prefix("evt_")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("event id `{}` is not evt_<n>", self.id))
    }

    /// Whether this is `run_status` of `run_id` with `status`.
    pub fn is_status(&self, run_id: &str, status: &str) -> bool {
        self.event == "run_status" && self.data["run_id"] == run_id && self.data["status"] == status
    }

    /// Whether this is the terminal `run_status` (`completed` or `error`) of `run_id`.
    pub fn is_terminal(&self, run_id: &str) -> bool {
        self.event == "run_status"
            && self.data["run_id"] == run_id
            && matches!(self.data["status"].as_str(), Some("completed" | "error"))
    }
}

/// The body of an SSE response as plain byte chunks (so no `bytes` dependency is needed).
type ByteStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The body ended cleanly (the server closed the stream).
    Clean,
    /// The connection failed (reset, truncated chunked body, …).
    Error(String),
}

/// A raw SSE reader over a `reqwest` response: parses frames per spec §7.2 and checks their
/// shape (one `data:` line of JSON, an `evt_<n>` id on every event but `replay_truncated`).
pub struct Sse {
    body: ByteStream,
    buffer: Vec<u8>,
    /// Every event returned so far, in order.
    pub seen: Vec<Event>,
    /// Every frame read so far (events, `retry:`, comments), in order.
    pub frames: Vec<Frame>,
    /// Set once the body has ended.
    pub ended: Option<End>,
}

impl Sse {
    fn new(response: reqwest::Response) -> Sse {
        Sse {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buffer: Vec::new(),
            seen: Vec::new(),
            frames: Vec::new(),
            ended: None,
        }
    }

    /// The next frame, `None` once the body has ended, or `Err(())` at `deadline`.
    pub async fn next_frame(&mut self, deadline: Instant) -> Result<Option<Frame>, ()> {
        loop {
            if let Some(frame) = self.take_frame() {
                self.frames.push(frame.clone());
                return Ok(Some(frame));
            }
            if self.ended.is_some() {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(()),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => self.ended = Some(End::Error(e.to_string())),
                Ok(None) => self.ended = Some(End::Clean),
            }
        }
    }

    /// Cuts one complete frame (up to a blank line) off the buffer.
    fn take_frame(&mut self) -> Option<Frame> {
        let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
        let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
        let text = String::from_utf8(raw).expect("SSE frames are UTF-8");
        let mut frame = Frame::default();
        for line in text.trim_end_matches('\n').split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(comment) = line.strip_prefix(':') {
                frame
                    .comments
                    .push(comment.strip_prefix(' ').unwrap_or(comment).to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "event" => frame.event = Some(value),
                "id" => frame.id = Some(value),
                "data" => frame.data.push(value),
                "retry" => frame.retry = Some(value),
                other => panic!("unknown SSE field `{other}` in frame {text:?}"),
            }
        }
        Some(frame)
    }

    /// The next event (skipping `retry:` and comment frames), `None` once the body has ended.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, ()> {
        loop {
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            let Some(kind) = frame.event.clone() else {
                assert!(
                    frame.data.is_empty(),
                    "a data frame without `event:`: {frame:?}"
                );
                continue;
            };
            assert_eq!(
                frame.data.len(),
                1,
                "an event frame has exactly one data line (spec §7.2): {frame:?}"
            );
            let data: Value = serde_json::from_str(&frame.data[0])
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {frame:?}"));
            assert!(data.is_object(), "event data is a JSON object: {frame:?}");
            let id = match (kind.as_str(), frame.id.clone()) {
                ("replay_truncated", None) => String::new(),
                ("replay_truncated", Some(id)) => {
                    panic!("replay_truncated must have no id line, got {id}")
                }
                (_, Some(id)) => id,
                (_, None) => panic!("an event without an id line: {frame:?}"),
            };
            let event = Event {
                event: kind,
                id,
                data,
            };
            if !event.id.is_empty()
                && let Some(last) = self.seen.iter().rev().find(|e| !e.id.is_empty())
            {
                assert!(
                    event.seq() > last.seq(),
                    "event ids must strictly increase: {} after {}",
                    event.id,
                    last.id
                );
            }
            self.seen.push(event.clone());
            return Ok(Some(event));
        }
    }

    /// Reads events until `done` holds for one (which is returned, with everything read
    /// before it in [`Sse::seen`]); panics at `deadline` or if the stream ends first.
    pub async fn until(&mut self, limit: Duration, mut done: impl FnMut(&Event) -> bool) -> Event {
        let deadline = Instant::now() + limit;
        let start = self.seen.len();
        loop {
            match self.next_event(deadline).await {
                Ok(Some(event)) => {
                    if done(&event) {
                        return event;
                    }
                }
                Ok(None) => panic!(
                    "the event stream ended ({:?}) before the awaited event; read:\n{}",
                    self.ended,
                    describe(&self.seen[start..])
                ),
                Err(()) => panic!(
                    "no awaited event within {limit:?}; read:\n{}",
                    describe(&self.seen[start..])
                ),
            }
        }
    }

    /// Reads until the body ends; returns how, with every event read meanwhile in `seen`.
    pub async fn until_end(&mut self, limit: Duration) -> End {
        let deadline = Instant::now() + limit;
        loop {
            match self.next_event(deadline).await {
                Ok(Some(_)) => {}
                Ok(None) => return self.ended.clone().unwrap_or(End::Clean),
                Err(()) => panic!("the event stream did not end within {limit:?}"),
            }
        }
    }
}

/// One line per event, for failure messages.
pub fn describe(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {}", e.id, e.event, e.data))
        .collect::<Vec<_>>()
        .join("\n")
}
