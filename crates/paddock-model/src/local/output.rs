//! Turning generated token pieces into canonical events.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::grammar::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use crate::{ModelError, ToolCall};

/// Accumulates token bytes and hands out only complete UTF-8: a multi-byte character is often
/// split across tokens, and a `TextDelta` must never carry half of one.
#[derive(Debug, Default)]
pub(crate) struct Utf8Buffer {
    pending: Vec<u8>,
}

impl Utf8Buffer {
    /// Adds `bytes` and returns the text that is complete so far (possibly empty).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid_up_to` bytes are valid UTF-8 by definition of the error.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Truly invalid bytes: replace them and carry on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation, with incomplete characters replaced.
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Parses a complete `<tool_call>{"name": …, "arguments": {…}}</tool_call>` output.
pub(crate) fn parse_tool_call(output: &str, offered: &[String]) -> Result<ToolCall, ModelError> {
    let body = output
        .trim()
        .strip_prefix(TOOL_CALL_OPEN)
        .and_then(|rest| rest.trim_end().strip_suffix(TOOL_CALL_CLOSE))
        .ok_or_else(|| {
            ModelError::Local(format!(
                "the model's tool call is incomplete (the output limit was probably reached): {output}"
            ))
        })?;
    let value: serde_json::Value = serde_json::from_str(body.trim()).map_err(|e| {
        ModelError::Local(format!("the model's tool call is not JSON ({e}): {body}"))
    })?;
    let name = value
        .get("name")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ModelError::Local(format!("the model's tool call has no name: {body}")))?;
    if !offered.iter().any(|o| o == name) {
        return Err(ModelError::Local(format!(
            "the model called `{name}`, which was not offered"
        )));
    }
    let arguments = match value.get("arguments") {
        Some(args @ serde_json::Value::Object(_)) => args.clone(),
        _ => {
            return Err(ModelError::Local(format!(
                "the model's tool call arguments are not a JSON object: {body}"
            )));
        }
    };
    Ok(ToolCall {
        id: new_call_id(),
        name: name.to_owned(),
        arguments,
    })
}

/// A fresh tool-call id: `call_` and 24 hex digits, unique within the process (a counter) and
/// unlikely to repeat across processes (mixed with a randomly keyed hash).
pub(crate) fn new_call_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(d.as_nanos());
    }
    format!("call_{:016x}{:08x}", hasher.finish(), n & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utf8_split_across_tokens() {
        let mut b = Utf8Buffer::default();
        let euro = "€".as_bytes();
        assert_eq!(b.push(b"a"), "a");
        assert_eq!(b.push(&euro[..1]), "");
        assert_eq!(b.push(&euro[1..2]), "");
        assert_eq!(b.push(&[euro[2], b'b']), "€b");
        assert_eq!(b.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(b.push(&euro[..2]), "");
        assert_eq!(b.finish(), "\u{fffd}");
    }

    #[test]
    fn tool_call_parses() {
        let offered = vec!["get_weather".to_owned()];
        let call = parse_tool_call(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            &offered,
        )
        .unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, json!({"city": "Paris"}));
        assert!(call.id.starts_with("call_"));
        assert_ne!(call.id, new_call_id());
        assert!(parse_tool_call("<tool_call>{\"name\": \"get_weather\", ", &offered).is_err());
        assert!(
            parse_tool_call(
                "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>",
                &offered
            )
            .is_err()
        );
    }
}
