//! Credit holds: how concurrent runs of one account share a limited balance (spec §16.1).
//!
//! Calls are charged after they finish, so a balance checked only before each call could be
//! spent many times over by the calls in flight when it runs out. Instead a run about to call
//! a model holds the most that call can cost (`runs.credit_hold_micros`), and may call only if
//! the balance less every other hold of the account is above zero. Every hold being at least
//! what its call is charged, the last call let through finds the balance covering all calls
//! then in flight, so once they are charged the balance is below zero by less than that last
//! call's cost.
//!
//! Holds need no cleanup: a hold counts only while its run is `running` under an unexpired
//! lease, so it lapses when the run ends, pauses, is released, or its node dies; charging the
//! call sets it back to zero (`charge_usage_tx`). Every write goes through one writer (SQLite)
//! or one write lock (PostgreSQL), so the check and the hold are one atomic step. An unlimited
//! balance is recognised on a read connection first, so its runs never take that lock here.

use super::DbPool;
use super::dialect::{begin, query, query_as, query_scalar};
use super::store_impl::{credits_micros, leased_run_tx};
use crate::{CreditHold, Lease, StoreError};

pub(super) async fn hold(
    reader: &DbPool,
    writer: &DbPool,
    lease: &Lease,
    up_to: f64,
    now: i64,
) -> Result<CreditHold, StoreError> {
    // A balance made limited just after this read lets one call through unheld, as if it had
    // started a moment earlier.
    let balance: Option<Option<i64>> = query_scalar(
        "SELECT a.balance_micros FROM runs r \
         JOIN deployments d ON d.id = r.deployment_id JOIN accounts a ON a.id = d.account_id \
         WHERE r.id = ?",
    )
    .bind(&lease.run_id)
    .fetch_optional(reader)
    .await?;
    if balance == Some(None) {
        return Ok(CreditHold::Held);
    }
    let mut tx = begin(writer).await?;
    let run = leased_run_tx(&mut tx, lease).await?;
    let (account_id, balance): (String, Option<i64>) = query_as(
        "SELECT a.id, a.balance_micros FROM accounts a JOIN deployments d ON d.account_id = a.id \
         WHERE d.id = ?",
    )
    .bind(&run.deployment_id)
    .fetch_one(&mut *tx)
    .await?;
    let Some(balance) = balance else {
        return Ok(CreditHold::Held);
    };
    if balance <= 0 {
        return Err(StoreError::InsufficientCredits);
    }
    let others: i64 = query_scalar(
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        "SELECT CAST(COALESCE(SUM(r.credit_hold_micros), 0) AS BIGINT) FROM runs r \
         JOIN deployments d ON d.id = r.deployment_id \
         WHERE d.account_id = ? AND r.credit_hold_micros > 0 AND r.id <> ? \
         AND r.status = 'running' AND r.lease_expires_at > ?",
    )
    .bind(&account_id)
    .bind(&run.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let (outcome, held) = if balance > others {
        let charged = credits_micros(run.usage.credits);
        (CreditHold::Held, (credits_micros(up_to) - charged).max(0))
    } else {
        (CreditHold::Wait, 0)
    };
    query("UPDATE runs SET credit_hold_micros = ? WHERE id = ?")
        .bind(held)
        .bind(&run.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}
