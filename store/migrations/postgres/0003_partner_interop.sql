-- PI 51 (creation date) of a received file as the requester sent it: a
-- restart CREATE must repeat it, else it is another file (issue 14).
ALTER TABLE transfers ADD COLUMN file_created TEXT NOT NULL DEFAULT '';

-- Peer anomalies tolerated during the transfer (docs/interop.md), comma
-- separated kinds from a closed set.
ALTER TABLE transfers ADD COLUMN anomalies TEXT NOT NULL DEFAULT '';

-- Partner settings that reach the PeSIT server (issue 14): multi-article
-- and segmented DTFs agreed beforehand, and strict mode (docs/interop.md).
-- cert_sha256 now holds a comma-separated list of fingerprints.
ALTER TABLE partners ADD COLUMN multi_article BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE partners ADD COLUMN segment BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE partners ADD COLUMN strict BOOLEAN NOT NULL DEFAULT FALSE;

-- What a TLS client must show: request, verify-if-given, require-any or
-- require ('' = the former behaviour, decided by tls_client_ca_file).
ALTER TABLE servers ADD COLUMN tls_client_auth TEXT NOT NULL DEFAULT '';
