//! Secret redaction (spec §15.3): every exact occurrence of the value of a secret a deployment
//! references becomes `[secret:NAME]`, `NAME` being the referencing key (the lexically first
//! if several reference the same secret).
//!
//! A run builds one [`Redactor`] from its deployment's decrypted secrets and applies it to tool
//! results before the model sees them, to streamed text (through a [`StreamRedactor`], which
//! holds back just enough text to catch a value split across deltas), to the stored agent
//! message, and to error messages that quote an MCP server. A deployment has at most 100
//! secrets, so a plain scan per value is enough.
//!
//! Logs are redacted apart, in the binary's log writer: every value this process has handled
//! is remembered ([`remember_for_logs`]) and replaced in each log line ([`redact_logs`]), in
//! the escaped forms a log line can carry it in too, whatever crate logged it.

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

use serde_json::Value;

/// Replaces secret values with `[secret:NAME]`.
#[derive(Clone, Default)]
pub struct Redactor {
    /// `(value, replacement)`, longest value first (so a value containing another wins).
    patterns: Vec<(String, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.patterns.len())
    }
}

impl Redactor {
    /// A redactor for `(name, value)` pairs. Pairs should come in key order: the first name of
    /// a value is the one used. Empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut patterns: Vec<(String, String)> = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() || patterns.iter().any(|(v, _)| v == value) {
                continue;
            }
            patterns.push((value.to_owned(), format!("[secret:{name}]")));
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Self { patterns }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The longest value's length in bytes (0 without secrets).
    pub fn longest(&self) -> usize {
        self.patterns.first().map_or(0, |(v, _)| v.len())
    }

    /// Finds the leftmost occurrence at or after `from` (the longest value at that position).
    fn next_match(&self, text: &str, from: usize) -> Option<(usize, usize, &str)> {
        let mut best: Option<(usize, usize, &str)> = None;
        for (value, replacement) in &self.patterns {
            if let Some(i) = text[from..].find(value.as_str()) {
                let start = from + i;
                let better = match best {
                    None => true,
                    Some((s, e, _)) => start < s || (start == s && start + value.len() > e),
                };
                if better {
                    best = Some((start, start + value.len(), replacement.as_str()));
                }
            }
        }
        best
    }

    /// `text` with every occurrence replaced.
    pub fn redact(&self, text: &str) -> String {
        if self.patterns.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        while let Some((start, end, replacement)) = self.next_match(text, at) {
            out.push_str(&text[at..start]);
            out.push_str(replacement);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// A JSON value with every string (keys included) redacted.
    pub fn redact_json(&self, value: &Value) -> Value {
        if self.patterns.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// How much of `text` can be released now without risking a value split by the end of
    /// `text`: a byte index (on a char boundary) such that no occurrence, complete or not,
    /// straddles it. Everything from it on is held back until more text (or the end) comes.
    fn safe_cut(&self, text: &str) -> usize {
        let hold = self.longest().saturating_sub(1);
        let mut cut = text.len().saturating_sub(hold);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        // A complete occurrence straddling the cut is released whole.
        let mut at = 0;
        while let Some((start, end, _)) = self.next_match(text, at) {
            if start >= cut {
                break;
            }
            if end > cut {
                cut = end;
                break;
            }
            at = end;
        }
        cut
    }
}

impl Redactor {
    /// The leftmost occurrence in `bytes` at or after `from` (the longest value there).
    fn next_match_bytes(&self, bytes: &[u8], from: usize) -> Option<(usize, usize, &str)> {
        let mut best: Option<(usize, usize, &str)> = None;
        for (value, replacement) in &self.patterns {
            let needle = value.as_bytes();
            let Some(i) = bytes
                .get(from..)
                .and_then(|hay| hay.windows(needle.len()).position(|w| w == needle))
            else {
                continue;
            };
            let start = from + i;
            let better = match best {
                None => true,
                Some((s, e, _)) => start < s || (start == s && start + needle.len() > e),
            };
            if better {
                best = Some((start, start + needle.len(), replacement.as_str()));
            }
        }
        best
    }

    /// `bytes` (any content, text or not) with every exact occurrence of a value replaced.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while let Some((start, end, replacement)) = self.next_match_bytes(bytes, at) {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(replacement.as_bytes());
            at = end;
        }
        out.extend_from_slice(&bytes[at..]);
        out
    }

    /// [`Self::safe_cut`] for bytes (no character boundaries to respect).
    fn safe_cut_bytes(&self, bytes: &[u8]) -> usize {
        let mut cut = bytes.len().saturating_sub(self.longest().saturating_sub(1));
        let mut at = 0;
        while let Some((start, end, _)) = self.next_match_bytes(bytes, at) {
            if start >= cut {
                break;
            }
            if end > cut {
                cut = end;
                break;
            }
            at = end;
        }
        cut
    }
}

/// Every secret value this process has handled, with the forms a log line can carry it in:
/// what [`redact_logs`] replaces (spec §15.3: values never appear in logs).
static LOG_VALUES: RwLock<Redactor> = RwLock::new(Redactor {
    patterns: Vec::new(),
});

/// The forms of `value` a log line can hold: as is (`Display` fields, messages), escaped by
/// `Debug` (fields logged with `?`, e.g. a JSON-RPC message holding a tool result), escaped as
/// a JSON string (`--log-format json`), and both nested either way.
fn logged_forms(value: &str) -> Vec<String> {
    fn unquote(s: String) -> String {
        s.get(1..s.len().saturating_sub(1))
            .map(str::to_owned)
            .unwrap_or_default()
    }
    let json = |s: &str| unquote(serde_json::to_string(s).unwrap_or_default());
    let debug = |s: &str| unquote(format!("{s:?}"));
    let mut forms = vec![
        value.to_owned(),
        debug(value),
        json(value),
        json(&debug(value)),
        debug(&json(value)),
    ];
    forms.retain(|f| !f.is_empty());
    forms.sort();
    forms.dedup();
    forms
}

/// Remembers `value`, referenced as `name`, for [`redact_logs`] for the rest of the process's
/// life (a run's tasks may log after the run; a value no longer used is still a credential).
/// Called wherever a value enters the process: when a secret is created and whenever one is
/// decrypted. A value seen again under another name is labelled with the latest one.
pub fn remember_for_logs(name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let replacement = format!("[secret:{name}]");
    let forms = logged_forms(value);
    let known = |r: &Redactor| {
        forms
            .iter()
            .all(|f| r.patterns.iter().any(|(v, n)| v == f && *n == replacement))
    };
    if known(&LOG_VALUES.read().unwrap_or_else(PoisonError::into_inner)) {
        return;
    }
    let mut all = LOG_VALUES.write().unwrap_or_else(PoisonError::into_inner);
    for form in forms {
        match all.patterns.iter_mut().find(|(v, _)| *v == form) {
            Some(pattern) => pattern.1.clone_from(&replacement),
            None => all.patterns.push((form, replacement.clone())),
        }
    }
    all.patterns.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
}

/// `line` (one formatted log event) with every remembered value, in any of its logged forms,
/// replaced by `[secret:NAME]`. Borrowed as it is when no value was remembered or none occurs.
pub fn redact_logs(line: &[u8]) -> Cow<'_, [u8]> {
    let all = LOG_VALUES.read().unwrap_or_else(PoisonError::into_inner);
    if all.next_match_bytes(line, 0).is_none() {
        return Cow::Borrowed(line);
    }
    Cow::Owned(all.redact_bytes(line))
}

/// Redacts a stream of byte chunks (file content served by the Files API): like
/// [`StreamRedactor`], it holds back the tail that could begin a value split across chunks.
#[derive(Debug, Default)]
pub struct ByteStreamRedactor {
    redactor: Redactor,
    held: Vec<u8>,
}

impl ByteStreamRedactor {
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            held: Vec::new(),
        }
    }

    /// Adds a chunk; returns the redacted bytes that are safe to release (may be empty).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        if self.redactor.is_empty() {
            return std::mem::take(&mut self.held);
        }
        let cut = self.redactor.safe_cut_bytes(&self.held);
        let rest = self.held.split_off(cut);
        let out = self.redactor.redact_bytes(&self.held);
        self.held = rest;
        out
    }

    /// Releases everything held, redacted.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = self.redactor.redact_bytes(&self.held);
        self.held.clear();
        out
    }
}

/// Redacts a stream of text deltas: [`Self::push`] returns what may be shown now, holding back
/// the tail that could be the start of a secret value; [`Self::finish`] releases the rest.
#[derive(Debug, Default)]
pub struct StreamRedactor {
    redactor: Redactor,
    held: String,
}

impl StreamRedactor {
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            held: String::new(),
        }
    }

    /// Adds a delta; returns the redacted text that is safe to release (may be empty).
    pub fn push(&mut self, delta: &str) -> String {
        self.held.push_str(delta);
        if self.redactor.is_empty() {
            return std::mem::take(&mut self.held);
        }
        let cut = self.redactor.safe_cut(&self.held);
        let rest = self.held.split_off(cut);
        let out = self.redactor.redact(&self.held);
        self.held = rest;
        out
    }

    /// Releases everything held, redacted.
    pub fn finish(&mut self) -> String {
        let out = self.redactor.redact(&self.held);
        self.held.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r() -> Redactor {
        Redactor::new([
            ("A_KEY", "s3cret-value"),
            ("B_KEY", "s3cret-value"),
            ("C", "xyz123"),
        ])
    }

    #[test]
    fn replaces_every_occurrence_with_the_first_name() {
        assert_eq!(
            r().redact("a s3cret-value b s3cret-valuexyz123"),
            "a [secret:A_KEY] b [secret:A_KEY][secret:C]"
        );
        assert_eq!(
            r().redact_json(&json!({"k": ["xyz123", 1]})),
            json!({"k": ["[secret:C]", 1]})
        );
        assert_eq!(Redactor::default().redact("xyz123"), "xyz123");
    }

    #[test]
    fn bytes_are_redacted_across_chunks_whatever_their_content() {
        let mut s = ByteStreamRedactor::new(r());
        let mut out = Vec::new();
        for chunk in [
            &b"\xff\x00s3cr"[..],
            b"et-value\x01xy",
            b"z",
            b"123",
            b"\xfe",
        ] {
            out.extend(s.push(chunk));
        }
        out.extend(s.finish());
        assert_eq!(out, b"\xff\x00[secret:A_KEY]\x01[secret:C]\xfe");
        assert_eq!(r().redact_bytes(b"no secrets"), b"no secrets");
    }

    #[test]
    fn stream_catches_values_split_across_deltas() {
        let mut s = StreamRedactor::new(r());
        let mut out = String::new();
        for d in ["hello s3cr", "et-val", "ue and xy", "z12", "3 done"] {
            out.push_str(&s.push(d));
        }
        out.push_str(&s.finish());
        assert_eq!(out, "hello [secret:A_KEY] and [secret:C] done");
        let mut s = StreamRedactor::new(r());
        let first = s.push("plain text that is long enough");
        assert!(!first.is_empty());
        assert_eq!(
            format!("{first}{}", s.finish()),
            "plain text that is long enough"
        );
    }

    // The log registry is process-wide: each test uses values of its own.
    #[test]
    fn log_lines_lose_remembered_values_in_every_logged_form() {
        let value = r#"unit-"log\value-1"#;
        let line = |v: &str| {
            format!(
                "a={v} b=String({v:?}) c={}",
                serde_json::to_string(v).unwrap()
            )
        };
        assert_eq!(redact_logs(line(value).as_bytes()), line(value).as_bytes());
        remember_for_logs("FIRST", value);
        let debug = format!("{:?}", format!("{value:?}"));
        let json_of_debug = serde_json::to_string(&format!("{value:?}")).unwrap();
        let text = format!("{} {debug} {json_of_debug}", line(value));
        let out = String::from_utf8(redact_logs(text.as_bytes()).into_owned()).unwrap();
        assert!(!out.contains("value-1"), "{out}");
        assert_eq!(out.matches("[secret:FIRST]").count(), 5, "{out}");
        // A later use labels the value with its latest name; other text is untouched.
        remember_for_logs("SECOND", value);
        let out = redact_logs(format!("x {value} y").as_bytes()).into_owned();
        assert_eq!(out, b"x [secret:SECOND] y");
        assert!(matches!(redact_logs(b"nothing here"), Cow::Borrowed(_)));
    }
}
