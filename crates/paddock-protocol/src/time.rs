//! Timestamps on the wire: RFC 3339, UTC, `Z`, whole seconds (spec §1.6).

use chrono::{DateTime, SecondsFormat, Utc};

/// Current time in whole Unix seconds; what the store keeps.
pub fn now_unix() -> i64 {
    Utc::now().timestamp()
}

/// Formats Unix seconds as the wire timestamp.
pub fn format_unix(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a wire timestamp (any RFC 3339 offset accepted) into Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
}
