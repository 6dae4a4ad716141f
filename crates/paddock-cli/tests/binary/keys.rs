//! `paddock keys create` against the data directory of a real server: the key it prints works
//! over HTTP with exactly its scopes; bad input and a missing database fail with a message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{Home, Paddock, fake_model_config, is_api_key, run_paddock};
use paddock_test_support::FakeOpenAi;
use serde_json::json;

/// Starts a server once on `home` (creating the database) and stops it with SIGTERM.
async fn serve_once(home: &Home) -> String {
    let mut server = Paddock::start(home).await;
    let key = server.admin_key.clone().expect("first start prints a key");
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "paddock serve after SIGTERM: {status}"
    );
    key
}

fn data_dir_arg(home: &Home) -> String {
    home.data_dir.display().to_string()
}

#[tokio::test]
async fn created_key_works_with_its_scopes_only() {
    let fake = FakeOpenAi::start().await;
    let home = Home::new(&fake_model_config(&fake.base_url()));
    let admin_key = serve_once(&home).await;

    let out = run_paddock(
        home.dir.path(),
        &[
            "keys",
            "create",
            "--scopes",
            "deployments:read,deployments:write",
            "--name",
            "backend",
            "--data-dir",
            &data_dir_arg(&home),
        ],
    )
    .await;
    assert!(out.status.success(), "keys create failed: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the key alone: {:?}", out.stdout);
    let key = lines[0];
    assert!(is_api_key(key), "not a key: {key:?}");
    assert_ne!(key, admin_key);
    assert!(
        out.stderr.contains("deployments:read, deployments:write")
            && out.stderr.contains("backend"),
        "details go to stderr: {}",
        out.stderr
    );

    let server = Paddock::start(&home).await;
    assert_eq!(server.admin_key, None, "a restart makes no new admin key");
    let api = server.api(key);
    let (status, body) = api.get("/v1/deployments").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]), "{body}");
    // deployments:write: it can create one.
    api.post_expect(
        "/v1/deployments",
        &json!({"customer_id": "cus_1", "name": "A", "system_prompt": "Be brief."}),
        201,
    )
    .await;
    // Not admin: the keys endpoint is forbidden, naming the missing scope.
    let (status, body) = api.get("/v1/keys").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("admin"),
        "the message names the missing scope: {body}"
    );
    // The admin key sees the new key in the default account.
    let keys = server.api(&admin_key).get_ok("/v1/keys").await;
    let listed = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "backend")
        .unwrap_or_else(|| panic!("the new key is not listed: {keys}"))
        .clone();
    assert_eq!(
        listed["scopes"],
        json!(["deployments:read", "deployments:write"]),
        "{listed}"
    );
    assert_eq!(listed["status"], "active", "{listed}");
    assert!(
        key.starts_with(listed["prefix"].as_str().unwrap()),
        "{listed}"
    );
}

#[tokio::test]
async fn key_created_while_the_server_runs_works_at_once() {
    let fake = FakeOpenAi::start().await;
    let home = Home::new(&fake_model_config(&fake.base_url()));
    let server = Paddock::start(&home).await;
    let out = run_paddock(
        home.dir.path(),
        &[
            "keys",
            "create",
            "--scopes",
            "deployments:read",
            "--data-dir",
            &data_dir_arg(&home),
        ],
    )
    .await;
    assert!(out.status.success(), "keys create failed: {}", out.stderr);
    let key = out.stdout.trim_end();
    assert!(is_api_key(key), "not a key: {:?}", out.stdout);
    let api = server.api(key);
    let (status, body) = api.get("/v1/deployments").await;
    assert_eq!(status, 200, "{body}");
    // Read only: writing is forbidden.
    let (status, body) = api
        .post(
            "/v1/deployments",
            &json!({"customer_id": "cus_1", "name": "A", "system_prompt": "Be brief."}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn bad_scopes_fail_with_a_message_and_make_no_key() {
    let fake = FakeOpenAi::start().await;
    let home = Home::new(&fake_model_config(&fake.base_url()));
    let admin_key = serve_once(&home).await;

    for scopes in ["deployments:read,deployment:write", " , "] {
        let out = run_paddock(
            home.dir.path(),
            &[
                "keys",
                "create",
                "--scopes",
                scopes,
                "--data-dir",
                &data_dir_arg(&home),
            ],
        )
        .await;
        assert!(
            !out.status.success(),
            "keys create --scopes {scopes:?} succeeded: {}",
            out.stdout
        );
        assert_eq!(out.stdout, "", "nothing on stdout for --scopes {scopes:?}");
        assert!(
            out.stderr.contains("deployments:read")
                && out.stderr.contains("secrets:write")
                && out.stderr.contains("admin"),
            "the message lists the valid scopes: {}",
            out.stderr
        );
        if scopes.contains("deployment:write") {
            assert!(
                out.stderr.contains("`deployment:write`"),
                "the message names the bad scope: {}",
                out.stderr
            );
        }
    }

    // Only the admin key exists.
    let server = Paddock::start(&home).await;
    let keys = server.api(&admin_key).get_ok("/v1/keys").await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
}

#[tokio::test]
async fn a_data_dir_without_a_database_asks_to_run_serve_first() {
    let home = Home::new("");
    std::fs::create_dir_all(&home.data_dir).unwrap();
    let out = run_paddock(
        home.dir.path(),
        &[
            "keys",
            "create",
            "--scopes",
            "admin",
            "--data-dir",
            &data_dir_arg(&home),
        ],
    )
    .await;
    assert!(
        !out.status.success(),
        "keys create succeeded: {}",
        out.stdout
    );
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("paddock serve") && out.stderr.contains(&data_dir_arg(&home)),
        "the message says to run `paddock serve` first and where it looked: {}",
        out.stderr
    );
    assert!(
        !home.database_path().exists(),
        "keys create must not create a database"
    );

    // A data directory that does not exist at all: the same.
    let missing = home.dir.path().join("nowhere");
    let out = run_paddock(
        home.dir.path(),
        &[
            "keys",
            "create",
            "--scopes",
            "admin",
            "--data-dir",
            &missing.display().to_string(),
        ],
    )
    .await;
    assert!(
        !out.status.success(),
        "keys create succeeded: {}",
        out.stdout
    );
    assert!(out.stderr.contains("paddock serve"), "{}", out.stderr);
    assert!(
        !missing.exists(),
        "keys create must not create the data directory"
    );
}
