-- Micro-credits of the account's balance a run holds for the model call it is making: at most
-- what that call can cost, plus its earlier calls not yet charged (a compaction's summaries).
-- Set before the call, back to 0 when the call is charged. Counted against other runs' calls
-- only while the run is `running` under an unexpired lease, so a crashed node's holds lapse
-- with its leases (issue 3: the balance goes below zero by at most one call's cost).
ALTER TABLE runs ADD COLUMN credit_hold_micros BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_credit_holds ON runs(deployment_id) WHERE credit_hold_micros > 0;
