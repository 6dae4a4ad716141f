-- Secrets (spec §15): account objects holding a credential an MCP server needs. The value is
-- stored only encrypted (AES-256-GCM, `nonce || ciphertext+tag`), never in clear.
CREATE TABLE secrets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT,
    customer_id TEXT,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX secrets_account_name ON secrets (account_id, name) WHERE name IS NOT NULL;
CREATE INDEX secrets_account ON secrets (account_id, created_at);
