//! `dvc-sync check-source`: the first thing a province's IT team runs. Connects to the
//! configured provincial source, reads the first records of its change listing through the
//! profile, and shows each as it would be sent to the national portal, or why it would be
//! quarantined. Nothing is written anywhere; personal fields are masked unless asked.

use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    config::{Config, ProvincialConfig},
    domain::{
        form::Form,
        normalize::{CATALOGUE_FIELDS, normalize_raw},
        raw::Raw,
    },
    i18n::Lang,
    provincial::{Provincial, sql::ServerInfo},
    sync::ports::{Cursor, Source},
    tr,
};

/// Fields that identify a person (Nghị định 13/2023): masked unless `--show-personal`.
pub(crate) const PERSONAL_FIELDS: [&str; 4] = ["ChuHoSo", "SoGiayToChuHoSo", "Email", "SoDienThoai"];

/// Exit codes.
pub(crate) const EXIT_ALL_SENDABLE: u8 = 0;
pub(crate) const EXIT_SOME_QUARANTINED: u8 = 1;
pub(crate) const EXIT_UNREADABLE: u8 = 2;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CheckedRecord {
    /// The record's MaHoSo, if it has one.
    pub mahoso: Option<String>,
    /// The source's own key (the SQL source's primary key).
    pub source_id: Option<String>,
    /// The national dossier as it would be sent (catalogue fields still empty are filled from
    /// LayThuTuc when the daemon runs).
    pub dossier: Option<Map<String, Value>>,
    pub history: Vec<Value>,
    /// Why it would be quarantined instead.
    pub quarantined: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The source's name (`provincial`, or `[sources.<name>]`'s).
    pub source: String,
    pub kind: &'static str,
    pub target: String,
    pub profile: Option<String>,
    pub server: Option<ServerInfo>,
    pub read_ms: u64,
    pub records: Vec<CheckedRecord>,
    pub would_send: usize,
    pub would_quarantine: usize,
    /// Set when the source could not be read: the records are then empty.
    pub error: Option<String>,
    /// Advice: a missing index, TLS off on a remote host.
    pub warnings: Vec<String>,
}

impl Report {
    pub(crate) fn exit_code(&self) -> u8 {
        if self.error.is_some() {
            EXIT_UNREADABLE
        } else if self.would_quarantine > 0 {
            EXIT_SOME_QUARANTINED
        } else {
            EXIT_ALL_SENDABLE
        }
    }
}

/// `Nguyễn Văn An` → `N***** V** A*`; `0912345678` → `09******78`; keeps the shape, not the value.
pub(crate) fn mask(field: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    match field {
        "ChuHoSo" => value
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map_or_else(String::new, |first| std::iter::once(first).chain(c.map(|_| '*')).collect())
            })
            .collect::<Vec<_>>()
            .join(" "),
        "Email" => match value.split_once('@') {
            Some((user, domain)) => {
                format!("{}***@{domain}", user.chars().next().map(String::from).unwrap_or_default())
            }
            None => "***".into(),
        },
        _ => {
            let chars: Vec<char> = value.chars().collect();
            if chars.len() <= 4 {
                return "*".repeat(chars.len());
            }
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| if i < 2 || i >= chars.len() - 2 { *c } else { '*' })
                .collect()
        }
    }
}

fn masked(mut dossier: Map<String, Value>) -> Map<String, Value> {
    let mut replacements: Vec<(String, String)> = Vec::new();
    for field in PERSONAL_FIELDS {
        if let Some(Value::String(s)) = dossier.get(field) {
            let m = mask(field, s);
            if !s.is_empty() {
                replacements.push((s.clone(), m.clone()));
            }
            dossier.insert(field.to_owned(), Value::String(m));
        }
    }
    // The same values inside other fields (a summary that names the applicant) go too.
    for (field, value) in dossier.iter_mut() {
        if PERSONAL_FIELDS.contains(&field.as_str()) {
            continue;
        }
        if let Value::String(s) = value {
            for (plain, masked) in &replacements {
                if s.contains(plain.as_str()) {
                    *s = s.replace(plain.as_str(), masked);
                }
            }
        }
    }
    dossier
}

/// Reads `limit` records from the start of `source`'s change listing and judges each.
pub(crate) async fn check(
    config: &Config,
    source: &ProvincialConfig,
    limit: usize,
    show_personal: bool,
) -> Report {
    let cfg = source;
    let mut report = Report {
        source: cfg.name.clone(),
        kind: cfg.kind.name(),
        target: String::new(),
        profile: None,
        server: None,
        read_ms: 0,
        records: Vec::new(),
        would_send: 0,
        would_quarantine: 0,
        error: None,
        warnings: Vec::new(),
    };
    let source = match Provincial::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(crate::say::causes(&e));
            return report;
        }
    };
    match &source {
        Provincial::Http(_) => report.target = cfg.http.base_url.to_string(),
        Provincial::Sql(sql) => {
            report.target = format!("{}://{}", sql.dialect().name(), sql.target());
            report.profile = Some(format!("{} ({})", sql.profile().name, sql.profile().origin));
            match sql.server_info().await {
                Ok(info) => {
                    for (index, found) in &info.indexes {
                        if !*found {
                            report.warnings.push(format!(
                                "the changes query needs an index the database lacks; ask the DBA to run: {index}"
                            ));
                        }
                    }
                    let host = sql.target().split(':').next().unwrap_or("");
                    if info.tls == "off" && !matches!(host, "127.0.0.1" | "localhost" | "::1" | "") {
                        report.warnings.push(format!(
                            "TLS is off to {host}: personal data crosses the network in clear (see provincial.database_url)"
                        ));
                    }
                    report.server = Some(info);
                }
                Err(e) => {
                    report.error = Some(e.reason);
                    sql.close().await;
                    return report;
                }
            }
            // Every table the profile reads, before anything is read through it: a missing
            // grant is named with the statement that fixes it.
            let problems = match sql.table_access().await {
                Ok(problems) => problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                Err(e) => vec![e.reason],
            };
            if !problems.is_empty() {
                report.error = Some(problems.join("; "));
                sql.close().await;
                return report;
            }
        }
    }
    let started = Instant::now();
    // The full pass's order: one row per dossier, from the first.
    let page = source.scan(None, limit.max(1)).await;
    report.read_ms = started.elapsed().as_millis() as u64;
    let page = match page {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(e.reason);
            if let Provincial::Sql(sql) = &source {
                sql.close().await;
            }
            return report;
        }
    };
    // A modifiedDate in the future moves the head cursor ahead of every change until then.
    let soon = Cursor {
        updated_at: jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap_or(jiff::Timestamp::MAX),
        id: String::new(),
    };
    if let Ok(ahead) = source.page(Some(&soon), 1).await
        && (ahead.end.is_some() || !ahead.records.is_empty())
    {
        report.warnings.push(
            "some rows have a modifiedDate more than a minute in the future (a clock ahead, or a hand edit): \
             changes before that time will be found by the look-back pass, look_back_seconds late"
                .into(),
        );
    }
    for record in page.records {
        let raw = record.raw.view();
        let mahoso = raw.get("MaHoSo").and_then(Raw::as_str).map(str::to_owned);
        let checked = match normalize_raw(&raw, &config.status_map) {
            Ok(n) => {
                report.would_send += 1;
                let dossier = if show_personal { n.dossier.to_map() } else { masked(n.dossier.to_map()) };
                CheckedRecord {
                    mahoso,
                    source_id: record.source_id,
                    dossier: Some(dossier),
                    history: n.history.iter().map(Form::to_value).collect(),
                    quarantined: None,
                }
            }
            Err(q) => {
                report.would_quarantine += 1;
                let hint = q.field.and_then(|f| source.explain(f));
                let reason = match hint {
                    Some(h) => format!("{} ({h})", q.reason),
                    None => q.reason,
                };
                CheckedRecord {
                    mahoso,
                    source_id: record.source_id,
                    dossier: None,
                    history: Vec::new(),
                    quarantined: Some(reason),
                }
            }
        };
        report.records.push(checked);
    }
    if let Provincial::Sql(sql) = &source {
        sql.close().await;
    }
    report
}

/// The report for people, in `lang`. The verdict words SEND and QUARANTINE stay: an
/// operator greps for them.
pub(crate) fn render(report: &Report, lang: Lang) -> String {
    let mut out = String::new();
    // Wrapped to 100 columns, but for the lines that carry SQL to copy (a missing index, the
    // GRANT an error names): a statement split over lines cannot be pasted.
    let line = |out: &mut String, k: &str, v: &str| {
        let label = format!("{:<11} ", lang.t(k));
        let text = match k {
            "check-label-error" | "check-label-index" => format!("{label}{v}"),
            _ => crate::i18n::wrap(&label, v),
        };
        out.push_str(&format!("{text}\n"));
    };
    let source = tr!(
        lang,
        "check-source-target",
        name = report.source.as_str(),
        kind = report.kind,
        target = report.target.as_str()
    );
    line(&mut out, "check-label-source", &source);
    if let Some(p) = &report.profile {
        line(&mut out, "check-label-profile", p);
    }
    if let Some(s) = &report.server {
        let server = tr!(lang, "check-server", server = s.server.as_str(), user = s.user.as_str());
        line(&mut out, "check-label-server", &server);
        line(&mut out, "check-label-tls", &s.tls);
        line(
            &mut out,
            "check-label-time-zone",
            &tr!(lang, "check-session-zone", zone = s.time_zone.as_str()),
        );
        for (index, found) in &s.indexes {
            let word = if *found { "present:" } else { "MISSING:" };
            line(&mut out, "check-label-index", &format!("{word} {index}"));
        }
    }
    if let Some(e) = &report.error {
        line(&mut out, "check-label-error", e);
        return out;
    }
    let read = tr!(lang, "check-read", n = report.records.len(), ms = report.read_ms);
    line(&mut out, "check-label-read", &read);
    out.push('\n');
    for r in &report.records {
        record(&mut out, r, lang);
    }
    out.push('\n');
    for w in &report.warnings {
        line(&mut out, "check-label-warning", w);
    }
    let summary = tr!(lang, "check-summary", send = report.would_send, quarantine = report.would_quarantine);
    line(&mut out, "check-label-summary", &summary);
    out
}

/// One record: as it would be sent (its fields wrapped to a terminal, its history), or why
/// it would be quarantined.
fn record(out: &mut String, r: &CheckedRecord, lang: Lang) {
    let id = r.source_id.as_deref().map(|i| tr!(lang, "check-source-id", id = i)).unwrap_or_default();
    let name = r.mahoso.clone().unwrap_or_else(|| lang.t("check-no-mahoso"));
    match (&r.dossier, &r.quarantined) {
        (Some(d), _) => {
            let status = d.get("TrangThaiHoSo").and_then(Value::as_str).unwrap_or("?");
            let what = tr!(lang, "check-send", status = status, entries = r.history.len());
            out.push_str(&format!("{}\n", crate::i18n::wrap("SEND        ", &format!("{name}{id}: {what}"))));
            let fields: Vec<String> = d
                .iter()
                .filter(|(k, _)| k.as_str() != "MaHoSo")
                .map(|(k, v)| {
                    let v = v.as_str().unwrap_or_default();
                    if v.is_empty() && CATALOGUE_FIELDS.contains(&k.as_str()) {
                        format!("{k}={}", lang.t("check-from-catalogue"))
                    } else {
                        format!("{k}={}", v.chars().take(60).collect::<String>())
                    }
                })
                .collect();
            // Wrapped to a terminal's width.
            let mut line = String::new();
            for f in fields {
                if !line.is_empty() && line.chars().count() + 2 + f.chars().count() > 88 {
                    out.push_str(&format!("            {line}\n"));
                    line.clear();
                }
                if !line.is_empty() {
                    line.push_str("  ");
                }
                line.push_str(&f);
            }
            if !line.is_empty() {
                out.push_str(&format!("            {line}\n"));
            }
            // Each entry on one line of at most 100 columns.
            for (i, e) in r.history.iter().enumerate() {
                let g = |k: &str| {
                    let width = if matches!(k, "NguoiXuLy" | "NoiDungXuLy") { 30 } else { 14 };
                    e.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .chars()
                        .take(width)
                        .collect::<String>()
                };
                out.push_str(&format!(
                    "            {:>2}. {} {:>2} {}: {}\n",
                    i + 1,
                    g("ThoiDiemXuLy"),
                    g("TrangThai"),
                    g("NguoiXuLy"),
                    g("NoiDungXuLy")
                ));
            }
        }
        (None, Some(reason)) => {
            out.push_str(&format!(
                "{}\n",
                crate::i18n::wrap("QUARANTINE  ", &format!("{name}{id}: {reason}"))
            ));
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_naming_the_applicant_is_masked_too() {
        let d: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "ChuHoSo": "Đỗ Văn Nam", "TrichYeuHoSo": "Đăng ký kết hôn - Đỗ Văn Nam", "SoDienThoai": ""
        }))
        .unwrap();
        let m = masked(d);
        assert_eq!(m["TrichYeuHoSo"], "Đăng ký kết hôn - Đ* V** N**");
        assert_eq!(m["SoDienThoai"], "");
    }

    #[test]
    fn personal_fields_keep_their_shape_not_their_value() {
        assert_eq!(mask("ChuHoSo", "Nguyễn Văn An"), "N***** V** A*");
        assert_eq!(mask("SoGiayToChuHoSo", "079123456789"), "07********89");
        assert_eq!(mask("SoDienThoai", "0912"), "****");
        assert_eq!(mask("Email", "hoso12@example.vn"), "h***@example.vn");
        assert_eq!(mask("Email", ""), "");
    }
}
