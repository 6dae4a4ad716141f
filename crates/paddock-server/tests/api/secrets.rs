//! Secrets (spec §15; guarantees 38, 39): the API (create, list with `used_by`, delete, its
//! 400/404/409s), references from deployments (422 `invalid_secret_ref`), use in MCP headers,
//! and redaction of values in tool results, streamed tokens and stored messages; the raw value
//! is nowhere in the data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use paddock_test_support::{FakeMcp, Script};
use serde_json::{Value, json};

use common::{TestServer, collect_until, deployment_body, is_terminal, open_events};

const VALUE: &str = "tok-SUPERSECRET-4711";

async fn call(
    t: &TestServer,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = t.http().request(method, t.url(path)).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(VALUE),
        "a response carried the secret value: {text}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_error(got: &(u16, Value), status: u16, code: &str, param: Option<&str>) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{:?}", got.1);
    if let Some(p) = param {
        assert_eq!(got.1["error"]["param"], p, "{:?}", got.1);
    }
}

async fn create_secret(t: &TestServer, key: &str, body: Value) -> (u16, Value) {
    call(t, key, reqwest::Method::POST, "/v1/secrets", Some(body)).await
}

/// Another account with a key that may write deployments and secrets.
async fn other_account(t: &TestServer) -> (String, String) {
    let account = t.admin.create_account("other", None).await.unwrap();
    let key = t
        .admin
        .create_key(
            "other-key",
            &["deployments:read", "deployments:write", "secrets:write"],
            Some(&account.account_id),
            None,
        )
        .await
        .unwrap();
    (account.account_id, key.key.unwrap())
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_secrets_api_creates_lists_deletes_and_refuses_as_specified() {
    let t = TestServer::start().await;
    let admin = t.admin_key.clone();

    let created = create_secret(
        &t,
        &admin,
        json!({"value": VALUE, "name": "media-token", "customer_id": "cus_test"}),
    )
    .await;
    assert_eq!(created.0, 201, "{:?}", created.1);
    let id = created.1["secret_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sec_"));
    assert_eq!(created.1["name"], "media-token");
    assert_eq!(created.1["customer_id"], "cus_test");
    assert!(created.1.get("value").is_none());

    // 400s, each naming its field.
    assert_error(
        &create_secret(&t, &admin, json!({"name": "x"})).await,
        400,
        "validation_error",
        Some("value"),
    );
    assert_error(
        &create_secret(&t, &admin, json!({"value": "short"})).await,
        400,
        "validation_error",
        Some("value"),
    );
    assert_error(
        &create_secret(&t, &admin, json!({"value": 12345678})).await,
        400,
        "validation_error",
        Some("value"),
    );
    assert_error(
        &create_secret(&t, &admin, json!({"value": "x".repeat(65_537)})).await,
        400,
        "validation_error",
        Some("value"),
    );
    assert_error(
        &create_secret(&t, &admin, json!({"value": VALUE, "name": "bad name"})).await,
        400,
        "validation_error",
        Some("name"),
    );
    assert_error(
        &create_secret(&t, &admin, json!({"value": VALUE, "customer_id": " x"})).await,
        400,
        "validation_error",
        Some("customer_id"),
    );
    // 409: the name is taken in the account.
    assert_error(
        &create_secret(&t, &admin, json!({"value": VALUE, "name": "media-token"})).await,
        409,
        "conflict",
        None,
    );
    // An unnamed, unbound one.
    let plain = create_secret(&t, &admin, json!({"value": "another-value-1"})).await;
    assert_eq!(plain.0, 201);
    let plain_id = plain.1["secret_id"].as_str().unwrap().to_owned();

    // A deployment references the bound secret: used_by counts it; deleting it is a 409.
    let d = t
        .ready_deployment(json!({"secrets": {"MEDIA_TOKEN": id}}))
        .await;
    let list = call(&t, &admin, reqwest::Method::GET, "/v1/secrets", None).await;
    assert_eq!(list.0, 200);
    let data = list.1["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let used_by = |sid: &str| {
        data.iter()
            .find(|x| x["secret_id"] == sid)
            .map(|x| x["used_by"].clone())
    };
    assert_eq!(used_by(&plain_id), Some(json!(0)));
    assert_eq!(used_by(&id), Some(json!(1)));
    let filtered = call(
        &t,
        &admin,
        reqwest::Method::GET,
        "/v1/secrets?customer_id=cus_test",
        None,
    )
    .await;
    assert_eq!(filtered.1["data"].as_array().unwrap().len(), 1);
    let busy = call(
        &t,
        &admin,
        reqwest::Method::DELETE,
        &format!("/v1/secrets/{id}"),
        None,
    )
    .await;
    assert_error(&busy, 409, "conflict", None);
    assert!(
        busy.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&d.deployment_id),
        "{:?}",
        busy.1
    );

    // 422: a bound secret for another customer; another account's secret; an unknown id.
    let mismatched = call(
        &t,
        &admin,
        reqwest::Method::POST,
        "/v1/deployments",
        Some(deployment_body(
            json!({"customer_id": "cus_other", "secrets": {"T": id}}),
        )),
    )
    .await;
    assert_error(&mismatched, 422, "invalid_secret_ref", Some("secrets.T"));
    let (_, other_key) = other_account(&t).await;
    let foreign = create_secret(
        &t,
        &other_key,
        json!({"value": "foreign-value-1", "name": "media-token"}),
    )
    .await;
    assert_eq!(
        foreign.0, 201,
        "names are unique per account only: {:?}",
        foreign.1
    );
    let foreign_id = foreign.1["secret_id"].as_str().unwrap().to_owned();
    let got = call(
        &t,
        &admin,
        reqwest::Method::POST,
        "/v1/deployments",
        Some(deployment_body(json!({"secrets": {"T": foreign_id}}))),
    )
    .await;
    assert_error(&got, 422, "invalid_secret_ref", Some("secrets.T"));
    let got = call(
        &t,
        &admin,
        reqwest::Method::PATCH,
        &format!("/v1/deployments/{}", d.deployment_id),
        Some(json!({"secrets": {"OTHER": foreign_id}})),
    )
    .await;
    assert_error(&got, 422, "invalid_secret_ref", Some("secrets.OTHER"));
    // The unbound secret may be referenced by any customer's deployment.
    let ok = call(
        &t,
        &admin,
        reqwest::Method::PATCH,
        &format!("/v1/deployments/{}", d.deployment_id),
        Some(json!({"secrets": {"PLAIN": plain_id}})),
    )
    .await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);

    // 404: another account's id is exactly an unknown one.
    let foreign_del = call(
        &t,
        &admin,
        reqwest::Method::DELETE,
        &format!("/v1/secrets/{foreign_id}"),
        None,
    )
    .await;
    let missing_del = call(
        &t,
        &admin,
        reqwest::Method::DELETE,
        "/v1/secrets/sec_nope",
        None,
    )
    .await;
    assert_error(&foreign_del, 404, "not_found", None);
    assert_eq!(missing_del.0, 404);

    // Removing the reference frees it; delete answers 200, then 404.
    let ok = call(
        &t,
        &admin,
        reqwest::Method::PATCH,
        &format!("/v1/deployments/{}", d.deployment_id),
        Some(json!({"secrets": {"MEDIA_TOKEN": null}})),
    )
    .await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
    let del = call(
        &t,
        &admin,
        reqwest::Method::DELETE,
        &format!("/v1/secrets/{id}"),
        None,
    )
    .await;
    assert_eq!(del, (200, json!({"secret_id": id, "status": "deleted"})));
    let again = call(
        &t,
        &admin,
        reqwest::Method::DELETE,
        &format!("/v1/secrets/{id}"),
        None,
    )
    .await;
    assert_eq!(again.0, 404);
    // A key without `secrets:write` may not touch secrets.
    let (_, limited) = {
        let account = t.admin.create_account("limited", None).await.unwrap();
        let key = t
            .admin
            .create_key("ro", &["deployments:read"], Some(&account.account_id), None)
            .await
            .unwrap();
        (account.account_id, key.key.unwrap())
    };
    let denied = call(&t, &limited, reqwest::Method::GET, "/v1/secrets", None).await;
    assert_eq!(denied.0, 403, "{:?}", denied.1);
}

#[tokio::test]
async fn a_secret_reaches_the_mcp_server_and_is_redacted_everywhere_else() {
    let mcp = FakeMcp::start().await;
    let t =
        TestServer::start_with(|s| s.outbound.allowed_hosts = vec!["127.0.0.1".to_owned()]).await;
    let admin = t.admin_key.clone();
    let created = create_secret(&t, &admin, json!({"value": VALUE, "name": "media-token"})).await;
    let id = created.1["secret_id"].as_str().unwrap().to_owned();
    let d = t
        .ready_deployment(json!({
            "secrets": {"MEDIA_TOKEN": id},
            "mcp_servers": [{"name": "media", "url": mcp.url(),
                             "headers": {"Authorization": "Bearer ${MEDIA_TOKEN}", "X-Price": "$$5"}}],
        }))
        .await;
    let dep = d.deployment_id.clone();
    assert_eq!(
        d.mcp_servers[0].headers["Authorization"],
        "Bearer ${MEDIA_TOKEN}"
    );

    // Turn 1: the model calls `echo`, which echoes the headers back.
    t.fake
        .push(Script::new().tool_call("call_echo", "media__echo", json!({})));
    // Turn 2: the model's answer streams the value split across two deltas.
    let (head, tail) = VALUE.split_at(9);
    t.fake.push(
        Script::new()
            .text(format!("Your token is {head}"))
            .text(format!("{tail}, keep it safe.")),
    );
    let mut stream = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Check the headers.", None, &[])
        .await
        .unwrap()
        .run_id;
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );

    // The server got the substituted value, and `$$` as a literal `$`.
    let calls: Vec<_> = mcp.requests();
    assert!(!calls.is_empty());
    for r in &calls {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {VALUE}").as_str())
        );
        assert_eq!(r.headers.get("x-price").map(String::as_str), Some("$5"));
    }

    // The echo of it is redacted in the tool_result event and in what the model saw next.
    let result = events.iter().find(|e| e.event == "tool_result").unwrap();
    assert_eq!(
        result.data["result"]["headers"]["authorization"],
        "Bearer [secret:MEDIA_TOKEN]"
    );
    let second = t.fake.requests()[1].to_string();
    assert!(second.contains("Bearer [secret:MEDIA_TOKEN]"), "{second}");
    for (i, r) in t.fake.requests().iter().enumerate() {
        assert!(
            !r.to_string().contains(VALUE),
            "model request {i} carried the value"
        );
    }

    // Streamed tokens and the agent message are redacted, even split across deltas.
    let streamed: String = events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        streamed,
        "Your token is [secret:MEDIA_TOKEN], keep it safe."
    );
    let agent = events
        .iter()
        .find(|e| e.event == "message" && e.data["role"] == "agent")
        .unwrap();
    assert_eq!(
        agent.data["content"],
        "Your token is [secret:MEDIA_TOKEN], keep it safe."
    );
    for e in &events {
        assert!(
            !e.data.to_string().contains(VALUE),
            "event carried the value: {e:?}"
        );
    }
    let thread = call(
        &t,
        &admin,
        reqwest::Method::GET,
        &format!("/v1/deployments/{dep}/threads/{}", d.thread_id),
        None,
    )
    .await;
    assert_eq!(thread.0, 200, "{:?}", thread.1);
    assert!(
        thread.1.to_string().contains("[secret:MEDIA_TOKEN]"),
        "{:?}",
        thread.1
    );

    // Stored only encrypted: the raw value is in no file of the data directory.
    let found = files_containing(t.dir.path(), VALUE.as_bytes());
    assert!(found.is_empty(), "the raw value is stored in {found:?}");
    // The key it is encrypted with was generated on first start, readable by its owner only.
    let key_file = std::fs::metadata(t.dir.path().join("master.key")).expect("master.key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_file.permissions()) & 0o777,
        0o600
    );
}

/// Spec §15.3: file content served by `GET …/files/content` has every exact occurrence of a
/// referenced secret's value replaced by `[secret:NAME]` (the lexically first key of a value
/// referenced twice), also where a value straddles the 64 KiB read chunks and in binary
/// content; a deployment without secrets gets its bytes unchanged.
#[tokio::test]
async fn file_content_served_by_the_files_api_is_redacted() {
    let t = TestServer::start().await;
    let admin = t.admin_key.clone();
    let id = create_secret(&t, &admin, json!({"value": VALUE, "name": "one"}))
        .await
        .1["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = "pw-other-0042";
    let id2 = create_secret(&t, &admin, json!({"value": other, "name": "two"}))
        .await
        .1["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = t
        .ready_deployment(json!({"secrets": {"Z_TOKEN": id, "A_TOKEN": id, "PASSWORD": id2}}))
        .await;
    let plain = t.ready_deployment(json!({})).await;

    // A value right across the first 64 KiB boundary, one in binary bytes, one at the end.
    let mut content = vec![b'.'; 64 * 1024 - 7];
    content.extend_from_slice(VALUE.as_bytes());
    content.extend_from_slice(b"\x00\xff binary ");
    content.extend_from_slice(other.as_bytes());
    content.extend_from_slice(b"\xfe\n");
    content.extend_from_slice(VALUE.as_bytes());
    let mut expected = vec![b'.'; 64 * 1024 - 7];
    expected.extend_from_slice(b"[secret:A_TOKEN]\x00\xff binary [secret:PASSWORD]\xfe\n");
    expected.extend_from_slice(b"[secret:A_TOKEN]");

    for (dep, want) in [
        (d.deployment_id.as_str(), &expected),
        (plain.deployment_id.as_str(), &content),
    ] {
        let put = t
            .http()
            .put(t.url(&format!("/v1/deployments/{dep}/files?path=notes/dump.bin")))
            .bearer_auth(&admin)
            .body(content.clone())
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.text().await.unwrap());
        let got = t
            .http()
            .get(t.url(&format!(
                "/v1/deployments/{dep}/files/content?path=notes/dump.bin"
            )))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        let body = got.bytes().await.unwrap();
        assert!(
            body.as_ref() == want.as_slice(),
            "{dep}: {} bytes",
            body.len()
        );
    }
}

/// Spec §15: rotation interrupts no run. A run paused on an MCP call has its deployment's key
/// pointed at a new secret and the old secret deleted; once approved, it carries on with the
/// key's new value.
#[tokio::test]
async fn rotating_a_secret_while_a_run_waits_on_a_human_interrupts_nothing() {
    const NEW_VALUE: &str = "tok-ROTATED-0815-value";
    let mcp = FakeMcp::start().await;
    let t =
        TestServer::start_with(|s| s.outbound.allowed_hosts = vec!["127.0.0.1".to_owned()]).await;
    let admin = t.admin_key.clone();
    let old = create_secret(&t, &admin, json!({"value": VALUE})).await;
    let old_id = old.1["secret_id"].as_str().unwrap().to_owned();
    let d = t
        .ready_deployment(json!({
            "secrets": {"MEDIA_TOKEN": old_id},
            "mcp_servers": [{"name": "media", "url": mcp.url(),
                             "headers": {"Authorization": "Bearer ${MEDIA_TOKEN}"}}],
        }))
        .await;
    let dep = d.deployment_id.clone();
    t.fake.push(Script::new().tool_call(
        "call_video",
        "media__create_video",
        json!({"text": "cats"}),
    ));
    let mut stream = open_events(&t.admin, &dep).await;
    let run_id = t
        .admin
        .send_message(&dep, "Make a video.", None, &[])
        .await
        .unwrap()
        .run_id;
    let (_, request_id) = common::until_paused(&mut stream, &run_id).await;

    // Rotate: a new secret, the key pointed at it, the old one deleted.
    let new = create_secret(&t, &admin, json!({"value": NEW_VALUE})).await;
    let new_id = new.1["secret_id"].as_str().unwrap().to_owned();
    let patched = call(
        &t,
        &admin,
        reqwest::Method::PATCH,
        &format!("/v1/deployments/{dep}"),
        Some(json!({"secrets": {"MEDIA_TOKEN": new_id}})),
    )
    .await;
    assert_eq!(patched.0, 200, "{:?}", patched.1);
    let deleted = call(
        &t,
        &admin,
        reqwest::Method::DELETE,
        &format!("/v1/secrets/{old_id}"),
        None,
    )
    .await;
    assert!(deleted.0 < 300, "{deleted:?}");

    t.fake.push(Script::new().text("Video made."));
    t.admin
        .respond_steering(&dep, &run_id, &request_id, "approve", None)
        .await
        .unwrap();
    let rest = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    assert_eq!(
        rest.last().unwrap().data["status"],
        "completed",
        "{rest:#?}"
    );
    let result = rest
        .iter()
        .find(|e| e.event == "tool_result")
        .unwrap_or_else(|| panic!("no tool result: {rest:#?}"));
    assert_eq!(result.data["result"]["video"], "created", "{result:?}");
    let call = mcp
        .requests()
        .into_iter()
        .find(|r| r.rpc_method() == Some("tools/call"))
        .expect("the approved call reached the server");
    assert_eq!(
        call.headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {NEW_VALUE}").as_str())
    );
}
