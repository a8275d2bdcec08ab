CREATE TABLE accounts (
    id                       BIGSERIAL PRIMARY KEY,
    name                     TEXT    NOT NULL UNIQUE,
    kind                     TEXT    NOT NULL CHECK (kind IN ('api_key', 'oauth')),
    secret                   TEXT    NOT NULL,
    refresh_token            TEXT,
    expires_at_ms            BIGINT,
    disabled                 BIGINT  NOT NULL DEFAULT 0,
    needs_reauth             TEXT,
    last_error               TEXT,
    email                    TEXT,
    account_uuid             TEXT,
    organization_uuid        TEXT,
    organization_name        TEXT,
    priority                 BIGINT  NOT NULL DEFAULT 0,
    weight                   BIGINT  NOT NULL DEFAULT 1,
    version                  BIGINT  NOT NULL DEFAULT 1,
    created_at_ms            BIGINT  NOT NULL,
    updated_at_ms            BIGINT  NOT NULL,
    max_concurrency          BIGINT,
    refresh_blocked_until_ms BIGINT,
    refresh_block_reason     TEXT
);

CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('change_seq', 0);

CREATE TABLE refresh_leases (
    account_id    BIGINT PRIMARY KEY,
    holder        TEXT   NOT NULL,
    fence         BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE cooldowns (
    account_id BIGINT NOT NULL,
    model      TEXT   NOT NULL,
    until_ms   BIGINT NOT NULL,
    reason     TEXT   NOT NULL,
    PRIMARY KEY (account_id, model)
);

CREATE TABLE usage (
    account_id            BIGINT PRIMARY KEY,
    requests              BIGINT NOT NULL DEFAULT 0,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens BIGINT NOT NULL DEFAULT 0
);
