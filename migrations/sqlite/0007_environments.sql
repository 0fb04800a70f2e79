-- Environments (SPEC §6a): what demo and live run. A row per element and
-- environment holds the commit its branch points at, the version that
-- commit records, and that version's spec, so the runtime serves it
-- without reading git. Draft is the element row itself.
CREATE TABLE deployments (
    element_id   TEXT NOT NULL REFERENCES elements(id),
    env          TEXT NOT NULL CHECK (env IN ('demo', 'live')),
    commit_id    TEXT NOT NULL,
    version      BIGINT NOT NULL,
    spec         TEXT NOT NULL,
    promoted_at  BIGINT NOT NULL,
    promoted_by  TEXT NOT NULL,
    PRIMARY KEY (element_id, env)
);

-- Every promotion and rollback, newest last: the release history.
CREATE TABLE promotions (
    id           TEXT PRIMARY KEY,
    element_id   TEXT NOT NULL REFERENCES elements(id),
    env          TEXT NOT NULL,
    from_commit  TEXT,
    to_commit    TEXT NOT NULL,
    version      BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    message      TEXT,
    rollback     BIGINT NOT NULL DEFAULT 0,
    snapshot_id  TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX promotions_element ON promotions (element_id, env, id);

-- A manifest's environments: each promotion freezes its members' versions
-- and commits here, where no spec write can touch them.
CREATE TABLE snapshots (
    id           TEXT PRIMARY KEY,
    element_id   TEXT NOT NULL REFERENCES elements(id),
    env          TEXT NOT NULL,
    members      TEXT NOT NULL,
    actor        TEXT NOT NULL,
    message      TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX snapshots_element ON snapshots (element_id, env, id);
