//! Phase 2 of a round: the catalogue fields a dossier lacks (TenTTHC, MaLinhVuc, TenLinhVuc)
//! filled from the national catalogue (LayThuTuc, cached); and, after the round's pushes, the
//! procedure durations the 766 report wants.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use serde_json::{Map, Value, value::RawValue};

use super::{
    Pusher, outbox,
    work::{Fate, Work},
};
use crate::{
    domain::{codes, normalize::fill_catalogue, scoring::MaxDuration, stable_hash},
    store::StoreError,
    sync::{
        answer::{Answer, Service, Transient},
        catalogue::Entry,
        journal,
        ports::{Clock, Sink},
    },
};

/// A failed look-up of a wanted duration is asked again this much later at the earliest (µs).
const DURATION_RETRY_MICROS: i64 = 60 * 1_000_000;

/// What a `LayThuTuc` answer says of a procedure, or why it says nothing usable.
fn catalogue_entry(answer: &Answer) -> Result<Entry, Transient> {
    match &answer {
        Answer::Ok(body) if !body.get("result").is_some_and(Value::is_array) => {
            Err(Transient::bad_answer("LayThuTuc answered success without a result"))
        }
        Answer::Ok(body) => {
            let first = body.get("result").and_then(Value::as_array).and_then(|r| r.first());
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
            match first {
                Some(p) => {
                    let field = p.get("LINHVUCTHUCHIEN").and_then(Value::as_array).and_then(|f| f.first());
                    Ok(Entry::Known {
                        name: text(p.get("TENTTHC")),
                        field_code: text(field.and_then(|f| f.get("MALINHVUC"))),
                        field_name: text(field.and_then(|f| f.get("TENLINHVUC"))),
                        duration: MaxDuration::of_procedure(p),
                    })
                }
                None => Ok(Entry::Unknown),
            }
        }
        Answer::Refused { code: codes::UNKNOWN_PROCEDURE, .. } => Ok(Entry::Unknown),
        Answer::Refused { code: c, message } => {
            Err(Transient::bad_answer(format!("LayThuTuc refused (error_code {c}): {message}")))
        }
        Answer::Retry(t) => Err(t.clone()),
    }
}

impl<N: Sink, C: Clock> Pusher<N, C> {
    /// Asks the catalogue for `code`, unless a fresh answer is cached; a usable answer is kept.
    async fn ask_catalogue(
        &self,
        code: &str,
    ) -> Result<(Result<Entry, Transient>, Option<Answer>), StoreError> {
        let now = self.shared.clock.now().as_microsecond();
        if let Some(entry) = self.catalogue.get(code, now) {
            return Ok((Ok(entry), None));
        }
        let answer = self.portal.call(Service::Procedure, |sink| sink.procedure(code)).await;
        if let Answer::Refused { code: refused, message } = &answer
            && codes::refuses_the_call(*refused, message)
        {
            self.portal.refused(Service::Procedure, *refused, message);
        }
        let entry = catalogue_entry(&answer);
        if let Ok(entry) = &entry {
            self.shared.store.write(|tx| self.catalogue.put(tx, code, entry.clone(), now))?;
        }
        Ok((entry, Some(answer)))
    }

    async fn ask_named<'c>(
        &self,
        code: &'c str,
    ) -> Result<(&'c str, Result<Entry, Transient>, Option<Answer>), StoreError> {
        self.ask_catalogue(code).await.map(|(entry, answer)| (code, entry, answer))
    }

    /// Asks the catalogue for each of `codes`, several at a time under the limiter, in order.
    async fn ask_all<'c>(
        &self,
        codes: impl IntoIterator<Item = &'c str>,
    ) -> Result<Vec<(&'c str, Result<Entry, Transient>, Option<Answer>)>, StoreError> {
        // Collected first: a stream that maps inside would hold a closure over borrowed codes,
        // which the compiler cannot prove Send for the daemon's task.
        let asks: Vec<_> = codes.into_iter().map(|code| self.ask_named(code)).collect();
        let asked =
            futures::stream::iter(asks).buffered(self.cfg.max_concurrency.max(1)).collect::<Vec<_>>().await;
        asked.into_iter().collect()
    }

    /// Asks the catalogue for the durations the report wants (dossiers without NgayHenTra),
    /// after the round's pushes, so that no dossier waits for them; a failure is asked again a
    /// minute later at the earliest.
    pub(super) async fn look_up_durations(&self) -> Result<(), StoreError> {
        let now = self.shared.clock.now().as_microsecond();
        let due: Vec<String> = self.catalogue.take_due(now);
        for (code, entry, _) in self.ask_all(due.iter().map(String::as_str)).await? {
            if entry.is_err() {
                self.catalogue.retry_later(code, now + DURATION_RETRY_MICROS);
            }
        }
        Ok(())
    }

    /// Fills the catalogue fields of the round's dossiers that lack them; a procedure the
    /// catalogue does not know parks its dossiers.
    pub(super) async fn fill_catalogues(&self, work: &mut [Work]) -> Result<(), StoreError> {
        // Ordered, so that a simulation replays the same calls in the same order.
        let codes: BTreeSet<&str> =
            work.iter().filter(|w| w.open() && w.needs_catalogue).map(|w| w.procedure.as_str()).collect();
        if codes.is_empty() {
            return Ok(());
        }
        let asked = self.ask_all(codes).await?;
        let at = self.shared.clock.now().as_microsecond();
        let mut found: HashMap<String, Result<Entry, Transient>> = HashMap::new();
        for (code, entry, answer) in asked {
            if let Some(answer) = answer {
                self.journal_catalogue(work, code, &entry, &answer, at);
            }
            found.insert(code.to_owned(), entry);
        }
        let filled = apply_entries(work, &found);
        if !filled.is_empty() {
            let stale = self.shared.store.write(|tx| outbox::save_catalogue_fills(tx, work, &filled))?;
            for i in stale {
                work[i].fate = Some(Fate::Later);
            }
        }
        Ok(())
    }

    /// Journals a look-up that decided something for the dossiers of `code` (a failure is the
    /// dossier's last error instead: retried every round in an outage, it would push the
    /// dossier's own calls out of the journal).
    fn journal_catalogue(
        &self,
        work: &[Work],
        code: &str,
        entry: &Result<Entry, Transient>,
        answer: &Answer,
        at: i64,
    ) {
        let said = match entry {
            Ok(Entry::Known { name, .. }) => format!("catalogue: MaTTHC {code} is \"{name}\""),
            Ok(Entry::Unknown) => format!("catalogue: MaTTHC {code} is not in the national catalogue"),
            Err(_) => return,
        };
        self.journal.note(work.iter().filter(|w| w.open() && w.needs_catalogue && w.procedure == code).map(
            |w| journal::entry(&w.mahoso, at, Service::Procedure.name(), answer, None, || said.clone()),
        ));
    }
}

/// Fills each open dossier that lacks catalogue fields from what the catalogue said of its
/// procedure (or decides its fate); returns those filled.
fn apply_entries(work: &mut [Work], found: &HashMap<String, Result<Entry, Transient>>) -> Vec<usize> {
    let mut filled = Vec::new();
    for (i, w) in work.iter_mut().enumerate().filter(|(_, w)| w.open() && w.needs_catalogue) {
        match found.get(&w.procedure) {
            Some(Ok(Entry::Known { name, field_code, field_name, .. })) => {
                match filled_payload(&w.payload, name, field_code, field_name) {
                    Ok((payload, hash)) => {
                        w.payload = payload;
                        w.payload_hash = hash;
                        w.needs_catalogue = false;
                        filled.push(i);
                    }
                    Err(e) => {
                        w.fate = Some(Fate::Dead {
                            code: None,
                            reason: format!(
                                "the stored payload cannot be read to fill its catalogue fields: {e}"
                            ),
                        });
                    }
                }
            }
            Some(Ok(Entry::Unknown)) => {
                w.fate = Some(Fate::Dead {
                    code: Some(codes::UNKNOWN_PROCEDURE),
                    reason: format!(
                        "MaTTHC {} is not in the national catalogue (LayThuTuc found nothing)",
                        w.procedure
                    ),
                });
            }
            Some(Err(t)) => w.fate = Some(Fate::Retry(t.clone())),
            None => {}
        }
    }
    filled
}

/// The payload with its catalogue fields filled, and its hash.
fn filled_payload(
    payload: &RawValue,
    name: &str,
    field_code: &str,
    field_name: &str,
) -> serde_json::Result<(Box<RawValue>, i64)> {
    let mut fields: Map<String, Value> = serde_json::from_str(payload.get())?;
    fill_catalogue(&mut fields, name, field_code, field_name);
    let text = serde_json::to_string(&fields)?;
    let hash = stable_hash(text.as_bytes());
    Ok((RawValue::from_string(text)?, hash))
}
