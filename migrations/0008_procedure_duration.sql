-- The procedure's maximum processing time as LayThuTuc gives it, for the 766 on-time figure
-- of dossiers without NgayHenTra (`dvc-sync report`). Every cached answer is asked again, so
-- that the durations of procedures known before this migration are fetched too.
ALTER TABLE procedure ADD COLUMN duration REAL;
ALTER TABLE procedure ADD COLUMN duration_unit TEXT;  -- hours, days, working_days
UPDATE procedure SET fetched_at = 0;
