-- Per-account cap on concurrent upstream requests (NULL = unlimited).
ALTER TABLE accounts ADD COLUMN max_concurrency INTEGER;
