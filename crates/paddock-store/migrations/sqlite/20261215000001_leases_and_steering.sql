-- Durable execution and steering (spec §5.4, §6).
--
-- Runs are a queue. A worker claims a `running` run by writing its node id and a lease expiry;
-- its heartbeat extends the expiry, and every progress write checks the owner. A run nobody
-- holds (new, answered, released at shutdown) or whose lease expired is claimable by any node.
-- `claims` counts how often the run was claimed since it last started or was answered: a claim
-- of a run with `claims > 0` is a resume (`run_status` `running`, `reason: "resumed"`).
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
-- Runs that were executing under the previous version resume with `reason: "resumed"`.
UPDATE runs SET claims = 1 WHERE status = 'running';
CREATE INDEX runs_claimable ON runs(lease_expires_at, seq) WHERE status = 'running';
CREATE INDEX runs_lease_owner ON runs(lease_owner) WHERE lease_owner IS NOT NULL;

-- Steering requests (spec §6.2), pending and resolved. A run has at most one pending request
-- (it is also on `runs.steering_request` while the run waits); resolved ones are kept so a
-- repeated answer is recognised (spec §6.4) and the worker knows what to do with the held call.
CREATE TABLE steering_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    -- approval, tool_call
    kind TEXT NOT NULL,
    -- the held call (for `approval`, the request_approval call)
    call_id TEXT NOT NULL,
    -- the request as the API shows it (JSON of the steering_request object)
    request TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- NULL while pending; approve, reject, respond, cancelled, timeout
    decision TEXT,
    message TEXT,
    resolved_at INTEGER
);
CREATE INDEX steering_requests_run ON steering_requests(run_id, seq);
CREATE UNIQUE INDEX steering_requests_one_pending ON steering_requests(run_id)
    WHERE decision IS NULL;
CREATE INDEX steering_requests_pending ON steering_requests(created_at)
    WHERE decision IS NULL;
