//! Metric names: a contract with dashboards and alerts (see docs/operations.md). Prefixed
//! `dvc_sync_`, `_total` on counters, `_seconds` on durations, labels bounded (never a MaHoSo).

pub(crate) const OUTBOX_DEPTH: &str = "dvc_sync_outbox_depth";
pub(crate) const OUTBOX_OLDEST_AGE: &str = "dvc_sync_outbox_oldest_pending_age_seconds";
pub(crate) const DOSSIERS: &str = "dvc_sync_dossiers";
pub(crate) const COVERAGE: &str = "dvc_sync_coverage_ratio";
pub(crate) const CALLS: &str = "dvc_sync_national_calls_total";
pub(crate) const CALL_DURATION: &str = "dvc_sync_national_call_duration_seconds";
pub(crate) const SYNC_LAG: &str = "dvc_sync_change_to_ack_lag_seconds";
pub(crate) const SESSION_RENEWALS: &str = "dvc_sync_session_renewals_total";
pub(crate) const CONCURRENCY_LIMIT: &str = "dvc_sync_concurrency_limit";
pub(crate) const PAGES: &str = "dvc_sync_provincial_pages_total";
pub(crate) const RECORDS: &str = "dvc_sync_provincial_records_total";
pub(crate) const DEAD: &str = "dvc_sync_dossiers_parked_total";
pub(crate) const READBACKS_INCONCLUSIVE: &str = "dvc_sync_readbacks_inconclusive_total";
pub(crate) const LAST_POLL: &str = "dvc_sync_last_successful_poll_timestamp_seconds";
pub(crate) const LAST_PUSH: &str = "dvc_sync_last_successful_push_timestamp_seconds";
pub(crate) const PUSH_FAILING: &str = "dvc_sync_push_failing";
pub(crate) const NATIONAL_REFUSING: &str = "dvc_sync_national_refusing";
pub(crate) const LOGIN_FAILURES: &str = "dvc_sync_login_failures_total";
pub(crate) const UP: &str = "dvc_sync_up";
pub(crate) const AUDIT_LOOKUPS: &str = "dvc_sync_audit_lookups_total";
pub(crate) const AUDIT_DRIFT: &str = "dvc_sync_audit_drift_total";
pub(crate) const AUDIT_REPAIRED: &str = "dvc_sync_audit_repaired_total";
pub(crate) const AUDIT_VERIFIED: &str = "dvc_sync_audit_verified_ratio";
pub(crate) const AUDIT_OLDEST_AGE: &str = "dvc_sync_audit_oldest_verified_age_seconds";
pub(crate) const AUDIT_CYCLE: &str = "dvc_sync_audit_cycle_seconds";
pub(crate) const INDICATOR_RATIO: &str = "dvc_sync_indicator_ratio";
pub(crate) const INDICATOR_NUMERATOR: &str = "dvc_sync_indicator_numerator";
pub(crate) const INDICATOR_DENOMINATOR: &str = "dvc_sync_indicator_denominator";
pub(crate) const INDICATOR_LATE: &str = "dvc_sync_indicator_late_dossiers";
pub(crate) const INDICATOR_FINDINGS: &str = "dvc_sync_indicator_findings";
pub(crate) const LATE_BY_CAUSE: &str = "dvc_sync_late_dossiers";
pub(crate) const INDICATOR_COMPUTED: &str = "dvc_sync_indicator_computed_timestamp_seconds";

/// Every metric with its help text, registered once when the exporter starts.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        INDICATOR_RATIO,
        "Quyết định 766 indicator of the current month, by indicator id (dvc-sync report; NaN when its denominator is 0)."
    );
    describe_gauge!(INDICATOR_NUMERATOR, "Numerator of each 766 indicator of the current month.");
    describe_gauge!(INDICATOR_DENOMINATOR, "Denominator of each 766 indicator of the current month.");
    describe_gauge!(INDICATOR_LATE, "Dossiers of the current month that count late under 766 indicator 2.1.");
    describe_gauge!(INDICATOR_FINDINGS, "Findings that skew the current month's 766 figures, by kind.");
    describe_gauge!(
        LATE_BY_CAUSE,
        "Late dossiers of the current month by kind (processing: 2.1; receipt: an online dossier received after 8 working hours) and cause (source, or sync: on time at the source, acknowledged nationally after the due time)."
    );
    describe_gauge!(INDICATOR_COMPUTED, Unit::Seconds, "Unix time the 766 indicators were last computed.");
    describe_gauge!(
        OUTBOX_DEPTH,
        "Dossiers with changes not yet acknowledged by the national portal (dead ones excluded)."
    );
    describe_gauge!(OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest change waiting in the outbox.");
    describe_gauge!(DOSSIERS, "Dossiers by sync state: in_sync, pending, retrying, dead, quarantined.");
    describe_gauge!(COVERAGE, "Share of valid dossiers whose national copy is current (0 to 1).");
    describe_counter!(CALLS, "Calls to the national portal by service and outcome.");
    describe_histogram!(CALL_DURATION, Unit::Seconds, "Duration of national portal calls by service.");
    describe_histogram!(
        SYNC_LAG,
        Unit::Seconds,
        "From a provincial change (its updated_at) to its acknowledgement by the national portal."
    );
    describe_counter!(
        SESSION_RENEWALS,
        "National sessions opened after the first (renewals and re-logins after expiry)."
    );
    describe_gauge!(CONCURRENCY_LIMIT, "Current adaptive limit on national calls in flight.");
    describe_counter!(PAGES, "Source pages read, by source (a configured name) and outcome (ok, failed).");
    describe_counter!(
        RECORDS,
        "Source records read, by source and result (changed, seen, quarantined, ignored: a copy left behind by a move)."
    );
    describe_counter!(
        DEAD,
        "Dossiers parked as dead: a permanent national refusal, or a read-back that could not be matched."
    );
    describe_counter!(
        READBACKS_INCONCLUSIVE,
        "Read-backs whose national history matched none of ours where it went on: the dossier was parked, nothing resent."
    );
    describe_gauge!(LAST_POLL, Unit::Seconds, "Unix time of the last successful poll, by source.");
    describe_gauge!(LAST_PUSH, Unit::Seconds, "Unix time of the last answered national call.");
    describe_gauge!(
        NATIONAL_REFUSING,
        "1 while the national portal refuses write calls as a whole (a unit code or account problem: nothing can be sent), 0 once it takes one."
    );
    describe_gauge!(
        PUSH_FAILING,
        "1 while the latest push call (DongBoHoSoMC, CapNhatTienDoHoSoMC) got no usable national answer, 0 once one is answered."
    );
    describe_counter!(LOGIN_FAILURES, "Failed logins to the national portal.");
    describe_gauge!(UP, "1 while the daemon runs.");
    describe_counter!(
        AUDIT_LOOKUPS,
        "Audit read-backs by outcome: verified, drift, failed (no usable answer), transient (retried), changed (skipped: the dossier moved on)."
    );
    describe_counter!(
        AUDIT_DRIFT,
        "Drift the audit found at the national portal, by kind: missing, status, fields, history, unmatched."
    );
    describe_counter!(AUDIT_REPAIRED, "Drifted dossiers verified again after their repair.");
    describe_gauge!(
        AUDIT_VERIFIED,
        "Share of valid dossiers read back and found as acknowledged since their last acknowledgement (0 to 1)."
    );
    describe_gauge!(
        AUDIT_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest verification (or of the acknowledgement of a dossier never verified since)."
    );
    describe_gauge!(
        AUDIT_CYCLE,
        Unit::Seconds,
        "national.audit_cycle_days in seconds; 0 when the audit is off."
    );
}
