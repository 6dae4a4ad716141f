//! The router: one module per resource, assembled here with the layers every request passes
//! (request id → authentication for `/v1/` → idempotency → handler).

pub(crate) mod accounts;
pub(crate) mod automations;
pub(crate) mod deployments;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod keys;
pub(crate) mod memories;
pub(crate) mod messages;
pub(crate) mod ops;
pub(crate) mod runs;
pub(crate) mod secrets;
pub(crate) mod skills;
pub(crate) mod threads;
pub(crate) mod tools;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use paddock_store::{DeploymentRecord, StoreError};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The whole HTTP application.
pub(crate) fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route(
            "/deployments/{dep}",
            get(deployments::get)
                .patch(deployments::patch)
                .delete(deployments::delete),
        )
        .route("/deployments/{dep}/messages", post(messages::send))
        .route("/deployments/{dep}/runs", get(runs::list))
        .route("/deployments/{dep}/runs/{run}", get(runs::get))
        .route("/deployments/{dep}/runs/{run}/cancel", post(runs::cancel))
        .route(
            "/deployments/{dep}/runs/{run}/steering",
            post(runs::steering),
        )
        .route("/deployments/{dep}/events", get(events::subscribe))
        .route(
            "/deployments/{dep}/files",
            get(files::list).put(files::write).delete(files::delete),
        )
        .route("/deployments/{dep}/files/content", get(files::read))
        .route("/deployments/{dep}/tools", get(tools::list))
        .route(
            "/deployments/{dep}/tools/{name}",
            axum::routing::patch(tools::patch),
        )
        .route(
            "/deployments/{dep}/skills",
            post(skills::create).get(skills::list),
        )
        .route(
            "/deployments/{dep}/skills/{skill}",
            get(skills::get).put(skills::put).delete(skills::delete),
        )
        .route(
            "/deployments/{dep}/memories",
            post(memories::create).get(memories::list),
        )
        .route(
            "/deployments/{dep}/memories/{memory}",
            get(memories::get)
                .patch(memories::patch)
                .delete(memories::delete),
        )
        .route(
            "/deployments/{dep}/automations",
            post(automations::create).get(automations::list),
        )
        .route(
            "/deployments/{dep}/automations/{automation}",
            get(automations::get)
                .patch(automations::patch)
                .delete(automations::delete),
        )
        .route(
            "/deployments/{dep}/automations/{automation}/trigger",
            post(automations::trigger),
        )
        .route(
            "/deployments/{dep}/threads",
            post(threads::create).get(threads::list),
        )
        .route(
            "/deployments/{dep}/threads/{thread}",
            get(threads::get)
                .patch(threads::patch)
                .delete(threads::delete),
        )
        .route("/accounts", post(accounts::create).get(accounts::list))
        .route("/accounts/{account}", get(accounts::get))
        .route("/accounts/{account}/credits", post(accounts::credits))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{key}", axum::routing::delete(keys::revoke))
        .route("/secrets", post(secrets::create).get(secrets::list))
        .route(
            "/secrets/{secret_id}",
            axum::routing::delete(secrets::delete),
        )
        .fallback(unknown_route)
        // A known path with another method is an unknown route too (spec §1.8), in the envelope.
        .method_not_allowed_fallback(unknown_route)
        .route_layer(from_fn(crate::request_id::tag_route))
        .layer(from_fn_with_state(state.clone(), crate::idempotency::layer));

    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .method_not_allowed_fallback(unknown_route)
        .route_layer(from_fn(crate::request_id::tag_route))
        .nest("/v1", v1)
        .fallback(unknown_route)
        // Authentication wraps the whole app, not the nested `/v1` router: nesting strips the
        // `/v1` prefix (the scope check needs the full path) and unknown `/v1/` paths would
        // miss it. It lets every path outside `/v1/` through.
        .layer(from_fn_with_state(state.clone(), crate::auth::layer))
        .layer(from_fn_with_state(state.clone(), crate::request_id::layer))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("No such endpoint.")
}

/// The 404 for an id in the path: the same body whether the id never existed, was deleted,
/// or belongs to another account.
pub(crate) fn no_such(kind: &str, id: &str) -> ApiError {
    ApiError::not_found(format!("No {kind} {id}."))
}

/// Looks up the `kind` named `id` in the path: an id that cannot be one of ours, or that the
/// store does not find (missing, deleted, another account's), is the same [`no_such`] 404.
pub(crate) async fn find<T>(
    kind: &str,
    id: &str,
    lookup: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    if !paddock_protocol::ids::is_id_shaped(id) {
        return Err(no_such(kind, id));
    }
    match lookup.await {
        Ok(found) => Ok(found),
        Err(StoreError::NotFound(_)) => Err(no_such(kind, id)),
        Err(e) => Err(e.into()),
    }
}

/// The caller's deployment `id`, or the 404 that hides whether it exists elsewhere.
pub(crate) async fn deployment_of(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<DeploymentRecord, ApiError> {
    find(
        "deployment",
        id,
        state.store.get_deployment(&caller.account_id, id),
    )
    .await
}

/// Refuses operations that need a `ready` deployment (spec §3.2).
pub(crate) fn require_ready(d: &DeploymentRecord) -> Result<(), ApiError> {
    if d.status == "ready" {
        Ok(())
    } else {
        Err(ApiError::new(
            paddock_protocol::ErrorCode::DeploymentNotReady,
            format!(
                "Deployment {} is `{}`; this needs it `ready`.",
                d.id, d.status
            ),
        ))
    }
}

/// The ids in a request's path. A segment that cannot be decoded names nothing, so it is a 404
/// like any unknown id.
pub(crate) struct PathIds(std::collections::HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(
            parts, state,
        )
        .await
        .map(|p| PathIds(p.0))
        .map_err(|_| ApiError::not_found("No such resource."))
    }
}

impl PathIds {
    /// The segment named `name` in the route template (empty if absent).
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
}
