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
    /// How the message answers the thread's run if that run is `waiting_on_human` (spec
    /// §6.3a): the caller classifies the content, the store applies it only in that case.
    pub answer: Decision,
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
    /// `true` when the message answered the run's pending steering request (the run is
    /// `running` again and must be driven by a worker).
    pub answered: bool,
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

/// What fetching one attachment of a user message came to (spec §4.3), recorded on the message
/// so a resumed run never fetches it again once known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AttachmentOutcome {
    /// A fetch began (`attempts` times so far) and has no outcome yet: the process stopped
    /// during it.
    Fetching { attempts: u32 },
    /// Saved in the workspace at `path` (workspace-relative). `media_type` is what the bytes
    /// were recognised as (by their magic numbers), `None` when they matched no known format.
    Saved {
        path: String,
        media_type: Option<String>,
        bytes: u64,
    },
    /// Not fetched; `reason` says why, for the model.
    Failed { reason: String },
}

impl AttachmentOutcome {
    /// Whether this is a final outcome (not a fetch in progress).
    pub fn is_final(&self) -> bool {
        !matches!(self, AttachmentOutcome::Fetching { .. })
    }
}

/// A queued user message of a run whose attachments are not all fetched yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAttachments {
    pub message_id: String,
    pub attachments: Vec<Attachment>,
    /// Outcomes so far, in the order of `attachments` (possibly fewer).
    pub outcomes: Vec<AttachmentOutcome>,
}

/// What the next model call of a run sees.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub run: RunRecord,
    /// The conversation so far (canonical items as JSON), oldest first.
    pub items: Vec<Value>,
    /// Tool calls of the latest response that have no result yet (resume after a crash, a
    /// pause for a human, an answered request), oldest first.
    pub unfinished_calls: Vec<ToolCallRecord>,
    /// The run's steering requests, oldest first, with their decisions once resolved.
    pub steering: Vec<SteeringRecord>,
}

// ---- workers, leases and steering ----

/// A node's hold on a run: the worker of node `node_id` drives run `run_id`. The methods that
/// record a run's progress take it and refuse with [`StoreError::LeaseLost`] once another node
/// holds the run, so two nodes never both record progress for one run.
///
/// [`StoreError::LeaseLost`]: crate::StoreError::LeaseLost
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub run_id: String,
    pub node_id: String,
}

/// A run a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    pub run: RunRecord,
    /// `true` when some worker held the run before (it crashed, stopped or lost its lease), so
    /// the run continues from its checkpoint and reports `reason: "resumed"`. `false` for a new
    /// run and for one whose steering request was just answered.
    pub resumed: bool,
}

/// How a steering request was resolved (spec §6.3, §7.4 `steering_resolved`): answered
/// `approve`, `reject` or `respond`, or closed `cancelled` or `timeout`. (The protocol's
/// `SteeringDecision` is only the endpoint's `approve`/`reject` body field.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Respond,
    Cancelled,
    Timeout,
}

impl Decision {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Respond => "respond",
            Decision::Cancelled => "cancelled",
            Decision::Timeout => "timeout",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Decision::Approve,
            Decision::Reject,
            Decision::Respond,
            Decision::Cancelled,
            Decision::Timeout,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// A steering request as recorded: what was asked and, once resolved, the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SteeringRecord {
    pub request: SteeringRequest,
    pub run_id: String,
    pub created_at: i64,
    pub decision: Option<Decision>,
    /// The answer's text (the message, or the endpoint's `message`).
    pub message: Option<String>,
    pub resolved_at: Option<i64>,
}

/// Pausing a running run on a steering request (spec §6.2): the request (whose `call_id` is
/// the held call) and the `steering_request` and `run_status` events to append.
#[derive(Debug, Clone)]
pub struct PauseRun {
    pub request: SteeringRequest,
    pub events: Vec<NewEvent>,
    pub now: i64,
}

/// An answer through `POST …/runs/:run_id/steering` (spec §6.4).
#[derive(Debug, Clone)]
pub struct SteeringAnswer {
    pub deployment_id: String,
    pub run_id: String,
    pub request_id: String,
    /// `Approve` or `Reject`.
    pub decision: Decision,
    /// The optional message: stored in the thread as a `user` message with this id.
    pub message: Option<(String, String)>,
    pub now: i64,
}

/// What answering did.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerOutcome {
    /// The request is resolved and the run is `running` again; these events were appended.
    Resolved(RunRecord, Vec<paddock_protocol::StoredEvent>),
    /// The request already had this decision: nothing changed.
    Unchanged(RunRecord),
    /// The request was resolved with another decision.
    OtherDecision(RunRecord, Decision),
    /// The run is not `waiting_on_human` and `request_id` is none of its requests.
    NotWaiting(RunRecord),
    /// The run waits on another request.
    WrongRequest(RunRecord),
}

/// A steering request unanswered for longer than the steering timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueRequest {
    pub deployment_id: String,
    pub run_id: String,
    pub request_id: String,
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

// ---- context compaction ----

/// A stored summary of the oldest part of a conversation (spec §8: the history itself is never
/// changed). The newest one of a thread (or of a thread-less run) is the one in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionRecord {
    /// How many leading conversation items (in stored order) the summary replaces.
    pub items_summarised: usize,
    pub summary: String,
    /// The run that made it.
    pub run_id: String,
}

/// A summary to store for a run's conversation, with the run's usage including the calls that
/// made it (so the store can debit their cost) and the events reporting it.
#[derive(Debug, Clone)]
pub struct NewCompaction {
    pub items_summarised: usize,
    pub summary: String,
    /// Tokens of the summarisation calls alone.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The run's whole usage so far, summarisation included.
    pub usage: paddock_protocol::RunUsage,
    pub events: Vec<NewEvent>,
    pub now: i64,
}

/// What recording a compaction did.
#[derive(Debug, Clone)]
pub struct CompactionOutcome {
    pub events: Vec<paddock_protocol::StoredEvent>,
    /// Whether the account still has credits after the summary's cost was debited (always
    /// `true` for an unlimited account). `false`: the run must not make its model call.
    pub credits_left: bool,
}

/// What [`Store::hold_credits`](crate::Store::hold_credits) decided for a run's next model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditHold {
    /// The call may be made: the balance is unlimited, or this run now holds what the call can
    /// cost and the balance covers every hold of the account.
    Held,
    /// The balance is above zero but other runs' calls in flight hold all of it: the run must
    /// wait (holding nothing) and ask again, since those calls may cost less than they hold.
    Wait,
}

/// A secret (spec §15): its metadata and its value sealed with the server's master key. The
/// store never sees the value in clear.
#[derive(Clone, PartialEq)]
pub struct SecretRecord {
    pub id: String,
    pub account_id: String,
    pub name: Option<String>,
    /// Only deployments of this customer may reference the secret.
    pub customer_id: Option<String>,
    /// `nonce || ciphertext` (see `paddock_store::SecretBox`).
    pub ciphertext: Vec<u8>,
    pub created_at: i64,
    /// Deployments referencing the secret (filled by lists; 0 elsewhere).
    pub used_by: i64,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("name", &self.name)
            .field("customer_id", &self.customer_id)
            .field("created_at", &self.created_at)
            .field("used_by", &self.used_by)
            .finish_non_exhaustive()
    }
}

/// When a deployment is due a dreaming pass (spec §3.4), in seconds of the deciding clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DreamingRules {
    /// The deployment has had no active run for at least this long (its newest run finished
    /// at or before `now - idle_secs`).
    pub idle_secs: i64,
    /// The previous pass started more than this long ago (or there was none).
    pub interval_secs: i64,
}

/// A request to start a dreaming pass of one deployment, if it is still due.
#[derive(Clone)]
pub struct StartDreaming {
    pub deployment_id: String,
    /// The id the pass's run gets.
    pub run_id: String,
    pub rules: DreamingRules,
    /// The pass's instructions: the content of the run's first (user) conversation item.
    pub input: String,
    /// Narrows the deployment's configuration (as the run starts with it, tool settings
    /// included) to what a dreaming run may use; the run keeps the result.
    pub restrict: fn(&mut DeploymentConfig),
    pub now: i64,
}

impl std::fmt::Debug for StartDreaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartDreaming")
            .field("deployment_id", &self.deployment_id)
            .field("run_id", &self.run_id)
            .field("rules", &self.rules)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A dreaming pass that started: its run (`running`, unleased, so any worker claims it) and
/// the `run_status` `running`/`started` event appended with it.
#[derive(Debug, Clone)]
pub struct DreamingStarted {
    pub run: RunRecord,
    pub events: Vec<paddock_protocol::StoredEvent>,
}
