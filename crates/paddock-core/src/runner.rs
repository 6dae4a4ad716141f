//! The run loop: drain queued input → model call (streamed) → tool calls (gated by steering)
//! → repeat, with every step recorded before the next begins. A worker drives a run it claimed
//! until it completes, fails, or pauses on a steering request; every write checks its lease.

use std::time::Duration;

use futures::StreamExt;
use paddock_model::{Item, ModelError, ModelEvent, ModelRequest, ToolCall};
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{EventType, RunUsage, SteeringRequest, run_status};
use paddock_store::{
    ClaimedRun, Lease, ModelResponse, NewEvent, NewToolCall, PauseRun, RunRecord, StoreError,
    ToolCallOutcome, ToolCallRecord,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::prompt::system_prompt_with_skills;
use crate::runtime::Runtime;
use crate::steering::{self, Gate};
use crate::tools::{ToolContext, ToolOutput};

/// Why the loop stopped early.
pub(crate) enum Stop {
    /// The run ended elsewhere (cancelled, deleted), another node holds it, or this node is
    /// stopping: leave the run as the store has it.
    Quiet,
    /// The run must end in `error` with this code and message.
    Fail(&'static str, String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RunFinished | StoreError::NotFound(_) | StoreError::LeaseLost => {
                Stop::Quiet
            }
            // Spec §16.1: checked where the step begins, in the store's debit transaction order.
            StoreError::InsufficientCredits => Stop::Fail(
                "insufficient_credits",
                "The account has no credits left; add credits to continue.".to_owned(),
            ),
            other => Stop::Fail("server_error", other.to_string()),
        }
    }
}

/// How a worker is told to stop driving a run.
#[derive(Clone, Default)]
pub(crate) struct Signals {
    /// Stop now, abandoning a tool call in flight: the run was cancelled or deleted, or this
    /// node lost its lease.
    pub(crate) abort: CancellationToken,
    /// Stop at the next checkpoint (graceful shutdown): an unrecorded model call is abandoned
    /// (it is redone on resume), an executing tool call finishes and its result is recorded,
    /// nothing new starts.
    pub(crate) park: CancellationToken,
    /// Cancelled when the task driving the run has ended (and with it every process a tool
    /// of the run started): what a cancel waits for before it answers.
    pub(crate) ended: CancellationToken,
}

impl Signals {
    fn stopping(&self) -> bool {
        self.abort.is_cancelled() || self.park.is_cancelled()
    }

    pub(crate) async fn stopped(&self) {
        tokio::select! {
            () = self.abort.cancelled() => {}
            () = self.park.cancelled() => {}
        }
    }
}

/// What the calls of a response led to.
enum Flow {
    /// All have results: call the model again.
    Continue,
    /// The run paused on a steering request; the worker is done with it.
    Paused,
}

/// Drives a claimed run until it completes, fails, pauses for a human, is cancelled, or the
/// worker is told to stop.
pub(crate) async fn drive(rt: &Runtime, claim: ClaimedRun, signals: &Signals) {
    let lease = Lease {
        run_id: claim.run.id.clone(),
        node_id: rt.settings.node_id.clone(),
    };
    let run = claim.run.clone();
    // Spec §14.2: this run's MCP tools and secrets, for this task only.
    let tools = std::sync::Arc::new(crate::mcp::prepare(rt, &lease, &run).await);
    rt.set_run_tools(&run.id, Some(tools.clone()));
    let result = run_loop(rt, &lease, claim, signals).await;
    rt.set_run_tools(&run.id, None);
    tools.close().await;
    if let Err(Stop::Fail(code, message)) = result {
        if signals.stopping() {
            return;
        }
        // What a failed pass changed is journalled too (before its terminal event).
        crate::dreaming::write_journal(rt, &run).await;
        rt.fail(&run, code, message).await;
    }
}

async fn run_loop(
    rt: &Runtime,
    lease: &Lease,
    claim: ClaimedRun,
    signals: &Signals,
) -> Result<(), Stop> {
    let run = claim.run;
    let mut usage = run.usage;
    if claim.resumed {
        // Spec §5.4: after a restart (or a lost lease) the run first says it resumed.
        let event = run_event(
            &run,
            EventType::RunStatus,
            paddock_protocol::event::payload::run_status(
                &run.id,
                run.thread_id.as_deref(),
                run_status::RUNNING,
                &run.trigger,
                run.automation_id.as_deref(),
                Some("resumed"),
                None,
                None,
            ),
        );
        let guard = rt.bus.lock(&run.deployment_id).await;
        let stored = rt
            .store
            .append_run_events(lease, vec![event], now_unix())
            .await?;
        guard.publish(&stored);
    }
    // Spec §10: memories go into the context at the start of the run, computed once so every
    // step of the run sends the same prefix.
    let memory_block = crate::run_context::memory_block(rt, &run).await;
    // Spec §12: skills are copied and re-read at the start of the run, listed in its prompt.
    // A dreaming pass (spec §3.4) has its own fixed prompt: no skills, no deployment prompt.
    let dreaming = run.trigger == crate::memory::DREAMING_TRIGGER;
    let skills = if dreaming {
        Vec::new()
    } else {
        crate::run_context::skills(rt, &run).await
    };
    // The calls of the latest recorded response come first: after a restart, after an
    // answered steering request. A new run has none.
    if let Flow::Paused = run_calls(rt, lease, signals).await? {
        return Ok(());
    }
    loop {
        if signals.stopping() {
            return Err(Stop::Quiet);
        }
        // Spec §4.3: attachments of queued messages are fetched (on the host) before the step
        // that shows them; `begin_step` holds back a message until its outcomes are recorded.
        crate::attachments::fetch_pending(rt, lease, &run, signals).await?;
        let ctx = rt.store.begin_step(lease, now_unix()).await?;
        let run = ctx.run;
        if run.step > rt.settings.max_steps {
            return Err(Stop::Fail(
                "max_steps",
                format!("The run reached {} model calls.", rt.settings.max_steps),
            ));
        }
        let items: Vec<Item> = crate::attachments::to_items(rt, &run, ctx.items)?;
        let (provider, model_name) = rt
            .models
            .resolve(&run.config.model)
            .map_err(|e| Stop::Fail("model_error", e.to_string()))?;
        let run_tools = rt.run_tools(&run.id);
        let tools: Vec<_> = rt
            .tools_for(&run.config)
            .map(|t| t.spec())
            .chain(run_tools.specs())
            .collect();
        let tool_names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
        let mut system = if dreaming {
            crate::dreaming::SYSTEM_PROMPT.to_owned()
        } else {
            system_prompt_with_skills(&run.config, &tool_names, &skills)
        };
        // Spec §14.2: the model is told a server is unavailable.
        if let Some(note) = run_tools.note() {
            system.push_str("\n\n");
            system.push_str(&note);
        }
        let request = ModelRequest {
            model: model_name,
            system,
            items,
            tools,
            max_output_tokens: rt.settings.max_output_tokens,
        };

        // Spec §8: a conversation too long for the model's window is sent with its older part
        // summarised; the stored history is untouched.
        let request = crate::compaction::fit(
            rt,
            lease,
            &run,
            provider.as_ref(),
            request,
            &mut usage,
            signals,
        )
        .await?;
        let mut request = request;
        if let Some(block) = &memory_block {
            request.items.insert(
                0,
                Item::User {
                    content: block.clone(),
                    media: Vec::new(),
                },
            );
        }
        let response = call_model(
            rt,
            lease,
            &run,
            provider.as_ref(),
            request,
            usage.credits,
            signals,
            true,
        )
        .await?;
        rt.observe_usage(
            &run.config.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        );
        usage.input_tokens += response.usage.input_tokens;
        usage.output_tokens += response.usage.output_tokens;
        // Spec §16.1: priced from the model's facts; the store debits the account.
        usage.credits += rt
            .models
            .model_info(&run.config.model)
            .price(response.usage.input_tokens, response.usage.output_tokens);

        let calls: Vec<ToolCall> = response
            .tool_calls
            .into_iter()
            .map(|mut c| {
                if c.id.is_empty() {
                    c.id = new_id(prefix::CALL);
                }
                c
            })
            .collect();
        let agent_message =
            (!response.text.is_empty()).then(|| (new_id(prefix::MESSAGE), response.text.clone()));
        let mut events = Vec::new();
        if let Some((message_id, content)) = &agent_message {
            events.push(run_event(
                &run,
                EventType::Message,
                json!({
                    "message_id": message_id, "thread_id": run.thread_id, "run_id": run.id,
                    "role": "agent", "content": content, "attachments": [],
                }),
            ));
        }
        // Every call is reported before any gate or execution (spec §7.4), with the tool's
        // own name and origin (spec §13.3): an MCP tool as its server names it.
        let identities: Vec<(String, String)> = calls
            .iter()
            .map(|c| match find_tool(rt, &run_tools, &run.config, &c.name) {
                Some(t) => (t.bare_name().to_owned(), t.origin().to_owned()),
                None => (c.name.clone(), "builtin".to_owned()),
            })
            .collect();
        for (c, (tool, origin)) in calls.iter().zip(&identities) {
            events.push(run_event(
                &run,
                EventType::ToolCall,
                json!({
                    "run_id": run.id, "thread_id": run.thread_id, "step": run.step,
                    "call_id": c.id, "tool": tool, "origin": origin, "arguments": c.arguments,
                }),
            ));
        }
        let record = ModelResponse {
            step: run.step,
            item: serde_json::to_value(Item::Assistant {
                text: response.text,
                tool_calls: calls.clone(),
            })
            .map_err(|e| Stop::Fail("server_error", e.to_string()))?,
            agent_message,
            tool_calls: calls
                .iter()
                .zip(&identities)
                .map(|(c, (tool, origin))| NewToolCall {
                    id: c.id.clone(),
                    tool: tool.clone(),
                    origin: origin.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            usage,
            events,
            now: now_unix(),
        };
        {
            let guard = rt.bus.lock(&run.deployment_id).await;
            let stored = rt.store.record_model_response(lease, record).await?;
            guard.publish(&stored);
        }
        rt.credits_charged.notify_waiters();

        if calls.is_empty() {
            // The journal is on disk before the run is reported complete, so a client that
            // sees the terminal `run_status` can read it.
            if dreaming {
                crate::dreaming::write_journal(rt, &run).await;
            }
            let guard = rt.bus.lock(&run.deployment_id).await;
            match rt.store.complete_run(lease, usage, now_unix()).await? {
                Some(events) => {
                    guard.publish(&events);
                    return Ok(());
                }
                // Input arrived while the model answered: it must see it before the run ends.
                None => continue,
            }
        }
        if let Flow::Paused = run_calls(rt, lease, signals).await? {
            return Ok(());
        }
    }
}

/// Gives every unfinished call of the latest response a result, one at a time and in order
/// (spec §6.1), from the store's view of them:
///
/// - answered (its steering request resolved): executed if approved, else the decision is its
///   result; after a rejected or redirected `tool_call` the rest are skipped (spec §6.3);
/// - pending: gated by policy and `request_approval`; the first gated call pauses the run
///   (later ones wait with it), otherwise it executes;
/// - started without a result (the process stopped during it): repeated only if the tool says
///   that is harmless (`read_file`), otherwise the model is told it was interrupted (§5.4).
async fn run_calls(rt: &Runtime, lease: &Lease, signals: &Signals) -> Result<Flow, Stop> {
    let ctx = rt.store.step_context(&lease.run_id).await?;
    let run = ctx.run;
    if run.status != run_status::RUNNING {
        return Err(Stop::Quiet);
    }
    let mut skip_rest = false;
    let run_tools = rt.run_tools(&run.id);
    for call in ctx.unfinished_calls {
        let facing = steering::model_facing_name(&call.tool, &call.origin);
        let output = if skip_rest {
            Some(steering::skipped())
        } else if call.state == "started" {
            let repeatable =
                find_tool(rt, &run_tools, &run.config, &facing).is_some_and(|t| t.safe_to_repeat());
            if repeatable {
                None
            } else {
                Some(ToolOutput {
                    result: json!({
                        "error": "interrupted",
                        "message": "The server stopped while this tool call was running; it may or may not have taken effect.",
                    }),
                    is_error: true,
                })
            }
        } else if let Some(record) = ctx
            .steering
            .iter()
            .find(|r| r.request.call_id == call.id && r.decision.is_some())
        {
            match steering::answered(record) {
                Some(steering::Answered::Execute) => None,
                Some(steering::Answered::Result {
                    output,
                    skip_rest: s,
                }) => {
                    skip_rest = s;
                    Some(output)
                }
                // Cancelled or timed out: the run has ended.
                None => return Err(Stop::Quiet),
            }
        } else {
            match steering::gate(
                &run.config,
                &call,
                find_tool(rt, &run_tools, &run.config, &facing),
                now_unix(),
            ) {
                Gate::Allow => None,
                Gate::Refuse(output) => Some(output),
                Gate::Ask(request) => {
                    pause(rt, lease, &run, request).await?;
                    return Ok(Flow::Paused);
                }
            }
        };
        match output {
            Some(output) => record_result(rt, lease, &run, &call, output).await?,
            None => execute_call(rt, lease, &run, &call, signals).await?,
        }
    }
    Ok(Flow::Continue)
}

/// Pauses the run on `request` (spec §6.2 order: the call's `tool_call` is already out, then
/// `steering_request`, then `run_status` `waiting_on_human`). The lease is released with it;
/// nothing of the run stays in memory.
async fn pause(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    request: SteeringRequest,
) -> Result<(), Stop> {
    let events = vec![
        run_event(
            run,
            EventType::SteeringRequest,
            paddock_protocol::event::payload::steering_request(
                &run.id,
                run.thread_id.as_deref(),
                &request,
            ),
        ),
        run_event(
            run,
            EventType::RunStatus,
            paddock_protocol::event::payload::run_status(
                &run.id,
                run.thread_id.as_deref(),
                run_status::WAITING,
                &run.trigger,
                run.automation_id.as_deref(),
                None,
                None,
                None,
            ),
        ),
    ];
    let guard = rt.bus.lock(&run.deployment_id).await;
    let stored = rt
        .store
        .pause_run(
            lease,
            PauseRun {
                request,
                events,
                now: now_unix(),
            },
        )
        .await?;
    guard.publish(&stored);
    Ok(())
}

async fn execute_call(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    call: &ToolCallRecord,
    signals: &Signals,
) -> Result<(), Stop> {
    if signals.stopping() {
        return Err(Stop::Quiet);
    }
    // Marks the call started inside a transaction that checks the run is still running and
    // still this node's, so no call starts after a cancel has been answered (spec §5.3).
    rt.store.start_tool_call(lease, &call.id).await?;
    let run_tools = rt.run_tools(&run.id);
    let facing = steering::model_facing_name(&call.tool, &call.origin);
    let output = match find_tool(rt, &run_tools, &run.config, &facing) {
        Some(tool) => {
            let ctx = ToolContext {
                workspace: rt.workspace(&run.deployment_id),
                run: Some(crate::tools::RunScope {
                    store: rt.store.clone(),
                    deployment_id: run.deployment_id.clone(),
                    run_id: run.id.clone(),
                    trigger: run.trigger.clone(),
                    automations: rt.settings.automations.clone(),
                }),
                exec: Some(crate::tools::ExecScope {
                    sandbox: rt.sandbox.clone(),
                    sandbox_spec: rt.sandbox_spec(&run.deployment_id, &run.config),
                    shell: rt.settings.shell,
                    cancel: signals.abort.child_token(),
                }),
            };
            // `filesystem` events (spec §7.4): the workspace is compared before and after.
            let before =
                crate::workspace_index::before_call(&run.config, ctx.workspace.root()).await;
            // A graceful stop lets the call finish (its result is recorded); only an abort
            // abandons it. A tool that observes the abort itself (`shell`) is awaited: it
            // kills its processes and returns once they are gone, then nothing is recorded.
            let out = if tool.observes_cancel() {
                let out = tool.call(&ctx, &call.arguments).await;
                if signals.abort.is_cancelled() {
                    return Err(Stop::Quiet);
                }
                out
            } else {
                tokio::select! {
                    out = tool.call(&ctx, &call.arguments) => out,
                    () = signals.abort.cancelled() => return Err(Stop::Quiet),
                }
            };
            crate::workspace_index::after_call(rt, lease, run, before).await;
            out
        }
        None => ToolOutput::error(format!("unknown or unavailable tool `{facing}`")),
    };
    // Spec §3.2: a sandbox that cannot run what the run needs ends the run with
    // `sandbox_error`; the call gets its error result first (§7.4 invariant 3).
    let sandbox_failure = crate::tools::shell::sandbox_failure(&output);
    record_result(rt, lease, run, call, output).await?;
    match sandbox_failure {
        Some(message) => Err(Stop::Fail("sandbox_error", message)),
        None => Ok(()),
    }
}

async fn record_result(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    call: &ToolCallRecord,
    output: ToolOutput,
) -> Result<(), Stop> {
    let (step, call_id) = (call.step, call.id.as_str());
    // Spec §15.3: secret values never reach the model, the events or a saved large output.
    let redactor = &rt.run_tools(&run.id).redactor;
    let output = if redactor.is_empty() {
        output
    } else {
        ToolOutput {
            result: redactor.redact_json(&output.result),
            is_error: output.is_error,
        }
    };
    let (output, output_path) = limit_output(rt, run, call_id, output).await;
    let content = match &output.result {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let item = serde_json::to_value(Item::ToolResult {
        call_id: call_id.to_owned(),
        name: steering::model_facing_name(&call.tool, &call.origin),
        content,
        is_error: output.is_error,
    })
    .map_err(|e| Stop::Fail("server_error", e.to_string()))?;
    let event = run_event(
        run,
        EventType::ToolResult,
        paddock_protocol::event::payload::tool_result(
            &run.id,
            run.thread_id.as_deref(),
            step,
            call_id,
            &call.tool,
            &call.origin,
            &output.result,
            output.is_error,
            output_path.is_some(),
            output_path.as_deref(),
        ),
    );
    let guard = rt.bus.lock(&run.deployment_id).await;
    let stored = rt
        .store
        .finish_tool_call(
            lease,
            call_id,
            ToolCallOutcome {
                result: output.result,
                is_error: output.is_error,
                item,
                events: vec![event],
                now: now_unix(),
            },
        )
        .await?;
    guard.publish(&stored);
    Ok(())
}

/// The large-output rule (spec §13.1) on a result about to be recorded: what the model sees,
/// and where the full result was saved when it was cut.
async fn limit_output(
    rt: &Runtime,
    run: &RunRecord,
    call_id: &str,
    output: ToolOutput,
) -> (ToolOutput, Option<String>) {
    let workspace = rt.workspace(&run.deployment_id);
    let settings = rt.settings.large_output;
    let (run_id, call) = (run.id.clone(), call_id.to_owned());
    let fallback = output.clone();
    // Writing a large result is blocking file I/O.
    match tokio::task::spawn_blocking(move || {
        crate::tools::large_output::apply(&workspace, settings, &run_id, &call, output)
    })
    .await
    {
        Ok(limited) => (limited.output, limited.output_path),
        Err(e) => {
            tracing::error!(error = %e, "applying the large-output rule failed");
            (fallback, None)
        }
    }
}

/// The tool a run calls `name` (model-facing): a built-in offered to this configuration, or
/// one of the run's MCP tools.
fn find_tool<'a>(
    rt: &'a Runtime,
    run_tools: &'a crate::mcp::RunTools,
    config: &'a paddock_protocol::DeploymentConfig,
    name: &str,
) -> Option<&'a dyn crate::tools::Tool> {
    rt.tool(config, name).or_else(|| run_tools.find(name))
}

fn run_event(run: &RunRecord, kind: EventType, data: Value) -> NewEvent {
    NewEvent {
        kind,
        thread_id: run.thread_id.clone(),
        run_id: Some(run.id.clone()),
        data,
    }
}

/// One complete model response.
pub(crate) struct Response {
    pub(crate) text: String,
    pub(crate) tool_calls: Vec<ToolCall>,
    pub(crate) usage: RunUsage,
}

/// Calls the model, streaming its text as coalesced `token` events (unless `tokens` is false:
/// a summarisation call's text is not the agent talking), retrying transient failures with
/// exponential backoff within the configured window.
#[allow(clippy::too_many_arguments)] // the call's whole context; a struct would only rename it
pub(crate) async fn call_model(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    provider: &dyn paddock_model::ModelProvider,
    request: ModelRequest,
    charged: f64,
    signals: &Signals,
    tokens: bool,
) -> Result<Response, Stop> {
    // Held once for all attempts: a failed attempt is not charged, the one that answers is.
    crate::credit_hold::hold_for_call(rt, lease, run, &request, charged, signals).await?;
    let deadline = Instant::now() + rt.settings.model_retry_window;
    let mut backoff = Duration::from_millis(500);
    let mut drops = 0;
    loop {
        let e = match stream_once(rt, lease, run, provider, request.clone(), signals, tokens).await
        {
            Ok(r) => return Ok(r),
            Err(Attempt::Stop(s)) => return Err(s),
            Err(Attempt::Model(e)) => e,
            Err(Attempt::Dropped(e)) => {
                drops += 1;
                if drops > MAX_STREAM_DROPS && e.is_retryable() {
                    return Err(Stop::Fail(
                        "model_error",
                        format!("{e} (the response broke off {drops} times)"),
                    ));
                }
                e
            }
        };
        // Jitter spreads the retries of runs that failed together (a vendor outage); never
        // sooner than the provider asked (`retry-after`).
        let jittered = backoff.mul_f64(rand::random_range(0.5..=1.0));
        let wait = e
            .retry_after()
            .map_or(jittered, |after| after.max(jittered));
        if !e.is_retryable() || Instant::now() + wait > deadline {
            return Err(Stop::Fail("model_error", e.to_string()));
        }
        tracing::warn!(run_id = %run.id, error = %e, ?wait, "model call failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = signals.stopped() => return Err(Stop::Quiet),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Retries of one model call whose response broke off after it had started (its own budget,
/// within the retry window): a vendor that keeps cutting answers short is not worth ten
/// minutes of half answers, while one that refuses connections may be back in a minute.
const MAX_STREAM_DROPS: u32 = 3;

enum Attempt {
    Stop(Stop),
    /// The call failed before its response started.
    Model(ModelError),
    /// The response started, then broke off (an error mid-stream or a cut).
    Dropped(ModelError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Stop(e.into())
    }
}

async fn stream_once(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    provider: &dyn paddock_model::ModelProvider,
    request: ModelRequest,
    signals: &Signals,
    tokens: bool,
) -> Result<Response, Attempt> {
    // An abandoned call is never recorded, so a resume redoes it under the same step.
    let mut stream = tokio::select! {
        s = provider.stream(request) => s.map_err(Attempt::Model)?,
        () = signals.stopped() => return Err(Attempt::Stop(Stop::Quiet)),
    };
    let mut text = String::new();
    let mut pending = String::new();
    // Spec §15.3: streamed text is redacted, holding back a tail that may be a split value.
    let redactor = rt.run_tools(&run.id).redactor.clone();
    let mut held = crate::redaction::StreamRedactor::new(redactor.clone());
    let mut flush_at: Option<Instant> = None;
    let mut first_sent = false;
    let mut tool_calls = Vec::new();
    let mut usage = RunUsage::default();
    let mut finished = false;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            () = signals.stopped() => return Err(Attempt::Stop(Stop::Quiet)),
            () = sleep_until(flush_at) => {
                flush_tokens(rt, lease, run, &mut pending).await?;
                flush_at = None;
                continue;
            }
        };
        match next {
            Some(Ok(ModelEvent::TextDelta(d))) => {
                text.push_str(&d);
                if !tokens {
                    continue;
                }
                pending.push_str(&held.push(&d));
                if !first_sent && !pending.is_empty() {
                    // The first text of a response goes out at once (time to first token);
                    // only what follows is merged within the coalescing window.
                    flush_tokens(rt, lease, run, &mut pending).await?;
                    first_sent = true;
                } else if flush_at.is_none() {
                    flush_at = Some(Instant::now() + rt.settings.token_coalesce);
                }
            }
            Some(Ok(ModelEvent::ToolCall(c))) => tool_calls.push(c),
            Some(Ok(ModelEvent::Usage(u))) => {
                usage.input_tokens = u.input_tokens;
                usage.output_tokens = u.output_tokens;
            }
            Some(Ok(ModelEvent::Finished)) => finished = true,
            Some(Err(e)) => {
                pending.push_str(&held.finish());
                flush_tokens(rt, lease, run, &mut pending).await?;
                return Err(Attempt::Dropped(e));
            }
            None => break,
        }
    }
    pending.push_str(&held.finish());
    flush_tokens(rt, lease, run, &mut pending).await?;
    if !finished {
        return Err(Attempt::Dropped(ModelError::Transport(
            "the model's stream ended before the response was complete".to_owned(),
        )));
    }
    Ok(Response {
        text: redactor.redact(&text),
        tool_calls,
        usage,
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn flush_tokens(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    pending: &mut String,
) -> Result<(), Attempt> {
    if pending.is_empty() {
        return Ok(());
    }
    let delta = std::mem::take(pending);
    let event = run_event(
        run,
        EventType::Token,
        json!({"run_id": run.id, "thread_id": run.thread_id, "step": run.step, "delta": delta}),
    );
    let guard = rt.bus.lock(&run.deployment_id).await;
    let stored = rt
        .store
        .append_run_events(lease, vec![event], now_unix())
        .await?;
    guard.publish(&stored);
    Ok(())
}
