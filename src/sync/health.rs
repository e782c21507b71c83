//! How the engine is doing, as its parts note it: the last successful poll and national call
//! and the last errors (kept in memory, written by the heartbeat for `status`), and what
//! `/readyz` and systemd's STATUS line make of them.

use std::{sync::Mutex, time::Duration};

use super::{Shared, ports::Clock};
use crate::{metrics as m, store::state};

/// Last successes and errors (µs since the epoch).
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    pub(crate) poll_success: Option<i64>,
    pub(crate) poll_error: Option<String>,
    pub(crate) push_success: Option<i64>,
    pub(crate) push_error: Option<String>,
    /// The last time the database refused the heartbeat, with why.
    pub(crate) store_error: Option<String>,
    /// Session renewals already added to the stored count.
    pub(crate) renewals_written: u64,
}

/// The notes, shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct Health(Mutex<Notes>);

impl Health {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Notes) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<C: Clock> Shared<C> {
    pub(crate) fn note_poll_success(&self) {
        let now = self.clock.now();
        metrics::gauge!(m::LAST_POLL).set(now.as_second() as f64);
        self.health.with(|n| {
            n.poll_success = Some(now.as_microsecond());
            n.poll_error = None;
        });
    }

    pub(crate) fn note_poll_error(&self, error: &str) {
        self.health.with(|n| n.poll_error = Some(error.to_owned()));
    }

    pub(crate) fn note_push_success(&self) {
        let now = self.clock.now();
        metrics::gauge!(m::LAST_PUSH).set(now.as_second() as f64);
        self.health.with(|n| {
            n.push_success = Some(now.as_microsecond());
            n.push_error = None;
        });
    }

    pub(crate) fn note_push_error(&self, error: &str) {
        self.health.with(|n| n.push_error = Some(error.to_owned()));
    }
}

/// Whether the daemon does its job, for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reasons: Vec<String>,
}

/// How long `/readyz` tolerates no successful poll, and no answered national call while work
/// waits.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub poll: Duration,
    pub push: Duration,
}

/// Readiness: the database usable, a recent successful poll, national calls answered while
/// work waits.
pub(crate) fn readiness<C: Clock>(shared: &Shared<C>, windows: Windows, started_at: i64) -> Readiness {
    let now = shared.clock.now().as_microsecond();
    let mut reasons = Vec::new();
    if let Err(e) = shared.store.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))) {
        reasons.push(format!("the database is not readable: {e}"));
    }
    let depth = shared.store.read(state::dossier_counts).map(|d| d.pending + d.retrying).unwrap_or(0);
    let n = shared.health.with(|n| n.clone());
    if let Some(e) = &n.store_error {
        reasons.push(format!("the database refuses writes: {e}"));
    }
    let last_error =
        |e: &Option<String>| e.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default();
    match n.poll_success {
        Some(at) if now - at <= windows.poll.as_micros() as i64 => {}
        Some(at) => reasons.push(format!(
            "no successful poll for {:.0} s{}",
            (now - at) as f64 / 1e6,
            last_error(&n.poll_error)
        )),
        None => reasons.push(format!("no successful poll yet{}", last_error(&n.poll_error))),
    }
    let since = n.push_success.unwrap_or(started_at);
    if depth > 0 && now - since > windows.push.as_micros() as i64 {
        reasons.push(format!(
            "{depth} dossier(s) waiting and no national call answered for {:.0} s{}",
            (now - since) as f64 / 1e6,
            last_error(&n.push_error)
        ));
    }
    Readiness { ready: reasons.is_empty(), reasons }
}

/// One line for systemd's STATUS: synced/valid, outbox, parked.
pub(crate) fn status_line<C: Clock>(shared: &Shared<C>) -> String {
    match shared.store.read(state::dossier_counts) {
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
