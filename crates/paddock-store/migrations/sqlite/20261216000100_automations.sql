-- Automations (spec §9): instructions run on a schedule in a thread of the deployment.
CREATE TABLE automations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- five-field UTC cron, whitespace collapsed
    schedule TEXT NOT NULL,
    -- the English text the client sent, NULL when it sent cron
    schedule_text TEXT,
    instructions TEXT NOT NULL,
    thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    enabled INTEGER NOT NULL,
    created_by TEXT NOT NULL,       -- 'api' or 'agent'
    -- the next scheduled time not yet claimed; NULL while disabled. The scheduler claims a
    -- time with `UPDATE … WHERE id = ? AND next_run_at = ?`, so each time is claimed once.
    next_run_at INTEGER,
    -- the scheduled time of the one firing held while the thread was busy (spec §9.3)
    deferred_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX automations_deployment ON automations (deployment_id, created_at);
CREATE INDEX automations_due ON automations (next_run_at)
    WHERE enabled = 1 AND next_run_at IS NOT NULL;
CREATE INDEX automations_deferred ON automations (deferred_at) WHERE deferred_at IS NOT NULL;
CREATE INDEX automations_thread ON automations (thread_id);
-- An automation's history (`runs`, `last_run_at`, `GET …/runs?automation_id=`).
CREATE INDEX runs_automation ON runs (automation_id, created_at) WHERE automation_id IS NOT NULL;
