//! Automation bodies (spec §9.4). The field rules live in `paddock_core::automations`, because
//! the agent's `automations` tool applies the same ones; this maps their refusals to the API's
//! errors: a bad field is `400 validation_error` naming it, a foreign `thread_id` a `404`
//! with `param: "thread_id"`, a disabled feature or the 100-automation limit `409 conflict`.

use paddock_core::automations::ChangeError;

use crate::error::ApiError;

/// The API error for a refused automation create or change.
pub(crate) fn automation_error(e: ChangeError, automation_id: &str) -> ApiError {
    match e {
        ChangeError::Field(f) => ApiError::validation(f.param, f.message),
        ChangeError::ThreadNotFound(m) => ApiError::not_found(m).with_param("thread_id"),
        ChangeError::Conflict(m) => ApiError::conflict(m),
        ChangeError::NotFound => crate::routes::no_such("automation", automation_id),
        ChangeError::Store(e) => e.into(),
    }
}
