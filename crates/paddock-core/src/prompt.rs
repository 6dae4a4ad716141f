//! Assembling the system prompt a run's model calls see.
//!
//! The deployment's own prompt comes first and verbatim; Paddock adds one short, stable section
//! about the workspace and tools, so the prefix stays identical across calls (cache-friendly).

use paddock_protocol::DeploymentConfig;

/// The system prompt for a run of a deployment with `config`.
pub fn system_prompt(config: &DeploymentConfig, tool_names: &[String]) -> String {
    let mut s = String::with_capacity(config.system_prompt.len() + 512);
    s.push_str(&config.system_prompt);
    s.push_str("\n\n## Environment\n");
    s.push_str(
        "You have a persistent workspace (paths are relative to its root, e.g. `notes/plan.md`).",
    );
    if !tool_names.is_empty() {
        s.push_str(" Tools: ");
        s.push_str(&tool_names.join(", "));
        s.push_str(". Use a tool only when it helps; answer directly otherwise.");
    }
    if tool_names
        .iter()
        .any(|t| t == crate::tools::REQUEST_APPROVAL)
    {
        // Spec §6.1: the agent's own judgement is one of the two things that pause a run.
        s.push_str(
            " Before an action that is irreversible, external, public or costs money, call \
             request_approval with a short summary of it and follow the answer.",
        );
    }
    s.push('\n');
    s
}
