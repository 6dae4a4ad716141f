//! Opaque pagination cursors (spec §1.7).
//!
//! A cursor carries the sort key of the last item returned and the highest insertion sequence
//! that existed when the first page was read, so later pages never show items created after the
//! first page, and ties on `created_at` are broken by id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
    pub max_seq: i64,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1:{}:{}:{}",
            self.created_at, self.max_seq, self.id
        ))
    }

    /// Reads a client's cursor; `None` when it is not one Paddock made.
    pub fn decode(s: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let mut parts = text.splitn(4, ':');
        if parts.next()? != "v1" {
            return None;
        }
        let created_at = parts.next()?.parse().ok()?;
        let max_seq = parts.next()?.parse().ok()?;
        let id = parts.next()?.to_owned();
        if !paddock_protocol::ids::is_id_shaped(&id) {
            return None;
        }
        Some(Self {
            created_at,
            id,
            max_seq,
        })
    }
}

/// A validated page request: 1–100 items, optionally after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: 20,
            cursor: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: 1_700_000_000,
            id: "dep_abc".into(),
            max_seq: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode(""), None);
    }
}
