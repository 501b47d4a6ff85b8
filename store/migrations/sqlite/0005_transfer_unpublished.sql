-- A received file is recorded completed before it is renamed to its final
-- name, and its temp_path is cleared once the leader's sweep has seen it
-- published. This index keeps the sweep's query cheap: it holds only the
-- completed receives whose publication is not yet confirmed.
CREATE INDEX transfers_unpublished ON transfers (updated_at) WHERE status = 'completed' AND temp_path <> '';
