-- The fingerprint of the source record a dossier's state was read from, for sources without a
-- version counter of their own (the SQL source): the same record read again is recognised as
-- seen without being normalised again. NULL for the HTTP listing, whose `version` serves.
ALTER TABLE dossier ADD COLUMN source_hash INTEGER;
-- The source's own key of the record (the SQL source's primary key), when it has one: two
-- records claiming one MaHoSo are told apart, and a quarantined record's earlier rows (without
-- a MaHoSo, or a malformed one) go when a valid version of it is read.
ALTER TABLE dossier ADD COLUMN source_id TEXT;
ALTER TABLE quarantine ADD COLUMN source_id TEXT;
CREATE INDEX quarantine_source_id ON quarantine(source_id) WHERE source_id IS NOT NULL;
