//! The canonical conversation format shared by every provider.

use serde::{Deserialize, Serialize};

/// One entry of a conversation as Paddock stores it, independent of any vendor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// Text a person (or an automation) sent.
    User { content: String },
    /// One model response: its text (possibly empty) and the tool calls it asked for.
    Assistant {
        text: String,
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, as the model is shown it.
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
}

/// A tool call the model asked for. `arguments` is the parsed JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

/// A tool offered to the model: its model-facing name, description and JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Everything a provider needs for one model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// The model's name within its provider (the part after `provider/`).
    pub model: String,
    pub system: String,
    pub items: Vec<Item>,
    pub tools: Vec<ToolSpec>,
    /// Upper bound on generated tokens; `None` leaves it to the provider.
    pub max_output_tokens: Option<u32>,
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every input token the model read, cached or not.
    pub input_tokens: u64,
    /// Generated tokens, including any hidden reasoning the vendor bills as output.
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the vendor's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Of `input_tokens`, those written to the vendor's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// What a provider's stream yields, already normalised.
///
/// A stream yields any number of `TextDelta`s and complete `ToolCall`s (fragments are assembled
/// inside the provider), at most one `Usage`, and ends with exactly one `Finished` when the
/// response is complete. A stream that ends without `Finished` was cut off.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    TextDelta(String),
    ToolCall(ToolCall),
    Usage(Usage),
    Finished,
}
