//! The engine: each source's poller → SQLite outbox → pusher, beside the reconciler, the audit
//! and the heartbeat. Each loop is a [`worker`] under one runner. The engine is written against
//! the [`ports`] traits (source, sink, clock), so the same code runs against the HTTP portals
//! in production and against in-memory portals with controlled time in the simulation.
//!
//! What the workers share is [`Shared`] (the store, the clock, counters, the notes `status`
//! reads, the board of workers); anything else a worker needs it is handed when it is made.

pub mod answer;
pub(crate) mod audit;
pub(crate) mod catalogue;
pub(crate) mod fresh;
pub(crate) mod health;
pub(crate) mod heartbeat;
pub(crate) mod journal;
pub(crate) mod limiter;
pub(crate) mod minimise;
pub(crate) mod poll;
pub(crate) mod portal;
pub mod ports;
pub(crate) mod push;
pub(crate) mod readback;
pub(crate) mod reconciler;
pub(crate) mod stats;
pub(crate) mod trouble;
pub(crate) mod worker;

pub use audit::{AuditReport, AuditScope};
pub use health::Readiness;
pub use reconciler::ReconcileReport;
pub use stats::StatsSnapshot;
pub use worker::{WorkerState, WorkerStatus};

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::{
    audit::{AuditConfig, Auditor},
    catalogue::Catalogue,
    fresh::FreshBodies,
    health::Windows,
    heartbeat::Heartbeat,
    minimise::Minimiser,
    poll::{PollConfig, Poller, Recorder},
    portal::Portal,
    ports::{Clock, Sink, Source},
    push::{Handover, PushConfig, Pusher},
    reconciler::Reconciler,
    stats::EngineStats,
    worker::{Board, Role, Worker},
};
use crate::{
    config::{Config, ProvincialConfig},
    domain::{
        normalize::StatusMap,
        ownership::{DEFAULT_SOURCE, Precedence},
    },
    metrics as m,
    store::{Store, StoreError},
};

/// One source as the engine reads it.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// `provincial`, or the `<name>` of `[sources.<name>]`.
    pub name: String,
    /// The sources whose copy of a dossier this one's replaces.
    pub supersedes: Vec<String>,
    pub page_size: usize,
    pub poll_interval: Duration,
    pub look_back: Duration,
    pub reconcile_interval: Option<Duration>,
    /// (initial, max) wait between attempts to read a failed page.
    pub poll_retry: (Duration, Duration),
}

impl SourceSettings {
    pub(crate) fn from_config(c: &ProvincialConfig) -> SourceSettings {
        SourceSettings {
            name: c.name.clone(),
            supersedes: c.supersedes.clone(),
            page_size: c.page_size,
            poll_interval: c.poll_interval,
            look_back: c.look_back,
            reconcile_interval: c.reconcile_interval,
            poll_retry: (c.http.retry_initial, c.http.retry_max),
        }
    }

    fn poll(&self) -> PollConfig {
        PollConfig { page_size: self.page_size, interval: self.poll_interval, look_back: self.look_back }
    }

    /// Its poller's role (a page that cannot be read: the source's retry policy).
    fn poller(&self) -> Role {
        Role::new(format!("poller:{}", self.name), format!("{} poll", self.name), self.poll_retry)
    }
}

/// What the engine needs of the configuration. The source settings here are those of an
/// engine built over one source (`provincial`) with [`Engine::new`].
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
    /// How long a finished, verified (or parked) dossier keeps its personal fields in clear
    /// (`store.personal_data_days`); None: kept (simulations and tests that do not look).
    pub personal_data: Option<Duration>,
}

impl EngineConfig {
    /// The engine's settings; each source's are [`SourceSettings::from_config`] (the first
    /// source's serve as the defaults here; readiness waits for the slowest poll interval, and
    /// the full pass runs at the shortest reconcile interval).
    pub(crate) fn from_config(c: &Config) -> EngineConfig {
        let batch_size = c.national.batch_size;
        let max_concurrency = c.national.max_concurrency;
        let first = SourceSettings::from_config(&c.sources[0]);
        EngineConfig {
            page_size: first.page_size,
            poll_interval: c.sources.iter().map(|s| s.poll_interval).max().unwrap_or(first.poll_interval),
            look_back: first.look_back,
            reconcile_interval: c.sources.iter().filter_map(|s| s.reconcile_interval).min(),
            poll_retry: first.poll_retry,
            push_retry: (c.national.http.retry_initial, c.national.http.retry_max),
            batch_size,
            max_concurrency,
            // Two calls' worth for every concurrent call, so that a round keeps the limiter busy.
            round_size: (batch_size * max_concurrency * 2).clamp(batch_size, 20_000),
            status_map: c.status_map.clone(),
            drain: c.daemon.drain,
            heartbeat: c.daemon.heartbeat,
            seed: jiff::Timestamp::now().as_nanosecond() as u64,
            audit_per_second: c.national.audit_per_second,
            audit_cycle: c.national.audit_cycle,
            personal_data: Some(Duration::from_secs(u64::from(c.store.personal_data_days) * 86_400)),
        }
    }

    /// How long `/readyz` waits for a successful poll, and for an answered national call while
    /// work waits: three poll intervals, and at least 30 s and 60 s (one slow page, one
    /// backoff of the push retry policy, must not flap readiness).
    pub(crate) fn readiness_windows(&self) -> Windows {
        Windows {
            poll: (self.poll_interval * 3).max(Duration::from_secs(30)),
            push: (self.poll_interval * 3).max(Duration::from_secs(60)),
        }
    }

    /// The one source of an engine built with [`Engine::new`].
    fn single_source(&self) -> SourceSettings {
        SourceSettings {
            name: DEFAULT_SOURCE.to_owned(),
            supersedes: Vec::new(),
            page_size: self.page_size,
            poll_interval: self.poll_interval,
            look_back: self.look_back,
            reconcile_interval: self.reconcile_interval,
            poll_retry: self.poll_retry,
        }
    }

    fn push(&self) -> PushConfig {
        PushConfig {
            batch_size: self.batch_size,
            max_concurrency: self.max_concurrency,
            round_size: self.round_size,
            retry: self.push_retry,
        }
    }

    fn audit(&self) -> AuditConfig {
        AuditConfig { per_second: self.audit_per_second, cycle: self.audit_cycle }
    }

    /// The workers, each with the wait after a failed unit of work.
    fn roles(&self) -> Roles {
        Roles {
            // Only the database fails a round (the portal's trouble is each dossier's own, kept
            // in the outbox): soon again; nothing of the round's bookkeeping was lost that a
            // read-back cannot restore (in-flight marks are written first).
            pusher: Role::new("pusher", "national push", (Duration::from_secs(1), Duration::from_secs(5))),
            reconciler: Role::new("reconciler", "reconciliation pass", self.poll_retry),
            // A look-up without an answer: the national retry policy, or what a 429 asked.
            audit: Role::new("audit", "audit", self.push_retry),
            heartbeat: Role::new("heartbeat", "heartbeat", (Duration::from_secs(1), Duration::from_secs(10))),
            // Only the database fails it: soon again.
            minimiser: Role::new(
                "minimiser",
                "personal data minimisation",
                (Duration::from_secs(1), Duration::from_secs(60)),
            ),
        }
    }
}

/// Every worker's role.
struct Roles {
    pusher: Role,
    reconciler: Role,
    audit: Role,
    heartbeat: Role,
    minimiser: Role,
}

/// The one backoff policy (via `backon`): exponential from `initial` to `max`, with jitter
/// seeded by `seed`, never giving up. Workers retry through it; pushes keep their next attempt
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
pub(crate) fn retry_delay(attempts: i64, initial: Duration, max: Duration, seed: u64) -> Duration {
    let half = max / 2;
    let n = attempts.clamp(1, 64) as usize;
    backoff(initial.min(half), half, seed).build().nth(n - 1).unwrap_or(max).min(max)
}

/// What every worker of one engine shares.
pub(crate) struct Shared<C> {
    pub(crate) store: Arc<Store>,
    pub(crate) clock: C,
    pub(crate) stats: EngineStats,
    pub(crate) health: health::Health,
    pub(crate) workers: Board,
    /// Wakes the pusher: a poller or the reconciler recorded changes, the audit enqueued a
    /// repair.
    pub(crate) work_arrived: Notify,
    seeds: Mutex<fastrand::Rng>,
}

impl<C: Clock> Shared<C> {
    pub(crate) fn new(store: Arc<Store>, clock: C, seed: u64) -> Shared<C> {
        Shared {
            store,
            clock,
            stats: EngineStats::default(),
            health: health::Health::default(),
            workers: Board::default(),
            work_arrived: Notify::new(),
            seeds: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    /// A seed for one backoff's jitter (from the engine's seed: a simulation replays them).
    pub(crate) fn next_seed(&self) -> u64 {
        self.seeds.lock().unwrap_or_else(|p| p.into_inner()).u64(..)
    }
}

/// The dossiers of the pusher's current round: the audit corrects none of them meanwhile (the
/// round works from the state it loaded).
#[derive(Debug, Default)]
pub(crate) struct InRound(Mutex<HashSet<String>>);

/// Empties the round's set when the round ends, however it ends.
pub(crate) struct RoundGuard<'a>(&'a InRound);

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl InRound {
    /// Loads a round's dossiers and registers them at once, so that the audit corrects none of
    /// them between the load and the registration.
    pub(crate) fn enter<T, E>(
        &self,
        load: impl FnOnce() -> Result<Vec<T>, E>,
        name: impl Fn(&T) -> &str,
    ) -> Result<(Vec<T>, RoundGuard<'_>), E> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = load()?;
        set.extend(loaded.iter().map(|t| name(t).to_owned()));
        Ok((loaded, RoundGuard(self)))
    }

    /// Runs `f` unless `mahoso` is in the current round (None then), the round kept from
    /// starting meanwhile.
    pub(crate) fn outside<T>(&self, mahoso: &str, f: impl FnOnce() -> T) -> Option<T> {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (!set.contains(mahoso)).then(f)
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
    shared: Arc<Shared<C>>,
    /// Each source's recorder and settings, in the configuration's order.
    sources: Arc<Vec<ReadSource<S, C>>>,
    portal: Arc<Portal<N, C>>,
    in_round: Arc<InRound>,
    cfg: EngineConfig,
    started_at: i64,
}

impl<S, N, C> Clone for Engine<S, N, C> {
    fn clone(&self) -> Self {
        Engine {
            shared: self.shared.clone(),
            sources: self.sources.clone(),
            portal: self.portal.clone(),
            in_round: self.in_round.clone(),
            cfg: self.cfg.clone(),
            started_at: self.started_at,
        }
    }
}

/// One source's recorder, with its settings.
type ReadSource<S, C> = (Arc<Recorder<S, C>>, SourceSettings);

/// Runs a worker on its own task until `stop`.
fn spawn_worker<W, C>(
    mut worker: W,
    role: Role,
    shared: Arc<Shared<C>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    W: Worker + 'static,
    C: Clock,
{
    tokio::spawn(async move { worker::run(&mut worker, &role, &shared, &stop).await })
}

impl<S: Source, N: Sink, C: Clock> Engine<S, N, C> {
    /// An engine over one source, named `provincial`, with `cfg`'s source settings.
    pub fn new(
        store: Arc<Store>,
        source: S,
        sink: N,
        clock: C,
        cfg: EngineConfig,
    ) -> Result<Self, StoreError> {
        let single = cfg.single_source();
        Engine::with_sources(store, vec![(single, source)], sink, clock, cfg)
    }

    /// An engine over several named sources (at least one): a merged province.
    pub fn with_sources(
        store: Arc<Store>,
        sources: Vec<(SourceSettings, S)>,
        sink: N,
        clock: C,
        cfg: EngineConfig,
    ) -> Result<Self, StoreError> {
        assert!(!sources.is_empty(), "an engine reads at least one source");
        let catalogue = Arc::new(store.read(Catalogue::load)?);
        let fresh = Arc::new(FreshBodies::default());
        let precedence = Arc::new(Precedence::new(
            sources.iter().map(|(s, _)| (s.name.as_str(), s.supersedes.as_slice())),
        ));
        let started_at = clock.now().as_microsecond();
        let shared = Arc::new(Shared::new(store, clock, cfg.seed));
        let mut recorders = Vec::new();
        for (settings, source) in sources {
            // A source that numbers its own reads must never number a new one below what is
            // stored of it.
            let highest: Option<i64> = shared.store.read(|c| {
                c.query_row(
                    "SELECT MAX(v) FROM (SELECT MAX(version) AS v FROM dossier WHERE source = ?1
                                         UNION ALL SELECT MAX(version) FROM quarantine WHERE source = ?1)",
                    [&settings.name],
                    |r| r.get(0),
                )
            })?;
            if let Some(v) = highest {
                source.resume_after(v);
            }
            let recorder = Arc::new(Recorder {
                shared: shared.clone(),
                source: Arc::new(source),
                catalogue: catalogue.clone(),
                fresh: fresh.clone(),
                status_map: cfg.status_map.clone(),
                name: settings.name.clone(),
                precedence: precedence.clone(),
            });
            recorders.push((recorder, settings));
        }
        let portal = Arc::new(Portal::new(sink, shared.clone(), cfg.max_concurrency, cfg.push_retry.0));
        Ok(Engine { shared, sources: Arc::new(recorders), portal, in_round: Arc::default(), cfg, started_at })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// The first source.
    pub fn source(&self) -> &S {
        &self.sources[0].0.source
    }

    /// The sources' names, in order.
    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|(_, s)| s.name.clone()).collect()
    }

    /// Whether the daemon does its job: the database usable, a recent successful poll, and
    /// national calls answered while work waits.
    pub(crate) fn readiness(&self) -> Readiness {
        let names = self.source_names();
        health::readiness(&self.shared, self.cfg.readiness_windows(), self.started_at, &names)
    }

    /// A one-line summary (systemd's STATUS).
    pub(crate) fn status_line(&self) -> String {
        health::status_line(&self.shared)
    }

    /// What the running workers last recorded.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.shared.workers.snapshot()
    }

    fn pusher(&self) -> Pusher<N, C> {
        let first = &self.sources[0].0;
        let handover = Handover {
            catalogue: first.catalogue.clone(),
            fresh: first.fresh.clone(),
            in_round: self.in_round.clone(),
        };
        Pusher::new(self.shared.clone(), self.portal.clone(), handover, self.cfg.push())
    }

    fn auditor(&self) -> Auditor<N, C> {
        Auditor::new(self.shared.clone(), self.portal.clone(), self.in_round.clone(), self.cfg.audit())
    }

    fn reconciler(&self) -> Reconciler<S, C> {
        let sources = self.sources.iter().map(|(r, s)| (r.clone(), s.page_size)).collect();
        Reconciler::new(sources, self.cfg.reconcile_interval)
    }

    fn heartbeat(&self) -> Heartbeat<N, C> {
        let audit_cycle = if self.cfg.audit_per_second > 0.0 { self.cfg.audit_cycle } else { Duration::ZERO };
        Heartbeat::new(
            self.shared.clone(),
            self.portal.clone(),
            self.started_at,
            self.cfg.heartbeat,
            audit_cycle,
        )
    }

    /// Runs until `stop` is cancelled, then lets the work under way finish for at most the
    /// drain time. Anything cut off is still marked in flight and read back on the next start.
    pub async fn run(&self, stop: CancellationToken) {
        let mut heartbeat = self.heartbeat();
        if let Err(e) = heartbeat.beat(false) {
            tracing::error!(event = "store_failed", what = "heartbeat", error = %e);
        }
        metrics::gauge!(m::UP).set(1.0);
        let shared = &self.shared;
        let roles = self.cfg.roles();
        // One poller per source, each on its own: one source down or slow never delays another.
        let mut tasks: Vec<_> = self
            .sources
            .iter()
            .map(|(recorder, settings)| {
                let poller = Poller::new(recorder.clone(), settings.poll());
                spawn_worker(poller, settings.poller(), shared.clone(), stop.clone())
            })
            .collect();
        tasks.extend([
            spawn_worker(self.pusher(), roles.pusher, shared.clone(), stop.clone()),
            spawn_worker(self.reconciler(), roles.reconciler, shared.clone(), stop.clone()),
            spawn_worker(self.auditor(), roles.audit, shared.clone(), stop.clone()),
            spawn_worker(self.heartbeat(), roles.heartbeat, shared.clone(), stop.clone()),
        ]);
        if let Some(keep) = self.cfg.personal_data {
            let minimiser = Minimiser::new(shared.clone(), keep);
            tasks.push(spawn_worker(minimiser, roles.minimiser, shared.clone(), stop.clone()));
        }
        // If this future is dropped (a simulated crash), the tasks go with it.
        let guard = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
        stop.cancelled().await;
        self.portal.stop();
        tracing::info!(event = "drain_started", drain_seconds = self.cfg.drain.as_secs_f64());
        if tokio::time::timeout(self.cfg.drain, futures::future::join_all(tasks)).await.is_err() {
            tracing::warn!(
                event = "drain_timeout",
                "in-flight calls cut off at the drain deadline; they will be read back on the next start"
            );
        }
        drop(guard);
        shared.workers.stop_all(shared.clock.now().as_microsecond());
        if let Err(e) = heartbeat.beat(true) {
            tracing::error!(event = "store_failed", what = "heartbeat", error = %e);
        }
        metrics::gauge!(m::UP).set(0.0);
        tracing::info!(event = "drain_finished");
    }

    /// One full reconciliation pass now (the daemon not running); None if stopped before the
    /// end.
    pub(crate) async fn reconcile_once(&self, stop: &CancellationToken) -> Option<ReconcileReport> {
        let mut reconciler = self.reconciler().once();
        worker::run(&mut reconciler, &self.cfg.roles().reconciler, &self.shared, stop).await;
        reconciler.report
    }

    /// One audit pass now (the daemon not running): repairs are enqueued, and pushed when the
    /// daemon runs. None if stopped before the end.
    pub(crate) async fn audit_once(
        &self,
        scope: AuditScope,
        per_second: f64,
        stop: &CancellationToken,
    ) -> Option<AuditReport> {
        let mut auditor = self.auditor().once(scope, per_second);
        worker::run(&mut auditor, &self.cfg.roles().audit, &self.shared, stop).await;
        auditor.report.take()
    }
}

#[cfg(test)]
mod tests;
