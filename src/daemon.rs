//! `dvc-sync run`: the daemon. Takes the database's lock, opens the store, builds the HTTP
//! adapters, serves `/metrics`, `/healthz` and `/readyz`, tells systemd how it is (READY,
//! WATCHDOG, STATUS, STOPPING), and runs the engine until the token is cancelled, then drains.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ProvincialConfig},
    domain::service::Service,
    metrics as m,
    national::HttpNational,
    provincial::Provincial,
    store::{Store, lock::DaemonLock, meta_get, meta_set, state::source_key},
    sync::{Engine, EngineConfig, SourceSettings, ports::SystemClock},
    telemetry,
};

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(event = "sd_notify_failed", error = %e);
    }
}

/// The production engine: the store at `store.path`, the configured provincial source, the
/// national HTTP adapter, the system clock.
pub(crate) type DaemonEngine = Engine<Provincial, HttpNational, SystemClock>;

/// Opens the store and builds the engine (the caller holds the database's lock).
pub fn build_engine(config: &Config) -> anyhow::Result<DaemonEngine> {
    let store = Arc::new(Store::open_keyed(&config.store.path, &config.store.keys)?);
    // What `rekey` checks before sealing beside a running daemon.
    let key_id = config.store.keys.sealing.as_ref().map(|k| k.id()).unwrap_or_default();
    store.write(|tx| meta_set(tx, crate::store::DAEMON_KEY, Some(&key_id)))?;
    check_unit(&store, config)?;
    let mut sources = Vec::new();
    for source in &config.sources {
        check_source_kind(&store, config, source)?;
        let read = Provincial::new(source).with_context(|| {
            format!("while setting up the source {:?} ([{}])", source.name, source.section)
        })?;
        sources.push((SourceSettings::from_config(source), read));
    }
    let sink = HttpNational::new(&config.national).context("while setting up the national client")?;
    Ok(Engine::with_sources(store, sources, sink, SystemClock, EngineConfig::from_config(config))?)
}

/// The meta key of the unit code a database synchronises under.
const UNIT: &str = "national_madonvi";

/// A database synchronised under one unit code goes on under another only when the old one is
/// among `national.predecessors` (a merger: the MaHoSo under the closed code are this
/// province's, kept for life); otherwise `national.madonvi` changed by mistake, and the
/// national portal would refuse or misfile every dossier.
pub(crate) fn check_unit(store: &Store, config: &Config) -> anyhow::Result<()> {
    let madonvi = &config.national.madonvi;
    if madonvi.is_empty() {
        return Ok(());
    }
    let recorded = store.read(|c| meta_get(c, UNIT))?;
    // Only what the national portal took under a unit binds the database to it: a unit code
    // mistyped on the first day, refused by the portal, is simply corrected.
    let synced: bool = store.read(|c| {
        c.query_row("SELECT EXISTS (SELECT 1 FROM dossier WHERE national_exists = 1)", [], |r| r.get(0))
    })?;
    // A database from before the unit was recorded: its dossiers say which province it
    // synchronised for.
    if recorded.is_none() && synced {
        check_held_unit(store, config)?;
    }
    if let Some(old) = recorded.as_deref()
        && old != madonvi
        && synced
    {
        anyhow::ensure!(
            config.national.predecessors.iter().any(|p| p == old),
            crate::config::NeedsConfig(format!(
                "{} was synchronised as national.madonvi = {old:?}, and the configuration now says {madonvi:?}. If \
                 {old} was closed into {madonvi} by the 2025 merger, list it: national.predecessors = [{old:?}] \
                 (its dossiers keep their MaHoSo, nothing is sent again); otherwise set national.madonvi back to \
                 {old:?}",
                config.store.path.display()
            ))
        );
        tracing::info!(event = "unit_changed", from = %old, to = %madonvi, "the predecessor's dossiers go on under the new unit");
    }
    if recorded.as_deref() != Some(madonvi.as_str()) {
        store.write(|tx| meta_set(tx, UNIT, Some(madonvi)))?;
    }
    Ok(())
}

/// Refuses a database whose dossiers are of a province neither `national.madonvi`'s nor a
/// predecessor's (read from one of its MaHoSo, when the unit was never recorded).
fn check_held_unit(store: &Store, config: &Config) -> anyhow::Result<()> {
    use crate::domain::mahoso::{parse, province_of};
    use rusqlite::OptionalExtension;
    let madonvi = &config.national.madonvi;
    let held: Option<String> = store.read(|c| {
        c.query_row("SELECT mahoso FROM dossier WHERE national_exists = 1 LIMIT 1", [], |r| r.get(0))
            .optional()
    })?;
    let Some(mahoso) = held else { return Ok(()) };
    let Ok(parsed) = parse(&mahoso) else { return Ok(()) };
    let province = province_of(parsed.agency);
    let ours =
        std::iter::once(madonvi).chain(&config.national.predecessors).any(|u| province_of(u) == province);
    anyhow::ensure!(
        ours,
        crate::config::NeedsConfig(format!(
            "{} holds dossiers of province {province} (MaHoSo {mahoso}), and national.madonvi is {madonvi:?}. If \
             {province} was closed into {madonvi} by the 2025 merger, list its unit: national.predecessors = \
             [\"000.00.00.{province}\"]; otherwise set national.madonvi back to that province's unit",
            config.store.path.display()
        ))
    );
    Ok(())
}

/// A database filled from one kind of source is not read from another under the same name:
/// the versions and cursors of the two do not compare (an HTTP `version` 3 is older than any
/// SQL read).
fn check_source_kind(store: &Store, config: &Config, source: &ProvincialConfig) -> anyhow::Result<()> {
    let kind = source.kind.name();
    let key = source_key(&source.name, "source_kind");
    let recorded = store.read(|c| meta_get(c, &key))?;
    let section = &source.section;
    match recorded.as_deref() {
        Some(k) if k == kind => Ok(()),
        Some(k) => anyhow::bail!(
            "{} was filled from {section}.kind = {k:?}, and the configuration now says {kind:?}: the two do not \
             share cursors or versions. Point store.path at a new database for the new source (the national side \
             is read back, so nothing is sent twice), or set {section}.kind back to {k:?}",
            config.store.path.display()
        ),
        None => {
            let any: bool = store.read(|c| {
                c.query_row("SELECT EXISTS (SELECT 1 FROM dossier WHERE source = ?1)", [&source.name], |r| {
                    r.get(0)
                })
            })?;
            // Databases from before the SQL source were all filled over HTTP.
            let first = if any { "http" } else { kind };
            store.write(|tx| meta_set(tx, &key, Some(first)))?;
            if first == kind { Ok(()) } else { check_source_kind(store, config, source) }
        }
    }
}

/// Runs the daemon until `token` is cancelled and the drain is over.
pub async fn run(config: Config, token: CancellationToken) -> anyhow::Result<()> {
    crate::store::prepare_dir(&config.store.path, config.store.create_dir)?;
    let _lock = DaemonLock::acquire(&config.store.path)?;
    let engine = build_engine(&config)?;

    let handle = telemetry::install_metrics();
    init_metrics(&engine.source_names());
    let mut metrics_addr: Option<SocketAddr> = None;
    if let Some(addr) = config.telemetry.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on telemetry.metrics_listen {addr}"))?;
        let bound = listener.local_addr()?;
        let probe = {
            let engine = engine.clone();
            move || engine.readiness()
        };
        let router = telemetry::health_router(handle.clone(), probe, page_state(&config));
        let stop = token.clone();
        tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let serve =
                axum::serve(listener, service).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(event = "metrics_listener_failed", error = %e);
            }
        });
        metrics_addr = Some(bound);
    }
    tracing::info!(
        event = "daemon_started",
        version = env!("CARGO_PKG_VERSION"),
        db = %config.store.path.display(),
        sources = %config.sources.iter().map(|s| format!("{}={}", s.name, source_target(s))).collect::<Vec<_>>().join(" "),
        national = %config.national.http.base_url,
        batch_size = config.national.batch_size,
        metrics = metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
    );

    // systemd: READY once serving, then WATCHDOG pings at half the interval it asks for,
    // with a STATUS line each time; STOPPING when the drain begins.
    notify(&[NotifyState::Ready, NotifyState::Status(&engine.status_line())]);
    let pings = {
        let engine = engine.clone();
        let token = token.clone();
        let every = sd_notify::watchdog_enabled().map(|d| d / 2).unwrap_or(Duration::from_secs(10));
        let watchdog = sd_notify::watchdog_enabled().is_some();
        tokio::spawn(async move {
            on_each_tick(&token, every, || async {
                let line = engine.status_line();
                if watchdog {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                } else {
                    notify(&[NotifyState::Status(&line)]);
                }
            })
            .await;
            notify(&[NotifyState::Stopping, NotifyState::Status("draining in-flight calls")]);
        })
    };
    // Every few seconds: the histograms' samples are folded into their buckets (the exporter
    // keeps every sample until then, and does it by itself only when /metrics is scraped, so a
    // daemon nobody scrapes would grow with every dossier), then the heap's free pages go back
    // to the system (src/memory.rs).
    let trims = {
        let token = token.clone();
        tokio::spawn(async move {
            on_each_tick(&token, Duration::from_secs(2), || async {
                handle.run_upkeep();
                crate::memory::release_free_memory();
            })
            .await;
        })
    };
    // The current month's 766 indicators for /metrics, computed on a reader connection away
    // from the runtime's threads (each computation reads every dossier).
    let indicators = config.telemetry.indicators_every.map(|every| {
        let token = token.clone();
        let path = config.store.path.clone();
        let keys = config.store.keys.clone();
        let calendar = config.calendar.clone();
        tokio::spawn(async move {
            on_each_tick(&token, every, || async {
                let (path, keys, calendar) = (path.clone(), keys.clone(), calendar.clone());
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || {
                    crate::report::current_month(&path, &keys, &calendar)
                })
                .await
                {
                    Ok(Ok(report)) => {
                        crate::report::publish(&report);
                        tracing::debug!(
                            event = "indicators_computed",
                            seconds = started.elapsed().as_secs_f64()
                        );
                    }
                    Ok(Err(e)) => tracing::warn!(event = "indicators_failed", error = %e),
                    Err(e) => tracing::warn!(event = "indicators_failed", error = %e),
                }
            })
            .await;
        })
    });
    engine.run(token).await;
    let _ = pings.await;
    let _ = trims.await;
    // Not awaited: a computation under way is not worth holding the exit for.
    if let Some(task) = indicators {
        task.abort();
    }
    tracing::info!(event = "daemon_stopped");
    Ok(())
}

/// Runs `f` at once and then every `every` (a late tick is skipped, not caught up) until
/// `token` is cancelled.
async fn on_each_tick<F, Fut>(token: &CancellationToken, every: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            _ = tick.tick() => f().await,
        }
    }
}

/// What the page at `/` reads, and its token.
fn page_state(config: &Config) -> crate::page::PageState {
    crate::page::PageState::new(crate::page::PageConfig {
        path: config.store.path.clone(),
        keys: config.store.keys.clone(),
        thresholds: crate::status::Thresholds::of(config),
        calendar: config.calendar.clone(),
        token: config.telemetry.access_token.clone(),
    })
}

/// Where a source is read, for the start-up log line (never a password).
fn source_target(source: &ProvincialConfig) -> String {
    match (&source.kind, &source.sql) {
        (crate::config::SourceKind::Sql, Some(sql)) => {
            let url = sql.database_url.expose();
            let scheme = url.split("://").next().unwrap_or("sql");
            let host =
                url.split_once('@').map_or_else(|| url.split_once("://").map_or("", |(_, r)| r), |(_, r)| r);
            format!("{scheme}://{}", host.split('?').next().unwrap_or(""))
        }
        _ => source.http.base_url.to_string(),
    }
}

/// Registers every metric, so that a scrape shows them all from the start.
fn init_metrics(sources: &[String]) {
    for service in std::iter::once("auth").chain(Service::ALL.map(Service::name)) {
        metrics::counter!(m::CALLS, "service" => service, "outcome" => "ok").increment(0);
    }
    // Per source, its configured name only (bounded: never a value read from the source).
    for source in sources {
        for outcome in ["ok", "failed"] {
            metrics::counter!(m::PAGES, "source" => source.clone(), "outcome" => outcome).increment(0);
        }
        for result in ["changed", "seen", "quarantined", "ignored"] {
            metrics::counter!(m::RECORDS, "source" => source.clone(), "result" => result).increment(0);
        }
        metrics::gauge!(m::LAST_POLL, "source" => source.clone()).set(0.0);
    }
    metrics::counter!(m::SESSION_RENEWALS).increment(0);
    metrics::counter!(m::DEAD).increment(0);
    metrics::counter!(m::READBACKS_INCONCLUSIVE).increment(0);
    metrics::counter!(m::LOGIN_FAILURES).increment(0);
    for outcome in crate::sync::audit::LOOKUP_OUTCOMES {
        metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => outcome).increment(0);
    }
    for kind in crate::sync::audit::DRIFT_KINDS {
        metrics::counter!(m::AUDIT_DRIFT, "kind" => kind).increment(0);
    }
    metrics::counter!(m::AUDIT_REPAIRED).increment(0);
    metrics::gauge!(m::PUSH_FAILING).set(0.0);
    metrics::gauge!(m::NATIONAL_REFUSING).set(0.0);
    metrics::gauge!(m::UP).set(1.0);
    // Until the first computation (its timestamp 0 says so).
    for (id, _) in crate::report::INDICATORS {
        metrics::gauge!(m::INDICATOR_RATIO, "indicator" => id).set(f64::NAN);
        metrics::gauge!(m::INDICATOR_NUMERATOR, "indicator" => id).set(0.0);
        metrics::gauge!(m::INDICATOR_DENOMINATOR, "indicator" => id).set(0.0);
    }
    metrics::gauge!(m::INDICATOR_LATE).set(0.0);
    for kind in crate::report::FINDING_KINDS {
        metrics::gauge!(m::INDICATOR_FINDINGS, "kind" => kind).set(0.0);
    }
    metrics::gauge!(m::INDICATOR_COMPUTED).set(0.0);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{Purpose, from_values};

    fn config(dir: &std::path::Path, predecessors: &str) -> Config {
        let values: HashMap<String, String> = [
            ("DVC_SYNC__STORE__PATH", dir.join("state.db").display().to_string()),
            ("DVC_SYNC__NATIONAL__MADONVI", "000.00.00.H20".to_owned()),
            ("DVC_SYNC__NATIONAL__PREDECESSORS", predecessors.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        from_values(values, Purpose::Inspect).unwrap()
    }

    #[test]
    fn a_unit_mistyped_before_anything_was_synchronised_is_simply_corrected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store.write(|tx| meta_set(tx, UNIT, Some("000.00.00.H99"))).unwrap();
        check_unit(&store, &config(dir.path(), "")).unwrap();
        assert_eq!(store.read(|c| meta_get(c, UNIT)).unwrap().as_deref(), Some("000.00.00.H20"));
    }

    #[test]
    fn a_database_of_another_province_is_refused_unless_it_is_a_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        // As a release that did not record its unit left it: H58 dossiers, no national_madonvi.
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure, history_len,
                                          national_exists)
                     VALUES ('000.00.15.H58-260301-0001', 1, 1, 1, 1, 2, '1.001193', 1, 1)",
                    [],
                )
            })
            .unwrap();
        let refused = check_unit(&store, &config(dir.path(), "")).unwrap_err();
        assert!(refused.downcast_ref::<crate::config::NeedsConfig>().is_some(), "exit 78: {refused}");
        assert!(refused.to_string().contains("national.predecessors = [\"000.00.00.H58\"]"), "{refused}");
        check_unit(&store, &config(dir.path(), "000.00.00.H58")).unwrap();
        assert_eq!(store.read(|c| meta_get(c, UNIT)).unwrap().as_deref(), Some("000.00.00.H20"));
        // Recorded now: the same database under another unit is refused, naming the recorded one.
        let values: HashMap<String, String> = [
            ("DVC_SYNC__STORE__PATH".to_owned(), dir.path().join("state.db").display().to_string()),
            ("DVC_SYNC__NATIONAL__MADONVI".to_owned(), "000.00.00.H59".to_owned()),
        ]
        .into_iter()
        .collect();
        let other = from_values(values, Purpose::Inspect).unwrap();
        let refused = check_unit(&store, &other).unwrap_err();
        assert!(refused.to_string().contains("000.00.00.H20"), "{refused}");
    }
}
