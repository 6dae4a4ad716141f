#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Per-command overhead of the sandbox backends: N runs of `true` each, median and p99.
//!
//! `cargo bench -p paddock-sandbox` (a plain binary, no criterion). Set `PADDOCK_BENCH_RUNS`
//! to change N (default 100). Numbers on a loaded machine are upper bounds.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use paddock_sandbox::{
    BubblewrapConfig, BubblewrapSandbox, Command, DeploymentSandbox, HostSandbox,
    HostSandboxConfig, Network, Sandbox,
};

struct Row {
    name: String,
    samples: Vec<Duration>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn time_sandbox(
    sandbox: &dyn Sandbox,
    spec: &DeploymentSandbox,
    runs: usize,
) -> Vec<Duration> {
    sandbox.prepare(spec).await.unwrap();
    for _ in 0..3 {
        let out = sandbox.run(spec, Command::new("true")).await.unwrap();
        assert!(out.success(), "{out:?}");
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = sandbox.run(spec, Command::new("true")).await.unwrap();
        samples.push(start.elapsed());
        assert!(out.success(), "{out:?}");
    }
    samples
}

async fn time_bare_spawn(runs: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let status = tokio::process::Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .status()
            .await
            .unwrap();
        samples.push(start.elapsed());
        assert!(status.success());
    }
    samples
}

fn main() {
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::Builder::new()
        .prefix("paddock-sbx-bench-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let mut rows = Vec::new();
    rt.block_on(async {
        rows.push(Row {
            name: "spawn /bin/true (no sandbox, baseline)".into(),
            samples: time_bare_spawn(runs).await,
        });

        let host = HostSandbox::new(HostSandboxConfig {
            allow_unsafe_host: true,
            ..HostSandboxConfig::default()
        })
        .unwrap();
        let host_spec = DeploymentSandbox::new("bench-host", root.path().join("host-ws"));
        rows.push(Row {
            name: "host backend (prlimit + bash -c true)".into(),
            samples: time_sandbox(&host, &host_spec, runs).await,
        });

        let bwrap = BubblewrapSandbox::new(BubblewrapConfig {
            runtime_dir: root.path().join("runtime"),
            cgroup_name: "paddock-bench".into(),
            ..BubblewrapConfig::default()
        })
        .unwrap();
        let e = bwrap.enforcement();
        let spec = DeploymentSandbox::new("bench-bwrap", root.path().join("bwrap-ws"));
        rows.push(Row {
            name: format!(
                "bubblewrap, network none (cgroups {:?})",
                e.cgroups.map_or("off".to_owned(), |v| format!("{v:?}"))
            ),
            samples: time_sandbox(&bwrap, &spec, runs).await,
        });
        if e.internet_unavailable.is_none() {
            let inet = DeploymentSandbox {
                network: Network::Internet,
                ..DeploymentSandbox::new("bench-bwrap-inet", root.path().join("inet-ws"))
            };
            rows.push(Row {
                name: "bubblewrap, network internet (slirp4netns)".into(),
                samples: time_sandbox(&bwrap, &inet, runs).await,
            });
            bwrap.teardown(&inet.deployment_id).await.unwrap();
        }
        bwrap.teardown(&spec.deployment_id).await.unwrap();
    });
    for controller in ["memory/", "pids/", "cpu/", ""] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{controller}paddock-bench"));
    }

    println!();
    println!("Per-command wall time of `true`, N = {runs} (after 3 warm-up runs)");
    println!();
    println!("| backend | median ms | p99 ms | mean ms |");
    println!("|---|---:|---:|---:|");
    let baseline = rows
        .get(1)
        .map(|r| {
            let mut s = r.samples.clone();
            s.sort();
            percentile(&s, 0.5)
        })
        .unwrap_or_default();
    for row in &rows {
        let mut s = row.samples.clone();
        s.sort();
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            row.name,
            ms(percentile(&s, 0.5)),
            ms(percentile(&s, 0.99)),
            ms(mean)
        );
    }
    if let Some(bw) = rows.get(2) {
        let mut s = bw.samples.clone();
        s.sort();
        println!();
        println!(
            "bubblewrap overhead over the host backend (median): {:.2} ms per command",
            ms(percentile(&s, 0.5).saturating_sub(baseline))
        );
    }
}
