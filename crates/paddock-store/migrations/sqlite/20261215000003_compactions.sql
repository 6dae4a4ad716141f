-- Context compaction (spec §8: compaction never changes the stored history).
--
-- When a thread's conversation no longer fits its model's context window, the run asks the
-- model for a summary of the older items and sends that summary in their place. The summary
-- is kept here, beside the untouched `conversation_items`, so later steps, later runs on the
-- thread and a resumed run reuse it instead of paying for it again. `items_summarised` is how
-- many leading items of the conversation (in `conversation_items` order, which is append-only)
-- the summary replaces; the newest row of a thread is the one in use.
CREATE TABLE compactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    -- NULL for a thread-less run, whose conversation is keyed by run_id
    thread_id TEXT REFERENCES threads(id) ON DELETE CASCADE,
    -- the run that made the summary
    run_id TEXT NOT NULL,
    items_summarised INTEGER NOT NULL,
    summary TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX compactions_thread ON compactions(thread_id, seq);
CREATE INDEX compactions_run ON compactions(run_id, seq);
