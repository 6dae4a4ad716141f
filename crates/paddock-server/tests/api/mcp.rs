//! MCP servers in runs (spec §14, §13.3, §6.1, §1.13; guarantee 37): discovery filtered by
//! `tools`, model-facing names, calls with `tool`/`origin` events, the customer and deployment
//! ids on every request, the destructive default policy, call timeouts and error results, an
//! unreachable server as a run warning, and the outbound address policy.
//!
//! The MCP server is `FakeMcp` on 127.0.0.1, which the test settings allow-list (loopback is
//! refused by default). Waits are on events, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use paddock_client::SseEvent;
use paddock_server::ServerSettings;
use paddock_test_support::{FakeMcp, Script};
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

fn allow_loopback(s: &mut ServerSettings) {
    s.outbound.allowed_hosts = vec!["127.0.0.1".to_owned()];
}

fn offered_tools(t: &TestServer, index: usize) -> Vec<String> {
    t.fake.requests()[index]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn find<'a>(events: &'a [SseEvent], kind: &str, call_id: &str) -> &'a SseEvent {
    events
        .iter()
        .find(|e| e.event == kind && e.data["call_id"] == call_id)
        .unwrap_or_else(|| panic!("no {kind} for {call_id}: {events:#?}"))
}

async fn run_to_end(t: &TestServer, dep: &str, text: &str) -> (String, Vec<SseEvent>) {
    let mut stream = open_events(&t.admin, dep).await;
    let run_id = t
        .admin
        .send_message(dep, text, None, &[])
        .await
        .unwrap()
        .run_id;
    let events = collect_until(&mut stream, |e| is_terminal(e, &run_id)).await;
    (run_id, events)
}

#[tokio::test]
async fn allowed_tools_are_offered_by_model_facing_name_and_calls_round_trip_with_ids() {
    let mcp = FakeMcp::start().await;
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{
            "name": "media", "url": mcp.url(),
            "tools": ["echo", "create_video", "fail", "not_listed"],
        }]}))
        .await;
    let dep = d.deployment_id.clone();
    t.fake
        .push(Script::new().tool_call("call_echo", "media__echo", json!({"text": "hi"})));
    t.fake.push(Script::new().text("Done."));
    let (run_id, events) = run_to_end(&t, &dep, "Echo something.").await;
    let last = events.last().unwrap();
    assert_eq!(last.data["status"], "completed", "{events:#?}");

    let run = t.admin.get_run(&dep, &run_id).await.unwrap();
    assert!(
        run.warnings.is_empty(),
        "{:?} {:#?}",
        run.warnings,
        mcp.requests()
    );
    // Exactly the allowed tools the server lists, named `<server>__<tool>`, after built-ins.
    let offered = offered_tools(&t, 0);
    let mcp_tools: Vec<&String> = offered.iter().filter(|n| n.contains("__")).collect();
    assert_eq!(
        mcp_tools,
        ["media__create_video", "media__echo", "media__fail"],
        "{offered:?}"
    );

    // Events carry the server's tool name and the server as origin.
    let call = find(&events, "tool_call", "call_echo");
    assert_eq!(
        (call.data["tool"].as_str(), call.data["origin"].as_str()),
        (Some("echo"), Some("media"))
    );
    let result = find(&events, "tool_result", "call_echo");
    assert_eq!(result.data["tool"], "echo");
    assert_eq!(result.data["origin"], "media");
    assert_eq!(result.data["is_error"], false);
    let echoed = &result.data["result"];
    assert_eq!(echoed["headers"]["x-customer-id"], d.customer_id);
    assert_eq!(echoed["headers"]["x-deployment-id"], dep);
    assert_eq!(echoed["meta"]["customer_id"], d.customer_id);
    assert_eq!(echoed["arguments"], json!({"text": "hi"}));
    // The model saw the same result under the model-facing name.
    let messages = t.fake.requests()[1]["messages"].as_array().unwrap().clone();
    let tool_msg = messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_echo")
        .unwrap();
    let seen: Value = serde_json::from_str(tool_msg["content"].as_str().unwrap()).unwrap();
    assert_eq!(seen["meta"]["customer_id"], d.customer_id);

    // Every HTTP request to the server carried both ids; list and call carried `_meta`.
    let requests = mcp.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.rpc_method() == Some("tools/list"))
    );
    assert!(
        requests
            .iter()
            .any(|r| r.rpc_method() == Some("tools/call"))
    );
    for r in &requests {
        assert_eq!(
            r.headers.get("x-customer-id"),
            Some(&d.customer_id),
            "{r:?}"
        );
        assert_eq!(r.headers.get("x-deployment-id"), Some(&dep), "{r:?}");
        if matches!(r.rpc_method(), Some("tools/list" | "tools/call")) {
            assert_eq!(
                r.body["params"]["_meta"]["customer_id"], d.customer_id,
                "{r:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_destructive_tool_pauses_by_default_and_runs_after_approval() {
    let mcp = FakeMcp::start().await;
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "media", "url": mcp.url()}]}))
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
    let (seen, _) = common::until_paused(&mut stream, &run_id).await;
    let request = seen
        .iter()
        .find(|e| e.event == "steering_request")
        .expect("until_paused saw it");
    let req = &request.data;
    assert_eq!(req["kind"], "tool_call", "{request:?}");
    assert_eq!(req["tool"], "create_video");
    assert_eq!(req["origin"], "media");
    assert_eq!(req["summary"], "Run tool media__create_video?");
    assert!(
        !mcp.requests()
            .iter()
            .any(|r| r.rpc_method() == Some("tools/call")),
        "the held call must not execute before approval"
    );
    let request_id = req["request_id"].as_str().unwrap().to_owned();
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
    let result = find(&rest, "tool_result", "call_video");
    assert_eq!(result.data["result"]["video"], "created");
    assert_eq!(result.data["origin"], "media");
}

#[tokio::test]
async fn a_slow_call_times_out_and_an_mcp_error_is_an_error_result() {
    let mcp = FakeMcp::start().await;
    mcp.slow_for(Duration::from_secs(10));
    let t = TestServer::start_with(|s| {
        allow_loopback(s);
        s.mcp_call_timeout = Duration::from_millis(500);
    })
    .await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "media", "url": mcp.url()}]}))
        .await;
    t.fake.push(
        Script::new()
            .tool_call("call_slow", "media__slow", json!({}))
            .tool_call("call_fail", "media__fail", json!({})),
    );
    t.fake.push(Script::new().text("Both failed."));
    let (_, events) = run_to_end(&t, &d.deployment_id, "Try both.").await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
    let slow = find(&events, "tool_result", "call_slow");
    assert_eq!(slow.data["is_error"], true, "{slow:?}");
    assert!(
        slow.data["result"].to_string().contains("no answer within"),
        "the error names the timeout: {slow:?}"
    );
    let fail = find(&events, "tool_result", "call_fail");
    assert_eq!(fail.data["is_error"], true, "{fail:?}");
    assert_eq!(
        fail.data["result"],
        json!({"content": [{"type": "text", "text": "the tool broke"}]})
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_run_warning_and_the_run_completes() {
    let mcp = FakeMcp::start().await;
    let url = mcp.url();
    mcp.stop();
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "gone", "url": url}]}))
        .await;
    t.fake.push(Script::new().text("Working without it."));
    let (run_id, events) = run_to_end(&t, &d.deployment_id, "Hello.").await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
    let run = t.admin.get_run(&d.deployment_id, &run_id).await.unwrap();
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    assert_eq!(run.warnings[0]["code"], "mcp_unavailable");
    assert_eq!(run.warnings[0]["server"], "gone");
    assert!(
        run.warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("gone")
    );
    // The model was told, and offered no tool of that server.
    let request = &t.fake.requests()[0];
    assert!(request.to_string().contains("`gone`"), "{request}");
    assert!(!offered_tools(&t, 0).iter().any(|n| n.starts_with("gone__")));
}

#[tokio::test]
async fn a_loopback_server_is_refused_unless_the_operator_allows_it() {
    let mcp = FakeMcp::start().await;
    // Default policy: loopback is refused before any connection.
    let t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "local", "url": mcp.url()}]}))
        .await;
    t.fake.push(Script::new().text("No tools."));
    let (run_id, events) = run_to_end(&t, &d.deployment_id, "Hello.").await;
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let run = t.admin.get_run(&d.deployment_id, &run_id).await.unwrap();
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    let message = run.warnings[0]["message"].as_str().unwrap();
    assert!(
        message.contains("127.0.0.1") && message.contains("refused"),
        "{message}"
    );
    assert!(
        mcp.requests().is_empty(),
        "no request may reach a refused address"
    );
}

/// Spec §1.13 for MCP URLs: private, link-local (metadata) and unique-local addresses are
/// refused like loopback, before any connection, each as a run warning naming the address.
#[tokio::test]
async fn private_and_metadata_servers_are_refused_before_connecting() {
    let t = TestServer::start().await;
    let servers = [
        ("private", "http://10.0.0.5/mcp", "10.0.0.5"),
        ("metadata", "http://169.254.169.254/mcp", "169.254.169.254"),
        ("ula", "http://[fc00::1]/mcp", "fc00::1"),
        ("mapped", "http://[::ffff:192.168.1.1]/mcp", "192.168.1.1"),
    ];
    let config: Vec<Value> = servers
        .iter()
        .map(|(name, url, _)| json!({"name": name, "url": url}))
        .collect();
    let d = t.ready_deployment(json!({"mcp_servers": config})).await;
    t.fake.push(Script::new().text("No tools."));
    let (run_id, events) = run_to_end(&t, &d.deployment_id, "Hello.").await;
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let run = t.admin.get_run(&d.deployment_id, &run_id).await.unwrap();
    assert_eq!(run.warnings.len(), servers.len(), "{:#?}", run.warnings);
    for (name, _, address) in servers {
        let warning = run
            .warnings
            .iter()
            .map(|w| w["message"].as_str().unwrap_or_default())
            .find(|m| m.contains(name))
            .unwrap_or_else(|| panic!("no warning for {name}: {:#?}", run.warnings));
        assert!(
            warning.contains("refused") && warning.contains(address),
            "{name}: {warning}"
        );
    }
    // The model was offered no tool of theirs.
    let request = &t.fake.requests()[0];
    let tools = request["tools"].as_array().cloned().unwrap_or_default();
    assert!(
        tools.iter().all(|tool| {
            let name = tool["function"]["name"].as_str().unwrap_or_default();
            servers
                .iter()
                .all(|(s, _, _)| !name.starts_with(&format!("{s}__")))
        }),
        "{tools:#?}"
    );
}

/// `GET …/tools` response `data`, asserting 200.
async fn list_tools(t: &TestServer, dep: &str, query: &str) -> Vec<Value> {
    let r = t
        .http()
        .get(t.url(&format!("/v1/deployments/{dep}/tools{query}")))
        .bearer_auth(&t.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

async fn patch_tool(t: &TestServer, dep: &str, name: &str, enabled: bool) -> (u16, Value) {
    let r = t
        .http()
        .patch(t.url(&format!("/v1/deployments/{dep}/tools/{name}")))
        .bearer_auth(&t.admin_key)
        .json(&json!({"enabled": enabled}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The `(name, origin)` of the MCP tools of a listing, in order, after checking that the
/// built-ins come first.
fn mcp_entries(list: &[Value]) -> Vec<(String, String)> {
    let first_mcp = list
        .iter()
        .position(|t| t["origin"] != "builtin")
        .unwrap_or(list.len());
    assert!(
        list[first_mcp..].iter().all(|t| t["origin"] != "builtin"),
        "built-ins first: {list:#?}"
    );
    list[first_mcp..]
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Spec §13.2: MCP tools are listed once discovered, at a run start or with `refresh=true`
/// (which asks the servers now), built-ins first, then by server and name; an unreachable server
/// adds none; the last discovery is stored, so it survives a restart; `PATCH` takes
/// `<server>__<tool>` of a configured server even before discovery.
#[tokio::test]
async fn the_tools_api_lists_discovered_mcp_tools_and_keeps_the_last_discovery() {
    let mcp = FakeMcp::start().await;
    let gone = FakeMcp::start().await;
    let gone_url = gone.url();
    gone.stop();
    let mut t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [
            {"name": "media", "url": mcp.url(), "tools": ["fail", "echo", "create_video"]},
            {"name": "gone", "url": gone_url},
        ]}))
        .await;
    let dep = d.deployment_id.clone();

    // Nothing discovered yet, and listing does not contact the servers.
    let before = list_tools(&t, &dep, "").await;
    assert!(mcp_entries(&before).is_empty(), "{before:#?}");
    assert!(mcp.requests().is_empty());
    // Named before discovery: accepted for a configured server, 404 otherwise.
    let (status, body) = patch_tool(&t, &dep, "gone__later", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["origin"], "gone");
    let (status, body) = patch_tool(&t, &dep, "other__echo", false).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );

    // A run start discovers them.
    t.fake.push(Script::new().text("Hello."));
    let (_, events) = run_to_end(&t, &dep, "Hi.").await;
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let listed = list_tools(&t, &dep, "").await;
    let want = vec![
        ("media__create_video".to_owned(), "media".to_owned()),
        ("media__echo".to_owned(), "media".to_owned()),
        ("media__fail".to_owned(), "media".to_owned()),
    ];
    assert_eq!(
        mcp_entries(&listed),
        want,
        "`slow` is not in `tools`; `gone` adds none"
    );
    let echo = listed.iter().find(|t| t["name"] == "media__echo").unwrap();
    assert_eq!(echo["available"], true);
    assert_eq!(echo["enabled"], true);
    assert_eq!(
        echo["description"],
        "Echo the request headers, _meta and arguments."
    );

    // A setting shows in the listing.
    let (status, body) = patch_tool(&t, &dep, "media__echo", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["description"], echo["description"]);
    let listed = list_tools(&t, &dep, "").await;
    let echo = listed.iter().find(|t| t["name"] == "media__echo").unwrap();
    assert_eq!(echo["enabled"], false);
    // ...and the next run's model request leaves the disabled tool out.
    t.fake.push(Script::new().text("Hello again."));
    let (_, events) = run_to_end(&t, &dep, "Hi again.").await;
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let offered = offered_tools(&t, t.fake.requests().len() - 1);
    assert!(
        offered.contains(&"media__fail".to_owned()) && !offered.contains(&"media__echo".to_owned()),
        "{offered:?}"
    );

    // Kept across a restart, without asking the servers again.
    let asked = mcp.requests().len();
    t.server.take().unwrap().shutdown().await.unwrap();
    let mut settings = common::settings_for(t.dir.path(), &t.fake);
    allow_loopback(&mut settings);
    let server = paddock_server::Server::start(settings).await.unwrap();
    t.base_url = format!("http://{}", server.local_addr());
    t.server = Some(server);
    let listed = list_tools(&t, &dep, "").await;
    assert_eq!(mcp_entries(&listed), want);
    assert_eq!(
        mcp.requests().len(),
        asked,
        "listing does not contact the server"
    );

    // `refresh=true` asks now: with the server down, the listing has none of its tools.
    let _ = list_tools(&t, &dep, "?refresh=false").await;
    mcp.stop();
    let listed = list_tools(&t, &dep, "?refresh=true").await;
    assert!(mcp_entries(&listed).is_empty(), "{listed:#?}");
}

/// `refresh=true` contacts the servers before any run.
#[tokio::test]
async fn refresh_discovers_before_any_run() {
    let mcp = FakeMcp::start().await;
    let t = TestServer::start_with(allow_loopback).await;
    let d = t
        .ready_deployment(json!({"mcp_servers": [{"name": "media", "url": mcp.url()}]}))
        .await;
    let listed = list_tools(&t, &d.deployment_id, "?refresh=true").await;
    let names: Vec<String> = mcp_entries(&listed).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "media__create_video",
            "media__echo",
            "media__fail",
            "media__slow"
        ]
    );
    assert!(
        mcp.requests()
            .iter()
            .any(|r| r.rpc_method() == Some("tools/list"))
    );
}
