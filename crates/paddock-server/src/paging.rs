//! `limit` and `cursor` query parameters (spec §1.7).

use paddock_protocol::Page;
use paddock_store::{Cursor, PageRequest};

use crate::body::QueryMap;
use crate::error::ApiError;

/// Reads `limit` (1–100, default 20) and `cursor` from the query.
pub(crate) fn page_request(query: &QueryMap) -> Result<PageRequest, ApiError> {
    let limit = query.int_in("limit", 1..=100, 20)?;
    let cursor = match query.get("cursor") {
        None => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
            ApiError::validation("cursor", "`cursor` is not a cursor this server handed out.")
        })?),
    };
    Ok(PageRequest { limit, cursor })
}

/// A page of wire objects.
pub(crate) fn page<R, T>(records: &[R], next: Option<String>, render: impl Fn(&R) -> T) -> Page<T> {
    Page {
        data: records.iter().map(render).collect(),
        next_cursor: next,
    }
}
