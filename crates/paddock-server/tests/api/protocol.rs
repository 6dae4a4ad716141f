//! The protocol conventions, through real HTTP against a real server: authentication and scopes
//! (spec §1.2, §1.3), error precedence (§1.8), request ids (§1.9), idempotency (§1.10), rate
//! limits (§1.11), body limits and bad input (§1.6, §1.7, §1.12), accounts, keys and credits
//! (§16), the operational endpoints (§17), and a seeded fuzz pass over every write endpoint
//! (§18.4–8: bad input never yields a 5xx, every error is the documented envelope).

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use paddock_protocol::scope;
use paddock_test_support::{Gate, Script};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use common::{TestServer, WAIT, collect_until, deployment_body, is_terminal, open_events};

const READ: &str = scope::DEPLOYMENTS_READ;
const WRITE: &str = scope::DEPLOYMENTS_WRITE;
const SECRETS: &str = scope::SECRETS_WRITE;
const ADMIN: &str = scope::ADMIN;

/// The JSON body limit of a default server (spec §1.12).
const MIB: usize = 1024 * 1024;

/// Every code of spec §1.8 with the HTTP status it always travels with.
const CODES: [(&str, u16); 12] = [
    ("validation_error", 400),
    ("unauthorized", 401),
    ("insufficient_credits", 402),
    ("forbidden", 403),
    ("not_found", 404),
    ("deployment_not_ready", 409),
    ("conflict", 409),
    ("payload_too_large", 413),
    ("invalid_skill", 422),
    ("invalid_secret_ref", 422),
    ("rate_limited", 429),
    ("server_error", 500),
];

// ---------------------------------------------------------------------------------------------
// Plumbing: raw requests and what came back.
// ---------------------------------------------------------------------------------------------

/// One answered request. SSE bodies are not read (the stream would never end).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
    json: Option<Value>,
}

/// The inside of an error envelope.
#[derive(Debug)]
struct ErrorSeen {
    code: String,
    message: String,
    param: Option<String>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn describe(&self) -> String {
        let text: String = self.text.chars().take(600).collect();
        format!(
            "HTTP {} x-request-id={:?} retry-after={:?} body={text}",
            self.status,
            self.header("x-request-id"),
            self.header("retry-after")
        )
    }

    /// The JSON body of a success with `status`.
    #[track_caller]
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.describe());
        self.json
            .as_ref()
            .unwrap_or_else(|| panic!("success body is not JSON: {}", self.describe()))
    }

    /// Asserts an error with `status` and `code` in the documented envelope.
    #[track_caller]
    fn err(&self, status: u16, code: &str) -> ErrorSeen {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}: {}",
            self.describe()
        );
        let e = envelope(self).unwrap_or_else(|why| panic!("{why}: {}", self.describe()));
        assert_eq!(e.code, code, "{}", self.describe());
        e
    }

    /// Asserts a 400 `validation_error` naming `param`.
    #[track_caller]
    fn invalid(&self, param: &str) -> ErrorSeen {
        let e = self.err(400, "validation_error");
        assert_eq!(e.param.as_deref(), Some(param), "{}", self.describe());
        e
    }

    /// Asserts a 404 `not_found`.
    #[track_caller]
    fn not_found(&self) -> ErrorSeen {
        self.err(404, "not_found")
    }
}

/// Checks that `r` is an error in the envelope of spec §1.8 (and §18.4, §18.5, §18.8).
fn envelope(r: &Reply) -> Result<ErrorSeen, String> {
    if r.header("x-request-id").is_none_or(str::is_empty) {
        return Err("no x-request-id".into());
    }
    let v = r.json.as_ref().ok_or("the error body is not JSON")?;
    let top = v.as_object().ok_or("the error body is not an object")?;
    if top.len() != 1 {
        return Err("the error body has fields besides `error`".into());
    }
    let e = top
        .get("error")
        .and_then(Value::as_object)
        .ok_or("no `error` object")?;
    let code = e
        .get("code")
        .and_then(Value::as_str)
        .ok_or("`error.code` is not a string")?;
    let (_, status) = CODES
        .iter()
        .find(|(c, _)| *c == code)
        .ok_or_else(|| format!("`{code}` is not a code of §1.8"))?;
    if *status != r.status {
        return Err(format!("`{code}` travels with {status}, not {}", r.status));
    }
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("`error.message` is not a non-empty string")?;
    let param = match e.get("param") {
        Some(Value::Null) => None,
        Some(Value::String(p)) if !p.is_empty() => Some(p.clone()),
        _ => return Err("`error.param` is neither null nor a non-empty string".into()),
    };
    if !r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        return Err("the error is not application/json".into());
    }
    if r.status == 429 {
        retry_after(r)?;
    }
    Ok(ErrorSeen {
        code: code.to_owned(),
        message: message.to_owned(),
        param,
    })
}

/// The `Retry-After` seconds of a 429: an integer ≥ 1 (spec §1.11, §18.8).
fn retry_after(r: &Reply) -> Result<u64, String> {
    let v = r.header("retry-after").ok_or("a 429 without Retry-After")?;
    match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("Retry-After `{v}` is not an integer ≥ 1")),
    }
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("the request is answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let sse = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if sse {
        return Reply {
            status,
            headers,
            text: String::new(),
            json: None,
        };
    }
    let bytes = resp.bytes().await.expect("the body is read");
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        json: serde_json::from_slice(&bytes).ok(),
    }
}

/// Raw HTTP against one test server.
struct Api {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Api {
    fn new(t: &TestServer) -> Api {
        Api {
            http: t.http(),
            base: t.base_url.clone(),
            admin: t.admin_key.clone(),
        }
    }

    fn req(&self, method: Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let r = self.req(method, path, key);
        send(match body {
            Some(b) => r.json(b),
            None => r,
        })
        .await
    }

    /// A request as the bootstrap admin key.
    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.call(method, path, Some(&self.admin), body).await
    }

    /// `bytes` verbatim as the body, labelled JSON.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        bytes: impl Into<reqwest::Body>,
    ) -> Reply {
        send(
            self.req(method, path, key)
                .header(CONTENT_TYPE, "application/json")
                .body(bytes),
        )
        .await
    }

    /// Creates a key with `scopes` (in `account`, default the admin's); returns (id, secret).
    async fn key(&self, scopes: &[&str], account: Option<&str>) -> (String, String) {
        let mut body = json!({"name": "test key", "scopes": scopes});
        if let Some(a) = account {
            body["account_id"] = json!(a);
        }
        let r = self.admin(Method::POST, "/v1/keys", Some(&body)).await;
        let k = r.ok(201);
        (
            k["key_id"].as_str().unwrap().to_owned(),
            k["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a deployment (left to provision) with `key`; returns its id.
    async fn deployment(&self, key: &str, extra: Value) -> String {
        let r = self
            .call(
                Method::POST,
                "/v1/deployments",
                Some(key),
                Some(&deployment_body(extra)),
            )
            .await;
        r.ok(201)["deployment_id"].as_str().unwrap().to_owned()
    }

    /// Creates an account; returns its id.
    async fn account(&self, name: &str) -> String {
        let r = self
            .admin(Method::POST, "/v1/accounts", Some(&json!({"name": name})))
            .await;
        r.ok(201)["account_id"].as_str().unwrap().to_owned()
    }

    /// The id of the bootstrap `default` account.
    async fn default_account(&self) -> String {
        let r = self
            .admin(Method::GET, "/v1/accounts?limit=100", None)
            .await;
        r.ok(200)["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "default")
            .expect("the default account exists")["account_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Every key on the server, as listed.
    async fn keys(&self) -> Vec<Value> {
        let r = self.admin(Method::GET, "/v1/keys?limit=100", None).await;
        r.ok(200)["data"].as_array().unwrap().clone()
    }

    /// How many deployments the admin's account has.
    async fn deployment_count(&self) -> usize {
        let r = self
            .admin(Method::GET, "/v1/deployments?limit=100", None)
            .await;
        r.ok(200)["data"].as_array().unwrap().len()
    }
}

/// `pdk_` + 40 base62 characters (spec §1.2).
fn is_key_text(k: &str) -> bool {
    k.len() == 44 && k.starts_with("pdk_") && k[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// An RFC 3339 UTC timestamp in whole seconds with `Z` (spec §1.6).
fn is_timestamp(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 20 && s.ends_with('Z') && paddock_protocol::time::parse_timestamp(s).is_some()
    })
}

/// A JSON body of exactly `size` bytes: `{"name": name, "pad": "xxx…"}` (an unknown field).
fn padded_account_body(name: &str, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"name":"{name}","pad":""#);
    let tail = r#""}"#;
    let pad = size - head.len() - tail.len();
    let mut s = head;
    s.push_str(&"x".repeat(pad));
    s.push_str(tail);
    assert_eq!(s.len(), size);
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Authentication (§1.2) and scopes (§1.3).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_malformed_and_unknown_keys_get_401_with_the_envelope() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let admin = t.admin_key.clone();
    // The real key works, so every 401 below is about the header.
    a.admin(Method::GET, "/v1/deployments", None).await.ok(200);

    let unknown = format!("pdk_{}", "Zz9".repeat(14).get(..40).unwrap());
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty header", Some(String::new())),
        ("scheme only", Some("Bearer".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("short bearer", Some("Bearer x".into())),
        ("basic", Some("Basic dXNlcjpwYXNzd29yZA==".into())),
        ("basic with the key", Some(format!("Basic {admin}"))),
        ("key without scheme", Some(admin.clone())),
        ("wrong prefix", Some(format!("Bearer pdx_{}", &admin[4..]))),
        ("no prefix", Some(format!("Bearer {}", &admin[4..]))),
        (
            "one character short",
            Some(format!("Bearer {}", &admin[..43])),
        ),
        ("one character long", Some(format!("Bearer {admin}A"))),
        (
            "non-base62 character",
            Some(format!("Bearer {}!", &admin[..43])),
        ),
        ("well-formed but unknown", Some(format!("Bearer {unknown}"))),
    ];
    for (what, header) in &cases {
        for (method, path, body) in [
            (Method::GET, "/v1/deployments", None),
            (
                Method::POST,
                "/v1/deployments",
                Some(deployment_body(json!({}))),
            ),
            (Method::GET, "/v1/keys", None),
        ] {
            let mut r = a.req(method.clone(), path, None);
            if let Some(h) = header {
                r = r.header(AUTHORIZATION, h);
            }
            if let Some(b) = &body {
                r = r.json(b);
            }
            let reply = send(r).await;
            assert_eq!(
                reply.status,
                401,
                "{what} on {method} {path}: {}",
                reply.describe()
            );
            let e = reply.err(401, "unauthorized");
            assert_eq!(e.param, None, "{what}");
        }
    }
    assert_eq!(
        a.deployment_count().await,
        0,
        "a refused create created nothing"
    );
}

#[tokio::test]
async fn an_unknown_v1_path_is_401_without_a_key_and_404_with_one() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (_, reader) = a.key(&[READ], None).await;
    for (method, path) in [
        (Method::GET, "/v1/whatever"),
        (Method::POST, "/v1/whatever/deeper"),
        (Method::DELETE, "/v1/deployments_x"),
        (Method::GET, "/v1/"),
    ] {
        a.call(method.clone(), path, None, None)
            .await
            .err(401, "unauthorized");
        a.call(method.clone(), path, Some("pdk_short"), None)
            .await
            .err(401, "unauthorized");
        a.admin(method.clone(), path, None).await.not_found();
        // No scope is needed to learn that nothing is there.
        a.call(method.clone(), path, Some(&reader), None)
            .await
            .not_found();
    }
    // Outside /v1/ no key is involved at all.
    a.call(Method::GET, "/nothing-here", None, None)
        .await
        .not_found();
}

#[tokio::test]
async fn a_known_path_with_an_unsupported_method_is_a_404_envelope() {
    // Spec §1.8: an unknown route is `404 not_found`; §18.5: every error is the envelope.
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let dep = a.deployment(&t.admin_key, json!({})).await;
    for (method, path) in [
        (Method::PUT, "/v1/deployments".to_owned()),
        (Method::DELETE, "/v1/deployments".to_owned()),
        (Method::POST, format!("/v1/deployments/{dep}")),
        (Method::GET, format!("/v1/deployments/{dep}/messages")),
        (Method::DELETE, "/v1/accounts".to_owned()),
        (Method::PUT, "/v1/keys".to_owned()),
    ] {
        let r = a.admin(method.clone(), &path, None).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.describe());
        r.not_found();
    }
    let r = send(a.req(Method::POST, "/healthz", None)).await;
    assert_eq!(r.status, 404, "POST /healthz: {}", r.describe());
    r.not_found();
}

#[tokio::test]
async fn a_revoked_key_gets_401_everywhere_and_lists_as_revoked() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (key_id, key) = a.key(&[READ, WRITE], None).await;
    a.call(Method::GET, "/v1/deployments", Some(&key), None)
        .await
        .ok(200);

    let r = a
        .admin(Method::DELETE, &format!("/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(r.ok(200), &json!({"key_id": key_id, "status": "revoked"}));

    for (method, path, body) in [
        (Method::GET, "/v1/deployments", None),
        (
            Method::POST,
            "/v1/deployments",
            Some(deployment_body(json!({}))),
        ),
        (Method::GET, "/v1/whatever", None),
    ] {
        let r = a.call(method, path, Some(&key), body.as_ref()).await;
        r.err(401, "unauthorized");
    }
    let listed = a.keys().await;
    let k = listed
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .expect("a revoked key stays listed");
    assert_eq!(k["status"], "revoked");
    assert!(is_timestamp(&k["revoked_at"]), "{k}");
    assert_eq!(a.deployment_count().await, 0);
}

#[tokio::test]
async fn an_expired_key_gets_401_and_lists_as_expired() {
    // The API refuses a past `expires_at`, and timestamps have whole seconds, so an expired key
    // is seeded straight into the store instead of waiting for one to expire.
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let account = a.default_account().await;
    let now = paddock_protocol::time::now_unix();
    let expired = paddock_server::keys::make_key(
        &account,
        "expired",
        vec![ADMIN.to_owned()],
        Some(now - 3600),
    );
    let store = t.server.as_ref().unwrap().state().store.clone();
    store.create_key(&expired.record).await.unwrap();

    for (method, path) in [
        (Method::GET, "/v1/deployments"),
        (Method::GET, "/v1/keys"),
        (Method::GET, "/v1/whatever"),
    ] {
        let r = a.call(method, path, Some(&expired.text), None).await;
        r.err(401, "unauthorized");
    }
    let listed = a.keys().await;
    let k = listed
        .iter()
        .find(|k| k["key_id"] == expired.record.id.as_str())
        .expect("an expired key is listed");
    assert_eq!(k["status"], "expired", "{k}");
    assert_eq!(k["revoked_at"], Value::Null);

    // An expired admin key is not an active one: the bootstrap key is still the last.
    let bootstrap = listed
        .iter()
        .find(|k| k["key_id"] != expired.record.id.as_str())
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.admin(Method::DELETE, &format!("/v1/keys/{bootstrap}"), None)
        .await
        .err(409, "conflict");
}

#[tokio::test]
async fn a_key_without_the_needed_scope_gets_403_naming_that_scope() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let dep = a.deployment(&t.admin_key, json!({})).await;
    let account = a.default_account().await;
    let (admin_key_id, _) = a.key(&[ADMIN], None).await;
    let keys = [
        ("read", vec![READ], a.key(&[READ], None).await.1),
        ("write", vec![WRITE], a.key(&[WRITE], None).await.1),
        ("secrets", vec![SECRETS], a.key(&[SECRETS], None).await.1),
    ];
    let create = deployment_body(json!({}));
    let message = json!({"content": "hi"});
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::GET, "/v1/deployments".into(), None, READ),
        (Method::GET, format!("/v1/deployments/{dep}"), None, READ),
        (
            Method::GET,
            format!("/v1/deployments/{dep}/events"),
            None,
            READ,
        ),
        (
            Method::GET,
            format!("/v1/deployments/{dep}/threads"),
            None,
            READ,
        ),
        (
            Method::GET,
            format!("/v1/deployments/{dep}/runs"),
            None,
            READ,
        ),
        (Method::POST, "/v1/deployments".into(), Some(create), WRITE),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}"),
            Some(json!({"name": "n"})),
            WRITE,
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            Some(message),
            WRITE,
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/threads"),
            Some(json!({})),
            WRITE,
        ),
        (Method::GET, "/v1/accounts".into(), None, ADMIN),
        (
            Method::POST,
            "/v1/accounts".into(),
            Some(json!({"name": "nope"})),
            ADMIN,
        ),
        (Method::GET, format!("/v1/accounts/{account}"), None, ADMIN),
        (
            Method::POST,
            format!("/v1/accounts/{account}/credits"),
            Some(json!({"balance": 1})),
            ADMIN,
        ),
        (Method::GET, "/v1/keys".into(), None, ADMIN),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "k", "scopes": [ADMIN]})),
            ADMIN,
        ),
        (
            Method::DELETE,
            format!("/v1/keys/{admin_key_id}"),
            None,
            ADMIN,
        ),
        (Method::GET, "/v1/secrets".into(), None, SECRETS),
        (
            Method::POST,
            "/v1/secrets".into(),
            Some(json!({"value": "s3cr3t-value"})),
            SECRETS,
        ),
        (
            Method::DELETE,
            "/v1/secrets/sec_nothing".into(),
            None,
            SECRETS,
        ),
        // Last: it removes the deployment the cases above name.
        (
            Method::DELETE,
            format!("/v1/deployments/{dep}"),
            None,
            WRITE,
        ),
    ];
    for (method, path, body, needed) in &cases {
        for (name, scopes, key) in &keys {
            let r = a.call(method.clone(), path, Some(key), body.as_ref()).await;
            if scopes.contains(needed) {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{name} key has {needed} for {method} {path}: {}",
                    r.describe()
                );
            } else {
                assert_eq!(
                    r.status,
                    403,
                    "{name} key on {method} {path}: {}",
                    r.describe()
                );
                let e = r.err(403, "forbidden");
                assert!(
                    e.message.contains(needed),
                    "the 403 for {method} {path} should name `{needed}`: {}",
                    e.message
                );
            }
        }
    }
    // Nothing a 403 refused took effect: the admin key the cases tried to revoke still works.
    let k = a.keys().await;
    let k = k
        .iter()
        .find(|k| k["key_id"] == admin_key_id.as_str())
        .unwrap();
    assert_eq!(k["status"], "active");
    let accounts = a.admin(Method::GET, "/v1/accounts", None).await;
    assert!(
        !accounts.ok(200)["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "nope")
    );
}

#[tokio::test]
async fn deployments_write_does_not_imply_deployments_read() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (_, writer) = a.key(&[WRITE], None).await;
    let (_, reader) = a.key(&[READ], None).await;
    let (_, both) = a.key(&[READ, WRITE], None).await;

    let dep = a.deployment(&writer, json!({})).await;
    for path in [
        "/v1/deployments".to_owned(),
        format!("/v1/deployments/{dep}"),
        format!("/v1/deployments/{dep}/events"),
    ] {
        let e = a
            .call(Method::GET, &path, Some(&writer), None)
            .await
            .err(403, "forbidden");
        assert!(e.message.contains(READ), "{}", e.message);
        assert!(
            a.call(Method::GET, &path, Some(&both), None).await.status == 200,
            "read+write key reads {path}"
        );
    }
    let e = a
        .call(
            Method::POST,
            "/v1/deployments",
            Some(&reader),
            Some(&deployment_body(json!({}))),
        )
        .await
        .err(403, "forbidden");
    assert!(e.message.contains(WRITE), "{}", e.message);
    a.call(
        Method::GET,
        &format!("/v1/deployments/{dep}"),
        Some(&reader),
        None,
    )
    .await
    .ok(200);
}

#[tokio::test]
async fn admin_grants_every_scope_within_its_own_account_only() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let other = a.account("other").await;
    let (other_admin_id, other_admin) = a.key(&[ADMIN], Some(&other)).await;

    // Deployments in its own account: write and read, including the stream.
    let dep = a.deployment(&other_admin, json!({})).await;
    let listed = a
        .call(Method::GET, "/v1/deployments", Some(&other_admin), None)
        .await;
    let ids: Vec<&Value> = listed.ok(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["deployment_id"])
        .collect();
    assert_eq!(ids, [&json!(dep)]);
    let r = a
        .call(
            Method::GET,
            &format!("/v1/deployments/{dep}/events"),
            Some(&other_admin),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.describe());
    // Secrets: the scope check passes (whatever the endpoint answers).
    let r = a
        .call(Method::GET, "/v1/secrets", Some(&other_admin), None)
        .await;
    assert!(r.status != 401 && r.status != 403, "{}", r.describe());

    // Accounts and keys across all accounts.
    let r = a
        .call(
            Method::GET,
            "/v1/accounts?limit=100",
            Some(&other_admin),
            None,
        )
        .await;
    let names: Vec<&Value> = r.ok(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["name"])
        .collect();
    assert!(
        names.contains(&&json!("default")) && names.contains(&&json!("other")),
        "{names:?}"
    );
    let r = a
        .call(Method::GET, "/v1/keys?limit=100", Some(&other_admin), None)
        .await;
    let accounts: Vec<&Value> = r.ok(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["account_id"])
        .collect();
    assert!(accounts.contains(&&json!(other)), "{accounts:?}");
    assert!(
        accounts.iter().any(|id| **id != json!(other)),
        "{accounts:?}"
    );

    // But another account's deployments stay invisible (spec §1.4).
    a.admin(Method::GET, &format!("/v1/deployments/{dep}"), None)
        .await
        .not_found();
    assert_eq!(a.deployment_count().await, 0);
    let r = a
        .admin(Method::DELETE, &format!("/v1/keys/{other_admin_id}"), None)
        .await;
    r.ok(200);
}

#[tokio::test]
async fn scope_and_auth_errors_come_before_404_and_400() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (_, reader) = a.key(&[READ], None).await;
    let (_, writer) = a.key(&[WRITE], None).await;
    // 403 before 404 (unknown id) and 400 (bad body).
    let r = a
        .raw(
            Method::PATCH,
            "/v1/deployments/dep_nothing",
            Some(&reader),
            "{not json",
        )
        .await;
    r.err(403, "forbidden");
    a.call(Method::GET, "/v1/deployments/%FF", Some(&writer), None)
        .await
        .err(403, "forbidden");
    a.call(
        Method::GET,
        "/v1/accounts/acct_nothing",
        Some(&writer),
        None,
    )
    .await
    .err(403, "forbidden");
    // 401 before all of them.
    a.raw(
        Method::PATCH,
        "/v1/deployments/dep_nothing",
        None,
        "{not json",
    )
    .await
    .err(401, "unauthorized");
}

// ---------------------------------------------------------------------------------------------
// Accounts and credits (§16.1).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_an_account_answers_201_with_a_null_balance_by_default() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let r = a
        .admin(Method::POST, "/v1/accounts", Some(&json!({"name": "acme"})))
        .await;
    let acct = r.ok(201).clone();
    let id = acct["account_id"].as_str().unwrap();
    assert!(
        id.starts_with("acct_") && paddock_protocol::ids::is_id_shaped(id),
        "{acct}"
    );
    assert_eq!(acct["name"], "acme");
    assert_eq!(acct.get("balance"), Some(&Value::Null), "{acct}");
    assert!(is_timestamp(&acct["created_at"]), "{acct}");

    let r = a
        .admin(
            Method::POST,
            "/v1/accounts",
            Some(&json!({"name": "funded", "balance": 12.5})),
        )
        .await;
    assert_eq!(r.ok(201)["balance"], 12.5);
    let r = a
        .admin(
            Method::POST,
            "/v1/accounts",
            Some(&json!({"name": "unlimited", "balance": null})),
        )
        .await;
    assert_eq!(r.ok(201)["balance"], Value::Null);

    let got = a
        .admin(Method::GET, &format!("/v1/accounts/{id}"), None)
        .await;
    assert_eq!(got.ok(200), &acct);
}

#[tokio::test]
async fn account_names_follow_the_rules_and_are_unique() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    for bad in [
        json!({}),
        json!({"name": null}),
        json!({"name": ""}),
        json!({"name": "Acme"}),
        json!({"name": "ac me"}),
        json!({"name": "a.b"}),
        json!({"name": "é"}),
        json!({"name": "x".repeat(101)}),
        json!({"name": 5}),
        json!({"name": ["a"]}),
    ] {
        let r = a.admin(Method::POST, "/v1/accounts", Some(&bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.describe());
        r.invalid("name");
    }
    a.admin(
        Method::POST,
        "/v1/accounts",
        Some(&json!({"name": "a-b_9"})),
    )
    .await
    .ok(201);
    a.admin(
        Method::POST,
        "/v1/accounts",
        Some(&json!({"name": "x".repeat(100)})),
    )
    .await
    .ok(201);
    a.admin(
        Method::POST,
        "/v1/accounts",
        Some(&json!({"name": "a-b_9"})),
    )
    .await
    .err(409, "conflict");
    a.admin(
        Method::POST,
        "/v1/accounts",
        Some(&json!({"name": "default"})),
    )
    .await
    .err(409, "conflict");
    a.admin(
        Method::POST,
        "/v1/accounts",
        Some(&json!({"name": "bal", "balance": "10"})),
    )
    .await
    .invalid("balance");
    a.admin(
        Method::POST,
        "/v1/accounts",
        Some(&json!({"name": "bal", "balance": 0.1234567})),
    )
    .await
    .invalid("balance");
    // Nothing refused was created.
    let r = a.admin(Method::GET, "/v1/accounts?limit=100", None).await;
    assert_eq!(
        r.ok(200)["data"].as_array().unwrap().len(),
        3,
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn accounts_are_listed_newest_first_and_an_unknown_account_is_404() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let first = a.account("first").await;
    let second = a.account("second").await;
    let r = a.admin(Method::GET, "/v1/accounts", None).await;
    let body = r.ok(200);
    assert_eq!(body["next_cursor"], Value::Null);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&first.as_str()) && ids.contains(&second.as_str()));
    for item in body["data"].as_array().unwrap() {
        for field in ["account_id", "name", "balance", "created_at"] {
            assert!(item.get(field).is_some(), "{field} missing in {item}");
        }
    }

    // Paging: one at a time, every account exactly once.
    let mut seen = Vec::new();
    let mut path = "/v1/accounts?limit=1".to_owned();
    loop {
        let r = a.admin(Method::GET, &path, None).await;
        let page = r.ok(200).clone();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 1);
        seen.extend(
            data.iter()
                .map(|a| a["account_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/accounts?limit=1&cursor={c}"),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end: {seen:?}");
    }
    assert_eq!(seen, ids);

    a.admin(Method::GET, &format!("/v1/accounts/{first}"), None)
        .await
        .ok(200);
    for unknown in ["acct_nothing", "acct_", "x", "%FF", "acct-1"] {
        let r = a
            .admin(Method::GET, &format!("/v1/accounts/{unknown}"), None)
            .await;
        assert_eq!(r.status, 404, "{unknown}: {}", r.describe());
        r.not_found();
    }
}

#[tokio::test]
async fn credits_add_to_a_set_balance_and_follow_the_documented_rules() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let id = a.account("credits").await;
    let path = format!("/v1/accounts/{id}/credits");
    let balance = |v: &Value| v["balance"].as_f64();
    let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-9);

    // An amount needs a balance to add to.
    a.admin(Method::POST, &path, Some(&json!({"amount": 5})))
        .await
        .err(409, "conflict");
    let r = a
        .admin(Method::GET, &format!("/v1/accounts/{id}"), None)
        .await;
    assert_eq!(r.ok(200)["balance"], Value::Null);

    let r = a
        .admin(Method::POST, &path, Some(&json!({"balance": 10})))
        .await;
    assert!(close(balance(r.ok(200)), 10.0), "{}", r.describe());
    let r = a
        .admin(Method::POST, &path, Some(&json!({"amount": 2.5})))
        .await;
    assert!(close(balance(r.ok(200)), 12.5), "{}", r.describe());
    let r = a
        .admin(Method::POST, &path, Some(&json!({"amount": -20.25})))
        .await;
    assert!(
        close(balance(r.ok(200)), -7.75),
        "negative amounts are allowed: {}",
        r.describe()
    );
    let r = a
        .admin(Method::POST, &path, Some(&json!({"amount": 0.000001})))
        .await;
    assert!(close(balance(r.ok(200)), -7.749999), "{}", r.describe());

    for (bad, param) in [
        (json!({"amount": 1, "balance": 1}), None),
        (json!({"amount": 1, "balance": null}), None),
        (json!({}), None),
        (json!({"amount": null}), None),
        (json!({"amount": 1.1234567}), Some("amount")),
        (json!({"balance": 0.0000001}), Some("balance")),
        (json!({"amount": "5"}), Some("amount")),
        (json!({"balance": true}), Some("balance")),
    ] {
        let r = a.admin(Method::POST, &path, Some(&bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.describe());
        let e = r.err(400, "validation_error");
        if let Some(p) = param {
            assert_eq!(e.param.as_deref(), Some(p), "{bad}");
        }
    }
    // The refused changes changed nothing.
    let r = a
        .admin(Method::GET, &format!("/v1/accounts/{id}"), None)
        .await;
    assert!(close(balance(r.ok(200)), -7.749999), "{}", r.describe());

    let r = a
        .admin(Method::POST, &path, Some(&json!({"balance": null})))
        .await;
    assert_eq!(r.ok(200)["balance"], Value::Null);

    // An unknown account is a 404, even with a body that would be a 400 (path ids come first).
    for body in [json!({"balance": 1}), json!({})] {
        a.admin(
            Method::POST,
            "/v1/accounts/acct_nothing/credits",
            Some(&body),
        )
        .await
        .not_found();
    }
}

// ---------------------------------------------------------------------------------------------
// Keys (§16.2).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_key_returns_its_pdk_secret_once() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let account = a.default_account().await;
    let r = a
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "backend-prod", "scopes": [READ, WRITE]})),
        )
        .await;
    let k = r.ok(201).clone();
    let text = k["key"].as_str().unwrap();
    assert!(is_key_text(text), "{text}");
    let prefix = k["prefix"].as_str().unwrap();
    assert!(
        prefix.starts_with("pdk_") && text.starts_with(prefix) && prefix.len() < text.len(),
        "{k}"
    );
    assert!(k["key_id"].as_str().unwrap().starts_with("key_"), "{k}");
    assert_eq!(k["name"], "backend-prod");
    assert_eq!(k["account_id"], account.as_str());
    assert_eq!(k["scopes"], json!([READ, WRITE]));
    assert_eq!(k["status"], "active");
    assert!(is_timestamp(&k["created_at"]), "{k}");
    for field in ["expires_at", "revoked_at"] {
        assert_eq!(k.get(field), Some(&Value::Null), "{field} in {k}");
    }
    assert!(k.get("last_used_at").is_some(), "{k}");
    a.call(Method::GET, "/v1/deployments", Some(text), None)
        .await
        .ok(200);

    let r = a
        .admin(
            Method::POST,
            "/v1/keys",
            Some(
                &json!({"name": "later", "scopes": [ADMIN], "expires_at": "2099-01-01T00:00:00Z"}),
            ),
        )
        .await;
    let k = r.ok(201);
    assert_eq!(k["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(k["status"], "active");
    a.call(
        Method::GET,
        "/v1/keys",
        Some(k["key"].as_str().unwrap()),
        None,
    )
    .await
    .ok(200);

    // For another account.
    let other = a.account("other").await;
    let r = a
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "o", "scopes": [READ], "account_id": other})),
        )
        .await;
    assert_eq!(r.ok(201)["account_id"], other.as_str());
}

#[tokio::test]
async fn key_create_rejects_bad_scopes_and_past_expiry_with_400_and_unknown_accounts_with_404() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let before = a.keys().await.len();
    for (body, param) in [
        (json!({"name": "k", "scopes": ["root"]}), "scopes[0]"),
        (json!({"name": "k", "scopes": [READ, "ADMIN"]}), "scopes[1]"),
        (json!({"name": "k", "scopes": [1]}), "scopes[0]"),
        (json!({"name": "k", "scopes": []}), "scopes"),
        (json!({"name": "k", "scopes": "admin"}), "scopes"),
        (json!({"name": "k", "scopes": null}), "scopes"),
        (json!({"name": "k"}), "scopes"),
        (json!({"scopes": [READ]}), "name"),
        (json!({"name": "", "scopes": [READ]}), "name"),
        (json!({"name": "x".repeat(101), "scopes": [READ]}), "name"),
        (
            json!({"name": "k", "scopes": [READ], "expires_at": "2000-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "k", "scopes": [READ], "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "k", "scopes": [READ], "expires_at": 4_000_000_000_u64}),
            "expires_at",
        ),
        (
            json!({"name": "k", "scopes": [READ], "account_id": 5}),
            "account_id",
        ),
        // 400 comes before a 404 for an id in the body.
        (
            json!({"name": "k", "scopes": [], "account_id": "acct_nothing"}),
            "scopes",
        ),
    ] {
        let r = a.admin(Method::POST, "/v1/keys", Some(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.describe());
        r.invalid(param);
    }
    for account in ["acct_nothing", "not an id", "acct-x"] {
        let body = json!({"name": "k", "scopes": [READ], "account_id": account});
        let r = a.admin(Method::POST, "/v1/keys", Some(&body)).await;
        assert_eq!(r.status, 404, "{body}: {}", r.describe());
        r.not_found();
    }
    assert_eq!(a.keys().await.len(), before, "no refused key was created");
}

#[tokio::test]
async fn listing_keys_never_shows_a_secret() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let other = a.account("other").await;
    let (_, mine) = a.key(&[READ], None).await;
    let (other_id, theirs) = a.key(&[WRITE], Some(&other)).await;
    let r = a.admin(Method::GET, "/v1/keys?limit=100", None).await;
    let items = r.ok(200)["data"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{}", r.describe());
    for item in &items {
        assert!(
            item.get("key").is_none(),
            "a listed key carries its secret: {item}"
        );
        for field in [
            "key_id",
            "prefix",
            "name",
            "account_id",
            "scopes",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ] {
            assert!(item.get(field).is_some(), "{field} missing in {item}");
        }
    }
    assert!(!r.text.contains(&mine) && !r.text.contains(&theirs) && !r.text.contains(&t.admin_key));

    let r = a
        .admin(Method::GET, &format!("/v1/keys?account_id={other}"), None)
        .await;
    let ids: Vec<&Value> = r.ok(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["key_id"])
        .collect();
    assert_eq!(ids, [&json!(other_id)]);
}

#[tokio::test]
async fn the_last_active_admin_key_cannot_be_revoked_but_a_key_may_revoke_itself() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let keys = a.keys().await;
    assert_eq!(keys.len(), 1);
    let bootstrap = keys[0]["key_id"].as_str().unwrap().to_owned();

    a.admin(Method::DELETE, &format!("/v1/keys/{bootstrap}"), None)
        .await
        .err(409, "conflict");
    a.admin(Method::GET, "/v1/keys", None).await.ok(200);

    // A non-admin key does not count.
    let (reader_id, _) = a.key(&[READ], None).await;
    a.admin(Method::DELETE, &format!("/v1/keys/{bootstrap}"), None)
        .await
        .err(409, "conflict");

    let (second_id, second) = a.key(&[ADMIN], None).await;
    let r = a
        .admin(Method::DELETE, &format!("/v1/keys/{bootstrap}"), None)
        .await;
    assert_eq!(
        r.ok(200),
        &json!({"key_id": bootstrap, "status": "revoked"})
    );
    a.admin(Method::GET, "/v1/keys", None)
        .await
        .err(401, "unauthorized");

    // Now the second admin key is the last one, itself included.
    let own = format!("/v1/keys/{second_id}");
    a.call(Method::DELETE, &own, Some(&second), None)
        .await
        .err(409, "conflict");
    let r = a
        .call(
            Method::DELETE,
            &format!("/v1/keys/{reader_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(r.ok(200)["status"], "revoked");
    a.call(Method::DELETE, "/v1/keys/key_nothing", Some(&second), None)
        .await
        .not_found();
    a.call(Method::DELETE, "/v1/keys/%FF", Some(&second), None)
        .await
        .not_found();
}

// ---------------------------------------------------------------------------------------------
// Request ids (§1.9, §18.4).
// ---------------------------------------------------------------------------------------------

/// One request of each kind of response; `id` is sent as `x-request-id` when given.
async fn every_kind_of_response(
    t: &TestServer,
    a: &Api,
    id: Option<&HeaderValue>,
) -> Vec<(&'static str, Reply)> {
    let dep = a.deployment(&t.admin_key, json!({})).await;
    let (_, reader) = a.key(&[READ], None).await;
    let with = |r: reqwest::RequestBuilder| match id {
        Some(v) => r.header("x-request-id", v.clone()),
        None => r,
    };
    let mut out = Vec::new();
    out.push((
        "healthz",
        send(with(a.req(Method::GET, "/healthz", None))).await,
    ));
    out.push((
        "metrics",
        send(with(a.req(Method::GET, "/metrics", None))).await,
    ));
    out.push((
        "success",
        send(with(a.req(
            Method::GET,
            "/v1/deployments",
            Some(&t.admin_key),
        )))
        .await,
    ));
    out.push((
        "401",
        send(with(a.req(Method::GET, "/v1/deployments", None))).await,
    ));
    out.push((
        "403",
        send(with(a.req(Method::GET, "/v1/keys", Some(&reader)))).await,
    ));
    out.push((
        "404",
        send(with(a.req(Method::GET, "/v1/whatever", Some(&t.admin_key)))).await,
    ));
    out.push((
        "400",
        send(with(
            a.req(Method::POST, "/v1/accounts", Some(&t.admin_key))
                .body("{"),
        ))
        .await,
    ));
    out.push((
        "413",
        send(with(
            a.req(Method::POST, "/v1/accounts", Some(&t.admin_key))
                .body(padded_account_body("big", MIB + 1)),
        ))
        .await,
    ));
    out.push((
        "sse",
        send(with(
            a.req(
                Method::GET,
                &format!("/v1/deployments/{dep}/events"),
                Some(&t.admin_key),
            )
            .header(ACCEPT, "text/event-stream"),
        ))
        .await,
    ));
    let idem_key = format!("rid-{}", rand::random::<u64>());
    let idem = |r: reqwest::RequestBuilder| with(r.header("Idempotency-Key", idem_key.as_str()));
    let body = json!({"title": "idem"});
    let path = format!("/v1/deployments/{dep}/threads");
    out.push((
        "idempotent first",
        send(idem(
            a.req(Method::POST, &path, Some(&t.admin_key)).json(&body),
        ))
        .await,
    ));
    out.push((
        "idempotent replay",
        send(idem(
            a.req(Method::POST, &path, Some(&t.admin_key)).json(&body),
        ))
        .await,
    ));
    let expected = [
        ("healthz", 200),
        ("metrics", 200),
        ("success", 200),
        ("401", 401),
        ("403", 403),
        ("404", 404),
        ("400", 400),
        ("413", 413),
        ("sse", 200),
        ("idempotent first", 201),
        ("idempotent replay", 201),
    ];
    for ((name, r), (want_name, status)) in out.iter().zip(expected) {
        assert_eq!(*name, want_name);
        assert_eq!(r.status, status, "{name}: {}", r.describe());
    }
    assert_eq!(out[10].1.header("idempotent-replayed"), Some("true"));
    out
}

#[tokio::test]
async fn every_kind_of_response_carries_a_generated_request_id() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let replies = every_kind_of_response(&t, &a, None).await;
    let mut ids = Vec::new();
    for (name, r) in &replies {
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{name} has no x-request-id"));
        assert!(id.starts_with("req_") && id.len() > 4, "{name}: {id}");
        ids.push(id.to_owned());
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "request ids repeat: {ids:?}");
}

#[tokio::test]
async fn a_valid_client_request_id_is_echoed_on_every_kind_of_response() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    for sent in ["abc.DEF_12-3".to_owned(), "a".repeat(128), "7".to_owned()] {
        let v = HeaderValue::from_str(&sent).unwrap();
        for (name, r) in every_kind_of_response(&t, &a, Some(&v)).await {
            assert_eq!(r.header("x-request-id"), Some(sent.as_str()), "{name}");
        }
    }
}

#[tokio::test]
async fn an_invalid_client_request_id_is_replaced_by_a_generated_one() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let invalid: Vec<HeaderValue> = vec![
        HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        HeaderValue::from_static(""),
        HeaderValue::from_static("has space"),
        HeaderValue::from_static("a/b"),
        HeaderValue::from_static("a:b"),
        HeaderValue::from_static("{json}"),
        HeaderValue::from_bytes("ünï".as_bytes()).unwrap(),
    ];
    for v in &invalid {
        for (name, r) in every_kind_of_response(&t, &a, Some(v)).await {
            let got = r
                .header("x-request-id")
                .unwrap_or_else(|| panic!("{name}: none"));
            assert!(got.starts_with("req_"), "{name} for {v:?}: {got}");
            assert_ne!(got.as_bytes(), v.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotency keys (§1.10, §18.6, §18.7).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_idempotent_create_takes_effect_once_and_replays_status_and_body() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let body = deployment_body(json!({"name": "idem"}));
    let post = |text: String| {
        send(
            a.req(Method::POST, "/v1/deployments", Some(&t.admin_key))
                .header("Idempotency-Key", "create-1")
                .body(text),
        )
    };
    let first = post(body.to_string()).await;
    first.ok(201);
    assert_ne!(first.header("idempotent-replayed"), Some("true"));
    let second = post(body.to_string()).await;
    assert_eq!(second.status, 201, "{}", second.describe());
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        second.text, first.text,
        "the replay carries the stored body"
    );
    assert!(second.header("x-request-id").is_some());
    assert_eq!(a.deployment_count().await, 1);

    // Key order and whitespace do not matter.
    let reordered = format!(
        "\n{{ \"system_prompt\" : {},\n\t\"name\": \"idem\" ,\"customer_id\":\"cus_test\" }}  ",
        json!(body["system_prompt"])
    );
    let third = post(reordered).await;
    assert_eq!(third.status, 201, "{}", third.describe());
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
    assert_eq!(third.json, first.json);
    assert_eq!(a.deployment_count().await, 1);
}

#[tokio::test]
async fn reusing_an_idempotency_key_for_another_body_or_path_is_409_without_effect() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let dep = a.deployment(&t.admin_key, json!({})).await;
    let post = |path: String, body: Value| {
        send(
            a.req(Method::POST, &path, Some(&t.admin_key))
                .header("Idempotency-Key", "reuse-1")
                .json(&body),
        )
    };
    post("/v1/accounts".into(), json!({"name": "first"}))
        .await
        .ok(201);
    post("/v1/accounts".into(), json!({"name": "second"}))
        .await
        .err(409, "conflict");
    post(
        "/v1/accounts".into(),
        json!({"name": "first", "balance": 5}),
    )
    .await
    .err(409, "conflict");
    post(
        format!("/v1/deployments/{dep}/threads"),
        json!({"name": "first"}),
    )
    .await
    .err(409, "conflict");

    let r = a.admin(Method::GET, "/v1/accounts?limit=100", None).await;
    let names: Vec<&Value> = r.ok(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["name"])
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&&json!("second")));
    let r = a
        .admin(Method::GET, &format!("/v1/deployments/{dep}/threads"), None)
        .await;
    assert_eq!(
        r.ok(200)["data"].as_array().unwrap().len(),
        1,
        "only the default thread"
    );
    // The original still replays.
    let r = post("/v1/accounts".into(), json!({"name": "first"})).await;
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn idempotency_keys_are_per_account() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let other = a.account("other").await;
    let (_, other_admin) = a.key(&[ADMIN], Some(&other)).await;
    let body = deployment_body(json!({}));
    let mut ids = Vec::new();
    for key in [&t.admin_key, &other_admin] {
        let r = send(
            a.req(Method::POST, "/v1/deployments", Some(key))
                .header("Idempotency-Key", "shared")
                .json(&body),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.describe());
        assert_ne!(r.header("idempotent-replayed"), Some("true"));
        ids.push(r.json.unwrap()["deployment_id"].clone());
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn an_invalid_idempotency_key_on_a_post_is_400_and_has_no_effect() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let body = deployment_body(json!({}));
    let invalid = [
        HeaderValue::from_static(""),
        HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        HeaderValue::from_static("has space"),
        HeaderValue::from_static("tab\there"),
        HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
    ];
    for v in &invalid {
        let r = send(
            a.req(Method::POST, "/v1/deployments", Some(&t.admin_key))
                .header("Idempotency-Key", v.clone())
                .json(&body),
        )
        .await;
        assert_eq!(r.status, 400, "{v:?}: {}", r.describe());
        r.err(400, "validation_error");
    }
    assert_eq!(a.deployment_count().await, 0);
    // 255 visible characters is the longest valid key.
    let r = send(
        a.req(Method::POST, "/v1/deployments", Some(&t.admin_key))
            .header("Idempotency-Key", "~".repeat(255))
            .json(&body),
    )
    .await;
    r.ok(201);
}

#[tokio::test]
async fn methods_other_than_post_ignore_the_idempotency_key() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let dep = a.deployment(&t.admin_key, json!({})).await;
    let r = send(
        a.req(Method::POST, "/v1/accounts", Some(&t.admin_key))
            .header("Idempotency-Key", "used")
            .json(&json!({"name": "acme"})),
    )
    .await;
    r.ok(201);
    for key in [
        HeaderValue::from_static("used"),
        HeaderValue::from_static(""),
        HeaderValue::from_str(&"k".repeat(300)).unwrap(),
    ] {
        let r = send(
            a.req(Method::GET, "/v1/accounts", Some(&t.admin_key))
                .header("Idempotency-Key", key.clone()),
        )
        .await;
        assert!(
            r.ok(200)["data"].is_array(),
            "GET answers the list: {}",
            r.describe()
        );
        assert_ne!(r.header("idempotent-replayed"), Some("true"));
        let r = send(
            a.req(
                Method::PATCH,
                &format!("/v1/deployments/{dep}"),
                Some(&t.admin_key),
            )
            .header("Idempotency-Key", key.clone())
            .json(&json!({"name": format!("renamed {}", key.len())})),
        )
        .await;
        assert_eq!(r.ok(200)["name"], format!("renamed {}", key.len()));
    }
}

#[tokio::test]
async fn an_oversized_body_is_413_before_idempotency_handling() {
    // Spec §1.8: 413 comes before idempotency handling, so the key is neither checked nor used.
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let big = padded_account_body("big", MIB + 1);
    for key in ["", "fine-key"] {
        let r = send(
            a.req(Method::POST, "/v1/accounts", Some(&t.admin_key))
                .header("Idempotency-Key", key)
                .body(big.clone()),
        )
        .await;
        assert_eq!(r.status, 413, "key {key:?}: {}", r.describe());
        r.err(413, "payload_too_large");
    }
    // The 413 did not take the key.
    let r = send(
        a.req(Method::POST, "/v1/accounts", Some(&t.admin_key))
            .header("Idempotency-Key", "fine-key")
            .json(&json!({"name": "small"})),
    )
    .await;
    r.ok(201);
    assert_ne!(r.header("idempotent-replayed"), Some("true"));
}

// ---------------------------------------------------------------------------------------------
// Bodies and bad input (§1.6, §1.7, §1.12).
// ---------------------------------------------------------------------------------------------

/// A ready deployment with one finished run: (deployment id, default thread id, run id).
async fn deployment_with_a_run(t: &TestServer) -> (String, String, String) {
    let d = t.ready_deployment(json!({})).await;
    let mut events = open_events(&t.admin, &d.deployment_id).await;
    let accepted = t
        .admin
        .send_message(&d.deployment_id, "hello", None, &[])
        .await
        .expect("send");
    collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await;
    (d.deployment_id, d.thread_id, accepted.run_id)
}

/// Every endpoint that takes a JSON body, with a valid body for it.
fn write_endpoints(
    dep: &str,
    thread: &str,
    run: &str,
    account: &str,
) -> Vec<(Method, String, Value)> {
    vec![
        (
            Method::POST,
            "/v1/deployments".into(),
            deployment_body(json!({})),
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}"),
            json!({"name": "patched"}),
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            json!({"content": "hi"}),
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/threads"),
            json!({"title": "t"}),
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}/threads/{thread}"),
            json!({"title": "t2"}),
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/runs/{run}/cancel"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/runs/{run}/steering"),
            json!({"request_id": "srq_x", "decision": "approve"}),
        ),
        (Method::POST, "/v1/accounts".into(), json!({"name": "fz"})),
        (
            Method::POST,
            format!("/v1/accounts/{account}/credits"),
            json!({"balance": 5}),
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            json!({"name": "fz", "scopes": [READ]}),
        ),
    ]
}

#[tokio::test]
async fn malformed_or_non_object_json_is_400_validation_error() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, _) = deployment_with_a_run(&t).await;
    let account = a.account("bodies").await;
    let endpoints = [
        (Method::POST, "/v1/deployments".to_owned()),
        (Method::PATCH, format!("/v1/deployments/{dep}")),
        (Method::POST, format!("/v1/deployments/{dep}/messages")),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}/threads/{thread}"),
        ),
        (Method::POST, "/v1/accounts".to_owned()),
        (Method::POST, format!("/v1/accounts/{account}/credits")),
        (Method::POST, "/v1/keys".to_owned()),
    ];
    let malformed: [&[u8]; 14] = [
        b"{",
        b"{\"a\":}",
        b"{'a': 1}",
        b"{\"a\": 1,}",
        b"{\"a\": 1} trailing",
        b"nul",
        b"",
        b"   \n",
        b"\xff\xfe{}",
        b"{\"a\": \"\xff\"}",
        b"{\"a\": 1e309}",
        b"{\"a\": \"\\ud800\"}",
        b"\xef\xbb\xbf{}",
        b"[1, 2",
    ];
    let non_objects: [&[u8]; 7] = [
        b"[]",
        b"[{}]",
        b"\"string\"",
        b"42",
        b"-1.5",
        b"null",
        b"true",
    ];
    for (method, path) in &endpoints {
        for body in malformed.iter().chain(non_objects.iter()) {
            let r = a
                .raw(method.clone(), path, Some(&t.admin_key), body.to_vec())
                .await;
            assert_eq!(
                r.status,
                400,
                "{method} {path} with {:?}: {}",
                String::from_utf8_lossy(body),
                r.describe()
            );
            r.err(400, "validation_error");
        }
    }
    // Thread create takes an optional body: empty is fine, anything else must be an object.
    let path = format!("/v1/deployments/{dep}/threads");
    a.raw(Method::POST, &path, Some(&t.admin_key), "")
        .await
        .ok(201);
    for body in non_objects.iter().chain(&malformed[..6]) {
        let r = a
            .raw(Method::POST, &path, Some(&t.admin_key), body.to_vec())
            .await;
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.describe()
        );
        r.err(400, "validation_error");
    }
    assert_eq!(
        a.deployment_count().await,
        1,
        "no refused create took effect"
    );
}

#[tokio::test]
async fn json_is_parsed_whatever_the_content_type() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    for (i, content_type) in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/octet-stream"),
        Some("application/json; charset=utf-8"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = a
            .req(Method::POST, "/v1/accounts", Some(&t.admin_key))
            .body(format!(r#"{{"name": "plain-{i}"}}"#));
        if let Some(c) = content_type {
            r = r.header(CONTENT_TYPE, c);
        }
        let reply = send(r).await;
        assert_eq!(reply.status, 201, "{content_type:?}: {}", reply.describe());
        assert_eq!(reply.json.unwrap()["name"], format!("plain-{i}"));
        let bad = send(
            a.req(Method::POST, "/v1/accounts", Some(&t.admin_key))
                .header(CONTENT_TYPE, content_type.unwrap_or("text/plain"))
                .body("name=form"),
        )
        .await;
        bad.err(400, "validation_error");
    }
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_400_naming_it() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, run) = deployment_with_a_run(&t).await;
    let base = deployment_body(json!({}));
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"customer_id": 5})),
            "customer_id",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"name": true})),
            "name",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"system_prompt": []})),
            "system_prompt",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"model": 7})),
            "model",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"runtime": false})),
            "runtime",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"sandbox": "big"})),
            "sandbox",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"sandbox": {"cpus": "1"}})),
            "sandbox.cpus",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"sandbox": {"enabled": 1}})),
            "sandbox.enabled",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"features": {"memory": "yes"}})),
            "features.memory",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"mcp_servers": {}})),
            "mcp_servers",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"secrets": []})),
            "secrets",
        ),
        (
            Method::POST,
            "/v1/deployments".into(),
            with(json!({"tool_policies": 3})),
            "tool_policies",
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}"),
            json!({"name": 1}),
            "name",
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}"),
            json!({"sandbox": {"memory_mb": "2048"}}),
            "sandbox.memory_mb",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            json!({"content": 5}),
            "content",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            json!({"content": "hi", "thread_id": 5}),
            "thread_id",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            json!({"content": "hi", "attachments": "x"}),
            "attachments",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            json!({"content": "hi", "attachments": [5]}),
            "attachments[0]",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/messages"),
            json!({"content": "hi", "attachments": [{"type": "image", "url": 5}]}),
            "attachments[0].url",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/threads"),
            json!({"title": 5}),
            "title",
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}/threads/{thread}"),
            json!({"title": {}}),
            "title",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/runs/{run}/steering"),
            json!({"request_id": 5, "decision": "approve"}),
            "request_id",
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/runs/{run}/steering"),
            json!({"request_id": "srq_x", "decision": 1}),
            "decision",
        ),
        (
            Method::POST,
            "/v1/accounts".into(),
            json!({"name": 5}),
            "name",
        ),
        (
            Method::POST,
            "/v1/accounts".into(),
            json!({"name": "n", "balance": "10"}),
            "balance",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            json!({"name": [], "scopes": [READ]}),
            "name",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            json!({"name": "k", "scopes": {}}),
            "scopes",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            json!({"name": "k", "scopes": [READ], "expires_at": 5}),
            "expires_at",
        ),
    ];
    for (method, path, body, param) in &cases {
        let r = a.admin(method.clone(), path, Some(body)).await;
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.describe());
        r.invalid(param);
    }
    assert_eq!(a.deployment_count().await, 1);
    let r = a
        .admin(Method::GET, &format!("/v1/deployments/{dep}"), None)
        .await;
    assert_eq!(
        r.ok(200)["name"],
        "Test agent",
        "a refused PATCH changed nothing"
    );
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, _) = deployment_with_a_run(&t).await;
    let extra = json!({"zz_unknown": 1, "nested_unknown": {"a": [1, null, "x"]}, "": null});
    let with = |body: Value| {
        let mut b = body;
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let r = a
        .admin(
            Method::POST,
            "/v1/deployments",
            Some(&with(deployment_body(json!({})))),
        )
        .await;
    let created = r.ok(201);
    assert!(created.get("zz_unknown").is_none());
    let r = a
        .admin(
            Method::PATCH,
            &format!("/v1/deployments/{dep}"),
            Some(&with(json!({"name": "renamed"}))),
        )
        .await;
    assert_eq!(r.ok(200)["name"], "renamed");
    let r = a
        .admin(
            Method::POST,
            &format!("/v1/deployments/{dep}/threads"),
            Some(&with(json!({"title": "x"}))),
        )
        .await;
    assert_eq!(r.ok(201)["title"], "x");
    let r = a
        .admin(
            Method::PATCH,
            &format!("/v1/deployments/{dep}/threads/{thread}"),
            Some(&with(json!({"title": "y"}))),
        )
        .await;
    assert_eq!(r.ok(200)["title"], "y");
    let r = a
        .admin(
            Method::POST,
            "/v1/accounts",
            Some(&with(json!({"name": "extra"}))),
        )
        .await;
    assert_eq!(r.ok(201)["name"], "extra");
    let account = r.json.as_ref().unwrap()["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = a
        .admin(
            Method::POST,
            &format!("/v1/accounts/{account}/credits"),
            Some(&with(json!({"balance": 3}))),
        )
        .await;
    assert_eq!(r.ok(200)["balance"], 3.0);
    let r = a
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&with(json!({"name": "k", "scopes": [READ]}))),
        )
        .await;
    r.ok(201);
    let r = a
        .admin(
            Method::POST,
            &format!("/v1/deployments/{dep}/messages"),
            Some(&with(json!({"content": "hi"}))),
        )
        .await;
    assert_eq!(r.ok(202)["status"], "running");
}

#[tokio::test]
async fn a_body_over_one_mib_is_413_and_one_at_the_limit_is_read() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, run) = deployment_with_a_run(&t).await;
    let account = a.account("limits").await;
    let big = format!(r#"{{"content": "{}"}}"#, "x".repeat(MIB));
    for (method, path, _) in write_endpoints(&dep, &thread, &run, &account) {
        if path.ends_with("/cancel") {
            continue; // takes no body
        }
        let r = a
            .raw(method.clone(), &path, Some(&t.admin_key), big.clone())
            .await;
        assert_eq!(r.status, 413, "{method} {path}: {}", r.describe());
        r.err(413, "payload_too_large");
    }
    // An unknown id in the path does not beat a 413 (spec §1.8 order).
    a.raw(
        Method::PATCH,
        "/v1/deployments/dep_nothing",
        Some(&t.admin_key),
        big.clone(),
    )
    .await
    .err(413, "payload_too_large");

    let at_limit = padded_account_body("at-limit", MIB);
    a.raw(Method::POST, "/v1/accounts", Some(&t.admin_key), at_limit)
        .await
        .ok(201);
    let over = padded_account_body("over-limit", MIB + 1);
    a.raw(Method::POST, "/v1/accounts", Some(&t.admin_key), over)
        .await
        .err(413, "payload_too_large");
    // A field over its own limit inside an acceptable body is a 400.
    let long = json!({"content": "x".repeat(100_001)});
    a.admin(
        Method::POST,
        &format!("/v1/deployments/{dep}/messages"),
        Some(&long),
    )
    .await
    .invalid("content");
}

#[tokio::test]
async fn authentication_and_scope_errors_come_before_413() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (_, reader) = a.key(&[READ], None).await;
    let big = padded_account_body("big", 2 * MIB);
    for key in [
        None,
        Some("Bearer x"),
        Some("Bearer pdk_0000000000000000000000000000000000000000"),
    ] {
        let mut r = a
            .req(Method::POST, "/v1/deployments", None)
            .header(CONTENT_TYPE, "application/json")
            .body(big.clone());
        if let Some(k) = key {
            r = r.header(AUTHORIZATION, k);
        }
        let reply = send(r).await;
        assert_eq!(reply.status, 401, "{key:?}: {}", reply.describe());
        reply.err(401, "unauthorized");
    }
    a.raw(Method::POST, "/v1/deployments", Some(&reader), big.clone())
        .await
        .err(403, "forbidden");
}

#[tokio::test]
async fn odd_ids_in_paths_are_404_never_400_or_500() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, run) = deployment_with_a_run(&t).await;
    let odd = [
        "a".repeat(65),
        format!("dep_{}", "a".repeat(61)),
        "dep-1".to_owned(),
        "dep.1".to_owned(),
        "dep%20x".to_owned(),
        "%FF".to_owned(),
        "%00".to_owned(),
        "%C3%28".to_owned(),
        "%E2%98%83".to_owned(),
        "dep%2F..%2Fx".to_owned(),
        "%25".to_owned(),
        "dep_%0A".to_owned(),
        "dep_x'%20OR%201=1".to_owned(),
        "dep_nothing".to_owned(),
    ];
    let name = json!({"name": "n"});
    let msg = json!({"content": "hi"});
    let title = json!({"title": "t"});
    for id in &odd {
        let cases: Vec<(Method, String, Option<&Value>)> = vec![
            (Method::GET, format!("/v1/deployments/{id}"), None),
            (Method::PATCH, format!("/v1/deployments/{id}"), Some(&name)),
            (Method::DELETE, format!("/v1/deployments/{id}"), None),
            (
                Method::POST,
                format!("/v1/deployments/{id}/messages"),
                Some(&msg),
            ),
            (Method::GET, format!("/v1/deployments/{id}/events"), None),
            (Method::GET, format!("/v1/deployments/{id}/runs"), None),
            (Method::GET, format!("/v1/deployments/{id}/threads"), None),
            (
                Method::POST,
                format!("/v1/deployments/{id}/threads"),
                Some(&title),
            ),
            (
                Method::GET,
                format!("/v1/deployments/{dep}/runs/{id}"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/deployments/{dep}/runs/{id}/cancel"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/deployments/{dep}/runs/{id}/steering"),
                Some(&msg),
            ),
            (
                Method::GET,
                format!("/v1/deployments/{dep}/threads/{id}"),
                None,
            ),
            (
                Method::PATCH,
                format!("/v1/deployments/{dep}/threads/{id}"),
                Some(&title),
            ),
            (
                Method::DELETE,
                format!("/v1/deployments/{dep}/threads/{id}"),
                None,
            ),
            (Method::GET, format!("/v1/accounts/{id}"), None),
            (
                Method::POST,
                format!("/v1/accounts/{id}/credits"),
                Some(&name),
            ),
            (Method::DELETE, format!("/v1/keys/{id}"), None),
        ];
        for (method, path, body) in cases {
            let r = a.admin(method.clone(), &path, body).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.describe());
            r.not_found();
        }
    }
    // Ids from another resource kind name nothing here either.
    for path in [
        format!("/v1/deployments/{run}"),
        format!("/v1/deployments/{dep}/runs/{thread}"),
        format!("/v1/deployments/{dep}/threads/{run}"),
    ] {
        a.admin(Method::GET, &path, None).await.not_found();
    }
}

#[tokio::test]
async fn a_bad_body_does_not_beat_a_404_for_an_id_in_the_path() {
    // Spec §1.8 order: 404 for ids in the path comes before 400.
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, _, _) = deployment_with_a_run(&t).await;
    for (method, path) in [
        (Method::PATCH, "/v1/deployments/dep_nothing".to_owned()),
        (
            Method::POST,
            "/v1/deployments/dep_nothing/messages".to_owned(),
        ),
        (
            Method::POST,
            "/v1/deployments/dep_nothing/threads".to_owned(),
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}/threads/thr_nothing"),
        ),
        (
            Method::POST,
            format!("/v1/deployments/{dep}/runs/run_nothing/steering"),
        ),
        (Method::POST, "/v1/accounts/acct_nothing/credits".to_owned()),
    ] {
        for body in [
            "{not json",
            "[]",
            r#"{"content": 5, "title": 5, "name": 5}"#,
        ] {
            let r = a.raw(method.clone(), &path, Some(&t.admin_key), body).await;
            assert_eq!(r.status, 404, "{method} {path} {body}: {}", r.describe());
            r.not_found();
        }
    }
}

#[tokio::test]
async fn a_400_comes_before_a_404_for_an_id_in_the_body() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let d = t.ready_deployment(json!({})).await;
    let path = format!("/v1/deployments/{}/messages", d.deployment_id);
    a.admin(
        Method::POST,
        &path,
        Some(&json!({"content": "", "thread_id": "thr_nothing"})),
    )
    .await
    .invalid("content");
    let e = a
        .admin(
            Method::POST,
            &path,
            Some(&json!({"content": "hi", "thread_id": "thr_nothing"})),
        )
        .await
        .not_found();
    assert_eq!(e.param.as_deref(), Some("thread_id"));
    let e = a
        .admin(
            Method::POST,
            &path,
            Some(&json!({"content": "hi", "thread_id": "odd id%"})),
        )
        .await
        .not_found();
    assert_eq!(e.param.as_deref(), Some("thread_id"));
}

#[tokio::test]
async fn bad_event_cursors_and_types_are_400_naming_the_parameter() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let dep = a.deployment(&t.admin_key, json!({})).await;
    let path = format!("/v1/deployments/{dep}/events");
    let get = |query: String, last_event_id: Option<&'static [u8]>| {
        let mut r = a
            .req(Method::GET, &format!("{path}{query}"), Some(&t.admin_key))
            .header(ACCEPT, "text/event-stream");
        if let Some(v) = last_event_id {
            r = r.header("Last-Event-ID", HeaderValue::from_bytes(v).unwrap());
        }
        send(r)
    };
    for bad in [
        "evt_x", "123", "evt_-1", "evt_", "", "evt_1.5", "EVT_1", "evt_%201", "evt_1%00",
    ] {
        let r = get(format!("?after={bad}"), None).await;
        assert_eq!(r.status, 400, "after={bad}: {}", r.describe());
        r.invalid("after");
    }
    let bad_headers: [&'static [u8]; 6] =
        [b"evt_x", b"123", b"evt_-1", b"", b"evt_1 2", b"evt_\xff"];
    for bad in bad_headers {
        let r = get(String::new(), Some(bad)).await;
        assert_eq!(
            r.status,
            400,
            "Last-Event-ID {:?}: {}",
            String::from_utf8_lossy(bad),
            r.describe()
        );
        r.invalid("Last-Event-ID");
    }
    for bad in ["nope", "run_status,nope", "RUN_STATUS", "run_status;token"] {
        let r = get(format!("?types={bad}"), None).await;
        assert_eq!(r.status, 400, "types={bad}: {}", r.describe());
        r.invalid("types");
    }
    // Valid forms open the stream.
    for ok in [
        "?after=evt_0".to_owned(),
        "?after=evt_0007".to_owned(),
        "?after=evt_99999999999999999999999".to_owned(),
        "?types=run_status,steering_request".to_owned(),
        "?thread_id=thr_nothing&run_id=run_nothing".to_owned(),
    ] {
        let r = get(ok.clone(), None).await;
        assert_eq!(r.status, 200, "{ok}: {}", r.describe());
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("text/event-stream")
        );
    }
    // `after` wins over the header, even a bad header.
    let r = get("?after=evt_1".into(), Some(b"garbage")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = get(String::new(), Some(b"evt_5")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[tokio::test]
async fn bad_pagination_and_filters_are_400_naming_the_parameter() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, _) = deployment_with_a_run(&t).await;
    let lists = [
        "/v1/deployments".to_owned(),
        "/v1/accounts".to_owned(),
        "/v1/keys".to_owned(),
        format!("/v1/deployments/{dep}/threads"),
        format!("/v1/deployments/{dep}/runs"),
    ];
    for list in &lists {
        for bad in ["0", "101", "-1", "abc", "1.5", "", "99999999999999999999"] {
            let r = a
                .admin(Method::GET, &format!("{list}?limit={bad}"), None)
                .await;
            assert_eq!(r.status, 400, "{list}?limit={bad}: {}", r.describe());
            r.invalid("limit");
        }
        for bad in ["garbage", "", "%FF%FE", "eyJ4IjoxfQ", &"c".repeat(5000)] {
            let r = a
                .admin(Method::GET, &format!("{list}?cursor={bad}"), None)
                .await;
            assert_eq!(
                r.status,
                400,
                "{list}?cursor={}: {}",
                &bad[..bad.len().min(20)],
                r.describe()
            );
            r.invalid("cursor");
        }
        for ok in ["1", "100", "20"] {
            let r = a
                .admin(Method::GET, &format!("{list}?limit={ok}"), None)
                .await;
            assert!(r.ok(200)["data"].is_array());
        }
    }
    let cases = [
        ("/v1/deployments?status=nope".to_owned(), "status"),
        (format!("/v1/deployments/{dep}/runs?status=done"), "status"),
        (
            format!("/v1/deployments/{dep}/runs?trigger=nope"),
            "trigger",
        ),
        (
            format!("/v1/deployments/{dep}/threads/{thread}?messages_limit=0"),
            "messages_limit",
        ),
        (
            format!("/v1/deployments/{dep}/threads/{thread}?messages_limit=501"),
            "messages_limit",
        ),
        (
            format!("/v1/deployments/{dep}/threads/{thread}?messages_before=msg_nothing"),
            "messages_before",
        ),
        (
            format!("/v1/deployments/{dep}/threads/{thread}?messages_before=%FF"),
            "messages_before",
        ),
    ];
    for (path, param) in &cases {
        a.admin(Method::GET, path, None).await.invalid(param);
    }
    let r = a
        .admin(
            Method::DELETE,
            &format!("/v1/deployments/{dep}?retain_filesystem=maybe"),
            None,
        )
        .await;
    r.invalid("retain_filesystem");
    a.admin(Method::GET, &format!("/v1/deployments/{dep}"), None)
        .await
        .ok(200);
}

// ---------------------------------------------------------------------------------------------
// Fuzz: random bodies against every write endpoint.
// ---------------------------------------------------------------------------------------------

/// The fixed seed; `PADDOCK_FUZZ_SEED=<u64>` replays another one.
const FUZZ_SEED: u64 = 0x00C0_FFEE_5EED_2026;
/// Random bodies per endpoint.
const FUZZ_CASES: usize = 300;

/// Field names the endpoints know, so random objects often hit real validation.
const FIELDS: [&str; 44] = [
    "customer_id",
    "name",
    "system_prompt",
    "model",
    "runtime",
    "sandbox",
    "enabled",
    "type",
    "persistent_filesystem",
    "image",
    "network",
    "cpus",
    "memory_mb",
    "features",
    "memory",
    "dreaming",
    "automations",
    "steering",
    "filesystem_webhooks",
    "mcp_servers",
    "url",
    "tools",
    "headers",
    "skills",
    "source",
    "secrets",
    "tool_policies",
    "content",
    "thread_id",
    "attachments",
    "title",
    "request_id",
    "decision",
    "message",
    "balance",
    "amount",
    "scopes",
    "account_id",
    "expires_at",
    "description",
    "ACME_TOKEN",
    "Authorization",
    "",
    "__proto__",
];

/// Number tokens serde_json cannot or may not read as an ordinary `f64`, written as text.
const NUMBER_TOKENS: [&str; 16] = [
    "1e309",
    "-1e309",
    "1e-400",
    "1E400",
    "123456789012345678901234567890",
    "-0",
    "-0.0",
    "0.0000001",
    "18446744073709551616",
    "-9223372036854775809",
    "NaN",
    "Infinity",
    "0x10",
    "01",
    "1.",
    "-",
];

fn random_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..16) {
        0 => String::new(),
        1 => " ".into(),
        2 => "🦀 Zürich ☃ \u{202E}evil\u{200B}\u{FEFF}".into(),
        3 => "\u{0}\u{1}\u{7}\n\r\t\"\\".into(),
        4 => "x".repeat(rng.random_range(100..3000)),
        5 => "é".repeat(rng.random_range(1..300)),
        6 => [
            "deployments:read",
            "deployments:write",
            "secrets:write",
            "admin",
            "root",
        ][rng.random_range(0..5)]
        .into(),
        7 => [
            "fake/m",
            "local/nope",
            "anthropic/x",
            "nope/x",
            "fake/",
            "/",
        ][rng.random_range(0..6)]
        .into(),
        8 => [
            "http://127.0.0.1:9/x",
            "https://127.0.0.1:9/mcp",
            "ftp://x",
            "http://",
            "javascript:alert(1)",
        ][rng.random_range(0..5)]
        .into(),
        9 => ["${ACME_TOKEN}", "${", "$$", "${}", "Bearer ${X}"][rng.random_range(0..5)].into(),
        10 => [
            "dep_x",
            "thr_x",
            "run_x",
            "srq_x",
            "acct_x",
            "sec_x",
            "new",
            "thr_default_x",
        ][rng.random_range(0..8)]
        .into(),
        11 => [
            "2099-01-01T00:00:00Z",
            "2000-01-01T00:00:00Z",
            "2099-13-45T99:99:99Z",
            "now",
        ][rng.random_range(0..4)]
        .into(),
        12 => [
            "approve",
            "reject",
            "respond",
            "always_ask",
            "always_allow",
            "none",
            "internet",
            "docker",
            "bubblewrap",
            "paddock",
            "hermes",
            "image",
            "inline",
            "url",
            "file",
        ][rng.random_range(0..15)]
        .into(),
        13 => FIELDS[rng.random_range(0..FIELDS.len())].into(),
        14 => (0..rng.random_range(1..40))
            .map(|_| char::from_u32(rng.random_range(0x20..0x2FFF)).unwrap_or('?'))
            .collect(),
        _ => (0..rng.random_range(1..24))
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect(),
    }
}

fn random_number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..8) {
        0 => json!(0),
        1 => json!(rng.random::<i64>()),
        2 => json!(rng.random::<u64>()),
        3 => json!(rng.random_range(-10.0..10.0_f64)),
        4 => json!(rng.random_range(-1e12..1e12_f64)),
        5 => json!(f64::MAX),
        6 => json!(0.1234567),
        _ => json!(rng.random_range(-3..300)),
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    let leaf = depth >= 4 || rng.random_bool(0.6);
    match rng.random_range(0..if leaf { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => random_number(rng),
        3 => Value::String(random_string(rng)),
        4 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(random_object(rng, depth + 1)),
    }
}

fn random_object(rng: &mut StdRng, depth: u32) -> Map<String, Value> {
    let mut m = Map::new();
    for _ in 0..rng.random_range(0..7) {
        let key = if rng.random_bool(0.8) {
            FIELDS[rng.random_range(0..FIELDS.len())].to_owned()
        } else {
            random_string(rng).chars().take(40).collect()
        };
        m.insert(key, random_value(rng, depth));
    }
    m
}

/// `valid` with random fields added, replaced or removed.
fn mutate(rng: &mut StdRng, valid: &Value) -> Value {
    let mut m = valid.as_object().cloned().unwrap_or_default();
    let keys: Vec<String> = m.keys().cloned().collect();
    if !keys.is_empty() && rng.random_bool(0.6) {
        let k = &keys[rng.random_range(0..keys.len())];
        if rng.random_bool(0.2) {
            m.remove(k);
        } else {
            m.insert(k.clone(), random_value(rng, 1));
        }
    }
    for _ in 0..rng.random_range(0..4) {
        let k = FIELDS[rng.random_range(0..FIELDS.len())].to_owned();
        m.insert(k, random_value(rng, 1));
    }
    Value::Object(m)
}

/// One random body (bytes) for an endpoint whose valid body is `valid`.
fn random_body(rng: &mut StdRng, valid: &Value) -> Vec<u8> {
    let text = |v: &Value, rng: &mut StdRng| {
        if rng.random_bool(0.5) {
            serde_json::to_string(v).unwrap()
        } else {
            serde_json::to_string_pretty(v).unwrap()
        }
    };
    match rng.random_range(0..100) {
        0..25 => {
            let v = Value::Object(random_object(rng, 0));
            text(&v, rng).into_bytes()
        }
        25..55 => {
            let v = mutate(rng, valid);
            text(&v, rng).into_bytes()
        }
        55..63 => {
            // Truncated JSON, possibly mid-character.
            let v = mutate(rng, valid);
            let mut b = text(&v, rng).into_bytes();
            let cut = rng.random_range(0..b.len().max(1));
            b.truncate(cut);
            b
        }
        63..69 => {
            // Duplicated keys, as raw text.
            let v = mutate(rng, valid);
            let mut s = serde_json::to_string(&v).unwrap();
            s.pop();
            for _ in 0..rng.random_range(1..4) {
                let k = FIELDS[rng.random_range(0..FIELDS.len())];
                let dup = serde_json::to_string(&random_value(rng, 2)).unwrap();
                if s.len() > 1 {
                    s.push(',');
                }
                s.push_str(&format!("{}:{dup}", json!(k)));
            }
            s.push('}');
            s.into_bytes()
        }
        69..76 => {
            // A number serde_json cannot hold, written into an otherwise valid body.
            let mut s = serde_json::to_string(valid).unwrap();
            s.pop();
            let k = FIELDS[rng.random_range(0..FIELDS.len())];
            let n = NUMBER_TOKENS[rng.random_range(0..NUMBER_TOKENS.len())];
            if s.len() > 1 {
                s.push(',');
            }
            s.push_str(&format!("{}:{n}}}", json!(k)));
            s.into_bytes()
        }
        76..82 => {
            // Not an object at the top.
            let v = loop {
                let v = random_value(rng, 0);
                if !v.is_object() {
                    break v;
                }
            };
            serde_json::to_vec(&v).unwrap()
        }
        82..86 => {
            // Deep nesting, under and over any recursion limit.
            let depth = rng.random_range(50..5000);
            let (open, close) = if rng.random_bool(0.5) {
                ("[".to_owned(), "]")
            } else {
                ("{\"a\":".to_owned(), "}")
            };
            let mut s = String::from("{\"content\":");
            s.push_str(&open.repeat(depth));
            s.push('1');
            s.push_str(&close.repeat(depth));
            s.push('}');
            s.into_bytes()
        }
        86..90 => {
            // Random bytes.
            (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect()
        }
        90..94 => {
            let pick = [
                "{\"content\":\"\\ud800\"}",
                "{\"name\":\"\\u0000\",\"customer_id\":\"\\u0000\",\"system_prompt\":\"\\u0000\"}",
                "\u{FEFF}{}",
                "",
                " \n\t ",
                "{\"a\":1}{\"a\":2}",
                "{\"title\":\"\\uDFFF\\uD800\"}",
                "{\"scopes\":[\"admin\"],\"name\":\"\\ud83e\\udd80\"}",
            ];
            pick[rng.random_range(0..pick.len())].as_bytes().to_vec()
        }
        94..99 => {
            // A valid body with a field over its limit but under the body limit.
            let mut v = mutate(rng, valid);
            let k = [
                "content",
                "system_prompt",
                "name",
                "title",
                "customer_id",
                "message",
            ][rng.random_range(0..6)];
            v[k] = json!("y".repeat(rng.random_range(100_001..200_000)));
            serde_json::to_vec(&v).unwrap()
        }
        _ => {
            // Over the body limit.
            let mut v = valid.clone();
            v["content"] = json!("z".repeat(MIB + rng.random_range(1..100_000)));
            serde_json::to_vec(&v).unwrap()
        }
    }
}

#[tokio::test]
async fn random_bodies_never_get_a_5xx_or_an_undocumented_error() {
    let seed = std::env::var("PADDOCK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FUZZ_SEED);
    eprintln!("fuzz seed: {seed} (replay with PADDOCK_FUZZ_SEED={seed})");
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let (dep, thread, run) = deployment_with_a_run(&t).await;
    let account = a.account("fuzz").await;
    let endpoints = write_endpoints(&dep, &thread, &run, &account);
    let mut rng = StdRng::seed_from_u64(seed);

    // Generated in a fixed order, sent a few at a time.
    let mut requests = Vec::new();
    for case in 0..FUZZ_CASES {
        for (method, path, valid) in &endpoints {
            let body = random_body(&mut rng, valid);
            let content_type = [
                None,
                Some("application/json"),
                Some("text/plain"),
                Some("application/octet-stream"),
            ][rng.random_range(0..4)];
            let idempotency = match rng.random_range(0..20) {
                0 => Some(format!("fz-{}", rng.random_range(0..8))),
                1 => Some("k".repeat(300)),
                _ => None,
            };
            requests.push((
                case,
                method.clone(),
                path.clone(),
                body,
                content_type,
                idempotency,
            ));
        }
    }
    let started = std::time::Instant::now();
    let total = requests.len();
    let outcomes: Vec<(u16, Option<String>)> = futures::stream::iter(requests)
        .map(|(case, method, path, body, content_type, idempotency)| {
            let mut r = a.req(method.clone(), &path, Some(&t.admin_key)).body(body.clone());
            if let Some(c) = content_type {
                r = r.header(CONTENT_TYPE, c);
            }
            if let Some(k) = &idempotency {
                r = r.header("Idempotency-Key", k);
            }
            async move {
                let reply = send(r).await;
                let problem = if reply.status >= 500 {
                    Some("a 5xx".to_owned())
                } else if reply.header("x-request-id").is_none() {
                    Some("no x-request-id".to_owned())
                } else if reply.status >= 400 {
                    envelope(&reply).err()
                } else if reply.json.is_none() {
                    Some("a success without a JSON body".to_owned())
                } else {
                    None
                };
                let problem = problem.map(|p| {
                    let shown: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                    format!(
                        "case {case}: {method} {path} ({content_type:?}, key {idempotency:?}) body {shown:?} ({} bytes): {p}: {}",
                        body.len(),
                        reply.describe()
                    )
                });
                (reply.status, problem)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (status, _) in &outcomes {
        *statuses.entry(*status).or_default() += 1;
    }
    eprintln!(
        "fuzz: {total} requests in {:?}; statuses {statuses:?}",
        started.elapsed()
    );
    let failures: Vec<&String> = outcomes.iter().filter_map(|(_, p)| p.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {total} responses broke the protocol; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The bodies reached past the parser: some were accepted, some refused field by field, some
    // were too large.
    for status in [200, 201, 202, 400, 409, 413] {
        assert!(
            statuses.contains_key(&status),
            "seed {seed}: no {status} among {statuses:?}; the generator is too narrow"
        );
    }

    // Still serving, and still sane.
    let r = send(a.req(Method::GET, "/healthz", None)).await;
    assert_eq!(r.ok(200), &json!({"status": "ok"}));
    a.admin(Method::GET, &format!("/v1/deployments/{dep}"), None)
        .await
        .ok(200);
}

// ---------------------------------------------------------------------------------------------
// Rate limits (§1.11, §18.8).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_request_rate_limit_answers_429_with_retry_after_and_spares_operational_endpoints() {
    let t = TestServer::start_with(|s| {
        s.rate_limits.requests_per_second = Some(1.0);
        s.rate_limits.request_burst = Some(2);
    })
    .await;
    let a = Api::new(&t);
    let (_, key) = a.key(&[READ], None).await; // the admin key's first token

    // A burst of two, then refused: at one token per second the refusal comes at once (the
    // limit of ten only bounds a hopelessly slow machine).
    a.call(Method::GET, "/v1/deployments", Some(&key), None)
        .await
        .ok(200);
    a.call(Method::GET, "/v1/deployments", Some(&key), None)
        .await
        .ok(200);
    let mut limited = None;
    for _ in 0..10 {
        let r = a
            .call(Method::GET, "/v1/deployments", Some(&key), None)
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.ok(200);
    }
    let r = limited.expect("the bucket ran dry");
    r.err(429, "rate_limited");
    assert!(retry_after(&r).unwrap() >= 1);
    assert!(r.header("x-request-id").is_some());
    // Whatever the endpoint: 429 comes before 404 (spec §1.8 order).
    for path in ["/v1/deployments/dep_nothing", "/v1/whatever"] {
        a.call(Method::GET, path, Some(&key), None)
            .await
            .err(429, "rate_limited");
    }

    // Spec §1.8 order: 403 before 429, 429 before 413.
    a.call(
        Method::POST,
        "/v1/deployments",
        Some(&key),
        Some(&deployment_body(json!({}))),
    )
    .await
    .err(403, "forbidden");
    a.raw(
        Method::POST,
        "/v1/whatever",
        Some(&key),
        padded_account_body("big", MIB + 1),
    )
    .await
    .err(429, "rate_limited");

    // Operational endpoints are not limited, even with the exhausted key attached.
    for _ in 0..5 {
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let r = a.call(Method::GET, path, Some(&key), None).await;
            assert_eq!(r.status, 200, "{path}: {}", r.describe());
        }
    }
    // The bucket is per key: the admin key still has its second token.
    a.admin(Method::GET, "/v1/deployments", None).await.ok(200);
    // And a bad key is a 401, not a 429.
    a.call(Method::GET, "/v1/deployments", Some("pdk_nope"), None)
        .await
        .err(401, "unauthorized");
}

/// Opens the deployment's event stream as `key`; the response is kept open by the caller.
async fn open_stream(a: &Api, dep: &str, key: &str) -> reqwest::Response {
    a.req(
        Method::GET,
        &format!("/v1/deployments/{dep}/events"),
        Some(key),
    )
    .header(ACCEPT, "text/event-stream")
    .send()
    .await
    .expect("stream request answered")
}

#[tokio::test]
async fn the_stream_limit_per_key_answers_429_until_the_open_stream_closes() {
    let t = TestServer::start_with(|s| {
        s.rate_limits.max_streams_per_key = Some(1);
        // Frequent pings let the server notice a closed connection quickly.
        s.sse_ping_interval = Duration::from_millis(50);
    })
    .await;
    let a = Api::new(&t);
    let dep = a.deployment(&t.admin_key, json!({})).await;
    let (_, other) = a.key(&[READ], None).await;

    let first = open_stream(&a, &dep, &t.admin_key).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("x-request-id").is_some());

    let second = send(
        a.req(
            Method::GET,
            &format!("/v1/deployments/{dep}/events"),
            Some(&t.admin_key),
        )
        .header(ACCEPT, "text/event-stream"),
    )
    .await;
    second.err(429, "rate_limited");
    assert!(retry_after(&second).unwrap() >= 1);
    // Other requests of the key are not affected, nor are other keys' streams.
    a.admin(Method::GET, "/v1/deployments", None).await.ok(200);
    let other_stream = open_stream(&a, &dep, &other).await;
    assert_eq!(other_stream.status(), 200);

    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    let reopened = loop {
        let r = open_stream(&a, &dep, &t.admin_key).await;
        if r.status() == 200 {
            break r;
        }
        assert_eq!(r.status(), 429, "while the slot frees");
        assert!(
            tokio::time::Instant::now() < deadline,
            "closing the first stream never freed its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(reopened.headers().get("x-request-id").is_some());
    drop(other_stream);
}

#[tokio::test]
async fn the_active_run_limit_answers_429_for_a_send_that_would_start_another_run() {
    let t = TestServer::start_with(|s| s.rate_limits.max_active_runs_per_deployment = 1).await;
    let a = Api::new(&t);
    let d = t.ready_deployment(json!({})).await;
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("working").hold(&gate).text(" done"));
    let mut events = open_events(&t.admin, &d.deployment_id).await;
    let path = format!("/v1/deployments/{}/messages", d.deployment_id);

    let first = a
        .admin(Method::POST, &path, Some(&json!({"content": "start"})))
        .await;
    let run_id = first.ok(202)["run_id"].as_str().unwrap().to_owned();
    gate.reached().await;

    let r = a
        .admin(
            Method::POST,
            &path,
            Some(&json!({"content": "another", "thread_id": "new"})),
        )
        .await;
    r.err(429, "rate_limited");
    assert!(retry_after(&r).unwrap() >= 1);
    let threads = a
        .admin(
            Method::GET,
            &format!("/v1/deployments/{}/threads", d.deployment_id),
            None,
        )
        .await;
    assert_eq!(
        threads.ok(200)["data"].as_array().unwrap().len(),
        1,
        "a refused send created no thread"
    );

    // A message to the busy thread starts no run, so it is accepted into the running one.
    let joined = a
        .admin(Method::POST, &path, Some(&json!({"content": "also this"})))
        .await;
    assert_eq!(joined.ok(202)["run_id"], run_id.as_str());

    gate.open();
    collect_until(&mut events, |e| is_terminal(e, &run_id)).await;
    let r = a
        .admin(
            Method::POST,
            &path,
            Some(&json!({"content": "now", "thread_id": "new"})),
        )
        .await;
    r.ok(202);
}

// ---------------------------------------------------------------------------------------------
// Operational endpoints (§17).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_key() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let r = send(a.req(Method::GET, "/healthz", None)).await;
    assert_eq!(r.ok(200), &json!({"status": "ok"}));
    let r = send(a.req(Method::GET, "/readyz", None)).await;
    let body = r.ok(200);
    assert_eq!(body["status"], "ready");
    for check in ["database", "sandbox", "scheduler"] {
        assert_eq!(body["checks"][check], "ok", "{body}");
    }
    // A bad key does not matter outside /v1/.
    let r = a
        .call(Method::GET, "/healthz", Some("pdk_nope"), None)
        .await;
    r.ok(200);
}

#[tokio::test]
async fn metrics_are_prometheus_text_without_ids_in_labels() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let customer = "cus_metricsprobe_Q7x";
    let d = t.ready_deployment(json!({"customer_id": customer})).await;
    let mut events = open_events(&t.admin, &d.deployment_id).await;
    let accepted = t
        .admin
        .send_message(&d.deployment_id, "hi", None, &[])
        .await
        .unwrap();
    collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await;
    let probes = [
        format!("/v1/deployments/{}", d.deployment_id),
        format!(
            "/v1/deployments/{}/runs/{}",
            d.deployment_id, accepted.run_id
        ),
        format!(
            "/v1/deployments/{}/threads/{}",
            d.deployment_id, d.thread_id
        ),
        "/v1/deployments/dep_metricsunknownZ".to_owned(),
        format!("/v1/unmatched_probe_{}", d.deployment_id),
        format!("/v1/deployments?customer_id={customer}"),
    ];
    for p in &probes {
        a.admin(Method::GET, p, None).await;
    }
    send(a.req(Method::GET, "/unmatched_outside_probe", None)).await;

    let r = send(a.req(Method::GET, "/metrics", None)).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let ct = r.header("content-type").unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(r.text.contains("paddock_http_requests_total"), "{}", r.text);
    assert!(
        r.text
            .lines()
            .any(|l| l.starts_with("paddock_http_requests_total{") && l.contains("status=\"200\"")),
        "{}",
        r.text
    );
    for secret in [
        d.deployment_id.as_str(),
        customer,
        accepted.run_id.as_str(),
        d.thread_id.as_str(),
        "dep_metricsunknownZ",
        "unmatched_probe",
        "unmatched_outside_probe",
        t.admin_key.as_str(),
    ] {
        assert!(
            !r.text.contains(secret),
            "metrics mention `{secret}`:\n{}",
            r.text
        );
    }
    for line in r
        .text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        // name{labels} value
        assert!(
            line.split_whitespace().count() >= 2 && line.starts_with("paddock_"),
            "not a Prometheus sample line: {line}"
        );
    }
}

#[tokio::test]
async fn metrics_need_the_metrics_token_when_one_is_configured() {
    let t = TestServer::start_with(|s| s.metrics_token = Some("metrics-secret".into())).await;
    let a = Api::new(&t);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("metrics-secret"),
        Some("Basic metrics-secret"),
    ] {
        let mut r = a.req(Method::GET, "/metrics", None);
        if let Some(h) = auth {
            r = r.header(AUTHORIZATION, h);
        }
        let reply = send(r).await;
        assert_eq!(reply.status, 401, "{auth:?}: {}", reply.describe());
        reply.err(401, "unauthorized");
    }
    // An API key is not the metrics token either.
    a.admin(Method::GET, "/metrics", None)
        .await
        .err(401, "unauthorized");
    let r = send(a.req(Method::GET, "/metrics", Some("metrics-secret"))).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.text.contains("paddock_http_requests_total"));
    // The other operational endpoints stay open.
    send(a.req(Method::GET, "/healthz", None)).await.ok(200);
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document() {
    let t = TestServer::start().await;
    let a = Api::new(&t);
    let r = send(a.req(Method::GET, "/openapi.json", None)).await;
    assert!(r.header("x-request-id").is_some());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let doc = r.ok(200);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi = {version:?}");
    assert!(doc["info"]["title"].is_string(), "{doc}");
    assert!(doc["info"]["version"].is_string(), "{doc}");
    if let Some(paths) = doc.get("paths") {
        assert!(paths.is_object(), "`paths` is an object: {paths}");
    }
    if let Some(schemas) = doc.pointer("/components/schemas") {
        assert!(schemas.is_object(), "{schemas}");
    }
}
