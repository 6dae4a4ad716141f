//! `read_file`, `write_file` and `edit_file`: the workspace file tools (spec §13.1).

use std::io::Read;

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, check_args};
use crate::workspace::{FsError, Workspace, WriteOutcome, normalise};

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

/// The tool-facing wording of a workspace error.
fn fs_message(error: FsError) -> String {
    match error {
        FsError::NotFound => "file not found".to_owned(),
        other => other.to_string(),
    }
}

/// Reads the UTF-8 text file at `path` through descriptors opened beneath the workspace root
/// (`Workspace::read`): no symbolic link, however it changes meanwhile, leads the read outside.
/// Returns the normalised path and the text.
async fn read_text(workspace: &Workspace, path: &str) -> Result<(String, String), String> {
    let workspace = workspace.clone();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let (relative, file, info) = workspace.read(&path).map_err(fs_message)?;
        if info.size > MAX_FILE_BYTES {
            return Err(format!("file is larger than {MAX_FILE_BYTES} bytes"));
        }
        let mut bytes = Vec::new();
        // The size was checked on the open file; `take` bounds a file that grows meanwhile.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("file is larger than {MAX_FILE_BYTES} bytes"));
        }
        let text = String::from_utf8(bytes).map_err(|_| "file is not UTF-8 text".to_owned())?;
        Ok((relative, text))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Creates or replaces the file at `path` (`Workspace::write`): staged and renamed into place,
/// so a crash mid-write (even `kill -9`) leaves the old content or the new, never a part, and a
/// tool call either took effect or did not (spec §5.4); every directory on the way is opened
/// beneath the root, and the file is given to the sandbox's uid.
async fn write_text(
    workspace: &Workspace,
    path: &str,
    content: Vec<u8>,
) -> Result<WriteOutcome, String> {
    let workspace = workspace.clone();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || workspace.write(&path, &content).map_err(fs_message))
        .await
        .map_err(|e| e.to_string())?
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
            let offset = opt_positive(obj, "offset")?.unwrap_or(1);
            let limit = opt_positive(obj, "limit")?;
            let (relative, text) = read_text(&ctx.workspace, str_arg(obj, "path")?).await?;
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
                "path": relative, "content": content, "total_lines": total,
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
            let relative = normalise(str_arg(obj, "path")?).map_err(|e| e.to_string())?;
            if relative.is_empty() {
                return Err("path must name a file".to_owned());
            }
            if relative.starts_with(".paddock/memory") {
                return Err(".paddock/memory/ is read-only".to_owned());
            }
            let written =
                write_text(&ctx.workspace, &relative, content.as_bytes().to_vec()).await?;
            Ok::<_, String>(json!({
                "path": written.relative, "bytes_written": content.len(), "created": written.created,
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
            let relative = normalise(str_arg(obj, "path")?).map_err(|e| e.to_string())?;
            if relative.starts_with(".paddock/memory") {
                return Err(".paddock/memory/ is read-only".to_owned());
            }
            let (relative, text) = read_text(&ctx.workspace, &relative).await?;
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
            write_text(&ctx.workspace, &relative, updated.into_bytes()).await?;
            Ok::<_, String>(json!({"path": relative, "replacements": count}))
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

    /// A symbolic link leading outside is never followed by any of the three tools: reads,
    /// edits and writes through it are refused and the outside file is untouched. A write to a
    /// link that stays inside replaces the link, as the Files API does.
    #[tokio::test]
    async fn links_leading_outside_are_never_followed() {
        let (dir, ctx) = ctx();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.txt");
        std::fs::write(&secret, "outside secret").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();

        let r = ReadFile.call(&ctx, &json!({"path": "link.txt"})).await;
        assert!(r.is_error, "{r:?}");
        let r = ReadFile
            .call(&ctx, &json!({"path": "out/secret.txt"}))
            .await;
        assert!(r.is_error, "{r:?}");
        let e = EditFile
            .call(
                &ctx,
                &json!({"path": "link.txt", "old_string": "outside", "new_string": "inside"}),
            )
            .await;
        assert!(e.is_error, "{e:?}");
        let w = WriteFile
            .call(&ctx, &json!({"path": "out/new.txt", "content": "x"}))
            .await;
        assert!(w.is_error, "{w:?}");
        let w = WriteFile
            .call(&ctx, &json!({"path": "link.txt", "content": "replaced"}))
            .await;
        assert!(w.is_error, "{w:?}");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "outside secret");
        assert!(!outside.path().join("new.txt").exists());

        std::fs::write(dir.path().join("real.txt"), "real").unwrap();
        std::os::unix::fs::symlink("real.txt", dir.path().join("inside.txt")).unwrap();
        let r = ReadFile.call(&ctx, &json!({"path": "inside.txt"})).await;
        assert_eq!(r.result["content"], json!("real"), "{r:?}");
        let w = WriteFile
            .call(&ctx, &json!({"path": "inside.txt", "content": "new"}))
            .await;
        assert!(!w.is_error, "{w:?}");
        let link = std::fs::symlink_metadata(dir.path().join("inside.txt")).unwrap();
        assert!(link.is_file(), "the link itself was replaced by a file");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("real.txt")).unwrap(),
            "real"
        );
    }

    /// A FIFO left in the workspace (by a command) is refused at once, not waited on.
    #[tokio::test]
    async fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let (dir, ctx) = ctx();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join("pipe"))
            .status()
            .unwrap();
        assert!(made.success());
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            ReadFile.call(&ctx, &json!({"path": "pipe"})),
        )
        .await
        .expect("read_file waited on the FIFO");
        assert!(read.is_error, "{read:?}");
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
