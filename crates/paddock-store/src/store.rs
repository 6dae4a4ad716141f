//! The storage interface every other crate programs against.

use paddock_protocol::{ErrorInfo, RunUsage, StoredEvent};
use serde_json::Value;

use crate::{
    AccountRecord, AnswerOutcome, AttachmentOutcome, ClaimedRun, CompactionOutcome,
    CompactionRecord, CreditHold, DeploymentFilter, DeploymentRecord, DreamingRules,
    DreamingStarted, IdempotencyBegin, KeyRecord, Lease, MessageRecord, ModelResponse,
    NewCompaction, NewEvent, OverdueRequest, PageRequest, PauseRun, PendingAttachments, RunFilter,
    RunRecord, SecretRecord, SendMessage, SendOutcome, StartDreaming, SteeringAnswer, StepContext,
    StoreError, ThreadRecord, ToolCallRecord,
};
use crate::{AutomationRecord, FireAutomation, FiringResult};
use crate::{MemoryFilter, MemoryRecord, SkillRecord};

/// A page of records plus the cursor of the next page.
pub type Paged<T> = (Vec<T>, Option<String>);

/// Paddock's persistence. Every method is one atomic operation; methods that change state
/// also append the events that report the change in the same transaction, and return them as
/// stored (with their sequence numbers) so the caller can publish them to live subscribers.
///
/// Lookups scoped by account return `NotFound` for another account's rows, exactly as for
/// missing ones.
///
/// Runs are executed by workers that claim them with a lease ([`Store::claim_runnable_runs`]);
/// the methods that record a run's progress take the worker's [`Lease`] and refuse with
/// `LeaseLost` when another node holds the run, and with `RunFinished` when the run is no
/// longer `running`. Nothing here assumes one process: a PostgreSQL implementation claims with
/// `FOR UPDATE SKIP LOCKED` behind the same signatures.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- accounts and keys ----

    /// On an empty database, creates the `default` account and returns it; otherwise `None`.
    async fn bootstrap_default_account(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<Option<AccountRecord>, StoreError>;
    async fn create_account(&self, account: &AccountRecord) -> Result<(), StoreError>;
    async fn get_account(&self, account_id: &str) -> Result<AccountRecord, StoreError>;
    async fn get_account_by_name(&self, name: &str) -> Result<AccountRecord, StoreError>;
    async fn list_accounts(&self, page: &PageRequest) -> Result<Paged<AccountRecord>, StoreError>;
    /// Adds `delta` micro-credits, or sets the balance when `set` is `Some`.
    async fn update_balance(
        &self,
        account_id: &str,
        change: BalanceChange,
    ) -> Result<AccountRecord, StoreError>;
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError>;
    async fn get_key(&self, key_id: &str) -> Result<KeyRecord, StoreError>;
    async fn list_keys(
        &self,
        account_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Paged<KeyRecord>, StoreError>;
    /// Revokes a key; refuses to revoke the server's last active admin key.
    async fn revoke_key(&self, key_id: &str, now: i64) -> Result<KeyRecord, StoreError>;
    async fn touch_key(&self, key_id: &str, now: i64) -> Result<(), StoreError>;

    // ---- deployments ----

    /// Stores a deployment and its default thread (titled `Default`).
    async fn create_deployment(&self, deployment: &DeploymentRecord) -> Result<(), StoreError>;
    async fn get_deployment(
        &self,
        account_id: &str,
        deployment_id: &str,
    ) -> Result<DeploymentRecord, StoreError>;
    async fn list_deployments(
        &self,
        account_id: &str,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Paged<DeploymentRecord>, StoreError>;
    /// Replaces the client-editable fields (name, config, updated_at); never the status.
    async fn update_deployment(&self, deployment: &DeploymentRecord) -> Result<(), StoreError>;
    /// Sets the lifecycle fields (status, error, updated_at), leaving the configuration alone.
    async fn set_deployment_status(&self, deployment: &DeploymentRecord) -> Result<(), StoreError>;
    /// How many deployments there are in each status (for metrics).
    async fn count_deployments_by_status(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Deployments in `provisioning`, for finishing provisioning after a restart.
    async fn provisioning_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError>;
    /// Deletes a deployment and everything under it. Returns the runs that were active.
    async fn delete_deployment(
        &self,
        account_id: &str,
        deployment_id: &str,
    ) -> Result<Vec<String>, StoreError>;

    // ---- threads and messages ----

    async fn create_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
        title: Option<&str>,
        now: i64,
    ) -> Result<ThreadRecord, StoreError>;
    async fn get_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
    ) -> Result<ThreadRecord, StoreError>;
    async fn list_threads(
        &self,
        deployment_id: &str,
        page: &PageRequest,
    ) -> Result<Paged<ThreadRecord>, StoreError>;
    async fn set_thread_title(
        &self,
        deployment_id: &str,
        thread_id: &str,
        title: Option<&str>,
    ) -> Result<ThreadRecord, StoreError>;
    /// Deletes a thread; refuses the default thread and a thread with an active run.
    async fn delete_thread(&self, deployment_id: &str, thread_id: &str) -> Result<(), StoreError>;
    /// The newest `limit` messages older than `before` (a message id), oldest first, and
    /// whether older ones exist.
    async fn thread_messages(
        &self,
        thread_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<(Vec<MessageRecord>, bool), StoreError>;
    /// Accepts a message (spec §4.2): stores it and either joins the thread's active run or
    /// starts a new one, with its `message` and `run_status` events.
    async fn send_message(&self, send: SendMessage) -> Result<SendOutcome, StoreError>;

    // ---- runs ----

    async fn get_run(&self, deployment_id: &str, run_id: &str) -> Result<RunRecord, StoreError>;
    async fn list_runs(
        &self,
        deployment_id: &str,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Paged<RunRecord>, StoreError>;
    /// The run's queued user messages (oldest first) whose attachments do not all have a final
    /// outcome yet (spec §4.3).
    async fn pending_attachments(
        &self,
        lease: &Lease,
    ) -> Result<Vec<PendingAttachments>, StoreError>;
    /// Replaces the attachment outcomes of a queued message of the leased run. `NotFound` if the
    /// message is not a queued message of that run.
    async fn set_attachment_outcomes(
        &self,
        lease: &Lease,
        message_id: &str,
        outcomes: &[AttachmentOutcome],
    ) -> Result<(), StoreError>;
    /// Begins a model call: moves the run's queued input into the conversation, counts the
    /// step, and returns what the model should see. Queued messages move in arrival order and
    /// stop at the first whose attachments lack a final outcome (it waits for the next step);
    /// a moved message's user item carries `attachments`: each attachment's `type` and `url`
    /// with its outcome's fields. `RunFinished` if the run is not `running`;
    /// `InsufficientCredits` (changing nothing) if its account's balance is ≤ 0 (spec §16.1).
    /// A step whose model response was never recorded (a restart during the call) keeps its
    /// number, so the redone call has the same `step` (spec §5.4).
    async fn begin_step(&self, lease: &Lease, now: i64) -> Result<StepContext, StoreError>;
    /// Before a model call of a run whose account has a limited balance: holds part of the
    /// balance so that concurrent runs cannot together spend more than it (the balance ends
    /// below zero by less than one call's cost). `up_to` is the most the run's usage can be
    /// once the call is charged (its charged usage plus the most the call can cost); the run
    /// holds what that adds to its charged usage. `InsufficientCredits` if the balance is ≤ 0;
    /// [`CreditHold::Wait`] (and the run holds nothing) if the holds of the account's other
    /// running runs cover the balance; `Held` otherwise, or at once for an unlimited balance.
    /// A hold ends when its call is charged (`record_model_response`, `charge_usage`,
    /// `record_compaction`), the run stops being `running`, or it is claimed or released.
    async fn hold_credits(&self, lease: &Lease, up_to: f64) -> Result<CreditHold, StoreError>;
    /// Charges a model call whose record comes later (a summarisation call of a compaction
    /// still in progress): stores `usage`, the run's usage with the call, as the run's, takes
    /// what it adds off the balance, and ends the call's credit hold. No event.
    async fn charge_usage(
        &self,
        lease: &Lease,
        usage: RunUsage,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The run's context without changing anything: conversation, the latest response's
    /// unfinished tool calls, its steering requests.
    async fn step_context(&self, run_id: &str) -> Result<StepContext, StoreError>;
    /// Records a model response and its tool calls (as pending) with its events.
    async fn record_model_response(
        &self,
        lease: &Lease,
        response: ModelResponse,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Marks a tool call as started. `RunFinished` if the run is no longer `running` (so the
    /// call must not run): a cancel answered before this commits is never followed by a start.
    async fn start_tool_call(&self, lease: &Lease, call_id: &str) -> Result<(), StoreError>;
    /// Records a tool call's result, its conversation item and its events.
    async fn finish_tool_call(
        &self,
        lease: &Lease,
        call_id: &str,
        outcome: ToolCallOutcome,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Appends events of a running run; `RunFinished` if it is no longer `running`.
    async fn append_run_events(
        &self,
        lease: &Lease,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Completes a run unless it holds input the model has not seen; `Ok(None)` then.
    async fn complete_run(
        &self,
        lease: &Lease,
        usage: RunUsage,
        now: i64,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError>;
    /// Ends a run in `error` (unless it already ended), whichever node holds it: resolves
    /// unfinished tool calls with `unfinished_result` (their `tool_result` events), closes a
    /// pending steering request with decision `cancelled` (`steering_resolved`), then appends
    /// the terminal `run_status`. Releases the lease.
    async fn fail_run(
        &self,
        run_id: &str,
        error: ErrorInfo,
        unfinished_result: Value,
        now: i64,
    ) -> Result<FailOutcome, StoreError>;
    async fn tool_calls(&self, run_id: &str) -> Result<Vec<ToolCallRecord>, StoreError>;
    /// The summary in use for the run's conversation (its thread's newest, or the thread-less
    /// run's own), if the conversation was ever compacted.
    async fn latest_compaction(&self, run_id: &str)
    -> Result<Option<CompactionRecord>, StoreError>;
    /// Stores a summary of the run's conversation, sets the run's usage to `usage` and debits
    /// the account what that adds (as `record_model_response` does), appends the events, and
    /// says whether the account still has credits. The conversation itself is not touched.
    async fn record_compaction(
        &self,
        lease: &Lease,
        compaction: NewCompaction,
    ) -> Result<CompactionOutcome, StoreError>;

    // ---- workers and leases ----

    /// Claims up to `limit` runnable runs for node `node_id`, oldest first, leasing each until
    /// `lease_until`: runs in `running` that no node holds (new, answered, released) or whose
    /// lease expired before `now` (its node died). Concurrent claimers never get the same run.
    async fn claim_runnable_runs(
        &self,
        node_id: &str,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedRun>, StoreError>;
    /// The heartbeat: extends every lease `node_id` holds on a `running` run to `lease_until`
    /// and returns those runs' ids. A run missing from the answer is no longer this node's.
    async fn renew_leases(
        &self,
        node_id: &str,
        lease_until: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Releases every lease `node_id` holds, so any node may claim those runs at once: at a
    /// graceful stop, and at start (the leases of an earlier, dead process of this node).
    /// Returns how many were released.
    async fn release_leases(&self, node_id: &str) -> Result<u64, StoreError>;

    // ---- steering ----

    /// Pauses a running run on a steering request (spec §6): the run becomes
    /// `waiting_on_human` with the request pending, its lease is released, the events appended.
    async fn pause_run(
        &self,
        lease: &Lease,
        pause: PauseRun,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Answers a waiting run's pending request through the steering endpoint (spec §6.4): on
    /// success the run is `running` again without a lease (claimable), with the answer's
    /// `message` (if any), `steering_resolved` and `run_status` `running`/`answered` events.
    async fn answer_steering(&self, answer: SteeringAnswer) -> Result<AnswerOutcome, StoreError>;
    /// Pending steering requests created at or before `cutoff` (now minus the steering
    /// timeout), oldest first.
    async fn overdue_steering(
        &self,
        cutoff: i64,
        limit: u32,
    ) -> Result<Vec<OverdueRequest>, StoreError>;
    /// Ends a run whose pending request `request_id` was created at or before `cutoff` (spec
    /// §6.5): its unfinished calls closed with `{"error": "steering_timeout"}`,
    /// `steering_resolved` with decision `timeout`, `run_status` `error`/`steering_timeout`.
    /// `None` (nothing changed) if the request is no longer pending or not yet due.
    async fn expire_steering(
        &self,
        run_id: &str,
        request_id: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError>;

    // ---- events ----

    /// Appends events not tied to a run's lifecycle (or tied to a run that may have ended).
    async fn append_events(
        &self,
        deployment_id: &str,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Retained events with a sequence number above `after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        deployment_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The oldest retained sequence number (if any) and the last one handed out.
    async fn event_bounds(&self, deployment_id: &str) -> Result<(Option<i64>, i64), StoreError>;
    /// Drops events created before `before`; returns how many.
    async fn prune_events(&self, before: i64) -> Result<u64, StoreError>;

    // ---- idempotency ----

    async fn idempotency_begin(
        &self,
        account_id: &str,
        key: &str,
        fingerprint: &IdempotencyFingerprint,
        now: i64,
    ) -> Result<IdempotencyBegin, StoreError>;
    async fn idempotency_finish(
        &self,
        account_id: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError>;
    async fn idempotency_abort(&self, account_id: &str, key: &str) -> Result<(), StoreError>;
    async fn prune_idempotency(&self, before: i64) -> Result<u64, StoreError>;

    // ---- secrets (spec §15) ----

    /// Stores a secret (its value already sealed); `Conflict` when its name is taken in the
    /// account.
    async fn create_secret(&self, secret: &SecretRecord) -> Result<(), StoreError>;
    /// The account's secret `secret_id`, with its sealed value (`used_by` is 0).
    async fn get_secret(
        &self,
        account_id: &str,
        secret_id: &str,
    ) -> Result<SecretRecord, StoreError>;
    /// The account's secrets, newest first, optionally only those bound to `customer_id`,
    /// each with `used_by` (the number of deployments referencing it).
    async fn list_secrets(
        &self,
        account_id: &str,
        customer_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Paged<SecretRecord>, StoreError>;
    /// Deletes the account's secret; `Conflict` (naming one deployment) while a deployment
    /// references it.
    async fn delete_secret(&self, account_id: &str, secret_id: &str) -> Result<(), StoreError>;
    /// A deployment by id alone, for the runtime (which acts for no caller).
    async fn deployment_by_id(&self, deployment_id: &str) -> Result<DeploymentRecord, StoreError>;
    /// Appends `warning` to a running run's `warnings` (e.g. an unreachable MCP server).
    async fn add_run_warning(&self, lease: &Lease, warning: Value) -> Result<(), StoreError>;

    // ---- memories (spec §10) ----

    /// Stores a new memory; `LimitReached` when the deployment already has `max` memories.
    async fn create_memory(&self, memory: &MemoryRecord, max: u32) -> Result<(), StoreError>;
    async fn get_memory(
        &self,
        deployment_id: &str,
        memory_id: &str,
    ) -> Result<MemoryRecord, StoreError>;
    /// One page of the deployment's memories, newest first.
    async fn list_memories(
        &self,
        deployment_id: &str,
        filter: &MemoryFilter,
        page: &PageRequest,
    ) -> Result<Paged<MemoryRecord>, StoreError>;
    /// Replaces a memory's content (its `source` and `run_id` never change).
    async fn update_memory(
        &self,
        deployment_id: &str,
        memory_id: &str,
        content: &str,
        now: i64,
    ) -> Result<MemoryRecord, StoreError>;
    /// Deletes a memory for good.
    async fn delete_memory(&self, deployment_id: &str, memory_id: &str) -> Result<(), StoreError>;
    /// Every memory of the deployment, newest first (context assembly, the file mirror).
    async fn all_memories(&self, deployment_id: &str) -> Result<Vec<MemoryRecord>, StoreError>;
    /// The deployment's memories matching the FTS5 query `fts_query` (see
    /// [`fts_any_terms`](crate::fts_any_terms)), most relevant first, at most `limit`.
    async fn search_memories(
        &self,
        deployment_id: &str,
        fts_query: &str,
        limit: u32,
    ) -> Result<Vec<MemoryRecord>, StoreError>;

    // ---- dreaming (spec §3.4) ----

    /// Deployments that look due a dreaming pass at `now` under `rules`, oldest first, at most
    /// `limit`: `ready`, `features.dreaming` and `features.memory` on, at least one memory the
    /// agent saved, no active run, idle for `rules.idle_secs`, a non-dreaming run finished
    /// since the last pass, the last pass older than `rules.interval_secs`. A hint only:
    /// [`Store::start_dreaming`] decides.
    async fn dreaming_candidates(
        &self,
        rules: DreamingRules,
        now: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// In one transaction: if the deployment is still due a pass (the conditions of
    /// [`Store::dreaming_candidates`], and its account has credits), records the pass as its
    /// latest (claimed only if the record still holds what this transaction read, so two
    /// callers racing start one pass), creates the run (`trigger: "dreaming"`, no thread,
    /// `start.input` as its first conversation item) and appends its `run_status`
    /// `running`/`started`. `None` when it is not due, changing nothing.
    async fn start_dreaming(
        &self,
        start: StartDreaming,
    ) -> Result<Option<DreamingStarted>, StoreError>;

    // ---- tool settings (spec §13.2) ----

    /// The deployment's explicit tool settings: model-facing name → enabled. A tool that is
    /// not in the map has never been changed and is enabled.
    async fn tool_settings(
        &self,
        deployment_id: &str,
    ) -> Result<std::collections::BTreeMap<String, bool>, StoreError>;

    /// Records whether the tool `name` is enabled for the deployment. Runs already started
    /// keep the set they started with.
    async fn set_tool_enabled(
        &self,
        deployment_id: &str,
        name: &str,
        enabled: bool,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Replaces the deployment's last MCP discovery (spec §13.2): a JSON object, server name →
    /// the tools it listed. Kept until the next discovery or the deployment's deletion.
    async fn set_mcp_discovery(
        &self,
        deployment_id: &str,
        servers: &Value,
        now: i64,
    ) -> Result<(), StoreError>;

    /// The deployment's last MCP discovery, if there has been one.
    async fn mcp_discovery(&self, deployment_id: &str) -> Result<Option<Value>, StoreError>;

    // ---- skills (spec §12) ----

    /// Adds a skill; `Conflict` when its name is taken in the deployment or it has `max`
    /// skills. Keeps the deployment's `skills` summaries in step.
    async fn create_skill(&self, skill: &SkillRecord, max: u32) -> Result<(), StoreError>;
    async fn get_skill(
        &self,
        deployment_id: &str,
        skill_id: &str,
    ) -> Result<SkillRecord, StoreError>;
    /// One page of the deployment's skills, newest first.
    async fn list_skills(
        &self,
        deployment_id: &str,
        page: &PageRequest,
    ) -> Result<Paged<SkillRecord>, StoreError>;
    /// Every skill of the deployment, oldest first (run start, deployment views).
    async fn all_skills(&self, deployment_id: &str) -> Result<Vec<SkillRecord>, StoreError>;
    /// Replaces a skill whole (same id); `Conflict` when the new name is another's.
    async fn replace_skill(&self, skill: &SkillRecord) -> Result<(), StoreError>;
    async fn delete_skill(&self, deployment_id: &str, skill_id: &str) -> Result<(), StoreError>;
    /// Replaces the deployment's skills with `skills` (a deployment create or `PATCH`): rows
    /// whose id is not in `skills` are removed. One transaction.
    async fn replace_deployment_skills(
        &self,
        deployment_id: &str,
        skills: &[SkillRecord],
    ) -> Result<(), StoreError>;
    /// Records (or clears) why a `file` skill failed to load, and its description when read.
    async fn set_skill_load(
        &self,
        deployment_id: &str,
        skill_id: &str,
        description: Option<&str>,
        error: Option<&paddock_protocol::ErrorInfo>,
    ) -> Result<(), StoreError>;

    // ---- automations (spec §9) ----

    /// Stores a new automation; `LimitReached` when the deployment already has `max`. With
    /// `new_thread` it also creates its thread (`automation.thread_id`, titled with the name,
    /// its `automation_id` set); otherwise `NotFound("thread")` unless the thread is one of
    /// the deployment's. One transaction.
    async fn create_automation(
        &self,
        automation: &AutomationRecord,
        new_thread: bool,
        max: u32,
    ) -> Result<(), StoreError>;
    async fn get_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<AutomationRecord, StoreError>;
    /// One page of the deployment's automations, newest first.
    async fn list_automations(
        &self,
        deployment_id: &str,
        page: &PageRequest,
    ) -> Result<Paged<AutomationRecord>, StoreError>;
    /// Replaces the editable fields (name, schedule, schedule text, instructions, thread,
    /// enabled, `updated_at`) and, with `reschedule`, `next_run_at`; disabling drops a held
    /// firing. Without `reschedule` the stored `next_run_at` is kept as it is, so a change
    /// racing a scheduler's claim never writes back a time already claimed.
    /// `NotFound("thread")` when the thread is not one of the deployment's.
    async fn update_automation(
        &self,
        automation: &AutomationRecord,
        reschedule: bool,
    ) -> Result<AutomationRecord, StoreError>;
    /// Deletes an automation; its thread, runs and messages stay.
    async fn delete_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<(), StoreError>;
    /// Enabled automations whose `next_run_at` is at or before `now`, earliest first.
    async fn due_automations(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<AutomationRecord>, StoreError>;
    /// Automations holding a deferred firing, oldest first.
    async fn deferred_automations(&self, limit: u32) -> Result<Vec<AutomationRecord>, StoreError>;
    /// One firing (a scheduled time, the held one, or the trigger endpoint) in one
    /// transaction; see [`FiringKind`](crate::FiringKind). A scheduled time is claimed only
    /// if `next_run_at` still holds the value the caller read, so it fires at most once
    /// whoever asks. A started run's instructions are a `user` message with `automation_id`,
    /// with the `message` and `run_status` events of any new run.
    async fn fire_automation(&self, firing: FireAutomation) -> Result<FiringResult, StoreError>;

    // ---- several nodes ----

    /// Whether other processes write this store too (PostgreSQL): state that must agree
    /// across nodes, such as request-rate buckets, then lives in the store.
    fn is_shared(&self) -> bool;

    /// Takes one request token from `key_id`'s bucket, which holds at most `burst` tokens and
    /// refills at `rate` per second, at time `now_ms` (Unix milliseconds). `None`: taken;
    /// `Some(ms)`: empty, the next token comes in about `ms` milliseconds.
    async fn take_request_token(
        &self,
        key_id: &str,
        rate: f64,
        burst: u32,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// This database's identity, made from `new_id` on the first call, and whether a node has
    /// already written it into the shared directory (workspaces, snapshots).
    async fn cluster_identity(&self, new_id: &str, now: i64) -> Result<(String, bool), StoreError>;

    /// Records that the identity was written into the shared directory.
    async fn set_cluster_marker_written(&self) -> Result<(), StoreError>;

    /// A feed of the deployments whose events any node committed, for a store that several
    /// nodes write to (PostgreSQL's `LISTEN`); `None` when this process is the only writer
    /// (SQLite). A notice can be missed or repeated: it only says where to look.
    async fn event_notices(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<EventNotice>>, StoreError>;

    // ---- health ----

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// One message of [`Store::event_notices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventNotice {
    /// Events of this deployment were committed, up to `last_seq` when known.
    Committed {
        deployment_id: String,
        last_seq: Option<i64>,
    },
    /// The feed was interrupted (its connection dropped and was remade): notices may have been
    /// lost, so every deployment of interest should be looked at.
    Resync,
}

/// How to change an account's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceChange {
    /// Add micro-credits (may be negative); refused on an unlimited account.
    Add(i64),
    /// Set the balance; `None` makes it unlimited.
    Set(Option<i64>),
}

/// The method, path and canonical body hash an idempotency key was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyFingerprint {
    pub method: String,
    pub path: String,
    pub body_hash: String,
}

/// A finished tool call as the store records it: the result the model sees, the conversation
/// item carrying it, and the events reporting it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallOutcome {
    pub result: Value,
    pub is_error: bool,
    pub item: Value,
    pub events: Vec<NewEvent>,
    pub now: i64,
}

/// The result of failing (or cancelling) a run.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOutcome {
    /// The run ended now; these events were appended.
    Ended(RunRecord, Vec<StoredEvent>),
    /// The run had already ended.
    AlreadyEnded(RunRecord),
}
