//! Small helpers around `/proc`, tool lookup, files and signals, all without `unsafe`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Directories searched for host tools. The server's `PATH` is deliberately not used: the
/// sandbox's trust must not depend on how the server was started.
const TOOL_DIRS: [&str; 6] = [
    "/usr/bin",
    "/bin",
    "/usr/sbin",
    "/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// The first executable `name` in the standard system directories.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The effective uid and gid of this process, from `/proc/self/status`.
pub(crate) fn effective_ids() -> io::Result<(u32, u32)> {
    let status = fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> io::Result<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no {name} in /proc/self/status"),
                )
            })
    };
    Ok((field("Uid:")?, field("Gid:")?))
}

/// State and start time (in clock ticks since boot) of a process, from `/proc/<pid>/stat`.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come ppid, pgrp, … ; starttime is field 22 overall, i.e. the 20th here.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process that had `start_time` still runs (exists and is not a zombie).
pub(crate) fn proc_alive(pid: u32, start_time: Option<u64>) -> bool {
    match proc_stat(pid) {
        None => false,
        Some((state, start)) => {
            !matches!(state, 'Z' | 'X' | 'x') && start_time.is_none_or(|t| t == start)
        }
    }
}

/// Sends SIGKILL to `pids` (negative values name process groups) through `/bin/sh`'s `kill`
/// builtin, run as `ident` when given, so a recycled pid can only ever hit that uid's
/// processes.
pub(crate) async fn kill_pids(sh: &Path, pids: &[i64], ident: Option<(u32, u32)>) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = tokio::process::Command::new(sh);
    cmd.arg("-c")
        .arg("kill -9 \"$@\" 2>/dev/null; exit 0")
        .arg("paddock-kill")
        .args(pids.iter().map(|p| p.to_string()))
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some((uid, gid)) = ident {
        cmd.uid(uid).gid(gid);
    }
    match cmd.spawn() {
        Ok(mut child) => {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                tracing::warn!("kill helper did not finish in 10 s");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot start the kill helper"),
    }
}

/// Writes `contents` to `path` atomically (temporary file + rename) with `mode`, unless the
/// file already has exactly that content and mode.
pub(crate) fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    if let (Ok(existing), Ok(meta)) = (fs::read(path), fs::symlink_metadata(path))
        && existing == contents
        && meta.is_file()
        && meta.permissions().mode() & 0o7777 == mode
    {
        return Ok(());
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// FNV-1a, 64-bit: a stable hash (unlike `DefaultHasher`, which may change between Rust
/// releases) for deriving uids from deployment ids.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_ids_and_stat() {
        let (uid, _gid) = effective_ids().unwrap();
        let meta = fs::metadata("/proc/self").unwrap();
        assert_eq!(uid, std::os::unix::fs::MetadataExt::uid(&meta));
        let (state, start) = proc_stat(std::process::id()).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(proc_alive(std::process::id(), Some(start)));
        assert!(!proc_alive(std::process::id(), Some(start + 1)));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn finds_sh() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("definitely-not-a-tool-xyz").is_none());
    }
}
