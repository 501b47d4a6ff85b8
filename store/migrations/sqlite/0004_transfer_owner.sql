-- A transfer is owned by the session that runs it: (node, epoch) is the node
-- and the leader term that began or last took over the transfer, and every
-- write of that session is guarded by the epoch (no new column: the epoch of
-- the last write is always the owner's). A new leader looks for in-progress
-- transfers of owners that are gone; this index keeps that sweep cheap.
CREATE INDEX transfers_in_progress_owner ON transfers (epoch, node) WHERE status = 'in_progress';
