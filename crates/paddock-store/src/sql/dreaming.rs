//! Dreaming passes (spec §3.4): which deployments are due one, and starting one.
//!
//! The decision is one SQL condition ([`DUE`]) used twice: as a cheap scan for the tick, and
//! again inside the write transaction that starts the pass, so a pass never starts on what a
//! scan saw earlier. The claim itself is conditional on `dreaming_passes` still holding the
//! row the transaction read (PostgreSQL: the same `UPDATE … WHERE last_started_at = ?`, or
//! `INSERT … ON CONFLICT DO NOTHING` for a first pass), so two ticks or two nodes racing start
//! exactly one pass even without SQLite's single writer.

use std::sync::LazyLock;

use paddock_protocol::event::payload;
use paddock_protocol::{EventType, RunUsage, run_status};
use serde_json::json;
use sqlx::Row;

use super::dialect::{DREAMING_AND_MEMORY_ON, begin, query, query_scalar};
use super::{DbConn, DbPool};

use super::map;
use super::store_impl::{append_tx, disabled_tools_tx, has_credits_tx};
use crate::{DreamingRules, DreamingStarted, NewEvent, RunRecord, StartDreaming, StoreError};

/// The trigger of a dreaming run.
const TRIGGER: &str = "dreaming";

/// Whether deployment `d` (joined with its pass record `p`, if any) is due a pass. Binds, in
/// order: now - interval, now - idle.
static DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "d.status = 'ready' AND {DREAMING_AND_MEMORY_ON} \
    AND (p.last_started_at IS NULL OR p.last_started_at < ?) \
    AND EXISTS (SELECT 1 FROM memories m WHERE m.deployment_id = d.id AND m.source = 'agent') \
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.deployment_id = d.id \
        AND r.status IN ('running', 'waiting_on_human')) \
    AND EXISTS (SELECT 1 FROM runs r WHERE r.deployment_id = d.id AND r.trigger != 'dreaming' \
        AND r.finished_at IS NOT NULL AND r.seq > COALESCE(p.run_seq, 0)) \
    AND COALESCE((SELECT MAX(r.finished_at) FROM runs r WHERE r.deployment_id = d.id \
        AND r.finished_at IS NOT NULL), 0) <= ?"
    )
});

const FROM: &str = "FROM deployments d LEFT JOIN dreaming_passes p ON p.deployment_id = d.id";

pub(super) async fn candidates(
    reader: &DbPool,
    rules: DreamingRules,
    now: i64,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let sql = format!("SELECT d.id {FROM} WHERE {} ORDER BY d.seq LIMIT ?", *DUE);
    let ids: Vec<String> = query_scalar(&sql)
        .bind(now.saturating_sub(rules.interval_secs))
        .bind(now.saturating_sub(rules.idle_secs))
        .bind(i64::from(limit))
        .fetch_all(reader)
        .await?;
    Ok(ids)
}

pub(super) async fn start(
    writer: &DbPool,
    s: StartDreaming,
) -> Result<Option<DreamingStarted>, StoreError> {
    let mut tx = begin(writer).await?;
    let sql = format!(
        "SELECT d.*, p.last_started_at AS pass_at {FROM} WHERE d.id = ? AND {}",
        *DUE
    );
    let Some(row) = query(&sql)
        .bind(&s.deployment_id)
        .bind(s.now.saturating_sub(s.rules.interval_secs))
        .bind(s.now.saturating_sub(s.rules.idle_secs))
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    // Spec §16.1: dreaming does not start while the balance is ≤ 0.
    if !has_credits_tx(&mut tx, &s.deployment_id).await? {
        return Ok(None);
    }
    let deployment = map::deployment(&row)?;
    let previous: Option<i64> = row.try_get("pass_at")?;
    let mut config = deployment.config.clone();
    config.disabled_tools = disabled_tools_tx(&mut tx, &s.deployment_id).await?;
    (s.restrict)(&mut config);
    let run = RunRecord {
        id: s.run_id.clone(),
        deployment_id: s.deployment_id.clone(),
        thread_id: None,
        status: run_status::RUNNING.to_owned(),
        trigger: TRIGGER.to_owned(),
        automation_id: None,
        model: config.model.clone(),
        config,
        steering_request: None,
        error: None,
        warnings: Vec::new(),
        usage: RunUsage::default(),
        step: 0,
        created_at: s.now,
        updated_at: s.now,
        finished_at: None,
    };
    let seq: i64 = query_scalar(
        "INSERT INTO runs (id, deployment_id, thread_id, status, trigger, model, config, \
         created_at, updated_at) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(&run.id)
    .bind(&run.deployment_id)
    .bind(&run.status)
    .bind(&run.trigger)
    .bind(&run.model)
    .bind(serde_json::to_string(&run.config)?)
    .bind(run.created_at)
    .bind(run.updated_at)
    .fetch_one(&mut *tx)
    .await?;
    if !claim_tx(&mut tx, &s, previous, seq).await? {
        return Ok(None);
    }
    query(
        "INSERT INTO conversation_items (deployment_id, thread_id, run_id, item, created_at) \
         VALUES (?, NULL, ?, ?, ?)",
    )
    .bind(&run.deployment_id)
    .bind(&run.id)
    .bind(serde_json::to_string(
        &json!({"type": "user", "content": s.input}),
    )?)
    .bind(s.now)
    .execute(&mut *tx)
    .await?;
    let event = NewEvent {
        kind: EventType::RunStatus,
        thread_id: None,
        run_id: Some(run.id.clone()),
        data: payload::run_status(
            &run.id,
            None,
            run_status::RUNNING,
            TRIGGER,
            None,
            Some("started"),
            None,
            None,
        ),
    };
    let events = append_tx(&mut tx, &s.deployment_id, vec![event], s.now).await?;
    tx.commit().await?;
    Ok(Some(DreamingStarted { run, events }))
}

/// Records the pass as the deployment's latest, only if the record still holds `previous`
/// (what the deciding read saw). `false`: someone else claimed it first.
async fn claim_tx(
    conn: &mut DbConn,
    s: &StartDreaming,
    previous: Option<i64>,
    run_seq: i64,
) -> Result<bool, StoreError> {
    let done = match previous {
        None => query(
            "INSERT INTO dreaming_passes (deployment_id, last_started_at, run_id, run_seq) \
             VALUES (?, ?, ?, ?) ON CONFLICT (deployment_id) DO NOTHING",
        )
        .bind(&s.deployment_id)
        .bind(s.now)
        .bind(&s.run_id)
        .bind(run_seq)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Some(at) => query(
            "UPDATE dreaming_passes SET last_started_at = ?, run_id = ?, run_seq = ? \
             WHERE deployment_id = ? AND last_started_at = ?",
        )
        .bind(s.now)
        .bind(&s.run_id)
        .bind(run_seq)
        .bind(&s.deployment_id)
        .bind(at)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    Ok(done == 1)
}
