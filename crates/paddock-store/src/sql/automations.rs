//! Automations (spec §9). A scheduled time is claimed by one conditional `UPDATE`
//! (`WHERE id = ? AND next_run_at = ?`) in the same transaction that stores the instructions
//! and starts the run (or holds the deferred firing), so each time fires at most once, whoever
//! asks and across restarts.

use sqlx::Row;

use super::dialect::{begin, query, query_scalar};
use super::{DbConn, DbPool, DbRow};

use super::store_impl::{
    NewRun, UserMessage, append_tx, insert_run_tx, insert_user_message_tx, started_event,
};
use super::{map, paging};
use crate::store::Paged;
use crate::{
    AutomationRecord, FireAutomation, FiringKind, FiringResult, PageRequest, StartedRun, StoreError,
};

/// Automations with the time and status of their latest run.
const SELECT: &str = "SELECT * FROM (SELECT a.*, \
    (SELECT r.created_at FROM runs r WHERE r.automation_id = a.id \
      ORDER BY r.created_at DESC, r.seq DESC LIMIT 1) AS last_run_at, \
    (SELECT r.status FROM runs r WHERE r.automation_id = a.id \
      ORDER BY r.created_at DESC, r.seq DESC LIMIT 1) AS last_run_status \
    FROM automations a) AS automations_view";

fn automation(row: &DbRow) -> Result<AutomationRecord, StoreError> {
    Ok(AutomationRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        name: row.try_get("name")?,
        schedule: row.try_get("schedule")?,
        schedule_text: row.try_get("schedule_text")?,
        instructions: row.try_get("instructions")?,
        thread_id: row.try_get("thread_id")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_by: row.try_get("created_by")?,
        next_run_at: row.try_get("next_run_at")?,
        deferred_at: row.try_get("deferred_at")?,
        last_run_at: row.try_get("last_run_at")?,
        last_run_status: row.try_get("last_run_status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

async fn thread_exists(
    conn: &mut DbConn,
    deployment_id: &str,
    thread_id: &str,
) -> Result<(), StoreError> {
    let exists: Option<i64> =
        query_scalar("SELECT CAST(1 AS BIGINT) FROM threads WHERE id = ? AND deployment_id = ?")
            .bind(thread_id)
            .bind(deployment_id)
            .fetch_optional(&mut *conn)
            .await?;
    exists.map(|_| ()).ok_or(StoreError::NotFound("thread"))
}

pub(super) async fn create(
    writer: &DbPool,
    a: &AutomationRecord,
    new_thread: bool,
    max: u32,
) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    let count: i64 = query_scalar("SELECT COUNT(*) FROM automations WHERE deployment_id = ?")
        .bind(&a.deployment_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= i64::from(max) {
        return Err(StoreError::LimitReached(format!(
            "The deployment already has {count} automations (the limit is {max}); delete one \
             first."
        )));
    }
    if new_thread {
        query(
            "INSERT INTO threads (id, deployment_id, title, is_default, automation_id, \
             created_at, last_activity_at) VALUES (?, ?, ?, 0, ?, ?, ?)",
        )
        .bind(&a.thread_id)
        .bind(&a.deployment_id)
        .bind(&a.name)
        .bind(&a.id)
        .bind(a.created_at)
        .bind(a.created_at)
        .execute(&mut *tx)
        .await?;
    } else {
        thread_exists(&mut tx, &a.deployment_id, &a.thread_id).await?;
    }
    query(
        "INSERT INTO automations (id, deployment_id, name, schedule, schedule_text, \
         instructions, thread_id, enabled, created_by, next_run_at, deferred_at, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.deployment_id)
    .bind(&a.name)
    .bind(&a.schedule)
    .bind(&a.schedule_text)
    .bind(&a.instructions)
    .bind(&a.thread_id)
    .bind(i64::from(a.enabled))
    .bind(&a.created_by)
    .bind(a.next_run_at)
    .bind(a.created_at)
    .bind(a.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(
    pool: &DbPool,
    deployment_id: &str,
    automation_id: &str,
) -> Result<AutomationRecord, StoreError> {
    let row = query(&format!("{SELECT} WHERE id = ? AND deployment_id = ?"))
        .bind(automation_id)
        .bind(deployment_id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound("automation"))?;
    automation(&row)
}

pub(super) async fn list(
    pool: &DbPool,
    deployment_id: &str,
    page: &PageRequest,
) -> Result<Paged<AutomationRecord>, StoreError> {
    paging::page(
        pool,
        SELECT,
        "deployment_id = ?",
        &[deployment_id],
        page,
        automation,
    )
    .await
}

pub(super) async fn update(
    writer: &DbPool,
    a: &AutomationRecord,
    reschedule: bool,
) -> Result<AutomationRecord, StoreError> {
    let mut tx = begin(writer).await?;
    thread_exists(&mut tx, &a.deployment_id, &a.thread_id).await?;
    // Pausing also drops a held firing: nothing fires while disabled (spec §9.3).
    let done = query(
        "UPDATE automations SET name = ?, schedule = ?, schedule_text = ?, instructions = ?, \
         thread_id = ?, enabled = ?, next_run_at = CASE WHEN ? THEN ? ELSE next_run_at END, \
         deferred_at = CASE WHEN ? THEN deferred_at ELSE NULL END, updated_at = ? \
         WHERE id = ? AND deployment_id = ?",
    )
    .bind(&a.name)
    .bind(&a.schedule)
    .bind(&a.schedule_text)
    .bind(&a.instructions)
    .bind(&a.thread_id)
    .bind(i64::from(a.enabled))
    .bind(reschedule)
    .bind(a.next_run_at)
    .bind(a.enabled)
    .bind(a.updated_at)
    .bind(&a.id)
    .bind(&a.deployment_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("automation"));
    }
    let row = query(&format!("{SELECT} WHERE id = ?"))
        .bind(&a.id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    automation(&row)
}

pub(super) async fn delete(
    writer: &DbPool,
    deployment_id: &str,
    automation_id: &str,
) -> Result<(), StoreError> {
    let done = query("DELETE FROM automations WHERE id = ? AND deployment_id = ?")
        .bind(automation_id)
        .bind(deployment_id)
        .execute(writer)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("automation"));
    }
    Ok(())
}

pub(super) async fn due(
    pool: &DbPool,
    now: i64,
    limit: u32,
) -> Result<Vec<AutomationRecord>, StoreError> {
    let rows = query(&format!(
        "{SELECT} WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= ? \
         ORDER BY next_run_at, seq LIMIT ?"
    ))
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(automation).collect()
}

pub(super) async fn deferred(
    pool: &DbPool,
    limit: u32,
) -> Result<Vec<AutomationRecord>, StoreError> {
    let rows = query(&format!(
        "{SELECT} WHERE deferred_at IS NOT NULL ORDER BY deferred_at, seq LIMIT ?"
    ))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(automation).collect()
}

/// Whether the thread has a run that is `running` or `waiting_on_human`.
async fn thread_busy(conn: &mut DbConn, thread_id: &str) -> Result<bool, StoreError> {
    let busy: Option<i64> = query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM runs WHERE thread_id = ? AND status IN ('running', 'waiting_on_human') \
         LIMIT 1",
    )
    .bind(thread_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(busy.is_some())
}

pub(super) async fn fire(writer: &DbPool, f: FireAutomation) -> Result<FiringResult, StoreError> {
    let mut tx = begin(writer).await?;
    let Some(row) = query(&format!("{SELECT} WHERE id = ?"))
        .bind(&f.automation_id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return match f.kind {
            FiringKind::Manual => Err(StoreError::NotFound("automation")),
            _ => Ok(FiringResult::NotClaimed),
        };
    };
    let a = automation(&row)?;
    let row = query("SELECT * FROM deployments WHERE id = ?")
        .bind(&a.deployment_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("deployment"))?;
    let deployment = map::deployment(&row)?;
    let active = deployment.status == "ready" && deployment.config.features.automations;
    let trigger = match f.kind {
        FiringKind::Scheduled {
            expected,
            next,
            fire,
        } => {
            if !a.enabled {
                return Ok(FiringResult::NotClaimed);
            }
            let claimed = query(
                "UPDATE automations SET next_run_at = ? \
                 WHERE id = ? AND enabled = 1 AND next_run_at = ?",
            )
            .bind(next)
            .bind(&a.id)
            .bind(expected)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(FiringResult::NotClaimed);
            }
            let Some(at) = fire.filter(|_| active) else {
                tx.commit().await?;
                return Ok(FiringResult::Advanced);
            };
            if thread_busy(&mut tx, &a.thread_id).await? || at_limit(&mut tx, &f).await? {
                let result = if a.deferred_at.is_none() {
                    query("UPDATE automations SET deferred_at = ? WHERE id = ?")
                        .bind(at)
                        .bind(&a.id)
                        .execute(&mut *tx)
                        .await?;
                    FiringResult::Deferred
                } else {
                    FiringResult::Dropped
                };
                tx.commit().await?;
                return Ok(result);
            }
            "schedule"
        }
        FiringKind::Deferred => {
            if a.deferred_at.is_none() {
                return Ok(FiringResult::NotClaimed);
            }
            if !active || !a.enabled {
                // Nothing fires while paused or with the feature off: the held firing goes.
                query("UPDATE automations SET deferred_at = NULL WHERE id = ?")
                    .bind(&a.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(FiringResult::Dropped);
            }
            if thread_busy(&mut tx, &a.thread_id).await? || at_limit(&mut tx, &f).await? {
                return Ok(FiringResult::NotClaimed);
            }
            query("UPDATE automations SET deferred_at = NULL WHERE id = ?")
                .bind(&a.id)
                .execute(&mut *tx)
                .await?;
            "schedule"
        }
        FiringKind::Manual => {
            if thread_busy(&mut tx, &a.thread_id).await? {
                return Err(StoreError::Conflict(format!(
                    "Thread {} has an active run; wait for it to end or cancel it.",
                    a.thread_id
                )));
            }
            "manual"
        }
    };
    let run = insert_run_tx(
        &mut tx,
        &deployment,
        &a.thread_id,
        NewRun {
            run_id: &f.run_id,
            trigger,
            automation_id: Some(&a.id),
            max_active_runs: f.max_active_runs,
        },
        f.now,
    )
    .await?;
    let message = insert_user_message_tx(
        &mut tx,
        &run,
        &a.thread_id,
        UserMessage {
            message_id: &f.message_id,
            content: &a.instructions,
            attachments: &[],
            automation_id: Some(&a.id),
        },
        false,
        f.now,
    )
    .await?;
    let events = append_tx(
        &mut tx,
        &a.deployment_id,
        vec![message, started_event(&run)],
        f.now,
    )
    .await?;
    tx.commit().await?;
    Ok(FiringResult::Started(Box::new(StartedRun {
        run,
        thread_id: a.thread_id,
        events,
    })))
}

/// Whether a new run would exceed the deployment's active-run limit (such a firing waits
/// like one on a busy thread).
async fn at_limit(conn: &mut DbConn, f: &FireAutomation) -> Result<bool, StoreError> {
    let running: i64 = query_scalar(
        "SELECT COUNT(*) FROM runs r JOIN automations a ON a.deployment_id = r.deployment_id \
         WHERE a.id = ? AND r.status = 'running'",
    )
    .bind(&f.automation_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(running >= i64::from(f.max_active_runs))
}
