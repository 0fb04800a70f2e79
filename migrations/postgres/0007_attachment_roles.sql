-- Who attached a modifier: changing or detaching it needs at least that
-- role (NULL, attached before this was kept, counts as admin).
ALTER TABLE attachments ADD COLUMN attached_role TEXT;
