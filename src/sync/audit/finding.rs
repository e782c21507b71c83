//! What one read-back showed of a dossier, as the audit records and reports it.

use serde_json::Value;

use crate::sync::readback::{self, Judgement, Unusable};

/// What a read-back showed of one dossier.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The national copy holds what was acknowledged.
    Verified,
    /// The national portal does not know the dossier.
    Missing,
    /// The national copy differs: its status, other fields (by name), or it holds only the
    /// first `history` of our entries.
    Differs { status: bool, fields: Vec<String>, history: Option<usize> },
    /// National history entries that match none of ours: nothing can be resent safely.
    Unmatched(String),
    /// No usable answer (a refusal, an answer without a result or without history).
    Failed(String),
}

/// Every drift kind (`audit_finding`, the `kind` label of the drift metric).
pub(crate) const DRIFT_KINDS: [&str; 5] = ["missing", "status", "fields", "history", "unmatched"];

pub(crate) fn is_drift(finding: &str) -> bool {
    DRIFT_KINDS.contains(&finding)
}

impl Finding {
    /// Compares a look-up answer with the acknowledged payload and history. A field the answer
    /// does not carry is not compared (gateways drop optional fields).
    pub(crate) fn of(payload: &Value, history: &[Value], answer: &Value) -> Finding {
        match readback::judge(payload, history, answer) {
            Judgement::Unusable(Unusable::NoResult) => {
                Finding::Failed("the look-up answered success without a usable result".into())
            }
            Judgement::Unusable(Unusable::NotADossier) => {
                Finding::Failed("the look-up's result is not a dossier".into())
            }
            Judgement::Unusable(Unusable::NoHistory) => Finding::Failed(
                "the look-up answer holds no QuaTrinhXuLy list: the history cannot be verified".into(),
            ),
            Judgement::Missing => Finding::Missing,
            Judgement::Unmatched { reason, .. } => Finding::Unmatched(reason),
            Judgement::Holds { matched, differing, .. } => {
                let status = differing.iter().any(|k| k == "TrangThaiHoSo");
                let fields: Vec<String> = differing.into_iter().filter(|k| k != "TrangThaiHoSo").collect();
                let history = (matched < history.len()).then_some(matched);
                if !status && fields.is_empty() && history.is_none() {
                    Finding::Verified
                } else {
                    Finding::Differs { status, fields, history }
                }
            }
        }
    }

    /// The drift kinds, for metrics and reports (bounded labels).
    pub(crate) fn kinds(&self) -> Vec<&'static str> {
        match self {
            Finding::Missing => vec!["missing"],
            Finding::Unmatched(_) => vec!["unmatched"],
            Finding::Differs { status, fields, history } => {
                let mut kinds = Vec::new();
                if *status {
                    kinds.push("status");
                }
                if !fields.is_empty() {
                    kinds.push("fields");
                }
                if history.is_some() {
                    kinds.push("history");
                }
                kinds
            }
            Finding::Verified | Finding::Failed(_) => Vec::new(),
        }
    }

    /// What the call journal says the audit found.
    pub(crate) fn describe(&self) -> String {
        match self {
            Finding::Verified => "audit: the national copy holds what it acknowledged".into(),
            Finding::Missing => "audit: the national portal lost this dossier; it is created again".into(),
            Finding::Differs { status, fields, history } => {
                let mut what = Vec::new();
                if *status {
                    what.push("its status".to_owned());
                }
                if !fields.is_empty() {
                    what.push(format!("fields {}", fields.join(", ")));
                }
                if let Some(n) = history {
                    what.push(format!("history (it holds the first {n} of our entries)"));
                }
                format!(
                    "audit: the national copy differs from what it acknowledged: {}; repair enqueued",
                    what.join("; ")
                )
            }
            Finding::Unmatched(reason) | Finding::Failed(reason) => format!("audit: {reason}"),
        }
    }

    /// What is recorded in `audit_finding`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Finding::Verified => "verified",
            Finding::Failed(_) => "failed",
            other => other.kinds().first().copied().unwrap_or("fields"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sync::readback::fixture::*;

    #[test]
    fn the_same_dossier_in_another_form_is_verified() {
        let history = two_entries();
        assert_eq!(Finding::of(&dossier(), &history, &rewritten()), Finding::Verified);
        // A field the answer leaves out is not compared.
        let mut short = dossier();
        short.as_object_mut().unwrap().remove("TrichYeuHoSo");
        assert_eq!(Finding::of(&dossier(), &history, &answer(short, history.clone())), Finding::Verified);
    }

    #[test]
    fn each_kind_of_drift_is_told_apart() {
        let history = two_entries();
        assert_eq!(
            Finding::of(&dossier(), &history, &json!({"error_code": 0, "result": []})),
            Finding::Missing
        );
        let mut other = dossier();
        other["TrangThaiHoSo"] = json!("2");
        other["TrichYeuHoSo"] = json!("khác");
        assert_eq!(
            Finding::of(&dossier(), &history, &answer(other, history.clone())),
            Finding::Differs { status: true, fields: vec!["TrichYeuHoSo".into()], history: None }
        );
        assert_eq!(
            Finding::of(&dossier(), &history, &answer(dossier(), history[..1].to_vec())),
            Finding::Differs { status: false, fields: vec![], history: Some(1) }
        );
        let finding = Finding::of(
            &dossier(),
            &history,
            &answer(dossier(), vec![history[0].clone(), entry("20260305000000", "?")]),
        );
        assert!(matches!(&finding, Finding::Unmatched(r) if r.contains("first 1 match")), "{finding:?}");
        assert_eq!(finding.kinds(), vec!["unmatched"]);
        let more = vec![history[0].clone(), history[1].clone(), entry("20260306000000", "not ours")];
        assert!(matches!(Finding::of(&dossier(), &history, &answer(dossier(), more)), Finding::Unmatched(_)));
    }

    #[test]
    fn an_answer_that_cannot_tell_is_a_failure_not_drift() {
        let history = vec![entry("20260301083000", "Tiếp nhận")];
        for body in [
            json!({"error_code": 0}),
            json!({"error_code": 0, "result": "x"}),
            json!({"error_code": 0, "result": [1]}),
            json!({"error_code": 0, "result": [dossier()]}),
        ] {
            assert!(matches!(Finding::of(&dossier(), &history, &body), Finding::Failed(_)), "{body}");
        }
    }
}
