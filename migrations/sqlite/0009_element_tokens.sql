-- Tokens made by an api-token element (NULL: made by the CLI), and when
-- each was last used (written in batches).
ALTER TABLE tokens ADD COLUMN element_id TEXT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX tokens_element ON tokens (element_id);
