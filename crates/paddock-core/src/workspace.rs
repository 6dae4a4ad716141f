//! A deployment's workspace directory and the path rules of spec §11.1.
//!
//! Every path a client or the model names is checked here before anything touches the disk:
//! relative, no empty/`.`/`..` segments, no backslash or NUL, bounded lengths, and — after
//! resolving symbolic links — still inside the workspace.

use std::path::{Component, Path, PathBuf};

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
        Self { root }
    }

    /// The workspace directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks `path` against the rules and resolves it inside the workspace. The target need
    /// not exist; its deepest existing ancestor must (after following links) be inside.
    pub fn resolve(&self, path: &str) -> Result<ResolvedPath, PathError> {
        let relative = normalise(path)?;
        let host = self.root.join(&relative);
        let root = self
            .root
            .canonicalize()
            .map_err(|e| PathError::Io(e.to_string()))?;
        // Walk up to the deepest ancestor that exists and check where it really points.
        let mut probe = host.clone();
        loop {
            match probe.canonicalize() {
                Ok(real) => {
                    if !real.starts_with(&root) {
                        return Err(PathError::Escapes);
                    }
                    break;
                }
                Err(_) => {
                    // A dangling symlink must not be followed when the target is created.
                    if probe.symlink_metadata().is_ok() {
                        return Err(PathError::Escapes);
                    }
                    if !probe.pop() {
                        return Err(PathError::Escapes);
                    }
                }
            }
        }
        Ok(ResolvedPath { relative, host })
    }
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
        std::os::unix::fs::symlink(root.path().join("in"), root.path().join("ok")).unwrap();
        let ws = Workspace::new(root.path().to_path_buf());
        assert_eq!(ws.resolve("out/secret"), Err(PathError::Escapes));
        assert_eq!(ws.resolve("out"), Err(PathError::Escapes));
        assert_eq!(ws.resolve("dangling"), Err(PathError::Escapes));
        assert!(ws.resolve("ok/file.txt").is_ok());
        assert!(ws.resolve("new/dir/file.txt").is_ok());
    }
}
