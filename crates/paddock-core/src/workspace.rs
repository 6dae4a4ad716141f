//! A deployment's workspace directory and the path rules of spec §11.1.
//!
//! Every path a client or the model names is checked here before anything touches the disk:
//! relative, no empty/`.`/`..` segments, no backslash or NUL, bounded lengths, and — after
//! resolving symbolic links — still inside the workspace.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self, AtFlags, Mode, OFlags, ResolveFlags};
use thiserror::Error;

/// Maximum bytes of a whole path and of one segment.
const MAX_PATH_BYTES: usize = 1024;
const MAX_SEGMENT_BYTES: usize = 255;

/// Why a path was refused. The message is safe to show to clients and the model.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PathError {
    #[error("path must be relative to the workspace root (no leading /)")]
    Absolute,
    #[error("path is longer than 1024 bytes")]
    TooLong,
    #[error("a path segment is longer than 255 bytes")]
    SegmentTooLong,
    #[error("path contains an empty, '.' or '..' segment")]
    BadSegment,
    #[error("path contains a backslash or NUL")]
    BadCharacter,
    #[error("path resolves outside the workspace")]
    Escapes,
    #[error("workspace is not accessible: {0}")]
    Io(String),
}

/// One deployment's workspace on the host. Owned by whoever runs tools or serves files for
/// that deployment; cheap to clone.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    /// The uid and gid that files written here are given (`lchown`), when sandboxed commands
    /// run as a per-deployment uid (`Sandbox::workspace_owner`); otherwise they could not
    /// change what the server wrote.
    owner: Option<(u32, u32)>,
}

/// A checked, normalised workspace path: `relative` as the client should see it (no trailing
/// slash, empty for the root) and `host` where it lives on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    pub relative: String,
    pub host: PathBuf,
}

impl Workspace {
    /// The workspace rooted at `root` (which should exist).
    pub fn new(root: PathBuf) -> Self {
        Self { root, owner: None }
    }

    /// The same workspace, whose writes give files (and the directories created for them) to
    /// `owner` (uid, gid).
    pub fn with_owner(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    /// Gives `path` and every directory between the root and it to the workspace's owner, if
    /// it has one. Each entry is changed relative to its parent's descriptor opened beneath
    /// the root, without following a symbolic link at the entry itself, so a link planted by a
    /// sandboxed command cannot make the server change anything outside the workspace.
    pub fn give_to_owner(&self, path: &str) -> Result<(), FsError> {
        let Some((uid, gid)) = self.owner else {
            return Ok(());
        };
        let relative = normalise(path)?;
        let root = self.open_root()?;
        let mut parent_path = String::new();
        for segment in relative.split('/').filter(|s| !s.is_empty()) {
            let parent = open_beneath(&root, &parent_path, OFlags::PATH | OFlags::DIRECTORY)?;
            match fs::chownat(
                &parent,
                segment,
                Some(fs::Uid::from_raw(uid)),
                Some(fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io_error(e)),
            }
            parent_path = join(&parent_path, segment);
        }
        Ok(())
    }

    /// The workspace directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks `path` against the rules and resolves it inside the workspace. The target need
    /// not exist; its deepest existing ancestor must (after following links) be inside.
    ///
    /// The check resolves with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, the same
    /// resolution the fd-based operations below ([`Workspace::stat`], [`Workspace::read`],
    /// [`Workspace::write`], [`Workspace::list`], [`Workspace::remove`]) use. Callers that then
    /// act on `host` by path (rather than through those operations) keep a time-of-check /
    /// time-of-use window; prefer the operations.
    pub fn resolve(&self, path: &str) -> Result<ResolvedPath, PathError> {
        let relative = normalise(path)?;
        let host = self.root.join(&relative);
        let root = self.open_root().map_err(|e| match e {
            FsError::Path(p) => p,
            other => PathError::Io(other.to_string()),
        })?;
        let mut probe: Vec<&str> = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('/').collect()
        };
        loop {
            match open_beneath(&root, &probe.join("/"), OFlags::PATH) {
                Ok(_) => break,
                Err(FsError::NotFound) | Err(FsError::NotDirectory) => {
                    // A dangling symlink must not be followed when the target is created.
                    if let Some((last, parents)) = probe.split_last() {
                        if let Ok(parent) = open_beneath(&root, &parents.join("/"), OFlags::PATH)
                            && fs::statat(&parent, *last, AtFlags::SYMLINK_NOFOLLOW)
                                .is_ok_and(|st| is_symlink(&st))
                        {
                            return Err(PathError::Escapes);
                        }
                        probe.pop();
                    } else {
                        return Err(PathError::Escapes);
                    }
                }
                Err(FsError::Path(p)) => return Err(p),
                Err(other) => return Err(PathError::Io(other.to_string())),
            }
        }
        Ok(ResolvedPath { relative, host })
    }

    /// Opens the workspace root directory.
    fn open_root(&self) -> Result<OwnedFd, FsError> {
        fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::Io(format!("workspace is not accessible: {e}")))
    }

    /// What is at `path` (following symbolic links that stay inside): its normalised path
    /// and metadata.
    pub fn stat(&self, path: &str) -> Result<(String, EntryInfo), FsError> {
        let relative = normalise(path)?;
        let root = self.open_root()?;
        let fd = open_beneath(&root, &relative, OFlags::PATH).map_err(parent_is_file)?;
        let st = fs::fstat(&fd).map_err(io_error)?;
        let name = relative.rsplit('/').next().unwrap_or_default().to_owned();
        let info = entry_info(name, &st).ok_or(FsError::NotFound)?;
        Ok((relative, info))
    }

    /// Lists the directory at `path`: entries sorted by name (bytewise), at most `max`, and
    /// whether there were more. Entries that are neither files nor directories, whose names
    /// are not UTF-8, or that are symbolic links leading outside the workspace are left out; a
    /// link that stays inside is shown as what it points to.
    pub fn list(&self, path: &str, max: usize) -> Result<Listing, FsError> {
        let relative = normalise(path)?;
        let root = self.open_root()?;
        let at = open_beneath(&root, &relative, OFlags::PATH).map_err(parent_is_file)?;
        let st = fs::fstat(&at).map_err(io_error)?;
        if !is_dir(&st) {
            return Err(FsError::NotDirectory);
        }
        let dir_fd = fs::openat(
            &at,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error)?;
        let mut dir = fs::Dir::read_from(&dir_fd).map_err(io_error)?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(io_error)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let name = name.to_owned();
            let Ok(st) = fs::statat(&dir_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let st = if is_symlink(&st) {
                let target = join(&relative, &name);
                match open_beneath(&root, &target, OFlags::PATH)
                    .and_then(|fd| fs::fstat(&fd).map_err(io_error))
                {
                    Ok(st) => st,
                    Err(_) => continue,
                }
            } else {
                st
            };
            if let Some(info) = entry_info(name, &st) {
                entries.push(info);
            }
        }
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let truncated = entries.len() > max;
        entries.truncate(max);
        Ok(Listing {
            relative,
            entries,
            truncated,
        })
    }

    /// Opens the file at `path` for reading. A directory is [`FsError::IsDirectory`].
    pub fn read(&self, path: &str) -> Result<(String, std::fs::File, EntryInfo), FsError> {
        let relative = normalise(path)?;
        let root = self.open_root()?;
        // NONBLOCK: opening a FIFO a command left in the workspace must not wait for a
        // writer (it is then refused below, as anything that is not a file or directory).
        let fd = open_beneath(
            &root,
            &relative,
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
        )
        .map_err(parent_is_file)?;
        let st = fs::fstat(&fd).map_err(io_error)?;
        if is_dir(&st) {
            return Err(FsError::IsDirectory);
        }
        let name = relative.rsplit('/').next().unwrap_or_default().to_owned();
        let info = entry_info(name, &st).ok_or(FsError::NotFound)?;
        Ok((relative, std::fs::File::from(fd), info))
    }

    /// Creates or replaces the file at `path` with `content`, creating missing parent
    /// directories. The bytes are staged under `.paddock/tmp/` and renamed into place, so a
    /// reader sees the old content or the new, never a part. Every directory on the way is
    /// opened beneath the root (no symbolic link may lead outside, whatever changes on disk
    /// meanwhile), and the final name is replaced relative to its parent's descriptor, so a
    /// symbolic link there is replaced, never followed.
    pub fn write(&self, path: &str, content: &[u8]) -> Result<WriteOutcome, FsError> {
        let relative = normalise(path)?;
        let Some((parents, name)) = split_last(&relative) else {
            return Err(FsError::IsDirectory);
        };
        let root = self.open_root()?;
        let parent = ensure_dirs(&root, parents)?;
        let created = match fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir(&st) => return Err(FsError::IsDirectory),
            Ok(st) if is_symlink(&st) => {
                // A link that resolves to a directory (inside) is a directory; one leading
                // outside is a path error. Otherwise the link itself is replaced.
                match open_beneath(&root, &relative, OFlags::PATH) {
                    Ok(fd) => {
                        if fs::fstat(&fd).is_ok_and(|st| is_dir(&st)) {
                            return Err(FsError::IsDirectory);
                        }
                        false
                    }
                    Err(FsError::NotFound) => false,
                    Err(e) => return Err(e),
                }
            }
            Ok(_) => false,
            Err(rustix::io::Errno::NOENT) => true,
            Err(e) => return Err(io_error(e)),
        };
        let staging = ensure_dirs(&root, STAGING_DIR)?;
        let temp = staging_name();
        let staged = (|| -> Result<(), rustix::io::Errno> {
            let fd = fs::openat(
                &staging,
                temp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            let mut file = std::fs::File::from(fd);
            file.write_all(content).map_err(|e| {
                rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)
            })?;
            fs::renameat(&staging, temp.as_str(), &parent, name)
        })();
        if let Err(e) = staged {
            let _ = fs::unlinkat(&staging, temp.as_str(), AtFlags::empty());
            if e == rustix::io::Errno::XDEV {
                // The parent is on another filesystem (a mount inside the workspace): write
                // in place, still never following a link at the final name.
                let fd = fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::TRUNC
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(io_error)?;
                std::fs::File::from(fd)
                    .write_all(content)
                    .map_err(|e| FsError::Io(e.to_string()))?;
            } else if e == rustix::io::Errno::ISDIR || e == rustix::io::Errno::NOTEMPTY {
                return Err(FsError::IsDirectory);
            } else if e == rustix::io::Errno::NOENT {
                return Err(FsError::Changed);
            } else {
                return Err(io_error(e));
            }
        }
        self.give_to_owner(&relative)?;
        let st = fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| match e {
            rustix::io::Errno::NOENT => FsError::Changed,
            other => io_error(other),
        })?;
        Ok(WriteOutcome {
            size: u64::try_from(st.st_size).unwrap_or(0),
            modified_at: st.st_mtime,
            created,
            relative,
        })
    }

    /// Deletes the file, link or directory (recursively) at `path`; a link is removed, never
    /// followed. Returns the normalised path and the files (not directories) that were removed,
    /// relative to the root, sorted.
    pub fn remove(&self, path: &str) -> Result<(String, Vec<String>), FsError> {
        let relative = normalise(path)?;
        let Some((parents, name)) = split_last(&relative) else {
            return Err(FsError::IsRoot);
        };
        let root = self.open_root()?;
        let parent = open_beneath(
            &root,
            parents,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        )
        .map_err(|e| match e {
            FsError::NotDirectory => FsError::NotFound,
            other => other,
        })?;
        let st = match fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Err(FsError::NotFound),
            Err(e) => return Err(io_error(e)),
        };
        let mut removed = Vec::new();
        if is_dir(&st) {
            remove_tree(&parent, name, &relative, &mut removed, 0)?;
        } else {
            match fs::unlinkat(&parent, name, AtFlags::empty()) {
                Ok(()) => removed.push(relative.clone()),
                Err(rustix::io::Errno::NOENT) => return Err(FsError::NotFound),
                Err(rustix::io::Errno::ISDIR) => return Err(FsError::Changed),
                Err(e) => return Err(io_error(e)),
            }
        }
        removed.sort();
        Ok((relative, removed))
    }
}

/// Where staged writes go (inside the workspace, so a rename is atomic, and under `.paddock/`,
/// which file-change reporting ignores). The file tools use the same directory.
pub const STAGING_DIR: &str = ".paddock/tmp";

/// Whether `relative` (a normalised path) is the memory mirror or inside it, which only
/// Paddock writes (spec §10, §11.1).
pub fn is_memory_mirror(relative: &str) -> bool {
    relative == ".paddock/memory" || relative.starts_with(".paddock/memory/")
}

/// Whether `relative` (a normalised path) is under `.paddock/` (or is it).
pub fn is_reserved(relative: &str) -> bool {
    relative == ".paddock" || relative.starts_with(".paddock/")
}

/// What a fd-based workspace operation can fail with.
#[derive(Debug, Error)]
pub enum FsError {
    /// The path breaks §11.1 or resolves outside the workspace.
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("nothing at this path")]
    NotFound,
    #[error("path is a directory")]
    IsDirectory,
    #[error("path is a file, or a parent of it is a file")]
    NotDirectory,
    #[error("the workspace root cannot be removed")]
    IsRoot,
    /// A concurrent change (a directory on the way removed or replaced) got in the way; the
    /// operation changed nothing outside and may be retried.
    #[error("the workspace changed during the operation; retry")]
    Changed,
    #[error("{0}")]
    Io(String),
}

/// A file or directory in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    pub is_dir: bool,
    /// Bytes; 0 for directories.
    pub size: u64,
    /// Last modification, Unix seconds.
    pub modified_at: i64,
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The normalised directory path (no trailing slash, empty for the root).
    pub relative: String,
    pub entries: Vec<EntryInfo>,
    pub truncated: bool,
}

/// What [`Workspace::write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub relative: String,
    pub size: u64,
    pub modified_at: i64,
    /// `false` when an existing file was replaced.
    pub created: bool,
}

/// Opens `relative` (normalised; empty for the root itself) beneath `root`: no `..`, absolute
/// link or magic link may take the resolution outside, checked by the kernel at each step.
pub(crate) fn open_beneath(
    root: &OwnedFd,
    relative: &str,
    flags: OFlags,
) -> Result<OwnedFd, FsError> {
    let target = if relative.is_empty() { "." } else { relative };
    let mut attempts = 0;
    loop {
        match fs::openat2(
            root,
            target,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            // The kernel saw a concurrent rename and could not prove the walk stayed inside.
            Err(rustix::io::Errno::AGAIN) if attempts < 16 => attempts += 1,
            Err(rustix::io::Errno::AGAIN) => return Err(PathError::Escapes.into()),
            Err(e) => return Err(map_open_error(e)),
        }
    }
}

fn map_open_error(e: rustix::io::Errno) -> FsError {
    match e {
        // EXDEV: the walk would leave the root; ELOOP: a link loop (or too many links).
        rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => FsError::Path(PathError::Escapes),
        rustix::io::Errno::NOENT => FsError::NotFound,
        rustix::io::Errno::NOTDIR => FsError::NotDirectory,
        rustix::io::Errno::ISDIR => FsError::IsDirectory,
        rustix::io::Errno::NOSYS => {
            FsError::Io("this kernel lacks openat2 (Linux 5.6 or later is needed)".to_owned())
        }
        other => io_error(other),
    }
}

/// On a lookup, a parent that is a file means nothing is at the path.
fn parent_is_file(e: FsError) -> FsError {
    match e {
        FsError::NotDirectory => FsError::NotFound,
        other => other,
    }
}

fn io_error(e: rustix::io::Errno) -> FsError {
    FsError::Io(std::io::Error::from(e).to_string())
}

/// Opens (creating as needed) the directory `relative` beneath `root`, one segment at a time:
/// each segment is created with `mkdirat` in its parent's descriptor and then reopened
/// beneath the root. A segment that is a file is [`FsError::NotDirectory`].
fn ensure_dirs(root: &OwnedFd, relative: &str) -> Result<OwnedFd, FsError> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut current = open_beneath(root, "", dir_flags)?;
    if relative.is_empty() {
        return Ok(current);
    }
    let mut prefix = String::new();
    for segment in relative.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(segment);
        current = match open_beneath(root, &prefix, dir_flags) {
            Ok(fd) => fd,
            Err(FsError::NotFound) => {
                match fs::mkdirat(&current, segment, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(rustix::io::Errno::NOENT) => return Err(FsError::Changed),
                    Err(e) => return Err(io_error(e)),
                }
                open_beneath(root, &prefix, dir_flags).map_err(|e| match e {
                    FsError::NotFound => FsError::Changed,
                    other => other,
                })?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(current)
}

/// Deepest directory nesting [`remove_tree`] follows.
const MAX_DEPTH: usize = 256;

fn remove_tree(
    parent: &OwnedFd,
    name: &str,
    relative: &str,
    removed: &mut Vec<String>,
    depth: usize,
) -> Result<(), FsError> {
    if depth > MAX_DEPTH {
        return Err(FsError::Io("directory nesting is too deep".to_owned()));
    }
    let dir = match fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Removed meanwhile: nothing left to do.
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        // Replaced by a link or a file meanwhile: never followed.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => return Err(FsError::Changed),
        Err(e) => return Err(io_error(e)),
    };
    let mut names = Vec::new();
    {
        let mut iter = fs::Dir::read_from(&dir).map_err(io_error)?;
        while let Some(entry) = iter.read() {
            let entry = entry.map_err(io_error)?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            names.push(entry.file_name().to_owned());
        }
    }
    for child in names {
        let child_rel = join(relative, &child.to_string_lossy());
        let st = match fs::statat(&dir, child.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_error(e)),
        };
        if is_dir(&st) {
            let child_name = child.to_string_lossy().into_owned();
            if child.to_str().is_ok() {
                remove_tree(&dir, &child_name, &child_rel, removed, depth + 1)?;
            } else {
                return Err(FsError::Io("a file name is not UTF-8".to_owned()));
            }
        } else {
            match fs::unlinkat(&dir, child.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => removed.push(child_rel),
                Err(e) => return Err(io_error(e)),
            }
        }
    }
    match fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::NOTDIR) => Err(FsError::Changed),
        Err(e) => Err(io_error(e)),
    }
}

fn staging_name() -> String {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "put-{}-{nanos}-{}",
        std::process::id(),
        STAGED.fetch_add(1, Ordering::Relaxed)
    )
}

fn split_last(relative: &str) -> Option<(&str, &str)> {
    if relative.is_empty() {
        return None;
    }
    Some(match relative.rsplit_once('/') {
        Some((parents, name)) => (parents, name),
        None => ("", relative),
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn file_type(st: &fs::Stat) -> fs::FileType {
    fs::FileType::from_raw_mode(st.st_mode as _)
}

fn is_dir(st: &fs::Stat) -> bool {
    file_type(st) == fs::FileType::Directory
}

fn is_symlink(st: &fs::Stat) -> bool {
    file_type(st) == fs::FileType::Symlink
}

fn entry_info(name: String, st: &fs::Stat) -> Option<EntryInfo> {
    let kind = file_type(st);
    let is_dir = match kind {
        fs::FileType::Directory => true,
        fs::FileType::RegularFile => false,
        _ => return None,
    };
    Some(EntryInfo {
        name,
        is_dir,
        size: if is_dir {
            0
        } else {
            u64::try_from(st.st_size).unwrap_or(0)
        },
        modified_at: st.st_mtime,
    })
}

/// Applies the syntactic rules of §11.1 and drops a trailing `/`.
pub fn normalise(path: &str) -> Result<String, PathError> {
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(PathError::BadCharacter);
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(PathError::BadSegment);
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Err(PathError::SegmentTooLong);
        }
    }
    // Belt and braces: the segments above can only produce normal components.
    if Path::new(trimmed)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(PathError::BadSegment);
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_rules() {
        assert_eq!(normalise("a/b/"), Ok("a/b".into()));
        assert_eq!(normalise(""), Ok("".into()));
        assert_eq!(normalise("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(normalise("a/../b"), Err(PathError::BadSegment));
        assert_eq!(normalise("a//b"), Err(PathError::BadSegment));
        assert_eq!(normalise("./a"), Err(PathError::BadSegment));
        assert_eq!(normalise("a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalise("a\0b"), Err(PathError::BadCharacter));
        assert_eq!(normalise(&"x".repeat(256)), Err(PathError::SegmentTooLong));
        assert_eq!(normalise(&"x/".repeat(600)), Err(PathError::TooLong));
    }

    #[test]
    fn symlinks_cannot_escape() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.path().join("dangling")).unwrap();
        std::fs::create_dir(root.path().join("in")).unwrap();
        std::os::unix::fs::symlink("in", root.path().join("ok")).unwrap();
        // An absolute link is refused even when it names a place inside: the kernel's
        // RESOLVE_BENEATH walk never starts over at `/`.
        std::os::unix::fs::symlink(root.path().join("in"), root.path().join("abs")).unwrap();
        let ws = Workspace::new(root.path().to_path_buf());
        assert_eq!(ws.resolve("out/secret"), Err(PathError::Escapes));
        assert_eq!(ws.resolve("out"), Err(PathError::Escapes));
        assert_eq!(ws.resolve("dangling"), Err(PathError::Escapes));
        assert!(ws.resolve("ok/file.txt").is_ok());
        assert_eq!(ws.resolve("abs/file.txt"), Err(PathError::Escapes));
        assert!(ws.resolve("new/dir/file.txt").is_ok());
    }

    #[test]
    fn fd_operations_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::new(root.path().to_path_buf());
        let w = ws.write("a/b/c.txt", b"hello").unwrap();
        assert!(w.created);
        assert_eq!(w.relative, "a/b/c.txt");
        assert_eq!(w.size, 5);
        assert!(!ws.write("a/b/c.txt", b"bye").unwrap().created);
        let (_, mut file, info) = ws.read("a/b/c.txt").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!((text.as_str(), info.size), ("bye", 3));
        assert!(matches!(ws.read("a"), Err(FsError::IsDirectory)));
        assert!(matches!(
            ws.list("a/b/c.txt", 10),
            Err(FsError::NotDirectory)
        ));
        assert!(matches!(ws.write("a/b", b"x"), Err(FsError::IsDirectory)));
        assert!(matches!(
            ws.write("a/b/c.txt/d", b"x"),
            Err(FsError::NotDirectory)
        ));
        let listing = ws.list("", 10).unwrap();
        let names: Vec<_> = listing.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec![".paddock", "a"]);
        let (_, removed) = ws.remove("a").unwrap();
        assert_eq!(removed, vec!["a/b/c.txt".to_owned()]);
        assert!(matches!(ws.remove("a"), Err(FsError::NotFound)));
        assert!(matches!(ws.remove(""), Err(FsError::IsRoot)));
    }

    #[test]
    fn fd_operations_never_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("loop", root.path().join("loop")).unwrap();
        let ws = Workspace::new(root.path().to_path_buf());
        for path in ["out/secret", "out", "loop", "loop/x"] {
            assert!(matches!(ws.read(path), Err(FsError::Path(_))), "{path}");
            assert!(matches!(ws.list(path, 10), Err(FsError::Path(_))), "{path}");
        }
        assert!(matches!(ws.write("out/new", b"x"), Err(FsError::Path(_))));
        assert!(matches!(
            ws.write("out/secret", b"x"),
            Err(FsError::Path(_))
        ));
        assert!(matches!(ws.write("loop/x", b"x"), Err(FsError::Path(_))));
        assert_eq!(ws.resolve("loop/x"), Err(PathError::Escapes));
        // Removing the link removes the link, not what it points to.
        ws.remove("out").unwrap();
        assert!(outside.path().join("secret").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }
}
