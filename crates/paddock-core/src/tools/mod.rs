//! Built-in tools and the interface every tool implements.
//!
//! A tool gets its arguments as the model sent them and answers with a JSON result and an
//! error flag; a failing tool never fails the run, the model sees the error and decides.

mod approval;
mod files;
pub mod large_output;
pub(crate) mod shell;

use std::sync::Arc;

use paddock_model::ToolSpec;
use paddock_protocol::DeploymentConfig;
use paddock_sandbox::{CancellationToken, DeploymentSandbox, Sandbox};
use serde_json::{Map, Value, json};

use crate::workspace::Workspace;

pub use approval::{REQUEST_APPROVAL, RequestApproval};
pub use files::{EditFile, ReadFile, WriteFile};
pub use large_output::LargeOutputSettings;
pub use shell::{SHELL, Shell, ShellSettings};

/// Whether a tool call runs at once or waits for a person (spec §6.1, `tool_policies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    AlwaysAllow,
    AlwaysAsk,
}

impl Policy {
    /// Parses a `tool_policies` value (`always_allow`, `always_ask`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always_allow" => Some(Policy::AlwaysAllow),
            "always_ask" => Some(Policy::AlwaysAsk),
            _ => None,
        }
    }
}

/// What a tool call produced: the result the model sees and whether it is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub result: Value,
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(result: Value) -> Self {
        Self {
            result,
            is_error: false,
        }
    }

    /// An error result `{"error": message}`.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            result: json!({ "error": message.into() }),
            is_error: true,
        }
    }
}

/// What a tool may touch while it runs for one deployment.
#[derive(Clone)]
pub struct ToolContext {
    pub workspace: Workspace,
    /// The run the call belongs to, for tools that act on the deployment's records (the
    /// `memory` tool); `None` outside a run (unit tests).
    pub run: Option<RunScope>,
    /// Where commands run (`shell`); `None` outside a run (unit tests).
    pub exec: Option<ExecScope>,
}

/// What `shell` needs: the sandbox, the deployment's sandbox settings and how to stop.
#[derive(Clone)]
pub struct ExecScope {
    /// The server's backend. Never bypassed: there is no fallback to the host.
    pub sandbox: Arc<dyn Sandbox>,
    /// The deployment's sandbox: its workspace, limits and network, from the run's config.
    pub sandbox_spec: DeploymentSandbox,
    /// Server-wide bounds of `shell`.
    pub shell: ShellSettings,
    /// Cancelled when the run is cancelled or deleted: a tool that
    /// [observes it](Tool::observes_cancel) stops (killing its processes) and returns.
    pub cancel: CancellationToken,
}

/// The run a tool call belongs to, and the store it may use.
#[derive(Clone)]
pub struct RunScope {
    pub store: std::sync::Arc<dyn paddock_store::Store>,
    pub deployment_id: String,
    pub run_id: String,
    /// The run's `trigger` (`message`, `schedule`, `manual`, `dreaming`, …).
    pub trigger: String,
    /// The clock and schedule minimum the `automations` tool applies, as the API does.
    pub automations: crate::automations::AutomationSettings,
}

/// A tool the model can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The model-facing name (spec §13.3).
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// Where the tool comes from, as events report it: `builtin`, or the MCP server's name.
    fn origin(&self) -> &str {
        "builtin"
    }
    /// The name events and tool-call records carry: the built-in's name, or the tool's name as
    /// its MCP server reports it (spec §13.3).
    fn bare_name(&self) -> &str {
        self.name()
    }
    /// JSON Schema of the arguments (an object schema with `additionalProperties: false`).
    fn parameters(&self) -> Value;
    /// Whether repeating the call after a crash is harmless (spec §5.4).
    fn safe_to_repeat(&self) -> bool {
        false
    }
    /// Whether the tool is offered to runs with this configuration (e.g. `request_approval`
    /// only with `features.steering`). An unavailable tool is left out of the model's tool
    /// list, and a call to it is refused.
    fn available(&self, _config: &DeploymentConfig) -> bool {
        true
    }
    /// Whether the tool stops by itself, promptly and cleaning up, when
    /// [`ExecScope::cancel`] is cancelled (`shell` kills its process tree and waits until it
    /// is gone). The runner awaits such a tool after a cancel instead of dropping it, so a
    /// cancelled run leaves no process behind.
    fn observes_cancel(&self) -> bool {
        false
    }
    /// The policy when `tool_policies` names none (spec §6.1): `always_allow` for built-ins.
    /// MCP tools override it: `always_ask` when their server annotates them
    /// `destructiveHint: true`.
    fn default_policy(&self) -> Policy {
        Policy::AlwaysAllow
    }
    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput;

    /// The definition sent to the model.
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            parameters: self.parameters(),
        }
    }
}

/// The built-in tools available in this build, in the order the model sees them.
pub fn builtin_tools() -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(Shell),
        Box::new(ReadFile),
        Box::new(WriteFile),
        Box::new(EditFile),
        Box::new(RequestApproval),
        Box::new(crate::memory::MemoryTool),
        Box::new(crate::automations::AutomationsTool),
    ]
}

/// Checks `arguments` is an object whose keys are all in `allowed`, and that every `required`
/// key is present. Returns the object, or an error message for the model.
pub(crate) fn check_args<'a>(
    arguments: &'a Value,
    allowed: &[&str],
    required: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let Some(obj) = arguments.as_object() else {
        return Err("arguments must be a JSON object".to_owned());
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown argument `{extra}`"));
    }
    if let Some(missing) = required.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("missing required argument `{missing}`"));
    }
    Ok(obj)
}
