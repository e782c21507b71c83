//! One read-back: the dossier looked up, compared with what was acknowledged, and the finding
//! (and the repair it calls for) recorded in one transaction, if the dossier did not move on
//! meanwhile.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::{
    Auditor,
    choose::Candidate,
    finding::{Finding, is_drift},
};
use crate::domain::personal;
use crate::{
    metrics as m,
    store::{
        StoreError,
        journal::Call,
        meta_add,
        state::{AUDIT_DRIFT_FOUND, AUDIT_DRIFT_REPAIRED, start_sweep},
    },
    sync::{
        answer::{Answer, Service, Transient, TransientKind},
        journal,
        ports::{Clock, Sink},
    },
};

/// What one read-back came to.
pub(super) enum Looked {
    /// Recorded (or the dossier had moved on: `false`).
    Done(Finding, bool),
    /// No answer: wait, then try again.
    Transient(Transient),
}

/// What is stored of a dossier the audit chose.
enum Stored {
    Body(Value, Vec<Value>),
    /// A newer version since it was chosen.
    MovedOn,
    /// Nothing usable to compare with, and why.
    Missing(String),
}

/// Every outcome of an audit look-up (the `outcome` label of the look-up metric).
pub(crate) const LOOKUP_OUTCOMES: [&str; 5] = ["verified", "drift", "failed", "transient", "changed"];

impl<N: Sink, C: Clock> Auditor<N, C> {
    /// Reads one dossier back, compares, and records the finding.
    pub(super) async fn audit_one(&self, c: &Candidate) -> Result<Looked, StoreError> {
        let now = || self.shared.clock.now().as_microsecond();
        let (payload, history) = match self.acknowledged(c)? {
            Stored::Body(payload, history) => (payload, history),
            Stored::MovedOn => {
                // A newer provincial version since it was chosen: what is stored is not what
                // was acknowledged any more; the pusher has it now.
                metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => "changed").increment(1);
                return Ok(Looked::Done(Finding::Verified, false));
            }
            Stored::Missing(why) => {
                // Nothing to compare with; tried again in an hour.
                let finding = Finding::Failed(why);
                let recorded = self.shared.store.write(|tx| record(tx, c, &finding, now(), now()))?;
                return Ok(Looked::Done(finding, recorded));
            }
        };
        let started = now();
        let answer = self.portal.call(Service::LookUp, |sink| sink.look_up(&c.mahoso)).await;
        let answered_at = now();
        let finding = match &answer {
            Answer::Retry(t) if t.not_sent() => return Ok(Looked::Transient(t.clone())),
            Answer::Retry(t) => {
                metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => "transient").increment(1);
                let mut noted = journal::entry(
                    &c.mahoso,
                    answered_at,
                    Service::LookUp.name(),
                    &answer,
                    None,
                    String::new,
                );
                noted.message = format!("audit: {}", noted.message);
                self.journal.write_now(&self.shared.store, [noted]);
                return Ok(Looked::Transient(t.clone()));
            }
            Answer::Refused { code, message } => {
                if crate::domain::codes::refuses_the_call(*code, message) {
                    self.portal.refused(Service::LookUp, *code, message);
                }
                Finding::Failed(format!("the look-up was refused (error_code {code}): {message}"))
            }
            Answer::Ok(body) => match personal::comparable(&payload, body, self.shared.store.digest_key()) {
                Some((payload, body)) => Finding::of(&payload, &history, &body),
                None => Finding::of(&payload, &history, body),
            },
        };
        let noted = |acted: bool| journal_entry(c, answered_at, &answer, &finding, acted);
        // Not while the pusher works on it: its round holds the dossier as it loaded it.
        let recorded = self.in_round.outside(&c.mahoso, || {
            self.journal.write(&self.shared.store, |tx| {
                let done = record(tx, c, &finding, started, now())?;
                crate::store::journal::insert(tx, &[noted(done)])?;
                Ok(done)
            })
        });
        let recorded = match recorded {
            Some(done) => done?,
            None => {
                self.journal.write_now(&self.shared.store, [noted(false)]);
                false
            }
        };
        self.count_and_log(c, &finding, recorded);
        Ok(Looked::Done(finding, recorded))
    }

    /// The acknowledged payload and history as stored.
    fn acknowledged(&self, c: &Candidate) -> Result<Stored, StoreError> {
        let body: Option<(String, String, i64, i64)> = self.shared.store.read(|conn| {
            conn.prepare_cached(
                "SELECT body_text(b.payload), body_text(b.history), d.payload_hash, d.history_len
                 FROM dossier d JOIN body b USING (mahoso) WHERE d.mahoso = ?1",
            )?
            .query_row([&c.mahoso], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
        })?;
        let Some((payload, history, payload_hash, history_len)) = body else {
            return Ok(Stored::Missing("no stored payload to compare with".into()));
        };
        if payload_hash != c.acked_hash || history_len != c.acked_history {
            return Ok(Stored::MovedOn);
        }
        match (serde_json::from_str(&payload), serde_json::from_str(&history)) {
            (Ok(payload), Ok(history)) => Ok(Stored::Body(payload, history)),
            (Err(e), _) | (_, Err(e)) => Ok(Stored::Missing(format!("the stored body cannot be read: {e}"))),
        }
    }

    /// Metrics and logs of a finding.
    fn count_and_log(&self, c: &Candidate, finding: &Finding, recorded: bool) {
        let outcome = match (finding, recorded) {
            (_, false) => "changed",
            (Finding::Verified, _) => "verified",
            (Finding::Failed(_), _) => "failed",
            _ => "drift",
        };
        metrics::counter!(m::AUDIT_LOOKUPS, "outcome" => outcome).increment(1);
        if !recorded {
            return;
        }
        match finding {
            Finding::Verified => {
                if c.finding.as_deref().is_some_and(is_drift) {
                    metrics::counter!(m::AUDIT_REPAIRED).increment(1);
                    tracing::info!(event = "national_drift_repaired", dossier = %c.mahoso);
                }
            }
            Finding::Failed(reason) => {
                tracing::warn!(event = "audit_lookup_failed", dossier = %c.mahoso, reason = %reason);
            }
            drift => {
                for kind in drift.kinds() {
                    metrics::counter!(m::AUDIT_DRIFT, "kind" => kind).increment(1);
                }
                let (fields, history) = match drift {
                    Finding::Differs { fields, history, .. } => (fields.join(","), *history),
                    _ => (String::new(), None),
                };
                tracing::warn!(
                    event = "national_drift_found",
                    dossier = %c.mahoso,
                    kinds = %drift.kinds().join(","),
                    fields = %fields,
                    national_entries_matched = history,
                    "the national copy does not hold what it acknowledged; {}",
                    if matches!(drift, Finding::Unmatched(_)) { "parked, nothing resent" } else { "repair enqueued" }
                );
                self.shared.work_arrived.notify_one();
            }
        }
    }
}

/// What the call journal says of a look-up, once it is known whether it was acted on.
fn journal_entry(c: &Candidate, at: i64, answer: &Answer, finding: &Finding, acted: bool) -> Call {
    let mut noted =
        journal::entry(&c.mahoso, at, Service::LookUp.name(), answer, None, || finding.describe());
    if let Finding::Failed(_) = finding {
        noted.message = finding.describe();
        if matches!(answer, Answer::Ok(_)) {
            noted.outcome = TransientKind::BadAnswer.label();
        }
    }
    if !acted {
        noted.message.push_str("; not recorded: the dossier moved on meanwhile");
    }
    noted
}

/// Records a finding if the dossier is still as chosen; returns whether it was.
fn record(
    tx: &rusqlite::Connection,
    c: &Candidate,
    finding: &Finding,
    looked_at: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    // Nothing written to the national portal for it since it was chosen (a new provincial
    // version may have come: what the read-back proves of the acknowledged state still holds).
    const GUARD: &str =
        "mahoso = ?1 AND acked_at = ?2 AND acked_hash = ?3 AND acked_history = ?4 AND inflight = 0
         AND NOT EXISTS (SELECT 1 FROM dead WHERE mahoso = ?1)";
    let key = params![c.mahoso, c.acked_at, c.acked_hash, c.acked_history];
    let update = |set: &str, extra: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<bool> {
        let mut args: Vec<&dyn rusqlite::ToSql> = key.to_vec();
        args.extend_from_slice(extra);
        Ok(tx.prepare_cached(&format!("UPDATE dossier SET {set} WHERE {GUARD}"))?.execute(&*args)? == 1)
    };
    let label = finding.label();
    let changed = match finding {
        Finding::Verified => {
            // Verified as of the look-up: the national state is known from then.
            let done =
                update("verified_at = ?5, audited_at = ?6, audit_finding = ?7", &[&looked_at, &now, &label])?;
            if done && c.finding.as_deref().is_some_and(is_drift) {
                meta_add(tx, AUDIT_DRIFT_REPAIRED, 1)?;
            }
            return Ok(done);
        }
        Finding::Failed(_) => return update("audited_at = ?5, audit_finding = ?6", &[&now, &label]),
        Finding::Missing => update(
            "national_exists = 0, acked_hash = NULL, acked_history = 0, verified_at = NULL, audited_at = ?5,
             audit_finding = ?6",
            &[&now, &label],
        )?,
        Finding::Differs { status, fields, history } => {
            let payload_differs = *status || !fields.is_empty();
            let matched = history.map_or(c.acked_history, |h| h as i64);
            update(
                "acked_hash = CASE WHEN ?5 THEN NULL ELSE acked_hash END, acked_history = ?6, verified_at = NULL,
                 audited_at = ?7, audit_finding = ?8",
                &[&payload_differs, &matched, &now, &label],
            )?
        }
        Finding::Unmatched(reason) => {
            // Parked as the pusher parks an unmatched read-back: the write stays marked uncertain
            // (inflight 2), so that a retry reads the dossier back again before sending anything.
            let done = update(
                "inflight = 2, verified_at = NULL, audited_at = ?5, audit_finding = ?6",
                &[&now, &label],
            )?;
            if done {
                tx.prepare_cached(
                    "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason, kind)
                     VALUES (?1, ?2, 0, NULL, ?3, 'unmatched')",
                )?
                .execute(params![c.mahoso, now, reason])?;
                tx.prepare_cached("DELETE FROM outbox WHERE mahoso = ?1")?.execute([&c.mahoso])?;
            }
            done
        }
    };
    if changed {
        // A minimised payload is never sent: read again from the source first.
        let waits = !matches!(finding, Finding::Unmatched(_))
            && crate::sync::minimise::wait_for_source(tx, &c.mahoso, now)?;
        if !matches!(finding, Finding::Unmatched(_)) && !waits {
            tx.prepare_cached(
                "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at, attempts) VALUES (?1, ?2, ?2, 0)
                 ON CONFLICT(mahoso) DO NOTHING",
            )?
            .execute(params![c.mahoso, now])?;
        }
        meta_add(tx, AUDIT_DRIFT_FOUND, 1)?;
        // A loss rarely comes alone: everything verified before now is due again.
        start_sweep(tx, now)?;
    }
    Ok(changed)
}
