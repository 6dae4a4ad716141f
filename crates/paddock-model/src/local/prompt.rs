//! Canonical items → chat-template messages for an embedded model.
//!
//! Tool calls use the Hermes convention (`<tool_call>` / `<tool_response>`), which Qwen-family
//! models were trained on and which the grammar in [`super::grammar`] enforces for everyone else.

use super::grammar::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use crate::{Item, ToolCall, ToolSpec};

/// One chat message before the model's chat template is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub role: &'static str,
    pub content: String,
}

/// The system prompt: the request's own system text plus, when tools are offered, a section
/// describing them and the exact call format the grammar allows.
pub(crate) fn system_prompt(system: &str, tools: &[ToolSpec]) -> String {
    let mut out = system.trim_end().to_owned();
    if tools.is_empty() {
        return out;
    }
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(
        "# Tools\n\nYou may call one of the following tools to help with the user's request. \
         Each is described by its name, a description and a JSON Schema of its arguments:\n<tools>\n",
    );
    for tool in tools {
        // Written by hand so `name` comes first (serde_json sorts object keys).
        out.push_str(&format!(
            "{{\"name\": {}, \"description\": {}, \"parameters\": {}}}\n",
            json_string(&tool.name),
            json_string(&tool.description),
            tool.parameters
        ));
    }
    out.push_str("</tools>\n\nTo call a tool, answer with nothing but:\n");
    out.push_str(TOOL_CALL_OPEN);
    out.push_str("\n{\"name\": \"<tool name>\", \"arguments\": {<arguments as a JSON object>}}\n");
    out.push_str(TOOL_CALL_CLOSE);
    out.push_str(
        "\nThe result comes back in a <tool_response></tool_response> block. \
         If no tool is needed, answer the user directly in plain text.",
    );
    out
}

/// Renders one tool call exactly as the model is asked to write one.
fn render_tool_call(call: &ToolCall) -> String {
    // The same key order and spacing as the example in the system prompt, so the history
    // shows the model the format it is asked to produce.
    format!(
        "{TOOL_CALL_OPEN}\n{{\"name\": {}, \"arguments\": {}}}\n{TOOL_CALL_CLOSE}",
        json_string(&call.name),
        call.arguments
    )
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Maps the system prompt and canonical items to chat messages.
///
/// Tool results become user turns: the common small-model templates (ChatML, SmolLM2) have no
/// tool role, and Qwen's own template renders tool results as user turns too. Consecutive
/// messages with the same role are merged so templates that expect alternating turns work.
pub(crate) fn messages(system: &str, items: &[Item]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    if !system.is_empty() {
        out.push(Message {
            role: "system",
            content: system.to_owned(),
        });
    }
    for item in items {
        let (role, content) = match item {
            // The embedded models read text only: media is named, not shown.
            Item::User { content, media } => {
                let mut parts: Vec<String> = media
                    .iter()
                    .map(|m| m.unsupported_note("this model reads text only"))
                    .collect();
                if !content.is_empty() || parts.is_empty() {
                    parts.push(content.clone());
                }
                ("user", parts.join("\n"))
            }
            Item::Assistant { text, tool_calls } => {
                let mut parts: Vec<String> = Vec::new();
                if !text.trim().is_empty() {
                    parts.push(text.clone());
                }
                parts.extend(tool_calls.iter().map(render_tool_call));
                if parts.is_empty() {
                    continue;
                }
                ("assistant", parts.join("\n"))
            }
            Item::ToolResult {
                content, is_error, ..
            } => {
                let prefix = if *is_error { "Error: " } else { "" };
                (
                    "user",
                    format!("<tool_response>\n{prefix}{content}\n</tool_response>"),
                )
            }
        };
        match out.last_mut() {
            Some(last) if last.role == role && role != "system" => {
                last.content.push('\n');
                last.content.push_str(&content);
            }
            _ => out.push(Message { role, content }),
        }
    }
    // llama.cpp's template API takes C strings.
    for m in &mut out {
        if m.content.contains('\0') {
            m.content = m.content.replace('\0', "");
        }
    }
    out
}

/// Drops the oldest item so a prompt that does not fit the context can shrink, never dropping
/// the newest item. Tool results left without their call are dropped with it. Returns `false`
/// when nothing more can be dropped.
pub(crate) fn drop_oldest(items: &mut Vec<Item>) -> bool {
    if items.len() <= 1 {
        return false;
    }
    items.remove(0);
    while items.len() > 1 && matches!(items.first(), Some(Item::ToolResult { .. })) {
        items.remove(0);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_section_describes_format() {
        let s = system_prompt(
            "Be brief.",
            &[ToolSpec {
                name: "get_weather".into(),
                description: "Weather for a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
        );
        assert!(s.starts_with("Be brief.\n\n# Tools"));
        assert!(s.contains(
            r#"{"name": "get_weather", "description": "Weather for a city", "parameters": {"#
        ));
        assert!(s.contains("<tool_call>\n{\"name\": \"<tool name>\""));
        assert_eq!(system_prompt("Be brief.  ", &[]), "Be brief.");
    }

    #[test]
    fn items_map_to_roles() {
        let items = vec![
            Item::User {
                content: "weather?".into(),
                media: Vec::new(),
            },
            Item::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: json!({"city": "Paris"}),
                }],
            },
            Item::ToolResult {
                call_id: "call_1".into(),
                name: "get_weather".into(),
                content: "sunny".into(),
                is_error: false,
            },
            Item::ToolResult {
                call_id: "call_2".into(),
                name: "get_weather".into(),
                content: "boom".into(),
                is_error: true,
            },
        ];
        let m = messages("sys", &items);
        let roles: Vec<&str> = m.iter().map(|m| m.role).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(
            m[2].content,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"
        );
        assert_eq!(
            m[3].content,
            "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nError: boom\n</tool_response>"
        );
    }

    #[test]
    fn dropping_skips_orphan_tool_results() {
        let mut items = vec![
            Item::Assistant {
                text: "a".into(),
                tool_calls: vec![],
            },
            Item::ToolResult {
                call_id: "c".into(),
                name: "t".into(),
                content: "r".into(),
                is_error: false,
            },
            Item::User {
                content: "q".into(),
                media: Vec::new(),
            },
        ];
        assert!(drop_oldest(&mut items));
        assert_eq!(items.len(), 1);
        assert!(!drop_oldest(&mut items));
    }
}
