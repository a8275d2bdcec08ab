-- Accounts: one upstream credential each. `version` is bumped on every write (compare-and-set).
CREATE TABLE accounts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL CHECK (kind IN ('api_key', 'oauth')),
    secret            TEXT    NOT NULL,
    refresh_token     TEXT,
    expires_at_ms     INTEGER,
    disabled          INTEGER NOT NULL DEFAULT 0,
    needs_reauth      TEXT,
    last_error        TEXT,
    email             TEXT,
    account_uuid      TEXT,
    organization_uuid TEXT,
    organization_name TEXT,
    priority          INTEGER NOT NULL DEFAULT 0,
    weight            INTEGER NOT NULL DEFAULT 1,
    version           INTEGER NOT NULL DEFAULT 1,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL
);

-- A counter bumped by every write, so a running gateway notices changes made by the CLI with one cheap read.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('change_seq', 0);
