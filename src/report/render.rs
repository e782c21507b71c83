//! The report written for people (tables in their language, at most 100 columns wide) and for
//! spreadsheets (CSV, the same in every language).

use comfy_table::{ContentArrangement, Table, presets::ASCII_FULL_CONDENSED};

use super::{Figure, INDICATORS, Report, lateness::Cause};
use crate::{
    i18n::{Lang, wrap},
    tr,
};

/// The widest a table is drawn: a terminal of 100 columns.
pub(crate) const WIDTH: u16 = 100;

fn table(header: impl IntoIterator<Item = String>) -> Table {
    let mut t = Table::new();
    t.load_style(ASCII_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_width(WIDTH);
    t.set_header(header);
    t
}

/// An indicator's name in `lang` (`1.4` → "dossiers synchronized").
pub(crate) fn indicator_name(id: &str, lang: Lang) -> String {
    lang.t(&format!("indicator-{}", id.replace('.', "-")))
}

/// A cause's word in `lang`.
pub(crate) fn cause_name(c: Cause, lang: Lang) -> String {
    lang.t(&format!("cause-{}", c.name()))
}

/// The points an indicator earns, where the spec gives the rule.
fn points(f: &Figure, lang: Lang) -> String {
    match f.points_share {
        Some(p) => match p.0 {
            Some(p) => tr!(lang, "report-points", percent = lang.num(p * 100.0, 0)),
            None => lang.t("not-applicable"),
        },
        None => "-".into(),
    }
}

/// The report for people: the province's figures, then per agency and per procedure (the
/// share only; CSV and JSON carry the numerators), the late dossiers by cause, the findings,
/// and with `late` every late dossier with its reason and cause.
pub(crate) fn render_table(r: &Report, late: bool, lang: Lang) -> String {
    let mut out =
        format!("{}\n", wrap("", &tr!(lang, "report-title", from = r.from.as_str(), to = r.to.as_str())));
    let mut province = table(
        ["report-indicator", "report-name", "report-share", "report-fraction", "report-points-header"]
            .map(|h| lang.t(h)),
    );
    let by_id = r.province.by_id();
    for (id, _) in INDICATORS {
        let f = &by_id[id];
        province.add_row([
            id.to_owned(),
            indicator_name(id, lang),
            lang.percent(f.ratio.0),
            format!("{}/{}", f.numerator, f.denominator),
            points(f, lang),
        ]);
    }
    out.push_str(&format!("{province}\n{}\n", wrap("", &lang.t("report-points-note"))));
    let scopes = [
        ("report-per-agency", "DonViXuLy", &r.by_agency),
        ("report-per-procedure", "MaTTHC", &r.by_procedure),
    ];
    for (title, column, scopes) in scopes {
        let header =
            std::iter::once(column.to_owned()).chain(INDICATORS.iter().map(|(id, _)| (*id).to_owned()));
        let mut t = table(header);
        for (name, figures) in scopes {
            let by_id = figures.by_id();
            let cells = INDICATORS.iter().map(|(id, _)| match &by_id[id] {
                f if f.denominator > 0 => {
                    format!("{} %", lang.num(f.numerator as f64 * 100.0 / f.denominator as f64, 1))
                }
                _ => "-".into(),
            });
            t.add_row(std::iter::once(name.clone()).chain(cells));
        }
        out.push_str(&format!("\n{}\n{t}\n", lang.t(title)));
    }
    out.push_str(&format!("{}\n", wrap("", &lang.t("report-dash-note"))));
    late_summary(r, late, lang, &mut out);
    if late {
        late_lists(r, lang, &mut out);
    }
    if !r.findings.is_empty() {
        out.push_str(&format!("\n{}\n", wrap("", &tr!(lang, "report-findings", n = r.findings.len()))));
        for f in &r.findings {
            out.push_str(&format!("{}\n", wrap("  ", &format!("{}  {}: {}", f.mahoso, f.kind, f.detail))));
        }
    }
    if r.quarantined > 0 || r.refused > 0 {
        let text = tr!(lang, "report-not-counted", quarantined = r.quarantined, refused = r.refused);
        out.push_str(&format!("\n{}\n", wrap("", &text)));
    }
    out
}

fn late_summary(r: &Report, late: bool, lang: Lang, out: &mut String) {
    let n = |m: &std::collections::BTreeMap<&str, u64>, c: Cause| m.get(c.name()).copied().unwrap_or(0);
    out.push_str(&format!(
        "\n{}\n",
        wrap(
            "",
            &tr!(
                lang,
                "report-late-summary",
                total = r.late_total,
                source = n(&r.late_by_cause, Cause::Source),
                sync = n(&r.late_by_cause, Cause::Sync)
            )
        )
    ));
    out.push_str(&format!(
        "{}\n",
        wrap(
            "",
            &tr!(
                lang,
                "report-receipt-summary",
                source = n(&r.receipt_late_by_cause, Cause::Source),
                sync = n(&r.receipt_late_by_cause, Cause::Sync)
            )
        )
    ));
    let any = r.late_by_cause.values().chain(r.receipt_late_by_cause.values()).any(|n| *n > 0);
    if !late && any {
        out.push_str(&format!("{}\n", wrap("", &lang.t("report-late-hint"))));
    }
}

/// `yyyyMMddHHmmss` as `yyyy-MM-dd HH:mm` for a person.
pub(crate) fn readable(national: &str) -> String {
    match crate::domain::dates::parse_national(national) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M").to_string(),
        None => national.to_owned(),
    }
}

/// Each late dossier as a short block (a table of seven columns does not fit 100):
/// its MaHoSo and agency, the cause, then the times and the reason.
fn late_lists(r: &Report, lang: Lang, out: &mut String) {
    let cause = |c: Cause, m: Option<i64>| match m {
        Some(m) => tr!(lang, "late-cause-minutes", cause = cause_name(c, lang), minutes = m),
        None => cause_name(c, lang),
    };
    if !r.late.is_empty() {
        out.push_str(&format!("\n{}\n", lang.t("report-late-processing")));
        for l in &r.late {
            let j = &l.judgement;
            out.push_str(&format!(
                "{}\n",
                wrap("  ", &format!("{}  {}  [{}]", l.mahoso, l.agency, cause(l.cause, l.sync_minutes)))
            ));
            let (end, deadline) =
                (j.counted_end.as_deref().map(readable), j.deadline.as_deref().map(readable));
            let none = || "-".to_owned();
            let times = tr!(
                lang,
                "late-times",
                end = end.unwrap_or_else(none),
                deadline = deadline.unwrap_or_else(none)
            );
            out.push_str(&format!("{}\n{}\n", wrap("      ", &times), wrap("      ", &j.reason_in(lang))));
        }
    }
    if !r.receipt_late.is_empty() {
        out.push_str(&format!("\n{}\n", lang.t("report-late-receipt")));
        for l in &r.receipt_late {
            out.push_str(&format!(
                "{}\n",
                wrap("  ", &format!("{}  {}  [{}]", l.mahoso, l.agency, cause(l.cause, l.sync_minutes)))
            ));
            let received = l.received.as_deref().map_or_else(|| lang.t("late-not-received"), readable);
            let times = tr!(
                lang,
                "late-receipt-times",
                submitted = readable(&l.submitted),
                due = readable(&l.due),
                received = received
            );
            out.push_str(&format!("{}\n", wrap("      ", &times)));
        }
    }
}

/// The report for spreadsheets: one row per scope and indicator; with `late`, the late
/// dossiers instead (processing, then receipt), each with its cause.
pub(crate) fn render_csv(r: &Report, late: bool) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    }
    let mut out = String::new();
    if late {
        out.push_str(
            "mahoso,agency,procedure,counted_end,deadline,supplement_requests,supplement_seconds,reason,kind,cause,sync_minutes\r\n",
        );
        let minutes = |m: Option<i64>| m.map_or(String::new(), |m| m.to_string());
        for l in &r.late {
            let j = &l.judgement;
            let row = [
                field(&l.mahoso),
                field(&l.agency),
                field(&l.procedure),
                j.counted_end.clone().unwrap_or_default(),
                j.deadline.clone().unwrap_or_default(),
                j.supplement_requests.to_string(),
                j.supplement_seconds.to_string(),
                field(&j.reason),
                "processing".into(),
                l.cause.name().into(),
                minutes(l.sync_minutes),
            ];
            out.push_str(&format!("{}\r\n", row.join(",")));
        }
        for l in &r.receipt_late {
            let row = [
                field(&l.mahoso),
                field(&l.agency),
                field(&l.procedure),
                l.received.clone().unwrap_or_default(),
                l.due.clone(),
                String::new(),
                String::new(),
                String::new(),
                "receipt".into(),
                l.cause.name().into(),
                minutes(l.sync_minutes),
            ];
            out.push_str(&format!("{}\r\n", row.join(",")));
        }
        return out;
    }
    out.push_str("from,to,scope,name,indicator,numerator,denominator,ratio,points_share\r\n");
    let province = [(String::from(""), &r.province)];
    let scopes = [
        ("province", province.iter().map(|(n, f)| (n, *f)).collect::<Vec<_>>()),
        ("agency", r.by_agency.iter().collect()),
        ("procedure", r.by_procedure.iter().collect()),
    ];
    for (scope, items) in scopes {
        for (name, figures) in items {
            for (id, f) in figures.by_id() {
                let points = f.points_share.map_or(String::new(), |p| p.to_string());
                out.push_str(&format!(
                    "{},{},{scope},{},{id},{},{},{},{points}\r\n",
                    r.from,
                    r.to,
                    field(name),
                    f.numerator,
                    f.denominator,
                    f.ratio
                ));
            }
        }
    }
    out
}
