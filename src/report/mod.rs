//! `dvc-sync report`: the Quyết định 766 indicators that synchronized data decides
//! (the national API, "The fields the 766 indicators read"), computed from the local
//! database for a period, for the province, per DonViXuLy and per procedure; the dossiers that
//! count late under 2.1 with the reason; and findings that skew the figures without being
//! late. It only reads (a read-only connection), with the daemon running or stopped.
//!
//! The national mock computes the same figures from what it holds (`mock::report`), written
//! apart from this module so that each checks the other (tests/report.rs).

use std::collections::BTreeMap;

use jiff::{SignedDuration, civil::Date, civil::DateTime};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{
    dates::parse_national,
    scoring::{MaxDuration, is_nonzero_amount},
};
use crate::i18n::{Lang, Message};
use crate::sync::catalogue::stored_duration;

pub mod lateness;
pub(crate) mod render;

use lateness::{AckTimes, Cause, Context, ReceiptLate};
pub(crate) use render::{render_csv, render_table};

/// A period of whole days, Vietnam local time, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Date,
    pub to: Date,
}

impl Period {
    pub fn new(from: Date, to: Date) -> Result<Period, String> {
        if to < from {
            return Err(format!("the period ends ({to}) before it starts ({from})"));
        }
        Ok(Period { from, to })
    }

    /// A month, `2026-11`.
    pub fn month(s: &str) -> Result<Period, String> {
        let bad = || format!("--month {s:?} is not a month like 2026-11 (YYYY-MM)");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        // Four digits and two: `26-11` is not the year 26.
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        let from = Date::new(y, m, 1).map_err(|_| bad())?;
        Ok(Period { from, to: from.last_of_month() })
    }

    fn start(&self) -> DateTime {
        self.from.to_datetime(jiff::civil::Time::midnight())
    }

    /// The last second of the period's last day: the end of a dossier still open.
    fn end(&self) -> DateTime {
        self.to.at(23, 59, 59, 0)
    }

    fn contains(&self, at: DateTime) -> bool {
        self.start() <= at && at <= self.end()
    }
}

/// One dossier as the indicators read it.
#[derive(Debug, Clone)]
pub struct Facts {
    pub mahoso: String,
    pub agency: String,
    pub procedure: String,
    /// NgayTiepNhan, else NgayNopHoSo: what puts the dossier in a period.
    pub received: Option<DateTime>,
    /// NgayNopHoSo and NgayTiepNhan themselves, for the receipt rule.
    pub submitted: Option<DateTime>,
    pub intake: Option<DateTime>,
    /// KenhThucHien 2, whatever 3.3 makes of it.
    pub channel_online: bool,
    /// When the national portal first acknowledged its steps (None: not known, as for a
    /// dossier read from the national side).
    pub acks: Option<AckTimes>,
    pub due: Option<DateTime>,
    pub status: u8,
    pub online: bool,
    pub paid_online: bool,
    pub charged: bool,
    pub attachment: bool,
    pub digitised: bool,
    pub result_link: bool,
    /// (TrangThai, ThoiDiemXuLy) of each history entry, in the order they were sent.
    pub history: Vec<(u8, DateTime)>,
    /// The national portal has acknowledged it.
    pub synchronized: bool,
    pub duration: Option<MaxDuration>,
}

impl Facts {
    /// The facts of a national dossier and its history (the payload dvc-sync sends).
    pub fn of_national(dossier: &Map<String, Value>, history: &[Value]) -> Facts {
        let text = |k: &str| dossier.get(k).and_then(Value::as_str).unwrap_or("");
        let date = |k: &str| parse_national(text(k));
        let list = |k: &str| dossier.get(k).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let item_has = |item: &Value, k: &str, want: Option<&str>| {
            let v = item.get(k).and_then(Value::as_str).unwrap_or("");
            want.map_or(!v.is_empty(), |w| v == w)
        };
        let result_link =
            list("DanhSachGiayToKetQua").iter().any(|r| item_has(r, "DuongDanTepTinKetQua", None));
        Facts {
            mahoso: text("MaHoSo").to_owned(),
            agency: text("DonViXuLy").to_owned(),
            procedure: text("MaTTHC").to_owned(),
            received: date("NgayTiepNhan").or_else(|| date("NgayNopHoSo")),
            submitted: date("NgayNopHoSo"),
            intake: date("NgayTiepNhan"),
            channel_online: text("KenhThucHien") == "2",
            acks: None,
            due: date("NgayHenTra"),
            status: text("TrangThaiHoSo").parse().unwrap_or(0),
            // 3.3: a dossier whose result is a document it lists counts online only with a
            // link to that result.
            online: text("KenhThucHien") == "2" && (list("DanhSachGiayToKetQua").is_empty() || result_link),
            paid_online: matches!(text("DuocThanhToanTrucTuyen"), "1" | "2"),
            charged: list("DanhSachLePhi")
                .iter()
                .any(|f| is_nonzero_amount(f.get("Gia").and_then(Value::as_str).unwrap_or(""))),
            attachment: list("TaiLieuNop").iter().any(|d| item_has(d, "DuongDanTaiTepTin", None)),
            digitised: text("HoSoCoThanhPhanSoHoa") == "1"
                || list("TaiLieuNop").iter().any(|d| item_has(d, "DuocSoHoa", Some("1"))),
            result_link,
            history: history
                .iter()
                .filter_map(|e| {
                    let status = e.get("TrangThai")?.as_str()?.parse().ok()?;
                    Some((status, parse_national(e.get("ThoiDiemXuLy")?.as_str()?)?))
                })
                .collect(),
            synchronized: false,
            duration: None,
        }
    }
}

/// How 2.1 judged one dossier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub on_time: bool,
    /// Why, in words an operator acts on.
    pub reason: String,
    /// The end of processing used, supplement time subtracted (`yyyyMMddHHmmss`).
    pub counted_end: Option<String>,
    /// The latest on-time end: NgayHenTra, or the procedure's duration from intake.
    pub deadline: Option<String>,
    pub supplement_requests: usize,
    pub supplement_seconds: i64,
    /// The reason's parts, to write it in the reader's language.
    #[serde(skip)]
    why: Why,
    /// The step that ended processing as counted (status, at the source), and the deadline.
    #[serde(skip)]
    end: Option<(u8, DateTime)>,
    #[serde(skip)]
    deadline_at: Option<DateTime>,
}

/// A judgement's reason, in parts: "late: ended in status 9 at ..., 2.0 days of supplement
/// time subtracted, against NgayHenTra ...".
#[derive(Debug, Clone, PartialEq)]
struct Why {
    /// None: the reason is `how` alone (no end and more than one supplement request).
    on_time: Option<bool>,
    how: Message,
    supplement: Option<SignedDuration>,
    against: Option<Message>,
}

impl Judgement {
    /// The reason in `lang` (the `reason` field is the English one).
    pub fn reason_in(&self, lang: Lang) -> String {
        let w = &self.why;
        let Some(on_time) = w.on_time else { return w.how.write(lang) };
        let minus = w
            .supplement
            .map_or(String::new(), |d| crate::tr!(lang, "judgement-supplement", time = human(d, lang)));
        crate::tr!(
            lang,
            "judgement",
            verdict = lang.t(if on_time { "verdict-on-time" } else { "verdict-late" }),
            how = w.how.write(lang),
            minus = minus,
            against = w.against.as_ref().map_or(String::new(), |a| a.write(lang))
        )
    }
}

fn national(dt: DateTime) -> String {
    crate::domain::dates::format_national(dt)
}

/// The end of processing: the first 9, else the first 10, else the first 3/8/7.
fn true_end(history: &[(u8, DateTime)]) -> Option<(u8, DateTime)> {
    [&[9u8][..], &[10], &[3, 8, 7]]
        .iter()
        .find_map(|codes| history.iter().find(|(s, _)| codes.contains(s)).copied())
}

/// The supplement requests: each run of 5 entries, from its first entry to the next entry
/// that is not 5 (`None`: never answered).
fn supplements(history: &[(u8, DateTime)]) -> Vec<(DateTime, Option<DateTime>)> {
    let mut runs = Vec::new();
    let mut open: Option<DateTime> = None;
    for (status, at) in history {
        match (*status == 5, open) {
            (true, None) => open = Some(*at),
            (false, Some(start)) => {
                runs.push((start, Some(*at)));
                open = None;
            }
            _ => {}
        }
    }
    runs.extend(open.map(|start| (start, None)));
    runs
}

/// The history entries up to the period's end: all that a period's figures read.
fn until_end(f: &Facts, period: &Period) -> Vec<(u8, DateTime)> {
    f.history.iter().copied().filter(|(_, at)| *at <= period.end()).collect()
}

/// The time of the first entry in 9, else in 10: when the dossier was finished.
fn finished_at(history: &[(u8, DateTime)]) -> Option<DateTime> {
    [9u8, 10].iter().find_map(|c| history.iter().find(|(s, _)| s == c)).map(|(_, at)| *at)
}

/// Indicator 2.1 for one dossier, as of the period's end (entries after it are not read).
#[cfg(test)]
pub(crate) fn judge(f: &Facts, period: &Period) -> Judgement {
    judge_within(f, &until_end(f, period), period, &Context::now(Default::default()))
}

/// [`judge`] over the entries up to the period's end, already picked.
fn judge_within(f: &Facts, history: &[(u8, DateTime)], period: &Period, ctx: &Context) -> Judgement {
    let horizon = period.end();
    let runs = supplements(history);
    // The step that ended processing, if one did, and the end counted (an open dossier's is
    // the period's end; none with two supplement requests and no end).
    let (end, end_at, how) = match true_end(history) {
        Some((status, at)) => (
            Some((status, at)),
            Some(at),
            Message::new("end-status").int("status", status).text("at", national(at)),
        ),
        None if runs.len() == 1 => {
            (Some((5, runs[0].0)), Some(runs[0].0), Message::new("end-one-supplement"))
        }
        None if runs.len() > 1 => (None, None, Message::new("end-many-supplements").int("n", runs.len())),
        None => (None, Some(horizon), Message::new("end-open")),
    };
    let Some(end_at) = end_at else {
        let why = Why { on_time: None, how, supplement: None, against: None };
        return Judgement {
            on_time: false,
            reason: String::new(),
            counted_end: None,
            deadline: None,
            supplement_requests: runs.len(),
            supplement_seconds: 0,
            why,
            end: None,
            deadline_at: None,
        }
        .with_english_reason();
    };
    let supplement: SignedDuration = runs
        .iter()
        .filter(|(start, _)| *start < end_at)
        .map(|(start, answered)| answered.map_or(end_at, |a| a.min(end_at)).duration_since(*start))
        .sum();
    let counted = end_at.checked_sub(supplement).unwrap_or(end_at);
    let calendar = &ctx.calendar.calendar;
    let deadline = f.due.or_else(|| f.duration.and_then(|d| d.deadline(f.received?, calendar)));
    let (on_time, against) = match (deadline, f.due.is_some()) {
        (Some(d), true) => (counted <= d, Some(Message::new("against-due").text("at", national(d)))),
        (Some(d), false) => (counted <= d, Some(Message::new("against-duration").text("at", national(d)))),
        (None, _) => (true, Some(Message::new("against-nothing"))),
    };
    let why = Why {
        on_time: Some(on_time),
        how,
        supplement: (!supplement.is_zero()).then_some(supplement),
        against,
    };
    Judgement {
        on_time,
        reason: String::new(),
        counted_end: Some(national(counted)),
        deadline: deadline.map(national),
        supplement_requests: runs.len(),
        supplement_seconds: supplement.as_secs(),
        why,
        end,
        deadline_at: deadline,
    }
    .with_english_reason()
}

impl Judgement {
    fn with_english_reason(mut self) -> Judgement {
        self.reason = self.reason_in(Lang::En);
        self
    }
}

fn human(d: SignedDuration, lang: Lang) -> String {
    let s = d.as_secs() as f64;
    if s >= 86_400.0 {
        Message::new("duration-days").dec("n", s / 86_400.0).write(lang)
    } else {
        Message::new("duration-hours").dec("n", s / 3_600.0).write(lang)
    }
}

/// One indicator's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Figure {
    pub numerator: u64,
    pub denominator: u64,
    /// Rounded to 2 decimals; `"N/A"` when the denominator is 0.
    pub ratio: Ratio,
    /// The share of the indicator's maximum points it earns, where the spec gives the rule
    /// (3.3: full at 50 %; 4.2 and 4.3: full at 80 %).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_share: Option<Ratio>,
}

/// A ratio rounded to 2 decimals, or N/A.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Ratio(pub Option<f64>);

impl Serialize for Ratio {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(r) => s.serialize_f64(r),
            None => s.serialize_str("N/A"),
        }
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => write!(f, "{r:.2}"),
            None => f.write_str("N/A"),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The indicators, in the spec's order, with their names.
pub(crate) const INDICATORS: [(&str, &str); 7] = [
    ("1.4", "dossiers synchronized"),
    ("2.1", "processed early or on time"),
    ("3.3", "submitted online"),
    ("3.6", "paid online"),
    ("4.1", "electronic results"),
    ("4.2", "digitised"),
    ("4.3", "reused digitised data"),
];

/// Where an indicator earns its full points, for those the spec gives.
fn full_points_at(id: &str) -> Option<f64> {
    match id {
        "3.3" => Some(0.5),
        "4.2" | "4.3" => Some(0.8),
        _ => None,
    }
}

/// The seven figures of one scope (the province, one agency, one procedure).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures(pub [(u64, u64); 7]);

impl Figures {
    fn count(&mut self, i: usize, counted: bool, hit: bool) {
        if counted {
            self.0[i].1 += 1;
            self.0[i].0 += u64::from(hit);
        }
    }

    fn add(&mut self, other: &Figures) {
        for (acc, add) in self.0.iter_mut().zip(&other.0) {
            acc.0 += add.0;
            acc.1 += add.1;
        }
    }

    pub(crate) fn by_id(&self) -> BTreeMap<&'static str, Figure> {
        INDICATORS
            .iter()
            .zip(self.0)
            .map(|((id, _), (n, d))| {
                let ratio = (d > 0).then(|| n as f64 / d as f64);
                let points_share =
                    full_points_at(id).map(|full| Ratio(ratio.map(|r| round2((r / full).min(1.0)))));
                (*id, Figure { numerator: n, denominator: d, ratio: Ratio(ratio.map(round2)), points_share })
            })
            .collect()
    }
}

impl Serialize for Figures {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_id().serialize(s)
    }
}

/// A dossier that counts late under 2.1.
#[derive(Debug, Clone, Serialize)]
pub struct Late {
    pub mahoso: String,
    pub agency: String,
    pub procedure: String,
    #[serde(flatten)]
    pub judgement: Judgement,
    /// Late at the source (2.1 counts it late) or by synchronisation (on time at the source,
    /// its end acknowledged by the national portal after the deadline).
    pub cause: Cause,
    /// Minutes between the end at the source and its national acknowledgement (or now, still
    /// pending); absent when the acknowledgement's time is not known.
    pub sync_minutes: Option<i64>,
}

/// Something that skews a figure without being late: listed, never altered.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub mahoso: String,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub province: Figures,
    pub by_agency: BTreeMap<String, Figures>,
    pub by_procedure: BTreeMap<String, Figures>,
    /// The dossiers that count late under 2.1 (empty when computed for the metrics).
    pub late: Vec<Late>,
    /// How many count late under 2.1.
    pub late_total: u64,
    /// The late dossiers by cause: `source` (= late_total) and `sync` (on time at the source,
    /// late at the national portal because its end arrived after the deadline).
    pub late_by_cause: BTreeMap<&'static str, u64>,
    /// Dossiers submitted online of the period received later than the receipt rule allows
    /// (8 working hours), with the cause, and how many by cause.
    pub receipt_late: Vec<ReceiptLate>,
    pub receipt_late_by_cause: BTreeMap<&'static str, u64>,
    /// The findings (empty when computed for the metrics), and how many of each kind.
    pub findings: Vec<Finding>,
    pub findings_by_kind: BTreeMap<&'static str, u64>,
    /// Records the daemon quarantined (never sent, in no figure).
    pub quarantined: u64,
    /// Dossiers the national portal refused for good (parked as dead): never held there, in
    /// no figure but 1.4's denominator.
    pub refused: u64,
}

/// Computes the report over `dossiers` (`refused`: parked as refused, counted only in 1.4).
pub fn compute(dossiers: &[(Facts, bool)], period: &Period, ctx: &Context) -> Report {
    let mut tally = Tally::new(*period, true, ctx.clone());
    for (f, refused) in dossiers {
        tally.add(f, *refused);
    }
    tally.finish()
}

/// A report being computed, one dossier at a time (a big database is never held whole).
pub(crate) struct Tally {
    period: Period,
    /// Keep the late dossiers and the findings themselves, not only their counts.
    detail: bool,
    ctx: Context,
    report: Report,
}

impl Tally {
    pub fn new(period: Period, detail: bool, ctx: Context) -> Tally {
        let causes = || Cause::ALL.iter().map(|c| (c.name(), 0)).collect::<BTreeMap<_, _>>();
        let report = Report {
            from: period.from.to_string(),
            to: period.to.to_string(),
            province: Figures::default(),
            by_agency: BTreeMap::new(),
            by_procedure: BTreeMap::new(),
            late: Vec::new(),
            late_total: 0,
            late_by_cause: causes(),
            receipt_late: Vec::new(),
            receipt_late_by_cause: causes(),
            findings: Vec::new(),
            findings_by_kind: FINDING_KINDS.iter().map(|k| (*k, 0)).collect(),
            quarantined: 0,
            refused: 0,
        };
        Tally { period, detail, ctx, report }
    }

    pub fn add(&mut self, f: &Facts, refused: bool) {
        let (period, report, ctx) = (&self.period, &mut self.report, &self.ctx);
        let received_in = f.received.is_some_and(|r| period.contains(r));
        let mut mine = Figures::default();
        mine.count(0, received_in, f.synchronized);
        if refused {
            report.refused += u64::from(received_in);
        } else {
            let horizon = until_end(f, period);
            let ended = true_end(&horizon);
            let in_21 = f.received.is_some_and(|r| r <= period.end())
                && (received_in || ended.is_none_or(|(_, at)| at >= period.start()));
            if in_21 {
                let j = judge_within(f, &horizon, period, ctx);
                mine.count(1, true, j.on_time);
                report.late_total += u64::from(!j.on_time);
                if let Some((cause, sync_minutes)) = processing_cause(f, &j, ctx) {
                    *report.late_by_cause.entry(cause.name()).or_default() += 1;
                    if self.detail {
                        let (mahoso, agency, procedure) =
                            (f.mahoso.clone(), f.agency.clone(), f.procedure.clone());
                        report.late.push(Late {
                            mahoso,
                            agency,
                            procedure,
                            judgement: j,
                            cause,
                            sync_minutes,
                        });
                    }
                }
                for finding in findings_of(f, &horizon, period) {
                    *report.findings_by_kind.entry(finding.kind).or_default() += 1;
                    if self.detail {
                        report.findings.push(finding);
                    }
                }
            }
            if received_in {
                receipt_late(f, ctx, self.detail, report);
            }
            mine.count(2, received_in, f.online);
            mine.count(3, received_in && f.charged, f.paid_online);
            let finished = finished_at(&horizon).is_some_and(|at| period.contains(at));
            mine.count(4, finished, f.result_link);
            mine.count(5, received_in, f.attachment && f.result_link);
            mine.count(6, received_in, f.digitised);
        }
        if mine.0.iter().all(|(_, d)| *d == 0) {
            return;
        }
        report.province.add(&mine);
        match report.by_agency.get_mut(&f.agency) {
            Some(a) => a.add(&mine),
            None => {
                report.by_agency.insert(f.agency.clone(), mine.clone());
            }
        }
        match report.by_procedure.get_mut(&f.procedure) {
            Some(p) => p.add(&mine),
            None => {
                report.by_procedure.insert(f.procedure.clone(), mine);
            }
        }
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// Why a dossier judged by 2.1 is late, if it is: at the source (2.1 says late), or by sync
/// (on time at the source, its end acknowledged after the deadline); with the minutes sync added.
fn processing_cause(f: &Facts, j: &Judgement, ctx: &Context) -> Option<(Cause, Option<i64>)> {
    let delay = match (j.end, j.deadline_at) {
        (Some((status, at)), Some(deadline)) => {
            // The end may reach the portal as late as the deadline plus the supplement time.
            let due =
                deadline.checked_add(SignedDuration::from_secs(j.supplement_seconds)).unwrap_or(deadline);
            lateness::sync_delay(f.acks.as_ref(), Some(status), at, due, ctx)
        }
        _ => None,
    };
    if !j.on_time {
        Some((Cause::Source, delay.map(|d| d.minutes)))
    } else {
        delay.filter(|d| d.late).map(|d| (Cause::Sync, Some(d.minutes)))
    }
}

/// The receipt rule for one dossier of the period, counted (and listed with `detail`).
fn receipt_late(f: &Facts, ctx: &Context, detail: bool, report: &mut Report) {
    let receipt = lateness::Receipt {
        online: f.channel_online,
        submitted: f.submitted,
        received: f.intake,
        status: f.status,
        acks: f.acks.as_ref(),
    };
    let Some((cause, due, sync_minutes)) = lateness::receipt(&receipt, ctx) else { return };
    *report.receipt_late_by_cause.entry(cause.name()).or_default() += 1;
    if detail {
        report.receipt_late.push(ReceiptLate {
            mahoso: f.mahoso.clone(),
            agency: f.agency.clone(),
            procedure: f.procedure.clone(),
            submitted: f.submitted.map(national).unwrap_or_default(),
            due: national(due),
            received: f.intake.map(national),
            cause,
            sync_minutes,
        });
    }
}

fn findings_of(f: &Facts, horizon: &[(u8, DateTime)], period: &Period) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |kind, detail: String| out.push(Finding { mahoso: f.mahoso.clone(), kind, detail });
    if matches!(f.status, 9 | 10)
        && finished_at(horizon).is_none()
        && f.history.iter().all(|(_, at)| *at <= period.end())
    {
        add(
            "finished_without_history",
            format!(
                "TrangThaiHoSo {} but no history entry in 9 or 10: 2.1 reads it as not finished",
                f.status
            ),
        );
    }
    if let Some((start, None)) = supplements(horizon).last()
        && true_end(horizon).is_none()
    {
        add(
            "supplement_unanswered",
            format!("supplement requested at {} and not answered by the period's end", national(*start)),
        );
    }
    if f.due.is_none() && f.duration.is_none() {
        add("no_deadline", "no NgayHenTra and no duration known for the procedure".into());
    }
    out
}

/// Computes the report for `period` from the database, reading one dossier at a time.
/// `conn` reads bodies (`store::read_bodies`, or the store's own connection).
pub(crate) fn from_database(
    conn: &Connection,
    period: &Period,
    detail: bool,
    ctx: &Context,
) -> rusqlite::Result<Report> {
    let mut reports = for_periods(conn, std::slice::from_ref(period), detail, ctx)?;
    Ok(reports.remove(0))
}

/// The reports of several periods in one pass over the database (the page's months).
pub(crate) fn for_periods(
    conn: &Connection,
    periods: &[Period],
    detail: bool,
    ctx: &Context,
) -> rusqlite::Result<Vec<Report>> {
    let mut durations: BTreeMap<String, MaxDuration> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT code, duration, duration_unit FROM procedure WHERE known = 1")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, stored_duration(r.get(1)?, r.get(2)?))))? {
        if let (code, Some(d)) = row? {
            durations.insert(code, d);
        }
    }
    let mut ctx = ctx.clone();
    ctx.judged_since = crate::store::meta_get(conn, "ack_times_since")?
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
        .map(crate::domain::dates::to_vn_local);
    let mut tallies: Vec<Tally> = periods.iter().map(|p| Tally::new(*p, detail, ctx.clone())).collect();
    let mut stmt = conn.prepare(
        "SELECT body_text(b.payload), body_text(b.history), d.national_exists,
                d.national_exists = 0
                    AND EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = d.mahoso AND x.kind = 'refused'),
                d.received_acked_at, d.status_acked, d.ack_times_known
           FROM dossier d JOIN body b ON b.mahoso = d.mahoso",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let payload = r.get_ref(0)?.as_str().unwrap_or("");
        let Ok(Value::Object(dossier)) = serde_json::from_str::<Value>(payload) else { continue };
        let history: Vec<Value> =
            serde_json::from_str(r.get_ref(1)?.as_str().unwrap_or("[]")).unwrap_or_default();
        let mut f = Facts::of_national(&dossier, &history);
        f.synchronized = r.get(2)?;
        f.duration = durations.get(&f.procedure).copied();
        f.acks = Some(ack_times(r.get(4)?, r.get(5)?, r.get(6)?));
        for tally in &mut tallies {
            tally.add(&f, r.get(3)?);
        }
    }
    let quarantined = conn
        .query_row("SELECT n FROM counts WHERE name = 'quarantine'", [], |r| r.get::<_, i64>(0))?
        .max(0) as u64;
    Ok(tallies
        .into_iter()
        .map(|t| {
            let mut report = t.finish();
            report.quarantined = quarantined;
            report
        })
        .collect())
}

/// The stored acknowledgement times (microseconds UTC) as Vietnam local times.
fn ack_times(received: Option<i64>, statuses: Option<String>, known: bool) -> AckTimes {
    let local =
        |micros: i64| jiff::Timestamp::from_microsecond(micros).ok().map(crate::domain::dates::to_vn_local);
    let statuses: BTreeMap<String, i64> =
        statuses.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    AckTimes {
        incomplete: !known,
        received: received.and_then(local),
        statuses: statuses.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, local(v)?))).collect(),
    }
}

/// The kinds of finding, for the metrics' bounded label.
pub(crate) const FINDING_KINDS: [&str; 3] =
    ["finished_without_history", "supplement_unanswered", "no_deadline"];

/// The current month's report (Vietnam local time), from the database at `path`.
pub(crate) fn current_month(
    path: &std::path::Path,
    keys: &crate::store::Keys,
    calendar: &crate::config::CalendarConfig,
) -> Result<Report, String> {
    let today = crate::domain::dates::to_vn_local(jiff::Timestamp::now()).date();
    let period = Period::new(today.first_of_month(), today.last_of_month())?;
    let conn = crate::store::open_read_only(path).map_err(|e| e.to_string())?;
    crate::store::read_bodies(&conn, keys).map_err(|e| e.to_string())?;
    from_database(&conn, &period, false, &Context::now(calendar.clone())).map_err(|e| e.to_string())
}

/// Sets the indicator gauges from `report` (labels: the indicator id, the finding kind).
pub(crate) fn publish(report: &Report) {
    use crate::metrics as m;
    for (id, f) in report.province.by_id() {
        metrics::gauge!(m::INDICATOR_RATIO, "indicator" => id).set(f.ratio.0.unwrap_or(f64::NAN));
        metrics::gauge!(m::INDICATOR_NUMERATOR, "indicator" => id).set(f.numerator as f64);
        metrics::gauge!(m::INDICATOR_DENOMINATOR, "indicator" => id).set(f.denominator as f64);
    }
    metrics::gauge!(m::INDICATOR_LATE).set(report.late_total as f64);
    for (kind, n) in &report.findings_by_kind {
        metrics::gauge!(m::INDICATOR_FINDINGS, "kind" => *kind).set(*n as f64);
    }
    for (kind, by_cause) in
        [("processing", &report.late_by_cause), ("receipt", &report.receipt_late_by_cause)]
    {
        for cause in Cause::ALL {
            let n = by_cause.get(cause.name()).copied().unwrap_or(0);
            metrics::gauge!(m::LATE_BY_CAUSE, "kind" => kind, "cause" => cause.name()).set(n as f64);
        }
    }
    metrics::gauge!(m::INDICATOR_COMPUTED).set(jiff::Timestamp::now().as_second() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scoring::DurationUnit;
    use serde_json::json;

    fn at(s: &str) -> DateTime {
        parse_national(s).unwrap()
    }

    /// A dossier of the Sở Tư pháp received 2026-11-02 08:00, due 2026-11-06 17:00, with
    /// these (status, time) entries.
    fn dossier(entries: &[(u8, &str)]) -> Facts {
        let history: Vec<Value> =
            entries.iter().map(|(s, t)| json!({"TrangThai": s.to_string(), "ThoiDiemXuLy": t})).collect();
        let d = json!({"MaHoSo": "000.00.15.H58-261102-0001", "MaTTHC": "1.000894", "DonViXuLy": "Sở Tư pháp",
                       "NgayTiepNhan": "20261102080000", "NgayHenTra": "20261106170000", "KenhThucHien": "2",
                       "TrangThaiHoSo": entries.last().map_or("2".into(), |e| e.0.to_string())});
        Facts::of_national(d.as_object().unwrap(), &history)
    }

    /// Judged on 1 December 2026 at 08:00, the official calendar.
    fn december_first() -> Context {
        Context { now: at("20261201080000"), calendar: Default::default(), judged_since: None }
    }

    fn acked(steps: &[(u8, &str)]) -> Option<AckTimes> {
        Some(AckTimes {
            incomplete: false,
            received: Some(at("20261102080100")),
            statuses: steps.iter().map(|(s, t)| (*s, at(t))).collect(),
        })
    }

    /// Finished at the source on 5 November 16:00, due 6 November 17:00 (on time there).
    fn finished_in_time() -> Facts {
        dossier(&[(2, "20261102080000"), (4, "20261103090000"), (9, "20261105160000")])
    }

    /// Each late dossier's (cause, sync minutes), and the count by cause.
    type Causes = (Vec<(Cause, Option<i64>)>, BTreeMap<&'static str, u64>);

    fn causes(f: Facts) -> Causes {
        let r = compute(&[(f, false)], &november(), &december_first());
        (r.late.iter().map(|l| (l.cause, l.sync_minutes)).collect(), r.late_by_cause)
    }

    #[test]
    fn a_dossier_in_time_at_the_source_and_acknowledged_in_time_is_not_late() {
        let mut f = finished_in_time();
        f.acks = acked(&[(2, "20261102080100"), (9, "20261105160500")]);
        assert_eq!(causes(f).0, vec![]);
    }

    #[test]
    fn a_dossier_in_time_at_the_source_acknowledged_after_its_deadline_is_late_by_sync() {
        let mut f = finished_in_time();
        // The end reached the portal on 7 November 09:00, after the deadline: 2,460 minutes.
        f.acks = acked(&[(2, "20261102080100"), (9, "20261107090000")]);
        let (late, by_cause) = causes(f.clone());
        assert_eq!(late, vec![(Cause::Sync, Some(2_460))]);
        assert_eq!(by_cause["sync"], 1);
        // 2.1's own figure is the source's: on time.
        let r = compute(&[(f.clone(), false)], &november(), &december_first());
        assert_eq!((r.late_total, r.province.by_id()["2.1"].numerator), (0, 1));
        // Still not acknowledged on 1 December: late by sync as well.
        f.acks = acked(&[(2, "20261102080100")]);
        assert_eq!(causes(f).0, vec![(Cause::Sync, Some(36_960))]);
    }

    #[test]
    fn a_dossier_late_at_the_source_is_the_sources_with_the_minutes_sync_added() {
        let mut f = dossier(&[(2, "20261102080000"), (9, "20261109100000")]);
        f.acks = acked(&[(2, "20261102080100"), (9, "20261109103000")]);
        assert_eq!(causes(f).0, vec![(Cause::Source, Some(30))]);
    }

    #[test]
    fn without_acknowledgement_times_only_the_source_is_judged() {
        // Read from the national side (no times), or acknowledged before times were kept.
        assert_eq!(causes(finished_in_time()).0, vec![]);
        let mut f = finished_in_time();
        f.acks = Some(AckTimes { incomplete: true, ..AckTimes::default() });
        assert_eq!(causes(f).0, vec![]);
        let late = dossier(&[(2, "20261102080000"), (9, "20261109100000")]);
        assert_eq!(causes(late).0, vec![(Cause::Source, None)]);
    }

    #[test]
    fn supplement_time_moves_the_portals_due_time_too() {
        // Supplement from 3 Nov 09:00 to 4 Nov 09:00 (a day): the end may arrive by 7 Nov 17:00.
        let mut f = dossier(&[
            (2, "20261102080000"),
            (5, "20261103090000"),
            (4, "20261104090000"),
            (9, "20261107100000"),
        ]);
        f.acks = acked(&[(2, "20261102080100"), (9, "20261107165900")]);
        assert_eq!(causes(f.clone()).0, vec![]);
        f.acks = acked(&[(2, "20261102080100"), (9, "20261107170100")]);
        assert_eq!(causes(f).0.first().map(|c| c.0), Some(Cause::Sync));
    }

    #[test]
    fn receipt_within_eight_working_hours_is_listed_by_cause() {
        // Submitted online Friday 30 October 16:30; due Monday 2 November 16:30.
        let mut late = dossier(&[(2, "20261103080000")]);
        late.submitted = Some(at("20261030163000"));
        late.intake = Some(at("20261103080000"));
        late.received = late.intake;
        late.acks = acked(&[]);
        let mut in_time = late.clone();
        in_time.intake = Some(at("20261102100000"));
        in_time.received = in_time.intake;
        let r = compute(&[(late, false), (in_time, false)], &november(), &december_first());
        let listed: Vec<(Cause, &str)> = r.receipt_late.iter().map(|l| (l.cause, l.due.as_str())).collect();
        assert_eq!(listed, vec![(Cause::Source, "20261102163000")]);
    }

    fn november() -> Period {
        Period::month("2026-11").unwrap()
    }

    #[test]
    fn the_end_of_processing_is_the_first_9_then_10_then_3_8_7() {
        // A 9 after a late 10 still decides: 9 comes first in the order, not in time.
        let f = dossier(&[(2, "20261102080000"), (10, "20261107090000"), (9, "20261105090000")]);
        let j = judge(&f, &november());
        assert!(j.on_time, "{j:?}");
        assert_eq!(j.counted_end.as_deref(), Some("20261105090000"));
        // No 9: the 10 decides.
        let j = judge(
            &dossier(&[(2, "20261102080000"), (8, "20261103090000"), (10, "20261107090000")]),
            &november(),
        );
        assert!(!j.on_time && j.reason.contains("status 10"), "{j:?}");
        // Only a stop: it is the end.
        let j = judge(&dossier(&[(2, "20261102080000"), (8, "20261103090000")]), &november());
        assert!(j.on_time && j.reason.contains("status 8"), "{j:?}");
    }

    #[test]
    fn one_supplement_request_is_subtracted_or_is_the_end() {
        // Finished 2026-11-08 (two days after the due date), after a supplement request that
        // took three days to answer: on time.
        let answered =
            [(2, "20261102080000"), (5, "20261103080000"), (4, "20261106080000"), (9, "20261108080000")];
        let j = judge(&dossier(&answered), &november());
        assert!(j.on_time, "{j:?}");
        assert_eq!((j.supplement_requests, j.supplement_seconds), (1, 3 * 86_400));
        assert_eq!(j.counted_end.as_deref(), Some("20261105080000"));
        // One request and no end yet: the request is the end.
        let j = judge(&dossier(&[(2, "20261102080000"), (5, "20261104080000")]), &november());
        assert!(j.on_time && j.counted_end.as_deref() == Some("20261104080000"), "{j:?}");
        let j = judge(
            &dossier(&[(2, "20261102080000"), (5, "20261107080000"), (4, "20261108080000")]),
            &november(),
        );
        assert!(!j.on_time, "the request came after the due date: {j:?}");
    }

    #[test]
    fn two_supplement_requests_without_an_end_are_late() {
        let f = dossier(&[
            (2, "20261102080000"),
            (5, "20261103080000"),
            (4, "20261103090000"),
            (5, "20261103100000"),
        ]);
        let j = judge(&f, &november());
        assert!(!j.on_time && j.counted_end.is_none() && j.supplement_requests == 2, "{j:?}");
        // With an end, both are subtracted (consecutive 5 entries are one request).
        let f = dossier(&[
            (2, "20261102080000"),
            (5, "20261103080000"),
            (5, "20261103120000"),
            (4, "20261104080000"),
            (5, "20261105080000"),
            (4, "20261106080000"),
            (9, "20261108080000"),
        ]);
        let j = judge(&f, &november());
        assert_eq!((j.supplement_requests, j.supplement_seconds), (2, 2 * 86_400));
        assert!(j.on_time, "{j:?}");
    }

    #[test]
    fn without_ngayhentra_the_procedures_duration_decides() {
        let mut f = dossier(&[(2, "20261102080000"), (9, "20261106090000")]);
        f.due = None;
        f.duration = Some(MaxDuration { amount: 5.0, unit: DurationUnit::Days });
        let j = judge(&f, &november());
        assert!(j.on_time && j.deadline.as_deref() == Some("20261107080000"), "{j:?}");
        // Five working days from Monday 2 November: Monday 9 November.
        f.history = vec![(2, at("20261102080000")), (9, at("20261109070000"))];
        assert!(!judge(&f, &november()).on_time);
        f.duration = Some(MaxDuration { amount: 5.0, unit: DurationUnit::WorkingDays });
        let j = judge(&f, &november());
        assert!(j.on_time && j.deadline.as_deref() == Some("20261109080000"), "{j:?}");
        // Neither: not judged late, and listed.
        f.duration = None;
        assert!(judge(&f, &november()).on_time);
        let r = compute(&[(f, false)], &november(), &december_first());
        assert_eq!(r.findings[0].kind, "no_deadline");
    }

    #[test]
    fn an_open_dossier_ends_with_the_period() {
        let f = dossier(&[(2, "20261102080000"), (4, "20261103080000")]);
        // Due 6 November: open at the end of November is late ...
        let j = judge(&f, &november());
        assert!(!j.on_time && j.counted_end.as_deref() == Some("20261130235959"), "{j:?}");
        // ... open at the end of a period that ends before the due date is within term.
        let early = Period::new(Date::new(2026, 11, 1).unwrap(), Date::new(2026, 11, 4).unwrap()).unwrap();
        assert!(judge(&f, &early).on_time);
        // What happened after the period is not read: finished 5 November, within term on the 4th.
        let f = dossier(&[(2, "20261102080000"), (9, "20261105080000")]);
        let j = judge(&f, &early);
        assert!(j.on_time && j.reason.contains("still open"), "{j:?}");
    }

    #[test]
    fn online_needs_a_link_to_a_result_document_it_lists() {
        let online = |results: Value| {
            let d = json!({"KenhThucHien": "2", "DanhSachGiayToKetQua": results});
            Facts::of_national(d.as_object().unwrap(), &[]).online
        };
        assert!(online(json!([{"DuongDanTepTinKetQua": "https://example.vn/kq"}])));
        assert!(online(Value::Null), "no result document listed (yet): submitted online is enough");
        assert!(online(json!([])));
        assert!(!online(json!([{"TenGiayTo": "Giấy phép", "DuongDanTepTinKetQua": ""}])), "a paper result");
        let d =
            json!({"KenhThucHien": "1", "DanhSachGiayToKetQua": [{"DuongDanTepTinKetQua": "https://x.vn"}]});
        assert!(!Facts::of_national(d.as_object().unwrap(), &[]).online);
    }

    #[test]
    fn figures_count_their_populations_and_a_zero_denominator_is_na() {
        let mut paid = dossier(&[(2, "20261102080000"), (9, "20261104080000")]);
        paid.charged = true;
        paid.paid_online = true;
        paid.result_link = true;
        paid.attachment = true;
        paid.synchronized = true;
        let mut unpaid = dossier(&[(2, "20261102080000")]);
        unpaid.charged = true;
        unpaid.online = false;
        // Received in October, finished in November: in 2.1 and 4.1 of November, not in 1.4.
        let mut carried = dossier(&[(2, "20261030080000"), (9, "20261102080000")]);
        carried.received = Some(at("20261030080000"));
        carried.due = Some(at("20261101080000"));
        // Received and finished in October: in no November figure.
        let mut old = dossier(&[(2, "20261001080000"), (10, "20261002080000")]);
        old.received = Some(at("20261001080000"));
        let r = compute(
            &[(paid, false), (unpaid, false), (carried, false), (old, false)],
            &november(),
            &december_first(),
        );
        let f = r.province.by_id();
        assert_eq!((f["1.4"].numerator, f["1.4"].denominator), (1, 2));
        assert_eq!((f["2.1"].numerator, f["2.1"].denominator), (1, 3), "{:?}", r.late);
        assert_eq!(r.late.len(), 2);
        assert_eq!((f["3.3"].numerator, f["3.3"].denominator), (1, 2));
        assert_eq!(f["3.3"].points_share, Some(Ratio(Some(1.0))), "50 % earns the maximum");
        assert_eq!((f["3.6"].numerator, f["3.6"].denominator), (1, 2));
        assert_eq!((f["4.1"].numerator, f["4.1"].denominator), (1, 2));
        assert_eq!((f["4.2"].numerator, f["4.2"].denominator), (1, 2));
        assert_eq!(f["4.2"].points_share, Some(Ratio(Some(0.63))), "50 % of 80 %");
        assert_eq!(f["2.1"].ratio, Ratio(Some(0.33)));
        let empty = compute(&[], &november(), &december_first()).province.by_id();
        assert_eq!(serde_json::to_value(&empty["2.1"]).unwrap()["ratio"], "N/A");
        assert_eq!(r.by_agency["Sở Tư pháp"], r.province);
    }

    #[test]
    fn findings_are_listed_not_altered() {
        let mut f = dossier(&[(2, "20261102080000"), (4, "20261103080000")]);
        f.status = 10;
        let mut waiting = dossier(&[(2, "20261102080000"), (5, "20261103080000")]);
        waiting.mahoso = "000.00.15.H58-261102-0002".into();
        let r = compute(&[(f, false), (waiting, false)], &november(), &december_first());
        let kinds: Vec<_> = r.findings.iter().map(|f| (f.mahoso.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("000.00.15.H58-261102-0001", "finished_without_history"),
                ("000.00.15.H58-261102-0002", "supplement_unanswered")
            ]
        );
        assert_eq!(r.province.by_id()["2.1"].denominator, 2, "still counted as they are");
    }

    #[test]
    fn months_and_periods_are_checked() {
        let p = Period::month("2026-02").unwrap();
        assert_eq!((p.from.to_string(), p.to.to_string()), ("2026-02-01".into(), "2026-02-28".into()));
        assert!(Period::month("2026-13").is_err() && Period::month("november").is_err());
        for not_yyyy_mm in ["26-11", "2026-1", "+2026-11", "2026-+1", " 2026-11"] {
            assert!(Period::month(not_yyyy_mm).is_err(), "{not_yyyy_mm}");
        }
        assert!(Period::new(p.to, p.from).is_err());
    }
}
