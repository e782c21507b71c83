-- Each dossier's JSON (the national payload and its history) in a table of its own. The
-- pusher updates a dossier's small acknowledgement columns several times a round, and SQLite
-- rewrites the whole row on every update: with ~3 KB of JSON in the row, each of those
-- updates wrote a page or more to the WAL (docs/BENCHMARKS.md).
CREATE TABLE body (
    mahoso  TEXT PRIMARY KEY NOT NULL REFERENCES dossier(mahoso),
    payload TEXT NOT NULL,                       -- the national dossier (JSON object)
    history TEXT NOT NULL                        -- JSON array of national history entries, oldest first
);
INSERT INTO body (mahoso, payload, history) SELECT mahoso, payload, history FROM dossier;
ALTER TABLE dossier DROP COLUMN payload;
ALTER TABLE dossier DROP COLUMN history;
