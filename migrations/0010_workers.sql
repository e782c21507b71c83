-- What the running daemon last recorded of each of its workers (the engine's loops: each
-- source's poller, the pusher, the reconciler, the audit, the heartbeat), for `status`.
-- Rewritten with every heartbeat.
CREATE TABLE worker (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,          -- busy, idle, failing, stopped
    since INTEGER NOT NULL,       -- µs since the epoch, when it entered this state
    last_error TEXT,              -- the last failure, kept after a recovery
    failures INTEGER NOT NULL     -- failures in a row, 0 after a success
);
