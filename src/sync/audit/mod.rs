//! The audit: reads synchronized dossiers back from the national portal (TraCuuHoSo) and
//! compares them with what the portal acknowledged, because an acknowledgement is the portal's
//! word at one moment and portals lose data (a restore from backup, a migration, a dossier
//! removed by hand).
//!
//! **What it reads, in which order.** Only dossiers in sync (nothing waiting, nothing parked,
//! no write in flight), at most `national.audit_per_second` look-ups a second, and never while
//! pushes are due: the audit yields to them, and a 429 or an outage slows it like any call (it
//! goes through the pusher's limiter). Picks alternate between the dossier acknowledged most
//! recently and not verified since (a loss after a restore hits recent work first) and the one
//! known good the longest ago (its last verification, or its acknowledgement), so that every
//! dossier is verified within `national.audit_cycle_days`: a verified dossier is due again
//! after a day, or half the cycle if that is shorter, as far as the rate allows. Drift found
//! anywhere starts a sweep: everything verified before it is due again at once.
//!
//! **What it does with drift: through the engine, never around it.** The dossier's recorded
//! acknowledgement is corrected to what the read-back proves, and the dossier goes back into the
//! outbox: the pusher then does what it always does. Missing nationally: created again with its
//! whole history. Its status or fields differ: sent again as an update. Fewer history entries
//! than acknowledged (by the one identity of an entry, `domain::entry`): the rest is sent.
//! Entries nationally that match none of ours: parked (dead, kind `unmatched`) with the reason,
//! nothing resent. Each correction is one transaction, applied only if nothing was written to
//! the national portal for the dossier during the look-up (the same acknowledgement, nothing in
//! flight, not in the pusher's current round); a newer provincial version meanwhile does not
//! void it: what the read-back proves of the acknowledged state still holds.
//!
//! Fields are compared by meaning, as entries are: text in NFC with whitespace runs as one
//! space, times as instants, codes as numbers; a field the answer does not carry is not
//! compared (gateways drop optional fields), nor is anything the answer adds.

mod choose;
mod finding;
mod look;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::{
    choose::{Candidate, pick, pushes_due, scan},
    finding::Finding,
    look::Looked,
};
pub(crate) use self::{finding::DRIFT_KINDS, look::LOOKUP_OUTCOMES};
use super::{
    InRound, Shared, journal,
    portal::Portal,
    ports::{Clock, Sink},
    worker::{Failure, Step, Worker},
};
use crate::store::{
    StoreError, meta_get, meta_set,
    state::{AUDIT_LAST_PASS_AT, AUDIT_SWEEP_SINCE, audit_state, dossier_counts},
};

pub(crate) const REQUESTED: &str = "audit_requested";
pub(crate) const LAST: &str = "audit_last";
pub(crate) const LAST_AT: &str = "audit_last_at";

/// A look-up that found no usable answer is not tried again for this long.
const FAILED_RETRY: Duration = Duration::from_secs(3600);
/// A verified dossier is due again after this long (or half the cycle, if shorter).
const REVERIFY_AFTER: Duration = Duration::from_secs(86_400);
/// Drifted dossiers named in a report, at most.
const REPORT_NAMES: usize = 100;
/// A look-up without an answer is tried this many times in a pass, then counted as failed.
const TRIES: u32 = 10;
/// How long an idle audit waits before it looks again.
const IDLE: Duration = Duration::from_secs(1);

/// Which dossiers a pass reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditScope {
    /// The next due share: what is due, and at least one day's share of the cycle.
    Due,
    /// Every synchronized dossier.
    All,
}

/// What `dvc-sync audit` asks of the running daemon (kept in meta under [`REQUESTED`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub scope: AuditScope,
    pub per_second: Option<f64>,
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub started_at: String,
    pub finished_at: String,
    pub scope: String,
    pub per_second: f64,
    /// Dossiers read back.
    pub audited: u64,
    /// Found as acknowledged.
    pub verified: u64,
    /// Dossiers found drifted.
    pub drift_found: u64,
    /// Drift by kind (a dossier may show more than one).
    pub drift: BTreeMap<String, u64>,
    /// Drifted dossiers put back into the outbox (the daemon sends them).
    pub repairs_enqueued: u64,
    /// Drifted dossiers parked: national history that matches none of ours.
    pub parked: u64,
    /// Look-ups without a usable answer (tried again in an hour).
    pub failed: u64,
    /// Dossiers that moved on during their look-up (left to the next pass).
    pub changed: u64,
    pub verified_percent: f64,
    /// Up to 100 drifted dossiers.
    pub drifted: Vec<String>,
}

impl AuditReport {
    fn count(&mut self, finding: &Finding, mahoso: &str) {
        self.audited += 1;
        match finding {
            Finding::Verified => self.verified += 1,
            Finding::Failed(_) => self.failed += 1,
            drift => {
                self.drift_found += 1;
                for kind in drift.kinds() {
                    *self.drift.entry(kind.to_owned()).or_default() += 1;
                }
                if matches!(drift, Finding::Unmatched(_)) {
                    self.parked += 1;
                } else {
                    self.repairs_enqueued += 1;
                }
                if self.drifted.len() < REPORT_NAMES {
                    self.drifted.push(mahoso.to_owned());
                }
            }
        }
    }
}

/// How the background audit works.
#[derive(Debug, Clone)]
pub(crate) struct AuditConfig {
    /// Look-ups a second; 0: no background audit (passes asked for still run).
    pub(crate) per_second: f64,
    /// Every synchronized dossier verified at least once in this time.
    pub(crate) cycle: Duration,
}

/// At most `per_second` look-ups a second, measured from the previous one.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(per_second: f64) -> Pacer {
        Pacer { interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)), next: Instant::now() }
    }

    /// The time of the next slot, if it has not come yet.
    fn not_before(&self) -> Option<Instant> {
        (Instant::now() < self.next).then_some(self.next)
    }

    /// Takes the slot that has come.
    fn take(&mut self) {
        self.next = Instant::now().max(self.next) + self.interval;
    }
}

/// A pass under way (asked for by `dvc-sync audit`).
struct Pass {
    scope: AuditScope,
    /// Inside the daemon: it waits while pushes are due.
    yield_to_pushes: bool,
    report: AuditReport,
    /// Dossiers to read back, at most.
    share: u64,
    /// When it began (µs): `Due` takes what was verified before.
    start: i64,
    pacer: Pacer,
    batch: std::collections::VecDeque<Candidate>,
    /// The last MaHoSo read back (where `All` goes on).
    after: String,
    /// Look-ups of the batch's first dossier that got no answer.
    tries: u32,
}

/// What an idle audit waits for.
enum Wait {
    Until(Instant),
    For(Duration),
}

/// The audit worker: the background audit, and the passes `dvc-sync audit` asks for.
pub(crate) struct Auditor<N, C> {
    shared: Arc<Shared<C>>,
    portal: Arc<Portal<N, C>>,
    in_round: Arc<InRound>,
    cfg: AuditConfig,
    /// Its national calls, noted for the call journal.
    journal: journal::Pending,
    /// The background audit's pace.
    pacer: Pacer,
    /// Alternates the background's picks between the newest and the oldest.
    turn: usize,
    /// Whether everything due was read back since the last time it was.
    caught_up: bool,
    pass: Option<Pass>,
    /// A one-off pass (the daemon stopped): done at its end.
    once: Option<(AuditScope, f64)>,
    wait: Wait,
    /// The last pass's report.
    pub(crate) report: Option<AuditReport>,
}

impl<N: Sink, C: Clock> Auditor<N, C> {
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        portal: Arc<Portal<N, C>>,
        in_round: Arc<InRound>,
        cfg: AuditConfig,
    ) -> Self {
        let pacer = Pacer::new(cfg.per_second);
        Auditor {
            shared,
            portal,
            in_round,
            cfg,
            journal: journal::Pending::default(),
            pacer,
            turn: 0,
            caught_up: false,
            pass: None,
            once: None,
            wait: Wait::For(IDLE),
            report: None,
        }
    }

    /// One pass now, then done.
    pub(crate) fn once(mut self, scope: AuditScope, per_second: f64) -> Self {
        self.once = Some((scope, per_second));
        self
    }

    fn now(&self) -> i64 {
        self.shared.clock.now().as_microsecond()
    }

    /// Starts a pass: `Due` reads what is due and at least a day's share of the cycle, `All`
    /// every synchronized dossier.
    fn start_pass(
        &mut self,
        scope: AuditScope,
        per_second: f64,
        yield_to_pushes: bool,
    ) -> Result<(), StoreError> {
        let started = self.shared.clock.now();
        let share = match scope {
            AuditScope::Due => {
                let in_sync = self.shared.store.read(dossier_counts)?.in_sync;
                let days = (self.cfg.cycle.as_secs_f64() / 86_400.0).max(1.0 / 86_400.0);
                ((in_sync as f64 / days).ceil() as u64).max(1)
            }
            AuditScope::All => u64::MAX,
        };
        tracing::info!(event = "audit_started", scope = ?scope, per_second);
        let report = AuditReport {
            started_at: started.to_string(),
            scope: match scope {
                AuditScope::Due => "due".into(),
                AuditScope::All => "all".into(),
            },
            per_second,
            ..AuditReport::default()
        };
        self.pass = Some(Pass {
            scope,
            yield_to_pushes,
            report,
            share,
            start: started.as_microsecond(),
            pacer: Pacer::new(per_second),
            batch: Default::default(),
            after: String::new(),
            tries: 0,
        });
        Ok(())
    }

    /// One step of the pass under way: one look-up, or a wait.
    async fn pass_step(&mut self) -> Result<Step, Failure> {
        let now = self.now();
        let Some(pass) = &mut self.pass else { return Ok(Step::Busy) };
        if pass.yield_to_pushes && self.shared.store.read(|c| pushes_due(c, now))? {
            self.wait = Wait::For(pass.pacer.interval.min(IDLE));
            return Ok(Step::Idle);
        }
        if let Some(at) = pass.pacer.not_before() {
            self.wait = Wait::Until(at);
            return Ok(Step::Idle);
        }
        if pass.batch.is_empty() && pass.report.audited < pass.share {
            let k = batch_size(pass.pacer.interval);
            pass.batch = self
                .shared
                .store
                .read(|c| match pass.scope {
                    AuditScope::Due => pick(c, now, pass.start, k, k / 2),
                    AuditScope::All => scan(c, now, &pass.after, k),
                })?
                .into();
        }
        let Some(c) = pass.batch.front().cloned() else { return self.finish_pass() };
        pass.pacer.take();
        let looked = self.audit_one(&c).await?;
        let Some(pass) = &mut self.pass else { return Ok(Step::Busy) };
        match looked {
            Looked::Done(finding, recorded) => {
                if recorded {
                    pass.report.count(&finding, &c.mahoso);
                } else {
                    pass.report.changed += 1;
                }
            }
            Looked::Transient(t) => {
                pass.tries += 1;
                if pass.tries < TRIES {
                    return Err(Failure { error: t.reason, retry_after: t.retry_after });
                }
                // The portal keeps failing this look-up: count it, go on.
                pass.report.audited += 1;
                pass.report.failed += 1;
            }
        }
        pass.tries = 0;
        pass.batch.pop_front();
        pass.after = c.mahoso;
        if pass.report.audited >= pass.share {
            pass.batch.clear();
        }
        Ok(Step::Busy)
    }

    /// Ends the pass: its report kept for `dvc-sync audit`, and logged.
    fn finish_pass(&mut self) -> Result<Step, Failure> {
        let Some(pass) = &mut self.pass else { return Ok(Step::Busy) };
        let now = self.shared.clock.now();
        let mut report = pass.report.clone();
        report.finished_at = now.to_string();
        report.verified_percent = self
            .shared
            .store
            .read(|c| audit_state(c, now.as_microsecond(), &dossier_counts(c)?))?
            .verified_percent;
        let text = serde_json::to_string(&report).map_err(|e| Failure::new(e.to_string()))?;
        self.shared.store.write(|tx| {
            meta_set(tx, LAST, Some(&text))?;
            meta_set(tx, LAST_AT, Some(&now.as_microsecond().to_string()))?;
            meta_set(tx, AUDIT_LAST_PASS_AT, Some(&now.as_microsecond().to_string()))?;
            meta_set(tx, REQUESTED, None)
        })?;
        let r = &report;
        tracing::info!(
            event = "audit_finished",
            audited = r.audited,
            drift_found = r.drift_found,
            verified_percent = r.verified_percent,
            "audit pass: {} verified, {} repairs enqueued, {} parked, {} without an answer",
            r.verified,
            r.repairs_enqueued,
            r.parked,
            r.failed
        );
        self.report = Some(report);
        self.pass = None;
        Ok(if self.once.is_some() { Step::Done } else { Step::Busy })
    }

    /// One step of the background audit: one look-up of the next due dossier, or a wait.
    async fn background_step(&mut self, sweep: Option<i64>, pushes_waiting: bool) -> Result<Step, Failure> {
        if self.cfg.per_second <= 0.0 || pushes_waiting {
            self.wait = Wait::For(if pushes_waiting { self.pacer.interval.min(IDLE) } else { IDLE });
            return Ok(Step::Idle);
        }
        if let Some(at) = self.pacer.not_before() {
            self.wait = Wait::Until(at);
            return Ok(Step::Idle);
        }
        let now = self.now();
        // A verified dossier is read back again after a day (sooner when a loss was found), and
        // never later than half the cycle: a loss is found within a day wherever the rate allows.
        let again_after = self.cfg.cycle.min(REVERIFY_AFTER * 2).as_micros() as i64 / 2;
        let due_before = sweep.map_or(now - again_after, |s| s.max(now - again_after));
        self.turn += 1;
        let turn = self.turn;
        let Some(c) = self.shared.store.read(|c| pick(c, now, due_before, 1, turn % 2))?.into_iter().next()
        else {
            self.caught_up(sweep, now)?;
            self.wait = Wait::For(IDLE);
            return Ok(Step::Idle);
        };
        self.caught_up = false;
        self.pacer.take();
        match self.audit_one(&c).await? {
            Looked::Done(..) => Ok(Step::Busy),
            Looked::Transient(t) => Err(Failure { error: t.reason, retry_after: t.retry_after }),
        }
    }

    /// Everything due was read back: the pass's time is recorded, and a sweep is over if
    /// nothing found drift since it began.
    fn caught_up(&mut self, sweep: Option<i64>, now: i64) -> Result<(), StoreError> {
        if self.caught_up {
            return Ok(());
        }
        self.shared.store.write(|tx| {
            meta_set(tx, AUDIT_LAST_PASS_AT, Some(&now.to_string()))?;
            if meta_get(tx, AUDIT_SWEEP_SINCE)?.and_then(|s| s.parse::<i64>().ok()) == sweep {
                meta_set(tx, AUDIT_SWEEP_SINCE, None)?;
            }
            Ok(())
        })?;
        self.caught_up = true;
        if sweep.is_some() {
            tracing::info!(event = "audit_sweep_finished");
        }
        Ok(())
    }
}

/// Dossiers chosen at a time for a pass (one look-up each, paced): about a second's worth.
fn batch_size(interval: Duration) -> usize {
    ((1.0 / interval.as_secs_f64().max(1e-3)).ceil() as usize).clamp(2, 100)
}

impl<N: Sink, C: Clock> Worker for Auditor<N, C> {
    async fn work(&mut self, _stop: &CancellationToken) -> Result<Step, Failure> {
        if self.pass.is_some() {
            return self.pass_step().await;
        }
        if let Some((scope, per_second)) = self.once {
            if self.report.is_some() {
                return Ok(Step::Done);
            }
            self.start_pass(scope, per_second, false)?;
            return Ok(Step::Busy);
        }
        let now = self.now();
        let (requested, sweep, due) = self
            .shared
            .store
            .read(|c| Ok((meta_get(c, REQUESTED)?, meta_get(c, AUDIT_SWEEP_SINCE)?, pushes_due(c, now)?)))?;
        if let Some(request) = requested {
            let request: Request = serde_json::from_str(&request)
                .unwrap_or(Request { scope: AuditScope::Due, per_second: None });
            let configured = if self.cfg.per_second > 0.0 { self.cfg.per_second } else { 1.0 };
            let rate = request.per_second.filter(|r| *r > 0.0).unwrap_or(configured);
            self.start_pass(request.scope, rate, true)?;
            return Ok(Step::Busy);
        }
        self.background_step(sweep.and_then(|s| s.parse::<i64>().ok()), due).await
    }

    async fn wait_for_work(&mut self) {
        match self.wait {
            Wait::Until(at) => tokio::time::sleep_until(at).await,
            Wait::For(d) => tokio::time::sleep(d).await,
        }
    }
}
