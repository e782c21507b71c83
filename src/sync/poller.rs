//! The poller: reads the provincial listing and records every change in the store, one
//! transaction per page together with the cursor that page moved (so a crash replays at most
//! one page, whose records are then recognised as seen).
//!
//! Two passes share the work. The head pass reads strictly after the head cursor: fresh
//! changes, fast. A timestamp cursor is not a log, though: a change can become visible after
//! others with a later `updated_at`. So a trailing pass follows `look_back` behind the clock
//! and re-reads that window once; by then every change in it is visible. Each record is thus
//! read about twice, whatever the window's length. The reconciler's full pass catches
//! anything later still.

use std::{sync::Arc, time::Duration};

use backon::Retryable;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, value::RawValue};
use tokio_util::sync::CancellationToken;

use super::{
    Inner, fresh,
    ports::{Clock, Cursor, Page, Raw, Record, Sink, Source, SourceError},
    trouble::Trouble,
};
use crate::{
    domain::{
        entry::identity,
        normalize::{Quarantined, fill_catalogue, normalize_raw, record_position, record_version},
        stable_hash,
    },
    metrics as m,
    store::{
        self,
        body::BodyError,
        meta_set,
        state::{BACKFILL, BACKFILL_THEN, HEAD, TAIL, read_cursor, write_cursor},
    },
};

/// Quarantined records are kept up to this size, enough to see what was wrong.
const MAX_QUARANTINED_RECORD: usize = 64 * 1024;

/// What applying one page did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub read: usize,
    /// New dossiers or newer versions recorded.
    pub changed: usize,
    /// Already known at this version or newer.
    pub seen: usize,
    pub quarantined: usize,
    /// Dossiers put (back) in the outbox.
    pub enqueued: usize,
}

/// What judging a record came to, before the transaction that records it.
enum Judged {
    /// Already recorded at this version or newer (or with the same source fingerprint).
    Seen,
    Valid(Box<Prepared>),
    Quarantined(Box<Quarantined>),
}

/// A valid record in the form it is stored in: normalised, serialised and compressed.
struct Prepared {
    mahoso: String,
    version: i64,
    updated_at: i64,
    status: i64,
    procedure: String,
    needs_catalogue: bool,
    local_status: String,
    payload_hash: i64,
    packed_payload: Vec<u8>,
    packed_history: Vec<u8>,
    /// What the pusher sends, kept for it once recorded (`fresh`).
    payload: Box<RawValue>,
    history: Vec<Box<RawValue>>,
}

/// Records a page's items and, in the same transaction, the cursor it moved.
///
/// The records are judged first, outside the transaction (which holds the one connection
/// the pusher also writes with): which are already known (one read), then normalising,
/// serialising and compressing the others. The transaction only writes, and checks again
/// what the read found, since a reconciliation pass may have recorded a record meanwhile.
pub(crate) fn apply_page<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    records: &[Record],
    cursor: Option<(&str, &Cursor)>,
) -> Result<Applied, store::StoreError> {
    let now = inner.clock.now().as_microsecond();
    // Cheap recognition of what was already seen, before normalising anything: an older or
    // equal version, or (for sources without a version counter) the same fingerprint as the
    // state recorded.
    let seen: Vec<bool> =
        inner.store.read(|c| records.iter().map(|record| already_seen(c, record)).collect())?;
    // Each record is read (`Raw`) only while it is judged: a page's worth of them at once
    // was a few MiB.
    let mut judged: Vec<Judged> = records
        .iter()
        .zip(seen)
        .map(
            |(record, seen)| {
                if seen { Ok(Judged::Seen) } else { judge(inner, record, &record.raw.view(), now) }
            },
        )
        .collect::<Result<_, _>>()?;
    let mut due = Vec::new();
    let applied = inner.store.write(|tx| {
        due.clear();
        let mut applied = Applied { read: records.len(), ..Applied::default() };
        for (i, (record, judged)) in records.iter().zip(&judged).enumerate() {
            match judged {
                Judged::Seen => applied.seen += 1,
                Judged::Valid(p) => match record_dossier(tx, p, record, now)? {
                    Recorded::Seen => applied.seen += 1,
                    Recorded::Changed { enqueued, in_sync } => {
                        applied.changed += 1;
                        applied.enqueued += usize::from(enqueued);
                        if !in_sync {
                            due.push(i);
                        }
                    }
                    Recorded::Quarantined => applied.quarantined += 1,
                },
                Judged::Quarantined(q) => {
                    if record_quarantine(tx, q, record, record.source_id.as_deref(), now)? {
                        applied.quarantined += 1;
                    } else {
                        applied.seen += 1;
                    }
                }
            }
        }
        if let Some((key, cursor)) = cursor {
            write_cursor(tx, key, cursor)?;
        }
        Ok(applied)
    })?;
    // Committed: the pusher takes these bodies from memory rather than reading them back.
    for i in due {
        if let Judged::Valid(p) = std::mem::replace(&mut judged[i], Judged::Seen) {
            let Prepared { mahoso, version, payload_hash, payload, history, .. } = *p;
            inner.fresh.put(mahoso, fresh::Body { version, payload_hash, payload, history });
        }
    }
    // Once enough dossiers are stored, their bodies are compressed with a dictionary trained
    // from them (store::body): a no-op after that, and cheap before it.
    if applied.changed > 0
        && let Err(e) = inner.store.train_body_dictionary()
    {
        tracing::warn!(event = "body_dictionary_failed", error = %e, "bodies stay compressed without a dictionary");
    }
    Ok(applied)
}

/// Whether this version of the record is already recorded (see [`apply_page`]).
fn already_seen(c: &rusqlite::Connection, record: &Record) -> rusqlite::Result<bool> {
    let Some((mahoso, version)) = record_version(&record.raw) else {
        return Ok(false);
    };
    Ok(known_version(c, &mahoso)?.is_some_and(|(known, known_fingerprint)| {
        known >= version || (record.fingerprint.is_some() && record.fingerprint == known_fingerprint)
    }))
}

/// Normalises a record and prepares what is stored of it, or says why it is quarantined.
fn judge<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    record: &Record,
    raw: &Raw,
    now: i64,
) -> Result<Judged, store::StoreError> {
    let mut n = match normalize_raw(raw, &inner.cfg.status_map) {
        Ok(n) => n,
        Err(mut q) => {
            // A record too deep to read still says which dossier and version it is, when its
            // text gives them plainly: its versions land on that dossier's row, which goes
            // when a valid version comes.
            if let Raw::Unreadable { .. } = raw
                && let Some((mahoso, version)) = record_version(&record.raw)
                && !mahoso.is_empty()
            {
                q.key = mahoso.clone();
                q.mahoso = Some(mahoso);
                q.version = Some(version);
                q.updated_at = record_position(&record.raw).map(|(at, _)| at);
            }
            // A record without MaHoSo is kept under the source's own key when it has one:
            // every version lands on one row, and the row goes when the record is fixed.
            if q.mahoso.is_none()
                && let Some(id) = &record.source_id
            {
                q.key = format!("no-MaHoSo:id:{id}");
            }
            if let Some(hint) = q.field.and_then(|f| inner.source.explain(f)) {
                q.reason = format!("{} ({hint})", q.reason);
            }
            return Ok(Judged::Quarantined(q));
        }
    };
    // Without NgayHenTra, the on-time figure needs the procedure's duration (`dvc-sync
    // report`): the pusher asks the catalogue, without holding the dossier back for it.
    if n.dossier.get("NgayHenTra").is_none_or(str::is_empty) {
        inner.catalogue.want_duration(&n.procedure, now);
    }
    if n.needs_catalogue
        && let Some(entry) = inner.catalogue.known(&n.procedure, now)
    {
        fill_catalogue(&mut n.dossier, &entry.name, &entry.field_code, &entry.field_name);
        n.needs_catalogue = false;
    }
    // Serialised once: the stored history is its entries' JSON in an array, as serde_json
    // writes a Vec<Value>.
    let payload = to_raw(&n.dossier);
    let history: Vec<Box<RawValue>> = n.history.iter().map(to_raw).collect();
    let history_text = serde_json::to_string(&history).unwrap_or_default();
    let packed = inner.store.pack(payload.get()).and_then(|p| Ok((p, inner.store.pack(&history_text)?)));
    let (packed_payload, packed_history) = match packed {
        Ok(packed) => packed,
        // A body beyond any sane size is this record's trouble; anything else (zstd failing)
        // is the store's, and the page is read again after the pause, as when a write fails.
        Err(e @ BodyError::TooLarge(_)) => {
            return Ok(Judged::Quarantined(Box::new(Quarantined {
                key: n.mahoso.clone(),
                mahoso: Some(n.mahoso),
                version: Some(n.version),
                updated_at: Some(n.updated_at),
                reason: format!("cannot be stored: {e}"),
                field: None,
            })));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Judged::Valid(Box::new(Prepared {
        payload_hash: stable_hash(payload.get().as_bytes()),
        mahoso: n.mahoso,
        version: n.version,
        updated_at: n.updated_at.as_microsecond(),
        status: i64::from(n.status.code()),
        procedure: n.procedure,
        needs_catalogue: n.needs_catalogue,
        local_status: n.local_status,
        packed_payload,
        packed_history,
        payload,
        history,
    })))
}

/// A value's JSON (serialising JSON values cannot fail).
fn to_raw<T: serde::Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The version (and source fingerprint) already recorded for this MaHoSo, if any.
/// Quarantined versions do not count: the same version read again may be readable now
/// (bytes mangled in transit), and the few quarantined records are cheap to judge again.
fn known_version(c: &rusqlite::Connection, mahoso: &str) -> rusqlite::Result<Option<(i64, Option<i64>)>> {
    c.prepare_cached("SELECT version, source_hash FROM dossier WHERE mahoso = ?1")?
        .query_row([mahoso], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// A recorded dossier's version, acknowledged history length and payload hash, stored
/// history, source key and source fingerprint.
type Existing = (i64, i64, Option<i64>, String, Option<String>, Option<i64>);

enum Recorded {
    Seen,
    /// Recorded; put in the outbox if it was not there, due unless the portal holds it.
    Changed {
        enqueued: bool,
        in_sync: bool,
    },
    Quarantined,
}

fn record_dossier(
    tx: &rusqlite::Connection,
    p: &Prepared,
    record: &Record,
    now: i64,
) -> rusqlite::Result<Recorded> {
    let Record { fingerprint, source_id, .. } = record;
    let existing: Option<Existing> = tx
        .prepare_cached(
            "SELECT d.version, d.acked_history, d.acked_hash, body_text(b.history), d.source_id, d.source_hash
             FROM dossier d JOIN body b ON b.mahoso = d.mahoso WHERE d.mahoso = ?1",
        )?
        .query_row([&p.mahoso], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    if let Some((version, acked_history, _, stored_history, known_source, known_fingerprint)) = &existing {
        // Two source records claim one MaHoSo (a number given twice): the first one read
        // keeps it; the other is parked under its own key until the source is corrected.
        if let (Some(known), Some(this)) = (known_source, source_id)
            && known != this
        {
            let q = Quarantined {
                key: format!("{}#id:{this}", p.mahoso),
                mahoso: Some(p.mahoso.clone()),
                version: Some(p.version),
                updated_at: Timestamp::from_microsecond(p.updated_at).ok(),
                reason: format!(
                    "MaHoSo {} is also the dossier of source record {known}: one MaHoSo, two records (this is {this})",
                    p.mahoso
                ),
                field: Some("MaHoSo"),
            };
            record_quarantine(tx, &q, record, Some(this), now)?;
            return Ok(Recorded::Quarantined);
        }
        if *version >= p.version || (fingerprint.is_some() && fingerprint == known_fingerprint) {
            return Ok(Recorded::Seen);
        }
        // History is append-only; what was already sent must still be there, unchanged.
        let acked = *acked_history as usize;
        if acked > 0 {
            let stored: Vec<Value> = serde_json::from_str(stored_history).unwrap_or_default();
            let new = p
                .history
                .iter()
                .take(acked)
                .map(|e| serde_json::from_str::<Value>(e.get()).unwrap_or_default());
            let intact = p.history.len() >= acked
                && stored.len() >= acked
                && stored[..acked].iter().zip(new).all(|(a, b)| identity(a) == identity(&b));
            if !intact {
                let q = Quarantined {
                    key: p.mahoso.clone(),
                    mahoso: Some(p.mahoso.clone()),
                    version: Some(p.version),
                    updated_at: Timestamp::from_microsecond(p.updated_at).ok(),
                    reason: format!(
                        "history rewritten: the first {acked} entries were already sent to the national portal and have changed or gone"
                    ),
                    field: None,
                };
                record_quarantine(tx, &q, record, source_id.as_deref(), now)?;
                return Ok(Recorded::Quarantined);
            }
        }
    }
    tx.prepare_cached(
        "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure,
                              needs_catalogue, history_len, local_status, source_hash, source_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(mahoso) DO UPDATE SET
             version = excluded.version, updated_at = excluded.updated_at, seen_at = excluded.seen_at,
             payload_hash = excluded.payload_hash, status = excluded.status,
             procedure = excluded.procedure, needs_catalogue = excluded.needs_catalogue,
             history_len = excluded.history_len, local_status = excluded.local_status,
             source_hash = excluded.source_hash, source_id = excluded.source_id",
    )?
    .execute(params![
        p.mahoso,
        p.version,
        p.updated_at,
        now,
        p.payload_hash,
        p.status,
        p.procedure,
        p.needs_catalogue,
        p.history.len() as i64,
        p.local_status,
        fingerprint,
        source_id,
    ])?;
    // Packed outside the transaction (`Store::pack`, what `body_pack` does in SQL).
    tx.prepare_cached(
        "INSERT INTO body (mahoso, payload, history) VALUES (?1, ?2, ?3)
         ON CONFLICT(mahoso) DO UPDATE SET payload = excluded.payload, history = excluded.history",
    )?
    .execute(params![p.mahoso, p.packed_payload, p.packed_history])?;
    // A valid version supersedes whatever was quarantined under this MaHoSo, and earlier
    // versions of the same source record (without a MaHoSo then, or a malformed one).
    tx.prepare_cached("DELETE FROM quarantine WHERE key = ?1")?.execute([&p.mahoso])?;
    if let Some(id) = source_id {
        tx.prepare_cached("DELETE FROM quarantine WHERE source_id = ?1")?.execute([id])?;
    }
    let acked_hash = existing.as_ref().and_then(|e| e.2);
    let acked_history = existing.as_ref().map_or(0, |e| e.1);
    let in_sync = acked_hash == Some(p.payload_hash) && acked_history == p.history.len() as i64;
    let mut enqueued = false;
    if !in_sync {
        // A new version is a new chance for a dossier the national portal refused.
        tx.prepare_cached("DELETE FROM dead WHERE mahoso = ?1")?.execute([&p.mahoso])?;
        enqueued = tx
            .prepare_cached(
                "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at, attempts)
                 VALUES (?1, ?2, ?2, 0) ON CONFLICT(mahoso) DO NOTHING",
            )?
            .execute(params![p.mahoso, now])?
            > 0;
    }
    Ok(Recorded::Changed { enqueued, in_sync })
}

/// Records a quarantined record; false when this version was already recorded.
fn record_quarantine(
    tx: &rusqlite::Connection,
    q: &Quarantined,
    record: &Record,
    source_id: Option<&str>,
    now: i64,
) -> rusqlite::Result<bool> {
    let known: Option<Option<i64>> = tx
        .prepare_cached("SELECT version FROM quarantine WHERE key = ?1")?
        .query_row([&q.key], |r| r.get(0))
        .optional()?;
    if let (Some(Some(known)), Some(version)) = (known, q.version)
        && known >= version
    {
        tx.prepare_cached("UPDATE quarantine SET last_seen_at = ?2 WHERE key = ?1")?
            .execute(params![q.key, now])?;
        return Ok(false);
    }
    // A valid newer version of the same dossier is already recorded: this one is stale.
    if let (Some(mahoso), Some(version)) = (&q.mahoso, q.version) {
        let newer: Option<i64> = tx
            .prepare_cached("SELECT version FROM dossier WHERE mahoso = ?1")?
            .query_row([mahoso], |r| r.get(0))
            .optional()?;
        if newer.is_some_and(|v| v >= version) {
            return Ok(false);
        }
    }
    let mut text = record.raw.view().to_value().to_string();
    if text.len() > MAX_QUARANTINED_RECORD {
        let cut = (0..=MAX_QUARANTINED_RECORD).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
    }
    tx.prepare_cached(
        "INSERT INTO quarantine (key, mahoso, version, updated_at, reason, record, first_seen_at, last_seen_at, source_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
         ON CONFLICT(key) DO UPDATE SET mahoso = excluded.mahoso, version = excluded.version,
             updated_at = excluded.updated_at, reason = excluded.reason, record = excluded.record,
             last_seen_at = excluded.last_seen_at, source_id = excluded.source_id",
    )?
    .execute(params![
        q.key,
        q.mahoso,
        q.version,
        q.updated_at.map(|t| t.as_microsecond()),
        q.reason,
        text,
        now,
        source_id
    ])?;
    tracing::warn!(event = "record_quarantined", dossier = q.mahoso.as_deref().unwrap_or(&q.key), reason = %q.reason);
    Ok(true)
}

/// The furthest position among `records` and `end` (never behind `current`: a page that goes
/// backwards cannot move the cursor back).
pub(crate) fn furthest(records: &[Record], end: Option<&Cursor>, current: Option<&Cursor>) -> Option<Cursor> {
    let on_page = records.iter().filter_map(|r| r.position.as_ref()).chain(end).max().cloned();
    match (on_page, current) {
        (Some(p), Some(c)) if &p <= c => Some(c.clone()),
        (Some(p), _) => Some(p),
        (None, c) => c.cloned(),
    }
}

/// Which of the source's two orders a page is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Changes after the cursor (the head and look-back passes).
    Changes,
    /// Every record once (the reconciler's full pass).
    Scan,
}

/// Reads one page, retrying failures with capped, jittered backoff until it succeeds or the
/// daemon stops (None).
pub(crate) async fn fetch_page<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    token: &CancellationToken,
    read: Read,
    cursor: Option<&Cursor>,
    trouble: &mut Trouble,
) -> Option<Page> {
    let limit = inner.cfg.page_size;
    let backoff = super::backoff(inner.cfg.poll_retry.0, inner.cfg.poll_retry.1, inner.next_seed());
    let attempt = || async {
        match read {
            Read::Changes => inner.source.page(cursor, limit).await,
            Read::Scan => inner.source.scan(cursor, limit).await,
        }
    };
    let retrying =
        attempt.retry(backoff).sleep(tokio::time::sleep).notify(|e: &SourceError, wait: Duration| {
            metrics::counter!(m::PAGES, "outcome" => "failed").increment(1);
            inner.stats.page_failed();
            trouble.failed(&e.reason, wait);
            inner.note_poll_error(&e.reason);
        });
    tokio::select! {
        biased;
        () = token.cancelled() => None,
        page = retrying => page.ok(),
    }
}

fn apply_and_count<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    records: &[Record],
    cursor: Option<(&str, &Cursor)>,
) -> Option<Applied> {
    match apply_page(inner, records, cursor) {
        Ok(applied) => {
            metrics::counter!(m::PAGES, "outcome" => "ok").increment(1);
            metrics::counter!(m::RECORDS, "result" => "changed").increment(applied.changed as u64);
            metrics::counter!(m::RECORDS, "result" => "seen").increment(applied.seen as u64);
            metrics::counter!(m::RECORDS, "result" => "quarantined").increment(applied.quarantined as u64);
            inner.stats.page_applied(&applied);
            if applied.enqueued > 0 || applied.changed > 0 {
                inner.pusher_wake.notify_one();
            }
            Some(applied)
        }
        Err(e) => {
            // The database refused (disk full, read-only): nothing was committed, so the
            // cursor did not move; the page is read again after the pause.
            tracing::error!(event = "store_failed", what = "recording a page", error = %e);
            inner.note_poll_error(&format!("cannot record a page: {e}"));
            None
        }
    }
}

/// Reads after the cursor kept under `key` to the end of the source, in `read`'s order (the
/// change listing for the head pass; the scan for the first backfill). False if stopped or
/// the store failed.
///
/// The next page is fetched while this one is recorded (its position is known as soon as the
/// page is read): the provincial portal's answer time and the local write overlap. The head
/// cursor is written only with the page that moved it, so a crash still replays at most one
/// page.
async fn head_pass<S: Source, N: Sink, C: Clock>(
    inner: &Arc<Inner<S, N, C>>,
    token: &CancellationToken,
    trouble: &mut Trouble,
    read: Read,
    key: &'static str,
) -> bool {
    let mut cursor = match inner.store.read(|c| read_cursor(c, key)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(event = "store_failed", what = "reading the cursor", error = %e);
            return false;
        }
    };
    let Some(mut page) = fetch_page(inner, token, read, cursor.as_ref(), trouble).await else {
        return false;
    };
    loop {
        trouble.recovered();
        let next = furthest(&page.records, page.end.as_ref(), cursor.as_ref());
        let stuck = next.is_none() || next == cursor;
        let prefetch = (page.has_more && !stuck).then(|| {
            let (inner, token, after) = (inner.clone(), token.clone(), next.clone());
            let mut trouble = std::mem::replace(trouble, Trouble::new("provincial poll"));
            let task = tokio::spawn(async move {
                let page = fetch_page(&inner, &token, read, after.as_ref(), &mut trouble).await;
                (page, trouble)
            });
            let guard = super::AbortOnDrop(vec![task.abort_handle()]);
            (task, guard)
        });
        let Some(_) = apply_and_count(inner, &page.records, next.as_ref().map(|c| (key, c))) else {
            return false;
        };
        inner.note_poll_success();
        if !page.has_more {
            return true;
        }
        let Some((task, _guard)) = prefetch else {
            // A full page without a usable position: it cannot be read past. Say so loudly;
            // the reconciler's full pass still covers these records.
            tracing::error!(
                event = "cursor_stuck",
                "a full page gave no position to read after; waiting for the next poll"
            );
            return true;
        };
        let Ok((fetched, returned)) = task.await else { return false };
        *trouble = returned;
        let Some(fetched) = fetched else { return false };
        page = fetched;
        cursor = next;
    }
}

/// Re-reads the look-back window once it is old enough for every change in it to be visible.
async fn tail_pass<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    token: &CancellationToken,
    trouble: &mut Trouble,
) -> bool {
    let look_back = inner.cfg.look_back;
    if look_back.is_zero() {
        return true;
    }
    let boundary = inner.clock.now().checked_sub(look_back).unwrap_or(Timestamp::UNIX_EPOCH);
    loop {
        let cursor = match inner.store.read(|c| read_cursor(c, TAIL)) {
            Ok(Some(c)) => c,
            Ok(None) => return start_trail(inner),
            Err(_) => return false,
        };
        if cursor.updated_at >= boundary {
            return true;
        }
        let Some(page) = fetch_page(inner, token, Read::Changes, Some(&cursor), trouble).await else {
            return false;
        };
        trouble.recovered();
        let ripe_count = page
            .records
            .iter()
            .take_while(|r| r.position.as_ref().is_none_or(|p| p.updated_at <= boundary))
            .count();
        let ripe = &page.records[..ripe_count];
        let end_ripe = page.end.as_ref().filter(|e| e.updated_at <= boundary);
        let reached_boundary = ripe_count < page.records.len() || page.end.is_some() && end_ripe.is_none();
        // Past the last ripe record only when the whole page was ripe: rows the source left out
        // between a ripe record and an unripe one are read again next time.
        let end = if reached_boundary { None } else { end_ripe };
        let next = furthest(ripe, end, Some(&cursor)).filter(|c| c.updated_at <= boundary);
        let next = next.unwrap_or_else(|| cursor.clone());
        let Some(applied) = apply_and_count(inner, ripe, Some((TAIL, &next))) else { return false };
        if applied.changed > 0 {
            inner.stats.late_found(applied.changed);
            tracing::info!(
                event = "late_changes_found",
                count = applied.changed,
                "the look-back pass found changes the head pass had missed"
            );
        }
        if reached_boundary || !page.has_more || next == cursor {
            return true;
        }
    }
}

/// On a first start, the trail begins one window before *now*, before the head pass starts:
/// everything older was visible when the head pass began reading from the start, and so is
/// read by it. (Started after the head pass instead, the trail would skip changes that became
/// visible while a long first pass ran.)
fn start_trail<S: Source, N: Sink, C: Clock>(inner: &Inner<S, N, C>) -> bool {
    let boundary = inner.clock.now().checked_sub(inner.cfg.look_back).unwrap_or(Timestamp::UNIX_EPOCH);
    let start = Cursor { updated_at: boundary, id: String::new() };
    let result = inner.store.write(|tx| {
        if read_cursor(tx, TAIL)?.is_none() {
            write_cursor(tx, TAIL, &start)?;
        }
        Ok(())
    });
    if let Err(e) = &result {
        tracing::error!(event = "store_failed", what = "starting the look-back cursor", error = %e);
    }
    result.is_ok()
}

/// A first start on a source whose change listing names each dossier once per change (the
/// SQL source: a dossier row and each of its actions, spread over the months of its life):
/// the backlog is read once per dossier through the scan instead, and the change listing
/// takes over from one look-back window before the backfill began. Changes made meanwhile are
/// after that position; late commits within the window are the look-back pass's, as always.
/// The scan's position is kept, so that a restart resumes it. False if stopped or failed.
async fn first_backfill<S: Source, N: Sink, C: Clock>(
    inner: &Arc<Inner<S, N, C>>,
    token: &CancellationToken,
    trouble: &mut Trouble,
) -> bool {
    if !inner.source.backfill_by_scan() {
        return true;
    }
    let then = inner.store.write(|tx| {
        if read_cursor(tx, HEAD)?.is_some() {
            return Ok(None);
        }
        if let Some(then) = read_cursor(tx, BACKFILL_THEN)? {
            return Ok(Some(then));
        }
        let at = inner.clock.now().checked_sub(inner.cfg.look_back).unwrap_or(Timestamp::UNIX_EPOCH);
        let then = Cursor { updated_at: at, id: String::new() };
        write_cursor(tx, BACKFILL_THEN, &then)?;
        Ok(Some(then))
    });
    let then = match then {
        Ok(Some(then)) => then,
        Ok(None) => return true,
        Err(e) => {
            tracing::error!(event = "store_failed", what = "starting the first backfill", error = %e);
            return false;
        }
    };
    tracing::info!(
        event = "backfill_started",
        "first start: reading every dossier once, by the source's scan"
    );
    if !head_pass(inner, token, trouble, Read::Scan, BACKFILL).await {
        return false;
    }
    let done = inner.store.write(|tx| {
        write_cursor(tx, HEAD, &then)?;
        meta_set(tx, BACKFILL, None)?;
        meta_set(tx, BACKFILL_THEN, None)
    });
    match done {
        Ok(()) => {
            tracing::info!(event = "backfill_finished", "the change listing takes over");
            true
        }
        Err(e) => {
            tracing::error!(event = "store_failed", what = "finishing the first backfill", error = %e);
            false
        }
    }
}

pub(crate) async fn run<S: Source, N: Sink, C: Clock>(inner: Arc<Inner<S, N, C>>, token: CancellationToken) {
    let mut trouble = Trouble::new("provincial poll");
    if !inner.cfg.look_back.is_zero() {
        start_trail(&inner);
    }
    while !token.is_cancelled() && !first_backfill(&inner, &token, &mut trouble).await {
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            () = tokio::time::sleep(inner.cfg.poll_interval) => {}
        }
    }
    let mut interval = tokio::time::interval(inner.cfg.poll_interval);
    // A poll that overran its interval is followed by the next at once, not by a burst.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !token.is_cancelled() {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            _ = interval.tick() => {}
        }
        if !head_pass(&inner, &token, &mut trouble, Read::Changes, HEAD).await {
            continue;
        }
        tail_pass(&inner, &token, &mut trouble).await;
    }
}
