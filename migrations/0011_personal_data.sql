-- Personal data (Law 91/2025/QH15; docs/personal-data.md). When a dossier's stored payload had
-- its personal fields replaced by keyed digests (kept only while needed), or erased
-- (`dvc-sync forget`). NULL: they are in clear. Such a payload is never sent: when the
-- national portal needs it whole again, the dossier is read again from its source.
ALTER TABLE dossier ADD COLUMN minimised_at INTEGER;
-- How many dossiers still hold personal data in clear: kept like the other counts.
INSERT INTO counts (name, n) SELECT 'minimised', 0;
CREATE TRIGGER dossier_minimised_changed AFTER UPDATE OF minimised_at ON dossier
    WHEN (old.minimised_at IS NULL) != (new.minimised_at IS NULL)
BEGIN
    UPDATE counts SET n = n + (CASE WHEN new.minimised_at IS NULL THEN -1 ELSE 1 END)
        WHERE name = 'minimised';
END;
CREATE TRIGGER dossier_minimised_removed AFTER DELETE ON dossier WHEN old.minimised_at IS NOT NULL
BEGIN
    UPDATE counts SET n = n - 1 WHERE name = 'minimised';
END;
-- The minimiser's queue: finished dossiers (a final national status: 3, 7, 10) in clear and
-- verified once, by when their last state was acknowledged (the clock of
-- store.personal_data_days: the audit's later re-verifications do not restart it).
CREATE INDEX dossier_to_minimise ON dossier(acked_at)
    WHERE minimised_at IS NULL AND verified_at IS NOT NULL AND status IN (3, 7, 10);
-- A quarantined record reduced to its reason and keys (its record emptied) from then.
ALTER TABLE quarantine ADD COLUMN minimised_at INTEGER;
-- Erasures (`dvc-sync forget`): which dossier, when; never what was erased.
CREATE TABLE erasure (
    id     INTEGER PRIMARY KEY,
    mahoso TEXT NOT NULL,
    at     INTEGER NOT NULL,       -- µs since the epoch
    found  INTEGER NOT NULL        -- 1: the database held it; 0: nothing of it was here
);
