//! `dvc-sync status`: the state of the synchronization read straight from the database
//! (read-only, so it works with the daemon running or stopped). Counts come from the `counts`
//! table that triggers keep, the oldest pending change from an index: no full scan, however
//! big the database.

use std::{path::Path, time::Duration};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

pub use crate::store::state::{Audit, Dossiers, audit_state, coverage, dossier_counts};
use crate::{
    domain::status::NationalStatus,
    i18n::{Lang, Message},
    store::{
        lock::DaemonLock,
        meta_get,
        state::{HEAD, read_cursor, source_key},
    },
    tr,
};

/// When `status` calls things degraded.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub stale_heartbeat: Duration,
    pub outbox_age: Duration,
    /// `national.audit_cycle_days` when the background audit is on.
    pub audit_cycle: Option<Duration>,
    /// The configured sources: (name, kind).
    pub sources: Vec<(String, String)>,
}

impl Thresholds {
    /// The thresholds `config` sets.
    pub fn of(config: &crate::config::Config) -> Thresholds {
        Thresholds {
            stale_heartbeat: config.daemon.stale_heartbeat,
            outbox_age: config.daemon.outbox_age_threshold,
            audit_cycle: (config.national.audit_per_second > 0.0).then_some(config.national.audit_cycle),
            sources: config.sources.iter().map(|s| (s.name.clone(), s.kind.name().to_owned())).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Degraded,
    Failing,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub health: Health,
    /// In English, whatever the reader's language (JSON never changes with it).
    pub problems: Vec<String>,
    /// The same problems, to be written in the reader's language.
    #[serde(skip)]
    pub problem_messages: Vec<Message>,
    pub daemon: DaemonInfo,
    pub dossiers: Dossiers,
    pub coverage_percent: f64,
    pub outbox: Outbox,
    pub poll: Poll,
    pub push: Push,
    pub audit: Audit,
    /// Each source of dossiers and how its reading goes (one, `provincial`, until a
    /// configuration names several).
    pub sources: Vec<SourceInfo>,
    /// What the daemon last recorded of each of its workers (empty if it never ran).
    pub workers: Vec<WorkerInfo>,
    /// What is parked and why (the first of them).
    pub parked: Parked,
    /// How much citizens' personal data the database holds (docs/personal-data.md).
    pub personal_data: PersonalData,
}

/// Citizens' personal data in the database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PersonalData {
    /// Dossiers whose stored payload still holds personal fields in clear.
    pub dossiers_in_clear: u64,
    /// Dossiers whose personal fields are digests now (or erased).
    pub dossiers_minimised: u64,
    /// Quarantined records still held whole.
    pub quarantined_in_clear: u64,
    /// The ids of the keys the bodies are sealed with (empty: stored unsealed).
    pub sealed_with: Vec<String>,
    /// Whether every stored body is sealed (from the first one, or since `rekey`); false while
    /// bodies stored before the key was set are not.
    pub all_sealed: bool,
}

fn personal_data(conn: &Connection) -> rusqlite::Result<PersonalData> {
    let count = |name| crate::store::state::count(conn, name);
    let (total, minimised) = (count("dossier")?, count("minimised")?);
    let quarantined_in_clear: i64 =
        conn.query_row("SELECT COUNT(*) FROM quarantine WHERE minimised_at IS NULL", [], |r| r.get(0))?;
    let sealed_with: Vec<String> = meta_get(conn, crate::store::SEALED_WITH)?
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(PersonalData {
        dossiers_in_clear: total.saturating_sub(minimised),
        dossiers_minimised: minimised,
        quarantined_in_clear: quarantined_in_clear.max(0) as u64,
        all_sealed: meta_get(conn, crate::store::SEALED_ALL)?.is_some_and(|k| sealed_with.last() == Some(&k)),
        sealed_with,
    })
}

/// One source of dossiers.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub name: String,
    /// "http" or "sql": as the database was filled (null before the first start; the `status`
    /// command fills it in from the configuration then).
    pub kind: Option<String>,
    /// No longer configured, but still the owner of dossiers.
    pub retired: bool,
    /// The dossiers it owns, and its quarantined records that are no dossier's.
    pub dossiers: u64,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub cursor: Option<CursorInfo>,
    /// `last_success_at` in µs, for the aggregate.
    #[serde(skip)]
    pub last_success_us: Option<i64>,
}

/// Every configured source (`configured`: name and kind), and every source no longer
/// configured that still owns dossiers (retired).
fn sources(conn: &Connection, configured: &[(String, String)]) -> rusqlite::Result<Vec<SourceInfo>> {
    // Its dossiers, and its quarantined records that are no dossier's (as `dossiers.total`
    // counts them: the sources' figures add up to it).
    let mut owned: std::collections::BTreeMap<String, u64> = conn
        .prepare(
            "SELECT source, SUM(n) FROM (
                 SELECT source, COUNT(*) AS n FROM dossier GROUP BY source
                 UNION ALL
                 SELECT q.source, COUNT(*) FROM quarantine q
                  WHERE NOT EXISTS (SELECT 1 FROM dossier d WHERE d.mahoso = q.key) GROUP BY q.source)
             GROUP BY source",
        )?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
        .collect::<Result<_, _>>()?;
    let mut names: Vec<(String, Option<String>, bool)> =
        configured.iter().map(|(n, k)| (n.clone(), Some(k.clone()), false)).collect();
    // Without a configuration's list (a status read on its own), every owner is shown.
    names.extend(
        owned.keys().filter(|n| !configured.iter().any(|(c, _)| c == *n)).map(|n| (n.clone(), None, true)),
    );
    if configured.is_empty() && names.is_empty() {
        names.push((crate::domain::ownership::DEFAULT_SOURCE.to_owned(), None, false));
    }
    let retired_allowed = !configured.is_empty();
    names
        .into_iter()
        .map(|(name, kind, retired)| {
            let key = |base: &str| source_key(&name, base);
            let success: Option<i64> =
                meta_get(conn, &key("poll_last_success_at"))?.and_then(|v| v.parse().ok());
            Ok(SourceInfo {
                kind: meta_get(conn, &key("source_kind"))?.or(kind),
                retired: retired && retired_allowed,
                dossiers: owned.remove(&name).unwrap_or(0),
                last_success_at: success.and_then(micros_to_rfc3339),
                last_success_us: success,
                last_error: meta_get(conn, &key("poll_last_error"))?,
                cursor: read_cursor(conn, &key(HEAD))?
                    .map(|c| CursorInfo { updated_at: c.updated_at.to_string(), id: c.id }),
                name,
            })
        })
        .collect()
}

/// One worker of the daemon, as it last recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub name: String,
    /// busy, idle, failing or stopped.
    pub state: String,
    pub since: Option<String>,
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u64,
}

/// The workers as the daemon last recorded them (none in a database from before workers were
/// recorded).
pub fn workers(conn: &Connection) -> rusqlite::Result<Vec<WorkerInfo>> {
    let recorded: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'worker')",
        [],
        |r| r.get(0),
    )?;
    if !recorded {
        return Ok(Vec::new());
    }
    let mut stmt =
        conn.prepare("SELECT name, state, since, last_error, failures FROM worker ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(WorkerInfo {
            name: r.get(0)?,
            state: r.get(1)?,
            since: micros_to_rfc3339(r.get(2)?),
            last_error: r.get(3)?,
            failures: r.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    /// running, stopped or stale.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub heartbeat_age_seconds: Option<f64>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outbox {
    pub depth: u64,
    pub oldest_pending_age_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Poll {
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub cursor: Option<CursorInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CursorInfo {
    pub updated_at: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Push {
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub session_renewals: u64,
}

fn micros_to_rfc3339(micros: i64) -> Option<String> {
    Timestamp::from_microsecond(micros).ok().map(|t| t.to_string())
}

/// Reads the whole report. `db` is the database path (to test the daemon's lock).
pub fn report(
    conn: &Connection,
    db: &Path,
    now: Timestamp,
    t: &Thresholds,
) -> rusqlite::Result<StatusReport> {
    let now_us = now.as_microsecond();
    let dossiers = dossier_counts(conn)?;
    let coverage_percent = coverage(&dossiers);
    let oldest = crate::store::state::oldest_enqueued(conn)?;
    let outbox = Outbox {
        depth: dossiers.pending + dossiers.retrying,
        oldest_pending_age_seconds: oldest.map_or(0.0, |at| (now_us - at).max(0) as f64 / 1e6),
    };
    let beat: Option<(u32, String, i64, Option<i64>)> = conn
        .query_row("SELECT pid, version, beat_at, stopped_at FROM heartbeat WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let locked = DaemonLock::is_held(db);
    let daemon = match &beat {
        None => DaemonInfo {
            state: if locked { "running" } else { "stopped" },
            pid: None,
            heartbeat_age_seconds: None,
            version: None,
        },
        Some((pid, version, beat_at, stopped_at)) => {
            let age = (now_us - beat_at).max(0) as f64 / 1e6;
            let state = match (locked, stopped_at) {
                (false, Some(_)) => "stopped",
                (true, _) if age <= t.stale_heartbeat.as_secs_f64() => "running",
                // Holding the lock without beating (hung), or gone without stopping (killed).
                _ => "stale",
            };
            DaemonInfo {
                state,
                pid: Some(*pid),
                heartbeat_age_seconds: Some(age),
                version: Some(version.clone()),
            }
        }
    };
    let meta = |key: &str| meta_get(conn, key);
    let time = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok()).and_then(micros_to_rfc3339);
    let sources = sources(conn, &t.sources)?;
    // The aggregate of the configured sources: the oldest last success, the latest error.
    let configured: Vec<&SourceInfo> = sources.iter().filter(|s| !s.retired).collect();
    let poll_success = if configured.iter().any(|s| s.last_success_us.is_none()) {
        None
    } else {
        configured.iter().filter_map(|s| s.last_success_us).min()
    };
    let push_success = meta("push_last_success_at")?;
    let poll = Poll {
        last_success_at: poll_success.and_then(micros_to_rfc3339),
        last_error: configured.iter().find_map(|s| {
            s.last_error
                .as_ref()
                .map(|e| if configured.len() > 1 { format!("{}: {e}", s.name) } else { e.clone() })
        }),
        cursor: configured.first().and_then(|s| s.cursor.clone()),
    };
    let push = Push {
        last_success_at: time(push_success.clone()),
        last_error: meta("push_last_error")?,
        session_renewals: meta("session_renewals")?.and_then(|v| v.parse().ok()).unwrap_or(0),
    };

    let audit = audit_state(conn, now_us, &dossiers)?;

    let mut problems: Vec<Message> = Vec::new();
    let unmatched: u64 = conn
        .query_row("SELECT COUNT(*) FROM dead WHERE kind = 'unmatched'", [], |r| r.get::<_, i64>(0))?
        .max(0) as u64;
    if dossiers.dead > unmatched {
        problems.push(Message::new("problem-dead").int("n", dossiers.dead - unmatched));
    }
    if unmatched > 0 {
        problems.push(Message::new("problem-unmatched").int("n", unmatched));
    }
    if dossiers.quarantined > 0 {
        problems.push(Message::new("problem-quarantined").int("n", dossiers.quarantined));
    }
    if daemon.state == "stale" {
        problems.push(match daemon.heartbeat_age_seconds {
            Some(age) => Message::new("problem-stale").int("seconds", age.round() as i64),
            None => Message::new("problem-no-heartbeat"),
        });
    }
    if outbox.oldest_pending_age_seconds > t.outbox_age.as_secs_f64() {
        problems.push(
            Message::new("problem-outbox-old")
                .int("seconds", outbox.oldest_pending_age_seconds.round() as i64)
                .int("threshold", t.outbox_age.as_secs() as i64),
        );
    }
    if let Some(cycle) = t.audit_cycle
        && audit.oldest_verified_age_seconds > cycle.as_secs_f64()
    {
        problems.push(
            Message::new("problem-audit-behind")
                .dec("days", audit.oldest_verified_age_seconds / 86_400.0)
                .dec("cycle", cycle.as_secs_f64() / 86_400.0),
        );
    }
    // The portal refuses every write: nothing can be sent until the unit code or the account
    // is fixed, however recent the last answer.
    let refused = meta("push_refused")?;
    if let Some(reason) = &refused {
        problems.push(Message::new("problem-push-refused").text("reason", reason));
    }
    // Running but not doing its job: no success for a long time while errors are recorded.
    let silent_for = |success: Option<String>| {
        success.and_then(|v| v.parse::<i64>().ok()).map_or(f64::INFINITY, |at| (now_us - at) as f64 / 1e6)
    };
    let mut failing = refused.is_some() && daemon.state == "running";
    if daemon.state == "running" {
        let stale = t.stale_heartbeat.as_secs_f64();
        let several = configured.len() > 1;
        for source in &configured {
            if let Some(error) = &source.last_error
                && silent_for(source.last_success_us.map(|t| t.to_string())) > stale
            {
                failing = true;
                problems.push(if several {
                    Message::new("problem-source-failing").text("source", &source.name).text("error", error)
                } else {
                    Message::new("problem-poll-failing").text("error", error)
                });
            }
        }
        if let Some(error) = &push.last_error
            && outbox.depth > 0
            && silent_for(push_success) > stale
        {
            failing = true;
            problems.push(Message::new("problem-push-failing").text("error", error));
        }
    }
    let health = if failing {
        Health::Failing
    } else if problems.is_empty() {
        Health::Ok
    } else {
        Health::Degraded
    };
    let workers = workers(conn)?;
    let parked = parked(conn, PARKED_LISTED)?;
    Ok(StatusReport {
        health,
        problems: problems.iter().map(|m| m.write(Lang::En)).collect(),
        problem_messages: problems,
        daemon,
        dossiers,
        coverage_percent,
        outbox,
        poll,
        push,
        audit,
        sources,
        workers,
        parked,
        personal_data: personal_data(conn)?,
    })
}

/// The report when the state cannot be read at all (no database, not one of ours, corrupt):
/// the same fields, health `failing`, the reason in `problems`, so that monitoring that parses
/// `status --json` unconditionally always gets its document.
pub fn unreadable(db: &Path, reason: &str) -> StatusReport {
    let unreadable =
        Message::new("problem-unreadable").text("path", db.display().to_string()).text("reason", reason);
    StatusReport {
        health: Health::Failing,
        problems: vec![unreadable.write(Lang::En)],
        problem_messages: vec![unreadable],
        daemon: DaemonInfo {
            state: if DaemonLock::is_held(db) { "running" } else { "stopped" },
            pid: None,
            heartbeat_age_seconds: None,
            version: None,
        },
        dossiers: Dossiers::default(),
        coverage_percent: 0.0,
        outbox: Outbox { depth: 0, oldest_pending_age_seconds: 0.0 },
        poll: Poll { last_success_at: None, last_error: None, cursor: None },
        push: Push { last_success_at: None, last_error: None, session_renewals: 0 },
        audit: Audit { verified_percent: 0.0, ..Audit::default() },
        sources: Vec::new(),
        workers: Vec::new(),
        parked: Parked::default(),
        personal_data: PersonalData::default(),
    }
}

/// Parked items listed at most in `status --json`.
pub const PARKED_LISTED: usize = 100;
/// ... and in the table.
const PARKED_SHOWN: usize = 10;

/// What is parked: how many, and the first of them with their reasons.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Parked {
    /// Dead dossiers and quarantined records, all of them.
    pub total: u64,
    /// At most [`PARKED_LISTED`]: the dead first, then the quarantined, newest first.
    pub items: Vec<ParkedItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParkedItem {
    /// `dead` or `quarantined`.
    pub kind: &'static str,
    /// The MaHoSo, or the quarantine key.
    pub key: String,
    pub reason: String,
}

/// The parked items: their total, and the first `limit`.
pub fn parked(conn: &Connection, limit: usize) -> rusqlite::Result<Parked> {
    let total: i64 =
        conn.query_row("SELECT (SELECT COUNT(*) FROM dead) + (SELECT COUNT(*) FROM quarantine)", [], |r| {
            r.get(0)
        })?;
    let mut items = Vec::new();
    for (kind, sql) in [
        ("dead", "SELECT mahoso, reason FROM dead ORDER BY dead_at DESC LIMIT ?1"),
        ("quarantined", "SELECT key, reason FROM quarantine ORDER BY last_seen_at DESC LIMIT ?1"),
    ] {
        let left = limit.saturating_sub(items.len()) as i64;
        let mut stmt = conn.prepare(sql)?;
        for row in stmt.query_map([left], |r| Ok(ParkedItem { kind, key: r.get(0)?, reason: r.get(1)? }))? {
            items.push(row?);
        }
    }
    Ok(Parked { total: total.max(0) as u64, items })
}

/// One dossier, for `status --dossier`.
#[derive(Debug, Clone, Serialize)]
pub struct DossierReport {
    pub mahoso: String,
    pub found: bool,
    /// in_sync, pending, retrying, dead, quarantined, or unknown.
    pub sync_state: &'static str,
    pub local: Option<LocalSide>,
    pub national: Option<NationalSide>,
    pub attempts: u64,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub quarantine_reason: Option<String>,
    /// The last national calls that concerned it, newest first (at most
    /// [`crate::store::journal::KEPT_PER_DOSSIER`]): what the national portal's support is sent
    /// when a dossier is disputed.
    pub calls: Vec<crate::store::journal::Recorded>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalSide {
    pub version: i64,
    pub updated_at: Option<String>,
    /// The provincial system's own code.
    pub local_status: Option<String>,
    /// Its national equivalent (TrangThaiHoSo) and name.
    pub status: u8,
    pub status_name: &'static str,
    pub history_entries: u64,
    /// The source that owns it (provincial-portal.md, "Several sources").
    pub source: String,
    /// The source it moved from, when a superseding source took it over.
    pub moved_from: Option<String>,
    /// Versions of the old source's copy read after the move, ignored.
    pub ignored_versions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NationalSide {
    pub exists: bool,
    /// The last status the national portal acknowledged.
    pub status: Option<u8>,
    pub status_name: Option<&'static str>,
    /// Whether the national copy holds the latest recorded fields.
    pub current: bool,
    pub history_entries_acknowledged: u64,
    pub acknowledged_at: Option<String>,
    /// A write's outcome is unknown; it is read back before anything is resent.
    pub uncertain: bool,
    /// The audit's last read-back that found the national copy as acknowledged.
    pub verified_at: Option<String>,
    /// Whether that verification is newer than the last acknowledgement.
    pub verified_since_acknowledged: bool,
    /// What the audit's last read-back found: verified, missing, status, fields, history,
    /// unmatched or failed.
    pub audit_finding: Option<String>,
    pub audited_at: Option<String>,
}

pub fn dossier(conn: &Connection, mahoso: &str) -> rusqlite::Result<DossierReport> {
    type Row = (
        i64,
        i64,
        Option<String>,
        i64,
        i64,
        bool,
        Option<i64>,
        i64,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
        (Option<i64>, Option<i64>, Option<String>),
    );
    let row: Option<Row> = conn
        .query_row(
            "SELECT version, updated_at, local_status, status, history_len, national_exists, acked_status,
                    acked_history, acked_at, acked_hash, payload_hash, inflight, verified_at, audited_at,
                    audit_finding
             FROM dossier WHERE mahoso = ?1",
            [mahoso],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    (r.get(12)?, r.get(13)?, r.get(14)?),
                ))
            },
        )
        .optional()?;
    let outbox: Option<(i64, i64, Option<String>)> = conn
        .query_row(
            "SELECT attempts, next_attempt_at, last_error FROM outbox WHERE mahoso = ?1",
            [mahoso],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let dead: Option<(i64, String)> = conn
        .query_row("SELECT attempts, reason FROM dead WHERE mahoso = ?1", [mahoso], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let quarantine: Option<String> = conn
        .query_row("SELECT reason FROM quarantine WHERE key = ?1 OR mahoso = ?1 LIMIT 1", [mahoso], |r| {
            r.get(0)
        })
        .optional()?;
    let owner: Option<(String, Option<String>, i64)> = conn
        .query_row("SELECT source, moved_from, ignored FROM dossier WHERE mahoso = ?1", [mahoso], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let sync_state = match (&row, &outbox, &dead, &quarantine) {
        (_, _, _, Some(_)) => "quarantined",
        (_, _, Some(_), _) => "dead",
        (_, Some((attempts, ..)), _, _) if *attempts > 0 => "retrying",
        (_, Some(_), _, _) => "pending",
        (Some(_), None, None, None) => "in_sync",
        _ => "unknown",
    };
    let name = |code: i64| u8::try_from(code).ok().and_then(NationalStatus::new);
    let local = row.as_ref().map(|r| LocalSide {
        version: r.0,
        updated_at: micros_to_rfc3339(r.1),
        local_status: r.2.clone(),
        status: r.3 as u8,
        status_name: name(r.3).map_or("?", NationalStatus::name),
        history_entries: r.4.max(0) as u64,
        source: owner.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
        moved_from: owner.as_ref().and_then(|o| o.1.clone()),
        ignored_versions: owner.as_ref().map_or(0, |o| o.2.max(0) as u64),
    });
    let national = row.as_ref().map(|r| NationalSide {
        exists: r.5,
        status: r.6.and_then(|s| u8::try_from(s).ok()),
        status_name: r.6.and_then(name).map(NationalStatus::name),
        current: r.9 == Some(r.10),
        history_entries_acknowledged: r.7.max(0) as u64,
        acknowledged_at: r.8.and_then(micros_to_rfc3339),
        uncertain: r.11 != 0,
        verified_at: r.12.0.and_then(micros_to_rfc3339),
        verified_since_acknowledged: matches!((r.12.0, r.8), (Some(v), Some(a)) if v >= a),
        audit_finding: r.12.2.clone(),
        audited_at: r.12.1.and_then(micros_to_rfc3339),
    });
    Ok(DossierReport {
        mahoso: mahoso.to_owned(),
        found: row.is_some() || quarantine.is_some(),
        sync_state,
        local,
        national,
        attempts: outbox.as_ref().map(|o| o.0).or(dead.as_ref().map(|d| d.0)).unwrap_or(0).max(0) as u64,
        next_attempt_at: outbox.as_ref().and_then(|o| micros_to_rfc3339(o.1)),
        last_error: outbox.and_then(|o| o.2).or(dead.map(|d| d.1)),
        quarantine_reason: quarantine,
        calls: crate::store::journal::of(conn, mahoso)?,
    })
}

/// The report for people, in `lang`: a label column, then the figures.
pub fn render(r: &StatusReport, lang: Lang) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let never = || lang.t("never");
    let line = |out: &mut String, label: &str, text: String| {
        let _ = writeln!(out, "{}", crate::i18n::wrap(&format!("{:<10} ", lang.t(label)), &text));
    };
    let health = match r.health {
        Health::Ok => "health-ok",
        Health::Degraded => "health-degraded",
        Health::Failing => "health-failing",
    };
    line(&mut out, "label-health", lang.t(health));
    for p in &r.problem_messages {
        let _ = writeln!(out, "{}", crate::i18n::wrap("  ! ", &p.write(lang)));
    }
    let d = &r.daemon;
    let state = lang.t(&format!("daemon-{}", d.state));
    let mut daemon = match (d.pid, &d.version) {
        (Some(pid), Some(v)) => {
            tr!(lang, "daemon-pid-version", state = state, pid = pid, version = v.as_str())
        }
        (Some(pid), None) => tr!(lang, "daemon-pid", state = state, pid = pid),
        _ => state,
    };
    if let Some(age) = d.heartbeat_age_seconds {
        daemon = tr!(lang, "daemon-heartbeat", daemon = daemon, seconds = lang.num(age, 1));
    }
    line(&mut out, "label-daemon", daemon);
    let n = &r.dossiers;
    line(
        &mut out,
        "label-dossiers",
        tr!(
            lang,
            "status-dossiers",
            total = n.total,
            in_sync = n.in_sync,
            pending = n.pending,
            retrying = n.retrying,
            dead = n.dead,
            quarantined = n.quarantined
        ),
    );
    line(&mut out, "label-coverage", format!("{} %", lang.num(r.coverage_percent, 2)));
    line(
        &mut out,
        "label-outbox",
        tr!(
            lang,
            "status-outbox",
            depth = r.outbox.depth,
            seconds = r.outbox.oldest_pending_age_seconds.round()
        ),
    );
    let last = r.poll.last_success_at.clone().unwrap_or_else(never);
    line(
        &mut out,
        "label-poll",
        match &r.poll.cursor {
            Some(c) => {
                tr!(lang, "status-poll-cursor", last = last, at = c.updated_at.as_str(), id = c.id.as_str())
            }
            None => tr!(lang, "status-poll", last = last),
        },
    );
    if let Some(e) = &r.poll.last_error {
        line(&mut out, "label-blank", tr!(lang, "status-last-error", error = e.as_str()));
    }
    // A merged province's sources, each on its line (one source is the poll line above).
    if r.sources.len() > 1 || r.sources.iter().any(|s| s.retired) {
        for s in &r.sources {
            let state = if s.retired {
                lang.t("status-source-retired")
            } else {
                tr!(lang, "status-poll", last = s.last_success_at.clone().unwrap_or_else(never))
            };
            let kind = s.kind.as_deref().unwrap_or("?");
            line(
                &mut out,
                "label-source",
                tr!(
                    lang,
                    "status-source",
                    name = s.name.as_str(),
                    kind = kind,
                    dossiers = s.dossiers,
                    state = state
                ),
            );
            if let Some(e) = &s.last_error {
                line(&mut out, "label-blank", tr!(lang, "status-last-error", error = e.as_str()));
            }
        }
    }
    line(
        &mut out,
        "label-push",
        tr!(
            lang,
            "status-push",
            last = r.push.last_success_at.clone().unwrap_or_else(never),
            renewals = r.push.session_renewals
        ),
    );
    if let Some(e) = &r.push.last_error {
        line(&mut out, "label-blank", tr!(lang, "status-last-error", error = e.as_str()));
    }
    let a = &r.audit;
    line(
        &mut out,
        "label-verified",
        tr!(
            lang,
            "status-verified",
            percent = lang.num(a.verified_percent, 2),
            days = lang.num(a.oldest_verified_age_seconds / 86_400.0, 1),
            found = a.drift_found,
            repaired = a.drift_repaired,
            last = a.last_pass_at.clone().unwrap_or_else(never)
        ),
    );
    let p = &r.personal_data;
    let keys = p.sealed_with.join(", ");
    let sealed = match (p.sealed_with.is_empty(), p.all_sealed) {
        (true, _) => lang.t("status-not-sealed"),
        (false, true) => tr!(lang, "status-sealed", keys = keys),
        (false, false) => tr!(lang, "status-sealed-partly", keys = keys),
    };
    line(
        &mut out,
        "label-personal",
        tr!(
            lang,
            "status-personal",
            clear = p.dossiers_in_clear,
            minimised = p.dossiers_minimised,
            quarantined = p.quarantined_in_clear,
            sealed = sealed
        ),
    );
    if !r.workers.is_empty() {
        let list: Vec<String> = r
            .workers
            .iter()
            .map(|w| {
                let state = lang.t(&format!("worker-{}", w.state));
                match w.failures {
                    0 => format!("{} {state}", w.name),
                    n => tr!(lang, "status-worker-failures", name = w.name.as_str(), state = state, n = n),
                }
            })
            .collect();
        let list = list.join(", ");
        let text =
            if r.daemon.state == "running" { list } else { tr!(lang, "status-as-recorded", list = list) };
        line(&mut out, "label-workers", text);
        for w in r.workers.iter().filter(|w| w.failures > 0) {
            if let Some(e) = &w.last_error {
                line(&mut out, "label-blank", format!("{}: {e}", w.name));
            }
        }
    }
    let parked = &r.parked;
    if !parked.items.is_empty() {
        let mut table = comfy_table::Table::new();
        table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic).set_width(100);
        table.set_header([lang.t("parked-kind"), lang.t("parked-key"), lang.t("parked-reason")]);
        for item in parked.items.iter().take(PARKED_SHOWN) {
            let mut reason: String = item.reason.chars().take(160).collect();
            if item.reason.chars().count() > 160 {
                reason.push('…');
            }
            table.add_row([lang.t(&format!("parked-{}", item.kind)), item.key.clone(), reason]);
        }
        let _ = writeln!(out, "\n{table}");
        let shown = parked.items.len().min(PARKED_SHOWN) as u64;
        if parked.total > shown {
            let more = tr!(lang, "status-parked-more", n = parked.total - shown, listed = PARKED_LISTED);
            let _ = writeln!(out, "{}", crate::i18n::wrap("", &more));
        }
    }
    out
}
