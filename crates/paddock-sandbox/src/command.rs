//! A command to run and what came out of it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::SandboxError;

/// Default wall-clock timeout of a command (API §13.1: 300 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default number of bytes kept per output stream (stdout and stderr each).
pub const DEFAULT_OUTPUT_CAP: usize = 8 * 1024 * 1024;
/// Longest accepted script. The script is passed as one `argv` string to `bash -c`, and Linux
/// refuses single arguments of 128 KiB or more (`MAX_ARG_STRLEN`).
pub const MAX_SCRIPT_BYTES: usize = 128 * 1024 - 1;

/// One bash command to run in a deployment's sandbox.
///
/// The environment of the command is exactly: `PATH`, `HOME=/workspace` (the workspace path
/// for the host backend), `LANG=C.UTF-8`, `TERM=dumb`, `TMPDIR=/tmp`, `USER`/`LOGNAME`, plus
/// [`env`](Command::env). Nothing from the server's own environment is ever passed.
#[derive(Clone, Debug)]
pub struct Command {
    /// The bash script, run as `bash -c <script>` with `/workspace` as working directory.
    pub script: String,
    /// Wall-clock limit from start to finish; when it passes the whole process tree is killed
    /// and the output says [`KillReason::Timeout`].
    pub timeout: Duration,
    /// Bytes kept in memory per stream. Output beyond it is read and counted (so the command
    /// never blocks on a full pipe) but dropped; see [`CapturedOutput::total_bytes`].
    pub output_cap: usize,
    /// Extra environment variables, set on top of the base environment (and able to override
    /// it). Names must match `[A-Za-z_][A-Za-z0-9_]*`; values must not contain NUL.
    pub env: BTreeMap<String, String>,
    /// Cancelling it kills the whole process tree at once; the output then says
    /// [`KillReason::Cancelled`]. A token already cancelled means the command never starts.
    pub cancel: CancellationToken,
}

impl Command {
    /// A command with the defaults: 300 s timeout, 8 MiB per stream, no extra environment, a
    /// fresh cancellation token.
    pub fn new(script: impl Into<String>) -> Self {
        Command {
            script: script.into(),
            timeout: DEFAULT_TIMEOUT,
            output_cap: DEFAULT_OUTPUT_CAP,
            env: BTreeMap::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Sets the wall-clock timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the per-stream output cap in bytes.
    pub fn with_output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Adds one environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Uses this cancellation token (typically a child of the run's token).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Checks the command before anything is started.
    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        if self.script.len() > MAX_SCRIPT_BYTES {
            return Err(SandboxError::InvalidCommand(format!(
                "the script is {} bytes; at most {MAX_SCRIPT_BYTES} are accepted",
                self.script.len()
            )));
        }
        if self.script.contains('\0') {
            return Err(SandboxError::InvalidCommand(
                "the script contains a NUL byte".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(SandboxError::InvalidCommand("the timeout is zero".into()));
        }
        for (name, value) in &self.env {
            let mut bytes = name.bytes();
            let first_ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(SandboxError::InvalidCommand(format!(
                    "environment variable name {name:?} is not [A-Za-z_][A-Za-z0-9_]*"
                )));
            }
            if value.contains('\0') {
                return Err(SandboxError::InvalidCommand(format!(
                    "environment variable {name} contains a NUL byte"
                )));
            }
        }
        Ok(())
    }
}

/// Why the sandbox killed a command, part of its process tree, or refused it resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KillReason {
    /// The wall-clock timeout passed; the whole tree was killed.
    Timeout,
    /// The command's cancellation token was cancelled; the whole tree was killed.
    Cancelled,
    /// A process of the command was killed by the kernel's OOM killer because the memory limit
    /// (cgroup) was reached.
    MemoryLimit,
    /// The command hit its process cap (cgroup `pids.max`): forks were refused, and if it was
    /// still running when that was noticed the whole tree was killed at once rather than left
    /// spinning on failing `fork`s until the timeout.
    ProcessLimit,
}

impl KillReason {
    /// A short stable name: `timeout`, `cancelled`, `memory_limit`, `process_limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::Timeout => "timeout",
            KillReason::Cancelled => "cancelled",
            KillReason::MemoryLimit => "memory_limit",
            KillReason::ProcessLimit => "process_limit",
        }
    }
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KillReason::Timeout => "killed: the command exceeded its time limit",
            KillReason::Cancelled => "killed: the command was cancelled",
            KillReason::MemoryLimit => "killed: the command exceeded the sandbox's memory limit",
            KillReason::ProcessLimit => {
                "killed: the command exceeded the sandbox's process limit (fork bomb?)"
            }
        })
    }
}

/// One output stream, capped while it streamed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The first [`Command::output_cap`] bytes.
    pub data: Vec<u8>,
    /// Every byte the command wrote to the stream, kept or not.
    pub total_bytes: u64,
    /// Whether bytes were dropped (`total_bytes > data.len()`).
    pub truncated: bool,
}

impl CapturedOutput {
    /// The kept bytes as text, with invalid UTF-8 replaced.
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status, when the command exited (through bubblewrap a command killed by signal
    /// N reports `128 + N`, as a shell does). `None` when the process itself was killed by a
    /// signal and no status was reported.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, when known. For the bubblewrap backend it is decoded
    /// from an exit status of `129..=192` (the `128 + N` convention), so a command that itself
    /// exits with such a status is reported as signalled.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: CapturedOutput,
    /// Standard error (without bubblewrap's own start-up report).
    pub stderr: CapturedOutput,
    /// Whether the wall-clock timeout ended it.
    pub timed_out: bool,
    /// Why the sandbox killed the command or part of it, if it did.
    pub killed_reason: Option<KillReason>,
    /// Wall-clock time from start to the whole tree being gone.
    pub duration: std::time::Duration,
}

impl CommandOutput {
    /// Whether the command exited with status 0 and nothing was killed.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.killed_reason.is_none()
    }

    /// The output of a command whose token was cancelled before it started.
    pub(crate) fn cancelled_before_start() -> Self {
        CommandOutput {
            exit_code: None,
            signal: None,
            stdout: CapturedOutput::default(),
            stderr: CapturedOutput::default(),
            timed_out: false,
            killed_reason: Some(KillReason::Cancelled),
            duration: Duration::ZERO,
        }
    }
}

/// The base environment every sandboxed command gets, before [`Command::env`].
pub(crate) fn base_env(home: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".to_owned(),
    );
    env.insert("HOME".to_owned(), home.to_owned());
    env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
    env.insert("TERM".to_owned(), "dumb".to_owned());
    env.insert("TMPDIR".to_owned(), "/tmp".to_owned());
    env.insert("USER".to_owned(), "sandbox".to_owned());
    env.insert("LOGNAME".to_owned(), "sandbox".to_owned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        Command::new("echo hi").validate().unwrap();
        assert!(Command::new("a\0b").validate().is_err());
        assert!(
            Command::new("x".repeat(MAX_SCRIPT_BYTES + 1))
                .validate()
                .is_err()
        );
        assert!(
            Command::new("true")
                .with_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
        for bad in ["", "1A", "A-B", "A=B"] {
            assert!(
                Command::new("true").with_env(bad, "x").validate().is_err(),
                "{bad:?}"
            );
        }
        assert!(
            Command::new("true")
                .with_env("A", "x\0")
                .validate()
                .is_err()
        );
        Command::new("true")
            .with_env("_OK_1", "v")
            .validate()
            .unwrap();
    }
}
