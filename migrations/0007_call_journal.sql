-- The call journal: the last national calls that concerned each dossier (service, when, what
-- came of it, the portal's error code and message, what a read-back found), what an operator
-- sends to the national portal's support when a dossier is disputed. Bounded per dossier by
-- the trigger below, so that the database grows with the dossiers, not with the calls.
CREATE TABLE call_journal (
    id INTEGER PRIMARY KEY,
    mahoso TEXT NOT NULL,
    at INTEGER NOT NULL,          -- µs since the epoch, when the answer came
    service TEXT NOT NULL,        -- DongBoHoSoMC, CapNhatTienDoHoSoMC, TraCuuHoSo
    outcome TEXT NOT NULL,        -- ok, refused, or the kind of failure (the metrics' labels)
    error_code INTEGER,           -- the portal's error_code when it refused
    http_status INTEGER,          -- the HTTP status of an answer that was not the API's
    message TEXT NOT NULL         -- what the call carried or found, or the portal's message
);
CREATE INDEX call_journal_dossier ON call_journal(mahoso, id);

-- Ten per dossier (store::journal::KEPT_PER_DOSSIER; a unit test holds the two together).
CREATE TRIGGER call_journal_bound AFTER INSERT ON call_journal
BEGIN
    DELETE FROM call_journal WHERE mahoso = new.mahoso AND id < (
        SELECT id FROM call_journal WHERE mahoso = new.mahoso ORDER BY id DESC LIMIT 1 OFFSET 9);
END;
CREATE TRIGGER call_journal_dossier_removed AFTER DELETE ON dossier
BEGIN
    DELETE FROM call_journal WHERE mahoso = old.mahoso;
END;
