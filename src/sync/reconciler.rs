//! The reconciler: a worker that makes a full pass over the provincial listing, records
//! whatever the poller missed (a newer version, a dossier never seen), re-enqueues any dossier
//! whose acknowledged state is not its latest, and records coverage. A pass starts every
//! `provincial.reconcile_interval_seconds`, and on demand (`dvc-sync reconcile`, noticed within
//! [`CHECK_EVERY`]). A unit of work is one page of the pass, so a page that cannot be read is
//! read again after the runner's backoff, and the pass goes on from there.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    minimise,
    poll::{Applied, Read, Recorder, fetch, furthest},
    ports::{Clock, Cursor, Source},
    worker::{Failure, Step, Worker},
};
use crate::store::{meta_get, meta_set, state};

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
    /// Sources whose pages could not be read this pass (after a few tries): not covered by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources_unread: Vec<String>,
}

pub(crate) const REQUESTED: &str = crate::store::RECONCILE_REQUESTED;
pub(crate) const LAST: &str = "reconcile_last";
pub(crate) const LAST_AT: &str = "reconcile_last_at";
/// Set by `dvc-sync retry`: unknown procedures are asked for again.
const CATALOGUE_FLUSH: &str = "catalogue_flush";

/// How often an idle reconciler looks for a request (and for a pass falling due).
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

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

/// A pass under way: over each source in turn.
struct Pass {
    started: Timestamp,
    /// The source being read (an index into the reconciler's sources).
    source: usize,
    cursor: Option<Cursor>,
    total: Applied,
    /// Failed reads of the current page in a row.
    failures: u32,
    unread: Vec<String>,
}

/// Tries of one page before the pass leaves its source for the next (one source down never
/// holds the others' pass).
const TRIES_PER_PAGE: u32 = 3;

pub(crate) struct Reconciler<S, C> {
    /// Each source's recorder, with its page size.
    sources: Vec<(Arc<Recorder<S, C>>, usize)>,
    every: Option<Duration>,
    pass: Option<Pass>,
    /// The catalogue flush last acted on.
    flushed: Option<String>,
    /// A one-off pass (the daemon stopped): done at its end.
    once: bool,
    /// The last pass's report.
    pub(crate) report: Option<ReconcileReport>,
}

impl<S: Source, C: Clock> Reconciler<S, C> {
    /// Over `sources` (at least one), a pass every `every`.
    pub(crate) fn new(sources: Vec<(Arc<Recorder<S, C>>, usize)>, every: Option<Duration>) -> Self {
        Reconciler { sources, every, pass: None, flushed: None, once: false, report: None }
    }

    fn shared(&self) -> &Arc<super::Shared<C>> {
        &self.sources[0].0.shared
    }

    /// One pass now, then done.
    pub(crate) fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Whether a pass should start now; acts on a catalogue flush meanwhile.
    fn due(&mut self) -> Result<bool, Failure> {
        if self.once {
            return Ok(true);
        }
        let shared = self.shared().clone();
        let (requested, last, flush) = shared
            .store
            .read(|c| Ok((meta_get(c, REQUESTED)?, meta_get(c, LAST_AT)?, meta_get(c, CATALOGUE_FLUSH)?)))?;
        // `dvc-sync retry` asks for unknown procedures to be looked up again.
        if flush.is_some() && flush != self.flushed {
            self.sources[0].0.catalogue.forget_unknown();
            self.flushed = flush;
            shared.work_arrived.notify_one();
        }
        if requested.is_some() {
            return Ok(true);
        }
        let now = shared.clock.now().as_microsecond();
        Ok(match (self.every, last.and_then(|l| l.parse::<i64>().ok())) {
            (Some(every), Some(last)) => now - last >= every.as_micros() as i64,
            // Never ran: the first pass waits one interval (the poller's first pass reads
            // everything anyway).
            (Some(_), None) => {
                shared.store.write(|tx| meta_set(tx, LAST_AT, Some(&now.to_string())))?;
                false
            }
            (None, _) => false,
        })
    }

    /// Reads and records the pass's next page; the report when the pass is over.
    async fn next_page(&mut self, stop: &CancellationToken) -> Result<Option<ReconcileReport>, Failure> {
        let Some(pass) = &mut self.pass else { return Ok(None) };
        let (recorder, page_size) = &self.sources[pass.source];
        let page = match fetch(recorder, stop, Read::Scan, pass.cursor.as_ref(), *page_size).await {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(None),
            Err(failure) => {
                pass.failures += 1;
                if pass.failures < TRIES_PER_PAGE {
                    return Err(failure);
                }
                tracing::warn!(
                    event = "reconcile_source_unread",
                    source = %recorder.name,
                    error = %failure.error,
                    "the full pass goes on without this source"
                );
                pass.unread.push(recorder.name.clone());
                return self.next_source();
            }
        };
        pass.failures = 0;
        let applied = recorder.apply_page(&page.records, None)?;
        pass.total.read += applied.read;
        pass.total.changed += applied.changed;
        pass.total.quarantined += applied.quarantined;
        if applied.changed > 0 {
            recorder.shared.work_arrived.notify_one();
        }
        let next = furthest(&page.records, page.end.as_ref(), pass.cursor.as_ref());
        if page.has_more && next.is_some() && next != pass.cursor {
            pass.cursor = next;
            return Ok(None);
        }
        self.next_source()
    }

    /// The current source is read to its end (or left): on to the next, or the pass's end.
    fn next_source(&mut self) -> Result<Option<ReconcileReport>, Failure> {
        let Some(pass) = &mut self.pass else { return Ok(None) };
        pass.source += 1;
        pass.cursor = None;
        pass.failures = 0;
        if pass.source < self.sources.len() {
            return Ok(None);
        }
        self.finish().map(Some)
    }

    /// Ends the pass: the outbox's consistency check, coverage, the report kept for
    /// `dvc-sync reconcile`.
    fn finish(&mut self) -> Result<ReconcileReport, Failure> {
        let shared = self.shared().clone();
        let Some(pass) = &self.pass else { return Err(Failure::new("no pass under way")) };
        let now = shared.clock.now();
        let (requeued, coverage_percent) = shared.store.write(|tx| {
            let requeued = requeue_drift(tx, now.as_microsecond())?;
            Ok((requeued, state::coverage(&state::dossier_counts(tx)?)))
        })?;
        if requeued > 0 {
            shared.work_arrived.notify_one();
        }
        let report = ReconcileReport {
            started_at: pass.started.to_string(),
            finished_at: now.to_string(),
            records: pass.total.read,
            drift: pass.total.changed,
            quarantined: pass.total.quarantined,
            requeued,
            coverage_percent,
            sources_unread: pass.unread.clone(),
        };
        let complete = pass.unread.is_empty();
        let text = serde_json::to_string(&report).map_err(|e| Failure::new(e.to_string()))?;
        let started = pass.started.as_microsecond();
        shared.store.write(|tx| {
            meta_set(tx, LAST, Some(&text))?;
            meta_set(tx, LAST_AT, Some(&now.as_microsecond().to_string()))?;
            // A dossier waiting for its source is lost only if every source was read.
            if complete {
                minimise::source_lost(tx, started, &report.finished_at)?;
            }
            // Dossiers that began waiting for their source during this pass may have been
            // passed over before: one more pass for them.
            let again: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM dead WHERE kind = ?1 AND dead_at >= ?2)")?
                .query_row(rusqlite::params![minimise::WAITING_FOR_SOURCE, started], |r| r.get(0))?;
            meta_set(tx, REQUESTED, again.then(|| now.as_microsecond().to_string()).as_deref())
        })?;
        tracing::info!(
            event = "reconcile_finished",
            records = report.records,
            drift = report.drift,
            requeued = report.requeued,
            coverage_percent = report.coverage_percent
        );
        self.pass = None;
        Ok(report)
    }
}

impl<S: Source, C: Clock> Worker for Reconciler<S, C> {
    async fn work(&mut self, stop: &CancellationToken) -> Result<Step, Failure> {
        if self.pass.is_none() {
            if !self.due()? {
                return Ok(Step::Idle);
            }
            tracing::info!(event = "reconcile_started");
            let started = self.shared().clock.now();
            self.pass = Some(Pass {
                started,
                source: 0,
                cursor: None,
                total: Applied::default(),
                failures: 0,
                unread: Vec::new(),
            });
        }
        match self.next_page(stop).await? {
            Some(report) => {
                self.report = Some(report);
                Ok(if self.once { Step::Done } else { Step::Busy })
            }
            None => Ok(Step::Busy),
        }
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(CHECK_EVERY).await;
    }
}
