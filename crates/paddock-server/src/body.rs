//! Request bodies and query strings, read so that bad input always becomes the documented
//! error: a JSON body is parsed whatever its `Content-Type` (spec §1.6), must be an object, and
//! over the size limit is a 413.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Reads a whole body of at most `limit` bytes; a larger one is a 413.
pub(crate) async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // The limit error is `http_body_util::LengthLimitError`, which axum does not
            // re-export; it is recognised by its message anywhere in the error chain.
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.to_string().contains("length limit exceeded"));
            if too_large {
                Err(ApiError::payload_too_large(limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "Could not read the request body: {e}"
                )))
            }
        }
    }
}

/// Parses `bytes` as a JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object; it is empty.",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "The request body is not valid JSON: {e}."
        ))),
    }
}

/// A JSON object body (any `Content-Type`), at most the configured JSON body size.
pub(crate) struct JsonObject(pub Value);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_limited(req.into_body(), state.settings.limits.json_body_bytes).await?;
        parse_object(&bytes).map(|m| JsonObject(Value::Object(m)))
    }
}

/// A JSON body read at once (so an oversized one is a 413 before anything else) but parsed
/// only when the handler asks, after it has looked up the ids in the path: a 404 for an id in
/// the path comes before a 400 for the body (spec §1.8).
pub(crate) struct DeferredJson(Bytes);

impl DeferredJson {
    /// The body as a JSON object ([`JsonObject`] rules).
    pub(crate) fn object(&self) -> Result<Value, ApiError> {
        parse_object(&self.0).map(Value::Object)
    }

    /// The body as a JSON object, an empty body being `{}` (for endpoints whose body is
    /// optional).
    pub(crate) fn optional_object(&self) -> Result<Value, ApiError> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        self.object()
    }
}

impl FromRequest<AppState> for DeferredJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_limited(req.into_body(), state.settings.limits.json_body_bytes)
            .await
            .map(DeferredJson)
    }
}

/// The query string as a map; a malformed one is a 400.
pub(crate) struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(QueryMap(pairs.into_iter().collect())),
            Err(e) => Err(ApiError::bad_request(format!(
                "The query string is malformed: {e}"
            ))),
        }
    }
}

impl QueryMap {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean parameter: `true` or `false`, else a 400 naming it.
    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ApiError::validation(
                name,
                format!("`{name}` must be `true` or `false`, got `{other}`."),
            )),
        }
    }

    /// An integer parameter within `range`, else a 400 naming it.
    pub(crate) fn int_in(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
        default: u32,
    ) -> Result<u32, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ApiError::validation(
                        name,
                        format!(
                            "`{name}` must be an integer from {} to {}, got `{v}`.",
                            range.start(),
                            range.end()
                        ),
                    )
                }),
        }
    }
}
