//! Threads (spec §8).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{Page, Thread, ThreadWithMessages};
use paddock_store::{StoreError, ThreadRecord};
use serde_json::{Value, json};

use super::{PathIds, deployment_of, find, no_such};
use crate::auth::Caller;
use crate::body::{DeferredJson, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::views;

async fn thread_of(
    state: &AppState,
    deployment_id: &str,
    thread_id: &str,
) -> ApiResult<ThreadRecord> {
    find(
        "thread",
        thread_id,
        state.store.get_thread(deployment_id, thread_id),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/threads",
    operation_id = "create_thread",
    tag = "threads",
    summary = "Create a thread",
    description = "Scope `deployments:write`. Creating a thread starts no run; the body may be empty (spec §8.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
    ),
    request_body = Option<paddock_protocol::CreateThreadRequest>,
    responses(
        (status = 201, description = "The new thread.", body = paddock_protocol::Thread),
        (status = 400, description = "`validation_error`: `title` too long or not a string.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<(StatusCode, Json<Thread>)> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.optional_object()?;
    let title = crate::validate::thread_title(&body)?.flatten();
    let thread = state
        .store
        .create_thread(&d.id, &new_id(prefix::THREAD), title.as_deref(), now_unix())
        .await?;
    Ok((StatusCode::CREATED, Json(views::thread(&thread))))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/threads",
    operation_id = "list_threads",
    tag = "threads",
    summary = "List threads",
    description = "Scope `deployments:read`. Newest first (spec §8.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of threads.", body = paddock_protocol::Page<paddock_protocol::Thread>),
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
) -> ApiResult<Json<Page<Thread>>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let page_req = page_request(&query)?;
    let (items, next) = state.store.list_threads(&d.id, &page_req).await?;
    Ok(Json(page(&items, next, views::thread)))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/threads/{thread}",
    operation_id = "get_thread",
    tag = "threads",
    summary = "Get a thread with messages",
    description = "Scope `deployments:read`. The newest `messages_limit` messages older than `messages_before` (or overall), in chronological order; page back by passing the first returned `message_id` as `messages_before` (spec §8.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("thread" = String, Path, description = "The thread id (`thr_…`)."),
        ("messages_limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many messages, 1–500. Default 100."),
        ("messages_before" = Option<String>, Query, description = "A `message_id` of this thread: only older messages."),
    ),
    responses(
        (status = 200, description = "The thread with `messages` and `has_more_messages`.", body = paddock_protocol::ThreadWithMessages),
        (status = 400, description = "`validation_error`: a bad `messages_limit`; `messages_before` is not a message of this thread.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or thread.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Json<ThreadWithMessages>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let thread = thread_of(&state, &d.id, ids.get("thread")).await?;
    let limit = query.int_in("messages_limit", 1..=500, 100)?;
    let before = query.get("messages_before");
    let not_here = || {
        ApiError::validation(
            "messages_before",
            "`messages_before` must be the id of a message of this thread.",
        )
    };
    if before.is_some_and(|b| !is_id_shaped(b)) {
        return Err(not_here());
    }
    let (messages, more) = match state.store.thread_messages(&thread.id, limit, before).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => return Err(not_here()),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(ThreadWithMessages {
        thread: views::thread(&thread),
        messages: messages.iter().map(views::message).collect(),
        has_more_messages: more,
    }))
}

#[utoipa::path(
    patch,
    path = "/v1/deployments/{dep}/threads/{thread}",
    operation_id = "update_thread",
    tag = "threads",
    summary = "Rename a thread",
    description = "Scope `deployments:write` (spec §8.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("thread" = String, Path, description = "The thread id (`thr_…`)."),
    ),
    request_body = paddock_protocol::UpdateThreadRequest,
    responses(
        (status = 200, description = "The thread.", body = paddock_protocol::Thread),
        (status = 400, description = "`validation_error`: `title` too long or not a string.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or thread.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<Json<Thread>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let thread = thread_of(&state, &d.id, ids.get("thread")).await?;
    let body = body.object()?;
    let thread = match crate::validate::thread_title(&body)? {
        None => thread,
        Some(title) => {
            state
                .store
                .set_thread_title(&d.id, &thread.id, title.as_deref())
                .await?
        }
    };
    Ok(Json(views::thread(&thread)))
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{dep}/threads/{thread}",
    operation_id = "delete_thread",
    tag = "threads",
    summary = "Delete a thread",
    description = "Scope `deployments:write`. Removes the thread, its messages and its runs; memory and files are untouched (spec §8.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("thread" = String, Path, description = "The thread id (`thr_…`)."),
    ),
    responses(
        (status = 200, description = "`status: \"deleted\"`.", body = paddock_protocol::ThreadDeleted),
        (status = 404, description = "`not_found`: unknown deployment or thread.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the default thread; the thread has an active run (cancel it first); an automation targets it.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Value>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let thread = thread_of(&state, &d.id, ids.get("thread")).await?;
    match state.store.delete_thread(&d.id, &thread.id).await {
        Ok(()) => Ok(Json(json!({"thread_id": thread.id, "status": "deleted"}))),
        Err(StoreError::NotFound(_)) => Err(no_such("thread", &thread.id)),
        Err(e) => Err(e.into()),
    }
}
