-- How far an attachment reaches below the element it is on: none (that
-- element only), children (and the elements directly below), descendants.
ALTER TABLE attachments ADD COLUMN cascade_policy TEXT NOT NULL DEFAULT 'none';
