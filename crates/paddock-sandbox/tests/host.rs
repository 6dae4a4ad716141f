#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The development-only host backend: refused without the opt-in, and otherwise honest about
//! the few things it does (working directory, clean environment, timeout, cancel, caps).

use std::time::{Duration, Instant};

use paddock_sandbox::{
    CancellationToken, Command, DeploymentSandbox, HostSandbox, HostSandboxConfig, KillReason,
    Sandbox, SandboxError,
};

fn host() -> HostSandbox {
    HostSandbox::new(HostSandboxConfig {
        allow_unsafe_host: true,
        ..HostSandboxConfig::default()
    })
    .unwrap()
}

fn pgrep(marker: &str) -> Vec<String> {
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

#[test]
fn refused_without_the_explicit_opt_in() {
    let err = HostSandbox::new(HostSandboxConfig::default()).unwrap_err();
    assert!(matches!(err, SandboxError::Unavailable(ref m) if m.contains("allow_unsafe_host")));
}

#[tokio::test]
async fn runs_in_the_workspace_with_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = host();
    assert_eq!(sandbox.name(), "host");
    sandbox.probe().await.unwrap();
    let spec = DeploymentSandbox::new("dep_host", dir.path().join("ws"));
    sandbox.prepare(&spec).await.unwrap();
    let out = sandbox
        .run(
            &spec,
            Command::new("pwd; env | sort; echo made > f.txt; exit 4").with_env("EXTRA", "1"),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(4));
    let text = out.stdout.text_lossy();
    assert!(
        text.starts_with(&format!("{}\n", spec.workspace.display())),
        "{text}"
    );
    assert!(text.contains("EXTRA=1") && text.contains("TERM=dumb"));
    assert!(!text.contains("CARGO"), "{text}");
    assert_eq!(
        std::fs::read_to_string(spec.workspace.join("f.txt")).unwrap(),
        "made\n"
    );
}

#[tokio::test]
async fn timeout_and_cancel_kill_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = host();
    let spec = DeploymentSandbox::new("dep_host", dir.path().to_path_buf());
    let marker = format!("paddock-host-test-{}", std::process::id());
    let out = sandbox
        .run(
            &spec,
            Command::new(format!("bash -c 'sleep 1000; : {marker}-a' & wait"))
                .with_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.killed_reason, Some(KillReason::Timeout));
    assert_eq!(pgrep(&format!("{marker}-a")), Vec::<String>::new());

    let cancel = CancellationToken::new();
    let cmd = Command::new(format!("bash -c 'sleep 1000; : {marker}-b' & wait"))
        .with_cancel(cancel.clone());
    let canceller = async {
        let until = Instant::now() + Duration::from_secs(120);
        while pgrep(&format!("{marker}-b")).is_empty() {
            assert!(Instant::now() < until);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    };
    let (out, ()) = tokio::join!(sandbox.run(&spec, cmd), canceller);
    let out = out.unwrap();
    assert_eq!(out.killed_reason, Some(KillReason::Cancelled));
    assert_eq!(pgrep(&format!("{marker}-b")), Vec::<String>::new());
}

#[tokio::test]
async fn output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = host();
    let spec = DeploymentSandbox::new("dep_host", dir.path().to_path_buf());
    let out = sandbox
        .run(
            &spec,
            Command::new("head -c 5000000 /dev/zero").with_output_cap(1000),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.total_bytes, 5_000_000);
    assert_eq!(out.stdout.data.len(), 1000);
    assert!(out.stdout.truncated);
}
