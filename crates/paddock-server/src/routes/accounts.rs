//! Accounts and credits (spec §16.1), scope `admin`, across all accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{Account, Page};
use paddock_store::{AccountRecord, StoreError};

use super::{PathIds, no_such};
use crate::auth::Caller;
use crate::body::{JsonObject, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::views;

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

pub(crate) async fn list(
    State(state): State<AppState>,
    query: QueryMap,
) -> ApiResult<Json<Page<Account>>> {
    let page_req = page_request(&query)?;
    let (items, next) = state.store.list_accounts(&page_req).await?;
    Ok(Json(page(&items, next, views::account)))
}

async fn account_of(state: &AppState, id: &str) -> ApiResult<AccountRecord> {
    if !is_id_shaped(id) {
        return Err(no_such("account", id));
    }
    match state.store.get_account(id).await {
        Ok(a) => Ok(a),
        Err(StoreError::NotFound(_)) => Err(no_such("account", id)),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn get(State(state): State<AppState>, ids: PathIds) -> ApiResult<Json<Account>> {
    let account = account_of(&state, ids.get("account")).await?;
    Ok(Json(views::account(&account)))
}

pub(crate) async fn credits(
    State(state): State<AppState>,
    ids: PathIds,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Account>> {
    let account = account_of(&state, ids.get("account")).await?;
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
