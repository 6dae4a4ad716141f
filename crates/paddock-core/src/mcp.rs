//! A run's MCP tools and secrets (spec §14, §15): at the start of each run (and each time a
//! worker picks it up again) the deployment's secrets are decrypted on the host, every MCP
//! server is connected (guarded by the outbound address policy, spec §1.13) and listed, and
//! its allowed, enabled tools join the built-ins for this run only. An unreachable server adds
//! a run warning and a note for the model, never a failure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use paddock_mcp::{DiscoveredTool, Session, expand_template, request_headers, tool_name};
use paddock_model::ToolSpec;
use paddock_protocol::{DeploymentConfig, McpServer};
use paddock_store::{Lease, RunRecord};
use serde_json::{Value, json};

use crate::redaction::Redactor;
use crate::runtime::Runtime;
use crate::tools::{Policy, Tool, ToolContext, ToolOutput};

/// An MCP server's tool, as one run sees it.
pub(crate) struct McpTool {
    /// Model-facing (`<server>__<tool>`, spec §13.3).
    name: String,
    /// As the server lists it.
    bare: String,
    server: String,
    description: String,
    parameters: Value,
    destructive: bool,
    session: Arc<Session>,
    call_timeout: Duration,
    redactor: Redactor,
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn origin(&self) -> &str {
        &self.server
    }
    fn bare_name(&self) -> &str {
        &self.bare
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    fn default_policy(&self) -> Policy {
        if self.destructive {
            Policy::AlwaysAsk
        } else {
            Policy::AlwaysAllow
        }
    }
    async fn call(&self, _ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        match self
            .session
            .call(&self.bare, arguments, self.call_timeout)
            .await
        {
            Ok(out) => ToolOutput {
                result: self.redactor.redact_json(&out.result),
                is_error: out.is_error,
            },
            Err(e) => ToolOutput::error(self.redactor.redact(&format!(
                "MCP server `{}` failed the call: {e}",
                self.server
            ))),
        }
    }
}

/// What a run has beyond the built-ins: its MCP tools, the servers that could not be reached,
/// and the redactor of its deployment's secrets.
#[derive(Default)]
pub(crate) struct RunTools {
    tools: Vec<McpTool>,
    sessions: Vec<Arc<Session>>,
    /// Servers that added no tools, for the note to the model.
    pub(crate) unavailable: Vec<String>,
    pub(crate) redactor: Redactor,
}

impl RunTools {
    /// The MCP tool the model calls `name`.
    pub(crate) fn find(&self, name: &str) -> Option<&dyn Tool> {
        self.tools
            .iter()
            .find(|t| t.name == name)
            .map(|t| t as &dyn Tool)
    }

    /// The note appended to the system prompt when a server is missing.
    pub(crate) fn note(&self) -> Option<String> {
        if self.unavailable.is_empty() {
            return None;
        }
        let names: Vec<String> = self.unavailable.iter().map(|s| format!("`{s}`")).collect();
        Some(format!(
            "Note: the MCP server(s) {} could not be reached for this run, so their tools are unavailable. Tell the user if they need them.",
            names.join(", ")
        ))
    }

    /// The specs of the MCP tools, for the model request.
    pub(crate) fn specs(&self) -> impl Iterator<Item = ToolSpec> + '_ {
        self.tools.iter().map(|t| t.spec())
    }

    /// Ends the MCP sessions.
    pub(crate) async fn close(&self) {
        for s in &self.sessions {
            s.close().await;
        }
    }
}

/// The decrypted values of the secrets `references` names (key → secret id), by key. Missing or
/// undecryptable secrets are left out (logged by key and id, never by value).
pub(crate) async fn secret_values(
    rt: &Runtime,
    account_id: &str,
    references: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let Some(secret_box) = &rt.settings.secret_box else {
        return values;
    };
    for (key, id) in references {
        let record = match rt.store.get_secret(account_id, id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(secret = %key, secret_id = %id, error = %e, "a referenced secret could not be read");
                continue;
            }
        };
        match secret_box
            .open(id, &record.ciphertext)
            .map(String::from_utf8)
        {
            Ok(Ok(v)) => {
                crate::redaction::remember_for_logs(key, &v);
                values.insert(key.clone(), v);
            }
            _ => {
                tracing::warn!(secret = %key, secret_id = %id, "a referenced secret could not be decrypted")
            }
        }
    }
    values
}

/// Refuses a literal IP host the policy refuses (host names are checked when resolved by the
/// guarded client).
fn check_literal_host(policy: &paddock_net::AddressPolicy, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("`{url}` is not a valid URL"))?;
    let Some(host) = parsed.host_str() else {
        return Err(format!("`{url}` has no host"));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>()
        && !policy.host_allowed(host)
        && !policy.host_allowed(bare)
    {
        policy
            .check(ip)
            .map_err(|reason| format!("refused {host}: {reason}"))?;
    }
    Ok(())
}

/// Connects to one server and lists its tools.
async fn discover(
    rt: &Runtime,
    server: &McpServer,
    customer_id: &str,
    deployment_id: &str,
    secrets: &BTreeMap<String, String>,
) -> Found {
    let mut headers = Vec::with_capacity(server.headers.len());
    for (name, template) in &server.headers {
        let value = expand_template(template, |k| secrets.get(k).map(String::as_str))
            .map_err(|e| format!("header `{name}`: {e}"))?;
        headers.push((name.clone(), value));
    }
    let headers =
        request_headers(customer_id, deployment_id, &headers).map_err(|e| e.to_string())?;
    check_literal_host(&rt.settings.outbound, &server.url)?;
    let timeout = rt.settings.mcp_connect_timeout;
    let http = paddock_net::GuardedClient::builder(rt.settings.outbound.clone(), timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| paddock_net::from_reqwest(e).to_string())?;
    let session = Session::connect(http, &server.url, customer_id, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let tools = session
        .list_tools(timeout)
        .await
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(session), tools))
}

/// Prepares the run's MCP tools and redactor (see the module documentation). Warnings for
/// unreachable servers are recorded on the run once (a run picked up again does not repeat
/// them).
pub(crate) async fn prepare(rt: &Runtime, lease: &Lease, run: &RunRecord) -> RunTools {
    let config = &run.config;
    if config.mcp_servers.is_empty() && config.secrets.is_empty() {
        return RunTools::default();
    }
    let deployment = match rt.store.deployment_by_id(&run.deployment_id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "could not read the run's deployment");
            return RunTools::default();
        }
    };
    let mut secrets = secret_values(rt, &deployment.account_id, &config.secrets).await;
    // Rotation (spec §15): a run picked up again after its deployment's key was pointed at a
    // new secret and the old one deleted reads the key's current secret instead.
    let rotated: BTreeMap<String, String> = config
        .secrets
        .iter()
        .filter(|(key, id)| {
            !secrets.contains_key(*key)
                && deployment
                    .config
                    .secrets
                    .get(*key)
                    .is_some_and(|now| now != *id)
        })
        .filter_map(|(key, _)| Some((key.clone(), deployment.config.secrets.get(key)?.clone())))
        .collect();
    if !rotated.is_empty() {
        secrets.extend(secret_values(rt, &deployment.account_id, &rotated).await);
    }
    let redactor = Redactor::new(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let found = futures::future::join_all(config.mcp_servers.iter().map(|server| {
        discover(
            rt,
            server,
            &deployment.customer_id,
            &run.deployment_id,
            &secrets,
        )
    }))
    .await;
    record_discovery(rt, &run.deployment_id, config, &found).await;
    let mut out = RunTools {
        redactor: redactor.clone(),
        ..RunTools::default()
    };
    for (server, result) in config.mcp_servers.iter().zip(found) {
        match result {
            Ok((session, listed)) => {
                for t in listed {
                    if let Some(allowed) = &server.tools
                        && !allowed.iter().any(|a| a == &t.name)
                    {
                        continue;
                    }
                    let name = tool_name(&server.name, &t.name);
                    if config.disabled_tools.contains(&name)
                        || out.tools.iter().any(|x| x.name == name)
                    {
                        continue;
                    }
                    out.tools.push(McpTool {
                        name,
                        bare: t.name,
                        server: server.name.clone(),
                        description: t.description,
                        parameters: t.input_schema,
                        destructive: t.destructive,
                        session: session.clone(),
                        call_timeout: rt.settings.mcp_call_timeout,
                        redactor: redactor.clone(),
                    });
                }
                out.sessions.push(session);
            }
            Err(reason) => {
                let message = redactor.redact(&format!(
                    "MCP server `{}` is unavailable: {reason}",
                    server.name
                ));
                tracing::warn!(run_id = %run.id, server = %server.name, %message, "MCP server unavailable");
                out.unavailable.push(server.name.clone());
                let already = run.warnings.iter().any(|w| {
                    w.get("code").and_then(Value::as_str) == Some("mcp_unavailable")
                        && w.get("server").and_then(Value::as_str) == Some(server.name.as_str())
                });
                if !already {
                    let warning = json!({
                        "code": "mcp_unavailable", "message": message, "server": server.name,
                    });
                    if let Err(e) = rt.store.add_run_warning(lease, warning).await {
                        tracing::warn!(run_id = %run.id, error = %e, "could not record a run warning");
                    }
                }
            }
        }
    }
    out
}

/// What one server's connection and listing came to.
type Found = Result<(Arc<Session>, Vec<DiscoveredTool>), String>;

/// Stores what the servers listed as the deployment's last discovery (spec §13.2): the Tools
/// API lists it. A server that could not be reached is left out. A failure to store is logged:
/// the run goes on with its tools.
async fn record_discovery(
    rt: &Runtime,
    deployment_id: &str,
    config: &DeploymentConfig,
    found: &[Found],
) {
    if config.mcp_servers.is_empty() {
        return;
    }
    let mut servers = serde_json::Map::new();
    for (server, result) in config.mcp_servers.iter().zip(found) {
        if let Ok((_, tools)) = result {
            let tools: Vec<Value> = tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description, "destructive": t.destructive})
                })
                .collect();
            servers.insert(server.name.clone(), Value::Array(tools));
        }
    }
    let now = paddock_protocol::time::now_unix();
    if let Err(e) = rt
        .store
        .set_mcp_discovery(deployment_id, &Value::Object(servers), now)
        .await
    {
        tracing::warn!(deployment_id, error = %e, "could not record the MCP discovery");
    }
}

/// An MCP tool as the Tools API lists it (spec §13.2), from the last discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMcpTool {
    /// Model-facing (`<server>__<tool>`, spec §13.3).
    pub name: String,
    /// The server's name (the tool's `origin`).
    pub server: String,
    pub description: String,
}

/// Asks every MCP server of the deployment for its tools now and stores the result as the
/// last discovery (what `GET …/tools?refresh=true` does). Sessions are closed at once.
pub(crate) async fn refresh(
    rt: &Runtime,
    account_id: &str,
    customer_id: &str,
    deployment_id: &str,
    config: &DeploymentConfig,
) {
    if config.mcp_servers.is_empty() {
        return;
    }
    let secrets = secret_values(rt, account_id, &config.secrets).await;
    let found: Vec<Found> = futures::future::join_all(
        config
            .mcp_servers
            .iter()
            .map(|server| discover(rt, server, customer_id, deployment_id, &secrets)),
    )
    .await;
    record_discovery(rt, deployment_id, config, &found).await;
    for (session, _) in found.iter().flatten() {
        session.close().await;
    }
}

/// The MCP tools of the last discovery that the deployment's current `mcp_servers` still
/// expose (configured server, allowed by its `tools` list), by server name, then tool name.
pub(crate) fn listed(config: &DeploymentConfig, discovery: Option<&Value>) -> Vec<ListedMcpTool> {
    let Some(servers) = discovery.and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out: Vec<ListedMcpTool> = Vec::new();
    for server in &config.mcp_servers {
        let Some(tools) = servers.get(&server.name).and_then(Value::as_array) else {
            continue;
        };
        for t in tools {
            let Some(bare) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some(allowed) = &server.tools
                && !allowed.iter().any(|a| a == bare)
            {
                continue;
            }
            let name = tool_name(&server.name, bare);
            if out.iter().any(|x| x.name == name) {
                continue;
            }
            out.push(ListedMcpTool {
                name,
                server: server.name.clone(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    out.sort_by(|a, b| (&a.server, &a.name).cmp(&(&b.server, &b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_loopback_is_refused_unless_allowed() {
        let policy = paddock_net::AddressPolicy::default();
        assert!(check_literal_host(&policy, "http://127.0.0.1:9/mcp").is_err());
        assert!(check_literal_host(&policy, "http://[::1]:9/mcp").is_err());
        assert!(check_literal_host(&policy, "https://example.com/mcp").is_ok());
        let allowed = paddock_net::AddressPolicy {
            allowed_hosts: vec!["127.0.0.1".to_owned()],
            ..Default::default()
        };
        assert!(check_literal_host(&allowed, "http://127.0.0.1:9/mcp").is_ok());
    }
}
