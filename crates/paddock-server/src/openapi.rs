//! The OpenAPI 3.1 document of the `/v1/` API (spec §17), generated from the handlers'
//! annotations and the protocol crate's schemas: never written by hand.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Paddock API",
        description = "Per-customer AI agents: deployments, threads, runs and their event streams."
    ),
    components(schemas(
        paddock_protocol::ErrorBody,
        paddock_protocol::Deployment,
        paddock_protocol::DeploymentSummary,
        paddock_protocol::DeploymentDeleted,
        paddock_protocol::MessageAccepted,
        paddock_protocol::Run,
        paddock_protocol::Thread,
        paddock_protocol::ThreadWithMessages,
        paddock_protocol::Message,
        paddock_protocol::Account,
        paddock_protocol::ApiKey,
    ))
)]
struct ApiDoc;

/// The document served at `/openapi.json`.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
