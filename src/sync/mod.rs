//! The engine: poller → SQLite outbox → pusher, plus the reconciler and the heartbeat. It is
//! written against the [`ports`] traits (source, sink, clock), so the same code runs against
//! the HTTP portals in production and against in-memory portals with controlled time in the
//! simulation.

pub mod answer;
pub(crate) mod audit;
pub(crate) mod catalogue;
pub(crate) mod fresh;
pub(crate) mod journal;
pub(crate) mod limiter;
pub(crate) mod poller;
pub mod ports;
pub(crate) mod pusher;
pub(crate) mod reconciler;
pub(crate) mod stats;
pub(crate) mod trouble;

pub use audit::{AuditReport, AuditScope};
pub use reconciler::ReconcileReport;
pub use stats::StatsSnapshot;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::{
    catalogue::Catalogue,
    limiter::Limiter,
    ports::{Clock, Sink, Source},
    stats::EngineStats,
};
use crate::{
    config::Config,
    domain::normalize::StatusMap,
    metrics as m,
    store::{Store, StoreError, meta_add, meta_set},
};

/// What the engine needs of the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub page_size: usize,
    pub poll_interval: Duration,
    pub look_back: Duration,
    pub reconcile_interval: Option<Duration>,
    /// (initial, max) wait between attempts to read a failed page.
    pub poll_retry: (Duration, Duration),
    /// (initial, max) wait before a dossier's next attempt after a failed push.
    pub push_retry: (Duration, Duration),
    pub batch_size: usize,
    pub max_concurrency: usize,
    /// Dossiers taken per pusher round.
    pub round_size: usize,
    pub status_map: StatusMap,
    pub drain: Duration,
    pub heartbeat: Duration,
    /// Seeds the jitter of every backoff (fixed in simulations, from the clock otherwise).
    pub seed: u64,
    /// Look-ups a second of the background audit; 0: no background audit.
    pub audit_per_second: f64,
    /// Every synchronized dossier verified at least once in this time.
    pub audit_cycle: Duration,
}

impl EngineConfig {
    pub fn from_config(c: &Config) -> EngineConfig {
        let batch_size = c.national.batch_size;
        let max_concurrency = c.national.max_concurrency;
        EngineConfig {
            page_size: c.provincial.page_size,
            poll_interval: c.provincial.poll_interval,
            look_back: c.provincial.look_back,
            reconcile_interval: c.provincial.reconcile_interval,
            poll_retry: (c.provincial.http.retry_initial, c.provincial.http.retry_max),
            push_retry: (c.national.http.retry_initial, c.national.http.retry_max),
            batch_size,
            max_concurrency,
            round_size: (batch_size * max_concurrency * 2).clamp(batch_size, 20_000),
            status_map: c.status_map.clone(),
            drain: c.daemon.drain,
            heartbeat: c.daemon.heartbeat,
            seed: jiff::Timestamp::now().as_nanosecond() as u64,
            audit_per_second: c.national.audit_per_second,
            audit_cycle: c.national.audit_cycle,
        }
    }
}

/// The one backoff policy (via `backon`): exponential from `initial` to `max`, with jitter
/// seeded by `seed`, never giving up. Polls retry through it; pushes keep their next attempt
/// in the outbox with [`retry_delay`].
pub(crate) fn backoff(initial: Duration, max: Duration, seed: u64) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_jitter()
        .with_jitter_seed(seed)
        .without_max_times()
}

/// The wait before attempt `attempts + 1`: exponential from `initial`, with jitter, never
/// more than `max` (jitter included).
pub fn retry_delay(attempts: i64, initial: Duration, max: Duration, seed: u64) -> Duration {
    let half = max / 2;
    let n = attempts.clamp(1, 64) as usize;
    backoff(initial.min(half), half, seed).build().nth(n - 1).unwrap_or(max).min(max)
}

/// Last successes and errors, kept in memory and written by the heartbeat.
#[derive(Debug, Default)]
struct Notes {
    poll_success: Option<i64>,
    poll_error: Option<String>,
    push_success: Option<i64>,
    push_error: Option<String>,
    renewals_written: u64,
    /// The last time the database refused the heartbeat, with why.
    store_error: Option<String>,
}

/// Whether the daemon does its job, for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reasons: Vec<String>,
}

pub struct Inner<S, N, C> {
    pub(crate) store: Arc<Store>,
    pub(crate) source: S,
    pub(crate) sink: N,
    pub(crate) clock: C,
    pub(crate) cfg: EngineConfig,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) stats: EngineStats,
    pub(crate) catalogue: Catalogue,
    pub(crate) pusher_wake: Notify,
    rng: Mutex<fastrand::Rng>,
    notes: Mutex<Notes>,
    started_at: i64,
    /// National call failures, logged quietly (see [`trouble::Trouble`]).
    pub(crate) national_trouble: Mutex<trouble::Trouble>,
    /// Items per call: batch_size, lowered for good when the portal answers code 8.
    item_limit: std::sync::atomic::AtomicUsize,
    /// The dossiers of the pusher's current round: the audit corrects none of them (the round
    /// works from the state it loaded).
    pub(crate) in_round: Mutex<std::collections::HashSet<String>>,
    /// National calls noted for the call journal, written with the outcome they led to: the
    /// pusher's, and the audit's (each task writes its own, in its own transactions).
    pub(crate) journal: journal::Pending,
    pub(crate) audit_journal: journal::Pending,
    /// Bodies the poller just recorded, for the pusher's next round (see [`fresh`]).
    pub(crate) fresh: fresh::FreshBodies,
}

impl<S: Source, N: Sink, C: Clock> Inner<S, N, C> {
    pub(crate) fn next_seed(&self) -> u64 {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).u64(..)
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Items per national call.
    pub(crate) fn item_limit(&self) -> usize {
        self.item_limit.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    /// The portal refused `attempted` items as too many (code 8): never send more than half.
    pub(crate) fn learn_item_limit(&self, at_most: usize) {
        let at_most = at_most.max(1);
        let before = self.item_limit.fetch_min(at_most, std::sync::atomic::Ordering::Relaxed);
        if at_most < before {
            tracing::warn!(
                event = "batch_halved",
                batch_size = at_most,
                "the national portal takes fewer items per call than national.batch_size; sending at most {at_most}"
            );
        }
    }

    pub(crate) fn note_poll_success(&self) {
        let now = self.clock.now();
        metrics::gauge!(m::LAST_POLL).set(now.as_second() as f64);
        let mut n = self.notes();
        n.poll_success = Some(now.as_microsecond());
        n.poll_error = None;
    }

    pub(crate) fn note_poll_error(&self, error: &str) {
        self.notes().poll_error = Some(error.to_owned());
    }

    pub(crate) fn note_push_success(&self) {
        let now = self.clock.now();
        metrics::gauge!(m::LAST_PUSH).set(now.as_second() as f64);
        let mut n = self.notes();
        n.push_success = Some(now.as_microsecond());
        n.push_error = None;
    }

    pub(crate) fn note_push_error(&self, error: &str) {
        self.notes().push_error = Some(error.to_owned());
    }

    /// Writes the heartbeat and the notes in one transaction.
    fn beat(&self, started_at: i64, stopping: bool) -> Result<(), StoreError> {
        let now = self.clock.now().as_microsecond();
        let renewals = self.sink.session_renewals();
        let (notes, new_renewals) = {
            let mut n = self.notes();
            let delta = renewals.saturating_sub(n.renewals_written);
            n.renewals_written = renewals;
            ((n.poll_success, n.poll_error.clone(), n.push_success, n.push_error.clone()), delta)
        };
        metrics::counter!(m::SESSION_RENEWALS).increment(new_renewals);
        let result = self.store.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO heartbeat (id, pid, version, started_at, beat_at, stopped_at) VALUES (1, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, version = excluded.version,
                     started_at = excluded.started_at, beat_at = excluded.beat_at, stopped_at = excluded.stopped_at",
            )?
            .execute(rusqlite::params![std::process::id(), env!("CARGO_PKG_VERSION"), started_at, now, stopping.then_some(now)],
            )?;
            let time = |t: Option<i64>| t.map(|t| t.to_string());
            if let Some(t) = notes.0 {
                meta_set(tx, "poll_last_success_at", time(Some(t)).as_deref())?;
            }
            meta_set(tx, "poll_last_error", notes.1.as_deref())?;
            if let Some(t) = notes.2 {
                meta_set(tx, "push_last_success_at", time(Some(t)).as_deref())?;
            }
            meta_set(tx, "push_last_error", notes.3.as_deref())?;
            if new_renewals > 0 {
                meta_add(tx, "session_renewals", new_renewals as i64)?;
            }
            meta_set(tx, "concurrency_limit", Some(&self.limiter.limit().to_string()))?;
            Ok(())
        });
        self.notes().store_error = result.as_ref().err().map(ToString::to_string);
        self.export_gauges(now);
        result
    }

    /// Sets the gauges that describe the whole state (cheap: trigger-kept counts, an index).
    fn export_gauges(&self, now: i64) {
        let read = self.store.read(|c| {
            let counts = crate::store::state::dossier_counts(c)?;
            let oldest = crate::store::state::oldest_enqueued(c)?;
            Ok((counts, oldest))
        });
        let Ok((d, oldest)) = read else { return };
        for (state, n) in [
            ("in_sync", d.in_sync),
            ("pending", d.pending),
            ("retrying", d.retrying),
            ("dead", d.dead),
            ("quarantined", d.quarantined),
        ] {
            metrics::gauge!(m::DOSSIERS, "state" => state).set(n as f64);
        }
        metrics::gauge!(m::OUTBOX_DEPTH).set((d.pending + d.retrying) as f64);
        metrics::gauge!(m::OUTBOX_OLDEST_AGE).set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6));
        metrics::gauge!(m::COVERAGE).set(crate::store::state::coverage(&d) / 100.0);
        metrics::gauge!(m::CONCURRENCY_LIMIT).set(self.limiter.limit() as f64);
        if let Ok(a) = self.store.read(|c| crate::store::state::audit_state(c, now, &d)) {
            metrics::gauge!(m::AUDIT_VERIFIED).set(a.verified_percent / 100.0);
            metrics::gauge!(m::AUDIT_OLDEST_AGE).set(a.oldest_verified_age_seconds);
        }
        let cycle = if self.cfg.audit_per_second > 0.0 { self.cfg.audit_cycle.as_secs_f64() } else { 0.0 };
        metrics::gauge!(m::AUDIT_CYCLE).set(cycle);
    }

    fn readiness(&self) -> Readiness {
        let started_at = self.started_at;
        let now = self.clock.now().as_microsecond();
        let mut reasons = Vec::new();
        if let Err(e) = self.store.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))) {
            reasons.push(format!("the database is not readable: {e}"));
        }
        let depth =
            self.store.read(crate::store::state::dossier_counts).map(|d| d.pending + d.retrying).unwrap_or(0);
        let n = self.notes();
        if let Some(e) = &n.store_error {
            reasons.push(format!("the database refuses writes: {e}"));
        }
        let poll_window = (self.cfg.poll_interval * 3).max(Duration::from_secs(30)).as_micros() as i64;
        match n.poll_success {
            Some(at) if now - at <= poll_window => {}
            Some(at) => reasons.push(format!(
                "no successful poll for {:.0} s{}",
                (now - at) as f64 / 1e6,
                n.poll_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
            )),
            None => reasons.push(format!(
                "no successful poll yet{}",
                n.poll_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
            )),
        }
        let push_window = (self.cfg.poll_interval * 3).max(Duration::from_secs(60)).as_micros() as i64;
        let since = n.push_success.unwrap_or(started_at);
        if depth > 0 && now - since > push_window {
            reasons.push(format!(
                "{depth} dossier(s) waiting and no national call answered for {:.0} s{}",
                (now - since) as f64 / 1e6,
                n.push_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
            ));
        }
        Readiness { ready: reasons.is_empty(), reasons }
    }

    /// A progress line for the logs, once a minute.
    fn report_progress(&self) {
        let read = self.store.read(|c| {
            let d = crate::store::state::dossier_counts(c)?;
            let oldest = crate::store::state::oldest_enqueued(c)?;
            Ok((d, oldest))
        });
        if let Ok((d, oldest)) = read {
            let now = self.clock.now().as_microsecond();
            tracing::info!(
                event = "progress_reported",
                total = d.total,
                in_sync = d.in_sync,
                pending = d.pending,
                retrying = d.retrying,
                dead = d.dead,
                quarantined = d.quarantined,
                coverage_percent = crate::store::state::coverage(&d),
                oldest_pending_age_seconds = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6),
                concurrency_limit = self.limiter.limit(),
            );
        }
    }

    /// One line for systemd's STATUS: synced/valid, outbox, parked.
    fn status_line(&self) -> String {
        match self.store.read(crate::store::state::dossier_counts) {
            Ok(d) => format!(
                "synced {}/{}, outbox {}, dead {}, quarantined {}",
                d.in_sync,
                d.total.saturating_sub(d.quarantined),
                d.pending + d.retrying,
                d.dead,
                d.quarantined
            ),
            Err(e) => format!("database error: {e}"),
        }
    }
}

/// Aborts tasks when dropped.
pub(crate) struct AbortOnDrop(pub(crate) Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// The sync engine over a source, a sink and a clock. Clones share one engine.
pub struct Engine<S, N, C> {
    inner: Arc<Inner<S, N, C>>,
}

impl<S, N, C> Clone for Engine<S, N, C> {
    fn clone(&self) -> Self {
        Engine { inner: self.inner.clone() }
    }
}

impl<S: Source, N: Sink, C: Clock> Engine<S, N, C> {
    pub fn new(
        store: Arc<Store>,
        source: S,
        sink: N,
        clock: C,
        cfg: EngineConfig,
    ) -> Result<Self, StoreError> {
        let catalogue = store.read(Catalogue::load)?;
        // A source that numbers its own reads must never number a new one below what is stored.
        let highest: Option<i64> = store.read(|c| {
            c.query_row(
                "SELECT MAX(v) FROM (SELECT MAX(version) AS v FROM dossier UNION ALL SELECT MAX(version) FROM quarantine)",
                [],
                |r| r.get(0),
            )
        })?;
        if let Some(v) = highest {
            source.resume_after(v);
        }
        let limiter = Limiter::new(cfg.max_concurrency);
        let rng = Mutex::new(fastrand::Rng::with_seed(cfg.seed));
        let started_at = clock.now().as_microsecond();
        let batch_size = cfg.batch_size.max(1);
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                source,
                sink,
                clock,
                cfg,
                limiter,
                stats: EngineStats::default(),
                catalogue,
                pusher_wake: Notify::new(),
                rng,
                notes: Mutex::new(Notes::default()),
                started_at,
                national_trouble: Mutex::new(trouble::Trouble::new("national calls")),
                item_limit: std::sync::atomic::AtomicUsize::new(batch_size),
                in_round: Mutex::new(std::collections::HashSet::new()),
                journal: journal::Pending::default(),
                audit_journal: journal::Pending::default(),
                fresh: fresh::FreshBodies::default(),
            }),
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn source(&self) -> &S {
        &self.inner.source
    }

    pub fn sink(&self) -> &N {
        &self.inner.sink
    }

    /// Whether the daemon does its job: the database usable, a recent successful poll, and
    /// national calls answered while work waits.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness()
    }

    /// A one-line summary (systemd's STATUS).
    pub fn status_line(&self) -> String {
        self.inner.status_line()
    }

    /// The current adaptive concurrency limit.
    pub fn concurrency_limit(&self) -> usize {
        self.inner.limiter.limit()
    }

    /// Runs until `token` is cancelled, then lets in-flight pushes finish for at most the
    /// drain time. Anything cut off is still marked in flight and read back on the next start.
    pub async fn run(&self, token: CancellationToken) {
        let inner = &self.inner;
        let started_at = inner.started_at;
        if let Err(e) = inner.beat(started_at, false) {
            tracing::error!(event = "store_failed", what = "heartbeat", error = %e);
        }
        metrics::gauge!(m::UP).set(1.0);
        let poller = tokio::spawn(poller::run(inner.clone(), token.clone()));
        let pusher = tokio::spawn(pusher::run(inner.clone(), token.clone()));
        let reconciler = tokio::spawn(reconciler::run(inner.clone(), token.clone()));
        let auditor = tokio::spawn(audit::run(inner.clone(), token.clone()));
        // If this future is dropped (a simulated crash), the tasks go with it.
        let mut guard = AbortOnDrop(vec![
            poller.abort_handle(),
            pusher.abort_handle(),
            reconciler.abort_handle(),
            auditor.abort_handle(),
        ]);
        let beats = {
            let inner = inner.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(inner.cfg.heartbeat);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut last_report = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        biased;
                        () = token.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    if let Err(e) = inner.beat(started_at, false) {
                        tracing::error!(event = "store_failed", what = "heartbeat", error = %e);
                    }
                    if last_report.elapsed() >= Duration::from_secs(60) {
                        last_report = tokio::time::Instant::now();
                        inner.report_progress();
                    }
                }
            })
        };
        guard.0.push(beats.abort_handle());
        token.cancelled().await;
        tracing::info!(event = "drain_started", drain_seconds = inner.cfg.drain.as_secs_f64());
        let abort = [
            poller.abort_handle(),
            pusher.abort_handle(),
            reconciler.abort_handle(),
            auditor.abort_handle(),
            beats.abort_handle(),
        ];
        let all = async {
            let _ = tokio::join!(poller, pusher, reconciler, auditor, beats);
        };
        if tokio::time::timeout(inner.cfg.drain, all).await.is_err() {
            tracing::warn!(
                event = "drain_timeout",
                "in-flight calls cut off at the drain deadline; they will be read back on the next start"
            );
            for handle in abort {
                handle.abort();
            }
        }
        if let Err(e) = inner.beat(started_at, true) {
            tracing::error!(event = "store_failed", what = "heartbeat", error = %e);
        }
        metrics::gauge!(m::UP).set(0.0);
        tracing::info!(event = "drain_finished");
        guard.0.clear();
    }

    /// One full reconciliation pass now (the daemon not running).
    pub async fn reconcile_once(&self, token: &CancellationToken) -> Option<ReconcileReport> {
        reconciler::pass(&self.inner, token).await
    }

    /// One audit pass now (the daemon not running): repairs are enqueued, and pushed when the
    /// daemon runs. None if stopped before the end.
    pub async fn audit_once(
        &self,
        scope: AuditScope,
        per_second: f64,
        token: &CancellationToken,
    ) -> Option<AuditReport> {
        audit::pass(&self.inner, scope, per_second, token).await
    }
}

#[cfg(test)]
mod tests;
