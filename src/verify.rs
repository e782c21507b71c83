//! Checks the promise from the outside, through the mocks' `/_mock/` views only: every valid
//! provincial dossier equal at the national portal (fields, status, history in order), no
//! status going backwards, no history entry twice, and what could not be synchronized being
//! exactly what the provincial simulator injected. The tests and the demo use it.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

pub use crate::mock::provincial::{TruthItem, truth_items};
use crate::{
    domain::{
        entry,
        form::Form,
        normalize::{StatusMap, fill_catalogue, normalize},
        status::NationalStatus,
    },
    mock::catalogue,
};

/// The verdict on one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub dossiers: usize,
    /// Dossiers with a valid record and a procedure the national catalogue knows.
    pub valid: usize,
    /// Valid dossiers whose national copy equals the provincial record.
    pub synchronized: usize,
    /// Valid dossiers missing at the national portal or different there (MaHoSo → why).
    pub not_synchronized: BTreeMap<String, String>,
    /// History entries the provincial portal holds for valid dossiers, and the national one.
    pub history_entries: usize,
    pub national_history_entries: usize,
    /// Dossiers with a defect, by defect, as injected.
    pub injected_defects: BTreeMap<String, usize>,
    /// Valid records whose procedure the national portal does not know, as injected.
    pub injected_unknown_procedures: Vec<String>,
    /// Dossiers whose national status sequence is not a subsequence of the provincial one.
    pub status_regressions: Vec<String>,
    pub duplicate_history_entries: u64,
    pub out_of_order_history_entries: u64,
    pub rejected_status_changes: u64,
    pub coverage_percent: f64,
}

impl Verdict {
    /// Nothing lost, duplicated, reordered or regressed, and every valid dossier synchronized.
    pub fn clean(&self) -> bool {
        self.not_synchronized.is_empty()
            && self.status_regressions.is_empty()
            && self.duplicate_history_entries == 0
            && self.out_of_order_history_entries == 0
            && self.rejected_status_changes == 0
    }

    pub fn summary(&self) -> String {
        let mut missing: Vec<String> =
            self.not_synchronized.iter().take(3).map(|(k, v)| format!("{k}: {v}")).collect();
        if self.not_synchronized.len() > 3 {
            missing.push(format!("... {} more", self.not_synchronized.len() - 3));
        }
        format!(
            "{}/{} valid dossiers synchronized; not synchronized: [{}]; regressions {}; duplicates {}; out of order {}; rejected status changes {}",
            self.synchronized,
            self.valid,
            missing.join("; "),
            self.status_regressions.len(),
            self.duplicate_history_entries,
            self.out_of_order_history_entries,
            self.rejected_status_changes
        )
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(response.status().is_success(), "GET {url}: HTTP {}", response.status());
    Ok(response.json().await?)
}

/// Every record of the provincial simulator, visible or not.
pub async fn provincial_truth(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<TruthItem>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = reqwest::Url::parse(&format!("{base}/_mock/truth"))?;
        url.query_pairs_mut().append_pair("limit", "5000");
        if let Some(a) = &after {
            url.query_pairs_mut().append_pair("after", a);
        }
        let page = get_json(http, url.as_str()).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        all.extend(truth_items(&items));
        after = all.last().map(|t: &TruthItem| t.key.clone());
        if page["has_more"] != Value::Bool(true) || items.is_empty() {
            return Ok(all);
        }
    }
}

/// Every dossier the national mock holds, by MaHoSo.
pub async fn national_state(http: &reqwest::Client, base: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut all = BTreeMap::new();
    let mut after = String::new();
    loop {
        let mut url = reqwest::Url::parse(&format!("{base}/_mock/state"))?;
        url.query_pairs_mut().append_pair("limit", "5000").append_pair("after", &after);
        let page = get_json(http, url.as_str()).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in items {
            if let Some(key) = item["dossier"]["MaHoSo"].as_str() {
                after = key.to_owned();
                all.insert(key.to_owned(), item);
            }
        }
        if page["has_more"] != Value::Bool(true) {
            return Ok(all);
        }
    }
}

/// Whether `part` appears in `whole` in order (not necessarily adjacent).
fn is_subsequence(part: &[String], whole: &[String]) -> bool {
    let mut it = whole.iter();
    part.iter().all(|p| it.any(|w| w == p))
}

/// The national form the daemon should have sent for a valid record.
pub(crate) fn expected_national(record: &Value, map: &StatusMap) -> Option<(Map<String, Value>, Vec<Value>)> {
    let mut n = normalize(record, map).ok()?;
    if n.needs_catalogue {
        let p = catalogue::find(&n.procedure)?;
        fill_catalogue(&mut n.dossier, p.name, p.field_code, p.field_name);
    }
    Some((n.dossier.to_map(), n.history.iter().map(Form::to_value).collect()))
}

/// Compares the provincial simulator's truth with the national mock's state.
pub async fn verify(
    http: &reqwest::Client,
    provincial: &str,
    national: &str,
    map: &StatusMap,
) -> anyhow::Result<Verdict> {
    let truth = provincial_truth(http, provincial).await?;
    let state = national_state(http, national).await?;
    let stats = get_json(http, &format!("{national}/_mock/stats")).await?;
    Ok(compare(&truth, &state, &stats, map))
}

/// The verdict from the data itself: the provincial truth, the national state by MaHoSo, and
/// the national mock's stats.
pub fn compare(
    truth: &[TruthItem],
    state: &BTreeMap<String, Value>,
    stats: &Value,
    map: &StatusMap,
) -> Verdict {
    compare_with(truth, state, stats, map, false)
}

/// As [`compare`]; with `statuses_may_differ` (status_map was changed during the run) history
/// entries are compared by their identity (`domain::entry`): the national API appends entries
/// and never rewrites them, so those sent before the change keep the status they were sent with,
/// and the dossier's status sequence may hold codes of either mapping.
pub(crate) fn compare_with(
    truth: &[TruthItem],
    state: &BTreeMap<String, Value>,
    stats: &Value,
    map: &StatusMap,
    statuses_may_differ: bool,
) -> Verdict {
    let mut v = Verdict {
        dossiers: truth.len(),
        duplicate_history_entries: stats["duplicate_history_entries"].as_u64().unwrap_or(0),
        out_of_order_history_entries: stats["out_of_order_history_entries"].as_u64().unwrap_or(0),
        rejected_status_changes: stats["rejected_status_changes"].as_u64().unwrap_or(0),
        ..Verdict::default()
    };
    for item in truth {
        if let Some(defect) = &item.defect {
            *v.injected_defects.entry(defect.clone()).or_default() += 1;
            continue;
        }
        if item.unknown_procedure {
            v.injected_unknown_procedures.push(item.key.clone());
            continue;
        }
        v.valid += 1;
        let Some((dossier, history)) = expected_national(&item.record, map) else {
            v.not_synchronized.insert(item.key.clone(), "the record does not normalise (unexpected)".into());
            continue;
        };
        v.history_entries += history.len();
        let Some(national) = state.get(&item.key) else {
            v.not_synchronized.insert(item.key.clone(), "absent at the national portal".into());
            continue;
        };
        let national_history = national["history"].as_array().cloned().unwrap_or_default();
        v.national_history_entries += national_history.len();
        if national["dossier"] != Value::Object(dossier.clone()) {
            let differing: Vec<&String> = dossier
                .keys()
                .filter(|k| national["dossier"].get(k.as_str()) != dossier.get(k.as_str()))
                .collect();
            v.not_synchronized.insert(item.key.clone(), format!("fields differ: {differing:?}"));
            continue;
        }
        let same_history = if statuses_may_differ {
            national_history.len() == history.len()
                && national_history
                    .iter()
                    .zip(&history)
                    .all(|(a, b)| entry::identity(a) == entry::identity(b))
        } else {
            national_history == history
        };
        if !same_history {
            v.not_synchronized.insert(
                item.key.clone(),
                format!("history differs: {} entries there, {} here", national_history.len(), history.len()),
            );
            continue;
        }
        let truth_sequence: Vec<String> = item
            .statuses
            .iter()
            .filter_map(|s| map.get(s).map(NationalStatus::to_string))
            .fold(Vec::new(), |mut acc, s| {
                if acc.last() != Some(&s) {
                    acc.push(s);
                }
                acc
            });
        let national_sequence: Vec<String> = national["status_sequence"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if !statuses_may_differ && !is_subsequence(&national_sequence, &truth_sequence) {
            v.status_regressions.push(item.key.clone());
        }
        v.synchronized += 1;
    }
    v.coverage_percent = if v.valid == 0 { 100.0 } else { v.synchronized as f64 * 100.0 / v.valid as f64 };
    v
}

/// As [`compare_with`], for a merged province: `truth` is what each source holds of the
/// dossiers it owns, `moved` the dossiers that moved mid-life to a source superseding their
/// first (as the new system holds them). A moved dossier's history is compared by identity
/// (the new system keeps the entries with their own whitespace), and its national status
/// sequence must never go back (provincial-portal.md, "A move changes nothing nationally that
/// did not change").
pub fn compare_merged(
    truth: &[TruthItem],
    moved: &[TruthItem],
    state: &BTreeMap<String, Value>,
    stats: &Value,
    map: &StatusMap,
    statuses_may_differ: bool,
) -> Verdict {
    let mut v = compare_with(truth, state, stats, map, statuses_may_differ);
    let m = compare_with(moved, state, stats, map, true);
    v.dossiers += m.dossiers;
    v.valid += m.valid;
    v.synchronized += m.synchronized;
    v.not_synchronized.extend(m.not_synchronized);
    v.history_entries += m.history_entries;
    v.national_history_entries += m.national_history_entries;
    for item in moved {
        let sequence: Vec<i64> = state
            .get(&item.key)
            .and_then(|n| n["status_sequence"].as_array())
            .map(|s| s.iter().filter_map(|c| c.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        if sequence.windows(2).any(|w| crate::domain::ownership::goes_backwards(w[0], w[1])) {
            v.status_regressions.push(item.key.clone());
        }
    }
    v.coverage_percent = if v.valid == 0 { 100.0 } else { v.synchronized as f64 * 100.0 / v.valid as f64 };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsequences() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(is_subsequence(&s(&["2", "4", "10"]), &s(&["2", "4", "5", "4", "9", "10"])));
        assert!(is_subsequence(&s(&["2", "4", "4"]), &s(&["2", "4", "5", "4"])));
        assert!(!is_subsequence(&s(&["4", "2"]), &s(&["2", "4"])));
        assert!(is_subsequence(&s(&[]), &s(&["2"])));
    }
}
