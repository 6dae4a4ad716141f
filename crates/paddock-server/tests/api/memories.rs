//! Memories (spec §10, §3.4 `features.memory`, §13.1 `memory` tool, guarantee 40): the
//! Memory API, the agent's tool, the memory block in the model's request, relevance past the
//! budget, the `.paddock/memory/` mirror, and the prompt prefix staying byte-identical across
//! the turns of a thread (vendor prompt caches).
//!
//! What the model saw is read from the fake model's recorded requests; waits are on events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;

use paddock_server::AppState;
use paddock_store::MemoryRecord;
use paddock_test_support::Script;
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

fn state(t: &TestServer) -> &AppState {
    t.server.as_ref().expect("server running").state()
}

/// `(status, body)` of a raw request.
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

async fn create_memory(t: &TestServer, dep: &str, content: &str) -> Value {
    let (status, body) = call(
        t,
        "POST",
        &format!("/v1/deployments/{dep}/memories"),
        Some(json!({ "content": content })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Sends `content` (to `thread`, or the default thread) and waits for the run to end.
async fn run_to_end(t: &TestServer, dep: &str, content: &str, thread: Option<&str>) -> String {
    let mut stream = open_events(&t.admin, dep).await;
    let accepted = t
        .admin
        .send_message(dep, content, thread, &[])
        .await
        .unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &accepted.run_id)).await;
    let last = events.last().unwrap();
    assert_eq!(last.data["status"], "completed", "{:#?}", events);
    accepted.run_id
}

/// The text of every message of fake request `index` (system prompt included), as one string.
fn request_text(t: &TestServer, index: usize) -> String {
    t.fake.requests()[index]["messages"].to_string()
}

/// The user-role messages of fake request `index`.
fn user_messages(t: &TestServer, index: usize) -> Vec<String> {
    t.fake.requests()[index]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn mirror_files(t: &TestServer, dep: &str) -> BTreeMap<String, String> {
    let dir = state(t)
        .settings
        .workspaces_dir()
        .join(dep)
        .join(".paddock/memory");
    let mut files = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read_to_string(e.path()).unwrap());
        }
    }
    files
}

async fn assert_mirror_matches(t: &TestServer, dep: &str) {
    let all = state(t).store.all_memories(dep).await.unwrap();
    let expected: BTreeMap<String, String> = all
        .iter()
        .map(|m| (format!("{}.md", m.id), m.content.clone()))
        .collect();
    assert_eq!(mirror_files(t, dep), expected);
}

#[tokio::test]
async fn api_crud_search_and_validation() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let base = format!("/v1/deployments/{dep}/memories");

    let a = create_memory(&t, dep, "Always end videos with the Acme logo sting.").await;
    assert_eq!(a["source"], "api");
    assert_eq!(a["run_id"], Value::Null);
    assert!(a["memory_id"].as_str().unwrap().starts_with("mem_"));
    let b = create_memory(&t, dep, "Prefers METRIC units in every answer.").await;
    let c = create_memory(&t, dep, "The brand colour is teal.").await;

    // Newest first, paginated.
    let (status, page1) = call(&t, "GET", &format!("{base}?limit=2"), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["memory_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let (_, page2) = call(&t, "GET", &format!("{base}?limit=2&cursor={cursor}"), None).await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2["next_cursor"], Value::Null);
    let mut all: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    all.push(page2["data"][0]["memory_id"].as_str().unwrap().to_owned());
    all.sort();
    let mut want = vec![
        a["memory_id"].as_str().unwrap().to_owned(),
        b["memory_id"].as_str().unwrap().to_owned(),
        c["memory_id"].as_str().unwrap().to_owned(),
    ];
    want.sort();
    assert_eq!(all, want);

    // `q`: case-insensitive substring.
    let (_, found) = call(&t, "GET", &format!("{base}?q=metric"), None).await;
    let found = found["data"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["memory_id"], b["memory_id"]);
    let (_, none) = call(&t, "GET", &format!("{base}?q=zebra"), None).await;
    assert!(none["data"].as_array().unwrap().is_empty());
    // `source`.
    let (_, api) = call(&t, "GET", &format!("{base}?source=api"), None).await;
    assert_eq!(api["data"].as_array().unwrap().len(), 3);
    let (_, agent) = call(&t, "GET", &format!("{base}?source=agent"), None).await;
    assert!(agent["data"].as_array().unwrap().is_empty());
    let (status, err) = call(&t, "GET", &format!("{base}?source=robot"), None).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "source");

    // Get, patch (source never changes), delete.
    let id = c["memory_id"].as_str().unwrap();
    let (status, got) = call(&t, "GET", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got, c);
    let (status, patched) = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"content": "The brand colour is dark teal."})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["content"], "The brand colour is dark teal.");
    assert_eq!(patched["source"], "api");
    assert_mirror_matches(&t, dep).await;
    let (status, deleted) = call(&t, "DELETE", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({"memory_id": id, "status": "deleted"}));
    let (status, err) = call(&t, "GET", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _) = call(&t, "DELETE", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &t,
        "PATCH",
        &format!("{base}/{id}"),
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    assert_mirror_matches(&t, dep).await;

    // Validation.
    for body in [
        json!({}),
        json!({"content": ""}),
        json!({"content": "   "}),
        json!({"content": 5}),
        json!({"content": "x".repeat(10_001)}),
    ] {
        let (status, err) = call(&t, "POST", &base, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["error"]["code"], "validation_error");
        assert_eq!(err["error"]["param"], "content");
    }
    let max = create_memory(&t, dep, &"y".repeat(10_000)).await;
    assert_eq!(max["content"].as_str().unwrap().len(), 10_000);
    let aid = a["memory_id"].as_str().unwrap();
    let (status, err) = call(&t, "PATCH", &format!("{base}/{aid}"), Some(json!({}))).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "content");

    // Another deployment does not see them.
    let other = t.ready_deployment(json!({})).await;
    let (status, _) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{}/memories/{aid}", other.deployment_id),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_agent_saves_a_memory_and_a_new_thread_sees_it() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let fact = "The customer prefers metric units.";
    t.fake.push(Script::new().tool_call(
        "call_mem1",
        "memory",
        json!({"action": "add", "content": fact}),
    ));
    t.fake.push(Script::new().text("Noted."));
    let run1 = run_to_end(&t, dep, "Please always use metric units.", None).await;

    // The tool is offered, and its result is what the model saw.
    let first = &t.fake.requests()[0];
    let tools: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"memory"), "{tools:?}");
    // The system prompt teaches when to save an observation and when not to.
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("save it with the memory tool"), "{system}");
    assert!(system.contains("Do not save one-off requests"), "{system}");
    assert!(request_text(&t, 1).contains("saved"));

    let (_, list) = call(&t, "GET", &format!("/v1/deployments/{dep}/memories"), None).await;
    let list = list["data"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["content"], fact);
    assert_eq!(list[0]["source"], "agent");
    assert_eq!(list[0]["run_id"], run1.as_str());
    assert_mirror_matches(&t, dep).await;

    // Run 2 on a new thread has it in its request (not in the system prompt).
    let before = t.fake.requests().len();
    run_to_end(&t, dep, "How tall is Mont Blanc?", Some("new")).await;
    let users = user_messages(&t, before);
    assert!(users[0].contains(fact), "{users:?}");
    assert!(users[0].contains(list[0]["memory_id"].as_str().unwrap()));
    assert_eq!(users.last().unwrap(), "How tall is Mont Blanc?");
}

#[tokio::test]
async fn a_memory_deleted_through_the_api_is_gone_from_the_next_run() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let m = create_memory(&t, dep, "Their office is in Lyon.").await;
    run_to_end(&t, dep, "Hello", None).await;
    assert!(request_text(&t, 0).contains("Their office is in Lyon."));

    let id = m["memory_id"].as_str().unwrap();
    let (status, _) = call(
        &t,
        "DELETE",
        &format!("/v1/deployments/{dep}/memories/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    run_to_end(&t, dep, "Hello again", None).await;
    let text = request_text(&t, 1);
    assert!(!text.contains("Lyon"), "{text}");
    assert!(!text.contains(id));
    assert!(mirror_files(&t, dep).is_empty());
}

#[tokio::test]
async fn memory_off_offers_no_tool_and_no_memories() {
    let t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"features": {"memory": false}}))
        .await;
    let dep = d.deployment_id.as_str();
    create_memory(&t, dep, "Secret preference: pineapple.").await;
    // A call to the tool anyway is refused with an error result.
    t.fake.push(Script::new().tool_call(
        "call_x",
        "memory",
        json!({"action": "add", "content": "nope"}),
    ));
    t.fake.push(Script::new().text("ok"));
    run_to_end(&t, dep, "Hi", None).await;
    let first = &t.fake.requests()[0];
    let tools = first["tools"].to_string();
    assert!(!tools.contains("\"memory\""), "{tools}");
    assert!(!request_text(&t, 0).contains("pineapple"));
    let (_, list) = call(&t, "GET", &format!("/v1/deployments/{dep}/memories"), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn past_the_budget_the_block_holds_the_memories_on_the_threads_topic() {
    const BUDGET: u64 = 1_000;
    let t = TestServer::start_with(|s| s.memory_context_tokens = BUDGET).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let store = state(&t).store.clone();
    let topical = [
        "Thumbnails use the teal palette with white outlines.",
        "Never put more than three words on a thumbnail.",
        "The palette for covers avoids pure red.",
    ];
    let mut n = 0i64;
    let add = |content: String, at: i64| MemoryRecord {
        id: paddock_protocol::ids::new_id(paddock_protocol::ids::prefix::MEMORY),
        deployment_id: dep.to_owned(),
        content,
        source: "api".to_owned(),
        run_id: None,
        created_at: at,
        updated_at: at,
    };
    // The topical ones are the oldest: newest-first alone would never reach them.
    for (i, c) in topical.iter().enumerate() {
        store
            .create_memory(&add((*c).to_owned(), 1_000 + i as i64), 10_000)
            .await
            .unwrap();
    }
    for i in 0..4_997 {
        n += 1;
        let m = add(
            format!("Filler fact {i}: the customer once mentioned item number {i} in passing."),
            2_000 + n,
        );
        store.create_memory(&m, 10_000).await.unwrap();
    }
    run_to_end(
        &t,
        dep,
        "Make a thumbnail for the launch video, in our palette.",
        None,
    )
    .await;
    let users = user_messages(&t, 0);
    let block = &users[0];
    for c in topical {
        assert!(block.contains(c), "missing {c:?}");
    }
    assert!(block.contains("more memories are not shown"), "{block}");
    assert!(block.contains("\"action\": \"search\""));
    // Within the budget (estimated at a quarter of the characters).
    let estimate = (block.chars().count() as u64).div_ceil(4);
    assert!(estimate <= BUDGET, "{estimate} > {BUDGET}");
    // And it is mostly used.
    assert!(estimate >= BUDGET / 2, "{estimate}");
}

#[tokio::test]
async fn the_mirror_follows_the_database_and_cannot_be_written() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let a = create_memory(&t, dep, "Fact A").await;
    assert_mirror_matches(&t, dep).await;
    let b = create_memory(&t, dep, "Fact B").await;
    assert_mirror_matches(&t, dep).await;
    let aid = a["memory_id"].as_str().unwrap();
    call(
        &t,
        "PATCH",
        &format!("/v1/deployments/{dep}/memories/{aid}"),
        Some(json!({"content": "Fact A, sharpened"})),
    )
    .await;
    assert_mirror_matches(&t, dep).await;
    let bid = b["memory_id"].as_str().unwrap();
    call(
        &t,
        "DELETE",
        &format!("/v1/deployments/{dep}/memories/{bid}"),
        None,
    )
    .await;
    assert_mirror_matches(&t, dep).await;
    assert_eq!(
        mirror_files(&t, dep).get(&format!("{aid}.md")).unwrap(),
        "Fact A, sharpened"
    );

    // The Files API refuses writes and deletes there.
    let (status, err) = call(
        &t,
        "PUT",
        &format!("/v1/deployments/{dep}/files"),
        Some(json!({"path": format!(".paddock/memory/{aid}.md"), "content": "tampered"})),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "validation_error");
    let (status, _) = call(
        &t,
        "PUT",
        &format!("/v1/deployments/{dep}/files"),
        Some(json!({"path": ".paddock/memory/new.md", "content": "x"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &t,
        "DELETE",
        &format!("/v1/deployments/{dep}/files?path=.paddock/memory/{aid}.md"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_mirror_matches(&t, dep).await;

    // Edits made behind Paddock's back (a shell) are undone before the next run.
    let dir = state(&t)
        .settings
        .workspaces_dir()
        .join(dep)
        .join(".paddock/memory");
    std::fs::write(dir.join(format!("{aid}.md")), "tampered").unwrap();
    std::fs::write(dir.join("rogue.md"), "rogue").unwrap();
    run_to_end(&t, dep, "Hi", None).await;
    assert_mirror_matches(&t, dep).await;

    // The agent's changes through the tool are mirrored too.
    t.fake.push(Script::new().tool_call(
        "call_1",
        "memory",
        json!({"action": "update", "memory_id": aid, "content": "Fact A, by the agent"}),
    ));
    t.fake.push(Script::new().text("done"));
    run_to_end(&t, dep, "Update it", None).await;
    assert_mirror_matches(&t, dep).await;
    let (_, m) = call(
        &t,
        "GET",
        &format!("/v1/deployments/{dep}/memories/{aid}"),
        None,
    )
    .await;
    assert_eq!(m["content"], "Fact A, by the agent");
    assert_eq!(m["source"], "api", "source never changes");
    t.fake.push(Script::new().tool_call(
        "call_2",
        "memory",
        json!({"action": "delete", "memory_id": aid}),
    ));
    t.fake.push(Script::new().text("done"));
    run_to_end(&t, dep, "Forget it", None).await;
    assert!(mirror_files(&t, dep).is_empty());
}

#[tokio::test]
async fn the_memory_tool_searches_and_reports_bad_calls() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    create_memory(&t, dep, "Invoices go to billing@acme.example.").await;
    create_memory(&t, dep, "The CEO is called Dana.").await;
    t.fake.push(
        Script::new()
            .tool_call(
                "c1",
                "memory",
                json!({"action": "search", "query": "invoices"}),
            )
            .tool_call(
                "c2",
                "memory",
                json!({"action": "update", "memory_id": "mem_nope", "content": "x"}),
            )
            .tool_call("c3", "memory", json!({"action": "add"}))
            .tool_call("c4", "memory", json!({"action": "fly"})),
    );
    t.fake.push(Script::new().text("ok"));
    run_to_end(&t, dep, "Where do invoices go?", None).await;
    let messages = t.fake.requests()[1]["messages"].as_array().unwrap().clone();
    let result = |id: &str| -> Value {
        let m = messages
            .iter()
            .find(|m| m["role"] == "tool" && m["tool_call_id"] == id)
            .unwrap();
        serde_json::from_str(m["content"].as_str().unwrap()).unwrap()
    };
    let found = result("c1");
    let found = found["memories"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["content"], "Invoices go to billing@acme.example.");
    assert!(
        result("c2")["error"]
            .as_str()
            .unwrap()
            .contains("no memory")
    );
    assert!(result("c3")["error"].as_str().unwrap().contains("content"));
    assert!(
        result("c4")["error"]
            .as_str()
            .unwrap()
            .contains("unknown action")
    );
}

/// Part of the prompt economy (issue 6): the system prompt and the tool definitions of two
/// turns of one thread are byte-identical, so vendor prompt caches hit, even when a memory
/// was saved between them (the memory block is a separate message, not the system prompt).
#[tokio::test]
async fn system_prompt_and_tools_are_identical_across_turns() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    run_to_end(&t, dep, "First turn", None).await;
    create_memory(&t, dep, "Likes short answers.").await;
    run_to_end(&t, dep, "Second turn", None).await;
    let requests = t.fake.requests();
    assert_eq!(requests.len(), 2);
    let system = |r: &Value| {
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "system")
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
    };
    assert!(!system(&requests[0]).is_empty());
    assert_eq!(system(&requests[0]), system(&requests[1]));
    assert_eq!(
        requests[0]["tools"].to_string(),
        requests[1]["tools"].to_string()
    );
    assert!(request_text(&t, 1).contains("Likes short answers."));
}
