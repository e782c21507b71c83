-- Why a dossier is parked as dead: 'refused' (the national portal refused it for good) or
-- 'unmatched' (a read-back found national history that matches none of ours: nothing is resent;
-- the write stays marked uncertain, so that a retry reads the dossier back again first).
ALTER TABLE dead ADD COLUMN kind TEXT NOT NULL DEFAULT 'refused';
