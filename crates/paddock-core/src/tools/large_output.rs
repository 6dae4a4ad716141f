//! The large-output rule of spec §13.1: a tool result over the threshold (32 KiB by default)
//! is saved in full to `.paddock/outputs/<run_id>/<call_id>.txt` in the workspace, and the
//! model gets the first part (16 KiB by default) plus a note naming that file. Applies to
//! every tool, built-in or MCP; the runner calls [`apply`] where it records a result.

use serde_json::{Value, json};

use super::ToolOutput;
use crate::workspace::Workspace;

/// Thresholds of the rule, from `[tools]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeOutputSettings {
    /// A result whose text is longer than this many bytes is saved to a file.
    pub threshold_bytes: usize,
    /// How many bytes of such a result the model still gets inline.
    pub preview_bytes: usize,
}

impl Default for LargeOutputSettings {
    fn default() -> Self {
        Self {
            threshold_bytes: 32 * 1024,
            preview_bytes: 16 * 1024,
        }
    }
}

/// A result after the rule: what the model sees, and where the full text went if it was cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub output: ToolOutput,
    /// The workspace-relative path of the full result, when it was cut.
    pub output_path: Option<String>,
}

/// The text a result is sent to the model as: a JSON string as is, anything else as JSON.
pub fn result_text(result: &Value) -> String {
    match result {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Applies the rule to `output` of call `call_id` in run `run_id`. Writing the file can fail
/// (a full disk, a workspace the sandbox filled with a file where the directory should be):
/// the model then still gets the preview, with a note that the rest was dropped.
pub fn apply(
    workspace: &Workspace,
    settings: LargeOutputSettings,
    run_id: &str,
    call_id: &str,
    output: ToolOutput,
) -> Limited {
    let text = result_text(&output.result);
    if text.len() <= settings.threshold_bytes {
        return Limited {
            output,
            output_path: None,
        };
    }
    let preview =
        prefix_at_char_boundary(&text, settings.preview_bytes.min(settings.threshold_bytes));
    let path = format!(
        ".paddock/outputs/{}/{}.txt",
        file_safe(run_id),
        file_safe(call_id)
    );
    let (note, output_path) = match workspace.write(&path, text.as_bytes()) {
        Ok(_) => (
            format!(
                "[output truncated: {} bytes in total; the first {} bytes are above. The full output is in the workspace at {path}; read parts of it with read_file (offset/limit) or shell (e.g. `grep`, `tail`).]",
                text.len(),
                preview.len()
            ),
            Some(path),
        ),
        Err(e) => {
            tracing::warn!(run_id, call_id, error = %e, "could not save a large tool result");
            (
                format!(
                    "[output truncated: {} bytes in total; the first {} bytes are above. The rest could not be saved: {e}]",
                    text.len(),
                    preview.len()
                ),
                None,
            )
        }
    };
    Limited {
        output: ToolOutput {
            result: json!(format!("{preview}\n{note}")),
            is_error: output.is_error,
        },
        output_path,
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix_at_char_boundary(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Ids come from the model for tool calls; keep only characters that are safe in a file name.
fn file_safe(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LargeOutputSettings {
        LargeOutputSettings {
            threshold_bytes: 100,
            preview_bytes: 40,
        }
    }

    #[test]
    fn small_results_pass_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().to_path_buf());
        let out = ToolOutput::ok(json!({"stdout": "hi"}));
        let limited = apply(&ws, settings(), "run_1", "call_1", out.clone());
        assert_eq!(limited.output, out);
        assert_eq!(limited.output_path, None);
    }

    #[test]
    fn large_results_are_saved_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().to_path_buf());
        let big = "é".repeat(300);
        let out = ToolOutput::ok(json!({ "stdout": big }));
        let full = result_text(&out.result);
        let limited = apply(&ws, settings(), "run_1", "call/../x", out);
        let path = limited.output_path.unwrap();
        assert_eq!(path, ".paddock/outputs/run_1/call____x.txt");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&path)).unwrap(),
            full
        );
        let shown = limited.output.result.as_str().unwrap();
        assert!(shown.starts_with(&full[..39]));
        assert!(shown.contains(&path));
        assert!(!limited.output.is_error);
    }
}
