//! Memories (spec §10) on SQLite. The FTS5 index `memories_fts` is kept equal to the table by
//! triggers (see the migration), so every write here updates both in one transaction.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::paging;
use crate::store::Paged;
use crate::{MemoryFilter, MemoryRecord, PageRequest, StoreError};

fn memory(row: &SqliteRow) -> Result<MemoryRecord, StoreError> {
    Ok(MemoryRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        content: row.try_get("content")?,
        source: row.try_get("source")?,
        run_id: row.try_get("run_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const SELECT: &str = "SELECT seq, id, deployment_id, content, source, run_id, created_at, \
                      updated_at FROM memories";

pub(super) async fn create(
    writer: &SqlitePool,
    m: &MemoryRecord,
    max: u32,
) -> Result<(), StoreError> {
    let mut tx = writer.begin().await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memories WHERE deployment_id = ?")
        .bind(&m.deployment_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= i64::from(max) {
        return Err(StoreError::LimitReached(format!(
            "The deployment already has {count} memories (the limit is {max}); delete some first."
        )));
    }
    sqlx::query(
        "INSERT INTO memories (id, deployment_id, content, source, run_id, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&m.id)
    .bind(&m.deployment_id)
    .bind(&m.content)
    .bind(&m.source)
    .bind(&m.run_id)
    .bind(m.created_at)
    .bind(m.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(
    pool: &SqlitePool,
    deployment_id: &str,
    memory_id: &str,
) -> Result<MemoryRecord, StoreError> {
    let row = sqlx::query(&format!("{SELECT} WHERE id = ? AND deployment_id = ?"))
        .bind(memory_id)
        .bind(deployment_id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound("memory"))?;
    memory(&row)
}

pub(super) async fn list(
    pool: &SqlitePool,
    deployment_id: &str,
    filter: &MemoryFilter,
    page: &PageRequest,
) -> Result<Paged<MemoryRecord>, StoreError> {
    let mut scope = "deployment_id = ?".to_owned();
    let mut binds: Vec<&str> = vec![deployment_id];
    if let Some(source) = &filter.source {
        scope.push_str(" AND source = ?");
        binds.push(source);
    }
    if let Some(q) = &filter.q {
        scope.push_str(" AND instr(lower(content), lower(?)) > 0");
        binds.push(q);
    }
    paging::page(pool, SELECT, &scope, &binds, page, memory).await
}

pub(super) async fn update(
    writer: &SqlitePool,
    deployment_id: &str,
    memory_id: &str,
    content: &str,
    now: i64,
) -> Result<MemoryRecord, StoreError> {
    let mut tx = writer.begin().await?;
    let done = sqlx::query(
        "UPDATE memories SET content = ?, updated_at = ? WHERE id = ? AND deployment_id = ?",
    )
    .bind(content)
    .bind(now)
    .bind(memory_id)
    .bind(deployment_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("memory"));
    }
    let row = sqlx::query(&format!("{SELECT} WHERE id = ?"))
        .bind(memory_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    memory(&row)
}

pub(super) async fn delete(
    writer: &SqlitePool,
    deployment_id: &str,
    memory_id: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM memories WHERE id = ? AND deployment_id = ?")
        .bind(memory_id)
        .bind(deployment_id)
        .execute(writer)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("memory"));
    }
    Ok(())
}

pub(super) async fn all(
    pool: &SqlitePool,
    deployment_id: &str,
) -> Result<Vec<MemoryRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE deployment_id = ? ORDER BY created_at DESC, seq DESC"
    ))
    .bind(deployment_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(memory).collect()
}

pub(super) async fn search(
    pool: &SqlitePool,
    deployment_id: &str,
    fts_query: &str,
    limit: u32,
) -> Result<Vec<MemoryRecord>, StoreError> {
    let rows = sqlx::query(
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
