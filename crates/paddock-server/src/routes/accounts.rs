//! Accounts and credits (spec §16.1), scope `admin`, across all accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{Account, Page};
use paddock_store::{AccountRecord, StoreError};

use super::{PathIds, find, no_such};
use crate::auth::Caller;
use crate::body::{DeferredJson, JsonObject, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::views;

#[utoipa::path(
    post,
    path = "/v1/accounts",
    operation_id = "create_account",
    tag = "accounts",
    summary = "Create an account",
    description = "Scope `admin` (spec §16.1).",
    request_body = paddock_protocol::CreateAccountRequest,
    responses(
        (status = 201, description = "The new account.", body = paddock_protocol::Account),
        (status = 400, description = "`validation_error`: a bad `name` or `balance`.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: `name` is taken; or `conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Account>)> {
    let (name, balance_micros) = crate::validate::account_create(&body)?;
    let account = AccountRecord {
        id: new_id(prefix::ACCOUNT),
        name,
        balance_micros,
        created_at: now_unix(),
    };
    match state.store.create_account(&account).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(views::account(&account)))),
        Err(StoreError::Conflict(_)) => Err(ApiError::conflict(format!(
            "An account named `{}` already exists.",
            account.name
        ))
        .with_param("name")),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/accounts",
    operation_id = "list_accounts",
    tag = "accounts",
    summary = "List accounts",
    description = "Scope `admin`. Every account on the server, newest first (spec §16.1).",
    params(
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of accounts.", body = paddock_protocol::Page<paddock_protocol::Account>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: QueryMap,
) -> ApiResult<Json<Page<Account>>> {
    let page_req = page_request(&query)?;
    let (items, next) = state.store.list_accounts(&page_req).await?;
    Ok(Json(page(&items, next, views::account)))
}

async fn account_of(state: &AppState, id: &str) -> ApiResult<AccountRecord> {
    find("account", id, state.store.get_account(id)).await
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account}",
    operation_id = "get_account",
    tag = "accounts",
    summary = "Get an account",
    description = "Scope `admin` (spec §16.1).",
    params(
        ("account" = String, Path, description = "The account id (`acct_…`)."),
    ),
    responses(
        (status = 200, description = "The account.", body = paddock_protocol::Account),
        (status = 404, description = "`not_found`: unknown account.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(State(state): State<AppState>, ids: PathIds) -> ApiResult<Json<Account>> {
    let account = account_of(&state, ids.get("account")).await?;
    Ok(Json(views::account(&account)))
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account}/credits",
    operation_id = "change_credits",
    tag = "accounts",
    summary = "Add credits or set the balance",
    description = "Scope `admin`. Exactly one of `amount` (added) or `balance` (set; `null` is unlimited) (spec §16.1).",
    params(
        ("account" = String, Path, description = "The account id (`acct_…`)."),
    ),
    request_body = paddock_protocol::CreditsRequest,
    responses(
        (status = 200, description = "The account with its new balance.", body = paddock_protocol::Account),
        (status = 400, description = "`validation_error`: neither or both of `amount`/`balance`; more than 6 decimals.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown account.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: `amount` on an account whose balance is `null` (set a `balance` first); or `conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn credits(
    State(state): State<AppState>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<Json<Account>> {
    let account = account_of(&state, ids.get("account")).await?;
    // Parsed after the lookup: a 404 for the id in the path comes before a 400 (spec §1.8).
    let body = body.object()?;
    let change = crate::validate::credits(&body)?;
    match state.store.update_balance(&account.id, change).await {
        Ok(a) => Ok(Json(views::account(&a))),
        Err(StoreError::Conflict(_)) => Err(ApiError::conflict(
            "The account's balance is unlimited (null); set a `balance` before adding an `amount`.",
        )
        .with_param("amount")),
        Err(StoreError::NotFound(_)) => Err(no_such("account", &account.id)),
        Err(e) => Err(e.into()),
    }
}
