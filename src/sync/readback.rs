//! Judging a look-up (TraCuuHoSo): what the national portal holds of a dossier, against what we
//! hold. One judgement for the pusher (resolving an uncertain write before anything is sent
//! again) and the audit (verifying what was acknowledged).
//!
//! Fields are compared by meaning, as entries are (`domain::entry`): text in NFC with
//! whitespace runs as one space, times as instants, codes as numbers; anything the answer adds
//! is not compared. History is compared by the one identity of an entry: how many of ours the
//! national copy holds in order, from the first.

use serde_json::{Map, Value};

use crate::domain::entry;

/// Why a look-up answered success without saying anything usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// No `result` list.
    NoResult,
    /// A result that is not a dossier.
    NotADossier,
    /// A dossier without its `QuaTrinhXuLy` list: which entries it holds cannot be told.
    NoHistory,
}

/// What a look-up says of one dossier, judged against ours.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Unusable(Unusable),
    /// The portal does not hold the dossier.
    Missing,
    /// It holds `national` entries, of which only the first `matched` match ours in order:
    /// nothing can be sent again safely. The reason, for the operator.
    Unmatched {
        national: usize,
        matched: usize,
        reason: String,
    },
    /// It holds the first `matched` of our entries, and our fields but `differing` (present
    /// there with another meaning) and `absent` (not in the answer).
    Holds {
        matched: usize,
        differing: Vec<String>,
        absent: Vec<String>,
    },
}

/// Judges a look-up answer's body against our payload and history.
pub(crate) fn judge(payload: &Value, history: &[Value], body: &Value) -> Judgement {
    let found = match body.get("result") {
        Some(Value::Array(result)) => match result.first() {
            None => return Judgement::Missing,
            Some(Value::Object(found)) => found,
            Some(_) => return Judgement::Unusable(Unusable::NotADossier),
        },
        _ => return Judgement::Unusable(Unusable::NoResult),
    };
    let Some(Value::Array(theirs)) = found.get("QuaTrinhXuLy") else {
        return Judgement::Unusable(Unusable::NoHistory);
    };
    let matched = entry::matched_prefix(history, theirs);
    if let Some(reason) = inconclusive(history.len(), theirs, matched) {
        return Judgement::Unmatched { national: theirs.len(), matched, reason };
    }
    let (mut differing, mut absent) = (Vec::new(), Vec::new());
    if let Value::Object(ours) = payload {
        for (key, value) in ours.iter().filter(|(k, _)| *k != "QuaTrinhXuLy") {
            match found.get(key) {
                None => absent.push(key.clone()),
                Some(there) if !same(value, there) => differing.push(key.clone()),
                Some(_) => {}
            }
        }
    }
    Judgement::Holds { matched, differing, absent }
}

/// The national copy a look-up found, without its history (to date what it held).
pub(crate) fn found_fields(body: &Value) -> Option<Map<String, Value>> {
    let mut found = body.get("result")?.as_array()?.first()?.as_object()?.clone();
    found.remove("QuaTrinhXuLy");
    Some(found)
}

/// Two values the same by meaning: text in NFC with whitespace runs as one space, times as
/// instants, codes as numbers; objects compared on our keys the other carries.
fn same(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| b.get(k).is_none_or(|w| same(v, w))),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => {
            let (a, b) = (Some(ours), Some(theirs));
            entry::text(a) == entry::text(b)
                || entry::instant(a).is_some_and(|t| entry::instant(b) == Some(t))
                || entry::code(a).is_some_and(|c| entry::code(b) == Some(c))
        }
    }
}

/// Why a read-back does not show which of our `ours` entries were applied, if it does not:
/// the national copy holds entries beyond the `matched` first that match none of ours.
fn inconclusive(ours: usize, theirs: &[Value], matched: usize) -> Option<String> {
    if theirs.len() <= matched {
        return None;
    }
    let at = |e: &Value| entry::text(e.get("ThoiDiemXuLy"));
    let who = |e: &Value| entry::text(e.get("NguoiXuLy"));
    let first = &theirs[matched];
    Some(format!(
        "read-back inconclusive, nothing resent: the national copy holds {} history entries, of which the first {matched} \
         match ours in order; its entry {} ({} by {}) matches {} of ours. Compare with the national portal, then \
         `dvc-sync retry --dead`",
        theirs.len(),
        matched + 1,
        at(first),
        who(first),
        if matched < ours { "none" } else { "none (we have no more)" },
    ))
}

/// A dossier, its entries and look-up answers, for the tests of what is judged of them.
#[cfg(test)]
pub(crate) mod fixture {
    use serde_json::{Value, json};

    pub(crate) fn entry(at: &str, content: &str) -> Value {
        json!({"MaHoSo": "X", "ThoiDiemXuLy": at, "NguoiXuLy": "Lê Thị Hoa", "NoiDungXuLy": content, "TrangThai": "4"})
    }

    pub(crate) fn dossier() -> Value {
        json!({"MaHoSo": "X", "TrangThaiHoSo": "4", "NgayTiepNhan": "20260301083000", "TrichYeuHoSo": "Cấp giấy phép xây dựng"})
    }

    /// A look-up answer holding `d` with `history`.
    pub(crate) fn answer(mut d: Value, history: Vec<Value>) -> Value {
        d["QuaTrinhXuLy"] = Value::Array(history);
        json!({"error_code": 0, "result": [d]})
    }

    /// `dossier()` as a gateway might give it back: other forms, the same meaning.
    pub(crate) fn rewritten() -> Value {
        let mut theirs = json!({"MaHoSo": "X", "TrangThaiHoSo": 4, "NgayTiepNhan": "2026-03-01T08:30:00+07:00",
            "TrichYeuHoSo": "  Cấp giấy  phép xây dựng ", "Them": "a field we never sent"});
        theirs["QuaTrinhXuLy"] =
            json!([entry("01/03/2026 08:30:00", "Tiếp nhận"), entry("2026-03-02 09:00:00", "Chuyển  xử lý")]);
        json!({"error_code": "0", "result": [theirs]})
    }

    /// The two entries `rewritten()` holds, as we hold them.
    pub(crate) fn two_entries() -> Vec<Value> {
        vec![entry("20260301083000", "Tiếp nhận"), entry("20260302090000", "Chuyển xử lý")]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{fixture::*, *};

    fn holds(matched: usize, differing: &[&str], absent: &[&str]) -> Judgement {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect();
        Judgement::Holds { matched, differing: names(differing), absent: names(absent) }
    }

    #[test]
    fn the_same_dossier_in_another_form_is_held() {
        let history = two_entries();
        assert_eq!(judge(&dossier(), &history, &rewritten()), holds(2, &[], &[]));
        // A field the answer leaves out is absent, not different.
        let mut short = dossier();
        short.as_object_mut().unwrap().remove("TrichYeuHoSo");
        assert_eq!(
            judge(&dossier(), &history, &answer(short, history.clone())),
            holds(2, &[], &["TrichYeuHoSo"])
        );
    }

    #[test]
    fn each_kind_of_difference_is_told_apart() {
        let history = two_entries();
        assert_eq!(judge(&dossier(), &history, &json!({"error_code": 0, "result": []})), Judgement::Missing);
        let mut other = dossier();
        other["TrangThaiHoSo"] = json!("2");
        other["TrichYeuHoSo"] = json!("khác");
        assert_eq!(
            judge(&dossier(), &history, &answer(other, history.clone())),
            holds(2, &["TrangThaiHoSo", "TrichYeuHoSo"], &[])
        );
        assert_eq!(
            judge(&dossier(), &history, &answer(dossier(), history[..1].to_vec())),
            holds(1, &[], &[])
        );
        let judged = judge(
            &dossier(),
            &history,
            &answer(dossier(), vec![history[0].clone(), entry("20260305000000", "?")]),
        );
        assert!(
            matches!(&judged, Judgement::Unmatched { national: 2, matched: 1, reason } if reason.contains("first 1 match")),
            "{judged:?}"
        );
        let more = vec![history[0].clone(), history[1].clone(), entry("20260306000000", "not ours")];
        assert!(matches!(
            judge(&dossier(), &history, &answer(dossier(), more)),
            Judgement::Unmatched { national: 3, matched: 2, reason } if reason.contains("(we have no more)")
        ));
    }

    #[test]
    fn an_answer_that_cannot_tell_is_unusable() {
        let history = vec![entry("20260301083000", "Tiếp nhận")];
        for (body, why) in [
            (json!({"error_code": 0}), Unusable::NoResult),
            (json!({"error_code": 0, "result": "x"}), Unusable::NoResult),
            (json!({"error_code": 0, "result": [1]}), Unusable::NotADossier),
            (json!({"error_code": 0, "result": [dossier()]}), Unusable::NoHistory),
        ] {
            assert_eq!(judge(&dossier(), &history, &body), Judgement::Unusable(why), "{body}");
        }
    }
}
