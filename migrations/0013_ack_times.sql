-- When the national portal first acknowledged each step of a dossier, so that lateness can be
-- told apart: late at the source, or late because the step reached the portal after its due
-- time (`report`, the page). Dossiers acknowledged before this column existed have NULL: their
-- cause is judged only from the source's own times.
-- The first acknowledgement of a payload holding NgayTiepNhan (the receipt), microseconds UTC.
ALTER TABLE dossier ADD COLUMN received_acked_at INTEGER;
-- The first acknowledgement of a history entry in each status: {"9": micros, ...}.
ALTER TABLE dossier ADD COLUMN status_acked TEXT;
-- 1 when the two columns above are complete for the dossier: a dossier the portal held before
-- they existed has 0 (a step missing from status_acked is then unknown, not pending).
ALTER TABLE dossier ADD COLUMN ack_times_known INTEGER NOT NULL DEFAULT 1;
UPDATE dossier SET ack_times_known = 0 WHERE national_exists = 1;
-- Steps that happened at the source before this moment were read as a backfill (or sent by
-- whatever synchronised them before): when they reached the portal first is not known, and no
-- lateness is put down to synchronisation for them.
INSERT OR IGNORE INTO meta (key, value)
    VALUES ('ack_times_since', CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
