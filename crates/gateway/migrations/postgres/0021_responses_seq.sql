-- Stored responses get an insertion sequence and an index on their expiry, so keeping a response prunes the expired
-- and the oldest rows by index ranges instead of scanning and sorting the whole table on every request.
ALTER TABLE responses ADD COLUMN seq BIGSERIAL;
UPDATE responses r SET seq = o.n
    FROM (SELECT id, row_number() OVER (ORDER BY created_at_ms, id) AS n FROM responses) o
    WHERE r.id = o.id;
SELECT setval(pg_get_serial_sequence('responses', 'seq'), (SELECT COALESCE(MAX(seq), 0) + 1 FROM responses), false);
CREATE INDEX responses_seq ON responses (seq);
CREATE INDEX responses_expires ON responses (expires_at_ms);
DROP INDEX responses_created;
