//! Threads (spec §8).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{Page, Thread, ThreadWithMessages};
use paddock_store::{StoreError, ThreadRecord};
use serde_json::{Value, json};

use super::{PathIds, deployment_of, no_such};
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
    if !is_id_shaped(thread_id) {
        return Err(no_such("thread", thread_id));
    }
    match state.store.get_thread(deployment_id, thread_id).await {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound(_)) => Err(no_such("thread", thread_id)),
        Err(e) => Err(e.into()),
    }
}

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
