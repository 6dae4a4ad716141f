//! `shell`: runs a bash command in the deployment's sandbox (spec §13.1).

use std::time::Duration;

use paddock_protocol::DeploymentConfig;
use paddock_sandbox::{Command, CommandOutput};
use serde_json::{Map, Value, json};

use super::{Tool, ToolContext, ToolOutput, check_args};

/// The model-facing name.
pub const SHELL: &str = "shell";

/// Server-wide bounds of the `shell` tool, from `[sandbox]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellSettings {
    /// Timeout of a command that names none, and the largest `timeout_s` accepted (a larger
    /// one is lowered to it). Default 300 s (spec §13.1).
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr; the rest is counted and dropped.
    pub output_cap: usize,
}

impl Default for ShellSettings {
    fn default() -> Self {
        Self {
            timeout: paddock_sandbox::DEFAULT_TIMEOUT,
            output_cap: paddock_sandbox::DEFAULT_OUTPUT_CAP,
        }
    }
}

/// Runs `bash -c <command>` in `/workspace` through the runtime's [`paddock_sandbox::Sandbox`].
///
/// A sandbox that cannot run the command (backend broken, `network: internet` unavailable,
/// workspace gone) gives an error result with `"error": "sandbox_error"`, and the run loop
/// then ends the run with `error.code = "sandbox_error"` (spec §3.2; see
/// [`sandbox_failure`]); nothing ever runs outside the sandbox.
pub struct Shell;

/// The message of a result that says the sandbox could not run a command, if `output` is one:
/// such a run cannot go on (spec §3.2).
pub(crate) fn sandbox_failure(output: &ToolOutput) -> Option<String> {
    if !output.is_error
        || output.result.get("error").and_then(Value::as_str) != Some("sandbox_error")
    {
        return None;
    }
    Some(
        output
            .result
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("The sandbox could not run the command.")
            .to_owned(),
    )
}

#[async_trait::async_trait]
impl Tool for Shell {
    fn name(&self) -> &'static str {
        SHELL
    }

    fn description(&self) -> &'static str {
        "Run a bash command in the sandbox. The working directory is /workspace (the \
         deployment's files); nothing outside it persists and there is no network unless the \
         deployment allows it. Returns {\"exit_code\", \"stdout\", \"stderr\"}; a command that \
         runs past its timeout (default 300 s, `timeout_s` to change it, capped by the server) \
         or hits a memory/process limit is killed and the result says so. Example: \
         {\"command\": \"ls -la && python3 analyse.py data.csv\", \"timeout_s\": 60}"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {
                    "type": "string",
                    "description": "The bash script to run, e.g. `grep -rn TODO src | head -20`."
                },
                "timeout_s": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Seconds before the command is killed (default 300, capped by the server)."
                }
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    fn available(&self, config: &DeploymentConfig) -> bool {
        config.sandbox.enabled
    }

    fn observes_cancel(&self) -> bool {
        true
    }

    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        let Some(exec) = &ctx.exec else {
            return ToolOutput::error("the shell is not available here");
        };
        let (script, timeout) = match parse(arguments, exec.shell.timeout) {
            Ok(v) => v,
            Err(message) => return ToolOutput::error(message),
        };
        let command = Command::new(script)
            .with_timeout(timeout)
            .with_output_cap(exec.shell.output_cap)
            .with_cancel(exec.cancel.clone());
        match exec.sandbox.run(&exec.sandbox_spec, command).await {
            Ok(out) => render(&out, timeout),
            Err(e) => {
                tracing::warn!(deployment_id = %exec.sandbox_spec.deployment_id, error = %e, "shell: the sandbox could not run the command");
                ToolOutput {
                    result: json!({
                        "error": "sandbox_error",
                        "message": format!("The sandbox could not run the command: {e}"),
                    }),
                    is_error: true,
                }
            }
        }
    }
}

/// The script and the effective timeout, or a message for the model.
fn parse(arguments: &Value, max: Duration) -> Result<(String, Duration), String> {
    let obj: &Map<String, Value> = check_args(arguments, &["command", "timeout_s"], &["command"])?;
    let script = obj
        .get("command")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| "argument `command` must be a non-empty string".to_owned())?;
    if script.len() > paddock_sandbox::MAX_SCRIPT_BYTES {
        return Err(format!(
            "argument `command` is longer than {} bytes; write a script file with write_file and run it",
            paddock_sandbox::MAX_SCRIPT_BYTES
        ));
    }
    let timeout = match obj.get("timeout_s") {
        None | Some(Value::Null) => max,
        Some(v) => {
            let secs = v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| "argument `timeout_s` must be a positive integer".to_owned())?;
            Duration::from_secs(secs).min(max)
        }
    };
    Ok((script.to_owned(), timeout))
}

/// The result the model sees. A command that ran is never a tool error by its exit status
/// alone (the model reads `exit_code`); being killed (timeout, limits) is.
fn render(out: &CommandOutput, timeout: Duration) -> ToolOutput {
    let mut result = json!({
        "exit_code": out.exit_code,
        "stdout": out.stdout.text_lossy(),
        "stderr": out.stderr.text_lossy(),
    });
    if let Value::Object(m) = &mut result {
        if out.stdout.truncated {
            m.insert("stdout_total_bytes".into(), json!(out.stdout.total_bytes));
        }
        if out.stderr.truncated {
            m.insert("stderr_total_bytes".into(), json!(out.stderr.total_bytes));
        }
        if out.timed_out {
            m.insert("timed_out".into(), json!(true));
            m.insert("timeout_s".into(), json!(timeout.as_secs()));
        }
        if let Some(reason) = out.killed_reason {
            m.insert("killed".into(), json!(reason.as_str()));
            m.insert("error".into(), json!(reason.to_string()));
        }
    }
    ToolOutput {
        result,
        is_error: out.killed_reason.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_and_the_timeout_capped() {
        let max = Duration::from_secs(300);
        assert_eq!(
            parse(&json!({"command": "ls"}), max).unwrap(),
            ("ls".to_owned(), max)
        );
        assert_eq!(
            parse(&json!({"command": "ls", "timeout_s": 5}), max)
                .unwrap()
                .1,
            Duration::from_secs(5)
        );
        assert_eq!(
            parse(&json!({"command": "ls", "timeout_s": 100000}), max)
                .unwrap()
                .1,
            max
        );
        for bad in [
            json!({}),
            json!({"command": ""}),
            json!({"command": 3}),
            json!({"command": "ls", "timeout_s": 0}),
            json!({"command": "ls", "timeout_s": "5"}),
            json!({"command": "ls", "cwd": "/"}),
            json!("ls"),
        ] {
            assert!(parse(&bad, max).is_err(), "{bad}");
        }
    }
}
