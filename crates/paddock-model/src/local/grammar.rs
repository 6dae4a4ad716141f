//! The GBNF grammar that keeps a small model's tool calls parseable.
//!
//! Small models rarely produce well-formed tool calls on their own, so when tools are offered
//! the sampler is constrained to either a plain-text answer or exactly one
//! `<tool_call>{"name": …, "arguments": {…}}</tool_call>` block whose name is an offered tool.

use crate::ToolSpec;

/// The opening tag of a tool call, in the prompt and in the model's output.
pub(crate) const TOOL_CALL_OPEN: &str = "<tool_call>";
/// The closing tag of a tool call.
pub(crate) const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// Generic JSON values (after llama.cpp's `grammars/json.gbnf`). Whitespace is bounded so a
/// greedy model cannot spend its whole token budget on indentation.
const JSON_RULES: &str = r#"
value  ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,4} )?
ws     ::= ( " " | "\n" [ \t]{0,20} )?
"#;

/// Builds the grammar for a request offering `tools` (which must not be empty): plain text
/// that does not start with `<`, or one tool call naming one of `tools`.
pub(crate) fn tool_grammar(tools: &[ToolSpec]) -> String {
    let mut names: Vec<String> = Vec::new();
    for tool in tools {
        // The name appears in the output as a JSON string, so the grammar literal is the
        // JSON-encoded name (escapes included), itself escaped for GBNF.
        let json_name = serde_json::Value::String(tool.name.clone()).to_string();
        let literal = gbnf_literal(&json_name);
        if !names.contains(&literal) {
            names.push(literal);
        }
    }
    let open = gbnf_literal(TOOL_CALL_OPEN);
    let close = gbnf_literal(TOOL_CALL_CLOSE);
    format!(
        "root ::= text | call\n\
         text ::= [^<] .*\n\
         call ::= {open} ws \"{{\" ws \"\\\"name\\\"\" ws \":\" ws name ws \",\" ws \"\\\"arguments\\\"\" ws \":\" ws object ws \"}}\" ws {close}\n\
         name ::= {names}\n\
         {JSON_RULES}",
        names = names.join(" | "),
    )
}

/// Quotes `s` as a GBNF string literal.
fn gbnf_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.to_owned(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        }
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(gbnf_literal("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(gbnf_literal("\u{1}"), r#""\x01""#);
    }

    #[test]
    fn grammar_lists_each_tool_once() {
        let g = tool_grammar(&[tool("get_weather"), tool("read_file"), tool("read_file")]);
        assert!(
            g.contains(r#"name ::= "\"get_weather\"" | "\"read_file\"""#),
            "{g}"
        );
        assert!(
            g.contains(r#"call ::= "<tool_call>" ws "{" ws "\"name\"" ws"#),
            "{g}"
        );
        assert!(g.contains(r#""}" ws "</tool_call>""#), "{g}");
    }
}
