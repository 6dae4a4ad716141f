//! `FakeMcp`: an in-process MCP server (Streamable HTTP, on the official `rmcp` SDK) on
//! `127.0.0.1:0`, recording every HTTP request it gets (method, headers, JSON body).
//!
//! Tools:
//! - `create_video`: annotated `destructiveHint: true`; answers `{"video": "created", "arguments": …}`;
//! - `echo`: answers, as `structuredContent`, the request's HTTP headers, the call's `_meta`
//!   and its arguments (so a test can see exactly what the server got);
//! - `slow`: sleeps [`FakeMcp::slow_for`] (5 s by default) before answering;
//! - `fail`: answers an MCP error result (`isError: true`) with the text `the tool broke`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerInfo, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One HTTP request the fake received.
#[derive(Debug, Clone)]
pub struct McpRequest {
    pub method: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The JSON-RPC body (`Null` for bodiless requests).
    pub body: Value,
}

impl McpRequest {
    /// The JSON-RPC method (`initialize`, `tools/list`, `tools/call`, …), if any.
    pub fn rpc_method(&self) -> Option<&str> {
        self.body.get("method").and_then(Value::as_str)
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<McpRequest>>,
    slow_for: Mutex<Duration>,
}

#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
}

fn tool(value: Value) -> Option<Tool> {
    serde_json::from_value(value).ok()
}

fn object_schema() -> Value {
    json!({"type": "object", "properties": {"text": {"type": "string"}}, "additionalProperties": true})
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerInfo {
        ServerInfo {
            capabilities: ServerCapabilities::builder().enable_tools().build(),
            ..ServerInfo::default()
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = [
            json!({"name": "create_video", "description": "Create a video (destructive).",
                   "inputSchema": object_schema(), "annotations": {"destructiveHint": true}}),
            json!({"name": "echo", "description": "Echo the request headers, _meta and arguments.",
                   "inputSchema": object_schema()}),
            json!({"name": "slow", "description": "Answer after a long time.",
                   "inputSchema": object_schema()}),
            json!({"name": "fail", "description": "Always fails.",
                   "inputSchema": object_schema()}),
        ]
        .into_iter()
        .filter_map(tool)
        .collect();
        Ok(ListToolsResult {
            tools,
            ..ListToolsResult::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let arguments = request.arguments.clone().map(Value::Object);
        let result = match request.name.as_ref() {
            "create_video" => {
                json!({"content": [], "structuredContent": {"video": "created", "arguments": arguments}})
            }
            "echo" => {
                let headers: BTreeMap<String, String> = context
                    .extensions
                    .get::<axum::http::request::Parts>()
                    .map(|p| {
                        p.headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"content": [], "structuredContent": {
                    "headers": headers, "meta": context.meta, "arguments": arguments}})
            }
            "slow" => {
                let wait = *self
                    .shared
                    .slow_for
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                tokio::time::sleep(wait).await;
                json!({"content": [{"type": "text", "text": "finally"}]})
            }
            "fail" => {
                json!({"content": [{"type": "text", "text": "the tool broke"}], "isError": true})
            }
            other => {
                return Err(ErrorData::invalid_params(format!("no tool {other}"), None));
            }
        };
        serde_json::from_value(result).map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }
}

async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(McpRequest {
            method: parts.method.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The fake MCP server. Dropping it does not stop it; see [`FakeMcp::stop`].
pub struct FakeMcp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: JoinHandle<()>,
    cancel: tokio_util::sync::CancellationToken,
}

impl FakeMcp {
    /// Starts the server on `127.0.0.1:0`; its endpoint is [`Self::url`].
    pub async fn start() -> FakeMcp {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            slow_for: Mutex::new(Duration::from_secs(5)),
        });
        let cancel = tokio_util::sync::CancellationToken::new();
        let handler = Handler {
            shared: shared.clone(),
        };
        let service = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig {
                cancellation_token: cancel.clone(),
                ..StreamableHttpServerConfig::default()
            },
        );
        let app = Router::new()
            .route_service("/mcp", service)
            .layer(from_fn_with_state(shared.clone(), record));
        #[allow(clippy::expect_used)]
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake MCP server");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("local addr");
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeMcp {
            addr,
            shared,
            serving,
            cancel,
        }
    }

    /// The MCP endpoint, `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// How long the `slow` tool sleeps.
    pub fn slow_for(&self, wait: Duration) {
        *self
            .shared
            .slow_for
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = wait;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<McpRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops listening and ends every session: later connections are refused.
    pub fn stop(&self) {
        self.cancel.cancel();
        self.serving.abort();
    }
}
