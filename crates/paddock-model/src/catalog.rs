//! What Paddock knows about each model: one table of capability facts and list prices per
//! vendor, looked up by model name. Operators override the facts per model in
//! `[providers.NAME.models.MODEL]` (see [`crate::ModelOverrides`]); a model the table does not
//! know gets [`ModelInfo::unknown`] (tools assumed, no window, free).
//!
//! Prices are in credits per million tokens; one credit is meant as one US dollar, so the
//! table holds each vendor's list price for prompts within the standard context tier.

use serde::Serialize;

use crate::{MediaKind, Usage};

/// The vendor whose model names a table row describes: the wire protocol of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Anthropic,
    OpenAi,
    Google,
}

/// Capability facts and prices of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Tokens the model can attend to (input plus output); `None` when unknown.
    pub context_window: Option<u32>,
    /// Most tokens one response may generate; `None` when unknown.
    pub max_output_tokens: Option<u32>,
    /// Accepts image input.
    pub vision: bool,
    /// Accepts audio input.
    pub audio: bool,
    /// Accepts video input.
    pub video: bool,
    /// Supports tool (function) calling.
    pub tools: bool,
    /// Credits per million input tokens; `None` is free.
    pub input_price: Option<f64>,
    /// Credits per million output tokens; `None` is free.
    pub output_price: Option<f64>,
}

impl ModelInfo {
    /// What is assumed of a model nobody described: it can call tools, its window is unknown
    /// and it costs nothing.
    pub const fn unknown() -> ModelInfo {
        ModelInfo {
            context_window: None,
            max_output_tokens: None,
            vision: false,
            audio: false,
            video: false,
            tools: true,
            input_price: None,
            output_price: None,
        }
    }

    /// Whether the model takes `kind` input (images, audio or video). Adapters replace media a
    /// model cannot take by a text note; the agent loop asks this first to decide what to
    /// attach, e.g. `registry.model_info(model).accepts(MediaKind::Video)`.
    pub fn accepts(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Image => self.vision,
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }

    /// The cost of one call's `usage` in credits (every input token at the input price, every
    /// output token at the output price).
    pub fn cost(&self, usage: &Usage) -> f64 {
        self.price(usage.input_tokens, usage.output_tokens)
    }

    /// The cost in credits of `input_tokens` read and `output_tokens` generated.
    pub fn price(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        let per_million = |tokens: u64, price: Option<f64>| {
            price.map_or(0.0, |p| tokens as f64 * p / 1_000_000.0)
        };
        per_million(input_tokens, self.input_price) + per_million(output_tokens, self.output_price)
    }
}

impl Default for ModelInfo {
    fn default() -> Self {
        ModelInfo::unknown()
    }
}

/// Facts of `model` (the name within its provider) as the built-in table knows them, or
/// `None`. The name matches a row case-insensitively with `.` read as `-` (so
/// `claude-sonnet-4.5` is `claude-sonnet-4-5`), optionally followed by a dated or versioned
/// snapshot suffix: `-20250929`, `-2024-08-06`, `-001` or `-latest`.
pub fn lookup(vendor: Vendor, model: &str) -> Option<ModelInfo> {
    let name = normalise(model);
    let rows = rows(vendor);
    let find = |n: &str| {
        rows.iter()
            .find(|row| normalise(row.0) == n)
            .map(|row| row.1)
    };
    find(&name).or_else(|| strip_snapshot(&name).and_then(find))
}

fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('.', "-")
}

/// `name` without a trailing snapshot suffix, if it has one.
fn strip_snapshot(name: &str) -> Option<&str> {
    if let Some(base) = name.strip_suffix("-latest") {
        return Some(base);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // `-YYYY-MM-DD` (OpenAI).
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    if let [day, month, year, base] = parts.as_slice()
        && digits(day)
        && day.len() == 2
        && digits(month)
        && month.len() == 2
        && digits(year)
        && year.len() == 4
    {
        return Some(base);
    }
    // `-YYYYMMDD` (Anthropic) or `-NNN` (Google).
    let (base, last) = name.rsplit_once('-')?;
    (digits(last) && matches!(last.len(), 3 | 8)).then_some(base)
}

/// A row: name, then facts.
type Row = (&'static str, ModelInfo);

const fn facts(
    context_window: u32,
    max_output_tokens: u32,
    (vision, audio, video): (bool, bool, bool),
    input_price: f64,
    output_price: f64,
) -> ModelInfo {
    ModelInfo {
        context_window: Some(context_window),
        max_output_tokens: Some(max_output_tokens),
        vision,
        audio,
        video,
        tools: true,
        input_price: Some(input_price),
        output_price: Some(output_price),
    }
}

/// Image input only.
const IMAGES: (bool, bool, bool) = (true, false, false);
/// Image, audio and video input.
const ALL_MEDIA: (bool, bool, bool) = (true, true, true);

const ANTHROPIC: &[Row] = &[
    ("claude-opus-4-5", facts(200_000, 64_000, IMAGES, 5.0, 25.0)),
    (
        "claude-opus-4-1",
        facts(200_000, 32_000, IMAGES, 15.0, 75.0),
    ),
    ("claude-opus-4", facts(200_000, 32_000, IMAGES, 15.0, 75.0)),
    (
        "claude-sonnet-4-5",
        facts(200_000, 64_000, IMAGES, 3.0, 15.0),
    ),
    ("claude-sonnet-4", facts(200_000, 64_000, IMAGES, 3.0, 15.0)),
    (
        "claude-3-7-sonnet",
        facts(200_000, 64_000, IMAGES, 3.0, 15.0),
    ),
    ("claude-haiku-4-5", facts(200_000, 64_000, IMAGES, 1.0, 5.0)),
    ("claude-3-5-haiku", facts(200_000, 8_192, IMAGES, 0.8, 4.0)),
    ("claude-3-haiku", facts(200_000, 4_096, IMAGES, 0.25, 1.25)),
];

const OPENAI: &[Row] = &[
    ("gpt-5", facts(400_000, 128_000, IMAGES, 1.25, 10.0)),
    ("gpt-5-mini", facts(400_000, 128_000, IMAGES, 0.25, 2.0)),
    ("gpt-5-nano", facts(400_000, 128_000, IMAGES, 0.05, 0.4)),
    ("gpt-4.1", facts(1_047_576, 32_768, IMAGES, 2.0, 8.0)),
    ("gpt-4.1-mini", facts(1_047_576, 32_768, IMAGES, 0.4, 1.6)),
    ("gpt-4.1-nano", facts(1_047_576, 32_768, IMAGES, 0.1, 0.4)),
    ("gpt-4o", facts(128_000, 16_384, IMAGES, 2.5, 10.0)),
    ("gpt-4o-mini", facts(128_000, 16_384, IMAGES, 0.15, 0.6)),
    ("o3", facts(200_000, 100_000, IMAGES, 2.0, 8.0)),
    ("o4-mini", facts(200_000, 100_000, IMAGES, 1.1, 4.4)),
];

const GOOGLE: &[Row] = &[
    (
        "gemini-3-pro-preview",
        facts(1_048_576, 65_536, ALL_MEDIA, 2.0, 12.0),
    ),
    (
        "gemini-2.5-pro",
        facts(1_048_576, 65_536, ALL_MEDIA, 1.25, 10.0),
    ),
    (
        "gemini-2.5-flash",
        facts(1_048_576, 65_536, ALL_MEDIA, 0.3, 2.5),
    ),
    (
        "gemini-2.5-flash-lite",
        facts(1_048_576, 65_536, ALL_MEDIA, 0.1, 0.4),
    ),
    (
        "gemini-2.0-flash",
        facts(1_048_576, 8_192, ALL_MEDIA, 0.1, 0.4),
    ),
    (
        "gemini-2.0-flash-lite",
        facts(1_048_576, 8_192, ALL_MEDIA, 0.075, 0.3),
    ),
];

fn rows(vendor: Vendor) -> &'static [Row] {
    match vendor {
        Vendor::Anthropic => ANTHROPIC,
        Vendor::OpenAi => OPENAI,
        Vendor::Google => GOOGLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_with_snapshot_suffixes_and_dots() {
        let sonnet = lookup(Vendor::Anthropic, "claude-sonnet-4-5").unwrap();
        assert_eq!(sonnet.input_price, Some(3.0));
        for name in [
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4.5",
            "Claude-Sonnet-4-5-latest",
        ] {
            assert_eq!(lookup(Vendor::Anthropic, name), Some(sonnet), "{name}");
        }
        let mini = lookup(Vendor::OpenAi, "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.output_price, Some(0.6));
        assert_eq!(
            lookup(Vendor::OpenAi, "gpt-4.1-2025-04-14")
                .unwrap()
                .input_price,
            Some(2.0)
        );
        assert!(
            lookup(Vendor::Google, "gemini-2.0-flash-001")
                .unwrap()
                .video
        );
    }

    #[test]
    fn unknown_and_near_miss_names_are_not_guessed() {
        assert_eq!(lookup(Vendor::OpenAi, "gpt-4o-audio-preview"), None);
        assert_eq!(lookup(Vendor::Anthropic, "gpt-4o"), None);
        assert_eq!(
            lookup(Vendor::Google, "gemini-2.5-flash-preview-05-20"),
            None
        );
        assert_eq!(lookup(Vendor::OpenAi, "gpt-4o-12"), None);
    }

    #[test]
    fn every_row_is_reachable_and_sane() {
        for vendor in [Vendor::Anthropic, Vendor::OpenAi, Vendor::Google] {
            for (name, info) in rows(vendor) {
                assert_eq!(lookup(vendor, name), Some(*info), "{name}");
                assert!(info.max_output_tokens < info.context_window, "{name}");
            }
        }
    }

    #[test]
    fn accepts_answers_per_media_kind() {
        let gemini = lookup(Vendor::Google, "gemini-2.5-flash").unwrap();
        let gpt = lookup(Vendor::OpenAi, "gpt-4o").unwrap();
        for kind in [MediaKind::Image, MediaKind::Audio, MediaKind::Video] {
            assert!(gemini.accepts(kind), "{kind}");
        }
        assert!(gpt.accepts(MediaKind::Image));
        assert!(!gpt.accepts(MediaKind::Video));
        assert!(!ModelInfo::unknown().accepts(MediaKind::Image));
    }

    #[test]
    fn cost_prices_input_and_output_per_million() {
        let sonnet = lookup(Vendor::Anthropic, "claude-sonnet-4-5").unwrap();
        // The spec's example run: 18234 in, 912 out.
        let usage = Usage {
            input_tokens: 18_234,
            output_tokens: 912,
            ..Usage::default()
        };
        assert!((sonnet.cost(&usage) - 0.068_382).abs() < 1e-9);
        assert_eq!(ModelInfo::unknown().cost(&usage), 0.0);
    }
}
