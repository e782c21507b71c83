//! Recording what a source said: each page's records judged (already known, valid, or
//! quarantined with the reason), then written in one transaction together with the cursor the
//! page moved, so that a crash replays at most one page, whose records are then recognised as
//! seen. The poller and the reconciler both record through a [`Recorder`].

use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, value::RawValue};

use super::super::{
    Shared,
    catalogue::Catalogue,
    fresh::{self, FreshBodies},
    minimise,
    ports::{Clock, Cursor, Raw, Record, Source},
};
use crate::{
    domain::{
        entry::identity,
        normalize::{Quarantined, StatusMap, fill_catalogue, normalize_raw, record_position, record_version},
        ownership::{Claim, DEFAULT_SOURCE, Precedence, claim, goes_backwards},
        stable_hash,
    },
    store::{self, body::BodyError, state::write_cursor},
};

/// Records pages of one source in the store.
pub(crate) struct Recorder<S, C> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) source: Arc<S>,
    /// Fills catalogue fields it knows, and learns which procedures' durations are wanted.
    pub(crate) catalogue: Arc<Catalogue>,
    /// Where the bodies just recorded are left for the pusher.
    pub(crate) fresh: Arc<FreshBodies>,
    pub(crate) status_map: StatusMap,
    /// The source's name (`provincial`, or the `<name>` of `[sources.<name>]`).
    pub(crate) name: String,
    /// Which sources' copies of a dossier replace which.
    pub(crate) precedence: Arc<Precedence>,
}

/// Quarantined records are kept up to this size, enough to see what was wrong.
const MAX_QUARANTINED_RECORD: usize = 64 * 1024;

/// What applying one page did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    pub read: usize,
    /// New dossiers or newer versions recorded.
    pub changed: usize,
    /// Already known at this version or newer.
    pub seen: usize,
    pub quarantined: usize,
    /// Dossiers put (back) in the outbox.
    pub enqueued: usize,
    /// New versions of dossiers that moved to a source superseding this one, ignored.
    pub ignored: usize,
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

impl<S: Source, C: Clock> Recorder<S, C> {
    /// The meta key of `base` (a cursor) for this source.
    pub(crate) fn key(&self, base: &str) -> String {
        store::state::source_key(&self.name, base)
    }

    /// Whether this version of the record is already recorded (see [`Recorder::apply_page`]):
    /// the owner's version or fingerprint, or the last ignored one of a copy left behind.
    fn already_seen(&self, c: &rusqlite::Connection, record: &Record) -> rusqlite::Result<bool> {
        let Some((mahoso, version)) = record_version(&record.raw) else {
            return Ok(false);
        };
        let Some(k) = known_version(c, &mahoso)? else { return Ok(false) };
        let fp = record.fingerprint;
        Ok(match claim(&self.precedence, &self.name, Some(&k.source)) {
            Claim::Own => k.version >= version || (fp.is_some() && fp == k.fingerprint),
            Claim::Ignore => {
                k.ignored_version.is_some_and(|v| v >= version) || (fp.is_some() && fp == k.ignored_hash)
            }
            Claim::Move | Claim::Conflict => false,
        })
    }

    /// Records a valid version, by whose the dossier is: its owner's (checked against what is
    /// recorded), a superseding source's (a move, checked against what was sent), a
    /// superseded source's (ignored), or another's (a conflict, quarantined).
    fn record_dossier(
        &self,
        tx: &rusqlite::Connection,
        p: &Prepared,
        record: &Record,
        now: i64,
    ) -> rusqlite::Result<Recorded> {
        let known = existing(tx, &p.mahoso)?;
        let name = self.name.as_str();
        match known.as_ref().map_or(Claim::Own, |k| claim(&self.precedence, name, Some(&k.source))) {
            Claim::Own => {
                if let Some(known) = &known
                    && let Some(outcome) = judge_against(tx, p, record, known, name, now)?
                {
                    return Ok(outcome);
                }
            }
            Claim::Move => {
                if let Some(known) = &known
                    && let Some(outcome) = judge_move(tx, p, record, known, name, now)?
                {
                    return Ok(outcome);
                }
            }
            Claim::Ignore => return ignore(tx, p, record, known.as_ref()),
            Claim::Conflict => {
                let owner = known.as_ref().map_or("", |k| k.source.as_str());
                let reason = format!(
                    "MaHoSo {} is also read from source {owner:?}, which owns it, and neither source supersedes \
                     the other (sources.<name>.supersedes): this copy from {name:?} is not sent until one of them \
                     is corrected or supersedes the other",
                    p.mahoso
                );
                let q = quarantined(p, format!("{}#{name}", p.mahoso), reason, Some("MaHoSo"));
                record_quarantine(tx, &q, record, name, now)?;
                return Ok(Recorded::Quarantined);
            }
        }
        write_dossier(tx, p, record, known.as_ref(), name, now)
    }

    /// Records a page's items and, in the same transaction, the cursor it moved.
    ///
    /// The records are judged first, outside the transaction (which holds the one connection
    /// the pusher also writes with): which are already known (one read), then normalising,
    /// serialising and compressing the others. The transaction only writes, and checks again
    /// what the read found, since a reconciliation pass may have recorded a record meanwhile.
    pub(crate) fn apply_page(
        &self,
        records: &[Record],
        cursor: Option<(&str, &Cursor)>,
    ) -> Result<Applied, store::StoreError> {
        let now = self.shared.clock.now().as_microsecond();
        // Cheap recognition of what was already seen, before normalising anything: an older or
        // equal version, or (for sources without a version counter) the same fingerprint as the
        // state recorded.
        let seen: Vec<bool> = self
            .shared
            .store
            .read(|c| records.iter().map(|record| self.already_seen(c, record)).collect())?;
        // Each record is read (`Raw`) only while it is judged: a page's worth of them at once
        // would hold megabytes.
        let mut judged: Vec<Judged> = records
            .iter()
            .zip(seen)
            .map(
                |(record, seen)| {
                    if seen { Ok(Judged::Seen) } else { self.judge(record, &record.raw.view(), now) }
                },
            )
            .collect::<Result<_, _>>()?;
        let mut due = Vec::new();
        let applied = self.shared.store.write(|tx| {
            due.clear();
            let mut applied = Applied { read: records.len(), ..Applied::default() };
            for (i, (record, judged)) in records.iter().zip(&judged).enumerate() {
                match judged {
                    Judged::Seen => applied.seen += 1,
                    Judged::Valid(p) => match self.record_dossier(tx, p, record, now)? {
                        Recorded::Seen => applied.seen += 1,
                        Recorded::Ignored { new } => {
                            applied.seen += 1;
                            applied.ignored += usize::from(new);
                        }
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
                        if record_quarantine(tx, q, record, &self.name, now)? {
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
                self.fresh.put(mahoso, fresh::Body { version, payload_hash, payload, history });
            }
        }
        // Once enough dossiers are stored, their bodies are compressed with a dictionary trained
        // from them (store::body): a no-op after that, and cheap before it.
        if applied.changed > 0
            && let Err(e) = self.shared.store.train_body_dictionary()
        {
            tracing::warn!(event = "body_dictionary_failed", error = %e, "bodies stay compressed without a dictionary");
        }
        Ok(applied)
    }

    /// A quarantined record, kept under the key that its later versions will share.
    fn keyed(&self, mut q: Box<Quarantined>, record: &Record, raw: &Raw) -> Box<Quarantined> {
        // A record too deep to read still says which dossier and version it is, when its text
        // gives them plainly: its versions land on that dossier's row, which goes when a valid
        // version comes.
        if let Raw::Unreadable { .. } = raw
            && let Some((mahoso, version)) = record_version(&record.raw)
            && !mahoso.is_empty()
        {
            q.key = mahoso.clone();
            q.mahoso = Some(mahoso);
            q.version = Some(version);
            q.updated_at = record_position(&record.raw).map(|(at, _)| at);
        }
        // A record without MaHoSo is kept under the source's own key when it has one: every
        // version lands on one row, and the row goes when the record is fixed.
        if q.mahoso.is_none()
            && let Some(id) = &record.source_id
        {
            q.key = if self.name == DEFAULT_SOURCE {
                format!("no-MaHoSo:id:{id}")
            } else {
                format!("no-MaHoSo:{}:id:{id}", self.name)
            };
        }
        if let Some(hint) = q.field.and_then(|f| self.source.explain(f)) {
            q.reason = format!("{} ({hint})", q.reason);
        }
        q
    }

    /// Normalises a record and prepares what is stored of it, or says why it is quarantined.
    fn judge(&self, record: &Record, raw: &Raw, now: i64) -> Result<Judged, store::StoreError> {
        let mut n = match normalize_raw(raw, &self.status_map) {
            Ok(n) => n,
            Err(q) => return Ok(Judged::Quarantined(self.keyed(q, record, raw))),
        };
        // Without NgayHenTra, the on-time figure needs the procedure's duration (`dvc-sync
        // report`): the pusher asks the catalogue, without holding the dossier back for it.
        if n.dossier.get("NgayHenTra").is_none_or(str::is_empty) {
            self.catalogue.want_duration(&n.procedure, now);
        }
        if n.needs_catalogue
            && let Some(entry) = self.catalogue.known(&n.procedure, now)
        {
            fill_catalogue(&mut n.dossier, &entry.name, &entry.field_code, &entry.field_name);
            n.needs_catalogue = false;
        }
        // Serialised once: the stored history is its entries' JSON in an array, as serde_json
        // writes a Vec<Value>.
        let payload = to_raw(&n.dossier);
        let history: Vec<Box<RawValue>> = n.history.iter().map(to_raw).collect();
        // Serialising JSON text cannot fail.
        let history_text = serde_json::to_string(&history).unwrap_or_default();
        let packed = self
            .shared
            .store
            .pack(payload.get())
            .and_then(|p| Ok((p, self.shared.store.pack(&history_text)?)));
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
}

/// A value's JSON (serialising JSON values cannot fail).
fn to_raw<T: serde::Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// What is cheaply known of a recorded dossier, to recognise a record read again.
struct Known {
    version: i64,
    fingerprint: Option<i64>,
    source: String,
    /// The last ignored version of a source it moved away from.
    ignored_version: Option<i64>,
    ignored_hash: Option<i64>,
}

/// The version (and source fingerprint) already recorded for this MaHoSo, if any.
/// Quarantined versions do not count: the same version read again may be readable now
/// (bytes mangled in transit), and the few quarantined records are cheap to judge again.
/// A dossier waiting to be read again from its source (its payload minimised, and needed
/// whole by the national portal) is never "already recorded".
fn known_version(c: &rusqlite::Connection, mahoso: &str) -> rusqlite::Result<Option<Known>> {
    c.prepare_cached(
        "SELECT version, source_hash, source, ignored_version, ignored_hash FROM dossier d WHERE mahoso = ?1
           AND NOT EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = d.mahoso AND x.kind = ?2)",
    )?
    .query_row(params![mahoso, minimise::WAITING_FOR_SOURCE], |r| {
        Ok(Known {
            version: r.get(0)?,
            fingerprint: r.get(1)?,
            source: r.get(2)?,
            ignored_version: r.get(3)?,
            ignored_hash: r.get(4)?,
        })
    })
    .optional()
}

/// What is recorded of a dossier already known.
struct Existing {
    version: i64,
    acked_history: i64,
    acked_hash: Option<i64>,
    acked_status: Option<i64>,
    /// The source that owns it.
    source: String,
    ignored_version: Option<i64>,
    ignored_hash: Option<i64>,
    /// Its stored history, as text.
    history: String,
    source_id: Option<String>,
    fingerprint: Option<i64>,
    /// Waiting to be read again from the source: the same version is recorded again.
    reread: bool,
}

enum Recorded {
    Seen,
    /// A copy left behind in a source the dossier moved away from (`new`: a version not
    /// counted before).
    Ignored {
        new: bool,
    },
    /// Recorded; put in the outbox if it was not there, due unless the portal holds it.
    Changed {
        enqueued: bool,
        in_sync: bool,
    },
    Quarantined,
}

fn existing(tx: &rusqlite::Connection, mahoso: &str) -> rusqlite::Result<Option<Existing>> {
    tx.prepare_cached(
        "SELECT d.version, d.acked_history, d.acked_hash, body_text(b.history), d.source_id, d.source_hash,
                EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = d.mahoso AND x.kind = ?2),
                d.acked_status, d.source, d.ignored_version, d.ignored_hash
         FROM dossier d JOIN body b ON b.mahoso = d.mahoso WHERE d.mahoso = ?1",
    )?
    .query_row(params![mahoso, minimise::WAITING_FOR_SOURCE], |r| {
        Ok(Existing {
            version: r.get(0)?,
            acked_history: r.get(1)?,
            acked_hash: r.get(2)?,
            history: r.get(3)?,
            source_id: r.get(4)?,
            fingerprint: r.get(5)?,
            reread: r.get(6)?,
            acked_status: r.get(7)?,
            source: r.get(8)?,
            ignored_version: r.get(9)?,
            ignored_hash: r.get(10)?,
        })
    })
    .optional()
}

/// A new version of a known dossier, checked against what is recorded: already seen, another
/// record's claim to the same MaHoSo, or a history that no longer holds what was sent
/// (quarantined then). None: it is recorded.
fn judge_against(
    tx: &rusqlite::Connection,
    p: &Prepared,
    record: &Record,
    known: &Existing,
    source: &str,
    now: i64,
) -> rusqlite::Result<Option<Recorded>> {
    let Record { fingerprint, source_id, .. } = record;
    let quarantine = |key: String, reason: String, field| quarantined(p, key, reason, field);
    // Two source records claim one MaHoSo (a number given twice): the first one read keeps
    // it; the other is parked under its own key until the source is corrected.
    if let (Some(known_id), Some(this)) = (&known.source_id, source_id)
        && known_id != this
    {
        let reason = format!(
            "MaHoSo {} is also the dossier of source record {known_id}: one MaHoSo, two records (this is {this})",
            p.mahoso
        );
        let q = quarantine(format!("{}#id:{this}", p.mahoso), reason, Some("MaHoSo"));
        record_quarantine(tx, &q, record, source, now)?;
        return Ok(Some(Recorded::Quarantined));
    }
    let same = known.version == p.version || (fingerprint.is_some() && *fingerprint == known.fingerprint);
    if known.version > p.version || (same && !known.reread) {
        return Ok(Some(Recorded::Seen));
    }
    // History is append-only; what was already sent must still be there, unchanged.
    let Some(problem) = sent_history_problem(p, known) else { return Ok(None) };
    let reason = problem.unwrap_or_else(|acked| {
        format!(
            "history rewritten: the first {acked} entries were already sent to the national portal and have changed or gone"
        )
    });
    record_quarantine(tx, &quarantine(p.mahoso.clone(), reason, None), record, source, now)?;
    Ok(Some(Recorded::Quarantined))
}

/// A quarantined version of a valid record, under `key`.
fn quarantined(p: &Prepared, key: String, reason: String, field: Option<&'static str>) -> Quarantined {
    Quarantined {
        key,
        mahoso: Some(p.mahoso.clone()),
        version: Some(p.version),
        updated_at: Timestamp::from_microsecond(p.updated_at).ok(),
        reason,
        field,
    }
}

/// None when `p`'s history still holds, by identity (time, officer, content by meaning) and in
/// order, every entry the national portal acknowledged of `known`; else Some(Ok(why the
/// stored history cannot be compared)) or Some(Err(how many entries were sent)).
fn sent_history_problem(p: &Prepared, known: &Existing) -> Option<Result<String, usize>> {
    let acked = known.acked_history as usize;
    if acked == 0 {
        return None;
    }
    let stored = match serde_json::from_str::<Vec<Value>>(&known.history) {
        Ok(stored) => stored,
        Err(e) => {
            return Some(Ok(format!(
                "the stored history cannot be read to compare with ({e}): nothing is sent until it is"
            )));
        }
    };
    let new = p.history.iter().take(acked).map(|e| serde_json::from_str::<Value>(e.get()).ok());
    let intact = p.history.len() >= acked
        && stored.len() >= acked
        && stored[..acked].iter().zip(new).all(|(a, b)| b.is_some_and(|b| identity(a) == identity(&b)));
    (!intact).then_some(Err(acked))
}

/// A copy read from a source that supersedes the dossier's owner: ownership moves, unless the
/// copy lacks or contradicts what was already sent from the old owner (a history entry, or a
/// status it would take back), when it is quarantined under `MaHoSo#<source>` naming both.
/// None: it is recorded (and the move with it).
fn judge_move(
    tx: &rusqlite::Connection,
    p: &Prepared,
    record: &Record,
    known: &Existing,
    source: &str,
    now: i64,
) -> rusqlite::Result<Option<Recorded>> {
    let owner = &known.source;
    let problem = match sent_history_problem(p, known) {
        Some(Ok(why)) => Some(why),
        Some(Err(acked)) => Some(format!(
            "its history lacks or contradicts entries already sent to the national portal from {owner:?} (the \
             first {acked}, recognised by time, officer and content)"
        )),
        None => known.acked_status.filter(|&a| goes_backwards(a, p.status)).map(|a| {
            format!(
                "its status {} would take the national dossier back from {a}, sent from {owner:?}",
                p.status
            )
        }),
    };
    let Some(problem) = problem else {
        tracing::info!(event = "dossier_moved", dossier = %p.mahoso, from = %owner, to = %source);
        return Ok(None);
    };
    let reason = format!(
        "moving from source {owner:?} to {source:?} (which supersedes it): {problem}; nothing is sent for it \
         until the two agree"
    );
    let q = quarantined(p, format!("{}#{source}", p.mahoso), reason, None);
    record_quarantine(tx, &q, record, source, now)?;
    Ok(Some(Recorded::Quarantined))
}

/// A version of a dossier read from a source it moved away from: not recorded; counted once
/// per version (or fingerprint).
fn ignore(
    tx: &rusqlite::Connection,
    p: &Prepared,
    record: &Record,
    known: Option<&Existing>,
) -> rusqlite::Result<Recorded> {
    let Some(known) = known else { return Ok(Recorded::Seen) };
    let new = match record.fingerprint {
        Some(fp) => known.ignored_hash != Some(fp) && known.ignored_version.is_none_or(|v| p.version > v),
        None => known.ignored_version.is_none_or(|v| p.version > v),
    };
    if new {
        tx.prepare_cached(
            "UPDATE dossier SET ignored = ignored + 1, ignored_version = ?2, ignored_hash = ?3 WHERE mahoso = ?1",
        )?
        .execute(params![p.mahoso, p.version, record.fingerprint])?;
        store::meta_add(tx, IGNORED, 1)?;
        tracing::info!(event = "stale_copy_ignored", dossier = %p.mahoso, owner = %known.source);
    }
    Ok(Recorded::Ignored { new })
}

/// The meta counter of versions ignored because their dossier moved to another source.
pub(crate) const IGNORED: &str = "ignored_after_move";

/// Writes a valid version: the dossier row, its bodies, and the outbox row unless the portal
/// holds it already.
fn write_dossier(
    tx: &rusqlite::Connection,
    p: &Prepared,
    record: &Record,
    known: Option<&Existing>,
    source: &str,
    now: i64,
) -> rusqlite::Result<Recorded> {
    let Record { fingerprint, source_id, .. } = record;
    tx.prepare_cached(
        "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure,
                              needs_catalogue, history_len, local_status, source_hash, source_id, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(mahoso) DO UPDATE SET
             moved_from = CASE WHEN source <> excluded.source THEN source ELSE moved_from END,
             source = excluded.source,
             version = excluded.version, updated_at = excluded.updated_at, seen_at = excluded.seen_at,
             payload_hash = excluded.payload_hash, status = excluded.status,
             procedure = excluded.procedure, needs_catalogue = excluded.needs_catalogue,
             history_len = excluded.history_len, local_status = excluded.local_status,
             source_hash = excluded.source_hash, source_id = excluded.source_id, minimised_at = NULL",
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
        source,
    ])?;
    // Packed outside the transaction (`Store::pack`, what `body_pack` does in SQL).
    tx.prepare_cached(
        "INSERT INTO body (mahoso, payload, history) VALUES (?1, ?2, ?3)
         ON CONFLICT(mahoso) DO UPDATE SET payload = excluded.payload, history = excluded.history",
    )?
    .execute(params![p.mahoso, p.packed_payload, p.packed_history])?;
    // A valid version supersedes whatever was quarantined under this MaHoSo, and earlier
    // versions of the same source record (without a MaHoSo then, or a malformed one).
    // (Of this source: another source's copy, in conflict, stays quarantined.)
    tx.prepare_cached("DELETE FROM quarantine WHERE source = ?2 AND (key = ?1 OR key = ?1 || '#' || ?2)")?
        .execute([&p.mahoso, source])?;
    if let Some(id) = source_id {
        tx.prepare_cached("DELETE FROM quarantine WHERE source_id = ?1 AND source = ?2")?
            .execute([id, source])?;
    }
    // Read again for the national portal: out of its wait, into the outbox, whatever the
    // acknowledged state says (the write it waited for may be an uncertain one to resolve).
    let reread = known.is_some_and(|k| k.reread);
    if reread {
        store::meta_add(tx, minimise::REREAD, 1)?;
    }
    let acked_hash = known.and_then(|e| e.acked_hash);
    let acked_history = known.map_or(0, |e| e.acked_history);
    let in_sync = acked_hash == Some(p.payload_hash) && acked_history == p.history.len() as i64;
    let mut enqueued = false;
    if !in_sync || reread {
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
    source: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    let source_id = record.source_id.as_deref();
    // The dossier of this MaHoSo, if valid somewhere: its version and owner.
    let owner: Option<(i64, String)> = match &q.mahoso {
        Some(mahoso) => tx
            .prepare_cached("SELECT version, source FROM dossier WHERE mahoso = ?1")?
            .query_row([mahoso], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
        None => None,
    };
    // A defective copy of a dossier another source owns is kept apart from the owner's.
    let mut q = std::borrow::Cow::Borrowed(q);
    if let (Some(mahoso), Some((_, owner))) = (&q.mahoso, &owner)
        && owner != source
        && q.key == *mahoso
    {
        q.to_mut().key = format!("{mahoso}#{source}");
    }
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
    // A valid newer version of the same dossier from this source is already recorded: this
    // one is stale.
    if let (Some((known, owner)), Some(version)) = (&owner, q.version)
        && owner == source
        && *known >= version
    {
        return Ok(false);
    }
    let mut text = record.raw.view().to_value().to_string();
    if text.len() > MAX_QUARANTINED_RECORD {
        let cut = (0..=MAX_QUARANTINED_RECORD).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
    }
    tx.prepare_cached(
        "INSERT INTO quarantine (key, mahoso, version, updated_at, reason, record, first_seen_at, last_seen_at, source_id, source)
         VALUES (?1, ?2, ?3, ?4, ?5, body_pack(?6), ?7, ?7, ?8, ?9)
         ON CONFLICT(key) DO UPDATE SET mahoso = excluded.mahoso, version = excluded.version,
             updated_at = excluded.updated_at, reason = excluded.reason, record = excluded.record,
             last_seen_at = excluded.last_seen_at, source_id = excluded.source_id, source = excluded.source,
             minimised_at = NULL",
    )?
    .execute(params![
        q.key,
        q.mahoso,
        q.version,
        q.updated_at.map(|t| t.as_microsecond()),
        q.reason,
        text,
        now,
        source_id,
        source
    ])?;
    tracing::warn!(event = "record_quarantined", dossier = q.mahoso.as_deref().unwrap_or(&q.key), reason = %q.reason);
    Ok(true)
}
