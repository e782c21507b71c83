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

/// Which side a note is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Reading the provincial source.
    Poll,
    /// Calling the national portal.
    Push,
}

/// What the workers note of how it goes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    pub(crate) poll: Last,
    pub(crate) push: Last,
    /// Why the national portal refuses write calls as a whole, while it does (cleared by a
    /// write it takes).
    pub(crate) refused: Option<String>,
    /// The last time the database refused the heartbeat, with why.
    pub(crate) store_error: Option<String>,
    /// Session renewals already added to the stored count.
    pub(crate) renewals_written: u64,
}

impl Notes {
    fn side(&mut self, side: Side) -> &mut Last {
        match side {
            Side::Poll => &mut self.poll,
            Side::Push => &mut self.push,
        }
    }
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
    pub(crate) fn note_success(&self, side: Side) {
        let now = self.clock.now();
        let gauge = match side {
            Side::Poll => m::LAST_POLL,
            Side::Push => m::LAST_PUSH,
        };
        metrics::gauge!(gauge).set(now.as_second() as f64);
        self.health.with(|n| *n.side(side) = Last { success: Some(now.as_microsecond()), error: None });
    }

    pub(crate) fn note_error(&self, side: Side, error: &str) {
        self.health.with(|n| n.side(side).error = Some(error.to_owned()));
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
    match n.poll.success {
        Some(at) if now - at <= windows.poll.as_micros() as i64 => {}
        Some(at) => reasons.push(format!(
            "no successful poll for {:.0} s{}",
            (now - at) as f64 / 1e6,
            last_error(&n.poll.error)
        )),
        None => reasons.push(format!("no successful poll yet{}", last_error(&n.poll.error))),
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
