-- The identity of this database, written into the shared directory (workspaces, snapshots) of
-- every node that uses it, so a node whose shared directory is not the others' refuses to
-- start. One row.
CREATE TABLE cluster (
    id TEXT NOT NULL PRIMARY KEY,
    -- 1 once a node has written the marker file: from then on, a node that finds no marker
    -- is looking at another directory.
    marker_written INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
