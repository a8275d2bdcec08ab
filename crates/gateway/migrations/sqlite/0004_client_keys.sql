-- Managed client keys: only a SHA-256 of the key and a short visible prefix are kept.
CREATE TABLE client_keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    prefix          TEXT    NOT NULL,
    hash            TEXT    NOT NULL UNIQUE,
    note            TEXT,
    enabled         INTEGER NOT NULL DEFAULT 1,
    limits          TEXT    NOT NULL DEFAULT '{}',
    expires_at_ms   INTEGER,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER
);

-- Per-key counters shared by replicas: kind 'm' (requests per minute bucket), 'd' (tokens per UTC day), 'mo' (cost
-- per UTC month, nano-USD), 'c' (one replica's in-flight requests; `start_ms` is the replica's number).
CREATE TABLE key_counters (
    key_id     INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    start_ms   INTEGER NOT NULL,
    requests   INTEGER NOT NULL DEFAULT 0,
    tokens     INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, kind, start_ms)
);

-- One row per client request (metadata only), kept `usage_retention_days`.
CREATE TABLE request_log (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms              INTEGER NOT NULL,
    key_id             INTEGER NOT NULL,
    key_name           TEXT    NOT NULL,
    account_id         INTEGER NOT NULL,
    account_name       TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    route              TEXT    NOT NULL,
    stream             INTEGER NOT NULL,
    status             INTEGER NOT NULL,
    error_type         TEXT,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_creation_5m  INTEGER NOT NULL,
    cache_creation_1h  INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    latency_ms         INTEGER NOT NULL,
    ttfb_ms            INTEGER,
    cost_nanos         INTEGER
);
CREATE INDEX request_log_at ON request_log (at_ms);

-- Hourly rollups per key / account / model, kept longer than the request log.
CREATE TABLE usage_hourly (
    hour_ms           INTEGER NOT NULL,
    key_id            INTEGER NOT NULL,
    key_name          TEXT    NOT NULL,
    account_id        INTEGER NOT NULL,
    account_name      TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    input_tokens      INTEGER NOT NULL DEFAULT 0,
    output_tokens     INTEGER NOT NULL DEFAULT 0,
    cache_creation_5m INTEGER NOT NULL DEFAULT 0,
    cache_creation_1h INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos        INTEGER NOT NULL DEFAULT 0,
    cost_unknown      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_ms, key_id, account_id, model)
);
