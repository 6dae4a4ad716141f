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

#[utoipa::path(
    post,
    path = "/v1/keys",
    operation_id = "create_key",
    tag = "keys",
    summary = "Create an API key",
    description = "Scope `admin`. The key text is in this response only; Paddock stores a hash (spec §16.2).",
    request_body = paddock_protocol::CreateKeyRequest,
    responses(
        (status = 201, description = "The new key, with `key`.", body = paddock_protocol::ApiKey),
        (status = 400, description = "`validation_error`: a bad `name` or `scopes`, or an `expires_at` not in the future.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown `account_id`.", body = paddock_protocol::ErrorBody),
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

#[utoipa::path(
    get,
    path = "/v1/keys",
    operation_id = "list_keys",
    tag = "keys",
    summary = "List API keys",
    description = "Scope `admin`. Keys without their text, newest first; revoked keys stay listed (spec §16.2).",
    params(
        ("account_id" = Option<String>, Query, description = "Only keys of this account."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of keys (never with `key`).", body = paddock_protocol::Page<paddock_protocol::ApiKey>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
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

#[utoipa::path(
    delete,
    path = "/v1/keys/{key}",
    operation_id = "revoke_key",
    tag = "keys",
    summary = "Revoke an API key",
    description = "Scope `admin`. Revoked keys cannot be reactivated; a key may revoke itself (spec §16.2).",
    params(
        ("key" = String, Path, description = "The key id (`key_…`), not the secret."),
    ),
    responses(
        (status = 200, description = "`status: \"revoked\"`.", body = paddock_protocol::KeyRevoked),
        (status = 404, description = "`not_found`: unknown key.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the last active `admin` key on the server.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
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
