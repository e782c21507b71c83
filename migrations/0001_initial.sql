-- dvc-sync's state. Times are microseconds since the Unix epoch (UTC).

-- Every dossier with a valid provincial record: its latest provincial state, normalised to
-- the national form, and what the national portal has acknowledged of it.
CREATE TABLE dossier (
    mahoso          TEXT PRIMARY KEY NOT NULL,
    version         INTEGER NOT NULL,            -- provincial `version` of the state below
    updated_at      INTEGER NOT NULL,            -- provincial `updated_at` of that version
    seen_at         INTEGER NOT NULL,            -- when this daemon first read that version
    payload         TEXT NOT NULL,               -- the national dossier (JSON object)
    payload_hash    INTEGER NOT NULL,            -- FNV-1a of payload, to compare with acked_hash
    status          INTEGER NOT NULL,            -- national TrangThaiHoSo of payload
    procedure       TEXT NOT NULL,               -- MaTTHC
    needs_catalogue INTEGER NOT NULL DEFAULT 0,  -- TenTTHC/MaLinhVuc/TenLinhVuc still to fill from LayThuTuc
    history         TEXT NOT NULL,               -- JSON array of national history entries, oldest first
    history_len     INTEGER NOT NULL,
    -- The national side, as acknowledged.
    national_exists INTEGER NOT NULL DEFAULT 0,  -- created there (updates use isUpdating "True")
    acked_hash      INTEGER,                     -- payload_hash of the last payload acknowledged
    acked_status    INTEGER,
    acked_history   INTEGER NOT NULL DEFAULT 0,  -- history entries acknowledged, a prefix of `history`
    acked_at        INTEGER,
    -- Set, durably, before every national write that concerns this dossier; cleared with the
    -- answer. Still set means the outcome is unknown: read the dossier back before resending.
    inflight        INTEGER NOT NULL DEFAULT 0
);

-- Dossiers with work left: the durable retry schedule. A row leaves when the dossier is in
-- sync, or moves to `dead` when the national portal refuses it for good.
CREATE TABLE outbox (
    mahoso          TEXT PRIMARY KEY NOT NULL REFERENCES dossier(mahoso),
    enqueued_at     INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox(next_attempt_at);
CREATE INDEX outbox_age ON outbox(enqueued_at);

-- Dossiers the national portal refused permanently, with its answer. `retry` or a new
-- provincial version moves them back to the outbox.
CREATE TABLE dead (
    mahoso      TEXT PRIMARY KEY NOT NULL REFERENCES dossier(mahoso),
    dead_at     INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    error_code  INTEGER,
    reason      TEXT NOT NULL
);

-- Provincial records that cannot be synchronized as they are, never sent.
CREATE TABLE quarantine (
    key           TEXT PRIMARY KEY NOT NULL,  -- the MaHoSo, or a fingerprint for records without one
    mahoso        TEXT,
    version       INTEGER,
    updated_at    INTEGER,
    reason        TEXT NOT NULL,
    record        TEXT NOT NULL,              -- the raw record (cut to 64 KiB)
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
CREATE INDEX quarantine_mahoso ON quarantine(mahoso);

-- The national procedure catalogue, as LayThuTuc answered (known = 0: unknown there).
CREATE TABLE procedure (
    code       TEXT PRIMARY KEY NOT NULL,
    known      INTEGER NOT NULL,
    name       TEXT,
    field_code TEXT,
    field_name TEXT,
    fetched_at INTEGER NOT NULL
);

-- Cursors, last successes and errors, counters: one value per key.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT
);

-- The running daemon, so that `status` can tell running from stopped from stale.
CREATE TABLE heartbeat (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    pid        INTEGER NOT NULL,
    version    TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    beat_at    INTEGER NOT NULL,
    stopped_at INTEGER
);
