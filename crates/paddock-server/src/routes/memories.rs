//! Memories (spec §10): short facts about the customer, shared by a deployment's threads. The
//! database is authoritative; each change here also rewrites the memory's file in the
//! read-only mirror `.paddock/memory/` (failures there are logged: the next run resyncs).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_core::memory::{MAX_CONTENT_CHARS, MAX_MEMORIES, mirror_remove, mirror_write};
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::{format_unix, now_unix};
use paddock_protocol::{Memory, MemoryDeleted, Page};
use paddock_store::{MemoryFilter, MemoryRecord, StoreError};
use serde_json::Value;

use super::{PathIds, deployment_of, find};
use crate::auth::Caller;
use crate::body::{DeferredJson, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;

/// The wire form of a memory.
pub(crate) fn view(m: &MemoryRecord) -> Memory {
    Memory {
        memory_id: m.id.clone(),
        content: m.content.clone(),
        source: m.source.clone(),
        run_id: m.run_id.clone(),
        created_at: format_unix(m.created_at),
        updated_at: format_unix(m.updated_at),
    }
}

/// `content`: required, a string of 1–10,000 characters.
fn content(body: &Value) -> ApiResult<String> {
    match body.get("content") {
        None | Some(Value::Null) => Err(ApiError::validation(
            "content",
            "`content` is required: the memory's text, 1–10,000 characters.",
        )),
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                Err(ApiError::validation(
                    "content",
                    "`content` must not be empty.",
                ))
            } else if s.chars().count() > MAX_CONTENT_CHARS {
                Err(ApiError::validation(
                    "content",
                    format!("`content` is longer than {MAX_CONTENT_CHARS} characters."),
                ))
            } else {
                Ok(s.clone())
            }
        }
        Some(_) => Err(ApiError::validation(
            "content",
            "`content` must be a string.",
        )),
    }
}

fn mirror(
    state: &AppState,
    deployment_id: &str,
    change: impl FnOnce(&paddock_core::Workspace) -> Result<(), paddock_core::workspace::FsError>,
) {
    let ws = state.runtime.workspace(deployment_id);
    if !ws.root().is_dir() {
        // Not provisioned yet: the first run writes the whole mirror.
        return;
    }
    if let Err(e) = change(&ws) {
        tracing::warn!(deployment_id, error = %e, "memory mirror update failed");
    }
}

async fn memory_of(state: &AppState, deployment_id: &str, id: &str) -> ApiResult<MemoryRecord> {
    find("memory", id, state.store.get_memory(deployment_id, id)).await
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/memories",
    operation_id = "create_memory",
    tag = "memories",
    summary = "Create a memory",
    description = "Scope `deployments:write`. Stores a memory with `source: \"api\"`; it is in the agent's context from the next run (spec §10).",
    params(("dep" = String, Path, description = "The deployment id (`dep_…`).")),
    request_body = paddock_protocol::MemoryContentRequest,
    responses(
        (status = 201, description = "The new memory.", body = paddock_protocol::Memory),
        (status = 400, description = "`validation_error`: `content` missing, empty or too long.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the deployment has 10,000 memories; or an `Idempotency-Key` conflict.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<(StatusCode, Json<Memory>)> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.object()?;
    let content = content(&body)?;
    let now = now_unix();
    let m = MemoryRecord {
        id: new_id(prefix::MEMORY),
        deployment_id: d.id.clone(),
        content,
        source: "api".to_owned(),
        run_id: None,
        created_at: now,
        updated_at: now,
    };
    match state.store.create_memory(&m, MAX_MEMORIES).await {
        Ok(()) => {}
        Err(StoreError::LimitReached(message)) => return Err(ApiError::conflict(message)),
        Err(e) => return Err(e.into()),
    }
    mirror(&state, &d.id, |ws| mirror_write(ws, &m));
    Ok((StatusCode::CREATED, Json(view(&m))))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/memories",
    operation_id = "list_memories",
    tag = "memories",
    summary = "List memories",
    description = "Scope `deployments:read`. Newest first; `q` filters by a case-insensitive substring of `content`, `source` by origin (spec §10).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("q" = Option<String>, Query, description = "Case-insensitive substring of `content`."),
        ("source" = Option<String>, Query, description = "`api` or `agent`."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of memories.", body = paddock_protocol::Page<paddock_protocol::Memory>),
        (status = 400, description = "`validation_error`: unknown `source`; `limit` outside 1–100 or an unknown `cursor`.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<Json<Page<Memory>>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let source = match query.get("source") {
        None => None,
        Some(s @ ("api" | "agent")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::validation(
                "source",
                "`source` must be `api` or `agent`.",
            ));
        }
    };
    let q = query.get("q").filter(|q| !q.is_empty()).map(str::to_owned);
    let page_req = page_request(&query)?;
    let filter = MemoryFilter { q, source };
    let (items, next) = state.store.list_memories(&d.id, &filter, &page_req).await?;
    Ok(Json(page(&items, next, view)))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/memories/{memory}",
    operation_id = "get_memory",
    tag = "memories",
    summary = "Get a memory",
    description = "Scope `deployments:read` (spec §10).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("memory" = String, Path, description = "The memory id (`mem_…`)."),
    ),
    responses(
        (status = 200, description = "The memory.", body = paddock_protocol::Memory),
        (status = 404, description = "`not_found`: unknown deployment or memory.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Memory>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let m = memory_of(&state, &d.id, ids.get("memory")).await?;
    Ok(Json(view(&m)))
}

#[utoipa::path(
    patch,
    path = "/v1/deployments/{dep}/memories/{memory}",
    operation_id = "update_memory",
    tag = "memories",
    summary = "Update a memory",
    description = "Scope `deployments:write`. Replaces `content`; `source` never changes (spec §10).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("memory" = String, Path, description = "The memory id (`mem_…`)."),
    ),
    request_body = paddock_protocol::MemoryContentRequest,
    responses(
        (status = 200, description = "The memory.", body = paddock_protocol::Memory),
        (status = 400, description = "`validation_error`: `content` missing, empty or too long.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or memory.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<Json<Memory>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let m = memory_of(&state, &d.id, ids.get("memory")).await?;
    let body = body.object()?;
    let content = content(&body)?;
    let m = match state
        .store
        .update_memory(&d.id, &m.id, &content, now_unix())
        .await
    {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => return Err(super::no_such("memory", &m.id)),
        Err(e) => return Err(e.into()),
    };
    mirror(&state, &d.id, |ws| mirror_write(ws, &m));
    Ok(Json(view(&m)))
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{dep}/memories/{memory}",
    operation_id = "delete_memory",
    tag = "memories",
    summary = "Delete a memory",
    description = "Scope `deployments:write`. Gone for good: absent from the next run's context and from the mirror (spec §10).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("memory" = String, Path, description = "The memory id (`mem_…`)."),
    ),
    responses(
        (status = 200, description = "`{\"memory_id\", \"status\": \"deleted\"}`.", body = paddock_protocol::MemoryDeleted),
        (status = 404, description = "`not_found`: unknown deployment or memory.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<MemoryDeleted>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let id = ids.get("memory");
    if !paddock_protocol::ids::is_id_shaped(id) {
        return Err(super::no_such("memory", id));
    }
    match state.store.delete_memory(&d.id, id).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(super::no_such("memory", id)),
        Err(e) => return Err(e.into()),
    }
    mirror(&state, &d.id, |ws| mirror_remove(ws, id));
    Ok(Json(MemoryDeleted {
        memory_id: id.to_owned(),
        status: "deleted".to_owned(),
    }))
}
