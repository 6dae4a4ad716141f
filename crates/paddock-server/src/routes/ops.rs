//! Operational endpoints (spec §17): no key, not rate limited.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::metrics::StatusLabels;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "ops",
    summary = "Liveness",
    description = "No key. `ok` whenever the process serves HTTP (spec §17).",
    responses(
        (status = 200, description = "The process serves HTTP.", body = paddock_protocol::HealthStatus),
    ),
)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "ops",
    summary = "Readiness",
    description = "No key. Ready when the database is reachable and migrated, the sandbox backend answers and the scheduler runs (spec §17).",
    responses(
        (status = 200, description = "Ready; every check `ok`.", body = paddock_protocol::ReadinessStatus),
        (status = 503, description = "`status: \"unavailable\"`; failing checks read `error: <reason>`.", body = paddock_protocol::ReadinessStatus),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let sandbox = match state.sandbox_probe.check().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    // No scheduler exists in this version: nothing there can fail.
    let checks = json!({"database": database, "sandbox": sandbox, "scheduler": "ok"});
    if database == "ok" && sandbox == "ok" {
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

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    description = "No key, unless the operator sets a metrics token: then `Authorization: Bearer <token>` (spec §17).",
    responses(
        (status = 200, description = "Prometheus text format.", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "`unauthorized`: a metrics token is configured and the request did not send it.", body = paddock_protocol::ErrorBody),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "ops",
    summary = "This OpenAPI document",
    description = "No key. The OpenAPI 3.1 document of every `/v1/` endpoint, generated from the code (spec §17).",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = serde_json::Value),
    ),
)]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
