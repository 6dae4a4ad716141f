//! Where Paddock's tool processes run.
//!
//! A [`Sandbox`] runs one bash command at a time for a deployment, confined to that
//! deployment's workspace and limits, and reports what happened as a [`CommandOutput`]. The
//! crate knows nothing of models or HTTP: the agent loop's `shell` tool turns a model's call
//! into a [`Command`], and the server picks the backend at start-up and checks it with
//! [`Sandbox::probe`] for `/readyz` and provisioning.
//!
//! Backends:
//!
//! * [`BubblewrapSandbox`], the default on Linux: fresh namespaces per command, a read-only
//!   minimal root, the workspace at `/workspace`, seccomp, an unprivileged per-deployment uid,
//!   cgroup and rlimit limits, no network or filtered egress.
//! * [`HostSandbox`], for development only: no isolation at all, behind an explicit opt-in.
//!
//! ```no_run
//! # async fn example() -> Result<(), paddock_sandbox::SandboxError> {
//! use paddock_sandbox::{BubblewrapConfig, BubblewrapSandbox, Command, DeploymentSandbox, Sandbox};
//! use std::time::Duration;
//!
//! let sandbox = BubblewrapSandbox::new(BubblewrapConfig::default())?;
//! sandbox.probe().await?;
//! let spec = DeploymentSandbox::new("dep_7xK9s2", "/var/lib/paddock/workspaces/dep_7xK9s2");
//! sandbox.prepare(&spec).await?;
//! let out = sandbox
//!     .run(&spec, Command::new("ls -la && echo done").with_timeout(Duration::from_secs(30)))
//!     .await?;
//! println!("exit {:?}: {}", out.exit_code, out.stdout.text_lossy());
//! # Ok(()) }
//! ```
//!
//! Everything here is `Send + Sync` and safe to share behind an `Arc<dyn Sandbox>`. Commands
//! of one deployment may run concurrently; they share the deployment's cgroup limits. Spawn
//! `run` from ordinary tokio tasks: bubblewrap's `--die-with-parent` follows the *thread* that
//! started it, so a short-lived thread (a `spawn_blocking` worker) must not start commands.

mod bubblewrap;
mod cgroup;
mod command;
mod error;
mod host;
mod net;
mod output;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod seccomp;
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod seccomp {
    /// The seccomp denylist is only built for Linux on x86-64 and aarch64.
    pub(crate) fn build_program() -> Result<Vec<u8>, crate::SandboxError> {
        Err(crate::SandboxError::Unavailable(
            "the seccomp filter is only built for Linux on x86-64 and aarch64".to_owned(),
        ))
    }
}
mod spec;
mod util;

use async_trait::async_trait;

pub use bubblewrap::{
    BubblewrapConfig, BubblewrapSandbox, Enforcement, MemoryEnforcement, ProcessEnforcement,
    UidRange,
};
pub use cgroup::{CgroupMode, CgroupVersion};
pub use command::{
    CapturedOutput, Command, CommandOutput, DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT, KillReason,
    MAX_SCRIPT_BYTES,
};
pub use error::SandboxError;
pub use host::{HostSandbox, HostSandboxConfig};
pub use net::{InternetPolicy, Ipv4Net, default_blocked_networks};
pub use spec::{
    DEFAULT_CPUS, DEFAULT_MAX_PROCESSES, DEFAULT_MEMORY_MB, DeploymentSandbox, MIN_MAX_PROCESSES,
    MIN_MEMORY_MB, Network,
};
pub use tokio_util::sync::CancellationToken;

/// Where a deployment's tool commands run.
///
/// Implementations are object-safe (`Arc<dyn Sandbox>`) and shareable across tasks.
#[async_trait]
pub trait Sandbox: Send + Sync + std::fmt::Debug {
    /// The backend's name as the API shows it (`bubblewrap`, `host`).
    fn name(&self) -> &'static str;

    /// Per-deployment setup, idempotent: creates the workspace if missing and gives it to the
    /// deployment's uid (recursively; run it while no command of the deployment runs), creates
    /// the deployment's cgroup with its limits. Call it at provisioning and after changing the
    /// limits; [`run`](Sandbox::run) also applies the current limits.
    async fn prepare(&self, spec: &DeploymentSandbox) -> Result<(), SandboxError>;

    /// Runs one command and waits until it and every process it started are gone.
    ///
    /// A command that fails, times out, is cancelled or hits a limit is `Ok` with the
    /// details in [`CommandOutput`]; `Err` means the sandbox could not run it (and, with
    /// `network = internet` where that cannot be provided, that nothing was run).
    async fn run(
        &self,
        spec: &DeploymentSandbox,
        command: Command,
    ) -> Result<CommandOutput, SandboxError>;

    /// Removes what [`prepare`](Sandbox::prepare) set up outside the workspace (cgroups),
    /// killing any process still in them. The workspace itself is left to the caller.
    async fn teardown(&self, deployment_id: &str) -> Result<(), SandboxError>;

    /// Runs `true` through the backend end to end (for `/readyz` and provisioning checks).
    async fn probe(&self) -> Result<(), SandboxError>;

    /// The uid and gid that must own files in the deployment's workspace, when that differs
    /// from Paddock's own (Paddock runs as root and commands run as a per-deployment uid).
    /// Files the server writes into the workspace (file tools, skills) should be `lchown`ed to
    /// it, or commands cannot modify them.
    fn workspace_owner(&self, _spec: &DeploymentSandbox) -> Option<(u32, u32)> {
        None
    }
}
