-- Vectis schema v1 (SQLite). Timestamps are integer microseconds since 1970 UTC; booleans 0/1.
CREATE TABLE partners (
    id            TEXT PRIMARY KEY,
    description   TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL DEFAULT '',
    enabled       INTEGER NOT NULL,
    access        TEXT NOT NULL,
    files         TEXT NOT NULL DEFAULT '[]',
    max_sessions  INTEGER NOT NULL DEFAULT 0,
    cert_cn       TEXT NOT NULL DEFAULT '',
    cert_sha256   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX partners_cert_cn ON partners (cert_cn) WHERE cert_cn <> '';
CREATE INDEX partners_cert_sha256 ON partners (cert_sha256) WHERE cert_sha256 <> '';

CREATE TABLE virtual_files (
    id            TEXT PRIMARY KEY,
    description   TEXT NOT NULL DEFAULT '',
    direction     TEXT NOT NULL,
    receive_dir   TEXT NOT NULL DEFAULT '',
    name_pattern  TEXT NOT NULL DEFAULT '',
    send_dir      TEXT NOT NULL DEFAULT '',
    overwrite     INTEGER NOT NULL DEFAULT 0,
    max_size      BIGINT NOT NULL DEFAULT 0,
    record_format TEXT NOT NULL,
    record_length INTEGER NOT NULL DEFAULT 0,
    data_code     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE servers (
    id                 TEXT PRIMARY KEY,
    description        TEXT NOT NULL DEFAULT '',
    listen             TEXT NOT NULL,
    tls_listen         TEXT NOT NULL DEFAULT '',
    tls_cert_file      TEXT NOT NULL DEFAULT '',
    tls_key_file       TEXT NOT NULL DEFAULT '',
    tls_client_ca_file TEXT NOT NULL DEFAULT '',
    max_sessions       INTEGER NOT NULL DEFAULT 0,
    auto_start         INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

-- No foreign keys to partners/files/servers: history outlives configuration.
CREATE TABLE transfers (
    id            TEXT PRIMARY KEY,
    server_id     TEXT NOT NULL,
    partner_id    TEXT NOT NULL,
    file_id       TEXT NOT NULL,
    direction     TEXT NOT NULL,
    pesit_id      BIGINT NOT NULL,
    status        TEXT NOT NULL,
    bytes         BIGINT NOT NULL DEFAULT 0,
    articles      BIGINT NOT NULL DEFAULT 0,
    sync_number   BIGINT NOT NULL DEFAULT 0,
    sync_offset   BIGINT NOT NULL DEFAULT 0,
    sync_articles BIGINT NOT NULL DEFAULT 0,
    restart_count INTEGER NOT NULL DEFAULT 0,
    sha256        TEXT NOT NULL DEFAULT '',
    diagnostic    TEXT NOT NULL DEFAULT '',
    local_path    TEXT NOT NULL DEFAULT '',
    node          TEXT NOT NULL DEFAULT '',
    epoch         BIGINT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
-- The API lists newest first, filtered by status or partner; pages by (created_at, id).
CREATE INDEX transfers_by_time ON transfers (created_at DESC, id DESC);
CREATE INDEX transfers_by_status ON transfers (status, created_at DESC, id DESC);
CREATE INDEX transfers_by_partner ON transfers (partner_id, created_at DESC, id DESC);
CREATE INDEX transfers_restart ON transfers (partner_id, direction, pesit_id, file_id, created_at DESC);
CREATE INDEX transfers_finished ON transfers (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_by_time ON audit_events (at DESC, id DESC);

-- One row, the fencing record. Epoch 0 means nobody claimed yet.
CREATE TABLE cluster_leader (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL,
    member TEXT NOT NULL,
    since  INTEGER NOT NULL
);
INSERT INTO cluster_leader (id, epoch, member, since) VALUES (1, 0, '', 0);

CREATE TABLE api_users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_name  TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
);
