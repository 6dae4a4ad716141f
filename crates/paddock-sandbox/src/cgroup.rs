//! Memory, process and CPU limits through cgroups, written directly to cgroupfs.
//!
//! Layout, per controller on cgroup v1 (`/sys/fs/cgroup/<controller>/…`) or once on a v2
//! unified hierarchy:
//!
//! ```text
//! <root>/<name>/                  "paddock" by default; created on first use
//! <root>/<name>/<deployment>/     the deployment's limits, shared by its concurrent commands
//! <root>/<name>/<deployment>/<run>/  one leaf per command, with the same memory and pids caps:
//!                                 it is what gets attached, counted, checked for OOM kills
//!                                 and process-cap hits, emptied and removed
//! ```
//!
//! systemd is not involved (it is absent on some hosts and in containers); on v2 hosts run by
//! systemd, give Paddock a delegated subtree (`Delegate=yes`) and point
//! [`BubblewrapConfig::cgroup_v2_parent`](crate::BubblewrapConfig::cgroup_v2_parent) at it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::SandboxError;

/// Which cgroup hierarchy holds the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies (`memory`, `pids`, `cpu`), including hybrid hosts.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Whether to use cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// Use them when the host has them and Paddock may write them; otherwise fall back to
    /// rlimits only, with a warning.
    #[default]
    Auto,
    /// Require them: construction fails when they cannot be used.
    Required,
    /// Never use them (rlimits only).
    Disabled,
}

/// The limits written for a deployment or a command.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CFS quota per period in microseconds.
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
}

impl Limits {
    pub(crate) fn new(memory_bytes: u64, pids: u32, cpus: f64) -> Self {
        let period = 100_000u64;
        let quota = (cpus * period as f64).round().max(1_000.0) as u64;
        Limits {
            memory_bytes,
            pids,
            cpu_quota_us: quota,
            cpu_period_us: period,
        }
    }
}

#[derive(Debug)]
enum Layout {
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    V2 {
        parent: PathBuf,
        memory: bool,
        pids: bool,
        cpu: bool,
    },
}

/// The cgroup subtree Paddock manages.
#[derive(Debug)]
pub(crate) struct Cgroups {
    layout: Layout,
}

/// One mount from `/proc/self/mountinfo`.
struct Mount {
    point: PathBuf,
    fstype: String,
    super_options: String,
}

fn mounts() -> io::Result<Vec<Mount>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let point = before.split(' ').nth(4);
        let mut after = after.split(' ');
        let (Some(point), Some(fstype), Some(_source), Some(super_options)) =
            (point, after.next(), after.next(), after.next())
        else {
            continue;
        };
        out.push(Mount {
            point: PathBuf::from(point.replace("\\040", " ")),
            fstype: fstype.to_owned(),
            super_options: super_options.to_owned(),
        });
    }
    Ok(out)
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn mkdir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Reads `key N` from a flat-keyed cgroup file such as `memory.events` or `pids.events`.
fn read_key(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

fn read_pids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

impl Cgroups {
    /// Finds the host's cgroup layout and checks that Paddock may create its subtree.
    /// `Ok(Err(reason))` means cgroups are not usable (and the mode allows that).
    pub(crate) fn detect(
        mode: CgroupMode,
        name: &str,
        v2_parent: Option<&Path>,
    ) -> Result<Result<Cgroups, String>, SandboxError> {
        if mode == CgroupMode::Disabled {
            return Ok(Err("cgroups are disabled by configuration".into()));
        }
        let found = Self::try_detect(name, v2_parent);
        match (found, mode) {
            (Err(reason), CgroupMode::Required) => Err(SandboxError::Unavailable(format!(
                "cgroups are required but unusable: {reason}"
            ))),
            (found, _) => Ok(found),
        }
    }

    fn try_detect(name: &str, v2_parent: Option<&Path>) -> Result<Cgroups, String> {
        let mounts = mounts().map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| {
                    m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller)
                })
                .map(|m| m.point.clone())
        };
        let (memory, pids, cpu) = (v1("memory"), v1("pids"), v1("cpu"));
        if memory.is_some() || pids.is_some() {
            let create = |root: Option<PathBuf>| -> Result<Option<PathBuf>, String> {
                let Some(root) = root else { return Ok(None) };
                let dir = root.join(name);
                mkdir(&dir).map_err(|e| format!("cannot create cgroup {}", e))?;
                Ok(Some(dir))
            };
            let layout = Layout::V1 {
                memory: create(memory)?,
                pids: create(pids)?,
                cpu: create(cpu)?,
            };
            return Ok(Cgroups { layout });
        }
        let unified = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .min_by_key(|m| m.point != Path::new("/sys/fs/cgroup"))
            .map(|m| m.point.clone())
            .ok_or_else(|| "no cgroup v1 memory/pids controller and no cgroup2 mount".to_owned())?;
        let parent = match v2_parent {
            Some(p) => p.to_path_buf(),
            None => unified.join(name),
        };
        let available = fs::read_to_string(unified.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", unified.display()))?;
        let has = |c: &str| available.split_whitespace().any(|x| x == c);
        let (memory, pids, cpu) = (has("memory"), has("pids"), has("cpu"));
        if !memory && !pids {
            return Err(format!(
                "the cgroup2 hierarchy at {} offers neither memory nor pids",
                unified.display()
            ));
        }
        let enable = controller_list(memory, pids, cpu);
        if v2_parent.is_none() {
            // Our parent sits right under the root: the root must delegate the controllers.
            write(&unified.join("cgroup.subtree_control"), &enable)
                .map_err(|e| format!("cannot enable controllers at the cgroup2 root: {e}"))?;
        }
        mkdir(&parent).map_err(|e| format!("cannot create cgroup {e}"))?;
        write(&parent.join("cgroup.subtree_control"), &enable)
            .map_err(|e| format!("cannot enable controllers below {}: {e}", parent.display()))?;
        Ok(Cgroups {
            layout: Layout::V2 {
                parent,
                memory,
                pids,
                cpu,
            },
        })
    }

    /// The hierarchy in use.
    pub(crate) fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// Whether memory, processes and CPU are limited.
    pub(crate) fn controllers(&self) -> (bool, bool, bool) {
        match &self.layout {
            Layout::V1 { memory, pids, cpu } => (memory.is_some(), pids.is_some(), cpu.is_some()),
            Layout::V2 {
                memory, pids, cpu, ..
            } => (*memory, *pids, *cpu),
        }
    }

    /// Creates the deployment's cgroup (if needed) and writes its limits.
    pub(crate) fn ensure_deployment(&self, deployment: &str, limits: &Limits) -> io::Result<()> {
        match &self.layout {
            Layout::V1 { memory, pids, cpu } => {
                if let Some(root) = memory {
                    let dir = root.join(deployment);
                    mkdir(&dir)?;
                    write_v1_memory(&dir, limits.memory_bytes)?;
                }
                if let Some(root) = pids {
                    let dir = root.join(deployment);
                    mkdir(&dir)?;
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                }
                if let Some(root) = cpu {
                    let dir = root.join(deployment);
                    mkdir(&dir)?;
                    write(
                        &dir.join("cpu.cfs_period_us"),
                        &limits.cpu_period_us.to_string(),
                    )?;
                    write(
                        &dir.join("cpu.cfs_quota_us"),
                        &limits.cpu_quota_us.to_string(),
                    )?;
                }
                Ok(())
            }
            Layout::V2 {
                parent,
                memory,
                pids,
                cpu,
            } => {
                let dir = parent.join(deployment);
                mkdir(&dir)?;
                if *memory {
                    write_v2_memory(&dir, limits.memory_bytes)?;
                }
                if *pids {
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                }
                if *cpu {
                    write(
                        &dir.join("cpu.max"),
                        &format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us),
                    )?;
                }
                write(
                    &dir.join("cgroup.subtree_control"),
                    &controller_list(*memory, *pids, *cpu),
                )
            }
        }
    }

    /// Creates the leaf cgroup of one command, with its own memory and pids caps.
    pub(crate) fn create_run(
        &self,
        deployment: &str,
        run: &str,
        limits: &Limits,
    ) -> io::Result<RunCgroup> {
        let mut leaf = RunCgroup {
            dirs: Vec::new(),
            memory: None,
            pids: None,
            v2: matches!(self.layout, Layout::V2 { .. }),
        };
        let result = self.fill_run(&mut leaf, deployment, run, limits);
        match result {
            Ok(()) => Ok(leaf),
            Err(e) => {
                leaf.remove();
                Err(e)
            }
        }
    }

    fn fill_run(
        &self,
        leaf: &mut RunCgroup,
        deployment: &str,
        run: &str,
        limits: &Limits,
    ) -> io::Result<()> {
        match &self.layout {
            Layout::V1 { memory, pids, cpu } => {
                if let Some(root) = memory {
                    let dir = root.join(deployment).join(run);
                    mkdir(&dir)?;
                    leaf.dirs.push(dir.clone());
                    write_v1_memory(&dir, limits.memory_bytes)?;
                    leaf.memory = Some(dir);
                }
                if let Some(root) = pids {
                    let dir = root.join(deployment).join(run);
                    mkdir(&dir)?;
                    leaf.dirs.push(dir.clone());
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                    leaf.pids = Some(dir);
                }
                if let Some(root) = cpu {
                    let dir = root.join(deployment).join(run);
                    mkdir(&dir)?;
                    leaf.dirs.push(dir);
                }
            }
            Layout::V2 {
                parent,
                memory,
                pids,
                ..
            } => {
                let dir = parent.join(deployment).join(run);
                mkdir(&dir)?;
                leaf.dirs.push(dir.clone());
                if *memory {
                    write_v2_memory(&dir, limits.memory_bytes)?;
                    leaf.memory = Some(dir.clone());
                }
                if *pids {
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                    leaf.pids = Some(dir);
                }
            }
        }
        Ok(())
    }

    /// Processes still in any cgroup of the deployment, and the deployment cgroups (leaves
    /// first) for removal.
    fn deployment_dirs(&self, deployment: &str) -> Vec<PathBuf> {
        let roots: Vec<PathBuf> = match &self.layout {
            Layout::V1 { memory, pids, cpu } => [memory, pids, cpu]
                .into_iter()
                .flatten()
                .map(|r| r.join(deployment))
                .collect(),
            Layout::V2 { parent, .. } => vec![parent.join(deployment)],
        };
        let mut dirs = Vec::new();
        for root in roots {
            if let Ok(entries) = fs::read_dir(&root) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(entry.path());
                    }
                }
            }
            dirs.push(root);
        }
        dirs
    }

    /// Pids still inside the deployment's cgroups.
    pub(crate) fn deployment_pids(&self, deployment: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .deployment_dirs(deployment)
            .iter()
            .flat_map(|d| read_pids(&d.join("cgroup.procs")))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes empty command leaves left behind (by a crashed Paddock, or a run whose future
    /// was dropped), except those whose name starts with `keep_prefix`.
    pub(crate) fn sweep_empty_runs(&self, deployment: &str, keep_prefix: &str) {
        for dir in self.deployment_dirs(deployment) {
            let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if name != deployment && name.starts_with("run-") && !name.starts_with(keep_prefix) {
                let _ = fs::remove_dir(&dir);
            }
        }
    }

    /// Removes the deployment's cgroups. Fails while processes remain in them.
    pub(crate) fn remove_deployment(&self, deployment: &str) -> io::Result<()> {
        let mut first_error = None;
        for dir in self.deployment_dirs(deployment) {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error
                        .get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn controller_list(memory: bool, pids: bool, cpu: bool) -> String {
    let mut parts = Vec::new();
    if memory {
        parts.push("+memory");
    }
    if pids {
        parts.push("+pids");
    }
    if cpu {
        parts.push("+cpu");
    }
    parts.join(" ")
}

/// v1: RAM limit, and RAM+swap set to the same value so the limit cannot be dodged by
/// swapping. The two must be written in an order that keeps `memsw >= limit`.
fn write_v1_memory(dir: &Path, bytes: u64) -> io::Result<()> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let value = bytes.to_string();
    if !memsw.exists() {
        return write(&limit, &value);
    }
    if write(&limit, &value).is_err() {
        // Raising the limit above the current memsw limit: raise memsw first.
        write(&memsw, &value)?;
        write(&limit, &value)?;
    }
    write(&memsw, &value)
}

/// v2: `memory.max`, no swap.
fn write_v2_memory(dir: &Path, bytes: u64) -> io::Result<()> {
    write(&dir.join("memory.max"), &bytes.to_string())?;
    let swap = dir.join("memory.swap.max");
    if swap.exists() {
        write(&swap, "0")?;
    }
    Ok(())
}

/// The leaf cgroup(s) of one command.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dirs: Vec<PathBuf>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    v2: bool,
}

impl RunCgroup {
    /// Moves `pid` (and so everything it will start) into the leaf.
    pub(crate) fn attach(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids currently in the leaf.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .flat_map(|d| read_pids(&d.join("cgroup.procs")))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills everything in the leaf where the kernel can do it in one step (v2
    /// `cgroup.kill`). Returns whether it did; on v1 the caller signals [`pids`](Self::pids).
    pub(crate) fn kill_all(&self) -> bool {
        if !self.v2 {
            return false;
        }
        self.dirs
            .first()
            .is_some_and(|d| write(&d.join("cgroup.kill"), "1").is_ok())
    }

    /// OOM kills of processes in the leaf.
    pub(crate) fn oom_kills(&self) -> u64 {
        match &self.memory {
            Some(dir) if self.v2 => read_key(&dir.join("memory.events"), "oom_kill"),
            Some(dir) => read_key(&dir.join("memory.oom_control"), "oom_kill"),
            None => 0,
        }
    }

    /// Times a fork failed because the leaf's `pids.max` was reached.
    pub(crate) fn pids_limit_hits(&self) -> u64 {
        self.pids
            .as_ref()
            .map_or(0, |dir| read_key(&dir.join("pids.events"), "max"))
    }

    /// Whether the process cap can be watched.
    pub(crate) fn watches_pids(&self) -> bool {
        self.pids.is_some()
    }

    /// Removes the leaf; returns whether every directory is gone.
    pub(crate) fn remove(&self) -> bool {
        let mut all = true;
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => all = false,
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota() {
        let l = Limits::new(1, 1, 0.5);
        assert_eq!((l.cpu_quota_us, l.cpu_period_us), (50_000, 100_000));
        assert_eq!(Limits::new(1, 1, 0.001).cpu_quota_us, 1_000);
    }

    #[test]
    fn reads_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(read_key(&f, "oom_kill"), 2);
        assert_eq!(read_key(&f, "max"), 3);
        assert_eq!(read_key(&f, "missing"), 0);
    }

    #[test]
    fn parses_mountinfo() {
        // Only checks that the parser does not fail on this host's file.
        assert!(!mounts().unwrap().is_empty());
    }
}
