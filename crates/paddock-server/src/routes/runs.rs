//! Runs (spec §5): list, get, cancel, and the steering answer endpoint (§6.4).

use axum::extract::State;
use axum::{Extension, Json};
use paddock_core::CancelError;
use paddock_protocol::{Page, Run, run_status, run_trigger};
use paddock_store::{RunFilter, RunRecord, StoreError};
use serde_json::Value;

use super::{PathIds, deployment_of, no_such};
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
    if !paddock_protocol::ids::is_id_shaped(run_id) {
        return Err(no_such("run", run_id));
    }
    match state.store.get_run(deployment_id, run_id).await {
        Ok(r) => Ok(r),
        Err(StoreError::NotFound(_)) => Err(no_such("run", run_id)),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Run>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let run = run_of(&state, &d.id, ids.get("run")).await?;
    Ok(Json(views::run(&run)))
}

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

/// `POST …/runs/:run_id/steering` (spec §6.4). Validates the answer; a run that is not
/// `waiting_on_human` is a 409.
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
    match body.get("decision") {
        Some(Value::String(s)) if s == "approve" || s == "reject" => {}
        _ => {
            return Err(ApiError::validation(
                "decision",
                "`decision` must be `approve` or `reject`.",
            ));
        }
    }
    match body.get("message") {
        None | Some(Value::Null) => {}
        Some(Value::String(s))
            if !s.is_empty() && s.chars().count() <= state.settings.limits.content_chars => {}
        Some(_) => {
            return Err(ApiError::validation(
                "message",
                format!(
                    "`message` must be a string of 1 to {} characters.",
                    state.settings.limits.content_chars
                ),
            ));
        }
    }
    crate::routes::messages::ensure_credits(&state, &caller.account_id).await?;
    match &run.steering_request {
        Some(pending) if run.status == run_status::WAITING && pending.request_id == request_id => {
            Err(ApiError::conflict(
                "Answering steering requests arrives with the steering feature; this server cannot resolve it yet.",
            ))
        }
        Some(_) if run.status == run_status::WAITING => Err(ApiError::conflict(format!(
            "`{request_id}` is not the pending steering request of run {}.",
            run.id
        ))),
        _ => Err(ApiError::conflict(format!(
            "Run {} is `{}`, not `waiting_on_human`.",
            run.id, run.status
        ))),
    }
}
