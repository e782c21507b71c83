//! Operator commands that act on the database: `retry`, `reconcile` and `audit`.

use std::time::Duration;

use anyhow::Context;
use rusqlite::params;

use crate::{
    config::{Config, SourceKind},
    store::{Store, lock::DaemonLock, meta_get, meta_set},
    sync::{
        AuditReport, AuditScope,
        reconciler::{LAST, LAST_AT, REQUESTED, ReconcileReport},
    },
};

/// What `retry` did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Retried {
    pub dead: usize,
    pub quarantined: usize,
    /// Of the items named, those that were not parked (nothing was done for them).
    pub not_parked: Vec<String>,
}

pub(crate) use crate::config::NeedsConfig;

/// Re-enqueues dead dossiers and releases quarantined records (all, or those named), so
/// that they are tried again. Safe while the daemon runs: each change is one transaction.
pub(crate) fn retry(
    store: &Store,
    dead: bool,
    quarantined: bool,
    only: &[String],
) -> anyhow::Result<Retried> {
    let (dead, quarantined) = if !dead && !quarantined { (true, true) } else { (dead, quarantined) };
    let now = jiff::Timestamp::now().as_microsecond();
    let done = store.write(|tx| {
        let mut out = Retried::default();
        let named = |key: &str| only.is_empty() || only.iter().any(|k| k == key);
        // The named items found parked, to say which of them were not.
        let mut found = std::collections::BTreeSet::new();
        if dead {
            let keys: Vec<String> = {
                let mut stmt = tx.prepare("SELECT mahoso FROM dead")?;
                stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
            };
            for key in keys.into_iter().filter(|k| named(k)) {
                found.insert(key.clone());
                tx.execute("DELETE FROM dead WHERE mahoso = ?1", [&key])?;
                tx.execute(
                    "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at, attempts) VALUES (?1, ?2, ?2, 0)
                     ON CONFLICT(mahoso) DO UPDATE SET next_attempt_at = ?2, attempts = 0",
                    params![key, now],
                )?;
                // Minimised, it is read again from its source before anything is sent.
                crate::sync::minimise::wait_for_source(tx, &key, now)?;
                out.dead += 1;
            }
            // Ask the catalogue again: it may know the procedure now.
            tx.execute("DELETE FROM procedure WHERE known = 0", [])?;
            meta_set(tx, "catalogue_flush", Some(&now.to_string()))?;
        }
        if quarantined {
            let keys: Vec<(String, Option<String>)> = {
                let mut stmt = tx.prepare("SELECT key, mahoso FROM quarantine")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
            };
            for (key, mahoso) in keys {
                if named(&key) || mahoso.as_deref().is_some_and(named) {
                    found.insert(key.clone());
                    found.extend(mahoso);
                    tx.execute("DELETE FROM quarantine WHERE key = ?1", [&key])?;
                    out.quarantined += 1;
                }
            }
            if out.quarantined > 0 {
                // The records are judged again as the next full pass reads them.
                meta_set(tx, REQUESTED, Some(&now.to_string()))?;
            }
        }
        out.not_parked = only.iter().filter(|k| !found.contains(k.as_str())).cloned().collect();
        Ok(out)
    })?;
    Ok(done)
}

/// Asks the running daemon for a pass (`request` under `requested`) and waits for its report
/// (under `last`, dated `last_at`).
async fn through_daemon<T: serde::de::DeserializeOwned>(
    store: &crate::config::StoreConfig,
    keys: (&str, &str, &str),
    request: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let (requested, last, last_at) = keys;
    let store = Store::open_keyed(&store.path, &store.keys)?;
    let before = store.read(|c| meta_get(c, last_at))?;
    store.write(|tx| meta_set(tx, requested, Some(request)))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (at, report) = store.read(|c| Ok((meta_get(c, last_at)?, meta_get(c, last)?)))?;
        if at != before
            && let Some(report) = report
        {
            return Ok(serde_json::from_str(&report)?);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the daemon did not finish the pass within {timeout:?}"
        );
    }
}

/// One full reconciliation pass: done by the running daemon if there is one (this waits for
/// it), else here.
pub(crate) async fn reconcile(config: &Config, timeout: Duration) -> anyhow::Result<ReconcileReport> {
    let path = &config.store.path;
    if DaemonLock::is_held(path) {
        let now = jiff::Timestamp::now().as_microsecond().to_string();
        return through_daemon(&config.store, (REQUESTED, LAST, LAST_AT), &now, timeout).await;
    }
    for source in &config.sources {
        let ready = match source.kind {
            SourceKind::Http => !source.api_key.is_empty(),
            SourceKind::Sql => source.sql.as_ref().is_some_and(|s| !s.database_url.is_empty()),
        };
        if !ready {
            let section = &source.section;
            return Err(NeedsConfig(format!(
                "the source's credentials are required to read it ({section}.api_key for kind = \"http\", \
                 {section}.database_url for kind = \"sql\", or their _file keys)"
            ))
            .into());
        }
    }
    crate::store::prepare_dir(path, config.store.create_dir)?;
    let _lock = DaemonLock::acquire(path)?;
    // The pass only reads the source; pushes happen when the daemon runs.
    let engine = crate::daemon::build_engine(config)?;
    let token = crate::shutdown::token();
    engine.reconcile_once(&token).await.context("the pass was interrupted")
}

/// One audit pass (`Due`: the next due share; `All`: every synchronized dossier): done by the
/// running daemon if there is one (this waits for it; it repairs what it finds), else here
/// (repairs are enqueued, and sent when the daemon runs). `per_second` overrides
/// `national.audit_per_second` for this pass (1 a second when that is 0).
pub(crate) async fn audit(
    config: &Config,
    scope: AuditScope,
    per_second: Option<f64>,
    timeout: Duration,
) -> anyhow::Result<AuditReport> {
    use crate::sync::audit::{LAST, LAST_AT, REQUESTED, Request};
    if let Some(rate) = per_second {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0 && rate <= 1000.0,
            "--per-second must be from 0 to 1000"
        );
    }
    let path = &config.store.path;
    if DaemonLock::is_held(path) {
        let request = serde_json::to_string(&Request { scope, per_second })?;
        return through_daemon(&config.store, (REQUESTED, LAST, LAST_AT), &request, timeout).await;
    }
    if config.national.username.is_empty() || config.national.password.is_empty() {
        return Err(NeedsConfig(
            "the national account is required to read dossiers back (national.username, national.password or \
             national.password_file)"
                .into(),
        )
        .into());
    }
    crate::store::prepare_dir(path, config.store.create_dir)?;
    let _lock = DaemonLock::acquire(path)?;
    let engine = crate::daemon::build_engine(config)?;
    let token = crate::shutdown::token();
    let configured = config.national.audit_per_second;
    let rate = per_second.unwrap_or(if configured > 0.0 { configured } else { 1.0 });
    engine.audit_once(scope, rate, &token).await.context("the pass was interrupted")
}
