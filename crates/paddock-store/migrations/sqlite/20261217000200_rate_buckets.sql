-- Request-rate token buckets per API key (spec §1.11) when several nodes share the database
-- (PostgreSQL); a single SQLite node keeps them in memory. Amounts are micro-tokens, times
-- Unix milliseconds. The SQLite table exists so both stores have one schema.
CREATE TABLE rate_buckets (
    key_id TEXT NOT NULL PRIMARY KEY,
    micro_tokens INTEGER NOT NULL,
    refilled_ms INTEGER NOT NULL,
    -- micro-tokens added per millisecond, as of the last request
    rate INTEGER NOT NULL,
    -- 1 if the last request got a token
    taken INTEGER NOT NULL
);
