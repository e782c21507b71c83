-- Several named sources (a merged province: its predecessors' systems side by side). Every
-- dossier belongs to one source, `provincial` for every dossier recorded before sources had
-- names (a configuration with only [provincial] is that one source).
ALTER TABLE dossier ADD COLUMN source TEXT NOT NULL DEFAULT 'provincial';
-- The source it moved from (sources.<name>.supersedes), if it did.
ALTER TABLE dossier ADD COLUMN moved_from TEXT;
-- Versions of the old source's copy read after the move, ignored: how many, and the last one
-- (its version, and its fingerprint for sources without a version counter), so that reading it
-- again is recognised without counting it twice.
ALTER TABLE dossier ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dossier ADD COLUMN ignored_version INTEGER;
ALTER TABLE dossier ADD COLUMN ignored_hash INTEGER;
-- The source a quarantined record was read from.
ALTER TABLE quarantine ADD COLUMN source TEXT NOT NULL DEFAULT 'provincial';
