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
use crate::validate::Validator;
use crate::views;

const STATUSES: [&str; 3] = ["provisioning", "ready", "error"];

fn validator(state: &AppState) -> Validator<'_> {
    Validator {
        settings: &state.settings,
        models: state.runtime.models(),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let new = validator(&state).deployment_create(&body)?;
    let now = now_unix();
    let record = DeploymentRecord {
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
    state.store.create_deployment(&record).await?;
    crate::provisioning::start(&state, record.clone());
    Ok((
        StatusCode::CREATED,
        Json(views::deployment(&record, &state.settings.public_url)),
    ))
}

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

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Deployment>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    Ok(Json(views::deployment(&d, &state.settings.public_url)))
}

pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<Json<Deployment>> {
    let mut d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.object()?;
    let (name, config) = validator(&state).deployment_patch(&body, &d)?;
    d.name = name;
    d.config = config;
    d.updated_at = now_unix();
    state.store.update_deployment(&d).await?;
    Ok(Json(views::deployment(&d, &state.settings.public_url)))
}

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
