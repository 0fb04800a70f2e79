-- A row may fold several runs (anonymous traffic, per element, op,
-- outcome and second); duration_us and cost_micro_au are then totals.
ALTER TABLE runs ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
