-- Tenancy follows a circle's id, not its slug: a deleted circle's slug can
-- be taken again, and nothing of the old circle may reach the new one.
ALTER TABLE elements ADD COLUMN circle_id TEXT;
UPDATE elements SET circle_id = id WHERE namespace = '';
-- Ids are UUIDv7 and sort by time: an element belongs to the newest circle
-- of its slug made before it.
UPDATE elements SET circle_id = (
    SELECT c.id FROM elements c
    WHERE c.namespace = '' AND c.slug = elements.namespace AND c.id <= elements.id
    ORDER BY c.id DESC LIMIT 1)
WHERE namespace <> '';
CREATE INDEX elements_circle ON elements (circle_id, id);

ALTER TABLE activity ADD COLUMN circle_id TEXT;
UPDATE activity SET circle_id = (
    SELECT c.id FROM elements c
    WHERE c.namespace = '' AND c.slug = activity.circle AND c.id <= activity.id
    ORDER BY c.id DESC LIMIT 1);
CREATE INDEX activity_circle_id ON activity (circle_id, id);

-- A circle token is bound to the circle it was made for; a token made
-- before its circle exists is bound when the circle is created.
ALTER TABLE tokens ADD COLUMN circle_id TEXT;
UPDATE tokens SET circle_id = (
    SELECT c.id FROM elements c
    WHERE c.namespace = '' AND c.slug = tokens.circle AND c.state <> 'deleted')
WHERE circle <> '*';
-- Tokens of a circle that was deleted die with it.
UPDATE tokens SET revoked_at = CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
WHERE circle <> '*' AND circle_id IS NULL AND revoked_at IS NULL
  AND EXISTS (SELECT 1 FROM elements c WHERE c.namespace = '' AND c.slug = tokens.circle);
