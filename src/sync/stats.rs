//! Counters the engine keeps in memory for the demo's report and the tests (Prometheus gets
//! its own through the `metrics` facade).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use super::poll::Applied;

/// Lag samples kept; beyond this, every other sample replaces an old one.
const MAX_LAGS: usize = 20_000;

#[derive(Debug, Default)]
pub(crate) struct EngineStats {
    pages: AtomicU64,
    page_failures: AtomicU64,
    records_read: AtomicU64,
    records_changed: AtomicU64,
    records_quarantined: AtomicU64,
    late_found: AtomicU64,
    dossiers_acked: AtomicU64,
    entries_acked: AtomicU64,
    readbacks: AtomicU64,
    readbacks_inconclusive: AtomicU64,
    retries: AtomicU64,
    dead: AtomicU64,
    synced: AtomicU64,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    lags: Mutex<Vec<f64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub pages: u64,
    pub page_failures: u64,
    pub records_read: u64,
    pub records_changed: u64,
    pub records_quarantined: u64,
    pub late_changes_found: u64,
    pub dossier_pushes_acked: u64,
    pub history_entries_acked: u64,
    pub readbacks: u64,
    /// Read-backs that could not tell which entries were applied (the dossier was parked).
    pub readbacks_inconclusive: u64,
    pub retries: u64,
    pub parked_dead: u64,
    pub synced_versions: u64,
    /// Transient national failures absorbed, by kind.
    pub faults: BTreeMap<String, u64>,
    pub lag_p50_seconds: Option<f64>,
    pub lag_p99_seconds: Option<f64>,
    pub lag_max_seconds: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank).copied()
}

impl EngineStats {
    pub(crate) fn page_applied(&self, a: &Applied) {
        self.pages.fetch_add(1, Relaxed);
        self.records_read.fetch_add(a.read as u64, Relaxed);
        self.records_changed.fetch_add(a.changed as u64, Relaxed);
        self.records_quarantined.fetch_add(a.quarantined as u64, Relaxed);
    }
    pub(crate) fn page_failed(&self) {
        self.page_failures.fetch_add(1, Relaxed);
    }
    pub(crate) fn late_found(&self, n: usize) {
        self.late_found.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn dossiers_acked(&self, n: usize) {
        self.dossiers_acked.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn entries_acked(&self, n: usize) {
        self.entries_acked.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn readback(&self) {
        self.readbacks.fetch_add(1, Relaxed);
    }
    pub(crate) fn readback_inconclusive(&self) {
        self.readbacks_inconclusive.fetch_add(1, Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
    pub(crate) fn dead(&self) {
        self.dead.fetch_add(1, Relaxed);
    }
    pub(crate) fn fault(&self, kind: &'static str) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
    }
    pub(crate) fn synced(&self, lag_seconds: f64) {
        let n = self.synced.fetch_add(1, Relaxed);
        let mut lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        if lags.len() < MAX_LAGS {
            lags.push(lag_seconds);
        } else if n.is_multiple_of(2) {
            let slot = (n as usize / 2) % MAX_LAGS;
            lags[slot] = lag_seconds;
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut lags = self.lags.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lags.sort_by(f64::total_cmp);
        StatsSnapshot {
            pages: self.pages.load(Relaxed),
            page_failures: self.page_failures.load(Relaxed),
            records_read: self.records_read.load(Relaxed),
            records_changed: self.records_changed.load(Relaxed),
            records_quarantined: self.records_quarantined.load(Relaxed),
            late_changes_found: self.late_found.load(Relaxed),
            dossier_pushes_acked: self.dossiers_acked.load(Relaxed),
            history_entries_acked: self.entries_acked.load(Relaxed),
            readbacks: self.readbacks.load(Relaxed),
            readbacks_inconclusive: self.readbacks_inconclusive.load(Relaxed),
            retries: self.retries.load(Relaxed),
            parked_dead: self.dead.load(Relaxed),
            synced_versions: self.synced.load(Relaxed),
            faults: self
                .faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            lag_p50_seconds: percentile(&lags, 50.0),
            lag_p99_seconds: percentile(&lags, 99.0),
            lag_max_seconds: lags.last().copied(),
        }
    }
}
