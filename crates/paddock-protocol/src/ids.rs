//! Opaque identifiers: a type prefix plus a random base62 part (spec §1.5).

use rand::Rng;
use rand::distr::Alphanumeric;

/// Length of the random part of generated ids. 20 base62 characters ≈ 119 bits.
const RANDOM_LEN: usize = 20;

/// The prefixes of every id type Paddock hands out.
pub mod prefix {
    pub const ACCOUNT: &str = "acct_";
    pub const KEY: &str = "key_";
    pub const DEPLOYMENT: &str = "dep_";
    pub const THREAD: &str = "thr_";
    pub const DEFAULT_THREAD: &str = "thr_default_";
    pub const RUN: &str = "run_";
    pub const MESSAGE: &str = "msg_";
    pub const CALL: &str = "call_";
    pub const STEERING: &str = "srq_";
    pub const REQUEST: &str = "req_";
    pub const SECRET: &str = "sec_";
    pub const MEMORY: &str = "mem_";
    pub const SKILL: &str = "skl_";
    pub const AUTOMATION: &str = "auto_";
}

/// A new random id with the given prefix.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + RANDOM_LEN);
    s.push_str(prefix);
    s.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from),
    );
    s
}

/// A new API key secret: `pdk_` + 40 base62 characters (spec §1.2).
pub fn new_api_key() -> String {
    let mut s = String::with_capacity(44);
    s.push_str("pdk_");
    s.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(40)
            .map(char::from),
    );
    s
}

/// Whether `key` has the shape of an API key; anything else is rejected before a lookup.
pub fn is_api_key_shaped(key: &str) -> bool {
    key.len() == 44
        && key.starts_with("pdk_")
        && key[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `id` could be an id Paddock issued: at most 64 characters of `[A-Za-z0-9_]`.
/// Anything else can never name a resource, so callers answer 404 without a lookup.
pub fn is_id_shaped(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Formats an event sequence number as its wire id.
pub fn event_id(seq: i64) -> String {
    format!("evt_{seq}")
}

/// Parses `evt_<digits>` (leading zeros allowed) into its sequence number.
pub fn parse_event_id(s: &str) -> Option<i64> {
    let digits = s.strip_prefix("evt_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some(0);
    }
    trimmed.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_accept_leading_zeros() {
        assert_eq!(parse_event_id("evt_0042"), Some(42));
        assert_eq!(parse_event_id("evt_0"), Some(0));
        assert_eq!(parse_event_id("evt_"), None);
        assert_eq!(parse_event_id("evt_-1"), None);
        assert_eq!(parse_event_id("evt_99999999999999999999999"), None);
        assert_eq!(event_id(7), "evt_7");
    }

    #[test]
    fn generated_ids_are_well_formed() {
        let id = new_id(prefix::DEPLOYMENT);
        assert!(id.starts_with("dep_") && is_id_shaped(&id));
        assert!(is_api_key_shaped(&new_api_key()));
        assert!(!is_id_shaped("dep_../x"));
    }
}
