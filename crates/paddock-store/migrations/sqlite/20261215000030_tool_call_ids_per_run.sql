-- A tool call's id is the one the model's provider gave it (`call_…`, `toolu_…`), or one
-- Paddock made when the provider gives none. Providers only promise uniqueness within a
-- conversation, and some OpenAI-compatible servers number calls (`call_0`, `call_1`…), so the
-- same id may appear in two runs, or two deployments. The id is unique per run, not globally.
CREATE TABLE tool_calls_per_run (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    tool TEXT NOT NULL,
    origin TEXT NOT NULL,
    arguments TEXT NOT NULL,
    -- pending, started, done
    state TEXT NOT NULL,
    result TEXT,
    is_error INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (run_id, id)
);
INSERT INTO tool_calls_per_run
    (seq, id, run_id, deployment_id, step, tool, origin, arguments, state, result, is_error,
     created_at)
SELECT seq, id, run_id, deployment_id, step, tool, origin, arguments, state, result, is_error,
       created_at
FROM tool_calls;
DROP TABLE tool_calls;
ALTER TABLE tool_calls_per_run RENAME TO tool_calls;
CREATE INDEX tool_calls_run ON tool_calls(run_id, seq);
