//! What more than one part reads of the daemon's state: the cursors (written by the poller,
//! shown by `status`), and the dossier counts and coverage (exported by the engine, shown by
//! `status`, the demo and the reconciler's report). Here, so that those parts need not know
//! each other.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::{meta_get, meta_set};
use crate::domain::cursor::Cursor;

pub(crate) const HEAD: &str = "head_cursor";
pub(crate) const TAIL: &str = "tail_cursor";
/// The first backfill's position in the source's scan, and where the change listing takes
/// over once it is done (see the poller's first backfill).
pub(crate) const BACKFILL: &str = "backfill_cursor";
pub(crate) const BACKFILL_THEN: &str = "backfill_then_head";

/// The meta key of `base` (a cursor, a poll note) for the source `name`: the bare key for the
/// source `provincial`, as every database kept it before sources had names.
pub(crate) fn source_key(name: &str, base: &str) -> String {
    if name == crate::domain::ownership::DEFAULT_SOURCE { base.to_owned() } else { format!("{base}:{name}") }
}

/// The cursor kept under `key`, if any.
pub(crate) fn read_cursor(conn: &Connection, key: &str) -> rusqlite::Result<Option<Cursor>> {
    Ok(meta_get(conn, key)?.and_then(|v| {
        let (ts, id) = v.split_once('|')?;
        Some(Cursor { updated_at: Timestamp::from_microsecond(ts.parse().ok()?).ok()?, id: id.to_owned() })
    }))
}

pub(crate) fn write_cursor(conn: &Connection, key: &str, cursor: &Cursor) -> rusqlite::Result<()> {
    meta_set(conn, key, Some(&format!("{}|{}", cursor.updated_at.as_microsecond(), cursor.id)))
}

/// Dossiers by sync state (`status --json`'s `dossiers`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dossiers {
    pub total: u64,
    pub in_sync: u64,
    pub pending: u64,
    pub retrying: u64,
    pub dead: u64,
    pub quarantined: u64,
}

/// One of the trigger-kept counts (0 when absent).
pub(crate) fn count(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT n FROM counts WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// When the oldest row still in the outbox was enqueued, in µs (an index's first entry).
pub(crate) fn oldest_enqueued(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(enqueued_at) FROM outbox")?.query_row([], |r| r.get(0))
}

/// The dossier counts, from the trigger-kept counts and the (small) quarantine table.
pub fn dossier_counts(conn: &Connection) -> rusqlite::Result<Dossiers> {
    let rows = count(conn, "dossier")?;
    let outbox = count(conn, "outbox")?;
    let retrying = count(conn, "retrying")?;
    let dead = count(conn, "dead")?;
    let quarantined = count(conn, "quarantine")?;
    // Quarantined records that never had a valid version (no dossier row), and quarantined
    // newer versions of dossiers that are otherwise in sync.
    let (without_row, parked_in_sync): (i64, i64) = conn.prepare_cached(
        "SELECT
             (SELECT COUNT(*) FROM quarantine q WHERE NOT EXISTS (SELECT 1 FROM dossier d WHERE d.mahoso = q.key)),
             (SELECT COUNT(*) FROM quarantine q JOIN dossier d ON d.mahoso = q.key
                  WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mahoso = q.key)
                    AND NOT EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = q.key))",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Dossiers {
        total: rows + without_row.max(0) as u64,
        in_sync: rows
            .saturating_sub(outbox)
            .saturating_sub(dead)
            .saturating_sub(parked_in_sync.max(0) as u64),
        pending: outbox.saturating_sub(retrying),
        retrying,
        dead,
        quarantined,
    })
}

/// in_sync / (total − quarantined) × 100, and 100 when there is nothing valid to cover.
pub fn coverage(d: &Dossiers) -> f64 {
    percent_of_valid(d.in_sync, d)
}

/// `n` as a share of the valid dossiers (total − quarantined), in percent; 100 when there is
/// nothing valid.
fn percent_of_valid(n: u64, d: &Dossiers) -> f64 {
    let valid = d.total.saturating_sub(d.quarantined);
    if valid == 0 { 100.0 } else { n as f64 * 100.0 / valid as f64 }
}

/// Meta keys of the audit's counters and its last completed pass.
pub(crate) const AUDIT_DRIFT_FOUND: &str = "audit_drift_found";
pub(crate) const AUDIT_DRIFT_REPAIRED: &str = "audit_drift_repaired";
pub(crate) const AUDIT_LAST_PASS_AT: &str = "audit_last_pass_at";
/// Set when drift is found (by the audit, or by the pusher finding a dossier unknown): every
/// dossier verified before this time is due again.
pub(crate) const AUDIT_SWEEP_SINCE: &str = "audit_sweep_since";

/// Starts a sweep at `now`, or moves the one under way to `now`: everything verified before it
/// is due for the audit again. Drift rarely comes alone (a restore from backup, a migration).
pub(crate) fn start_sweep(tx: &Connection, now: i64) -> rusqlite::Result<()> {
    meta_set(tx, AUDIT_SWEEP_SINCE, Some(&now.to_string()))
}

/// `status --json`'s `audit`: what the national portal was last found to hold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Audit {
    /// verified / (total − quarantined) × 100: valid dossiers read back and found as
    /// acknowledged since their last acknowledgement (100 when there is nothing valid).
    pub verified_percent: f64,
    /// How long ago the least recently verified dossier was last known good at the national
    /// side: its verification, or its acknowledgement when not verified since.
    pub oldest_verified_age_seconds: f64,
    /// Dossiers found drifted (missing, changed, history lost or not ours), ever.
    pub drift_found: u64,
    /// Drifted dossiers verified again after their repair, ever.
    pub drift_repaired: u64,
    /// When the audit last caught up with everything due (or a `dvc-sync audit` pass ended).
    pub last_pass_at: Option<String>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            verified_percent: 100.0,
            oldest_verified_age_seconds: 0.0,
            drift_found: 0,
            drift_repaired: 0,
            last_pass_at: None,
        }
    }
}

/// The audit's state, from the trigger-kept count and two partial indexes (no scan); `d` are
/// the dossier counts, read once by the caller.
pub fn audit_state(conn: &Connection, now_us: i64, d: &Dossiers) -> rusqlite::Result<Audit> {
    let verified = count(conn, "verified")?;
    let (unverified, oldest_verified): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT
             (SELECT MIN(acked_at) FROM dossier
                  WHERE acked_at IS NOT NULL AND (verified_at IS NULL OR verified_at < acked_at)),
             (SELECT MIN(verified_at) FROM dossier
                  WHERE acked_at IS NOT NULL AND verified_at IS NOT NULL AND verified_at >= acked_at)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let oldest = match (unverified, oldest_verified) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let number = |key: &str| -> rusqlite::Result<u64> {
        Ok(meta_get(conn, key)?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(0) as u64)
    };
    Ok(Audit {
        // Capped: a verified dossier may since have been quarantined in a newer version.
        verified_percent: percent_of_valid(verified.min(d.total.saturating_sub(d.quarantined)), d),
        oldest_verified_age_seconds: oldest.map_or(0.0, |at| (now_us - at).max(0) as f64 / 1e6),
        drift_found: number(AUDIT_DRIFT_FOUND)?,
        drift_repaired: number(AUDIT_DRIFT_REPAIRED)?,
        last_pass_at: meta_get(conn, AUDIT_LAST_PASS_AT)?
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|us| Timestamp::from_microsecond(us).ok())
            .map(|t| t.to_string()),
    })
}
