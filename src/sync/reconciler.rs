//! The reconciler: a full pass over the provincial listing that records whatever the poller
//! missed (a newer version, a dossier never seen), re-enqueues any dossier whose acknowledged
//! state is not its latest, and records coverage. It runs every
//! `provincial.reconcile_interval_seconds`, and on demand (`dvc-sync reconcile`).

use std::{sync::Arc, time::Duration};

use rusqlite::params;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    Inner,
    poller::{Applied, Read, apply_page, fetch_page, furthest},
    ports::{Clock, Cursor, Sink, Source},
    trouble::Trouble,
};
use crate::store::{StoreError, meta_get, meta_set, state};

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub started_at: String,
    pub finished_at: String,
    /// Records in the listing.
    pub records: usize,
    /// Records whose version the daemon had not recorded: drift, now enqueued.
    pub drift: usize,
    pub quarantined: usize,
    /// Dossiers re-enqueued because their acknowledged state was not their latest.
    pub requeued: usize,
    pub coverage_percent: f64,
}

pub(crate) const REQUESTED: &str = "reconcile_requested";
pub(crate) const LAST: &str = "reconcile_last";
pub(crate) const LAST_AT: &str = "reconcile_last_at";

/// Puts back in the outbox every dossier whose acknowledged state is not its latest and that
/// is neither waiting nor parked: the outbox's own consistency check.
fn requeue_drift(tx: &rusqlite::Connection, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at, attempts)
         SELECT d.mahoso, ?1, ?1, 0 FROM dossier d
         WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mahoso = d.mahoso)
           AND NOT EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = d.mahoso)
           AND (d.acked_hash IS NULL OR d.acked_hash != d.payload_hash OR d.acked_history != d.history_len
                OR d.inflight != 0 OR d.needs_catalogue != 0)",
        params![now],
    )
}

/// One full pass; None if stopped before the end.
pub(crate) async fn pass<S: Source, N: Sink, C: Clock>(
    inner: &Inner<S, N, C>,
    token: &CancellationToken,
) -> Option<ReconcileReport> {
    let started = inner.clock.now();
    tracing::info!(event = "reconcile_started");
    let mut trouble = Trouble::new("reconciliation pass");
    let mut cursor: Option<Cursor> = None;
    let mut total = Applied::default();
    loop {
        let page = fetch_page(inner, token, Read::Scan, cursor.as_ref(), &mut trouble).await?;
        trouble.recovered();
        let applied = match apply_page(inner, &page.records, None) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(event = "store_failed", what = "reconciliation", error = %e);
                return None;
            }
        };
        total.read += applied.read;
        total.changed += applied.changed;
        total.quarantined += applied.quarantined;
        if applied.changed > 0 {
            inner.pusher_wake.notify_one();
        }
        let next = furthest(&page.records, page.end.as_ref(), cursor.as_ref());
        if !page.has_more || next.is_none() || next == cursor {
            break;
        }
        cursor = next;
    }
    let now = inner.clock.now();
    let result: Result<(usize, f64), StoreError> = inner.store.write(|tx| {
        let requeued = requeue_drift(tx, now.as_microsecond())?;
        Ok((requeued, state::coverage(&state::dossier_counts(tx)?)))
    });
    let (requeued, coverage_percent) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(event = "store_failed", what = "reconciliation", error = %e);
            return None;
        }
    };
    if requeued > 0 {
        inner.pusher_wake.notify_one();
    }
    let report = ReconcileReport {
        started_at: started.to_string(),
        finished_at: now.to_string(),
        records: total.read,
        drift: total.changed,
        quarantined: total.quarantined,
        requeued,
        coverage_percent,
    };
    let saved = inner.store.write(|tx| {
        meta_set(tx, LAST, Some(&serde_json::to_string(&report).unwrap_or_default()))?;
        meta_set(tx, LAST_AT, Some(&now.as_microsecond().to_string()))?;
        meta_set(tx, REQUESTED, None)
    });
    if let Err(e) = saved {
        tracing::error!(event = "store_failed", what = "reconciliation report", error = %e);
    }
    tracing::info!(
        event = "reconcile_finished",
        records = report.records,
        drift = report.drift,
        requeued = report.requeued,
        coverage_percent = report.coverage_percent
    );
    Some(report)
}

pub(crate) async fn run<S: Source, N: Sink, C: Clock>(inner: Arc<Inner<S, N, C>>, token: CancellationToken) {
    let check = inner.cfg.poll_interval.min(Duration::from_secs(1));
    let mut flushed: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            () = tokio::time::sleep(check) => {}
        }
        let read = inner
            .store
            .read(|c| Ok((meta_get(c, REQUESTED)?, meta_get(c, LAST_AT)?, meta_get(c, "catalogue_flush")?)));
        let Ok((requested, last, flush)) = read else { continue };
        // `dvc-sync retry` asks for unknown procedures to be looked up again.
        if flush.is_some() && flush != flushed {
            inner.catalogue.forget_unknown();
            flushed = flush;
            inner.pusher_wake.notify_one();
        }
        let now = inner.clock.now().as_microsecond();
        let due = match (inner.cfg.reconcile_interval, last.and_then(|l| l.parse::<i64>().ok())) {
            (Some(interval), Some(last)) => now - last >= interval.as_micros() as i64,
            // Never ran: the first pass waits one interval (the head pass reads everything at
            // first anyway).
            (Some(interval), None) => {
                let _ = inner.store.write(|tx| meta_set(tx, LAST_AT, Some(&now.to_string())));
                let _ = interval;
                false
            }
            (None, _) => false,
        };
        if requested.is_some() || due {
            pass(&inner, &token).await;
        }
    }
}
