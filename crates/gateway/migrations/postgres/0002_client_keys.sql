-- Managed client keys: only a SHA-256 of the key and a short visible prefix are kept.
CREATE TABLE client_keys (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    prefix          TEXT    NOT NULL,
    hash            TEXT    NOT NULL UNIQUE,
    note            TEXT,
    enabled         BIGINT  NOT NULL DEFAULT 1,
    limits          TEXT    NOT NULL DEFAULT '{}',
    expires_at_ms   BIGINT,
    created_at_ms   BIGINT  NOT NULL,
    updated_at_ms   BIGINT  NOT NULL,
    last_used_at_ms BIGINT
);

-- Per-key counters shared by replicas: kind 'm' (requests per minute bucket), 'd' (tokens per UTC day), 'mo' (cost
-- per UTC month, nano-USD), 'c' (one replica's in-flight requests; `start_ms` is the replica's number).
CREATE TABLE key_counters (
    key_id     BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    start_ms   BIGINT  NOT NULL,
    requests   BIGINT  NOT NULL DEFAULT 0,
    tokens     BIGINT  NOT NULL DEFAULT 0,
    cost_nanos BIGINT  NOT NULL DEFAULT 0,
    updated_ms BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, kind, start_ms)
);

-- One row per client request (metadata only), kept `usage_retention_days`.
CREATE TABLE request_log (
    id                 BIGSERIAL PRIMARY KEY,
    at_ms              BIGINT  NOT NULL,
    key_id             BIGINT  NOT NULL,
    key_name           TEXT    NOT NULL,
    account_id         BIGINT  NOT NULL,
    account_name       TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    route              TEXT    NOT NULL,
    stream             BIGINT  NOT NULL,
    status             BIGINT  NOT NULL,
    error_type         TEXT,
    input_tokens       BIGINT  NOT NULL,
    output_tokens      BIGINT  NOT NULL,
    cache_creation_5m  BIGINT  NOT NULL,
    cache_creation_1h  BIGINT  NOT NULL,
    cache_read_tokens  BIGINT  NOT NULL,
    latency_ms         BIGINT  NOT NULL,
    ttfb_ms            BIGINT,
    cost_nanos         BIGINT
);
CREATE INDEX request_log_at ON request_log (at_ms);

-- Hourly rollups per key / account / model, kept longer than the request log.
CREATE TABLE usage_hourly (
    hour_ms           BIGINT  NOT NULL,
    key_id            BIGINT  NOT NULL,
    key_name          TEXT    NOT NULL,
    account_id        BIGINT  NOT NULL,
    account_name      TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    requests          BIGINT  NOT NULL DEFAULT 0,
    input_tokens      BIGINT  NOT NULL DEFAULT 0,
    output_tokens     BIGINT  NOT NULL DEFAULT 0,
    cache_creation_5m BIGINT  NOT NULL DEFAULT 0,
    cache_creation_1h BIGINT  NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT  NOT NULL DEFAULT 0,
    cost_nanos        BIGINT  NOT NULL DEFAULT 0,
    cost_unknown      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_ms, key_id, account_id, model)
);
