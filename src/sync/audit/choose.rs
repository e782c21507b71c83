//! Which dossiers the audit reads back, in which order: only dossiers in sync (nothing waiting,
//! nothing parked, no write in flight); alternately the one acknowledged most recently and not
//! verified since (a loss after a restore hits recent work first) and the one known good the
//! longest ago (its last verification, or its acknowledgement).

use rusqlite::params;

use super::FAILED_RETRY;

/// A dossier to read back, as it stood when chosen.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) mahoso: String,
    pub(crate) acked_at: i64,
    pub(crate) acked_hash: i64,
    pub(crate) acked_history: i64,
    /// The audit's last finding.
    pub(crate) finding: Option<String>,
}

/// In sync: acknowledged as it is, nothing waiting, parked or in flight.
const IN_SYNC: &str =
    "d.national_exists = 1 AND d.acked_hash = d.payload_hash AND d.acked_history = d.history_len
     AND d.inflight = 0 AND d.needs_catalogue = 0
     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mahoso = d.mahoso)
     AND NOT EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = d.mahoso)
     AND (d.audit_finding IS NOT 'failed' OR d.audited_at <= ?1)";
const COLUMNS: &str = "d.mahoso, d.acked_at, d.acked_hash, d.acked_history, d.audit_finding";
const UNVERIFIED: &str = "d.acked_at IS NOT NULL AND (d.verified_at IS NULL OR d.verified_at < d.acked_at)";
const VERIFIED: &str = "d.acked_at IS NOT NULL AND d.verified_at IS NOT NULL AND d.verified_at >= d.acked_at";

fn candidates(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Vec<(Candidate, i64)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            Candidate {
                mahoso: r.get(0)?,
                acked_at: r.get(1)?,
                acked_hash: r.get(2)?,
                acked_history: r.get(3)?,
                finding: r.get(4)?,
            },
            r.get(5)?,
        ))
    })?;
    rows.collect()
}

/// Up to `k` dossiers due for a read-back: `newest` of them acknowledged most recently and
/// not verified since, the rest known good the longest ago (unverified since their
/// acknowledgement, or verified before `due_before`).
pub(crate) fn pick(
    conn: &rusqlite::Connection,
    now: i64,
    due_before: i64,
    k: usize,
    newest: usize,
) -> rusqlite::Result<Vec<Candidate>> {
    let failed_since = now - FAILED_RETRY.as_micros() as i64;
    let limit = k as i64;
    let recent = candidates(
        conn,
        &format!(
            "SELECT {COLUMNS}, d.acked_at FROM dossier d WHERE {UNVERIFIED} AND {IN_SYNC} ORDER BY d.acked_at DESC LIMIT ?2"
        ),
        params![failed_since, limit],
    )?;
    let mut oldest = candidates(
        conn,
        &format!(
            "SELECT {COLUMNS}, d.acked_at FROM dossier d WHERE {UNVERIFIED} AND {IN_SYNC} ORDER BY d.acked_at LIMIT ?2"
        ),
        params![failed_since, limit],
    )?;
    oldest.extend(candidates(
        conn,
        &format!(
            "SELECT {COLUMNS}, d.verified_at FROM dossier d WHERE {VERIFIED} AND d.verified_at < ?3 AND {IN_SYNC}
             ORDER BY d.verified_at LIMIT ?2"
        ),
        params![failed_since, limit, due_before],
    )?);
    oldest.sort_by_key(|(_, known_good)| *known_good);
    let mut out: Vec<Candidate> = Vec::with_capacity(k);
    let take = |out: &mut Vec<Candidate>, from: &[(Candidate, i64)], until: usize| {
        for (c, _) in from {
            if out.len() >= until {
                break;
            }
            if !out.iter().any(|o| o.mahoso == c.mahoso) {
                out.push(c.clone());
            }
        }
    };
    take(&mut out, &recent, newest.min(k));
    take(&mut out, &oldest, k);
    take(&mut out, &recent, k);
    Ok(out)
}

/// Every synchronized dossier after `after`, by MaHoSo (a keyset scan for `--all`).
pub(crate) fn scan(
    conn: &rusqlite::Connection,
    now: i64,
    after: &str,
    k: usize,
) -> rusqlite::Result<Vec<Candidate>> {
    let failed_since = now - FAILED_RETRY.as_micros() as i64;
    Ok(candidates(
        conn,
        &format!(
            "SELECT {COLUMNS}, 0 FROM dossier d WHERE d.mahoso > ?3 AND d.acked_at IS NOT NULL AND {IN_SYNC}
             ORDER BY d.mahoso LIMIT ?2"
        ),
        params![failed_since, k as i64, after],
    )?
    .into_iter()
    .map(|(c, _)| c)
    .collect())
}

/// Whether pushes are due: the audit waits while they are.
pub(crate) fn pushes_due(conn: &rusqlite::Connection, now: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE next_attempt_at <= ?1)")?
        .query_row([now], |r| r.get(0))
}
