//! Assembling the system prompt a run's model calls see.
//!
//! The deployment's own prompt comes first and verbatim; Paddock adds one short, stable section
//! about the workspace and tools, so the prefix stays identical across calls (cache-friendly).

use paddock_protocol::DeploymentConfig;

/// The system prompt for a run of a deployment with `config`, listing no skills.
pub fn system_prompt(config: &DeploymentConfig, tool_names: &[String]) -> String {
    system_prompt_with_skills(config, tool_names, &[])
}

/// The fixed part of every model request of a deployment with `config` that has no skills:
/// the system prompt and the built-in tool definitions, as a run sends them (diagnostics:
/// `paddock prompt-size`).
pub fn fixed_prompt(config: &DeploymentConfig) -> (String, Vec<paddock_model::ToolSpec>) {
    let tools: Vec<paddock_model::ToolSpec> = crate::tools::builtin_tools()
        .iter()
        .filter(|t| t.available(config))
        .map(|t| t.spec())
        .collect();
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    (system_prompt(config, &names), tools)
}

/// The system prompt for a run of a deployment with `config` whose skills are `skills`
/// (spec §12: name, description and path only; the model reads the file when it needs it).
pub(crate) fn system_prompt_with_skills(
    config: &DeploymentConfig,
    tool_names: &[String],
    skills: &[crate::run_context::PromptSkill],
) -> String {
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
    if tool_names.iter().any(|t| t == crate::memory::MEMORY) {
        // Spec §10: what is worth keeping across conversations, and what is not.
        s.push_str(
            " Memory: when the user states a lasting preference, corrects you, or tells you a \
             convention or a fact about their work, save it with the memory tool as one short, \
             self-contained fact (update the memory that says it already instead of adding a \
             near-copy). Do not save one-off requests, what only matters in this \
             conversation, guesses, or secrets such as passwords and keys.",
        );
    }
    s.push('\n');
    if !skills.is_empty() {
        s.push_str(
            "\n## Skills\nPlaybooks for kinds of work. When a task matches one, first read its \
             file with read_file and follow it.\n",
        );
        for k in skills {
            s.push_str(&format!("- {}: {} ({})\n", k.name, k.description, k.path));
        }
    }
    s
}
