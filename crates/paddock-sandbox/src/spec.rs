//! What a deployment's sandbox looks like: its workspace, limits and network mode.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::SandboxError;

/// Default CPU allowance of a deployment (API §3.3 `cpus`).
pub const DEFAULT_CPUS: f64 = 1.0;
/// Default memory limit of a deployment in MiB (API §3.3 `memory_mb`).
pub const DEFAULT_MEMORY_MB: u32 = 2048;
/// Default cap on processes *and threads* of a deployment's commands.
pub const DEFAULT_MAX_PROCESSES: u32 = 512;

/// Smallest accepted `memory_mb`: below this even `bash` plus bubblewrap do not start reliably.
pub const MIN_MEMORY_MB: u32 = 32;
/// Smallest accepted `max_processes`: bubblewrap's init, `bash` and a pipeline need a few.
pub const MIN_MAX_PROCESSES: u32 = 8;

/// Network access of a sandbox (API §3.3 `network`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Network {
    /// No network at all: a private network namespace with only `lo`. Nothing outside the
    /// sandbox is reachable, not even the host's loopback services.
    #[default]
    None,
    /// Outbound internet through a user-mode NAT (slirp4netns) with the host's own addresses,
    /// loopback, private, link-local, CGNAT, multicast, documentation and reserved ranges
    /// blocked. See [`BubblewrapSandbox`](crate::BubblewrapSandbox) for exactly what is and is
    /// not blocked. Backends that cannot provide it fail with
    /// [`SandboxError::NetworkUnavailable`] instead of running unfiltered.
    Internet,
}

impl Network {
    /// The API spelling: `none` or `internet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Internet => "internet",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Network::None),
            "internet" => Ok(Network::Internet),
            other => Err(SandboxError::InvalidSpec(format!(
                "network must be `none` or `internet`, not `{other}`"
            ))),
        }
    }
}

/// One deployment's sandbox: which workspace it gets and its limits.
///
/// The limits are per deployment: concurrent commands of one deployment (parallel subagents)
/// share one cgroup, so together they stay within `memory_mb`, `cpus` and `max_processes`. Each
/// command additionally gets `memory_mb` and `max_processes` as its own cap.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSandbox {
    /// The deployment id (`dep_…`). ASCII letters, digits, `_` and `-` only, 1–128 characters:
    /// it names cgroups and files on the host.
    pub deployment_id: String,
    /// The workspace directory on the host, absolute and without symlinks in its path. It is
    /// mounted read-write at `/workspace` and is the only host directory the command can write.
    pub workspace: PathBuf,
    /// CPU allowance in CPUs (0.25 = a quarter of one CPU), enforced with a CFS quota when
    /// cgroups are available.
    pub cpus: f64,
    /// Memory limit in MiB: a cgroup limit (RAM + swap) when available, else `RLIMIT_AS` per
    /// process.
    pub memory_mb: u32,
    /// Network access.
    pub network: Network,
    /// Cap on processes and threads: cgroup `pids.max` when available, plus `RLIMIT_NPROC`
    /// always.
    pub max_processes: u32,
    /// The host uid (and gid) the deployment's commands run as when Paddock runs as root.
    /// `None`: derived from `deployment_id` inside the backend's configured uid range, so every
    /// node of a fleet picks the same one. Ignored when Paddock is not root (commands then run
    /// as Paddock's own uid). Never 0.
    pub uid: Option<u32>,
}

impl DeploymentSandbox {
    /// A sandbox with the API defaults: 1 CPU, 2048 MiB, no network, 512 processes, derived uid.
    pub fn new(deployment_id: impl Into<String>, workspace: impl Into<PathBuf>) -> Self {
        DeploymentSandbox {
            deployment_id: deployment_id.into(),
            workspace: workspace.into(),
            cpus: DEFAULT_CPUS,
            memory_mb: DEFAULT_MEMORY_MB,
            network: Network::None,
            max_processes: DEFAULT_MAX_PROCESSES,
            uid: None,
        }
    }

    /// Checks the fields (not the file system).
    pub fn validate(&self) -> Result<(), SandboxError> {
        validate_deployment_id(&self.deployment_id)?;
        if !self.workspace.is_absolute() {
            return Err(SandboxError::InvalidSpec(format!(
                "workspace {} is not an absolute path",
                self.workspace.display()
            )));
        }
        if !(self.cpus.is_finite() && self.cpus >= 0.01 && self.cpus <= 1024.0) {
            return Err(SandboxError::InvalidSpec(format!(
                "cpus must be between 0.01 and 1024, not {}",
                self.cpus
            )));
        }
        if self.memory_mb < MIN_MEMORY_MB {
            return Err(SandboxError::InvalidSpec(format!(
                "memory_mb must be at least {MIN_MEMORY_MB}, not {}",
                self.memory_mb
            )));
        }
        if self.max_processes < MIN_MAX_PROCESSES {
            return Err(SandboxError::InvalidSpec(format!(
                "max_processes must be at least {MIN_MAX_PROCESSES}, not {}",
                self.max_processes
            )));
        }
        if self.uid == Some(0) {
            return Err(SandboxError::InvalidSpec(
                "uid 0 is never used for sandboxed commands".into(),
            ));
        }
        Ok(())
    }

    /// The memory limit in bytes.
    pub(crate) fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mb) * 1024 * 1024
    }
}

/// Checks that a deployment id is safe to use as a cgroup and file name.
pub(crate) fn validate_deployment_id(id: &str) -> Result<(), SandboxError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec(format!(
            "deployment id {id:?} must be 1-128 ASCII letters, digits, `_` or `-`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let spec = DeploymentSandbox::new("dep_7xK9s2", "/var/lib/paddock/ws/dep_7xK9s2");
        spec.validate().unwrap();
        assert_eq!(spec.memory_bytes(), 2048 * 1024 * 1024);
    }

    #[test]
    fn rejects_bad_fields() {
        let base = DeploymentSandbox::new("dep_1", "/ws");
        for bad in ["", "../x", "a/b", "dep 1", "dép"] {
            let mut s = base.clone();
            s.deployment_id = bad.into();
            assert!(s.validate().is_err(), "{bad:?} accepted");
        }
        let mut s = base.clone();
        s.workspace = "relative".into();
        assert!(s.validate().is_err());
        let mut s = base.clone();
        s.cpus = f64::NAN;
        assert!(s.validate().is_err());
        let mut s = base.clone();
        s.memory_mb = 1;
        assert!(s.validate().is_err());
        let mut s = base.clone();
        s.max_processes = 1;
        assert!(s.validate().is_err());
        let mut s = base;
        s.uid = Some(0);
        assert!(s.validate().is_err());
    }

    #[test]
    fn network_round_trips() {
        for n in [Network::None, Network::Internet] {
            assert_eq!(n.as_str().parse::<Network>().unwrap(), n);
        }
        assert!("host".parse::<Network>().is_err());
    }
}
