//! Admin bodies: accounts, credits and keys (spec §16).

use paddock_protocol::scope;
use paddock_store::BalanceChange;
use serde_json::Value;

use super::{NewKeyRequest, as_array, as_str, body_object, given, kind, required_string};
use crate::error::ApiError;

const MAX_ACCOUNT_NAME: usize = 100;
const MAX_KEY_NAME: usize = 100;
const MICROS_PER_CREDIT: i64 = 1_000_000;
const MAX_DECIMALS: usize = 6;
/// The largest balance or amount, in credits, either sign (so sums stay far from `i64`).
const MAX_CREDITS: i64 = 1_000_000_000_000;

/// Validates `POST /v1/accounts` (spec §16.1): `name` of 1–100 characters of `[a-z0-9_-]`,
/// and `balance` (a number with at most 6 decimals, or `null`/absent for unlimited).
/// Returns the name and the balance in micro-credits.
pub(crate) fn account_create(body: &Value) -> Result<(String, Option<i64>), ApiError> {
    let obj = body_object(body)?;
    let name = required_string(obj, "name", 1, MAX_ACCOUNT_NAME)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(ApiError::validation(
            "name",
            "`name` may contain only lowercase a-z, digits, `_` and `-`.",
        ));
    }
    let balance = given(obj, "balance")
        .map(|v| micro_credits(v, "balance"))
        .transpose()?;
    Ok((name, balance))
}

/// Validates `POST /v1/accounts/:id/credits` (spec §16.1): exactly one of `amount` (a number,
/// may be negative: added) or `balance` (a number, or `null` for unlimited: set), with at most 6
/// decimals. An `amount` of `null` counts as absent; a `balance` of `null` is a value.
pub(crate) fn credits(body: &Value) -> Result<BalanceChange, ApiError> {
    let obj = body_object(body)?;
    let amount = given(obj, "amount");
    let balance = obj.get("balance");
    match (amount, balance) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "Send exactly one of `amount` (added to the balance) or `balance` (sets it), not both.",
        )),
        (None, None) => Err(ApiError::bad_request(
            "Send exactly one of `amount` (a number added to the balance) or `balance` (a number, or null for unlimited).",
        )),
        (Some(a), None) => Ok(BalanceChange::Add(micro_credits(a, "amount")?)),
        (None, Some(Value::Null)) => Ok(BalanceChange::Set(None)),
        (None, Some(b)) => Ok(BalanceChange::Set(Some(micro_credits(b, "balance")?))),
    }
}

/// A credit figure (a JSON number with at most 6 decimal places) in micro-credits.
///
/// The decimal places are those of the shortest decimal that reads back as the same `f64`,
/// i.e. what the client wrote, for any figure a client could mean.
fn micro_credits(v: &Value, param: &str) -> Result<i64, ApiError> {
    let range = || {
        ApiError::validation(
            param,
            format!("`{param}` must be between -{MAX_CREDITS} and {MAX_CREDITS} credits.",),
        )
    };
    let Value::Number(n) = v else {
        return Err(ApiError::validation(
            param,
            format!(
                "`{param}` must be a number of credits with at most {MAX_DECIMALS} decimal places, got {}.",
                kind(v)
            ),
        ));
    };
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_CREDITS.unsigned_abs() {
            return Err(range());
        }
        i.checked_mul(MICROS_PER_CREDIT).ok_or_else(range)
    } else if n.is_u64() {
        Err(range())
    } else {
        let f = n.as_f64().ok_or_else(range)?;
        if !f.is_finite() || f.abs() > MAX_CREDITS as f64 {
            return Err(range());
        }
        let text = format!("{}", f.abs());
        let (int, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
        if frac.len() > MAX_DECIMALS {
            return Err(ApiError::validation(
                param,
                format!("`{param}` may have at most {MAX_DECIMALS} decimal places, got {f}."),
            ));
        }
        let int: i64 = int.parse().map_err(|_| range())?;
        let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| range())?;
        let m = int
            .checked_mul(MICROS_PER_CREDIT)
            .and_then(|m| m.checked_add(frac))
            .ok_or_else(range)?;
        Ok(if f.is_sign_negative() { -m } else { m })
    }
}

/// Validates `POST /v1/keys` (spec §16.2): `name` of 1–100 characters; `scopes` a non-empty
/// array of known scopes (deduplicated); optional `account_id` (a string); optional
/// `expires_at`, an RFC 3339 timestamp after `now` (Unix seconds).
pub(crate) fn key_create(body: &Value, now: i64) -> Result<NewKeyRequest, ApiError> {
    let obj = body_object(body)?;
    let name = required_string(obj, "name", 1, MAX_KEY_NAME)?;

    let known = list(&scope::ALL);
    let scopes_v = given(obj, "scopes").ok_or_else(|| {
        ApiError::validation(
            "scopes",
            format!("`scopes` is required: a non-empty array of {known}."),
        )
    })?;
    let arr = as_array(scopes_v, "scopes")?;
    if arr.is_empty() {
        return Err(ApiError::validation(
            "scopes",
            format!("`scopes` must not be empty; choose from {known}."),
        ));
    }
    let mut scopes: Vec<String> = Vec::with_capacity(arr.len());
    for (i, v) in arr.iter().enumerate() {
        let p = format!("scopes[{i}]");
        let s = as_str(v, &p)?;
        if !scope::ALL.contains(&s) {
            return Err(ApiError::validation(
                p,
                format!(
                    "Unknown scope `{}`; the scopes are {known}.",
                    s.chars().take(64).collect::<String>()
                ),
            ));
        }
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    }

    let account_id = given(obj, "account_id")
        .map(|v| as_str(v, "account_id").map(str::to_owned))
        .transpose()?;

    let expires_at = match given(obj, "expires_at") {
        None => None,
        Some(v) => {
            let s = as_str(v, "expires_at")?;
            let t = paddock_protocol::time::parse_timestamp(s).ok_or_else(|| {
                ApiError::validation(
                    "expires_at",
                    "`expires_at` must be an RFC 3339 timestamp such as 2026-06-11T18:21:09Z.",
                )
            })?;
            if t <= now {
                return Err(ApiError::validation(
                    "expires_at",
                    "`expires_at` must be in the future.",
                ));
            }
            Some(t)
        }
    };

    Ok(NewKeyRequest {
        name,
        scopes,
        account_id,
        expires_at,
    })
}

fn list(items: &[&str]) -> String {
    items.join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_util::{assert_invalid, parse};
    use super::*;

    #[test]
    fn accounts() {
        assert_eq!(
            account_create(&json!({"name": "acme"})).unwrap(),
            ("acme".into(), None)
        );
        assert_eq!(
            account_create(&json!({"name": "a_b-9", "balance": null})).unwrap(),
            ("a_b-9".into(), None)
        );
        assert_eq!(
            account_create(&json!({"name": "acme", "balance": 12.5})).unwrap(),
            ("acme".into(), Some(12_500_000))
        );
        assert_eq!(
            account_create(&json!({"name": "acme", "balance": 0}))
                .unwrap()
                .1,
            Some(0)
        );
        assert_eq!(
            account_create(&json!({"name": "acme", "balance": -3}))
                .unwrap()
                .1,
            Some(-3_000_000)
        );
        assert!(account_create(&json!({"name": "x".repeat(100)})).is_ok());

        assert_invalid(account_create(&json!({})), "name");
        assert_invalid(account_create(&json!({"name": null})), "name");
        assert_invalid(account_create(&json!({"name": ""})), "name");
        assert_invalid(account_create(&json!({"name": "x".repeat(101)})), "name");
        assert_invalid(account_create(&json!({"name": "Acme"})), "name");
        assert_invalid(account_create(&json!({"name": "ac me"})), "name");
        assert_invalid(account_create(&json!({"name": "é"})), "name");
        assert_invalid(account_create(&json!({"name": 5})), "name");
        assert_invalid(
            account_create(&json!({"name": "a", "balance": "10"})),
            "balance",
        );
        assert_invalid(
            account_create(&json!({"name": "a", "balance": 0.0000001})),
            "balance",
        );
        assert_invalid(
            account_create(&json!({"name": "a", "balance": 1e20})),
            "balance",
        );
    }

    #[test]
    fn decimals_are_exact() {
        let m = |s: &str| micro_credits(&parse(s), "b");
        assert_eq!(m("0.1").unwrap(), 100_000);
        assert_eq!(m("0.000001").unwrap(), 1);
        assert_eq!(m("-0.000001").unwrap(), -1);
        assert_eq!(m("123456.123456").unwrap(), 123_456_123_456);
        assert_eq!(m("1.10").unwrap(), 1_100_000);
        assert_eq!(m("2.0").unwrap(), 2_000_000);
        assert_eq!(m("-0.0").unwrap(), 0);
        assert_eq!(m("1e3").unwrap(), 1_000_000_000);
        assert_eq!(m("1.5e-6").unwrap_err().param.as_deref(), Some("b"));
        assert_eq!(m("1000000000000").unwrap(), 1_000_000_000_000_000_000);
        assert_eq!(m("-1000000000000").unwrap(), -1_000_000_000_000_000_000);
        for bad in [
            "0.1234567",
            "1000000000001",
            "-1000000000001",
            "18446744073709551615",
            "-9223372036854775808",
            "1e300",
            "\"1\"",
            "true",
            "[1]",
        ] {
            assert_invalid(m(bad), "b");
        }
    }

    #[test]
    fn credit_changes() {
        assert_eq!(
            credits(&json!({"amount": 5})).unwrap(),
            BalanceChange::Add(5_000_000)
        );
        assert_eq!(
            credits(&json!({"amount": -0.25})).unwrap(),
            BalanceChange::Add(-250_000)
        );
        assert_eq!(
            credits(&json!({"amount": 0})).unwrap(),
            BalanceChange::Add(0)
        );
        assert_eq!(
            credits(&json!({"balance": 100.000001})).unwrap(),
            BalanceChange::Set(Some(100_000_001))
        );
        assert_eq!(
            credits(&json!({"balance": null})).unwrap(),
            BalanceChange::Set(None)
        );
        assert_eq!(
            credits(&json!({"amount": null, "balance": 1})).unwrap(),
            BalanceChange::Set(Some(1_000_000))
        );

        for bad in [
            json!({}),
            json!({"amount": null}),
            json!({"amount": 1, "balance": 2}),
            json!({"amount": 1, "balance": null}),
        ] {
            let e = credits(&bad).unwrap_err();
            assert_eq!(e.code, paddock_protocol::ErrorCode::ValidationError);
            assert_eq!(e.param, None);
        }
        assert_invalid(credits(&json!({"amount": "5"})), "amount");
        assert_invalid(credits(&json!({"amount": 1.0000001})), "amount");
        assert_invalid(credits(&json!({"balance": 0.1234567})), "balance");
        assert_invalid(credits(&json!({"balance": false})), "balance");
    }

    #[test]
    fn keys() {
        let now = 1_800_000_000;
        let k = key_create(
            &json!({"name": "backend", "scopes": ["deployments:read", "deployments:write", "deployments:read"]}),
            now,
        )
        .unwrap();
        assert_eq!(
            k,
            NewKeyRequest {
                name: "backend".into(),
                scopes: vec!["deployments:read".into(), "deployments:write".into()],
                account_id: None,
                expires_at: None
            }
        );
        let k = key_create(
            &json!({"name": "k", "scopes": ["admin", "secrets:write"], "account_id": "acct_1",
                    "expires_at": "2028-01-15T08:00:00Z"}),
            now,
        )
        .unwrap();
        assert_eq!(k.scopes, vec!["admin", "secrets:write"]);
        assert_eq!(k.account_id.as_deref(), Some("acct_1"));
        assert_eq!(
            k.expires_at,
            paddock_protocol::time::parse_timestamp("2028-01-15T08:00:00Z")
        );
        let k = key_create(
            &json!({"name": "k", "scopes": ["admin"], "account_id": null, "expires_at": null}),
            now,
        )
        .unwrap();
        assert_eq!((k.account_id, k.expires_at), (None, None));

        let s = json!(["admin"]);
        assert_invalid(key_create(&json!({"scopes": s}), now), "name");
        assert_invalid(key_create(&json!({"name": "", "scopes": s}), now), "name");
        assert_invalid(
            key_create(&json!({"name": "x".repeat(101), "scopes": s}), now),
            "name",
        );
        assert_invalid(key_create(&json!({"name": 1, "scopes": s}), now), "name");
        assert_invalid(key_create(&json!({"name": "k"}), now), "scopes");
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": null}), now),
            "scopes",
        );
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": []}), now),
            "scopes",
        );
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": "admin"}), now),
            "scopes",
        );
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": ["admin", "root"]}), now),
            "scopes[1]",
        );
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": [1]}), now),
            "scopes[0]",
        );
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": ["ADMIN"]}), now),
            "scopes[0]",
        );
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": s, "account_id": 3}), now),
            "account_id",
        );
        assert_invalid(
            key_create(
                &json!({"name": "k", "scopes": s, "expires_at": "tomorrow"}),
                now,
            ),
            "expires_at",
        );
        assert_invalid(
            key_create(
                &json!({"name": "k", "scopes": s, "expires_at": 1900000000}),
                now,
            ),
            "expires_at",
        );
        let past = paddock_protocol::time::format_unix(now - 1);
        assert_invalid(
            key_create(&json!({"name": "k", "scopes": s, "expires_at": past}), now),
            "expires_at",
        );
        let exactly_now = paddock_protocol::time::format_unix(now);
        assert_invalid(
            key_create(
                &json!({"name": "k", "scopes": s, "expires_at": exactly_now}),
                now,
            ),
            "expires_at",
        );
        let soon = paddock_protocol::time::format_unix(now + 1);
        assert_eq!(
            key_create(&json!({"name": "k", "scopes": s, "expires_at": soon}), now)
                .unwrap()
                .expires_at,
            Some(now + 1)
        );
    }
}
