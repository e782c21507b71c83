-- The audit: what the national portal was last found to hold of each dossier (read back with
-- TraCuuHoSo and compared with what was acknowledged).
ALTER TABLE dossier ADD COLUMN verified_at INTEGER;    -- last read-back that matched what was acknowledged
ALTER TABLE dossier ADD COLUMN audited_at INTEGER;     -- last read-back tried, whatever it found
ALTER TABLE dossier ADD COLUMN audit_finding TEXT;     -- what it found: verified, missing, status, fields, history, unmatched, failed

-- Acknowledged since their last verification (or never verified): the audit's first queue.
CREATE INDEX dossier_unverified ON dossier(acked_at)
    WHERE acked_at IS NOT NULL AND (verified_at IS NULL OR verified_at < acked_at);
-- Verified since their last acknowledgement: re-verified, oldest first, within the cycle.
CREATE INDEX dossier_verified ON dossier(verified_at)
    WHERE acked_at IS NOT NULL AND verified_at IS NOT NULL AND verified_at >= acked_at;

-- How many dossiers are verified since their last acknowledgement, kept like the others.
INSERT INTO counts (name, n) VALUES ('verified', 0);
CREATE TRIGGER dossier_verified_changed AFTER UPDATE OF verified_at, acked_at ON dossier
    WHEN (old.acked_at IS NOT NULL AND old.verified_at IS NOT NULL AND old.verified_at >= old.acked_at)
      != (new.acked_at IS NOT NULL AND new.verified_at IS NOT NULL AND new.verified_at >= new.acked_at)
BEGIN
    UPDATE counts SET n = n + (CASE WHEN new.verified_at >= new.acked_at THEN 1 ELSE -1 END)
        WHERE name = 'verified';
END;
CREATE TRIGGER dossier_verified_removed AFTER DELETE ON dossier
    WHEN old.acked_at IS NOT NULL AND old.verified_at IS NOT NULL AND old.verified_at >= old.acked_at
BEGIN
    UPDATE counts SET n = n - 1 WHERE name = 'verified';
END;
