//! Isolating what the portal refuses: one loop, for dossier payloads and history entries
//! alike, that sends a group of units in one call and, when the portal refuses, works out
//! which unit it refused and sends the rest again, so that one bad item never holds back the
//! good ones of its batch. What each answer means for the group is one pure decision,
//! [`next`].

use std::future::Future;

use super::{
    Pusher,
    work::{Fate, Work},
};
use crate::{
    domain::codes::{self, named_item},
    sync::{
        answer::{Answer, Service, Transient},
        ports::{Clock, Sink},
    },
};

/// What an answer means for the group of units its call carried.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Next {
    /// Every unit acknowledged.
    Acked,
    /// No usable answer: every unit is tried again later.
    Retry(Transient),
    /// The portal refused the unit at `at`: its fate is decided apart, the rest sent again.
    RefusedOne { at: usize, code: i64, message: String },
    /// Sent again in two halves, to find the refused unit; `learn`: the portal takes at most
    /// this many items a call.
    Split { learn: Option<usize> },
    /// One unit with more items than the portal takes a call: its older half now, the rest in
    /// a later round.
    Shrink { learn: usize },
    /// The one unit of the group refused for good.
    Dead { code: i64, message: String },
    /// The call refused as a whole (malformed, another unit, an unknown code): a configuration
    /// or compatibility problem, not these units' fault; every unit is tried again later.
    RefusedCall { code: i64, message: String },
}

/// Decides what an answer means for a group: `names` its units' dossiers in order, `items` the
/// items it carried in all.
pub(super) fn next(answer: &Answer, names: &[&str], items: usize) -> Next {
    let (code, message) = match answer {
        Answer::Ok(_) => return Next::Acked,
        Answer::Retry(t) => return Next::Retry(t.clone()),
        Answer::Refused { code, message } => (*code, message.clone()),
    };
    let named = named_item(&message).and_then(|m| names.iter().position(|n| *n == m));
    match named {
        Some(at) if codes::concerns_one_item(code) => Next::RefusedOne { at, code, message },
        _ if code == codes::TOO_MANY && items > 1 && names.len() > 1 => {
            Next::Split { learn: Some(items / 2) }
        }
        _ if code == codes::TOO_MANY && items > 1 => Next::Shrink { learn: items / 2 },
        // A unit mismatch names nothing because it concerns the account, not an item.
        None if codes::concerns_one_item(code) && code != codes::NOT_YOUR_UNIT => {
            if names.len() > 1 {
                Next::Split { learn: None }
            } else {
                Next::Dead { code, message }
            }
        }
        _ => Next::RefusedCall { code, message },
    }
}

/// The reason a refusal is recorded with.
pub(super) fn refusal_reason(code: i64, message: &str) -> String {
    format!("national portal refused (error_code {code}): {message}")
}

/// What became of one unit.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Acked,
    /// The portal does not know the dossier (history refused, code 4): it is created again.
    Missing,
    Fate(Fate),
}

/// What to do with a unit the portal refused by name.
pub(super) enum Settle<U> {
    Done(Outcome),
    /// Send it again, in a call of its own (a create instead of an update).
    Resend(U),
}

/// A dossier's part of a call: its payload, or a run of its entries.
pub(super) trait Unit: Copy + Send {
    /// The dossier (an index into the round's work).
    fn dossier(self) -> usize;
    /// How many items it carries.
    fn items(self) -> usize {
        1
    }
    /// Its older half, when it carries more than one item.
    fn older_half(self) -> Option<Self> {
        None
    }
}

/// One kind of call: what it carries and what a refusal means.
pub(super) trait Phase {
    type Unit: Unit;
    const SERVICE: Service;
    /// What the call journal says it carried.
    fn describe(&self, unit: Self::Unit) -> String;
    /// Why a unit refused for good is parked.
    fn dead_reason(&self, code: i64, message: &str) -> String;
    /// Sends a group in one call.
    fn send(&self, group: &[Self::Unit]) -> impl Future<Output = Answer> + Send;
    /// The fate of a unit the portal refused by name.
    fn refused(&mut self, unit: Self::Unit, code: i64, message: &str) -> Settle<Self::Unit>;
}

/// Sends `units` in as few calls as the portal's answers allow, isolating every refused unit;
/// returns what became of each.
pub(super) async fn send_isolating<P: Phase, N: Sink, C: Clock>(
    pusher: &Pusher<N, C>,
    work: &[Work],
    phase: &mut P,
    units: Vec<P::Unit>,
) -> Vec<(P::Unit, Outcome)> {
    let mut out = Vec::with_capacity(units.len());
    let mut groups = vec![units];
    while let Some(mut group) = groups.pop() {
        if group.is_empty() {
            continue;
        }
        let answer = phase.send(&group).await;
        let names: Vec<&str> = group.iter().map(|&u| work[u.dossier()].mahoso.as_str()).collect();
        let items = group.iter().map(|&u| u.items()).sum();
        let decided = next(&answer, &names, items);
        let culprit = match &decided {
            Next::RefusedOne { at, .. } => names.get(*at).copied(),
            _ => None,
        };
        if !matches!(&answer, Answer::Retry(t) if t.not_sent()) {
            pusher.note_calls(P::SERVICE, &answer, culprit, &names, |k| phase.describe(group[k]));
        }
        let all = |out: &mut Vec<_>, group: Vec<P::Unit>, o: Outcome| {
            out.extend(group.into_iter().map(|u| (u, o.clone())))
        };
        match decided {
            Next::Acked => {
                pusher.shared.note_taken();
                all(&mut out, group, Outcome::Acked)
            }
            Next::Retry(t) => all(&mut out, group, Outcome::Fate(Fate::Retry(t))),
            Next::RefusedOne { at, code, message } => {
                let unit = group.remove(at);
                match phase.refused(unit, code, &message) {
                    Settle::Done(outcome) => out.push((unit, outcome)),
                    Settle::Resend(again) => groups.push(vec![again]),
                }
                groups.push(group);
            }
            Next::Split { learn } => {
                if let Some(n) = learn {
                    pusher.learn_item_limit(n);
                }
                let rest = group.split_off(group.len() / 2);
                groups.push(rest);
                groups.push(group);
            }
            Next::Shrink { learn } => {
                pusher.learn_item_limit(learn);
                groups.extend(group[0].older_half().map(|half| vec![half]));
            }
            Next::Dead { code, message } => {
                let reason = phase.dead_reason(code, &message);
                all(&mut out, group, Outcome::Fate(Fate::Dead { code: Some(code), reason }));
            }
            Next::RefusedCall { code, message } => {
                pusher.portal.refused(P::SERVICE, code, &message);
                let t = Transient::bad_answer(refusal_reason(code, &message));
                all(&mut out, group, Outcome::Fate(Fate::Retry(t)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(code: i64, message: &str) -> Answer {
        Answer::Refused { code, message: message.into() }
    }

    #[test]
    fn an_answer_decides_for_the_whole_group() {
        let names = ["A", "B", "C"];
        assert_eq!(next(&Answer::Ok(json!({"error_code": 0})), &names, 3), Next::Acked);
        let t = Transient::bad_answer("no JSON");
        assert_eq!(next(&Answer::Retry(t.clone()), &names, 3), Next::Retry(t));
    }

    #[test]
    fn a_refusal_that_names_a_unit_isolates_it() {
        let names = ["A", "B", "C"];
        let answer = refused(codes::INVALID, "MaHoSo=B: NgayTiepNhan sai định dạng");
        assert_eq!(
            next(&answer, &names, 3),
            Next::RefusedOne {
                at: 1,
                code: codes::INVALID,
                message: "MaHoSo=B: NgayTiepNhan sai định dạng".into()
            }
        );
        // A MaHoSo of another unit is that item's trouble.
        assert!(matches!(
            next(&refused(codes::NOT_YOUR_UNIT, "MaHoSo=C: mã đơn vị khác"), &names, 3),
            Next::RefusedOne { at: 2, .. }
        ));
        // A name that is not in the group is no help: halve to find the culprit.
        assert_eq!(next(&refused(codes::INVALID, "MaHoSo=Z: sai"), &names, 3), Next::Split { learn: None });
    }

    #[test]
    fn a_refusal_that_names_nobody_halves_the_group_down_to_one() {
        assert_eq!(
            next(&refused(codes::INVALID, "dữ liệu sai"), &["A", "B"], 2),
            Next::Split { learn: None }
        );
        assert_eq!(
            next(&refused(codes::INVALID, "dữ liệu sai"), &["A"], 1),
            Next::Dead { code: codes::INVALID, message: "dữ liệu sai".into() }
        );
    }

    #[test]
    fn too_many_items_halves_and_teaches_the_limit() {
        let too_many = refused(codes::TOO_MANY, "quá nhiều bản ghi");
        assert_eq!(next(&too_many, &["A", "B", "C", "D"], 4), Next::Split { learn: Some(2) });
        // One dossier's entries beyond the limit: its older half first.
        assert_eq!(next(&too_many, &["A"], 9), Next::Shrink { learn: 4 });
        // One item is never too many to send: the portal's answer is a fault of the call.
        assert!(matches!(next(&too_many, &["A"], 1), Next::RefusedCall { code: codes::TOO_MANY, .. }));
    }

    #[test]
    fn a_refusal_of_the_account_or_the_call_blames_no_unit() {
        for (code, message) in [
            (codes::NOT_YOUR_UNIT, "madonvi không phải đơn vị của phiên làm việc"),
            (codes::MALFORMED, "data phải là một mảng"),
            (99, "lỗi không rõ"),
        ] {
            assert_eq!(
                next(&refused(code, message), &["A", "B"], 2),
                Next::RefusedCall { code, message: message.into() },
                "{code} {message}"
            );
        }
    }
}
