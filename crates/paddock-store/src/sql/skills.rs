//! Skills (spec §12). Every change also rewrites the deployment's `skills`
//! summaries (in its stored configuration) in the same transaction, so the deployment object
//! always lists the skills the table holds.

use paddock_protocol::{ErrorInfo, SkillSummary};
use sqlx::Row;

use super::dialect::{SET_SKILL_SUMMARIES, begin, query, query_scalar};
use super::{DbConn, DbPool, DbRow};

use super::paging;
use crate::store::Paged;
use crate::{PageRequest, SkillRecord, StoreError};

const SELECT: &str = "SELECT seq, id, deployment_id, name, source, description, content, url, \
                      path, error, created_at, updated_at FROM skills";

fn skill(row: &DbRow) -> Result<SkillRecord, StoreError> {
    let error: Option<String> = row.try_get("error")?;
    Ok(SkillRecord {
        id: row.try_get("id")?,
        deployment_id: row.try_get("deployment_id")?,
        name: row.try_get("name")?,
        source: row.try_get("source")?,
        description: row.try_get("description")?,
        content: row.try_get("content")?,
        url: row.try_get("url")?,
        path: row.try_get("path")?,
        error: match error {
            Some(e) => Some(serde_json::from_str(&e)?),
            None => None,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn error_json(e: Option<&ErrorInfo>) -> Result<Option<String>, StoreError> {
    Ok(match e {
        Some(e) => Some(serde_json::to_string(e)?),
        None => None,
    })
}

fn name_taken(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Rewrites `config.skills` of the deployment from the table.
async fn sync_summaries(conn: &mut DbConn, deployment_id: &str) -> Result<(), StoreError> {
    let rows = query(&format!(
        "{SELECT} WHERE deployment_id = ? ORDER BY created_at, seq"
    ))
    .bind(deployment_id)
    .fetch_all(&mut *conn)
    .await?;
    let summaries = rows
        .iter()
        .map(|r| {
            let s = skill(r)?;
            Ok(SkillSummary {
                skill_id: s.id,
                name: s.name,
                source: s.source,
                description: s.description,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    query(SET_SKILL_SUMMARIES)
        .bind(serde_json::to_string(&summaries)?)
        .bind(deployment_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert(conn: &mut DbConn, s: &SkillRecord) -> Result<(), StoreError> {
    let result = query(
        "INSERT INTO skills (id, deployment_id, name, source, description, content, url, path, \
         error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&s.id)
    .bind(&s.deployment_id)
    .bind(&s.name)
    .bind(&s.source)
    .bind(&s.description)
    .bind(&s.content)
    .bind(&s.url)
    .bind(&s.path)
    .bind(error_json(s.error.as_ref())?)
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(&mut *conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if name_taken(&e) => Err(StoreError::Conflict(format!(
            "A skill named `{}` already exists in this deployment.",
            s.name
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn update(conn: &mut DbConn, s: &SkillRecord) -> Result<u64, StoreError> {
    let result = query(
        "UPDATE skills SET name = ?, source = ?, description = ?, content = ?, url = ?, \
         path = ?, error = ?, updated_at = ? WHERE id = ? AND deployment_id = ?",
    )
    .bind(&s.name)
    .bind(&s.source)
    .bind(&s.description)
    .bind(&s.content)
    .bind(&s.url)
    .bind(&s.path)
    .bind(error_json(s.error.as_ref())?)
    .bind(s.updated_at)
    .bind(&s.id)
    .bind(&s.deployment_id)
    .execute(&mut *conn)
    .await;
    match result {
        Ok(done) => Ok(done.rows_affected()),
        Err(e) if name_taken(&e) => Err(StoreError::Conflict(format!(
            "A skill named `{}` already exists in this deployment.",
            s.name
        ))),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn create(writer: &DbPool, s: &SkillRecord, max: u32) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    let count: i64 = query_scalar("SELECT COUNT(*) FROM skills WHERE deployment_id = ?")
        .bind(&s.deployment_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= i64::from(max) {
        return Err(StoreError::Conflict(format!(
            "The deployment already has {count} skills, the most allowed."
        )));
    }
    insert(&mut tx, s).await?;
    sync_summaries(&mut tx, &s.deployment_id).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(
    pool: &DbPool,
    deployment_id: &str,
    skill_id: &str,
) -> Result<SkillRecord, StoreError> {
    let row = query(&format!("{SELECT} WHERE id = ? AND deployment_id = ?"))
        .bind(skill_id)
        .bind(deployment_id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound("skill"))?;
    skill(&row)
}

pub(super) async fn list(
    pool: &DbPool,
    deployment_id: &str,
    page: &PageRequest,
) -> Result<Paged<SkillRecord>, StoreError> {
    paging::page(
        pool,
        SELECT,
        "deployment_id = ?",
        &[deployment_id],
        page,
        skill,
    )
    .await
}

pub(super) async fn all(
    pool: &DbPool,
    deployment_id: &str,
) -> Result<Vec<SkillRecord>, StoreError> {
    let rows = query(&format!(
        "{SELECT} WHERE deployment_id = ? ORDER BY created_at, seq"
    ))
    .bind(deployment_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(skill).collect()
}

pub(super) async fn replace(writer: &DbPool, s: &SkillRecord) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    if update(&mut tx, s).await? == 0 {
        return Err(StoreError::NotFound("skill"));
    }
    sync_summaries(&mut tx, &s.deployment_id).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn delete(
    writer: &DbPool,
    deployment_id: &str,
    skill_id: &str,
) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    let done = query("DELETE FROM skills WHERE id = ? AND deployment_id = ?")
        .bind(skill_id)
        .bind(deployment_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("skill"));
    }
    sync_summaries(&mut tx, deployment_id).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn replace_all(
    writer: &DbPool,
    deployment_id: &str,
    skills: &[SkillRecord],
) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    let existing: Vec<String> = query_scalar("SELECT id FROM skills WHERE deployment_id = ?")
        .bind(deployment_id)
        .fetch_all(&mut *tx)
        .await?;
    for id in &existing {
        if !skills.iter().any(|s| &s.id == id) {
            query("DELETE FROM skills WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    // Names may move between entries: clear them first so the unique index holds throughout.
    query("UPDATE skills SET name = '~' || id WHERE deployment_id = ?")
        .bind(deployment_id)
        .execute(&mut *tx)
        .await?;
    for s in skills {
        if existing.contains(&s.id) {
            update(&mut tx, s).await?;
        } else {
            insert(&mut tx, s).await?;
        }
    }
    sync_summaries(&mut tx, deployment_id).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn set_load(
    writer: &DbPool,
    deployment_id: &str,
    skill_id: &str,
    description: Option<&str>,
    error: Option<&ErrorInfo>,
) -> Result<(), StoreError> {
    let mut tx = begin(writer).await?;
    query(
        "UPDATE skills SET error = ?, description = COALESCE(?, description) \
         WHERE id = ? AND deployment_id = ?",
    )
    .bind(error_json(error)?)
    .bind(description)
    .bind(skill_id)
    .bind(deployment_id)
    .execute(&mut *tx)
    .await?;
    if description.is_some() {
        sync_summaries(&mut tx, deployment_id).await?;
    }
    tx.commit().await?;
    Ok(())
}
