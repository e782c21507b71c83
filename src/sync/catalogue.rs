//! The national procedure catalogue as LayThuTuc answered, cached in memory and in the store.
//! Unknown codes are asked again after an hour (the catalogue may gain them), known ones
//! after a day.

use std::{collections::HashMap, sync::Mutex};

use rusqlite::params;

use crate::domain::scoring::{DurationUnit, MaxDuration};

const UNKNOWN_TTL_MICROS: i64 = 3_600 * 1_000_000;
const KNOWN_TTL_MICROS: i64 = 24 * 3_600 * 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Known { name: String, field_code: String, field_name: String, duration: Option<MaxDuration> },
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Catalogue {
    entries: Mutex<HashMap<String, (Entry, i64)>>,
    /// Procedures whose duration the report needs (a dossier without NgayHenTra) and the
    /// cache lacks: asked by the pusher beside the lookups that fill dossiers, never holding
    /// a dossier back.
    /// Each with the time (µs) it may be asked at the earliest.
    wanted: Mutex<std::collections::BTreeMap<String, i64>>,
}

/// A known procedure's catalogue fields.
pub(crate) struct Known {
    pub name: String,
    pub field_code: String,
    pub field_name: String,
    pub duration: Option<MaxDuration>,
}

/// A duration as the store keeps it (`procedure.duration`, `duration_unit`).
pub(crate) fn stored_duration(amount: Option<f64>, unit: Option<String>) -> Option<MaxDuration> {
    Some(MaxDuration { amount: amount?, unit: DurationUnit::from_stored(&unit?)? })
}

impl Catalogue {
    pub(crate) fn load(conn: &rusqlite::Connection) -> rusqlite::Result<Catalogue> {
        let mut stmt =
            conn.prepare("SELECT code, known, name, field_code, field_name, fetched_at, duration, duration_unit FROM procedure")?;
        let rows = stmt.query_map([], |r| {
            let entry = if r.get::<_, bool>(1)? {
                Entry::Known {
                    name: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    field_code: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    field_name: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    duration: stored_duration(r.get(6)?, r.get(7)?),
                }
            } else {
                Entry::Unknown
            };
            Ok((r.get::<_, String>(0)?, (entry, r.get::<_, i64>(5)?)))
        })?;
        let entries: HashMap<String, (Entry, i64)> = rows.collect::<rusqlite::Result<_>>()?;
        // Known procedures without a duration that were never asked for one (migration 0008
        // marks every cached answer stale, fetched_at 0) are asked once, for the dossiers
        // stored without NgayHenTra before it.
        let wanted = entries
            .iter()
            .filter(|(_, (e, at))| *at == 0 && matches!(e, Entry::Known { duration: None, .. }))
            .map(|(code, _)| (code.clone(), 0))
            .collect();
        Ok(Catalogue { entries: Mutex::new(entries), wanted: Mutex::new(wanted) })
    }

    /// Notes that a dossier of `code` has no NgayHenTra: its duration is wanted unless the
    /// cache holds a fresh answer (with or without a duration).
    pub(crate) fn want_duration(&self, code: &str, now: i64) {
        let fresh = self.get(code, now).is_some();
        let has = matches!(self.known(code, now), Some(Known { duration: Some(_), .. }));
        if !fresh && !has {
            self.wanted.lock().unwrap_or_else(|p| p.into_inner()).entry(code.to_owned()).or_insert(now);
        }
    }

    /// The wanted procedures that may be asked now, in code order; taken out of the set.
    pub(crate) fn take_due(&self, now: i64) -> Vec<String> {
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        let due: Vec<String> = wanted.iter().filter(|(_, at)| **at <= now).map(|(c, _)| c.clone()).collect();
        for code in &due {
            wanted.remove(code);
        }
        due
    }

    /// A wanted look-up failed: ask again at `at` at the earliest.
    pub(crate) fn retry_later(&self, code: &str, at: i64) {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner()).insert(code.to_owned(), at);
    }

    /// The cached answer for `code`, if still fresh.
    pub(crate) fn get(&self, code: &str, now: i64) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (entry, at) = entries.get(code)?;
        let ttl = if matches!(entry, Entry::Unknown) { UNKNOWN_TTL_MICROS } else { KNOWN_TTL_MICROS };
        (now - at < ttl).then(|| entry.clone())
    }

    /// The fields of a known procedure, if cached (stale entries are still good enough to
    /// fill a record; the pusher refreshes them when it asks).
    pub(crate) fn known(&self, code: &str, _now: i64) -> Option<Known> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(code) {
            Some((Entry::Known { name, field_code, field_name, duration }, _)) => Some(Known {
                name: name.clone(),
                field_code: field_code.clone(),
                field_name: field_name.clone(),
                duration: *duration,
            }),
            _ => None,
        }
    }

    pub(crate) fn put(
        &self,
        tx: &rusqlite::Connection,
        code: &str,
        entry: Entry,
        now: i64,
    ) -> rusqlite::Result<()> {
        let (known, name, field_code, field_name, duration) = match &entry {
            Entry::Known { name, field_code, field_name, duration } => {
                (true, Some(name), Some(field_code), Some(field_name), *duration)
            }
            Entry::Unknown => (false, None, None, None, None),
        };
        tx.prepare_cached(
            "INSERT INTO procedure (code, known, name, field_code, field_name, fetched_at, duration, duration_unit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(code) DO UPDATE SET known = excluded.known, name = excluded.name,
                 field_code = excluded.field_code, field_name = excluded.field_name, fetched_at = excluded.fetched_at,
                 duration = excluded.duration, duration_unit = excluded.duration_unit",
        )?
        .execute(params![
            code,
            known,
            name,
            field_code,
            field_name,
            now,
            duration.map(|d| d.amount),
            duration.map(|d| d.unit.as_str())
        ])?;
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(code.to_owned(), (entry, now));
        Ok(())
    }

    /// Forgets unknown answers (after `retry`, so that a fixed catalogue is asked again).
    pub(crate) fn forget_unknown(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (e, _)| !matches!(e, Entry::Unknown));
    }
}
