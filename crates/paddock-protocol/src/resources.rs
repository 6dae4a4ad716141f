//! Resource objects as the API returns them (spec §3–§16).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"data": [...], "next_cursor": ...}`: one page of a paginated list (spec §1.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An account: the tenant every key and resource belongs to (spec §16.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub account_id: String,
    pub name: String,
    /// `null` is unlimited; otherwise credits with at most 6 decimals.
    pub balance: Option<f64>,
    pub created_at: String,
}

/// An API key as listed; `key` is present only in the create response (spec §16.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub prefix: String,
    pub name: String,
    pub account_id: String,
    pub scopes: Vec<String>,
    pub status: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// Where a deployment's tools run (spec §3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub enabled: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub persistent_filesystem: bool,
    pub image: Option<String>,
    pub cpus: f64,
    pub memory_mb: u32,
    pub network: String,
}

/// Feature flags (spec §3.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Features {
    pub memory: bool,
    pub dreaming: bool,
    pub automations: bool,
    pub steering: bool,
    pub filesystem_webhooks: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            memory: true,
            dreaming: false,
            automations: true,
            steering: true,
            filesystem_webhooks: false,
        }
    }
}

/// One MCP server entry (spec §14.1). `headers` hold templates, never secret values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct McpServer {
    pub name: String,
    pub url: String,
    pub tools: Option<Vec<String>>,
    pub headers: BTreeMap<String, String>,
}

/// A skill as summarised on the deployment object (spec §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillSummary {
    pub skill_id: String,
    pub name: String,
    pub source: String,
    pub description: String,
}

/// `{"code", "message"}` on a deployment or run in `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// `filesystem` on the deployment object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FilesystemInfo {
    pub workspace_path: String,
    pub persistent: bool,
}

/// `events` on the deployment object: where its SSE stream lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventsInfo {
    pub transport: String,
    pub url: String,
}

/// The configuration a deployment's runs use; stored as one document and snapshotted into each
/// run when it starts, so a later `PATCH` never changes a run in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentConfig {
    pub model: String,
    pub system_prompt: String,
    pub sandbox: Sandbox,
    pub features: Features,
    pub mcp_servers: Vec<McpServer>,
    pub skills: Vec<SkillSummary>,
    pub secrets: BTreeMap<String, String>,
    pub tool_policies: BTreeMap<String, String>,
    /// Tools disabled through `PATCH …/tools/:name` (spec §13.2), by model-facing name. Empty
    /// in the deployment's own document (the settings live in their own table); filled in when
    /// a run starts, so the run keeps the set it started with (spec §18 guarantee 34).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub disabled_tools: BTreeSet<String>,
}

/// The full deployment object (spec §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub deployment_id: String,
    pub customer_id: String,
    pub name: String,
    pub runtime: String,
    pub status: String,
    pub error: Option<ErrorInfo>,
    pub model: String,
    pub system_prompt: String,
    pub thread_id: String,
    pub sandbox: Sandbox,
    pub features: Features,
    pub mcp_servers: Vec<McpServer>,
    pub skills: Vec<SkillSummary>,
    pub secrets: BTreeMap<String, String>,
    pub tool_policies: BTreeMap<String, String>,
    pub filesystem: FilesystemInfo,
    pub events: EventsInfo,
    pub created_at: String,
    pub updated_at: String,
}

/// A deployment as listed (spec §3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentSummary {
    pub deployment_id: String,
    pub customer_id: String,
    pub name: String,
    pub runtime: String,
    pub status: String,
    pub model: String,
    pub created_at: String,
}

/// The answer to `DELETE /v1/deployments/:dep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentDeleted {
    pub deployment_id: String,
    pub status: String,
    pub snapshot: Option<SnapshotInfo>,
}

/// Where a retained workspace archive will expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub expires_at: String,
}

/// An attachment on a message (spec §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

/// The 202 answer to a sent message (spec §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageAccepted {
    pub run_id: String,
    pub deployment_id: String,
    pub thread_id: String,
    pub message_id: String,
    pub status: String,
}

/// A message in a thread's history (spec §8.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub message_id: String,
    pub role: String,
    pub content: String,
    pub run_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub automation_id: Option<String>,
    pub created_at: String,
}

/// A thread (spec §8.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Thread {
    pub thread_id: String,
    pub deployment_id: String,
    pub title: Option<String>,
    pub status: String,
    pub is_default: bool,
    pub automation_id: Option<String>,
    pub message_count: i64,
    pub created_at: String,
    pub last_activity_at: String,
}

/// A thread with a page of its history (spec §8.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThreadWithMessages {
    #[serde(flatten)]
    pub thread: Thread,
    pub messages: Vec<Message>,
    pub has_more_messages: bool,
}

/// Token and credit use of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub credits: f64,
}

/// A pending steering request (spec §6.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SteeringRequest {
    pub request_id: String,
    pub kind: String,
    pub summary: String,
    pub tool: Option<String>,
    pub origin: Option<String>,
    pub arguments: Option<serde_json::Value>,
    pub call_id: String,
    pub created_at: String,
}

/// A run (spec §5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub run_id: String,
    pub deployment_id: String,
    pub thread_id: Option<String>,
    pub status: String,
    pub trigger: String,
    pub automation_id: Option<String>,
    pub model: String,
    pub steering_request: Option<SteeringRequest>,
    pub error: Option<ErrorInfo>,
    pub warnings: Vec<serde_json::Value>,
    pub usage: RunUsage,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

/// `{"<id field>": "...", "status": "deleted"}` and similar acknowledgements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusAck {
    pub status: String,
}

/// Run statuses (spec §5.1).
pub mod run_status {
    pub const RUNNING: &str = "running";
    pub const WAITING: &str = "waiting_on_human";
    pub const COMPLETED: &str = "completed";
    pub const ERROR: &str = "error";
    pub const ALL: [&str; 4] = [RUNNING, WAITING, COMPLETED, ERROR];
}

/// Run triggers (spec §5.1).
pub mod run_trigger {
    pub const ALL: [&str; 4] = ["message", "schedule", "manual", "dreaming"];
}

/// Scopes (spec §1.3).
pub mod scope {
    pub const DEPLOYMENTS_READ: &str = "deployments:read";
    pub const DEPLOYMENTS_WRITE: &str = "deployments:write";
    pub const SECRETS_WRITE: &str = "secrets:write";
    pub const ADMIN: &str = "admin";
    pub const ALL: [&str; 4] = [DEPLOYMENTS_READ, DEPLOYMENTS_WRITE, SECRETS_WRITE, ADMIN];
}

/// A secret as the API shows it (spec §15.1): never its value. `used_by` is in lists only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    #[schema(example = "sec_4hT8qL")]
    pub secret_id: String,
    pub name: Option<String>,
    pub customer_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// How many deployments reference the secret (lists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<i64>,
}
