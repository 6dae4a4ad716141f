//! What PostgreSQL says differently from SQLite: numbered placeholders, JSON access (the
//! documents are stored as text and cast to `jsonb` where they are read), substring and
//! full-text search, row locks, and how a write transaction starts.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use sqlx::postgres::PgArguments;
use sqlx::{FromRow, Transaction};

use super::memories::memory;
use super::{Db, DbConn, DbPool, DbRow};
use crate::{EventNotice, MemoryRecord, StoreError};

/// The key of the advisory lock every write transaction holds (any constant; "paddock" in
/// ASCII), so that write transactions are serialised across nodes as on SQLite.
const WRITE_LOCK: i64 = 0x0070_6164_646f_636b;

/// The shared statements' text with `?` placeholders numbered `$1, $2, …`, converted once per
/// distinct text and kept for the life of the process. The texts are the store's own (values
/// are always bound, never formatted in), so there are a few hundred of them at most: the
/// same bound that sqlx's per-connection statement cache relies on.
fn numbered(sql: &str) -> &'static str {
    static CONVERTED: LazyLock<RwLock<HashMap<Box<str>, &'static str>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while holding it; the map itself is
    // always whole (one insert), so it is used as it is.
    if let Some(done) = CONVERTED.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
        return done;
    }
    let mut map = CONVERTED.write().unwrap_or_else(|e| e.into_inner());
    map.entry(sql.into())
        .or_insert_with(|| Box::leak(number_placeholders(sql).into_boxed_str()))
}

/// Replaces each `?` outside quoted text with `$n`, counting from 1.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    out
}

/// A statement with `?` placeholders.
// The statement text lives for ever; `'q` is how long the bound values do.
pub(super) fn query<'q>(sql: &str) -> sqlx::query::Query<'q, Db, PgArguments> {
    sqlx::query(numbered(sql))
}

/// A statement returning one column.
pub(super) fn query_scalar<'q, O>(sql: &str) -> sqlx::query::QueryScalar<'q, Db, O, PgArguments>
where
    (O,): for<'r> FromRow<'r, DbRow>,
{
    sqlx::query_scalar(numbered(sql))
}

/// A statement returning rows as tuples.
pub(super) fn query_as<'q, O>(sql: &str) -> sqlx::query::QueryAs<'q, Db, O, PgArguments>
where
    O: for<'r> FromRow<'r, DbRow>,
{
    sqlx::query_as(numbered(sql))
}

/// Starts a write transaction holding the write lock until it commits or rolls back.
pub(super) async fn begin(pool: &DbPool) -> Result<Transaction<'static, Db>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Run `?`, locked against claims and other writers until the transaction ends.
pub(super) const SELECT_RUN_FOR_UPDATE: &str = "SELECT * FROM runs WHERE id = ? FOR UPDATE";

/// Run `?` if it is `running` and leased to node `?`, locked like [`SELECT_RUN_FOR_UPDATE`];
/// nothing (and nothing locked) otherwise.
pub(super) const SELECT_LEASED_RUN_FOR_UPDATE: &str =
    "SELECT * FROM runs WHERE id = ? AND status = 'running' AND lease_owner = ? FOR UPDATE";

/// Leases up to `?` (limit) runnable runs to node `?` until `?`, given the time `?`, ending any
/// credit hold a previous owner left (its call will never be charged); binds in
/// the order owner, lease end, now, limit. Rows another node is claiming, or a transaction is
/// recording progress for, are skipped, so no two claimers get one run.
pub(super) const CLAIM_RUNS: &str = "UPDATE runs SET lease_owner = ?, lease_expires_at = ?, claims = claims + 1, \
     credit_hold_micros = 0 WHERE id IN (SELECT id FROM runs WHERE status = 'running' \
       AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ?) \
       ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED) \
     RETURNING *";

/// The number of recorded model responses (`assistant` items) of run `?`.
pub(super) const COUNT_ASSISTANT_ITEMS: &str = "SELECT COUNT(*) FROM conversation_items \
    WHERE run_id = ? AND (item::jsonb ->> 'type') = 'assistant'";

/// A table of the `key`/`value` pairs of `secrets` in deployment `d`'s configuration.
pub(super) const DEPLOYMENT_SECRETS: &str = "jsonb_each_text(d.config::jsonb -> 'secrets')";

/// A table of the scopes (`value`) of the `api_keys` row in scope.
pub(super) const KEY_SCOPES: &str =
    "jsonb_array_elements_text(api_keys.scopes::jsonb) AS scope(value)";

/// Replaces the `skills` summaries (JSON text `?`) in deployment `?`'s configuration.
pub(super) const SET_SKILL_SUMMARIES: &str = "UPDATE deployments \
    SET config = jsonb_set(config::jsonb, '{skills}', CAST(? AS jsonb))::text WHERE id = ?";

/// A memory filter: `content` contains `?`, ASCII case folded.
pub(super) const CONTENT_CONTAINS: &str = " AND strpos(lower(content), lower(?)) > 0";

/// Deployment `d` has both dreaming and memory switched on.
pub(super) const DREAMING_AND_MEMORY_ON: &str = "(d.config::jsonb #>> '{features,dreaming}') = 'true' \
    AND (d.config::jsonb #>> '{features,memory}') = 'true'";

/// The memories of a deployment matching a query built by [`crate::fts_any_terms`] (quoted
/// words joined by `OR`, which `websearch_to_tsquery` reads the same way and never rejects),
/// best first.
pub(super) async fn search_memories(
    pool: &DbPool,
    deployment_id: &str,
    fts_query: &str,
    limit: u32,
) -> Result<Vec<MemoryRecord>, StoreError> {
    let rows = query(
        "SELECT m.seq, m.id, m.deployment_id, m.content, m.source, m.run_id, m.created_at, \
         m.updated_at FROM memories m, websearch_to_tsquery('simple', ?) q \
         WHERE m.deployment_id = ? AND to_tsvector('simple', m.content) @@ q \
         ORDER BY ts_rank(to_tsvector('simple', m.content), q) DESC, m.created_at DESC LIMIT ?",
    )
    .bind(fts_query)
    .bind(deployment_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(memory).collect()
}

/// The `NOTIFY` channel committed events are announced on; the payload is the deployment id
/// and the last sequence number committed, separated by a space.
const EVENTS_CHANNEL: &str = "paddock_events";

/// Announces, at commit, that the transaction appended events of `deployment_id` up to
/// `last_seq` (PostgreSQL delivers a notification when, and only if, its transaction commits).
pub(super) async fn announce_events(
    conn: &mut DbConn,
    deployment_id: &str,
    last_seq: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(format!("{deployment_id} {last_seq}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Listens on its own connection for the events every node announces. When the connection
/// drops, the listener reconnects and the feed says [`EventNotice::Resync`], since
/// notifications sent meanwhile are lost. The task ends when the receiver is dropped.
pub(super) async fn event_notices(
    pool: &DbPool,
) -> Result<Option<tokio::sync::mpsc::Receiver<EventNotice>>, StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(EVENTS_CHANNEL).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let notice = match listener.try_recv().await {
                Ok(Some(n)) => match n.payload().split_once(' ') {
                    Some((deployment_id, last)) => EventNotice::Committed {
                        deployment_id: deployment_id.to_owned(),
                        last_seq: last.parse().ok(),
                    },
                    None => EventNotice::Committed {
                        deployment_id: n.payload().to_owned(),
                        last_seq: None,
                    },
                },
                Ok(None) => EventNotice::Resync,
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL event listener failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    EventNotice::Resync
                }
            };
            if tx.send(notice).await.is_err() {
                return;
            }
        }
    });
    Ok(Some(rx))
}

/// Several nodes write this database.
pub(super) const SHARED_BY_NODES: bool = true;

#[cfg(test)]
mod tests {
    use super::number_placeholders;

    #[test]
    fn placeholders_are_numbered_outside_quotes_only() {
        assert_eq!(
            number_placeholders("SELECT '?', \"a?\" FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(number_placeholders("SELECT 1"), "SELECT 1");
    }
}
