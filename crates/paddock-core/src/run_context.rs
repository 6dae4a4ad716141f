//! What a run's context gets at its start besides the conversation: the memory block (spec
//! §10), after the workspace copies (memory mirror) are brought up to date.

use paddock_store::RunRecord;

use crate::memory;
use crate::runtime::Runtime;

/// How many of the thread's latest messages decide which memories are relevant.
const RECENT_MESSAGES: u32 = 8;

/// Brings the memory mirror up to date and returns the memory block for `run`, or `None`
/// (memory off, no memories, or the store failed: a run never fails for its memories).
pub(crate) async fn memory_block(rt: &Runtime, run: &RunRecord) -> Option<String> {
    memory::resync_mirror(
        &rt.store,
        rt.workspace(&run.deployment_id),
        &run.deployment_id,
    )
    .await;
    // A dreaming pass lists every memory, with its source, in its own input.
    if !run.config.features.memory || run.trigger == memory::DREAMING_TRIGGER {
        return None;
    }
    let mut recent = String::new();
    if let Some(thread_id) = &run.thread_id
        && let Ok((messages, _)) = rt
            .store
            .thread_messages(thread_id, RECENT_MESSAGES, None)
            .await
    {
        for m in messages {
            recent.push_str(&m.content);
            recent.push('\n');
        }
    }
    match memory::context_block(
        rt.store.as_ref(),
        &run.deployment_id,
        &recent,
        rt.settings.memory_context_tokens,
    )
    .await
    {
        Ok(block) => block,
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "memory block unavailable");
            None
        }
    }
}

/// A skill as the system prompt lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PromptSkill {
    pub(crate) name: String,
    pub(crate) description: String,
    /// Where the model reads it (`read_file`).
    pub(crate) path: String,
}

/// Brings the workspace copies of `inline` and `url` skills up to date (and removes copies of
/// skills that are gone), re-reads `file` skills (a missing or broken one is left out and its
/// `error` set; the run goes on), and returns the skills to list, in creation order.
pub(crate) async fn skills(rt: &Runtime, run: &RunRecord) -> Vec<PromptSkill> {
    let all = match rt.store.all_skills(&run.deployment_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "skills unavailable");
            return Vec::new();
        }
    };
    let ws = rt.workspace(&run.deployment_id);
    let copies: Vec<(String, String)> = all
        .iter()
        .filter_map(|s| s.content.clone().map(|c| (s.name.clone(), c)))
        .collect();
    let sync_ws = ws.clone();
    let synced =
        tokio::task::spawn_blocking(move || crate::skills::sync_copies(&sync_ws, &copies)).await;
    match synced {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(run_id = %run.id, error = %e, "skill copies not written"),
        Err(e) => tracing::warn!(run_id = %run.id, error = %e, "skill copies not written"),
    }
    let mut out = Vec::with_capacity(all.len());
    for s in all {
        match (&s.content, &s.path) {
            (Some(_), _) => out.push(PromptSkill {
                path: crate::skills::copy_path(&s.name),
                name: s.name,
                description: s.description,
            }),
            (None, Some(path)) => {
                let loaded = crate::skills::read_file_skill(&ws, path, &s.name);
                let (description, error) = match &loaded {
                    Ok(d) => (Some(d.as_str()), None),
                    Err(message) => (
                        None,
                        Some(paddock_protocol::ErrorInfo {
                            code: "invalid_skill".to_owned(),
                            message: message.clone(),
                        }),
                    ),
                };
                let changed = error != s.error || description.is_some_and(|d| d != s.description);
                if changed
                    && let Err(e) = rt
                        .store
                        .set_skill_load(&run.deployment_id, &s.id, description, error.as_ref())
                        .await
                {
                    tracing::warn!(run_id = %run.id, error = %e, "skill state not recorded");
                }
                if let Ok(description) = loaded {
                    out.push(PromptSkill {
                        name: s.name,
                        description,
                        path: path.clone(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    out
}
