//! Models end to end: one thread switched between vendors keeps its history (each vendor's fake
//! receives the canonical conversation rendered in its own format), and model calls are priced
//! from the capability table into `usage.credits` and the account's balance. Run-level model
//! behaviour: parallel tool calls, retries of transient failures, and the run's end when they
//! are exhausted.

use crate::common;

use std::time::Duration;

use paddock_client::{CreditsChange, SseEvent};
use paddock_model::{ProviderConfig, ProviderKind};
use paddock_server::ServerSettings;
use paddock_test_support::{FakeAnthropic, FakeGemini, FakeOpenAi, Script};
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

/// The three vendors' fakes, configured as providers `anth`, `oai` and `gem` (keys given as
/// headers, so no environment variable is needed).
struct Vendors {
    anthropic: FakeAnthropic,
    openai: FakeOpenAi,
    gemini: FakeGemini,
}

impl Vendors {
    async fn start() -> Vendors {
        Vendors {
            anthropic: FakeAnthropic::start().await,
            openai: FakeOpenAi::start().await,
            gemini: FakeGemini::start().await,
        }
    }

    fn configure(&self, settings: &mut ServerSettings) {
        let provider = |kind, base_url: String, header: &str| {
            let mut config = ProviderConfig::new(kind, base_url);
            config
                .headers
                .insert(header.to_owned(), "test-key".to_owned());
            config
        };
        settings.providers.insert(
            "anth".to_owned(),
            provider(
                ProviderKind::Anthropic,
                self.anthropic.base_url(),
                "x-api-key",
            ),
        );
        settings.providers.insert(
            "oai".to_owned(),
            provider(
                ProviderKind::Openai,
                self.openai.base_url(),
                "authorization",
            ),
        );
        settings.providers.insert(
            "gem".to_owned(),
            provider(
                ProviderKind::Google,
                self.gemini.base_url(),
                "x-goog-api-key",
            ),
        );
    }
}

/// Sends `content` and waits for the run to end; returns its terminal `run_status` data.
async fn run_to_end(t: &TestServer, deployment_id: &str, content: &str) -> Value {
    let mut events = open_events(&t.admin, deployment_id).await;
    let accepted = t
        .admin
        .send_message(deployment_id, content, None, &[])
        .await
        .expect("send");
    let seen = collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await;
    let last = seen.last().expect("terminal").data.clone();
    assert_eq!(last["status"], "completed", "{last}");
    last
}

/// The `(role, [block types])` outline of Anthropic messages.
fn anthropic_outline(body: &Value) -> Vec<(String, Vec<String>)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let blocks = m["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["type"].as_str().unwrap().to_owned())
                .collect();
            (m["role"].as_str().unwrap().to_owned(), blocks)
        })
        .collect()
}

#[tokio::test]
async fn one_thread_moves_between_vendors_with_its_tool_history() {
    let vendors = Vendors::start().await;
    let t = TestServer::start_with(|s| vendors.configure(s)).await;
    let d = t
        .ready_deployment(json!({"model": "anth/claude-test"}))
        .await;
    let dep = &d.deployment_id;

    // Run 1 on Anthropic: a tool call, then the answer.
    vendors
        .anthropic
        .push(Script::new().text("Writing.").tool_call(
            "toolu_models_1",
            "write_file",
            json!({"path": "notes.txt", "content": "one"}),
        ));
    vendors
        .anthropic
        .push(Script::new().text("Wrote notes.txt."));
    run_to_end(&t, dep, "Write notes.txt").await;

    // Run 2 on OpenAI: another tool call on the same thread.
    t.admin
        .update_deployment(dep, &json!({"model": "oai/gpt-test"}))
        .await
        .expect("switch to openai");
    vendors.openai.push(Script::new().tool_call(
        "call_models_2",
        "read_file",
        json!({"path": "notes.txt"}),
    ));
    vendors.openai.push(Script::new().text("It says one."));
    run_to_end(&t, dep, "Read it back").await;

    // Run 3 on Gemini.
    t.admin
        .update_deployment(dep, &json!({"model": "gem/gemini-test"}))
        .await
        .expect("switch to google");
    vendors.gemini.push(Script::new().text("All done."));
    run_to_end(&t, dep, "Thanks").await;

    // Anthropic's second call saw its own tool call answered by id.
    let anthropic = vendors.anthropic.requests();
    assert_eq!(anthropic.len(), 2);
    let second = &anthropic[1];
    assert_eq!(
        anthropic_outline(second),
        [
            ("user".to_owned(), vec!["text".to_owned()]),
            (
                "assistant".to_owned(),
                vec!["text".to_owned(), "tool_use".to_owned()]
            ),
            ("user".to_owned(), vec!["tool_result".to_owned()]),
        ]
    );
    assert_eq!(second["messages"][1]["content"][1]["id"], "toolu_models_1");
    assert_eq!(
        second["messages"][1]["content"][1]["input"],
        json!({"path": "notes.txt", "content": "one"})
    );
    let write_result = &second["messages"][2]["content"][0];
    assert_eq!(write_result["tool_use_id"], "toolu_models_1");
    let write_output = write_result["content"].as_str().unwrap().to_owned();
    let system = second["system"][0]["text"].as_str().unwrap().to_owned();
    assert!(
        second["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "write_file")
    );

    // OpenAI's first call: Anthropic's turn rendered as Chat Completions.
    let openai = vendors.openai.requests();
    assert_eq!(openai.len(), 2);
    let messages = openai[0]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(messages[0]["content"], system.as_str());
    assert_eq!(messages[1]["content"], "Write notes.txt");
    assert_eq!(messages[2]["content"], "Writing.");
    let call = &messages[2]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_models_1");
    assert_eq!(call["function"]["name"], "write_file");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"path": "notes.txt", "content": "one"}));
    assert_eq!(messages[3]["tool_call_id"], "toolu_models_1");
    assert_eq!(messages[3]["content"], write_output.as_str());
    assert_eq!(messages[4]["content"], "Wrote notes.txt.");
    assert_eq!(messages[5]["content"], "Read it back");
    let read_output = openai[1]["messages"][7]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(openai[1]["messages"][7]["tool_call_id"], "call_models_2");
    assert!(read_output.contains("one"), "{read_output}");

    // Gemini's call: the whole thread, both vendors' tool calls, as contents and parts.
    let gemini = vendors.gemini.recorded();
    assert_eq!(gemini.len(), 1);
    assert_eq!(
        gemini[0].path,
        "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"
    );
    let body = &gemini[0].body;
    assert_eq!(
        body["systemInstruction"]["parts"][0]["text"],
        system.as_str()
    );
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Write notes.txt"}]},
            {"role": "model", "parts": [
                {"text": "Writing."},
                {"functionCall": {"name": "write_file", "args": {"path": "notes.txt", "content": "one"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "write_file", "response": {"output": write_output}}},
            ]},
            {"role": "model", "parts": [{"text": "Wrote notes.txt."}]},
            {"role": "user", "parts": [{"text": "Read it back"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "read_file", "args": {"path": "notes.txt"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "read_file", "response": {"output": read_output}}},
            ]},
            {"role": "model", "parts": [{"text": "It says one."}]},
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ])
    );
    let declared: Vec<&str> = body["tools"][0]["functionDeclarations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        declared.contains(&"read_file") && declared.contains(&"write_file"),
        "{declared:?}"
    );

    // The stored history is the same whatever vendor answered.
    let thread = t
        .admin
        .get_thread(dep, &d.thread_id, None, None)
        .await
        .expect("thread");
    let contents: Vec<(&str, &str)> = thread
        .messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        contents,
        [
            ("user", "Write notes.txt"),
            ("agent", "Writing."),
            ("agent", "Wrote notes.txt."),
            ("user", "Read it back"),
            ("agent", "It says one."),
            ("user", "Thanks"),
            ("agent", "All done."),
        ]
    );
}

#[tokio::test]
async fn model_calls_are_priced_into_usage_and_debited_from_the_balance() {
    let vendors = Vendors::start().await;
    let t = TestServer::start_with(|s| vendors.configure(s)).await;
    let accounts = t
        .admin
        .list_accounts(&Default::default())
        .await
        .expect("accounts");
    let account = accounts
        .data
        .iter()
        .find(|a| a.name == "default")
        .expect("the default account");
    t.admin
        .update_credits(&account.account_id, CreditsChange::Set(Some(1.0)))
        .await
        .expect("set balance");
    // claude-sonnet-4-5 lists at 3 / 15 credits per million input / output tokens.
    let d = t
        .ready_deployment(json!({"model": "anth/claude-sonnet-4-5-20250929"}))
        .await;
    vendors
        .anthropic
        .push(Script::new().text("Hi").usage(18_234, 912));
    let last = run_to_end(&t, &d.deployment_id, "Hello").await;
    // 18234 × 3 / 10⁶ + 912 × 15 / 10⁶ = 0.068382 (the spec's example run).
    let credits = last["usage"]["credits"].as_f64().unwrap();
    assert!((credits - 0.068_382).abs() < 1e-9, "{last}");

    let account = t
        .admin
        .get_account(&account.account_id)
        .await
        .expect("account");
    let balance = account.balance.expect("a limited balance");
    assert!((balance - (1.0 - 0.068_382)).abs() < 1e-9, "{balance}");

    // An unpriced model costs nothing.
    t.admin
        .update_deployment(&d.deployment_id, &json!({"model": "oai/unpriced-model"}))
        .await
        .expect("switch");
    vendors
        .openai
        .push(Script::new().text("Free").usage(500, 5));
    let last = run_to_end(&t, &d.deployment_id, "Again").await;
    assert_eq!(last["usage"]["credits"], 0.0, "{last}");
    let after = t
        .admin
        .get_account(&account.account_id)
        .await
        .expect("account");
    assert_eq!(after.balance, account.balance);
}

/// Sends `content` and waits for the run to end, whatever its status; returns its events.
async fn run_events(t: &TestServer, deployment_id: &str, content: &str) -> Vec<SseEvent> {
    let mut events = open_events(&t.admin, deployment_id).await;
    let accepted = t
        .admin
        .send_message(deployment_id, content, None, &[])
        .await
        .expect("send");
    collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await
}

/// One response with two tool calls: both run, in the order the model gave them (the read
/// sees the write), and the next request carries both results matched to their calls — in
/// each vendor's format.
#[tokio::test]
async fn parallel_tool_calls_run_in_order_and_both_results_reach_the_next_request() {
    let vendors = Vendors::start().await;
    let t = TestServer::start_with(|s| vendors.configure(s)).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = &d.deployment_id;
    let calls = |write: &str, read: &str, file: &str| {
        Script::new()
            .text("Both at once.")
            .tool_call(
                write,
                "write_file",
                json!({"path": file, "content": "parallel"}),
            )
            .tool_call(read, "read_file", json!({"path": file}))
    };
    for (model, write, read) in [
        ("oai/gpt-test", "call_pw", "call_pr"),
        ("anth/claude-test", "toolu_pw", "toolu_pr"),
        ("gem/gemini-test", "", ""),
    ] {
        t.admin
            .update_deployment(dep, &json!({"model": model}))
            .await
            .expect("switch");
        let file = format!("{}.txt", model.split('/').next().unwrap());
        let script = calls(write, read, &file);
        match model {
            "oai/gpt-test" => {
                vendors.openai.push(script);
                vendors.openai.push(Script::new().text("Done."));
            }
            "anth/claude-test" => {
                vendors.anthropic.push(script);
                vendors.anthropic.push(Script::new().text("Done."));
            }
            _ => {
                vendors.gemini.push(script);
                vendors.gemini.push(Script::new().text("Done."));
            }
        }
        let seen = run_events(&t, dep, "Write then read, in one go").await;
        let last = seen.last().unwrap();
        assert_eq!(last.data["status"], "completed", "{model}: {last:?}");
        let tools: Vec<(&str, &str, String)> = seen
            .iter()
            .filter(|e| e.event == "tool_call" || e.event == "tool_result")
            .map(|e| {
                (
                    e.event.as_str(),
                    e.data["tool"].as_str().unwrap(),
                    e.data["call_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let (write_id, read_id) = (tools[0].2.clone(), tools[1].2.clone());
        assert_ne!(write_id, read_id, "{model}: each call has its own id");
        assert_eq!(
            tools,
            [
                ("tool_call", "write_file", write_id.clone()),
                ("tool_call", "read_file", read_id.clone()),
                ("tool_result", "write_file", write_id.clone()),
                ("tool_result", "read_file", read_id.clone()),
            ],
            "{model}: both calls reported, then executed in order"
        );
        let read_result = seen
            .iter()
            .find(|e| e.event == "tool_result" && e.data["call_id"] == read_id.as_str())
            .unwrap();
        assert_eq!(
            read_result.data["is_error"], false,
            "{model}: {read_result:?}"
        );
        assert!(
            read_result.data["result"].to_string().contains("parallel"),
            "{model}: the read ran after the write: {read_result:?}"
        );

        match model {
            "oai/gpt-test" => {
                let requests = vendors.openai.requests();
                let next = &requests[requests.len() - 1]["messages"];
                let n = next.as_array().unwrap().len();
                let call_ids: Vec<&str> = next[n - 3]["tool_calls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap())
                    .collect();
                assert_eq!(call_ids, [write, read]);
                assert_eq!(next[n - 2]["role"], "tool");
                assert_eq!(next[n - 2]["tool_call_id"], write);
                assert_eq!(next[n - 1]["tool_call_id"], read);
                assert!(
                    next[n - 1]["content"]
                        .as_str()
                        .unwrap()
                        .contains("parallel")
                );
            }
            "anth/claude-test" => {
                let requests = vendors.anthropic.requests();
                let next = requests.last().unwrap()["messages"].as_array().unwrap();
                let n = next.len();
                let uses: Vec<&str> = next[n - 2]["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| b["id"].as_str().unwrap())
                    .collect();
                assert_eq!(uses, [write, read]);
                let results: Vec<(&str, &str)> = next[n - 1]["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        (
                            b["tool_use_id"].as_str().unwrap(),
                            b["content"].as_str().unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(
                    results.len(),
                    2,
                    "both results in one user turn: {results:?}"
                );
                assert_eq!((results[0].0, results[1].0), (write, read));
                assert!(results[1].1.contains("parallel"));
            }
            _ => {
                let requests = vendors.gemini.requests();
                let contents = requests.last().unwrap()["contents"].as_array().unwrap();
                let n = contents.len();
                let called: Vec<&str> = contents[n - 2]["parts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["functionCall"]["name"].as_str())
                    .collect();
                assert_eq!(called, ["write_file", "read_file"]);
                // Gemini pairs responses with calls by position and name.
                let answered: Vec<&Value> = contents[n - 1]["parts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| &p["functionResponse"])
                    .collect();
                assert_eq!(answered.len(), 2);
                assert_eq!(answered[0]["name"], "write_file");
                assert_eq!(answered[1]["name"], "read_file");
                assert!(answered[1]["response"].to_string().contains("parallel"));
            }
        }
    }
}

/// Two transient failures (429 with `retry-after: 1`, then 503) are retried; the third
/// attempt answers and the run completes.
#[tokio::test]
async fn transient_model_failures_are_retried_until_the_call_succeeds() {
    let t = TestServer::start_with(|s| s.model_retry_window = Duration::from_secs(30)).await;
    let d = t.ready_deployment(json!({})).await;
    t.fake
        .push(Script::error(429, "Rate limit reached").retry_after(1));
    t.fake.push(Script::error(503, "The server is overloaded"));
    t.fake.push(Script::new().text("Third time lucky."));
    let started = std::time::Instant::now();
    let seen = run_events(&t, &d.deployment_id, "Hello").await;
    let last = seen.last().unwrap();
    assert_eq!(last.data["status"], "completed", "{last:?}");
    assert_eq!(t.fake.requests().len(), 3);
    // The first retry waited as long as the vendor asked.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let text: String = seen
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Third time lucky.");
    let agent: Vec<&SseEvent> = seen
        .iter()
        .filter(|e| e.event == "message" && e.data["role"] == "agent")
        .collect();
    assert_eq!(agent.len(), 1);
    assert_eq!(agent[0].data["content"], "Third time lucky.");
}

/// A vendor that keeps failing past the retry window ends the run with `model_error` naming
/// the vendor's error; a final error (400) is not retried at all.
#[tokio::test]
async fn model_errors_end_the_run_once_retries_are_exhausted_or_pointless() {
    // The harness's retry window is 2 s: attempts at 0, 0.5 and 1.5 s, then a 2 s backoff
    // would pass it.
    let t = TestServer::start().await;
    let d = t.ready_deployment(json!({})).await;
    t.fake
        .set_default(Script::error(503, "Upstream capacity exhausted"));
    let seen = run_events(&t, &d.deployment_id, "Hello").await;
    let last = seen.last().unwrap();
    assert_eq!(last.data["status"], "error", "{last:?}");
    assert_eq!(last.data["error"]["code"], "model_error");
    let message = last.data["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("503") && message.contains("Upstream capacity exhausted"),
        "{message}"
    );
    let attempts = t.fake.requests().len();
    assert!(attempts >= 2, "retried before giving up: {attempts}");

    t.fake
        .set_default(Script::error(400, "Unsupported parameter: temperature"));
    let seen = run_events(&t, &d.deployment_id, "Again").await;
    let last = seen.last().unwrap();
    assert_eq!(last.data["error"]["code"], "model_error", "{last:?}");
    assert!(
        last.data["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unsupported parameter: temperature"),
        "{last:?}"
    );
    assert_eq!(
        t.fake.requests().len(),
        attempts + 1,
        "a 400 is not retried"
    );
}

/// A response that keeps breaking off after it started has its own retry budget inside the
/// window: the fourth break ends the run (1 try + 3 retries) even with minutes of window left.
#[tokio::test]
async fn responses_that_keep_breaking_off_have_their_own_retry_budget() {
    let t = TestServer::start_with(|s| s.model_retry_window = Duration::from_secs(600)).await;
    let d = t.ready_deployment(json!({})).await;
    t.fake.set_default(Script::new().text("Half an ans").cut());
    let seen = run_events(&t, &d.deployment_id, "Hello").await;
    let last = seen.last().unwrap();
    assert_eq!(last.data["status"], "error", "{last:?}");
    assert_eq!(last.data["error"]["code"], "model_error");
    let message = last.data["error"]["message"].as_str().unwrap();
    assert!(message.contains("broke off 4 times"), "{message}");
    assert_eq!(t.fake.requests().len(), 4);
}
