-- Dreaming (spec §3.4): idle-time memory consolidation runs, `trigger: "dreaming"`, no thread.
--
-- `runs.thread_id` is already nullable (the conversation of a thread-less run is keyed by its
-- run id) and `runs_one_active_per_thread` already ignores NULL threads, so a dreaming run
-- needs no change to `runs`. What is new is the per-deployment record of the latest pass, the
-- row a pass is claimed on: starting a pass updates it only if it still holds what the
-- deciding transaction read, so a pass starts exactly once however many ticks or nodes race.
CREATE TABLE dreaming_passes (
    deployment_id TEXT PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
    -- when the latest pass started (Unix seconds, the deciding node's clock)
    last_started_at INTEGER NOT NULL,
    -- the latest pass's run
    run_id TEXT NOT NULL,
    -- that run's `runs.seq`: a run with a higher seq was created after the pass started, so
    -- "a run finished since the last pass" does not depend on clocks agreeing
    run_seq INTEGER NOT NULL
);

-- At most one active dreaming run per deployment (a pass starts only when no run is active;
-- this makes it an invariant of the database too).
CREATE UNIQUE INDEX runs_one_active_dream ON runs(deployment_id)
    WHERE trigger = 'dreaming' AND status IN ('running', 'waiting_on_human');

-- The idle test looks up the newest finished run of a deployment.
CREATE INDEX runs_finished ON runs(deployment_id, finished_at) WHERE finished_at IS NOT NULL;
