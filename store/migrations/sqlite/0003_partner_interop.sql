-- PI 51 (creation date) of a received file as the requester sent it: a
-- restart CREATE must repeat it, else it is another file (issue 14).
ALTER TABLE transfers ADD COLUMN file_created TEXT NOT NULL DEFAULT '';

-- Peer anomalies tolerated during the transfer (docs/interop.md), comma
-- separated kinds from a closed set.
ALTER TABLE transfers ADD COLUMN anomalies TEXT NOT NULL DEFAULT '';
