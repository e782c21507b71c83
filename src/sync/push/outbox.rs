//! Every statement the pusher runs: loading the due dossiers, the in-flight marks written
//! before a call leaves, and what a round's answers are recorded as (acknowledgements,
//! read-backs, fates, the outbox rows that leave).

use std::time::Duration;

use rusqlite::{Connection, params};
use serde_json::value::RawValue;

use super::work::{Fate, InFlight, Work};
use crate::{
    domain::stable_hash,
    store::{Store, StoreError},
    sync::{answer::TransientKind, fresh::FreshBodies},
};

/// The bodies of a due dossier as stored, when the poller's were not in memory: decoded once
/// the connection is released.
type Stored = (rusqlite::types::Value, rusqlite::types::Value);

/// The due dossiers, oldest first, at most `limit`: their state from the database, their
/// bodies from memory where the poller just left them, else read and decoded from the
/// database. A dossier whose stored body cannot be read is loaded with its fate decided:
/// parked, with the reason.
pub(super) fn load_due(
    store: &Store,
    fresh: &FreshBodies,
    now: i64,
    limit: usize,
) -> Result<Vec<Work>, StoreError> {
    let loaded: Vec<(Work, Option<Stored>)> = store.read(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT d.mahoso, d.version, d.updated_at, d.payload_hash, d.status, d.procedure,
                    d.needs_catalogue, d.national_exists, d.acked_hash, d.acked_history,
                    d.inflight, o.attempts, b.payload, b.history, d.minimised_at IS NOT NULL, d.source
             FROM outbox o JOIN dossier d ON d.mahoso = o.mahoso JOIN body b ON b.mahoso = o.mahoso
             WHERE o.next_attempt_at <= ?1
             ORDER BY o.next_attempt_at
             LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            let mut work = Work {
                mahoso: r.get(0)?,
                version: r.get(1)?,
                source: r.get(15)?,
                updated_at: r.get(2)?,
                payload: RawValue::NULL.to_owned(),
                payload_hash: r.get(3)?,
                status: r.get(4)?,
                procedure: r.get(5)?,
                needs_catalogue: r.get(6)?,
                history: Vec::new(),
                national_exists: r.get(7)?,
                acked_hash: r.get(8)?,
                acked_history: r.get::<_, i64>(9)? as usize,
                inflight: InFlight::from_db(r.get(10)?),
                unresolved: InFlight::from_db(r.get(10)?),
                attempts: r.get(11)?,
                minimised: r.get(14)?,
                fate: None,
                settled: false,
            };
            let stored = match fresh.take(&work.mahoso, work.version, work.payload_hash) {
                Some(body) => {
                    work.payload = body.payload;
                    work.history = body.history;
                    None
                }
                None => Some((r.get(12)?, r.get(13)?)),
            };
            Ok((work, stored))
        })?;
        rows.collect()
    })?;
    Ok(loaded
        .into_iter()
        .map(|(mut work, stored)| {
            if let Some(stored) = stored
                && let Err(why) = decode(store, &mut work, &stored)
            {
                work.fate = Some(Fate::Dead {
                    code: None,
                    reason: format!(
                        "the stored body cannot be read ({why}): nothing is sent until the source's next version of \
                         this dossier replaces it"
                    ),
                });
            }
            // A minimised payload is never sent, nor read back against: its source first.
            if work.fate.is_none() && work.minimised && work.payload_wanted() {
                work.fate = Some(Fate::WaitForSource);
            }
            work
        })
        .collect())
}

/// Fills a dossier's payload and history from their stored form.
fn decode(store: &Store, work: &mut Work, (payload, history): &Stored) -> Result<(), String> {
    let text = |v: &rusqlite::types::Value| {
        store.body_text(v.into()).map_err(|e| e.to_string())?.ok_or_else(|| "it is empty".to_owned())
    };
    work.payload = RawValue::from_string(text(payload)?).map_err(|e| format!("payload: {e}"))?;
    work.history = serde_json::from_str(&text(history)?).map_err(|e| format!("history: {e}"))?;
    Ok(())
}

/// Durably marks `items` as having a write of `kind` in flight, before it leaves.
pub(super) fn mark_inflight(
    store: &Store,
    work: &mut [Work],
    items: &[usize],
    kind: InFlight,
) -> Result<(), StoreError> {
    store.write(|tx| {
        let mut stmt =
            tx.prepare_cached("UPDATE dossier SET inflight = MAX(inflight, ?2) WHERE mahoso = ?1")?;
        for &i in items {
            stmt.execute(params![work[i].mahoso, kind.db()])?;
        }
        Ok(())
    })?;
    for &i in items {
        work[i].inflight = work[i].inflight.max(kind);
    }
    Ok(())
}

/// Records what the portal acknowledged of `items`: their payload and the history entries
/// it holds (one statement for both phases: a dossier only gets history once its payload is
/// acknowledged, so the payload's hash and status are current in either), with the in-flight
/// mark each has now (a payload acknowledged with history still to send is marked for it in
/// the same statement, before the history call leaves), and the first acknowledgement times.
pub(super) fn save_acks(tx: &Connection, work: &[Work], items: &[usize], now: i64) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "UPDATE dossier SET national_exists = 1, acked_hash = ?2, acked_status = ?3, acked_history = ?4,
             acked_at = ?5, inflight = ?6, {ACK_TIMES} WHERE mahoso = ?1"
    ))?;
    for &i in items {
        let w = &work[i];
        let (received, statuses) = ack_times(w, now);
        stmt.execute(params![
            w.mahoso,
            w.payload_hash,
            w.status,
            w.acked_history as i64,
            now,
            w.inflight.db(),
            received,
            statuses
        ])?;
    }
    Ok(())
}

/// The first acknowledgement of the receipt (a payload with NgayTiepNhan, `?7`) and of each
/// status in the acknowledged history (`?8`, `{"9": micros}`): what tells lateness at the
/// source from lateness by synchronisation (`report`). Earlier times are kept (`COALESCE`, and
/// `json_patch` with the stored object winning).
const ACK_TIMES: &str = "received_acked_at = COALESCE(received_acked_at, ?7),
             status_acked = CASE WHEN ?8 IS NULL THEN status_acked
                                 ELSE json_patch(?8, COALESCE(status_acked, '{}')) END";

/// `?7` and `?8` of [`ACK_TIMES`] for `w` acknowledged at `now`.
fn ack_times(w: &Work, now: i64) -> (Option<i64>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Intake<'a> {
        #[serde(rename = "NgayTiepNhan", borrow, default)]
        received: Option<&'a str>,
    }
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(rename = "TrangThai", borrow, default)]
        status: Option<&'a str>,
    }
    let received = serde_json::from_str::<Intake<'_>>(w.payload.get())
        .ok()
        .and_then(|i| i.received)
        .is_some_and(|r| !r.is_empty());
    let statuses: std::collections::BTreeSet<&str> = w.history[..w.acked_history.min(w.history.len())]
        .iter()
        .filter_map(|e| serde_json::from_str::<Entry<'_>>(e.get()).ok()?.status)
        .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let statuses = (!statuses.is_empty()).then(|| {
        let times: serde_json::Map<String, serde_json::Value> =
            statuses.into_iter().map(|s| (s.to_owned(), now.into())).collect();
        serde_json::Value::Object(times).to_string()
    });
    (received.then_some(now), statuses)
}

/// Records what read-backs found. A dossier found is as good as acknowledged as of now (the
/// audit dates what it verifies from it), its steps too, if not earlier.
pub(super) fn save_read_backs<'a>(
    tx: &Connection,
    work: impl IntoIterator<Item = &'a Work>,
    now: i64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "UPDATE dossier SET national_exists = ?2, acked_hash = ?3, acked_history = ?4, inflight = ?5,
             acked_at = CASE WHEN ?2 THEN ?6 ELSE acked_at END,
             acked_status = CASE WHEN ?3 = payload_hash THEN status ELSE acked_status END,
             {ACK_TIMES}
         WHERE mahoso = ?1"
    ))?;
    for w in work {
        let (received, statuses) = if w.national_exists { ack_times(w, now) } else { (None, None) };
        stmt.execute(params![
            w.mahoso,
            w.national_exists,
            w.acked_hash,
            w.acked_history as i64,
            w.inflight.db(),
            now,
            received,
            statuses
        ])?;
    }
    Ok(())
}

/// Records that the national portal does not hold a dossier (any more): created again, with
/// its whole history, by the next write.
pub(super) fn forget_national(tx: &Connection, mahoso: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE dossier SET national_exists = 0, acked_hash = NULL, acked_history = 0 WHERE mahoso = ?1",
    )?
    .execute([mahoso])?;
    Ok(())
}

/// As [`forget_national`], for a dossier whose history the portal refused as unknown: no
/// write of it is in flight any more.
pub(super) fn forget_national_settled(tx: &Connection, mahoso: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE dossier SET national_exists = 0, acked_hash = NULL, acked_history = 0, inflight = 0 WHERE mahoso = ?1",
    )?
    .execute([mahoso])?;
    Ok(())
}

/// Records that the portal holds a dossier we tried to create, what of it not known yet: it
/// is read back before anything is written.
pub(super) fn mark_existing(tx: &Connection, mahoso: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE dossier SET national_exists = 1, inflight = ?2 WHERE mahoso = ?1")?
        .execute(params![mahoso, InFlight::History.db()])?;
    Ok(())
}

/// Records a catalogue fill of the dossiers `filled`, unless a newer version came meanwhile;
/// returns those that changed under the round.
pub(super) fn save_catalogue_fills(
    tx: &Connection,
    work: &[Work],
    filled: &[usize],
) -> rusqlite::Result<Vec<usize>> {
    let mut dossier = tx.prepare_cached(
        "UPDATE dossier SET payload_hash = ?3, needs_catalogue = 0
         WHERE mahoso = ?1 AND version = ?2 AND source = ?4 AND minimised_at IS NULL",
    )?;
    let mut body = tx.prepare_cached("UPDATE body SET payload = body_pack(?2) WHERE mahoso = ?1")?;
    let mut stale = Vec::new();
    for &i in filled {
        let w = &work[i];
        if dossier.execute(params![w.mahoso, w.version, w.payload_hash, w.source])? == 0 {
            stale.push(i);
        } else {
            body.execute(params![w.mahoso, w.payload.get()])?;
        }
    }
    Ok(stale)
}

/// The backoff of a dossier's failed pushes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    /// Seeds the jitter, mixed with each dossier's MaHoSo.
    pub(crate) seed: u64,
}

impl RetryPolicy {
    /// The wait before a dossier's next attempt after a failure.
    fn delay(&self, w: &Work, t: &super::super::answer::Transient, attempts: i64) -> Duration {
        if t.kind == TransientKind::RateLimited {
            // Not the dossier's trouble: wait as long as the portal asked, no longer.
            return t.retry_after.unwrap_or(Duration::from_secs(1));
        }
        let seed = self.seed ^ stable_hash(w.mahoso.as_bytes()) as u64;
        let delay = crate::sync::retry_delay(attempts, self.initial, self.max, seed);
        t.retry_after.map_or(delay, |after| delay.max(after))
    }
}

/// Commits the fates of `items` (in the caller's transaction).
pub(super) fn settle_fates(
    tx: &Connection,
    work: &[Work],
    items: &[usize],
    now: i64,
    retry: &RetryPolicy,
) -> rusqlite::Result<()> {
    for w in items.iter().map(|&i| &work[i]).filter(|w| !w.settled) {
        match &w.fate {
            Some(Fate::Dead { code, reason }) => park(tx, w, *code, reason, now)?,
            Some(Fate::Retry(t)) if t.not_sent() => {
                // The daemon stopped before the call: due again at once, no attempt counted.
                tx.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE mahoso = ?1")?
                    .execute(params![w.mahoso, now])?;
                tx.prepare_cached("UPDATE dossier SET inflight = ?2 WHERE mahoso = ?1")?
                    .execute(params![w.mahoso, w.unresolved.db()])?;
            }
            Some(Fate::Retry(t)) => {
                let attempts = w.attempts + 1;
                let next = now + retry.delay(w, t, attempts).as_micros() as i64;
                tx.prepare_cached(
                    "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE mahoso = ?1",
                )?
                .execute(params![w.mahoso, attempts, next, t.reason])?;
                // Keep the in-flight mark where this round's write may have been applied, and
                // in any case whatever earlier uncertainty is still unresolved.
                let inflight = if t.maybe_applied { w.inflight.max(w.unresolved) } else { w.unresolved };
                tx.prepare_cached("UPDATE dossier SET inflight = ?2 WHERE mahoso = ?1")?
                    .execute(params![w.mahoso, inflight.db()])?;
            }
            Some(Fate::Unmatched { reason }) => {
                // Parked like a refusal, but the write stays uncertain (`inflight` untouched): a
                // retry, or a newer provincial version, reads the dossier back again first.
                tx.prepare_cached(
                    "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason, kind)
                     VALUES (?1, ?2, ?3, NULL, ?4, 'unmatched')
                     ON CONFLICT(mahoso) DO UPDATE SET dead_at = excluded.dead_at, attempts = excluded.attempts,
                         error_code = NULL, reason = excluded.reason, kind = excluded.kind",
                )?
                .execute(params![w.mahoso, now, w.attempts + 1, reason])?;
                tx.prepare_cached("DELETE FROM outbox WHERE mahoso = ?1")?.execute([&w.mahoso])?;
            }
            // Waiting for its source: parked there, unless the database says otherwise now (then
            // as Later).
            Some(Fate::WaitForSource) if crate::sync::minimise::wait_for_source(tx, &w.mahoso, now)? => {}
            Some(Fate::Later | Fate::WaitForSource) => {
                tx.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE mahoso = ?1")?
                    .execute(params![w.mahoso, now])?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Parks a refused dossier. Only the version that was refused is parked; a newer one gets its
/// chance.
fn park(tx: &Connection, w: &Work, code: Option<i64>, reason: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE dossier SET inflight = 0 WHERE mahoso = ?1 AND version = ?2 AND source = ?3")?
        .execute(params![w.mahoso, w.version, w.source])?;
    let parked = tx
        .prepare_cached(
            "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason)
             SELECT ?1, ?2, ?3, ?4, ?5
              WHERE EXISTS (SELECT 1 FROM dossier WHERE mahoso = ?1 AND version = ?6 AND source = ?7)
             ON CONFLICT(mahoso) DO UPDATE SET dead_at = excluded.dead_at, attempts = excluded.attempts,
                 error_code = excluded.error_code, reason = excluded.reason",
        )?
        .execute(params![w.mahoso, now, w.attempts + 1, code, reason, w.version, w.source])?;
    if parked > 0 {
        tx.prepare_cached("DELETE FROM outbox WHERE mahoso = ?1")?.execute([&w.mahoso])?;
    } else {
        tx.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE mahoso = ?1")?
            .execute(params![w.mahoso, now])?;
    }
    Ok(())
}

/// Ends a round for dossiers without a fate: in sync leaves the outbox; anything left (a
/// newer version, more history) stays due at once. Returns the lag of each that left.
pub(super) fn finish(tx: &Connection, work: &[Work], now: i64) -> rusqlite::Result<Vec<i64>> {
    let mut lags = Vec::new();
    let mut done = tx.prepare_cached(
        "DELETE FROM outbox WHERE mahoso = ?1 AND EXISTS (
             SELECT 1 FROM dossier d WHERE d.mahoso = ?1 AND d.acked_hash = d.payload_hash
                 AND d.acked_history = d.history_len AND d.inflight = 0 AND d.needs_catalogue = 0)",
    )?;
    let mut again = tx.prepare_cached(
        "UPDATE outbox SET attempts = 0, next_attempt_at = ?2, last_error = NULL WHERE mahoso = ?1",
    )?;
    for w in work.iter().filter(|w| w.open()) {
        if done.execute([&w.mahoso])? > 0 {
            lags.push(now - w.updated_at);
        } else {
            again.execute(params![w.mahoso, now])?;
        }
    }
    Ok(lags)
}

/// The time of the next due outbox row, in µs.
pub(super) fn next_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(next_attempt_at) FROM outbox")?.query_row([], |r| r.get(0))
}
