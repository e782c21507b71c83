//! The heartbeat worker: every `daemon.heartbeat_seconds` it writes that the daemon is alive,
//! with the notes of [`health`](super::health) and every worker's state (what `status` reads),
//! sets the gauges that describe the whole state, and once a minute logs a progress line.

use std::{sync::Arc, time::Duration};

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{
    Shared,
    portal::Portal,
    ports::{Clock, Sink},
    worker::{Failure, Step, Worker, WorkerStatus},
};
use crate::{
    metrics as m,
    store::{StoreError, meta_add, meta_set, state},
};

/// A progress line in the logs this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Heartbeat<N, C> {
    shared: Arc<Shared<C>>,
    portal: Arc<Portal<N, C>>,
    started_at: i64,
    /// The audit cycle the gauge reports (0: no background audit).
    audit_cycle: Duration,
    tick: Interval,
    last_progress: Instant,
}

impl<N: Sink, C: Clock> Heartbeat<N, C> {
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        portal: Arc<Portal<N, C>>,
        started_at: i64,
        every: Duration,
        audit_cycle: Duration,
    ) -> Self {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        // A beat late because the runtime was busy is followed by the next one on time, not by
        // a burst of catch-up beats.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Heartbeat { shared, portal, started_at, audit_cycle, tick, last_progress: Instant::now() }
    }

    /// Writes the heartbeat, the notes and the workers in one transaction (`stopping`: the
    /// daemon's last beat, after the drain).
    pub(crate) fn beat(&mut self, stopping: bool) -> Result<(), StoreError> {
        let now = self.shared.clock.now().as_microsecond();
        let renewals = self.portal.sink.session_renewals();
        let notes = self.shared.health.with(|n| n.clone());
        let new_renewals = renewals.saturating_sub(notes.renewals_written);
        let workers = self.shared.workers.snapshot();
        let limit = self.portal.limiter.limit();
        let result = self.shared.store.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO heartbeat (id, pid, version, started_at, beat_at, stopped_at) VALUES (1, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, version = excluded.version,
                     started_at = excluded.started_at, beat_at = excluded.beat_at, stopped_at = excluded.stopped_at",
            )?
            .execute(rusqlite::params![
                std::process::id(),
                env!("CARGO_PKG_VERSION"),
                self.started_at,
                now,
                stopping.then_some(now)
            ])?;
            let time = |t: i64| t.to_string();
            for (name, last) in &notes.sources {
                if let Some(t) = last.success {
                    meta_set(tx, &state::source_key(name, "poll_last_success_at"), Some(&time(t)))?;
                }
                meta_set(tx, &state::source_key(name, "poll_last_error"), last.error.as_deref())?;
            }
            if let Some(t) = notes.push.success {
                meta_set(tx, "push_last_success_at", Some(&time(t)))?;
            }
            meta_set(tx, "push_last_error", notes.push.error.as_deref())?;
            meta_set(tx, "push_refused", notes.refused.as_deref())?;
            if new_renewals > 0 {
                meta_add(tx, "session_renewals", new_renewals as i64)?;
            }
            meta_set(tx, "concurrency_limit", Some(&limit.to_string()))?;
            write_workers(tx, &workers)
        });
        if result.is_ok() {
            self.shared.health.with(|n| n.renewals_written = n.renewals_written.max(renewals));
            metrics::counter!(m::SESSION_RENEWALS).increment(new_renewals);
        }
        self.shared.health.with(|n| n.store_error = result.as_ref().err().map(ToString::to_string));
        self.export_gauges(now);
        result
    }

    /// Sets the gauges that describe the whole state (cheap: trigger-kept counts, an index).
    fn export_gauges(&self, now: i64) {
        let store = &self.shared.store;
        let read = store.read(|c| Ok((state::dossier_counts(c)?, state::oldest_enqueued(c)?)));
        let Ok((d, oldest)) = read else { return };
        for (name, n) in [
            ("in_sync", d.in_sync),
            ("pending", d.pending),
            ("retrying", d.retrying),
            ("dead", d.dead),
            ("quarantined", d.quarantined),
        ] {
            metrics::gauge!(m::DOSSIERS, "state" => name).set(n as f64);
        }
        metrics::gauge!(m::OUTBOX_DEPTH).set((d.pending + d.retrying) as f64);
        metrics::gauge!(m::OUTBOX_OLDEST_AGE).set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6));
        metrics::gauge!(m::COVERAGE).set(state::coverage(&d) / 100.0);
        metrics::gauge!(m::CONCURRENCY_LIMIT).set(self.portal.limiter.limit() as f64);
        if let Ok(a) = store.read(|c| state::audit_state(c, now, &d)) {
            metrics::gauge!(m::AUDIT_VERIFIED).set(a.verified_percent / 100.0);
            metrics::gauge!(m::AUDIT_OLDEST_AGE).set(a.oldest_verified_age_seconds);
        }
        metrics::gauge!(m::AUDIT_CYCLE).set(self.audit_cycle.as_secs_f64());
    }

    /// A progress line for the logs.
    fn report_progress(&self) {
        let read = self.shared.store.read(|c| Ok((state::dossier_counts(c)?, state::oldest_enqueued(c)?)));
        if let Ok((d, oldest)) = read {
            let now = self.shared.clock.now().as_microsecond();
            tracing::info!(
                event = "progress_reported",
                total = d.total,
                in_sync = d.in_sync,
                pending = d.pending,
                retrying = d.retrying,
                dead = d.dead,
                quarantined = d.quarantined,
                coverage_percent = state::coverage(&d),
                oldest_pending_age_seconds = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6),
                concurrency_limit = self.portal.limiter.limit(),
            );
        }
    }
}

/// Replaces the recorded workers with `workers`.
fn write_workers(tx: &rusqlite::Connection, workers: &[WorkerStatus]) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM worker")?.execute([])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO worker (name, state, since, last_error, failures) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for w in workers {
        insert.execute(rusqlite::params![
            w.name,
            w.state.as_str(),
            w.since,
            w.last_error,
            w.failures as i64
        ])?;
    }
    Ok(())
}

impl<N: Sink, C: Clock> Worker for Heartbeat<N, C> {
    async fn work(&mut self, _stop: &CancellationToken) -> Result<Step, Failure> {
        self.beat(false)?;
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            self.report_progress();
        }
        Ok(Step::Idle)
    }

    async fn wait_for_work(&mut self) {
        self.tick.tick().await;
    }
}
