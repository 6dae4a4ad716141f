//! Workspace snapshots for `filesystem` events (spec §7.4): an index of every file (path →
//! inode, size, modification and change times), taken before and after a tool call and
//! compared. No content is hashed: a write changes the change time (`ctime`) even when size
//! and modification time are kept, so the index sees it.
//!
//! The walk never follows symbolic links (a link is indexed as a file, by its own metadata)
//! and skips `.paddock/` at the root, which holds Paddock's own writes.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{self, AtFlags, Mode, OFlags};

/// How many entries one snapshot indexes at most; past that the snapshot is partial and a
/// diff against it reports nothing for the paths it could not see.
pub const MAX_ENTRIES: usize = 200_000;

/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 128;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub inode: u64,
    pub size: i64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// Every file of a workspace (outside `.paddock/`) at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    files: BTreeMap<String, FileStamp>,
    /// Whether the walk stopped at [`MAX_ENTRIES`] or could not read part of the tree.
    partial: bool,
}

/// How one file changed between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Created,
    Modified,
    Deleted,
}

impl Change {
    /// The wire value of `filesystem.change`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Modified => "modified",
            Change::Deleted => "deleted",
        }
    }
}

impl Snapshot {
    /// Indexes the workspace at `root`. A missing root is an empty snapshot. Blocking: call
    /// it from `spawn_blocking` (or [`take`]).
    pub fn take_blocking(root: &Path) -> Snapshot {
        let mut snap = Snapshot::default();
        let Ok(dir) = fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return snap;
        };
        walk(&dir, "", 0, &mut snap);
        snap
    }

    /// How many files are indexed.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is indexed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether the snapshot is incomplete.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// The changes from `self` (before) to `after`, sorted by path: at most one per path. A
    /// rename shows as the old path `Deleted` and the new one `Created`. When either snapshot is
    /// partial, deletions are not reported (a path missing from a partial snapshot may exist).
    pub fn diff(&self, after: &Snapshot) -> Vec<(String, Change)> {
        let mut out = Vec::new();
        for (path, stamp) in &after.files {
            match self.files.get(path) {
                None => {
                    if !self.partial {
                        out.push((path.clone(), Change::Created));
                    }
                }
                Some(old) if old.inode != stamp.inode => {
                    // Replaced by another file (e.g. an atomic rename over it): a modification
                    // of that path.
                    out.push((path.clone(), Change::Modified));
                }
                Some(old) if old != stamp => out.push((path.clone(), Change::Modified)),
                Some(_) => {}
            }
        }
        if !self.partial && !after.partial {
            for path in self.files.keys() {
                if !after.files.contains_key(path) {
                    out.push((path.clone(), Change::Deleted));
                }
            }
        }
        out.sort();
        out
    }
}

/// The `filesystem` event (spec §7.4) for one change: `run` is the run and thread that made
/// it, `None` for the Files API (the event then has neither field).
pub fn filesystem_event(
    path: &str,
    change: Change,
    run: Option<(&str, Option<&str>)>,
) -> paddock_store::NewEvent {
    let mut data = serde_json::json!({ "change": change.as_str(), "path": path });
    if let (Some((run_id, thread_id)), Some(obj)) = (run, data.as_object_mut()) {
        obj.insert("run_id".to_owned(), serde_json::json!(run_id));
        obj.insert("thread_id".to_owned(), serde_json::json!(thread_id));
    }
    paddock_store::NewEvent {
        kind: paddock_protocol::EventType::Filesystem,
        thread_id: run.and_then(|(_, t)| t.map(str::to_owned)),
        run_id: run.map(|(r, _)| r.to_owned()),
        data,
    }
}

/// Whether a change at `relative` (normalised) is reported: files outside `.paddock/`.
pub fn reported(relative: &str) -> bool {
    !relative.is_empty() && !crate::workspace::is_reserved(relative)
}

/// The snapshot the run loop takes before a tool call, when the run's deployment has
/// `features.filesystem_webhooks` (else `None`: nothing is indexed or reported).
pub(crate) async fn before_call(
    config: &paddock_protocol::DeploymentConfig,
    root: &Path,
) -> Option<Snapshot> {
    if config.features.filesystem_webhooks {
        Some(take(root).await)
    } else {
        None
    }
}

/// After a tool call: compares the workspace with `before` and appends and publishes one
/// `filesystem` event per changed file (spec §7.4), with the run's ids. Whatever made the
/// change (file tools, shell commands) is covered alike. A failure to record is logged; the
/// tool call's own result is recorded regardless.
pub(crate) async fn after_call(
    rt: &crate::Runtime,
    lease: &paddock_store::Lease,
    run: &paddock_store::RunRecord,
    before: Option<Snapshot>,
) {
    let Some(before) = before else {
        return;
    };
    let after = take(rt.workspace(&run.deployment_id).root()).await;
    let events: Vec<_> = before
        .diff(&after)
        .into_iter()
        .filter(|(path, _)| reported(path))
        .map(|(path, change)| {
            filesystem_event(&path, change, Some((&run.id, run.thread_id.as_deref())))
        })
        .collect();
    if events.is_empty() {
        return;
    }
    let guard = rt.bus.lock(&run.deployment_id).await;
    match rt
        .store
        .append_run_events(lease, events, paddock_protocol::time::now_unix())
        .await
    {
        Ok(stored) => guard.publish(&stored),
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "could not record filesystem events")
        }
    }
}

/// [`Snapshot::take_blocking`] on the blocking pool.
pub async fn take(root: &Path) -> Snapshot {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || Snapshot::take_blocking(&root))
        .await
        .unwrap_or_else(|_| Snapshot {
            files: BTreeMap::new(),
            partial: true,
        })
}

fn walk(dir: &OwnedFd, prefix: &str, depth: usize, snap: &mut Snapshot) {
    if depth > MAX_DEPTH {
        snap.partial = true;
        return;
    }
    let Ok(mut iter) = fs::Dir::read_from(dir) else {
        snap.partial = true;
        return;
    };
    let mut names: Vec<CString> = Vec::new();
    while let Some(entry) = iter.read() {
        let Ok(entry) = entry else {
            snap.partial = true;
            return;
        };
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." || (prefix.is_empty() && bytes == b".paddock") {
            continue;
        }
        names.push(entry.file_name().to_owned());
    }
    for name in names {
        if snap.files.len() >= MAX_ENTRIES {
            snap.partial = true;
            return;
        }
        let Ok(text) = name.to_str() else {
            continue;
        };
        let path = if prefix.is_empty() {
            text.to_owned()
        } else {
            format!("{prefix}/{text}")
        };
        let Ok(st) = fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match fs::FileType::from_raw_mode(st.st_mode as _) {
            fs::FileType::Directory => {
                match fs::openat(
                    dir,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(child) => walk(&child, &path, depth + 1, snap),
                    Err(_) => snap.partial = true,
                }
            }
            fs::FileType::RegularFile | fs::FileType::Symlink => {
                snap.files.insert(
                    path,
                    FileStamp {
                        inode: st.st_ino,
                        size: st.st_size,
                        mtime_ns: i128::from(st.st_mtime) * 1_000_000_000
                            + i128::from(st.st_mtime_nsec as i64),
                        ctime_ns: i128::from(st.st_ctime) * 1_000_000_000
                            + i128::from(st.st_ctime_nsec as i64),
                    },
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_created_modified_deleted_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("keep.txt"), "same").unwrap();
        std::fs::write(root.join("edit.txt"), "one").unwrap();
        std::fs::write(root.join("gone.txt"), "x").unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/old.txt"), "r").unwrap();
        std::fs::create_dir_all(root.join(".paddock/memory")).unwrap();
        let before = Snapshot::take_blocking(root);
        assert_eq!(before.len(), 4);

        std::fs::write(root.join("edit.txt"), "two").unwrap();
        std::fs::remove_file(root.join("gone.txt")).unwrap();
        std::fs::rename(root.join("d/old.txt"), root.join("d/new.txt")).unwrap();
        std::fs::write(root.join("new.txt"), "n").unwrap();
        std::fs::create_dir(root.join("empty-dir")).unwrap();
        std::fs::write(root.join(".paddock/memory/m.md"), "ignored").unwrap();
        let after = Snapshot::take_blocking(root);

        assert_eq!(
            before.diff(&after),
            vec![
                ("d/new.txt".to_owned(), Change::Created),
                ("d/old.txt".to_owned(), Change::Deleted),
                ("edit.txt".to_owned(), Change::Modified),
                ("gone.txt".to_owned(), Change::Deleted),
                ("new.txt".to_owned(), Change::Created),
            ]
        );
        assert!(after.diff(&after).is_empty());
    }

    #[test]
    fn does_not_follow_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let snap = Snapshot::take_blocking(dir.path());
        assert_eq!(snap.len(), 1, "the link itself, not what it points to");
        assert!(snap.files.contains_key("out"));
    }
}
