//! Keyset pagination shared by every list (newest first, ties by id, stable pages).

use sqlx::Row;

use super::dialect::query;
use super::{DbPool, DbRow};

use crate::cursor::{Cursor, PageRequest};
use crate::{Paged, StoreError};

/// Runs `select` (which must expose `seq`, `id` and `created_at` of one table and end without
/// a WHERE clause) restricted by `scope` (an SQL condition with `?` placeholders bound to
/// `binds`), and returns one page.
pub(super) async fn page<T>(
    pool: &DbPool,
    select: &str,
    scope: &str,
    binds: &[&str],
    page: &PageRequest,
    map: impl Fn(&DbRow) -> Result<T, StoreError>,
) -> Result<Paged<T>, StoreError> {
    let max_seq = match &page.cursor {
        Some(c) => c.max_seq,
        None => {
            let sql = format!(
                "SELECT COALESCE(MAX(seq), 0) AS m FROM ({select} WHERE {scope}) AS page_scope"
            );
            let mut q = query(&sql);
            for b in binds {
                q = q.bind(*b);
            }
            q.fetch_one(pool).await?.try_get::<i64, _>("m")?
        }
    };
    let keyset = if page.cursor.is_some() {
        " AND (created_at < ? OR (created_at = ? AND id < ?))"
    } else {
        ""
    };
    let sql = format!(
        "{select} WHERE {scope} AND seq <= ?{keyset} ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    let mut q = query(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    q = q.bind(max_seq);
    if let Some(c) = &page.cursor {
        q = q.bind(c.created_at).bind(c.created_at).bind(c.id.clone());
    }
    q = q.bind(i64::from(page.limit) + 1);
    let rows = q.fetch_all(pool).await?;
    let more = rows.len() > page.limit as usize;
    let mut items = Vec::with_capacity(rows.len().min(page.limit as usize));
    let mut last_key = None;
    for row in rows.iter().take(page.limit as usize) {
        last_key = Some((
            row.try_get::<i64, _>("created_at")?,
            row.try_get::<String, _>("id")?,
        ));
        items.push(map(row)?);
    }
    let next = match (more, last_key) {
        (true, Some((created_at, id))) => Some(
            Cursor {
                created_at,
                id,
                max_seq,
            }
            .encode(),
        ),
        _ => None,
    };
    Ok((items, next))
}
