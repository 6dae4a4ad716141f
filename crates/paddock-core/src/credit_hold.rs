//! Holding credits for a model call before making it (spec §16.1).
//!
//! The account's balance is shared by all its runs, and each call is charged after it ends.
//! Before a priced call the run asks the store to hold the most the call can cost
//! ([`most_a_call_costs`]); the store lets it through only while the balance covers every
//! other call in flight, and otherwise the run waits, holding nothing, for those calls to be
//! charged. So concurrent runs overdraw a limited balance by less than one call's cost (the
//! bound and why it holds: paddock-store's `credit_holds`). Unpriced models and unlimited
//! balances never wait.

use std::io;
use std::time::Duration;

use paddock_model::{Item, ModelInfo, ModelRequest};
use paddock_store::{CreditHold, Lease, RunRecord};

use crate::Runtime;
use crate::runner::{Signals, Stop};

/// Tokens a vendor may add to a request beyond what is sent: chat-template markers, and the
/// tool-use instructions some vendors put in front of the tool definitions (a few hundred).
const REQUEST_OVERHEAD_TOKENS: u64 = 1_024;

/// Tokens of framing per conversation item (role markers, tool-call envelopes).
const ITEM_OVERHEAD_TOKENS: u64 = 16;

/// Output tokens assumed when neither the request, the model's facts nor its window limit the
/// answer (a priced model configured without `context_window` or `max_output_tokens`).
const ASSUMED_MAX_OUTPUT: u64 = 32_768;

/// Tokens assumed per media part when the model's window is unknown (with a window known, a
/// request with media is bounded by the window instead).
const ASSUMED_MEDIA_TOKENS: u64 = 4_096;

/// Longest wait between two asks while other calls hold the balance: calls charged on this
/// node wake the waiters at once; this bounds the wait for calls charged on other nodes, or
/// holds that lapse because their run ended.
const MAX_RECHECK: Duration = Duration::from_secs(1);

/// The most one call of `request` can cost under `info`'s prices: an upper bound on its input
/// tokens and on its output tokens, priced.
///
/// Input: every token of the byte-level tokenizers vendors use covers at least one byte, so
/// the request's bytes (its JSON, which only adds to the text) plus framing bound its tokens.
/// Media are charged by pixels or duration, not bytes: a request with media is bounded by the
/// model's context window, which no request can exceed. Output: the request's
/// `max_output_tokens`, else the model's, else its window. Without a window both are
/// assumptions ([`ASSUMED_MEDIA_TOKENS`], [`ASSUMED_MAX_OUTPUT`]) rather than bounds.
pub fn most_a_call_costs(info: &ModelInfo, request: &ModelRequest) -> f64 {
    // Unpriced (the embedded models among them): every step would otherwise walk the request.
    let unpriced = |price: Option<f64>| price.is_none_or(|p| p <= 0.0);
    if unpriced(info.input_price) && unpriced(info.output_price) {
        return 0.0;
    }
    let window = info.context_window.map(u64::from);
    let tools = if request.tools.is_empty() {
        0
    } else {
        json_len(&request.tools)
    };
    let mut bytes = tools + request.system.len() as u64;
    let mut media = 0u64;
    for item in &request.items {
        bytes += ITEM_OVERHEAD_TOKENS;
        bytes += match item {
            Item::User { content, media: m } if !m.is_empty() => {
                media += m.len() as u64;
                content.len() as u64
            }
            other => json_len(other),
        };
    }
    let text = bytes + REQUEST_OVERHEAD_TOKENS;
    let input = match window {
        Some(w) if media > 0 => w,
        Some(w) => text.min(w),
        None => text + media * ASSUMED_MEDIA_TOKENS,
    };
    let output = request
        .max_output_tokens
        .or(info.max_output_tokens)
        .map(u64::from)
        .or(window)
        .unwrap_or(ASSUMED_MAX_OUTPUT);
    info.price(input, output)
}

/// Holds the credits the run's next call (`request`) can cost, waiting while other calls of
/// the account hold the balance. `charged`: the run's credits so far, every call of it charged
/// (a compaction charges each summary before asking for the next). Ends the run
/// (`insufficient_credits`) once the balance is ≤ 0.
pub(crate) async fn hold_for_call(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    request: &ModelRequest,
    charged: f64,
    signals: &Signals,
) -> Result<(), Stop> {
    let info = rt.models.model_info(&run.config.model);
    let most = most_a_call_costs(&info, request);
    if most <= 0.0 {
        return Ok(());
    }
    loop {
        // Listening before asking: a charge between the ask and the wait still wakes us.
        let woken = rt.credits_charged.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match rt.store.hold_credits(lease, charged + most).await? {
            CreditHold::Held => return Ok(()),
            CreditHold::Wait => {
                tracing::debug!(run_id = %run.id, "waiting for other calls to release credits");
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(MAX_RECHECK) => {}
                    () = signals.stopped() => return Err(Stop::Quiet),
                }
            }
        }
    }
}

/// The length of `value`'s JSON, without building it.
fn json_len(value: &impl serde::Serialize) -> u64 {
    struct Counter(u64);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising canonical items and tool specs cannot fail (string keys, no non-finite
    // floats reach them); a failure would only make the bound smaller, never panic.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_model::{Media, MediaKind};

    fn priced(window: Option<u32>, max_output: Option<u32>) -> ModelInfo {
        ModelInfo {
            context_window: window,
            max_output_tokens: max_output,
            input_price: Some(1_000_000.0),
            output_price: Some(2_000_000.0),
            ..ModelInfo::unknown()
        }
    }

    fn request(items: Vec<Item>, max_output: Option<u32>) -> ModelRequest {
        ModelRequest {
            model: "m".to_owned(),
            system: "s".repeat(100),
            items,
            tools: Vec::new(),
            max_output_tokens: max_output,
        }
    }

    /// Priced at 1 credit per input token and 2 per output token, the bound reads as tokens.
    #[test]
    fn text_is_bounded_by_its_bytes_and_output_by_the_first_known_limit() {
        let r = request(vec![Item::user("é".repeat(500))], None);
        let input = 100 + 16 + json_len(&r.items[0]) + REQUEST_OVERHEAD_TOKENS;
        assert!(json_len(&r.items[0]) >= 1_000, "two bytes per é");
        let cost = |info: &ModelInfo, r: &ModelRequest| most_a_call_costs(info, r) as u64;
        assert_eq!(
            cost(&priced(None, None), &r),
            input + 2 * ASSUMED_MAX_OUTPUT
        );
        assert_eq!(cost(&priced(Some(200_000), None), &r), input + 2 * 200_000);
        assert_eq!(
            cost(&priced(Some(200_000), Some(8_000)), &r),
            input + 2 * 8_000
        );
        let capped = request(r.items.clone(), Some(100));
        assert_eq!(
            cost(&priced(Some(200_000), Some(8_000)), &capped),
            input + 200
        );
        // Never more input than the window holds.
        assert_eq!(cost(&priced(Some(500), Some(10)), &r), 500 + 20);
    }

    #[test]
    fn media_are_bounded_by_the_window_or_assumed_without_one() {
        let item = Item::User {
            content: "look".to_owned(),
            media: vec![Media::url(MediaKind::Video, "https://example.com/v.mp4")],
        };
        let r = request(vec![item], Some(10));
        let cost = |info: &ModelInfo| most_a_call_costs(info, &r) as u64;
        assert_eq!(cost(&priced(Some(1_000_000), None)), 1_000_000 + 20);
        let text = 100 + 16 + 4 + REQUEST_OVERHEAD_TOKENS;
        assert_eq!(cost(&priced(None, None)), text + ASSUMED_MEDIA_TOKENS + 20);
    }

    #[test]
    fn unpriced_models_cost_nothing() {
        let r = request(vec![Item::user("hi")], None);
        assert_eq!(most_a_call_costs(&ModelInfo::unknown(), &r), 0.0);
    }
}
