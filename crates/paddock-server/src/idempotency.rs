//! `Idempotency-Key` on `POST`s under `/v1/` (spec §1.10).
//!
//! The first request with a key runs and, if it answers below 500, its status and body are
//! stored; a repeat with the same method, path and canonical body gets them back with
//! `Idempotent-Replayed: true`; anything else under the same key (or a repeat while the first
//! is still running) is a 409. Runs after authentication (keys are per account) and after the
//! body-size check (413 comes first in the spec's precedence).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paddock_protocol::time::now_unix;
use paddock_store::{IdempotencyBegin, IdempotencyFingerprint};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::body::read_limited;
use crate::error::ApiError;
use crate::state::AppState;

const HEADER: &str = "idempotency-key";
/// Largest response body kept for replay; larger ones are not stored (the request then
/// behaves as if sent without a key).
const MAX_STORED_RESPONSE: usize = 4 * 1024 * 1024;

fn valid_key(k: &str) -> bool {
    (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// JSON with object keys sorted and no whitespace, so key order and formatting do not matter.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn body_hash(bytes: &[u8]) -> String {
    let digest = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => {
            let mut s = String::with_capacity(bytes.len());
            canonical(&v, &mut s);
            Sha256::digest(s.as_bytes())
        }
        Err(_) => Sha256::digest(bytes),
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The idempotency layer.
pub(crate) async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    // Refused only after the body is read: a 413 comes before idempotency handling (§1.8).
    let key = raw_key
        .to_str()
        .ok()
        .filter(|k| valid_key(k))
        .map(str::to_owned);
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match read_limited(body, state.settings.limits.json_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(key) = key else {
        return ApiError::validation(
            "Idempotency-Key",
            "`Idempotency-Key` must be 1–255 visible ASCII characters.",
        )
        .into_response();
    };
    let fingerprint = IdempotencyFingerprint {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        body_hash: body_hash(&bytes),
    };
    let begin = state
        .store
        .idempotency_begin(&caller.account_id, &key, &fingerprint, now_unix())
        .await;
    match begin {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(IdempotencyBegin::Conflict) => {
            return ApiError::conflict(
                "This Idempotency-Key was used for a different request, or that request is still running.",
            )
            .into_response();
        }
        Ok(IdempotencyBegin::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        Ok(IdempotencyBegin::Fresh) => {}
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let stored = match axum::body::to_bytes(body, MAX_STORED_RESPONSE).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "could not buffer a response for idempotency");
            let _ = state
                .store
                .idempotency_abort(&caller.account_id, &key)
                .await;
            return ApiError::server_error().into_response();
        }
    };
    let outcome = if status.as_u16() < 500 {
        state
            .store
            .idempotency_finish(&caller.account_id, &key, status.as_u16(), &stored)
            .await
    } else {
        state
            .store
            .idempotency_abort(&caller.account_id, &key)
            .await
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not record an idempotent response");
    }
    Response::from_parts(parts, Body::from(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_spacing() {
        assert_eq!(
            body_hash(br#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#),
            body_hash(br#"{"a":{"x":null,"y":[1,2]},"b":1}"#)
        );
        assert_ne!(body_hash(br#"{"a":1}"#), body_hash(br#"{"a":2}"#));
    }
}
