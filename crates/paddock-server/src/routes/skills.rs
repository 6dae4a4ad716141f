//! Skills (spec §12.3): SKILL.md playbooks managed live. Changes apply from the next run.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::time::{format_unix, now_unix};
use paddock_protocol::{Page, Skill, SkillDeleted};
use paddock_store::{SkillRecord, StoreError};

use super::{PathIds, deployment_of, find, no_such, require_ready};
use crate::auth::Caller;
use crate::body::{DeferredJson, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::paging::{page, page_request};
use crate::skills::{MAX_SKILLS, entry, load, read_workspace_file};
use crate::state::AppState;

/// The wire form of a skill (without `content`).
pub(crate) fn view(s: &SkillRecord) -> Skill {
    Skill {
        skill_id: s.id.clone(),
        name: s.name.clone(),
        source: s.source.clone(),
        description: s.description.clone(),
        url: s.url.clone(),
        path: s.path.clone(),
        error: s.error.clone(),
        created_at: format_unix(s.created_at),
        updated_at: format_unix(s.updated_at),
        content: None,
    }
}

async fn skill_of(state: &AppState, deployment_id: &str, id: &str) -> ApiResult<SkillRecord> {
    find("skill", id, state.store.get_skill(deployment_id, id)).await
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/skills",
    operation_id = "create_skill",
    tag = "skills",
    summary = "Add a skill",
    description = "Scope `deployments:write`. One entry `{source, name, content | url | path}`; a `url` is fetched and every SKILL.md checked now (spec §12).",
    params(("dep" = String, Path, description = "The deployment id (`dep_…`).")),
    request_body = paddock_protocol::SkillEntryRequest,
    responses(
        (status = 201, description = "The new skill.", body = paddock_protocol::Skill),
        (status = 400, description = "`validation_error`: unknown `source`; a field the source needs is missing; bad `name`, `url` or `path`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the name is taken or 100 skills exist; `deployment_not_ready`: a `file` skill while the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        (status = 422, description = "`invalid_skill`: cannot be fetched or read, or breaks a SKILL.md rule (the message names it).", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<(StatusCode, Json<Skill>)> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.object()?;
    let e = entry(&body, "")?;
    if e.source == "file" {
        require_ready(&d)?;
    }
    let existing = state.store.all_skills(&d.id).await?;
    if existing.iter().any(|s| s.name == e.name) {
        return Err(ApiError::conflict(format!(
            "A skill named `{}` already exists in this deployment.",
            e.name
        )));
    }
    let record = load(&state, &d, e, "", true, None, now_unix()).await?;
    state.store.create_skill(&record, MAX_SKILLS as u32).await?;
    Ok((StatusCode::CREATED, Json(view(&record))))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/skills",
    operation_id = "list_skills",
    tag = "skills",
    summary = "List skills",
    description = "Scope `deployments:read`. Newest first (spec §12.3).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        crate::openapi::PageParams,
    ),
    responses(
        (status = 200, description = "One page of skills.", body = paddock_protocol::Page<paddock_protocol::Skill>),
        (status = 400, description = "`validation_error`: `limit` outside 1–100 or an unknown `cursor`.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or another account's.", body = paddock_protocol::ErrorBody),
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
) -> ApiResult<Json<Page<Skill>>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let page_req = page_request(&query)?;
    let (items, next) = state.store.list_skills(&d.id, &page_req).await?;
    Ok(Json(page(&items, next, view)))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{dep}/skills/{skill}",
    operation_id = "get_skill",
    tag = "skills",
    summary = "Get a skill with its SKILL.md",
    description = "Scope `deployments:read`. With `content`: the full SKILL.md (for `file`, as read now, or `null` if unreadable) (spec §12.3).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("skill" = String, Path, description = "The skill id (`skl_…`)."),
    ),
    responses(
        (status = 200, description = "The skill with `content`.", body = paddock_protocol::Skill),
        (status = 404, description = "`not_found`: unknown deployment or skill.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<Skill>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let s = skill_of(&state, &d.id, ids.get("skill")).await?;
    let content = match (&s.content, &s.path) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(path)) => read_workspace_file(&state, &d.id, path)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        (None, None) => None,
    };
    let mut v = view(&s);
    v.content = Some(content);
    Ok(Json(v))
}

#[utoipa::path(
    put,
    path = "/v1/deployments/{dep}/skills/{skill}",
    operation_id = "replace_skill",
    tag = "skills",
    summary = "Replace a skill",
    description = "Scope `deployments:write`. A complete entry as for create; may change `source` and `name`; fetches a `url` again (spec §12.3).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("skill" = String, Path, description = "The skill id (`skl_…`)."),
    ),
    request_body = paddock_protocol::SkillEntryRequest,
    responses(
        (status = 200, description = "The skill.", body = paddock_protocol::Skill),
        (status = 400, description = "`validation_error`: as for create.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment or skill.", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the new name is another skill's; `deployment_not_ready`: a `file` skill while the deployment is not `ready`.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        (status = 422, description = "`invalid_skill`: as for create.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<Json<Skill>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let current = skill_of(&state, &d.id, ids.get("skill")).await?;
    let body = body.object()?;
    let e = entry(&body, "")?;
    if e.source == "file" {
        require_ready(&d)?;
    }
    let record = load(&state, &d, e, "", true, Some(&current), now_unix()).await?;
    match state.store.replace_skill(&record).await {
        Ok(()) => Ok(Json(view(&record))),
        Err(StoreError::NotFound(_)) => Err(no_such("skill", &current.id)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{dep}/skills/{skill}",
    operation_id = "delete_skill",
    tag = "skills",
    summary = "Delete a skill",
    description = "Scope `deployments:write`. Never deletes a workspace file; the copy under `.paddock/skills/` goes before the next run (spec §12.3).",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
        ("skill" = String, Path, description = "The skill id (`skl_…`)."),
    ),
    responses(
        (status = 200, description = "`{\"skill_id\", \"status\": \"deleted\"}`.", body = paddock_protocol::SkillDeleted),
        (status = 404, description = "`not_found`: unknown deployment or skill.", body = paddock_protocol::ErrorBody),
        crate::openapi::CommonErrors,
        crate::openapi::RateLimited,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
) -> ApiResult<Json<SkillDeleted>> {
    let d = deployment_of(&state, &caller, ids.get("dep")).await?;
    let s = skill_of(&state, &d.id, ids.get("skill")).await?;
    match state.store.delete_skill(&d.id, &s.id).await {
        Ok(()) => Ok(Json(SkillDeleted {
            skill_id: s.id,
            status: "deleted".to_owned(),
        })),
        Err(StoreError::NotFound(_)) => Err(no_such("skill", &s.id)),
        Err(e) => Err(e.into()),
    }
}
