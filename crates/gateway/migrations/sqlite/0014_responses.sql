-- Responses API conversations kept for `previous_response_id` (store: true), scoped to the client key that made them.
CREATE TABLE responses (
    id            TEXT    PRIMARY KEY,
    owner         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX responses_created ON responses (created_at_ms);
