//! A typed async client for Paddock's HTTP API (`shared/spec/API.md`).
//!
//! [`Client`] wraps one base URL and an optional API key. Its methods send one request each and
//! return the wire types of [`paddock_protocol`]; an error envelope (spec §1.8) comes back as
//! [`ClientError::Api`]. [`Client::events`] opens a deployment's SSE stream (spec §7) and resumes it
//! with `Last-Event-ID` when the connection drops. [`Client::raw`] gives a bare request with the
//! key applied, for requests the typed methods cannot express.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paddock_client::ClientError> {
//! use futures::StreamExt;
//! use paddock_client::{Client, EventsQuery};
//!
//! let client = Client::new("http://localhost:8787", Some("pdk_...".into()));
//! let dep = client
//!     .create_deployment(&serde_json::json!({
//!         "customer_id": "cus_123", "name": "Acme", "system_prompt": "You help Acme."
//!     }))
//!     .await?;
//! let mut events = client.events(&dep.deployment_id, EventsQuery::default()).await;
//! client.send_message(&dep.deployment_id, "Hello", None, &[]).await?;
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{} {:?} {}", event.event, event.id, event.data);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
mod automations;
mod deployments;
mod events;

use std::time::Duration;

use paddock_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use admin::{CreditsChange, ListKeysQuery};
pub use deployments::{ListDeploymentsQuery, ListRunsQuery};
pub use events::{EventStream, EventsQuery, ResumePolicy, SseEvent};
pub use paddock_protocol;
pub use reqwest;

/// How long a TCP/TLS connect may take before the request fails with a transport error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on one Paddock server, authenticated with one API key (or none).
///
/// Cheap to clone: clones share one connection pool. The `with_*` methods return such a clone
/// with one setting changed, so `client.with_idempotency_key("k").send_message(..)` affects only
/// that call chain.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    idempotency_key: Option<String>,
    resume: ResumePolicy,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8787`; a trailing `/` is
    /// ignored) that sends `Authorization: Bearer <api_key>` when a key is given.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        // Building only fails if the TLS backend cannot initialise; `reqwest::Client::new` would
        // hit the same failure, so fall back to it rather than make every caller handle a Result.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self::with_http_client(base_url, api_key, http)
    }

    /// Like [`Client::new`], but sends through a caller-configured `reqwest::Client` (timeouts,
    /// proxies, TLS roots). Do not give it a total request timeout if you use [`Client::events`].
    pub fn with_http_client(
        base_url: impl Into<String>,
        api_key: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Self {
            http,
            base_url,
            api_key,
            idempotency_key: None,
            resume: ResumePolicy::default(),
        }
    }

    /// A clone that sends `Idempotency-Key: <key>` on every `POST` it makes (spec §1.10),
    /// including `POST`s built with [`Client::raw`]. Other methods never send it.
    pub fn with_idempotency_key(&self, key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            ..self.clone()
        }
    }

    /// A clone that authenticates with `api_key` instead (or sends no `Authorization` at all).
    pub fn with_api_key(&self, api_key: Option<String>) -> Self {
        Self {
            api_key,
            ..self.clone()
        }
    }

    /// A clone whose [`Client::events`] streams reconnect according to `policy`.
    pub fn with_resume_policy(&self, policy: ResumePolicy) -> Self {
        Self {
            resume: policy,
            ..self.clone()
        }
    }

    /// The base URL requests go to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The API key this client sends, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The reconnection policy of [`Client::events`] streams.
    pub fn resume_policy(&self) -> ResumePolicy {
        self.resume
    }

    /// A bare request to `path` (e.g. `/v1/deployments?limit=5`, sent verbatim after the base
    /// URL) with `Authorization` applied, plus `Idempotency-Key` on a `POST` if this client has
    /// one. Finish it with any `reqwest` call, then [`Client::send`] / [`Client::send_full`] to
    /// decode, or `.send().await` to inspect the raw response.
    pub fn raw(&self, method: Method, path: &str) -> RequestBuilder {
        let post = method == Method::POST;
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if post && let Some(key) = &self.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        req
    }

    /// Sends `req` and decodes a 2xx JSON body as `T`; any other status becomes an error
    /// ([`ClientError::Api`] for the standard envelope).
    pub async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        Ok(self.send_full(req).await?.body)
    }

    /// Like [`Client::send`], but also returns the status and headers (e.g. to check
    /// `Idempotent-Replayed` or `x-request-id`).
    pub async fn send_full<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> Result<ApiResponse<T>, ClientError> {
        let resp = req.send().await?;
        if !resp.status().is_success() {
            return Err(ClientError::from_response(resp).await);
        }
        decode_response(resp).await
    }

    /// `GET path` with `query`, decoded as `T`.
    async fn get_json<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, ClientError> {
        self.send(self.raw(Method::GET, path).query(query)).await
    }

    /// `method path` with a JSON `body`, decoded as `T`.
    async fn send_body<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.raw(method, path).json(body)).await
    }
}

/// A decoded success response together with its status and headers.
#[derive(Debug, Clone)]
pub struct ApiResponse<T> {
    /// The HTTP status, e.g. 201.
    pub status: u16,
    /// Every response header.
    pub headers: HeaderMap,
    /// The decoded JSON body.
    pub body: T,
}

impl<T> ApiResponse<T> {
    /// The value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-request-id` header (spec §1.9).
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    /// Whether the server replayed a stored idempotent answer (`Idempotent-Replayed: true`).
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// Everything a [`Client`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered a non-2xx status with the error envelope of spec §1.8.
    #[error("HTTP {status} {}: {}", .body.error.code.as_str(), .body.error.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The decoded `{"error": {...}}` envelope.
        body: ErrorBody,
        /// The response's `x-request-id`, for finding the server's log line.
        request_id: Option<String>,
    },
    /// A non-2xx answer whose body is not a recognisable error envelope (for instance a proxy's
    /// HTML page, or a code newer than [`ErrorCode`] knows).
    #[error("HTTP {status} without a known error envelope: {body}")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// The body as text (lossily decoded).
        body: String,
        /// The response's `x-request-id`.
        request_id: Option<String>,
    },
    /// The request could not be sent or the response not read (connect, TLS, timeout, reset).
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// A 2xx body, or an event's `data`, was not the JSON expected.
    #[error("could not decode HTTP {status} body: {source}; body: {body}")]
    Decode {
        /// The HTTP status of the response (200 for SSE event data).
        status: u16,
        /// The text that failed to decode.
        body: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Turns a non-2xx response into [`ClientError::Api`] or [`ClientError::UnexpectedStatus`].
    async fn from_response(resp: Response) -> Self {
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return ClientError::Transport(e),
        };
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api {
                status,
                body,
                request_id,
            },
            Err(_) => ClientError::UnexpectedStatus {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                request_id,
            },
        }
    }

    /// The stable error `code` of an [`ClientError::Api`] error, e.g. `ErrorCode::NotFound`.
    pub fn code(&self) -> Option<ErrorCode> {
        self.detail().map(|d| d.code)
    }

    /// The `param` of an [`ClientError::Api`] error (e.g. `"sandbox.cpus"`), if it names one.
    pub fn param(&self) -> Option<&str> {
        self.detail().and_then(|d| d.param.as_deref())
    }

    /// The inside of the error envelope of an [`ClientError::Api`] error.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error),
            _ => None,
        }
    }

    /// The HTTP status of an answered request ([`ClientError::Api`],
    /// [`ClientError::UnexpectedStatus`], [`ClientError::Decode`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. }
            | ClientError::UnexpectedStatus { status, .. }
            | ClientError::Decode { status, .. } => Some(*status),
            ClientError::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }

    /// The `x-request-id` of the failed response, when the server answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientError::Api { request_id, .. }
            | ClientError::UnexpectedStatus { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// One page request of a paginated list (spec §1.7): `limit` (1–100) and `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageQuery {
    /// Items per page; the server's default is 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Decodes a success response's JSON body, keeping status and headers.
async fn decode_response<T: DeserializeOwned>(
    resp: Response,
) -> Result<ApiResponse<T>, ClientError> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    match serde_json::from_slice(&bytes) {
        Ok(body) => Ok(ApiResponse {
            status,
            headers,
            body,
        }),
        Err(source) => Err(ClientError::Decode {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            source,
        }),
    }
}

/// Percent-encodes one path segment, so an id can never change the path's shape.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("dep_7xK9s2"), "dep_7xK9s2");
        assert_eq!(seg("a/../b c"), "a%2F..%2Fb%20c");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn base_url_loses_trailing_slashes() {
        let c = Client::new("http://127.0.0.1:1//", None);
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
    }
}
