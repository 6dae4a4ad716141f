//! Operational endpoints (spec §17): no key, not rate limited.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::metrics::StatusLabels;
use crate::state::AppState;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    // No sandbox backend and no scheduler exist in this version: nothing there can fail.
    let checks = json!({"database": database, "sandbox": "ok", "scheduler": "ok"});
    if database == "ok" {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "checks": checks})),
        )
            .into_response()
    }
}

pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.settings.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return ApiError::unauthorized("`/metrics` needs the metrics token as a Bearer token.")
                .into_response();
        }
    }
    let m = &state.metrics;
    m.runs_active
        .get_or_create(&StatusLabels {
            status: "running".to_owned(),
        })
        .set(i64::try_from(state.runtime.active_runs()).unwrap_or(i64::MAX));
    match state.store.count_deployments_by_status().await {
        Ok(counts) => {
            for status in ["provisioning", "ready", "error"] {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                m.deployments
                    .get_or_create(&StatusLabels {
                        status: status.to_owned(),
                    })
                    .set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not count deployments for metrics"),
    }
    let mut response = m.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
