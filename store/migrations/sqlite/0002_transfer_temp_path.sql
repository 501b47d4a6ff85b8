-- The temporary file of an interrupted receive, so that a restart on any
-- node (after a failover) resumes into the same partial file.
ALTER TABLE transfers ADD COLUMN temp_path TEXT NOT NULL DEFAULT '';
