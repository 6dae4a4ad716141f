//! The run loop: drain queued input → model call (streamed) → tool calls → repeat, with every
//! step recorded before the next begins.

use std::time::Duration;

use futures::StreamExt;
use paddock_model::{Item, ModelError, ModelEvent, ModelRequest, ToolCall};
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{EventType, RunUsage};
use paddock_store::{
    ModelResponse, NewEvent, NewToolCall, RunRecord, StoreError, ToolCallOutcome, ToolCallRecord,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::prompt::system_prompt;
use crate::runtime::Runtime;
use crate::tools::{ToolContext, ToolOutput};

/// Why the loop stopped early.
enum Stop {
    /// The run ended elsewhere (cancelled, deleted) or the node is shutting down.
    Quiet,
    /// The run must end in `error` with this code and message.
    Fail(&'static str, String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RunFinished | StoreError::NotFound(_) => Stop::Quiet,
            other => Stop::Fail("server_error", other.to_string()),
        }
    }
}

/// Executes (or resumes) one run until it completes, fails, is cancelled or the node stops.
pub(crate) async fn drive(rt: &Runtime, run_id: &str, resumed: bool, cancel: &CancellationToken) {
    let result = run_loop(rt, run_id, resumed, cancel).await;
    if let Err(Stop::Fail(code, message)) = result {
        if cancel.is_cancelled() {
            return;
        }
        match rt.store.step_context(run_id).await {
            Ok(ctx) => rt.fail(&ctx.run, code, message).await,
            Err(e) => tracing::error!(run_id, error = %e, "run failed and could not be loaded"),
        }
    }
}

async fn run_loop(
    rt: &Runtime,
    run_id: &str,
    resumed: bool,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let mut usage = rt.store.step_context(run_id).await?.run.usage;
    if resumed {
        finish_interrupted_calls(rt, run_id, cancel).await?;
    }
    loop {
        if cancel.is_cancelled() {
            return Err(Stop::Quiet);
        }
        let ctx = rt.store.begin_step(run_id, now_unix()).await?;
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
        let tools: Vec<_> = rt.tools.iter().map(|t| t.spec()).collect();
        let tool_names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
        let request = ModelRequest {
            model: model_name,
            system: system_prompt(&run.config, &tool_names),
            items,
            tools,
            max_output_tokens: rt.settings.max_output_tokens,
        };

        let response = call_model(rt, &run, provider.as_ref(), request, cancel).await?;
        rt.observe_usage(
            &run.config.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        );
        usage.input_tokens += response.usage.input_tokens;
        usage.output_tokens += response.usage.output_tokens;

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
            run_id: run.id.clone(),
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
            let stored = rt.store.record_model_response(record).await?;
            guard.publish(&stored);
        }

        if calls.is_empty() {
            let guard = rt.bus.lock(&run.deployment_id).await;
            match rt.store.complete_run(&run.id, usage, now_unix()).await? {
                Some(events) => {
                    guard.publish(&events);
                    return Ok(());
                }
                // Input arrived while the model answered: it must see it before the run ends.
                None => continue,
            }
        }
        for call in calls {
            execute_call(
                rt,
                &run,
                run.step,
                &call.id,
                &call.name,
                &call.arguments,
                cancel,
            )
            .await?;
        }
    }
}

/// After a restart: calls recorded but never started run now; calls that started without a
/// recorded result are repeated only when harmless, otherwise the model is told they were
/// interrupted (spec §5.4).
async fn finish_interrupted_calls(
    rt: &Runtime,
    run_id: &str,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let ctx = rt.store.step_context(run_id).await?;
    for call in ctx.unfinished_calls {
        let ToolCallRecord {
            id,
            tool,
            arguments,
            state,
            step,
            ..
        } = call;
        let repeatable = rt
            .tools
            .iter()
            .any(|t| t.name() == tool && t.safe_to_repeat());
        if state == "started" && !repeatable {
            let output = ToolOutput {
                result: json!({
                    "error": "interrupted",
                    "message": "The server restarted while this tool call was running; it may or may not have taken effect.",
                }),
                is_error: true,
            };
            record_result(rt, &ctx.run, step, &id, &tool, output).await?;
        } else {
            execute_call(rt, &ctx.run, step, &id, &tool, &arguments, cancel).await?;
        }
    }
    Ok(())
}

async fn execute_call(
    rt: &Runtime,
    run: &RunRecord,
    step: i64,
    call_id: &str,
    name: &str,
    arguments: &Value,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    if cancel.is_cancelled() {
        return Err(Stop::Quiet);
    }
    // Marks the call started inside a transaction that checks the run is still running, so no
    // call starts after a cancel has been answered.
    rt.store.start_tool_call(&run.id, call_id).await?;
    let output = match rt.tools.iter().find(|t| t.name() == name) {
        Some(tool) => {
            let ctx = ToolContext {
                workspace: rt.workspace(&run.deployment_id),
            };
            tokio::select! {
                out = tool.call(&ctx, arguments) => out,
                () = cancel.cancelled() => return Err(Stop::Quiet),
            }
        }
        None => ToolOutput::error(format!("unknown or unavailable tool `{name}`")),
    };
    record_result(rt, run, step, call_id, name, output).await
}

async fn record_result(
    rt: &Runtime,
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
            &run.id,
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
    run: &RunRecord,
    provider: &dyn paddock_model::ModelProvider,
    request: ModelRequest,
    cancel: &CancellationToken,
) -> Result<Response, Stop> {
    let deadline = Instant::now() + rt.settings.model_retry_window;
    let mut backoff = Duration::from_millis(500);
    loop {
        match stream_once(rt, run, provider, request.clone(), cancel).await {
            Ok(r) => return Ok(r),
            Err(Attempt::Stop(s)) => return Err(s),
            Err(Attempt::Model(e)) => {
                if !e.is_retryable() || Instant::now() + backoff > deadline {
                    return Err(Stop::Fail("model_error", e.to_string()));
                }
                tracing::warn!(run_id = %run.id, error = %e, "model call failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = cancel.cancelled() => return Err(Stop::Quiet),
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
    run: &RunRecord,
    provider: &dyn paddock_model::ModelProvider,
    request: ModelRequest,
    cancel: &CancellationToken,
) -> Result<Response, Attempt> {
    let mut stream = tokio::select! {
        s = provider.stream(request) => s.map_err(Attempt::Model)?,
        () = cancel.cancelled() => return Err(Attempt::Stop(Stop::Quiet)),
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
            () = cancel.cancelled() => return Err(Attempt::Stop(Stop::Quiet)),
            () = sleep_until(flush_at) => {
                flush_tokens(rt, run, &mut pending).await?;
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
                flush_tokens(rt, run, &mut pending).await?;
                return Err(Attempt::Model(e));
            }
            None => break,
        }
    }
    flush_tokens(rt, run, &mut pending).await?;
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

async fn flush_tokens(rt: &Runtime, run: &RunRecord, pending: &mut String) -> Result<(), Attempt> {
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
        .append_run_events(&run.id, vec![event], now_unix())
        .await?;
    guard.publish(&stored);
    Ok(())
}
