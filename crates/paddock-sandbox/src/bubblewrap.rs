//! The default Linux backend: one bubblewrap sandbox per command.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command as TokioCommand;
use tokio::sync::oneshot;

use crate::cgroup::{CgroupMode, CgroupVersion, Cgroups, Limits, RunCgroup};
use crate::command::base_env;
use crate::net::{InternetPolicy, NetNamespace, NetTools};
use crate::output::{Capture, Info, lock, pump, pump_after_info};
use crate::spec::validate_deployment_id;
use crate::util::{effective_ids, find_tool, fnv1a64, kill_pids, proc_alive, proc_stat};
use crate::{
    Command, CommandOutput, DeploymentSandbox, KillReason, Network, Sandbox, SandboxError,
};

/// The uids used for deployments when Paddock runs as root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid of the range.
    pub first: u32,
    /// How many uids the range has.
    pub count: u32,
}

impl Default for UidRange {
    /// 2^28 uids from 1 610 612 736 (`0x6000_0000`): far above the ranges distributions give
    /// to users (< 60 000) and to `/etc/subuid` (100 000 upwards).
    fn default() -> Self {
        UidRange {
            first: 0x6000_0000,
            count: 0x1000_0000,
        }
    }
}

/// Configuration of [`BubblewrapSandbox`].
#[derive(Clone, Debug)]
pub struct BubblewrapConfig {
    /// The bubblewrap binary. Default: `bwrap` from the system directories.
    pub bwrap: Option<PathBuf>,
    /// Where the backend keeps its generated files (the seccomp program, `/etc/passwd` and
    /// friends for the sandbox, the probe workspace). Must be owned by Paddock's uid; it is made
    /// `0755` because the sandbox uids must read it. Never put secrets here. Default:
    /// `/run/paddock-sandbox` as root, else `<tmp>/paddock-sandbox-<uid>`.
    pub runtime_dir: PathBuf,
    /// Whether to use cgroups for memory, process and CPU limits.
    pub cgroups: CgroupMode,
    /// Name of Paddock's cgroup directory under each hierarchy (default `paddock`).
    pub cgroup_name: String,
    /// cgroup v2 only: an existing delegated cgroup to create deployments under (for example
    /// `/sys/fs/cgroup/system.slice/paddock.service/sandboxes`, whose ancestors already enable
    /// `memory pids cpu`). Default: `<cgroup2 mount>/<cgroup_name>`, enabling the controllers
    /// at the root.
    pub cgroup_v2_parent: Option<PathBuf>,
    /// uids for deployments when Paddock runs as root.
    pub uid_range: UidRange,
    /// Size cap of the private `/tmp` and `/dev/shm` tmpfs mounts, each, in MiB (their pages
    /// also count against the memory limit). Default 512.
    pub tmpfs_size_mb: u32,
    /// `RLIMIT_FSIZE`: largest file a command may write, in MiB. Default 4096.
    pub max_file_size_mb: u64,
    /// What `network = internet` may reach beyond the defaults.
    pub internet: InternetPolicy,
}

impl Default for BubblewrapConfig {
    fn default() -> Self {
        let runtime_dir = match effective_ids() {
            Ok((0, _)) => PathBuf::from("/run/paddock-sandbox"),
            Ok((uid, _)) => std::env::temp_dir().join(format!("paddock-sandbox-{uid}")),
            Err(_) => std::env::temp_dir().join("paddock-sandbox"),
        };
        BubblewrapConfig {
            bwrap: None,
            runtime_dir,
            cgroups: CgroupMode::Auto,
            cgroup_name: "paddock".to_owned(),
            cgroup_v2_parent: None,
            uid_range: UidRange::default(),
            tmpfs_size_mb: 512,
            max_file_size_mb: 4096,
            internet: InternetPolicy::default(),
        }
    }
}

/// How the memory limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryEnforcement {
    /// A cgroup limit on RAM + swap for the deployment and for each command; exceeding it
    /// OOM-kills a process and the output says [`KillReason::MemoryLimit`].
    Cgroup,
    /// `RLIMIT_AS` per process: allocations beyond it fail (`ENOMEM`). It is per process, not
    /// per deployment, and it breaks runtimes that reserve large address ranges (Go, Java,
    /// V8) when the limit is small.
    AddressSpaceRlimit,
}

/// How the process cap is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEnforcement {
    /// cgroup `pids.max` (per deployment and per command) plus `RLIMIT_NPROC` as a backstop
    /// at twice the cap (so the cgroup, which counts refusals, is always the limit that is
    /// hit); hitting the cgroup cap kills the command ([`KillReason::ProcessLimit`]).
    CgroupAndRlimit,
    /// `RLIMIT_NPROC` only: forks beyond the cap fail with `EAGAIN`; a fork bomb is contained
    /// and ends at the timeout.
    Rlimit,
}

/// What this backend enforces on this host, for logs and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enforcement {
    /// The cgroup hierarchy in use, if any.
    pub cgroups: Option<CgroupVersion>,
    /// Why cgroups are not used, when they are not.
    pub cgroups_unavailable: Option<String>,
    /// How memory is limited.
    pub memory: MemoryEnforcement,
    /// How processes are limited.
    pub processes: ProcessEnforcement,
    /// Whether `cpus` is enforced (a CFS quota); without cgroups it is not.
    pub cpu_quota: bool,
    /// Whether commands run as a per-deployment uid (Paddock is root) rather than as
    /// Paddock's own uid.
    pub per_deployment_uid: bool,
    /// Why `network = internet` is refused, when it is.
    pub internet_unavailable: Option<String>,
}

/// A root-directory entry of the host reproduced in the sandbox (`/bin`, `/lib64`, …).
#[derive(Clone, Debug)]
enum RootEntry {
    /// The host has a symlink (merged `/usr`): the same symlink is created.
    Symlink { path: PathBuf, target: PathBuf },
    /// The host has a real directory: it is bound read-only.
    Dir { path: PathBuf },
}

/// `/etc` entries every sandbox gets read-only, when the host has them. They hold no
/// secrets: the dynamic loader's cache and configuration, Debian's alternatives symlinks
/// (`awk`, `editor`, …), name-service switch, time zone.
const ETC_ALWAYS: [&str; 6] = [
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/nsswitch.conf",
    "/etc/localtime",
];

/// `/etc` entries added for `network = internet`: CA certificates and TLS configuration.
const ETC_INTERNET: [&str; 6] = [
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/gai.conf",
];

/// The host-side script between Paddock and bubblewrap (`$1` = seccomp program, then the
/// bubblewrap command line). It waits for Paddock's go-ahead line on stdin (sent once the
/// process is in its cgroup), then points fd 4 at the seccomp program, fd 5 (bubblewrap's
/// `--info-fd`) at stderr, fd 6 (`--args`, the NUL-separated options) at the rest of stdin,
/// and gives the command `/dev/null` as stdin.
const WRAPPER: &str =
    "read -r _ || exit 125\nexec 4<\"$1\" 5>&2 6<&0 </dev/null || exit 125\nshift\nexec \"$@\"\n";

/// `RLIMIT_NPROC` for a command whose cap is `max_processes`.
///
/// Without a pids cgroup the rlimit *is* the cap. With one, the cgroup must be the limit that
/// refuses forks, because only the cgroup counts refusals (`pids.events`), and that count is
/// how a fork bomb is recognised and killed ([`KillReason::ProcessLimit`]). Setting both to
/// the same value made the two race: the kernel charges `RLIMIT_NPROC` early in `fork`
/// (when the child's credentials are copied) and the pids cgroup later, so under concurrent
/// forks the rlimit count runs ahead and the rlimit refuses first, uncounted; the bomb then
/// spun on `EAGAIN` and the command was reported as not killed. The rlimit stays as a
/// backstop at twice the cap, far above what in-flight forks can add.
fn nproc_rlimit(max_processes: u32, pids_cgroup: bool) -> u32 {
    if pids_cgroup {
        max_processes.saturating_mul(2)
    } else {
        max_processes
    }
}

/// How often the process-cap counter is checked while a command runs.
const PIDS_POLL: Duration = Duration::from_millis(100);

/// How long the output pipes may stay open after the sandbox is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs commands with [bubblewrap](https://github.com/containers/bubblewrap), one sandbox per
/// command. The default backend on Linux.
///
/// # What a command gets
///
/// * New user, mount, PID, IPC, UTS, cgroup and network namespaces (`--unshare-all`), no
///   nested user namespaces (`--disable-userns` plus seccomp), `--die-with-parent`,
///   `--new-session` (no terminal injection), no capabilities (`--cap-drop ALL`), and
///   `no_new_privs` (bubblewrap sets it), so setuid binaries gain nothing.
/// * A read-only root: the host's `/usr` with the `/bin`, `/sbin`, `/lib*` symlinks (or
///   read-only binds on non-merged hosts), a generated `/etc/passwd`, `/etc/group` and
///   `/etc/hosts`, and only the `/etc` entries in [`ETC_ALWAYS`] (plus CA certificates and a
///   generated `resolv.conf` with `internet`). Not the host's `/etc`, `/home`, `/root`, `/var`,
///   `/srv`, `/opt`, `/run`, `/sys`, nor Paddock's data directory: they do not exist inside.
///   `/` is remounted read-only after setup.
/// * `/workspace` (read-write): the deployment's workspace, and the working directory.
/// * A private `/tmp` and `/dev/shm` (tmpfs, size-capped), a private `/proc` showing only the
///   sandbox's processes, a minimal read-only `/dev` (`null`, `zero`, `random`, `urandom`,
///   `tty`, `pts`).
/// * The seccomp denylist described in the `seccomp` module (ptrace, mounts, namespaces,
///   keyrings, BPF, perf, io_uring, userfaultfd, module and kexec loading, reboot, swap, …).
/// * A clean environment (see [`Command`]).
/// * When Paddock runs as root: the deployment's own uid and gid (never root; supplementary
///   groups cleared), which owns the workspace. Otherwise Paddock's uid.
/// * Limits: see [`Enforcement`]. `RLIMIT_CORE` 0, `RLIMIT_FSIZE`, `RLIMIT_NPROC` always;
///   cgroup memory/pids/cpu when available, else `RLIMIT_AS` for memory.
///
/// # Limits and why rlimits are set *inside*
///
/// The rlimits are applied by util-linux `prlimit`, executed inside the sandbox right before
/// `bash` (no `unsafe` `pre_exec`). Inside matters for `RLIMIT_NPROC`: since Linux 5.14 it is
/// counted per user namespace, and the sandbox's user namespace is created by bubblewrap
/// before the limit is lowered, so the cap counts only this command's processes, not every
/// process of the uid on the host (which, for an unprivileged Paddock, includes the server's
/// own threads). Note that `RLIMIT_NPROC` is not enforced for uid 0, which is one more reason
/// the commands never run as root.
///
/// # Network
///
/// `Network::None`: the sandbox's own network namespace with only `lo`; nothing outside is
/// reachable. `Network::Internet` (Paddock must be root): see the `net` module. Blocked:
/// loopback, the host's own addresses (read from the kernel at every start), RFC 1918,
/// CGNAT, link-local including cloud metadata (`169.254.169.254`), multicast, broadcast,
/// documentation and reserved ranges, slirp's gateway alias for host loopback
/// (`--disable-host-loopback` and a rule), and the DNS alias on any port but 53. Not blocked:
/// every other public IPv4 address on any port and protocol (TCP, UDP, ICMP echo), DNS through
/// the host's resolver (which can be used as a covert channel), a public address that routes
/// back to this host without being on one of its interfaces (add it to
/// [`InternetPolicy::block`]). There is no IPv6.
#[derive(Debug)]
pub struct BubblewrapSandbox {
    config: BubblewrapConfig,
    sh: PathBuf,
    bwrap: PathBuf,
    prlimit_inside: PathBuf,
    bash_inside: PathBuf,
    net_tools: Option<NetTools>,
    privileged: bool,
    euid: u32,
    egid: u32,
    seccomp_file: PathBuf,
    hosts_file: PathBuf,
    resolv_file: PathBuf,
    root_entries: Vec<RootEntry>,
    cgroups: Option<Cgroups>,
    cgroups_unavailable: Option<String>,
    internet_unavailable: Option<String>,
    counter: AtomicU64,
    /// Serialises this process's probes, so one probe's teardown never removes the cgroup
    /// another probe is about to enter.
    probe_lock: tokio::sync::Mutex<()>,
}

/// Per-uid generated account files.
struct UserFiles {
    passwd: PathBuf,
    group: PathBuf,
}

fn setup_err(context: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("{context}: {e}"))
}

impl BubblewrapSandbox {
    /// Checks the host (bubblewrap, `prlimit`, `bash`), prepares the runtime directory, builds
    /// the seccomp program and detects cgroups. It does not start a sandbox; call
    /// [`probe`](Sandbox::probe) for that.
    pub fn new(config: BubblewrapConfig) -> Result<Self, SandboxError> {
        if !cfg!(target_os = "linux") {
            return Err(SandboxError::Unavailable(
                "bubblewrap needs Linux".to_owned(),
            ));
        }
        let missing = |what: &str| {
            SandboxError::Unavailable(format!(
                "{what} not found in /usr/bin, /bin, /usr/sbin, /sbin or /usr/local"
            ))
        };
        let bwrap = match &config.bwrap {
            Some(p) => p.clone(),
            None => find_tool("bwrap")
                .ok_or_else(|| missing("bwrap (install the `bubblewrap` package)"))?,
        };
        let sh = PathBuf::from("/bin/sh");
        if !sh.exists() {
            return Err(missing("/bin/sh"));
        }
        // These run inside the sandbox, where only /usr (and the root symlinks) exist.
        let prlimit_inside = ["/usr/bin/prlimit", "/bin/prlimit"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| missing("prlimit (util-linux)"))?;
        let bash_inside = ["/bin/bash", "/usr/bin/bash"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| missing("bash"))?;
        let range = config.uid_range;
        if range.count == 0
            || range.first < 1000
            || range
                .first
                .checked_add(range.count)
                .is_none_or(|end| end == u32::MAX)
        {
            return Err(SandboxError::InvalidSpec(format!(
                "uid_range {range:?} must be non-empty, start at 1000 or above and end below \
                 4294967295"
            )));
        }
        let (euid, egid) =
            effective_ids().map_err(|e| SandboxError::io("reading /proc/self/status", e))?;
        let privileged = euid == 0;

        let runtime = &config.runtime_dir;
        prepare_runtime_dir(runtime, euid)?;
        let seccomp_file = runtime.join("seccomp.bpf");
        let hosts_file = runtime.join("hosts");
        let resolv_file = runtime.join("resolv.conf");
        let program = crate::seccomp::build_program()?;
        write_runtime_file(&seccomp_file, &program)?;
        write_runtime_file(
            &hosts_file,
            b"127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        )?;
        write_runtime_file(&resolv_file, b"nameserver 10.0.2.3\n")?;

        let root_entries = root_entries();
        let (cgroups, cgroups_unavailable) = match Cgroups::detect(
            config.cgroups,
            &config.cgroup_name,
            config.cgroup_v2_parent.as_deref(),
        )? {
            Ok(c) => (Some(c), None),
            Err(reason) => (None, Some(reason)),
        };

        let net_tools = (|| {
            Some(NetTools {
                sh: sh.clone(),
                unshare: find_tool("unshare")?,
                nsenter: find_tool("nsenter")?,
                slirp4netns: find_tool("slirp4netns")?,
                ip: find_tool("ip")?,
            })
        })();
        let internet_unavailable = if !privileged {
            Some(
                "Paddock is not running as root; the filtered network namespace of `internet` \
                 must be owned by the initial user namespace so that the sandbox cannot change \
                 its rules"
                    .to_owned(),
            )
        } else if net_tools.is_none() {
            Some(
                "slirp4netns, unshare, nsenter or ip is missing (install the `slirp4netns`, \
                 `util-linux` and `iproute2` packages)"
                    .to_owned(),
            )
        } else {
            None
        };

        let sandbox = BubblewrapSandbox {
            config,
            sh,
            bwrap,
            prlimit_inside,
            bash_inside,
            net_tools,
            privileged,
            euid,
            egid,
            seccomp_file,
            hosts_file,
            resolv_file,
            root_entries,
            cgroups,
            cgroups_unavailable,
            internet_unavailable,
            counter: AtomicU64::new(0),
            probe_lock: tokio::sync::Mutex::new(()),
        };
        let e = sandbox.enforcement();
        if let Some(reason) = &e.cgroups_unavailable {
            tracing::warn!(
                reason = %reason,
                "sandbox: no cgroups; memory is limited per process with RLIMIT_AS, CPU is not \
                 limited, processes by RLIMIT_NPROC only"
            );
        }
        tracing::info!(
            cgroups = ?e.cgroups,
            memory = ?e.memory,
            processes = ?e.processes,
            per_deployment_uid = e.per_deployment_uid,
            internet = e.internet_unavailable.is_none(),
            "bubblewrap sandbox ready"
        );
        Ok(sandbox)
    }

    /// What is enforced on this host.
    pub fn enforcement(&self) -> Enforcement {
        let (memory, pids, cpu) = self
            .cgroups
            .as_ref()
            .map_or((false, false, false), Cgroups::controllers);
        Enforcement {
            cgroups: self.cgroups.as_ref().map(Cgroups::version),
            cgroups_unavailable: self.cgroups_unavailable.clone(),
            memory: if memory {
                MemoryEnforcement::Cgroup
            } else {
                MemoryEnforcement::AddressSpaceRlimit
            },
            processes: if pids {
                ProcessEnforcement::CgroupAndRlimit
            } else {
                ProcessEnforcement::Rlimit
            },
            cpu_quota: cpu,
            per_deployment_uid: self.privileged,
            internet_unavailable: self.internet_unavailable.clone(),
        }
    }

    /// The uid and gid a deployment's commands run as when Paddock is root (`None` otherwise:
    /// they run as Paddock's uid). Files Paddock writes into the workspace on the host should
    /// be given to this owner, or the command cannot change them.
    pub fn sandbox_identity(&self, spec: &DeploymentSandbox) -> Option<(u32, u32)> {
        if !self.privileged {
            return None;
        }
        let uid = spec.uid.unwrap_or_else(|| {
            let range = self.config.uid_range;
            let offset = fnv1a64(spec.deployment_id.as_bytes()) % u64::from(range.count.max(1));
            // In range: `new` checked that first + count fits below u32::MAX.
            range
                .first
                .saturating_add(u32::try_from(offset).unwrap_or(0))
        });
        Some((uid, uid))
    }

    fn user_files(&self, uid: u32, gid: u32) -> Result<UserFiles, SandboxError> {
        let dir = self.config.runtime_dir.join("users").join(uid.to_string());
        make_dir(&dir, 0o755)?;
        let passwd = format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             sandbox:x:{uid}:{gid}:Paddock sandbox:/workspace:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        let group = format!("root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n");
        let files = UserFiles {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
        };
        write_runtime_file(&files.passwd, passwd.as_bytes())?;
        write_runtime_file(&files.group, group.as_bytes())?;
        Ok(files)
    }

    async fn check_workspace(
        &self,
        spec: &DeploymentSandbox,
        create: bool,
        chown: bool,
    ) -> Result<(), SandboxError> {
        let ws = spec.workspace.clone();
        let ident = self.sandbox_identity(spec);
        tokio::task::spawn_blocking(move || check_workspace(&ws, ident, create, chown))
            .await
            .map_err(|e| setup_err("workspace check", e))?
    }

    /// bubblewrap's options (sent through `--args`, so they do not show in `ps`).
    fn options(
        &self,
        spec: &DeploymentSandbox,
        command: &Command,
        users: &UserFiles,
        internet: bool,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::with_capacity(96);
        let mut push = |items: &[&dyn AsRefOs]| {
            for i in items {
                a.push(i.as_os());
            }
        };
        push(&[&"--unshare-all"]);
        if internet {
            push(&[&"--share-net"]);
        }
        push(&[
            &"--unshare-user",
            &"--disable-userns",
            &"--die-with-parent",
            &"--new-session",
            &"--cap-drop",
            &"ALL",
            &"--hostname",
            &"sandbox",
            &"--clearenv",
        ]);
        let mut env = base_env("/workspace");
        env.extend(command.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (k, v) in &env {
            push(&[&"--setenv", k, v]);
        }
        push(&[&"--ro-bind", &"/usr", &"/usr"]);
        for entry in &self.root_entries {
            match entry {
                RootEntry::Symlink { path, target } => push(&[&"--symlink", target, path]),
                RootEntry::Dir { path } => push(&[&"--ro-bind", path, path]),
            }
        }
        push(&[&"--ro-bind", &users.passwd, &"/etc/passwd"]);
        push(&[&"--ro-bind", &users.group, &"/etc/group"]);
        push(&[&"--ro-bind", &self.hosts_file, &"/etc/hosts"]);
        for path in ETC_ALWAYS {
            push(&[&"--ro-bind-try", &path, &path]);
        }
        if internet {
            push(&[&"--ro-bind", &self.resolv_file, &"/etc/resolv.conf"]);
            for path in ETC_INTERNET {
                push(&[&"--ro-bind-try", &path, &path]);
            }
        }
        let tmpfs_bytes = (u64::from(self.config.tmpfs_size_mb) * 1024 * 1024).to_string();
        push(&[&"--proc", &"/proc", &"--dev", &"/dev"]);
        push(&[
            &"--perms",
            &"1777",
            &"--size",
            &tmpfs_bytes,
            &"--tmpfs",
            &"/dev/shm",
            &"--remount-ro",
            &"/dev",
        ]);
        push(&[
            &"--perms",
            &"1777",
            &"--size",
            &tmpfs_bytes,
            &"--tmpfs",
            &"/tmp",
        ]);
        push(&[
            &"--bind",
            &spec.workspace,
            &"/workspace",
            &"--chdir",
            &"/workspace",
        ]);
        push(&[&"--remount-ro", &"/"]);
        push(&[&"--seccomp", &"4", &"--info-fd", &"5"]);
        a
    }

    /// The command bubblewrap executes: `prlimit … -- bash -c <script>`.
    fn inner_command(&self, spec: &DeploymentSandbox, command: &Command) -> Vec<OsString> {
        let (memory_cgroup, pids_cgroup, _) = self
            .cgroups
            .as_ref()
            .map_or((false, false, false), Cgroups::controllers);
        let mut v: Vec<OsString> = vec![
            self.prlimit_inside.clone().into(),
            "--core=0".into(),
            format!("--fsize={}", self.config.max_file_size_mb * 1024 * 1024).into(),
            format!("--nproc={}", nproc_rlimit(spec.max_processes, pids_cgroup)).into(),
        ];
        if !memory_cgroup {
            v.push(format!("--as={}", spec.memory_bytes()).into());
        }
        v.push("--".into());
        v.push(self.bash_inside.clone().into());
        v.push("-c".into());
        v.push(command.script.clone().into());
        v
    }

    /// The host-side launcher: `/bin/sh` running [`WRAPPER`] as the sandbox uid, entered into
    /// the filtered network namespace first for `internet`.
    fn launcher(&self, ident: Option<(u32, u32)>, netns: Option<&NetNamespace>) -> TokioCommand {
        let mut cmd = match (netns, &self.net_tools) {
            (Some(ns), Some(tools)) => {
                let mut c = TokioCommand::new(&tools.nsenter);
                c.arg(format!("--net={}", ns.ns_path().display()));
                if let Some((uid, gid)) = ident {
                    // nsenter drops supplementary groups with -G, then sets gid and uid.
                    c.arg("-S")
                        .arg(uid.to_string())
                        .arg("-G")
                        .arg(gid.to_string());
                }
                c.arg("--").arg(&self.sh);
                c
            }
            _ => {
                let mut c = TokioCommand::new(&self.sh);
                if let Some((uid, gid)) = ident {
                    // std drops supplementary groups (setgroups(0)) when root sets a uid.
                    c.uid(uid).gid(gid);
                }
                c
            }
        };
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("paddock-sandbox")
            .arg(&self.seccomp_file)
            .arg(&self.bwrap)
            .args(["--args", "6", "--"]);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        cmd
    }

    async fn run_inner(
        &self,
        spec: &DeploymentSandbox,
        command: Command,
    ) -> Result<CommandOutput, SandboxError> {
        spec.validate()?;
        command.validate()?;
        if command.cancel.is_cancelled() {
            return Ok(CommandOutput::cancelled_before_start());
        }
        if spec.network == Network::Internet
            && let Some(why) = &self.internet_unavailable
        {
            return Err(SandboxError::NetworkUnavailable(why.clone()));
        }
        self.check_workspace(spec, false, false).await?;
        let ident = self.sandbox_identity(spec);
        let (uid_in, gid_in) = ident.unwrap_or((self.euid, self.egid));
        let users = self.user_files(uid_in, gid_in)?;

        let limits = Limits::new(spec.memory_bytes(), spec.max_processes, spec.cpus);
        let run_name = format!(
            "run-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let leaf = match &self.cgroups {
            Some(cg) => {
                cg.ensure_deployment(&spec.deployment_id, &limits)
                    .map_err(|e| setup_err("cgroup", e))?;
                Some(LeafGuard(Some(
                    cg.create_run(&spec.deployment_id, &run_name, &limits)
                        .map_err(|e| setup_err("cgroup", e))?,
                )))
            }
            None => None,
        };
        let netns = match spec.network {
            Network::Internet => match &self.net_tools {
                Some(tools) => Some(NetNamespace::create(tools, &self.config.internet).await?),
                None => {
                    return Err(SandboxError::NetworkUnavailable(
                        "network tools missing".into(),
                    ));
                }
            },
            Network::None => None,
        };
        let options = self.options(spec, &command, &users, netns.is_some());
        let mut launcher = self.launcher(ident, netns.as_ref());
        launcher.args(self.inner_command(spec, &command));
        tracing::debug!(
            deployment = %spec.deployment_id,
            run = %run_name,
            network = %spec.network,
            uid = uid_in,
            "starting sandboxed command"
        );

        let result = self
            .supervise(
                launcher,
                options,
                leaf.as_ref().and_then(LeafGuard::leaf),
                ident,
                &command,
            )
            .await;
        if let Some(ns) = netns {
            ns.close().await;
        }
        if let Some(guard) = leaf {
            guard.remove_with_retries().await;
        }
        result
    }

    /// Starts the launcher, feeds it, watches it, kills it when needed and collects the
    /// output once every process of the sandbox is gone.
    async fn supervise(
        &self,
        mut launcher: TokioCommand,
        options: Vec<OsString>,
        leaf: Option<&RunCgroup>,
        ident: Option<(u32, u32)>,
        command: &Command,
    ) -> Result<CommandOutput, SandboxError> {
        let started = Instant::now();
        let mut child = launcher
            .spawn()
            .map_err(|e| SandboxError::io("starting the sandbox launcher", e))?;
        let Some(pid) = child.id() else {
            return Err(setup_err("sandbox launcher", "exited immediately"));
        };
        if let Some(leaf) = leaf
            && let Err(e) = leaf.attach(pid)
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(setup_err("attaching to the cgroup", e));
        }
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(setup_err("sandbox launcher", "stdio pipes missing"));
        };
        let out = Capture::shared(command.output_cap);
        let err = Capture::shared(command.output_cap);
        let (info_tx, mut info_rx) = oneshot::channel();
        let out_task = tokio::spawn(pump(stdout, out.clone()));
        let err_task = tokio::spawn(pump_after_info(stderr, err.clone(), info_tx));
        let mut control = b"go\n".to_vec();
        for o in &options {
            control.extend_from_slice(o.as_bytes());
            control.push(0);
        }
        let stdin_task = tokio::spawn(async move {
            let _ = stdin.write_all(&control).await;
            let _ = stdin.shutdown().await;
        });

        let deadline = tokio::time::Instant::now() + command.timeout;
        let watch_pids = leaf.is_some_and(RunCgroup::watches_pids);
        let mut tick = tokio::time::interval(PIDS_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut init: Option<Init> = None;
        let mut info_missing: Option<String> = None;
        let mut info_open = true;
        let ended = loop {
            tokio::select! {
                status = child.wait() => break End::Exited(status),
                () = tokio::time::sleep_until(deadline) => break End::Kill(KillReason::Timeout),
                () = command.cancel.cancelled() => break End::Kill(KillReason::Cancelled),
                info = &mut info_rx, if info_open => {
                    info_open = false;
                    match info {
                        Ok(Info::ChildPid(p)) => init = Some(Init::new(p)),
                        Ok(Info::Missing(text)) => info_missing = Some(text),
                        Err(_) => info_missing = Some(String::new()),
                    }
                }
                _ = tick.tick(), if watch_pids => {
                    if leaf.is_some_and(|l| l.pids_limit_hits() > 0) {
                        break End::Kill(KillReason::ProcessLimit);
                    }
                }
            }
        };

        // Learn the init pid if the report came in while we were not looking.
        if info_open
            && let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), &mut info_rx).await
        {
            match info {
                Info::ChildPid(p) => init = Some(Init::new(p)),
                Info::Missing(text) => info_missing = Some(text),
            }
        }

        let (status, kill_reason) = match ended {
            End::Exited(status) => (status.ok(), None),
            End::Kill(reason) => {
                tracing::debug!(reason = reason.as_str(), "killing sandboxed command");
                // Killing the sandbox's init tears the whole PID namespace down; bubblewrap
                // outside reaps it (after every process in it is gone) and exits. Without the
                // init pid, kill bubblewrap itself: --die-with-parent takes its init along.
                match &init {
                    Some(init) => kill_pids(&self.sh, &[i64::from(init.pid)], ident).await,
                    None => {
                        let _ = child.start_kill();
                    }
                }
                let status = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await
                {
                    Ok(s) => s.ok(),
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await.ok()
                    }
                };
                (status, Some(reason))
            }
        };
        self.wait_until_gone(leaf, init.as_ref(), ident).await;
        stdin_task.abort();
        drain(out_task, err_task).await;

        let oom = leaf.map_or(0, RunCgroup::oom_kills);
        let pid_hits = leaf.map_or(0, RunCgroup::pids_limit_hits);
        let killed_reason = kill_reason
            .or((pid_hits > 0).then_some(KillReason::ProcessLimit))
            .or((oom > 0).then_some(KillReason::MemoryLimit));
        if init.is_none() && kill_reason.is_none() {
            let diag = info_missing.unwrap_or_default();
            let diag = if diag.is_empty() {
                lock(&err).to_output().text_lossy().trim().to_owned()
            } else {
                diag
            };
            return Err(SandboxError::Setup(format!(
                "bubblewrap could not start the sandbox (status {}): {}",
                status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                if diag.is_empty() {
                    "no diagnostics"
                } else {
                    &diag
                }
            )));
        }
        let (exit_code, signal) = decode_status(status);
        let stdout = lock(&out).to_output();
        let stderr = lock(&err).to_output();
        Ok(CommandOutput {
            exit_code,
            signal,
            stdout,
            stderr,
            timed_out: kill_reason == Some(KillReason::Timeout),
            killed_reason,
            duration: started.elapsed(),
        })
    }

    /// Waits until no process of the sandbox is left, killing stragglers if needed. bubblewrap
    /// may exit as soon as the command does, while its init is still tearing down daemonised
    /// children; this makes `run` return only after they are gone.
    async fn wait_until_gone(
        &self,
        leaf: Option<&RunCgroup>,
        init: Option<&Init>,
        ident: Option<(u32, u32)>,
    ) {
        let gone = || match (leaf, init) {
            (Some(leaf), _) => leaf.pids().is_empty(),
            (None, Some(init)) => !proc_alive(init.pid, init.start_time),
            (None, None) => true,
        };
        if poll_until(&gone, Duration::from_secs(3)).await {
            return;
        }
        tracing::warn!("sandbox processes outlived bubblewrap; killing them");
        if let Some(leaf) = leaf
            && !leaf.kill_all()
        {
            let pids: Vec<i64> = leaf.pids().into_iter().map(i64::from).collect();
            kill_pids(&self.sh, &pids, ident).await;
        }
        if let Some(init) = init
            && proc_alive(init.pid, init.start_time)
        {
            kill_pids(&self.sh, &[i64::from(init.pid)], ident).await;
        }
        if !poll_until(&gone, Duration::from_secs(10)).await {
            tracing::error!("sandbox processes survived SIGKILL for 10 s");
        }
    }
}

/// The sandbox's init process (host pid) and its start time, to recognise pid reuse.
struct Init {
    pid: u32,
    start_time: Option<u64>,
}

impl Init {
    fn new(pid: u32) -> Self {
        Init {
            pid,
            start_time: proc_stat(pid).map(|(_, t)| t),
        }
    }
}

enum End {
    Exited(io::Result<ExitStatus>),
    Kill(KillReason),
}

/// Removes a command's leaf cgroup, also when the run future is dropped mid-command (then the
/// processes are still dying and removal is retried in the background).
struct LeafGuard(Option<RunCgroup>);

impl LeafGuard {
    fn leaf(&self) -> Option<&RunCgroup> {
        self.0.as_ref()
    }

    async fn remove_with_retries(mut self) {
        let Some(leaf) = self.0.take() else { return };
        for _ in 0..50 {
            if leaf.remove() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!("could not remove a command's cgroup; teardown will retry");
    }
}

impl Drop for LeafGuard {
    fn drop(&mut self) {
        let Some(leaf) = self.0.take() else { return };
        if leaf.remove() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for _ in 0..250 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if leaf.remove() {
                        return;
                    }
                }
            });
        }
    }
}

/// Polls `done` every 5 ms for at most `limit`.
async fn poll_until(done: &impl Fn() -> bool, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the output readers; if something still holds a pipe open after the grace
/// period, stops reading (what was read is kept).
pub(crate) async fn drain(
    out_task: tokio::task::JoinHandle<()>,
    err_task: tokio::task::JoinHandle<()>,
) {
    let (out_abort, err_abort) = (out_task.abort_handle(), err_task.abort_handle());
    if tokio::time::timeout(DRAIN_GRACE, async {
        let _ = out_task.await;
        let _ = err_task.await;
    })
    .await
    .is_err()
    {
        tracing::warn!("command output pipes still open after the process tree ended");
        out_abort.abort();
        err_abort.abort();
    }
}

/// `(exit_code, signal)` from bubblewrap's status (`128 + N` means signal N inside).
fn decode_status(status: Option<ExitStatus>) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => (None, None),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (Some(code), (129..=192).contains(&code).then(|| code - 128)),
            (None, signal) => (None, signal),
        },
    }
}

#[async_trait]
impl Sandbox for BubblewrapSandbox {
    fn name(&self) -> &'static str {
        "bubblewrap"
    }

    async fn prepare(&self, spec: &DeploymentSandbox) -> Result<(), SandboxError> {
        spec.validate()?;
        self.check_workspace(spec, true, true).await?;
        let (uid, gid) = self
            .sandbox_identity(spec)
            .unwrap_or((self.euid, self.egid));
        self.user_files(uid, gid)?;
        if let Some(cg) = &self.cgroups {
            let limits = Limits::new(spec.memory_bytes(), spec.max_processes, spec.cpus);
            cg.ensure_deployment(&spec.deployment_id, &limits)
                .map_err(|e| setup_err("cgroup", e))?;
            // Leaves of this process belong to commands that may be starting right now.
            cg.sweep_empty_runs(&spec.deployment_id, &format!("run-{}-", std::process::id()));
        }
        Ok(())
    }

    async fn run(
        &self,
        spec: &DeploymentSandbox,
        command: Command,
    ) -> Result<CommandOutput, SandboxError> {
        self.run_inner(spec, command).await
    }

    async fn teardown(&self, deployment_id: &str) -> Result<(), SandboxError> {
        validate_deployment_id(deployment_id)?;
        let Some(cg) = &self.cgroups else {
            return Ok(());
        };
        let pids: Vec<i64> = cg
            .deployment_pids(deployment_id)
            .into_iter()
            .map(i64::from)
            .collect();
        if !pids.is_empty() {
            tracing::warn!(
                deployment = deployment_id,
                count = pids.len(),
                "teardown: killing processes still in the deployment's cgroup"
            );
            // Root: these pids were read from the deployment's own cgroup a moment ago.
            kill_pids(&self.sh, &pids, None).await;
            let empty = || cg.deployment_pids(deployment_id).is_empty();
            poll_until(&empty, Duration::from_secs(10)).await;
        }
        cg.remove_deployment(deployment_id)
            .map_err(|e| setup_err("removing the deployment's cgroups", e))
    }

    async fn probe(&self) -> Result<(), SandboxError> {
        // The probe's workspace and cgroup are this process's own: the runtime directory is
        // shared by every Paddock process on the host (a second node, a test suite starting
        // several servers, a restart overlapping the old process). A shared probe workspace
        // was chowned to each prober's uid in turn, so a concurrent probe found it owned by
        // another uid ("Can't chdir to /workspace"); a shared cgroup leaf was swept by the
        // other process before this probe entered it.
        let pid = std::process::id();
        let workspace = self
            .config
            .runtime_dir
            .join(format!("probe-workspace-{pid}"));
        let probe_id = format!("paddock-probe-{pid}");
        let spec = DeploymentSandbox {
            memory_mb: 256,
            max_processes: 64,
            ..DeploymentSandbox::new(&probe_id, &workspace)
        };
        let _one_at_a_time = self.probe_lock.lock().await;
        self.prepare(&spec).await?;
        let output = self
            .run(
                &spec,
                Command::new("true").with_timeout(Duration::from_secs(60)),
            )
            .await
            .map_err(|e| SandboxError::Probe(e.to_string()));
        // Nothing of the probe is left behind (its cgroups are empty once `true` has exited).
        if let Err(e) = self.teardown(&probe_id).await {
            tracing::debug!(error = %e, "could not remove the probe's cgroups");
        }
        if let Err(e) = tokio::fs::remove_dir_all(&workspace).await {
            tracing::debug!(error = %e, "could not remove the probe's workspace");
        }
        let output = output?;
        if output.success() {
            Ok(())
        } else {
            Err(SandboxError::Probe(format!(
                "`true` ended with status {:?} (killed: {:?}): {}",
                output.exit_code,
                output.killed_reason,
                output.stderr.text_lossy().trim()
            )))
        }
    }

    fn workspace_owner(&self, spec: &DeploymentSandbox) -> Option<(u32, u32)> {
        self.sandbox_identity(spec)
    }
}

/// Things that can go into an argument vector.
trait AsRefOs {
    fn as_os(&self) -> OsString;
}

impl AsRefOs for &str {
    fn as_os(&self) -> OsString {
        OsString::from(*self)
    }
}

impl AsRefOs for String {
    fn as_os(&self) -> OsString {
        OsString::from(self)
    }
}

impl AsRefOs for PathBuf {
    fn as_os(&self) -> OsString {
        self.clone().into_os_string()
    }
}

/// The host's `/bin`, `/sbin`, `/lib`, `/lib32`, `/lib64`, `/libx32`.
fn root_entries() -> Vec<RootEntry> {
    let mut out = Vec::new();
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let path = Path::new("/").join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(&path) {
                    out.push(RootEntry::Symlink { path, target });
                }
            }
            Ok(m) if m.is_dir() => out.push(RootEntry::Dir { path }),
            _ => {}
        }
    }
    out
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), SandboxError> {
    fs::create_dir_all(dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::io(format!("chmod {}", dir.display()), e))
}

fn write_runtime_file(path: &Path, contents: &[u8]) -> Result<(), SandboxError> {
    crate::util::write_file_atomic(path, contents, 0o644)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}

/// Creates the runtime directory, or checks an existing one: a real directory owned by us.
fn prepare_runtime_dir(dir: &Path, euid: u32) -> Result<(), SandboxError> {
    if !dir.is_absolute() {
        return Err(SandboxError::InvalidSpec(format!(
            "runtime_dir {} is not absolute",
            dir.display()
        )));
    }
    match fs::symlink_metadata(dir) {
        Ok(m) => {
            if !m.is_dir() {
                return Err(SandboxError::Setup(format!(
                    "runtime_dir {} is not a directory (or is a symlink)",
                    dir.display()
                )));
            }
            if m.uid() != euid {
                return Err(SandboxError::Setup(format!(
                    "runtime_dir {} belongs to uid {}, not to Paddock's uid {euid}",
                    dir.display(),
                    m.uid()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SandboxError::io(format!("checking {}", dir.display()), e)),
    }
    make_dir(dir, 0o755)
}

/// Checks (and with `create`/`chown`, fixes) a workspace: a real directory at a canonical
/// path, reachable and owned by the sandbox uid.
fn check_workspace(
    ws: &Path,
    ident: Option<(u32, u32)>,
    create: bool,
    chown: bool,
) -> Result<(), SandboxError> {
    if create && fs::symlink_metadata(ws).is_err() {
        fs::create_dir_all(ws)
            .map_err(|e| SandboxError::io(format!("creating workspace {}", ws.display()), e))?;
        fs::set_permissions(ws, fs::Permissions::from_mode(0o700))
            .map_err(|e| SandboxError::io(format!("chmod {}", ws.display()), e))?;
    }
    let meta = fs::symlink_metadata(ws)
        .map_err(|e| SandboxError::InvalidSpec(format!("workspace {}: {e}", ws.display())))?;
    if !meta.is_dir() {
        return Err(SandboxError::InvalidSpec(format!(
            "workspace {} is not a directory (symlinks are refused)",
            ws.display()
        )));
    }
    let canonical = ws
        .canonicalize()
        .map_err(|e| SandboxError::io(format!("resolving {}", ws.display()), e))?;
    if canonical != ws {
        return Err(SandboxError::InvalidSpec(format!(
            "workspace {} is not a canonical path (it resolves to {}); symlinks and `..` are \
             refused",
            ws.display(),
            canonical.display()
        )));
    }
    let Some((uid, gid)) = ident else {
        return Ok(());
    };
    for dir in ws.ancestors().skip(1) {
        let m = fs::metadata(dir)
            .map_err(|e| SandboxError::io(format!("checking {}", dir.display()), e))?;
        let mode = m.mode();
        let searchable = mode & 0o001 != 0
            || (m.uid() == uid && mode & 0o100 != 0)
            || (m.gid() == gid && mode & 0o010 != 0);
        if !searchable {
            return Err(SandboxError::Setup(format!(
                "{} (mode {:o}) is not searchable by the sandbox uid {uid}, so bubblewrap \
                 cannot reach the workspace {}; allow search without listing: chmod o+x {}",
                dir.display(),
                mode & 0o7777,
                ws.display(),
                dir.display()
            )));
        }
    }
    if chown || meta.uid() != uid || meta.gid() != gid {
        chown_tree(ws, uid, gid)?;
        fs::set_permissions(ws, fs::Permissions::from_mode(0o700))
            .map_err(|e| SandboxError::io(format!("chmod {}", ws.display()), e))?;
    }
    Ok(())
}

/// Gives every entry under `root` to `uid:gid` without following symlinks (`lchown`; symlinked
/// directories are not entered). Run it while no command of the deployment runs: a command
/// swapping a directory for a symlink mid-walk could otherwise redirect a `lchown` below it.
fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SandboxError::io(format!("stat {}", path.display()), e)),
        };
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(|e| SandboxError::io(format!("chown {}", path.display()), e))?;
        }
        if meta.is_dir() {
            let entries = fs::read_dir(&path)
                .map_err(|e| SandboxError::io(format!("listing {}", path.display()), e))?;
            for entry in entries.flatten() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pids_cgroup_is_hit_before_the_nproc_rlimit() {
        assert_eq!(nproc_rlimit(64, false), 64);
        assert!(nproc_rlimit(64, true) > 64);
        assert_eq!(nproc_rlimit(u32::MAX, true), u32::MAX);
    }

    #[test]
    fn decodes_statuses() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            decode_status(Some(ExitStatus::from_raw(0))),
            (Some(0), None)
        );
        assert_eq!(
            decode_status(Some(ExitStatus::from_raw(137 << 8))),
            (Some(137), Some(9))
        );
        assert_eq!(
            decode_status(Some(ExitStatus::from_raw(9))),
            (None, Some(9))
        );
        assert_eq!(decode_status(None), (None, None));
    }

    #[test]
    fn uid_derivation_is_stable_and_in_range() {
        let range = UidRange::default();
        let off = fnv1a64(b"dep_7xK9s2") % u64::from(range.count);
        assert!(off < u64::from(range.count));
    }
}
