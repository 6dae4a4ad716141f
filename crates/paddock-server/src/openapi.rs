//! The OpenAPI 3.1 document of the `/v1/` API (spec §17), generated from the handlers'
//! `#[utoipa::path]` annotations and the protocol crate's schemas: never written by hand.
//!
//! Every handler in `routes` carries its own annotation; this module lists them, adds the bearer
//! security scheme and holds the pieces the annotations share (paging parameters, the error
//! responses every `/v1/` endpoint can give). The handler modules are private to `routes`, so
//! their operations are reached through the `__path_*` re-exports at the top of `routes`.

use paddock_protocol::ErrorBody;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayItems, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

use crate::routes;

/// The name of the security scheme the `/v1/` operations require.
pub(crate) const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Paddock API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Per-customer AI agents: deployments, threads, runs and their event streams. \
                       Every `/v1/` request sends `Authorization: Bearer <key>`; errors are \
                       `{\"error\": {\"code\", \"message\", \"param\"}}` (spec §1.8)."
    ),
    paths(
        routes::deployments::create,
        routes::deployments::list,
        routes::deployments::get,
        routes::deployments::patch,
        routes::deployments::delete,
        routes::messages::send,
        routes::runs::list,
        routes::runs::get,
        routes::runs::cancel,
        routes::runs::steering,
        routes::events::subscribe,
        routes::files::list,
        routes::files::read,
        routes::files::write,
        routes::files::delete,
        routes::tools::list,
        routes::tools::patch,
        routes::skills::create,
        routes::skills::list,
        routes::skills::get,
        routes::skills::put,
        routes::skills::delete,
        routes::memories::create,
        routes::memories::list,
        routes::memories::get,
        routes::memories::patch,
        routes::memories::delete,
        routes::automations::create,
        routes::automations::list,
        routes::automations::get,
        routes::automations::patch,
        routes::automations::delete,
        routes::automations::trigger,
        routes::threads::create,
        routes::threads::list,
        routes::threads::get,
        routes::threads::patch,
        routes::threads::delete,
        routes::accounts::create,
        routes::accounts::list,
        routes::accounts::get,
        routes::accounts::credits,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::secrets::create,
        routes::secrets::list,
        routes::secrets::delete,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
        routes::ops::openapi,
    ),
    components(schemas(
        paddock_protocol::ErrorBody,
        paddock_protocol::ErrorDetail,
        paddock_protocol::ErrorCode,
        paddock_protocol::Deployment,
        paddock_protocol::DeploymentSummary,
        paddock_protocol::DeploymentDeleted,
        paddock_protocol::MessageAccepted,
        paddock_protocol::Run,
        paddock_protocol::Thread,
        paddock_protocol::Memory,
        paddock_protocol::Automation,
        paddock_protocol::AutomationRun,
        paddock_protocol::AutomationDeleted,
        paddock_protocol::AutomationTriggered,
        paddock_protocol::CreateAutomationRequest,
        paddock_protocol::UpdateAutomationRequest,
        paddock_protocol::Skill,
        paddock_protocol::SkillEntryRequest,
        paddock_protocol::SkillDeleted,
        paddock_protocol::MemoryContentRequest,
        paddock_protocol::MemoryDeleted,
        paddock_protocol::ThreadWithMessages,
        paddock_protocol::ThreadDeleted,
        paddock_protocol::Message,
        paddock_protocol::Account,
        paddock_protocol::ApiKey,
        paddock_protocol::KeyRevoked,
        paddock_protocol::Secret,
        paddock_protocol::SecretDeleted,
        paddock_protocol::CreateSecretRequest,
        paddock_protocol::CreateDeploymentRequest,
        paddock_protocol::UpdateDeploymentRequest,
        paddock_protocol::SendMessageRequest,
        paddock_protocol::CreateThreadRequest,
        paddock_protocol::UpdateThreadRequest,
        paddock_protocol::SteeringAnswerRequest,
        paddock_protocol::CreateAccountRequest,
        paddock_protocol::CreditsRequest,
        paddock_protocol::CreateKeyRequest,
        paddock_protocol::HealthStatus,
        paddock_protocol::ReadinessStatus,
        routes::files::FileEntry,
        routes::files::FileListing,
        routes::files::FileWritten,
        routes::files::FileDeleted,
        routes::files::WriteFileRequest,
    )),
    modifiers(&BearerAuth, &OptionalBodies, &PageItemRefs),
    tags(
        (name = "deployments", description = "Deployments: one isolated agent per customer (spec §3)."),
        (name = "messages", description = "Sending messages to a deployment (spec §4)."),
        (name = "runs", description = "Runs, cancellation and steering answers (spec §5, §6)."),
        (name = "events", description = "The deployment's Server-Sent Events stream (spec §7)."),
        (name = "threads", description = "Conversations within a deployment (spec §8)."),
        (name = "automations", description = "Instructions run on a schedule (spec §9)."),
        (name = "memories", description = "Facts the agent keeps about the customer (spec §10)."),
        (name = "skills", description = "SKILL.md playbooks the agent can read (spec §12)."),
        (name = "tools", description = "Which tools a deployment's runs get (spec §13)."),
        (name = "files", description = "The deployment's workspace files (spec §11)."),
        (name = "accounts", description = "Accounts and credits, scope `admin` (spec §16.1)."),
        (name = "keys", description = "API keys, scope `admin` (spec §16.2)."),
        (name = "secrets", description = "Secrets for MCP headers, scope `secrets:write` (spec §15)."),
        (name = "ops", description = "Health, readiness, metrics and this document; no key (spec §17)."),
    )
)]
struct ApiDoc;

/// Adds the bearer-key security scheme (spec §1.2) the `/v1/` operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pdk_ + 40 base62 characters")
                    .description(Some(
                        "An API key: `Authorization: Bearer pdk_…`. Scopes: `deployments:read`, \
                         `deployments:write`, `secrets:write`, `admin` (spec §1.3).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Makes `request_body = Option<T>` mean what it means here: the body may be left out (an empty
/// body is `{}`, spec §8.2), never that it may be JSON `null` (a non-object is a `400`). utoipa
/// renders it as `oneOf: [null, T]`; this keeps `T` and marks the body not required.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                unwrap_optional_body(op);
            }
        }
    }
}

fn unwrap_optional_body(op: &mut Operation) {
    let Some(body) = op.request_body.as_mut() else {
        return;
    };
    let mut optional = false;
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
        if let [a, b] = one_of.items.as_slice()
            && (is_null(a) || is_null(b))
        {
            let inner = if is_null(a) { b.clone() } else { a.clone() };
            content.schema = Some(inner);
            optional = true;
        }
    }
    if optional {
        body.required = Some(Required::False);
    }
}

/// utoipa inlines a generic argument's whole schema, so `Page_Run.data.items` would repeat `Run`
/// instead of referring to it. This points each `Page_<T>`'s items at the `<T>` component.
struct PageItemRefs;

impl Modify for PageItemRefs {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let names: Vec<String> = components.schemas.keys().cloned().collect();
        for (name, schema) in &mut components.schemas {
            let Some(item) = name.strip_prefix("Page_") else {
                continue;
            };
            if !names.iter().any(|n| n == item) {
                continue;
            }
            if let RefOr::T(Schema::Object(page)) = schema
                && let Some(RefOr::T(Schema::Array(data))) = page.properties.get_mut("data")
            {
                data.items = ArrayItems::RefOrSchema(Box::new(Ref::from_schema_name(item).into()));
            }
        }
    }
}

/// The document served at `/openapi.json`.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `limit` and `cursor` of every paginated list (spec §1.7). Only describes the query; the
/// handlers read it with `paging::page_request`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "describes the query for the OpenAPI document only"
)]
pub(crate) struct PageParams {
    /// Page size, 1–100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    /// Opaque cursor: the `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The errors any `/v1/` endpoint can give besides its own (spec §1.2, §1.3, §1.8).
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses for the OpenAPI document only"
)]
pub(crate) enum CommonErrors {
    /// `unauthorized`: the key is missing, malformed, unknown, revoked or expired.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `forbidden`: the key does not carry the scope the endpoint needs; the message names it.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// `server_error`: an unexpected failure inside Paddock.
    #[response(status = 500)]
    ServerError(ErrorBody),
}

/// `429 rate_limited` from the operator's per-key request limit (spec §1.11).
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses for the OpenAPI document only"
)]
pub(crate) enum RateLimited {
    /// `rate_limited`: the key's request rate limit was hit; wait `Retry-After` seconds.
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying (≥ 1)."))
    )]
    RateLimited(ErrorBody),
}
