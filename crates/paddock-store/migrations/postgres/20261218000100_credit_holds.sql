-- Micro-credits of the account's balance a run holds for the model call it is making: at most
-- what that call can cost (spec §16.1; paddock-store's sql/credit_holds.rs). Set before the
-- call, back to 0 when the call is charged or the run is claimed or released. Counted against
-- other runs' calls only while the run is `running`, so the balance ends below zero by less
-- than one call's cost.
ALTER TABLE runs ADD COLUMN credit_hold_micros BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_credit_holds ON runs(deployment_id)
    WHERE credit_hold_micros > 0 AND status = 'running';
