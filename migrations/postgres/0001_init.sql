-- Times are unix milliseconds; JSON is stored as text. Both backends use
-- the same column types so one set of queries serves both.
CREATE TABLE elements (
    id            TEXT PRIMARY KEY,
    namespace     TEXT NOT NULL,           -- circle slug; '' for circles
    slug          TEXT NOT NULL,
    name          TEXT NOT NULL,
    element_type  TEXT NOT NULL,
    parent_id     TEXT REFERENCES elements(id),
    state         TEXT NOT NULL CHECK (state IN ('ready', 'disabled', 'deleted')),
    state_reason  TEXT,
    intention     TEXT,
    spec          TEXT NOT NULL,
    meta          TEXT NOT NULL DEFAULT '{}',
    version       BIGINT NOT NULL,
    rev           BIGINT NOT NULL,         -- bumps on every write; the CAS token
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX elements_live_slug ON elements (namespace, slug) WHERE state <> 'deleted';
CREATE INDEX elements_namespace ON elements (namespace, id);
CREATE INDEX elements_parent ON elements (parent_id);

-- Append-only.
CREATE TABLE element_versions (
    element_id  TEXT NOT NULL REFERENCES elements(id),
    version     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    intention   TEXT,
    spec        TEXT NOT NULL,
    author      TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (element_id, version)
);

-- Append-only. Ids are UUIDv7 text, so they sort by time.
CREATE TABLE activity (
    id             TEXT PRIMARY KEY,
    circle         TEXT NOT NULL,
    element_id     TEXT,
    slug           TEXT,
    kind           TEXT NOT NULL,
    op             TEXT,
    invocation_id  TEXT,
    actor          TEXT NOT NULL,
    trace_id       TEXT,
    data           TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX activity_circle ON activity (circle, id);
CREATE INDEX activity_element ON activity (element_id, id);

-- One row per op invocation, for stats.
CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    circle         TEXT NOT NULL,
    element_id     TEXT NOT NULL,
    op             TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error_code     TEXT,
    duration_us    BIGINT NOT NULL,
    cost_micro_au  BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX runs_element_time ON runs (element_id, created_at);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    circle      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);

CREATE TABLE attachments (
    id          TEXT PRIMARY KEY,
    element_id  TEXT NOT NULL REFERENCES elements(id),
    source_id   TEXT NOT NULL REFERENCES elements(id),
    priority    BIGINT NOT NULL DEFAULT 100,
    created_at  BIGINT NOT NULL,
    UNIQUE (element_id, source_id)
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
