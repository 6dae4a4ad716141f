//! Runs (spec §5): list, get, cancel, and the steering answer endpoint (§6.4).

use axum::extract::State;
use axum::{Extension, Json};
use paddock_core::CancelError;
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{Page, Run, run_status, run_trigger};
use paddock_store::{AnswerOutcome, Decision, RunFilter, RunRecord, SteeringAnswer, StoreError};
use serde_json::Value;

use super::{PathIds, deployment_of, find, no_such};
use crate::auth::Caller;
use crate::body::{DeferredJson, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::views;

fn one_of(query: &QueryMap, name: &str, allowed: &[&str]) -> ApiResult<Option<String>> {
    match query.get(name) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
        Some(v) => Err(ApiError::validation(
            name,
            format!("`{name}` must be one of {}; got `{v}`.", allowed.join(", ")),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/runs",
    operation_id = "list_runs",
    tag = "runs",
    summary = "List runs",
    description = "Scope `deployments:read`. Full run objects, newest first; an id filter that matches nothing gives an empty list (spec §5.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("thread_id" = Option<String>, Query, description = "Only runs on this thread."),
        ("status" = Option<String>, Query, description = "Only runs in this status: `running`, `waiting_on_human`, `completed` or `error`."),
        ("automation_id" = Option<String>, Query, description = "Only runs of this automation."),
        ("trigger" = Option<String>, Query, description = "Only runs with this trigger: `message`, `schedule`, `manual` or `dreaming`."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of runs.", body = paddock_protocol::Page<paddock_protocol::Run>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`, or an unknown `status` or `trigger`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Json<Page<Run>>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let page_req = page_request(&query)?;
    let filter = RunFilter {
        thread_id: query.get("thread_id").map(str::to_owned),
        status: one_of(&query, "status", &run_status::ALL)?,
        automation_id: query.get("automation_id").map(str::to_owned),
        trigger: one_of(&query, "trigger", &run_trigger::ALL)?,
    };
    let (items, next) = state.store.list_runs(&d.id, &filter, &page_req).await?;
    Ok(Json(page(&items, next, views::run)))
}

async fn run_of(state: &AppState, deployment_id: &str, run_id: &str) -> ApiResult<RunRecord> {
    find("run", run_id, state.store.get_run(deployment_id, run_id)).await
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/runs/{run}",
    operation_id = "get_run",
    tag = "runs",
    summary = "Get a run",
    description = "Scope `deployments:read` (spec §5.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("run" = String, Path, description = "The run id (`run_…`)."),
    ),
    responses(
        (status = 200, description = "The run.", body = paddock_protocol::Run),
        (status = 404, description = "`not_found`: unknown deployment or run.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Run>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let run = run_of(&state, &d.id, ids.get("run")).await?;
    Ok(Json(views::run(&run)))
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/runs/{run}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    summary = "Cancel a run",
    description = "Scope `deployments:write`. No body. Stops a `running` or `waiting_on_human` run: it ends `error` with `error.code: \"cancelled\"`. Cancelling a cancelled run changes nothing (spec §5.3).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("run" = String, Path, description = "The run id (`run_…`)."),
    ),
    responses(
        (status = 200, description = "The run, now `status: \"error\"`, `error.code: \"cancelled\"`.", body = paddock_protocol::Run),
        (status = 404, description = "`not_found`: unknown deployment or run.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the run is `completed`, or ended `error` for a reason other than `cancelled`; or `conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Run>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let run_id = ids.get("run");
    run_of(&state, &d.id, run_id).await?;
    match state.runtime.cancel(&d.id, run_id).await {
        Ok(run) => Ok(Json(views::run(&run))),
        Err(CancelError::NotFound) => Err(no_such("run", run_id)),
        Err(CancelError::Ended(status)) => Err(ApiError::conflict(format!(
            "Run {run_id} has already ended with status `{status}`; only running or waiting runs can be cancelled."
        ))),
        Err(CancelError::Store(e)) => Err(e.into()),
    }
}

/// `POST …/runs/:run_id/steering` (spec §6.4): approves or rejects the pending request; the
/// run is runnable again and a worker continues it. Repeating a request's decision changes
/// nothing; another decision, another request or a run not waiting is a 409.
#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/runs/{run}/steering",
    operation_id = "answer_steering",
    tag = "runs",
    summary = "Answer a steering request",
    description = "Scope `deployments:write`. Approves or rejects the run's pending steering request; the run returns to `running`. Repeating the decision a request already has changes nothing (spec §6.4).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("run" = String, Path, description = "The run id (`run_…`)."),
    ),
    request_body = paddock_protocol::SteeringAnswerRequest,
    responses(
        (status = 200, description = "The run, `status: \"running\"`, `steering_request: null`.", body = paddock_protocol::Run),
        (status = 400, description = "`validation_error`: `request_id` missing; `decision` not `approve`/`reject`; `message` too long.", body = paddock_protocol::ErrorBody),
        (status = 402, description = "`insufficient_credits`: the balance is ≤ 0; the request stays pending.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or run.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the run is not `waiting_on_human`; `request_id` is not its pending request; it was already resolved with another decision; or `conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn steering(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<Json<Run>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let run = run_of(&state, &d.id, ids.get("run")).await?;
    let body = body.optional_object()?;
    let request_id = match body.get("request_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::validation(
                "request_id",
                "`request_id` is required.",
            ));
        }
        Some(_) => {
            return Err(ApiError::validation(
                "request_id",
                "`request_id` must be a string.",
            ));
        }
    };
    let decision = match body.get("decision") {
        Some(Value::String(s)) if s == "approve" => Decision::Approve,
        Some(Value::String(s)) if s == "reject" => Decision::Reject,
        _ => {
            return Err(ApiError::validation(
                "decision",
                "`decision` must be `approve` or `reject`.",
            ));
        }
    };
    let message = match body.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.is_empty() && s.chars().count() <= state.settings.limits.content_chars =>
        {
            Some(s.clone())
        }
        Some(_) => {
            return Err(ApiError::validation(
                "message",
                format!(
                    "`message` must be a string of 1 to {} characters.",
                    state.settings.limits.content_chars
                ),
            ));
        }
    };
    // 402 leaves the request pending (spec §6.4).
    crate::routes::messages::ensure_credits(&state, &caller.account_id).await?;
    let answer = SteeringAnswer {
        deployment_id: d.id.clone(),
        run_id: run.id.clone(),
        request_id: request_id.clone(),
        decision,
        message: message.map(|m| (new_id(prefix::MESSAGE), m)),
        now: now_unix(),
    };
    match state.runtime.answer_steering(answer).await {
        Ok(AnswerOutcome::Resolved(run, _) | AnswerOutcome::Unchanged(run)) => {
            Ok(Json(views::run(&run)))
        }
        Ok(AnswerOutcome::OtherDecision(run, earlier)) => Err(ApiError::conflict(format!(
            "Steering request {request_id} of run {} was already resolved with `{}`.",
            run.id,
            earlier.as_str()
        ))),
        Ok(AnswerOutcome::WrongRequest(run)) => Err(ApiError::conflict(format!(
            "`{request_id}` is not the pending steering request of run {}.",
            run.id
        ))),
        Ok(AnswerOutcome::NotWaiting(run)) => Err(ApiError::conflict(format!(
            "Run {} is `{}`, not `waiting_on_human`.",
            run.id, run.status
        ))),
        Err(StoreError::NotFound(_)) => Err(no_such("run", &run.id)),
        Err(e) => Err(e.into()),
    }
}
