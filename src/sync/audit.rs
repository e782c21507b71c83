//! The audit: reads synchronized dossiers back from the national portal (TraCuuHoSo) and
//! compares them with what the portal acknowledged, because an acknowledgement is the portal's
//! word at one moment and portals lose data (a restore from backup, a migration, a dossier
//! removed by hand).
//!
//! **What it reads, in which order.** Only dossiers in sync (nothing waiting, nothing parked,
//! no write in flight), at most `national.audit_per_second` look-ups a second, and never while
//! pushes are due: the audit yields to them, and a 429 or an outage slows it like any call (it
//! goes through the pusher's limiter). Picks alternate between the dossier acknowledged most
//! recently and not verified since (a loss after a restore hits recent work first) and the one
//! known good the longest ago (its last verification, or its acknowledgement), so that every
//! dossier is verified within `national.audit_cycle_days`: a verified dossier is due again
//! after a day, or half the cycle if that is shorter, as far as the rate allows. Drift found
//! anywhere starts a sweep: everything verified before it is due again at once.
//!
//! **What it does with drift: through the engine, never around it.** The dossier's recorded
//! acknowledgement is corrected to what the read-back proves, and the dossier goes back into the
//! outbox: the pusher then does what it always does. Missing nationally: created again with its
//! whole history. Its status or fields differ: sent again as an update. Fewer history entries
//! than acknowledged (by the one identity of an entry, `domain::entry`): the rest is sent.
//! Entries nationally that match none of ours: parked (dead, kind `unmatched`) with the reason,
//! nothing resent. Each correction is one transaction, applied only if nothing was written to
//! the national portal for the dossier during the look-up (the same acknowledgement, nothing in
//! flight, not in the pusher's current round); a newer provincial version meanwhile does not
//! void it: what the read-back proves of the acknowledged state still holds.
//!
//! Fields are compared by meaning, as entries are: text in NFC with whitespace runs as one
//! space, times as instants, codes as numbers; a field the answer does not carry is not
//! compared (gateways drop optional fields), nor is anything the answer adds.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use backon::BackoffBuilder;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Inner,
    answer::{Answer, Transient, TransientKind},
    journal,
    ports::{Clock, Sink, Source},
    pusher,
};
use crate::{
    domain::entry,
    metrics as m,
    store::{
        StoreError, meta_add, meta_get, meta_set,
        state::{AUDIT_DRIFT_FOUND, AUDIT_DRIFT_REPAIRED, AUDIT_LAST_PASS_AT, audit_state, dossier_counts},
    },
};

pub(crate) const REQUESTED: &str = "audit_requested";
pub(crate) const LAST: &str = "audit_last";
pub(crate) const LAST_AT: &str = "audit_last_at";
/// Set when drift is found (by the audit, or by the pusher finding a dossier unknown): every
/// dossier verified before this time is due again.
pub(crate) const SWEEP_SINCE: &str = "audit_sweep_since";

/// A look-up that found no usable answer is not tried again for this long.
const FAILED_RETRY: Duration = Duration::from_secs(3600);
/// A verified dossier is due again after this long (or half the cycle, if shorter).
const REVERIFY_AFTER: Duration = Duration::from_secs(86_400);
/// Drifted dossiers named in a report, at most.
const REPORT_NAMES: usize = 100;

/// Which dossiers a pass reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditScope {
    /// The next due share: what is due, and at least one day's share of the cycle.
    Due,
    /// Every synchronized dossier.
    All,
}

/// What `dvc-sync audit` asks of the running daemon (kept in meta under [`REQUESTED`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub scope: AuditScope,
    pub per_second: Option<f64>,
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub started_at: String,
    pub finished_at: String,
    pub scope: String,
    pub per_second: f64,
    /// Dossiers read back.
    pub audited: u64,
    /// Found as acknowledged.
    pub verified: u64,
    /// Dossiers found drifted.
    pub drift_found: u64,
    /// Drift by kind (a dossier may show more than one).
    pub drift: BTreeMap<String, u64>,
    /// Drifted dossiers put back into the outbox (the daemon sends them).
    pub repairs_enqueued: u64,
    /// Drifted dossiers parked: national history that matches none of ours.
    pub parked: u64,
    /// Look-ups without a usable answer (tried again in an hour).
    pub failed: u64,
    /// Dossiers that moved on during their look-up (left to the next pass).
    pub changed: u64,
    pub verified_percent: f64,
    /// Up to 100 drifted dossiers.
    pub drifted: Vec<String>,
}

impl AuditReport {
    fn count(&mut self, finding: &Finding, mahoso: &str) {
        self.audited += 1;
        match finding {
            Finding::Verified => self.verified += 1,
            Finding::Failed(_) => self.failed += 1,
            drift => {
                self.drift_found += 1;
                for kind in drift.kinds() {
                    *self.drift.entry(kind.to_owned()).or_default() += 1;
                }
                if matches!(drift, Finding::Unmatched(_)) {
                    self.parked += 1;
                } else {
                    self.repairs_enqueued += 1;
                }
                if self.drifted.len() < REPORT_NAMES {
                    self.drifted.push(mahoso.to_owned());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// What a read-back showed of one dossier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finding {
    /// The national copy holds what was acknowledged.
    Verified,
    /// The national portal does not know the dossier.
    Missing,
    /// The national copy differs: its status, other fields (by name), or it holds only the
    /// first `history` of our entries.
    Differs { status: bool, fields: Vec<String>, history: Option<usize> },
    /// National history entries that match none of ours: nothing can be resent safely.
    Unmatched(String),
    /// No usable answer (a refusal, an answer without a result or without history).
    Failed(String),
}

impl Finding {
    /// The drift kinds, for metrics and reports (bounded labels).
    pub(crate) fn kinds(&self) -> Vec<&'static str> {
        match self {
            Finding::Missing => vec!["missing"],
            Finding::Unmatched(_) => vec!["unmatched"],
            Finding::Differs { status, fields, history } => {
                let mut kinds = Vec::new();
                if *status {
                    kinds.push("status");
                }
                if !fields.is_empty() {
                    kinds.push("fields");
                }
                if history.is_some() {
                    kinds.push("history");
                }
                kinds
            }
            Finding::Verified | Finding::Failed(_) => Vec::new(),
        }
    }

    /// What the call journal says the audit found.
    fn describe(&self) -> String {
        match self {
            Finding::Verified => "audit: the national copy holds what it acknowledged".into(),
            Finding::Missing => "audit: the national portal lost this dossier; it is created again".into(),
            Finding::Differs { status, fields, history } => {
                let mut what = Vec::new();
                if *status {
                    what.push("its status".to_owned());
                }
                if !fields.is_empty() {
                    what.push(format!("fields {}", fields.join(", ")));
                }
                if let Some(n) = history {
                    what.push(format!("history (it holds the first {n} of our entries)"));
                }
                format!(
                    "audit: the national copy differs from what it acknowledged: {}; repair enqueued",
                    what.join("; ")
                )
            }
            Finding::Unmatched(reason) | Finding::Failed(reason) => format!("audit: {reason}"),
        }
    }

    /// What is recorded in `audit_finding`.
    fn label(&self) -> &'static str {
        match self {
            Finding::Verified => "verified",
            Finding::Failed(_) => "failed",
            other => other.kinds().first().copied().unwrap_or("fields"),
        }
    }
}

/// Two values the same by meaning: text in NFC with whitespace runs as one space, times as
/// instants, codes as numbers; objects compared on our keys the other carries.
fn same(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| b.get(k).is_none_or(|w| same(v, w))),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => {
            let (a, b) = (Some(ours), Some(theirs));
            entry::text(a) == entry::text(b)
                || entry::instant(a).is_some_and(|t| entry::instant(b) == Some(t))
                || entry::code(a).is_some_and(|c| entry::code(b) == Some(c))
        }
    }
}

/// Whether the national copy `theirs` holds every field of our payload, by meaning (the
/// pusher's read-back: a field it lacks means the payload is sent again).
pub(crate) fn holds_all(ours: &Value, theirs: &Map<String, Value>) -> bool {
    match ours {
        Value::Object(ours) => ours.iter().all(|(k, v)| theirs.get(k).is_some_and(|t| same(v, t))),
        _ => false,
    }
}

/// Compares a look-up answer with the acknowledged payload and history.
pub(crate) fn compare(payload: &Value, history: &[Value], answer: &Value) -> Finding {
    let found = match answer.get("result") {
        Some(Value::Array(result)) => match result.first() {
            None => return Finding::Missing,
            Some(Value::Object(found)) => found,
            Some(_) => return Finding::Failed("the look-up's result is not a dossier".into()),
        },
        _ => return Finding::Failed("the look-up answered success without a usable result".into()),
    };
    let Some(Value::Array(theirs)) = found.get("QuaTrinhXuLy") else {
        return Finding::Failed(
            "the look-up answer holds no QuaTrinhXuLy list: the history cannot be verified".into(),
        );
    };
    let matched = entry::matched_prefix(history, theirs);
    if let Some(reason) = pusher::inconclusive(history.len(), theirs, matched) {
        return Finding::Unmatched(reason);
    }
    let mut fields = Vec::new();
    let mut status = false;
    if let Value::Object(ours) = payload {
        for (key, value) in ours {
            let Some(there) = found.get(key) else { continue };
            if key == "QuaTrinhXuLy" || same(value, there) {
                continue;
            }
            if key == "TrangThaiHoSo" {
                status = true;
            } else {
                fields.push(key.clone());
            }
        }
    }
    let history = (matched < history.len()).then_some(matched);
    if !status && fields.is_empty() && history.is_none() {
        Finding::Verified
    } else {
        Finding::Differs { status, fields, history }
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing

/// A dossier to read back, as it stood when chosen.
#[derive(Debug, Clone)]
struct Candidate {
    mahoso: String,
    acked_at: i64,
    acked_hash: i64,
    acked_history: i64,
    finding: Option<String>,
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
fn pick(
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
fn scan(conn: &rusqlite::Connection, now: i64, after: &str, k: usize) -> rusqlite::Result<Vec<Candidate>> {
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
fn pushes_due(conn: &rusqlite::Connection, now: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE next_attempt_at <= ?1)")?
        .query_row([now], |r| r.get(0))
}

// ---------------------------------------------------------------------------------------------
// Reading back and recording

/// What one read-back came to.
enum Looked {
    /// Recorded (or the dossier had moved on: `false`).
    Done(Finding, bool),
    /// No answer: wait, then try again.
    Transient(Transient),
}

/// Reads one dossier back, compares, and records the finding (and the repair) in one
/// transaction, if the dossier did not move on meanwhile.
async fn audit_one<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    c: &Candidate,
) -> Result<Looked, StoreError> {
    let body: Option<(String, String, i64, i64)> = inner.store.read(|conn| {
        conn.prepare_cached(
            "SELECT body_text(b.payload), body_text(b.history), d.payload_hash, d.history_len FROM dossier d JOIN body b USING (mahoso)
             WHERE d.mahoso = ?1",
        )?
        .query_row([&c.mahoso], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()
    })?;
    let Some((payload, history, payload_hash, history_len)) = body else {
        // A dossier without its stored body: nothing to compare with; tried again in an hour.
        let finding = Finding::Failed("no stored payload to compare with".into());
        let now = inner.clock.now().as_microsecond();
        let recorded = inner.store.write(|tx| record(tx, c, &finding, now, now))?;
        return Ok(Looked::Done(finding, recorded));
    };
    if payload_hash != c.acked_hash || history_len != c.acked_history {
        // A newer provincial version since it was chosen: what is stored is not what was
        // acknowledged any more; the pusher has it now.
        metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => "changed").increment(1);
        return Ok(Looked::Done(Finding::Verified, false));
    }
    let started = inner.clock.now().as_microsecond();
    let answer = pusher::call(inner, "TraCuuHoSo", || inner.sink.look_up(&c.mahoso)).await;
    let answered_at = inner.clock.now().as_microsecond();
    let finding = match &answer {
        Answer::Retry(t) => {
            metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => "transient").increment(1);
            let mut noted = journal::entry(&c.mahoso, answered_at, "TraCuuHoSo", &answer, None, String::new);
            noted.message = format!("audit: {}", noted.message);
            inner.audit_journal.write_now(&inner.store, [noted]);
            return Ok(Looked::Transient(t.clone()));
        }
        Answer::Refused { code, message } => {
            Finding::Failed(format!("the look-up was refused (error_code {code}): {message}"))
        }
        Answer::Ok(body) => {
            let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
            let history: Vec<Value> = serde_json::from_str(&history).unwrap_or_default();
            compare(&payload, &history, body)
        }
    };
    // What the call journal says of this look-up, once it is known whether it was acted on.
    let noted = |acted: bool| {
        let mut noted =
            journal::entry(&c.mahoso, answered_at, "TraCuuHoSo", &answer, None, || finding.describe());
        if let Finding::Failed(_) = finding {
            noted.message = finding.describe();
            if matches!(answer, Answer::Ok(_)) {
                noted.outcome = TransientKind::BadAnswer.label();
            }
        }
        if !acted {
            noted.message.push_str("; not recorded: the dossier moved on meanwhile");
        }
        noted
    };
    let now = inner.clock.now().as_microsecond();
    let recorded = {
        // Not while the pusher works on it: its round holds the dossier as it loaded it.
        let in_round = inner.in_round.lock().unwrap_or_else(|p| p.into_inner());
        if in_round.contains(&c.mahoso) {
            inner.audit_journal.write_now(&inner.store, [noted(false)]);
            false
        } else {
            inner.audit_journal.write(&inner.store, |tx| {
                let done = record(tx, c, &finding, started, now)?;
                crate::store::journal::insert(tx, &[noted(done)])?;
                Ok(done)
            })?
        }
    };
    let outcome = match (&finding, recorded) {
        (_, false) => "changed",
        (Finding::Verified, _) => "verified",
        (Finding::Failed(_), _) => "failed",
        _ => "drift",
    };
    metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => outcome).increment(1);
    if !recorded {
        return Ok(Looked::Done(finding, false));
    }
    match &finding {
        Finding::Verified => {
            if c.finding.as_deref().is_some_and(is_drift) {
                metrics::counter!(m::AUDIT_REPAIRED).increment(1);
                tracing::info!(event = "national_drift_repaired", dossier = %c.mahoso);
            }
        }
        Finding::Failed(reason) => {
            tracing::warn!(event = "audit_lookup_failed", dossier = %c.mahoso, reason = %reason);
        }
        drift => {
            for kind in drift.kinds() {
                metrics::counter!(m::AUDIT_DRIFT, "kind" => kind).increment(1);
            }
            let (fields, history) = match drift {
                Finding::Differs { fields, history, .. } => (fields.join(","), *history),
                _ => (String::new(), None),
            };
            tracing::warn!(
                event = "national_drift_found",
                dossier = %c.mahoso,
                kinds = %drift.kinds().join(","),
                fields = %fields,
                national_entries_matched = history,
                "the national copy does not hold what it acknowledged; {}",
                if matches!(drift, Finding::Unmatched(_)) { "parked, nothing resent" } else { "repair enqueued" }
            );
            inner.pusher_wake.notify_one();
        }
    }
    Ok(Looked::Done(finding, true))
}

/// Every drift kind (`audit_finding`, the `kind` label of the drift metric).
pub(crate) const DRIFT_KINDS: [&str; 5] = ["missing", "status", "fields", "history", "unmatched"];
/// Every outcome of an audit look-up (the `outcome` label of the look-up metric).
pub(crate) const LOOKUP_OUTCOMES: [&str; 5] = ["verified", "drift", "failed", "transient", "changed"];

fn is_drift(finding: &str) -> bool {
    DRIFT_KINDS.contains(&finding)
}

/// Records a finding if the dossier is still as chosen; returns whether it was.
fn record(
    tx: &rusqlite::Connection,
    c: &Candidate,
    finding: &Finding,
    looked_at: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    // Nothing written to the national portal for it since it was chosen (a new provincial
    // version may have come: what the read-back proves of the acknowledged state still holds).
    const GUARD: &str =
        "mahoso = ?1 AND acked_at = ?2 AND acked_hash = ?3 AND acked_history = ?4 AND inflight = 0
         AND NOT EXISTS (SELECT 1 FROM dead WHERE mahoso = ?1)";
    let key = params![c.mahoso, c.acked_at, c.acked_hash, c.acked_history];
    let update = |set: &str, extra: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<bool> {
        let mut args: Vec<&dyn rusqlite::ToSql> = key.to_vec();
        args.extend_from_slice(extra);
        Ok(tx.prepare_cached(&format!("UPDATE dossier SET {set} WHERE {GUARD}"))?.execute(&*args)? == 1)
    };
    let label = finding.label();
    let changed = match finding {
        Finding::Verified => {
            // Verified as of the look-up: the national state is known from then.
            let done =
                update("verified_at = ?5, audited_at = ?6, audit_finding = ?7", &[&looked_at, &now, &label])?;
            if done && c.finding.as_deref().is_some_and(is_drift) {
                meta_add(tx, AUDIT_DRIFT_REPAIRED, 1)?;
            }
            return Ok(done);
        }
        Finding::Failed(_) => return update("audited_at = ?5, audit_finding = ?6", &[&now, &label]),
        Finding::Missing => update(
            "national_exists = 0, acked_hash = NULL, acked_history = 0, verified_at = NULL, audited_at = ?5,
             audit_finding = ?6",
            &[&now, &label],
        )?,
        Finding::Differs { status, fields, history } => {
            let payload_differs = *status || !fields.is_empty();
            let matched = history.map_or(c.acked_history, |h| h as i64);
            update(
                "acked_hash = CASE WHEN ?5 THEN NULL ELSE acked_hash END, acked_history = ?6, verified_at = NULL,
                 audited_at = ?7, audit_finding = ?8",
                &[&payload_differs, &matched, &now, &label],
            )?
        }
        Finding::Unmatched(reason) => {
            // Parked as the pusher parks an unmatched read-back: the write stays marked uncertain
            // (inflight 2), so that a retry reads the dossier back again before sending anything.
            let done = update(
                "inflight = 2, verified_at = NULL, audited_at = ?5, audit_finding = ?6",
                &[&now, &label],
            )?;
            if done {
                tx.prepare_cached(
                    "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason, kind)
                     VALUES (?1, ?2, 0, NULL, ?3, 'unmatched')",
                )?
                .execute(params![c.mahoso, now, reason])?;
                tx.prepare_cached("DELETE FROM outbox WHERE mahoso = ?1")?.execute([&c.mahoso])?;
            }
            done
        }
    };
    if changed {
        if !matches!(finding, Finding::Unmatched(_)) {
            tx.prepare_cached(
                "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at, attempts) VALUES (?1, ?2, ?2, 0)
                 ON CONFLICT(mahoso) DO NOTHING",
            )?
            .execute(params![c.mahoso, now])?;
        }
        meta_add(tx, AUDIT_DRIFT_FOUND, 1)?;
        // A loss rarely comes alone: everything verified before now is due again.
        start_sweep(tx, now)?;
    }
    Ok(changed)
}

/// Starts a sweep at `now`, or moves the one under way to `now`: everything verified before it
/// is due again (the pusher calls this too, when the national portal answers that it does not
/// know a dossier it acknowledged).
pub(crate) fn start_sweep(tx: &rusqlite::Connection, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![SWEEP_SINCE, now.to_string()])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pacing

/// At most `per_second` look-ups a second, measured from the previous one.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(per_second: f64) -> Pacer {
        Pacer { interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)), next: Instant::now() }
    }

    /// Waits for the next slot; false if cancelled.
    async fn wait(&mut self, token: &CancellationToken) -> bool {
        tokio::select! {
            biased;
            () = token.cancelled() => return false,
            () = tokio::time::sleep_until(self.next) => {}
        }
        self.next = Instant::now().max(self.next) + self.interval;
        true
    }
}

/// Sleeps for `d`; false if cancelled.
async fn sleep(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = token.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// The wait after a look-up got no answer: what the portal asked (429's Retry-After), else
/// the push retry policy's backoff.
fn transient_wait(t: &Transient, backoff: &mut impl Iterator<Item = Duration>, max: Duration) -> Duration {
    let next = backoff.next().unwrap_or(max);
    // A Retry-After from outside is honoured up to the push retry's maximum, no longer.
    t.retry_after
        .map(|after| after.min(max))
        .map_or(next, |after| after.max(next.min(after.saturating_mul(2))))
}

// ---------------------------------------------------------------------------------------------
// Passes

/// Dossiers read back at a time (one look-up each, paced).
fn batch_size(per_second: f64) -> usize {
    (per_second.ceil() as usize).clamp(2, 100)
}

/// One pass now: `Due` reads what is due and at least a day's share of the cycle, `All`
/// every synchronized dossier. With `yield_to_pushes` (inside the daemon) it waits while
/// pushes are due. None if cancelled.
pub(crate) async fn pass<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    scope: AuditScope,
    per_second: f64,
    token: &CancellationToken,
) -> Option<AuditReport> {
    pass_with(inner, scope, per_second, false, token).await
}

async fn pass_with<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    scope: AuditScope,
    per_second: f64,
    yield_to_pushes: bool,
    token: &CancellationToken,
) -> Option<AuditReport> {
    let started = inner.clock.now();
    let start = started.as_microsecond();
    let store_failed = |e: StoreError| tracing::error!(event = "store_failed", what = "audit", error = %e);
    let share = match scope {
        AuditScope::Due => {
            let in_sync = inner.store.read(dossier_counts).map_err(store_failed).ok()?.in_sync;
            let days = (inner.cfg.audit_cycle.as_secs_f64() / 86_400.0).max(1.0 / 86_400.0);
            ((in_sync as f64 / days).ceil() as u64).max(1)
        }
        AuditScope::All => u64::MAX,
    };
    tracing::info!(event = "audit_started", scope = ?scope, per_second);
    let mut report = AuditReport {
        started_at: started.to_string(),
        scope: match scope {
            AuditScope::Due => "due".into(),
            AuditScope::All => "all".into(),
        },
        per_second,
        ..AuditReport::default()
    };
    let mut pacer = Pacer::new(per_second);
    let (initial, max) = inner.cfg.push_retry;
    let mut backoff = super::backoff(initial, max, inner.next_seed()).build();
    let mut after = String::new();
    let k = batch_size(per_second);
    'pass: while report.audited < share {
        let now = inner.clock.now().as_microsecond();
        let batch = inner.store.read(|c| match scope {
            AuditScope::Due => pick(c, now, start, k, k / 2),
            AuditScope::All => scan(c, now, &after, k),
        });
        let batch = batch.map_err(store_failed).ok()?;
        if batch.is_empty() {
            break;
        }
        for c in &batch {
            let mut tries = 0;
            loop {
                while yield_to_pushes
                    && inner
                        .store
                        .read(|conn| pushes_due(conn, inner.clock.now().as_microsecond()))
                        .unwrap_or(false)
                {
                    if !sleep(pacer.interval.min(Duration::from_secs(1)), token).await {
                        return None;
                    }
                }
                if !pacer.wait(token).await {
                    return None;
                }
                match audit_one(inner, c).await.map_err(store_failed).ok()? {
                    Looked::Done(finding, recorded) => {
                        backoff = super::backoff(initial, max, inner.next_seed()).build();
                        if recorded {
                            report.count(&finding, &c.mahoso);
                        } else {
                            report.changed += 1;
                        }
                        break;
                    }
                    Looked::Transient(t) => {
                        tries += 1;
                        if tries >= 10 {
                            // The portal keeps failing this look-up: count it, go on.
                            report.audited += 1;
                            report.failed += 1;
                            break;
                        }
                        if !sleep(transient_wait(&t, &mut backoff, max), token).await {
                            return None;
                        }
                    }
                }
            }
            after.clone_from(&c.mahoso);
            if report.audited >= share {
                break 'pass;
            }
        }
    }
    let now = inner.clock.now();
    report.finished_at = now.to_string();
    report.verified_percent = inner
        .store
        .read(|c| audit_state(c, now.as_microsecond(), &dossier_counts(c)?))
        .map(|a| a.verified_percent)
        .unwrap_or(0.0);
    let saved = inner.store.write(|tx| {
        meta_set(tx, LAST, Some(&serde_json::to_string(&report).unwrap_or_default()))?;
        meta_set(tx, LAST_AT, Some(&now.as_microsecond().to_string()))?;
        meta_set(tx, AUDIT_LAST_PASS_AT, Some(&now.as_microsecond().to_string()))?;
        meta_set(tx, REQUESTED, None)
    });
    if let Err(e) = saved {
        store_failed(e);
    }
    tracing::info!(
        event = "audit_finished",
        audited = report.audited,
        verified = report.verified,
        drift_found = report.drift_found,
        repairs_enqueued = report.repairs_enqueued,
        parked = report.parked,
        failed = report.failed,
        verified_percent = report.verified_percent
    );
    Some(report)
}

/// The background audit, and the passes `dvc-sync audit` asks for.
pub(crate) async fn run<S: Source, N: Sink, C: Clock>(inner: Arc<Inner<S, N, C>>, token: CancellationToken) {
    let per_second = inner.cfg.audit_per_second;
    // A verified dossier is read back again after a day (sooner when a loss was found), and
    // never later than half the cycle: a loss is found within a day wherever the rate allows.
    let again_after = inner.cfg.audit_cycle.min(REVERIFY_AFTER * 2).as_micros() as i64 / 2;
    let (initial, max) = inner.cfg.push_retry;
    let mut backoff = super::backoff(initial, max, inner.next_seed()).build();
    let mut pacer = Pacer::new(per_second);
    let mut turn: usize = 0;
    // Whether everything due was read back since the last time it was.
    let mut caught_up = false;
    let idle = Duration::from_secs(1);
    while !token.is_cancelled() {
        let now = inner.clock.now().as_microsecond();
        let read = inner
            .store
            .read(|c| Ok((meta_get(c, REQUESTED)?, meta_get(c, SWEEP_SINCE)?, pushes_due(c, now)?)));
        let Ok((requested, sweep, due)) = read else {
            if !sleep(idle, &token).await {
                return;
            }
            continue;
        };
        if let Some(request) = requested {
            let request: Request = serde_json::from_str(&request)
                .unwrap_or(Request { scope: AuditScope::Due, per_second: None });
            let rate = request.per_second.filter(|r| *r > 0.0).unwrap_or(if per_second > 0.0 {
                per_second
            } else {
                1.0
            });
            if pass_with(&inner, request.scope, rate, true, &token).await.is_none() {
                return;
            }
            continue;
        }
        if per_second <= 0.0 || due {
            if !sleep(if due { pacer.interval.min(idle) } else { idle }, &token).await {
                return;
            }
            continue;
        }
        let sweep_since = sweep.and_then(|s| s.parse::<i64>().ok());
        let due_before = sweep_since.map_or(now - again_after, |s| s.max(now - again_after));
        let k = 1;
        turn += 1;
        let batch = match inner.store.read(|c| pick(c, now, due_before, k, turn % 2)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = "store_failed", what = "audit", error = %e);
                if !sleep(idle, &token).await {
                    return;
                }
                continue;
            }
        };
        let Some(c) = batch.into_iter().next() else {
            if !caught_up {
                caught_up = true;
                let at = now.to_string();
                let done = inner.store.write(|tx| {
                    meta_set(tx, AUDIT_LAST_PASS_AT, Some(&at))?;
                    // The sweep is over only if nothing found drift since it began.
                    if meta_get(tx, SWEEP_SINCE)?.and_then(|s| s.parse::<i64>().ok()) == sweep_since {
                        meta_set(tx, SWEEP_SINCE, None)?;
                    }
                    Ok(())
                });
                if let Err(e) = done {
                    tracing::error!(event = "store_failed", what = "audit", error = %e);
                } else if sweep_since.is_some() {
                    tracing::info!(event = "audit_sweep_finished");
                }
            }
            if !sleep(idle, &token).await {
                return;
            }
            continue;
        };
        caught_up = false;
        if !pacer.wait(&token).await {
            return;
        }
        match audit_one(&inner, &c).await {
            Ok(Looked::Done(..)) => backoff = super::backoff(initial, max, inner.next_seed()).build(),
            Ok(Looked::Transient(t)) => {
                if !sleep(transient_wait(&t, &mut backoff, max), &token).await {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(event = "store_failed", what = "audit", error = %e);
                if !sleep(idle, &token).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(at: &str, content: &str) -> Value {
        json!({"MaHoSo": "X", "ThoiDiemXuLy": at, "NguoiXuLy": "Lê Thị Hoa", "NoiDungXuLy": content, "TrangThai": "4"})
    }

    fn dossier() -> Value {
        json!({"MaHoSo": "X", "TrangThaiHoSo": "4", "NgayTiepNhan": "20260301083000", "TrichYeuHoSo": "Cấp giấy phép xây dựng"})
    }

    fn answer(mut d: Value, history: Vec<Value>) -> Value {
        d["QuaTrinhXuLy"] = Value::Array(history);
        json!({"error_code": 0, "result": [d]})
    }

    #[test]
    fn the_same_dossier_in_another_form_is_verified() {
        let history = vec![entry("20260301083000", "Tiếp nhận"), entry("20260302090000", "Chuyển xử lý")];
        let mut theirs = json!({"MaHoSo": "X", "TrangThaiHoSo": 4, "NgayTiepNhan": "2026-03-01T08:30:00+07:00",
            "TrichYeuHoSo": "  Cấp giấy  phép xây dựng ", "Them": "a field we never sent"});
        theirs["QuaTrinhXuLy"] =
            json!([entry("01/03/2026 08:30:00", "Tiếp nhận"), entry("2026-03-02 09:00:00", "Chuyển  xử lý")]);
        let body = json!({"error_code": "0", "result": [theirs]});
        assert_eq!(compare(&dossier(), &history, &body), Finding::Verified);
        // A field the answer leaves out is not compared.
        let mut short = dossier();
        short.as_object_mut().unwrap().remove("TrichYeuHoSo");
        assert_eq!(compare(&dossier(), &history, &answer(short, history.clone())), Finding::Verified);
    }

    #[test]
    fn each_kind_of_drift_is_told_apart() {
        let history = vec![entry("20260301083000", "Tiếp nhận"), entry("20260302090000", "Chuyển xử lý")];
        assert_eq!(compare(&dossier(), &history, &json!({"error_code": 0, "result": []})), Finding::Missing);
        let mut other = dossier();
        other["TrangThaiHoSo"] = json!("2");
        other["TrichYeuHoSo"] = json!("khác");
        assert_eq!(
            compare(&dossier(), &history, &answer(other, history.clone())),
            Finding::Differs { status: true, fields: vec!["TrichYeuHoSo".into()], history: None }
        );
        assert_eq!(
            compare(&dossier(), &history, &answer(dossier(), history[..1].to_vec())),
            Finding::Differs { status: false, fields: vec![], history: Some(1) }
        );
        let finding = compare(
            &dossier(),
            &history,
            &answer(dossier(), vec![history[0].clone(), entry("20260305000000", "?")]),
        );
        assert!(matches!(&finding, Finding::Unmatched(r) if r.contains("first 1 match")), "{finding:?}");
        assert_eq!(finding.kinds(), vec!["unmatched"]);
        let more = vec![history[0].clone(), history[1].clone(), entry("20260306000000", "not ours")];
        assert!(matches!(compare(&dossier(), &history, &answer(dossier(), more)), Finding::Unmatched(_)));
    }

    #[test]
    fn a_retry_after_from_outside_is_bounded() {
        let max = Duration::from_secs(300);
        let t = |after: u64| Transient {
            kind: crate::sync::answer::TransientKind::RateLimited,
            reason: "429".into(),
            maybe_applied: false,
            retry_after: Some(Duration::from_secs(after)),
            http_status: Some(429),
        };
        let mut backoff = std::iter::repeat(Duration::from_secs(1));
        assert_eq!(transient_wait(&t(u64::MAX), &mut backoff, max), max, "no overflow, no 1,000-day stall");
        assert_eq!(transient_wait(&t(2), &mut backoff, max), Duration::from_secs(2));
    }

    #[test]
    fn an_answer_that_cannot_tell_is_a_failure_not_drift() {
        let history = vec![entry("20260301083000", "Tiếp nhận")];
        for body in [
            json!({"error_code": 0}),
            json!({"error_code": 0, "result": "x"}),
            json!({"error_code": 0, "result": [1]}),
            json!({"error_code": 0, "result": [dossier()]}),
        ] {
            assert!(matches!(compare(&dossier(), &history, &body), Finding::Failed(_)), "{body}");
        }
    }
}
