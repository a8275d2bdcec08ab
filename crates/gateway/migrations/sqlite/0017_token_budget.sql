-- The token endpoint is one resource for every account: its pacing state and a 429's pause, shared by every process.
CREATE TABLE token_endpoint (
    id              INTEGER PRIMARY KEY,
    spent_until_ms  INTEGER NOT NULL,
    paused_until_ms INTEGER NOT NULL,
    pause_reason    TEXT
);
INSERT INTO token_endpoint (id, spent_until_ms, paused_until_ms, pause_reason) VALUES (1, 0, 0, NULL);
