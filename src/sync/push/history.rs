//! Phase 4 of a round: the history entries not yet acknowledged of the dossiers whose current
//! payload the portal holds (CapNhatTienDoHoSoMC), oldest first, whole dossiers packed into
//! calls of at most the item limit.

use serde_json::value::RawValue;

use super::{
    Pusher,
    isolate::{Outcome, Phase, Settle, Unit, refusal_reason, send_isolating},
    outbox,
    work::{Fate, InFlight, Work},
};
use crate::{
    domain::codes,
    store::{StoreError, state::start_sweep},
    sync::{
        answer::{Answer, Service},
        ports::{Clock, Sink},
    },
};

/// A run of one dossier's entries in a call: `from..to` of its history.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entries {
    i: usize,
    from: usize,
    to: usize,
}

impl Unit for Entries {
    fn dossier(self) -> usize {
        self.i
    }

    fn items(self) -> usize {
        self.to - self.from
    }

    fn older_half(self) -> Option<Entries> {
        (self.to - self.from > 1).then(|| Entries { to: self.from + (self.to - self.from) / 2, ..self })
    }
}

struct HistoryCall<'a, N, C> {
    pusher: &'a Pusher<N, C>,
    work: &'a [Work],
}

impl<N: Sink, C: Clock> Phase for HistoryCall<'_, N, C> {
    type Unit = Entries;
    const SERVICE: Service = Service::AppendHistory;

    fn describe(&self, Entries { i, from, to }: Entries) -> String {
        match to - from {
            1 => format!("history entry {to} of {}", self.work[i].history.len()),
            _ => format!("history entries {} to {to} of {}", from + 1, self.work[i].history.len()),
        }
    }

    fn dead_reason(&self, code: i64, message: &str) -> String {
        format!("history entry {}", refusal_reason(code, message))
    }

    fn send(&self, group: &[Entries]) -> impl Future<Output = Answer> + Send {
        let entries: Vec<&RawValue> =
            group.iter().flat_map(|u| self.work[u.i].history[u.from..u.to].iter().map(|e| &**e)).collect();
        async move {
            self.pusher
                .portal
                .call(Service::AppendHistory, |sink| async move { sink.append_history(&entries).await })
                .await
        }
    }

    fn refused(&mut self, _: Entries, code: i64, message: &str) -> Settle<Entries> {
        Settle::Done(if code == codes::UNKNOWN_DOSSIER {
            Outcome::Missing
        } else {
            Outcome::Fate(Fate::Dead { code: Some(code), reason: self.dead_reason(code, message) })
        })
    }
}

/// Packs whole dossiers' runs into calls of at most `batch` entries.
fn pack(runs: Vec<Entries>, batch: usize) -> Vec<Vec<Entries>> {
    let mut calls: Vec<Vec<Entries>> = Vec::new();
    let mut current: Vec<Entries> = Vec::new();
    let mut size = 0;
    for run in runs {
        let n = run.to - run.from;
        if size + n > batch && !current.is_empty() {
            calls.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(run);
        size += n;
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

/// What the history calls of a round came to, applied to its work and yet to be written.
#[derive(Debug, Default)]
pub(super) struct HistoryAcks {
    /// Dossiers whose entries were acknowledged.
    pub(super) acked: Vec<usize>,
    /// Dossiers the portal does not know: created again, with their whole history.
    pub(super) missing: Vec<usize>,
}

impl<N: Sink, C: Clock> Pusher<N, C> {
    /// Sends the entries not yet acknowledged of the open dossiers whose payload is, and
    /// applies the answers to `work`; the round's last transaction records them.
    pub(super) async fn push_history(&self, work: &mut [Work]) -> Result<HistoryAcks, StoreError> {
        let batch = self.item_limit();
        let runs: Vec<Entries> = work
            .iter()
            .enumerate()
            .filter(|(_, w)| w.open() && w.payload_acked() && w.history_due())
            .map(|(i, w)| Entries {
                i,
                from: w.acked_history,
                to: (w.acked_history + batch).min(w.history.len()),
            })
            .collect();
        if runs.is_empty() {
            return Ok(HistoryAcks::default());
        }
        // Those whose payload this round acknowledged were marked with it.
        let unmarked: Vec<usize> =
            runs.iter().map(|r| r.i).filter(|&i| work[i].inflight < InFlight::History).collect();
        if !unmarked.is_empty() {
            outbox::mark_inflight(&self.shared.store, work, &unmarked, InFlight::History)?;
        }
        let shared_work: &[Work] = work;
        let calls: Vec<_> = pack(runs, batch)
            .into_iter()
            .map(|units| async move {
                let mut call = HistoryCall { pusher: self, work: shared_work };
                send_isolating(self, shared_work, &mut call, units).await
            })
            .collect();
        let results = super::run_calls(self.cfg.max_concurrency, calls).await;
        Ok(self.apply_history(work, results))
    }

    /// Applies what the history calls came to.
    fn apply_history(&self, work: &mut [Work], results: Vec<(Entries, Outcome)>) -> HistoryAcks {
        let mut acks = HistoryAcks::default();
        let mut entries = 0;
        for (Entries { i, from, to }, outcome) in results {
            let w = &mut work[i];
            match outcome {
                Outcome::Acked => {
                    w.acked_history += to - from;
                    w.inflight = InFlight::None;
                    entries += to - from;
                    acks.acked.push(i);
                }
                Outcome::Missing => {
                    // The portal lost or never had the dossier: create it again, soon.
                    w.forget_national();
                    w.inflight = InFlight::None;
                    acks.missing.push(i);
                    tracing::warn!(event = "dossier_recreated", dossier = %w.mahoso, "history refused: the national portal does not know this dossier; it will be created again");
                }
                Outcome::Fate(fate) => w.fate = Some(fate),
            }
        }
        self.shared.stats.entries_acked(entries);
        acks
    }
}

/// Records what the history calls came to (in the round's last transaction).
pub(super) fn save_history(
    tx: &rusqlite::Connection,
    work: &[Work],
    acks: &HistoryAcks,
    now: i64,
) -> rusqlite::Result<()> {
    for &i in &acks.missing {
        outbox::forget_national_settled(tx, &work[i].mahoso)?;
    }
    if !acks.missing.is_empty() {
        // The portal lost what it had acknowledged: the audit checks everything again.
        start_sweep(tx, now)?;
    }
    outbox::save_acks(tx, work, &acks.acked, now)
}
