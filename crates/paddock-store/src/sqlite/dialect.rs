//! What SQLite says differently from PostgreSQL: JSON access, substring and full-text search,
//! and how a write transaction starts. The shared statements (`src/sql/`) use `?` placeholders,
//! which SQLite takes as they are.

use sqlx::sqlite::SqliteArguments;
use sqlx::{FromRow, Transaction};

use super::memories::memory;
use super::{Db, DbConn, DbPool, DbRow};
use crate::{EventNotice, MemoryRecord, StoreError};

/// A statement with `?` placeholders.
pub(super) fn query(sql: &str) -> sqlx::query::Query<'_, Db, SqliteArguments<'_>> {
    sqlx::query(sql)
}

/// A statement returning one column.
pub(super) fn query_scalar<'q, O>(
    sql: &'q str,
) -> sqlx::query::QueryScalar<'q, Db, O, SqliteArguments<'q>>
where
    (O,): for<'r> FromRow<'r, DbRow>,
{
    sqlx::query_scalar(sql)
}

/// A statement returning rows as tuples.
pub(super) fn query_as<'q, O>(sql: &'q str) -> sqlx::query::QueryAs<'q, Db, O, SqliteArguments<'q>>
where
    O: for<'r> FromRow<'r, DbRow>,
{
    sqlx::query_as(sql)
}

/// Starts a write transaction. The writer pool has one connection, so write transactions are
/// already serialised in this process (the only one that may open the file).
pub(super) async fn begin(writer: &DbPool) -> Result<Transaction<'static, Db>, sqlx::Error> {
    writer.begin().await
}

/// Run `?`, locked against claims and other writers until the transaction ends. SQLite's one
/// writer connection already serialises every write.
pub(super) const SELECT_RUN_FOR_UPDATE: &str = "SELECT * FROM runs WHERE id = ?";

/// Run `?` if it is `running` and leased to node `?`, locked like [`SELECT_RUN_FOR_UPDATE`];
/// nothing (and nothing locked) otherwise.
pub(super) const SELECT_LEASED_RUN_FOR_UPDATE: &str =
    "SELECT * FROM runs WHERE id = ? AND status = 'running' AND lease_owner = ?";

/// Leases up to `?` (limit) runnable runs to node `?` until `?`, given the time `?`, ending any
/// credit hold a previous owner left (its call will never be charged); binds in
/// the order owner, lease end, now, limit. On the one writer connection no two claimers meet.
pub(super) const CLAIM_RUNS: &str = "UPDATE runs SET lease_owner = ?, lease_expires_at = ?, claims = claims + 1, \
     credit_hold_micros = 0 WHERE id IN (SELECT id FROM runs WHERE status = 'running' \
       AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= ?) \
       ORDER BY seq LIMIT ?) \
     RETURNING *";

/// The number of recorded model responses (`assistant` items) of run `?`.
pub(super) const COUNT_ASSISTANT_ITEMS: &str = "SELECT COUNT(*) FROM conversation_items \
    WHERE run_id = ? AND json_extract(item, '$.type') = 'assistant'";

/// A table of the `key`/`value` pairs of `secrets` in deployment `d`'s configuration.
pub(super) const DEPLOYMENT_SECRETS: &str = "json_each(d.config, '$.secrets')";

/// A table of the scopes (`value`) of the `api_keys` row in scope.
pub(super) const KEY_SCOPES: &str = "json_each(api_keys.scopes)";

/// Replaces the `skills` summaries (JSON text `?`) in deployment `?`'s configuration.
pub(super) const SET_SKILL_SUMMARIES: &str =
    "UPDATE deployments SET config = json_set(config, '$.skills', json(?)) WHERE id = ?";

/// A memory filter: `content` contains `?`, ASCII case folded.
pub(super) const CONTENT_CONTAINS: &str = " AND instr(lower(content), lower(?)) > 0";

/// Deployment `d` has both dreaming and memory switched on.
pub(super) const DREAMING_AND_MEMORY_ON: &str = "json_extract(d.config, '$.features.dreaming') = 1 \
    AND json_extract(d.config, '$.features.memory') = 1";

/// The memories of a deployment matching an FTS5 query (see [`crate::fts_any_terms`]), best
/// first.
pub(super) async fn search_memories(
    pool: &DbPool,
    deployment_id: &str,
    fts_query: &str,
    limit: u32,
) -> Result<Vec<MemoryRecord>, StoreError> {
    let rows = query(
        "SELECT m.seq, m.id, m.deployment_id, m.content, m.source, m.run_id, m.created_at, \
         m.updated_at FROM memories_fts f JOIN memories m ON m.seq = f.rowid \
         WHERE memories_fts MATCH ? AND m.deployment_id = ? \
         ORDER BY bm25(memories_fts), m.created_at DESC LIMIT ?",
    )
    .bind(fts_query)
    .bind(deployment_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await;
    match rows {
        Ok(rows) => rows.iter().map(memory).collect(),
        // A query FTS5 cannot parse matches nothing rather than failing the caller.
        Err(sqlx::Error::Database(e)) if e.message().contains("fts5") => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Announces committed events to other nodes: there are none (one process owns the file).
pub(super) async fn announce_events(
    _: &mut DbConn,
    _deployment_id: &str,
    _last_seq: i64,
) -> Result<(), StoreError> {
    Ok(())
}

/// No other node writes this database, so there is nothing to be told.
pub(super) async fn event_notices(
    _: &DbPool,
) -> Result<Option<tokio::sync::mpsc::Receiver<EventNotice>>, StoreError> {
    Ok(None)
}

/// One process owns the file: nothing is shared with other nodes.
pub(super) const SHARED_BY_NODES: bool = false;
