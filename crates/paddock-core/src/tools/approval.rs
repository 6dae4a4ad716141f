//! `request_approval(summary)`: the model asks a person before acting (spec §6.1, §13.1).
//!
//! The tool is never executed like the others: the run loop turns its call into a steering
//! request of `kind: "approval"` and pauses; the answer becomes its result. It is offered only
//! while the run's `features.steering` is on.

use paddock_protocol::DeploymentConfig;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, check_args};

/// The tool's model-facing name.
pub const REQUEST_APPROVAL: &str = "request_approval";

/// Most characters of a `summary` (spec §13.1).
const MAX_SUMMARY_CHARS: usize = 1000;

/// The `request_approval` tool (see the module documentation).
pub struct RequestApproval;

impl RequestApproval {
    /// The summary of a call, or the error the model gets for bad arguments.
    pub fn summary(arguments: &Value) -> Result<String, String> {
        let obj = check_args(arguments, &["summary"], &["summary"])?;
        let summary = obj
            .get("summary")
            .and_then(Value::as_str)
            .ok_or_else(|| "argument `summary` must be a string".to_owned())?;
        let n = summary.chars().count();
        if n == 0 || n > MAX_SUMMARY_CHARS {
            return Err(format!(
                "argument `summary` must have 1 to {MAX_SUMMARY_CHARS} characters, got {n}"
            ));
        }
        Ok(summary.to_owned())
    }
}

#[async_trait::async_trait]
impl Tool for RequestApproval {
    fn name(&self) -> &'static str {
        REQUEST_APPROVAL
    }
    fn description(&self) -> &'static str {
        "Ask a person to approve what you are about to do, and wait for the answer. Call it before actions that are irreversible, external, public or cost money. `summary` says what you want to do and why. The result is the decision (`approve`, `reject` or `respond`) and the person's message, if any."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "summary": {
                    "type": "string", "minLength": 1, "maxLength": MAX_SUMMARY_CHARS,
                    "description": "What you are about to do and why, for the person deciding"
                }
            },
            "required": ["summary"],
            "additionalProperties": false
        })
    }
    fn available(&self, config: &DeploymentConfig) -> bool {
        config.features.steering
    }
    async fn call(&self, _ctx: &ToolContext, _arguments: &Value) -> ToolOutput {
        // The run loop answers these calls through steering; reaching this is a bug upstream.
        ToolOutput::error("request_approval is answered by a person, not executed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_one_to_a_thousand_characters() {
        assert_eq!(
            RequestApproval::summary(&json!({"summary": "Publish?"})).as_deref(),
            Ok("Publish?")
        );
        assert!(RequestApproval::summary(&json!({"summary": "é".repeat(1000)})).is_ok());
        for bad in [
            json!({"summary": ""}),
            json!({"summary": "x".repeat(1001)}),
            json!({"summary": 5}),
            json!({}),
            json!({"summary": "ok", "extra": 1}),
            json!("ok"),
        ] {
            assert!(RequestApproval::summary(&bad).is_err(), "{bad}");
        }
    }
}
