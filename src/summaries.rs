//! What the operator commands print for people, in their language: one dossier
//! (`status --dossier`), and the summaries of `audit`, `retry`, `reconcile`, `backup`,
//! `forget` and `rekey`. Their `--json` forms are the structs themselves, never translated.

use crate::{
    backup::BackupReport,
    i18n::Lang,
    ops::Retried,
    privacy::{Forgotten, Rekeyed},
    status::DossierReport,
    sync::{AuditReport, ReconcileReport},
    tr,
};

/// `status --dossier MAHOSO`.
pub(crate) fn dossier(d: &DossierReport, lang: Lang) -> String {
    if !d.found {
        return format!("{}\n", tr!(lang, "dossier-unknown", mahoso = d.mahoso.as_str()));
    }
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("{}\n", crate::i18n::wrap(&format!("{:<10} ", lang.t(label)), &text)));
    };
    line("dossier-label", d.mahoso.clone());
    line("dossier-label-state", lang.t(&format!("sync-state-{}", d.sync_state)));
    if let Some(l) = &d.local {
        line(
            "dossier-label-local",
            tr!(
                lang,
                "dossier-local",
                version = l.version,
                at = l.updated_at.clone().unwrap_or_else(|| "?".into()),
                status = u64::from(l.status),
                name = l.status_name,
                local = l.local_status.clone().unwrap_or_else(|| "?".into()),
                entries = l.history_entries
            ),
        );
        let mut source = l.source.clone();
        if let Some(m) = &l.moved_from {
            source.push_str(&tr!(lang, "dossier-moved-from", source = m.as_str()));
        }
        if l.ignored_versions > 0 {
            source.push_str(&tr!(lang, "dossier-ignored", n = l.ignored_versions));
        }
        line("dossier-label-source", source);
    }
    if let Some(n) = &d.national {
        let status =
            n.status.map_or(lang.t("dossier-none"), |s| format!("{s} {}", n.status_name.unwrap_or("")));
        let mut text = tr!(
            lang,
            "dossier-national",
            exists = lang.t(if n.exists { "dossier-exists" } else { "dossier-not-created" }),
            status = status,
            fields = lang.t(if n.current { "dossier-current" } else { "dossier-behind" }),
            entries = n.history_entries_acknowledged
        );
        if n.uncertain {
            text.push_str(&lang.t("dossier-uncertain"));
        }
        line("dossier-label-national", text);
        let mut audit = match (&n.verified_at, n.verified_since_acknowledged) {
            (Some(at), true) => tr!(lang, "dossier-verified", at = at.as_str()),
            (Some(at), false) => tr!(lang, "dossier-verified-before", at = at.as_str()),
            (None, _) => lang.t("dossier-never-verified"),
        };
        if let (Some(f), Some(at)) = (&n.audit_finding, &n.audited_at)
            && f != "verified"
        {
            audit.push_str(&tr!(lang, "dossier-read-back", at = at.as_str(), finding = f.as_str()));
        }
        line("dossier-label-audit", audit);
    }
    line("dossier-label-attempts", d.attempts.to_string());
    if let Some(at) = &d.next_attempt_at {
        line("dossier-label-next", at.clone());
    }
    if let Some(e) = &d.last_error {
        line("dossier-label-error", e.clone());
    }
    if let Some(q) = &d.quarantine_reason {
        line("dossier-label-quarantine", q.clone());
    }
    if d.calls.is_empty() {
        line("dossier-label-calls", lang.t("dossier-no-calls"));
        return out;
    }
    let mut table = comfy_table::Table::new();
    table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic).set_width(100);
    table.set_header(
        ["calls-at", "calls-service", "calls-outcome", "calls-code", "calls-message"].map(|h| lang.t(h)),
    );
    for c in &d.calls {
        let code = match (c.error_code, c.http_status) {
            (Some(code), _) => format!("error_code {code}"),
            (None, Some(status)) => format!("HTTP {status}"),
            (None, None) => String::new(),
        };
        table.add_row([c.at.as_deref().unwrap_or("?"), &c.service, &c.outcome, &code, &c.message]);
    }
    let calls = tr!(lang, "dossier-calls", n = d.calls.len(), kept = crate::store::journal::KEPT_PER_DOSSIER);
    line("dossier-label-calls", calls);
    out.push_str(&format!("{table}\n"));
    out
}

/// `audit`.
pub(crate) fn audit(r: &AuditReport, lang: Lang) -> String {
    let mut out = format!(
        "{}\n",
        tr!(
            lang,
            "audit-summary",
            audited = r.audited,
            scope = r.scope.as_str(),
            per_second = lang.num(r.per_second, 1),
            verified = r.verified,
            drifted = r.drift_found,
            failed = r.failed,
            changed = r.changed
        )
    );
    if r.drift_found > 0 {
        let kinds: Vec<String> = r.drift.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let drift = tr!(
            lang,
            "audit-drift",
            kinds = kinds.join(", "),
            repairs = r.repairs_enqueued,
            parked = r.parked
        );
        out.push_str(&format!("{drift}\n{}\n", r.drifted.join(" ")));
    }
    out.push_str(&format!("{}\n", tr!(lang, "audit-verified", percent = lang.num(r.verified_percent, 2))));
    out
}

/// `retry`.
pub(crate) fn retried(r: &Retried, lang: Lang) -> String {
    tr!(lang, "retry-summary", dead = r.dead, quarantined = r.quarantined)
}

/// `reconcile`.
pub(crate) fn reconciled(r: &ReconcileReport, lang: Lang) -> String {
    tr!(
        lang,
        "reconcile-summary",
        records = r.records,
        drift = r.drift,
        quarantined = r.quarantined,
        requeued = r.requeued,
        coverage = lang.num(r.coverage_percent, 2)
    )
}

/// `backup`.
pub(crate) fn backed_up(r: &BackupReport, lang: Lang) -> String {
    tr!(
        lang,
        "backup-summary",
        dossiers = r.dossiers,
        path = r.path.display().to_string(),
        bytes = r.bytes,
        seconds = lang.num(r.seconds, 2),
        integrity = r.integrity.as_str()
    )
}

/// `forget`.
pub(crate) fn forgotten(r: &Forgotten, lang: Lang) -> String {
    let mut out =
        format!("{}\n", tr!(lang, "forget-summary", dossiers = r.erased.len(), quarantined = r.quarantined));
    if !r.not_found.is_empty() {
        out.push_str(&format!("{}\n", tr!(lang, "forget-not-found", list = r.not_found.join(", "))));
    }
    out
}

/// `rekey`.
pub(crate) fn rekeyed(r: &Rekeyed, lang: Lang) -> String {
    let mut out = tr!(
        lang,
        "rekey-summary",
        sealed = r.sealed,
        key = r.key_id.as_str(),
        already = r.already,
        seconds = lang.num(r.seconds, 1)
    );
    out.push_str(&lang.t(if r.vacuumed { "rekey-vacuumed" } else { "rekey-not-vacuumed" }));
    if !r.wal_truncated {
        out.push_str(&lang.t("rekey-wal"));
    }
    out
}
