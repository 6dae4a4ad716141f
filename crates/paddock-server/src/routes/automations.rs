//! Automations (spec §9): instructions run on a schedule in a thread. The scheduler task
//! (`crate::scheduler`) fires them; these endpoints manage them and trigger one now. The field
//! rules are shared with the agent's `automations` tool (`paddock_core::automations`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_core::automations::{self as rules, AutomationSettings};
use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::format_unix;
use paddock_protocol::{Automation, AutomationDeleted, AutomationRun, AutomationTriggered, Page};
use paddock_store::{
    AutomationRecord, DeploymentRecord, FireAutomation, FiringKind, FiringResult, PageRequest,
    RunFilter, StoreError,
};

use super::{PathIds, deployment_of, find, require_ready};
use crate::auth::Caller;
use crate::body::{DeferredJson, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::validate::automation_error;

fn settings(state: &AppState) -> AutomationSettings {
    AutomationSettings {
        clock: state.settings.automations.clock.clone(),
        min_interval_secs: state.settings.automations.min_interval_secs,
    }
}

async fn automation_of(
    state: &AppState,
    deployment_id: &str,
    id: &str,
) -> ApiResult<AutomationRecord> {
    find(
        "automation",
        id,
        state.store.get_automation(deployment_id, id),
    )
    .await
}

fn feature_on(d: &DeploymentRecord) -> ApiResult<()> {
    if d.config.features.automations {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "Automations are off for this deployment (`features.automations` is false).",
        ))
    }
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/automations",
    operation_id = "create_automation",
    tag = "automations",
    summary = "Create an automation",
    description = "Scope `deployments:write`. Stores an automation with `created_by: \"api\"`; without `thread_id` a new thread titled with `name` is created for it (spec §9.4).",
    params(("dep" = String, Path, description = "The deployment id (`dep_…`).")),
    request_body = paddock_protocol::CreateAutomationRequest,
    responses(
        (status = 201, description = "The new automation.", body = paddock_protocol::Automation),
        (status = 400, description = "`validation_error`: a field missing or invalid; an unreadable schedule or one firing more often than the server minimum (`param: \"schedule\"`).", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or `thread_id` is not a thread of this deployment (`param: \"thread_id\"`).", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: `features.automations` is false; the deployment has 100 automations; or an `Idempotency-Key` conflict.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<(StatusCode, Json<Automation>)> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.object()?;
    let empty = serde_json::Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    let a = rules::create(state.store.as_ref(), &d, obj, "api", &settings(&state))
        .await
        .map_err(|e| automation_error(e, ""))?;
    Ok((StatusCode::CREATED, Json(rules::view(&a, &d.config))))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/automations",
    operation_id = "list_automations",
    tag = "automations",
    summary = "List automations",
    description = "Scope `deployments:read`. Newest first (spec §9.4).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of automations.", body = paddock_protocol::Page<paddock_protocol::Automation>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<Json<Page<Automation>>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let page_req = page_request(&query)?;
    let (items, next) = state.store.list_automations(&d.id, &page_req).await?;
    Ok(Json(page(&items, next, |a| rules::view(a, &d.config))))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/automations/{automation}",
    operation_id = "get_automation",
    tag = "automations",
    summary = "Get an automation",
    description = "Scope `deployments:read`. The automation with `runs`: its latest 20 runs, newest first; the full history is `GET …/runs?automation_id=` (spec §9.4).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("automation" = String, Path, description = "The automation id (`auto_…`)."),
    ),
    responses(
        (status = 200, description = "The automation and its latest runs.", body = paddock_protocol::Automation),
        (status = 404, description = "`not_found`: unknown deployment or automation.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Automation>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let a = automation_of(&state, &d.id, ids.get("automation")).await?;
    let filter = RunFilter {
        automation_id: Some(a.id.clone()),
        ..RunFilter::default()
    };
    let latest = PageRequest {
        limit: 20,
        cursor: None,
    };
    let (runs, _) = state.store.list_runs(&d.id, &filter, &latest).await?;
    let mut view = rules::view(&a, &d.config);
    view.runs = Some(
        runs.iter()
            .map(|r| AutomationRun {
                run_id: r.id.clone(),
                status: r.status.clone(),
                trigger: r.trigger.clone(),
                started_at: format_unix(r.created_at),
                finished_at: r.finished_at.map(format_unix),
                thread_id: r.thread_id.clone(),
            })
            .collect(),
    );
    Ok(Json(view))
}

#[utoipa::path(
    patch,
    path = "/v1/deployments/{dep}/automations/{automation}",
    operation_id = "update_automation",
    tag = "automations",
    summary = "Update an automation",
    description = "Scope `deployments:write`. Merges the given fields; others keep their values. `{\"enabled\": false}` pauses, `true` resumes from now; a new `schedule` recomputes `next_run_at` (spec §9.4).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("automation" = String, Path, description = "The automation id (`auto_…`)."),
    ),
    request_body = paddock_protocol::UpdateAutomationRequest,
    responses(
        (status = 200, description = "The automation.", body = paddock_protocol::Automation),
        (status = 400, description = "`validation_error`: a field invalid; an unreadable or too frequent `schedule`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or automation, or `thread_id` is not a thread of this deployment (`param: \"thread_id\"`).", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<Json<Automation>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let current = automation_of(&state, &d.id, ids.get("automation")).await?;
    let body = body.object()?;
    let empty = serde_json::Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    let a = rules::update(state.store.as_ref(), &current, obj, &settings(&state))
        .await
        .map_err(|e| automation_error(e, &current.id))?;
    Ok(Json(rules::view(&a, &d.config)))
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{dep}/automations/{automation}",
    operation_id = "delete_automation",
    tag = "automations",
    summary = "Delete an automation",
    description = "Scope `deployments:write`. Stops future firings; a run in progress continues; the automation's thread and history are kept (spec §9.4).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("automation" = String, Path, description = "The automation id (`auto_…`)."),
    ),
    responses(
        (status = 200, description = "`{\"automation_id\", \"status\": \"deleted\"}`.", body = paddock_protocol::AutomationDeleted),
        (status = 404, description = "`not_found`: unknown deployment or automation.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<AutomationDeleted>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let id = ids.get("automation");
    if !is_id_shaped(id) {
        return Err(super::no_such("automation", id));
    }
    match state.store.delete_automation(&d.id, id).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(super::no_such("automation", id)),
        Err(e) => return Err(e.into()),
    }
    Ok(Json(AutomationDeleted {
        automation_id: id.to_owned(),
        status: "deleted".to_owned(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/automations/{automation}/trigger",
    operation_id = "trigger_automation",
    tag = "automations",
    summary = "Run an automation now",
    description = "Scope `deployments:write`. Stores the instructions in the automation's thread and starts a run with `trigger: \"manual\"`, even while the automation is disabled; `next_run_at` does not change (spec §9.4).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("automation" = String, Path, description = "The automation id (`auto_…`)."),
    ),
    responses(
        (status = 202, description = "The run started.", body = paddock_protocol::AutomationTriggered),
        (status = 402, description = "`insufficient_credits`: the balance is ≤ 0; nothing is stored or started.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or automation.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: `features.automations` is false, or the automation's thread has an active run; `deployment_not_ready`: the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the key's request limit, or a new run would exceed the deployment's active-run limit (8 by default).", body = paddock_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying (≥ 1)."))),
        crate::openapi::CommonErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<(StatusCode, Json<AutomationTriggered>)> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let a = automation_of(&state, &d.id, ids.get("automation")).await?;
    feature_on(&d)?;
    require_ready(&d)?;
    let busy = |thread: &str| {
        ApiError::conflict(format!(
            "Thread {thread} has an active run; wait for it to end or cancel it."
        ))
    };
    // The 409s come before the 402 (spec §1.8); the store checks the thread again in its
    // transaction.
    let thread = state.store.get_thread(&d.id, &a.thread_id).await?;
    if thread.status != "idle" {
        return Err(busy(&a.thread_id));
    }
    super::messages::ensure_credits(&state, &caller.account_id).await?;
    let firing = FireAutomation {
        automation_id: a.id.clone(),
        kind: FiringKind::Manual,
        run_id: new_id(prefix::RUN),
        message_id: new_id(prefix::MESSAGE),
        max_active_runs: state.settings.rate_limits.max_active_runs_per_deployment,
        now: state.settings.automations.clock.now(),
    };
    let started = {
        let guard = state.runtime.bus().lock(&d.id).await;
        match state.store.fire_automation(firing).await {
            Ok(FiringResult::Started(s)) => {
                guard.publish(&s.events);
                s
            }
            Ok(_) => return Err(ApiError::server_error()),
            Err(StoreError::Conflict(_)) => return Err(busy(&a.thread_id)),
            Err(StoreError::NotFound(_)) => return Err(super::no_such("automation", &a.id)),
            Err(StoreError::LimitReached(m)) => {
                return Err(ApiError::rate_limited(
                    format!("{m} Wait for one to finish."),
                    5,
                ));
            }
            Err(e) => return Err(e.into()),
        }
    };
    state.runtime.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(AutomationTriggered {
            automation_id: a.id,
            run_id: started.run.id,
            thread_id: started.thread_id,
            status: "running".to_owned(),
        }),
    ))
}
