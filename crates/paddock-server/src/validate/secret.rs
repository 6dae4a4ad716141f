//! `POST /v1/secrets` bodies (spec §15.1). Error messages never quote the value.

use serde_json::Value;

use super::{as_str, body_object, check_len, given, required};
use crate::error::ApiError;

const MIN_VALUE_BYTES: usize = 8;
const MAX_VALUE_BYTES: usize = 65_536;
const MAX_NAME: usize = 128;

/// A validated secret create body.
pub(crate) struct NewSecret {
    pub value: String,
    pub name: Option<String>,
    pub customer_id: Option<String>,
}

/// Validates a `POST /v1/secrets` body: `value` 8 to 65,536 bytes; `name` 1–128 characters of
/// `[A-Za-z0-9_.-]`; `customer_id` as on deployments.
pub(crate) fn secret_create(body: &Value) -> Result<NewSecret, ApiError> {
    let obj = body_object(body)?;
    let value = required(
        obj,
        "value",
        "value",
        "the credential, a string of 8 to 65,536 bytes",
    )?;
    let Value::String(value) = value else {
        return Err(ApiError::validation(
            "value",
            "`value` must be a string of 8 to 65,536 bytes.",
        ));
    };
    if value.len() < MIN_VALUE_BYTES || value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::validation(
            "value",
            format!(
                "`value` must be 8 to 65,536 bytes long, got {} bytes.",
                value.len()
            ),
        ));
    }
    let name = match given(obj, "name") {
        None => None,
        Some(v) => {
            let s = as_str(v, "name")?;
            check_len(s, "name", 1, MAX_NAME)?;
            if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(ApiError::validation(
                    "name",
                    "`name` may contain only letters, digits, `_`, `.` and `-`.",
                ));
            }
            Some(s.to_owned())
        }
    };
    let customer_id = match given(obj, "customer_id") {
        None => None,
        Some(v) => Some(super::deployment::customer_id(v)?),
    };
    Ok(NewSecret {
        value: value.clone(),
        name,
        customer_id,
    })
}
