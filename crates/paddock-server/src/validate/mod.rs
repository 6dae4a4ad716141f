//! Hand-written validation of request bodies.
//!
//! Bodies arrive as a [`serde_json::Value`] the caller has already checked to be a JSON
//! object. Every field is checked by hand, in the order of the spec's field table, so each
//! error carries the exact `param` (a dotted path with indices such as `sandbox.cpus`,
//! `mcp_servers[1].url` or `secrets.ACME_TOKEN`) and a message saying what is wrong and what
//! is allowed (spec §1.8). The rules shared by every body (spec §1.6, §1.12):
//!
//! - unknown fields are ignored;
//! - `null` for an optional field means "not given" (PATCH bodies say where it does not);
//! - lengths count Unicode characters;
//! - nothing here panics, whatever the input.
//!
//! - [`Validator::deployment_create`] / [`Validator::deployment_patch`]: deployments (§3, §14, §15);
//! - [`message`], [`thread_title`]: messages and threads (§4.1, §8.2);
//! - [`account_create`], [`credits`], [`key_create`]: the admin endpoints (§16);
//! - [`automation_error`]: automations (§9.4; the field rules are shared with the agent's tool).

mod admin;
mod automation;
mod deployment;
mod message;
mod secret;

pub(crate) use admin::{account_create, credits, key_create};
pub(crate) use automation::automation_error;
pub(crate) use message::{message, thread_title};
pub(crate) use secret::secret_create;

use paddock_model::ProviderRegistry;
use paddock_protocol::{Attachment, DeploymentConfig};
use paddock_store::ThreadTarget;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::settings::ServerSettings;

/// Checks deployment bodies against the server's configuration (enabled sandbox backends and
/// their limits, content limits) and its model providers.
pub(crate) struct Validator<'a> {
    /// The server's configuration.
    pub settings: &'a ServerSettings,
    /// The configured model providers, which decide whether a `model` is usable.
    pub models: &'a ProviderRegistry,
    /// The caller's secrets among those a body references (looked up before validating);
    /// `None`: none is known, so every reference is refused.
    pub secrets: Option<&'a SecretRefs>,
}

/// The account's secrets a body references: id → the `customer_id` the secret is bound to.
pub(crate) type SecretRefs = std::collections::HashMap<String, Option<String>>;

/// A validated `POST /v1/deployments` body, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewDeployment {
    /// The client's own customer identifier (immutable).
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// `paddock` or `hermes`, echoed as sent (immutable).
    pub runtime: String,
    /// Everything the deployment's runs use.
    pub config: DeploymentConfig,
}

/// A validated `POST /v1/deployments/:dep/messages` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewMessage {
    /// The message text.
    pub content: String,
    /// Where it goes: the default thread, a new thread, or the thread named by `thread_id`.
    /// An id is passed through as sent, even when it is not id-shaped: the caller answers
    /// `404` with `param: "thread_id"` for a thread the deployment does not have.
    pub thread: ThreadTarget,
    /// The attachments, in order.
    pub attachments: Vec<Attachment>,
}

/// A validated `POST /v1/keys` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewKeyRequest {
    /// Display name, 1–100 characters.
    pub name: String,
    /// Known scopes, deduplicated, in the order first given.
    pub scopes: Vec<String>,
    /// The account the key belongs to; `None` is the caller's. Passed through as sent: the
    /// caller answers 404 for an unknown account.
    pub account_id: Option<String>,
    /// Expiry in Unix seconds, in the future.
    pub expires_at: Option<i64>,
}

/// How a JSON value's type reads in an error message ("got a number").
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `key` of `obj`, with `null` read as absent.
fn given<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The body as an object. The caller has checked this already; a non-object is still
/// answered with a 400 rather than trusted.
fn body_object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object."))
}

/// A required field: absent or `null` is "`param` is required".
fn required<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    param: &str,
    what: &str,
) -> Result<&'v Value, ApiError> {
    given(obj, key)
        .ok_or_else(|| ApiError::validation(param, format!("`{param}` is required: {what}.")))
}

fn type_error(param: &str, expected: &str, v: &Value) -> ApiError {
    ApiError::validation(
        param,
        format!("`{param}` must be {expected}, got {}.", kind(v)),
    )
}

fn as_str<'v>(v: &'v Value, param: &str) -> Result<&'v str, ApiError> {
    v.as_str().ok_or_else(|| type_error(param, "a string", v))
}

fn as_bool(v: &Value, param: &str) -> Result<bool, ApiError> {
    v.as_bool()
        .ok_or_else(|| type_error(param, "a boolean (true or false)", v))
}

fn as_object<'v>(v: &'v Value, param: &str) -> Result<&'v Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| type_error(param, "an object", v))
}

fn as_array<'v>(v: &'v Value, param: &str) -> Result<&'v Vec<Value>, ApiError> {
    v.as_array().ok_or_else(|| type_error(param, "an array", v))
}

/// Length in Unicode characters (spec §1.6).
fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Checks that `s` is `min..=max` characters long, none of them U+0000: that is no text anyone
/// means, and PostgreSQL cannot store it, so both stores refuse it alike.
fn check_len(s: &str, param: &str, min: usize, max: usize) -> Result<(), ApiError> {
    if s.contains('\0') {
        return Err(ApiError::validation(
            param,
            format!("`{param}` must not contain the character U+0000."),
        ));
    }
    let n = chars(s);
    if n < min || n > max {
        let range = if min == max {
            format!("exactly {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(ApiError::validation(
            param,
            format!("`{param}` must be {range} characters long, got {n}."),
        ));
    }
    Ok(())
}

/// A required string of `min..=max` characters.
fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    let v = required(
        obj,
        key,
        key,
        &format!("a string of {min} to {max} characters"),
    )?;
    let s = as_str(v, key)?;
    check_len(s, key, min, max)?;
    Ok(s.to_owned())
}

/// Longest URL a client may give (attachments, MCP servers).
const MAX_URL_CHARS: usize = 2048;

/// An `http`/`https` URL of at most 2,048 characters that parses and has a host.
fn http_url(s: &str, param: &str) -> Result<(), ApiError> {
    let n = chars(s);
    if n == 0 {
        return Err(ApiError::validation(
            param,
            format!("`{param}` must be an http or https URL, got an empty string."),
        ));
    }
    if n > MAX_URL_CHARS {
        return Err(ApiError::validation(
            param,
            format!("`{param}` must be at most {MAX_URL_CHARS} characters long, got {n}."),
        ));
    }
    let url = reqwest::Url::parse(s).map_err(|e| {
        ApiError::validation(
            param,
            format!(
                "`{param}` is not a valid URL ({e}); it must be an absolute http or https URL."
            ),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::validation(
            param,
            format!(
                "`{param}` must use http or https, got the scheme `{}`.",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::validation(
            param,
            format!("`{param}` must name a host."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod test_util {
    use serde_json::Value;

    use crate::error::ApiError;

    /// Asserts a 400 `validation_error` with `param`, returning the message.
    #[track_caller]
    pub(super) fn assert_invalid<T: std::fmt::Debug>(
        r: Result<T, ApiError>,
        param: &str,
    ) -> String {
        match r {
            Ok(v) => panic!("expected a 400 on `{param}`, got Ok({v:?})"),
            Err(e) => {
                assert_eq!(
                    e.code,
                    paddock_protocol::ErrorCode::ValidationError,
                    "wrong code for {param}: {e:?}"
                );
                assert_eq!(e.param.as_deref(), Some(param), "wrong param: {e:?}");
                assert!(!e.message.is_empty());
                e.message
            }
        }
    }

    /// `serde_json::json!` but through a string, for bodies built with `format!`.
    pub(super) fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("test JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::assert_invalid;
    use super::*;

    #[test]
    fn urls() {
        assert!(http_url("https://example.com/x?y=1", "u").is_ok());
        assert!(http_url("http://10.0.0.1:8080", "u").is_ok());
        assert!(http_url("http://[::1]/", "u").is_ok());
        for bad in [
            "",
            "example.com",
            "/relative",
            "ftp://example.com/",
            "file:///etc/passwd",
            "mailto:a@b.c",
            "http://",
            "https://exa mple.com/",
            "data:text/plain,hi",
        ] {
            assert_invalid(http_url(bad, "u"), "u");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        let m = assert_invalid(http_url(&long, "u"), "u");
        assert!(m.contains("2048"), "{m}");
        let exact = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(exact.chars().count(), 2048);
        assert!(http_url(&exact, "u").is_ok());
    }

    #[test]
    fn text_never_holds_nul() {
        assert_invalid(check_len("a\0b", "title", 0, 10), "title");
        assert!(check_len("a\u{1}b", "title", 0, 10).is_ok());
    }

    #[test]
    fn lengths_count_chars() {
        assert!(check_len("ééé", "p", 1, 3).is_ok());
        assert_invalid(check_len("éééé", "p", 1, 3), "p");
        assert_invalid(check_len("", "p", 1, 3), "p");
    }

    #[test]
    fn non_object_body() {
        let e = body_object(&Value::from(3)).unwrap_err();
        assert_eq!(e.param, None);
    }
}
