-- A run refused for the caller's mistake is 'client_error', apart from
-- the element's own failures ('error'); SQLite changes a CHECK only by
-- building the table anew.
CREATE TABLE runs_new (
    id             TEXT PRIMARY KEY,
    circle         TEXT NOT NULL,
    element_id     TEXT NOT NULL,
    op             TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('ok', 'error', 'client_error')),
    error_code     TEXT,
    duration_us    BIGINT NOT NULL,
    cost_micro_au  BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    count          BIGINT NOT NULL DEFAULT 1
);
INSERT INTO runs_new (id, circle, element_id, op, status, error_code, duration_us, cost_micro_au, created_at, count)
    SELECT id, circle, element_id, op, status, error_code, duration_us, cost_micro_au, created_at, count FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE INDEX runs_element_time ON runs (element_id, created_at);
