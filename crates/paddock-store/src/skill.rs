//! Skill records (spec §12).

use paddock_protocol::ErrorInfo;

/// A skill as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillRecord {
    pub id: String,
    pub deployment_id: String,
    pub name: String,
    /// `inline`, `url` or `file`.
    pub source: String,
    /// From the front matter; empty for a `file` skill not read yet.
    pub description: String,
    /// The SKILL.md text of `inline` and `url` skills.
    pub content: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    /// Why a `file` skill failed to load at the start of the last run.
    pub error: Option<ErrorInfo>,
    pub created_at: i64,
    pub updated_at: i64,
}
