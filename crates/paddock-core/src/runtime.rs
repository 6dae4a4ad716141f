//! The runtime: which runs are executing on this node, and how they start, stop and resume.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_model::ProviderRegistry;
use paddock_protocol::event::payload;
use paddock_protocol::time::now_unix;
use paddock_protocol::{ErrorInfo, EventType, run_status};
use paddock_store::{FailOutcome, NewEvent, RunRecord, Store, StoreError};
use serde_json::json;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::EventBus;
use crate::tools::{Tool, builtin_tools};
use crate::workspace::Workspace;

/// Knobs of the run loop, from the server configuration.
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
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            workspaces_dir: PathBuf::from("./paddock-data/workspaces"),
            max_steps: 200,
            model_retry_window: Duration::from_secs(600),
            max_output_tokens: None,
            token_coalesce: Duration::from_millis(100),
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

/// Executes runs on this node. Shared (`Arc`) by the HTTP layer and the run tasks.
pub struct Runtime {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) models: Arc<ProviderRegistry>,
    pub(crate) bus: Arc<EventBus>,
    pub(crate) settings: RuntimeSettings,
    pub(crate) tools: Vec<Box<dyn Tool>>,
    running: Mutex<HashMap<String, CancellationToken>>,
    tasks: TaskTracker,
    usage_observer: std::sync::OnceLock<UsageObserver>,
}

/// Sees the token counts of every model call: provider name, input tokens, output tokens.
pub type UsageObserver = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

impl Runtime {
    pub fn new(
        store: Arc<dyn Store>,
        models: Arc<ProviderRegistry>,
        settings: RuntimeSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            models,
            bus: Arc::new(EventBus::default()),
            settings,
            tools: builtin_tools(),
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
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

    /// The workspace of a deployment.
    pub fn workspace(&self, deployment_id: &str) -> Workspace {
        Workspace::new(self.settings.workspaces_dir.join(deployment_id))
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

    /// Number of runs executing on this node.
    pub fn active_runs(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Starts executing a run that the store has in `running`.
    pub fn start(self: &Arc<Self>, run_id: String) {
        self.spawn(run_id, false);
    }

    fn spawn(self: &Arc<Self>, run_id: String, resumed: bool) {
        let token = CancellationToken::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&run_id) {
                return;
            }
            running.insert(run_id.clone(), token.clone());
        }
        let rt = self.clone();
        self.tasks.spawn(async move {
            crate::runner::drive(&rt, &run_id, resumed, &token).await;
            rt.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&run_id);
        });
    }

    /// Resumes every run the store has in `running` (after a restart): each gets a
    /// `run_status` `running` with `reason: "resumed"` and continues from its checkpoint.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        let runs = self.store.running_runs().await?;
        let n = runs.len();
        for run in runs {
            let event = NewEvent {
                kind: EventType::RunStatus,
                thread_id: run.thread_id.clone(),
                run_id: Some(run.id.clone()),
                data: payload::run_status(
                    &run.id,
                    run.thread_id.as_deref(),
                    run_status::RUNNING,
                    &run.trigger,
                    run.automation_id.as_deref(),
                    Some("resumed"),
                    None,
                    None,
                ),
            };
            let guard = self.bus.lock(&run.deployment_id).await;
            match self
                .store
                .append_run_events(&run.id, vec![event], now_unix())
                .await
            {
                Ok(events) => guard.publish(&events),
                Err(StoreError::RunFinished) => continue,
                Err(e) => return Err(e),
            }
            drop(guard);
            self.spawn(run.id, true);
        }
        Ok(n)
    }

    /// Cancels a run (spec §5.3): ends it in `error`/`cancelled`, resolves its unfinished tool
    /// calls, and stops its task. Cancelling a cancelled run changes nothing.
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
        Ok(run)
    }

    /// Ends a run in `error` with `code` (used by the loop and by deletion).
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
        if let Some(t) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
        {
            t.cancel();
        }
    }

    /// Stops the tasks of runs that were deleted with their deployment.
    pub fn forget_runs(&self, run_ids: &[String]) {
        for r in run_ids {
            self.stop_task(r);
        }
    }

    /// Graceful shutdown: stops every run task at its next await point without ending the run,
    /// so the next start resumes it from its checkpoint; waits for the tasks to finish.
    pub async fn shutdown(&self) {
        {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            for t in running.values() {
                t.cancel();
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}
