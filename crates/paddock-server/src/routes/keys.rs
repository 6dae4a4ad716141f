//! API keys (spec §16.2), scope `admin`, across all accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::is_id_shaped;
use paddock_protocol::time::now_unix;
use paddock_protocol::{ApiKey, Page};
use paddock_store::StoreError;
use serde_json::{Value, json};

use super::{PathIds, no_such};
use crate::auth::Caller;
use crate::body::{JsonObject, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::keys::make_key;
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::views;

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<ApiKey>)> {
    let now = now_unix();
    let req = crate::validate::key_create(&body, now)?;
    let account_id = req.account_id.unwrap_or_else(|| caller.account_id.clone());
    let unknown =
        || ApiError::not_found(format!("No account {account_id}.")).with_param("account_id");
    if !is_id_shaped(&account_id) {
        return Err(unknown());
    }
    match state.store.get_account(&account_id).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => return Err(unknown()),
        Err(e) => return Err(e.into()),
    }
    let key = make_key(&account_id, &req.name, req.scopes, req.expires_at);
    state.store.create_key(&key.record).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::key(&key.record, Some(key.text), now)),
    ))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    query: QueryMap,
) -> ApiResult<Json<Page<ApiKey>>> {
    let page_req = page_request(&query)?;
    let (items, next) = state
        .store
        .list_keys(query.get("account_id"), &page_req)
        .await?;
    let now = now_unix();
    Ok(Json(page(&items, next, |k| views::key(k, None, now))))
}

pub(crate) async fn revoke(State(state): State<AppState>, ids: PathIds) -> ApiResult<Json<Value>> {
    let key_id = ids.get("key");
    if !is_id_shaped(key_id) {
        return Err(no_such("key", key_id));
    }
    match state.store.revoke_key(key_id, now_unix()).await {
        Ok(k) => Ok(Json(json!({"key_id": k.id, "status": "revoked"}))),
        Err(StoreError::NotFound(_)) => Err(no_such("key", key_id)),
        Err(e) => Err(e.into()),
    }
}
