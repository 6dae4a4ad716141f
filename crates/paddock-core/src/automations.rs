//! Automations (spec §9): the rules the API and the agent's `automations` tool share (field
//! limits, `next_run_at`, the wire view), [`StoreFirings`] (the scheduler's
//! [`FiringStore`] over the [`Store`], publishing what a firing appends), and the tool.

use std::sync::Arc;

use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::format_unix;
use paddock_protocol::{Automation, DeploymentConfig};
use paddock_store::{
    AutomationRecord, DeploymentRecord, FireAutomation, FiringKind, FiringResult, PageRequest,
    Store, StoreError,
};
use serde_json::{Map, Value, json};

use crate::Runtime;
use crate::schedule::{self, Schedule};
use crate::scheduler::{Clock, Due, FireOutcome, FiringStore, SystemClock};
use crate::tools::{Tool, ToolContext, ToolOutput, check_args};

/// Most automations a deployment may have (spec §9.4).
pub const MAX_AUTOMATIONS: u32 = 100;
/// Most characters of `name` and of `schedule`.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SCHEDULE_CHARS: usize = 200;
/// Most characters of `instructions`.
pub const MAX_INSTRUCTIONS_CHARS: usize = 20_000;
/// The shortest interval a schedule may have by default (spec §9.2: every minute).
pub const DEFAULT_MIN_INTERVAL_SECS: u64 = 60;
/// Model-facing name of the tool.
pub const AUTOMATIONS: &str = "automations";

/// What automations need from the server: where "now" comes from (tests set it) and the
/// shortest schedule interval allowed.
#[derive(Debug, Clone)]
pub struct AutomationSettings {
    pub clock: Arc<dyn Clock>,
    pub min_interval_secs: u64,
}

impl Default for AutomationSettings {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            min_interval_secs: DEFAULT_MIN_INTERVAL_SECS,
        }
    }
}

/// A refused field: the API answers `400 validation_error` naming `param`; the tool returns
/// the message as an error result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub param: &'static str,
    pub message: String,
}

fn field_err<T>(param: &'static str, message: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        param,
        message: message.into(),
    })
}

/// The fields of a create or `PATCH` body, each checked; `None` where not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutomationFields {
    pub name: Option<String>,
    pub schedule: Option<Schedule>,
    pub instructions: Option<String>,
    pub thread_id: Option<String>,
    pub enabled: Option<bool>,
}

/// A string of 1–`max` characters, or `None` when absent (or `null`).
fn text(
    obj: &Map<String, Value>,
    param: &'static str,
    max: usize,
    what: &str,
) -> Result<Option<String>, FieldError> {
    match obj.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => {
            field_err(param, format!("`{param}` must not be empty: {what}."))
        }
        Some(Value::String(s)) if s.chars().count() > max => {
            field_err(param, format!("`{param}` is longer than {max} characters."))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => field_err(param, format!("`{param}` must be a string: {what}.")),
    }
}

/// Checks the fields of a body in the order of the spec's table. On create, `name`,
/// `schedule` and `instructions` are required. Unknown fields are ignored (the tool refuses
/// them before this).
pub fn check_fields(
    obj: &Map<String, Value>,
    create: bool,
    min_interval_secs: u64,
) -> Result<AutomationFields, FieldError> {
    let name = text(
        obj,
        "name",
        MAX_NAME_CHARS,
        "the automation's name, 1–200 characters",
    )?;
    if create && name.is_none() {
        return field_err(
            "name",
            "`name` is required: the automation's name, 1–200 characters.",
        );
    }
    let schedule_text = text(
        obj,
        "schedule",
        MAX_SCHEDULE_CHARS,
        "cron (`0 9 * * 1`) or English (`every monday at 9am`)",
    )?;
    if create && schedule_text.is_none() {
        return field_err(
            "schedule",
            "`schedule` is required: cron (`0 9 * * 1`) or English (`every monday at 9am`).",
        );
    }
    let schedule = match schedule_text {
        Some(s) => Some(
            schedule::parse(&s, min_interval_secs).map_err(|e| FieldError {
                param: "schedule",
                message: e.0,
            })?,
        ),
        None => None,
    };
    let instructions = text(
        obj,
        "instructions",
        MAX_INSTRUCTIONS_CHARS,
        "what the agent should do at each firing, 1–20,000 characters",
    )?;
    if create && instructions.is_none() {
        return field_err(
            "instructions",
            "`instructions` is required: what the agent should do at each firing, 1–20,000 \
             characters.",
        );
    }
    let thread_id = match obj.get("thread_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return field_err("thread_id", "`thread_id` must be a string: a thread id."),
    };
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return field_err("enabled", "`enabled` must be `true` or `false`."),
    };
    Ok(AutomationFields {
        name,
        schedule,
        instructions,
        thread_id,
        enabled,
    })
}

/// The first scheduled time after `now`, or `None` while disabled.
pub fn next_run_at(cron: &str, enabled: bool, now: i64) -> Option<i64> {
    if enabled {
        schedule::next_after(cron, now)
    } else {
        None
    }
}

/// A new automation from checked create fields, with a new id and, when the body named no
/// thread, the id of the thread to create for it.
pub fn new_record(
    deployment_id: &str,
    fields: AutomationFields,
    created_by: &str,
    now: i64,
) -> Result<(AutomationRecord, bool), FieldError> {
    let (Some(name), Some(schedule), Some(instructions)) =
        (fields.name, fields.schedule, fields.instructions)
    else {
        return field_err(
            "name",
            "`name`, `schedule` and `instructions` are required.",
        );
    };
    let enabled = fields.enabled.unwrap_or(true);
    let new_thread = fields.thread_id.is_none();
    let thread_id = fields.thread_id.unwrap_or_else(|| new_id(prefix::THREAD));
    Ok((
        AutomationRecord {
            id: new_id(prefix::AUTOMATION),
            deployment_id: deployment_id.to_owned(),
            next_run_at: next_run_at(&schedule.cron, enabled, now),
            name,
            schedule: schedule.cron,
            schedule_text: schedule.text,
            instructions,
            thread_id,
            enabled,
            created_by: created_by.to_owned(),
            deferred_at: None,
            last_run_at: None,
            last_run_status: None,
            created_at: now,
            updated_at: now,
        },
        new_thread,
    ))
}

/// `current` with the given fields merged in (spec §9.4 `PATCH`), and whether `next_run_at`
/// is to be written. A new schedule recomputes `next_run_at` from now; pausing clears it;
/// resuming computes it from now (the paused period is not caught up). Otherwise the stored
/// value stands: the scheduler may have advanced it since `current` was read.
pub fn merged(
    current: &AutomationRecord,
    fields: AutomationFields,
    now: i64,
) -> (AutomationRecord, bool) {
    let mut a = current.clone();
    if let Some(n) = fields.name {
        a.name = n;
    }
    if let Some(i) = fields.instructions {
        a.instructions = i;
    }
    if let Some(t) = fields.thread_id {
        a.thread_id = t;
    }
    let rescheduled = fields.schedule.is_some();
    if let Some(s) = fields.schedule {
        a.schedule = s.cron;
        a.schedule_text = s.text;
    }
    if let Some(e) = fields.enabled {
        a.enabled = e;
    }
    let resumed = a.enabled && !current.enabled;
    let mut reschedule = true;
    if !a.enabled {
        a.next_run_at = None;
    } else if rescheduled || resumed || a.next_run_at.is_none() {
        // Always after now, so never a time a scheduler may already have claimed.
        a.next_run_at = next_run_at(&a.schedule, true, now);
    } else {
        reschedule = false;
    }
    a.updated_at = now;
    (a, reschedule)
}

/// The wire form of an automation; `next_run_at` is `null` while the deployment has
/// `features.automations` off (spec §9.1).
pub fn view(a: &AutomationRecord, config: &DeploymentConfig) -> Automation {
    Automation {
        automation_id: a.id.clone(),
        deployment_id: a.deployment_id.clone(),
        name: a.name.clone(),
        schedule: a.schedule.clone(),
        schedule_text: a.schedule_text.clone(),
        instructions: a.instructions.clone(),
        thread_id: a.thread_id.clone(),
        enabled: a.enabled,
        created_by: a.created_by.clone(),
        next_run_at: a
            .next_run_at
            .filter(|_| a.enabled && config.features.automations)
            .map(format_unix),
        last_run_at: a.last_run_at.map(format_unix),
        last_run_status: a.last_run_status.clone(),
        created_at: format_unix(a.created_at),
        updated_at: format_unix(a.updated_at),
        runs: None,
    }
}

/// Why an automation could not be created or changed (besides a bad field).
#[derive(Debug)]
pub enum ChangeError {
    Field(FieldError),
    /// `thread_id` is not a thread of this deployment (`404`, `param: "thread_id"`).
    ThreadNotFound(String),
    /// `409 conflict`: the feature is off, or the deployment has 100 automations.
    Conflict(String),
    /// The automation is gone.
    NotFound,
    Store(StoreError),
}

impl From<FieldError> for ChangeError {
    fn from(e: FieldError) -> Self {
        ChangeError::Field(e)
    }
}

fn thread_missing(id: &str) -> ChangeError {
    ChangeError::ThreadNotFound(format!("No thread {id} in this deployment."))
}

/// Checks a `thread_id` from a body names one of the deployment's threads.
async fn check_thread(store: &dyn Store, deployment_id: &str, id: &str) -> Result<(), ChangeError> {
    if !is_id_shaped(id) {
        return Err(thread_missing(id));
    }
    match store.get_thread(deployment_id, id).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(thread_missing(id)),
        Err(e) => Err(ChangeError::Store(e)),
    }
}

/// Creates an automation from a body (spec §9.4), in the spec's error order: a bad field
/// (400), a foreign `thread_id` (404), then the feature and the limit (409).
pub async fn create(
    store: &dyn Store,
    deployment: &DeploymentRecord,
    body: &Map<String, Value>,
    created_by: &str,
    settings: &AutomationSettings,
) -> Result<AutomationRecord, ChangeError> {
    let fields = check_fields(body, true, settings.min_interval_secs)?;
    if let Some(t) = &fields.thread_id {
        check_thread(store, &deployment.id, t).await?;
    }
    if !deployment.config.features.automations {
        return Err(ChangeError::Conflict(
            "Automations are off for this deployment (`features.automations` is false).".into(),
        ));
    }
    let (record, new_thread) =
        new_record(&deployment.id, fields, created_by, settings.clock.now())?;
    match store
        .create_automation(&record, new_thread, MAX_AUTOMATIONS)
        .await
    {
        Ok(()) => {}
        Err(StoreError::LimitReached(m)) => return Err(ChangeError::Conflict(m)),
        Err(StoreError::NotFound("thread")) => return Err(thread_missing(&record.thread_id)),
        Err(e) => return Err(ChangeError::Store(e)),
    }
    store
        .get_automation(&deployment.id, &record.id)
        .await
        .map_err(ChangeError::Store)
}

/// Applies a `PATCH` body to `current` (spec §9.4).
pub async fn update(
    store: &dyn Store,
    current: &AutomationRecord,
    body: &Map<String, Value>,
    settings: &AutomationSettings,
) -> Result<AutomationRecord, ChangeError> {
    let fields = check_fields(body, false, settings.min_interval_secs)?;
    if let Some(t) = &fields.thread_id {
        check_thread(store, &current.deployment_id, t).await?;
    }
    let (next, reschedule) = merged(current, fields, settings.clock.now());
    match store.update_automation(&next, reschedule).await {
        Ok(a) => Ok(a),
        Err(StoreError::NotFound("thread")) => Err(thread_missing(&next.thread_id)),
        Err(StoreError::NotFound(_)) => Err(ChangeError::NotFound),
        Err(e) => Err(ChangeError::Store(e)),
    }
}

/// The scheduler's [`FiringStore`] over the store: each firing takes the deployment's append
/// lock, claims the time in one store transaction, publishes the events it appended and wakes
/// the worker, which claims the new run like any other.
pub struct StoreFirings {
    pub runtime: Arc<Runtime>,
    /// Active runs allowed per deployment; a firing past it waits like one on a busy thread.
    pub max_active_runs: u32,
}

/// Most automations one tick looks at; the rest are due at the next tick.
const TICK_BATCH: u32 = 500;

impl StoreFirings {
    async fn fire_one(
        &self,
        deployment_id: &str,
        automation_id: &str,
        kind: FiringKind,
        now: i64,
    ) -> Option<FiringResult> {
        let guard = self.runtime.bus().lock(deployment_id).await;
        let firing = FireAutomation {
            automation_id: automation_id.to_owned(),
            kind,
            run_id: new_id(prefix::RUN),
            message_id: new_id(prefix::MESSAGE),
            max_active_runs: self.max_active_runs,
            now,
        };
        match self.runtime.store().fire_automation(firing).await {
            Ok(result) => {
                if let FiringResult::Started(s) = &result {
                    guard.publish(&s.events);
                    drop(guard);
                    self.runtime.wake();
                }
                Some(result)
            }
            Err(e) => {
                tracing::warn!(automation_id, error = %e, "automation firing failed");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl FiringStore for StoreFirings {
    async fn due(&self, now: i64) -> Vec<Due> {
        match self.runtime.store().due_automations(now, TICK_BATCH).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|a| {
                    Some(Due {
                        next_run_at: a.next_run_at?,
                        automation_id: a.id,
                        deployment_id: a.deployment_id,
                        cron: a.schedule,
                    })
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading due automations failed");
                Vec::new()
            }
        }
    }

    async fn fire(&self, due: &Due, next: Option<i64>, fire: Option<i64>, now: i64) -> FireOutcome {
        let kind = FiringKind::Scheduled {
            expected: due.next_run_at,
            next,
            fire,
        };
        match self
            .fire_one(&due.deployment_id, &due.automation_id, kind, now)
            .await
        {
            Some(FiringResult::Started(_)) => FireOutcome::Started,
            Some(FiringResult::Deferred) => FireOutcome::Deferred,
            Some(FiringResult::Dropped) => FireOutcome::Dropped,
            Some(FiringResult::Advanced) => FireOutcome::Skipped,
            Some(FiringResult::NotClaimed) | None => FireOutcome::NotClaimed,
        }
    }

    async fn start_deferred(&self, now: i64) -> Vec<String> {
        let held = match self.runtime.store().deferred_automations(TICK_BATCH).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading deferred automations failed");
                return Vec::new();
            }
        };
        let mut started = Vec::new();
        for a in held {
            if let Some(FiringResult::Started(_)) = self
                .fire_one(&a.deployment_id, &a.id, FiringKind::Deferred, now)
                .await
            {
                started.push(a.id);
            }
        }
        started
    }
}

// ---- the `automations` tool (spec §13.1) ----

/// The `automations` tool: list, create, update, pause, resume and delete the deployment's
/// automations, with the API's rules (`created_by: "agent"`).
pub struct AutomationsTool;

#[async_trait::async_trait]
impl Tool for AutomationsTool {
    fn name(&self) -> &'static str {
        AUTOMATIONS
    }

    fn description(&self) -> &'static str {
        "Manage this customer's automations: instructions you run on a schedule. \
         action=list; create needs name, schedule (cron like `0 9 * * 1` or English like \
         `every monday at 9am`, UTC) and instructions (optional thread_id, enabled); update \
         needs automation_id and any of name, schedule, instructions, thread_id; pause, \
         resume and delete need automation_id."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string",
                    "enum": ["list", "create", "update", "pause", "resume", "delete"]},
                "automation_id": {"type": "string"},
                "name": {"type": "string"},
                "schedule": {"type": "string"},
                "instructions": {"type": "string"},
                "thread_id": {"type": "string"},
                "enabled": {"type": "boolean"},
            },
            "required": ["action"],
            "additionalProperties": false,
        })
    }

    fn available(&self, config: &DeploymentConfig) -> bool {
        config.features.automations
    }

    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        match run_tool(ctx, arguments).await {
            Ok(v) => ToolOutput::ok(v),
            Err(e) => ToolOutput::error(e),
        }
    }
}

fn change_message(e: ChangeError) -> String {
    match e {
        ChangeError::Field(f) => format!("{} (param `{}`)", f.message, f.param),
        ChangeError::ThreadNotFound(m) | ChangeError::Conflict(m) => m,
        ChangeError::NotFound => "no automation with that automation_id".to_owned(),
        ChangeError::Store(e) => format!("automation store error: {e}"),
    }
}

fn tool_view(a: &AutomationRecord, deployment: &DeploymentRecord) -> Value {
    serde_json::to_value(view(a, &deployment.config)).unwrap_or(Value::Null)
}

async fn run_tool(ctx: &ToolContext, arguments: &Value) -> Result<Value, String> {
    let Some(scope) = &ctx.run else {
        return Err("automations are not available here".to_owned());
    };
    let obj = check_args(
        arguments,
        &[
            "action",
            "automation_id",
            "name",
            "schedule",
            "instructions",
            "thread_id",
            "enabled",
        ],
        &["action"],
    )?;
    let store = scope.store.as_ref();
    let settings = &scope.automations;
    // The deployment as it is now: a `PATCH` may have turned the feature off since the run
    // started.
    let deployment = store
        .deployment_by_id(&scope.deployment_id)
        .await
        .map_err(|e| format!("automation store error: {e}"))?;
    let action = match obj.get("action") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err("`action` must be a string".to_owned()),
    };
    let automation_of = |obj: &Map<String, Value>| -> Result<String, String> {
        match obj.get("automation_id") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err("`automation_id` must be a string".to_owned()),
            None => Err("`automation_id` is required for this action".to_owned()),
        }
    };
    let dep_id = deployment.id.clone();
    let current = |id: String| async move {
        let dep_id = dep_id;
        if !is_id_shaped(&id) {
            return Err("no automation with that automation_id".to_owned());
        }
        match store.get_automation(&dep_id, &id).await {
            Ok(a) => Ok(a),
            Err(StoreError::NotFound(_)) => Err("no automation with that automation_id".to_owned()),
            Err(e) => Err(format!("automation store error: {e}")),
        }
    };
    match action {
        "list" => {
            let page = PageRequest {
                limit: 100,
                cursor: None,
            };
            let (all, _) = store
                .list_automations(&deployment.id, &page)
                .await
                .map_err(|e| format!("automation store error: {e}"))?;
            Ok(
                json!({"automations": all.iter().map(|a| tool_view(a, &deployment)).collect::<Vec<_>>()}),
            )
        }
        "create" => {
            let mut body = obj.clone();
            body.remove("action");
            if body.contains_key("automation_id") {
                return Err("`automation_id` is not an argument of create".to_owned());
            }
            let a = create(store, &deployment, &body, "agent", settings)
                .await
                .map_err(change_message)?;
            Ok(json!({"created": tool_view(&a, &deployment)}))
        }
        "update" | "pause" | "resume" => {
            let a = current(automation_of(obj)?).await?;
            let mut body = obj.clone();
            body.remove("action");
            body.remove("automation_id");
            match action {
                "pause" | "resume" if body.keys().any(|k| k != "enabled") => {
                    return Err(format!("{action} takes only automation_id"));
                }
                "pause" => {
                    body.insert("enabled".into(), Value::Bool(false));
                }
                "resume" => {
                    body.insert("enabled".into(), Value::Bool(true));
                }
                _ => {}
            }
            let a = update(store, &a, &body, settings)
                .await
                .map_err(change_message)?;
            Ok(json!({"updated": tool_view(&a, &deployment)}))
        }
        "delete" => {
            let a = current(automation_of(obj)?).await?;
            match store.delete_automation(&deployment.id, &a.id).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(format!("automation store error: {e}")),
            }
            Ok(json!({"deleted": a.id}))
        }
        other => Err(format!(
            "unknown action `{other}`; use list, create, update, pause, resume or delete"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fields_name_their_param() {
        let cases = [
            (json!({}), "name"),
            (
                json!({"name": "", "schedule": "hourly", "instructions": "x"}),
                "name",
            ),
            (json!({"name": "n", "instructions": "x"}), "schedule"),
            (
                json!({"name": "n", "schedule": "whenever", "instructions": "x"}),
                "schedule",
            ),
            (
                json!({"name": "n", "schedule": "* * * * *", "instructions": "x"}),
                "",
            ),
            (json!({"name": "n", "schedule": "hourly"}), "instructions"),
            (
                json!({"name": "n", "schedule": "hourly", "instructions": "x", "thread_id": 3}),
                "thread_id",
            ),
            (
                json!({"name": "n", "schedule": "hourly", "instructions": "x", "enabled": "yes"}),
                "enabled",
            ),
        ];
        for (body, param) in cases {
            let got = check_fields(&obj(body.clone()), true, 60);
            match (param, got) {
                ("", Ok(_)) => {}
                ("", Err(e)) => panic!("{body}: {e:?}"),
                (p, Err(e)) => assert_eq!(e.param, p, "{body}"),
                (p, Ok(_)) => panic!("{body}: expected an error on {p}"),
            }
        }
        // The server minimum applies.
        let e = check_fields(
            &obj(json!({"name": "n", "schedule": "every minute",
            "instructions": "x"})),
            true,
            300,
        )
        .unwrap_err();
        assert_eq!(e.param, "schedule");
        // PATCH: nothing is required.
        assert_eq!(
            check_fields(&Map::new(), false, 60).unwrap(),
            AutomationFields::default()
        );
    }

    #[test]
    fn merging_recomputes_next_run_at_only_when_it_must() {
        let now = 1_781_172_000; // 2026-06-11T10:00:00Z
        let schedule = schedule::parse("0 * * * *", 60).unwrap();
        let (a, new_thread) = new_record(
            "dep_x",
            AutomationFields {
                name: Some("n".into()),
                schedule: Some(schedule),
                instructions: Some("i".into()),
                ..Default::default()
            },
            "api",
            now,
        )
        .unwrap();
        assert!(new_thread);
        assert_eq!(a.next_run_at, Some(now + 3600));
        let later = now + 7200 + 60;
        let (renamed, write) = merged(
            &a,
            AutomationFields {
                name: Some("m".into()),
                ..Default::default()
            },
            later,
        );
        assert_eq!((renamed.next_run_at, write), (a.next_run_at, false));
        let (paused, write) = merged(
            &a,
            AutomationFields {
                enabled: Some(false),
                ..Default::default()
            },
            later,
        );
        assert_eq!((paused.next_run_at, write), (None, true));
        let (resumed, _) = merged(
            &paused,
            AutomationFields {
                enabled: Some(true),
                ..Default::default()
            },
            later,
        );
        assert_eq!(resumed.next_run_at, Some(now + 3 * 3600));
        let every_15 = schedule::parse("*/15 * * * *", 60).unwrap();
        let (moved, write) = merged(
            &a,
            AutomationFields {
                schedule: Some(every_15),
                ..Default::default()
            },
            now,
        );
        assert_eq!((moved.next_run_at, write), (Some(now + 900), true));
        assert_eq!(moved.schedule, "*/15 * * * *");
    }
}
