//! `/v1/deployments` (spec §3).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::{format_unix, now_unix};
use paddock_protocol::{Deployment, DeploymentDeleted, DeploymentSummary, Page, SnapshotInfo};
use paddock_store::{DeploymentFilter, DeploymentRecord};

use super::{PathIds, deployment_of};
use crate::auth::Caller;
use crate::body::{DeferredJson, JsonObject, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::validate::{SecretRefs, Validator};
use crate::views;

const STATUSES: [&str; 3] = ["provisioning", "ready", "error"];

fn validator<'a>(state: &'a AppState, secrets: &'a SecretRefs) -> Validator<'a> {
    Validator {
        settings: &state.settings,
        models: state.runtime.models(),
        secrets: Some(secrets),
    }
}

#[utoipa::path(
    post,
    path = "/v1/deployments",
    operation_id = "create_deployment",
    tag = "deployments",
    summary = "Create a deployment",
    description = "Scope `deployments:write`. Stores the deployment and its default thread and answers; provisioning continues in the background until `status` is `ready` or `error` (spec §3.5).",
    request_body = paddock_protocol::CreateDeploymentRequest,
    responses(
        (status = 201, description = "The new deployment, normally `status: \"provisioning\"`.", body = paddock_protocol::Deployment),
        (status = 400, description = "`validation_error`: a missing, mistyped or invalid field; a duplicate MCP server or skill name; an unresolved `${NAME}`; an unconfigured model provider.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        (status = 422, description = "`invalid_skill`: a skill cannot be fetched or parsed; `invalid_secret_ref`: a `secrets` value is not a secret of this account, or is bound to another customer.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let refs = super::secrets::referenced(&state, &caller.account_id, &body).await?;
    let new = validator(&state, &refs).deployment_create(&body)?;
    let now = now_unix();
    let mut record = DeploymentRecord {
        id: new_id(prefix::DEPLOYMENT),
        account_id: caller.account_id.clone(),
        customer_id: new.customer_id,
        name: new.name,
        runtime: new.runtime,
        status: "provisioning".to_owned(),
        error: None,
        default_thread_id: new_id(prefix::DEFAULT_THREAD),
        config: new.config,
        created_at: now,
        updated_at: now,
    };
    // Spec §3.5: every skill is fetched and checked before anything is created.
    let skills = match body.get("skills").filter(|v| !v.is_null()) {
        Some(v) => {
            let entries = crate::skills::entries(v)?;
            crate::skills::load_all(&state, &record, entries, &[], now).await?
        }
        None => Vec::new(),
    };
    record.config.skills = crate::skills::summaries(&skills);
    state.store.create_deployment(&record).await?;
    if !skills.is_empty() {
        state
            .store
            .replace_deployment_skills(&record.id, &skills)
            .await?;
    }
    crate::provisioning::start(&state, record.clone());
    Ok((
        StatusCode::CREATED,
        Json(views::deployment(&record, &state.settings.public_url)),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/deployments",
    operation_id = "list_deployments",
    tag = "deployments",
    summary = "List deployments",
    description = "Scope `deployments:read`. The caller's account's deployments as summaries, newest first (spec §3.6).",
    params(
        ("customer_id" = Option<String>, Query, description = "Only deployments of this `customer_id` (exact match)."),
        ("status" = Option<String>, Query, description = "Only deployments in this status: `provisioning`, `ready` or `error`."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of deployment summaries.", body = paddock_protocol::Page<paddock_protocol::DeploymentSummary>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`, or an unknown `status`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryMap,
) -> ApiResult<Json<Page<DeploymentSummary>>> {
    let page_req = page_request(&query)?;
    let status = match query.get("status") {
        None => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_owned()),
        Some(s) => {
            return Err(ApiError::validation(
                "status",
                format!("`status` must be one of provisioning, ready, error; got `{s}`."),
            ));
        }
    };
    let filter = DeploymentFilter {
        customer_id: query.get("customer_id").map(str::to_owned),
        status,
    };
    let (items, next) = state
        .store
        .list_deployments(&caller.account_id, &filter, &page_req)
        .await?;
    Ok(Json(page(&items, next, views::deployment_summary)))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}",
    operation_id = "get_deployment",
    tag = "deployments",
    summary = "Get a deployment",
    description = "Scope `deployments:read` (spec §3.6).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
    ),
    responses(
        (status = 200, description = "The deployment.", body = paddock_protocol::Deployment),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Deployment>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    Ok(Json(views::deployment(&d, &state.settings.public_url)))
}

#[utoipa::path(
    patch,
    path = "/v1/deployments/{dep}",
    operation_id = "update_deployment",
    tag = "deployments",
    summary = "Update a deployment",
    description = "Scope `deployments:write`. Only fields in the body change; the update is validated in full, applied atomically, and used from the next run (spec §3.7).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
    ),
    request_body = paddock_protocol::UpdateDeploymentRequest,
    responses(
        (status = 200, description = "The full deployment after the update.", body = paddock_protocol::Deployment),
        (status = 400, description = "`validation_error`: as for create; also a changed `customer_id` or `runtime`, or a `${NAME}` that no longer resolves.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        (status = 422, description = "`invalid_skill` or `invalid_secret_ref`, as for create.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<Json<Deployment>> {
    let mut d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.object()?;
    let refs = super::secrets::referenced(&state, &caller.account_id, &body).await?;
    let (name, config) = validator(&state, &refs).deployment_patch(&body, &d)?;
    let now = now_unix();
    // Spec §3.7: `skills` is replaced whole; a name that exists keeps its skill id.
    let skills = match body.get("skills").filter(|v| !v.is_null()) {
        Some(v) => {
            let entries = crate::skills::entries(v)?;
            let current = state.store.all_skills(&d.id).await?;
            Some(crate::skills::load_all(&state, &d, entries, &current, now).await?)
        }
        None => None,
    };
    d.name = name;
    d.config = config;
    d.updated_at = now;
    if let Some(skills) = &skills {
        d.config.skills = crate::skills::summaries(skills);
    }
    state.store.update_deployment(&d).await?;
    if let Some(skills) = &skills {
        state.store.replace_deployment_skills(&d.id, skills).await?;
    }
    Ok(Json(views::deployment(&d, &state.settings.public_url)))
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{dep}",
    operation_id = "delete_deployment",
    tag = "deployments",
    summary = "Delete a deployment",
    description = "Scope `deployments:write`. Stops active runs, closes streams and deletes the deployment with everything under it, in any status (spec §3.8).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("retain_filesystem" = Option<bool>, Query, description = "`true`: archive the workspace on the server (kept 30 days by default) before deleting. Default `false`."),
    ),
    responses(
        (status = 200, description = "`status: \"deleted\"`; `snapshot` is set when the workspace was retained.", body = paddock_protocol::DeploymentDeleted),
        (status = 400, description = "`validation_error`: `retain_filesystem` is not `true` or `false`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Json<DeploymentDeleted>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let retain = query.bool("retain_filesystem", false)?;
    let stopped = state
        .store
        .delete_deployment(&caller.account_id, &d.id)
        .await?;
    state.runtime.forget_runs(&stopped);
    state.runtime.bus().close(&d.id);
    let snapshot = crate::provisioning::remove_workspace(&state, &d.id, retain).await;
    Ok(Json(DeploymentDeleted {
        deployment_id: d.id,
        status: "deleted".to_owned(),
        snapshot: snapshot.map(|expires_at| SnapshotInfo {
            expires_at: format_unix(expires_at),
        }),
    }))
}
