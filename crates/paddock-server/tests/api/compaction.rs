//! Context compaction end to end (spec §8): a thread whose history no longer fits its model's
//! window still runs — older turns are sent as a summary the model wrote, recent turns verbatim,
//! no tool result without its call — the summary is reused by the next run, and the stored
//! history never changes.

use crate::common;

use std::collections::HashSet;

use paddock_client::SseEvent;
use paddock_core::compaction::{SUMMARY_HEADING, SUMMARY_SYSTEM};
use paddock_model::ModelOverrides;
use paddock_test_support::Script;
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

/// The small model's configured window, in tokens.
const WINDOW: u64 = 6_000;
/// Turns of history made on the roomy model before switching.
const TURNS: usize = 12;
const SUMMARY: &str = "SUMMARY-7f3: the user asked for twelve numbered files; all were written.";

/// Sends `content` to the default thread and waits for its run to end; returns the run's
/// events (its input `message` first, its terminal `run_status` last).
async fn exchange(t: &TestServer, dep: &str, content: &str) -> Vec<SseEvent> {
    let mut events = open_events(&t.admin, dep).await;
    let accepted = t
        .admin
        .send_message(dep, content, None, &[])
        .await
        .expect("send");
    let seen = collect_until(&mut events, |e| is_terminal(e, &accepted.run_id)).await;
    let last = seen.last().unwrap();
    assert_eq!(last.data["status"], "completed", "{:?}", last);
    seen.into_iter()
        .filter(|e| e.data["run_id"] == accepted.run_id.as_str())
        .collect()
}

fn messages(body: &Value) -> &Vec<Value> {
    body["messages"].as_array().expect("messages")
}

fn is_summary_request(body: &Value) -> bool {
    messages(body)[0]["content"] == SUMMARY_SYSTEM
}

/// Every `tool` message answers a call made by an earlier assistant message of the request.
fn assert_no_orphaned_results(body: &Value) {
    let mut called = HashSet::new();
    for m in messages(body) {
        if let Some(calls) = m["tool_calls"].as_array() {
            for c in calls {
                called.insert(c["id"].as_str().unwrap().to_owned());
            }
        }
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap();
            assert!(called.contains(id), "result {id} without its call: {body}");
        }
    }
}

#[tokio::test]
async fn a_long_thread_is_compacted_into_a_summary_without_changing_its_history() {
    let t = TestServer::start_with(|s| {
        s.providers
            .get_mut("fake")
            .expect("the fake provider")
            .models
            .insert(
                "small".to_owned(),
                ModelOverrides {
                    context_window: Some(WINDOW as u32),
                    input_price: None,
                    output_price: None,
                    ..ModelOverrides::default()
                },
            );
    })
    .await;
    // The history is made on a model with no known window (never compacted) ...
    let d = t.ready_deployment(json!({"model": "fake/roomy"})).await;
    let dep = &d.deployment_id;
    for i in 0..TURNS {
        t.fake.push(Script::new().text(format!("Writing file {i}.")).tool_call(
            format!("call_turn_{i}"),
            "write_file",
            json!({"path": format!("notes/{i}.md"), "content": format!("Note {i}: {}", "lorem ipsum ".repeat(35))}),
        ));
        t.fake.push(Script::new().text(format!(
            "Wrote notes/{i}.md. {}",
            "It holds the note as asked. ".repeat(7)
        )));
        exchange(
            &t,
            dep,
            &format!(
                "Turn {i}: write note {i}. {}",
                "Please keep it short. ".repeat(9)
            ),
        )
        .await;
    }
    let roomy = t.fake.requests();
    assert_eq!(roomy.len(), 2 * TURNS);
    assert!(roomy.iter().all(|b| !is_summary_request(b)));
    let history_before = t
        .admin
        .get_thread(dep, &d.thread_id, Some(500), None)
        .await
        .expect("thread")
        .messages;
    assert_eq!(history_before.len(), 3 * TURNS);

    // ... then the deployment moves to a model whose window it overflows.
    t.admin
        .update_deployment(dep, &json!({"model": "fake/small"}))
        .await
        .expect("switch");
    t.fake.push(Script::new().text(SUMMARY).usage(500, 50));
    t.fake.push(
        Script::new()
            .text("Twelve notes, all written.")
            .usage(300, 20),
    );
    let run = exchange(&t, dep, "What have we done so far?").await;

    let all = t.fake.requests();
    let new = &all[roomy.len()..];
    assert_eq!(new.len(), 2, "one summarisation request, then the answer");
    let (summarise, answer) = (&new[0], &new[1]);

    // Every request stays under the window by the estimate (a quarter of the characters of the
    // whole wire body: more than what is counted against the window, so this is conservative).
    for body in new {
        let estimate = (body.to_string().chars().count() as u64).div_ceil(4);
        assert!(estimate < WINDOW, "request of ~{estimate} tokens: {body}");
        assert_no_orphaned_results(body);
    }
    let full_estimate = (roomy.last().unwrap().to_string().chars().count() as u64).div_ceil(4);
    assert!(
        full_estimate > WINDOW * 3 / 4,
        "the history alone (~{full_estimate} tokens) must overflow the small model's budget"
    );

    // The summarisation request: no tools, the older turns as a transcript, oldest first.
    assert!(is_summary_request(summarise), "{summarise}");
    assert!(summarise.get("tools").is_none(), "{summarise}");
    let transcript = messages(summarise)[1]["content"].as_str().unwrap();
    assert!(
        transcript.contains("User: Turn 0: write note 0."),
        "{transcript}"
    );
    assert!(transcript.contains("call_turn_0"), "{transcript}");

    // The answer request: system prompt, the summary, then the recent turns verbatim.
    let msgs = messages(answer);
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(
        msgs[0]["content"],
        messages(roomy.last().unwrap())[0]["content"]
    );
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(
        msgs[1]["content"],
        format!("{SUMMARY_HEADING}\n\n{SUMMARY}"),
        "the summary the model wrote replaces the older turns"
    );
    assert!(answer["tools"].as_array().is_some_and(|t| !t.is_empty()));
    let kept = &msgs[2..];
    let n = kept.len();
    assert!(n >= 3, "at least the latest turn is kept: {kept:?}");
    assert_eq!(
        kept[n - 1],
        json!({"role": "user", "content": "What have we done so far?"})
    );
    assert_eq!(kept[n - 2]["role"], "assistant");
    assert!(
        kept[n - 2]["content"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Wrote notes/{}.md.", TURNS - 1))
    );
    // Everything before those two is a suffix of the full history the roomy model was sent.
    let full = &messages(roomy.last().unwrap())[1..];
    let older = &kept[..n - 2];
    assert!(older.len() < full.len(), "something was summarised");
    assert_eq!(
        older,
        &full[full.len() - older.len()..],
        "recent turns are verbatim"
    );
    assert_ne!(
        older[0]["role"], "tool",
        "the kept part does not begin with a tool result"
    );
    // The oldest turn reaches the model only through the summary.
    assert!(!answer.to_string().contains("Turn 0: write note 0."));

    // The run shows the compaction as an event, counted in its usage.
    let compaction: Vec<&SseEvent> = run.iter().filter(|e| e.event == "compaction").collect();
    assert_eq!(compaction.len(), 1, "{run:?}");
    let c = &compaction[0].data;
    assert_eq!(c["step"], 1);
    assert_eq!(c["thread_id"], d.thread_id.as_str());
    let summarised = c["summarised_messages"].as_u64().unwrap();
    assert!(summarised > 0);
    let (before, after) = (
        c["tokens_before"].as_u64().unwrap(),
        c["tokens_after"].as_u64().unwrap(),
    );
    assert!(after < before && after < WINDOW, "{c}");
    let terminal = &run.last().unwrap().data;
    assert_eq!(terminal["usage"]["input_tokens"], 800, "{terminal}");
    assert_eq!(terminal["usage"]["output_tokens"], 70, "{terminal}");
    let first_token = run.iter().position(|e| e.event == "token").unwrap();
    let compaction_at = run.iter().position(|e| e.event == "compaction").unwrap();
    assert!(
        compaction_at < first_token,
        "compaction comes before the answer streams"
    );
    assert!(
        run.iter()
            .filter(|e| e.event == "token")
            .all(|e| !e.data["delta"].as_str().unwrap().contains("SUMMARY-7f3")),
        "the summary is not streamed as the agent's text"
    );

    // The next run on the thread reuses the stored summary: no second summarisation.
    t.fake.push(Script::new().text("You are welcome."));
    let next = exchange(&t, dep, "Thanks.").await;
    let all = t.fake.requests();
    assert_eq!(
        all.len(),
        roomy.len() + 3,
        "one model call, no summarisation"
    );
    let last = all.last().unwrap();
    assert!(!is_summary_request(last));
    assert_eq!(
        messages(last)[1]["content"],
        format!("{SUMMARY_HEADING}\n\n{SUMMARY}")
    );
    assert!(next.iter().all(|e| e.event != "compaction"));
    assert_no_orphaned_results(last);

    // The stored history never changed: the same messages, then the two new exchanges.
    let history_after = t
        .admin
        .get_thread(dep, &d.thread_id, Some(500), None)
        .await
        .expect("thread")
        .messages;
    assert_eq!(history_after.len(), history_before.len() + 4);
    assert_eq!(&history_after[..history_before.len()], &history_before[..]);
    let tail: Vec<(&str, &str)> = history_after[history_before.len()..]
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("user", "What have we done so far?"),
            ("agent", "Twelve notes, all written."),
            ("user", "Thanks."),
            ("agent", "You are welcome."),
        ]
    );
}
