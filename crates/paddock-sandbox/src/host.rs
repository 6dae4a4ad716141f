//! Development-only backend: commands run directly on the host.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::Command as TokioCommand;

use crate::bubblewrap::drain;
use crate::command::base_env;
use crate::output::{Capture, lock, pump};
use crate::spec::validate_deployment_id;
use crate::util::{find_tool, kill_pids};
use crate::{Command, CommandOutput, DeploymentSandbox, KillReason, Sandbox, SandboxError};

/// Configuration of [`HostSandbox`].
#[derive(Clone, Debug)]
pub struct HostSandboxConfig {
    /// Must be `true`: the explicit acknowledgement that commands run unconfined.
    pub allow_unsafe_host: bool,
    /// `RLIMIT_FSIZE` in MiB (applied with `prlimit` when available). Default 4096.
    pub max_file_size_mb: u64,
}

impl Default for HostSandboxConfig {
    fn default() -> Self {
        HostSandboxConfig {
            allow_unsafe_host: false,
            max_file_size_mb: 4096,
        }
    }
}

/// Runs commands directly on the host, in the workspace directory, as Paddock's own user.
///
/// **This is not a sandbox.** A command can read and write everything Paddock's user can
/// (other deployments' workspaces, the database, the admin key, `~/.ssh`), reach every network
/// address including the server's own API and databases on loopback, see and signal every
/// process of the user, and leave daemons running: a process that calls `setsid` escapes the
/// process-group kill. Memory, CPU and process limits are not applied, and `network` is
/// ignored. Only the working directory, the clean environment (see [`Command`]), the
/// timeout, cancellation (killing the process group) and the output caps behave as in the
/// real backends. Use it on a developer laptop with trusted prompts only; construction fails
/// unless [`HostSandboxConfig::allow_unsafe_host`] is `true`.
#[derive(Debug)]
pub struct HostSandbox {
    config: HostSandboxConfig,
    sh: PathBuf,
    bash: PathBuf,
    prlimit: Option<PathBuf>,
}

impl HostSandbox {
    /// The host backend; refused without `allow_unsafe_host: true`.
    pub fn new(config: HostSandboxConfig) -> Result<Self, SandboxError> {
        if !config.allow_unsafe_host {
            return Err(SandboxError::Unavailable(
                "the host backend runs commands without any isolation; it needs \
                 allow_unsafe_host = true and is meant for development only"
                    .to_owned(),
            ));
        }
        let bash = find_tool("bash")
            .ok_or_else(|| SandboxError::Unavailable("bash not found".to_owned()))?;
        let sh = PathBuf::from("/bin/sh");
        tracing::warn!("host sandbox in use: tool commands run WITHOUT isolation");
        Ok(HostSandbox {
            config,
            sh,
            bash,
            prlimit: find_tool("prlimit"),
        })
    }
}

#[async_trait]
impl Sandbox for HostSandbox {
    fn name(&self) -> &'static str {
        "host"
    }

    async fn prepare(&self, spec: &DeploymentSandbox) -> Result<(), SandboxError> {
        spec.validate()?;
        tokio::fs::create_dir_all(&spec.workspace)
            .await
            .map_err(|e| SandboxError::io(format!("creating {}", spec.workspace.display()), e))
    }

    async fn run(
        &self,
        spec: &DeploymentSandbox,
        command: Command,
    ) -> Result<CommandOutput, SandboxError> {
        spec.validate()?;
        command.validate()?;
        if command.cancel.is_cancelled() {
            return Ok(CommandOutput::cancelled_before_start());
        }
        if !spec.workspace.is_dir() {
            return Err(SandboxError::InvalidSpec(format!(
                "workspace {} is not a directory",
                spec.workspace.display()
            )));
        }
        let mut cmd = match &self.prlimit {
            Some(prlimit) => {
                let mut c = TokioCommand::new(prlimit);
                c.arg("--core=0")
                    .arg(format!(
                        "--fsize={}",
                        self.config.max_file_size_mb * 1024 * 1024
                    ))
                    .arg("--")
                    .arg(&self.bash);
                c
            }
            None => TokioCommand::new(&self.bash),
        };
        let mut env = base_env(&spec.workspace.to_string_lossy());
        env.extend(command.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        cmd.arg("-c")
            .arg(&command.script)
            .env_clear()
            .envs(&env)
            .current_dir(&spec.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::io("starting bash on the host", e))?;
        let pgid = child.id().map(i64::from);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(SandboxError::Setup("stdio pipes missing".to_owned()));
        };
        let out = Capture::shared(command.output_cap);
        let err = Capture::shared(command.output_cap);
        let out_task = tokio::spawn(pump(stdout, out.clone()));
        let err_task = tokio::spawn(pump(stderr, err.clone()));
        let deadline = tokio::time::Instant::now() + command.timeout;
        let (status, reason) = tokio::select! {
            status = child.wait() => (status.ok(), None),
            () = tokio::time::sleep_until(deadline) => (None, Some(KillReason::Timeout)),
            () = command.cancel.cancelled() => (None, Some(KillReason::Cancelled)),
        };
        // Kill the process group in every case: background jobs die with the command.
        if let Some(pgid) = pgid {
            kill_pids(&self.sh, &[-pgid], None).await;
        }
        let status = match status {
            Some(s) => Some(s),
            None => {
                let _ = child.start_kill();
                tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        drain(out_task, err_task).await;
        use std::os::unix::process::ExitStatusExt;
        let stdout = lock(&out).to_output();
        let stderr = lock(&err).to_output();
        Ok(CommandOutput {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout,
            stderr,
            timed_out: reason == Some(KillReason::Timeout),
            killed_reason: reason,
            duration: started.elapsed(),
        })
    }

    async fn teardown(&self, deployment_id: &str) -> Result<(), SandboxError> {
        validate_deployment_id(deployment_id)
    }

    async fn probe(&self) -> Result<(), SandboxError> {
        let dir = std::env::temp_dir();
        let spec = DeploymentSandbox::new("paddock-probe", dir);
        let out = self
            .run(
                &spec,
                Command::new("true").with_timeout(Duration::from_secs(60)),
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(SandboxError::Probe(format!(
                "`true` ended with status {:?}",
                out.exit_code
            )))
        }
    }
}
