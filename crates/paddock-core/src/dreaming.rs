//! Dreaming (spec §3.4): idle-time consolidation of a deployment's memories.
//!
//! A [`Dreamer`] ticks on this node (every `tick_interval`) and asks the store which
//! deployments are due a pass at the injected [`Clock`]'s now: `features.dreaming` on, no
//! active run for `idle`, a run finished since the last pass, the last pass older than
//! `interval`. For each it builds the pass's input (every memory with its id and source) and
//! asks the store to start the pass; the store re-checks the conditions and claims the pass in
//! the same transaction (see `Store::start_dreaming`), so however many ticks or nodes race, a
//! pass starts once and the next one waits for its interval. The run then goes through the
//! ordinary worker: `trigger: "dreaming"`, no thread, a fixed system prompt, only `read_file`
//! and `memory`, never gated.
//!
//! When the run ends, its journal `.paddock/dreams/<run_id>.md` is written from the `memory`
//! tool calls as the store recorded them (what the tool did, with the text each change
//! replaced), not from what the model says it did.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use paddock_protocol::DeploymentConfig;
use paddock_protocol::ids::{new_id, prefix};
use paddock_protocol::time::format_unix;
use paddock_store::{
    DreamingRules, MemoryRecord, RunRecord, StartDreaming, StoreError, ToolCallRecord,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::memory::{DREAMING_TRIGGER, MEMORY};
use crate::runtime::Runtime;
use crate::scheduler::{Clock, SystemClock};

/// Where the journals go, relative to the workspace root.
pub const JOURNAL_DIR: &str = ".paddock/dreams";

/// The tools a dreaming run may use.
pub const TOOLS: [&str; 2] = ["read_file", MEMORY];

/// Most characters of memories put into a pass's input; past it the rest are counted and the
/// model is told to find them with the `memory` tool's search.
const INPUT_CHARS: usize = 200_000;

/// Most deployments one tick starts passes for (the rest are due at the next tick).
const TICK_LIMIT: u32 = 100;

/// The fixed system prompt of every dreaming run: nothing of the deployment's own prompt, so
/// every pass of every deployment shares it.
pub const SYSTEM_PROMPT: &str = "You are the memory maintenance pass of an AI agent. Nobody \
is talking to you: the agent is idle, and you review the long-term memories it keeps about its \
customer. The first message lists every memory with its id and source. Using the memory tool:\n\
- Merge duplicates: when several memories say the same thing, update one so it says all of it \
and delete the others.\n\
- Sharpen vague memories: rewrite a vague memory as one short, specific, self-contained fact.\n\
- Remove stale memories: delete a memory a newer one contradicts or that is no longer true.\n\
Never update or delete a memory whose source is `api`: a person saved it; leave it as it is \
(the tool refuses). Leave memories that are fine alone, and do not invent facts. You may read \
workspace files with read_file to check one. When you are done, answer with a short summary of \
what you changed.";

/// The dreaming settings of a server (`[dreaming]` in `paddock.toml`).
#[derive(Clone)]
pub struct DreamingSettings {
    /// How long a deployment must have had no active run (default 30 minutes).
    pub idle: Duration,
    /// Least time between two passes of a deployment (default 24 hours).
    pub interval: Duration,
    /// How often this node looks for deployments due a pass (default 60 s).
    pub tick_interval: Duration,
    /// Where "now" comes from: the system clock, or a test's.
    pub clock: Arc<dyn Clock>,
}

impl Default for DreamingSettings {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            interval: Duration::from_secs(24 * 3600),
            tick_interval: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for DreamingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DreamingSettings")
            .field("idle", &self.idle)
            .field("interval", &self.interval)
            .field("tick_interval", &self.tick_interval)
            .finish_non_exhaustive()
    }
}

impl DreamingSettings {
    fn rules(&self) -> DreamingRules {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        DreamingRules {
            idle_secs: secs(self.idle),
            interval_secs: secs(self.interval),
        }
    }
}

/// Starts this node's dreaming passes. Separate from the run worker: it only creates runs,
/// which the worker then claims like any other.
pub struct Dreamer {
    rt: Arc<Runtime>,
    settings: DreamingSettings,
}

impl Dreamer {
    pub fn new(rt: Arc<Runtime>, settings: DreamingSettings) -> Arc<Self> {
        Arc::new(Self { rt, settings })
    }

    /// Ticks every `tick_interval` until `stop` is cancelled.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(me.settings.tick_interval) => {}
                    () = stop.cancelled() => return,
                }
                if let Err(e) = me.tick().await {
                    tracing::warn!(error = %e, "dreaming tick failed");
                }
            }
        })
    }

    /// One look at the store: starts a pass for every deployment due one now (by the
    /// settings' clock) and returns the ids of the runs it started. Another tick or node
    /// racing this one starts none of the same passes.
    pub async fn tick(&self) -> Result<Vec<String>, StoreError> {
        let now = self.settings.clock.now();
        let rules = self.settings.rules();
        let store = self.rt.store();
        let mut started = Vec::new();
        for deployment_id in store.dreaming_candidates(rules, now, TICK_LIMIT).await? {
            let memories = store.all_memories(&deployment_id).await?;
            let start = StartDreaming {
                deployment_id: deployment_id.clone(),
                run_id: new_id(prefix::RUN),
                rules,
                input: input(&memories),
                restrict: restrict_config,
                now,
            };
            let guard = self.rt.bus().lock(&deployment_id).await;
            match store.start_dreaming(start).await {
                Ok(Some(pass)) => {
                    guard.publish(&pass.events);
                    tracing::info!(%deployment_id, run_id = %pass.run.id, "dreaming pass started");
                    started.push(pass.run.id);
                }
                Ok(None) => {}
                // A deployment deleted since the scan: nothing to do.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !started.is_empty() {
            self.rt.wake();
        }
        Ok(started)
    }
}

/// What a dreaming run may use (spec §3.4): only `read_file` and `memory` (and only if the
/// deployment has not disabled them), no MCP server, nothing gated.
pub fn restrict_config(config: &mut DeploymentConfig) {
    for tool in crate::tools::builtin_tools() {
        if !TOOLS.contains(&tool.name()) {
            config.disabled_tools.insert(tool.name().to_owned());
        }
    }
    config.mcp_servers.clear();
    config.tool_policies.clear();
    // Never gated: nothing pauses a pass waiting on a person.
    config.features.steering = false;
}

/// The first message of a pass: every memory (newest first) with its id and source.
fn input(memories: &[MemoryRecord]) -> String {
    let mut s = String::from(
        "Review these memories (newest first; one per line as `- <memory_id> [source] content`). \
         Merge duplicates, sharpen vague ones and remove stale ones with the memory tool; \
         never change or delete one whose source is api.\n\n",
    );
    let mut left = INPUT_CHARS;
    let mut hidden = 0usize;
    for m in memories {
        let content = m.content.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = format!("- {} [{}] {}\n", m.id, m.source, content);
        if line.len() > left {
            hidden += 1;
            continue;
        }
        left -= line.len();
        s.push_str(&line);
    }
    if hidden > 0 {
        let _ = write!(
            s,
            "\n{hidden} more memories are not listed; find them with the memory tool's search.\n"
        );
    }
    s
}

/// The path of a pass's journal, relative to the workspace root.
pub fn journal_path(run_id: &str) -> String {
    format!("{JOURNAL_DIR}/{run_id}.md")
}

/// Writes the journal of dreaming run `run` from its recorded `memory` calls. Failures are
/// logged: the memories are changed either way, and the calls stay in the store and the
/// event log.
pub(crate) async fn write_journal(rt: &Runtime, run: &RunRecord) {
    if run.trigger != DREAMING_TRIGGER {
        return;
    }
    let calls = match rt.store().tool_calls(&run.id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "dreaming journal: tool calls unavailable");
            return;
        }
    };
    let text = journal(run, &calls);
    let workspace = rt.workspace(&run.deployment_id);
    let path = journal_path(&run.id);
    let run_id = run.id.clone();
    let written =
        tokio::task::spawn_blocking(move || workspace.write(&path, text.as_bytes())).await;
    match written {
        Ok(Ok(_)) => tracing::info!(%run_id, "dreaming journal written"),
        Ok(Err(e)) => tracing::warn!(%run_id, error = %e, "dreaming journal not written"),
        Err(e) => tracing::warn!(%run_id, error = %e, "dreaming journal not written"),
    }
}

/// One change a `memory` call made, as its recorded result says.
struct Change<'a> {
    action: &'a str,
    memory_id: &'a str,
    before: Option<&'a str>,
    after: Option<&'a str>,
}

fn change<'a>(call: &'a ToolCallRecord) -> Option<Change<'a>> {
    let result = call.result.as_ref()?;
    let text = |v: &'a Value| v.get("content").and_then(Value::as_str);
    let id = |v: &'a Value| v.get("memory_id").and_then(Value::as_str);
    if let Some(saved) = result.get("saved") {
        return Some(Change {
            action: "Added",
            memory_id: id(saved)?,
            before: None,
            after: text(saved),
        });
    }
    if let Some(updated) = result.get("updated") {
        return Some(Change {
            action: "Updated",
            memory_id: id(updated)?,
            before: result.get("previous").and_then(text),
            after: text(updated),
        });
    }
    if let Some(deleted) = result.get("deleted") {
        return Some(Change {
            action: "Deleted",
            memory_id: deleted.as_str()?,
            before: result.get("previous").and_then(text),
            after: None,
        });
    }
    None
}

/// The journal's Markdown: every change in the order it was made, then the refused calls.
fn journal(run: &RunRecord, calls: &[ToolCallRecord]) -> String {
    let memory_calls: Vec<&ToolCallRecord> = calls
        .iter()
        .filter(|c| c.tool == MEMORY && c.origin == "builtin" && c.state == "done")
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "# Dreaming pass {}\n", run.id);
    let _ = writeln!(
        s,
        "Deployment `{}`, run `{}`, started {}.\n",
        run.deployment_id,
        run.id,
        format_unix(run.created_at),
    );
    s.push_str(
        "Every change this pass made to the memories, in order, as the `memory` tool carried it \
         out. To undo one, restore the \"Before\" text through the Memory API (`PATCH` the \
         memory, or `POST` it again if it was deleted; a re-created memory gets a new id).\n",
    );
    let changes: Vec<Change<'_>> = memory_calls
        .iter()
        .filter(|c| !c.is_error)
        .filter_map(|c| change(c))
        .collect();
    if changes.is_empty() {
        s.push_str("\nNo memory was changed.\n");
    }
    for (i, c) in changes.iter().enumerate() {
        let _ = writeln!(s, "\n## {}. {} `{}`\n", i + 1, c.action, c.memory_id);
        s.push_str("Before:\n\n");
        block(&mut s, c.before);
        s.push_str("\nAfter:\n\n");
        block(&mut s, c.after);
    }
    let refused: Vec<&&ToolCallRecord> = memory_calls.iter().filter(|c| c.is_error).collect();
    if !refused.is_empty() {
        s.push_str("\n## Refused calls (nothing changed)\n\n");
        for c in refused {
            let action = c
                .arguments
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let target = c
                .arguments
                .get("memory_id")
                .and_then(Value::as_str)
                .map(|m| format!(" of `{m}`"))
                .unwrap_or_default();
            let why = c
                .result
                .as_ref()
                .and_then(|r| r.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            let _ = writeln!(s, "- `{action}`{target}: {why}");
        }
    }
    s
}

/// Appends `text` as a fenced block (a fence longer than any backtick run in it), or `(none)`.
fn block(s: &mut String, text: Option<&str>) {
    let Some(text) = text else {
        s.push_str("(none)\n");
        return;
    };
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(s, "{fence}text\n{text}\n{fence}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> DeploymentConfig {
        serde_json::from_value(json!({
            "model": "fake/m", "system_prompt": "",
            "sandbox": {"enabled": true, "type": "bubblewrap", "persistent_filesystem": true,
                        "image": null, "cpus": 1.0, "memory_mb": 512, "network": "none"},
            "features": {"memory": true, "dreaming": true, "automations": true,
                         "steering": true, "filesystem_webhooks": false},
            "mcp_servers": [], "skills": [], "secrets": {}, "tool_policies": {"memory": "ask"},
        }))
        .unwrap()
    }

    fn call(args: Value, result: Value, is_error: bool) -> ToolCallRecord {
        ToolCallRecord {
            id: new_id(prefix::CALL),
            run_id: "run_1".to_owned(),
            step: 1,
            tool: MEMORY.to_owned(),
            origin: "builtin".to_owned(),
            arguments: args,
            state: "done".to_owned(),
            result: Some(result),
            is_error,
        }
    }

    #[test]
    fn journal_lists_changes_with_before_and_after_and_refusals() {
        let run = RunRecord {
            id: "run_1".to_owned(),
            deployment_id: "dep_1".to_owned(),
            thread_id: None,
            status: "completed".to_owned(),
            trigger: DREAMING_TRIGGER.to_owned(),
            automation_id: None,
            model: "m".to_owned(),
            config: config(),
            steering_request: None,
            error: None,
            warnings: Vec::new(),
            usage: Default::default(),
            step: 2,
            created_at: 0,
            updated_at: 0,
            finished_at: Some(60),
        };
        let calls = vec![
            call(
                json!({"action": "update", "memory_id": "mem_a", "content": "Likes ``` fences"}),
                json!({"updated": {"memory_id": "mem_a", "content": "Likes ``` fences"},
                       "previous": {"memory_id": "mem_a", "content": "likes fences"}}),
                false,
            ),
            call(
                json!({"action": "delete", "memory_id": "mem_b"}),
                json!({"deleted": "mem_b", "previous": {"memory_id": "mem_b", "content": "fences!"}}),
                false,
            ),
            call(
                json!({"action": "delete", "memory_id": "mem_api"}),
                json!({"error": "saved through the API"}),
                true,
            ),
            call(
                json!({"action": "search", "query": "x"}),
                json!({"memories": []}),
                false,
            ),
        ];
        let text = journal(&run, &calls);
        assert!(text.contains("## 1. Updated `mem_a`"), "{text}");
        assert!(text.contains("````text\nLikes ``` fences\n````"), "{text}");
        assert!(text.contains("```text\nlikes fences\n```"), "{text}");
        assert!(text.contains("## 2. Deleted `mem_b`"), "{text}");
        assert!(
            text.contains("```text\nfences!\n```\n\nAfter:\n\n(none)"),
            "{text}"
        );
        assert!(
            text.contains("- `delete` of `mem_api`: saved through the API"),
            "{text}"
        );
        assert!(!text.contains("## 3."), "{text}");
    }

    #[test]
    fn restricted_config_offers_only_read_file_and_memory_ungated() {
        let mut config = config();
        restrict_config(&mut config);
        let tools = crate::tools::builtin_tools();
        let offered: Vec<&str> = tools
            .iter()
            .filter(|t| !config.disabled_tools.contains(t.name()))
            .map(|t| t.name())
            .collect();
        assert_eq!(offered, vec!["read_file", "memory"]);
        assert!(!config.features.steering && config.tool_policies.is_empty());
    }
}
