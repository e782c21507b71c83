//! Phase 3 of a round: the dossiers whose payload the portal does not hold as it is, created or
//! replaced (DongBoHoSoMC) in calls of at most the item limit.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::{
    Pusher,
    isolate::{Outcome, Phase, Settle, Unit, refusal_reason, send_isolating},
    outbox::{self, RetryPolicy},
    work::{Fate, InFlight, Work},
};
use crate::{
    domain::codes,
    store::{StoreError, state::start_sweep},
    sync::{
        answer::{Answer, Service, Transient},
        ports::{Clock, Sink},
    },
};

/// A dossier's payload in a call: created, or replaced.
#[derive(Debug, Clone, Copy)]
pub(super) struct Payload {
    i: usize,
    updating: bool,
}

impl Unit for Payload {
    fn dossier(self) -> usize {
        self.i
    }
}

/// What the portal said of a dossier's existence, against what was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switched {
    /// An update it did not know the dossier for (code 4), sent again as a create: it lost the
    /// dossier, and with it every history entry acknowledged before.
    Lost,
    /// A create it already held (code 3, "đã tồn tại"): what it holds is not known here; it is
    /// read back before anything is written.
    Existed,
}

/// The payload calls of one group of creates or updates.
struct PayloadCall<'a, N, C> {
    pusher: &'a Pusher<N, C>,
    work: &'a [Work],
    /// What the portal said, on the way, of each dossier's existence.
    switched: HashMap<usize, Switched>,
    /// How often each dossier switched: at most twice (lost, created, then found to exist).
    switches: HashMap<usize, u8>,
}

impl<N: Sink, C: Clock> Phase for PayloadCall<'_, N, C> {
    type Unit = Payload;
    const SERVICE: Service = Service::SyncDossiers;

    fn describe(&self, unit: Payload) -> String {
        let what = if unit.updating { "update" } else { "create" };
        format!("{what} with status {}", self.work[unit.i].status)
    }

    fn dead_reason(&self, code: i64, message: &str) -> String {
        refusal_reason(code, message)
    }

    fn send(&self, group: &[Payload]) -> impl Future<Output = Answer> + Send {
        let updating = group.first().is_some_and(|u| u.updating);
        let payloads: Vec<&RawValue> = group.iter().map(|u| &*self.work[u.i].payload).collect();
        async move {
            self.pusher
                .portal
                .call(
                    Service::SyncDossiers,
                    |sink| async move { sink.sync_dossiers(updating, &payloads).await },
                )
                .await
        }
    }

    fn refused(&mut self, unit: Payload, code: i64, message: &str) -> Settle<Payload> {
        let i = unit.i;
        // "đã tồn tại": it exists (an earlier answer was lost): read it back; unknown there:
        // create it.
        let switch = match code {
            codes::EXISTS if !unit.updating => Some(Switched::Existed),
            codes::UNKNOWN_DOSSIER if unit.updating => Some(Switched::Lost),
            _ => None,
        };
        let before = self.switches.get(&i).copied().unwrap_or(0);
        let dead = || {
            Settle::Done(Outcome::Fate(Fate::Dead {
                code: Some(code),
                reason: refusal_reason(code, message),
            }))
        };
        let Some(switch) = switch.filter(|s| before < 2 && self.switched.get(&i) != Some(s)) else {
            return dead();
        };
        self.switched.insert(i, switch);
        self.switches.insert(i, before + 1);
        match switch {
            // It exists: what it holds is read back before anything is written (nothing is
            // sent that it holds already).
            Switched::Existed => Settle::Done(Outcome::Fate(Fate::Retry(Transient::bad_answer(
                "the national portal already holds this dossier (code 3): read back before anything is written",
            )))),
            // Durably, before the create leaves: a crash after it must not leave the old
            // acknowledgement standing (its history would resume where the lost copy ended).
            Switched::Lost => {
                match self.pusher.shared.store.write(|tx| outbox::forget_national(tx, &self.work[i].mahoso)) {
                    Ok(()) => Settle::Resend(Payload { i, updating: false }),
                    Err(_) => Settle::Done(Outcome::Fate(Fate::Later)),
                }
            }
        }
    }
}

impl<N: Sink, C: Clock> Pusher<N, C> {
    /// Sends the payloads of the open dossiers the portal does not hold as they are.
    pub(super) async fn push_payloads(
        &self,
        work: &mut [Work],
        now: i64,
        retry: &RetryPolicy,
    ) -> Result<(), StoreError> {
        let batch = self.item_limit();
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for (i, w) in work.iter_mut().enumerate().filter(|(_, w)| w.open() && !w.payload_acked()) {
            // Found gone this round (a history call answered "unknown dossier"): its source first.
            if w.minimised {
                w.fate = Some(Fate::WaitForSource);
                continue;
            }
            if w.national_exists {
                updates.push(Payload { i, updating: true })
            } else {
                creates.push(Payload { i, updating: false })
            }
        }
        let sending: Vec<usize> = creates.iter().chain(&updates).map(|u| u.i).collect();
        if sending.is_empty() {
            return Ok(());
        }
        outbox::mark_inflight(&self.shared.store, work, &sending, InFlight::Payload)?;
        let shared_work: &[Work] = work;
        let calls: Vec<_> = creates
            .chunks(batch)
            .chain(updates.chunks(batch))
            .map(|units| async move {
                let mut call = PayloadCall {
                    pusher: self,
                    work: shared_work,
                    switched: HashMap::new(),
                    switches: HashMap::new(),
                };
                let outcomes = send_isolating(self, shared_work, &mut call, units.to_vec()).await;
                outcomes
                    .into_iter()
                    .map(|(u, o)| (u.i, o, call.switched.get(&u.i).copied()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let results = super::run_calls(self.cfg.max_concurrency, calls).await;
        self.settle_payloads(work, results, now, retry)
    }

    /// Records what the payload calls came to.
    fn settle_payloads(
        &self,
        work: &mut [Work],
        results: Vec<(usize, Outcome, Option<Switched>)>,
        now: i64,
        retry: &RetryPolicy,
    ) -> Result<(), StoreError> {
        let (mut acked, mut fated, mut existed) = (Vec::new(), Vec::new(), Vec::new());
        let mut lost = false;
        for (i, outcome, switched) in results {
            let w = &mut work[i];
            match switched {
                Some(Switched::Lost) => {
                    // Whatever became of the new create, the portal had lost the dossier: every
                    // entry goes again, from the first, once it holds the dossier again.
                    w.forget_national();
                    lost = true;
                    tracing::warn!(event = "dossier_recreated", dossier = %w.mahoso, "update refused: the national portal does not know this dossier; it is created again, its whole history after it");
                }
                Some(Switched::Existed) => {
                    // Read back before anything is sent (after a backoff: should the look-up
                    // keep saying "not there" while creates say "exists", the two do not chase
                    // each other).
                    w.national_exists = true;
                    w.inflight = InFlight::History;
                    w.unresolved = InFlight::History;
                    existed.push(i);
                }
                None => {}
            }
            match outcome {
                Outcome::Acked => {
                    w.national_exists = true;
                    w.acked_hash = Some(w.payload_hash);
                    // Marked for its history call in the acknowledgement's own statement.
                    w.inflight = if w.history_due() { InFlight::History } else { InFlight::None };
                    acked.push(i);
                }
                Outcome::Fate(fate) => {
                    w.fate = Some(fate);
                    fated.push(i);
                }
                Outcome::Missing => {}
            }
        }
        self.shared.stats.dossiers_acked(acked.len());
        self.journal.write(&self.shared.store, |tx| {
            outbox::save_acks(tx, work, &acked, now)?;
            for &i in &existed {
                outbox::mark_existing(tx, &work[i].mahoso)?;
            }
            if lost {
                // The portal lost what it had acknowledged: the audit checks everything again.
                start_sweep(tx, now)?;
            }
            outbox::settle_fates(tx, work, &fated, now, retry)
        })?;
        for i in fated {
            work[i].settled = true;
        }
        Ok(())
    }
}
