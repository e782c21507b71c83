//! `GET /_mock/report?from=YYYY-MM-DD&to=YYYY-MM-DD`: the Quyết định 766 indicators as the
//! national side computes them, from what the mock holds (the national API, the last
//! section). Written apart from the daemon's `report` module, on purpose: each is the other's
//! check (tests/report.rs), so this one follows the spec's sentences as directly as it can,
//! on the national date strings themselves (`yyyyMMddHHmmss` sorts as it reads).

use std::collections::BTreeMap;

use jiff::civil::DateTime;
use serde_json::{Map, Value, json};

use super::catalogue;
use crate::domain::dates::parse_national;

/// Numerator and denominator of the seven indicators, in the spec's order.
type Tally = [(u64, u64); 7];
const IDS: [&str; 7] = ["1.4", "2.1", "3.3", "3.6", "4.1", "4.2", "4.3"];

/// One held dossier: its fields and its history, in arrival order.
pub struct Held<'a> {
    pub dossier: &'a Map<String, Value>,
    pub history: &'a [Map<String, Value>],
}

fn s<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(m: &'a Map<String, Value>, k: &str) -> impl Iterator<Item = &'a Map<String, Value>> {
    m.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_object)
}

/// The deadline from intake by the catalogue's duration, when the dossier has no NgayHenTra.
fn catalogue_deadline(code: &str, received: DateTime) -> Option<DateTime> {
    let p = catalogue::find(code)?;
    if catalogue::duration_unit(p) == "Ngày" {
        return received.checked_add(jiff::Span::new().days(p.days)).ok();
    }
    // The portal counts working days by the official calendar (weekends and holidays off).
    let calendar = crate::domain::calendar::Calendar::official();
    let mut day = received;
    let mut left = p.days;
    while left > 0 {
        day = day.checked_add(jiff::Span::new().days(1)).ok()?;
        if calendar.is_working_day(day.date()) {
            left -= 1;
        }
    }
    Some(day)
}

/// 2.1 for one dossier: on time or not, reading only entries up to `last` (the period's end).
fn on_time(d: &Map<String, Value>, history: &[Map<String, Value>], last: &str) -> bool {
    let steps: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (s(e, "TrangThai"), s(e, "ThoiDiemXuLy")))
        .filter(|(_, at)| *at <= last)
        .collect();
    let first = |codes: &[&str]| steps.iter().find(|(st, _)| codes.contains(st)).map(|(_, at)| *at);
    let ended = first(&["9"]).or_else(|| first(&["10"])).or_else(|| first(&["3", "8", "7"]));
    // Supplement requests: a 5 entry that follows a non-5 one (or opens the history), until
    // the next entry that is not 5.
    let mut requests: Vec<(&str, Option<&str>)> = Vec::new();
    for (i, (st, at)) in steps.iter().enumerate() {
        if *st == "5" && (i == 0 || steps[i - 1].0 != "5") {
            let answered = steps[i..].iter().find(|(st, _)| *st != "5").map(|(_, at)| *at);
            requests.push((at, answered));
        }
    }
    let end = match (ended, requests.len()) {
        (Some(e), _) => e,
        (None, 0) => last,
        (None, 1) => requests[0].0,
        (None, _) => return false,
    };
    let Some(end_at) = parse_national(end) else { return false };
    let mut waited = 0i64;
    for (asked, answered) in &requests {
        if *asked < end {
            let until = answered.filter(|a| *a < end).unwrap_or(end);
            if let (Some(a), Some(b)) = (parse_national(asked), parse_national(until)) {
                waited += b.duration_since(a).as_secs();
            }
        }
    }
    let counted = end_at.checked_sub(jiff::SignedDuration::from_secs(waited)).unwrap_or(end_at);
    let received = parse_national(s(d, "NgayTiepNhan")).or_else(|| parse_national(s(d, "NgayNopHoSo")));
    match parse_national(s(d, "NgayHenTra")) {
        Some(due) => counted <= due,
        None => match received.and_then(|r| catalogue_deadline(s(d, "MaTTHC"), r)) {
            Some(deadline) => counted <= deadline,
            None => true,
        },
    }
}

fn tally(h: &Held, first: &str, last: &str) -> Tally {
    let d = h.dossier;
    let received = Some(s(d, "NgayTiepNhan")).filter(|r| !r.is_empty()).unwrap_or(s(d, "NgayNopHoSo"));
    let in_period = !received.is_empty() && first <= received && received <= last;
    let mut t: Tally = [(0, 0); 7];
    let mut count = |i: usize, population: bool, yes: bool| {
        if population {
            t[i].1 += 1;
            if yes {
                t[i].0 += 1;
            }
        }
    };
    count(0, in_period, true);
    let until_end: Vec<&Map<String, Value>> =
        h.history.iter().filter(|e| s(e, "ThoiDiemXuLy") <= last).collect();
    let first_in = |codes: &[&str]| {
        until_end.iter().find(|e| codes.contains(&s(e, "TrangThai"))).map(|e| s(e, "ThoiDiemXuLy"))
    };
    let ended = first_in(&["9"]).or_else(|| first_in(&["10"])).or_else(|| first_in(&["3", "8", "7"]));
    let active = !received.is_empty() && received <= last && (in_period || ended.is_none_or(|e| e >= first));
    count(1, active, active && on_time(d, h.history, last));
    // A result document listed without a link to it: not wholly online (3.3).
    let link = items(d, "DanhSachGiayToKetQua").any(|r| !s(r, "DuongDanTepTinKetQua").is_empty());
    let unlinked = !link && items(d, "DanhSachGiayToKetQua").next().is_some();
    count(2, in_period, s(d, "KenhThucHien") == "2" && !unlinked);
    let charged = items(d, "DanhSachLePhi").any(|f| s(f, "Gia").bytes().any(|b| (b'1'..=b'9').contains(&b)));
    count(3, in_period && charged, matches!(s(d, "DuocThanhToanTrucTuyen"), "1" | "2"));
    let finished_at = first_in(&["9"]).or_else(|| first_in(&["10"]));
    count(4, finished_at.is_some_and(|f| first <= f && f <= last), link);
    let attached = items(d, "TaiLieuNop").any(|t| !s(t, "DuongDanTaiTepTin").is_empty());
    count(5, in_period, attached && link);
    let digitised =
        s(d, "HoSoCoThanhPhanSoHoa") == "1" || items(d, "TaiLieuNop").any(|t| s(t, "DuocSoHoa") == "1");
    count(6, in_period, digitised);
    t
}

fn figures(t: &Tally) -> Value {
    let mut out = Map::new();
    for (i, id) in IDS.iter().enumerate() {
        let (n, d) = t[i];
        let ratio = if d == 0 { json!("N/A") } else { json!((n as f64 / d as f64 * 100.0).round() / 100.0) };
        let mut f = json!({"numerator": n, "denominator": d, "ratio": ratio});
        let full = match *id {
            "3.3" => Some(0.5),
            "4.2" | "4.3" => Some(0.8),
            _ => None,
        };
        if let Some(full) = full {
            f["points_share"] = if d == 0 {
                json!("N/A")
            } else {
                json!(((n as f64 / d as f64 / full).min(1.0) * 100.0).round() / 100.0)
            };
        }
        out.insert((*id).to_owned(), f);
    }
    Value::Object(out)
}

/// The report over `held`, for the period of whole days `from` to `to` (`YYYY-MM-DD`), for
/// the unit `madonvi` and per DonViXuLy.
pub fn report<'a>(held: impl Iterator<Item = Held<'a>>, from: &str, to: &str, madonvi: &str) -> Value {
    let first = format!("{}000000", from.replace('-', ""));
    let last = format!("{}235959", to.replace('-', ""));
    let mut total: Tally = [(0, 0); 7];
    let mut by_agency: BTreeMap<String, Tally> = BTreeMap::new();
    for h in held {
        let t = tally(&h, &first, &last);
        if t.iter().all(|(_, d)| *d == 0) {
            continue;
        }
        let agency = by_agency.entry(s(h.dossier, "DonViXuLy").to_owned()).or_insert([(0, 0); 7]);
        for i in 0..7 {
            total[i].0 += t[i].0;
            total[i].1 += t[i].1;
            agency[i].0 += t[i].0;
            agency[i].1 += t[i].1;
        }
    }
    let agencies: Map<String, Value> = by_agency.iter().map(|(k, t)| (k.clone(), figures(t))).collect();
    json!({
        "from": from,
        "to": to,
        "province": figures(&total),
        "by_unit": {madonvi: figures(&total)},
        "by_agency": agencies,
    })
}
