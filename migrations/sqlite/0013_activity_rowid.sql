-- The activity table's primary key on its text id kept a B-tree that no
-- read used (every read goes through the circle's or the element's index),
-- one of four written for every event. The table is rebuilt without it;
-- an id stays unique through the circle's index, which every row is in,
-- so a batch written twice still fails as a duplicate.
CREATE TABLE activity_new (
    id             TEXT NOT NULL,
    circle         TEXT NOT NULL,
    element_id     TEXT,
    slug           TEXT,
    kind           TEXT NOT NULL,
    op             TEXT,
    invocation_id  TEXT,
    actor          TEXT NOT NULL,
    trace_id       TEXT,
    data           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    circle_id      TEXT
);
INSERT INTO activity_new (id, circle, element_id, slug, kind, op, invocation_id,
                          actor, trace_id, data, created_at, circle_id)
SELECT id, circle, element_id, slug, kind, op, invocation_id,
       actor, trace_id, data, created_at, circle_id
FROM activity ORDER BY id;
DROP TABLE activity;
ALTER TABLE activity_new RENAME TO activity;
CREATE UNIQUE INDEX activity_circle_id ON activity (circle_id, id);
CREATE INDEX activity_element ON activity (element_id, id);
