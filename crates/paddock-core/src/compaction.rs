//! Context compaction (spec §8): when a conversation would not fit the model's context window,
//! the older part is replaced *in the request* by a summary the model itself writes, and the
//! recent turns are sent verbatim. The stored history never changes; the summary is stored
//! beside it (the `compactions` table) so later steps, later runs on the thread and a resumed
//! run reuse it instead of paying for it again.
//!
//! Sizes are estimated, not tokenised: a quarter of the characters of each item's JSON, rounded
//! up, plus a fixed overhead per item. That is cheap, needs no per-vendor tokenizer, and tends
//! to over-count (JSON keys and escapes are counted), which is the safe direction. The budget is
//! the window minus a reserve for the answer (see [`Budget`]).
//!
//! The kept part always begins at a turn boundary: an item that is not a tool result, and that
//! does not follow an assistant item with tool calls. So a tool call is never separated from
//! its results, and the summary is never followed by an orphaned result.

use paddock_model::{Item, ModelProvider, ModelRequest, ToolSpec};
use paddock_protocol::time::now_unix;
use paddock_protocol::{EventType, RunUsage};
use paddock_store::{Lease, NewCompaction, NewEvent, RunRecord};
use serde_json::json;

use crate::runner::{Signals, Stop, call_model};
use crate::runtime::Runtime;

/// Tokens counted per item on top of its content: role markers and message framing.
pub const ITEM_OVERHEAD: u64 = 4;

/// The output reserve when nothing else says: the Anthropic adapter's default `max_tokens`.
const DEFAULT_RESERVE: u64 = 4096;

/// Upper bound on a summary's length, in tokens.
const MAX_SUMMARY: u64 = 4096;

/// What the summary is introduced with in the request that uses it.
pub const SUMMARY_HEADING: &str = "[Summary of the earlier part of this conversation, which is \
    omitted to fit the context window. The turns after it are verbatim.]";

/// The system prompt of a summarisation request (public so tests can tell those requests apart).
pub const SUMMARY_SYSTEM: &str = "You maintain the working memory of an AI agent. Its conversation \
    has grown too long for its context window, so you summarise the older part and the agent \
    continues from your summary alone. Write a concise, factual summary: what the user asked \
    for and still wants; decisions made; facts learned, quoting names, numbers, paths, \
    identifiers and URLs exactly; which tools were called and what came of them; files created \
    or changed; what remains to be done. Do not address the user and do not call tools. Answer \
    with the summary only.";

/// Estimated tokens of a text: a quarter of its characters, rounded up.
pub fn estimate_text(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Estimated tokens of one media part. Vendors charge images, audio and video by their pixels or
/// duration, not by the length of their base64, which would overstate them a thousandfold.
pub const MEDIA_TOKENS: u64 = 1_600;

/// Estimated tokens of one conversation item: its JSON form plus [`ITEM_OVERHEAD`], media
/// counted as [`MEDIA_TOKENS`] each.
pub fn estimate_item(item: &Item) -> u64 {
    if let Item::User { content, media } = item
        && !media.is_empty()
    {
        return estimate_text(content) + ITEM_OVERHEAD + MEDIA_TOKENS * media.len() as u64;
    }
    let json = serde_json::to_string(item).unwrap_or_default();
    estimate_text(&json) + ITEM_OVERHEAD
}

/// Estimated tokens of the parts of a request that compaction cannot shrink: the system prompt
/// and the tool definitions.
pub fn estimate_fixed(system: &str, tools: &[ToolSpec]) -> u64 {
    let tools = if tools.is_empty() {
        0
    } else {
        estimate_text(&serde_json::to_string(tools).unwrap_or_default())
    };
    estimate_text(system) + ITEM_OVERHEAD + tools
}

/// Estimated input tokens of a whole request.
pub fn estimate_request(request: &ModelRequest) -> u64 {
    estimate_fixed(&request.system, &request.tools)
        + request.items.iter().map(estimate_item).sum::<u64>()
}

/// How much of a model's window a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The model's context window (input plus output), in tokens.
    pub window: u64,
    /// Kept free for the answer: the configured `max_output_tokens`, else the smaller of 4,096
    /// and the model's maximum output; never more than a quarter of the window, so a small
    /// window still leaves room for the conversation.
    pub reserve: u64,
}

impl Budget {
    pub fn new(window: u32, max_output_tokens: Option<u32>, model_max_output: Option<u32>) -> Self {
        let window = u64::from(window);
        let wanted = match (max_output_tokens, model_max_output) {
            (Some(n), _) => u64::from(n),
            (None, Some(max)) => u64::from(max).min(DEFAULT_RESERVE),
            (None, None) => DEFAULT_RESERVE,
        };
        Budget {
            window,
            reserve: wanted.min(window / 4),
        }
    }

    /// Input tokens a request may have.
    pub fn input(&self) -> u64 {
        self.window.saturating_sub(self.reserve)
    }

    /// What a compacted request aims at: three quarters of the input budget, so the next few
    /// steps fit without compacting again.
    pub fn target(&self) -> u64 {
        self.input() / 4 * 3
    }

    /// Longest summary asked for (its request's `max_output_tokens`): at most the reserve, so a
    /// summarisation request fits the window as any other does.
    pub fn summary_max(&self) -> u64 {
        self.reserve.min(self.input() / 4).clamp(1, MAX_SUMMARY)
    }
}

/// Whether the kept part of a conversation may begin at `index`: not at the start or past the
/// end, not on a tool result, and not right after an assistant item with tool calls (whose
/// results, or a missing one, must stay with it).
pub fn is_boundary(items: &[Item], index: usize) -> bool {
    if index == 0 || index >= items.len() {
        return false;
    }
    let on_result = matches!(items[index], Item::ToolResult { .. });
    let after_calls =
        matches!(&items[index - 1], Item::Assistant { tool_calls, .. } if !tool_calls.is_empty());
    !on_result && !after_calls
}

/// Where the verbatim part of `items` should begin, given that `items[..from]` is already
/// summarised and the verbatim part may take `room` tokens: the earliest turn boundary after
/// `from` whose suffix fits, or the last boundary (only the latest turn kept) when none does.
/// `None` when there is no boundary after `from`: nothing more can be summarised.
pub fn split_point(items: &[Item], from: usize, room: u64) -> Option<usize> {
    let mut suffix = vec![0u64; items.len() + 1];
    for i in (0..items.len()).rev() {
        suffix[i] = suffix[i + 1] + estimate_item(&items[i]);
    }
    let boundaries: Vec<usize> = ((from + 1)..items.len())
        .filter(|&i| is_boundary(items, i))
        .collect();
    boundaries
        .iter()
        .copied()
        .find(|&b| suffix[b] <= room)
        .or_else(|| boundaries.last().copied())
}

/// The request `request` becomes when `summary` replaces its first `summarised` items.
pub fn with_summary(request: &ModelRequest, summary: &str, summarised: usize) -> ModelRequest {
    let mut items =
        Vec::with_capacity(request.items.len() - summarised.min(request.items.len()) + 1);
    items.push(Item::User {
        content: format!("{SUMMARY_HEADING}\n\n{summary}"),
        media: Vec::new(),
    });
    items.extend(request.items.iter().skip(summarised).cloned());
    ModelRequest {
        items,
        ..request.clone()
    }
}

/// One item as a line of the transcript a summarisation request reads, cut to `max_chars`.
fn transcript_line(item: &Item, max_chars: usize) -> String {
    let line = match item {
        Item::User { content, .. } => format!("User: {content}"),
        Item::Assistant { text, tool_calls } => {
            let mut line = format!("Assistant: {text}");
            for c in tool_calls {
                line.push_str(&format!(
                    "\nAssistant called tool `{}` (call {}) with {}",
                    c.name, c.id, c.arguments
                ));
            }
            line
        }
        Item::ToolResult {
            call_id,
            name,
            content,
            is_error,
        } => {
            let failed = if *is_error { " (failed)" } else { "" };
            format!("Result of tool `{name}` (call {call_id}){failed}: {content}")
        }
    };
    let chars = line.chars().count();
    if chars <= max_chars {
        return line;
    }
    let kept: String = line.chars().take(max_chars).collect();
    format!("{kept} […{} characters cut]", chars - max_chars)
}

/// The user message of a summarisation request.
fn summary_prompt(previous: Option<&str>, transcript: &str, summary_max: u64) -> String {
    let previous = previous.map_or(String::new(), |p| {
        format!("Summary of the conversation before this part:\n\n{p}\n\n")
    });
    format!(
        "{previous}Conversation to summarise:\n\n{transcript}\n\nWrite the summary of the whole \
         conversation so far{}, in at most about {summary_max} tokens.",
        if previous.is_empty() {
            ""
        } else {
            " (the earlier summary included)"
        }
    )
}

/// The summarisation request over `items` (continuing `previous`), and how many of `items` it
/// covers: as many, in order, as fit the budget, and always at least one (cut to fit).
pub fn summary_request(
    model: &str,
    previous: Option<&str>,
    items: &[Item],
    budget: &Budget,
) -> (ModelRequest, usize) {
    let summary_max = budget.summary_max();
    let frame = estimate_text(SUMMARY_SYSTEM)
        + estimate_text(&summary_prompt(previous, "", summary_max))
        + 2 * ITEM_OVERHEAD;
    // A tenth is left unused: the vendor's wire format adds its own framing to the estimate.
    let room = (budget.input().saturating_sub(frame)) / 10 * 9;
    let max_chars = usize::try_from(room.saturating_mul(4) / 2)
        .unwrap_or(usize::MAX)
        .max(200);
    let mut lines = Vec::new();
    let mut used = 0u64;
    for item in items {
        let line = transcript_line(item, max_chars);
        let cost = estimate_text(&line) + 1;
        if !lines.is_empty() && used + cost > room {
            break;
        }
        used += cost;
        lines.push(line);
    }
    let covered = lines.len();
    let request = ModelRequest {
        model: model.to_owned(),
        system: SUMMARY_SYSTEM.to_owned(),
        items: vec![Item::User {
            content: summary_prompt(previous, &lines.join("\n\n"), summary_max),
            media: Vec::new(),
        }],
        tools: Vec::new(),
        max_output_tokens: u32::try_from(summary_max).ok(),
    };
    (request, covered)
}

/// Makes `request` fit the run's model window (see the module docs): returns it unchanged when
/// it fits or the window is unknown; otherwise with the thread's stored summary in place of the
/// older items, summarising (and storing, with a `compaction` event and the calls' cost added
/// to `usage` and debited) whatever the stored summary does not cover yet.
pub(crate) async fn fit(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    provider: &dyn ModelProvider,
    mut request: ModelRequest,
    usage: &mut RunUsage,
    signals: &Signals,
) -> Result<ModelRequest, Stop> {
    let info = rt.models.model_info(&run.config.model);
    let Some(window) = info.context_window else {
        return Ok(request);
    };
    let budget = Budget::new(
        window,
        rt.settings.max_output_tokens,
        info.max_output_tokens,
    );
    // A window so small that the reserve is cut to a quarter of it: ask for no more output
    // than was reserved, or the vendor may refuse input + max_tokens over the window.
    if request.max_output_tokens.is_none() && budget.reserve < DEFAULT_RESERVE {
        request.max_output_tokens = u32::try_from(budget.reserve).ok();
    }
    let before = estimate_request(&request);
    if before <= budget.input() {
        return Ok(request);
    }
    let items = &request.items;
    let cached = rt
        .store
        .latest_compaction(&run.id)
        .await?
        .filter(|c| is_boundary(items, c.items_summarised));
    if let Some(c) = &cached {
        let candidate = with_summary(&request, &c.summary, c.items_summarised);
        if estimate_request(&candidate) <= budget.input() {
            return Ok(candidate);
        }
    }
    let (from, mut summary) = match cached {
        Some(c) => (c.items_summarised, Some(c.summary)),
        None => (0, None),
    };
    let fixed = estimate_fixed(&request.system, &request.tools);
    let summary_room = budget.summary_max() + estimate_text(SUMMARY_HEADING) + ITEM_OVERHEAD;
    let room = budget.target().saturating_sub(fixed + summary_room);
    let Some(split) = split_point(items, from, room) else {
        // Only the latest turn is left unsummarised: send what there is; a vendor that refuses
        // it ends the run with `model_error` (spec §5.1: too large even after compaction).
        tracing::warn!(run_id = %run.id, tokens = before, window, "cannot compact further");
        return Ok(match summary {
            Some(s) => with_summary(&request, &s, from),
            None => request,
        });
    };

    let (mut input_tokens, mut output_tokens) = (0u64, 0u64);
    let mut start = from;
    while start < split {
        let (summarise, covered) = summary_request(
            &request.model,
            summary.as_deref(),
            &items[start..split],
            &budget,
        );
        let response = call_model(
            rt,
            lease,
            run,
            provider,
            summarise,
            usage.credits,
            signals,
            false,
        )
        .await?;
        rt.observe_usage(
            &run.config.model,
            response.usage.input_tokens,
            response.usage.output_tokens,
        );
        input_tokens += response.usage.input_tokens;
        output_tokens += response.usage.output_tokens;
        usage.input_tokens += response.usage.input_tokens;
        usage.output_tokens += response.usage.output_tokens;
        usage.credits += info.price(response.usage.input_tokens, response.usage.output_tokens);
        // Charged now, not with the compaction: the next summary's credit hold must find
        // every earlier call of the run charged (paddock-store's `credit_holds`).
        rt.store.charge_usage(lease, *usage, now_unix()).await?;
        rt.credits_charged.notify_waiters();
        let text = response.text.trim();
        if text.is_empty() {
            return Err(Stop::Fail(
                "model_error",
                "The model returned an empty summary when compacting the conversation.".to_owned(),
            ));
        }
        summary = Some(text.to_owned());
        start += covered;
    }
    let summary = summary.unwrap_or_default();
    let compacted = with_summary(&request, &summary, split);
    let after = estimate_request(&compacted);
    let event = NewEvent {
        kind: EventType::Compaction,
        thread_id: run.thread_id.clone(),
        run_id: Some(run.id.clone()),
        data: json!({
            "run_id": run.id, "thread_id": run.thread_id, "step": run.step,
            "summarised_messages": split, "tokens_before": before, "tokens_after": after,
        }),
    };
    let guard = rt.bus.lock(&run.deployment_id).await;
    let outcome = rt
        .store
        .record_compaction(
            lease,
            NewCompaction {
                items_summarised: split,
                summary,
                input_tokens,
                output_tokens,
                usage: *usage,
                events: vec![event],
                now: now_unix(),
            },
        )
        .await?;
    guard.publish(&outcome.events);
    drop(guard);
    if !outcome.credits_left {
        return Err(Stop::Fail(
            "insufficient_credits",
            "The account ran out of credits.".to_owned(),
        ));
    }
    Ok(compacted)
}

#[cfg(test)]
mod tests {
    use paddock_model::ToolCall;
    use serde_json::json;

    use super::*;

    fn user(text: &str) -> Item {
        Item::User {
            content: text.to_owned(),
            media: Vec::new(),
        }
    }

    fn answer(text: &str) -> Item {
        Item::Assistant {
            text: text.to_owned(),
            tool_calls: Vec::new(),
        }
    }

    fn calls(ids: &[&str]) -> Item {
        Item::Assistant {
            text: String::new(),
            tool_calls: ids
                .iter()
                .map(|id| ToolCall {
                    id: (*id).to_owned(),
                    name: "read_file".to_owned(),
                    arguments: json!({"path": "a.txt"}),
                })
                .collect(),
        }
    }

    fn result(id: &str) -> Item {
        Item::ToolResult {
            call_id: id.to_owned(),
            name: "read_file".to_owned(),
            content: "x".repeat(40),
            is_error: false,
        }
    }

    /// user, call(a,b), result a, result b, answer, user, call(c), result c, answer
    fn conversation() -> Vec<Item> {
        vec![
            user("one"),
            calls(&["a", "b"]),
            result("a"),
            result("b"),
            answer("done one"),
            user("two"),
            calls(&["c"]),
            result("c"),
            answer("done two"),
        ]
    }

    #[test]
    fn boundaries_never_separate_calls_from_their_results() {
        let items = conversation();
        let boundaries: Vec<usize> = (0..=items.len())
            .filter(|&i| is_boundary(&items, i))
            .collect();
        // Not 0 (nothing before it), not 2, 3 or 7 (results, or right after their calls).
        assert_eq!(boundaries, [1, 4, 5, 6, 8]);
    }

    #[test]
    fn the_split_keeps_the_longest_suffix_that_fits() {
        let items = conversation();
        let total: u64 = items.iter().map(estimate_item).sum();
        // Everything fits after the first item: the earliest boundary wins.
        assert_eq!(split_point(&items, 0, total), Some(1));
        // Room for exactly the last turn from `user("two")`.
        let from_5: u64 = items[5..].iter().map(estimate_item).sum();
        assert_eq!(split_point(&items, 0, from_5), Some(5));
        assert_eq!(split_point(&items, 0, from_5 - 1), Some(6));
        // No room at all: only the latest turn (from the last boundary) is kept.
        assert_eq!(split_point(&items, 0, 0), Some(8));
        // Already summarised up to 5: the split moves forward only.
        assert_eq!(split_point(&items, 5, total), Some(6));
        // Nothing after the last boundary can be split off.
        assert_eq!(split_point(&items, 8, 0), None);
    }

    #[test]
    fn a_run_of_tool_calls_without_user_turns_can_still_be_split() {
        let mut items = vec![user("go")];
        for i in 0..10 {
            let id = format!("c{i}");
            items.push(calls(&[id.as_str()]));
            items.push(result(&id));
        }
        let split = split_point(&items, 0, 0).expect("a boundary");
        assert_eq!(split, 19, "the last call and its result stay together");
        assert!(matches!(items[split], Item::Assistant { .. }));
        assert!(matches!(items[split + 1], Item::ToolResult { .. }));
    }

    #[test]
    fn the_summary_replaces_the_prefix_and_keeps_the_rest_verbatim() {
        let items = conversation();
        let request = ModelRequest {
            model: "m".to_owned(),
            system: "sys".to_owned(),
            items: items.clone(),
            tools: Vec::new(),
            max_output_tokens: None,
        };
        let compacted = with_summary(&request, "S", 5);
        assert_eq!(compacted.items.len(), 1 + items.len() - 5);
        assert!(
            matches!(&compacted.items[0], Item::User { content, .. } if content.ends_with("\n\nS"))
        );
        assert_eq!(&compacted.items[1..], &items[5..]);
        assert_eq!(compacted.system, "sys");
    }

    #[test]
    fn the_budget_reserves_output_within_a_quarter_of_the_window() {
        let small = Budget::new(2_000, None, None);
        assert_eq!(small.reserve, 500);
        assert_eq!(small.input(), 1_500);
        let large = Budget::new(200_000, None, Some(64_000));
        assert_eq!(large.reserve, 4_096);
        let configured = Budget::new(200_000, Some(8_000), Some(64_000));
        assert_eq!(configured.reserve, 8_000);
        assert!(small.summary_max() <= small.reserve);
    }

    #[test]
    fn a_summary_request_fits_the_budget_and_covers_at_least_one_item() {
        let budget = Budget::new(2_000, None, None);
        let huge = Item::ToolResult {
            call_id: "h".to_owned(),
            name: "read_file".to_owned(),
            content: "y".repeat(50_000),
            is_error: false,
        };
        let items = vec![huge.clone(), huge, user("after")];
        let (request, covered) = summary_request("m", Some("before"), &items, &budget);
        assert_eq!(covered, 1, "one huge item, cut to fit");
        assert!(estimate_request(&request) <= budget.input());
        assert!(request.tools.is_empty());
        assert_eq!(request.max_output_tokens, Some(375));
        let (request, covered) = summary_request("m", None, &items[2..], &budget);
        assert_eq!(covered, 1);
        assert!(estimate_request(&request) <= budget.input());
    }

    #[test]
    fn estimates_round_up_and_count_overhead() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("abcde"), 2);
        assert!(estimate_item(&user("")) >= ITEM_OVERHEAD);
    }
}
