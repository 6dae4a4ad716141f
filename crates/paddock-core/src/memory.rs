//! Observational memory (spec §10): the `memory` tool, the memory block put into a run's
//! context, and the read-only mirror of memories under `.paddock/memory/`.
//!
//! The database is authoritative. The mirror is rewritten after each change (by whoever made
//! it: the Memory API, the tool) and in full before each run, so shell edits there do not last.
//!
//! The context block is computed once when a worker starts driving a run and reused for every
//! step of it, so the request prefix stays byte-identical while the run goes on (vendor prompt
//! caches) even when the agent saves memories meanwhile: those show from the next run.

use std::sync::Arc;

use paddock_protocol::DeploymentConfig;
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_store::{MemoryFilter, MemoryRecord, PageRequest, Store, StoreError, fts_any_terms};
use serde_json::{Value, json};

use crate::compaction::estimate_text;
use crate::tools::{Tool, ToolContext, ToolOutput, check_args};
use crate::workspace::{FsError, Workspace};

/// The directory of the mirror, relative to the workspace root.
pub const MIRROR_DIR: &str = ".paddock/memory";

/// Most memories a deployment may have (spec §10).
pub const MAX_MEMORIES: u32 = 10_000;

/// Most characters of a memory's `content` (spec §1.12).
pub const MAX_CONTENT_CHARS: usize = 10_000;

/// The default budget of the memory block, in estimated tokens.
pub const DEFAULT_CONTEXT_TOKENS: u64 = 2_000;

/// Model-facing name of the tool.
pub const MEMORY: &str = "memory";

/// The run trigger of a dreaming pass (spec §3.4).
pub const DREAMING_TRIGGER: &str = "dreaming";

/// First line of the memory block: fixed, so it never disturbs a cached prefix by itself.
pub const BLOCK_HEADING: &str = "[Memories: facts saved about this customer in earlier \
    conversations, newest first. Follow them unless the user says otherwise now. Ids are for \
    the memory tool.]";

/// The path of a memory's mirror file, relative to the workspace root.
pub fn mirror_path(memory_id: &str) -> String {
    format!("{MIRROR_DIR}/{memory_id}.md")
}

/// Writes (or replaces) one memory's mirror file.
pub fn mirror_write(workspace: &Workspace, memory: &MemoryRecord) -> Result<(), FsError> {
    workspace
        .write(&mirror_path(&memory.id), memory.content.as_bytes())
        .map(|_| ())
}

/// Removes one memory's mirror file (absent is fine).
pub fn mirror_remove(workspace: &Workspace, memory_id: &str) -> Result<(), FsError> {
    match workspace.remove(&mirror_path(memory_id)) {
        Ok(_) | Err(FsError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `.paddock/memory/` hold exactly one file `<memory_id>.md` per memory, with its
/// content: anything else there is removed, files that differ are rewritten.
pub fn mirror_sync(workspace: &Workspace, memories: &[MemoryRecord]) -> Result<(), FsError> {
    let wanted: std::collections::HashMap<String, &MemoryRecord> = memories
        .iter()
        .map(|m| (format!("{}.md", m.id), m))
        .collect();
    let listing = match workspace.list(MIRROR_DIR, usize::MAX) {
        Ok(l) => Some(l),
        Err(FsError::NotFound) => None,
        // Something that is not a directory sits where the mirror goes: replace it.
        Err(FsError::NotDirectory) => {
            workspace.remove(MIRROR_DIR)?;
            None
        }
        Err(e) => return Err(e),
    };
    let mut present = std::collections::HashSet::new();
    for entry in listing.map(|l| l.entries).unwrap_or_default() {
        let path = format!("{MIRROR_DIR}/{}", entry.name);
        match wanted.get(&entry.name) {
            Some(m) if !entry.is_dir && entry.size == m.content.len() as u64 => {
                let same = workspace
                    .read(&path)
                    .ok()
                    .and_then(|(_, mut f, _)| {
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut f, &mut text).ok()?;
                        Some(text == m.content)
                    })
                    .unwrap_or(false);
                if same {
                    present.insert(entry.name.clone());
                } else {
                    mirror_write(workspace, m)?;
                    present.insert(entry.name.clone());
                }
            }
            Some(m) => {
                if entry.is_dir {
                    workspace.remove(&path)?;
                }
                mirror_write(workspace, m)?;
                present.insert(entry.name.clone());
            }
            None => {
                workspace.remove(&path)?;
            }
        }
    }
    for (name, m) in &wanted {
        if !present.contains(name) {
            mirror_write(workspace, m)?;
        }
    }
    Ok(())
}

/// Rewrites the whole mirror of a deployment from the store, off the async threads. Failures
/// are logged, never raised: the mirror is a convenience, the database is the truth.
pub async fn resync_mirror(store: &Arc<dyn Store>, workspace: Workspace, deployment_id: &str) {
    if !workspace.root().is_dir() {
        return;
    }
    let memories = match store.all_memories(deployment_id).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(deployment_id, error = %e, "reading memories for the mirror failed");
            return;
        }
    };
    let result = tokio::task::spawn_blocking(move || mirror_sync(&workspace, &memories)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(deployment_id, error = %e, "memory mirror sync failed"),
        Err(e) => tracing::warn!(deployment_id, error = %e, "memory mirror sync panicked"),
    }
}

/// The memory block for a run: every memory when they fit in `budget_tokens`, newest first;
/// otherwise the memories most relevant to `recent_text` (full-text search), then the newest,
/// as many as fit, and a line saying how to search for the rest. `None` when there are none.
pub async fn context_block(
    store: &dyn Store,
    deployment_id: &str,
    recent_text: &str,
    budget_tokens: u64,
) -> Result<Option<String>, StoreError> {
    let all = store.all_memories(deployment_id).await?;
    if all.is_empty() {
        return Ok(None);
    }
    let line = |m: &MemoryRecord| format!("- ({}) {}\n", m.id, one_line(&m.content));
    let total: u64 = all.iter().map(|m| estimate_text(&line(m))).sum();
    let mut body = String::new();
    let mut shown = 0usize;
    if total + estimate_text(BLOCK_HEADING) <= budget_tokens {
        for m in &all {
            body.push_str(&line(m));
        }
        shown = all.len();
    } else {
        // Leave room for the heading and the closing line.
        let mut left = budget_tokens.saturating_sub(estimate_text(BLOCK_HEADING) + 48);
        let mut chosen: Vec<&MemoryRecord> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let relevant = match fts_any_terms(recent_text, 48) {
            Some(q) => store.search_memories(deployment_id, &q, 200).await?,
            None => Vec::new(),
        };
        let by_id: std::collections::HashMap<&str, &MemoryRecord> =
            all.iter().map(|m| (m.id.as_str(), m)).collect();
        let candidates = relevant
            .iter()
            .filter_map(|r| by_id.get(r.id.as_str()).copied())
            .chain(all.iter());
        for m in candidates {
            if seen.contains(m.id.as_str()) {
                continue;
            }
            let cost = estimate_text(&line(m));
            if cost > left {
                continue;
            }
            left -= cost;
            seen.insert(m.id.as_str());
            chosen.push(m);
        }
        // Shown newest first, like the whole list.
        chosen.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        for m in &chosen {
            body.push_str(&line(m));
        }
        shown = shown.max(chosen.len());
    }
    let mut block = String::with_capacity(body.len() + 256);
    block.push_str(BLOCK_HEADING);
    block.push('\n');
    block.push_str(&body);
    let hidden = all.len() - shown;
    if hidden > 0 {
        block.push_str(&more_line(hidden));
    }
    Ok(Some(block))
}

/// The fixed text of a memory block (its heading and the closing "more memories" line),
/// without any memory: what every run's block adds besides the memories themselves.
pub fn block_framing() -> String {
    format!("{BLOCK_HEADING}\n{}", more_line(1))
}

fn more_line(hidden: usize) -> String {
    format!(
        "[{hidden} more memories are not shown. Search them with the memory tool: \
         {{\"action\": \"search\", \"query\": \"…\"}}.]\n"
    )
}

/// A memory on one line (newlines become spaces), for the block.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `memory` tool: search, add, update and delete the deployment's memories.
pub struct MemoryTool;

#[async_trait::async_trait]
impl Tool for MemoryTool {
    fn name(&self) -> &'static str {
        MEMORY
    }

    fn description(&self) -> &'static str {
        "Search, add, update or delete the long-term memories about this customer, shared by \
         all conversations. action=search needs query; add needs content; update needs \
         memory_id and content; delete needs memory_id."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["search", "add", "update", "delete"]},
                "query": {"type": "string"},
                "content": {"type": "string", "description": "One short, self-contained fact."},
                "memory_id": {"type": "string"},
            },
            "required": ["action"],
            "additionalProperties": false,
        })
    }

    fn available(&self, config: &DeploymentConfig) -> bool {
        config.features.memory
    }

    async fn call(&self, ctx: &ToolContext, arguments: &Value) -> ToolOutput {
        match run(ctx, arguments).await {
            Ok(v) => ToolOutput::ok(v),
            Err(e) => ToolOutput::error(e),
        }
    }
}

fn str_field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("`{name}` is required for this action")),
    }
}

fn check_content(content: &str) -> Result<String, String> {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return Err("`content` must not be empty".to_owned());
    }
    if trimmed.chars().count() > MAX_CONTENT_CHARS {
        return Err(format!(
            "`content` is longer than {MAX_CONTENT_CHARS} characters"
        ));
    }
    Ok(trimmed.to_owned())
}

fn view(m: &MemoryRecord) -> Value {
    json!({"memory_id": m.id, "content": m.content, "source": m.source})
}

async fn run(ctx: &ToolContext, arguments: &Value) -> Result<Value, String> {
    let Some(scope) = &ctx.run else {
        return Err("memory is not available here".to_owned());
    };
    let obj = check_args(
        arguments,
        &["action", "query", "content", "memory_id"],
        &["action"],
    )?;
    let store = scope.store.as_ref();
    let dep = scope.deployment_id.as_str();
    let store_err = |e: StoreError| match e {
        StoreError::NotFound(_) => "no memory with that memory_id".to_owned(),
        StoreError::LimitReached(m) | StoreError::Conflict(m) => m,
        other => format!("memory store error: {other}"),
    };
    // Spec §3.4: a dreaming pass never changes or deletes what a person saved.
    let guard_api = |m: &MemoryRecord| {
        if scope.trigger == DREAMING_TRIGGER && m.source == "api" {
            Err("this memory was saved through the API; dreaming must leave it as it is".to_owned())
        } else {
            Ok(())
        }
    };
    match str_field(obj, "action")? {
        "search" => {
            let query = str_field(obj, "query")?;
            let mut found = match fts_any_terms(query, 32) {
                Some(q) => store
                    .search_memories(dep, &q, 20)
                    .await
                    .map_err(store_err)?,
                None => Vec::new(),
            };
            if found.is_empty() && !query.trim().is_empty() {
                let filter = MemoryFilter {
                    q: Some(query.trim().to_owned()),
                    source: None,
                };
                let page = PageRequest {
                    limit: 20,
                    cursor: None,
                };
                found = store
                    .list_memories(dep, &filter, &page)
                    .await
                    .map_err(store_err)?
                    .0;
            }
            Ok(json!({"memories": found.iter().map(view).collect::<Vec<_>>()}))
        }
        "add" => {
            let content = check_content(str_field(obj, "content")?)?;
            let now = now_unix();
            let m = MemoryRecord {
                id: new_id(prefix::MEMORY),
                deployment_id: dep.to_owned(),
                content,
                source: "agent".to_owned(),
                run_id: Some(scope.run_id.clone()),
                created_at: now,
                updated_at: now,
            };
            store
                .create_memory(&m, MAX_MEMORIES)
                .await
                .map_err(store_err)?;
            if let Err(e) = mirror_write(&ctx.workspace, &m) {
                tracing::warn!(memory_id = %m.id, error = %e, "memory mirror write failed");
            }
            Ok(json!({"saved": view(&m)}))
        }
        "update" => {
            let id = str_field(obj, "memory_id")?;
            let content = check_content(str_field(obj, "content")?)?;
            let current = store.get_memory(dep, id).await.map_err(store_err)?;
            guard_api(&current)?;
            let m = store
                .update_memory(dep, id, &content, now_unix())
                .await
                .map_err(store_err)?;
            if let Err(e) = mirror_write(&ctx.workspace, &m) {
                tracing::warn!(memory_id = %m.id, error = %e, "memory mirror write failed");
            }
            // `previous` is what the change replaced: the dreaming journal is written from it.
            Ok(json!({"updated": view(&m), "previous": view(&current)}))
        }
        "delete" => {
            let id = str_field(obj, "memory_id")?;
            let current = store.get_memory(dep, id).await.map_err(store_err)?;
            guard_api(&current)?;
            store.delete_memory(dep, id).await.map_err(store_err)?;
            if let Err(e) = mirror_remove(&ctx.workspace, id) {
                tracing::warn!(memory_id = %id, error = %e, "memory mirror remove failed");
            }
            Ok(json!({"deleted": id, "previous": view(&current)}))
        }
        other => Err(format!(
            "unknown action `{other}`; use search, add, update or delete"
        )),
    }
}
