use std::sync::LazyLock;

use paddock_protocol::event::payload;
use paddock_protocol::{ErrorInfo, EventType, RunUsage, StoredEvent, run_status};
use serde_json::{Value, json};
use sqlx::Row;

use super::dialect::{
    CLAIM_RUNS, COUNT_ASSISTANT_ITEMS, DEPLOYMENT_SECRETS, KEY_SCOPES,
    SELECT_LEASED_RUN_FOR_UPDATE, SELECT_RUN_FOR_UPDATE, begin, query, query_as, query_scalar,
};
use super::{DbConn, DbRow};

use super::{DbStore, automations, credit_holds, dreaming, map, memories, paging, skills};
use crate::store::{
    BalanceChange, EventNotice, FailOutcome, IdempotencyFingerprint, Paged, ToolCallOutcome,
};
use crate::{
    AccountRecord, AnswerOutcome, AttachmentOutcome, ClaimedRun, CompactionOutcome,
    CompactionRecord, CreditHold, Decision, DeploymentFilter, DeploymentRecord, IdempotencyBegin,
    KeyRecord, Lease, MessageRecord, ModelResponse, NewCompaction, NewEvent, OverdueRequest,
    PageRequest, PauseRun, PendingAttachments, RunFilter, RunRecord, SecretRecord, SendMessage,
    SendOutcome, SteeringAnswer, SteeringRecord, StepContext, Store, StoreError, ThreadRecord,
    ThreadTarget, ToolCallRecord,
};
use crate::{AutomationRecord, FireAutomation, FiringResult};
use crate::{DreamingRules, DreamingStarted, StartDreaming};
use crate::{MemoryFilter, MemoryRecord, SkillRecord};

/// Threads with their derived status and message count.
pub(super) const THREAD_SELECT: &str = "SELECT * FROM (SELECT t.*, \
    COALESCE((SELECT r.status FROM runs r WHERE r.thread_id = t.id \
      AND r.status IN ('running', 'waiting_on_human') LIMIT 1), 'idle') AS status, \
    (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id) AS message_count \
    FROM threads t) AS threads_view";

const ACTIVE: &str = "('running', 'waiting_on_human')";

/// One request-rate bucket take, as one statement: a new bucket starts full less the token
/// taken; an existing one is refilled for the time since its last take (never for time going
/// backwards, as it may between nodes' clocks), capped at the burst, and gives a token if it
/// holds one. The `excluded` row carries this call's values: capacity less one token, now, rate.
static RATE_TAKE: LazyLock<String> = LazyLock::new(|| {
    // At most 10^9 ms (11 days) of refill: the bucket is full long before, and the product
    // with the rate (at most 10^9 micro-tokens per ms) stays within i64.
    let elapsed = "(CASE WHEN excluded.refilled_ms <= rate_buckets.refilled_ms THEN 0 \
        WHEN excluded.refilled_ms - rate_buckets.refilled_ms > 1000000000 THEN 1000000000 \
        ELSE excluded.refilled_ms - rate_buckets.refilled_ms END)";
    let filled = format!("rate_buckets.micro_tokens + {elapsed} * excluded.rate");
    let cap = "(excluded.micro_tokens + 1000000)";
    let level = format!("(CASE WHEN {filled} > {cap} THEN {cap} ELSE {filled} END)");
    format!(
        "INSERT INTO rate_buckets (key_id, micro_tokens, refilled_ms, rate, taken) \
         VALUES (?, ?, ?, ?, 1) ON CONFLICT (key_id) DO UPDATE SET \
         taken = CASE WHEN {level} >= 1000000 THEN 1 ELSE 0 END, \
         micro_tokens = {level} - CASE WHEN {level} >= 1000000 THEN 1000000 ELSE 0 END, \
         refilled_ms = CASE WHEN excluded.refilled_ms > rate_buckets.refilled_ms \
           THEN excluded.refilled_ms ELSE rate_buckets.refilled_ms END, \
         rate = excluded.rate \
         RETURNING micro_tokens, taken"
    )
});

/// How long idempotency keys are kept (spec §1.10).
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn secret_row(row: &DbRow) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        customer_id: row.try_get("customer_id")?,
        ciphertext: row.try_get("ciphertext")?,
        created_at: row.try_get("created_at")?,
        used_by: row.try_get("used_by")?,
    })
}

fn to_json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

pub(super) fn credits_micros(c: f64) -> i64 {
    (c * 1_000_000.0).round() as i64
}

/// Appends events inside the caller's transaction, allocating consecutive sequence numbers
/// from the deployment's counter so id order is commit order.
pub(super) async fn append_tx(
    conn: &mut DbConn,
    deployment_id: &str,
    events: Vec<NewEvent>,
    now: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len() as i64;
    let last: Option<i64> = query_scalar(
        "UPDATE deployments SET event_seq = event_seq + ? WHERE id = ? RETURNING event_seq",
    )
    .bind(n)
    .bind(deployment_id)
    .fetch_optional(&mut *conn)
    .await?;
    let last = last.ok_or(StoreError::NotFound("deployment"))?;
    let mut seq = last - n;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let data = serde_json::to_string(&e.data)?;
        query(
            "INSERT INTO events (deployment_id, seq, type, thread_id, run_id, data, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(deployment_id)
        .bind(seq)
        .bind(e.kind.as_str())
        .bind(&e.thread_id)
        .bind(&e.run_id)
        .bind(&data)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        out.push(StoredEvent {
            seq,
            deployment_id: deployment_id.to_owned(),
            kind: e.kind,
            thread_id: e.thread_id,
            run_id: e.run_id,
            data,
            created_at: now,
        });
    }
    super::dialect::announce_events(conn, deployment_id, seq).await?;
    Ok(out)
}

async fn run_tx(conn: &mut DbConn, run_id: &str) -> Result<RunRecord, StoreError> {
    let row = query(SELECT_RUN_FOR_UPDATE)
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
    map::run(&row)
}

/// The run a worker's `lease` names, if it may still record progress for it: `RunFinished`
/// when the run is no longer `running`, `LeaseLost` when this node does not hold it.
///
/// The run row is locked only when the write may go ahead: a refused write's transaction is
/// rolled back when its connection goes back to the pool, and until then a row it had locked
/// would be skipped by other nodes' claims (`FOR UPDATE SKIP LOCKED`).
pub(super) async fn leased_run_tx(
    conn: &mut DbConn,
    lease: &Lease,
) -> Result<RunRecord, StoreError> {
    if let Some(row) = query(SELECT_LEASED_RUN_FOR_UPDATE)
        .bind(&lease.run_id)
        .bind(&lease.node_id)
        .fetch_optional(&mut *conn)
        .await?
    {
        return map::run(&row);
    }
    let (status,): (String,) = query_as("SELECT status FROM runs WHERE id = ?")
        .bind(&lease.run_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
    if status != run_status::RUNNING {
        return Err(StoreError::RunFinished);
    }
    Err(StoreError::LeaseLost)
}

/// The run's pending steering request, if any.
async fn pending_request_tx(
    conn: &mut DbConn,
    run_id: &str,
) -> Result<Option<SteeringRecord>, StoreError> {
    query("SELECT * FROM steering_requests WHERE run_id = ? AND decision IS NULL")
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| map::steering(&r))
        .transpose()
}

async fn resolve_request_tx(
    conn: &mut DbConn,
    request_id: &str,
    decision: Decision,
    message: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    query(
        "UPDATE steering_requests SET decision = ?, message = ?, resolved_at = ? \
         WHERE id = ? AND decision IS NULL",
    )
    .bind(decision.as_str())
    .bind(message)
    .bind(now)
    .bind(request_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Resolves a waiting run's pending request with an answer and makes the run `running` again,
/// unleased and with a fresh claim count (its next claim is a continuation, not a resume).
/// Returns the run, the `steering_resolved` and `run_status` events to append (after the
/// answer's `message` event, which the caller adds), and the request.
async fn answer_tx(
    conn: &mut DbConn,
    mut run: RunRecord,
    decision: Decision,
    message: Option<&str>,
    now: i64,
) -> Result<(RunRecord, Vec<NewEvent>, SteeringRecord), StoreError> {
    let pending = pending_request_tx(conn, &run.id)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("run {} has no pending request", run.id)))?;
    resolve_request_tx(conn, &pending.request.request_id, decision, message, now).await?;
    query(
        "UPDATE runs SET status = 'running', steering_request = NULL, updated_at = ?, \
         lease_owner = NULL, lease_expires_at = NULL, claims = 0 WHERE id = ?",
    )
    .bind(now)
    .bind(&run.id)
    .execute(&mut *conn)
    .await?;
    touch_thread_tx(conn, run.thread_id.as_deref(), now).await?;
    run.status = run_status::RUNNING.to_owned();
    run.steering_request = None;
    run.updated_at = now;
    let events = vec![
        NewEvent {
            kind: EventType::SteeringResolved,
            thread_id: run.thread_id.clone(),
            run_id: Some(run.id.clone()),
            data: payload::steering_resolved(
                &run.id,
                run.thread_id.as_deref(),
                &pending.request.request_id,
                decision.as_str(),
                message,
            ),
        },
        NewEvent {
            kind: EventType::RunStatus,
            thread_id: run.thread_id.clone(),
            run_id: Some(run.id.clone()),
            data: payload::run_status(
                &run.id,
                run.thread_id.as_deref(),
                run_status::RUNNING,
                &run.trigger,
                run.automation_id.as_deref(),
                Some("answered"),
                None,
                None,
            ),
        },
    ];
    Ok((run, events, pending))
}

/// Ends an active run in `error` inside the caller's transaction: unfinished tool calls get
/// `unfinished_result` (and `tool_result` events), a pending steering request is closed with
/// `decision`, then the terminal `run_status` (spec §5.3 order). Releases the lease.
async fn fail_tx(
    conn: &mut DbConn,
    mut run: RunRecord,
    error: ErrorInfo,
    unfinished_result: &Value,
    decision: Decision,
    now: i64,
) -> Result<(RunRecord, Vec<StoredEvent>), StoreError> {
    let rows = query("SELECT * FROM tool_calls WHERE run_id = ? AND state != 'done' ORDER BY seq")
        .bind(&run.id)
        .fetch_all(&mut *conn)
        .await?;
    let mut events = Vec::new();
    for row in &rows {
        let call = map::tool_call(row)?;
        query(
            "UPDATE tool_calls SET state = 'done', result = ?, is_error = 1 \
             WHERE run_id = ? AND id = ?",
        )
        .bind(to_json(unfinished_result)?)
        .bind(&run.id)
        .bind(&call.id)
        .execute(&mut *conn)
        .await?;
        let item = json!({
            "type": "tool_result", "call_id": call.id,
            "name": model_facing_name(&call.tool, &call.origin),
            "content": unfinished_result.to_string(), "is_error": true,
        });
        insert_item_tx(conn, &run, &item, now).await?;
        events.push(NewEvent {
            kind: EventType::ToolResult,
            thread_id: run.thread_id.clone(),
            run_id: Some(run.id.clone()),
            data: payload::tool_result(
                &run.id,
                run.thread_id.as_deref(),
                call.step,
                &call.id,
                &call.tool,
                &call.origin,
                unfinished_result,
                true,
                false,
                None,
            ),
        });
    }
    if let Some(pending) = pending_request_tx(conn, &run.id).await? {
        resolve_request_tx(conn, &pending.request.request_id, decision, None, now).await?;
        events.push(NewEvent {
            kind: EventType::SteeringResolved,
            thread_id: run.thread_id.clone(),
            run_id: Some(run.id.clone()),
            data: payload::steering_resolved(
                &run.id,
                run.thread_id.as_deref(),
                &pending.request.request_id,
                decision.as_str(),
                None,
            ),
        });
    }
    // Input the model never saw stays in the history but no longer waits for this run.
    query("UPDATE messages SET consumed = 1 WHERE run_id = ? AND consumed = 0")
        .bind(&run.id)
        .execute(&mut *conn)
        .await?;
    query(
        "UPDATE runs SET status = 'error', error = ?, steering_request = NULL, updated_at = ?, \
         finished_at = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
    )
    .bind(to_json(&error)?)
    .bind(now)
    .bind(now)
    .bind(&run.id)
    .execute(&mut *conn)
    .await?;
    touch_thread_tx(conn, run.thread_id.as_deref(), now).await?;
    events.push(NewEvent {
        kind: EventType::RunStatus,
        thread_id: run.thread_id.clone(),
        run_id: Some(run.id.clone()),
        data: payload::run_status(
            &run.id,
            run.thread_id.as_deref(),
            run_status::ERROR,
            &run.trigger,
            run.automation_id.as_deref(),
            None,
            Some(&error),
            Some(&run.usage),
        ),
    });
    let events = append_tx(conn, &run.deployment_id, events, now).await?;
    run.status = run_status::ERROR.to_owned();
    run.error = Some(error);
    run.steering_request = None;
    run.updated_at = now;
    run.finished_at = Some(now);
    Ok((run, events))
}

/// A user message about to be stored in a thread.
pub(super) struct UserMessage<'a> {
    pub(super) message_id: &'a str,
    pub(super) content: &'a str,
    pub(super) attachments: &'a [paddock_protocol::Attachment],
    /// Set when the message holds an automation's instructions (spec §9.3).
    pub(super) automation_id: Option<&'a str>,
}

/// A user message of a thread, stored with the run it went to. `consumed: false` queues it
/// for the run's next model call.
pub(super) async fn insert_user_message_tx(
    conn: &mut DbConn,
    run: &RunRecord,
    thread_id: &str,
    message: UserMessage<'_>,
    consumed: bool,
    now: i64,
) -> Result<NewEvent, StoreError> {
    let UserMessage {
        message_id,
        content,
        attachments,
        automation_id,
    } = message;
    query(
        "INSERT INTO messages (id, deployment_id, thread_id, role, content, run_id, attachments, \
         automation_id, consumed, created_at) VALUES (?, ?, ?, 'user', ?, ?, ?, ?, ?, ?)",
    )
    .bind(message_id)
    .bind(&run.deployment_id)
    .bind(thread_id)
    .bind(content)
    .bind(&run.id)
    .bind(to_json(&attachments)?)
    .bind(automation_id)
    .bind(i64::from(consumed))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    touch_thread_tx(conn, Some(thread_id), now).await?;
    let mut data = json!({
        "message_id": message_id, "thread_id": thread_id, "run_id": run.id,
        "role": "user", "content": content, "attachments": attachments,
    });
    if let (Some(a), Some(m)) = (automation_id, data.as_object_mut()) {
        m.insert("automation_id".into(), json!(a));
    }
    Ok(NewEvent {
        kind: EventType::Message,
        thread_id: Some(thread_id.to_owned()),
        run_id: Some(run.id.clone()),
        data,
    })
}

/// A message row's attachments and their outcomes so far.
fn attachments_of(
    row: &DbRow,
) -> Result<(Vec<paddock_protocol::Attachment>, Vec<AttachmentOutcome>), StoreError> {
    let attachments: String = row.try_get("attachments")?;
    let outcomes: String = row.try_get("attachment_outcomes")?;
    Ok((
        serde_json::from_str(&attachments)?,
        serde_json::from_str(&outcomes)?,
    ))
}

/// Whether every attachment has a final outcome.
fn attachments_resolved(
    attachments: &[paddock_protocol::Attachment],
    outcomes: &[AttachmentOutcome],
) -> bool {
    outcomes.len() >= attachments.len()
        && outcomes
            .iter()
            .take(attachments.len())
            .all(AttachmentOutcome::is_final)
}

/// A run about to start on an idle thread.
pub(super) struct NewRun<'a> {
    pub(super) run_id: &'a str,
    /// `message`, `schedule` or `manual` (spec §5.1).
    pub(super) trigger: &'a str,
    pub(super) automation_id: Option<&'a str>,
    /// Active (`running`) runs allowed per deployment before a new run is refused.
    pub(super) max_active_runs: u32,
}

/// The tools disabled on a deployment now: a run keeps the tool settings it starts with
/// (spec §18 guarantee 34), so every way of starting a run reads them in its own transaction.
pub(super) async fn disabled_tools_tx(
    conn: &mut DbConn,
    deployment_id: &str,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let names: Vec<String> =
        query_scalar("SELECT name FROM tool_settings WHERE deployment_id = ? AND enabled = 0")
            .bind(deployment_id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(names.into_iter().collect())
}

/// Starts a run on `thread_id` (which must have no active run) inside the caller's
/// transaction: `LimitReached` when the deployment already has `max_active_runs` running. The
/// run keeps the deployment's configuration and tool settings as they are now. The caller
/// stores the run's input message and appends [`started_event`].
pub(super) async fn insert_run_tx(
    conn: &mut DbConn,
    deployment: &DeploymentRecord,
    thread_id: &str,
    new: NewRun<'_>,
    now: i64,
) -> Result<RunRecord, StoreError> {
    let running: i64 =
        query_scalar("SELECT COUNT(*) FROM runs WHERE deployment_id = ? AND status = 'running'")
            .bind(&deployment.id)
            .fetch_one(&mut *conn)
            .await?;
    if running >= i64::from(new.max_active_runs) {
        return Err(StoreError::LimitReached(format!(
            "Deployment {} already has {running} active runs.",
            deployment.id
        )));
    }
    let mut config = deployment.config.clone();
    config.disabled_tools = disabled_tools_tx(conn, &deployment.id).await?;
    let run = RunRecord {
        id: new.run_id.to_owned(),
        deployment_id: deployment.id.clone(),
        thread_id: Some(thread_id.to_owned()),
        status: run_status::RUNNING.to_owned(),
        trigger: new.trigger.to_owned(),
        automation_id: new.automation_id.map(str::to_owned),
        model: deployment.config.model.clone(),
        config,
        steering_request: None,
        error: None,
        warnings: Vec::new(),
        usage: RunUsage::default(),
        step: 0,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    query(
        "INSERT INTO runs (id, deployment_id, thread_id, status, trigger, automation_id, model, \
         config, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&run.id)
    .bind(&run.deployment_id)
    .bind(&run.thread_id)
    .bind(&run.status)
    .bind(&run.trigger)
    .bind(&run.automation_id)
    .bind(&run.model)
    .bind(to_json(&run.config)?)
    .bind(run.created_at)
    .bind(run.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(run)
}

/// The `run_status` `running`/`started` event of a new run.
pub(super) fn started_event(run: &RunRecord) -> NewEvent {
    NewEvent {
        kind: EventType::RunStatus,
        thread_id: run.thread_id.clone(),
        run_id: Some(run.id.clone()),
        data: payload::run_status(
            &run.id,
            run.thread_id.as_deref(),
            run_status::RUNNING,
            &run.trigger,
            run.automation_id.as_deref(),
            Some("started"),
            None,
            None,
        ),
    }
}

async fn touch_thread_tx(
    conn: &mut DbConn,
    thread_id: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(t) = thread_id {
        query("UPDATE threads SET last_activity_at = ? WHERE id = ?")
            .bind(now)
            .bind(t)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn conversation_tx(conn: &mut DbConn, run: &RunRecord) -> Result<Vec<Value>, StoreError> {
    let rows = match &run.thread_id {
        Some(t) => {
            query("SELECT item FROM conversation_items WHERE thread_id = ? ORDER BY seq")
                .bind(t)
                .fetch_all(&mut *conn)
                .await?
        }
        None => {
            query("SELECT item FROM conversation_items WHERE run_id = ? ORDER BY seq")
                .bind(&run.id)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    rows.iter()
        .map(|r| {
            let s: String = r.try_get("item")?;
            Ok(serde_json::from_str(&s)?)
        })
        .collect()
}

async fn insert_item_tx(
    conn: &mut DbConn,
    run: &RunRecord,
    item: &Value,
    now: i64,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO conversation_items (deployment_id, thread_id, run_id, item, created_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&run.deployment_id)
    .bind(&run.thread_id)
    .bind(&run.id)
    .bind(serde_json::to_string(item)?)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether the account owning `deployment_id` may still make model calls: an unlimited
/// (`NULL`) balance or one above zero.
pub(super) async fn has_credits_tx(
    conn: &mut DbConn,
    deployment_id: &str,
) -> Result<bool, StoreError> {
    let balance: Option<Option<i64>> = query_scalar(
        "SELECT a.balance_micros FROM accounts a JOIN deployments d ON d.account_id = a.id \
         WHERE d.id = ?",
    )
    .bind(deployment_id)
    .fetch_optional(&mut *conn)
    .await?;
    let balance = balance.ok_or(StoreError::NotFound("deployment"))?;
    Ok(balance.is_none_or(|b| b > 0))
}

/// Takes what `usage` adds to the run's stored credits off its account's balance (unless
/// unlimited), and stores `usage` as the run's, ending the run's credit hold (the call it was
/// for is charged now). One `UPDATE … SET balance = balance - ?`, so concurrent debits never
/// lose one another.
async fn charge_usage_tx(
    conn: &mut DbConn,
    run: &RunRecord,
    usage: &RunUsage,
    now: i64,
) -> Result<(), StoreError> {
    let charge = credits_micros(usage.credits) - credits_micros(run.usage.credits);
    if charge != 0 {
        query(
            "UPDATE accounts SET balance_micros = balance_micros - ? \
             WHERE balance_micros IS NOT NULL \
             AND id = (SELECT account_id FROM deployments WHERE id = ?)",
        )
        .bind(charge)
        .bind(&run.deployment_id)
        .execute(&mut *conn)
        .await?;
    }
    query(
        "UPDATE runs SET input_tokens = ?, output_tokens = ?, credits_micros = ?, \
         credit_hold_micros = 0, updated_at = ? WHERE id = ?",
    )
    .bind(usage.input_tokens as i64)
    .bind(usage.output_tokens as i64)
    .bind(credits_micros(usage.credits))
    .bind(now)
    .bind(&run.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The model-facing name of a tool (spec §13.3: built-ins by name, MCP tools qualified).
fn model_facing_name(tool: &str, origin: &str) -> String {
    if origin == "builtin" {
        tool.to_owned()
    } else {
        format!("{origin}__{tool}")
    }
}

#[async_trait::async_trait]
impl Store for DbStore {
    async fn bootstrap_default_account(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let count: i64 = query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(None);
        }
        let account = AccountRecord {
            id: account_id.to_owned(),
            name: "default".to_owned(),
            balance_micros: None,
            created_at: now,
        };
        query("INSERT INTO accounts (id, name, balance_micros, created_at) VALUES (?, ?, ?, ?)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(account.balance_micros)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(account))
    }

    async fn create_account(&self, a: &AccountRecord) -> Result<(), StoreError> {
        query("INSERT INTO accounts (id, name, balance_micros, created_at) VALUES (?, ?, ?, ?)")
            .bind(&a.id)
            .bind(&a.name)
            .bind(a.balance_micros)
            .bind(a.created_at)
            .execute(&self.writer)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("An account named {} already exists.", a.name))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn get_account(&self, account_id: &str) -> Result<AccountRecord, StoreError> {
        let row = query("SELECT * FROM accounts WHERE id = ?")
            .bind(account_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("account"))?;
        map::account(&row)
    }

    async fn get_account_by_name(&self, name: &str) -> Result<AccountRecord, StoreError> {
        let row = query("SELECT * FROM accounts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("account"))?;
        map::account(&row)
    }

    async fn list_accounts(&self, page: &PageRequest) -> Result<Paged<AccountRecord>, StoreError> {
        paging::page(
            &self.reader,
            "SELECT * FROM accounts",
            "1 = 1",
            &[],
            page,
            map::account,
        )
        .await
    }

    async fn update_balance(
        &self,
        account_id: &str,
        change: BalanceChange,
    ) -> Result<AccountRecord, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let row = query("SELECT * FROM accounts WHERE id = ?")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("account"))?;
        let mut account = map::account(&row)?;
        account.balance_micros = match change {
            BalanceChange::Set(b) => b,
            BalanceChange::Add(delta) => match account.balance_micros {
                Some(b) => Some(b.saturating_add(delta)),
                None => {
                    return Err(StoreError::Conflict(
                        "The account's balance is unlimited (null); set a balance first."
                            .to_owned(),
                    ));
                }
            },
        };
        query("UPDATE accounts SET balance_micros = ? WHERE id = ?")
            .bind(account.balance_micros)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(account)
    }

    async fn create_key(&self, k: &KeyRecord) -> Result<(), StoreError> {
        query(
            "INSERT INTO api_keys (id, account_id, name, prefix, hash, scopes, created_at, \
             last_used_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.account_id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(to_json(&k.scopes)?)
        .bind(k.created_at)
        .bind(k.last_used_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = query("SELECT * FROM api_keys WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(map::key).transpose()
    }

    async fn get_key(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
        let row = query("SELECT * FROM api_keys WHERE id = ?")
            .bind(key_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        map::key(&row)
    }

    async fn list_keys(
        &self,
        account_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Paged<KeyRecord>, StoreError> {
        match account_id {
            Some(a) => {
                paging::page(
                    &self.reader,
                    "SELECT * FROM api_keys",
                    "account_id = ?",
                    &[a],
                    page,
                    map::key,
                )
                .await
            }
            None => {
                paging::page(
                    &self.reader,
                    "SELECT * FROM api_keys",
                    "1 = 1",
                    &[],
                    page,
                    map::key,
                )
                .await
            }
        }
    }

    async fn revoke_key(&self, key_id: &str, now: i64) -> Result<KeyRecord, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let row = query("SELECT * FROM api_keys WHERE id = ?")
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        let mut key = map::key(&row)?;
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let active = key.expires_at.is_none_or(|e| e > now);
        if active && key.scopes.iter().any(|s| s == "admin") {
            let sql = format!(
                "SELECT COUNT(*) FROM api_keys WHERE id != ? AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > ?) \
                 AND EXISTS (SELECT 1 FROM {KEY_SCOPES} WHERE value = 'admin')"
            );
            let others: i64 = query_scalar(&sql)
                .bind(key_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            if others == 0 {
                return Err(StoreError::Conflict(
                    "This is the last active admin key on the server; create another admin key first."
                        .to_owned(),
                ));
            }
        }
        query("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
            .bind(now)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        key.revoked_at = Some(now);
        Ok(key)
    }

    async fn touch_key(&self, key_id: &str, now: i64) -> Result<(), StoreError> {
        query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(key_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn create_deployment(&self, d: &DeploymentRecord) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        query(
            "INSERT INTO deployments (id, account_id, customer_id, name, runtime, status, error, \
             default_thread_id, config, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.id)
        .bind(&d.account_id)
        .bind(&d.customer_id)
        .bind(&d.name)
        .bind(&d.runtime)
        .bind(&d.status)
        .bind(d.error.as_ref().map(to_json).transpose()?)
        .bind(&d.default_thread_id)
        .bind(to_json(&d.config)?)
        .bind(d.created_at)
        .bind(d.updated_at)
        .execute(&mut *tx)
        .await?;
        query(
            "INSERT INTO threads (id, deployment_id, title, is_default, created_at, last_activity_at) \
             VALUES (?, ?, 'Default', 1, ?, ?)",
        )
        .bind(&d.default_thread_id)
        .bind(&d.id)
        .bind(d.created_at)
        .bind(d.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_deployment(
        &self,
        account_id: &str,
        deployment_id: &str,
    ) -> Result<DeploymentRecord, StoreError> {
        let row = query("SELECT * FROM deployments WHERE id = ? AND account_id = ?")
            .bind(deployment_id)
            .bind(account_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("deployment"))?;
        map::deployment(&row)
    }

    async fn list_deployments(
        &self,
        account_id: &str,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Paged<DeploymentRecord>, StoreError> {
        let mut scope = String::from("account_id = ?");
        let mut binds = vec![account_id];
        if let Some(c) = &filter.customer_id {
            scope.push_str(" AND customer_id = ?");
            binds.push(c);
        }
        if let Some(s) = &filter.status {
            scope.push_str(" AND status = ?");
            binds.push(s);
        }
        paging::page(
            &self.reader,
            "SELECT * FROM deployments",
            &scope,
            &binds,
            page,
            map::deployment,
        )
        .await
    }

    async fn update_deployment(&self, d: &DeploymentRecord) -> Result<(), StoreError> {
        let done = query(
            "UPDATE deployments SET name = ?, config = ?, updated_at = ? \
             WHERE id = ? AND account_id = ?",
        )
        .bind(&d.name)
        .bind(to_json(&d.config)?)
        .bind(d.updated_at)
        .bind(&d.id)
        .bind(&d.account_id)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("deployment"));
        }
        Ok(())
    }

    async fn set_deployment_status(&self, d: &DeploymentRecord) -> Result<(), StoreError> {
        let done = query(
            "UPDATE deployments SET status = ?, error = ?, updated_at = ? \
             WHERE id = ? AND account_id = ?",
        )
        .bind(&d.status)
        .bind(d.error.as_ref().map(to_json).transpose()?)
        .bind(d.updated_at)
        .bind(&d.id)
        .bind(&d.account_id)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("deployment"));
        }
        Ok(())
    }

    async fn count_deployments_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            query_as("SELECT status, COUNT(*) FROM deployments GROUP BY status")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows)
    }

    async fn provisioning_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = query("SELECT * FROM deployments WHERE status = 'provisioning'")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(map::deployment).collect()
    }

    async fn delete_deployment(
        &self,
        account_id: &str,
        deployment_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let active: Vec<String> = query_scalar(&format!(
            "SELECT id FROM runs WHERE deployment_id = ? AND status IN {ACTIVE}"
        ))
        .bind(deployment_id)
        .fetch_all(&mut *tx)
        .await?;
        let done = query("DELETE FROM deployments WHERE id = ? AND account_id = ?")
            .bind(deployment_id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("deployment"));
        }
        tx.commit().await?;
        Ok(active)
    }

    async fn create_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
        title: Option<&str>,
        now: i64,
    ) -> Result<ThreadRecord, StoreError> {
        query(
            "INSERT INTO threads (id, deployment_id, title, is_default, created_at, last_activity_at) \
             VALUES (?, ?, ?, 0, ?, ?)",
        )
        .bind(thread_id)
        .bind(deployment_id)
        .bind(title)
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(ThreadRecord {
            id: thread_id.to_owned(),
            deployment_id: deployment_id.to_owned(),
            title: title.map(str::to_owned),
            is_default: false,
            automation_id: None,
            status: "idle".to_owned(),
            message_count: 0,
            created_at: now,
            last_activity_at: now,
        })
    }

    async fn get_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
    ) -> Result<ThreadRecord, StoreError> {
        let row = query(&format!(
            "{THREAD_SELECT} WHERE id = ? AND deployment_id = ?"
        ))
        .bind(thread_id)
        .bind(deployment_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("thread"))?;
        map::thread(&row)
    }

    async fn list_threads(
        &self,
        deployment_id: &str,
        page: &PageRequest,
    ) -> Result<Paged<ThreadRecord>, StoreError> {
        paging::page(
            &self.reader,
            THREAD_SELECT,
            "deployment_id = ?",
            &[deployment_id],
            page,
            map::thread,
        )
        .await
    }

    async fn set_thread_title(
        &self,
        deployment_id: &str,
        thread_id: &str,
        title: Option<&str>,
    ) -> Result<ThreadRecord, StoreError> {
        let done = query("UPDATE threads SET title = ? WHERE id = ? AND deployment_id = ?")
            .bind(title)
            .bind(thread_id)
            .bind(deployment_id)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("thread"));
        }
        self.get_thread(deployment_id, thread_id).await
    }

    async fn delete_thread(&self, deployment_id: &str, thread_id: &str) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        let row = query(&format!(
            "{THREAD_SELECT} WHERE id = ? AND deployment_id = ?"
        ))
        .bind(thread_id)
        .bind(deployment_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("thread"))?;
        let thread = map::thread(&row)?;
        if thread.is_default {
            return Err(StoreError::Conflict(
                "The default thread cannot be deleted.".to_owned(),
            ));
        }
        if thread.status != "idle" {
            return Err(StoreError::Conflict(format!(
                "Thread {thread_id} has an active run; cancel it first."
            )));
        }
        let automation: Option<String> =
            query_scalar("SELECT id FROM automations WHERE thread_id = ? LIMIT 1")
                .bind(thread_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(a) = automation {
            return Err(StoreError::Conflict(format!(
                "Automation {a} targets thread {thread_id}; delete the automation or point it \
                 at another thread first."
            )));
        }
        query("DELETE FROM threads WHERE id = ?")
            .bind(thread_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn thread_messages(
        &self,
        thread_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<(Vec<MessageRecord>, bool), StoreError> {
        let upper: i64 = match before {
            Some(m) => query_scalar("SELECT seq FROM messages WHERE id = ? AND thread_id = ?")
                .bind(m)
                .bind(thread_id)
                .fetch_optional(&self.reader)
                .await?
                .ok_or(StoreError::NotFound("message"))?,
            None => i64::MAX,
        };
        let rows = query(
            "SELECT * FROM messages WHERE thread_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(thread_id)
        .bind(upper)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let more = rows.len() > limit as usize;
        let mut out = rows
            .iter()
            .take(limit as usize)
            .map(map::message)
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok((out, more))
    }

    async fn send_message(&self, s: SendMessage) -> Result<SendOutcome, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let row = query("SELECT * FROM deployments WHERE id = ?")
            .bind(&s.deployment_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("deployment"))?;
        let deployment = map::deployment(&row)?;
        let thread_id = match &s.target {
            ThreadTarget::Default => deployment.default_thread_id.clone(),
            ThreadTarget::Id(t) => {
                let exists: Option<i64> = query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM threads WHERE id = ? AND deployment_id = ?",
                )
                .bind(t)
                .bind(&s.deployment_id)
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound("thread"));
                }
                t.clone()
            }
            ThreadTarget::New => {
                query(
                    "INSERT INTO threads (id, deployment_id, title, is_default, created_at, \
                     last_activity_at) VALUES (?, ?, NULL, 0, ?, ?)",
                )
                .bind(&s.new_thread_id)
                .bind(&s.deployment_id)
                .bind(s.now)
                .bind(s.now)
                .execute(&mut *tx)
                .await?;
                s.new_thread_id.clone()
            }
        };
        let active = query(&format!(
            "SELECT * FROM runs WHERE thread_id = ? AND status IN {ACTIVE}"
        ))
        .bind(&thread_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (run, started) = match active {
            Some(r) => (map::run(&r)?, false),
            None => {
                let run = insert_run_tx(
                    &mut tx,
                    &deployment,
                    &thread_id,
                    NewRun {
                        run_id: &s.new_run_id,
                        trigger: "message",
                        automation_id: None,
                        max_active_runs: s.max_active_runs,
                    },
                    s.now,
                )
                .await?;
                (run, true)
            }
        };
        // A waiting run is answered by the message (spec §4.2, §6.3a): it is stored with the
        // run but not queued as input, since the answer reaches the model through the held
        // call's result.
        let waiting = !started && run.status == run_status::WAITING;
        let mut events = vec![
            insert_user_message_tx(
                &mut tx,
                &run,
                &thread_id,
                UserMessage {
                    message_id: &s.message_id,
                    content: &s.content,
                    attachments: &s.attachments,
                    automation_id: None,
                },
                waiting,
                s.now,
            )
            .await?,
        ];
        let mut run = run;
        if waiting {
            let (answered, resolved, _) =
                answer_tx(&mut tx, run, s.answer, Some(&s.content), s.now).await?;
            run = answered;
            events.extend(resolved);
        }
        if started {
            events.push(started_event(&run));
        }
        let events = append_tx(&mut tx, &s.deployment_id, events, s.now).await?;
        tx.commit().await?;
        Ok(SendOutcome {
            run,
            thread_id,
            message_id: s.message_id,
            started_run: started,
            answered: waiting,
            events,
        })
    }

    async fn get_run(&self, deployment_id: &str, run_id: &str) -> Result<RunRecord, StoreError> {
        let row = query("SELECT * FROM runs WHERE id = ? AND deployment_id = ?")
            .bind(run_id)
            .bind(deployment_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        map::run(&row)
    }

    async fn list_runs(
        &self,
        deployment_id: &str,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Paged<RunRecord>, StoreError> {
        let mut scope = String::from("deployment_id = ?");
        let mut binds = vec![deployment_id];
        for (col, val) in [
            ("thread_id", &filter.thread_id),
            ("status", &filter.status),
            ("automation_id", &filter.automation_id),
            ("trigger", &filter.trigger),
        ] {
            if let Some(v) = val {
                scope.push_str(&format!(" AND {col} = ?"));
                binds.push(v);
            }
        }
        paging::page(
            &self.reader,
            "SELECT * FROM runs",
            &scope,
            &binds,
            page,
            map::run,
        )
        .await
    }

    async fn pending_attachments(
        &self,
        lease: &Lease,
    ) -> Result<Vec<PendingAttachments>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows = query(
            "SELECT id, attachments, attachment_outcomes FROM messages \
             WHERE run_id = ? AND consumed = 0 AND attachments != '[]' ORDER BY seq",
        )
        .bind(&lease.run_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let (attachments, outcomes) = attachments_of(row)?;
            if !attachments_resolved(&attachments, &outcomes) {
                out.push(PendingAttachments {
                    message_id: row.try_get("id")?,
                    attachments,
                    outcomes,
                });
            }
        }
        Ok(out)
    }

    async fn set_attachment_outcomes(
        &self,
        lease: &Lease,
        message_id: &str,
        outcomes: &[AttachmentOutcome],
    ) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        leased_run_tx(&mut tx, lease).await?;
        let done = query(
            "UPDATE messages SET attachment_outcomes = ? \
             WHERE id = ? AND run_id = ? AND consumed = 0",
        )
        .bind(to_json(&outcomes)?)
        .bind(message_id)
        .bind(&lease.run_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("message"));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn begin_step(&self, lease: &Lease, now: i64) -> Result<StepContext, StoreError> {
        let run_id = lease.run_id.as_str();
        let mut tx = begin(&self.writer).await?;
        let mut run = leased_run_tx(&mut tx, lease).await?;
        // Spec §16.1: a run ends at its next model call while the balance is ≤ 0. The balance
        // is read on the single writer connection, the one every debit goes through, so it
        // includes every call recorded before this step began.
        if !has_credits_tx(&mut tx, &run.deployment_id).await? {
            return Err(StoreError::InsufficientCredits);
        }
        let pending = query(
            "SELECT id, content, attachments, attachment_outcomes FROM messages \
             WHERE run_id = ? AND consumed = 0 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?;
        for p in &pending {
            let id: String = p.try_get("id")?;
            let content: String = p.try_get("content")?;
            let (attachments, outcomes) = attachments_of(p)?;
            // Spec §4.3: a message reaches the model with its attachments fetched; it and
            // everything queued after it wait for the next step otherwise (arrival order).
            if !attachments_resolved(&attachments, &outcomes) {
                break;
            }
            let mut item = json!({"type": "user", "content": content});
            if !attachments.is_empty() {
                let entries = attachments
                    .iter()
                    .zip(&outcomes)
                    .map(|(a, o)| {
                        let mut entry = serde_json::to_value(o)?;
                        if let Some(obj) = entry.as_object_mut() {
                            obj.insert("type".to_owned(), json!(a.kind));
                            obj.insert("url".to_owned(), json!(a.url));
                        }
                        Ok(entry)
                    })
                    .collect::<Result<Vec<Value>, serde_json::Error>>()?;
                item["attachments"] = Value::Array(entries);
            }
            insert_item_tx(&mut tx, &run, &item, now).await?;
            query("UPDATE messages SET consumed = 1 WHERE id = ?")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        // Every recorded model response is one `assistant` item. Fewer of them than `step`
        // means the call of the current step never finished (the process stopped during it):
        // it is redone under the same step (spec §5.4). Otherwise this is the next step.
        let answered: i64 = query_scalar(COUNT_ASSISTANT_ITEMS)
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
        if answered >= run.step {
            run.step += 1;
        }
        query("UPDATE runs SET step = ?, updated_at = ? WHERE id = ?")
            .bind(run.step)
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let items = conversation_tx(&mut tx, &run).await?;
        tx.commit().await?;
        Ok(StepContext {
            run,
            items,
            unfinished_calls: Vec::new(),
            steering: Vec::new(),
        })
    }

    async fn hold_credits(&self, lease: &Lease, up_to: f64) -> Result<CreditHold, StoreError> {
        credit_holds::hold(&self.reader, &self.writer, lease, up_to).await
    }

    async fn charge_usage(
        &self,
        lease: &Lease,
        usage: RunUsage,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        charge_usage_tx(&mut tx, &run, &usage, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn step_context(&self, run_id: &str) -> Result<StepContext, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let run = run_tx(&mut conn, run_id).await?;
        let items = conversation_tx(&mut conn, &run).await?;
        let rows =
            query("SELECT * FROM tool_calls WHERE run_id = ? AND state != 'done' ORDER BY seq")
                .bind(run_id)
                .fetch_all(&mut *conn)
                .await?;
        let unfinished_calls = rows.iter().map(map::tool_call).collect::<Result<_, _>>()?;
        let rows = query("SELECT * FROM steering_requests WHERE run_id = ? ORDER BY seq")
            .bind(run_id)
            .fetch_all(&mut *conn)
            .await?;
        let steering = rows.iter().map(map::steering).collect::<Result<_, _>>()?;
        Ok(StepContext {
            run,
            items,
            unfinished_calls,
            steering,
        })
    }

    async fn record_model_response(
        &self,
        lease: &Lease,
        r: ModelResponse,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        insert_item_tx(&mut tx, &run, &r.item, r.now).await?;
        if let (Some((message_id, content)), Some(thread_id)) = (&r.agent_message, &run.thread_id) {
            query(
                "INSERT INTO messages (id, deployment_id, thread_id, role, content, run_id, \
                 consumed, created_at) VALUES (?, ?, ?, 'agent', ?, ?, 1, ?)",
            )
            .bind(message_id)
            .bind(&run.deployment_id)
            .bind(thread_id)
            .bind(content)
            .bind(&run.id)
            .bind(r.now)
            .execute(&mut *tx)
            .await?;
        }
        for c in &r.tool_calls {
            query(
                "INSERT INTO tool_calls (id, run_id, deployment_id, step, tool, origin, arguments, \
                 state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            )
            .bind(&c.id)
            .bind(&run.id)
            .bind(&run.deployment_id)
            .bind(r.step)
            .bind(&c.tool)
            .bind(&c.origin)
            .bind(to_json(&c.arguments)?)
            .bind(r.now)
            .execute(&mut *tx)
            .await?;
        }
        // Spec §16.1: what this call added to the run's credits comes off the account's
        // balance (unless unlimited) in the transaction that records the call, so a recorded
        // call is charged exactly once. The balance may go below zero, by less than one call's
        // cost: the call was let through by `hold_credits` (see `credit_holds`).
        charge_usage_tx(&mut tx, &run, &r.usage, r.now).await?;
        touch_thread_tx(&mut tx, run.thread_id.as_deref(), r.now).await?;
        let events = append_tx(&mut tx, &run.deployment_id, r.events, r.now).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn start_tool_call(&self, lease: &Lease, call_id: &str) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        leased_run_tx(&mut tx, lease).await?;
        query(
            "UPDATE tool_calls SET state = 'started' WHERE id = ? AND run_id = ? AND state = 'pending'",
        )
        .bind(call_id)
        .bind(&lease.run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_tool_call(
        &self,
        lease: &Lease,
        call_id: &str,
        outcome: ToolCallOutcome,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let ToolCallOutcome {
            result,
            is_error,
            item,
            events,
            now,
        } = outcome;
        let result = &result;
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        let done = query(
            "UPDATE tool_calls SET state = 'done', result = ?, is_error = ? \
             WHERE id = ? AND run_id = ? AND state != 'done'",
        )
        .bind(to_json(result)?)
        .bind(i64::from(is_error))
        .bind(call_id)
        .bind(&run.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Never two results for one call (spec §7.4 rule 3).
            return Err(StoreError::Conflict(format!(
                "tool call {call_id} of run {} has a result already, or does not exist",
                run.id
            )));
        }
        insert_item_tx(&mut tx, &run, &item, now).await?;
        let events = append_tx(&mut tx, &run.deployment_id, events, now).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn append_run_events(
        &self,
        lease: &Lease,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        let events = append_tx(&mut tx, &run.deployment_id, events, now).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn complete_run(
        &self,
        lease: &Lease,
        usage: RunUsage,
        now: i64,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        let run_id = lease.run_id.as_str();
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        let pending: i64 =
            query_scalar("SELECT COUNT(*) FROM messages WHERE run_id = ? AND consumed = 0")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        if pending > 0 {
            return Ok(None);
        }
        query(
            "UPDATE runs SET status = 'completed', input_tokens = ?, output_tokens = ?, \
             credits_micros = ?, updated_at = ?, finished_at = ?, lease_owner = NULL, \
             lease_expires_at = NULL WHERE id = ?",
        )
        .bind(usage.input_tokens as i64)
        .bind(usage.output_tokens as i64)
        .bind(credits_micros(usage.credits))
        .bind(now)
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        touch_thread_tx(&mut tx, run.thread_id.as_deref(), now).await?;
        let event = NewEvent {
            kind: EventType::RunStatus,
            thread_id: run.thread_id.clone(),
            run_id: Some(run.id.clone()),
            data: payload::run_status(
                &run.id,
                run.thread_id.as_deref(),
                run_status::COMPLETED,
                &run.trigger,
                run.automation_id.as_deref(),
                None,
                None,
                Some(&usage),
            ),
        };
        let events = append_tx(&mut tx, &run.deployment_id, vec![event], now).await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    async fn fail_run(
        &self,
        run_id: &str,
        error: ErrorInfo,
        unfinished_result: Value,
        now: i64,
    ) -> Result<FailOutcome, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = run_tx(&mut tx, run_id).await?;
        if run.status == run_status::COMPLETED || run.status == run_status::ERROR {
            return Ok(FailOutcome::AlreadyEnded(run));
        }
        let (run, events) = fail_tx(
            &mut tx,
            run,
            error,
            &unfinished_result,
            Decision::Cancelled,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(FailOutcome::Ended(run, events))
    }

    async fn claim_runnable_runs(
        &self,
        node_id: &str,
        limit: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One statement: two claimers never get one run (see `CLAIM_RUNS`).
        let rows = query(CLAIM_RUNS)
            .bind(node_id)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.writer)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let claims: i64 = row.try_get("claims")?;
                Ok((
                    seq,
                    ClaimedRun {
                        run: map::run(row)?,
                        resumed: claims > 1,
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn renew_leases(
        &self,
        node_id: &str,
        lease_until: i64,
    ) -> Result<Vec<String>, StoreError> {
        let ids = query_scalar(
            "UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? AND status = 'running' \
             RETURNING id",
        )
        .bind(lease_until)
        .bind(node_id)
        .fetch_all(&self.writer)
        .await?;
        Ok(ids)
    }

    async fn release_leases(&self, node_id: &str) -> Result<u64, StoreError> {
        let done = query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, credit_hold_micros = 0 \
             WHERE lease_owner = ?",
        )
        .bind(node_id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn pause_run(
        &self,
        lease: &Lease,
        pause: PauseRun,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let PauseRun {
            request,
            events,
            now,
        } = pause;
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        let held: Option<String> =
            query_scalar("SELECT state FROM tool_calls WHERE id = ? AND run_id = ?")
                .bind(&request.call_id)
                .bind(&run.id)
                .fetch_optional(&mut *tx)
                .await?;
        if held.as_deref() != Some("pending") {
            return Err(StoreError::Conflict(format!(
                "run {} cannot pause on call {}: it is not a pending call of the run",
                run.id, request.call_id
            )));
        }
        query(
            "INSERT INTO steering_requests (id, run_id, deployment_id, kind, call_id, request, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&request.request_id)
        .bind(&run.id)
        .bind(&run.deployment_id)
        .bind(&request.kind)
        .bind(&request.call_id)
        .bind(to_json(&request)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("run {} already has a pending request", run.id))
            } else {
                e.into()
            }
        })?;
        query(
            "UPDATE runs SET status = 'waiting_on_human', steering_request = ?, updated_at = ?, \
             lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
        )
        .bind(to_json(&request)?)
        .bind(now)
        .bind(&run.id)
        .execute(&mut *tx)
        .await?;
        touch_thread_tx(&mut tx, run.thread_id.as_deref(), now).await?;
        let events = append_tx(&mut tx, &run.deployment_id, events, now).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn answer_steering(&self, a: SteeringAnswer) -> Result<AnswerOutcome, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let row = query("SELECT * FROM runs WHERE id = ? AND deployment_id = ?")
            .bind(&a.run_id)
            .bind(&a.deployment_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let run = map::run(&row)?;
        let named = query("SELECT * FROM steering_requests WHERE id = ? AND run_id = ?")
            .bind(&a.request_id)
            .bind(&run.id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| map::steering(&r))
            .transpose()?;
        match named {
            Some(SteeringRecord {
                decision: Some(d), ..
            }) if d == a.decision => return Ok(AnswerOutcome::Unchanged(run)),
            Some(SteeringRecord {
                decision: Some(d), ..
            }) => return Ok(AnswerOutcome::OtherDecision(run, d)),
            Some(_) if run.status == run_status::WAITING => {}
            _ if run.status == run_status::WAITING => return Ok(AnswerOutcome::WrongRequest(run)),
            _ => return Ok(AnswerOutcome::NotWaiting(run)),
        }
        let text = a.message.as_ref().map(|(_, text)| text.as_str());
        let (run, resolved, pending) = answer_tx(&mut tx, run, a.decision, text, a.now).await?;
        let mut events = Vec::new();
        if let (Some((id, text)), Some(thread_id)) = (&a.message, run.thread_id.clone()) {
            // The answer's text is stored in the thread (spec §6.3). After an approved held
            // call it is queued, so the model sees it after the call's result; otherwise it
            // reaches the model inside the result.
            let queued = a.decision == Decision::Approve && pending.request.kind == "tool_call";
            events.push(
                insert_user_message_tx(
                    &mut tx,
                    &run,
                    &thread_id,
                    UserMessage {
                        message_id: id,
                        content: text,
                        attachments: &[],
                        automation_id: None,
                    },
                    !queued,
                    a.now,
                )
                .await?,
            );
        }
        events.extend(resolved);
        let events = append_tx(&mut tx, &run.deployment_id, events, a.now).await?;
        tx.commit().await?;
        Ok(AnswerOutcome::Resolved(run, events))
    }

    async fn overdue_steering(
        &self,
        cutoff: i64,
        limit: u32,
    ) -> Result<Vec<OverdueRequest>, StoreError> {
        let rows = query(
            "SELECT deployment_id, run_id, id FROM steering_requests \
             WHERE decision IS NULL AND created_at <= ? ORDER BY created_at, seq LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OverdueRequest {
                    deployment_id: r.try_get("deployment_id")?,
                    run_id: r.try_get("run_id")?,
                    request_id: r.try_get("id")?,
                })
            })
            .collect()
    }

    async fn expire_steering(
        &self,
        run_id: &str,
        request_id: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = run_tx(&mut tx, run_id).await?;
        if run.status != run_status::WAITING {
            return Ok(None);
        }
        let due: Option<i64> = query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM steering_requests WHERE id = ? AND run_id = ? AND decision IS NULL \
             AND created_at <= ?",
        )
        .bind(request_id)
        .bind(run_id)
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        if due.is_none() {
            return Ok(None);
        }
        let error = ErrorInfo {
            code: "steering_timeout".to_owned(),
            message: "The steering request went unanswered past the steering timeout.".to_owned(),
        };
        let (_, events) = fail_tx(
            &mut tx,
            run,
            error,
            &json!({"error": "steering_timeout"}),
            Decision::Timeout,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    async fn latest_compaction(
        &self,
        run_id: &str,
    ) -> Result<Option<CompactionRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let run = run_tx(&mut conn, run_id).await?;
        let row = match &run.thread_id {
            Some(t) => {
                query(
                    "SELECT items_summarised, summary, run_id FROM compactions \
                     WHERE thread_id = ? ORDER BY seq DESC LIMIT 1",
                )
                .bind(t)
                .fetch_optional(&mut *conn)
                .await?
            }
            None => {
                query(
                    "SELECT items_summarised, summary, run_id FROM compactions \
                     WHERE run_id = ? AND thread_id IS NULL ORDER BY seq DESC LIMIT 1",
                )
                .bind(&run.id)
                .fetch_optional(&mut *conn)
                .await?
            }
        };
        row.map(|r| {
            let items: i64 = r.try_get("items_summarised")?;
            Ok(CompactionRecord {
                items_summarised: usize::try_from(items).unwrap_or(0),
                summary: r.try_get("summary")?,
                run_id: r.try_get("run_id")?,
            })
        })
        .transpose()
    }

    async fn record_compaction(
        &self,
        lease: &Lease,
        c: NewCompaction,
    ) -> Result<CompactionOutcome, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        query(
            "INSERT INTO compactions (deployment_id, thread_id, run_id, items_summarised, \
             summary, input_tokens, output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.deployment_id)
        .bind(&run.thread_id)
        .bind(&run.id)
        .bind(i64::try_from(c.items_summarised).unwrap_or(i64::MAX))
        .bind(&c.summary)
        .bind(i64::try_from(c.input_tokens).unwrap_or(i64::MAX))
        .bind(i64::try_from(c.output_tokens).unwrap_or(i64::MAX))
        .bind(c.now)
        .execute(&mut *tx)
        .await?;
        // The summarisation calls are model calls, charged like any other (spec §16.1): the
        // runtime charges each as it answers (`charge_usage`), which leaves nothing here.
        charge_usage_tx(&mut tx, &run, &c.usage, c.now).await?;
        let credits_left = has_credits_tx(&mut tx, &run.deployment_id).await?;
        let events = append_tx(&mut tx, &run.deployment_id, c.events, c.now).await?;
        tx.commit().await?;
        Ok(CompactionOutcome {
            events,
            credits_left,
        })
    }

    async fn tool_calls(&self, run_id: &str) -> Result<Vec<ToolCallRecord>, StoreError> {
        let rows = query("SELECT * FROM tool_calls WHERE run_id = ? ORDER BY seq")
            .bind(run_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(map::tool_call).collect()
    }

    async fn append_events(
        &self,
        deployment_id: &str,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = begin(&self.writer).await?;
        let out = append_tx(&mut tx, deployment_id, events, now).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn events_after(
        &self,
        deployment_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows =
            query("SELECT * FROM events WHERE deployment_id = ? AND seq > ? ORDER BY seq LIMIT ?")
                .bind(deployment_id)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(map::event).collect()
    }

    async fn event_bounds(&self, deployment_id: &str) -> Result<(Option<i64>, i64), StoreError> {
        let row = query(
            "SELECT (SELECT MIN(seq) FROM events WHERE deployment_id = d.id) AS oldest, \
             d.event_seq AS last FROM deployments d WHERE d.id = ?",
        )
        .bind(deployment_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("deployment"))?;
        Ok((row.try_get("oldest")?, row.try_get("last")?))
    }

    async fn prune_events(&self, before: i64) -> Result<u64, StoreError> {
        let done = query("DELETE FROM events WHERE created_at < ?")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn idempotency_begin(
        &self,
        account_id: &str,
        key: &str,
        f: &IdempotencyFingerprint,
        now: i64,
    ) -> Result<IdempotencyBegin, StoreError> {
        let mut tx = begin(&self.writer).await?;
        query("DELETE FROM idempotency_keys WHERE account_id = ? AND key = ? AND created_at <= ?")
            .bind(account_id)
            .bind(key)
            .bind(now - IDEMPOTENCY_TTL_SECS)
            .execute(&mut *tx)
            .await?;
        let row = query("SELECT * FROM idempotency_keys WHERE account_id = ? AND key = ?")
            .bind(account_id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match row {
            None => {
                query(
                    "INSERT INTO idempotency_keys (account_id, key, method, path, body_hash, \
                     created_at) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(account_id)
                .bind(key)
                .bind(&f.method)
                .bind(&f.path)
                .bind(&f.body_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                IdempotencyBegin::Fresh
            }
            Some(row) => {
                let same = row.try_get::<String, _>("method")? == f.method
                    && row.try_get::<String, _>("path")? == f.path
                    && row.try_get::<String, _>("body_hash")? == f.body_hash;
                let status: Option<i64> = row.try_get("status")?;
                match (same, status) {
                    (true, Some(status)) => IdempotencyBegin::Replay {
                        status: u16::try_from(status).unwrap_or(500),
                        body: row
                            .try_get::<Option<Vec<u8>>, _>("body")?
                            .unwrap_or_default(),
                    },
                    _ => IdempotencyBegin::Conflict,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn idempotency_finish(
        &self,
        account_id: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        query("UPDATE idempotency_keys SET status = ?, body = ? WHERE account_id = ? AND key = ?")
            .bind(i64::from(status))
            .bind(body)
            .bind(account_id)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn idempotency_abort(&self, account_id: &str, key: &str) -> Result<(), StoreError> {
        query("DELETE FROM idempotency_keys WHERE account_id = ? AND key = ?")
            .bind(account_id)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn prune_idempotency(&self, before: i64) -> Result<u64, StoreError> {
        let done = query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn create_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        let result = query(
            "INSERT INTO secrets (id, account_id, name, customer_id, ciphertext, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&secret.id)
        .bind(&secret.account_id)
        .bind(&secret.name)
        .bind(&secret.customer_id)
        .bind(&secret.ciphertext)
        .bind(secret.created_at)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "A secret named `{}` already exists in this account.",
                secret.name.as_deref().unwrap_or_default()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_secret(
        &self,
        account_id: &str,
        secret_id: &str,
    ) -> Result<SecretRecord, StoreError> {
        let row = query(
            "SELECT *, CAST(0 AS BIGINT) AS used_by FROM secrets WHERE id = ? AND account_id = ?",
        )
        .bind(secret_id)
        .bind(account_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("secret"))?;
        secret_row(&row)
    }

    async fn list_secrets(
        &self,
        account_id: &str,
        customer_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Paged<SecretRecord>, StoreError> {
        static SELECT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT * FROM (SELECT s.*, (SELECT COUNT(*) FROM deployments d \
                 WHERE d.account_id = s.account_id AND EXISTS \
                 (SELECT 1 FROM {DEPLOYMENT_SECRETS} WHERE value = s.id)) AS used_by \
                 FROM secrets s) AS secrets_view"
            )
        });
        match customer_id {
            Some(c) => {
                paging::page(
                    &self.reader,
                    &SELECT,
                    "account_id = ? AND customer_id = ?",
                    &[account_id, c],
                    page,
                    secret_row,
                )
                .await
            }
            None => {
                paging::page(
                    &self.reader,
                    &SELECT,
                    "account_id = ?",
                    &[account_id],
                    page,
                    secret_row,
                )
                .await
            }
        }
    }

    async fn delete_secret(&self, account_id: &str, secret_id: &str) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        let exists: Option<String> =
            query_scalar("SELECT id FROM secrets WHERE id = ? AND account_id = ?")
                .bind(secret_id)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("secret"));
        }
        let sql = format!(
            "SELECT d.id, (SELECT key FROM {DEPLOYMENT_SECRETS} WHERE value = ? \
             ORDER BY key LIMIT 1) FROM deployments d WHERE d.account_id = ? AND EXISTS \
             (SELECT 1 FROM {DEPLOYMENT_SECRETS} WHERE value = ?) \
             ORDER BY d.created_at, d.id LIMIT 1"
        );
        let user: Option<(String, String)> = query_as(&sql)
            .bind(secret_id)
            .bind(account_id)
            .bind(secret_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((deployment_id, key)) = user {
            return Err(StoreError::Conflict(format!(
                "Secret {secret_id} is still referenced by deployment {deployment_id} (as `secrets.{key}`); remove the reference first."
            )));
        }
        query("DELETE FROM secrets WHERE id = ?")
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn deployment_by_id(&self, deployment_id: &str) -> Result<DeploymentRecord, StoreError> {
        let row = query("SELECT * FROM deployments WHERE id = ?")
            .bind(deployment_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("deployment"))?;
        map::deployment(&row)
    }

    async fn add_run_warning(&self, lease: &Lease, warning: Value) -> Result<(), StoreError> {
        let mut tx = begin(&self.writer).await?;
        let run = leased_run_tx(&mut tx, lease).await?;
        let mut warnings = run.warnings;
        warnings.push(warning);
        query("UPDATE runs SET warnings = ? WHERE id = ?")
            .bind(to_json(&warnings)?)
            .bind(&run.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_memory(&self, memory: &MemoryRecord, max: u32) -> Result<(), StoreError> {
        memories::create(&self.writer, memory, max).await
    }

    async fn get_memory(
        &self,
        deployment_id: &str,
        memory_id: &str,
    ) -> Result<MemoryRecord, StoreError> {
        memories::get(&self.reader, deployment_id, memory_id).await
    }

    async fn list_memories(
        &self,
        deployment_id: &str,
        filter: &MemoryFilter,
        page: &PageRequest,
    ) -> Result<Paged<MemoryRecord>, StoreError> {
        memories::list(&self.reader, deployment_id, filter, page).await
    }

    async fn update_memory(
        &self,
        deployment_id: &str,
        memory_id: &str,
        content: &str,
        now: i64,
    ) -> Result<MemoryRecord, StoreError> {
        memories::update(&self.writer, deployment_id, memory_id, content, now).await
    }

    async fn delete_memory(&self, deployment_id: &str, memory_id: &str) -> Result<(), StoreError> {
        memories::delete(&self.writer, deployment_id, memory_id).await
    }

    async fn all_memories(&self, deployment_id: &str) -> Result<Vec<MemoryRecord>, StoreError> {
        memories::all(&self.reader, deployment_id).await
    }

    async fn search_memories(
        &self,
        deployment_id: &str,
        fts_query: &str,
        limit: u32,
    ) -> Result<Vec<MemoryRecord>, StoreError> {
        super::dialect::search_memories(&self.reader, deployment_id, fts_query, limit).await
    }

    async fn dreaming_candidates(
        &self,
        rules: DreamingRules,
        now: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        dreaming::candidates(&self.reader, rules, now, limit).await
    }

    async fn start_dreaming(
        &self,
        start: StartDreaming,
    ) -> Result<Option<DreamingStarted>, StoreError> {
        dreaming::start(&self.writer, start).await
    }

    async fn tool_settings(
        &self,
        deployment_id: &str,
    ) -> Result<std::collections::BTreeMap<String, bool>, StoreError> {
        let rows: Vec<(String, i64)> =
            query_as("SELECT name, enabled FROM tool_settings WHERE deployment_id = ?")
                .bind(deployment_id)
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|(name, on)| (name, on != 0)).collect())
    }

    async fn set_tool_enabled(
        &self,
        deployment_id: &str,
        name: &str,
        enabled: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO tool_settings (deployment_id, name, enabled, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (deployment_id, name) \
             DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(deployment_id)
        .bind(name)
        .bind(i64::from(enabled))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn set_mcp_discovery(
        &self,
        deployment_id: &str,
        servers: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO mcp_discoveries (deployment_id, servers, discovered_at) VALUES (?, ?, ?) \
             ON CONFLICT (deployment_id) \
             DO UPDATE SET servers = excluded.servers, discovered_at = excluded.discovered_at",
        )
        .bind(deployment_id)
        .bind(to_json(servers)?)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn mcp_discovery(&self, deployment_id: &str) -> Result<Option<Value>, StoreError> {
        let row: Option<String> =
            query_scalar("SELECT servers FROM mcp_discoveries WHERE deployment_id = ?")
                .bind(deployment_id)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    async fn create_skill(&self, skill: &SkillRecord, max: u32) -> Result<(), StoreError> {
        skills::create(&self.writer, skill, max).await
    }

    async fn get_skill(
        &self,
        deployment_id: &str,
        skill_id: &str,
    ) -> Result<SkillRecord, StoreError> {
        skills::get(&self.reader, deployment_id, skill_id).await
    }

    async fn list_skills(
        &self,
        deployment_id: &str,
        page: &PageRequest,
    ) -> Result<Paged<SkillRecord>, StoreError> {
        skills::list(&self.reader, deployment_id, page).await
    }

    async fn all_skills(&self, deployment_id: &str) -> Result<Vec<SkillRecord>, StoreError> {
        skills::all(&self.reader, deployment_id).await
    }

    async fn replace_skill(&self, skill: &SkillRecord) -> Result<(), StoreError> {
        skills::replace(&self.writer, skill).await
    }

    async fn delete_skill(&self, deployment_id: &str, skill_id: &str) -> Result<(), StoreError> {
        skills::delete(&self.writer, deployment_id, skill_id).await
    }

    async fn replace_deployment_skills(
        &self,
        deployment_id: &str,
        skills: &[SkillRecord],
    ) -> Result<(), StoreError> {
        skills::replace_all(&self.writer, deployment_id, skills).await
    }

    async fn set_skill_load(
        &self,
        deployment_id: &str,
        skill_id: &str,
        description: Option<&str>,
        error: Option<&ErrorInfo>,
    ) -> Result<(), StoreError> {
        skills::set_load(&self.writer, deployment_id, skill_id, description, error).await
    }

    async fn create_automation(
        &self,
        automation: &AutomationRecord,
        new_thread: bool,
        max: u32,
    ) -> Result<(), StoreError> {
        automations::create(&self.writer, automation, new_thread, max).await
    }

    async fn get_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<AutomationRecord, StoreError> {
        automations::get(&self.reader, deployment_id, automation_id).await
    }

    async fn list_automations(
        &self,
        deployment_id: &str,
        page: &PageRequest,
    ) -> Result<Paged<AutomationRecord>, StoreError> {
        automations::list(&self.reader, deployment_id, page).await
    }

    async fn update_automation(
        &self,
        automation: &AutomationRecord,
        reschedule: bool,
    ) -> Result<AutomationRecord, StoreError> {
        automations::update(&self.writer, automation, reschedule).await
    }

    async fn delete_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<(), StoreError> {
        automations::delete(&self.writer, deployment_id, automation_id).await
    }

    async fn due_automations(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<AutomationRecord>, StoreError> {
        automations::due(&self.reader, now, limit).await
    }

    async fn deferred_automations(&self, limit: u32) -> Result<Vec<AutomationRecord>, StoreError> {
        automations::deferred(&self.reader, limit).await
    }

    async fn fire_automation(&self, firing: FireAutomation) -> Result<FiringResult, StoreError> {
        automations::fire(&self.writer, firing).await
    }

    fn is_shared(&self) -> bool {
        super::dialect::SHARED_BY_NODES
    }

    async fn take_request_token(
        &self,
        key_id: &str,
        rate: f64,
        burst: u32,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        const TOKEN: i64 = 1_000_000;
        // Micro-tokens per millisecond; at least 1 so a bucket always refills, at most 10^9
        // (a million tokens a second) so the arithmetic stays within i64.
        let per_ms = ((rate * 1000.0).round() as i64).clamp(1, 1_000_000_000);
        let cap = i64::from(burst.max(1)) * TOKEN;
        let row: (i64, i64) = query_as(&RATE_TAKE)
            .bind(key_id)
            .bind(cap - TOKEN)
            .bind(now_ms)
            .bind(per_ms)
            .fetch_one(&self.writer)
            .await?;
        Ok(match row {
            (_, 1) => None,
            (tokens, _) => Some(((TOKEN - tokens).max(0) + per_ms - 1) / per_ms),
        })
    }

    async fn cluster_identity(&self, new_id: &str, now: i64) -> Result<(String, bool), StoreError> {
        let mut tx = begin(&self.writer).await?;
        query("INSERT INTO cluster (id, created_at) SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM cluster)")
            .bind(new_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (id, written): (String, i64) =
            query_as("SELECT id, marker_written FROM cluster ORDER BY created_at, id LIMIT 1")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((id, written != 0))
    }

    async fn set_cluster_marker_written(&self) -> Result<(), StoreError> {
        query("UPDATE cluster SET marker_written = 1")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn event_notices(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<EventNotice>>, StoreError> {
        super::dialect::event_notices(&self.reader).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
