//! The pusher: brings the national copy of every dossier in the outbox up to its latest
//! provincial state, in rounds.
//!
//! A round takes the dossiers that are due and, in order:
//! 1. resolves uncertain history writes (a lost answer, a timeout) by reading the dossier back
//!    (TraCuuHoSo) before anything is resent: no history entry is ever appended twice;
//! 2. fills missing catalogue fields (LayThuTuc, cached);
//! 3. sends the dossiers whose payload changed, created or replaced (DongBoHoSoMC);
//! 4. then the history entries not yet acknowledged, oldest first (CapNhatTienDoHoSoMC).
//!
//! Calls run concurrently under the adaptive limiter; a dossier is in at most one call at a
//! time, and a round ends before the next begins, so each dossier's writes stay in order.
//! Before every write the dossiers concerned are durably marked in flight; an answer clears
//! the mark. A refused item is isolated and parked as dead with the portal's message while
//! the rest of its batch is sent again; transient trouble reschedules the dossiers with
//! capped, jittered exponential backoff kept in the outbox.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use rusqlite::params;
use serde_json::{Map, Value, value::RawValue};
use tokio_util::sync::CancellationToken;

use super::{
    Inner,
    answer::{Answer, Transient, TransientKind},
    catalogue::Entry,
    journal,
    limiter::Signal,
    ports::{Clock, Sink, Source},
    trouble::Trouble,
};
use crate::{
    domain::{
        codes::{self, named_item},
        entry,
        normalize::fill_catalogue,
        scoring::MaxDuration,
        stable_hash,
    },
    metrics as m,
    store::StoreError,
};

/// Which kind of write may have been applied without an answer (the `inflight` column):
/// ordered, so that the larger uncertainty wins when both are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum InFlight {
    None = 0,
    /// A dossier create or update: resending a payload is harmless, a probe saves refusals.
    Payload = 1,
    /// History entries: read the dossier back before anything is sent again.
    History = 2,
}

impl InFlight {
    fn from_db(v: i64) -> InFlight {
        match v {
            0 => InFlight::None,
            1 => InFlight::Payload,
            // Anything else is read back first: never assume less uncertainty than stored.
            _ => InFlight::History,
        }
    }

    fn db(self) -> i64 {
        self as i64
    }
}

/// One due dossier, as loaded at the start of a round.
#[derive(Debug)]
struct Work {
    mahoso: String,
    version: i64,
    updated_at: i64,
    /// The national dossier as stored, sent as it is (parsed only to fill catalogue fields).
    payload: Box<RawValue>,
    payload_hash: i64,
    status: i64,
    procedure: String,
    needs_catalogue: bool,
    /// History entries as stored, each sent as it is.
    history: Vec<Box<RawValue>>,
    national_exists: bool,
    acked_hash: Option<i64>,
    acked_history: usize,
    /// The in-flight mark as the database holds it (including this round's writes).
    inflight: InFlight,
    /// Uncertainty left from earlier writes that no read-back has resolved yet: it survives
    /// this round's failures (a failed read-back must never clear it).
    unresolved: InFlight,
    attempts: i64,
    /// What the round decided, once it decided; a dossier with a fate takes no further part.
    fate: Option<Fate>,
}

#[derive(Debug, Clone)]
enum Fate {
    Retry(Transient),
    Dead {
        code: Option<i64>,
        reason: String,
    },
    /// The read-back cannot tell which of our history entries the portal holds (it holds
    /// entries that match none of ours): parked with the reason, never resent, the write
    /// still marked uncertain so that a retry reads back again.
    Unmatched {
        reason: String,
    },
    /// Changed under the round (a newer version): leave it for the next round.
    Later,
}

impl Work {
    fn open(&self) -> bool {
        self.fate.is_none()
    }

    fn payload_acked(&self) -> bool {
        self.acked_hash == Some(self.payload_hash)
    }
}

/// The bodies of a due dossier as stored, when the poller's were not in memory (`fresh`):
/// decoded once the connection is released.
type Stored = (rusqlite::types::Value, rusqlite::types::Value);

/// The due dossiers, oldest first: their state from the database, their bodies from memory
/// where the poller just left them, else read and decoded from the database.
fn load_due<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    now: i64,
    limit: usize,
) -> Result<Vec<Work>, StoreError> {
    let loaded: Vec<(Work, Option<Stored>)> = inner.store.read(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT d.mahoso, d.version, d.updated_at, d.payload_hash, d.status, d.procedure,
                    d.needs_catalogue, d.national_exists, d.acked_hash, d.acked_history,
                    d.inflight, o.attempts, b.payload, b.history
             FROM outbox o JOIN dossier d ON d.mahoso = o.mahoso JOIN body b ON b.mahoso = o.mahoso
             WHERE o.next_attempt_at <= ?1
             ORDER BY o.next_attempt_at
             LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            let mut work = Work {
                mahoso: r.get(0)?,
                version: r.get(1)?,
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
                fate: None,
            };
            let stored = match inner.fresh.take(&work.mahoso, work.version, work.payload_hash) {
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
    let mut due = Vec::with_capacity(loaded.len());
    for (mut work, stored) in loaded {
        if let Some((payload, history)) = stored {
            let payload = inner.store.body_text((&payload).into())?.unwrap_or_default();
            let history = inner.store.body_text((&history).into())?.unwrap_or_default();
            work.payload = RawValue::from_string(payload).unwrap_or_else(|_| RawValue::NULL.to_owned());
            work.history = serde_json::from_str(&history).unwrap_or_default();
        }
        due.push(work);
    }
    Ok(due)
}

/// One call under the limiter, measured (the audit's look-ups go through it too).
pub(super) async fn call<S: Source, N: Sink, C: Clock, F, Fut>(
    inner: &Inner<S, N, C>,
    service: &'static str,
    f: F,
) -> Answer
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Answer>,
{
    let permit = inner.limiter.acquire().await;
    let answer = f().await;
    let signal = match &answer {
        Answer::Ok(_) | Answer::Refused { .. } => Signal::Answered,
        Answer::Retry(t) => match t.kind {
            TransientKind::RateLimited => Signal::RateLimited { retry_after: t.retry_after },
            TransientKind::Unavailable | TransientKind::ServerError | TransientKind::Timeout => {
                Signal::Overloaded { retry_after: t.retry_after }
            }
            _ => Signal::Neutral,
        },
    };
    inner.limiter.record(&permit, signal);
    let elapsed = tokio::time::Instant::now().duration_since(permit.started());
    drop(permit);
    metrics::counter!(m::CALLS, "service" => service, "outcome" => answer.label()).increment(1);
    metrics::histogram!(m::CALL_DURATION, "service" => service).record(elapsed.as_secs_f64());
    metrics::gauge!(m::CONCURRENCY_LIMIT).set(inner.limiter.limit() as f64);
    if matches!(service, "DongBoHoSoMC" | "CapNhatTienDoHoSoMC") {
        // Pushes only: look-ups that answer say nothing of whether writes get through.
        let failing = matches!(answer, Answer::Retry(_));
        metrics::gauge!(m::PUSH_FAILING).set(if failing { 1.0 } else { 0.0 });
    }
    match &answer {
        Answer::Ok(_) | Answer::Refused { .. } => {
            inner.note_push_success();
            inner.national_trouble.lock().unwrap_or_else(|p| p.into_inner()).recovered();
        }
        Answer::Retry(t) => {
            inner.note_push_error(&t.reason);
            let wait = t.retry_after.unwrap_or(inner.cfg.push_retry.0);
            inner
                .national_trouble
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed(&format!("{service}: {}", t.reason), wait);
        }
    }
    if let Answer::Retry(t) = &answer {
        inner.stats.fault(t.kind.label());
        tracing::debug!(event = "call_failed", service, error = %t.reason, http_status = t.http_status, duration_ms = elapsed.as_millis() as u64);
    }
    answer
}

/// What to do with a group of items after the portal refused their call: the one decision
/// that isolates a refused item, for dossier payloads and history entries alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// The refusal names this item of the group (by position).
    Item(usize),
    /// The portal takes fewer items per call than were sent.
    TooMany,
    /// An item-level refusal that names no item of the group: halve the group to find it.
    Halve,
    /// The call as a whole was refused (malformed, another unit, an unknown code): a
    /// configuration or compatibility problem, not these items' fault.
    WholeCall,
}

fn isolate<'a>(code: i64, message: &str, names: impl IntoIterator<Item = &'a str>) -> Isolation {
    let named = named_item(message).and_then(|m| names.into_iter().position(|n| n == m));
    match (code, named) {
        (c, Some(p)) if codes::concerns_one_item(c) => Isolation::Item(p),
        (codes::TOO_MANY, _) => Isolation::TooMany,
        // A unit mismatch names nothing because it concerns the account, not an item.
        (c, None) if codes::concerns_one_item(c) && c != codes::NOT_YOUR_UNIT => Isolation::Halve,
        _ => Isolation::WholeCall,
    }
}

/// How a refused call is isolated (`None` when the call was not refused).
fn refusal_isolation<'a>(answer: &Answer, names: impl IntoIterator<Item = &'a str>) -> Option<Isolation> {
    match answer {
        Answer::Refused { code, message } => Some(isolate(*code, message, names)),
        _ => None,
    }
}

/// Notes a call in the journal of every dossier it carried (`what` says what it carried of
/// each); a refusal that named one of them says so in the others' entries.
fn note_calls<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    service: &'static str,
    answer: &Answer,
    isolation: Option<Isolation>,
    names: &[&str],
    what: impl Fn(usize) -> String,
) {
    let at = inner.clock.now().as_microsecond();
    let culprit = match isolation {
        Some(Isolation::Item(p)) => names.get(p).copied(),
        _ => None,
    };
    inner.journal.note(
        names
            .iter()
            .enumerate()
            .map(|(k, name)| journal::entry(name, at, service, answer, culprit, || what(k))),
    );
}

/// A whole-call refusal, logged loudly and retried.
fn refused_call(service: &'static str, code: i64, message: &str) -> Transient {
    tracing::error!(event = "call_refused", service, error_code = code, message = %message, "the national portal refused the call as a whole");
    Transient {
        kind: TransientKind::BadAnswer,
        reason: refusal_reason(code, message),
        maybe_applied: false,
        retry_after: None,
        http_status: None,
    }
}

fn refusal_reason(code: i64, message: &str) -> String {
    format!("national portal refused (error_code {code}): {message}")
}

// ---------------------------------------------------------------------------------------------
// Reading back

/// How many of `ours` the national copy holds, in order, by the one identity of an entry
/// (`domain::entry`: the same step, whatever form the look-up gives it).
fn matched_prefix(ours: &[Box<RawValue>], theirs: &[Value]) -> usize {
    let ours: Vec<Value> =
        ours.iter().map(|e| serde_json::from_str(e.get()).unwrap_or(Value::Null)).collect();
    entry::matched_prefix(&ours, theirs)
}

/// Why a read-back does not show which entries were applied, if it does not.
/// (The audit words its unmatched read-backs with this too.)
pub(super) fn inconclusive(ours: usize, theirs: &[Value], matched: usize) -> Option<String> {
    if theirs.len() <= matched {
        return None;
    }
    let at = |e: &Value| entry::text(e.get("ThoiDiemXuLy"));
    let who = |e: &Value| entry::text(e.get("NguoiXuLy"));
    let first = &theirs[matched];
    Some(format!(
        "read-back inconclusive, nothing resent: the national copy holds {} history entries, of which the first {matched} \
         match ours in order; its entry {} ({} by {}) matches {} of ours. Compare with the national portal, then \
         `dvc-sync retry --dead`",
        theirs.len(),
        matched + 1,
        at(first),
        who(first),
        if matched < ours { "none" } else { "none (we have no more)" },
    ))
}

/// Reads one dossier back and records what the national portal holds of it (and, in the
/// call journal, what the read-back found).
async fn read_back<S: Source, N: Sink, C: Clock>(inner: &Inner<S, N, C>, w: &mut Work) {
    let answer = call(inner, "TraCuuHoSo", || inner.sink.look_up(&w.mahoso)).await;
    let at = inner.clock.now().as_microsecond();
    inner.stats.readback();
    let found = judge_read_back(inner, w, &answer);
    let unusable = found.is_none();
    let mut noted = journal::entry(&w.mahoso, at, "TraCuuHoSo", &answer, None, || found.unwrap_or_default());
    if matches!(answer, Answer::Ok(_)) && unusable {
        noted.outcome = TransientKind::BadAnswer.label();
        noted.message = "answered success without a usable result".into();
    }
    inner.journal.note([noted]);
}

/// Decides from a read-back's answer; returns what it found, when the answer was usable.
fn judge_read_back<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    w: &mut Work,
    answer: &Answer,
) -> Option<String> {
    // Only an explicit empty result means "not there": an answer without a usable result must
    // not be read as one (the history would be resent).
    let usable = |body: &Value| match body.get("result") {
        Some(Value::Array(r)) => r.first().is_none_or(Value::is_object),
        _ => false,
    };
    match answer {
        Answer::Ok(body) if !usable(body) => {
            w.fate = Some(Fate::Retry(Transient {
                kind: TransientKind::BadAnswer,
                reason: "read-back answered success without a usable result".into(),
                maybe_applied: false,
                retry_after: None,
                http_status: None,
            }));
            None
        }
        Answer::Ok(body) => {
            let found = match body
                .get("result")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_object)
            {
                None => {
                    w.national_exists = false;
                    w.acked_hash = None;
                    w.acked_history = 0;
                    "the national portal does not hold this dossier: it is created, with its whole history"
                        .to_owned()
                }
                Some(found) => {
                    let mut dossier: Map<String, Value> = found.clone();
                    w.national_exists = true;
                    // The portal holds our payload if it holds every field of it, by meaning
                    // (then nothing is sent again); otherwise the payload is sent again.
                    let ours: Value = serde_json::from_str(w.payload.get()).unwrap_or(Value::Null);
                    let held = super::audit::holds_all(&ours, found);
                    w.acked_hash = Some(if held {
                        w.payload_hash
                    } else {
                        stable_hash(serde_json::to_string(&dossier).unwrap_or_default().as_bytes())
                    });
                    // No history in the answer, or not a list: it cannot tell what was applied.
                    let Some(Value::Array(history)) = dossier.remove("QuaTrinhXuLy") else {
                        inner.stats.readback_inconclusive();
                        let reason = "read-back inconclusive, nothing resent: the look-up answer holds no QuaTrinhXuLy list";
                        w.fate = Some(Fate::Unmatched { reason: reason.into() });
                        return Some(reason.into());
                    };
                    let matched = matched_prefix(&w.history, &history);
                    if let Some(reason) = inconclusive(w.history.len(), &history, matched) {
                        inner.stats.readback_inconclusive();
                        tracing::warn!(
                            event = "national_history_diverged",
                            dossier = %w.mahoso,
                            national_entries = history.len(),
                            matched,
                            "the national copy holds history entries that match none of ours: parked, nothing resent"
                        );
                        w.fate = Some(Fate::Unmatched { reason: reason.clone() });
                        return Some(reason);
                    }
                    w.acked_history = matched;
                    format!(
                        "holds the dossier, {}; {matched} of our {} history entries",
                        if held { "its fields as ours" } else { "its fields not as ours (sent again)" },
                        w.history.len()
                    )
                }
            };
            w.inflight = InFlight::None;
            w.unresolved = InFlight::None;
            Some(found)
        }
        Answer::Refused { code, message } => {
            w.fate = Some(Fate::Retry(Transient {
                kind: TransientKind::BadAnswer,
                reason: format!("read-back refused (error_code {code}): {message}"),
                maybe_applied: false,
                retry_after: None,
                http_status: None,
            }));
            None
        }
        Answer::Retry(t) => {
            w.fate = Some(Fate::Retry(t.clone()));
            None
        }
    }
}

/// Records what read-backs found. A dossier found is as good as acknowledged as of now (the
/// audit dates what it verifies from it).
fn save_read_backs(tx: &rusqlite::Connection, work: &[&Work], now: i64) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE dossier SET national_exists = ?2, acked_hash = ?3, acked_history = ?4, inflight = ?5,
             acked_at = CASE WHEN ?2 THEN ?6 ELSE acked_at END,
             acked_status = CASE WHEN ?3 = payload_hash THEN status ELSE acked_status END
         WHERE mahoso = ?1",
    )?;
    for w in work {
        stmt.execute(params![
            w.mahoso,
            w.national_exists,
            w.acked_hash,
            w.acked_history as i64,
            w.inflight.db(),
            now
        ])?;
    }
    Ok(())
}

async fn resolve_uncertain<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &mut [Work],
) -> Result<(), StoreError> {
    // Payload creates that may have been applied: one probe decides how to resend the lot
    // (resending a payload is harmless either way; the probe only saves refusals).
    let creates_probe =
        work.iter().position(|w| w.open() && w.inflight == InFlight::Payload && !w.national_exists);
    // History writes that may have been applied: read each dossier back.
    let concurrency = inner.cfg.max_concurrency;
    let uncertain: Vec<usize> =
        (0..work.len()).filter(|&i| work[i].open() && work[i].inflight == InFlight::History).collect();
    let reads: Vec<_> = work
        .iter_mut()
        .filter(|w| w.open() && w.inflight == InFlight::History)
        .map(|w| read_back(inner, w))
        .collect();
    futures::stream::iter(reads).buffer_unordered(concurrency).collect::<Vec<()>>().await;
    let resolved: Vec<&Work> = uncertain.iter().map(|&i| &work[i]).filter(|w| w.open()).collect();
    if !resolved.is_empty() {
        let now = inner.clock.now().as_microsecond();
        inner.journal.write(&inner.store, |tx| save_read_backs(tx, &resolved, now))?;
    }
    if let Some(i) = creates_probe {
        read_back(inner, &mut work[i]).await;
        if work[i].open() {
            let exists = work[i].national_exists;
            let now = inner.clock.now().as_microsecond();
            inner.journal.write(&inner.store, |tx| save_read_backs(tx, &[&work[i]], now))?;
            for w in
                work.iter_mut().filter(|w| w.open() && w.inflight == InFlight::Payload && !w.national_exists)
            {
                // Sent as updates if the probe found its dossier: a mismatch is corrected by
                // the portal's own answer (code 4, then a create).
                w.national_exists = exists;
            }
        } else {
            // The probe failed: leave the uncertain creates to the next round (a probe parked
            // for its own history says nothing of the others: they wait for another probe).
            let fate = match &work[i].fate {
                Some(Fate::Unmatched { .. }) => Some(Fate::Later),
                other => other.clone(),
            };
            for w in
                work.iter_mut().filter(|w| w.open() && w.inflight == InFlight::Payload && !w.national_exists)
            {
                w.fate = fate.clone();
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The catalogue

/// What a `LayThuTuc` answer says of a procedure, or why it says nothing usable.
fn catalogue_entry(answer: &Answer) -> Result<Entry, Transient> {
    match &answer {
        Answer::Ok(body) if !body.get("result").is_some_and(Value::is_array) => Err(Transient {
            kind: TransientKind::BadAnswer,
            reason: "LayThuTuc answered success without a result".into(),
            maybe_applied: false,
            retry_after: None,
            http_status: None,
        }),
        Answer::Ok(body) => {
            let first = body.get("result").and_then(Value::as_array).and_then(|r| r.first());
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
            match first {
                Some(p) => {
                    let field = p.get("LINHVUCTHUCHIEN").and_then(Value::as_array).and_then(|f| f.first());
                    Ok(Entry::Known {
                        name: text(p.get("TENTTHC")),
                        field_code: text(field.and_then(|f| f.get("MALINHVUC"))),
                        field_name: text(field.and_then(|f| f.get("TENLINHVUC"))),
                        duration: MaxDuration::of_procedure(p),
                    })
                }
                None => Ok(Entry::Unknown),
            }
        }
        Answer::Refused { code: codes::UNKNOWN_PROCEDURE, .. } => Ok(Entry::Unknown),
        Answer::Refused { code: c, message } => Err(Transient {
            kind: TransientKind::BadAnswer,
            reason: format!("LayThuTuc refused (error_code {c}): {message}"),
            maybe_applied: false,
            retry_after: None,
            http_status: None,
        }),
        Answer::Retry(t) => Err(t.clone()),
    }
}

/// Asks the catalogue for the durations the report wants (dossiers without NgayHenTra), after
/// the round's pushes, so that no dossier waits for them; a failure is asked again a minute
/// later at the earliest.
async fn look_up_durations<S: Source, N: Sink, C: Clock>(inner: &Inner<S, N, C>) -> Result<(), StoreError> {
    let now = inner.clock.now().as_microsecond();
    for code in inner.catalogue.take_due(now) {
        if inner.catalogue.get(&code, now).is_some() {
            continue;
        }
        let answer = call(inner, "LayThuTuc", || inner.sink.procedure(&code)).await;
        match catalogue_entry(&answer) {
            Ok(entry) => inner.store.write(|tx| inner.catalogue.put(tx, &code, entry, now))?,
            Err(_) => inner.catalogue.retry_later(&code, now + 60 * 1_000_000),
        }
    }
    Ok(())
}

async fn fill_catalogues<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &mut [Work],
) -> Result<(), StoreError> {
    let now = inner.clock.now().as_microsecond();
    // Ordered, so that a simulation replays the same calls in the same order.
    let codes: std::collections::BTreeSet<String> =
        work.iter().filter(|w| w.open() && w.needs_catalogue).map(|w| w.procedure.clone()).collect();
    let mut found: HashMap<String, Result<Entry, Transient>> = HashMap::new();
    for code in codes {
        if let Some(entry) = inner.catalogue.get(&code, now) {
            found.insert(code, Ok(entry));
            continue;
        }
        let answer = call(inner, "LayThuTuc", || inner.sink.procedure(&code)).await;
        let at = inner.clock.now().as_microsecond();
        let entry = catalogue_entry(&answer);
        // Journalled when it decided something (a failure is the dossier's last error; retried
        // every round in an outage, it would push the dossier's own calls out of the journal).
        let said = match &entry {
            Ok(Entry::Known { name, .. }) => Some(format!("catalogue: MaTTHC {code} is \"{name}\"")),
            Ok(Entry::Unknown) => Some(format!("catalogue: MaTTHC {code} is not in the national catalogue")),
            Err(_) => None,
        };
        if let Some(said) = said {
            inner.journal.note(
                work.iter()
                    .filter(|w| w.open() && w.needs_catalogue && w.procedure == code)
                    .map(|w| journal::entry(&w.mahoso, at, "LayThuTuc", &answer, None, || said.clone())),
            );
        }
        if let Ok(entry) = &entry {
            inner.store.write(|tx| inner.catalogue.put(tx, &code, entry.clone(), now))?;
        }
        found.insert(code, entry);
    }
    let mut filled: Vec<usize> = Vec::new();
    for (i, w) in work.iter_mut().enumerate().filter(|(_, w)| w.open() && w.needs_catalogue) {
        match found.get(&w.procedure) {
            Some(Ok(Entry::Known { name, field_code, field_name, .. })) => {
                let mut payload: Value = serde_json::from_str(w.payload.get()).unwrap_or(Value::Null);
                if let Value::Object(p) = &mut payload {
                    fill_catalogue(p, name, field_code, field_name);
                }
                let text = serde_json::to_string(&payload).unwrap_or_default();
                w.payload_hash = stable_hash(text.as_bytes());
                w.payload = RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned());
                w.needs_catalogue = false;
                filled.push(i);
            }
            Some(Ok(Entry::Unknown)) => {
                w.fate = Some(Fate::Dead {
                    code: Some(6),
                    reason: format!(
                        "MaTTHC {} is not in the national catalogue (LayThuTuc found nothing)",
                        w.procedure
                    ),
                });
            }
            Some(Err(t)) => w.fate = Some(Fate::Retry(t.clone())),
            None => {}
        }
    }
    if !filled.is_empty() {
        let changed = inner.store.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE dossier SET payload_hash = ?3, needs_catalogue = 0 WHERE mahoso = ?1 AND version = ?2",
            )?;
            let mut body = tx.prepare_cached("UPDATE body SET payload = body_pack(?2) WHERE mahoso = ?1")?;
            let mut stale = Vec::new();
            for &i in &filled {
                let w = &work[i];
                if stmt.execute(params![w.mahoso, w.version, w.payload_hash])? == 0 {
                    stale.push(i);
                } else {
                    body.execute(params![w.mahoso, w.payload.get()])?;
                }
            }
            Ok(stale)
        })?;
        for i in changed {
            work[i].fate = Some(Fate::Later);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dossier payloads

/// A payload call's outcome for one dossier: acknowledged, or its fate; and whether the portal
/// answered, on the way, that it held the dossier otherwise than recorded.
struct PayloadOutcome {
    item: usize,
    result: Result<(), Fate>,
    switched: Option<Switched>,
}

/// What the portal said of a dossier's existence, against what was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switched {
    /// An update it did not know the dossier for (code 4), sent again as a create: it lost the
    /// dossier, and with it every history entry acknowledged before.
    Lost,
    /// A create it already held (code 3, "đã tồn tại"): what it holds is not known here; it is
    /// read back before anything is written.
    Existed,
}

/// Records that the national portal does not hold a dossier (any more): created again, with
/// its whole history, by the next write.
fn forget_national(tx: &rusqlite::Connection, mahoso: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE dossier SET national_exists = 0, acked_hash = NULL, acked_history = 0 WHERE mahoso = ?1",
    )?
    .execute([mahoso])?;
    Ok(())
}

fn dead(code: i64, reason: String) -> Fate {
    Fate::Dead { code: Some(code), reason }
}

/// Sends the payloads of `items` (indexes into `work`), isolating refused items; returns the
/// fate of each.
async fn send_payloads<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &[Work],
    updating: bool,
    items: Vec<usize>,
) -> Vec<PayloadOutcome> {
    let mut results: Vec<(usize, Result<(), Fate>)> = Vec::with_capacity(items.len());
    // Each group is sent as one call; refusals split it.
    let mut groups: Vec<(bool, Vec<usize>)> = vec![(updating, items)];
    let mut switched: HashMap<usize, Switched> = HashMap::new();
    let mut switches: HashMap<usize, u8> = HashMap::new();
    while let Some((updating, mut group)) = groups.pop() {
        if group.is_empty() {
            continue;
        }
        let payloads: Vec<&RawValue> = group.iter().map(|&i| &*work[i].payload).collect();
        let answer = call(inner, "DongBoHoSoMC", || inner.sink.sync_dossiers(updating, &payloads)).await;
        let names: Vec<&str> = group.iter().map(|&i| work[i].mahoso.as_str()).collect();
        let isolation = refusal_isolation(&answer, names.iter().copied());
        note_calls(inner, "DongBoHoSoMC", &answer, isolation, &names, |k| {
            format!("{} with status {}", if updating { "update" } else { "create" }, work[group[k]].status)
        });
        match answer {
            Answer::Ok(_) => results.extend(group.into_iter().map(|i| (i, Ok(())))),
            Answer::Retry(t) => results.extend(group.into_iter().map(|i| (i, Err(Fate::Retry(t.clone()))))),
            Answer::Refused { code, message } => {
                let dead = |code| Err(dead(code, refusal_reason(code, &message)));
                match isolation.unwrap_or(Isolation::WholeCall) {
                    Isolation::Item(p) => {
                        let i = group.remove(p);
                        // "đã tồn tại": it exists (an earlier answer was lost): replace it instead;
                        // unknown there: create it.
                        let switch = match code {
                            codes::EXISTS if !updating => Some(Switched::Existed),
                            codes::UNKNOWN_DOSSIER if updating => Some(Switched::Lost),
                            _ => None,
                        };
                        let before = switches.get(&i).copied().unwrap_or(0);
                        match switch {
                            // At most twice (lost, created, then found to exist); more is refused for good.
                            Some(s) if before < 2 && switched.get(&i) != Some(&s) => {
                                switched.insert(i, s);
                                switches.insert(i, before + 1);
                                match s {
                                    // It exists: what it holds is read back before anything
                                    // is written (nothing is sent that it holds already).
                                    Switched::Existed => results.push((
                                        i,
                                        Err(Fate::Retry(Transient {
                                            kind: TransientKind::BadAnswer,
                                            reason: "the national portal already holds this dossier (code 3): read back before anything is written".into(),
                                            maybe_applied: false,
                                            retry_after: None,
                                            http_status: None,
                                        })),
                                    )),
                                    // Durably, before the create leaves: a crash after it must
                                    // not leave the old acknowledgement standing (its history
                                    // would resume where the lost copy ended).
                                    Switched::Lost => {
                                        if inner
                                            .store
                                            .write(|tx| forget_national(tx, &work[i].mahoso))
                                            .is_ok()
                                        {
                                            groups.push((false, vec![i]));
                                        } else {
                                            results.push((i, Err(Fate::Later)));
                                        }
                                    }
                                }
                            }
                            _ => results.push((i, dead(code))),
                        }
                        groups.push((updating, group));
                    }
                    Isolation::TooMany if group.len() > 1 => {
                        inner.learn_item_limit(group.len() / 2);
                        let rest = group.split_off(group.len() / 2);
                        groups.push((updating, rest));
                        groups.push((updating, group));
                    }
                    Isolation::Halve if group.len() > 1 => {
                        let rest = group.split_off(group.len() / 2);
                        groups.push((updating, rest));
                        groups.push((updating, group));
                    }
                    Isolation::Halve => results.extend(group.into_iter().map(|i| (i, dead(code)))),
                    Isolation::TooMany | Isolation::WholeCall => {
                        let t = refused_call("DongBoHoSoMC", code, &message);
                        results.extend(group.into_iter().map(|i| (i, Err(Fate::Retry(t.clone())))));
                    }
                }
            }
        }
    }
    results
        .into_iter()
        .map(|(item, result)| PayloadOutcome { item, result, switched: switched.get(&item).copied() })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// History

/// What a history call did for one dossier, when it did not decide its fate.
#[derive(Debug)]
enum HistoryAck {
    /// This many entries were appended.
    Appended(usize),
    /// The national portal does not know the dossier: create it first.
    Missing,
}

type HistoryResult = Result<HistoryAck, Fate>;

/// Sends the entries `(work index, from, to)` of several dossiers in one call, isolating a
/// refused dossier's entries.
async fn send_history<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &[Work],
    slices: Vec<(usize, usize, usize)>,
) -> Vec<(usize, HistoryResult)> {
    let mut out = Vec::with_capacity(slices.len());
    let mut groups = vec![slices];
    while let Some(mut group) = groups.pop() {
        if group.is_empty() {
            continue;
        }
        let entries: Vec<&RawValue> =
            group.iter().flat_map(|&(i, from, to)| work[i].history[from..to].iter().map(|e| &**e)).collect();
        let answer = call(inner, "CapNhatTienDoHoSoMC", || inner.sink.append_history(&entries)).await;
        let names: Vec<&str> = group.iter().map(|&(i, ..)| work[i].mahoso.as_str()).collect();
        let isolation = refusal_isolation(&answer, names.iter().copied());
        note_calls(inner, "CapNhatTienDoHoSoMC", &answer, isolation, &names, |k| {
            let (i, from, to) = group[k];
            match to - from {
                1 => format!("history entry {to} of {}", work[i].history.len()),
                _ => format!("history entries {} to {to} of {}", from + 1, work[i].history.len()),
            }
        });
        match answer {
            Answer::Ok(_) => {
                out.extend(group.into_iter().map(|(i, from, to)| (i, Ok(HistoryAck::Appended(to - from)))))
            }
            Answer::Retry(t) => out.extend(group.into_iter().map(|(i, ..)| (i, Err(Fate::Retry(t.clone()))))),
            Answer::Refused { code, message } => {
                let dead =
                    |code| Err(dead(code, format!("history entry {}", refusal_reason(code, &message))));
                match isolation.unwrap_or(Isolation::WholeCall) {
                    Isolation::Item(p) => {
                        let (i, ..) = group.remove(p);
                        out.push((
                            i,
                            if code == codes::UNKNOWN_DOSSIER { Ok(HistoryAck::Missing) } else { dead(code) },
                        ));
                        groups.push(group);
                    }
                    Isolation::TooMany if entries.len() > 1 => {
                        inner.learn_item_limit(entries.len() / 2);
                        if group.len() > 1 {
                            let rest = group.split_off(group.len() / 2);
                            groups.push(rest);
                            groups.push(group);
                        } else {
                            // One dossier with more entries than the portal takes at once:
                            // send the older half now, the rest in a later call.
                            let (i, from, to) = group[0];
                            groups.push(vec![(i, from, from + (to - from) / 2)]);
                        }
                    }
                    Isolation::Halve if group.len() > 1 => {
                        let rest = group.split_off(group.len() / 2);
                        groups.push(rest);
                        groups.push(group);
                    }
                    Isolation::Halve => out.extend(group.into_iter().map(|(i, ..)| (i, dead(code)))),
                    Isolation::TooMany | Isolation::WholeCall => {
                        let t = refused_call("CapNhatTienDoHoSoMC", code, &message);
                        out.extend(group.into_iter().map(|(i, ..)| (i, Err(Fate::Retry(t.clone())))));
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Recording outcomes

/// Durably marks `items` as having a write of `kind` in flight, before it leaves.
fn mark_inflight(
    inner_store: &crate::store::Store,
    work: &mut [Work],
    items: &[usize],
    kind: InFlight,
) -> Result<(), StoreError> {
    inner_store.write(|tx| {
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

/// Commits a batch of outcomes in one transaction.
fn settle_fates(
    tx: &rusqlite::Connection,
    work: &[Work],
    items: &[usize],
    now: i64,
    inner_cfg: &super::EngineConfig,
    seed: u64,
) -> rusqlite::Result<()> {
    for &i in items {
        let w = &work[i];
        match &w.fate {
            Some(Fate::Dead { code, reason }) => {
                tx.prepare_cached("UPDATE dossier SET inflight = 0 WHERE mahoso = ?1 AND version = ?2")?
                    .execute(params![w.mahoso, w.version])?;
                // Only the version that was refused is parked; a newer one gets its chance.
                let parked = tx
                    .prepare_cached(
                        "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason)
                         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM dossier WHERE mahoso = ?1 AND version = ?6)
                         ON CONFLICT(mahoso) DO UPDATE SET dead_at = excluded.dead_at, attempts = excluded.attempts,
                             error_code = excluded.error_code, reason = excluded.reason",
                    )?
                    .execute(params![w.mahoso, now, w.attempts + 1, code, reason, w.version])?;
                if parked > 0 {
                    tx.prepare_cached("DELETE FROM outbox WHERE mahoso = ?1")?.execute([&w.mahoso])?;
                } else {
                    tx.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE mahoso = ?1")?
                        .execute(params![w.mahoso, now])?;
                }
            }
            Some(Fate::Retry(t)) => {
                let attempts = w.attempts + 1;
                let delay = if t.kind == TransientKind::RateLimited {
                    // Not the dossier's trouble: wait as long as the portal asked, no longer.
                    t.retry_after.unwrap_or(Duration::from_secs(1))
                } else {
                    let seed = seed ^ stable_hash(w.mahoso.as_bytes()) as u64;
                    let delay =
                        super::retry_delay(attempts, inner_cfg.push_retry.0, inner_cfg.push_retry.1, seed);
                    t.retry_after.map_or(delay, |after| delay.max(after))
                };
                let next = now + delay.as_micros() as i64;
                tx.prepare_cached("UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE mahoso = ?1")?
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
            Some(Fate::Later) => {
                tx.prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE mahoso = ?1")?
                    .execute(params![w.mahoso, now])?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Records what the portal acknowledged of `items`: their payload and the history entries
/// it holds (one statement for both phases: a dossier only gets history once its payload is
/// acknowledged, so the payload's hash and status are current in either).
fn save_acks(tx: &rusqlite::Connection, work: &[Work], items: &[usize], now: i64) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE dossier SET national_exists = 1, acked_hash = ?2, acked_status = ?3, acked_history = ?4,
             acked_at = ?5, inflight = 0 WHERE mahoso = ?1",
    )?;
    for &i in items {
        let w = &work[i];
        stmt.execute(params![w.mahoso, w.payload_hash, w.status, w.acked_history as i64, now])?;
    }
    Ok(())
}

/// Ends a round for dossiers without a fate: in sync leaves the outbox; anything left (a
/// newer version, more history) stays due at once.
fn finish(tx: &rusqlite::Connection, work: &[Work], now: i64) -> rusqlite::Result<Vec<i64>> {
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

// ---------------------------------------------------------------------------------------------
// A round

/// Runs a phase's calls concurrently (the limiter decides how many are really in flight).
async fn run_calls<T, Fut>(concurrency: usize, calls: Vec<Fut>) -> Vec<T>
where
    Fut: Future<Output = Vec<T>>,
{
    futures::stream::iter(calls)
        .buffer_unordered(concurrency.max(1))
        .flat_map(futures::stream::iter)
        .collect()
        .await
}

/// Records a dossier's fate, decided by a call, for this phase's settlement.
fn decide(work: &mut [Work], fated: &mut Vec<usize>, i: usize, fate: Fate) {
    work[i].fate = Some(fate);
    fated.push(i);
}

/// Phase 3: the dossiers whose payload the portal does not hold as it is, created or
/// replaced in calls of at most the item limit.
async fn push_payloads<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &mut [Work],
    now: i64,
    seed: u64,
) -> Result<(), StoreError> {
    let batch = inner.item_limit();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    for (i, w) in work.iter().enumerate().filter(|(_, w)| w.open() && !w.payload_acked()) {
        if w.national_exists { updates.push(i) } else { creates.push(i) }
    }
    let sending: Vec<usize> = creates.iter().chain(&updates).copied().collect();
    if sending.is_empty() {
        return Ok(());
    }
    mark_inflight(&inner.store, work, &sending, InFlight::Payload)?;
    let calls: Vec<_> = creates
        .chunks(batch)
        .map(|c| (false, c.to_vec()))
        .chain(updates.chunks(batch).map(|c| (true, c.to_vec())))
        .map(|(updating, items)| send_payloads(inner, work, updating, items))
        .collect();
    let results = run_calls(inner.cfg.max_concurrency, calls).await;
    let mut acked = Vec::new();
    let mut fated = Vec::new();
    let mut lost = Vec::new();
    let mut existed = Vec::new();
    for PayloadOutcome { item: i, result, switched } in results {
        if switched == Some(Switched::Lost) {
            // Whatever became of the new create, the portal had lost the dossier: every entry
            // goes again, from the first, once it holds the dossier again.
            let w = &mut work[i];
            w.national_exists = false;
            w.acked_hash = None;
            w.acked_history = 0;
            lost.push(i);
            tracing::warn!(event = "dossier_recreated", dossier = %w.mahoso, "update refused: the national portal does not know this dossier; it is created again, its whole history after it");
        }
        if switched == Some(Switched::Existed) {
            existed.push(i);
        }
        match result {
            Ok(()) => acked.push(i),
            Err(fate) => decide(work, &mut fated, i, fate),
        }
    }
    for &i in &acked {
        let w = &mut work[i];
        w.national_exists = true;
        w.acked_hash = Some(w.payload_hash);
        w.inflight = InFlight::None;
    }
    for &i in &existed {
        // Read back before anything is sent (after a backoff: should the look-up keep saying
        // "not there" while creates say "exists", the two do not chase each other).
        work[i].national_exists = true;
        work[i].inflight = InFlight::History;
        work[i].unresolved = InFlight::History;
    }
    inner.stats.dossiers_acked(acked.len());
    inner.journal.write(&inner.store, |tx| {
        save_acks(tx, work, &acked, now)?;
        let mut uncertain =
            tx.prepare_cached("UPDATE dossier SET national_exists = 1, inflight = ?2 WHERE mahoso = ?1")?;
        for &i in &existed {
            uncertain.execute(params![work[i].mahoso, InFlight::History.db()])?;
        }
        if !lost.is_empty() {
            // The portal lost what it had acknowledged: the audit checks everything again.
            super::audit::start_sweep(tx, now)?;
        }
        settle_fates(tx, work, &fated, now, &inner.cfg, seed)
    })
}

/// Phase 4: the history entries not yet acknowledged of the dossiers whose current payload
/// the portal holds, oldest first, whole dossiers packed into calls of at most the item limit.
async fn push_history<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &mut [Work],
    now: i64,
    seed: u64,
) -> Result<(), StoreError> {
    let batch = inner.item_limit();
    let mut slices = Vec::new();
    for (i, w) in work.iter().enumerate() {
        if w.open() && w.payload_acked() && w.acked_history < w.history.len() {
            let to = (w.acked_history + batch).min(w.history.len());
            slices.push((i, w.acked_history, to));
        }
    }
    if slices.is_empty() {
        return Ok(());
    }
    let sending: Vec<usize> = slices.iter().map(|s| s.0).collect();
    mark_inflight(&inner.store, work, &sending, InFlight::History)?;
    let mut calls_slices: Vec<Vec<(usize, usize, usize)>> = Vec::new();
    let mut current: Vec<(usize, usize, usize)> = Vec::new();
    let mut size = 0;
    for s in slices {
        let n = s.2 - s.1;
        if size + n > batch && !current.is_empty() {
            calls_slices.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(s);
        size += n;
    }
    if !current.is_empty() {
        calls_slices.push(current);
    }
    let calls: Vec<_> = calls_slices.into_iter().map(|s| send_history(inner, work, s)).collect();
    let results = run_calls(inner.cfg.max_concurrency, calls).await;
    let mut acked = Vec::new();
    let mut missing = Vec::new();
    let mut fated = Vec::new();
    let mut entries = 0;
    for (i, result) in results {
        match result {
            Ok(HistoryAck::Appended(n)) => {
                work[i].acked_history += n;
                work[i].inflight = InFlight::None;
                entries += n;
                acked.push(i);
            }
            Ok(HistoryAck::Missing) => {
                // The portal lost or never had the dossier: create it again, soon.
                let w = &mut work[i];
                w.national_exists = false;
                w.acked_hash = None;
                w.acked_history = 0;
                w.inflight = InFlight::None;
                missing.push(i);
                tracing::warn!(event = "dossier_recreated", dossier = %w.mahoso, "history refused: the national portal does not know this dossier; it will be created again");
            }
            Err(fate) => decide(work, &mut fated, i, fate),
        }
    }
    inner.stats.entries_acked(entries);
    inner.journal.write(&inner.store, |tx| {
        let mut forget = tx.prepare_cached(
            "UPDATE dossier SET national_exists = 0, acked_hash = NULL, acked_history = 0, inflight = 0 WHERE mahoso = ?1",
        )?;
        for &i in &missing {
            forget.execute([&work[i].mahoso])?;
        }
        if !missing.is_empty() {
            // The portal lost what it had acknowledged: the audit checks everything again.
            super::audit::start_sweep(tx, now)?;
        }
        save_acks(tx, work, &acked, now)?;
        settle_fates(tx, work, &fated, now, &inner.cfg, seed)
    })
}

/// The end of a round: what was parked or rescheduled before any call (read-back,
/// catalogue) is settled; dossiers in sync leave the outbox; metrics and logs for each fate.
fn close_round<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    work: &[Work],
    now: i64,
    seed: u64,
) -> Result<(), StoreError> {
    let earlier: Vec<usize> = (0..work.len()).filter(|&i| work[i].fate.is_some()).collect();
    let end = inner.clock.now().as_microsecond();
    let lags = inner.journal.write(&inner.store, |tx| {
        settle_fates(tx, work, &earlier, now, &inner.cfg, seed)?;
        finish(tx, work, end)
    })?;
    for lag in &lags {
        let seconds = (*lag).max(0) as f64 / 1e6;
        metrics::histogram!(m::SYNC_LAG).record(seconds);
        inner.stats.synced(seconds);
    }
    for w in work {
        match &w.fate {
            Some(Fate::Dead { code, reason }) => {
                metrics::counter!(m::DEAD).increment(1);
                inner.stats.dead();
                tracing::warn!(event = "dossier_parked", dossier = %w.mahoso, error_code = code, reason = %reason);
            }
            Some(Fate::Unmatched { reason }) => {
                metrics::counter!(m::DEAD).increment(1);
                metrics::counter!(m::READBACKS_INCONCLUSIVE).increment(1);
                inner.stats.dead();
                tracing::warn!(event = "dossier_parked", dossier = %w.mahoso, reason = %reason);
            }
            Some(Fate::Retry(t)) => {
                inner.stats.retry();
                tracing::debug!(event = "dossier_rescheduled", dossier = %w.mahoso, attempt = w.attempts + 1, error = %t.reason);
            }
            _ => {}
        }
    }
    Ok(())
}

/// One round, its phases in order (see the module's comment); returns how many dossiers it
/// handled.
pub(crate) async fn round<S: Source, N: Sink, C: Clock>(inner: &Inner<S, N, C>) -> Result<usize, StoreError> {
    let now = inner.clock.now().as_microsecond();
    /// Empties the round's set of dossiers however the round ends.
    struct Round<'a>(&'a std::sync::Mutex<std::collections::HashSet<String>>);
    impl Drop for Round<'_> {
        fn drop(&mut self) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
    let _round = Round(&inner.in_round);
    let mut work = {
        // Loaded and registered at once, so that the audit corrects none of them meanwhile.
        let mut in_round = inner.in_round.lock().unwrap_or_else(|p| p.into_inner());
        let work = load_due(inner, now, inner.cfg.round_size)?;
        in_round.extend(work.iter().map(|w| w.mahoso.clone()));
        work
    };
    if work.is_empty() {
        look_up_durations(inner).await?;
        return Ok(0);
    }
    let seed = inner.next_seed();
    resolve_uncertain(inner, &mut work).await?;
    fill_catalogues(inner, &mut work).await?;
    push_payloads(inner, &mut work, now, seed).await?;
    push_history(inner, &mut work, now, seed).await?;
    close_round(inner, &work, now, seed)?;
    look_up_durations(inner).await?;
    Ok(work.len())
}

/// The time of the next due outbox row, in µs.
fn next_due(conn: &rusqlite::Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(next_attempt_at) FROM outbox")?.query_row([], |r| r.get(0))
}

pub(crate) async fn run<S: Source, N: Sink, C: Clock>(inner: Arc<Inner<S, N, C>>, token: CancellationToken) {
    let mut trouble = Trouble::new("national push");
    while !token.is_cancelled() {
        match round(&inner).await {
            Ok(0) => {
                trouble.recovered();
                // Nothing due: sleep until the next retry is due, or the poller brings work.
                let now = inner.clock.now().as_microsecond();
                let wait = match inner.store.read(next_due) {
                    Ok(Some(at)) => Duration::from_micros((at - now).clamp(1_000, 1_000_000) as u64),
                    _ => Duration::from_secs(1),
                };
                tokio::select! {
                    biased;
                    () = token.cancelled() => break,
                    () = inner.pusher_wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Ok(_) => trouble.recovered(),
            Err(e) => {
                // The database refused a write: nothing of this round's bookkeeping was lost
                // that a read-back cannot restore (in-flight marks are written first).
                let wait = Duration::from_secs(1);
                trouble.failed(&format!("database: {e}"), wait);
                inner.note_push_error(&format!("database: {e}"));
                tokio::select! {
                    biased;
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
