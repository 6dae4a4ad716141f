//! The MCP client Paddock's runs use to reach a deployment's MCP servers (spec §14).
//!
//! Paddock speaks the MCP Streamable HTTP transport from the host (never from the sandbox),
//! through the official `rmcp` SDK. The HTTP client is passed in, so the caller decides what
//! it may connect to (Paddock passes the guarded client of `paddock-net`, spec §1.13) and
//! which headers go on every request (`X-Customer-Id`, `X-Deployment-Id` and the server's own
//! headers, see [`request_headers`]).
//!
//! A [`Session`] is one run's connection to one server: it lists the server's tools (with
//! `params._meta.customer_id`), calls them with a timeout, maps results per spec §14.2, and
//! reconnects once when the server dropped the session.
//!
//! Naming ([`tool_name`]) and header templates ([`expand_template`]) are here too, since they
//! are MCP rules (§13.3, §14.3).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ListToolsRequest, Meta,
    PaginatedRequestParams, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Longest model-facing tool name (spec §13.3).
pub const MAX_TOOL_NAME: usize = 64;
/// Tools taken from one server's listing at most (a runaway server cannot flood the prompt).
const MAX_TOOLS_PER_SERVER: usize = 500;
/// Pages of `tools/list` followed at most.
const MAX_LIST_PAGES: usize = 20;

/// The model-facing name of `tool` from `server` (spec §13.3): `<server>__<tool>`; over 64
/// characters, the first 55 characters, `_`, and the first 8 hex digits of the SHA-256 of the
/// full name.
pub fn tool_name(server: &str, tool: &str) -> String {
    let full = format!("{server}__{tool}");
    if full.chars().count() <= MAX_TOOL_NAME {
        return full;
    }
    let digest = Sha256::digest(full.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let head: String = full.chars().take(55).collect();
    format!("{head}_{hex}")
}

/// Why a header template did not expand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`${{{0}}}` names no secret of this deployment")]
    Unresolved(String),
    #[error("a `${{` has no closing `}}`")]
    Unclosed,
}

/// Expands a header template (spec §14.3): `${NAME}` becomes `lookup(NAME)`, `$$` a literal
/// `$`; any other `$` stays as it is.
pub fn expand_template<'a>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(TemplateError::Unclosed)?;
            let name = &tail[..end];
            let value = lookup(name).ok_or_else(|| TemplateError::Unresolved(name.to_owned()))?;
            out.push_str(value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Why talking to an MCP server failed. Messages may quote the server; callers redact them
/// before showing them to anyone.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("invalid header `{0}`")]
    Header(String),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Service(String),
}

/// The headers every request to a server carries (spec §14.3): the server's own (already
/// expanded), then `X-Customer-Id` and `X-Deployment-Id`. Values are marked sensitive, so they
/// are never printed by `Debug`.
pub fn request_headers(
    customer_id: &str,
    deployment_id: &str,
    headers: &[(String, String)],
) -> Result<HeaderMap, McpError> {
    let mut map = HeaderMap::new();
    let mut put = |name: &str, value: &str| -> Result<(), McpError> {
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| McpError::Header(name.into()))?;
        let mut v = HeaderValue::from_str(value).map_err(|_| McpError::Header(name.into()))?;
        v.set_sensitive(true);
        map.insert(header, v);
        Ok(())
    };
    for (name, value) in headers {
        put(name, value)?;
    }
    put("x-customer-id", customer_id)?;
    put("x-deployment-id", deployment_id)?;
    Ok(map)
}

/// A tool a server listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredTool {
    /// The name as the server reports it.
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// Annotated `destructiveHint: true` (spec §6.1: defaults to `always_ask`).
    pub destructive: bool,
}

/// A tool call's outcome as the model sees it (spec §14.2).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    pub result: Value,
    pub is_error: bool,
}

/// Maps an MCP result (spec §14.2): `structuredContent` when present, else
/// `{"content": [...]}`; `isError` → `is_error`.
pub fn map_result(result: CallToolResult) -> CallOutcome {
    let is_error = result.is_error.unwrap_or(false);
    let value = match result.structured_content {
        Some(structured) => structured,
        None => json!({ "content": serde_json::to_value(&result.content).unwrap_or(Value::Null) }),
    };
    CallOutcome {
        result: value,
        is_error,
    }
}

type Client = RunningService<RoleClient, ()>;

/// One run's connection to one MCP server.
pub struct Session {
    url: String,
    http: reqwest::Client,
    customer_id: String,
    connect_timeout: Duration,
    client: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects to `url` (initialize handshake) within `connect_timeout`. `http` carries the
    /// headers of every request ([`request_headers`] as default headers) and decides what may
    /// be reached.
    pub async fn connect(
        http: reqwest::Client,
        url: &str,
        customer_id: &str,
        connect_timeout: Duration,
    ) -> Result<Self, McpError> {
        let session = Session {
            url: url.to_owned(),
            http,
            customer_id: customer_id.to_owned(),
            connect_timeout,
            client: Mutex::new(None),
        };
        let client = session.open().await?;
        *session.client.lock().await = Some(client);
        Ok(session)
    }

    async fn open(&self) -> Result<Arc<Client>, McpError> {
        let transport = StreamableHttpClientTransport::with_client(
            self.http.clone(),
            StreamableHttpClientTransportConfig::with_uri(self.url.clone()),
        );
        match tokio::time::timeout(self.connect_timeout, ().serve(transport)).await {
            Ok(Ok(client)) => Ok(Arc::new(client)),
            Ok(Err(e)) => Err(McpError::Connect(error_text(&e))),
            Err(_) => Err(McpError::Timeout(self.connect_timeout)),
        }
    }

    async fn current(&self) -> Result<Arc<Client>, McpError> {
        let mut guard = self.client.lock().await;
        match guard.as_ref() {
            Some(c) if !c.is_transport_closed() => Ok(c.clone()),
            _ => {
                let c = self.open().await?;
                *guard = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// Drops the connection so the next request reconnects.
    async fn reset(&self) {
        *self.client.lock().await = None;
    }

    fn meta(&self) -> Meta {
        let mut meta = Meta::new();
        meta.0
            .insert("customer_id".to_owned(), json!(self.customer_id));
        meta
    }

    async fn request(
        &self,
        make: impl Fn() -> ClientRequest,
        timeout: Duration,
    ) -> Result<ServerResult, McpError> {
        let mut retried = false;
        loop {
            let client = self.current().await?;
            let options = PeerRequestOptions {
                timeout: Some(timeout),
                meta: Some(self.meta()),
            };
            let outcome = match client
                .peer()
                .send_request_with_option(make(), options)
                .await
            {
                Ok(handle) => handle.await_response().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(result) => return Ok(result),
                Err(ServiceError::Timeout { timeout }) => return Err(McpError::Timeout(timeout)),
                // The server dropped the session or the connection: reconnect once.
                Err(e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))
                    if !retried =>
                {
                    tracing::debug!(url = %self.url, error = %error_text(&e), "MCP session lost; reconnecting");
                    retried = true;
                    self.reset().await;
                }
                Err(e) => return Err(McpError::Service(error_text(&e))),
            }
        }
    }

    /// Lists the server's tools (all pages), with `params._meta.customer_id`.
    pub async fn list_tools(&self, timeout: Duration) -> Result<Vec<DiscoveredTool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            // `_meta` travels in the request options (rmcp merges them with its progress
            // token); setting it on the params too would send the field twice.
            let params = PaginatedRequestParams {
                meta: None,
                cursor: cursor.clone(),
            };
            let result = self
                .request(
                    || {
                        ClientRequest::ListToolsRequest(ListToolsRequest {
                            method: Default::default(),
                            params: Some(params.clone()),
                            extensions: Default::default(),
                        })
                    },
                    timeout,
                )
                .await?;
            let ServerResult::ListToolsResult(page) = result else {
                return Err(McpError::Service(
                    "unexpected answer to tools/list".to_owned(),
                ));
            };
            for t in page.tools {
                if tools.len() >= MAX_TOOLS_PER_SERVER {
                    break;
                }
                tools.push(DiscoveredTool {
                    name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                    input_schema: Value::Object((*t.input_schema).clone()),
                    destructive: t
                        .annotations
                        .as_ref()
                        .and_then(|a| a.destructive_hint)
                        .unwrap_or(false),
                });
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    /// Calls `tool` with `arguments` (a JSON object; anything else is sent as no arguments),
    /// within `timeout`, with `params._meta.customer_id`.
    pub async fn call(
        &self,
        tool: &str,
        arguments: &Value,
        timeout: Duration,
    ) -> Result<CallOutcome, McpError> {
        let arguments: Option<Map<String, Value>> = arguments.as_object().cloned();
        let params = CallToolRequestParams {
            meta: None,
            name: Cow::Owned(tool.to_owned()),
            arguments,
            task: None,
        };
        let result = self
            .request(
                || {
                    ClientRequest::CallToolRequest(CallToolRequest {
                        method: Default::default(),
                        params: params.clone(),
                        extensions: Default::default(),
                    })
                },
                timeout,
            )
            .await?;
        match result {
            ServerResult::CallToolResult(r) => Ok(map_result(r)),
            _ => Err(McpError::Service(
                "unexpected answer to tools/call".to_owned(),
            )),
        }
    }

    /// Ends the session (best effort).
    pub async fn close(&self) {
        let client = self.client.lock().await.take();
        if let Some(Ok(client)) = client.map(Arc::try_unwrap) {
            let _ = client.cancel().await;
        }
    }
}

/// An error's text with its causes (`connection refused`, a refused address…).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_64_character_rule() {
        assert_eq!(tool_name("acme", "run"), "acme__run");
        let long = "t".repeat(70);
        let name = tool_name("srv", &long);
        assert_eq!(name.len(), 64);
        let full = format!("srv__{long}");
        let digest = Sha256::digest(full.as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        assert_eq!(name, format!("{}_{hex}", &full[..55]));
        assert_eq!(tool_name("s", &"x".repeat(61)).len(), 64);
    }

    #[test]
    fn templates_expand_and_escape() {
        let lookup = |n: &str| (n == "TOKEN").then_some("abc");
        assert_eq!(
            expand_template("Bearer ${TOKEN}", lookup).unwrap(),
            "Bearer abc"
        );
        assert_eq!(expand_template("$$x $y", lookup).unwrap(), "$x $y");
        assert_eq!(
            expand_template("${NOPE}", lookup),
            Err(TemplateError::Unresolved("NOPE".into()))
        );
        assert_eq!(
            expand_template("${TOKEN", lookup),
            Err(TemplateError::Unclosed)
        );
    }

    #[test]
    fn results_map_structured_else_content() {
        let r: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "hi"}], "isError": true
        }))
        .unwrap();
        let out = map_result(r);
        assert!(out.is_error);
        assert_eq!(
            out.result,
            json!({"content": [{"type": "text", "text": "hi"}]})
        );
        let r: CallToolResult = serde_json::from_value(json!({
            "content": [], "structuredContent": {"a": 1}
        }))
        .unwrap();
        assert_eq!(map_result(r).result, json!({"a": 1}));
    }
}
