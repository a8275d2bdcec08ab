-- Free-form labels of an account, comma-separated (shown and filtered on by operators; no effect on routing).
ALTER TABLE accounts ADD COLUMN tags TEXT NOT NULL DEFAULT '';

-- Every state-changing admin action: who (an admin session or the admin key), what, when, and how it ended.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT,
    status  BIGINT NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at_ms);

-- One row per gateway process using this store, rewritten by its heartbeat.
CREATE TABLE replicas (
    id            TEXT   PRIMARY KEY,
    version       TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    seen_at_ms    BIGINT NOT NULL,
    detail        TEXT   NOT NULL
);
