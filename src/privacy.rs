//! The operator's commands for citizens' personal data (docs/personal-data.md): `forget` (an
//! erasure already carried out at the source, done here too) and `rekey` (seal what is stored
//! under `store.key_file`, online and resumable).

use std::{path::Path, time::Duration};

use anyhow::Context;
use rusqlite::{OptionalExtension, params, types::Value as Sql};
use serde::Serialize;

use crate::{
    config::Config,
    domain::personal,
    ops::NeedsConfig,
    store::{
        DAEMON_KEY, Keys, SEALED_WITH, SealKey, Store, body::fail, lock::DaemonLock, meta_get, meta_set,
    },
    sync::minimise,
};

/// What `forget` did.
#[derive(Debug, Default, Serialize)]
pub struct Forgotten {
    /// Dossiers whose personal fields were erased.
    pub erased: Vec<String>,
    /// Quarantined records emptied to their reason and keys.
    pub quarantined: usize,
    /// MaHoSo the database holds nothing of.
    pub not_found: Vec<String>,
}

/// Erases the personal fields of these dossiers' stored payloads (and empties their
/// quarantined records), journalled in `erasure` without the data. A dossier whose payload the
/// national portal still needs is read again from its source first (which has erased them
/// too), never sent as it is left here.
pub fn forget(store: &Store, mahoso: &[String]) -> anyhow::Result<Forgotten> {
    let now = jiff::Timestamp::now().as_microsecond();
    Ok(store.write(|tx| {
        let mut out = Forgotten::default();
        for key in mahoso {
            let payload: Option<String> = tx
                .prepare_cached("SELECT body_text(payload) FROM body WHERE mahoso = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            if let Some(payload) = &payload {
                minimise::reduce(tx, key, payload, now, |p| {
                    personal::erase(p);
                })?;
                minimise::wait_for_source(tx, key, now)?;
            }
            let emptied = tx
                .prepare_cached(
                    "UPDATE quarantine SET record = '', minimised_at = ?2 WHERE mahoso = ?1 OR key = ?1",
                )?
                .execute(params![key, now])?;
            out.quarantined += emptied;
            let found = payload.is_some() || emptied > 0;
            tx.prepare_cached("INSERT INTO erasure (mahoso, at, found) VALUES (?1, ?2, ?3)")?
                .execute(params![key, now, found])?;
            if payload.is_some() {
                out.erased.push(key.clone());
            } else if emptied == 0 {
                out.not_found.push(key.clone());
            }
        }
        Ok(out)
    })?)
}

/// What `rekey` did.
#[derive(Debug, Default, Serialize)]
pub struct Rekeyed {
    pub key_id: String,
    /// Stored values (payloads, histories, quarantined records, dictionaries) sealed now.
    pub sealed: u64,
    /// Already sealed with the key, left as they were.
    pub already: u64,
    /// Whether the file's free pages were rewritten too (VACUUM, only with the daemon stopped).
    pub vacuumed: bool,
    /// Whether the WAL, which held pages of before, was emptied (not while another connection
    /// reads it: the running daemon, a Litestream).
    pub wal_truncated: bool,
    pub seconds: f64,
}

/// Where an interrupted `rekey` goes on from.
const POSITION: &str = "rekey_position";
/// Rows per transaction: short, so that the running daemon's writes wait little.
const BATCH: i64 = 200;

/// Seals every stored body, quarantined record and dictionary under `store.key_file` (from
/// `from`'s key or none: a rotation, or a first sealing). Online: each batch is one short
/// transaction beside the running daemon, which must hold the same key (it seals what it
/// writes). Resumable: an interrupted run goes on where it stopped.
pub fn rekey(config: &Config, from: Option<&Path>) -> anyhow::Result<Rekeyed> {
    let started = std::time::Instant::now();
    let path = &config.store.path;
    let Some(key) = config.store.keys.sealing.clone() else {
        return Err(NeedsConfig("store.key_file is not set: rekey seals the database under it".into()).into());
    };
    let mut previous = config.store.keys.previous.clone();
    if let Some(from) = from {
        previous.push(SealKey::from_file(from).map_err(|e| {
            NeedsConfig(format!(
                "--from {}: {}",
                from.display(),
                e.to_string().trim_start_matches("store.key_file: ")
            ))
        })?);
    }
    let keys = Keys { sealing: Some(key.clone()), previous, digest: config.store.keys.digest.clone() };
    // Before the store is opened with the new key (which records it as one the bodies are
    // sealed with).
    let running = DaemonLock::is_held(path);
    if running {
        let daemon_key = meta_get(&crate::store::open_read_only(path)?, DAEMON_KEY)?.unwrap_or_default();
        if daemon_key != key.id() {
            return Err(NeedsConfig(format!(
                "the running daemon does not seal with store.key_file's key ({}): restart it with this configuration \
                 first (systemctl restart dvc-sync; during a rotation with the old key as store.previous_key_file), \
                 then run rekey again",
                key.id()
            ))
            .into());
        }
    }
    let store = Store::open_keyed(path, &keys)?;
    let mut out = Rekeyed { key_id: key.id(), ..Rekeyed::default() };
    for (table, columns) in [("body", &["payload", "history"][..]), ("quarantine", &["record"][..])] {
        seal_table(&store, table, columns, &mut out)?;
    }
    seal_dictionaries(&store, &mut out)?;
    store.write(|tx| {
        meta_set(tx, SEALED_WITH, Some(&key.id()))?;
        meta_set(tx, crate::store::SEALED_ALL, Some(&key.id()))
    })?;
    // What the rows held before lives on in the WAL until it is overwritten: checkpointed and
    // truncated now (busy while another connection reads: said, and done by a later run).
    let busy: i64 = store.read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)))?;
    out.wal_truncated = busy == 0;
    if !running {
        store.read(|c| c.execute_batch("VACUUM")).context("VACUUM after sealing")?;
        out.vacuumed = true;
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Seals `columns` of every row of `table` not yet sealed with the current key, in batches
/// by rowid, the position kept in `meta` after each (with the key's id: a run with another
/// key starts again from the first row).
fn seal_table(store: &Store, table: &str, columns: &[&str], out: &mut Rekeyed) -> anyhow::Result<()> {
    let position_key = format!("{POSITION}:{table}");
    let saved = store.read(|c| meta_get(c, &position_key))?.unwrap_or_default();
    let mut after: i64 =
        saved.strip_prefix(&format!("{}:", out.key_id)).and_then(|p| p.parse().ok()).unwrap_or(0);
    let select =
        format!("SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2", columns.join(", "));
    loop {
        let (last, sealed, already) = store.write(|tx| {
            let rows: Vec<(i64, Vec<Sql>)> = tx
                .prepare_cached(&select)?
                .query_map(params![after, BATCH], |r| {
                    let values = (1..=columns.len()).map(|i| r.get::<_, Sql>(i)).collect::<Result<_, _>>()?;
                    Ok((r.get(0)?, values))
                })?
                .collect::<Result<_, _>>()?;
            let (mut sealed, mut already) = (0u64, 0u64);
            for (rowid, values) in &rows {
                for (column, value) in columns.iter().zip(values) {
                    let stored = rusqlite::types::ValueRef::from(value);
                    // An emptied quarantined record has nothing to seal.
                    let empty = matches!(stored, rusqlite::types::ValueRef::Text(t) if t.is_empty());
                    if empty || store.sealed_current(stored) {
                        already += 1;
                        continue;
                    }
                    let text = store.body_text(stored).map_err(fail)?.unwrap_or_default();
                    let packed = store.pack(&text).map_err(fail)?;
                    tx.prepare_cached(&format!("UPDATE {table} SET {column} = ?2 WHERE rowid = ?1"))?
                        .execute(params![rowid, packed])?;
                    sealed += 1;
                }
            }
            let last = rows.last().map(|(rowid, _)| *rowid);
            if let Some(last) = last {
                meta_set(tx, &position_key, Some(&format!("{}:{last}", out.key_id)))?;
            }
            Ok((last, sealed, already))
        })?;
        out.sealed += sealed;
        out.already += already;
        match last {
            Some(last) => after = last,
            None => break,
        }
        // Room for the running daemon's writes between two batches.
        std::thread::sleep(Duration::from_millis(2));
    }
    store.write(|tx| meta_set(tx, &position_key, None))?;
    Ok(())
}

fn seal_dictionaries(store: &Store, out: &mut Rekeyed) -> anyhow::Result<()> {
    let ids: Vec<i64> = store.read(|c| {
        c.prepare("SELECT id FROM body_dict ORDER BY id")?.query_map([], |r| r.get(0))?.collect()
    })?;
    for id in ids {
        store.write(|tx| {
            let stored: Vec<u8> =
                tx.query_row("SELECT dict FROM body_dict WHERE id = ?1", [id], |r| r.get(0))?;
            let dictionary = store.open_dictionary(&stored).map_err(fail)?;
            if dictionary.sealed_current {
                out.already += 1;
                return Ok(());
            }
            let sealed = store.seal_dictionary(&dictionary.bytes).map_err(fail)?;
            tx.execute("UPDATE body_dict SET dict = ?2 WHERE id = ?1", params![id, sealed])?;
            out.sealed += 1;
            Ok(())
        })?;
    }
    Ok(())
}
