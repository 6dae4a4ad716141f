//! The error every handler returns, rendered as the envelope of spec §1.8.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paddock_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use paddock_store::StoreError;

/// An API error: a stable code, a human message, the offending field, and for 429 the
/// `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Names the offending field (a dotted path with indices).
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn validation(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message).with_param(param)
    }

    /// A validation error about the request as a whole (no single field).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(ErrorCode::RateLimited, message);
        e.retry_after = Some(retry_after.max(1));
        e
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "Something went wrong inside Paddock; the request id is in the x-request-id header.",
        )
    }

    /// The body as JSON bytes (also what idempotent replays store).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                param: self.param.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    /// Store errors that reach a handler unhandled: `NotFound` and `Conflict` keep their meaning;
    /// anything else is logged and hidden behind `server_error`.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("No such {what}.")),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::LimitReached(m) => ApiError::rate_limited(m, 1),
            StoreError::RunFinished => ApiError::conflict("The run has already ended."),
            StoreError::InsufficientCredits => ApiError::new(
                ErrorCode::InsufficientCredits,
                "The account has no credits left; add credits to continue.",
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::server_error()
            }
        }
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
