//! What a deployment knows besides its conversations: memories (spec §10) and skills (§12).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::resources::ErrorInfo;

/// A memory (spec §10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    #[schema(example = "mem_8nW3p4")]
    pub memory_id: String,
    #[schema(example = "Always end videos with the Acme logo sting.")]
    pub content: String,
    /// `api` or `agent` (saved by the agent's `memory` tool); never changes.
    #[schema(example = "api")]
    pub source: String,
    /// The run that saved it, for `source: "agent"`.
    pub run_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST …/memories` and `PATCH …/memories/:memory_id` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemoryContentRequest {
    /// 1–10,000 characters.
    pub content: String,
}

/// The answer to `DELETE …/memories/:memory_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemoryDeleted {
    pub memory_id: String,
    /// Always `deleted`.
    pub status: String,
}

/// A skill (spec §12.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Skill {
    #[schema(example = "skl_7vB4n2")]
    pub skill_id: String,
    #[schema(example = "thumbnail-design")]
    pub name: String,
    /// `inline`, `url` or `file`.
    pub source: String,
    pub description: String,
    pub url: Option<String>,
    pub path: Option<String>,
    /// Why a `file` skill failed to load at the start of the last run.
    pub error: Option<ErrorInfo>,
    pub created_at: String,
    pub updated_at: String,
    /// The full SKILL.md (`GET …/skills/:skill_id` only; for `file`, as read now or `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Option<String>>,
}

/// `POST …/skills` / `PUT …/skills/:skill_id` body: one skill entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillEntryRequest {
    /// `inline`, `url` or `file`.
    pub source: String,
    pub name: String,
    /// The SKILL.md text (`inline`).
    pub content: Option<String>,
    /// An `http(s)` URL (`url`).
    pub url: Option<String>,
    /// A workspace path (`file`).
    pub path: Option<String>,
}

/// The answer to `DELETE …/skills/:skill_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillDeleted {
    pub skill_id: String,
    /// Always `deleted`.
    pub status: String,
}
