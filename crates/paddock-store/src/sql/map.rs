//! Turning database rows into records.

use paddock_protocol::{EventType, RunUsage, StoredEvent};
use sqlx::Row;

use super::DbRow;

use crate::{
    AccountRecord, Decision, DeploymentRecord, KeyRecord, MessageRecord, RunRecord, SteeringRecord,
    StoreError, ThreadRecord, ToolCallRecord,
};

fn json<T: serde::de::DeserializeOwned>(row: &DbRow, col: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    Ok(serde_json::from_str(&text)?)
}

fn json_opt<T: serde::de::DeserializeOwned>(
    row: &DbRow,
    col: &str,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = row.try_get(col)?;
    match text {
        Some(t) => Ok(Some(serde_json::from_str(&t)?)),
        None => Ok(None),
    }
}

pub(super) fn micros_to_credits(m: i64) -> f64 {
    m as f64 / 1_000_000.0
}

pub(super) fn account(row: &DbRow) -> Result<AccountRecord, StoreError> {
    Ok(AccountRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        balance_micros: row.try_get("balance_micros")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn key(row: &DbRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        hash: row.try_get("hash")?,
        scopes: json(row, "scopes")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(super) fn deployment(row: &DbRow) -> Result<DeploymentRecord, StoreError> {
    Ok(DeploymentRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        customer_id: row.try_get("customer_id")?,
        name: row.try_get("name")?,
        runtime: row.try_get("runtime")?,
        status: row.try_get("status")?,
        error: json_opt(row, "error")?,
        default_thread_id: row.try_get("default_thread_id")?,
        config: json(row, "config")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Thread rows come from [`THREAD_SELECT`](super::store_impl::THREAD_SELECT).
pub(super) fn thread(row: &DbRow) -> Result<ThreadRecord, StoreError> {
    Ok(ThreadRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        title: row.try_get("title")?,
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        automation_id: row.try_get("automation_id")?,
        status: row.try_get("status")?,
        message_count: row.try_get("message_count")?,
        created_at: row.try_get("created_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
    })
}

pub(super) fn message(row: &DbRow) -> Result<MessageRecord, StoreError> {
    Ok(MessageRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        thread_id: row.try_get("thread_id")?,
        role: row.try_get("role")?,
        content: row.try_get("content")?,
        run_id: row.try_get("run_id")?,
        attachments: json(row, "attachments")?,
        automation_id: row.try_get("automation_id")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn run(row: &DbRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        thread_id: row.try_get("thread_id")?,
        status: row.try_get("status")?,
        trigger: row.try_get("trigger")?,
        automation_id: row.try_get("automation_id")?,
        model: row.try_get("model")?,
        config: json(row, "config")?,
        steering_request: json_opt(row, "steering_request")?,
        error: json_opt(row, "error")?,
        warnings: json(row, "warnings")?,
        usage: RunUsage {
            input_tokens: row.try_get::<i64, _>("input_tokens")?.max(0) as u64,
            output_tokens: row.try_get::<i64, _>("output_tokens")?.max(0) as u64,
            credits: micros_to_credits(row.try_get("credits_micros")?),
        },
        step: row.try_get("step")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(super) fn tool_call(row: &DbRow) -> Result<ToolCallRecord, StoreError> {
    Ok(ToolCallRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        step: row.try_get("step")?,
        tool: row.try_get("tool")?,
        origin: row.try_get("origin")?,
        arguments: json(row, "arguments")?,
        state: row.try_get("state")?,
        result: json_opt(row, "result")?,
        is_error: row.try_get::<Option<i64>, _>("is_error")?.unwrap_or(0) != 0,
    })
}

pub(super) fn steering(row: &DbRow) -> Result<SteeringRecord, StoreError> {
    let decision: Option<String> = row.try_get("decision")?;
    let decision = match decision {
        None => None,
        Some(d) => Some(Decision::parse(&d).ok_or_else(|| {
            StoreError::Corrupt(serde::de::Error::custom(format!(
                "unknown steering decision {d}"
            )))
        })?),
    };
    Ok(SteeringRecord {
        request: json(row, "request")?,
        run_id: row.try_get("run_id")?,
        created_at: row.try_get("created_at")?,
        decision,
        message: row.try_get("message")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

pub(super) fn event(row: &DbRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get("type")?;
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        deployment_id: row.try_get("deployment_id")?,
        kind: EventType::parse(&kind).ok_or_else(|| {
            StoreError::Corrupt(serde::de::Error::custom(format!(
                "unknown event type {kind}"
            )))
        })?,
        thread_id: row.try_get("thread_id")?,
        run_id: row.try_get("run_id")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
    })
}
