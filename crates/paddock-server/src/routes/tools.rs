//! The Tools API (spec §13.2): which tools a deployment's runs get, and switching them on and
//! off by name. Settings are stored per deployment by model-facing name; a run copies the
//! disabled set when it starts, so a change never reaches a run already going. MCP tools are
//! listed from the deployment's last discovery (each run start, or `refresh=true`).

use axum::extract::State;
use axum::{Extension, Json};
use paddock_core::tools::Tool;
use paddock_protocol::DeploymentConfig;
use paddock_protocol::time::now_unix;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::{DeferredJson, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::routes::{PathIds, deployment_of};
use crate::state::AppState;

/// One tool as the Tools API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ToolInfo {
    /// The model-facing name (spec §13.3).
    #[schema(example = "shell")]
    pub name: String,
    /// `builtin`, or the MCP server's name.
    #[schema(example = "builtin")]
    pub origin: String,
    /// Whether the deployment's setting allows it (default `true`).
    pub enabled: bool,
    /// Whether it can work for this deployment (e.g. `shell` needs `sandbox.enabled`).
    pub available: bool,
    /// What the tool does, as the model is told.
    pub description: String,
}

/// `{"data": [tool]}`: every tool, not paginated; built-ins first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ToolList {
    pub data: Vec<ToolInfo>,
}

/// The body of `PATCH …/tools/:name`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, ToSchema)]
pub struct UpdateToolRequest {
    /// `false` leaves the tool out of the model's tool list for runs started from now on.
    pub enabled: bool,
}

fn info(tool: &dyn Tool, config: &DeploymentConfig, enabled: bool) -> ToolInfo {
    ToolInfo {
        name: tool.name().to_owned(),
        origin: "builtin".to_owned(),
        enabled,
        available: tool.available(config),
        description: tool.description().to_owned(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/tools",
    operation_id = "list_tools",
    tag = "tools",
    summary = "List tools",
    description = "Scope `deployments:read`. Built-in tools first, then MCP tools by server and name, from the last discovery (a run start, or `refresh=true`); a server that could not be reached adds none; not paginated (spec §13.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("refresh" = Option<bool>, Query, description = "`true`: ask the MCP servers now instead of using the last discovery. Default `false`."),
    ),
    responses(
        (status = 200, description = "Every tool.", body = ToolList),
        (status = 400, description = "`validation_error`: `refresh` is not `true` or `false`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Json<ToolList>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let refresh = query.bool("refresh", false)?;
    let settings = state.store.tool_settings(&d.id).await?;
    let mut data: Vec<ToolInfo> = state
        .runtime
        .builtin_tools()
        .map(|t| {
            let enabled = settings.get(t.name()).copied().unwrap_or(true);
            info(t, &d.config, enabled)
        })
        .collect();
    // Spec §13.2: MCP tools once discovered (the last run start, or now with `refresh`), by
    // server and name; a server that could not be reached adds none.
    let mcp = state.runtime.mcp_tools(&d, refresh).await?;
    data.extend(mcp.into_iter().map(|t| ToolInfo {
        enabled: settings.get(&t.name).copied().unwrap_or(true),
        name: t.name,
        origin: t.server,
        available: true,
        description: t.description,
    }));
    Ok(Json(ToolList { data }))
}

#[utoipa::path(
    patch,
    path = "/v1/deployments/{dep}/tools/{name}",
    operation_id = "update_tool",
    tag = "tools",
    summary = "Enable or disable a tool",
    description = "Scope `deployments:write`. Applies to runs started after the response; a running run keeps its tools (spec §13.2, §18 guarantees 34–35).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("name" = String, Path, description = "The model-facing tool name, e.g. `shell`."),
    ),
    request_body = UpdateToolRequest,
    responses(
        (status = 200, description = "The tool.", body = ToolInfo),
        (status = 400, description = "`validation_error`: `enabled` missing or not a boolean.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or `name` is neither a built-in nor `<server>__<tool>` of a configured MCP server.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: `enabled: true` on a tool that is not available for this deployment.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<Json<ToolInfo>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let name = ids.get("name");
    let builtin = state.runtime.builtin_tools().find(|t| t.name() == name);
    // Spec §13.2: `<server>__<tool>` of a configured server is accepted even before discovery.
    let server = d
        .config
        .mcp_servers
        .iter()
        .find(|s| {
            name.strip_prefix(s.name.as_str())
                .and_then(|rest| rest.strip_prefix("__"))
                .is_some_and(|tool| !tool.is_empty())
        })
        .map(|s| s.name.clone());
    if builtin.is_none() && server.is_none() {
        return Err(ApiError::not_found(format!(
            "No tool {} on deployment {}.",
            name.chars().take(128).collect::<String>(),
            d.id
        )));
    }
    let body = body.object()?;
    let enabled = match body.get("enabled") {
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::validation(
                "enabled",
                "`enabled` must be a boolean.",
            ));
        }
        None => return Err(ApiError::validation("enabled", "`enabled` is required.")),
    };
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "enabled"))
    {
        return Err(ApiError::validation(
            extra.clone(),
            format!("Unknown field `{extra}`."),
        ));
    }
    if let Some(tool) = builtin
        && enabled
        && !tool.available(&d.config)
    {
        return Err(ApiError::conflict(format!(
            "Tool `{name}` is not available for deployment {} (for `shell`: the sandbox is disabled), so it cannot be enabled.",
            d.id
        )));
    }
    state
        .store
        .set_tool_enabled(&d.id, name, enabled, now_unix())
        .await?;
    if let Some(tool) = builtin {
        return Ok(Json(info(tool, &d.config, enabled)));
    }
    // An MCP tool: described from the last discovery when it was listed there.
    let description = state
        .runtime
        .mcp_tools(&d, false)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.description)
        .unwrap_or_default();
    Ok(Json(ToolInfo {
        name: name.to_owned(),
        origin: server.unwrap_or_default(),
        enabled,
        available: true,
        description,
    }))
}
