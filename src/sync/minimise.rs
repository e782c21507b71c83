//! The minimiser: a worker that keeps citizens' personal data only while the promise needs it
//! (Law 91/2025/QH15; docs/personal-data.md). `store.personal_data_days` after a dossier is
//! finished and verified nationally (or parked as dead), the personal fields of its stored
//! payload are replaced by keyed digests: the audit still compares them by meaning, nobody can
//! read them back. A quarantined record keeps its reason and keys only, that long after it was
//! parked. A payload so reduced is never sent: when the portal needs it whole again, the
//! dossier is read again from its source (the reconciler), or parked saying why.

use std::{sync::Arc, time::Duration};

use rusqlite::{Connection, params};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{
    Shared,
    ports::Clock,
    worker::{Failure, Step, Worker},
};
use crate::{
    domain::personal,
    store::{Store, StoreError},
};

/// Dossiers minimised per transaction.
const BATCH: usize = 200;
/// The final national statuses, as the minimiser's query and its index name them.
#[cfg(test)]
const FINAL: [u8; 3] = [3, 7, 10];

pub(crate) struct Minimiser<C> {
    shared: Arc<Shared<C>>,
    /// How long personal data stay in clear once no longer needed.
    keep: Duration,
    /// How often an idle minimiser looks again.
    every: Duration,
}

impl<C: Clock> Minimiser<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, keep: Duration) -> Self {
        // Kept for days, a minute late is nothing; kept for none, a few seconds.
        let every = if keep.is_zero() { Duration::from_secs(2) } else { Duration::from_secs(60) };
        Minimiser { shared, keep, every }
    }
}

/// What one batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Minimised {
    pub dossiers: usize,
    pub quarantined: usize,
}

/// Minimises what is due at `now` (µs) with `keep` (µs) of grace: one batch of dossiers, and
/// every quarantined record due.
pub(crate) fn minimise_due(store: &Store, now: i64, keep: i64) -> Result<Minimised, StoreError> {
    let cutoff = now.saturating_sub(keep);
    let key = store.digest_key().clone();
    store.write(|tx| {
        // Finished (the final statuses, as `FINAL` says), acknowledged as it is `keep` ago and
        // verified since, nothing waiting (through the partial index of finished dossiers in
        // clear); or parked dead `keep` ago.
        let mut due: Vec<(String, String)> = tx
            .prepare_cached(
                "SELECT d.mahoso, body_text(b.payload) FROM dossier d INDEXED BY dossier_to_minimise
                 JOIN body b USING (mahoso)
                 WHERE d.minimised_at IS NULL AND d.verified_at IS NOT NULL AND d.status IN (3, 7, 10)
                   AND d.acked_at <= ?1 AND d.verified_at >= d.acked_at AND d.acked_hash = d.payload_hash
                   AND d.acked_history = d.history_len AND d.inflight = 0
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mahoso = d.mahoso)
                 LIMIT ?2",
            )?
            .query_map(params![cutoff, BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let dead: Vec<(String, String)> = tx
            .prepare_cached(
                "SELECT d.mahoso, body_text(b.payload) FROM dead x JOIN dossier d USING (mahoso)
                 JOIN body b USING (mahoso)
                 WHERE x.dead_at <= ?1 AND d.minimised_at IS NULL LIMIT ?2",
            )?
            .query_map(params![cutoff, BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        due.extend(dead);
        let mut done = Minimised::default();
        for (mahoso, payload) in &due {
            reduce(tx, mahoso, payload, now, |p| {
                personal::minimise(p, &key);
            })?;
            done.dossiers += 1;
        }
        done.quarantined = tx
            .prepare_cached(
                "UPDATE quarantine SET record = '', minimised_at = ?1
                 WHERE minimised_at IS NULL AND first_seen_at <= ?2",
            )?
            .execute(params![now, cutoff])?;
        Ok(done)
    })
}

/// Rewrites one dossier's stored payload (read in the same transaction) with `change` applied
/// to it, and marks it minimised.
pub(crate) fn reduce(
    tx: &Connection,
    mahoso: &str,
    payload: &str,
    now: i64,
    change: impl FnOnce(&mut Map<String, Value>),
) -> rusqlite::Result<()> {
    // A payload that is not a JSON object has no fields to reduce: emptied, it is read again
    // from the source if it is ever needed.
    let mut map: Map<String, Value> = serde_json::from_str(payload).unwrap_or_default();
    change(&mut map);
    let text = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
    tx.prepare_cached("UPDATE dossier SET minimised_at = COALESCE(minimised_at, ?2) WHERE mahoso = ?1")?
        .execute(params![mahoso, now])?;
    tx.prepare_cached("UPDATE body SET payload = body_pack(?2) WHERE mahoso = ?1")?
        .execute(params![mahoso, text])?;
    Ok(())
}

impl<C: Clock> Worker for Minimiser<C> {
    async fn work(&mut self, _stop: &CancellationToken) -> Result<Step, Failure> {
        let store = self.shared.store.clone();
        let now = self.shared.clock.now().as_microsecond();
        let keep = i64::try_from(self.keep.as_micros()).unwrap_or(i64::MAX);
        let done = minimise_due(&store, now, keep)?;
        if done.dossiers > 0 || done.quarantined > 0 {
            tracing::info!(
                event = "personal_data_minimised",
                dossiers = done.dossiers,
                quarantined = done.quarantined,
                "personal fields of finished, verified or parked dossiers replaced by keyed digests"
            );
        }
        Ok(if done.dossiers >= BATCH { Step::Busy } else { Step::Idle })
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.every).await;
    }
}

/// A minimised dossier whose payload the national portal needs whole again (SQL, on `d`).
const NEEDS_SOURCE: &str =
    "d.minimised_at IS NOT NULL AND (d.acked_hash IS NULL OR d.acked_hash != d.payload_hash
     OR d.inflight != 0 OR d.national_exists = 0 OR d.needs_catalogue != 0)";
/// The meta counter of dossiers read again from their source for the national portal.
pub(crate) const REREAD: &str = "personal_reread";
/// The `dead.kind` of a dossier waiting to be read again from its source.
pub(crate) const WAITING_FOR_SOURCE: &str = "reread";

/// If `mahoso` is minimised and its payload must be sent again, it is parked out of the outbox
/// (a payload of digests is never sent) until the next full pass reads it again from its
/// source, and a pass is asked for. Whether it was.
pub(crate) fn wait_for_source(tx: &Connection, mahoso: &str, now: i64) -> rusqlite::Result<bool> {
    let parked = tx
        .prepare_cached(&format!(
            "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason, kind)
             SELECT d.mahoso, ?2, 0, NULL, ?3, ?4 FROM dossier d WHERE d.mahoso = ?1 AND {NEEDS_SOURCE}
             ON CONFLICT(mahoso) DO UPDATE SET dead_at = excluded.dead_at, reason = excluded.reason,
                 kind = excluded.kind, attempts = 0, error_code = NULL"
        ))?
        .execute(params![
            mahoso,
            now,
            "the national portal needs this dossier whole again, and its personal data were minimised here: \
             waiting for the next full pass to read it again from its source",
            WAITING_FOR_SOURCE
        ])?;
    if parked == 0 {
        return Ok(false);
    }
    tx.prepare_cached("DELETE FROM outbox WHERE mahoso = ?1")?.execute([mahoso])?;
    crate::store::meta_set(tx, crate::store::RECONCILE_REQUESTED, Some(&now.to_string()))?;
    Ok(true)
}

/// At the end of a full pass that began at `started`: the dossiers still waiting for their
/// source were not in it. They stay parked, saying so.
pub(crate) fn source_lost(tx: &Connection, started: i64, finished: &str) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE dead SET reason = ?3 WHERE kind = ?1 AND dead_at < ?2 AND reason NOT LIKE 'not in the source%'",
    )?
    .execute(params![
        WAITING_FOR_SOURCE,
        started,
        format!(
            "not in the source's full pass of {finished}: the national portal needs this dossier whole again and its \
             personal data were minimised here; restore it at the source, then dvc-sync retry --dead"
        )
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::meta_get;

    const DAY: i64 = 86_400_000_000;

    /// A dossier `m` in national status `status`, acknowledged at 10 and verified at `verified`,
    /// with a payload that holds personal values.
    fn dossier(store: &Store, m: &str, status: i64, verified: Option<i64>) {
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure,
                                          history_len, national_exists, acked_hash, acked_at, verified_at)
                     VALUES (?1, 1, 0, 0, 7, ?2, 'p', 0, 1, 7, 10, ?3)",
                    params![m, status, verified],
                )?;
                tx.execute(
                    "INSERT INTO body (mahoso, payload, history) VALUES (?1, body_pack(?2), body_pack('[]'))",
                    params![m, format!(r#"{{"MaHoSo":"{m}","ChuHoSo":"Nguyễn Văn An","SoGiayToChuHoSo":"079123456789"}}"#)],
                )?;
                Ok(())
            })
            .unwrap();
    }

    fn payload(store: &Store, m: &str) -> String {
        store
            .read(|c| c.query_row("SELECT body_text(payload) FROM body WHERE mahoso = ?1", [m], |r| r.get(0)))
            .unwrap()
    }

    #[test]
    fn the_query_names_the_final_statuses() {
        let finals: Vec<u8> = (1..=10)
            .filter_map(crate::domain::status::NationalStatus::new)
            .filter(|s| s.is_final())
            .map(|s| s.code())
            .collect();
        assert_eq!(finals, FINAL);
        let migration = include_str!("../../migrations/0011_personal_data.sql");
        assert!(migration.contains("status IN (3, 7, 10)"));
    }

    #[test]
    fn only_finished_verified_or_parked_dossiers_are_minimised_once_their_days_are_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        dossier(&store, "done", 10, Some(20));
        dossier(&store, "open", 4, Some(20));
        dossier(&store, "unverified", 10, None);
        dossier(&store, "dead", 2, None);
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO dead (mahoso, dead_at, attempts, reason) VALUES ('dead', 30, 1, 'refused')",
                    [],
                )?;
                tx.execute(
                    "INSERT INTO quarantine (key, reason, record, first_seen_at, last_seen_at)
                     VALUES ('q', 'bad', body_pack('{\"ChuHoSo\":\"Trần Thị Bình\"}'), 40, 40)",
                    [],
                )
            })
            .unwrap();
        // Not yet: a day of grace, and only half a day has passed.
        assert_eq!(minimise_due(&store, DAY / 2, DAY).unwrap(), Minimised::default());
        // Verified again later (the audit's cycle): the clock still runs from the acknowledgement.
        store
            .write(|tx| tx.execute("UPDATE dossier SET verified_at = 2 * ?1 WHERE mahoso = 'done'", [DAY]))
            .unwrap();
        let done = minimise_due(&store, 2 * DAY, DAY).unwrap();
        assert_eq!(done, Minimised { dossiers: 2, quarantined: 1 });
        for m in ["done", "dead"] {
            let p = payload(&store, m);
            assert!(
                !p.contains("Nguyễn") && !p.contains("079123456789") && p.contains("hmac-sha256:"),
                "{p}"
            );
        }
        for m in ["open", "unverified"] {
            assert!(payload(&store, m).contains("079123456789"), "{m} keeps its data");
        }
        let record: String =
            store.read(|c| c.query_row("SELECT record FROM quarantine", [], |r| r.get(0))).unwrap();
        assert_eq!(record, "", "a quarantined record keeps its reason and keys only");
        assert_eq!(minimise_due(&store, 3 * DAY, DAY).unwrap(), Minimised::default(), "once");
    }

    #[test]
    fn a_minimised_dossier_needed_whole_waits_for_its_source_and_says_when_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        dossier(&store, "m", 10, Some(20));
        assert_eq!(minimise_due(&store, 100, 0).unwrap().dossiers, 1);
        // Verified as acknowledged: nothing to send, nothing to wait for.
        assert!(!store.write(|tx| wait_for_source(tx, "m", 50)).unwrap());
        // The portal lost it: parked out of the outbox, a pass asked for.
        let parked = store
            .write(|tx| {
                tx.execute(
                    "UPDATE dossier SET national_exists = 0, acked_hash = NULL WHERE mahoso = 'm'",
                    [],
                )?;
                tx.execute(
                    "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at) VALUES ('m', 50, 50)",
                    [],
                )?;
                wait_for_source(tx, "m", 60)
            })
            .unwrap();
        assert!(parked);
        let (kind, outbox, requested): (String, i64, Option<String>) = store
            .read(|c| {
                Ok((
                    c.query_row("SELECT kind FROM dead WHERE mahoso = 'm'", [], |r| r.get(0))?,
                    c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?,
                    meta_get(c, crate::store::RECONCILE_REQUESTED)?,
                ))
            })
            .unwrap();
        assert_eq!((kind.as_str(), outbox, requested.as_deref()), (WAITING_FOR_SOURCE, 0, Some("60")));
        // A full pass that began after it and did not find it: it says so, once.
        let changed = store.write(|tx| source_lost(tx, 70, "2026-12-06T12:00:00Z")).unwrap();
        assert_eq!(changed, 1);
        let reason: String = store
            .read(|c| c.query_row("SELECT reason FROM dead WHERE mahoso = 'm'", [], |r| r.get(0)))
            .unwrap();
        assert!(reason.starts_with("not in the source's full pass of 2026-12-06"), "{reason}");
        assert_eq!(store.write(|tx| source_lost(tx, 80, "later")).unwrap(), 0);
    }
}
