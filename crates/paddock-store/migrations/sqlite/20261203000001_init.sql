-- Paddock schema, SQLite dialect. Times are Unix seconds (INTEGER); JSON documents are TEXT.
-- Every table has an insertion sequence `seq` used for stable pagination.

CREATE TABLE accounts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    -- micro-credits (balance × 10^6); NULL is unlimited
    balance_micros INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id, created_at);

CREATE TABLE deployments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    customer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    runtime TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    default_thread_id TEXT NOT NULL,
    config TEXT NOT NULL,
    -- last event sequence number handed out for this deployment
    event_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deployments_account ON deployments(account_id, created_at);

CREATE TABLE threads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    title TEXT,
    is_default INTEGER NOT NULL,
    automation_id TEXT,
    created_at INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL
);
CREATE INDEX threads_deployment ON threads(deployment_id, created_at);

CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    thread_id TEXT REFERENCES threads(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    automation_id TEXT,
    model TEXT NOT NULL,
    -- the deployment configuration this run started with
    config TEXT NOT NULL,
    steering_request TEXT,
    error TEXT,
    warnings TEXT NOT NULL DEFAULT '[]',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    credits_micros INTEGER NOT NULL DEFAULT 0,
    -- number of model calls made so far
    step INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX runs_deployment ON runs(deployment_id, created_at);
CREATE INDEX runs_status ON runs(status);
-- At most one active run per thread (spec §18.13).
CREATE UNIQUE INDEX runs_one_active_per_thread ON runs(thread_id)
    WHERE status IN ('running', 'waiting_on_human') AND thread_id IS NOT NULL;

CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    run_id TEXT,
    attachments TEXT NOT NULL DEFAULT '[]',
    automation_id TEXT,
    -- 0 while a user message waits for its run's next model call
    consumed INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_thread ON messages(thread_id, seq);
CREATE INDEX messages_pending ON messages(run_id) WHERE consumed = 0;

-- The model-facing conversation of a thread (or of a thread-less run), in canonical form.
CREATE TABLE conversation_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    thread_id TEXT REFERENCES threads(id) ON DELETE CASCADE,
    run_id TEXT NOT NULL,
    item TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX conversation_thread ON conversation_items(thread_id, seq);
CREATE INDEX conversation_run ON conversation_items(run_id, seq);

-- Tool calls, recorded before they execute so a restart never repeats recorded work.
CREATE TABLE tool_calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
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
    created_at INTEGER NOT NULL
);
CREATE INDEX tool_calls_run ON tool_calls(run_id, seq);

CREATE TABLE events (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    thread_id TEXT,
    run_id TEXT,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);
CREATE INDEX events_created ON events(created_at);

CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL,
    key TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    -- NULL while the first request is still running
    status INTEGER,
    body BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
);
