//! Memory records (spec §10) and the queries over them.

/// A memory as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRecord {
    pub id: String,
    pub deployment_id: String,
    pub content: String,
    /// `api` or `agent`; never changes.
    pub source: String,
    /// The run whose `memory` tool saved it (`source: "agent"`).
    pub run_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which memories a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFilter {
    /// Case-insensitive substring of `content` (ASCII case folding).
    pub q: Option<String>,
    /// `api` or `agent`.
    pub source: Option<String>,
}

/// Turns free text into an FTS5 query matching any of its words (at most `max_terms`
/// distinct words of two or more characters, each quoted), or `None` when it has none.
/// Used to rank memories by relevance to a conversation.
pub fn fts_any_terms(text: &str, max_terms: usize) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.chars().count() < 2 {
            continue;
        }
        let w = word.to_lowercase();
        if STOP_WORDS.contains(&w.as_str()) || terms.contains(&w) {
            continue;
        }
        terms.push(w);
        if terms.len() >= max_terms {
            break;
        }
    }
    if terms.is_empty() {
        return None;
    }
    Some(
        terms
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR "),
    )
}

/// Common English words that say nothing about a topic.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "from", "has",
    "have", "he", "her", "his", "how", "i", "if", "in", "is", "it", "its", "me", "my", "no", "not",
    "of", "on", "or", "our", "please", "she", "so", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "us", "was", "we", "what", "when", "which", "who",
    "will", "with", "would", "you", "your",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_terms_are_quoted_deduplicated_and_bounded() {
        assert_eq!(
            fts_any_terms("Make the VIDEO, the video \"now\"!", 10).as_deref(),
            Some("\"make\" OR \"video\" OR \"now\"")
        );
        assert_eq!(fts_any_terms("a the - !", 10), None);
        assert_eq!(
            fts_any_terms("one two three", 2).as_deref(),
            Some("\"one\" OR \"two\"")
        );
    }
}
