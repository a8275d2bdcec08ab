-- Stored responses get an insertion sequence (the rowid) and an index on their expiry, so keeping a response prunes the
-- expired and the oldest rows by index ranges instead of scanning and sorting the whole table on every request.
CREATE TABLE responses_seq (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    owner         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
INSERT INTO responses_seq (id, owner, body, created_at_ms, expires_at_ms)
    SELECT id, owner, body, created_at_ms, expires_at_ms FROM responses ORDER BY created_at_ms, id;
DROP TABLE responses;
ALTER TABLE responses_seq RENAME TO responses;
CREATE INDEX responses_expires ON responses (expires_at_ms);
