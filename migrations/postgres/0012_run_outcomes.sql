-- A run refused for the caller's mistake is 'client_error', apart from
-- the element's own failures ('error').
ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('ok', 'error', 'client_error'));
