-- Counts kept by triggers, so that `status` and the metrics never scan the big tables.

CREATE TABLE counts (
    name TEXT PRIMARY KEY NOT NULL,
    n    INTEGER NOT NULL
);
INSERT INTO counts (name, n) VALUES
    ('dossier', (SELECT COUNT(*) FROM dossier)),
    ('outbox', (SELECT COUNT(*) FROM outbox)),
    ('retrying', (SELECT COUNT(*) FROM outbox WHERE attempts > 0)),
    ('dead', (SELECT COUNT(*) FROM dead)),
    ('quarantine', (SELECT COUNT(*) FROM quarantine));

CREATE TRIGGER dossier_added AFTER INSERT ON dossier BEGIN
    UPDATE counts SET n = n + 1 WHERE name = 'dossier';
END;
CREATE TRIGGER dossier_removed AFTER DELETE ON dossier BEGIN
    UPDATE counts SET n = n - 1 WHERE name = 'dossier';
END;

CREATE TRIGGER outbox_added AFTER INSERT ON outbox BEGIN
    UPDATE counts SET n = n + 1 WHERE name = 'outbox';
    UPDATE counts SET n = n + 1 WHERE name = 'retrying' AND new.attempts > 0;
END;
CREATE TRIGGER outbox_removed AFTER DELETE ON outbox BEGIN
    UPDATE counts SET n = n - 1 WHERE name = 'outbox';
    UPDATE counts SET n = n - 1 WHERE name = 'retrying' AND old.attempts > 0;
END;
CREATE TRIGGER outbox_retrying AFTER UPDATE OF attempts ON outbox
    WHEN (old.attempts > 0) != (new.attempts > 0) BEGIN
    UPDATE counts SET n = n + (CASE WHEN new.attempts > 0 THEN 1 ELSE -1 END) WHERE name = 'retrying';
END;

CREATE TRIGGER dead_added AFTER INSERT ON dead BEGIN
    UPDATE counts SET n = n + 1 WHERE name = 'dead';
END;
CREATE TRIGGER dead_removed AFTER DELETE ON dead BEGIN
    UPDATE counts SET n = n - 1 WHERE name = 'dead';
END;

CREATE TRIGGER quarantine_added AFTER INSERT ON quarantine BEGIN
    UPDATE counts SET n = n + 1 WHERE name = 'quarantine';
END;
CREATE TRIGGER quarantine_removed AFTER DELETE ON quarantine BEGIN
    UPDATE counts SET n = n - 1 WHERE name = 'quarantine';
END;

-- The provincial system's own status code of the recorded version, for `status --dossier`.
ALTER TABLE dossier ADD COLUMN local_status TEXT;
