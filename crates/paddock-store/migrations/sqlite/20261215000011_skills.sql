-- Skills (spec §12): SKILL.md playbooks of a deployment. `content` holds the text of `inline`
-- and `url` skills (fetched when created or replaced); `file` skills are read from the
-- workspace at each run start, and `error` records why the last read failed.
CREATE TABLE skills (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    source TEXT NOT NULL,          -- 'inline', 'url' or 'file'
    description TEXT NOT NULL,     -- from the front matter ('' for a file skill never read)
    content TEXT,
    url TEXT,
    path TEXT,
    error TEXT,                    -- JSON {"code", "message"} or NULL
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX skills_deployment_name ON skills (deployment_id, name);
CREATE INDEX skills_deployment ON skills (deployment_id, created_at);
