//! Skills (spec §12, §3.5/§3.7 `skills`): the Skills API, `url` skills under the outbound rules
//! (§1.13), `file` skills re-read at each run start (a broken one sets `error` and the run goes
//! on), the copies under `.paddock/skills/`, and progressive disclosure: the model's request
//! lists name, description and path, never the body.
//!
//! The SKILL.md rules themselves are covered one by one by the parser's table-driven unit
//! tests (`paddock_core::skills`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use axum::Router;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use paddock_server::AppState;
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

fn state(t: &TestServer) -> &AppState {
    t.server.as_ref().expect("server running").state()
}

fn skill_md(name: &str, description: &str, body: &str) -> String {
    format!("---\nname: {name}\ndescription: {description}\nlicense: MIT\n---\n{body}")
}

async fn call(t: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = t
        .http()
        .request(method, t.url(path))
        .bearer_auth(&t.admin_key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn run_to_end(t: &TestServer, dep: &str, content: &str) -> String {
    let mut stream = open_events(&t.admin, dep).await;
    let accepted = t.admin.send_message(dep, content, None, &[]).await.unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &accepted.run_id)).await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
    accepted.run_id
}

/// The system prompt of the latest request the fake model got.
fn last_system(t: &TestServer) -> String {
    let requests = t.fake.requests();
    requests.last().unwrap()["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn workspace(t: &TestServer, dep: &str) -> std::path::PathBuf {
    state(t).settings.workspaces_dir().join(dep)
}

#[tokio::test]
async fn skills_api_crud_and_errors() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let base = format!("/v1/deployments/{dep}/skills");
    let text = skill_md(
        "brand-voice",
        "How Acme writes headlines.",
        "# Voice\nShort.",
    );

    let (status, created) = call(
        &t,
        "POST",
        &base,
        Some(json!({"source": "inline", "name": "brand-voice", "content": text})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["skill_id"].as_str().unwrap().starts_with("skl_"));
    assert_eq!(created["description"], "How Acme writes headlines.");
    assert_eq!(created["error"], Value::Null);
    assert!(created.get("content").is_none());
    let id = created["skill_id"].as_str().unwrap().to_owned();

    // The deployment lists it.
    let got = t.admin.get_deployment(dep).await.unwrap();
    assert_eq!(got.skills.len(), 1);
    assert_eq!(got.skills[0].skill_id, id);
    assert_eq!(got.skills[0].source, "inline");

    // Same name again: 409.
    let (status, err) = call(
        &t,
        "POST",
        &base,
        Some(json!({"source": "inline", "name": "brand-voice", "content": text})),
    )
    .await;
    assert_eq!(status, 409, "{err}");

    // Broken files: 422 naming the rule.
    for (content, rule) in [
        ("no front matter".to_owned(), "rule 2"),
        (skill_md("other-name", "d", ""), "rule 6"),
        ("---\nname: x\n---\n".to_owned(), "rule 4"),
    ] {
        let (status, err) = call(
            &t,
            "POST",
            &base,
            Some(json!({"source": "inline", "name": "x", "content": content})),
        )
        .await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["error"]["code"], "invalid_skill");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(rule),
            "{err}"
        );
    }
    // Shape errors: 400 with the param.
    for (body, param) in [
        (json!({"source": "git", "name": "x"}), "source"),
        (json!({"name": "x", "content": "c"}), "source"),
        (json!({"source": "inline", "name": "x"}), "content"),
        (
            json!({"source": "inline", "name": "Bad_Name", "content": "c"}),
            "name",
        ),
        (json!({"source": "url", "name": "x"}), "url"),
        (
            json!({"source": "url", "name": "x", "url": "ftp://x/y"}),
            "url",
        ),
        (
            json!({"source": "file", "name": "x", "path": "../up"}),
            "path",
        ),
        (
            json!({"source": "file", "name": "x", "path": "/abs"}),
            "path",
        ),
    ] {
        let (status, err) = call(&t, "POST", &base, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }

    // Get with content, list, replace (rename keeps the id), delete.
    let (status, one) = call(&t, "GET", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(one["content"], text.as_str());
    let (_, list) = call(&t, "GET", &base, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let renamed = skill_md("house-style", "The house style.", "Body");
    let (status, put) = call(
        &t,
        "PUT",
        &format!("{base}/{id}"),
        Some(json!({"source": "inline", "name": "house-style", "content": renamed})),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["skill_id"], id.as_str());
    assert_eq!(put["name"], "house-style");
    let got = t.admin.get_deployment(dep).await.unwrap();
    assert_eq!(got.skills[0].name, "house-style");
    let (status, deleted) = call(&t, "DELETE", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({"skill_id": id, "status": "deleted"}));
    let (status, _) = call(&t, "GET", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 404);
    assert!(t.admin.get_deployment(dep).await.unwrap().skills.is_empty());
}

#[tokio::test]
async fn deployment_create_and_patch_take_skills() {
    let t = TestServer::start().await;
    let a = skill_md("alpha", "Alpha skill.", "A");
    let d = t
        .ready_deployment(json!({"skills": [{"source": "inline", "name": "alpha", "content": a}]}))
        .await;
    assert_eq!(d.skills.len(), 1);
    let alpha_id = d.skills[0].skill_id.clone();
    let dep = d.deployment_id.as_str();

    // PATCH replaces the whole list; a kept name keeps its id.
    let b = skill_md("beta", "Beta skill.", "B");
    let patched = t
        .admin
        .update_deployment(
            dep,
            &json!({"skills": [
                {"source": "inline", "name": "beta", "content": b},
                {"source": "inline", "name": "alpha", "content": a},
            ]}),
        )
        .await
        .unwrap();
    let names: Vec<&str> = patched.skills.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let alpha = patched.skills.iter().find(|s| s.name == "alpha").unwrap();
    assert_eq!(alpha.skill_id, alpha_id);

    // Errors change nothing and name the entry.
    let (status, err) = call(
        &t,
        "PATCH",
        &format!("/v1/deployments/{dep}"),
        Some(json!({"skills": [
            {"source": "inline", "name": "alpha", "content": a},
            {"source": "inline", "name": "gamma", "content": "broken"},
        ]})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["param"], "skills[1]");
    let (status, err) = call(
        &t,
        "PATCH",
        &format!("/v1/deployments/{dep}"),
        Some(json!({"skills": [
            {"source": "inline", "name": "alpha", "content": a},
            {"source": "inline", "name": "alpha", "content": a},
        ]})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "skills[1].name");
    assert_eq!(t.admin.get_deployment(dep).await.unwrap().skills.len(), 2);
    let body = common::deployment_body(
        json!({"skills": [{"source": "inline", "name": "x", "content": "nope"}]}),
    );
    let (status, err) = call(&t, "POST", "/v1/deployments", Some(body)).await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["code"], "invalid_skill");
    assert_eq!(err["error"]["param"], "skills[0]");

    // `[]` removes them all.
    let cleared = t
        .admin
        .update_deployment(dep, &json!({"skills": []}))
        .await
        .unwrap();
    assert!(cleared.skills.is_empty());
}

/// Serves a SKILL.md at `/SKILL.md` on 127.0.0.2, and `/redirect` to `target`.
async fn skill_host(target: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = skill_md("remote", "Fetched from a URL.", "# Remote\nBody.");
    let app = Router::new()
        .route("/SKILL.md", get(move || async move { text.clone() }))
        .route(
            "/redirect",
            get(move || async move { Redirect::temporary(&target).into_response() }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn url_skills_follow_the_outbound_rules() {
    let t = TestServer::start_with(|s| {
        s.outbound.allowed_networks = vec!["127.0.0.2/32".parse().unwrap()];
    })
    .await;
    let loopback = skill_host("http://127.0.0.1:9/SKILL.md".to_owned()).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let base = format!("/v1/deployments/{dep}/skills");

    let url = format!("http://{loopback}/SKILL.md");
    let (status, created) = call(
        &t,
        "POST",
        &base,
        Some(json!({"source": "url", "name": "remote", "url": url})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["description"], "Fetched from a URL.");
    assert_eq!(created["url"], url.as_str());

    for (target, reason) in [
        ("http://127.0.0.1:9/SKILL.md".to_owned(), "loopback"),
        ("http://10.0.0.5/SKILL.md".to_owned(), "private"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "metadata",
        ),
        (format!("http://{loopback}/redirect"), "loopback"),
    ] {
        let (status, err) = call(
            &t,
            "POST",
            &base,
            Some(json!({"source": "url", "name": "other", "url": target})),
        )
        .await;
        assert_eq!(status, 422, "{target}: {err}");
        assert_eq!(err["error"]["code"], "invalid_skill");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{target}: {message}");
    }
    // The same through a deployment create, naming the entry.
    let body = common::deployment_body(
        json!({"skills": [{"source": "url", "name": "other", "url": "http://127.0.0.1:9/x"}]}),
    );
    let (status, err) = call(&t, "POST", "/v1/deployments", Some(body)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["param"], "skills[0]");

    // The fetched text is copied into the workspace before a run, and listed.
    run_to_end(&t, dep, "Hi").await;
    let copy = workspace(&t, dep).join(".paddock/skills/remote/SKILL.md");
    assert!(std::fs::read_to_string(copy).unwrap().contains("# Remote"));
    assert!(last_system(&t).contains("remote: Fetched from a URL."));
}

#[tokio::test]
async fn the_request_lists_skills_not_their_bodies() {
    let t = TestServer::start().await;
    let body = "# Thumbnails\nUNIQUE-BODY-TEXT-42: three words at most.";
    let text = skill_md(
        "thumbnail-design",
        "Design YouTube thumbnails in Acme's style.",
        body,
    );
    let d = t
        .ready_deployment(
            json!({"skills": [{"source": "inline", "name": "thumbnail-design", "content": text}]}),
        )
        .await;
    let dep = d.deployment_id.as_str();
    run_to_end(&t, dep, "Make a thumbnail").await;
    let request = t.fake.requests().last().unwrap().to_string();
    let system = last_system(&t);
    assert!(system.contains("thumbnail-design"), "{system}");
    assert!(system.contains("Design YouTube thumbnails in Acme's style."));
    assert!(system.contains(".paddock/skills/thumbnail-design/SKILL.md"));
    assert!(system.contains("read_file"));
    assert!(!request.contains("UNIQUE-BODY-TEXT-42"), "the body leaked");
    let copy = workspace(&t, dep).join(".paddock/skills/thumbnail-design/SKILL.md");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), text);

    // Deleted: the copy goes before the next run, and it is no longer listed.
    let id = &d.skills[0].skill_id;
    let (status, _) = call(
        &t,
        "DELETE",
        &format!("/v1/deployments/{dep}/skills/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    run_to_end(&t, dep, "Again").await;
    assert!(!copy.exists());
    assert!(!last_system(&t).contains("thumbnail-design"));
}

#[tokio::test]
async fn file_skills_are_read_each_run_and_a_broken_one_sets_error() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let dir = workspace(&t, dep).join("skills/brand");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("SKILL.md");
    std::fs::write(&file, skill_md("brand", "Version one.", "Body")).unwrap();

    // Missing file at add time: 422.
    let (status, err) = call(
        &t,
        "POST",
        &format!("/v1/deployments/{dep}/skills"),
        Some(json!({"source": "file", "name": "brand", "path": "skills/missing/SKILL.md"})),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    let (status, created) = call(
        &t,
        "POST",
        &format!("/v1/deployments/{dep}/skills"),
        Some(json!({"source": "file", "name": "brand", "path": "skills/brand/SKILL.md"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["description"], "Version one.");
    let id = created["skill_id"].as_str().unwrap().to_owned();

    run_to_end(&t, dep, "One").await;
    assert!(last_system(&t).contains("brand: Version one. (skills/brand/SKILL.md)"));

    // Edited in the workspace: the next run sees the new text.
    std::fs::write(&file, skill_md("brand", "Version two.", "Body")).unwrap();
    run_to_end(&t, dep, "Two").await;
    assert!(last_system(&t).contains("brand: Version two."));

    // Broken: the run still completes, the skill is left out, `error` says why.
    std::fs::write(&file, "---\nname: brand\n---\n").unwrap();
    run_to_end(&t, dep, "Three").await;
    assert!(!last_system(&t).contains("brand:"));
    let (_, skill) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/skills/{id}"),
        None,
    )
    .await;
    assert_eq!(skill["error"]["code"], "invalid_skill", "{skill}");
    assert!(
        skill["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rule 4")
    );
    assert_eq!(skill["content"], "---\nname: brand\n---\n");

    // Gone: also left out, `error` set; fixed: `error` clears.
    std::fs::remove_file(&file).unwrap();
    run_to_end(&t, dep, "Four").await;
    let (_, skill) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/skills/{id}"),
        None,
    )
    .await;
    assert_eq!(skill["error"]["code"], "invalid_skill");
    assert_eq!(skill["content"], Value::Null);
    std::fs::write(&file, skill_md("brand", "Version three.", "Body")).unwrap();
    run_to_end(&t, dep, "Five").await;
    let (_, skill) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/skills/{id}"),
        None,
    )
    .await;
    assert_eq!(skill["error"], Value::Null);
    assert!(last_system(&t).contains("brand: Version three."));
}
