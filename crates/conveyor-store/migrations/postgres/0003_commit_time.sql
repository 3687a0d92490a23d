-- When each run's commit was made: the start of DORA's lead time for changes.
ALTER TABLE runs ADD COLUMN committed_at TEXT;
