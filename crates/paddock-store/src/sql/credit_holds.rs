//! Credit holds: how concurrent runs of one account share a limited balance (spec §16.1).
//!
//! Calls are charged after they finish, so a balance checked only before each call could be
//! spent many times over by the calls in flight when it runs out. Instead a run about to call
//! a model holds the most that call can cost (`runs.credit_hold_micros`), and may call only if
//! the balance less every other hold of the account is above zero. Every hold being at least
//! what its call is charged, the last call let through finds the balance covering all calls
//! then in flight, so once they are charged the balance is below zero by less than that last
//! call's cost. A run never has a call uncharged when it asks for the next one (a compaction
//! charges each summary as it comes: `Store::charge_usage`).
//!
//! Holds need no cleanup: a hold counts only while its run is `running`, and is set back to
//! zero when its call is charged (`charge_usage_tx`) or the run is claimed or released (the
//! old owner's call can no longer be charged: its lease is gone). Lease expiry alone does not
//! end a hold, since a node whose renewals stall may still record its call until another node
//! claims the run. Every write goes through one writer (SQLite) or one write lock
//! (PostgreSQL), so the check and the hold are one atomic step. A first look on a read
//! connection answers the common cases without that lock: an unlimited balance, and a balance
//! other calls already hold (a stale look only means asking again).

use super::DbConn;
use super::DbPool;
use super::dialect::{begin, query, query_as};
use super::store_impl::{credits_micros, leased_run_tx};
use crate::{CreditHold, Lease, StoreError};

/// What a hold is decided on, for one run.
struct Standing {
    /// The account's balance in micro-credits; `None` when unlimited.
    balance: Option<i64>,
    /// What the account's other running runs hold.
    others: i64,
    /// What this run holds.
    own: i64,
}

async fn standing(conn: &mut DbConn, run_id: &str) -> Result<Option<Standing>, StoreError> {
    let row: Option<(Option<i64>, i64, i64)> = query_as(
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        "SELECT a.balance_micros, \
           CAST(COALESCE((SELECT SUM(o.credit_hold_micros) FROM runs o \
             JOIN deployments od ON od.id = o.deployment_id \
             WHERE od.account_id = a.id AND o.credit_hold_micros > 0 \
             AND o.status = 'running' AND o.id <> r.id), 0) AS BIGINT), \
           r.credit_hold_micros \
         FROM runs r JOIN deployments d ON d.id = r.deployment_id \
         JOIN accounts a ON a.id = d.account_id WHERE r.id = ?",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(balance, others, own)| Standing {
        balance,
        others,
        own,
    }))
}

pub(super) async fn hold(
    reader: &DbPool,
    writer: &DbPool,
    lease: &Lease,
    up_to: f64,
) -> Result<CreditHold, StoreError> {
    {
        let mut conn = reader.acquire().await?;
        if let Some(s) = standing(&mut conn, &lease.run_id).await? {
            match s.balance {
                // A balance made limited just after this look lets this one call through
                // unheld, as if it had started a moment earlier.
                None => return Ok(CreditHold::Held),
                Some(b) if b > 0 && b <= s.others && s.own == 0 => return Ok(CreditHold::Wait),
                Some(_) => {}
            }
        }
    }

    let mut tx = begin(writer).await?;
    let run = leased_run_tx(&mut tx, lease).await?;
    let s = standing(&mut tx, &run.id)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
    let Some(balance) = s.balance else {
        return Ok(CreditHold::Held);
    };
    if balance <= 0 {
        return Err(StoreError::InsufficientCredits);
    }
    let (outcome, held) = if balance > s.others {
        let charged = credits_micros(run.usage.credits);
        (CreditHold::Held, (credits_micros(up_to) - charged).max(0))
    } else {
        (CreditHold::Wait, 0)
    };
    if held != s.own {
        query("UPDATE runs SET credit_hold_micros = ? WHERE id = ?")
            .bind(held)
            .bind(&run.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(outcome)
}
