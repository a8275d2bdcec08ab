-- Refresh backoff shared by every process using this store (a token-endpoint 429 seen by one is honoured by all).
ALTER TABLE accounts ADD COLUMN refresh_blocked_until_ms INTEGER;
ALTER TABLE accounts ADD COLUMN refresh_block_reason TEXT;

-- One refresh of an account at a time across processes; `fence` grows with every new holder.
CREATE TABLE refresh_leases (
    account_id    INTEGER PRIMARY KEY,
    holder        TEXT    NOT NULL,
    fence         INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

-- Message-endpoint cooldowns learned by one process, honoured by the others. model '' = the whole account.
CREATE TABLE cooldowns (
    account_id INTEGER NOT NULL,
    model      TEXT    NOT NULL,
    until_ms   INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    PRIMARY KEY (account_id, model)
);

-- Usage totals, written in batches.
CREATE TABLE usage (
    account_id            INTEGER PRIMARY KEY,
    requests              INTEGER NOT NULL DEFAULT 0,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0
);
