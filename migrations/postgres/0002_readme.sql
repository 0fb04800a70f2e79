-- README.md lives in git and, as the authoritative copy, here.
ALTER TABLE elements ADD COLUMN readme TEXT NOT NULL DEFAULT '';
ALTER TABLE element_versions ADD COLUMN readme TEXT;
