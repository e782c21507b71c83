//! The page's HTML: sections in the order a director reads them. Every figure a test or a
//! reader may want to check carries a `data-` attribute with its raw value.

use std::{collections::BTreeMap, fmt::Write};

use html_escape::{encode_double_quoted_attribute as attr, encode_text as esc};

use super::{PageData, svg};
use crate::{
    i18n::Lang,
    report::{
        INDICATORS, Report,
        lateness::Cause,
        render::{cause_name, indicator_name, readable},
    },
    status::Health,
    tr,
};

/// The portal's six groups of the score (Quyết định 766), their points, and the indicators
/// our data decides in each; the rest of each group is the portal's own (ratings, national
/// stores, publication).
const GROUPS: [(&str, u32, &[&str]); 6] = [
    ("public", 18, &["1.4"]),
    ("progress", 20, &["2.1"]),
    ("online", 12, &["3.3"]),
    ("payment", 10, &["3.6"]),
    ("satisfaction", 18, &[]),
    ("digitisation", 22, &["4.1", "4.2", "4.3"]),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#1a202c;max-width:72em}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #cbd5e0}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #e2e8f0;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f7fafc}.num{text-align:right}.ok{color:#276749}.degraded{color:#b7791f}.failing{color:#c53030}\
.na{color:#718096;font-style:italic}.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0}\
figcaption{font-size:.85em}.note{font-size:.85em;color:#4a5568}";

/// The whole page.
pub fn page(data: &PageData, lang: Lang) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = lang.t("page-title");
    let other = match lang {
        Lang::Vi => r#"<a href="?lang=en" hreflang="en">English</a>"#,
        Lang::En => r#"<a href="?lang=vi" hreflang="vi">Tiếng Việt</a>"#,
    };
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="{}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1><p class="note">{} · {other}</p>"#,
        lang.tag(),
        esc(&title),
        esc(&title),
        esc(&tr!(
            lang,
            "page-generated",
            at = crate::domain::dates::to_vn_local(data.generated_at)
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        )),
    );
    health(data, lang, &mut out);
    parked(data, lang, &mut out);
    if let Some(current) = data.months.last() {
        score(current, lang, &mut out);
        over_time(data, lang, &mut out);
        agencies(data, current, lang, &mut out);
        late(current, lang, &mut out);
    }
    let _ = write!(out, r#"<p class="note">{}</p></body></html>"#, esc(&lang.t("page-footer")));
    out
}

fn row(out: &mut String, label: &str, value: &str, key: &str, raw: &str) {
    let _ = write!(
        out,
        r#"<tr><th>{}</th><td class="num" data-figure="{}" data-value="{}">{}</td></tr>"#,
        esc(label),
        attr(key),
        attr(raw),
        esc(value)
    );
}

fn health(data: &PageData, lang: Lang, out: &mut String) {
    let s = &data.status;
    let (class, word) = match s.health {
        Health::Ok => ("ok", "health-ok"),
        Health::Degraded => ("degraded", "health-degraded"),
        Health::Failing => ("failing", "health-failing"),
    };
    let _ = write!(
        out,
        r#"<h2>{}</h2><p>{} <strong class="{class}" data-figure="health" data-value="{class}">{}</strong></p>"#,
        esc(&lang.t("page-health")),
        esc(&lang.t("label-health")),
        esc(&lang.t(word))
    );
    if !s.problem_messages.is_empty() {
        out.push_str("<ul>");
        for p in &s.problem_messages {
            let _ = write!(out, "<li>{}</li>", esc(&p.write(lang)));
        }
        out.push_str("</ul>");
    }
    out.push_str("<table>");
    let pct = |x: f64| format!("{} %", lang.num(x, 2));
    let d = &s.dossiers;
    row(out, &lang.t("page-dossiers-total"), &d.total.to_string(), "dossiers_total", &d.total.to_string());
    row(out, &lang.t("page-in-sync"), &d.in_sync.to_string(), "in_sync", &d.in_sync.to_string());
    row(
        out,
        &lang.t("page-coverage"),
        &pct(s.coverage_percent),
        "coverage_percent",
        &format!("{:.2}", s.coverage_percent),
    );
    let verified = s.audit.verified_percent;
    row(out, &lang.t("page-verified"), &pct(verified), "verified_percent", &format!("{verified:.2}"));
    row(
        out,
        &lang.t("page-backlog"),
        &s.outbox.depth.to_string(),
        "outbox_depth",
        &s.outbox.depth.to_string(),
    );
    let age = s.outbox.oldest_pending_age_seconds;
    let age_text = tr!(lang, "page-seconds", n = lang.num(age, 0));
    row(out, &lang.t("page-backlog-age"), &age_text, "oldest_pending_age_seconds", &format!("{age:.0}"));
    row(
        out,
        &lang.t("page-quarantined"),
        &d.quarantined.to_string(),
        "quarantined",
        &d.quarantined.to_string(),
    );
    row(out, &lang.t("page-dead"), &d.dead.to_string(), "dead", &d.dead.to_string());
    out.push_str("</table>");
    let _ = write!(
        out,
        "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        esc(&lang.t("page-source")),
        esc(&lang.t("page-kind")),
        esc(&lang.t("page-source-dossiers")),
        esc(&lang.t("page-last-success")),
        esc(&lang.t("page-last-error"))
    );
    for src in &s.sources {
        let state = if src.retired { lang.t("page-retired") } else { src.kind.clone().unwrap_or_default() };
        let _ = write!(
            out,
            r#"<tr data-source="{}"><td>{}</td><td>{}</td><td class="num" data-figure="source_dossiers">{}</td><td>{}</td><td>{}</td></tr>"#,
            attr(&src.name),
            esc(&src.name),
            esc(&state),
            src.dossiers,
            esc(&src.last_success_at.clone().unwrap_or_else(|| lang.t("never"))),
            esc(src.last_error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>");
}

/// A parked reason without any value it quotes (a record's field may be personal) nor long
/// numbers or addresses the portal's message may repeat: MaHoSo, field names and codes stay.
pub(super) fn scrub(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    for c in reason.chars() {
        match c {
            '"' if !quoted => {
                quoted = true;
                out.push_str("\"…");
            }
            '"' => {
                quoted = false;
                out.push('"');
            }
            _ if !quoted => out.push(c),
            _ => {}
        }
    }
    out.split(' ')
        .map(|w| {
            // The longest run of digits: a MaHoSo's is 6 (yyMMdd), a phone's 10, an ID's 12.
            let run = w.split(|c: char| !c.is_ascii_digit()).map(str::len).max().unwrap_or(0);
            if w.contains('@') || run >= 8 { "…" } else { w }
        })
        // The MaHoSo a portal's message repeats is in the list beside it: without it, one
        // reason groups every dossier it concerns.
        .filter(|w| !w.starts_with("MaHoSo="))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parked(data: &PageData, lang: Lang, out: &mut String) {
    let p = &data.status.parked;
    let _ = write!(
        out,
        r#"<h2>{}</h2><p data-figure="parked_total" data-value="{}">{}</p>"#,
        esc(&lang.t("page-parked")),
        p.total,
        esc(&tr!(lang, "page-parked-total", n = p.total))
    );
    if p.items.is_empty() {
        return;
    }
    let mut groups: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
    for item in &p.items {
        groups.entry((item.kind, scrub(&item.reason))).or_default().push(&item.key);
    }
    let _ = write!(
        out,
        "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        esc(&lang.t("parked-kind")),
        esc(&lang.t("parked-reason")),
        esc(&lang.t("page-count")),
        esc(&lang.t("parked-key"))
    );
    for ((kind, reason), keys) in &groups {
        let shown: Vec<&str> = keys.iter().take(5).copied().collect();
        let more = if keys.len() > 5 { " …" } else { "" };
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td>{}{more}</td></tr>"#,
            esc(&lang.t(&format!("parked-{kind}"))),
            esc(reason),
            keys.len(),
            esc(&shown.join(", "))
        );
    }
    out.push_str("</table>");
}

fn share(lang: Lang, n: u64, d: u64) -> String {
    lang.percent((d > 0).then(|| n as f64 / d as f64))
}

fn score(r: &Report, lang: Lang, out: &mut String) {
    let _ = write!(
        out,
        "<h2>{}</h2><p class=\"note\">{}</p><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        esc(&tr!(lang, "page-score", from = r.from.as_str(), to = r.to.as_str())),
        esc(&lang.t("page-score-note")),
        esc(&lang.t("page-group")),
        esc(&lang.t("page-points")),
        esc(&lang.t("page-our-data")),
        esc(&lang.t("page-not-ours"))
    );
    let by_id = r.province.by_id();
    for (group, points, ids) in GROUPS {
        let ours: Vec<String> = ids
            .iter()
            .map(|id| {
                let f = &by_id[id];
                format!(
                    r#"<span data-indicator="{id}" data-numerator="{}" data-denominator="{}">{id} {}: <strong>{}</strong> ({}/{})</span>"#,
                    f.numerator,
                    f.denominator,
                    esc(&indicator_name(id, lang)),
                    esc(&share(lang, f.numerator, f.denominator)),
                    f.numerator,
                    f.denominator
                )
            })
            .collect();
        let ours = if ours.is_empty() {
            format!(r#"<span class="na">{}</span>"#, esc(&lang.t("page-none-of-ours")))
        } else {
            ours.join("<br>")
        };
        let _ = write!(
            out,
            r#"<tr data-group="{group}"><td>{}</td><td class="num">{points}</td><td>{ours}</td><td class="na">{}</td></tr>"#,
            esc(&lang.t(&format!("group-{group}"))),
            esc(&lang.t(&format!("group-{group}-not-ours")))
        );
    }
    out.push_str("</table>");
}

fn over_time(data: &PageData, lang: Lang, out: &mut String) {
    let _ = write!(out, r#"<h2>{}</h2><div class="charts">"#, esc(&lang.t("page-over-time")));
    for (id, _) in INDICATORS {
        let months: Vec<(String, Option<f64>)> = data
            .months
            .iter()
            .map(|m| {
                let f = &m.province.by_id()[id];
                let month = m.from.get(..7).unwrap_or(&m.from).to_owned();
                (month, (f.denominator > 0).then(|| f.numerator as f64 / f.denominator as f64))
            })
            .collect();
        let _ = write!(
            out,
            "<figure>{}<figcaption>{id} {}</figcaption></figure>",
            svg::bars(id, &months),
            esc(&indicator_name(id, lang))
        );
    }
    let late: Vec<(String, u64, u64)> = data
        .months
        .iter()
        .map(|m| {
            let n = |c: Cause| m.late_by_cause.get(c.name()).copied().unwrap_or(0);
            (m.from.get(..7).unwrap_or(&m.from).to_owned(), n(Cause::Source), n(Cause::Sync))
        })
        .collect();
    let (source, sync) = (cause_name(Cause::Source, lang), cause_name(Cause::Sync, lang));
    let _ = write!(
        out,
        "<figure>{}<figcaption>{}</figcaption></figure></div>",
        svg::late_by_cause(&late, &source, &sync),
        esc(&lang.t("page-late-chart"))
    );
}

fn agencies(data: &PageData, current: &Report, lang: Lang, out: &mut String) {
    let _ = write!(out, "<h2>{}</h2><table><tr><th>DonViXuLy</th>", esc(&lang.t("page-agencies")));
    for (id, _) in INDICATORS {
        let _ = write!(out, r#"<th title="{}">{id}</th>"#, attr(&indicator_name(id, lang)));
    }
    out.push_str("</tr>");
    for (agency, figures) in &current.by_agency {
        let _ = write!(out, r#"<tr data-agency="{}"><td>{}</td>"#, attr(agency), esc(agency));
        let by_id = figures.by_id();
        // The agency's figures of every month, once.
        let months: Vec<_> = data.months.iter().map(|m| m.by_agency.get(agency).map(|a| a.by_id())).collect();
        for (id, _) in INDICATORS {
            let f = &by_id[id];
            let history: Vec<Option<f64>> = months
                .iter()
                .map(|m| {
                    let f = m.as_ref().map(|m| &m[id]).filter(|f| f.denominator > 0)?;
                    Some(f.numerator as f64 / f.denominator as f64)
                })
                .collect();
            let _ = write!(
                out,
                r#"<td class="num" data-indicator="{id}" data-numerator="{}" data-denominator="{}">{}<br>{}</td>"#,
                f.numerator,
                f.denominator,
                esc(&share(lang, f.numerator, f.denominator)),
                svg::sparkline(&history)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn late(r: &Report, lang: Lang, out: &mut String) {
    let n = |m: &BTreeMap<&str, u64>, c: Cause| m.get(c.name()).copied().unwrap_or(0);
    let _ = write!(
        out,
        r#"<h2>{}</h2><p data-late-source="{}" data-late-sync="{}" data-receipt-late-source="{}" data-receipt-late-sync="{}">{}<br>{}</p>"#,
        esc(&lang.t("page-late")),
        n(&r.late_by_cause, Cause::Source),
        n(&r.late_by_cause, Cause::Sync),
        n(&r.receipt_late_by_cause, Cause::Source),
        n(&r.receipt_late_by_cause, Cause::Sync),
        esc(&tr!(
            lang,
            "report-late-summary",
            total = r.late_total,
            source = n(&r.late_by_cause, Cause::Source),
            sync = n(&r.late_by_cause, Cause::Sync)
        )),
        esc(&tr!(
            lang,
            "report-receipt-summary",
            source = n(&r.receipt_late_by_cause, Cause::Source),
            sync = n(&r.receipt_late_by_cause, Cause::Sync)
        )),
    );
    const SHOWN: usize = 200;
    if !r.late.is_empty() {
        let _ = write!(
            out,
            "<table><tr><th>MaHoSo</th><th>DonViXuLy</th><th>MaTTHC</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            esc(&lang.t("page-cause")),
            esc(&lang.t("page-sync-minutes")),
            esc(&lang.t("page-counted-end")),
            esc(&lang.t("page-deadline"))
        );
        for l in r.late.iter().take(SHOWN) {
            let j = &l.judgement;
            let _ = write!(
                out,
                r#"<tr data-late="{}" data-cause="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td></tr>"#,
                attr(&l.mahoso),
                l.cause.name(),
                esc(&l.mahoso),
                esc(&l.agency),
                esc(&l.procedure),
                esc(&cause_name(l.cause, lang)),
                l.sync_minutes.map_or("-".into(), |m| m.to_string()),
                esc(&j.counted_end.as_deref().map(readable).unwrap_or_default()),
                esc(&j.deadline.as_deref().map(readable).unwrap_or_default()),
            );
        }
        out.push_str("</table>");
    }
    if !r.receipt_late.is_empty() {
        let _ = write!(
            out,
            "<h3>{}</h3><table><tr><th>MaHoSo</th><th>DonViXuLy</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            esc(&lang.t("report-late-receipt")),
            esc(&lang.t("page-cause")),
            esc(&lang.t("page-submitted")),
            esc(&lang.t("page-receipt-due")),
            esc(&lang.t("page-received"))
        );
        for l in r.receipt_late.iter().take(SHOWN) {
            let _ = write!(
                out,
                r#"<tr data-receipt-late="{}" data-cause="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                attr(&l.mahoso),
                l.cause.name(),
                esc(&l.mahoso),
                esc(&l.agency),
                esc(&cause_name(l.cause, lang)),
                esc(&readable(&l.submitted)),
                esc(&readable(&l.due)),
                esc(&l.received.as_deref().map_or_else(|| lang.t("late-not-received"), readable)),
            );
        }
        out.push_str("</table>");
    }
    let listed = r.late.len() + r.receipt_late.len();
    if listed > 2 * SHOWN {
        let _ = write!(out, r#"<p class="note">{}</p>"#, esc(&lang.t("page-more-late")));
    }
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn parked_reasons_lose_quoted_values_numbers_addresses_and_the_mahoso_listed_beside() {
        let r = scrub(r#"unparseable date in NgaySinh: "12/03/1980""#);
        assert!(!r.contains("1980"), "{r}");
        let r = scrub(
            "national portal refused (error_code 6): MaHoSo=000.00.15.H58-261129-0024: SoGiayTo 079123456789 sai",
        );
        assert!(r.contains("SoGiayTo") && !r.contains("079123456789") && !r.contains("H58"), "{r}");
        assert!(!scrub("Email an@example.vn invalid").contains("example"));
        let a = scrub(
            "national portal refused (error_code 6): MaHoSo=000.00.13.H58-261128-00407: MaTTHC: thủ tục 3.000777",
        );
        let b = scrub(
            "national portal refused (error_code 6): MaHoSo=000.00.15.H58-261128-1368: MaTTHC: thủ tục 3.000777",
        );
        assert_eq!(a, b, "one reason, one group");
    }
}
