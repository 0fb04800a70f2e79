-- Webhook deliveries (SPEC 10.2): one row per webhook and event, written
-- in the transaction that writes the event, so no event is committed
-- without its deliveries. The event's id is the delivery's id (and the
-- webhook-id a receiver sees on every attempt).
CREATE TABLE webhook_outbox (
    webhook_id      TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    circle_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    last_error      TEXT,
    next_attempt_at BIGINT NOT NULL,
    -- A node delivering a row holds it until lease_until; past that any
    -- node may take it again.
    lease_until     BIGINT,
    lease_node      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_pending ON webhook_outbox (webhook_id, event_id) WHERE status = 'pending';
-- Finished rows are swept after a week.
CREATE INDEX webhook_outbox_finished ON webhook_outbox (updated_at) WHERE status <> 'pending';

-- Pending deliveries dropped past a webhook's bound, counted.
CREATE TABLE webhook_drops (
    webhook_id TEXT PRIMARY KEY,
    dropped    BIGINT NOT NULL
);

-- Each event write looks up its circle's webhooks.
CREATE INDEX elements_circle_type ON elements (circle_id, element_type);
