-- Message counters of each connection, written by its node in one batch
-- per heartbeat (only rows that changed), so `connections` on any node
-- shows them; never written per message.
ALTER TABLE ws_connections
    ADD COLUMN messages_in BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN messages_out BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN counted_at BIGINT;
