//! The Files API (spec §11): list, read, write and delete in a deployment's workspace.
//!
//! Every path goes through [`paddock_core::Workspace`]'s fd-based operations, which resolve
//! beneath the workspace root with `openat2(RESOLVE_BENEATH)`: no symbolic link, `..` or
//! concurrent swap can take a request outside, and there is no gap between checking a path and
//! using it. With `features.filesystem_webhooks`, writes and deletes emit `filesystem` events
//! without `run_id` (spec §7.4).

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use paddock_core::workspace::{self, FsError};
use paddock_core::workspace_index::{self, Change};
use paddock_protocol::time::{format_unix, now_unix};
use paddock_store::DeploymentRecord;
use serde::Serialize;
use serde_json::Value;

use super::{PathIds, deployment_of, require_ready};
use crate::auth::Caller;
use crate::body::{QueryMap, parse_object, read_limited};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most entries one listing returns (spec §11.2).
pub(crate) const MAX_LIST_ENTRIES: usize = 10_000;

/// One entry of a directory listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FileEntry {
    /// The entry's name (one path segment).
    name: String,
    /// `file` or `directory`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    kind: &'static str,
    /// Bytes; `null` for directories.
    size: Option<u64>,
    /// Last modification time.
    modified_at: String,
}

/// `GET …/files`: a directory's entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FileListing {
    /// The normalised directory with a trailing `/`, or `""` for the root.
    path: String,
    /// Sorted by name, byte order; at most 10,000.
    entries: Vec<FileEntry>,
    /// Whether there were more than 10,000 entries.
    truncated: bool,
}

/// `PUT …/files`: the file written.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FileWritten {
    path: String,
    size: u64,
    modified_at: String,
    /// `false` when an existing file was overwritten.
    created: bool,
}

/// `DELETE …/files`: what was deleted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FileDeleted {
    path: String,
    /// Always `deleted`.
    status: String,
}

/// The JSON form of `PUT …/files`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document only")]
pub(crate) struct WriteFileRequest {
    /// Path relative to the workspace root (spec §11.1).
    path: String,
    /// The file's content: text, or base64 with `encoding: "base64"`.
    content: String,
    /// `utf8` (default) or `base64`.
    encoding: Option<String>,
}

fn path_error(e: FsError) -> ApiError {
    match e {
        FsError::Path(p) => ApiError::validation("path", format!("Bad `path`: {p}.")),
        FsError::NotFound => ApiError::not_found("Nothing exists at `path`.").with_param("path"),
        FsError::Changed => ApiError::conflict(
            "The workspace changed under `path` during the request; nothing was written. Retry.",
        )
        .with_param("path"),
        FsError::Io(message) => {
            tracing::warn!(error = %message, "workspace operation failed");
            ApiError::server_error()
        }
        other => ApiError::validation("path", format!("Bad `path`: {other}.")),
    }
}

/// The deployment, checked `ready`, and its workspace.
async fn workspace_of(
    state: &AppState,
    caller: &Caller,
    ids: &PathIds,
) -> ApiResult<(DeploymentRecord, paddock_core::Workspace)> {
    let d = deployment_of(state, caller, ids.get("dep")).await?;
    let ws = state.runtime.workspace(&d.id);
    Ok((d, ws))
}

/// Runs a blocking workspace operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, FsError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(FsError::Io(e.to_string())))
}

/// Appends and publishes `filesystem` events for changes the Files API made, when the
/// deployment has `features.filesystem_webhooks`. A failure is logged: the change is made.
async fn report(state: &AppState, d: &DeploymentRecord, changes: Vec<(String, Change)>) {
    if !d.config.features.filesystem_webhooks {
        return;
    }
    let events: Vec<_> = changes
        .into_iter()
        .filter(|(path, _)| workspace_index::reported(path))
        .map(|(path, change)| workspace_index::filesystem_event(&path, change, None))
        .collect();
    if events.is_empty() {
        return;
    }
    let guard = state.runtime.bus().lock(&d.id).await;
    match state.store.append_events(&d.id, events, now_unix()).await {
        Ok(stored) => guard.publish(&stored),
        Err(e) => tracing::warn!(error = %e, "could not record filesystem events"),
    }
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/files",
    operation_id = "list_files",
    tag = "files",
    summary = "List a workspace directory",
    description = "Scope `deployments:read`. Not paginated: entries sorted by name (byte order), at most 10,000, with `truncated: true` if there were more. Needs a `ready` deployment (spec §11.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("path" = Option<String>, Query, description = "A directory relative to the workspace root; empty or absent for the root."),
    ),
    responses(
        (status = 200, description = "The directory's entries.", body = FileListing),
        (status = 400, description = "`validation_error`: `path` breaks the path rules or is a file.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or nothing at `path`.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`deployment_not_ready`: the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Json<FileListing>> {
    let (d, ws) = workspace_of(&state, &caller, &ids).await?;
    let path = query.get("path").unwrap_or_default().to_owned();
    workspace::normalise(&path).map_err(|e| path_error(e.into()))?;
    require_ready(&d)?;
    let listing = blocking(move || ws.list(&path, MAX_LIST_ENTRIES))
        .await
        .map_err(|e| match e {
            FsError::NotDirectory => ApiError::validation("path", "`path` is a file."),
            other => path_error(other),
        })?;
    Ok(Json(FileListing {
        path: if listing.relative.is_empty() {
            String::new()
        } else {
            format!("{}/", listing.relative)
        },
        entries: listing
            .entries
            .into_iter()
            .map(|e| FileEntry {
                name: e.name,
                kind: if e.is_dir { "directory" } else { "file" },
                size: (!e.is_dir).then_some(e.size),
                modified_at: format_unix(e.modified_at),
            })
            .collect(),
        truncated: listing.truncated,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/files/content",
    operation_id = "read_file",
    tag = "files",
    summary = "Read a workspace file",
    description = "Scope `deployments:read`. The file's raw bytes, `Content-Type` from the extension (default `application/octet-stream`). Needs a `ready` deployment (spec §11.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("path" = String, Query, description = "The file, relative to the workspace root."),
    ),
    responses(
        (status = 200, description = "The file's bytes.", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`validation_error`: `path` breaks the path rules or is a directory.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or nothing at `path`.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`deployment_not_ready`: the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Response> {
    let (d, ws) = workspace_of(&state, &caller, &ids).await?;
    let path = query.get("path").unwrap_or_default().to_owned();
    let relative = workspace::normalise(&path).map_err(|e| path_error(e.into()))?;
    require_ready(&d)?;
    if relative.is_empty() {
        return Err(ApiError::validation("path", "`path` is a directory."));
    }
    let (file, info) = blocking(move || {
        let (_, file, info) = ws.read(&path)?;
        Ok((file, info))
    })
    .await
    .map_err(|e| match e {
        FsError::IsDirectory => ApiError::validation("path", "`path` is a directory."),
        FsError::NotDirectory => path_error(FsError::NotFound),
        other => path_error(other),
    })?;
    // Spec §15.3: the values of the deployment's secrets never leave in file content.
    let redactor = state.runtime.redactor(&d.account_id, &d.config).await;
    // Streamed from the descriptor that was opened beneath the root, at most the size it had
    // then, in 64 KiB chunks: a large file never sits in memory whole. With secrets, each chunk
    // goes through a redactor that holds back the tail that could begin a split value (the
    // length then changes, so there is no Content-Length).
    let size = info.size;
    let redacting = !redactor.is_empty();
    let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), size);
    let state = (
        Some(reader),
        paddock_core::redaction::ByteStreamRedactor::new(redactor),
    );
    let chunks = futures::stream::unfold(state, |(reader, mut redact)| async move {
        let mut reader = reader?;
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
            Ok(0) => {
                let rest = redact.finish();
                Some((Ok(bytes::Bytes::from(rest)), (None, redact)))
            }
            Ok(n) => {
                buf.truncate(n);
                let out = redact.push(&buf);
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(out)),
                    (Some(reader), redact),
                ))
            }
            Err(e) => Some((Err(e), (None, redact))),
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&relative)),
    );
    if !redacting {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    Ok(response)
}

#[utoipa::path(
    put,
    path = "/v1/deployments/{dep}/files",
    operation_id = "write_file",
    tag = "files",
    summary = "Create or overwrite a workspace file",
    description = "Scope `deployments:write`. With the `path` query parameter the body is the file's raw bytes (any `Content-Type`); without it the body is JSON `{path, content, encoding}`. Missing parent directories are created. At most 50 MiB of content (configurable); the JSON form's body may be up to 4/3 of that plus 64 KiB. Needs a `ready` deployment (spec §11.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("path" = Option<String>, Query, description = "Raw form: the file to write. Its presence selects the raw form."),
    ),
    request_body(content(
        (WriteFileRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The file written.", body = FileWritten),
        (status = 400, description = "`validation_error`: bad `path`; JSON form without `path` or `content`; bad `encoding`; invalid base64; target under `.paddock/memory/`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: `path` is an existing directory, or a parent is a file; `deployment_not_ready`: the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: over the size limit.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn write(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
    body: Body,
) -> ApiResult<Json<FileWritten>> {
    let limits = &state.settings.limits;
    let raw_path = query.get("path").map(str::to_owned);
    // The body is read first: an oversized one is a 413 before anything else (spec §1.8).
    let bytes = match raw_path {
        Some(_) => read_limited(body, limits.file_upload_bytes).await?,
        None => read_limited(body, limits.file_json_body_bytes()).await?,
    };
    let (d, ws) = workspace_of(&state, &caller, &ids).await?;
    let (path, content) = match raw_path {
        Some(path) => (path, bytes.to_vec()),
        None => json_form(&bytes, limits.file_upload_bytes)?,
    };
    let relative = workspace::normalise(&path).map_err(|e| path_error(e.into()))?;
    if workspace::is_memory_mirror(&relative) {
        return Err(ApiError::validation(
            "path",
            "`.paddock/memory/` is written by Paddock only (it mirrors the Memory API).",
        ));
    }
    require_ready(&d)?;
    if relative.is_empty() {
        return Err(
            ApiError::conflict("`path` is the workspace root, a directory.").with_param("path"),
        );
    }
    let written = blocking(move || ws.write(&path, &content))
        .await
        .map_err(|e| match e {
            FsError::IsDirectory => {
                ApiError::conflict("`path` is an existing directory.").with_param("path")
            }
            FsError::NotDirectory => {
                ApiError::conflict("A parent of `path` is a file.").with_param("path")
            }
            other => path_error(other),
        })?;
    let change = if written.created {
        Change::Created
    } else {
        Change::Modified
    };
    report(&state, &d, vec![(written.relative.clone(), change)]).await;
    Ok(Json(FileWritten {
        path: written.relative,
        size: written.size,
        modified_at: format_unix(written.modified_at),
        created: written.created,
    }))
}

/// The JSON form's path and decoded content.
fn json_form(bytes: &[u8], max_content: usize) -> ApiResult<(String, Vec<u8>)> {
    let body = parse_object(bytes)?;
    if let Some(extra) = body
        .keys()
        .find(|k| !["path", "content", "encoding"].contains(&k.as_str()))
    {
        return Err(ApiError::validation(
            extra.as_str(),
            format!("Unknown field `{extra}`."),
        ));
    }
    let path = match body.get("path") {
        Some(Value::String(p)) => p.clone(),
        None | Some(Value::Null) => {
            return Err(ApiError::validation("path", "`path` is required."));
        }
        Some(_) => return Err(ApiError::validation("path", "`path` must be a string.")),
    };
    let content = match body.get("content") {
        Some(Value::String(c)) => c,
        None | Some(Value::Null) => {
            return Err(ApiError::validation("content", "`content` is required."));
        }
        Some(_) => {
            return Err(ApiError::validation(
                "content",
                "`content` must be a string.",
            ));
        }
    };
    let encoding = match body.get("encoding") {
        None | Some(Value::Null) => "utf8",
        Some(Value::String(e)) if e == "utf8" || e == "base64" => e.as_str(),
        Some(_) => {
            return Err(ApiError::validation(
                "encoding",
                "`encoding` must be `utf8` or `base64`.",
            ));
        }
    };
    let content = if encoding == "base64" {
        base64::engine::general_purpose::STANDARD
            .decode(content.as_bytes())
            .map_err(|e| {
                ApiError::validation("content", format!("`content` is not valid base64: {e}."))
            })?
    } else {
        content.as_bytes().to_vec()
    };
    if content.len() > max_content {
        return Err(ApiError::new(
            paddock_protocol::ErrorCode::PayloadTooLarge,
            format!("The file content is larger than {max_content} bytes."),
        ));
    }
    Ok((path, content))
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{dep}/files",
    operation_id = "delete_file",
    tag = "files",
    summary = "Delete a workspace file or directory",
    description = "Scope `deployments:write`. Deletes a file, or a directory and everything in it; a symbolic link is removed, never followed. Needs a `ready` deployment (spec §11.2).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("path" = String, Query, description = "The file or directory, relative to the workspace root."),
    ),
    responses(
        (status = 200, description = "Deleted.", body = FileDeleted),
        (status = 400, description = "`validation_error`: bad `path`; `path` is the root or under `.paddock/memory/`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or nothing at `path`.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`deployment_not_ready`: the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    query: QueryMap,
) -> ApiResult<Json<FileDeleted>> {
    let (d, ws) = workspace_of(&state, &caller, &ids).await?;
    let path = query.get("path").unwrap_or_default().to_owned();
    let relative = workspace::normalise(&path).map_err(|e| path_error(e.into()))?;
    if relative.is_empty() {
        return Err(ApiError::validation(
            "path",
            "The workspace root cannot be deleted.",
        ));
    }
    if workspace::is_memory_mirror(&relative) {
        return Err(ApiError::validation(
            "path",
            "`.paddock/memory/` is managed by Paddock (it mirrors the Memory API).",
        ));
    }
    require_ready(&d)?;
    let (relative, removed) = blocking(move || ws.remove(&path))
        .await
        .map_err(path_error)?;
    report(
        &state,
        &d,
        removed.into_iter().map(|p| (p, Change::Deleted)).collect(),
    )
    .await;
    Ok(Json(FileDeleted {
        path: relative,
        status: "deleted".to_owned(),
    }))
}

/// The `Content-Type` of a file, from its extension.
pub(crate) fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "log" | "text" => "text/plain; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "bmp" => "image/bmp",
        "avif" => "image/avif",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "m4a" => "audio/mp4",
        "flac" => "audio/flac",
        "py" | "rs" | "sh" | "c" | "h" | "go" | "java" | "rb" | "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("a/b/Story.MD"), "text/markdown; charset=utf-8");
        assert_eq!(content_type("v.mp4"), "video/mp4");
        assert_eq!(content_type(".bashrc"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }
}
