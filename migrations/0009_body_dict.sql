-- Dossier bodies are compressed (src/store/body.rs): the dictionaries they are compressed
-- with, trained from the province's own first bodies. Never updated or deleted: a body names
-- the dictionary it needs. Bodies written as text before stay readable as they are.
CREATE TABLE body_dict (
    id         INTEGER PRIMARY KEY NOT NULL,  -- 1 to 255, as a packed body names it
    dict       BLOB NOT NULL,                 -- a zstd dictionary
    created_at INTEGER NOT NULL,              -- Unix seconds
    samples    INTEGER NOT NULL               -- bodies it was trained from
);
