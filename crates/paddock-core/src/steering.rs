//! Steering (spec §6): which tool calls wait for a person, the requests they make, how a
//! message to a waiting thread is read as an answer, and what the model gets back.
//!
//! The state of a paused run lives in the store only (the pending request on the run, the held
//! call `pending` in `tool_calls`); no task waits for the answer. Answering makes the run
//! runnable again and a worker continues it from the held call.
//!
//! Subagents (§13.1) do not exist yet. When they do, a gated call made by a subagent must not
//! pause: it gets an error result saying the action needs approval (spec §6.1, guarantee 24),
//! which is what [`gate`] is to be asked with a `subagent` flag for.

use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::format_unix;
use paddock_protocol::{DeploymentConfig, SteeringRequest};
use paddock_store::{Decision, SteeringRecord, ToolCallRecord};
use serde_json::{Value, json};

use crate::tools::{Policy, REQUEST_APPROVAL, RequestApproval, Tool, ToolOutput};

/// The answers a message classifies as `approve` (spec §6.3a), after normalising.
const APPROVALS: [&str; 7] = ["yes", "y", "approve", "approved", "ok", "okay", "go ahead"];

/// How a message to a thread whose run is `waiting_on_human` answers it (spec §6.3a): the
/// content is trimmed, trailing `.` and `!` are removed, it is lowercased; exactly one of
/// `yes`, `y`, `approve`, `approved`, `ok`, `okay`, `go ahead` approves, anything else is a
/// `respond` carrying the message.
pub fn classify_answer(content: &str) -> Decision {
    let normalised = content.trim().trim_end_matches(['.', '!']).to_lowercase();
    if APPROVALS.contains(&normalised.as_str()) {
        Decision::Approve
    } else {
        Decision::Respond
    }
}

/// What happens to a tool call before it executes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Gate {
    /// Execute it now.
    Allow,
    /// Pause the run on this request; the call executes (or not) once it is answered.
    Ask(SteeringRequest),
    /// Do not execute it; the model gets this result (e.g. a `request_approval` with a bad
    /// summary).
    Refuse(ToolOutput),
}

/// The policy of a tool for a run (spec §6.1): `tool_policies` by model-facing name, else the
/// tool's default.
fn policy(config: &DeploymentConfig, name: &str, tool: &dyn Tool) -> Policy {
    config
        .tool_policies
        .get(name)
        .and_then(|p| Policy::parse(p))
        .unwrap_or_else(|| tool.default_policy())
}

/// Decides whether `call` (not yet answered) may run. `tool` is the available tool of that
/// name, `None` when the run has no such tool (the call is then refused when executed, and
/// never paused on). With `features.steering` off nothing pauses (guarantee 23).
pub(crate) fn gate(
    config: &DeploymentConfig,
    call: &ToolCallRecord,
    tool: Option<&dyn Tool>,
    now: i64,
) -> Gate {
    let Some(tool) = tool else {
        return Gate::Allow;
    };
    if !config.features.steering {
        return Gate::Allow;
    }
    if tool.name() == REQUEST_APPROVAL {
        return match RequestApproval::summary(&call.arguments) {
            Ok(summary) => Gate::Ask(SteeringRequest {
                request_id: new_id(prefix::STEERING),
                kind: "approval".to_owned(),
                summary,
                tool: None,
                origin: None,
                arguments: None,
                call_id: call.id.clone(),
                created_at: format_unix(now),
            }),
            Err(e) => Gate::Refuse(ToolOutput::error(e)),
        };
    }
    let name = model_facing_name(&call.tool, &call.origin);
    match policy(config, &name, tool) {
        Policy::AlwaysAllow => Gate::Allow,
        Policy::AlwaysAsk => Gate::Ask(SteeringRequest {
            request_id: new_id(prefix::STEERING),
            kind: "tool_call".to_owned(),
            summary: format!("Run tool {name}?"),
            tool: Some(call.tool.clone()),
            origin: Some(call.origin.clone()),
            arguments: Some(call.arguments.clone()),
            call_id: call.id.clone(),
            created_at: format_unix(now),
        }),
    }
}

/// The model-facing name of a tool (spec §13.3).
pub(crate) fn model_facing_name(tool: &str, origin: &str) -> String {
    if origin == "builtin" {
        tool.to_owned()
    } else {
        paddock_mcp::tool_name(origin, tool)
    }
}

/// What an answered request means for its held call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answered {
    /// Execute the held call (an approved `tool_call` request).
    Execute,
    /// Record this result instead of executing (a `request_approval` decision, or a rejected
    /// or redirected `tool_call`). `skip_rest`: the remaining calls of the response are
    /// skipped (spec §6.3).
    Result { output: ToolOutput, skip_rest: bool },
}

/// The effect of the resolved `record` on its held call (spec §6.3 table).
pub(crate) fn answered(record: &SteeringRecord) -> Option<Answered> {
    let decision = record.decision?;
    let message = record.message.as_deref().map_or(Value::Null, |m| json!(m));
    let d = decision.as_str();
    match (record.request.kind.as_str(), decision) {
        (_, Decision::Cancelled | Decision::Timeout) => None,
        ("approval", _) => Some(Answered::Result {
            output: ToolOutput::ok(json!({"decision": d, "message": message})),
            skip_rest: false,
        }),
        (_, Decision::Approve) => Some(Answered::Execute),
        (_, Decision::Reject | Decision::Respond) => Some(Answered::Result {
            output: ToolOutput::ok(json!({"executed": false, "decision": d, "message": message})),
            skip_rest: true,
        }),
    }
}

/// The result of a call skipped because an earlier call of its response was rejected.
pub(crate) fn skipped() -> ToolOutput {
    ToolOutput::ok(json!({"executed": false, "reason": "skipped_after_rejection"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified_as_the_spec_says() {
        for yes in [
            "yes",
            "Yes",
            " YES. ",
            "y",
            "approve",
            "Approved!",
            "ok",
            "OK!!",
            "okay.",
            "go ahead",
            "Go ahead.",
            "yes.!.",
        ] {
            assert_eq!(classify_answer(yes), Decision::Approve, "{yes:?}");
        }
        for other in [
            "yes please",
            "no",
            "go  ahead",
            "yes !",
            "sure",
            "",
            "approve?",
            "ok, but only 3",
        ] {
            assert_eq!(classify_answer(other), Decision::Respond, "{other:?}");
        }
    }
}
