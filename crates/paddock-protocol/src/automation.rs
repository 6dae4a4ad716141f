//! Automations (spec §9): instructions run on a schedule in a thread.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An automation (spec §9.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Automation {
    #[schema(example = "auto_5cT2k9")]
    pub automation_id: String,
    pub deployment_id: String,
    #[schema(example = "Weekly video variations")]
    pub name: String,
    /// Always five-field UTC cron.
    #[schema(example = "0 9 * * 1")]
    pub schedule: String,
    /// The English text the client sent, or `null` if it sent cron.
    #[schema(example = "every Monday at 9am")]
    pub schedule_text: Option<String>,
    pub instructions: String,
    pub thread_id: String,
    pub enabled: bool,
    /// `api` or `agent` (created by the agent's `automations` tool).
    #[schema(example = "api")]
    pub created_by: String,
    /// `null` while `enabled` or `features.automations` is false.
    pub next_run_at: Option<String>,
    pub last_run_at: Option<String>,
    /// The latest run's status: `running`, `waiting_on_human`, `completed` or `error`.
    pub last_run_status: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `GET …/automations/:automation_id` only: the latest 20 runs, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<AutomationRun>>,
}

/// One run of an automation's history (spec §9.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AutomationRun {
    pub run_id: String,
    pub status: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub thread_id: Option<String>,
}

/// `POST …/automations` body (spec §9.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateAutomationRequest {
    /// 1–200 characters.
    pub name: String,
    /// Cron or English (spec §9.2), 1–200 characters.
    #[schema(example = "every monday at 9am")]
    pub schedule: String,
    /// 1–20,000 characters: stored as a `user` message at each firing.
    pub instructions: String,
    /// A thread of this deployment; default: a new thread titled with `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `PATCH …/automations/:automation_id` body: any of the create fields; others keep their
/// values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateAutomationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new schedule recomputes `next_run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// `false` pauses, `true` resumes from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The answer to `DELETE …/automations/:automation_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AutomationDeleted {
    pub automation_id: String,
    /// Always `deleted`.
    pub status: String,
}

/// The answer to `POST …/automations/:automation_id/trigger` (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AutomationTriggered {
    pub automation_id: String,
    pub run_id: String,
    pub thread_id: String,
    /// Always `running`.
    pub status: String,
}
