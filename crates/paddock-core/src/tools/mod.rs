//! Built-in tools and the interface every tool implements.
//!
//! A tool gets its arguments as the model sent them and answers with a JSON result and an
//! error flag; a failing tool never fails the run, the model sees the error and decides.

mod approval;
mod files;

use paddock_model::ToolSpec;
use paddock_protocol::DeploymentConfig;
use serde_json::{Map, Value, json};

use crate::workspace::Workspace;

pub use approval::{REQUEST_APPROVAL, RequestApproval};
pub use files::{EditFile, ReadFile, WriteFile};

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
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub workspace: Workspace,
}

/// A tool the model can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The model-facing name.
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
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
        Box::new(ReadFile),
        Box::new(WriteFile),
        Box::new(EditFile),
        Box::new(RequestApproval),
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
