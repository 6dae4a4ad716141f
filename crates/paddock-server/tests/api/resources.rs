//! Deployments (§3), messages (§4), runs (§5), threads (§8), pagination (§1.7) and tenancy
//! (§1.4, §18.1), checked through real HTTP against a server with a fake model.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use paddock_client::reqwest::Method;
use paddock_client::{Client, ClientError, EventsQuery, SseEvent};
use paddock_protocol::Run;
use paddock_protocol::time::{now_unix, parse_timestamp};
use paddock_test_support::{Gate, Script};
use serde_json::{Value, json};

use common::{MODEL, TestServer, WAIT, collect_until, deployment_body, is_terminal};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `/v1/deployments/<id><rest>`.
fn dep_path(id: &str, rest: &str) -> String {
    format!("/v1/deployments/{id}{rest}")
}

/// Sends `method path` with `body` sent verbatim (if any) and returns the status and the
/// response body as text.
async fn call_text(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (u16, String) {
    let mut req = client.raw(method, path);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let answer = async {
        let resp = req.send().await.expect("request is answered");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        (status, text)
    };
    tokio::time::timeout(WAIT, answer)
        .await
        .unwrap_or_else(|_| panic!("no complete answer within {WAIT:?}"))
}

/// Sends `method path` with an optional JSON body; returns the status and the JSON body.
async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = call_text(client, method, path, body.map(|b| b.to_string())).await;
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text}"));
    (status, value)
}

/// Asserts an error envelope with `status`, `code` and `param` (spec §1.8).
#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, code: &str, param: Option<&str>) {
    let (s, body) = got;
    assert_eq!(*s, status, "wrong status; body {body}");
    assert_eq!(body["error"]["code"], code, "wrong code; body {body}");
    let want = param.map_or(Value::Null, |p| json!(p));
    assert_eq!(body["error"]["param"], want, "wrong param; body {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// Asserts that a typed-client call failed with the given error.
#[track_caller]
fn assert_client_error<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    status: u16,
    code: &str,
    param: Option<&str>,
) {
    match r {
        Ok(v) => panic!("expected HTTP {status} {code}, got Ok({v:?})"),
        Err(ClientError::Api {
            status: s, body, ..
        }) => {
            let body = serde_json::to_value(&body).unwrap();
            assert_error(&(s, body), status, code, param);
        }
        Err(e) => panic!("expected HTTP {status} {code}, got {e}"),
    }
}

/// Whether `s` is a wire timestamp: RFC 3339, UTC, `Z`, whole seconds (spec §1.6).
fn is_timestamp(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 20 && s.ends_with('Z') && !s.contains('.') && parse_timestamp(s).is_some()
    })
}

/// Whether `v` is an id with `prefix` (spec §1.5).
fn is_id(v: &Value, prefix: &str) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() > prefix.len()
            && s.len() <= 64
            && s.starts_with(prefix)
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// The sorted key set of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[track_caller]
fn assert_keys(v: &Value, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(keys(v), want, "fields of {v}");
}

/// An id that never existed, with the same prefix and length as `like`.
fn unknown_like(like: &str) -> String {
    let (prefix, rest) = like.split_at(like.find('_').expect("prefixed id") + 1);
    // The default thread's id has a second `_`; keep everything up to the random part.
    let (prefix, rest) = match rest.rfind('_') {
        Some(i) => (format!("{prefix}{}", &rest[..=i]), &rest[i + 1..]),
        None => (prefix.to_owned(), rest),
    };
    let filler: String = "Zq9".chars().cycle().take(rest.len()).collect();
    assert_ne!(filler, rest);
    format!("{prefix}{filler}")
}

/// Creates a deployment with `client` and polls until it leaves `provisioning`.
async fn ready(client: &Client, extra: Value) -> Value {
    let d = common::ready_deployment(client, extra).await;
    serde_json::to_value(d).unwrap()
}

/// Polls the run until it has ended; returns it.
async fn wait_run_ended(client: &Client, deployment_id: &str, run_id: &str) -> Run {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let run = client
            .get_run(deployment_id, run_id)
            .await
            .expect("get run");
        if run.status == "completed" || run.status == "error" {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} still {} after {WAIT:?}",
            run.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `content` to `thread` and waits for the run it started to complete.
async fn exchange(
    client: &Client,
    deployment_id: &str,
    content: &str,
    thread: Option<&str>,
) -> Run {
    let sent = client
        .send_message(deployment_id, content, thread, &[])
        .await
        .expect("send");
    let run = wait_run_ended(client, deployment_id, &sent.run_id).await;
    assert_eq!(run.status, "completed", "{run:?}");
    run
}

/// Every event of the deployment so far (replayed from `evt_0`), up to and including the
/// terminal `run_status` of `last_run`.
async fn replay_until_terminal(
    client: &Client,
    deployment_id: &str,
    last_run: &str,
) -> Vec<SseEvent> {
    let query = EventsQuery {
        after: Some("evt_0".to_owned()),
        ..EventsQuery::default()
    };
    let mut stream = client.events(deployment_id, query).await;
    collect_until(&mut stream, |e| is_terminal(e, last_run)).await
}

/// One page of a list: `(items, next_cursor)`.
async fn page_of(
    client: &Client,
    path: &str,
    limit: u32,
    cursor: Option<&str>,
) -> (Vec<Value>, Option<String>) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{sep}limit={limit}");
    if let Some(c) = cursor {
        url.push_str(&format!("&cursor={c}"));
    }
    let (status, body) = call(client, Method::GET, &url, None).await;
    assert_eq!(status, 200, "{url}: {body}");
    assert_keys(&body, &["data", "next_cursor"]);
    let items = body["data"].as_array().expect("data").clone();
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("next_cursor is {other}"),
    };
    (items, next)
}

/// The ids (`field`) of `items`.
fn ids(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[field].as_str().expect("id").to_owned())
        .collect()
}

/// Asserts newest-first order: `created_at` never increases, and ties are broken by id in
/// one consistent direction.
#[track_caller]
fn assert_newest_first(items: &[Value], id_field: &str) {
    let mut tie_direction: Option<std::cmp::Ordering> = None;
    for pair in items.windows(2) {
        let a = parse_timestamp(pair[0]["created_at"].as_str().unwrap()).unwrap();
        let b = parse_timestamp(pair[1]["created_at"].as_str().unwrap()).unwrap();
        assert!(a >= b, "not newest first: {} before {}", pair[0], pair[1]);
        if a == b {
            let order = pair[0][id_field]
                .as_str()
                .unwrap()
                .cmp(pair[1][id_field].as_str().unwrap());
            assert_ne!(
                order,
                std::cmp::Ordering::Equal,
                "duplicate item {}",
                pair[0]
            );
            match tie_direction {
                None => tie_direction = Some(order),
                Some(d) => assert_eq!(d, order, "ties not broken by id consistently"),
            }
        }
    }
}

/// Checks a paginated list at `path` (spec §1.7): bad `limit`/`cursor` values are 400s,
/// limits 1 and 100 work, paging with limit 2 yields the full newest-first list exactly once,
/// and items made by `make_late` after the first page never show up on later pages.
async fn check_pagination<F, Fut>(client: &Client, path: &str, id_field: &str, make_late: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let sep = if path.contains('?') { '&' } else { '?' };
    for bad in ["0", "101", "abc", "-1", "1.5"] {
        let got = call(
            client,
            Method::GET,
            &format!("{path}{sep}limit={bad}"),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("limit"));
    }
    for bad in ["garbage", "djE6eA", "%00"] {
        let got = call(
            client,
            Method::GET,
            &format!("{path}{sep}cursor={bad}"),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("cursor"));
    }

    let (all, next) = page_of(client, path, 100, None).await;
    assert!(next.is_none(), "everything fits in one page of 100");
    assert!(all.len() >= 5, "need at least five items to page through");
    assert_newest_first(&all, id_field);
    let expected = ids(&all, id_field);

    let (one, next) = page_of(client, path, 1, None).await;
    assert_eq!(ids(&one, id_field), expected[..1]);
    assert!(next.is_some());

    let (first, mut cursor) = page_of(client, path, 2, None).await;
    assert_eq!(first.len(), 2);
    let late = make_late().await;
    assert!(!late.is_empty());
    let mut paged = ids(&first, id_field);
    let mut pages = 1;
    while let Some(c) = cursor {
        let (items, next) = page_of(client, path, 2, Some(&c)).await;
        assert!(!items.is_empty(), "a cursor led to an empty page");
        assert!(items.len() <= 2);
        paged.extend(ids(&items, id_field));
        cursor = next;
        pages += 1;
        assert!(pages <= expected.len(), "paging does not end");
    }
    assert_eq!(
        paged, expected,
        "paging with limit 2 must give the first page's list, each item once, newest first"
    );
    for l in &late {
        assert!(
            !paged.contains(l),
            "{l}, created after the first page, was paged"
        );
    }

    // A fresh listing sees the new items too, still newest first.
    let (now_all, _) = page_of(client, path, 100, None).await;
    assert_newest_first(&now_all, id_field);
    let now_ids: HashSet<String> = ids(&now_all, id_field).into_iter().collect();
    assert_eq!(now_ids.len(), expected.len() + late.len());
    for id in expected.iter().chain(&late) {
        assert!(now_ids.contains(id), "{id} missing from a fresh listing");
    }
}

/// Waits until the wall clock has moved to the next whole second (timestamps are whole
/// seconds, so this separates `created_at` values).
async fn next_second() {
    let start = now_unix();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while now_unix() == start {
        assert!(tokio::time::Instant::now() < deadline, "clock stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes a second account with a `deployments:read`+`deployments:write` key for it.
async fn other_account(t: &TestServer, name: &str, balance: Option<f64>) -> (String, Client) {
    let account = t
        .admin
        .create_account(name, balance)
        .await
        .expect("create account");
    let key = t
        .admin
        .create_key(
            &format!("{name}-key"),
            &["deployments:read", "deployments:write"],
            Some(&account.account_id),
            None,
        )
        .await
        .expect("create key");
    assert_eq!(key.account_id, account.account_id);
    let text = key.key.expect("key text in create response");
    (account.account_id, t.client(Some(&text)))
}

// ---------------------------------------------------------------------------------------------
// Deployments §3
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_returns_every_documented_field_with_defaults_and_becomes_ready() {
    let t =
        TestServer::start_with(|s| s.public_url = "https://paddock.example.test".to_owned()).await;
    let (status, d) = call(
        &t.admin,
        Method::POST,
        "/v1/deployments",
        Some(deployment_body(json!({}))),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_keys(
        &d,
        &[
            "deployment_id",
            "customer_id",
            "name",
            "runtime",
            "status",
            "error",
            "model",
            "system_prompt",
            "thread_id",
            "sandbox",
            "features",
            "mcp_servers",
            "skills",
            "secrets",
            "tool_policies",
            "filesystem",
            "events",
            "created_at",
            "updated_at",
        ],
    );
    let id = d["deployment_id"].as_str().unwrap().to_owned();
    assert!(is_id(&d["deployment_id"], "dep_"), "{d}");
    assert!(is_id(&d["thread_id"], "thr_default_"), "{d}");
    assert_eq!(d["customer_id"], "cus_test");
    assert_eq!(d["name"], "Test agent");
    assert_eq!(d["system_prompt"], "You are a test agent.");
    assert_eq!(d["runtime"], "paddock");
    assert_eq!(d["status"], "provisioning");
    assert_eq!(d["error"], Value::Null);
    assert_eq!(d["model"], MODEL, "the server's default_model");
    assert_eq!(
        d["sandbox"],
        json!({"enabled": true, "type": "bubblewrap", "persistent_filesystem": true,
               "image": null, "cpus": 1.0, "memory_mb": 2048, "network": "none"})
    );
    assert_eq!(
        d["features"],
        json!({"memory": true, "dreaming": false, "automations": true, "steering": true,
               "filesystem_webhooks": false})
    );
    assert_eq!(d["mcp_servers"], json!([]));
    assert_eq!(d["skills"], json!([]));
    assert_eq!(d["secrets"], json!({}));
    assert_eq!(d["tool_policies"], json!({}));
    assert_eq!(
        d["filesystem"],
        json!({"workspace_path": "/workspace", "persistent": true})
    );
    assert_eq!(
        d["events"],
        json!({"transport": "sse",
               "url": format!("https://paddock.example.test/v1/deployments/{id}/events")})
    );
    assert!(is_timestamp(&d["created_at"]), "{d}");
    assert!(is_timestamp(&d["updated_at"]), "{d}");

    // The default thread exists at once, even while provisioning.
    let thread_id = d["thread_id"].as_str().unwrap();
    let (status, thread) = call(
        &t.admin,
        Method::GET,
        &dep_path(&id, &format!("/threads/{thread_id}")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{thread}");
    assert_eq!(thread["title"], "Default");
    assert_eq!(thread["is_default"], true);
    assert_eq!(thread["status"], "idle");
    assert_eq!(thread["message_count"], 0);
    assert_eq!(thread["messages"], json!([]));
    assert_eq!(thread["has_more_messages"], false);

    // Provisioning ends in `ready`; nothing else about the object changes.
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        let (status, got) = call(&t.admin, Method::GET, &dep_path(&id, ""), None).await;
        assert_eq!(status, 200, "{got}");
        if got["status"] != "provisioning" {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "still provisioning");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(got["status"], "ready", "{got}");
    assert_eq!(got["error"], Value::Null);
    for field in [
        "deployment_id",
        "thread_id",
        "sandbox",
        "features",
        "events",
        "created_at",
    ] {
        assert_eq!(
            got[field], d[field],
            "{field} changed when provisioning finished"
        );
    }
    let (_, threads) = call(&t.admin, Method::GET, &dep_path(&id, "/threads"), None).await;
    assert_eq!(
        ids(threads["data"].as_array().unwrap(), "thread_id"),
        [thread_id]
    );
}

#[tokio::test]
async fn create_accepts_boundary_values_and_echoes_them() {
    let t = TestServer::start().await;
    let name = "é".repeat(200);
    let customer: String = "a ~!".chars().cycle().take(127).chain(['z']).collect();
    assert_eq!(customer.len(), 128);
    let body = json!({
        "customer_id": customer,
        "name": name,
        "system_prompt": "p".repeat(100_000),
        "model": "fake/another-model",
        "runtime": "hermes",
        "sandbox": {"enabled": false, "persistent_filesystem": false, "cpus": 0.25,
                    "memory_mb": 256, "network": "internet"},
        "features": {"dreaming": true, "steering": false},
        "mcp_servers": [
            {"name": "acme-media", "url": "https://mcp.acme.example/mcp",
             "tools": ["search", "generate"], "headers": {"X-Plan": "pro $$5"}},
            {"name": "b2", "url": "http://other.example:8080/"}
        ],
        "tool_policies": {"acme-media__generate": "always_ask", "shell": "always_allow"},
        "secrets": {},
        "skills": [],
        "unknown_field": {"ignored": true},
    });
    let (status, d) = call(&t.admin, Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["customer_id"], customer.as_str());
    assert_eq!(d["name"], name.as_str());
    assert_eq!(d["model"], "fake/another-model");
    assert_eq!(
        d["runtime"], "hermes",
        "hermes is accepted and echoed as sent"
    );
    assert_eq!(
        d["sandbox"],
        json!({"enabled": false, "type": "bubblewrap", "persistent_filesystem": false,
               "image": null, "cpus": 0.25, "memory_mb": 256, "network": "internet"})
    );
    assert_eq!(d["filesystem"]["persistent"], false);
    assert_eq!(
        d["features"],
        json!({"memory": true, "dreaming": true, "automations": true, "steering": false,
               "filesystem_webhooks": false})
    );
    assert_eq!(
        d["mcp_servers"],
        json!([
            {"name": "acme-media", "url": "https://mcp.acme.example/mcp",
             "tools": ["search", "generate"], "headers": {"X-Plan": "pro $$5"}},
            {"name": "b2", "url": "http://other.example:8080/", "tools": null, "headers": {}}
        ])
    );
    assert_eq!(
        d["tool_policies"],
        json!({"acme-media__generate": "always_ask", "shell": "always_allow"})
    );
    let id = d["deployment_id"].as_str().unwrap();
    let (_, got) = call(&t.admin, Method::GET, &dep_path(id, ""), None).await;
    for field in [
        "customer_id",
        "name",
        "runtime",
        "model",
        "system_prompt",
        "sandbox",
        "features",
        "mcp_servers",
        "tool_policies",
    ] {
        assert_eq!(got[field], d[field], "GET differs from create in {field}");
    }
}

/// `(extra fields merged into a valid body, param)`: each must be `400 validation_error`.
fn invalid_create_fields() -> Vec<(Value, &'static str)> {
    let server = |name: &str| json!({"name": name, "url": "https://mcp.example.com/mcp"});
    let many_servers: Vec<Value> = (0..21).map(|i| server(&format!("s{i}"))).collect();
    vec![
        // customer_id: 1–128 printable ASCII, no leading or trailing space.
        (json!({"customer_id": null}), "customer_id"),
        (json!({"customer_id": 42}), "customer_id"),
        (json!({"customer_id": ""}), "customer_id"),
        (json!({"customer_id": " cus"}), "customer_id"),
        (json!({"customer_id": "cus "}), "customer_id"),
        (json!({"customer_id": "c".repeat(129)}), "customer_id"),
        (json!({"customer_id": "cüs"}), "customer_id"),
        (json!({"customer_id": "cus\t1"}), "customer_id"),
        // name: 1–200 characters.
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "n".repeat(201)}), "name"),
        (json!({"name": ["a"]}), "name"),
        // system_prompt: 1–100,000 characters.
        (json!({"system_prompt": ""}), "system_prompt"),
        (
            json!({"system_prompt": "p".repeat(100_001)}),
            "system_prompt",
        ),
        (json!({"system_prompt": true}), "system_prompt"),
        // model: provider/name with a configured provider.
        (json!({"model": "x"}), "model"),
        (json!({"model": "nope/m"}), "model"),
        (json!({"model": "local/not-configured"}), "model"),
        (json!({"model": 7}), "model"),
        // runtime: paddock or hermes.
        (json!({"runtime": "langchain"}), "runtime"),
        (json!({"runtime": "PADDOCK"}), "runtime"),
        (json!({"runtime": 1}), "runtime"),
        // sandbox.
        (json!({"sandbox": "big"}), "sandbox"),
        (json!({"sandbox": {"type": "docker"}}), "sandbox.type"),
        (json!({"sandbox": {"type": "firecracker"}}), "sandbox.type"),
        (json!({"sandbox": {"cpus": 0.1}}), "sandbox.cpus"),
        (json!({"sandbox": {"cpus": 4.5}}), "sandbox.cpus"),
        (json!({"sandbox": {"cpus": "2"}}), "sandbox.cpus"),
        (json!({"sandbox": {"memory_mb": 255}}), "sandbox.memory_mb"),
        (
            json!({"sandbox": {"memory_mb": 16385}}),
            "sandbox.memory_mb",
        ),
        (
            json!({"sandbox": {"memory_mb": 512.5}}),
            "sandbox.memory_mb",
        ),
        (
            json!({"sandbox": {"memory_mb": "512"}}),
            "sandbox.memory_mb",
        ),
        (json!({"sandbox": {"enabled": "yes"}}), "sandbox.enabled"),
        (json!({"sandbox": {"network": "lan"}}), "sandbox.network"),
        (
            json!({"sandbox": {"image": "ubuntu:24.04"}}),
            "sandbox.image",
        ),
        // features: known flags, booleans.
        (
            json!({"features": {"telepathy": true}}),
            "features.telepathy",
        ),
        (json!({"features": {"memory": "yes"}}), "features.memory"),
        (json!({"features": [true]}), "features"),
        // mcp_servers (§14.1).
        (json!({"mcp_servers": {"name": "a"}}), "mcp_servers"),
        (json!({"mcp_servers": many_servers}), "mcp_servers"),
        (
            json!({"mcp_servers": ["https://mcp.example.com"]}),
            "mcp_servers[0]",
        ),
        (
            json!({"mcp_servers": [{"url": "https://mcp.example.com"}]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"mcp_servers": [server("a__b")]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"mcp_servers": [server("_a")]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"mcp_servers": [server("builtin")]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"mcp_servers": [server("has space")]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"mcp_servers": [server(&"n".repeat(33))]}),
            "mcp_servers[0].name",
        ),
        (
            json!({"mcp_servers": [server("dup"), server("ok"), server("dup")]}),
            "mcp_servers[2].name",
        ),
        (
            json!({"mcp_servers": [{"name": "a"}]}),
            "mcp_servers[0].url",
        ),
        (
            json!({"mcp_servers": [server("a"), {"name": "b", "url": "ftp://mcp.example.com"}]}),
            "mcp_servers[1].url",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": format!("https://x.example/{}", "p".repeat(2048))}]}),
            "mcp_servers[0].url",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example", "tools": "all"}]}),
            "mcp_servers[0].tools",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example", "headers": {"Host": "evil"}}]}),
            "mcp_servers[0].headers.Host",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example", "headers": {"x-customer-id": "c"}}]}),
            "mcp_servers[0].headers.x-customer-id",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example", "headers": {"Mcp-Session-Id": "s"}}]}),
            "mcp_servers[0].headers.Mcp-Session-Id",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example", "headers": {"Content-Type": "text/plain"}}]}),
            "mcp_servers[0].headers.Content-Type",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example", "headers": {"X-Long": "v".repeat(4097)}}]}),
            "mcp_servers[0].headers.X-Long",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "url": "https://x.example",
                                     "headers": {"Authorization": "Bearer ${ACME_TOKEN}"}}]}),
            "mcp_servers[0].headers.Authorization",
        ),
        // secrets: key shape, `sec_…` values.
        (json!({"secrets": ["sec_abc"]}), "secrets"),
        (json!({"secrets": {"lower": "sec_abc123"}}), "secrets.lower"),
        (
            json!({"secrets": {"1TOKEN": "sec_abc123"}}),
            "secrets.1TOKEN",
        ),
        (
            json!({"secrets": {"TOK-EN": "sec_abc123"}}),
            "secrets.TOK-EN",
        ),
        (
            json!({"secrets": {"TOKEN": "not-a-secret-id"}}),
            "secrets.TOKEN",
        ),
        (json!({"secrets": {"TOKEN": 5}}), "secrets.TOKEN"),
        // tool_policies: key shape and value.
        (json!({"tool_policies": "always_ask"}), "tool_policies"),
        (
            json!({"tool_policies": {"shell": "sometimes"}}),
            "tool_policies.shell",
        ),
        (
            json!({"tool_policies": {"shell": true}}),
            "tool_policies.shell",
        ),
        (
            json!({"tool_policies": {"bad name": "always_ask"}}),
            "tool_policies.bad name",
        ),
    ]
}

#[tokio::test]
async fn create_rejects_every_invalid_field_with_its_param_and_creates_nothing() {
    let t = TestServer::start().await;
    for (extra, param) in invalid_create_fields() {
        let body = deployment_body(extra.clone());
        let got = call(&t.admin, Method::POST, "/v1/deployments", Some(body)).await;
        assert_eq!(got.0, 400, "{extra} should be refused: {}", got.1);
        assert_error(&got, 400, "validation_error", Some(param));
    }
    // Missing required fields.
    for field in ["customer_id", "name", "system_prompt"] {
        let mut body = deployment_body(json!({}));
        body.as_object_mut().unwrap().remove(field);
        let got = call(&t.admin, Method::POST, "/v1/deployments", Some(body)).await;
        assert_error(&got, 400, "validation_error", Some(field));
    }
    // The body must be a JSON object.
    for bad in ["", "not json", "[]", "\"string\"", "{\"customer_id\": "] {
        let got = call_text(
            &t.admin,
            Method::POST,
            "/v1/deployments",
            Some(bad.to_owned()),
        )
        .await;
        assert_eq!(got.0, 400, "{bad:?}: {}", got.1);
        let body: Value = serde_json::from_str(&got.1).unwrap();
        assert_eq!(body["error"]["code"], "validation_error", "{bad:?}: {body}");
    }
    // A well-formed `sec_…` reference is checked against the account's secrets: none exist.
    let got = call(
        &t.admin,
        Method::POST,
        "/v1/deployments",
        Some(deployment_body(
            json!({"secrets": {"ACME_TOKEN": "sec_4hT8qLxyz"}}),
        )),
    )
    .await;
    assert_error(&got, 422, "invalid_secret_ref", Some("secrets.ACME_TOKEN"));
    // A header that resolves passes the 400 check, then the reference is a 422.
    let got = call(
        &t.admin,
        Method::POST,
        "/v1/deployments",
        Some(deployment_body(json!({
            "mcp_servers": [{"name": "a", "url": "https://x.example",
                             "headers": {"Authorization": "Bearer ${ACME_TOKEN}"}}],
            "secrets": {"ACME_TOKEN": "sec_4hT8qLxyz"},
        }))),
    )
    .await;
    assert_error(&got, 422, "invalid_secret_ref", Some("secrets.ACME_TOKEN"));
    // Any 400 wins over the 422.
    let got = call(
        &t.admin,
        Method::POST,
        "/v1/deployments",
        Some(deployment_body(json!({
            "secrets": {"ACME_TOKEN": "sec_4hT8qLxyz"},
            "tool_policies": {"shell": "never"},
        }))),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("tool_policies.shell"));

    // On any error nothing is created.
    let (status, list) = call(&t.admin, Method::GET, "/v1/deployments", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        list["data"],
        json!([]),
        "a refused create left a deployment"
    );
}

#[tokio::test]
async fn get_and_list_with_customer_and_status_filters() {
    let t = TestServer::start().await;
    let a = ready(&t.admin, json!({"customer_id": "cus_a"})).await;
    let b1 = ready(&t.admin, json!({"customer_id": "cus_b", "name": "B one"})).await;
    let b2 = ready(
        &t.admin,
        json!({"customer_id": "cus_b", "runtime": "hermes"}),
    )
    .await;

    let (status, got) = call(
        &t.admin,
        Method::GET,
        &dep_path(b1["deployment_id"].as_str().unwrap(), ""),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got, b1, "GET returns the same object as the last read");

    let (status, list) = call(&t.admin, Method::GET, "/v1/deployments", None).await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(list["next_cursor"], Value::Null);
    for item in data {
        assert_keys(
            item,
            &[
                "deployment_id",
                "customer_id",
                "name",
                "runtime",
                "status",
                "model",
                "created_at",
            ],
        );
    }
    let summary = data
        .iter()
        .find(|i| i["deployment_id"] == b2["deployment_id"])
        .expect("b2 listed");
    assert_eq!(summary["runtime"], "hermes");
    assert_eq!(summary["customer_id"], "cus_b");
    assert_eq!(summary["status"], "ready");
    assert_eq!(summary["model"], MODEL);
    assert_eq!(summary["created_at"], b2["created_at"]);

    let (_, only_b) = call(
        &t.admin,
        Method::GET,
        "/v1/deployments?customer_id=cus_b",
        None,
    )
    .await;
    let mut got_b = ids(only_b["data"].as_array().unwrap(), "deployment_id");
    got_b.sort();
    let mut want_b = vec![
        b1["deployment_id"].as_str().unwrap().to_owned(),
        b2["deployment_id"].as_str().unwrap().to_owned(),
    ];
    want_b.sort();
    assert_eq!(got_b, want_b);
    let (_, only_a) = call(
        &t.admin,
        Method::GET,
        "/v1/deployments?customer_id=cus_a",
        None,
    )
    .await;
    assert_eq!(
        ids(only_a["data"].as_array().unwrap(), "deployment_id"),
        [a["deployment_id"].as_str().unwrap()]
    );
    // `customer_id` is an exact match.
    for q in ["cus_", "CUS_A", "cus_a%20", "nobody"] {
        let (status, none) = call(
            &t.admin,
            Method::GET,
            &format!("/v1/deployments?customer_id={q}"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(none["data"], json!([]), "customer_id={q}");
    }

    let (_, ready_list) = call(&t.admin, Method::GET, "/v1/deployments?status=ready", None).await;
    assert_eq!(ready_list["data"].as_array().unwrap().len(), 3);
    for s in ["provisioning", "error"] {
        let (status, none) = call(
            &t.admin,
            Method::GET,
            &format!("/v1/deployments?status={s}"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(none["data"], json!([]), "status={s}");
    }
    let (_, combined) = call(
        &t.admin,
        Method::GET,
        "/v1/deployments?status=ready&customer_id=cus_a",
        None,
    )
    .await;
    assert_eq!(combined["data"].as_array().unwrap().len(), 1);

    for bad in ["deleted", "READY", "running"] {
        let got = call(
            &t.admin,
            Method::GET,
            &format!("/v1/deployments?status={bad}"),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("status"));
    }

    // Unknown ids, of any shape, are 404.
    let unknown = unknown_like(a["deployment_id"].as_str().unwrap());
    for id in [unknown.as_str(), "dep_x", "nope", "dep-with-dash"] {
        let got = call(&t.admin, Method::GET, &dep_path(id, ""), None).await;
        assert_error(&got, 404, "not_found", None);
    }
}

#[tokio::test]
async fn a_deployment_whose_provisioning_failed_is_listed_as_error_and_refuses_messages() {
    let t = TestServer::start().await;
    let ok = ready(&t.admin, json!({"customer_id": "cus_ok"})).await;
    // Make workspace creation impossible: the workspaces directory becomes a file.
    let workspaces = t.dir.path().join("workspaces");
    let moved = t.dir.path().join("workspaces.moved");
    std::fs::rename(&workspaces, &moved).unwrap();
    std::fs::write(&workspaces, b"not a directory").unwrap();

    let created = t
        .admin
        .create_deployment(&deployment_body(json!({"customer_id": "cus_broken"})))
        .await
        .unwrap();
    let id = created.deployment_id.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    let broken = loop {
        let (_, d) = call(&t.admin, Method::GET, &dep_path(&id, ""), None).await;
        if d["status"] != "provisioning" {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "still provisioning");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(broken["status"], "error", "{broken}");
    assert_eq!(broken["error"]["code"], "provisioning_failed", "{broken}");
    assert!(
        broken["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    // §3.6 status filter.
    let (_, errors) = call(&t.admin, Method::GET, "/v1/deployments?status=error", None).await;
    assert_eq!(
        ids(errors["data"].as_array().unwrap(), "deployment_id"),
        [id.as_str()]
    );
    let (_, readies) = call(&t.admin, Method::GET, "/v1/deployments?status=ready", None).await;
    assert_eq!(
        ids(readies["data"].as_array().unwrap(), "deployment_id"),
        [ok["deployment_id"].as_str().unwrap()]
    );

    // §4.4: sending needs `ready`; nothing is stored.
    let got = call(
        &t.admin,
        Method::POST,
        &dep_path(&id, "/messages"),
        Some(json!({"content": "hello"})),
    )
    .await;
    assert_error(&got, 409, "deployment_not_ready", None);
    let got = call(
        &t.admin,
        Method::POST,
        &dep_path(&id, "/messages"),
        Some(json!({"content": "hello", "thread_id": "new"})),
    )
    .await;
    assert_error(&got, 409, "deployment_not_ready", None);
    // 400 (bad body) and 404 (unknown thread in the body) come before 409 (§1.8).
    let got = call(
        &t.admin,
        Method::POST,
        &dep_path(&id, "/messages"),
        Some(json!({"content": ""})),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("content"));
    let got = call(
        &t.admin,
        Method::POST,
        &dep_path(&id, "/messages"),
        Some(json!({"content": "hello", "thread_id": "thr_doesnotexist"})),
    )
    .await;
    assert_error(&got, 404, "not_found", Some("thread_id"));

    let default_thread = broken["thread_id"].as_str().unwrap();
    let thread = t
        .admin
        .get_thread(&id, default_thread, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.message_count, 0);
    let (_, threads) = call(&t.admin, Method::GET, &dep_path(&id, "/threads"), None).await;
    assert_eq!(
        threads["data"].as_array().unwrap().len(),
        1,
        "no thread was created"
    );
    let (_, runs) = call(&t.admin, Method::GET, &dep_path(&id, "/runs"), None).await;
    assert_eq!(runs["data"], json!([]));

    // Updating a deployment in `error` is allowed and does not restart provisioning (§3.7).
    let (status, patched) = call(
        &t.admin,
        Method::PATCH,
        &dep_path(&id, ""),
        Some(json!({"name": "Still broken"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "error");
    assert_eq!(patched["name"], "Still broken");
    // Threads work in any status (§3.2).
    let created = t.admin.create_thread(&id, Some("t")).await.unwrap();
    assert_eq!(created.title.as_deref(), Some("t"));
}

#[tokio::test]
async fn patch_replaces_merges_and_removes_per_the_update_rules() {
    let t = TestServer::start().await;
    let d = ready(
        &t.admin,
        json!({
            "name": "Original",
            "system_prompt": "Prompt one",
            "sandbox": {"cpus": 2, "network": "internet"},
            "features": {"dreaming": true},
            "mcp_servers": [
                {"name": "a", "url": "https://a.example/mcp"},
                {"name": "b", "url": "https://b.example/mcp", "tools": ["t1"],
                 "headers": {"X-Api": "literal $$5"}}
            ],
            "tool_policies": {"shell": "always_ask", "a__t": "always_allow"},
        }),
    )
    .await;
    let id = d["deployment_id"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        let admin = t.admin.clone();
        let path = dep_path(&id, "");
        async move { call(&admin, Method::PATCH, &path, Some(body)).await }
    };
    /// Asserts `after` equals `before` except in `changed` fields (and `updated_at`).
    #[track_caller]
    fn only_changed(before: &Value, after: &Value, changed: &[&str]) {
        for (k, v) in before.as_object().unwrap() {
            if k == "updated_at" || changed.contains(&k.as_str()) {
                continue;
            }
            assert_eq!(&after[k], v, "`{k}` changed but should not have");
        }
        assert_eq!(keys(before), keys(after));
    }
    let get = || {
        let admin = t.admin.clone();
        let path = dep_path(&id, "");
        async move {
            let (status, v) = call(&admin, Method::GET, &path, None).await;
            assert_eq!(status, 200);
            v
        }
    };

    // name, system_prompt, model: replaced.
    let (status, p) = patch(json!({"name": "Renamed"})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["name"], "Renamed");
    only_changed(&d, &p, &["name"]);
    assert_eq!(get().await, p, "the PATCH response is the stored object");

    let before = p;
    let (status, p) =
        patch(json!({"system_prompt": "Prompt two", "model": "fake/other-model"})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["system_prompt"], "Prompt two");
    assert_eq!(p["model"], "fake/other-model");
    only_changed(&before, &p, &["system_prompt", "model"]);

    // sandbox: merged per sub-field.
    let before = p;
    let (status, p) = patch(json!({"sandbox": {"memory_mb": 512}})).await;
    assert_eq!(status, 200, "{p}");
    let mut want = before["sandbox"].clone();
    want["memory_mb"] = json!(512);
    assert_eq!(p["sandbox"], want);
    assert_eq!(p["sandbox"]["cpus"], 2.0);
    assert_eq!(p["sandbox"]["network"], "internet");
    only_changed(&before, &p, &["sandbox"]);

    let before = p;
    let (status, p) = patch(json!({"sandbox": {"persistent_filesystem": false}})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["sandbox"]["persistent_filesystem"], false);
    assert_eq!(p["sandbox"]["memory_mb"], 512);
    assert_eq!(p["filesystem"]["persistent"], false);
    only_changed(&before, &p, &["sandbox", "filesystem"]);

    // features: merged per flag.
    let before = p;
    let (status, p) = patch(json!({"features": {"memory": false}})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["features"],
        json!({"memory": false, "dreaming": true, "automations": true, "steering": true,
               "filesystem_webhooks": false})
    );
    only_changed(&before, &p, &["features"]);

    // tool_policies: merged per key, null removes.
    let before = p;
    let (status, p) = patch(json!({"tool_policies": {
        "shell": null, "a__t": "always_ask", "web_search": "always_ask", "never_set": null}}))
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["tool_policies"],
        json!({"a__t": "always_ask", "web_search": "always_ask"})
    );
    only_changed(&before, &p, &["tool_policies"]);

    // secrets: merged per key; removing a key that is not there changes nothing.
    let before = p;
    let (status, p) = patch(json!({"secrets": {"NOT_THERE": null}})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["secrets"], json!({}));
    only_changed(&before, &p, &[]);

    // mcp_servers: replaced as a whole.
    let before = p;
    let (status, p) =
        patch(json!({"mcp_servers": [{"name": "c", "url": "https://c.example/mcp"}]})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["mcp_servers"],
        json!([{"name": "c", "url": "https://c.example/mcp", "tools": null, "headers": {}}])
    );
    only_changed(&before, &p, &["mcp_servers"]);
    let (status, p) = patch(json!({"mcp_servers": []})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["mcp_servers"], json!([]));

    // customer_id and runtime: the current value is accepted.
    let before = p;
    let (status, p) = patch(json!({"customer_id": "cus_test", "runtime": "paddock"})).await;
    assert_eq!(status, 200, "{p}");
    only_changed(&before, &p, &[]);
    // An empty body changes nothing.
    let (status, p) = patch(json!({})).await;
    assert_eq!(status, 200, "{p}");
    only_changed(&before, &p, &[]);
    assert_eq!(p["created_at"], d["created_at"]);
}

#[tokio::test]
async fn a_refused_patch_changes_nothing() {
    let t = TestServer::start().await;
    let d = ready(
        &t.admin,
        json!({"name": "Keep", "tool_policies": {"shell": "always_ask"}, "runtime": "hermes",
               "mcp_servers": [{"name": "keep", "url": "https://keep.example"}]}),
    )
    .await;
    let id = d["deployment_id"].as_str().unwrap().to_owned();
    let path = dep_path(&id, "");
    let server_with_ref = json!([{"name": "h", "url": "https://h.example",
                                  "headers": {"Authorization": "Bearer ${TOKEN}"}}]);
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"customer_id": "cus_other", "name": "X"}),
            400,
            "validation_error",
            "customer_id",
        ),
        (
            json!({"customer_id": 5}),
            400,
            "validation_error",
            "customer_id",
        ),
        (
            json!({"runtime": "paddock-ng", "name": "X"}),
            400,
            "validation_error",
            "runtime",
        ),
        (
            json!({"name": "X", "sandbox": {"cpus": 64}}),
            400,
            "validation_error",
            "sandbox.cpus",
        ),
        (
            json!({"name": "X", "sandbox": {"type": "docker"}}),
            400,
            "validation_error",
            "sandbox.type",
        ),
        (json!({"name": ""}), 400, "validation_error", "name"),
        (
            json!({"name": "n".repeat(201)}),
            400,
            "validation_error",
            "name",
        ),
        (
            json!({"name": "X", "system_prompt": ""}),
            400,
            "validation_error",
            "system_prompt",
        ),
        (
            json!({"name": "X", "model": "nope/m"}),
            400,
            "validation_error",
            "model",
        ),
        (
            json!({"name": "X", "model": "x"}),
            400,
            "validation_error",
            "model",
        ),
        (
            json!({"name": "X", "features": {"bogus": true}}),
            400,
            "validation_error",
            "features.bogus",
        ),
        (
            json!({"name": "X", "tool_policies": {"shell": null, "web": "maybe"}}),
            400,
            "validation_error",
            "tool_policies.web",
        ),
        (
            json!({"name": "X", "mcp_servers": server_with_ref}),
            400,
            "validation_error",
            "mcp_servers[0].headers.Authorization",
        ),
        (
            json!({"name": "X", "mcp_servers": [{"name": "a", "url": "https://a.example"},
                                                {"name": "a", "url": "https://b.example"}]}),
            400,
            "validation_error",
            "mcp_servers[1].name",
        ),
        (
            json!({"name": "X", "secrets": {"TOKEN": "sec_abcdef123"}}),
            422,
            "invalid_secret_ref",
            "secrets.TOKEN",
        ),
        (
            json!({"name": "X", "mcp_servers": server_with_ref, "secrets": {"TOKEN": "sec_abcdef123"}}),
            422,
            "invalid_secret_ref",
            "secrets.TOKEN",
        ),
    ];
    for (body, status, code, param) in cases {
        let got = call(&t.admin, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(got.0, status, "{body}: {}", got.1);
        assert_error(&got, status, code, Some(param));
        let (_, now) = call(&t.admin, Method::GET, &path, None).await;
        assert_eq!(now, d, "the refused PATCH {body} changed the deployment");
    }
    // The current runtime value (`hermes`, as sent) is accepted.
    let (status, p) = call(
        &t.admin,
        Method::PATCH,
        &path,
        Some(json!({"runtime": "hermes"})),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["runtime"], "hermes");
    // Bad bodies.
    for bad in ["not json", "[1]", ""] {
        let got = call_text(&t.admin, Method::PATCH, &path, Some(bad.to_owned())).await;
        assert_eq!(got.0, 400, "{bad:?}: {}", got.1);
    }
    let (_, now) = call(&t.admin, Method::GET, &path, None).await;
    assert_eq!(now["name"], "Keep");
}

#[tokio::test]
async fn a_patch_does_not_change_a_run_already_started() {
    let t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"system_prompt": "OLD-PROMPT-MARKER"}))
        .await;
    let gate = Gate::new();
    // The first model call is held, then asks for a tool that does not exist, so the run
    // makes a second model call after the PATCH.
    t.fake.push(
        Script::new()
            .hold(&gate)
            .tool_call("call_1", "no_such_tool", json!({})),
    );
    let sent = t
        .admin
        .send_message(&d.deployment_id, "go", None, &[])
        .await
        .unwrap();
    gate.reached().await;

    let patched = t
        .admin
        .update_deployment(
            &d.deployment_id,
            &json!({"model": "fake/newer-model", "system_prompt": "NEW-PROMPT-MARKER"}),
        )
        .await
        .unwrap();
    assert_eq!(patched.model, "fake/newer-model");
    let run = t
        .admin
        .get_run(&d.deployment_id, &sent.run_id)
        .await
        .unwrap();
    assert_eq!(run.status, "running");
    assert_eq!(
        run.model, MODEL,
        "a PATCH must not change a started run's model"
    );

    gate.open();
    let run = wait_run_ended(&t.admin, &d.deployment_id, &sent.run_id).await;
    assert_eq!(run.status, "completed", "{run:?}");
    assert_eq!(run.model, MODEL);
    let requests = t.fake.requests();
    assert!(requests.len() >= 2, "the run made two model calls");
    for r in &requests {
        assert_eq!(r["model"], "test-model", "started run switched model: {r}");
        let text = r.to_string();
        assert!(
            text.contains("OLD-PROMPT-MARKER"),
            "started run lost its prompt"
        );
        assert!(
            !text.contains("NEW-PROMPT-MARKER"),
            "started run saw the new prompt"
        );
    }

    // The next run uses the new configuration.
    let before = requests.len();
    let next = exchange(&t.admin, &d.deployment_id, "again", None).await;
    assert_eq!(next.model, "fake/newer-model");
    let requests = t.fake.requests();
    assert_eq!(requests[before]["model"], "newer-model");
    assert!(requests[before].to_string().contains("NEW-PROMPT-MARKER"));
}

#[tokio::test]
async fn delete_answers_the_documented_body_and_then_everything_is_404() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = d.deployment_id.clone();
    let run = exchange(&t.admin, &id, "hello", None).await;
    let thread = t.admin.create_thread(&id, Some("Side")).await.unwrap();
    let keep = t.ready_deployment(json!({"name": "Keep"})).await;

    let (status, body) = call(&t.admin, Method::DELETE, &dep_path(&id, ""), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"deployment_id": id, "status": "deleted", "snapshot": null})
    );

    let r = &run.run_id;
    let th = &thread.thread_id;
    let dt = &d.thread_id;
    let requests: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, String::new(), None),
        (Method::PATCH, String::new(), Some(json!({"name": "x"}))),
        (Method::DELETE, String::new(), None),
        (Method::DELETE, "?retain_filesystem=true".into(), None),
        (
            Method::POST,
            "/messages".into(),
            Some(json!({"content": "hi"})),
        ),
        (Method::GET, "/runs".into(), None),
        (Method::GET, format!("/runs/{r}"), None),
        (Method::POST, format!("/runs/{r}/cancel"), None),
        (
            Method::POST,
            format!("/runs/{r}/steering"),
            Some(json!({"request_id": "srq_x", "decision": "approve"})),
        ),
        (Method::GET, "/events".into(), None),
        (Method::POST, "/threads".into(), Some(json!({"title": "t"}))),
        (Method::GET, "/threads".into(), None),
        (Method::GET, format!("/threads/{th}"), None),
        (Method::GET, format!("/threads/{dt}"), None),
        (
            Method::PATCH,
            format!("/threads/{th}"),
            Some(json!({"title": "t"})),
        ),
        (Method::DELETE, format!("/threads/{th}"), None),
    ];
    for (method, rest, body) in requests {
        let got = call(&t.admin, method.clone(), &dep_path(&id, &rest), body).await;
        assert_eq!(got.0, 404, "{method} {rest} after delete: {}", got.1);
        assert_error(&got, 404, "not_found", None);
    }
    let (_, list) = call(&t.admin, Method::GET, "/v1/deployments", None).await;
    assert_eq!(
        ids(list["data"].as_array().unwrap(), "deployment_id"),
        [keep.deployment_id.as_str()]
    );
    // Other deployments are untouched.
    let (status, _) = call(
        &t.admin,
        Method::GET,
        &dep_path(&keep.deployment_id, ""),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn delete_with_retain_filesystem_reports_a_snapshot_about_thirty_days_ahead() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = d.deployment_id;

    for bad in ["maybe", "1", "yes", "TRUE", ""] {
        let got = call(
            &t.admin,
            Method::DELETE,
            &dep_path(&id, &format!("?retain_filesystem={bad}")),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("retain_filesystem"));
    }
    let (status, _) = call(&t.admin, Method::GET, &dep_path(&id, ""), None).await;
    assert_eq!(status, 200, "a refused delete must not delete");
    // A 404 for the path id wins over the 400 for the query (§1.8).
    let got = call(
        &t.admin,
        Method::DELETE,
        &dep_path(&unknown_like(&id), "?retain_filesystem=maybe"),
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", None);

    let before = now_unix();
    let (status, body) = call(
        &t.admin,
        Method::DELETE,
        &dep_path(&id, "?retain_filesystem=true"),
        None,
    )
    .await;
    let after = now_unix();
    assert_eq!(status, 200, "{body}");
    assert_keys(&body, &["deployment_id", "status", "snapshot"]);
    assert_eq!(body["deployment_id"], id.as_str());
    assert_eq!(body["status"], "deleted");
    assert_keys(&body["snapshot"], &["expires_at"]);
    assert!(is_timestamp(&body["snapshot"]["expires_at"]), "{body}");
    let expires = parse_timestamp(body["snapshot"]["expires_at"].as_str().unwrap()).unwrap();
    let thirty_days = 30 * 24 * 3600;
    assert!(
        expires >= before + thirty_days - 5 && expires <= after + thirty_days + 5,
        "snapshot expires at {expires}, expected about {}",
        before + thirty_days
    );
    let got = call(&t.admin, Method::GET, &dep_path(&id, ""), None).await;
    assert_error(&got, 404, "not_found", None);

    // `retain_filesystem=false` is the default: no snapshot.
    let d2 = t.ready_deployment(json!({})).await;
    let (status, body) = call(
        &t.admin,
        Method::DELETE,
        &dep_path(&d2.deployment_id, "?retain_filesystem=false"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["snapshot"], Value::Null);
}

#[tokio::test]
async fn the_path_id_404_comes_before_body_validation() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let unknown = unknown_like(&d.deployment_id);
    let thread = unknown_like(&d.thread_id);
    for (method, rest) in [
        (Method::PATCH, String::new()),
        (Method::POST, "/messages".to_owned()),
        (Method::POST, "/threads".to_owned()),
        (Method::PATCH, format!("/threads/{}", d.thread_id)),
        (Method::POST, "/runs/run_doesnotexist/steering".to_owned()),
    ] {
        for body in [
            "not json",
            "[]",
            "{\"name\": 5, \"content\": 5, \"title\": 5}",
        ] {
            let (status, text) = call_text(
                &t.admin,
                method.clone(),
                &dep_path(&unknown, &rest),
                Some(body.to_owned()),
            )
            .await;
            assert_eq!(
                status, 404,
                "{method} {rest} with {body:?} on an unknown deployment: {text}"
            );
        }
    }
    // The same for an unknown thread or run of a real deployment.
    for (method, rest) in [
        (Method::PATCH, format!("/threads/{thread}")),
        (Method::POST, "/runs/run_doesnotexist/steering".to_owned()),
    ] {
        for body in ["not json", "{\"title\": 5, \"decision\": 5}"] {
            let (status, text) = call_text(
                &t.admin,
                method.clone(),
                &dep_path(&d.deployment_id, &rest),
                Some(body.to_owned()),
            )
            .await;
            assert_eq!(status, 404, "{method} {rest} with {body:?}: {text}");
        }
    }
    // With a known path, the bad body is the 400.
    let got = call_text(
        &t.admin,
        Method::PATCH,
        &dep_path(&d.deployment_id, ""),
        Some("not json".to_owned()),
    )
    .await;
    assert_eq!(got.0, 400, "{}", got.1);
}

// ---------------------------------------------------------------------------------------------
// Threads §8
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn threads_are_created_with_optional_titles_and_listed_newest_first() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let path = dep_path(id, "/threads");

    let (status, titled) = call(
        &t.admin,
        Method::POST,
        &path,
        Some(json!({"title": "Holiday campaign"})),
    )
    .await;
    assert_eq!(status, 201, "{titled}");
    assert_keys(
        &titled,
        &[
            "thread_id",
            "deployment_id",
            "title",
            "status",
            "is_default",
            "automation_id",
            "message_count",
            "created_at",
            "last_activity_at",
        ],
    );
    assert!(is_id(&titled["thread_id"], "thr_"));
    assert!(
        !titled["thread_id"]
            .as_str()
            .unwrap()
            .starts_with("thr_default_")
    );
    assert_eq!(titled["deployment_id"], id.as_str());
    assert_eq!(titled["title"], "Holiday campaign");
    assert_eq!(titled["status"], "idle");
    assert_eq!(titled["is_default"], false);
    assert_eq!(titled["automation_id"], Value::Null);
    assert_eq!(titled["message_count"], 0);
    assert!(is_timestamp(&titled["created_at"]));
    assert!(is_timestamp(&titled["last_activity_at"]));

    let (status, null_title) =
        call(&t.admin, Method::POST, &path, Some(json!({"title": null}))).await;
    assert_eq!(status, 201);
    assert_eq!(null_title["title"], Value::Null);
    let (status, absent) = call(&t.admin, Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, 201);
    assert_eq!(absent["title"], Value::Null);
    let (status, no_body) = call_text(&t.admin, Method::POST, &path, None).await;
    assert_eq!(status, 201, "a thread create needs no body: {no_body}");
    let (status, empty) = call(&t.admin, Method::POST, &path, Some(json!({"title": ""}))).await;
    assert_eq!(status, 201, "0 characters is allowed");
    assert_eq!(empty["title"], "");
    let long = "é".repeat(200);
    let (status, max) = call(&t.admin, Method::POST, &path, Some(json!({"title": long}))).await;
    assert_eq!(status, 201);
    assert_eq!(max["title"], long.as_str());

    for bad in [
        json!({"title": "t".repeat(201)}),
        json!({"title": 5}),
        json!({"title": ["a"]}),
        json!({"title": {}}),
    ] {
        let got = call(&t.admin, Method::POST, &path, Some(bad.clone())).await;
        assert_eq!(got.0, 400, "{bad}");
        assert_error(&got, 400, "validation_error", Some("title"));
    }
    let got = call_text(&t.admin, Method::POST, &path, Some("[1]".into())).await;
    assert_eq!(got.0, 400, "{}", got.1);

    // Creating threads starts no run (§18.14).
    let (_, runs) = call(&t.admin, Method::GET, &dep_path(id, "/runs"), None).await;
    assert_eq!(runs["data"], json!([]));

    let (status, list) = call(&t.admin, Method::GET, &path, None).await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 7, "six created plus the default thread");
    assert_newest_first(data, "thread_id");
    let listed: HashSet<String> = ids(data, "thread_id").into_iter().collect();
    for th in [&titled, &null_title, &absent, &empty, &max] {
        assert!(listed.contains(th["thread_id"].as_str().unwrap()));
    }
    assert!(listed.contains(&d.thread_id));
    let listed_titled = data
        .iter()
        .find(|x| x["thread_id"] == titled["thread_id"])
        .unwrap();
    assert_eq!(
        listed_titled, &titled,
        "the listed thread equals the created one"
    );
}

#[tokio::test]
async fn thread_get_pages_messages_backwards() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let thread = t.admin.create_thread(id, None).await.unwrap();
    let tid = &thread.thread_id;
    for i in 0..3 {
        exchange(&t.admin, id, &format!("question {i}"), Some(tid)).await;
    }
    let full = t.admin.get_thread(id, tid, None, None).await.unwrap();
    assert_eq!(full.thread.message_count, 6);
    assert!(!full.has_more_messages);
    let roles: Vec<&str> = full.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "agent", "user", "agent", "user", "agent"]);
    assert_eq!(full.messages[0].content, "question 0");
    assert_eq!(full.messages[4].content, "question 2");
    let all_ids: Vec<String> = full.messages.iter().map(|m| m.message_id.clone()).collect();

    // Raw shape of a message.
    let (_, raw) = call(
        &t.admin,
        Method::GET,
        &dep_path(id, &format!("/threads/{tid}")),
        None,
    )
    .await;
    assert_keys(
        &raw["messages"][0],
        &[
            "message_id",
            "role",
            "content",
            "run_id",
            "attachments",
            "automation_id",
            "created_at",
        ],
    );
    assert!(is_id(&raw["messages"][0]["message_id"], "msg_"));
    assert!(is_id(&raw["messages"][0]["run_id"], "run_"));
    assert_eq!(raw["messages"][0]["run_id"], raw["messages"][1]["run_id"]);

    let newest = t.admin.get_thread(id, tid, Some(4), None).await.unwrap();
    assert!(newest.has_more_messages);
    let newest_ids: Vec<String> = newest
        .messages
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(
        newest_ids,
        all_ids[2..],
        "the newest four, in chronological order"
    );
    let older = t
        .admin
        .get_thread(id, tid, Some(4), Some(&newest_ids[0]))
        .await
        .unwrap();
    assert!(!older.has_more_messages);
    let older_ids: Vec<String> = older
        .messages
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(older_ids, all_ids[..2]);
    let one = t
        .admin
        .get_thread(id, tid, Some(1), Some(&all_ids[3]))
        .await
        .unwrap();
    assert_eq!(one.messages.len(), 1);
    assert_eq!(one.messages[0].message_id, all_ids[2]);
    assert!(one.has_more_messages);
    let none = t
        .admin
        .get_thread(id, tid, Some(500), Some(&all_ids[0]))
        .await
        .unwrap();
    assert!(none.messages.is_empty());
    assert!(!none.has_more_messages);

    let base = dep_path(id, &format!("/threads/{tid}"));
    for bad in ["0", "501", "abc", "-1", "2.5"] {
        let got = call(
            &t.admin,
            Method::GET,
            &format!("{base}?messages_limit={bad}"),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("messages_limit"));
    }
    // A message of another thread, an unknown id, and a malformed one.
    let other = exchange(&t.admin, id, "elsewhere", None).await;
    let other_msgs = t
        .admin
        .get_thread(id, &d.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(
        other_msgs.messages[0].run_id.as_deref(),
        Some(other.run_id.as_str())
    );
    let foreign = other_msgs.messages[0].message_id.clone();
    for bad in [
        foreign.as_str(),
        "msg_doesnotexist",
        "../x",
        &unknown_like(&all_ids[0]),
    ] {
        let got = call(
            &t.admin,
            Method::GET,
            &format!("{base}?messages_before={bad}"),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("messages_before"));
    }
}

#[tokio::test]
async fn thread_title_patch_and_delete() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let th = t.admin.create_thread(id, Some("First")).await.unwrap();
    let path = dep_path(id, &format!("/threads/{}", th.thread_id));

    let (status, p) = call(
        &t.admin,
        Method::PATCH,
        &path,
        Some(json!({"title": "Second"})),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["title"], "Second");
    assert_eq!(p["thread_id"], th.thread_id.as_str());
    for bad in [
        json!({"title": "t".repeat(201)}),
        json!({"title": 1}),
        json!({"title": true}),
    ] {
        let got = call(&t.admin, Method::PATCH, &path, Some(bad)).await;
        assert_error(&got, 400, "validation_error", Some("title"));
    }
    let (_, now) = call(&t.admin, Method::GET, &path, None).await;
    assert_eq!(now["title"], "Second", "a refused PATCH changed the title");
    let (status, p) = call(&t.admin, Method::PATCH, &path, Some(json!({"title": null}))).await;
    assert_eq!(status, 200);
    assert_eq!(p["title"], Value::Null);
    let (_, now) = call(&t.admin, Method::GET, &path, None).await;
    assert_eq!(now["title"], Value::Null);
    // The default thread can be renamed.
    let (status, p) = call(
        &t.admin,
        Method::PATCH,
        &dep_path(id, &format!("/threads/{}", d.thread_id)),
        Some(json!({"title": "Main"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(p["title"], "Main");
    assert_eq!(p["is_default"], true);

    // Delete.
    let run = exchange(&t.admin, id, "hi", Some(&th.thread_id)).await;
    let (status, body) = call(&t.admin, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"thread_id": th.thread_id, "status": "deleted"})
    );
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"title": "x"}))),
        (Method::DELETE, None),
    ] {
        let got = call(&t.admin, method, &path, body).await;
        assert_error(&got, 404, "not_found", None);
    }
    // Its runs went with it; a message to it is a 404 on thread_id.
    let got = call(
        &t.admin,
        Method::GET,
        &dep_path(id, &format!("/runs/{}", run.run_id)),
        None,
    )
    .await;
    assert_error(&got, 404, "not_found", None);
    let got = call(
        &t.admin,
        Method::POST,
        &dep_path(id, "/messages"),
        Some(json!({"content": "x", "thread_id": th.thread_id})),
    )
    .await;
    assert_error(&got, 404, "not_found", Some("thread_id"));
    let (_, list) = call(&t.admin, Method::GET, &dep_path(id, "/threads"), None).await;
    assert_eq!(
        ids(list["data"].as_array().unwrap(), "thread_id"),
        [d.thread_id.as_str()]
    );

    // The default thread cannot be deleted.
    let got = call(
        &t.admin,
        Method::DELETE,
        &dep_path(id, &format!("/threads/{}", d.thread_id)),
        None,
    )
    .await;
    assert_error(&got, 409, "conflict", None);
    let (status, _) = call(
        &t.admin,
        Method::GET,
        &dep_path(id, &format!("/threads/{}", d.thread_id)),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Unknown threads.
    let unknown = unknown_like(&th.thread_id);
    for tid in [unknown.as_str(), "thr_x", "not-an-id"] {
        let p = dep_path(id, &format!("/threads/{tid}"));
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"title": "x"}))),
            (Method::DELETE, None),
        ] {
            let got = call(&t.admin, method, &p, body).await;
            assert_error(&got, 404, "not_found", None);
        }
    }
}

#[tokio::test]
async fn a_thread_with_an_active_run_cannot_be_deleted() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let th = t.admin.create_thread(id, Some("Busy")).await.unwrap();
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("work").hold(&gate).text("ing"));
    let sent = t
        .admin
        .send_message(id, "start", Some(&th.thread_id), &[])
        .await
        .unwrap();
    gate.reached().await;
    let path = dep_path(id, &format!("/threads/{}", th.thread_id));
    let got = call(&t.admin, Method::DELETE, &path, None).await;
    assert_error(&got, 409, "conflict", None);
    let (status, now) = call(&t.admin, Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(now["status"], "running");
    assert_eq!(now["message_count"], 1);

    let cancelled = t.admin.cancel_run(id, &sent.run_id).await.unwrap();
    assert_eq!(cancelled.status, "error");
    let (status, body) = call(&t.admin, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "deleted");
    gate.open();
}

// ---------------------------------------------------------------------------------------------
// Messages §4
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn send_answers_202_with_the_run_and_stores_the_message() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let (status, body) = call(
        &t.admin,
        Method::POST,
        &dep_path(id, "/messages"),
        Some(json!({"content": "Draft a storyboard"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_keys(
        &body,
        &[
            "run_id",
            "deployment_id",
            "thread_id",
            "message_id",
            "status",
        ],
    );
    assert!(is_id(&body["run_id"], "run_"));
    assert!(is_id(&body["message_id"], "msg_"));
    assert_eq!(body["deployment_id"], id.as_str());
    assert_eq!(
        body["thread_id"],
        d.thread_id.as_str(),
        "no thread_id: the default thread"
    );
    assert_eq!(body["status"], "running");
    let run_id = body["run_id"].as_str().unwrap();

    let thread = t
        .admin
        .get_thread(id, &d.thread_id, None, None)
        .await
        .unwrap();
    let first = &thread.messages[0];
    assert_eq!(first.message_id, body["message_id"].as_str().unwrap());
    assert_eq!(first.role, "user");
    assert_eq!(first.content, "Draft a storyboard");
    assert_eq!(first.run_id.as_deref(), Some(run_id));
    assert!(first.attachments.is_empty());

    let run = wait_run_ended(&t.admin, id, run_id).await;
    assert_eq!(run.status, "completed");
    assert_eq!(run.trigger, "message");
    assert_eq!(run.thread_id.as_deref(), Some(d.thread_id.as_str()));

    // `thread_id: null` also means the default thread.
    let (status, body) = call(
        &t.admin,
        Method::POST,
        &dep_path(id, "/messages"),
        Some(json!({"content": "again", "thread_id": null})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["thread_id"], d.thread_id.as_str());
    assert_ne!(body["run_id"], run_id, "an idle thread gets a new run");
}

#[tokio::test]
async fn thread_new_creates_an_untitled_thread_and_starts_a_run_on_it() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let sent = t
        .admin
        .send_message(id, "fresh start", Some("new"), &[])
        .await
        .unwrap();
    assert_ne!(sent.thread_id, d.thread_id);
    assert!(sent.thread_id.starts_with("thr_"), "{sent:?}");
    assert_eq!(sent.status, "running");
    let run = wait_run_ended(&t.admin, id, &sent.run_id).await;
    assert_eq!(run.status, "completed");
    assert_eq!(run.thread_id.as_deref(), Some(sent.thread_id.as_str()));
    let thread = t
        .admin
        .get_thread(id, &sent.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.title, None);
    assert!(!thread.thread.is_default);
    assert_eq!(thread.messages[0].message_id, sent.message_id);
    assert_eq!(thread.messages[0].content, "fresh start");
    assert_eq!(
        thread.thread.message_count, 2,
        "the message and the agent's answer"
    );
    // The default thread was not touched.
    let default = t
        .admin
        .get_thread(id, &d.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(default.thread.message_count, 0);
    // Each "new" is another thread.
    let again = t
        .admin
        .send_message(id, "and again", Some("new"), &[])
        .await
        .unwrap();
    assert_ne!(again.thread_id, sent.thread_id);
}

#[tokio::test]
async fn send_rejects_bad_bodies_and_unknown_threads_and_stores_nothing() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let path = dep_path(id, "/messages");
    let image = |url: &str| json!({"type": "image", "url": url});
    let ok_image = image("https://cdn.example.com/a.png");
    let eleven: Vec<Value> = (0..11).map(|_| ok_image.clone()).collect();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({}), 400, "validation_error", "content"),
        (json!({"content": null}), 400, "validation_error", "content"),
        (json!({"content": ""}), 400, "validation_error", "content"),
        (json!({"content": 5}), 400, "validation_error", "content"),
        (
            json!({"content": "x".repeat(100_001)}),
            400,
            "validation_error",
            "content",
        ),
        (
            json!({"content": "x", "thread_id": 5}),
            400,
            "validation_error",
            "thread_id",
        ),
        (
            json!({"content": "x", "attachments": eleven}),
            400,
            "validation_error",
            "attachments",
        ),
        (
            json!({"content": "x", "attachments": "https://a"}),
            400,
            "validation_error",
            "attachments",
        ),
        (
            json!({"content": "x", "attachments": [{"type": "pdf", "url": "https://cdn.example.com/a.pdf"}]}),
            400,
            "validation_error",
            "attachments[0].type",
        ),
        (
            json!({"content": "x", "attachments": [{"url": "https://cdn.example.com/a.png"}]}),
            400,
            "validation_error",
            "attachments[0].type",
        ),
        (
            json!({"content": "x", "attachments": [image("ftp://cdn.example.com/a.png")]}),
            400,
            "validation_error",
            "attachments[0].url",
        ),
        (
            json!({"content": "x", "attachments": [image("file:///etc/passwd")]}),
            400,
            "validation_error",
            "attachments[0].url",
        ),
        (
            json!({"content": "x", "attachments": [ok_image.clone(), image(&format!("https://cdn.example.com/{}", "a".repeat(2030)))]}),
            400,
            "validation_error",
            "attachments[1].url",
        ),
        (
            json!({"content": "x", "attachments": [{"type": "video"}]}),
            400,
            "validation_error",
            "attachments[0].url",
        ),
        (
            json!({"content": "x", "thread_id": "thr_doesnotexist"}),
            404,
            "not_found",
            "thread_id",
        ),
        (
            json!({"content": "x", "thread_id": "../etc"}),
            404,
            "not_found",
            "thread_id",
        ),
        (
            json!({"content": "x", "thread_id": ""}),
            404,
            "not_found",
            "thread_id",
        ),
        (
            json!({"content": "x", "thread_id": unknown_like(&d.thread_id)}),
            404,
            "not_found",
            "thread_id",
        ),
    ];
    for (body, status, code, param) in cases {
        let got = call(&t.admin, Method::POST, &path, Some(body.clone())).await;
        assert_eq!(
            got.0,
            status,
            "{}: {}",
            body.to_string().chars().take(200).collect::<String>(),
            got.1
        );
        assert_error(&got, status, code, Some(param));
    }
    // The URL limit is 2,048 characters: exactly that is accepted by validation, one more is
    // not (the limit is checked before any fetch).
    let too_long = format!("https://cdn.example.com/{}", "a".repeat(2049 - 24));
    assert_eq!(too_long.chars().count(), 2049);
    let got = call(
        &t.admin,
        Method::POST,
        &path,
        Some(json!({"content": "x", "attachments": [image(&too_long)]})),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("attachments[0].url"));
    for bad in ["", "nope", "[]"] {
        let got = call_text(&t.admin, Method::POST, &path, Some(bad.to_owned())).await;
        assert_eq!(got.0, 400, "{bad:?}: {}", got.1);
    }

    // Nothing was stored or started.
    let thread = t
        .admin
        .get_thread(id, &d.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.message_count, 0);
    let (_, threads) = call(&t.admin, Method::GET, &dep_path(id, "/threads"), None).await;
    assert_eq!(threads["data"].as_array().unwrap().len(), 1);
    let (_, runs) = call(&t.admin, Method::GET, &dep_path(id, "/runs"), None).await;
    assert_eq!(runs["data"], json!([]));
    assert!(t.fake.requests().is_empty(), "no model call was made");
}

#[tokio::test]
async fn send_with_no_credits_is_402_and_stores_nothing() {
    let t = TestServer::start().await;
    let (account_id, broke) = other_account(&t, "broke", Some(0.0)).await;
    let d = ready(&broke, json!({})).await;
    let id = d["deployment_id"].as_str().unwrap();
    let default_thread = d["thread_id"].as_str().unwrap();
    let side = broke.create_thread(id, Some("side")).await.unwrap();

    for body in [
        json!({"content": "hello"}),
        json!({"content": "hello", "thread_id": "new"}),
        json!({"content": "hello", "thread_id": side.thread_id}),
    ] {
        let got = call(
            &broke,
            Method::POST,
            &dep_path(id, "/messages"),
            Some(body.clone()),
        )
        .await;
        assert_error(&got, 402, "insufficient_credits", None);
    }
    // A 400 and an unknown thread (404 for an id in the body) come before the 402 (§1.8).
    let got = call(
        &broke,
        Method::POST,
        &dep_path(id, "/messages"),
        Some(json!({"content": ""})),
    )
    .await;
    assert_error(&got, 400, "validation_error", Some("content"));
    let got = call(
        &broke,
        Method::POST,
        &dep_path(id, "/messages"),
        Some(json!({"content": "hello", "thread_id": "thr_doesnotexist"})),
    )
    .await;
    assert_error(&got, 404, "not_found", Some("thread_id"));

    let thread = broke
        .get_thread(id, default_thread, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.message_count, 0, "nothing stored");
    let side_now = broke
        .get_thread(id, &side.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(side_now.thread.message_count, 0);
    let (_, threads) = call(&broke, Method::GET, &dep_path(id, "/threads"), None).await;
    assert_eq!(
        threads["data"].as_array().unwrap().len(),
        2,
        "no `new` thread was made"
    );
    let (_, runs) = call(&broke, Method::GET, &dep_path(id, "/runs"), None).await;
    assert_eq!(runs["data"], json!([]), "nothing started");
    assert!(t.fake.requests().is_empty(), "no model call");

    // With credits the same send works.
    t.admin
        .update_credits(&account_id, paddock_client::CreditsChange::Set(Some(5.0)))
        .await
        .unwrap();
    let run = exchange(&broke, id, "hello", None).await;
    assert_eq!(run.status, "completed");
    // A negative balance is also ≤ 0.
    t.admin
        .update_credits(&account_id, paddock_client::CreditsChange::Set(Some(-1.0)))
        .await
        .unwrap();
    let got = call(
        &broke,
        Method::POST,
        &dep_path(id, "/messages"),
        Some(json!({"content": "x"})),
    )
    .await;
    assert_error(&got, 402, "insufficient_credits", None);
}

// ---------------------------------------------------------------------------------------------
// Runs §5
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn runs_get_and_list_with_filters() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    t.fake.push(Script::new().text("Done").usage(11, 3));
    let done = exchange(&t.admin, id, "one", None).await;

    let (status, raw) = call(
        &t.admin,
        Method::GET,
        &dep_path(id, &format!("/runs/{}", done.run_id)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_keys(
        &raw,
        &[
            "run_id",
            "deployment_id",
            "thread_id",
            "status",
            "trigger",
            "automation_id",
            "model",
            "steering_request",
            "error",
            "warnings",
            "usage",
            "created_at",
            "updated_at",
            "finished_at",
        ],
    );
    assert_eq!(raw["deployment_id"], id.as_str());
    assert_eq!(raw["thread_id"], d.thread_id.as_str());
    assert_eq!(raw["status"], "completed");
    assert_eq!(raw["trigger"], "message");
    assert_eq!(raw["automation_id"], Value::Null);
    assert_eq!(raw["model"], MODEL);
    assert_eq!(raw["steering_request"], Value::Null);
    assert_eq!(raw["error"], Value::Null);
    assert_eq!(raw["warnings"], json!([]));
    assert_keys(&raw["usage"], &["input_tokens", "output_tokens", "credits"]);
    assert_eq!(raw["usage"]["input_tokens"], 11);
    assert_eq!(raw["usage"]["output_tokens"], 3);
    assert!(is_timestamp(&raw["created_at"]));
    assert!(
        is_timestamp(&raw["finished_at"]),
        "a completed run has finished_at"
    );

    // A second run, held mid-stream on another thread.
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("thinking").hold(&gate).text("…"));
    let held = t
        .admin
        .send_message(id, "two", Some("new"), &[])
        .await
        .unwrap();
    gate.reached().await;
    let running = t.admin.get_run(id, &held.run_id).await.unwrap();
    assert_eq!(running.status, "running");
    assert_eq!(running.finished_at, None);
    assert_eq!(running.error, None);

    let list = |q: &str| {
        let admin = t.admin.clone();
        let path = dep_path(id, &format!("/runs{q}"));
        async move {
            let (status, body) = call(&admin, Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            ids(body["data"].as_array().unwrap(), "run_id")
        }
    };
    let both = list("").await;
    assert_eq!(both.len(), 2);
    let mut sorted = both.clone();
    sorted.sort();
    let mut want = vec![done.run_id.clone(), held.run_id.clone()];
    want.sort();
    assert_eq!(sorted, want);
    assert_eq!(
        list(&format!("?thread_id={}", d.thread_id)).await,
        [done.run_id.as_str()]
    );
    assert_eq!(
        list(&format!("?thread_id={}", held.thread_id)).await,
        [held.run_id.as_str()]
    );
    assert_eq!(list("?status=completed").await, [done.run_id.as_str()]);
    assert_eq!(list("?status=running").await, [held.run_id.as_str()]);
    assert!(list("?status=waiting_on_human").await.is_empty());
    assert!(list("?status=error").await.is_empty());
    assert_eq!(list("?trigger=message").await.len(), 2);
    for trig in ["schedule", "manual", "dreaming"] {
        assert!(
            list(&format!("?trigger={trig}")).await.is_empty(),
            "trigger={trig}"
        );
    }
    assert!(
        list(&format!("?thread_id={}&status=completed", held.thread_id))
            .await
            .is_empty()
    );
    assert!(
        list("?thread_id=thr_doesnotexist").await.is_empty(),
        "an unknown id filter is empty"
    );
    assert!(
        list(&format!("?thread_id={}", unknown_like(&d.thread_id)))
            .await
            .is_empty()
    );
    assert!(list("?automation_id=auto_doesnotexist").await.is_empty());
    for bad in ["finished", "RUNNING", "cancelled"] {
        let got = call(
            &t.admin,
            Method::GET,
            &dep_path(id, &format!("/runs?status={bad}")),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("status"));
    }
    for bad in ["api", "Message"] {
        let got = call(
            &t.admin,
            Method::GET,
            &dep_path(id, &format!("/runs?trigger={bad}")),
            None,
        )
        .await;
        assert_error(&got, 400, "validation_error", Some("trigger"));
    }

    t.admin.cancel_run(id, &held.run_id).await.unwrap();
    assert_eq!(list("?status=error").await, [held.run_id.as_str()]);
    assert!(list("?status=running").await.is_empty());
    gate.open();

    // Unknown runs.
    for r in [unknown_like(&done.run_id).as_str(), "run_x", "not-a-run"] {
        let got = call(
            &t.admin,
            Method::GET,
            &dep_path(id, &format!("/runs/{r}")),
            None,
        )
        .await;
        assert_error(&got, 404, "not_found", None);
    }
}

#[tokio::test]
async fn cancelling_a_running_run_ends_it_and_nothing_follows_its_terminal_event() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = &d.deployment_id;
    let gate = Gate::new();
    t.fake
        .push(Script::new().text("Hel").hold(&gate).text("lo, late text"));
    let sent = t.admin.send_message(id, "start", None, &[]).await.unwrap();
    gate.reached().await;
    assert_eq!(
        t.admin.get_run(id, &sent.run_id).await.unwrap().status,
        "running"
    );

    let resp = t
        .admin
        .send_full::<Value>(t.admin.raw(
            Method::POST,
            &dep_path(id, &format!("/runs/{}/cancel", sent.run_id)),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let cancelled = resp.body;
    assert_eq!(cancelled["run_id"], sent.run_id.as_str());
    assert_eq!(cancelled["status"], "error");
    assert_eq!(cancelled["error"]["code"], "cancelled");
    assert!(
        cancelled["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(is_timestamp(&cancelled["finished_at"]), "{cancelled}");
    assert_eq!(cancelled["steering_request"], Value::Null);
    let (_, got) = call(
        &t.admin,
        Method::GET,
        &dep_path(id, &format!("/runs/{}", sent.run_id)),
        None,
    )
    .await;
    assert_eq!(got, cancelled, "GET shows the cancelled run as answered");
    let thread = t
        .admin
        .get_thread(id, &d.thread_id, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.status, "idle");

    // Let the held model stream finish; its late output must go nowhere.
    gate.open();
    // Cancelling again answers 200 and changes nothing.
    let (status, again) = call(
        &t.admin,
        Method::POST,
        &dep_path(id, &format!("/runs/{}/cancel", sent.run_id)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, cancelled);

    // A barrier: a later run on the same thread runs to completion.
    let next = exchange(&t.admin, id, "next", None).await;
    assert_ne!(next.run_id, sent.run_id);
    let events = replay_until_terminal(&t.admin, id, &next.run_id).await;
    let terminal: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| is_terminal(e, &sent.run_id))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        terminal.len(),
        1,
        "exactly one terminal run_status: {events:#?}"
    );
    let end = &events[terminal[0]];
    assert_eq!(end.data["status"], "error");
    assert_eq!(end.data["error"]["code"], "cancelled");
    let after: Vec<&SseEvent> = events[terminal[0] + 1..]
        .iter()
        .filter(|e| e.data["run_id"] == sent.run_id.as_str())
        .collect();
    assert!(
        after.is_empty(),
        "events of the cancelled run after its end: {after:#?}"
    );
    assert!(
        !events.iter().any(|e| e.data["delta"]
            .as_str()
            .is_some_and(|d| d.contains("late text"))),
        "text streamed after the cancel reached the stream"
    );
    let (_, got) = call(
        &t.admin,
        Method::GET,
        &dep_path(id, &format!("/runs/{}", sent.run_id)),
        None,
    )
    .await;
    assert_eq!(got, cancelled, "the cancelled run changed later");

    // A completed run cannot be cancelled; an unknown one is 404.
    let got = call(
        &t.admin,
        Method::POST,
        &dep_path(id, &format!("/runs/{}/cancel", next.run_id)),
        None,
    )
    .await;
    assert_error(&got, 409, "conflict", None);
    assert_eq!(
        t.admin.get_run(id, &next.run_id).await.unwrap().status,
        "completed"
    );
    for r in [unknown_like(&sent.run_id).as_str(), "run_x", "bad-id"] {
        assert_client_error(t.admin.cancel_run(id, r).await, 404, "not_found", None);
    }
}

// ---------------------------------------------------------------------------------------------
// Pagination §1.7
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deployments_list_pages_are_stable_and_newest_first() {
    let t = TestServer::start().await;
    let mut early = Vec::new();
    for i in 0..2 {
        let d = t
            .admin
            .create_deployment(&deployment_body(json!({"name": format!("early {i}")})))
            .await
            .unwrap();
        early.push(d.deployment_id);
    }
    next_second().await;
    let mut later = Vec::new();
    for i in 0..3 {
        let d = t
            .admin
            .create_deployment(&deployment_body(json!({"name": format!("later {i}")})))
            .await
            .unwrap();
        later.push(d.deployment_id);
    }
    let (all, _) = page_of(&t.admin, "/v1/deployments", 100, None).await;
    let listed = ids(&all, "deployment_id");
    let (head, tail) = listed.split_at(3);
    for l in &later {
        assert!(
            head.contains(l),
            "a newer deployment is not listed first: {listed:?}"
        );
    }
    for e in &early {
        assert!(
            tail.contains(e),
            "an older deployment is not listed last: {listed:?}"
        );
    }

    let admin = t.admin.clone();
    check_pagination(
        &t.admin,
        "/v1/deployments",
        "deployment_id",
        || async move {
            let mut late = Vec::new();
            for i in 0..2 {
                let d = admin
                    .create_deployment(&deployment_body(json!({"name": format!("late {i}")})))
                    .await
                    .unwrap();
                late.push(d.deployment_id);
            }
            late
        },
    )
    .await;
    // Filters and paging combine.
    let (page, next) = page_of(&t.admin, "/v1/deployments?customer_id=cus_test", 2, None).await;
    assert_eq!(page.len(), 2);
    assert!(next.is_some());
}

#[tokio::test]
async fn threads_list_pages_are_stable() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = d.deployment_id.clone();
    for i in 0..4 {
        t.admin
            .create_thread(&id, Some(&format!("t{i}")))
            .await
            .unwrap();
    }
    let admin = t.admin.clone();
    let dep = id.clone();
    check_pagination(
        &t.admin,
        &dep_path(&id, "/threads"),
        "thread_id",
        || async move {
            let mut late = Vec::new();
            for i in 0..2 {
                late.push(
                    admin
                        .create_thread(&dep, Some(&format!("late {i}")))
                        .await
                        .unwrap()
                        .thread_id,
                );
            }
            late
        },
    )
    .await;
}

#[tokio::test]
async fn runs_list_pages_are_stable() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let id = d.deployment_id.clone();
    for i in 0..5 {
        exchange(&t.admin, &id, &format!("m{i}"), Some("new")).await;
    }
    let admin = t.admin.clone();
    let dep = id.clone();
    check_pagination(&t.admin, &dep_path(&id, "/runs"), "run_id", || async move {
        let mut late = Vec::new();
        for i in 0..2 {
            late.push(
                exchange(&admin, &dep, &format!("late {i}"), Some("new"))
                    .await
                    .run_id,
            );
        }
        late
    })
    .await;
    // Paging combines with filters.
    let (page, next) = page_of(&t.admin, &dep_path(&id, "/runs?status=completed"), 3, None).await;
    assert_eq!(page.len(), 3);
    let next = next.expect("more completed runs");
    let (rest, _) = page_of(
        &t.admin,
        &dep_path(&id, "/runs?status=completed"),
        100,
        Some(&next),
    )
    .await;
    assert_eq!(page.len() + rest.len(), 7);
}

// ---------------------------------------------------------------------------------------------
// Tenancy §1.4 / §18.1
// ---------------------------------------------------------------------------------------------

/// Sends the same request for `foreign_id` and for `unknown_id` (each also substituted into
/// `rest` and `body`) and asserts both are 404s whose bodies are identical once the id they
/// name is swapped.
async fn assert_same_404(
    client: &Client,
    method: &Method,
    make_path: impl Fn(&str) -> String,
    body: Option<&str>,
    foreign_id: &str,
    unknown_id: &str,
) {
    let (fs, ftext) = call_text(
        client,
        method.clone(),
        &make_path(foreign_id),
        body.map(str::to_owned),
    )
    .await;
    let (us, utext) = call_text(
        client,
        method.clone(),
        &make_path(unknown_id),
        body.map(str::to_owned),
    )
    .await;
    let what = make_path(foreign_id);
    assert_eq!(
        fs, 404,
        "{method} {what} with another account's id: {ftext}"
    );
    assert_eq!(
        us,
        404,
        "{method} {} with a never-existing id: {utext}",
        make_path(unknown_id)
    );
    let fbody: Value = serde_json::from_str(&ftext).unwrap();
    let ubody: Value = serde_json::from_str(&utext).unwrap();
    assert_eq!(fbody["error"]["code"], "not_found");
    assert_eq!(fbody["error"]["code"], ubody["error"]["code"]);
    assert_eq!(
        fbody["error"]["param"], ubody["error"]["param"],
        "{method} {what}"
    );
    assert_eq!(
        ftext.replace(foreign_id, unknown_id),
        utext,
        "{method} {what}: a foreign id must look exactly like one that never existed"
    );
}

#[tokio::test]
async fn another_accounts_resources_are_indistinguishable_from_unknown_ones() {
    let t = TestServer::start().await;
    // Account A (the default account): a deployment with a finished run and a second thread.
    let a = t.ready_deployment(json!({"name": "A's agent"})).await;
    let a_run = exchange(&t.admin, &a.deployment_id, "hello from A", None).await;
    let a_thread = t
        .admin
        .create_thread(&a.deployment_id, Some("A side"))
        .await
        .unwrap();
    let a_before = call(&t.admin, Method::GET, &dep_path(&a.deployment_id, ""), None)
        .await
        .1;
    let requests_before = t.fake.requests().len();

    // Account B, same customer id.
    let (_, b) = other_account(&t, "tenant-b", None).await;
    let b_dep = ready(&b, json!({"name": "B's agent"})).await;
    let b_id = b_dep["deployment_id"].as_str().unwrap().to_owned();

    let unknown_dep = unknown_like(&a.deployment_id);
    let r = a_run.run_id.clone();
    let th = a_thread.thread_id.clone();
    let dt = a.thread_id.clone();
    let routes: Vec<(Method, String, Option<String>)> = vec![
        (Method::GET, String::new(), None),
        (
            Method::PATCH,
            String::new(),
            Some(json!({"name": "hijacked"}).to_string()),
        ),
        (
            Method::PATCH,
            String::new(),
            Some(json!({"name": ""}).to_string()),
        ),
        (Method::DELETE, String::new(), None),
        (Method::DELETE, "?retain_filesystem=true".into(), None),
        (
            Method::POST,
            "/messages".into(),
            Some(json!({"content": "hi"}).to_string()),
        ),
        (
            Method::POST,
            "/messages".into(),
            Some(json!({"content": "hi", "thread_id": th}).to_string()),
        ),
        (
            Method::POST,
            "/messages".into(),
            Some(json!({"content": "hi", "thread_id": "new"}).to_string()),
        ),
        (Method::GET, "/runs".into(), None),
        (Method::GET, format!("/runs?thread_id={dt}"), None),
        (Method::GET, format!("/runs/{r}"), None),
        (Method::POST, format!("/runs/{r}/cancel"), None),
        (
            Method::POST,
            format!("/runs/{r}/steering"),
            Some(json!({"request_id": "srq_abc", "decision": "approve"}).to_string()),
        ),
        (Method::GET, "/events".into(), None),
        (Method::GET, "/events?after=evt_0".into(), None),
        (
            Method::POST,
            "/threads".into(),
            Some(json!({"title": "x"}).to_string()),
        ),
        (Method::GET, "/threads".into(), None),
        (Method::GET, format!("/threads/{th}"), None),
        (Method::GET, format!("/threads/{dt}"), None),
        (Method::GET, format!("/threads/{dt}?messages_limit=1"), None),
        (
            Method::PATCH,
            format!("/threads/{th}"),
            Some(json!({"title": "x"}).to_string()),
        ),
        (Method::DELETE, format!("/threads/{th}"), None),
        (Method::GET, "/nonexistent".into(), None),
    ];
    for (method, rest, body) in &routes {
        assert_same_404(
            &b,
            method,
            |dep| dep_path(dep, rest),
            body.as_deref(),
            &a.deployment_id,
            &unknown_dep,
        )
        .await;
    }
    // An admin key crosses accounts only on the §16 endpoints: A's admin key cannot see B's
    // deployment either.
    let unknown_b = unknown_like(&b_id);
    for (method, rest, body) in routes.iter().take(5) {
        assert_same_404(
            &t.admin,
            method,
            |dep| dep_path(dep, rest),
            body.as_deref(),
            &b_id,
            &unknown_b,
        )
        .await;
    }

    // B's own deployment with A's thread and run ids: as if those never existed.
    let unknown_run = unknown_like(&r);
    for (method, rest, body) in [
        (Method::GET, "/runs/{}", None),
        (Method::POST, "/runs/{}/cancel", None),
        (
            Method::POST,
            "/runs/{}/steering",
            Some(json!({"request_id": "srq_abc", "decision": "approve"}).to_string()),
        ),
    ] {
        assert_same_404(
            &b,
            &method,
            |run| dep_path(&b_id, &rest.replace("{}", run)),
            body.as_deref(),
            &r,
            &unknown_run,
        )
        .await;
    }
    let unknown_thread = unknown_like(&th);
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"title": "x"}).to_string())),
        (Method::DELETE, None),
    ] {
        assert_same_404(
            &b,
            &method,
            |thread| dep_path(&b_id, &format!("/threads/{thread}")),
            body.as_deref(),
            &th,
            &unknown_thread,
        )
        .await;
    }
    // A's default thread too (its id has a different shape).
    assert_same_404(
        &b,
        &Method::GET,
        |thread| dep_path(&b_id, &format!("/threads/{thread}")),
        None,
        &dt,
        &unknown_like(&dt),
    )
    .await;
    // A's thread id in a message body: 404 on `thread_id`, as for an unknown thread.
    let foreign = call(
        &b,
        Method::POST,
        &dep_path(&b_id, "/messages"),
        Some(json!({"content": "hi", "thread_id": th})),
    )
    .await;
    let unknown = call(
        &b,
        Method::POST,
        &dep_path(&b_id, "/messages"),
        Some(json!({"content": "hi", "thread_id": unknown_thread})),
    )
    .await;
    assert_error(&foreign, 404, "not_found", Some("thread_id"));
    assert_eq!(
        foreign.1.to_string().replace(&th, &unknown_thread),
        unknown.1.to_string()
    );
    // A's thread as a runs filter on B's deployment matches nothing.
    let (status, runs) = call(
        &b,
        Method::GET,
        &dep_path(&b_id, &format!("/runs?thread_id={th}")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(runs["data"], json!([]));

    // Lists never show the other account's deployments.
    let (_, b_list) = call(&b, Method::GET, "/v1/deployments", None).await;
    assert_eq!(
        ids(b_list["data"].as_array().unwrap(), "deployment_id"),
        [b_id.as_str()]
    );
    let (_, b_list) = call(
        &b,
        Method::GET,
        "/v1/deployments?customer_id=cus_test",
        None,
    )
    .await;
    assert_eq!(
        ids(b_list["data"].as_array().unwrap(), "deployment_id"),
        [b_id.as_str()]
    );
    let (_, a_list) = call(
        &t.admin,
        Method::GET,
        "/v1/deployments?customer_id=cus_test",
        None,
    )
    .await;
    assert_eq!(
        ids(a_list["data"].as_array().unwrap(), "deployment_id"),
        [a.deployment_id.as_str()]
    );

    // B's attempts changed nothing of A's.
    let a_after = call(&t.admin, Method::GET, &dep_path(&a.deployment_id, ""), None)
        .await
        .1;
    assert_eq!(a_after, a_before);
    let thread = t
        .admin
        .get_thread(&a.deployment_id, &th, None, None)
        .await
        .unwrap();
    assert_eq!(thread.thread.title.as_deref(), Some("A side"));
    assert_eq!(thread.thread.message_count, 0);
    let (_, a_runs) = call(
        &t.admin,
        Method::GET,
        &dep_path(&a.deployment_id, "/runs"),
        None,
    )
    .await;
    assert_eq!(
        ids(a_runs["data"].as_array().unwrap(), "run_id"),
        [r.as_str()]
    );
    let (_, a_threads) = call(
        &t.admin,
        Method::GET,
        &dep_path(&a.deployment_id, "/threads"),
        None,
    )
    .await;
    assert_eq!(a_threads["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        t.fake.requests().len(),
        requests_before,
        "B started a model call on A's deployment"
    );
}
