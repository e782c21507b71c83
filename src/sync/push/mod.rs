//! The pusher: a worker that brings the national copy of every dossier in the outbox up to
//! its latest provincial state, one round at a time.
//!
//! A round takes the dossiers that are due and, in order:
//! 1. resolves uncertain writes (a lost answer, a timeout) by reading the dossier back
//!    (TraCuuHoSo) before anything is resent: no history entry is ever appended twice
//!    ([`resolve`]);
//! 2. fills missing catalogue fields (LayThuTuc, cached) ([`catalogue`]);
//! 3. sends the dossiers whose payload changed, created or replaced (DongBoHoSoMC)
//!    ([`payloads`]);
//! 4. then the history entries not yet acknowledged, oldest first (CapNhatTienDoHoSoMC)
//!    ([`history`]).
//!
//! Calls run concurrently under the adaptive limiter; a dossier is in at most one call at a
//! time, and a round ends before the next begins, so each dossier's writes stay in order.
//! Before every write the dossiers concerned are durably marked in flight; an answer clears
//! the mark. A refused item is isolated and parked as dead with the portal's message while
//! the rest of its batch is sent again ([`isolate`]); transient trouble reschedules the
//! dossiers with capped, jittered exponential backoff kept in the outbox ([`outbox`]).

mod catalogue;
mod history;
mod isolate;
mod outbox;
mod payloads;
mod resolve;
mod work;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use self::{
    history::HistoryAcks,
    outbox::RetryPolicy,
    work::{Fate, Work},
};
use super::{
    InRound, Shared,
    answer::{Answer, Service},
    catalogue::Catalogue,
    fresh::FreshBodies,
    journal,
    portal::Portal,
    ports::{Clock, Sink},
    worker::{Failure, Step, Worker},
};
use crate::{metrics as m, store::StoreError};

/// How the pusher works.
#[derive(Debug, Clone)]
pub(crate) struct PushConfig {
    /// Items per call, at most (lowered for good when the portal says it takes fewer).
    pub(crate) batch_size: usize,
    pub(crate) max_concurrency: usize,
    /// Dossiers taken per round.
    pub(crate) round_size: usize,
    /// (first, longest) wait before a dossier's next attempt after a failed push.
    pub(crate) retry: (Duration, Duration),
}

/// What the pusher shares with other workers besides the store and the portal.
pub(crate) struct Handover {
    /// The catalogue's answers, which the poller fills records from too.
    pub(crate) catalogue: Arc<Catalogue>,
    /// Bodies the poller just recorded.
    pub(crate) fresh: Arc<FreshBodies>,
    /// The dossiers of the current round, which the audit leaves alone.
    pub(crate) in_round: Arc<InRound>,
}

pub(crate) struct Pusher<N, C> {
    shared: Arc<Shared<C>>,
    portal: Arc<Portal<N, C>>,
    catalogue: Arc<Catalogue>,
    /// Bodies the poller just recorded.
    fresh: Arc<FreshBodies>,
    /// The dossiers of the current round, which the audit leaves alone.
    in_round: Arc<InRound>,
    cfg: PushConfig,
    /// Calls noted for the call journal, written with the outcome they led to.
    journal: journal::Pending,
    /// Items per call: `batch_size`, lowered for good when the portal answers code 8.
    item_limit: AtomicUsize,
}

impl<N: Sink, C: Clock> Pusher<N, C> {
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        portal: Arc<Portal<N, C>>,
        handover: Handover,
        cfg: PushConfig,
    ) -> Self {
        let Handover { catalogue, fresh, in_round } = handover;
        let item_limit = AtomicUsize::new(cfg.batch_size.max(1));
        Pusher {
            shared,
            portal,
            catalogue,
            fresh,
            in_round,
            cfg,
            journal: journal::Pending::default(),
            item_limit,
        }
    }

    /// Items per national call.
    fn item_limit(&self) -> usize {
        self.item_limit.load(Ordering::Relaxed).max(1)
    }

    /// The portal refused a call as carrying too many items: never send more than `at_most`.
    fn learn_item_limit(&self, at_most: usize) {
        let at_most = at_most.max(1);
        let before = self.item_limit.fetch_min(at_most, Ordering::Relaxed);
        if at_most < before {
            tracing::warn!(
                event = "batch_halved",
                batch_size = at_most,
                "the national portal takes fewer items per call than national.batch_size; sending at most {at_most}"
            );
        }
    }

    /// Notes a call in the journal of every dossier it carried (`what` says what it carried of
    /// each); a refusal that named one of them (`culprit`) says so in the others' entries.
    fn note_calls(
        &self,
        service: Service,
        answer: &Answer,
        culprit: Option<&str>,
        names: &[&str],
        what: impl Fn(usize) -> String,
    ) {
        let at = self.shared.clock.now().as_microsecond();
        self.journal.note(
            names
                .iter()
                .enumerate()
                .map(|(k, name)| journal::entry(name, at, service.name(), answer, culprit, || what(k))),
        );
    }

    /// One round, its phases in order (see the module's comment); returns how many dossiers it
    /// handled.
    pub(crate) async fn round(&self) -> Result<usize, StoreError> {
        let now = self.shared.clock.now().as_microsecond();
        let (mut work, _round) = self.in_round.enter(
            || outbox::load_due(&self.shared.store, &self.fresh, now, self.cfg.round_size),
            |w| w.mahoso.as_str(),
        )?;
        if work.is_empty() {
            self.look_up_durations().await?;
            return Ok(0);
        }
        let (initial, max) = self.cfg.retry;
        let retry = RetryPolicy { initial, max, seed: self.shared.next_seed() };
        self.resolve_uncertain(&mut work).await?;
        self.fill_catalogues(&mut work).await?;
        self.push_payloads(&mut work, now, &retry).await?;
        let history = self.push_history(&mut work).await?;
        self.close_round(&work, &history, now, &retry)?;
        self.look_up_durations().await?;
        Ok(work.len())
    }

    /// The end of a round, in one transaction: what the history calls came to; every fate not
    /// written yet (decided before any call: a stored body that cannot be read, a read-back,
    /// the catalogue; or by a history call); dossiers in sync leave the outbox. Then metrics
    /// and logs for each fate.
    fn close_round(
        &self,
        work: &[Work],
        history: &HistoryAcks,
        now: i64,
        retry: &RetryPolicy,
    ) -> Result<(), StoreError> {
        let fated: Vec<usize> = (0..work.len()).filter(|&i| work[i].fate.is_some()).collect();
        let end = self.shared.clock.now().as_microsecond();
        let lags = self.journal.write(&self.shared.store, |tx| {
            history::save_history(tx, work, history, now)?;
            outbox::settle_fates(tx, work, &fated, now, retry)?;
            outbox::finish(tx, work, end)
        })?;
        for lag in &lags {
            let seconds = (*lag).max(0) as f64 / 1e6;
            metrics::histogram!(m::SYNC_LAG).record(seconds);
            self.shared.stats.synced(seconds);
        }
        for w in work {
            match &w.fate {
                Some(Fate::Dead { code, reason }) => {
                    metrics::counter!(m::DEAD).increment(1);
                    self.shared.stats.dead();
                    tracing::warn!(event = "dossier_parked", dossier = %w.mahoso, error_code = code, reason = %reason);
                }
                Some(Fate::Unmatched { reason }) => {
                    metrics::counter!(m::DEAD).increment(1);
                    metrics::counter!(m::READBACKS_INCONCLUSIVE).increment(1);
                    self.shared.stats.dead();
                    tracing::warn!(event = "dossier_parked", dossier = %w.mahoso, reason = %reason);
                }
                Some(Fate::Retry(t)) if !t.not_sent() => {
                    self.shared.stats.retry();
                    tracing::debug!(event = "dossier_rescheduled", dossier = %w.mahoso, attempt = w.attempts + 1, error = %t.reason);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs a phase's calls concurrently (the limiter decides how many are really in flight).
async fn run_calls<T, Fut>(concurrency: usize, calls: Vec<Fut>) -> Vec<T>
where
    Fut: Future<Output = Vec<T>>,
{
    futures::stream::iter(calls)
        .buffer_unordered(concurrency.max(1))
        .flat_map(futures::stream::iter)
        .collect()
        .await
}

impl<N: Sink, C: Clock> Worker for Pusher<N, C> {
    async fn work(&mut self, _stop: &CancellationToken) -> Result<Step, Failure> {
        match self.round().await {
            Ok(0) => Ok(Step::Idle),
            Ok(_) => Ok(Step::Busy),
            Err(e) => {
                let failure = Failure::from(e);
                self.shared.note_push_error(&failure.error);
                Err(failure)
            }
        }
    }

    async fn wait_for_work(&mut self) {
        // Until the next retry is due, or a poller brings work.
        let now = self.shared.clock.now().as_microsecond();
        let wait = match self.shared.store.read(outbox::next_due) {
            Ok(Some(at)) => Duration::from_micros((at - now).clamp(1_000, 1_000_000) as u64),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            biased;
            () = self.shared.work_arrived.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
