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

use crate::prompt::system_prompt;
use crate::runtime::Runtime;
use crate::steering::{self, Gate};
use crate::tools::{ToolContext, ToolOutput};

/// Why the loop stopped early.
enum Stop {
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
}

impl Signals {
    fn stopping(&self) -> bool {
        self.abort.is_cancelled() || self.park.is_cancelled()
    }

    async fn stopped(&self) {
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
    let result = run_loop(rt, &lease, claim, signals).await;
    if let Err(Stop::Fail(code, message)) = result {
        if signals.stopping() {
            return;
        }
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
    // The calls of the latest recorded response come first: after a restart, after an
    // answered steering request. A new run has none.
    if let Flow::Paused = run_calls(rt, lease, signals).await? {
        return Ok(());
    }
    loop {
        if signals.stopping() {
            return Err(Stop::Quiet);
        }
        let ctx = rt.store.begin_step(lease, now_unix()).await?;
        let run = ctx.run;
        if run.step > rt.settings.max_steps {
            return Err(Stop::Fail(
                "max_steps",
                format!("The run reached {} model calls.", rt.settings.max_steps),
            ));
        }
        let items: Vec<Item> = ctx
            .items
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .map_err(|e| Stop::Fail("server_error", format!("stored conversation: {e}")))?;
        let (provider, model_name) = rt
            .models
            .resolve(&run.config.model)
            .map_err(|e| Stop::Fail("model_error", e.to_string()))?;
        let tools: Vec<_> = rt.tools_for(&run.config).map(|t| t.spec()).collect();
        let tool_names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
        let request = ModelRequest {
            model: model_name,
            system: system_prompt(&run.config, &tool_names),
            items,
            tools,
            max_output_tokens: rt.settings.max_output_tokens,
        };

        let response = call_model(rt, lease, &run, provider.as_ref(), request, signals).await?;
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
        // Every call is reported before any gate or execution (spec §7.4).
        for c in &calls {
            events.push(run_event(
                &run,
                EventType::ToolCall,
                json!({
                    "run_id": run.id, "thread_id": run.thread_id, "step": run.step,
                    "call_id": c.id, "tool": c.name, "origin": "builtin", "arguments": c.arguments,
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
                .map(|c| NewToolCall {
                    id: c.id.clone(),
                    tool: c.name.clone(),
                    origin: "builtin".to_owned(),
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

        if calls.is_empty() {
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
    for call in ctx.unfinished_calls {
        let output = if skip_rest {
            Some(steering::skipped())
        } else if call.state == "started" {
            let repeatable = rt
                .tool(&run.config, &call.tool)
                .is_some_and(|t| t.safe_to_repeat());
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
                rt.tool(&run.config, &call.tool),
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
            Some(output) => {
                record_result(rt, lease, &run, call.step, &call.id, &call.tool, output).await?
            }
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
    let output = match rt.tool(&run.config, &call.tool) {
        Some(tool) => {
            let ctx = ToolContext {
                workspace: rt.workspace(&run.deployment_id),
            };
            // A graceful stop lets the call finish (its result is recorded); only an abort
            // abandons it.
            tokio::select! {
                out = tool.call(&ctx, &call.arguments) => out,
                () = signals.abort.cancelled() => return Err(Stop::Quiet),
            }
        }
        None => ToolOutput::error(format!("unknown or unavailable tool `{}`", call.tool)),
    };
    record_result(rt, lease, run, call.step, &call.id, &call.tool, output).await
}

async fn record_result(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    step: i64,
    call_id: &str,
    name: &str,
    output: ToolOutput,
) -> Result<(), Stop> {
    let content = match &output.result {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let item = serde_json::to_value(Item::ToolResult {
        call_id: call_id.to_owned(),
        name: name.to_owned(),
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
            name,
            "builtin",
            &output.result,
            output.is_error,
            false,
            None,
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

fn run_event(run: &RunRecord, kind: EventType, data: Value) -> NewEvent {
    NewEvent {
        kind,
        thread_id: run.thread_id.clone(),
        run_id: Some(run.id.clone()),
        data,
    }
}

/// One complete model response.
struct Response {
    text: String,
    tool_calls: Vec<ToolCall>,
    usage: RunUsage,
}

/// Calls the model, streaming its text as coalesced `token` events, retrying transient
/// failures with exponential backoff within the configured window.
async fn call_model(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    provider: &dyn paddock_model::ModelProvider,
    request: ModelRequest,
    signals: &Signals,
) -> Result<Response, Stop> {
    let deadline = Instant::now() + rt.settings.model_retry_window;
    let mut backoff = Duration::from_millis(500);
    loop {
        match stream_once(rt, lease, run, provider, request.clone(), signals).await {
            Ok(r) => return Ok(r),
            Err(Attempt::Stop(s)) => return Err(s),
            Err(Attempt::Model(e)) => {
                // Never sooner than the provider asked (`retry-after`).
                let wait = e.retry_after().map_or(backoff, |after| after.max(backoff));
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
    }
}

enum Attempt {
    Stop(Stop),
    Model(ModelError),
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
) -> Result<Response, Attempt> {
    // An abandoned call is never recorded, so a resume redoes it under the same step.
    let mut stream = tokio::select! {
        s = provider.stream(request) => s.map_err(Attempt::Model)?,
        () = signals.stopped() => return Err(Attempt::Stop(Stop::Quiet)),
    };
    let mut text = String::new();
    let mut pending = String::new();
    let mut flush_at: Option<Instant> = None;
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
                pending.push_str(&d);
                if flush_at.is_none() {
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
                flush_tokens(rt, lease, run, &mut pending).await?;
                return Err(Attempt::Model(e));
            }
            None => break,
        }
    }
    flush_tokens(rt, lease, run, &mut pending).await?;
    if !finished {
        return Err(Attempt::Model(ModelError::Transport(
            "the model's stream ended before the response was complete".to_owned(),
        )));
    }
    Ok(Response {
        text,
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
