#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sandbox through the public API: the `shell` tool in runs, confinement, the large-output
//! rule, timeouts, cancellation, symlinks, and the Tools API (spec §3.3, §13). The isolation
//! mechanisms themselves are tested in `paddock-sandbox`; here the wiring is.

use crate::common;

use std::time::Duration;

use common::{TestServer, WAIT, collect_until, is_terminal, open_events};
use paddock_test_support::Script;
use serde_json::{Value, json};

/// The tool result the model was shown for `call_id` in fake request `index`, as text.
fn seen_by_model(t: &TestServer, index: usize, call_id: &str) -> String {
    let requests = t.fake.requests();
    let messages = requests[index]["messages"].as_array().unwrap();
    messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
        .unwrap_or_else(|| panic!("no result for {call_id} in request {index}: {messages:#?}"))
        ["content"]
        .as_str()
        .unwrap()
        .to_owned()
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

/// Runs one message whose model calls `tool` with `arguments` once, then answers; returns the
/// events of the run and the index of the fake request that carried the result.
async fn one_call(
    t: &TestServer,
    dep: &str,
    call_id: &str,
    tool: &str,
    arguments: Value,
) -> (Vec<paddock_client::SseEvent>, usize) {
    let mut stream = open_events(&t.admin, dep).await;
    let before = t.fake.requests().len();
    t.fake
        .push(Script::new().tool_call(call_id, tool, arguments));
    t.fake.push(Script::new().text("Done."));
    let run = t.admin.send_message(dep, "Go", None, &[]).await.unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &run.run_id)).await;
    (events, before + 1)
}

fn tool_result(events: &[paddock_client::SseEvent], call_id: &str) -> Value {
    events
        .iter()
        .find(|e| e.event == "tool_result" && e.data["call_id"] == call_id)
        .unwrap_or_else(|| panic!("no tool_result for {call_id}: {events:#?}"))
        .data
        .clone()
}

/// Host processes whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) {
                found.push(format!("{name}: {text}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn shell_output_and_exit_code_reach_the_model() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    assert_eq!(d.sandbox.kind, "bubblewrap", "the backend actually used");
    let (events, index) = one_call(
        &t,
        &d.deployment_id,
        "call_sh",
        "shell",
        json!({"command": "echo hello-$((6*7)); pwd; echo oops >&2; exit 3"}),
    )
    .await;
    let seen: Value = serde_json::from_str(&seen_by_model(&t, index, "call_sh")).unwrap();
    assert_eq!(seen["exit_code"], 3, "{seen}");
    assert_eq!(seen["stdout"], "hello-42\n/workspace\n");
    assert_eq!(seen["stderr"], "oops\n");
    let result = tool_result(&events, "call_sh");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["truncated"], false);
}

#[tokio::test]
async fn shell_cannot_read_or_write_outside_its_workspace() {
    let t = TestServer::start().await;
    let a = t.ready_deployment(json!({})).await;
    let b = t.ready_deployment(json!({})).await;
    let data_dir = t.dir.path().to_path_buf();
    let other = data_dir.join("workspaces").join(&b.deployment_id);
    std::fs::write(other.join("secret.txt"), "other-customer-secret").unwrap();
    let script = format!(
        "cat /etc/shadow; echo shadow=$?; cat {o}/secret.txt; echo other=$?; \
         ls {d}; echo data=$?; cat {d}/admin.key; echo key=$?; touch /usr/x; echo usr=$?; \
         echo hi > {o}/planted; echo plant=$?",
        o = other.display(),
        d = data_dir.display()
    );
    let (_, index) = one_call(
        &t,
        &a.deployment_id,
        "call_x",
        "shell",
        json!({"command": script}),
    )
    .await;
    let seen: Value = serde_json::from_str(&seen_by_model(&t, index, "call_x")).unwrap();
    let stdout = seen["stdout"].as_str().unwrap();
    for probe in ["shadow", "other", "data", "key", "usr", "plant"] {
        assert!(
            !stdout.contains(&format!("{probe}=0\n")),
            "{probe} succeeded inside the sandbox: {seen:#}"
        );
        assert!(stdout.contains(&format!("{probe}=")), "{seen:#}");
    }
    assert!(!stdout.contains("other-customer-secret"));
    assert!(!other.join("planted").exists());
}

#[tokio::test]
async fn a_large_result_is_saved_to_the_workspace_and_cut_for_the_model() {
    // Default settings: the whole 5 MB reaches the saved file.
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let (events, index) = one_call(
        &t,
        &d.deployment_id,
        "call_big",
        "shell",
        json!({"command": "head -c 5000000 /dev/zero | tr '\\0' x"}),
    )
    .await;
    let result = tool_result(&events, "call_big");
    assert_eq!(result["truncated"], true, "{result:#}");
    let path = result["output_path"].as_str().unwrap();
    assert_eq!(
        path,
        format!(
            ".paddock/outputs/{}/call_big.txt",
            result["run_id"].as_str().unwrap()
        )
    );
    let full = std::fs::read_to_string(
        t.dir
            .path()
            .join("workspaces")
            .join(&d.deployment_id)
            .join(path),
    )
    .unwrap();
    let full: Value = serde_json::from_str(&full).unwrap();
    assert_eq!(full["stdout"].as_str().unwrap().len(), 5_000_000);
    let seen = seen_by_model(&t, index, "call_big");
    assert!(seen.len() < 17 * 1024, "the model got {} bytes", seen.len());
    assert!(seen.contains(path), "the note names the file");
    assert_eq!(
        result["result"].as_str().unwrap(),
        seen,
        "the event carries what the model saw"
    );
}

#[tokio::test]
async fn an_endless_loop_times_out_while_another_deployment_runs() {
    let t = TestServer::start().await;
    let a = t.ready_deployment(json!({})).await;
    let b = t.ready_deployment(json!({})).await;
    let mut stream_a = open_events(&t.admin, &a.deployment_id).await;
    let mut stream_b = open_events(&t.admin, &b.deployment_id).await;
    t.fake.push(Script::new().tool_call(
        "call_loop",
        "shell",
        json!({"command": "while :; do :; done", "timeout_s": 6}),
    ));
    let run_a = t
        .admin
        .send_message(&a.deployment_id, "Loop", None, &[])
        .await
        .unwrap();
    collect_until(&mut stream_a, |e| e.event == "tool_call").await;
    // While the loop runs, another deployment's run completes.
    t.fake.push(Script::new().text("B is fine."));
    let run_b = t
        .admin
        .send_message(&b.deployment_id, "Hi", None, &[])
        .await
        .unwrap();
    let events_b = collect_until(&mut stream_b, |e| is_terminal(e, &run_b.run_id)).await;
    assert_eq!(events_b.last().unwrap().data["status"], "completed");
    let a_now = t
        .admin
        .get_run(&a.deployment_id, &run_a.run_id)
        .await
        .unwrap();
    assert_eq!(
        a_now.status, "running",
        "B finished while A's loop was still running"
    );
    t.fake.push(Script::new().text("It timed out."));
    let events_a = collect_until(&mut stream_a, |e| is_terminal(e, &run_a.run_id)).await;
    let result = tool_result(&events_a, "call_loop");
    assert_eq!(result["is_error"], true, "{result:#}");
    assert_eq!(result["result"]["timed_out"], true);
    assert_eq!(result["result"]["killed"], "timeout");
    assert_eq!(events_a.last().unwrap().data["status"], "completed");
}

#[tokio::test]
async fn cancelling_a_run_kills_its_command() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let marker = format!("paddock-cancel-probe-{}", std::process::id());
    let mut stream = open_events(&t.admin, dep).await;
    t.fake.push(Script::new().tool_call(
        "call_sleep",
        "shell",
        json!({"command": format!("sleep 1000; : {marker}")}),
    ));
    let run = t.admin.send_message(dep, "Sleep", None, &[]).await.unwrap();
    collect_until(&mut stream, |e| e.event == "tool_call").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while host_processes_with(&marker).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = t.admin.cancel_run(dep, &run.run_id).await.unwrap();
    assert_eq!(cancelled.status, "error");
    assert_eq!(
        host_processes_with(&marker),
        Vec::<String>::new(),
        "after the cancel response"
    );
    let events = collect_until(&mut stream, |e| is_terminal(e, &run.run_id)).await;
    assert_eq!(events.last().unwrap().data["error"]["code"], "cancelled");
    assert_eq!(
        host_processes_with(&marker),
        Vec::<String>::new(),
        "after the terminal event"
    );
}

#[tokio::test]
async fn file_tools_refuse_symlinks_leading_outside() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let ws = t.dir.path().join("workspaces").join(&d.deployment_id);
    let outside = t.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "host secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), ws.join("secret-link")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("dir-link")).unwrap();
    let (events, _) = one_call(
        &t,
        &d.deployment_id,
        "call_read",
        "read_file",
        json!({"path": "secret-link"}),
    )
    .await;
    let read = tool_result(&events, "call_read");
    assert_eq!(read["is_error"], true, "{read:#}");
    assert!(!read.to_string().contains("host secret"));
    let (events, _) = one_call(
        &t,
        &d.deployment_id,
        "call_write",
        "write_file",
        json!({"path": "dir-link/planted.txt", "content": "x"}),
    )
    .await;
    assert_eq!(tool_result(&events, "call_write")["is_error"], true);
    assert!(!outside.join("planted.txt").exists());
}

async fn patch_tool(t: &TestServer, dep: &str, name: &str, body: Value) -> (u16, Value) {
    let r = t
        .http()
        .patch(t.url(&format!("/v1/deployments/{dep}/tools/{name}")))
        .bearer_auth(&t.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn list_tools(t: &TestServer, dep: &str, query: &str) -> (u16, Value) {
    let r = t
        .http()
        .get(t.url(&format!("/v1/deployments/{dep}/tools{query}")))
        .bearer_auth(&t.admin_key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn tools_api_disables_and_enables_tools_for_new_runs() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let (status, list) = list_tools(&t, dep, "").await;
    assert_eq!(status, 200);
    let shell = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "shell")
        .unwrap()
        .clone();
    assert_eq!(shell["origin"], "builtin");
    assert_eq!(shell["enabled"], true);
    assert_eq!(shell["available"], true);
    assert!(shell["description"].as_str().unwrap().contains("Example"));

    let (status, tool) = patch_tool(&t, dep, "shell", json!({"enabled": false})).await;
    assert_eq!((status, tool["enabled"].clone()), (200, json!(false)));
    let (_, list) = list_tools(&t, dep, "?refresh=false").await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "shell" && x["enabled"] == false)
    );

    // A disabled tool is not offered, and a call to it anyway is refused without running.
    let (events, index) = one_call(
        &t,
        dep,
        "call_off",
        "shell",
        json!({"command": "touch ran.txt"}),
    )
    .await;
    assert!(!offered_tools(&t, index - 1).contains(&"shell".to_owned()));
    assert!(offered_tools(&t, index - 1).contains(&"read_file".to_owned()));
    assert_eq!(tool_result(&events, "call_off")["is_error"], true);
    assert!(
        !t.dir
            .path()
            .join("workspaces")
            .join(dep)
            .join("ran.txt")
            .exists()
    );

    let (status, _) = patch_tool(&t, dep, "shell", json!({"enabled": true})).await;
    assert_eq!(status, 200);
    let (events, index) = one_call(
        &t,
        dep,
        "call_on",
        "shell",
        json!({"command": "touch ran.txt"}),
    )
    .await;
    assert!(offered_tools(&t, index - 1).contains(&"shell".to_owned()));
    assert_eq!(tool_result(&events, "call_on")["is_error"], false);
    assert!(
        t.dir
            .path()
            .join("workspaces")
            .join(dep)
            .join("ran.txt")
            .exists()
    );
}

#[tokio::test]
async fn tools_api_errors() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let (status, body) = patch_tool(&t, dep, "no_such_tool", json!({"enabled": false})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    for bad in [
        json!({}),
        json!({"enabled": "yes"}),
        json!({"enabled": null}),
    ] {
        let (status, body) = patch_tool(&t, dep, "shell", bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "validation_error");
        assert_eq!(body["error"]["param"], "enabled");
    }
    let (status, body) = list_tools(&t, dep, "?refresh=maybe").await;
    assert_eq!(
        (status, body["error"]["param"].clone()),
        (400, json!("refresh"))
    );
    let (status, _) = list_tools(&t, "dep_doesnotexist1", "").await;
    assert_eq!(status, 404);

    // Without a sandbox, `shell` is unavailable: it can be disabled, not enabled.
    let nosb = t
        .ready_deployment(json!({"sandbox": {"enabled": false}}))
        .await;
    let (_, list) = list_tools(&t, &nosb.deployment_id, "").await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "shell" && x["available"] == false)
    );
    let (status, body) =
        patch_tool(&t, &nosb.deployment_id, "shell", json!({"enabled": true})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("conflict"))
    );
    let (status, _) = patch_tool(&t, &nosb.deployment_id, "shell", json!({"enabled": false})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn docker_is_refused_naming_the_enabled_backend() {
    let t = TestServer::start().await;
    let r = t
        .http()
        .post(t.url("/v1/deployments"))
        .bearer_auth(&t.admin_key)
        .json(&common::deployment_body(
            json!({"sandbox": {"type": "docker"}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "sandbox.type");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bubblewrap"),
        "{body}"
    );
    let ready: Value = t
        .http()
        .get(t.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["sandbox"], "ok", "{ready}");
}

/// Spec §3.2: when the sandbox cannot run what a run needs (here the deployment's workspace
/// is gone from under it), the run ends with `sandbox_error` after the call's error result,
/// and nothing runs outside the sandbox.
#[tokio::test]
async fn a_sandbox_that_cannot_run_the_command_ends_the_run_with_sandbox_error() {
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    let ws = t.dir.path().join("workspaces").join(&d.deployment_id);
    std::fs::remove_dir_all(&ws).unwrap();
    let (events, _) = one_call(
        &t,
        &d.deployment_id,
        "call_gone",
        "shell",
        json!({"command": "echo ran-outside > /tmp/paddock-should-not-exist"}),
    )
    .await;
    let result = tool_result(&events, "call_gone");
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["result"]["error"], "sandbox_error", "{result}");
    let last = events.last().unwrap();
    assert_eq!(last.data["status"], "error", "{last:?}");
    assert_eq!(last.data["error"]["code"], "sandbox_error", "{last:?}");
    assert!(!std::path::Path::new("/tmp/paddock-should-not-exist").exists());
}

/// A fork bomb and a memory hog each end with a clear error result to the model (the
/// process cap and the memory limit, not the timeout), and their run goes on to complete,
/// while a run started at the same moment on another deployment completes too.
#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_are_stopped_by_their_limits_while_others_run() {
    let cases = [
        ("bomb() { bomb & bomb & wait; }; bomb", "process_limit"),
        ("head -c 1500M /dev/zero | tail > /dev/null", "memory_limit"),
    ];
    for (command, killed) in cases {
        let t = TestServer::start().await;
        let a = t
            .ready_deployment(json!({"sandbox": {"memory_mb": 256}}))
            .await;
        let b = t.ready_deployment(json!({})).await;
        let mut stream_a = open_events(&t.admin, &a.deployment_id).await;
        let mut stream_b = open_events(&t.admin, &b.deployment_id).await;
        t.fake.push(Script::new().tool_call(
            "call_abuse",
            "shell",
            json!({"command": command, "timeout_s": 120}),
        ));
        let run_a = t
            .admin
            .send_message(&a.deployment_id, "Abuse", None, &[])
            .await
            .unwrap();
        collect_until(&mut stream_a, |e| e.event == "tool_call").await;
        t.fake.push(Script::new().text("Fine here."));
        let run_b = t
            .admin
            .send_message(&b.deployment_id, "Hi", None, &[])
            .await
            .unwrap();
        let events_b = collect_until(&mut stream_b, |e| is_terminal(e, &run_b.run_id)).await;
        assert_eq!(
            events_b.last().unwrap().data["status"],
            "completed",
            "{command}"
        );
        t.fake.push(Script::new().text("It was stopped."));
        let events_a = collect_until(&mut stream_a, |e| is_terminal(e, &run_a.run_id)).await;
        let result = tool_result(&events_a, "call_abuse");
        assert_eq!(result["is_error"], true, "{command}: {result:#}");
        assert_eq!(result["result"]["killed"], killed, "{command}: {result:#}");
        assert!(result["result"].get("timed_out").is_none(), "{result:#}");
        assert_eq!(events_a.last().unwrap().data["status"], "completed");
    }
}

/// Spec §7.4: with `features.filesystem_webhooks`, what a shell command did to the workspace is
/// reported as `filesystem` events of its call (the workspace compared before and after it), before
/// the call's `tool_result`: a `mv` is `deleted` + `created`, an `rm` is `deleted`, and nothing
/// under `.paddock/` is reported.
#[tokio::test]
async fn shell_mv_and_rm_are_reported_as_filesystem_events() {
    let t = TestServer::start().await;
    let d = t
        .ready_deployment(json!({"features": {"filesystem_webhooks": true}}))
        .await;
    let mut stream = open_events(&t.admin, &d.deployment_id).await;
    t.fake.push(Script::new().tool_call(
        "call_make",
        "shell",
        json!({"command": "echo one > a.txt && mkdir -p docs && echo three > docs/c.txt"}),
    ));
    t.fake.push(Script::new().tool_call(
        "call_move",
        "shell",
        json!({"command": "mv a.txt b.txt && rm docs/c.txt && mkdir -p .paddock/scratch \
                           && echo x > .paddock/scratch/y.txt"}),
    ));
    t.fake.push(Script::new().text("Done."));
    let run = t
        .admin
        .send_message(&d.deployment_id, "Go", None, &[])
        .await
        .unwrap();
    let events = collect_until(&mut stream, |e| is_terminal(e, &run.run_id)).await;
    assert_eq!(events.last().unwrap().data["status"], "completed");

    // The filesystem events reported before each call's result, as "change path".
    let mut per_call: Vec<(String, Vec<String>)> = Vec::new();
    let mut pending = Vec::new();
    for e in &events {
        match e.event.as_str() {
            "filesystem" => {
                assert_eq!(e.data["run_id"], run.run_id.as_str(), "{e:?}");
                pending.push(format!(
                    "{} {}",
                    e.data["change"].as_str().unwrap(),
                    e.data["path"].as_str().unwrap()
                ));
            }
            "tool_result" => {
                pending.sort();
                per_call.push((
                    e.data["call_id"].as_str().unwrap().to_owned(),
                    std::mem::take(&mut pending),
                ));
            }
            _ => {}
        }
    }
    assert!(
        pending.is_empty(),
        "events after the last result: {pending:?}"
    );
    let expected = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        per_call,
        vec![
            (
                "call_make".to_owned(),
                expected(&["created a.txt", "created docs/c.txt"])
            ),
            (
                "call_move".to_owned(),
                expected(&["created b.txt", "deleted a.txt", "deleted docs/c.txt"])
            ),
        ],
        "{events:#?}"
    );
}
