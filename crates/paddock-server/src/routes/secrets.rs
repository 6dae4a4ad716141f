//! `/v1/secrets` (spec §15), scope `secrets:write`. Values are sealed with the master key
//! before they reach the store and never leave it through the API; no log line carries one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::{format_unix, now_unix};
use paddock_protocol::{Page, Secret, SecretDeleted};
use paddock_store::{SecretRecord, StoreError};
use serde_json::Value;

use super::{PathIds, find};
use crate::auth::Caller;
use crate::body::{JsonObject, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::state::AppState;
use crate::validate::SecretRefs;

fn view(s: &SecretRecord, used_by: Option<i64>) -> Secret {
    Secret {
        secret_id: s.id.clone(),
        name: s.name.clone(),
        customer_id: s.customer_id.clone(),
        created_at: format_unix(s.created_at),
        used_by,
    }
}

/// The caller's secrets among the ids a deployment body's `secrets` references (id → bound
/// customer), for the validator's reference check (spec §15.2).
pub(crate) async fn referenced(
    state: &AppState,
    account_id: &str,
    body: &Value,
) -> Result<SecretRefs, ApiError> {
    let mut refs = SecretRefs::new();
    let Some(obj) = body.get("secrets").and_then(Value::as_object) else {
        return Ok(refs);
    };
    for id in obj.values().filter_map(Value::as_str).take(200) {
        if !id.starts_with(prefix::SECRET) || !is_id_shaped(id) || refs.contains_key(id) {
            continue;
        }
        match state.store.get_secret(account_id, id).await {
            Ok(s) => {
                refs.insert(id.to_owned(), s.customer_id);
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(refs)
}

#[utoipa::path(
    post,
    path = "/v1/secrets",
    operation_id = "create_secret",
    tag = "secrets",
    summary = "Create a secret",
    description = "Scope `secrets:write`. Stores a credential encrypted (AES-256-GCM); no endpoint ever returns its value (spec §15.1).",
    request_body = paddock_protocol::CreateSecretRequest,
    responses(
        (status = 201, description = "The new secret, without its value.", body = paddock_protocol::Secret),
        (status = 400, description = "`validation_error`: `value` missing, shorter than 8 or longer than 65,536 bytes; a bad `name` or `customer_id`.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the `name` is taken in the account, or the `Idempotency-Key` was used for another request.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<(StatusCode, Json<Secret>)> {
    let new = crate::validate::secret_create(&body)?;
    let Some(secret_box) = &state.runtime.settings().secret_box else {
        return Err(ApiError::from(StoreError::Conflict(
            "This server has no master key; secrets are unavailable.".to_owned(),
        )));
    };
    let id = new_id(prefix::SECRET);
    // From here on the value is a secret: the log writer redacts it (spec §15.3), labelled
    // with the secret's name (or id) until a run uses it under a deployment's key.
    paddock_core::redaction::remember_for_logs(new.name.as_deref().unwrap_or(&id), &new.value);
    let ciphertext = secret_box
        .seal(&id, new.value.as_bytes())
        .map_err(|e| ApiError::from(StoreError::Conflict(e.to_string())))?;
    let record = SecretRecord {
        id,
        account_id: caller.account_id.clone(),
        name: new.name,
        customer_id: new.customer_id,
        ciphertext,
        created_at: now_unix(),
        used_by: 0,
    };
    match state.store.create_secret(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => return Err(ApiError::conflict(m).with_param("name")),
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::CREATED, Json(view(&record, None))))
}

#[utoipa::path(
    get,
    path = "/v1/secrets",
    operation_id = "list_secrets",
    tag = "secrets",
    summary = "List secrets",
    description = "Scope `secrets:write`. The account's secrets, newest first, each with `used_by`; never a value (spec §15.1).",
    params(
        ("customer_id" = Option<String>, Query, description = "Only secrets bound to this `customer_id`."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of secrets.", body = paddock_protocol::Page<paddock_protocol::Secret>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: QueryMap,
) -> ApiResult<Json<Page<Secret>>> {
    let page_req = page_request(&query)?;
    let (items, next) = state
        .store
        .list_secrets(&caller.account_id, query.get("customer_id"), &page_req)
        .await?;
    Ok(Json(page(&items, next, |s| view(s, Some(s.used_by)))))
}

#[utoipa::path(
    delete,
    path = "/v1/secrets/{secret_id}",
    operation_id = "delete_secret",
    tag = "secrets",
    summary = "Delete a secret",
    description = "Scope `secrets:write`. Refused while a deployment references the secret (spec §15.1).",
    params(
        ("secret_id" = String, Path, description = "The secret id (`sec_…`)."),
    ),
    responses(
        (status = 200, description = "`status: \"deleted\"`.", body = paddock_protocol::SecretDeleted),
        (status = 404, description = "`not_found`: unknown secret, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: a deployment still references the secret (the message names one).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<SecretDeleted>> {
    let id = ids.get("secret_id");
    find(
        "secret",
        id,
        state.store.delete_secret(&caller.account_id, id),
    )
    .await?;
    Ok(Json(SecretDeleted {
        secret_id: id.to_owned(),
        status: "deleted".to_owned(),
    }))
}
