//! Phase 1 of a round: writes whose outcome is unknown (a lost answer, a timeout) are resolved
//! by reading the dossier back before anything is sent again, so that no history entry is ever
//! appended twice.

use futures::StreamExt;
use serde_json::Value;

use super::{
    Pusher, outbox,
    work::{Fate, InFlight, Work},
};
use crate::domain::personal;
use crate::{
    domain::{codes, stable_hash},
    store::StoreError,
    sync::{
        answer::{Answer, Service, Transient, TransientKind},
        journal,
        ports::{Clock, Sink},
        readback::{self, Judgement, Unusable},
    },
};

impl<N: Sink, C: Clock> Pusher<N, C> {
    /// Reads back every dossier with history writes in flight, and probes one uncertain create
    /// for all of them (resending a payload is harmless either way; the probe saves refusals).
    pub(super) async fn resolve_uncertain(&self, work: &mut [Work]) -> Result<(), StoreError> {
        let creates_probe =
            work.iter().position(|w| w.open() && w.inflight == InFlight::Payload && !w.national_exists);
        let uncertain: Vec<usize> =
            (0..work.len()).filter(|&i| work[i].open() && work[i].inflight == InFlight::History).collect();
        let reads: Vec<_> = work
            .iter_mut()
            .filter(|w| w.open() && w.inflight == InFlight::History)
            .map(|w| self.read_back(w))
            .collect();
        futures::stream::iter(reads).buffer_unordered(self.cfg.max_concurrency).collect::<Vec<()>>().await;
        let resolved: Vec<&Work> = uncertain.iter().map(|&i| &work[i]).filter(|w| w.open()).collect();
        if !resolved.is_empty() {
            let now = self.shared.clock.now().as_microsecond();
            self.journal.write(&self.shared.store, |tx| outbox::save_read_backs(tx, resolved, now))?;
        }
        if let Some(i) = creates_probe {
            self.probe_creates(work, i).await?;
        }
        Ok(())
    }

    /// Reads back the uncertain create `i`: what it finds decides how the others are sent.
    async fn probe_creates(&self, work: &mut [Work], i: usize) -> Result<(), StoreError> {
        self.read_back(&mut work[i]).await;
        let uncertain_create = |w: &Work| w.open() && w.inflight == InFlight::Payload && !w.national_exists;
        if work[i].open() {
            let exists = work[i].national_exists;
            let now = self.shared.clock.now().as_microsecond();
            self.journal.write(&self.shared.store, |tx| outbox::save_read_backs(tx, [&work[i]], now))?;
            for w in work.iter_mut().filter(|w| uncertain_create(w)) {
                // Sent as updates if the probe found its dossier: a mismatch is corrected by
                // the portal's own answer (code 4, then a create).
                w.national_exists = exists;
            }
        } else {
            // The probe failed: leave the uncertain creates to the next round (a probe parked
            // for its own history says nothing of the others: they wait for another probe).
            let fate = match &work[i].fate {
                Some(Fate::Unmatched { .. }) => Some(Fate::Later),
                other => other.clone(),
            };
            for w in work.iter_mut().filter(|w| uncertain_create(w)) {
                w.fate = fate.clone();
            }
        }
        Ok(())
    }

    /// Reads one dossier back and records what the national portal holds of it (and, in the
    /// call journal, what the read-back found).
    async fn read_back(&self, w: &mut Work) {
        let answer = self.portal.call(Service::LookUp, |sink| sink.look_up(&w.mahoso)).await;
        if let Answer::Retry(t) = &answer
            && t.not_sent()
        {
            w.fate = Some(Fate::Retry(t.clone()));
            return;
        }
        let at = self.shared.clock.now().as_microsecond();
        self.shared.stats.readback();
        let found = self.judge_read_back(w, &answer);
        let unusable = found.is_none();
        let mut noted = journal::entry(&w.mahoso, at, Service::LookUp.name(), &answer, None, || {
            found.unwrap_or_default()
        });
        if matches!(answer, Answer::Ok(_)) && unusable {
            noted.outcome = TransientKind::BadAnswer.label();
            noted.message = "answered success without a usable result".into();
        }
        self.journal.note([noted]);
    }

    /// Decides from a read-back's answer; returns what it found, when the answer was usable.
    fn judge_read_back(&self, w: &mut Work, answer: &Answer) -> Option<String> {
        let body = match answer {
            Answer::Ok(body) => body,
            Answer::Refused { code, message } => {
                if codes::refuses_the_call(*code, message) {
                    self.portal.refused(Service::LookUp, *code, message);
                }
                w.fate = Some(Fate::Retry(Transient::bad_answer(format!(
                    "read-back refused (error_code {code}): {message}"
                ))));
                return None;
            }
            Answer::Retry(t) => {
                w.fate = Some(Fate::Retry(t.clone()));
                return None;
            }
        };
        let ours: Value = serde_json::from_str(w.payload.get()).unwrap_or(Value::Null);
        let history: Vec<Value> =
            w.history.iter().map(|e| serde_json::from_str(e.get()).unwrap_or(Value::Null)).collect();
        // A minimised payload compares with the national copy through its digests.
        let comparable =
            w.minimised.then(|| personal::comparable(&ours, body, self.shared.store.digest_key())).flatten();
        let (ours, body) = match &comparable {
            Some((ours, body)) => (ours, body),
            None => (&ours, body),
        };
        let found = match readback::judge(ours, &history, body) {
            Judgement::Unusable(Unusable::NoResult | Unusable::NotADossier) => {
                // Only an explicit empty result means "not there": an answer without a usable
                // result must not be read as one (the history would be resent).
                let reason = "read-back answered success without a usable result";
                w.fate = Some(Fate::Retry(Transient::bad_answer(reason)));
                return None;
            }
            Judgement::Missing => {
                w.forget_national();
                "the national portal does not hold this dossier: it is created, with its whole history"
                    .to_owned()
            }
            Judgement::Unusable(Unusable::NoHistory) => {
                // It holds the dossier but its answer cannot tell what was applied.
                self.shared.stats.readback_inconclusive();
                let reason =
                    "read-back inconclusive, nothing resent: the look-up answer holds no QuaTrinhXuLy list";
                w.fate = Some(Fate::Unmatched { reason: reason.into() });
                return Some(reason.into());
            }
            Judgement::Unmatched { national, matched, reason } => {
                self.shared.stats.readback_inconclusive();
                tracing::warn!(
                    event = "national_history_diverged",
                    dossier = %w.mahoso,
                    national_entries = national,
                    matched,
                    "the national copy holds history entries that match none of ours: parked, nothing resent"
                );
                w.fate = Some(Fate::Unmatched { reason: reason.clone() });
                return Some(reason);
            }
            Judgement::Holds { matched, differing, absent } => {
                // The portal holds our payload if it holds every field of it, by meaning (then
                // nothing is sent again); otherwise the payload is sent again.
                let held = differing.is_empty() && absent.is_empty();
                w.national_exists = true;
                w.acked_hash = Some(if held { w.payload_hash } else { national_hash(body) });
                w.acked_history = matched;
                format!(
                    "holds the dossier, {}; {matched} of our {} history entries",
                    if held { "its fields as ours" } else { "its fields not as ours (sent again)" },
                    w.history.len()
                )
            }
        };
        w.inflight = InFlight::None;
        w.unresolved = InFlight::None;
        Some(found)
    }
}

/// A hash of the national copy's fields: recorded as what the portal acknowledged when it
/// holds fields other than ours, so that our payload is sent again.
fn national_hash(body: &Value) -> i64 {
    let fields = readback::found_fields(body).unwrap_or_default();
    stable_hash(serde_json::to_string(&fields).unwrap_or_default().as_bytes())
}
