-- An account whose organization Anthropic refuses permanently (banned, disabled, OAuth not allowed), with the upstream
-- message. Distinct from needs_reauth: a new login does not help. Cleared by `accounts enable` or a re-import.
ALTER TABLE accounts ADD COLUMN banned TEXT;
