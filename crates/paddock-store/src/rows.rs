//! What the store reads and writes: domain records, independent of SQL.

use paddock_protocol::{
    Attachment, DeploymentConfig, ErrorInfo, EventType, RunUsage, SteeringRequest,
};
use serde_json::Value;

/// An account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    pub balance_micros: Option<i64>,
    pub created_at: i64,
}

/// An API key (its hash, never its text).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A deployment with its configuration document.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub id: String,
    pub account_id: String,
    pub customer_id: String,
    pub name: String,
    pub runtime: String,
    pub status: String,
    pub error: Option<ErrorInfo>,
    pub default_thread_id: String,
    pub config: DeploymentConfig,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters for listing deployments.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub customer_id: Option<String>,
    pub status: Option<String>,
}

/// A thread, with its derived status and message count.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub id: String,
    pub deployment_id: String,
    pub title: Option<String>,
    pub is_default: bool,
    pub automation_id: Option<String>,
    /// `idle`, or the status of the thread's active run.
    pub status: String,
    pub message_count: i64,
    pub created_at: i64,
    pub last_activity_at: i64,
}

/// A message of a thread's history.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: String,
    pub deployment_id: String,
    pub thread_id: String,
    pub role: String,
    pub content: String,
    pub run_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub automation_id: Option<String>,
    pub created_at: i64,
}

/// A run, with the configuration it started with.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub deployment_id: String,
    pub thread_id: Option<String>,
    pub status: String,
    pub trigger: String,
    pub automation_id: Option<String>,
    pub model: String,
    pub config: DeploymentConfig,
    pub steering_request: Option<SteeringRequest>,
    pub error: Option<ErrorInfo>,
    pub warnings: Vec<Value>,
    pub usage: RunUsage,
    /// Model calls made so far.
    pub step: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub thread_id: Option<String>,
    pub status: Option<String>,
    pub automation_id: Option<String>,
    pub trigger: Option<String>,
}

/// An event to append; the store assigns its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventType,
    pub thread_id: Option<String>,
    pub run_id: Option<String>,
    pub data: Value,
}

/// Which thread a message goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadTarget {
    Default,
    New,
    Id(String),
}

/// Everything needed to accept a message (spec §4.2) in one transaction.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub deployment_id: String,
    pub target: ThreadTarget,
    pub message_id: String,
    pub content: String,
    pub attachments: Vec<Attachment>,
    /// Used only if a new run starts.
    pub new_run_id: String,
    /// The thread id used if `target` is `New`.
    pub new_thread_id: String,
    /// Active (`running`) runs allowed per deployment before a new run is refused.
    pub max_active_runs: u32,
    pub now: i64,
}

/// What accepting a message did.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOutcome {
    pub run: RunRecord,
    pub thread_id: String,
    pub message_id: String,
    /// `true` when the message started a new run, `false` when it joined an active one.
    pub started_run: bool,
    pub events: Vec<paddock_protocol::StoredEvent>,
}

/// A tool call the model asked for, before it executes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToolCall {
    pub id: String,
    pub tool: String,
    pub origin: String,
    pub arguments: Value,
}

/// A recorded tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRecord {
    pub id: String,
    pub run_id: String,
    pub step: i64,
    pub tool: String,
    pub origin: String,
    pub arguments: Value,
    /// `pending`, `started` or `done`.
    pub state: String,
    pub result: Option<Value>,
    pub is_error: bool,
}

/// One model response to record before any of its tool calls runs.
#[derive(Debug, Clone)]
pub struct ModelResponse {
    pub run_id: String,
    pub step: i64,
    /// The canonical assistant item (JSON of `paddock_model::Item`).
    pub item: Value,
    /// The `agent` message to add to the history, when the response had text.
    pub agent_message: Option<(String, String)>,
    pub tool_calls: Vec<NewToolCall>,
    pub usage: RunUsage,
    pub events: Vec<NewEvent>,
    pub now: i64,
}

/// What the next model call of a run sees.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub run: RunRecord,
    /// The conversation so far (canonical items as JSON), oldest first.
    pub items: Vec<Value>,
    /// Tool calls of the latest response that have no result yet (resume after a crash).
    pub unfinished_calls: Vec<ToolCallRecord>,
}

/// The outcome of beginning an idempotent request (spec §1.10).
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyBegin {
    /// First use: run the request, then call `idempotency_finish` or `idempotency_abort`.
    Fresh,
    /// Stored answer of an earlier identical request.
    Replay { status: u16, body: Vec<u8> },
    /// Different request under the same key, or the first is still running.
    Conflict,
}
