//! Authentication, scopes and request-rate limits for `/v1/` (spec §1.2, §1.3, §1.11).
//!
//! Runs before routing, so an unknown `/v1/` path without a valid key is a 401. The scope an
//! endpoint needs follows from its method and path prefix alone (§1.3), which lets this one
//! layer give 401, then 403, then 429 in the spec's order of precedence.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paddock_protocol::ids::is_api_key_shaped;
use paddock_protocol::scope;
use paddock_protocol::time::now_unix;

use crate::error::ApiError;
use crate::keys::hash_key;
use crate::state::AppState;

/// Seconds between writes of a key's `last_used_at` (the spec allows a minute of lag).
const TOUCH_INTERVAL_SECS: i64 = 60;

/// Who is calling: the key and its account. Inserted into request extensions by [`layer`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub key_id: String,
    pub account_id: String,
    pub scopes: Vec<String>,
}

impl Caller {
    pub(crate) fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == scope::ADMIN)
    }

    /// Whether the key carries `needed` (admin grants everything within its own account).
    pub(crate) fn has(&self, needed: &str) -> bool {
        self.is_admin() || self.scopes.iter().any(|s| s == needed)
    }
}

/// The scope a `/v1/` request needs, from its method and path; `None` for paths that are no
/// endpoint (they answer 404 after authentication).
fn required_scope(method: &Method, path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/v1/")?;
    let first = rest.split('/').next().unwrap_or("");
    match first {
        "deployments" if method == Method::GET => Some(scope::DEPLOYMENTS_READ),
        "deployments" => Some(scope::DEPLOYMENTS_WRITE),
        "secrets" => Some(scope::SECRETS_WRITE),
        "accounts" | "keys" => Some(scope::ADMIN),
        _ => None,
    }
}

/// When each key's `last_used_at` was last written, to keep that write off most requests.
#[derive(Default)]
pub(crate) struct TouchBook(Mutex<HashMap<String, i64>>);

impl TouchBook {
    fn due(&self, key_id: &str, now: i64) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key_id) {
            Some(t) if now - t < TOUCH_INTERVAL_SECS => false,
            _ => {
                map.insert(key_id.to_owned(), now);
                true
            }
        }
    }
}

/// The `/v1/` authentication layer. Wraps the whole router, so it sees the full path; paths
/// outside `/v1/` (the operational endpoints) pass untouched.
pub(crate) async fn layer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    let needed = required_scope(request.method(), request.uri().path());
    match authenticate(&state, bearer.as_deref(), needed).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate(
    state: &AppState,
    bearer: Option<&str>,
    needed: Option<&'static str>,
) -> Result<Caller, ApiError> {
    let unauthorized =
        || ApiError::unauthorized("Send a valid API key as `Authorization: Bearer pdk_…`.");
    let text = bearer.ok_or_else(unauthorized)?;
    if !is_api_key_shaped(text) {
        return Err(unauthorized());
    }
    let key = state
        .store
        .key_by_hash(&hash_key(text))
        .await?
        .ok_or_else(unauthorized)?;
    let now = now_unix();
    if key.revoked_at.is_some() {
        return Err(ApiError::unauthorized("This API key has been revoked."));
    }
    if key.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthorized("This API key has expired."));
    }
    let caller = Caller {
        key_id: key.id,
        account_id: key.account_id,
        scopes: key.scopes,
    };
    if let Some(needed) = needed
        && !caller.has(needed)
    {
        return Err(ApiError::forbidden(format!(
            "This key lacks the `{needed}` scope this endpoint needs."
        )));
    }
    let limits = &state.settings.rate_limits;
    if let Some(rate) = limits.requests_per_second {
        let burst = limits
            .request_burst
            .unwrap_or_else(|| rate.ceil().max(1.0) as u32);
        // Several nodes share one bucket per key in the database; one node keeps it in
        // memory (no write per request).
        let waited = if state.store.is_shared() {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            state
                .store
                .take_request_token(&caller.key_id, rate, burst, now_ms)
                .await
                .map_err(ApiError::from)?
                .map(|ms| {
                    u64::try_from((ms.max(0) + 999) / 1000)
                        .unwrap_or(1)
                        .clamp(1, 3600)
                })
        } else {
            state.limiter.take(&caller.key_id, rate, burst).err()
        };
        if let Some(wait) = waited {
            return Err(ApiError::rate_limited(
                "Too many requests for this key; slow down.",
                wait,
            ));
        }
    }
    if state.touches.due(&caller.key_id, now)
        && let Err(e) = state.store.touch_key(&caller.key_id, now).await
    {
        tracing::warn!(error = %e, "could not record key use");
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_method_and_prefix() {
        assert_eq!(
            required_scope(&Method::GET, "/v1/deployments/dep_1/events"),
            Some(scope::DEPLOYMENTS_READ)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/deployments"),
            Some(scope::DEPLOYMENTS_WRITE)
        );
        assert_eq!(required_scope(&Method::GET, "/v1/keys"), Some(scope::ADMIN));
        assert_eq!(
            required_scope(&Method::GET, "/v1/secrets"),
            Some(scope::SECRETS_WRITE)
        );
        assert_eq!(required_scope(&Method::GET, "/v1/nothing"), None);
    }
}
