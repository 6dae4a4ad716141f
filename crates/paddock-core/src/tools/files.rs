//! `read_file`, `write_file` and `edit_file`: the workspace file tools (spec §13.1).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, check_args};
use crate::workspace::Workspace;

/// Largest file the file tools read or edit, so one call cannot exhaust memory.
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

fn str_arg<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a str, String> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("argument `{key}` must be a string"))
}

fn opt_positive(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| format!("argument `{key}` must be a positive integer")),
    }
}

async fn read_text(path: &std::path::Path) -> Result<String, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|_| "file not found".to_owned())?;
    if meta.is_dir() {
        return Err("path is a directory".to_owned());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("file is larger than {MAX_FILE_BYTES} bytes"));
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "file is not UTF-8 text".to_owned())
}

/// Where file tools stage writes, inside the workspace (same filesystem, so a rename is
/// atomic) and under `.paddock/`, which file-change reporting ignores.
const STAGING_DIR: &str = ".paddock/tmp";

/// Replaces the content of `path` (a checked path of `workspace`) atomically: the bytes go to
/// a staging file that is then renamed over the target, so a crash mid-write (even `kill -9`)
/// leaves the old content or the new one, never a truncated file. A tool call then either took
/// effect or did not (spec §5.4). A symbolic link (already checked to stay inside) is written
/// through, and an existing file keeps its permissions.
async fn write_atomically(
    workspace: &Workspace,
    path: &std::path::Path,
    content: &[u8],
) -> Result<(), String> {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let target = match tokio::fs::canonicalize(path).await {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    let staging = workspace.root().join(STAGING_DIR);
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|e| format!("cannot prepare the write: {e}"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let temp = staging.join(format!(
        "write-{}-{nanos}-{}",
        std::process::id(),
        STAGED.fetch_add(1, Ordering::Relaxed)
    ));
    let staged = async {
        tokio::fs::write(&temp, content).await?;
        if let Ok(meta) = tokio::fs::metadata(&target).await {
            tokio::fs::set_permissions(&temp, meta.permissions()).await?;
        }
        tokio::fs::rename(&temp, &target).await
    };
    match staged.await {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            if e.raw_os_error() == Some(18) {
                // EXDEV: the target is on another filesystem (a mount inside the workspace);
                // write in place.
                tokio::fs::write(&target, content)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                Err(e.to_string())
            }
        }
    }
}

/// Gives a file the tool wrote (and the directories made for it) to the sandbox's uid, so
/// sandboxed commands can change it too.
fn give_to_owner(ctx: &ToolContext, relative: &str) -> Result<(), String> {
    ctx.workspace
        .give_to_owner(relative)
        .map_err(|e| format!("wrote the file but could not set its owner: {e}"))
}

/// Reads a workspace file, optionally a range of lines.
pub struct ReadFile;

#[async_trait::async_trait]
impl Tool for ReadFile {
    fn name(&self) -> &'static str {
        "read_file"
    }
    fn description(&self) -> &'static str {
        "Read a text file from the workspace. Optionally give `offset` (first line, from 1) and `limit` (number of lines)."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Path relative to the workspace root"},
                "offset": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1}
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        let run = async {
            let obj = check_args(arguments, &["path", "offset", "limit"], &["path"])?;
            let path = ctx
                .workspace
                .resolve(str_arg(obj, "path")?)
                .map_err(|e| e.to_string())?;
            let offset = opt_positive(obj, "offset")?.unwrap_or(1);
            let limit = opt_positive(obj, "limit")?;
            let text = read_text(&path.host).await?;
            let total = text.lines().count() as u64;
            let selected: Vec<&str> = text
                .lines()
                .skip((offset - 1) as usize)
                .take(limit.unwrap_or(u64::MAX) as usize)
                .collect();
            let content = if offset == 1 && limit.is_none() {
                text.clone()
            } else {
                selected.join("\n")
            };
            Ok::<_, String>(json!({
                "path": path.relative, "content": content, "total_lines": total,
            }))
        };
        match run.await {
            Ok(v) => ToolOutput::ok(v),
            Err(e) => ToolOutput::error(e),
        }
    }
}

/// Creates or overwrites a workspace file, creating parent directories.
pub struct WriteFile;

#[async_trait::async_trait]
impl Tool for WriteFile {
    fn name(&self) -> &'static str {
        "write_file"
    }
    fn description(&self) -> &'static str {
        "Create or overwrite a file in the workspace with `content`, creating parent directories."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Path relative to the workspace root"},
                "content": {"type": "string"}
            },
            "required": ["path", "content"],
            "additionalProperties": false
        })
    }
    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        let run = async {
            let obj = check_args(arguments, &["path", "content"], &["path", "content"])?;
            let content = str_arg(obj, "content")?;
            let path = ctx
                .workspace
                .resolve(str_arg(obj, "path")?)
                .map_err(|e| e.to_string())?;
            if path.relative.is_empty() {
                return Err("path must name a file".to_owned());
            }
            if path.relative.starts_with(".paddock/memory") {
                return Err(".paddock/memory/ is read-only".to_owned());
            }
            if let Some(parent) = path.host.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| format!("cannot create parent directories: {e}"))?;
            }
            let existed = match tokio::fs::metadata(&path.host).await {
                Ok(m) if m.is_dir() => return Err("path is a directory".to_owned()),
                Ok(_) => true,
                Err(_) => false,
            };
            write_atomically(&ctx.workspace, &path.host, content.as_bytes()).await?;
            give_to_owner(ctx, &path.relative)?;
            Ok::<_, String>(json!({
                "path": path.relative, "bytes_written": content.len(), "created": !existed,
            }))
        };
        match run.await {
            Ok(v) => ToolOutput::ok(v),
            Err(e) => ToolOutput::error(e),
        }
    }
}

/// Replaces an exact string in a workspace file.
pub struct EditFile;

#[async_trait::async_trait]
impl Tool for EditFile {
    fn name(&self) -> &'static str {
        "edit_file"
    }
    fn description(&self) -> &'static str {
        "Replace `old_string` with `new_string` in a workspace file. Fails unless `old_string` occurs exactly once, or `replace_all` is true."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean", "default": false}
            },
            "required": ["path", "old_string", "new_string"],
            "additionalProperties": false
        })
    }
    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        let run = async {
            let obj = check_args(
                arguments,
                &["path", "old_string", "new_string", "replace_all"],
                &["path", "old_string", "new_string"],
            )?;
            let old = str_arg(obj, "old_string")?;
            let new = str_arg(obj, "new_string")?;
            let replace_all = match obj.get("replace_all") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("argument `replace_all` must be a boolean".to_owned()),
            };
            if old.is_empty() {
                return Err("`old_string` must not be empty".to_owned());
            }
            let path = ctx
                .workspace
                .resolve(str_arg(obj, "path")?)
                .map_err(|e| e.to_string())?;
            if path.relative.starts_with(".paddock/memory") {
                return Err(".paddock/memory/ is read-only".to_owned());
            }
            let text = read_text(&path.host).await?;
            let count = text.matches(old).count();
            if count == 0 {
                return Err("`old_string` does not occur in the file".to_owned());
            }
            if count > 1 && !replace_all {
                return Err(format!(
                    "`old_string` occurs {count} times; make it unique or set replace_all"
                ));
            }
            let updated = if replace_all {
                text.replace(old, new)
            } else {
                text.replacen(old, new, 1)
            };
            write_atomically(&ctx.workspace, &path.host, updated.as_bytes()).await?;
            give_to_owner(ctx, &path.relative)?;
            Ok::<_, String>(json!({"path": path.relative, "replacements": count}))
        };
        match run.await {
            Ok(v) => ToolOutput::ok(v),
            Err(e) => ToolOutput::error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspace;

    fn ctx() -> (tempfile::TempDir, ToolContext) {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ToolContext {
            workspace: Workspace::new(dir.path().to_path_buf()),
            run: None,
            exec: None,
        };
        (dir, ctx)
    }

    #[tokio::test]
    async fn write_read_edit_round_trip() {
        let (_d, ctx) = ctx();
        let w = WriteFile
            .call(
                &ctx,
                &json!({"path": "a/b.txt", "content": "one\ntwo\nthree"}),
            )
            .await;
        assert!(!w.is_error, "{w:?}");
        assert_eq!(w.result["created"], json!(true));
        let r = ReadFile
            .call(&ctx, &json!({"path": "a/b.txt", "offset": 2, "limit": 1}))
            .await;
        assert_eq!(r.result["content"], json!("two"));
        assert_eq!(r.result["total_lines"], json!(3));
        let e = EditFile
            .call(
                &ctx,
                &json!({"path": "a/b.txt", "old_string": "two", "new_string": "2"}),
            )
            .await;
        assert!(!e.is_error, "{e:?}");
        let r = ReadFile.call(&ctx, &json!({"path": "a/b.txt"})).await;
        assert_eq!(r.result["content"], json!("one\n2\nthree"));
    }

    #[tokio::test]
    async fn refuses_escapes_and_bad_arguments() {
        let (_d, ctx) = ctx();
        for args in [
            json!({"path": "../x", "content": ""}),
            json!({"path": "/etc/passwd", "content": ""}),
            json!({"path": "x", "content": "", "mode": 7}),
            json!({"path": "x"}),
            json!("not an object"),
        ] {
            let out = WriteFile.call(&ctx, &args).await;
            assert!(out.is_error, "{args} should be refused");
        }
        let e = EditFile
            .call(
                &ctx,
                &json!({"path": "missing", "old_string": "a", "new_string": "b"}),
            )
            .await;
        assert!(e.is_error);
    }

    #[tokio::test]
    async fn edit_requires_unique_match_unless_replace_all() {
        let (_d, ctx) = ctx();
        WriteFile
            .call(&ctx, &json!({"path": "f", "content": "x x"}))
            .await;
        let e = EditFile
            .call(
                &ctx,
                &json!({"path": "f", "old_string": "x", "new_string": "y"}),
            )
            .await;
        assert!(e.is_error);
        let e = EditFile
            .call(
                &ctx,
                &json!({"path": "f", "old_string": "x", "new_string": "y", "replace_all": true}),
            )
            .await;
        assert_eq!(e.result["replacements"], json!(2));
    }
}
