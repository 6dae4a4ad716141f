//! `paddock prompt-size`: how many tokens the fixed part of every model request takes (the
//! system prompt Paddock builds, the built-in tool definitions, the memory block's framing),
//! counted with a real BPE tokenizer (`cl100k_base`). That part is sent on every model call of
//! every run, so it must stay small; it is also byte-identical across the turns of a thread, so
//! vendor prompt caches hit (tested in `paddock-server/tests/api/memories.rs`).
//!
//! The deployment measured has every feature on (so every built-in tool this build has is
//! offered), the sandbox enabled, no skills, no memories, no MCP servers, and the one-line
//! system prompt given with `--system-prompt`.

use std::process::ExitCode;

use clap::Args;
use paddock_protocol::{DeploymentConfig, Features, Sandbox};

/// The target from issue 6: the fixed part stays within this many tokens.
pub const TARGET_TOKENS: usize = 2_500;

/// `paddock prompt-size` flags.
#[derive(Debug, Args)]
pub struct PromptSizeArgs {
    /// The deployment's own system prompt (Paddock's part is added to it).
    #[arg(long, default_value = "You are a helpful assistant.")]
    pub system_prompt: String,
    /// Print the system prompt and tool definitions measured.
    #[arg(long)]
    pub show: bool,
    /// Fail (exit 1) when the total is over this many tokens.
    #[arg(long, default_value_t = TARGET_TOKENS)]
    pub max_tokens: usize,
}

/// The measured sizes, in `cl100k_base` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptSize {
    /// The deployment's own prompt.
    pub deployment_prompt: usize,
    /// The whole system prompt (the deployment's and Paddock's).
    pub system: usize,
    /// The tool definitions as JSON (name, description, parameters).
    pub tools: usize,
    /// The memory block's heading and closing line.
    pub memory_framing: usize,
    /// How many tools were offered.
    pub tool_count: usize,
}

impl PromptSize {
    /// The fixed part: system prompt, tool definitions and memory framing.
    pub fn total(&self) -> usize {
        self.system + self.tools + self.memory_framing
    }
}

/// A deployment configuration with every feature and the sandbox on.
pub fn everything_on(system_prompt: &str) -> DeploymentConfig {
    DeploymentConfig {
        model: "openai/gpt-4o".to_owned(),
        system_prompt: system_prompt.to_owned(),
        sandbox: Sandbox {
            enabled: true,
            kind: "bubblewrap".to_owned(),
            persistent_filesystem: true,
            image: None,
            cpus: 1.0,
            memory_mb: 2048,
            network: "internet".to_owned(),
        },
        features: Features {
            memory: true,
            dreaming: true,
            automations: true,
            steering: true,
            filesystem_webhooks: true,
        },
        mcp_servers: Vec::new(),
        skills: Vec::new(),
        secrets: Default::default(),
        tool_policies: Default::default(),
        disabled_tools: Default::default(),
    }
}

/// Measures the fixed part for `config`; also returns the texts measured.
pub fn measure(config: &DeploymentConfig) -> anyhow::Result<(PromptSize, String, String)> {
    let bpe = tiktoken_rs::cl100k_base()?;
    let count = |s: &str| bpe.encode_with_special_tokens(s).len();
    let (system, tools) = paddock_core::fixed_prompt(config);
    let tools_json = serde_json::to_string(&tools)?;
    let size = PromptSize {
        deployment_prompt: count(&config.system_prompt),
        system: count(&system),
        tools: count(&tools_json),
        memory_framing: count(&paddock_core::memory::block_framing()),
        tool_count: tools.len(),
    };
    Ok((size, system, tools_json))
}

/// Runs the subcommand.
pub fn run(args: PromptSizeArgs) -> anyhow::Result<ExitCode> {
    let config = everything_on(&args.system_prompt);
    let (size, system, tools) = measure(&config)?;
    if args.show {
        println!("--- system prompt ---\n{system}\n--- tools ---\n{tools}\n---");
    }
    println!("tokenizer           cl100k_base");
    println!("deployment prompt   {:>6}", size.deployment_prompt);
    println!(
        "system prompt       {:>6}  (Paddock's part: {})",
        size.system,
        size.system.saturating_sub(size.deployment_prompt)
    );
    println!(
        "tool definitions    {:>6}  ({} tools)",
        size.tools, size.tool_count
    );
    println!("memory framing      {:>6}", size.memory_framing);
    println!(
        "total fixed part    {:>6}  (target ≤ {})",
        size.total(),
        args.max_tokens
    );
    if size.total() > args.max_tokens {
        eprintln!(
            "error: the fixed part is {} tokens, over {}",
            size.total(),
            args.max_tokens
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_part_is_within_the_target() {
        let (size, system, tools) =
            measure(&everything_on("You are a helpful assistant.")).unwrap();
        assert!(size.tool_count >= 4, "{tools}");
        assert!(system.contains("memory tool"), "{system}");
        assert!(
            size.total() <= TARGET_TOKENS,
            "fixed part is {} tokens: {size:?}",
            size.total()
        );
    }
}
