//! The runtime: this node's worker, which claims runnable runs from the store with a lease and
//! drives them; the heartbeat that keeps the leases; cancel, answers and shutdown.
//!
//! Nothing starts a run directly. Accepting a message (or an answer) makes a run runnable in
//! the store and wakes the worker; the worker claims what is runnable (new runs, answered runs,
//! runs whose lease expired because their node died) up to its capacity and spawns one task per
//! run. A run waiting on a human has no task and no lease: its state is in the store only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_model::ProviderRegistry;
use paddock_protocol::time::now_unix;
use paddock_protocol::{DeploymentConfig, ErrorInfo};
use paddock_store::{
    AnswerOutcome, ClaimedRun, EventNotice, FailOutcome, RunRecord, SteeringAnswer, Store,
    StoreError,
};
use serde_json::json;
use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::EventBus;
use crate::runner::Signals;
use crate::tools::{Tool, builtin_tools};
use crate::workspace::Workspace;

/// Knobs of the run loop and the worker, from the server configuration.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Where deployments' workspaces live (`<data_dir>/workspaces`).
    pub workspaces_dir: PathBuf,
    /// Model calls allowed per run before it ends with `max_steps`.
    pub max_steps: i64,
    /// How long transient model failures are retried before `model_error`.
    pub model_retry_window: Duration,
    /// Upper bound on tokens per model response.
    pub max_output_tokens: Option<u32>,
    /// Window within which consecutive token deltas are merged into one event.
    pub token_coalesce: Duration,
    /// This node's id: the owner written on the leases it takes. Stable across restarts of the
    /// node, so a restart takes back its runs at once; unique among live nodes.
    pub node_id: String,
    /// How long a lease lasts without renewal. A node that dies keeps its runs this long
    /// before other nodes may take them over.
    pub lease_duration: Duration,
    /// How often the node renews its leases (well below `lease_duration`).
    pub heartbeat_interval: Duration,
    /// How often the worker looks for runnable runs when nothing woke it: runs made runnable on
    /// another node, leases that expired, steering requests past the timeout.
    pub claim_poll_interval: Duration,
    /// With a store several nodes write to: how often subscribed deployments are checked for
    /// events whose notification this node missed.
    pub event_poll_interval: Duration,
    /// Runs this node drives at once; more runnable runs wait in the store.
    pub max_concurrent_runs: usize,
    /// Steering requests unanswered this long end their run with `steering_timeout`; `None`
    /// (the default) waits forever (spec §6.5).
    pub steering_timeout: Option<Duration>,
    /// How long a graceful stop waits for runs to reach a checkpoint before abandoning them.
    pub park_timeout: Duration,
    /// Budget of the memory block put into each run's context, in estimated tokens (spec §10).
    pub memory_context_tokens: u64,
    /// MCP servers (spec §14.2): connecting and listing tools at a run start, and one call.
    pub mcp_connect_timeout: Duration,
    pub mcp_call_timeout: Duration,
    /// Which addresses MCP connections and attachment fetches may reach (spec §1.13).
    pub outbound: paddock_net::AddressPolicy,
    /// Opens the deployment's secrets for MCP headers and redaction; `None`: no secret can be
    /// read (runs of deployments with secrets get no MCP headers that use them).
    pub secret_box: Option<paddock_store::SecretBox>,
    /// Bounds of the `shell` tool (timeout cap, output cap).
    pub shell: crate::tools::ShellSettings,
    /// Cap on processes and threads of one deployment's sandboxed commands.
    pub sandbox_max_processes: u32,
    /// The large-output rule of spec §13.1.
    pub large_output: crate::tools::LargeOutputSettings,
    /// Limits of one attachment fetch (spec §4.3).
    pub attachments: crate::attachments::AttachmentSettings,
    /// The clock and schedule minimum of automations (spec §9), for the `automations` tool.
    pub automations: crate::automations::AutomationSettings,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            workspaces_dir: PathBuf::from("./paddock-data/workspaces"),
            max_steps: 200,
            model_retry_window: Duration::from_secs(600),
            max_output_tokens: None,
            token_coalesce: Duration::from_millis(100),
            node_id: "node_local".to_owned(),
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            claim_poll_interval: Duration::from_secs(1),
            event_poll_interval: Duration::from_secs(2),
            max_concurrent_runs: 256,
            steering_timeout: None,
            park_timeout: Duration::from_secs(10),
            memory_context_tokens: crate::memory::DEFAULT_CONTEXT_TOKENS,
            mcp_connect_timeout: Duration::from_secs(10),
            mcp_call_timeout: Duration::from_secs(120),
            outbound: paddock_net::AddressPolicy::default(),
            secret_box: None,
            shell: crate::tools::ShellSettings::default(),
            sandbox_max_processes: paddock_sandbox::DEFAULT_MAX_PROCESSES,
            large_output: crate::tools::LargeOutputSettings::default(),
            attachments: crate::attachments::AttachmentSettings::default(),
            automations: crate::automations::AutomationSettings::default(),
        }
    }
}

/// Why a cancel was refused.
#[derive(Debug, Error)]
pub enum CancelError {
    #[error("run not found")]
    NotFound,
    #[error("run already ended with status {0}")]
    Ended(String),
    #[error(transparent)]
    Store(StoreError),
}

/// Executes runs on this node. Shared (`Arc`) by the HTTP layer, the worker and the run tasks.
pub struct Runtime {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) models: Arc<ProviderRegistry>,
    pub(crate) bus: Arc<EventBus>,
    pub(crate) settings: RuntimeSettings,
    pub(crate) tools: Vec<Box<dyn Tool>>,
    /// Where `shell` commands run: the backend the server chose at start. Never bypassed.
    pub(crate) sandbox: Arc<dyn paddock_sandbox::Sandbox>,
    /// The runs this node's tasks are driving, with the signals that stop them.
    running: Mutex<HashMap<String, Signals>>,
    /// Each driven run's MCP tools and secret redactor (spec §14, §15.3), for its task only.
    run_tools: Mutex<HashMap<String, Arc<crate::mcp::RunTools>>>,
    /// Claims of runs whose previous task has not quite ended (it paused, then the answer came
    /// and the run was claimed again): started when that task ends.
    deferred: Mutex<HashMap<String, ClaimedRun>>,
    tasks: TaskTracker,
    /// The worker and heartbeat loops.
    loops: TaskTracker,
    /// Stops the loops.
    stop: CancellationToken,
    /// Wakes the worker: something became runnable, or a slot became free.
    wake: Notify,
    /// Wakes runs waiting for credits held by other calls ([`crate::credit_hold`]): a call
    /// of this node was charged, ending its hold.
    pub(crate) credits_charged: Notify,
    usage_observer: std::sync::OnceLock<UsageObserver>,
}

/// Sees the token counts of every model call: provider name, input tokens, output tokens.
pub type UsageObserver = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// How long a cancel waits for the run's task (and the processes of its tools) to end.
const TASK_END_WAIT: Duration = Duration::from_secs(20);

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Removes a run from the running map when its task ends (even by panic), starts a claim of
/// the same run that arrived meanwhile, and wakes the worker for the free slot.
struct Finished {
    rt: Arc<Runtime>,
    run_id: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let deferred = {
            let mut running = self.rt.running.lock().unwrap_or_else(|p| p.into_inner());
            running.remove(&self.run_id);
            self.rt
                .deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.run_id)
        };
        if let Some(claim) = deferred {
            self.rt.spawn(claim);
        }
        self.rt.wake();
    }
}

impl Runtime {
    /// A runtime whose `shell` commands run in `sandbox` (the backend the server chose).
    pub fn new(
        store: Arc<dyn Store>,
        models: Arc<ProviderRegistry>,
        settings: RuntimeSettings,
        sandbox: Arc<dyn paddock_sandbox::Sandbox>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            models,
            bus: Arc::new(EventBus::default()),
            settings,
            tools: builtin_tools(),
            sandbox,
            running: Mutex::new(HashMap::new()),
            run_tools: Mutex::new(HashMap::new()),
            deferred: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            loops: TaskTracker::new(),
            stop: CancellationToken::new(),
            wake: Notify::new(),
            credits_charged: Notify::new(),
            usage_observer: std::sync::OnceLock::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    pub fn models(&self) -> &Arc<ProviderRegistry> {
        &self.models
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// The redactor of a deployment's referenced secrets (spec §15.3), decrypted on the host:
    /// what the Files API applies to the file content it serves. Empty without secrets.
    pub async fn redactor(
        &self,
        account_id: &str,
        config: &DeploymentConfig,
    ) -> crate::redaction::Redactor {
        if config.secrets.is_empty() {
            return crate::redaction::Redactor::default();
        }
        let values = crate::mcp::secret_values(self, account_id, &config.secrets).await;
        crate::redaction::Redactor::new(values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The MCP tools of the deployment's last discovery (spec §13.2), after asking the servers
    /// again when `refresh` is set. Built-ins are not included; an unreachable server adds none.
    pub async fn mcp_tools(
        &self,
        deployment: &paddock_store::DeploymentRecord,
        refresh: bool,
    ) -> Result<Vec<crate::mcp::ListedMcpTool>, StoreError> {
        if refresh {
            crate::mcp::refresh(
                self,
                &deployment.account_id,
                &deployment.customer_id,
                &deployment.id,
                &deployment.config,
            )
            .await;
        }
        let discovery = self.store.mcp_discovery(&deployment.id).await?;
        Ok(crate::mcp::listed(&deployment.config, discovery.as_ref()))
    }

    /// The workspace of a deployment.
    pub fn workspace(&self, deployment_id: &str) -> Workspace {
        let root = self.settings.workspaces_dir.join(deployment_id);
        // The owner depends only on the deployment id (a per-deployment uid when Paddock is
        // root), so the default limits are as good as the deployment's own here.
        let owner = self
            .sandbox
            .workspace_owner(&paddock_sandbox::DeploymentSandbox::new(
                deployment_id,
                &root,
            ));
        Workspace::new(root).with_owner(owner)
    }

    /// The sandbox backend this server uses.
    pub fn sandbox(&self) -> &Arc<dyn paddock_sandbox::Sandbox> {
        &self.sandbox
    }

    /// The sandbox of a deployment with this configuration: its workspace, limits and
    /// network. An unknown `network` value (never stored: validation refuses it) means none.
    pub fn sandbox_spec(
        &self,
        deployment_id: &str,
        config: &DeploymentConfig,
    ) -> paddock_sandbox::DeploymentSandbox {
        let mut spec = paddock_sandbox::DeploymentSandbox::new(
            deployment_id,
            self.settings.workspaces_dir.join(deployment_id),
        );
        spec.cpus = config.sandbox.cpus;
        spec.memory_mb = config.sandbox.memory_mb;
        spec.network = config.sandbox.network.parse().unwrap_or_default();
        spec.max_processes = self.settings.sandbox_max_processes;
        spec
    }

    /// The built-in tools in the model's order (for the Tools API).
    pub fn builtin_tools(&self) -> impl Iterator<Item = &dyn Tool> {
        self.tools.iter().map(|t| t.as_ref())
    }

    /// The tools offered to a run with this configuration, in the model's order.
    pub(crate) fn tools_for<'a>(
        &'a self,
        config: &'a DeploymentConfig,
    ) -> impl Iterator<Item = &'a dyn Tool> + 'a {
        self.tools
            .iter()
            .map(|t| t.as_ref())
            // Spec §13.2: a disabled tool is left out like an unavailable one, and a call to
            // it is refused (the run's set was captured when it started).
            .filter(move |t| t.available(config) && !config.disabled_tools.contains(t.name()))
    }

    /// The tool a run with this configuration calls `name`, if it is offered.
    pub(crate) fn tool<'a>(
        &'a self,
        config: &'a DeploymentConfig,
        name: &str,
    ) -> Option<&'a dyn Tool> {
        self.tools_for(config).find(|t| t.name() == name)
    }

    /// The MCP tools and redactor of a run this node drives (empty when none were prepared).
    pub(crate) fn run_tools(&self, run_id: &str) -> Arc<crate::mcp::RunTools> {
        self.run_tools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn set_run_tools(&self, run_id: &str, tools: Option<Arc<crate::mcp::RunTools>>) {
        let mut map = self.run_tools.lock().unwrap_or_else(|p| p.into_inner());
        match tools {
            Some(t) => {
                map.insert(run_id.to_owned(), t);
            }
            None => {
                map.remove(run_id);
            }
        }
    }

    /// Installs the observer of model-call token counts (metrics); only the first call counts.
    pub fn set_usage_observer(&self, observer: UsageObserver) {
        let _ = self.usage_observer.set(observer);
    }

    pub(crate) fn observe_usage(&self, model: &str, input: u64, output: u64) {
        if let Some(observe) = self.usage_observer.get() {
            let provider = model.split_once('/').map_or(model, |(p, _)| p);
            observe(provider, input, output);
        }
    }

    /// Number of runs this node is driving (a run waiting on a human is not one of them).
    pub fn active_runs(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Starts this node's worker and heartbeat. First gives back the leases an earlier process
    /// of this node held (it is dead: this is its restart), so its runs resume at once.
    pub async fn start_workers(self: &Arc<Self>) -> Result<(), StoreError> {
        let released = self.store.release_leases(&self.settings.node_id).await?;
        if released > 0 {
            tracing::info!(
                runs = released,
                "taking back the runs of this node's previous process"
            );
        }
        let rt = self.clone();
        self.loops.spawn(async move { rt.worker_loop().await });
        let rt = self.clone();
        self.loops.spawn(async move { rt.heartbeat_loop().await });
        let notices = self.store.event_notices().await?;
        let (catch_up, requests) = tokio::sync::mpsc::unbounded_channel();
        self.bus.set_catch_up(catch_up);
        let rt = self.clone();
        self.loops
            .spawn(async move { rt.event_feed_loop(requests, notices).await });
        Ok(())
    }

    /// Delivers events this node did not publish itself: those of other nodes (on the store's
    /// notices, and by a poll in case one was missed) and those a publish found a gap before.
    async fn event_feed_loop(
        self: Arc<Self>,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<String>,
        mut notices: Option<tokio::sync::mpsc::Receiver<EventNotice>>,
    ) {
        let polling = notices.is_some();
        let mut poll = tokio::time::interval(self.settings.event_poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let done = tokio::select! {
                Some(deployment_id) = requests.recv() => {
                    self.bus.catch_up(self.store.as_ref(), &deployment_id, None).await
                }
                notice = async { notices.as_mut()?.recv().await }, if notices.is_some() => {
                    match notice {
                        Some(EventNotice::Committed { deployment_id, last_seq }) => {
                            self.bus.catch_up(self.store.as_ref(), &deployment_id, last_seq).await
                        }
                        Some(EventNotice::Resync) => self.bus.catch_up_all(self.store.as_ref()).await,
                        None => {
                            tracing::warn!("the store's event notices ended; polling only");
                            notices = None;
                            Ok(())
                        }
                    }
                }
                _ = poll.tick(), if polling => self.bus.catch_up_all(self.store.as_ref()).await,
                () = self.stop.cancelled() => return,
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not deliver other nodes' events");
            }
        }
    }

    /// Tells the worker that a run may have become runnable (a message was accepted, a
    /// steering request answered).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn worker_loop(self: Arc<Self>) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if let Err(e) = self.claim_and_spawn().await {
                tracing::warn!(error = %e, "could not claim runnable runs");
            }
            if let Err(e) = self.expire_overdue_steering().await {
                tracing::warn!(error = %e, "could not expire steering requests");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.claim_poll_interval) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Claims runnable runs up to the free capacity and starts a task for each.
    async fn claim_and_spawn(self: &Arc<Self>) -> Result<(), StoreError> {
        let free = self
            .settings
            .max_concurrent_runs
            .saturating_sub(self.active_runs());
        if free == 0 {
            return Ok(());
        }
        let now = now_unix();
        let claimed = self
            .store
            .claim_runnable_runs(
                &self.settings.node_id,
                u32::try_from(free).unwrap_or(u32::MAX),
                now,
                now.saturating_add(secs(self.settings.lease_duration)),
            )
            .await?;
        for claim in claimed {
            self.spawn(claim);
        }
        Ok(())
    }

    fn spawn(self: &Arc<Self>, claim: ClaimedRun) {
        if self.stop.is_cancelled() {
            return;
        }
        let signals = Signals::default();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            // Claimed again while its task is still ending (it just paused and the answer came
            // at once, or its lease lapsed): this claim starts when that task ends.
            if running.contains_key(&claim.run.id) {
                self.deferred
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(claim.run.id.clone(), claim);
                return;
            }
            running.insert(claim.run.id.clone(), signals.clone());
        }
        let rt = self.clone();
        self.tasks.spawn(async move {
            let _finished = Finished {
                rt: rt.clone(),
                run_id: claim.run.id.clone(),
            };
            let _ended = signals.ended.clone().drop_guard();
            crate::runner::drive(&rt, claim, &signals).await;
        });
    }

    /// Renews this node's leases; a run that is no longer this node's (another node took it
    /// over, or it ended elsewhere) is stopped here.
    async fn heartbeat_loop(self: Arc<Self>) {
        // When the last renewal that reached the database was; if renewals keep failing
        // (the database is unreachable from here), this node stops its runs before their
        // leases can lapse, so that another node taking them over never runs commands for a
        // run this one still drives.
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.heartbeat_interval) => {}
                () = self.stop.cancelled() => return,
            }
            // Snapshot first: a run claimed after it is renewed by the next beat.
            let snapshot: Vec<(String, Signals)> = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect();
            let until = now_unix().saturating_add(secs(self.settings.lease_duration));
            match self.store.renew_leases(&self.settings.node_id, until).await {
                Ok(held) => {
                    renewed_at = tokio::time::Instant::now();
                    for (run_id, signals) in snapshot {
                        if !held.contains(&run_id) {
                            tracing::info!(%run_id, "run is no longer this node's; stopping it");
                            signals.abort.cancel();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew leases");
                    let next = renewed_at.elapsed() + self.settings.heartbeat_interval;
                    if next >= self.settings.lease_duration && !snapshot.is_empty() {
                        tracing::warn!(
                            runs = snapshot.len(),
                            "leases could not be renewed for too long; stopping this node's runs \
                             before another node may take them over"
                        );
                        for (_, signals) in snapshot {
                            signals.abort.cancel();
                        }
                    }
                }
            }
        }
    }

    /// Ends runs whose steering request went unanswered past the steering timeout (spec §6.5).
    async fn expire_overdue_steering(&self) -> Result<(), StoreError> {
        let Some(timeout) = self.settings.steering_timeout else {
            return Ok(());
        };
        let now = now_unix();
        let cutoff = now.saturating_sub(secs(timeout));
        for due in self.store.overdue_steering(cutoff, 100).await? {
            let guard = self.bus.lock(&due.deployment_id).await;
            if let Some(events) = self
                .store
                .expire_steering(&due.run_id, &due.request_id, cutoff, now)
                .await?
            {
                guard.publish(&events);
                tracing::info!(run_id = %due.run_id, "steering request timed out");
            }
        }
        Ok(())
    }

    /// Answers a waiting run's steering request through the endpoint (spec §6.4); on success
    /// the run is runnable again and the worker is woken to continue it.
    pub async fn answer_steering(
        &self,
        answer: SteeringAnswer,
    ) -> Result<AnswerOutcome, StoreError> {
        let guard = self.bus.lock(&answer.deployment_id).await;
        let outcome = self.store.answer_steering(answer).await?;
        if let AnswerOutcome::Resolved(_, events) = &outcome {
            guard.publish(events);
            drop(guard);
            self.wake();
        }
        Ok(outcome)
    }

    /// Cancels a run (spec §5.3): ends it in `error`/`cancelled`, resolves its unfinished tool
    /// calls and a pending steering request, and stops its task on this node (another node's
    /// task stops at its next write or heartbeat). Cancelling a cancelled run changes nothing.
    pub async fn cancel(
        &self,
        deployment_id: &str,
        run_id: &str,
    ) -> Result<RunRecord, CancelError> {
        match self.store.get_run(deployment_id, run_id).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => return Err(CancelError::NotFound),
            Err(e) => return Err(CancelError::Store(e)),
        }
        let error = ErrorInfo {
            code: "cancelled".to_owned(),
            message: "The run was cancelled.".to_owned(),
        };
        let guard = self.bus.lock(deployment_id).await;
        let outcome = self
            .store
            .fail_run(run_id, error, json!({"error": "cancelled"}), now_unix())
            .await
            .map_err(CancelError::Store)?;
        let run = match outcome {
            FailOutcome::Ended(run, events) => {
                guard.publish(&events);
                run
            }
            FailOutcome::AlreadyEnded(run) => {
                let cancelled = run.error.as_ref().is_some_and(|e| e.code == "cancelled");
                if !cancelled {
                    return Err(CancelError::Ended(run.status));
                }
                run
            }
        };
        drop(guard);
        self.stop_task(run_id);
        self.wait_for_task(run_id).await;
        // A cancelled pass's changes stay made: its journal says which they were.
        crate::dreaming::write_journal(self, &run).await;
        Ok(run)
    }

    /// Waits (bounded) until this node's task of `run_id`, if any, has ended: a cancelled
    /// `shell` command is killed and gone by then, so the cancel's answer means no process of
    /// the run is left.
    async fn wait_for_task(&self, run_id: &str) {
        let ended = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .map(|s| s.ended.clone());
        if let Some(ended) = ended
            && tokio::time::timeout(TASK_END_WAIT, ended.cancelled())
                .await
                .is_err()
        {
            tracing::warn!(%run_id, "the cancelled run's task did not end in time");
        }
    }

    /// Ends a run in `error` with `code` (used by the loop).
    pub(crate) async fn fail(&self, run: &RunRecord, code: &str, message: String) {
        let error = ErrorInfo {
            code: code.to_owned(),
            message,
        };
        let guard = self.bus.lock(&run.deployment_id).await;
        let result = json!({"error": code});
        match self
            .store
            .fail_run(&run.id, error, result, now_unix())
            .await
        {
            Ok(FailOutcome::Ended(_, events)) => guard.publish(&events),
            Ok(FailOutcome::AlreadyEnded(_)) => {}
            Err(e) => tracing::error!(run_id = %run.id, error = %e, "could not record run failure"),
        }
    }

    fn stop_task(&self, run_id: &str) {
        if let Some(s) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
        {
            s.abort.cancel();
        }
    }

    /// Stops the tasks of runs that were deleted with their deployment.
    pub fn forget_runs(&self, run_ids: &[String]) {
        for r in run_ids {
            self.stop_task(r);
        }
    }

    /// Graceful stop: the worker claims nothing more; every run task stops at its next
    /// checkpoint without ending its run (an executing tool call finishes and is recorded; the
    /// model call in flight is abandoned and will be redone); after `park_timeout` the rest
    /// are abandoned. Then this node's leases are released, so the next start (or another
    /// node) resumes the runs at once.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.loops.close();
        self.loops.wait().await;
        let signals: Vec<Signals> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in &signals {
            s.park.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(self.settings.park_timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("runs did not reach a checkpoint in time; abandoning them");
            for s in self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                s.abort.cancel();
            }
            self.tasks.wait().await;
        }
        match self.store.release_leases(&self.settings.node_id).await {
            Ok(n) if n > 0 => tracing::info!(runs = n, "released leases for the next start"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not release leases"),
        }
    }
}
