//! Skill entries (spec §12.2): checking their shape (400), then loading them: fetching `url`
//! skills through the guarded client (§1.13), reading `file` skills from the workspace, and
//! checking every SKILL.md against §12.1 (422 `invalid_skill`, the message naming the rule).
//! Shared by the Skills API and the deployment `skills` field (§3.5, §3.7).

use std::time::Duration;

use paddock_core::skills::{MAX_SKILL_BYTES, parse, valid_name};
use paddock_net::{FetchLimits, GuardedClient};
use paddock_protocol::ErrorCode;
use paddock_protocol::ids::{new_id, prefix};
use paddock_store::{DeploymentRecord, SkillRecord};
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// Most skills a deployment may have.
pub(crate) const MAX_SKILLS: usize = 100;

/// How long a `url` skill fetch may take (spec §12.2).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A skill entry whose shape is valid; its text is not loaded yet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SkillEntry {
    /// `inline`, `url` or `file`.
    pub source: String,
    pub name: String,
    pub content: Option<String>,
    pub url: Option<String>,
    /// Normalised workspace path.
    pub path: Option<String>,
}

fn string_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    param: &str,
) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::validation(
            format!("{param}.{key}"),
            format!("`{key}` must be a string."),
        )),
    }
}

/// Checks one entry's shape (`param` names it in errors, e.g. `skills[2]`; empty for a
/// Skills API body).
pub(crate) fn entry(v: &Value, param: &str) -> Result<SkillEntry, ApiError> {
    let at = |key: &str| {
        if param.is_empty() {
            key.to_owned()
        } else {
            format!("{param}.{key}")
        }
    };
    let Some(obj) = v.as_object() else {
        return Err(ApiError::validation(
            if param.is_empty() { "body" } else { param },
            "A skill entry must be an object with `source`, `name` and `content`, `url` or `path`.",
        ));
    };
    let prefix_param = if param.is_empty() {
        String::new()
    } else {
        param.to_owned()
    };
    let field = |key: &str| -> Result<Option<String>, ApiError> {
        string_field(obj, key, &prefix_param).map_err(|e| e.with_param(at(key)))
    };
    let source = field("source")?.ok_or_else(|| {
        ApiError::validation(
            at("source"),
            "`source` is required: `inline`, `url` or `file`.",
        )
    })?;
    if !matches!(source.as_str(), "inline" | "url" | "file") {
        return Err(ApiError::validation(
            at("source"),
            format!("Unknown `source` {source:?}; use `inline`, `url` or `file`."),
        ));
    }
    let name =
        field("name")?.ok_or_else(|| ApiError::validation(at("name"), "`name` is required."))?;
    if !valid_name(&name) {
        return Err(ApiError::validation(
            at("name"),
            "`name` must be 1–64 characters of lowercase a-z, digits and `-`, without a leading or trailing `-` or `--`.",
        ));
    }
    let mut e = SkillEntry {
        source: source.clone(),
        name,
        content: None,
        url: None,
        path: None,
    };
    match source.as_str() {
        "inline" => {
            let content = field("content")?.ok_or_else(|| {
                ApiError::validation(
                    at("content"),
                    "`content` (the SKILL.md text) is required for an `inline` skill.",
                )
            })?;
            e.content = Some(content);
        }
        "url" => {
            let url = field("url")?.ok_or_else(|| {
                ApiError::validation(at("url"), "`url` is required for a `url` skill.")
            })?;
            let ok = url.len() <= 2048
                && reqwest::Url::parse(&url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(ApiError::validation(
                    at("url"),
                    "`url` must be an http or https URL of at most 2,048 characters.",
                ));
            }
            e.url = Some(url);
        }
        _ => {
            let path = field("path")?.ok_or_else(|| {
                ApiError::validation(at("path"), "`path` is required for a `file` skill.")
            })?;
            let normal = paddock_core::workspace::normalise(&path)
                .map_err(|err| ApiError::validation(at("path"), format!("`path` {err}.")))?;
            if normal.is_empty() {
                return Err(ApiError::validation(at("path"), "`path` must name a file."));
            }
            e.path = Some(normal);
        }
    }
    Ok(e)
}

/// Checks a `skills` array: at most 100 entries, each well-formed, names unique.
pub(crate) fn entries(v: &Value) -> Result<Vec<SkillEntry>, ApiError> {
    let Some(arr) = v.as_array() else {
        return Err(ApiError::validation("skills", "`skills` must be an array."));
    };
    if arr.len() > MAX_SKILLS {
        return Err(ApiError::validation(
            "skills",
            format!("At most {MAX_SKILLS} skills, not {}.", arr.len()),
        ));
    }
    let mut out: Vec<SkillEntry> = Vec::with_capacity(arr.len());
    for (i, v) in arr.iter().enumerate() {
        let e = entry(v, &format!("skills[{i}]"))?;
        if out.iter().any(|o| o.name == e.name) {
            return Err(ApiError::validation(
                format!("skills[{i}].name"),
                format!("Two skills are named `{}`; names must be unique.", e.name),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    let e = ApiError::new(ErrorCode::InvalidSkill, message);
    if param.is_empty() {
        e
    } else {
        e.with_param(param)
    }
}

/// Loads an entry into a record: fetches a `url`, reads a `file` when `read_files` (the
/// deployment is `ready`), checks the SKILL.md. `existing` keeps its id and creation time.
pub(crate) async fn load(
    state: &AppState,
    deployment: &DeploymentRecord,
    e: SkillEntry,
    param: &str,
    read_files: bool,
    existing: Option<&SkillRecord>,
    now: i64,
) -> Result<SkillRecord, ApiError> {
    let text: Option<String> = match e.source.as_str() {
        "inline" => e.content.clone(),
        "url" => {
            let url = e.url.clone().unwrap_or_default();
            let client = GuardedClient::new(state.settings.outbound.clone(), FETCH_TIMEOUT)
                .map_err(|err| invalid(param, format!("Cannot fetch the skill: {err}.")))?;
            let fetched = client
                .get(
                    &url,
                    FetchLimits {
                        max_bytes: MAX_SKILL_BYTES as u64,
                        total_timeout: FETCH_TIMEOUT,
                    },
                )
                .await
                .map_err(|err| invalid(param, format!("Cannot fetch {url}: {err}.")))?;
            Some(
                String::from_utf8(fetched.body.to_vec())
                    .map_err(|_| invalid(param, "SKILL.md rule 1: the file is not valid UTF-8."))?,
            )
        }
        _ if read_files => {
            let path = e.path.clone().unwrap_or_default();
            let bytes = read_workspace_file(state, &deployment.id, &path)
                .map_err(|err| invalid(param, format!("Cannot read {path}: {err}.")))?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| invalid(param, "SKILL.md rule 1: the file is not valid UTF-8."))?,
            )
        }
        _ => None,
    };
    let description = match &text {
        Some(t) => {
            parse(t.as_bytes(), &e.name)
                .map_err(|err| invalid(param, format!("{err}.")))?
                .description
        }
        None => existing
            .filter(|x| x.source == "file" && x.path == e.path)
            .map(|x| x.description.clone())
            .unwrap_or_default(),
    };
    Ok(SkillRecord {
        id: existing.map_or_else(|| new_id(prefix::SKILL), |x| x.id.clone()),
        deployment_id: deployment.id.clone(),
        name: e.name,
        source: e.source.clone(),
        description,
        content: if e.source == "file" { None } else { text },
        url: e.url,
        path: e.path,
        error: None,
        created_at: existing.map_or(now, |x| x.created_at),
        updated_at: now,
    })
}

/// Reads a workspace file of at most 100 KiB (plus one byte, so a larger one is caught by the
/// size rule).
pub(crate) fn read_workspace_file(
    state: &AppState,
    deployment_id: &str,
    path: &str,
) -> Result<Vec<u8>, String> {
    let ws = state.runtime.workspace(deployment_id);
    let (_, file, _) = ws.read(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_SKILL_BYTES as u64 + 1),
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Loads a deployment's whole `skills` array (create or `PATCH`): entries whose name matches a
/// current skill keep its id.
pub(crate) async fn load_all(
    state: &AppState,
    deployment: &DeploymentRecord,
    entries: Vec<SkillEntry>,
    current: &[SkillRecord],
    now: i64,
) -> Result<Vec<SkillRecord>, ApiError> {
    let read_files = deployment.status == "ready";
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let existing = current.iter().find(|c| c.name == e.name);
        out.push(
            load(
                state,
                deployment,
                e,
                &format!("skills[{i}]"),
                read_files,
                existing,
                now,
            )
            .await?,
        );
    }
    Ok(out)
}

/// The deployment-object summaries of `skills`.
pub(crate) fn summaries(skills: &[SkillRecord]) -> Vec<paddock_protocol::SkillSummary> {
    skills
        .iter()
        .map(|s| paddock_protocol::SkillSummary {
            skill_id: s.id.clone(),
            name: s.name.clone(),
            source: s.source.clone(),
            description: s.description.clone(),
        })
        .collect()
}
