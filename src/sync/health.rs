//! How the engine is doing, as its parts note it: the last successful poll and national call
//! and the last errors (kept in memory, written by the heartbeat for `status`), and what
//! `/readyz` and systemd's STATUS line make of them.

use std::{sync::Mutex, time::Duration};

use super::{Shared, ports::Clock};
use crate::{metrics as m, store::state};

/// The last success and the last error of one side (µs since the epoch).
#[derive(Debug, Default, Clone)]
pub(crate) struct Last {
    pub(crate) success: Option<i64>,
    /// Cleared by a success.
    pub(crate) error: Option<String>,
}

/// What the workers note of how it goes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    /// Every source's polls together: the last success of any, the last error of any.
    pub(crate) poll: Last,
    /// Each source's polls, by name.
    pub(crate) sources: std::collections::BTreeMap<String, Last>,
    pub(crate) push: Last,
    /// Why the national portal refuses write calls as a whole, while it does (cleared by a
    /// write it takes).
    pub(crate) refused: Option<String>,
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
    /// A national call was answered.
    pub(crate) fn note_push_success(&self) {
        let now = self.clock.now();
        metrics::gauge!(m::LAST_PUSH).set(now.as_second() as f64);
        self.health.with(|n| n.push = Last { success: Some(now.as_microsecond()), error: None });
    }

    pub(crate) fn note_push_error(&self, error: &str) {
        self.health.with(|n| n.push.error = Some(error.to_owned()));
    }

    /// A page of source `name` was read and recorded.
    pub(crate) fn note_poll_success(&self, name: &str) {
        let now = self.clock.now();
        metrics::gauge!(m::LAST_POLL, "source" => name.to_owned()).set(now.as_second() as f64);
        let last = Last { success: Some(now.as_microsecond()), error: None };
        self.health.with(|n| {
            n.poll = last.clone();
            n.sources.insert(name.to_owned(), last);
        });
    }

    /// A page of source `name` could not be read or recorded.
    pub(crate) fn note_poll_error(&self, name: &str, error: &str) {
        self.health.with(|n| {
            n.poll.error = Some(error.to_owned());
            n.sources.entry(name.to_owned()).or_default().error = Some(error.to_owned());
        });
    }

    /// The national portal refused a write call as a whole: nothing can be sent until the
    /// cause (the unit code, the account) is fixed.
    pub(crate) fn note_refused(&self, reason: &str) {
        metrics::gauge!(m::NATIONAL_REFUSING).set(1.0);
        self.health.with(|n| {
            n.push.error = Some(reason.to_owned());
            n.refused = Some(reason.to_owned());
        });
    }

    /// The national portal took a write.
    pub(crate) fn note_taken(&self) {
        metrics::gauge!(m::NATIONAL_REFUSING).set(0.0);
        self.health.with(|n| n.refused = None);
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
pub(crate) struct Windows {
    pub poll: Duration,
    pub push: Duration,
}

/// Readiness: the database usable, a recent successful poll, national calls answered while
/// work waits.
pub(crate) fn readiness<C: Clock>(
    shared: &Shared<C>,
    windows: Windows,
    started_at: i64,
    sources: &[String],
) -> Readiness {
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
    // Each source: one down makes the daemon unready for its dossiers, whatever the others do.
    for name in sources {
        let last = n.sources.get(name).cloned().unwrap_or_default();
        let of = if sources.len() > 1 { format!(" of source {name}") } else { String::new() };
        match last.success {
            Some(at) if now - at <= windows.poll.as_micros() as i64 => {}
            Some(at) => reasons.push(format!(
                "no successful poll{of} for {:.0} s{}",
                (now - at) as f64 / 1e6,
                last_error(&last.error)
            )),
            None => reasons.push(format!("no successful poll{of} yet{}", last_error(&last.error))),
        }
    }
    if let Some(refused) = &n.refused {
        reasons.push(refused.clone());
    }
    let since = n.push.success.unwrap_or(started_at);
    if depth > 0 && now - since > windows.push.as_micros() as i64 {
        reasons.push(format!(
            "{depth} dossier(s) waiting and no national call answered for {:.0} s{}",
            (now - since) as f64 / 1e6,
            last_error(&n.push.error)
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
