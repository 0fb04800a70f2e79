-- An attachment may pin its modifier to one version (ref "slug@vN").
ALTER TABLE attachments ADD COLUMN pin_version BIGINT;
