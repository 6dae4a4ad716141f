//! The error envelope and its stable codes (spec §1.8).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable, machine-readable error code. The list is extensible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationError,
    Unauthorized,
    InsufficientCredits,
    Forbidden,
    NotFound,
    DeploymentNotReady,
    Conflict,
    PayloadTooLarge,
    InvalidSkill,
    InvalidSecretRef,
    RateLimited,
    ServerError,
}

impl ErrorCode {
    /// The HTTP status this code always travels with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::InsufficientCredits => 402,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::DeploymentNotReady | ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidSkill | ErrorCode::InvalidSecretRef => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::ServerError => 500,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::DeploymentNotReady => "deployment_not_ready",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidSkill => "invalid_skill",
            ErrorCode::InvalidSecretRef => "invalid_secret_ref",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// `{"error": {...}}`: the body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of the error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The offending field as a dotted path with indices, or `null`.
    pub param: Option<String>,
}
