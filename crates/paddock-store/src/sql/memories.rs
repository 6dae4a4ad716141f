//! Memories (spec §10). Full-text search is the backend's own (`dialect::search_memories`):
//! SQLite's FTS5 index is kept equal to the table by triggers (see its migration), PostgreSQL's
//! is a GIN expression index; either way every write here keeps it current in one transaction.

use sqlx::Row;

use super::dialect::{CONTENT_CONTAINS, begin, query, query_scalar};
use super::{DbPool, DbRow};

use super::paging;
use crate::store::Paged;
use crate::{MemoryFilter, MemoryRecord, PageRequest, StoreError};

pub(super) fn memory(row: &DbRow) -> Result<MemoryRecord, StoreError> {
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

pub(super) async fn create(writer: &DbPool, m: &MemoryRecord, max: u32) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    let count: i64 = query_scalar("SELECT COUNT(*) FROM memories WHERE deployment_id = ?")
        .bind(&m.deployment_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= i64::from(max) {
        return Err(StoreError::LimitReached(format!(
            "The deployment already has {count} memories (the limit is {max}); delete some first."
        )));
    }
    query(
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
    pool: &DbPool,
    deployment_id: &str,
    memory_id: &str,
) -> Result<MemoryRecord, StoreError> {
    let row = query(&format!("{SELECT} WHERE id = ? AND deployment_id = ?"))
        .bind(memory_id)
        .bind(deployment_id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound("memory"))?;
    memory(&row)
}

pub(super) async fn list(
    pool: &DbPool,
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
        scope.push_str(CONTENT_CONTAINS);
        binds.push(q);
    }
    paging::page(pool, SELECT, &scope, &binds, page, memory).await
}

pub(super) async fn update(
    writer: &DbPool,
    deployment_id: &str,
    memory_id: &str,
    content: &str,
    now: i64,
) -> Result<MemoryRecord, StoreError> {
    let mut tx = begin(writer).await?;
    let done =
        query("UPDATE memories SET content = ?, updated_at = ? WHERE id = ? AND deployment_id = ?")
            .bind(content)
            .bind(now)
            .bind(memory_id)
            .bind(deployment_id)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("memory"));
    }
    let row = query(&format!("{SELECT} WHERE id = ?"))
        .bind(memory_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    memory(&row)
}

pub(super) async fn delete(
    writer: &DbPool,
    deployment_id: &str,
    memory_id: &str,
) -> Result<(), StoreError> {
    let done = query("DELETE FROM memories WHERE id = ? AND deployment_id = ?")
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
    pool: &DbPool,
    deployment_id: &str,
) -> Result<Vec<MemoryRecord>, StoreError> {
    let rows = query(&format!(
        "{SELECT} WHERE deployment_id = ? ORDER BY created_at DESC, seq DESC"
    ))
    .bind(deployment_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(memory).collect()
}
