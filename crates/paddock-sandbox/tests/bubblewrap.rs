#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Real isolation tests through bubblewrap on this machine. They need `bwrap` (scripts/setup
//! installs it); the limit, uid and `internet` tests also need Paddock's tests to run as root,
//! as they do on the development and CI machines.
//!
//! Nothing here sleeps for correctness: waiting is always for a condition, with a generous
//! bound, so a loaded 2-core machine only makes the tests slower.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_sandbox::{
    BubblewrapConfig, BubblewrapSandbox, CancellationToken, CgroupMode, Command, CommandOutput,
    DeploymentSandbox, InternetPolicy, Ipv4Net, KillReason, MemoryEnforcement, Network,
    ProcessEnforcement, Sandbox, SandboxError,
};
use tempfile::TempDir;

/// A generous per-command bound for commands expected to finish on their own.
const LONG: Duration = Duration::from_secs(120);

struct Fixture {
    root: TempDir,
    sandbox: BubblewrapSandbox,
    spec: DeploymentSandbox,
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

fn fixture_with(name: &str, tweak: impl FnOnce(&mut BubblewrapConfig)) -> Fixture {
    let root = tempfile::Builder::new()
        .prefix("paddock-sbx-test-")
        .tempdir()
        .unwrap();
    // The sandbox uid must be able to traverse (not list) the directories above its workspace.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut config = BubblewrapConfig {
        runtime_dir: root.path().join("runtime"),
        cgroup_name: "paddock-test".to_owned(),
        ..BubblewrapConfig::default()
    };
    tweak(&mut config);
    let sandbox = BubblewrapSandbox::new(config).expect("bubblewrap backend (is bwrap installed?)");
    let workspace = root.path().join("ws");
    let spec = DeploymentSandbox {
        memory_mb: 512,
        max_processes: 128,
        ..DeploymentSandbox::new(format!("t-{name}-{}", std::process::id()), workspace)
    };
    Fixture {
        root,
        sandbox,
        spec,
    }
}

/// Best-effort removal of a test deployment's cgroups even when the test panicked before its
/// teardown (cgroup directories are removed with `rmdir`; empty ones only).
impl Drop for Fixture {
    fn drop(&mut self) {
        for controller in ["memory", "pids", "cpu", ""] {
            let dep = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("paddock-test")
                .join(&self.spec.deployment_id);
            if let Ok(entries) = std::fs::read_dir(&dep) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dep);
        }
    }
}

fn fixture(name: &str) -> Fixture {
    fixture_with(name, |_| {})
}

impl Fixture {
    async fn prepare(&self) {
        self.sandbox.prepare(&self.spec).await.unwrap();
    }

    async fn run(&self, script: &str) -> CommandOutput {
        self.run_cmd(Command::new(script).with_timeout(LONG)).await
    }

    async fn run_cmd(&self, cmd: Command) -> CommandOutput {
        self.sandbox.run(&self.spec, cmd).await.unwrap()
    }

    async fn teardown(self) {
        self.sandbox
            .teardown(&self.spec.deployment_id)
            .await
            .unwrap();
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn stdout(o: &CommandOutput) -> String {
    o.stdout.text_lossy().into_owned()
}

fn show(o: &CommandOutput) -> String {
    format!(
        "exit {:?} signal {:?} killed {:?}\nstdout:\n{}\nstderr:\n{}",
        o.exit_code,
        o.signal,
        o.killed_reason,
        o.stdout.text_lossy(),
        o.stderr.text_lossy()
    )
}

/// Host processes whose command line contains `marker`.
fn host_pids_matching(marker: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(marker)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Live (non-zombie) host processes owned by `uid`. A zombie of bubblewrap's init can linger
/// until the host's PID 1 reaps it; it is not running anything.
fn host_pids_of_uid(uid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?");
        if meta.uid() == uid && state != "Z" && state != "X" {
            out.push(format!("{name} {state} {}", stat.trim()));
        }
    }
    out
}

/// Waits (bounded) for a condition; panics with `what` if it never holds.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A non-loopback IPv4 address of this host, if it has one.
fn host_address() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse::<Ipv4Addr>().ok();
        } else if t.contains("host LOCAL")
            && let Some(a) = last
            && !a.is_loopback()
        {
            return Some(a);
        }
    }
    None
}

/// Whether `listener` has a pending connection.
fn accepted_anything(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    listener.accept().is_ok()
}

#[tokio::test]
async fn runs_in_the_workspace_as_an_unprivileged_user_with_a_clean_environment() {
    let fx = fixture("basic");
    fx.prepare().await;
    assert_eq!(fx.sandbox.name(), "bubblewrap");
    let out = fx
        .run_cmd(
            Command::new(
                "pwd; id -u; id -g; id -G; hostname; echo \"HOME=$HOME\"; env | sort; \
                 echo hello > made-inside.txt; echo err >&2; exit 3",
            )
            .with_timeout(LONG)
            .with_env("PADDOCK_RUN", "r1"),
        )
        .await;
    assert_eq!(out.exit_code, Some(3), "{}", show(&out));
    assert_eq!(out.stderr.text_lossy(), "err\n", "{}", show(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("/workspace"));
    let uid: u32 = lines.next().unwrap().parse().unwrap();
    let gid: u32 = lines.next().unwrap().parse().unwrap();
    assert_eq!(
        lines.next().unwrap(),
        gid.to_string(),
        "supplementary groups"
    );
    assert_eq!(lines.next(), Some("sandbox"));
    assert!(text.contains("HOME=/workspace"));
    assert!(text.contains("PADDOCK_RUN=r1"));
    assert!(text.contains("LANG=C.UTF-8") && text.contains("TERM=dumb"));
    // Nothing of the test process's (cargo's) environment leaks in.
    assert!(!text.contains("CARGO"), "{text}");
    assert!(!text.contains("RUST"), "{text}");
    let made = fx.spec.workspace.join("made-inside.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "hello\n");
    if is_root() {
        assert_ne!(uid, 0);
        assert_eq!(Some((uid, gid)), fx.sandbox.workspace_owner(&fx.spec));
        assert_eq!(std::fs::metadata(&made).unwrap().uid(), uid);
        assert!(fx.sandbox.enforcement().per_deployment_uid);
    }
    fx.teardown().await;
}

#[tokio::test]
async fn cannot_read_outside_its_workspace() {
    let fx = fixture("read");
    fx.prepare().await;
    let other = fx.dir("other-ws");
    std::fs::write(other.join("secret.txt"), "OTHER-WORKSPACE-SECRET").unwrap();
    let data = fx.dir("paddock-data");
    std::fs::write(data.join("paddock.db"), b"SQLite format 3\0DATA-DIR-SECRET").unwrap();
    std::fs::write(data.join("admin.key"), "ADMIN-KEY-SECRET").unwrap();
    let script = format!(
        "cat {o}/secret.txt; cat {d}/paddock.db; cat {d}/admin.key; ls {root}; \
         cat /etc/shadow; ls /root /home /var /srv /opt /run /sys; cat /proc/1/environ; \
         ls /etc; echo; ls /",
        o = other.display(),
        d = data.display(),
        root = fx.root.path().display()
    );
    let out = fx.run(&script).await;
    let all = format!("{}{}", out.stdout.text_lossy(), out.stderr.text_lossy());
    for secret in [
        "OTHER-WORKSPACE-SECRET",
        "DATA-DIR-SECRET",
        "ADMIN-KEY-SECRET",
        "root:",
    ] {
        assert!(
            !out.stdout.text_lossy().contains(secret),
            "{secret} leaked:\n{all}"
        );
    }
    for path in [
        "/etc/shadow",
        "/root",
        "/home",
        "/var",
        "/srv",
        "/opt",
        "/run",
        "/sys",
    ] {
        assert!(
            all.contains(&format!("{path}: No such file or directory"))
                || all.contains(&format!(
                    "cannot access '{path}': No such file or directory"
                )),
            "{path} exists inside:\n{all}"
        );
    }
    // The root holds only what the sandbox provides.
    let text = out.stdout.text_lossy().into_owned();
    let root_listing: Vec<&str> = text.rsplit("\n\n").next().unwrap().lines().collect();
    for entry in &root_listing {
        assert!(
            [
                "bin",
                "dev",
                "etc",
                "lib",
                "lib32",
                "lib64",
                "libx32",
                "proc",
                "sbin",
                "tmp",
                "usr",
                "workspace"
            ]
            .contains(&entry.trim()),
            "unexpected /{entry} in the sandbox root: {root_listing:?}"
        );
    }
    fx.teardown().await;
}

#[tokio::test]
async fn cannot_write_outside_workspace_and_tmp() {
    let fx = fixture("write");
    fx.prepare().await;
    let marker = format!("paddock-write-probe-{}", std::process::id());
    let targets = [
        "/", "/usr", "/usr/bin", "/etc", "/bin", "/dev", "/proc", "/lib",
    ];
    let mut script = String::new();
    for t in targets {
        script.push_str(&format!(
            "if touch {t}/{marker} 2>/dev/null; then echo WROTE {t}; else echo refused {t}; fi\n"
        ));
    }
    script.push_str(&format!(
        "touch /workspace/{marker} && echo ok-workspace\ntouch /tmp/{marker} && echo ok-tmp\n\
         mkdir -p /tmp/a/b && echo ok-tmpdir\n"
    ));
    let out = fx.run(&script).await;
    let text = stdout(&out);
    for t in targets {
        assert!(
            text.contains(&format!("refused {t}\n")),
            "{t}:\n{}",
            show(&out)
        );
        // And nothing appeared on the host.
        assert!(!Path::new(t).join(&marker).exists());
    }
    assert!(text.contains("ok-workspace") && text.contains("ok-tmp") && text.contains("ok-tmpdir"));
    assert!(fx.spec.workspace.join(&marker).exists());
    // /tmp was private: nothing of it on the host.
    assert!(!Path::new("/tmp").join(&marker).exists());
    fx.teardown().await;
}

#[tokio::test]
async fn cannot_see_host_processes() {
    let fx = fixture("ps");
    fx.prepare().await;
    let marker = format!("paddock-host-proc-marker-{}", std::process::id());
    // One process whose argv[0] is the marker.
    let mut host = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("exec -a {marker} sleep 1000"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = fx
        .run(&format!(
            "ls /proc | grep -c '^[0-9]'; ps -e -o pid=,comm= ; \
             m=paddock-host-proc-; m=${{m}}marker-{pid}; \
             cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c \"^$m\"",
            pid = std::process::id()
        ))
        .await;
    host.kill().unwrap();
    host.wait().unwrap();
    let text = stdout(&out);
    let mut lines = text.lines();
    let count: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(count <= 8, "{count} processes visible:\n{text}");
    assert_eq!(text.lines().last().unwrap().trim(), "0", "{text}");
    assert!(!text.contains("cargo") && !text.contains("sleep"), "{text}");
    fx.teardown().await;
}

/// Tries the host's PostgreSQL port on loopback (where CI runs PostgreSQL, and where a
/// Paddock node's database usually is).
const POSTGRES_PROBE: &str = "if timeout 10 bash -c 'echo x > /dev/tcp/127.0.0.1/5432' 2>/dev/null; \
     then echo postgres CONNECTED; else echo postgres refused; fi\n";

#[tokio::test]
async fn network_none_reaches_nothing() {
    let fx = fixture("net-none");
    fx.prepare().await;
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut targets = vec!["127.0.0.1".to_owned(), "10.0.2.2".to_owned()];
    if let Some(a) = host_address() {
        targets.push(a.to_string());
    }
    let mut script = String::from("ip -o link | awk '{print $2}'\n");
    for t in &targets {
        script.push_str(&format!(
            "if timeout 10 bash -c 'echo x > /dev/tcp/{t}/{port}' 2>/dev/null; then \
             echo CONNECTED {t}; else echo refused {t}; fi\n"
        ));
    }
    script.push_str(POSTGRES_PROBE);
    let out = fx.run(&script).await;
    let text = stdout(&out);
    assert_eq!(text.lines().next(), Some("lo:"), "{text}");
    assert!(text.contains("postgres refused\n"), "{}", show(&out));
    for t in &targets {
        assert!(text.contains(&format!("refused {t}\n")), "{}", show(&out));
    }
    assert!(!accepted_anything(&listener));
    fx.teardown().await;
}

#[tokio::test]
async fn network_internet_blocks_host_and_private_addresses() {
    if !is_root() {
        eprintln!("skipped: `internet` needs root");
        return;
    }
    let mut fx = fixture("net-inet");
    fx.spec.network = Network::Internet;
    fx.prepare().await;
    assert_eq!(fx.sandbox.enforcement().internet_unavailable, None);
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut targets: Vec<String> = [
        "127.0.0.1",
        "10.0.2.2",
        "10.0.2.3",
        "10.1.2.3",
        "169.254.169.254",
        "172.17.0.1",
        "192.168.1.1",
        "100.100.100.200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(a) = host_address() {
        targets.push(a.to_string());
    }
    let mut script = String::from("ip -o -4 addr show tap0 | awk '{print $4}'\n");
    for t in &targets {
        script.push_str(&format!(
            "if timeout 10 bash -c 'echo x > /dev/tcp/{t}/{port}' 2>/dev/null; then \
             echo CONNECTED {t}; else echo refused {t}; fi\n"
        ));
    }
    // The sandbox cannot loosen its own filter.
    script.push_str(
        "ip rule del pref 200 2>/dev/null && echo RULE-DELETED || echo rule-kept\n\
         ip link set tap0 down 2>/dev/null && echo LINK-DOWN || echo link-kept\n",
    );
    script.push_str(POSTGRES_PROBE);
    let out = fx.run(&script).await;
    let text = stdout(&out);
    assert_eq!(text.lines().next(), Some("10.0.2.100/24"), "{}", show(&out));
    assert!(text.contains("postgres refused\n"), "{}", show(&out));
    for t in &targets {
        assert!(
            text.contains(&format!("refused {t}\n")),
            "{t}: {}",
            show(&out)
        );
    }
    assert!(
        text.contains("rule-kept") && text.contains("link-kept"),
        "{text}"
    );
    assert!(!accepted_anything(&listener));
    fx.teardown().await;
}

#[tokio::test]
async fn network_internet_egress_works_through_the_nat() {
    if !is_root() {
        eprintln!("skipped: `internet` needs root");
        return;
    }
    let Some(host) = host_address() else {
        eprintln!("skipped: no non-loopback address to stand in for a public server");
        return;
    };
    // Stand-in for a public server: this host's own address, explicitly allowed (it is blocked
    // by default, as the previous test shows), so no outside network is needed.
    let allow = Ipv4Net::new(host, 32).unwrap();
    let mut fx = fixture_with("net-egress", |c| {
        c.internet = InternetPolicy {
            allow: vec![allow],
            block: vec![],
        }
    });
    fx.spec.network = Network::Internet;
    fx.prepare().await;
    let listener = TcpListener::bind((host, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        (got, peer)
    });
    let out = fx
        .run(&format!(
            "echo hello-from-sandbox > /dev/tcp/{host}/{port} && echo sent; \
             getent hosts localhost | head -1"
        ))
        .await;
    assert!(stdout(&out).contains("sent"), "{}", show(&out));
    let (got, peer) = accept.join().unwrap();
    assert_eq!(got, "hello-from-sandbox\n");
    // The connection came through slirp4netns, i.e. from the host itself.
    assert_eq!(peer.ip(), std::net::IpAddr::V4(host));
    fx.teardown().await;
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let fx = fixture("timeout");
    fx.prepare().await;
    let marker = format!("paddock-timeout-marker-{}", std::process::id());
    let started = Instant::now();
    let out = fx
        .run_cmd(
            Command::new(format!(
                "setsid bash -c 'sleep 1000; : {marker}-daemon' </dev/null >/dev/null 2>&1 & \
                 bash -c 'sleep 1000; : {marker}-child' & echo started; wait"
            ))
            .with_timeout(Duration::from_secs(3)),
        )
        .await;
    assert!(out.timed_out, "{}", show(&out));
    assert_eq!(out.killed_reason, Some(KillReason::Timeout));
    assert!(stdout(&out).contains("started"));
    assert!(started.elapsed() < Duration::from_secs(60));
    // run() returns only once the whole tree is gone: no waiting needed here.
    assert_eq!(host_pids_matching(&marker), Vec::<String>::new());
    fx.teardown().await;
}

#[tokio::test]
async fn cancel_kills_the_whole_tree() {
    let fx = fixture("cancel");
    fx.prepare().await;
    let marker = format!("paddock-cancel-marker-{}", std::process::id());
    let cancel = CancellationToken::new();
    let cmd = Command::new(format!(
        "setsid bash -c 'sleep 1000; : {marker}-daemon' </dev/null >/dev/null 2>&1 & sleep 1000"
    ))
    .with_timeout(Duration::from_secs(600))
    .with_cancel(cancel.clone());
    let run = fx.run_cmd(cmd);
    let canceller = async {
        // Cancel once the daemon is really running on the host.
        let m = format!("{marker}-daemon");
        wait_for("the daemonised child", || {
            !host_pids_matching(&m).is_empty()
        })
        .await;
        cancel.cancel();
    };
    let (out, ()) = tokio::join!(run, canceller);
    assert_eq!(
        out.killed_reason,
        Some(KillReason::Cancelled),
        "{}",
        show(&out)
    );
    assert!(!out.timed_out);
    assert_eq!(host_pids_matching(&marker), Vec::<String>::new());

    // A command whose token is already cancelled never starts.
    let done = CancellationToken::new();
    done.cancel();
    let out = fx
        .run_cmd(Command::new("touch /workspace/should-not-exist").with_cancel(done))
        .await;
    assert_eq!(out.killed_reason, Some(KillReason::Cancelled));
    assert!(!fx.spec.workspace.join("should-not-exist").exists());
    fx.teardown().await;
}

#[tokio::test]
async fn endless_loop_is_stopped_by_the_timeout() {
    let fx = fixture("loop");
    fx.prepare().await;
    let out = fx
        .run_cmd(Command::new("while :; do :; done").with_timeout(Duration::from_secs(2)))
        .await;
    assert!(out.timed_out);
    assert_eq!(out.killed_reason, Some(KillReason::Timeout));
    assert_eq!(out.signal, Some(9), "{}", show(&out));
    let again = fx.run("echo still-healthy").await;
    assert_eq!(stdout(&again), "still-healthy\n");
    fx.teardown().await;
}

#[tokio::test]
async fn fork_bomb_is_stopped_by_the_process_cap() {
    let mut fx = fixture("forkbomb");
    fx.spec.max_processes = 64;
    fx.prepare().await;
    let started = Instant::now();
    let out = fx
        .run_cmd(Command::new(":(){ :|:& };:; wait").with_timeout(Duration::from_secs(120)))
        .await;
    let e = fx.sandbox.enforcement();
    if e.processes == ProcessEnforcement::CgroupAndRlimit {
        assert_eq!(
            out.killed_reason,
            Some(KillReason::ProcessLimit),
            "{}",
            show(&out)
        );
        assert!(!out.timed_out);
        assert!(started.elapsed() < Duration::from_secs(100));
    } else {
        assert!(out.killed_reason.is_some(), "{}", show(&out));
    }
    if let Some((uid, _)) = fx.sandbox.workspace_owner(&fx.spec) {
        assert_eq!(host_pids_of_uid(uid), Vec::<String>::new(), "bomb survived");
    }
    let again = fx.run("echo still-healthy").await;
    assert_eq!(stdout(&again), "still-healthy\n", "{}", show(&again));
    fx.teardown().await;
}

#[tokio::test]
async fn fork_bomb_is_contained_by_rlimit_without_cgroups() {
    let mut fx = fixture_with("forkbomb-rl", |c| c.cgroups = CgroupMode::Disabled);
    fx.spec.max_processes = 32;
    fx.prepare().await;
    assert_eq!(
        fx.sandbox.enforcement().processes,
        ProcessEnforcement::Rlimit
    );
    // The trailing `sleep` keeps the sandbox alive long enough for the bomb to reach the cap:
    // `wait` alone can return (and the PID namespace be torn down) before it does.
    let out = fx
        .run_cmd(Command::new(":(){ :|:& };:; wait; sleep 2").with_timeout(Duration::from_secs(5)))
        .await;
    // Without cgroups nothing counts refused forks: the bomb either collapses on its own or
    // runs into the timeout, but it never grows past the cap and never outlives the command.
    assert!(
        out.killed_reason.is_none() || out.killed_reason == Some(KillReason::Timeout),
        "{}",
        show(&out)
    );
    assert!(out.stderr.text_lossy().contains("fork"), "{}", show(&out));
    if let Some((uid, _)) = fx.sandbox.workspace_owner(&fx.spec) {
        assert_eq!(host_pids_of_uid(uid), Vec::<String>::new(), "bomb survived");
    }
    // The cap counts this sandbox's processes only: a fresh command forks freely.
    let again = fx
        .run("for i in 1 2 3 4 5 6 7 8; do sleep 0.1 & done; wait; echo ok")
        .await;
    assert_eq!(stdout(&again), "ok\n", "{}", show(&again));
    fx.teardown().await;
}

#[tokio::test]
async fn memory_hog_is_stopped_by_the_memory_limit() {
    let mut fx = fixture("memhog");
    fx.spec.memory_mb = 128;
    fx.prepare().await;
    assert_eq!(fx.sandbox.enforcement().memory, MemoryEnforcement::Cgroup);
    // tail keeps the whole newline-free "last line" in memory.
    let out = fx.run("head -c 1500M /dev/zero | tail > /dev/null").await;
    assert_eq!(
        out.killed_reason,
        Some(KillReason::MemoryLimit),
        "{}",
        show(&out)
    );
    assert_eq!(out.exit_code, Some(137));
    let again = fx.run("echo still-healthy").await;
    assert_eq!(stdout(&again), "still-healthy\n");
    fx.teardown().await;
}

#[tokio::test]
async fn memory_hog_hits_rlimit_as_without_cgroups() {
    let mut fx = fixture_with("memhog-rl", |c| c.cgroups = CgroupMode::Disabled);
    fx.spec.memory_mb = 128;
    fx.prepare().await;
    assert_eq!(
        fx.sandbox.enforcement().memory,
        MemoryEnforcement::AddressSpaceRlimit
    );
    let out = fx
        .run("python3 -c 'x = bytearray(600 * 1024 * 1024)' 2>&1 | tail -1")
        .await;
    assert!(stdout(&out).contains("MemoryError"), "{}", show(&out));
    fx.teardown().await;
}

#[tokio::test]
async fn symlinks_planted_in_the_workspace_stay_inside_the_sandbox_view() {
    let fx = fixture("symlink");
    fx.prepare().await;
    let outside = fx.dir("outside");
    let target = outside.join("target.txt");
    let ws = &fx.spec.workspace;
    std::os::unix::fs::symlink(&target, ws.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ws.join("passwd-link")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("dir-link")).unwrap();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let out = fx
        .run(
            "echo pwned > escape; echo pwned > passwd-link; echo pwned > dir-link/new.txt; \
             cat passwd-link",
        )
        .await;
    assert!(
        !target.exists(),
        "wrote through the symlink: {}",
        show(&out)
    );
    assert!(!outside.join("new.txt").exists());
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    // Inside, the link resolves to the sandbox's own generated passwd.
    assert!(stdout(&out).contains("Paddock sandbox"), "{}", show(&out));
    fx.teardown().await;
}

#[tokio::test]
async fn large_output_is_capped_with_exact_totals() {
    let fx = fixture("output");
    fx.prepare().await;
    let out = fx
        .run_cmd(
            Command::new("head -c 5000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero >&2")
                .with_timeout(LONG)
                .with_output_cap(1024 * 1024),
        )
        .await;
    assert_eq!(out.exit_code, Some(0), "{}", show(&out));
    assert_eq!(out.stdout.total_bytes, 5_000_000);
    assert_eq!(out.stdout.data.len(), 1024 * 1024);
    assert!(out.stdout.truncated);
    assert!(out.stdout.data.iter().all(|&b| b == b'a'));
    assert_eq!(out.stderr.total_bytes, 3_000_000);
    assert_eq!(out.stderr.data.len(), 1024 * 1024);
    assert!(out.stderr.truncated);
    let small = fx.run("printf abc").await;
    assert_eq!(small.stdout.data, b"abc");
    assert!(!small.stdout.truncated);
    assert_eq!(small.stdout.total_bytes, 3);
    fx.teardown().await;
}

#[tokio::test]
async fn seccomp_denies_namespaces_ptrace_and_mounts_but_threads_work() {
    let fx = fixture("seccomp");
    fx.prepare().await;
    let out = fx
        .run(
            "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; \
             unshare -U true 2>&1 && echo USERNS-ALLOWED; \
             unshare -r true 2>&1 && echo USERNS-ALLOWED; \
             mount -t tmpfs none /tmp 2>&1 && echo MOUNT-ALLOWED; \
             python3 -c 'import ctypes; l = ctypes.CDLL(None); \
             print(\"ptrace\", l.ptrace(0, 0, 0, 0), ctypes.get_errno())'; \
             python3 -c 'import threading; t = threading.Thread(target=print, args=(\"thread-ok\",)); t.start(); t.join()'",
        )
        .await;
    let text = stdout(&out);
    assert!(text.contains("Seccomp:\t2"), "{}", show(&out));
    assert!(text.contains("NoNewPrivs:\t1"));
    assert!(text.contains("CapEff:\t0000000000000000"));
    assert!(!text.contains("USERNS-ALLOWED"), "{}", show(&out));
    assert!(!text.contains("MOUNT-ALLOWED"), "{}", show(&out));
    assert!(text.contains("ptrace -1"), "{}", show(&out));
    assert!(text.contains("thread-ok"), "{}", show(&out));
    fx.teardown().await;
}

#[tokio::test]
async fn concurrent_commands_of_one_deployment_all_finish() {
    let fx = fixture("concurrent");
    fx.prepare().await;
    let cmd = |i: u32| Command::new(format!("echo run-{i}")).with_timeout(LONG);
    let outs = tokio::join!(
        fx.run_cmd(cmd(0)),
        fx.run_cmd(cmd(1)),
        fx.run_cmd(cmd(2)),
        fx.run_cmd(cmd(3))
    );
    for (i, out) in [outs.0, outs.1, outs.2, outs.3].iter().enumerate() {
        assert_eq!(stdout(out), format!("run-{i}\n"), "{}", show(out));
    }
    fx.teardown().await;
}

#[tokio::test]
async fn probe_prepare_teardown_and_validation() {
    let fx = fixture("probe");
    fx.sandbox.probe().await.unwrap();
    fx.prepare().await;
    if is_root() {
        assert!(
            fx.sandbox.enforcement().cgroups.is_some(),
            "{:?}",
            fx.sandbox.enforcement()
        );
        // The workspace belongs to the sandbox uid and only to it.
        let (uid, gid) = fx.sandbox.workspace_owner(&fx.spec).unwrap();
        let meta = std::fs::metadata(&fx.spec.workspace).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (uid, gid, 0o700)
        );
    }
    if is_root() && fx.sandbox.enforcement().cpu_quota {
        let mut half = fx.spec.clone();
        half.cpus = 0.5;
        fx.sandbox.prepare(&half).await.unwrap();
        let quota = Path::new("/sys/fs/cgroup/cpu/paddock-test")
            .join(&fx.spec.deployment_id)
            .join("cpu.cfs_quota_us");
        if quota.exists() {
            assert_eq!(std::fs::read_to_string(quota).unwrap().trim(), "50000");
        }
    }
    let bad = DeploymentSandbox::new("../evil", fx.spec.workspace.clone());
    assert!(matches!(
        fx.sandbox.run(&bad, Command::new("true")).await,
        Err(SandboxError::InvalidSpec(_))
    ));
    let link = fx.root.path().join("ws-link");
    std::os::unix::fs::symlink(&fx.spec.workspace, &link).unwrap();
    let linked = DeploymentSandbox::new("t-linked", link);
    assert!(matches!(
        fx.sandbox.run(&linked, Command::new("true")).await,
        Err(SandboxError::InvalidSpec(_))
    ));
    assert!(matches!(
        fx.sandbox.run(&fx.spec, Command::new("a\0b")).await,
        Err(SandboxError::InvalidCommand(_))
    ));
    let id = fx.spec.deployment_id.clone();
    fx.teardown().await;
    assert!(
        !Path::new("/sys/fs/cgroup/pids/paddock-test")
            .join(&id)
            .exists()
    );
    assert!(!Path::new("/sys/fs/cgroup/paddock-test").join(&id).exists());
}

#[tokio::test]
async fn unreachable_workspace_is_reported_clearly() {
    if !is_root() {
        return;
    }
    let fx = fixture("unreachable");
    let private = fx.dir("private");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let spec = DeploymentSandbox::new("t-unreachable", private.join("ws"));
    match fx.sandbox.prepare(&spec).await {
        Err(SandboxError::Setup(msg)) => assert!(msg.contains("chmod o+x"), "{msg}"),
        other => panic!("{other:?}"),
    }
}
