//! The README walk-through, done by the real `paddock` binary with the embedded SmolLM2 model:
//! start the server, read the admin key, create a deployment without a model (so the default
//! local model), wait until it is ready, open its event stream, send "Say hello in five words."
//! and see `message`, `run_status` `running`, `token`s, the agent's `message` and `run_status`
//! `completed` with usage. Then SIGTERM stops the server with exit code 0.
//!
//! Needs `PADDOCK_TEST_GGUF` (the path of SmolLM2-135M-Instruct Q4_1; `scripts/setup` downloads
//! it to `./paddock-data/models/smollm2-135m-instruct.q4_1.gguf`). Without it the test fails, so
//! CI cannot skip it by accident, unless `PADDOCK_SKIP_LOCAL_MODEL_TESTS=1` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Home, PUBLIC_URL, Paddock, WAIT, describe, is_api_key, toml_string};
use serde_json::json;

/// The embedded model's output cap for this test (`[runs] max_output_tokens`), to keep a debug
/// build quick.
const MAX_OUTPUT_TOKENS: u64 = 48;

/// How long the run may take: a debug build of the embedded model is slow, and the machine
/// may be busy with other test binaries.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The GGUF to configure, or `None` when local model tests are explicitly skipped.
fn gguf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PADDOCK_TEST_GGUF") {
        let path = PathBuf::from(path);
        let absolute = std::fs::canonicalize(&path)
            .unwrap_or_else(|e| panic!("PADDOCK_TEST_GGUF={} cannot be read: {e}", path.display()));
        return Some(absolute);
    }
    if std::env::var("PADDOCK_SKIP_LOCAL_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("PADDOCK_SKIP_LOCAL_MODEL_TESTS=1: skipping the README walk-through test");
        return None;
    }
    panic!(
        "PADDOCK_TEST_GGUF is not set. Point it at SmolLM2-135M-Instruct.Q4_1.gguf: `scripts/setup` \
         downloads it to ./paddock-data/models/smollm2-135m-instruct.q4_1.gguf (or run `paddock \
         models pull`), e.g. export PADDOCK_TEST_GGUF=$PWD/paddock-data/models/smollm2-135m-instruct.q4_1.gguf; \
         or set PADDOCK_SKIP_LOCAL_MODEL_TESTS=1 to skip the local model tests"
    );
}

#[tokio::test]
async fn readme_walkthrough_streams_tokens_from_the_embedded_model() {
    let Some(model) = gguf() else { return };
    let started = Instant::now();
    let home = Home::new(&format!(
        "shutdown_grace_secs = 5\n\n\
         [local_models]\nsmollm2-135m = {}\n\n\
         [runs]\nmax_output_tokens = {MAX_OUTPUT_TOKENS}\n",
        toml_string(&model.display().to_string())
    ));

    // `scripts/run` = `paddock serve`; the first start prints the admin key once and saves it.
    let mut server = Paddock::start(&home).await;
    assert_eq!(server.public_url, PUBLIC_URL);
    let key = server
        .admin_key
        .clone()
        .expect("the first start prints `Admin API key (shown once, …): pdk_…`");
    assert!(
        is_api_key(&key),
        "admin key {key:?} is not pdk_ + 40 base62"
    );
    let key_line = &server.stdout.snapshot()[0];
    assert_eq!(
        key_line,
        &format!(
            "Admin API key (shown once, also saved to {}): {key}",
            home.admin_key_path().display()
        )
    );
    // export PADDOCK_API_KEY=$(cat paddock-data/admin.key)
    let saved = std::fs::read_to_string(home.admin_key_path()).expect("admin.key exists");
    assert_eq!(saved.trim_end(), key, "admin.key holds the printed key");
    let mode = std::fs::metadata(home.admin_key_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin.key mode is {:o}", mode & 0o777);
    let api = server.api(saved.trim_end());

    // 1. Create a deployment (it uses the embedded model by default).
    let created = api
        .post_expect(
            "/v1/deployments",
            &json!({
                "customer_id": "cus_123",
                "name": "Acme agent",
                "system_prompt": "You are a friendly assistant. Answer briefly.",
            }),
            201,
        )
        .await;
    let dep = created["deployment_id"].as_str().unwrap().to_owned();
    assert_eq!(created["model"], "local/smollm2-135m", "{created}");
    assert_eq!(
        created["events"]["url"],
        format!("{PUBLIC_URL}/v1/deployments/{dep}/events"),
        "events.url uses the configured public URL: {created}"
    );

    // 2. Wait until it is ready: the README greps the raw body for `"status":"ready"`, so
    // the server's compact JSON is part of the walk-through.
    let deadline = Instant::now() + WAIT;
    let deployment: serde_json::Value = loop {
        let body = api
            .http
            .get(format!("{}/v1/deployments/{dep}", api.base))
            .bearer_auth(&api.key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains(r#""status":"ready""#) {
            break serde_json::from_str(&body).unwrap();
        }
        assert!(
            body.contains(r#""status":"provisioning""#),
            "neither ready nor provisioning: {body}"
        );
        assert!(
            Instant::now() < deadline,
            "not ready within {WAIT:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(deployment["status"], "ready", "{deployment}");
    let thread_id = deployment["thread_id"].as_str().unwrap().to_owned();

    // 3. Open its event stream. The first frame is `retry: 3000`.
    let mut events = api.events(&dep, "").await;
    let first = events
        .next_frame(tokio::time::Instant::now() + WAIT)
        .await
        .expect("a first frame")
        .expect("the stream stays open");
    assert_eq!(
        first.retry.as_deref(),
        Some("3000"),
        "first frame: {first:?}"
    );

    // 4. Send a message: 202 with a run id.
    let accepted = api
        .send_message(&dep, &json!({"content": "Say hello in five words."}))
        .await;
    assert_eq!(accepted["status"], "running", "{accepted}");
    assert_eq!(accepted["deployment_id"], dep.as_str(), "{accepted}");
    assert_eq!(accepted["thread_id"], thread_id.as_str(), "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let message_id = accepted["message_id"].as_str().unwrap().to_owned();

    let sent_at = Instant::now();
    let terminal = events.until(RUN_LIMIT, |e| e.is_terminal(&run_id)).await;
    let run_took = sent_at.elapsed();
    let seen = events.seen.clone();
    let all = describe(&seen);

    // The stream shows the `message` event of the input …
    let input = &seen[0];
    assert_eq!(input.event, "message", "{all}");
    assert_eq!(input.data["message_id"], message_id.as_str(), "{all}");
    assert_eq!(input.data["role"], "user", "{all}");
    assert_eq!(input.data["content"], "Say hello in five words.", "{all}");
    assert_eq!(input.data["run_id"], run_id.as_str(), "{all}");
    assert_eq!(input.data["thread_id"], thread_id.as_str(), "{all}");
    // … `run_status` `running` (started) …
    let running = &seen[1];
    assert!(running.is_status(&run_id, "running"), "{all}");
    assert_eq!(running.data["reason"], "started", "{all}");
    assert_eq!(running.data["trigger"], "message", "{all}");
    // … `token` events with the model's text …
    let tokens: Vec<_> = seen
        .iter()
        .filter(|e| e.event == "token" && e.data["run_id"] == run_id.as_str())
        .collect();
    assert!(!tokens.is_empty(), "no token events: {all}");
    for t in &tokens {
        let delta = t.data["delta"].as_str().unwrap_or_default();
        assert!(
            !delta.is_empty(),
            "a token event with an empty delta: {all}"
        );
        assert!(t.data["step"].as_i64().is_some_and(|s| s >= 1), "{all}");
    }
    // … the agent's `message` …
    let agent: Vec<_> = seen
        .iter()
        .filter(|e| e.event == "message" && e.data["role"] == "agent")
        .collect();
    let last_agent = agent
        .last()
        .unwrap_or_else(|| panic!("no agent message: {all}"));
    assert_eq!(last_agent.data["run_id"], run_id.as_str(), "{all}");
    let answer = last_agent.data["content"].as_str().unwrap();
    assert!(!answer.trim().is_empty(), "empty agent message: {all}");
    // The streamed text of the answering step is the agent message.
    let last_step = tokens.last().unwrap().data["step"].clone();
    let streamed: String = tokens
        .iter()
        .filter(|t| t.data["step"] == last_step)
        .map(|t| t.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        streamed, answer,
        "tokens of the last step vs the agent message: {all}"
    );
    // … and finally `run_status` `completed` with the run's token usage.
    assert!(terminal.is_status(&run_id, "completed"), "{all}");
    assert_eq!(seen.last(), Some(&terminal));
    let usage = &terminal.data["usage"];
    let input_tokens = usage["input_tokens"].as_u64().unwrap_or(0);
    let output_tokens = usage["output_tokens"].as_u64().unwrap_or(0);
    assert!(input_tokens > 0, "usage without input tokens: {terminal:?}");
    assert!(
        output_tokens > 0,
        "usage without output tokens: {terminal:?}"
    );
    let steps = last_step.as_u64().unwrap();
    assert!(
        output_tokens <= MAX_OUTPUT_TOKENS * steps,
        "[runs] max_output_tokens = {MAX_OUTPUT_TOKENS} is not applied: {output_tokens} output \
         tokens in {steps} step(s)"
    );

    // The history has the exchange too.
    let thread = api
        .get_ok(&format!("/v1/deployments/{dep}/threads/{thread_id}"))
        .await;
    let messages = thread["messages"].as_array().unwrap();
    assert_eq!(messages[0]["message_id"], message_id.as_str(), "{thread}");
    assert_eq!(
        messages.last().unwrap()["content"],
        answer,
        "the agent's answer is in the history: {thread}"
    );

    // Stopping the server (Ctrl-C / SIGTERM) exits 0, with the stream still open.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!(
        "walk-through: {} event(s), {} token event(s), run took {run_took:?}, {output_tokens} \
         output tokens, answer {answer:?}; whole test {:?}",
        seen.len(),
        tokens.len(),
        started.elapsed()
    );
}
