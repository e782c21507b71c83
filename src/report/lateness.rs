//! Lateness with its cause. A dossier the national portal sees late was either late at the
//! source (processed, or received, after its due time there) or late by synchronisation (the
//! step happened at the source in time, and its national acknowledgement came after the due
//! time). Only the sync daemon can tell them apart: it knows when each step happened at the
//! source and when the portal first acknowledged it (migration 0013).
//!
//! Two rules: the end of processing against 2.1's deadline, and the receipt of a dossier
//! submitted online against 8 working hours (`[calendar]`).

use std::collections::BTreeMap;

use jiff::{SignedDuration, civil::DateTime};
use serde::Serialize;

use crate::config::CalendarConfig;

/// What the report judges against: the time now (Vietnam local) and the working calendar.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: DateTime,
    pub calendar: CalendarConfig,
    /// Steps that happened at the source before this were backfilled (read by this database
    /// after the fact, or sent earlier by another system): never put down to synchronisation.
    pub judged_since: Option<DateTime>,
}

impl Context {
    pub fn now(calendar: CalendarConfig) -> Context {
        Context {
            now: crate::domain::dates::to_vn_local(jiff::Timestamp::now()),
            calendar,
            judged_since: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Processed or received late at the source.
    Source,
    /// In time at the source; acknowledged by the national portal after the due time.
    Sync,
}

impl Cause {
    pub const ALL: [Cause; 2] = [Cause::Source, Cause::Sync];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Source => "source",
            Cause::Sync => "sync",
        }
    }
}

/// When the national portal first acknowledged a dossier's steps (Vietnam local time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AckTimes {
    /// The portal held the dossier before these times were recorded: a step missing here may
    /// have been acknowledged at a time nobody wrote down.
    pub incomplete: bool,
    /// The first payload holding NgayTiepNhan.
    pub received: Option<DateTime>,
    /// The first history entry in each status.
    pub statuses: BTreeMap<u8, DateTime>,
}

/// One step's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ack {
    At(DateTime),
    /// Not acknowledged yet.
    Pending,
    /// Perhaps acknowledged before times were recorded.
    Unknown,
}

impl AckTimes {
    fn of(&self, step: Option<u8>) -> Ack {
        let at = match step {
            None => self.received,
            Some(s) => self.statuses.get(&s).copied(),
        };
        match at {
            Some(t) => Ack::At(t),
            None if self.incomplete => Ack::Unknown,
            None => Ack::Pending,
        }
    }
}

/// What synchronisation did to one step: the minutes it added, and whether the step reached
/// the portal after `due`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncDelay {
    pub late: bool,
    pub minutes: i64,
}

fn minutes(d: SignedDuration) -> i64 {
    (d.as_secs() / 60).max(0)
}

/// The step `step` (None: the receipt) happened at the source at `at` and had to reach the
/// portal by `due`: what synchronisation added, judged as of `now` for a step still pending.
/// None when it cannot be known (no acknowledgement times for this dossier).
pub fn sync_delay(
    acks: Option<&AckTimes>,
    step: Option<u8>,
    at: DateTime,
    due: DateTime,
    ctx: &Context,
) -> Option<SyncDelay> {
    if ctx.judged_since.is_some_and(|since| at < since) {
        return None;
    }
    match acks?.of(step) {
        Ack::At(t) => Some(SyncDelay { late: t > due, minutes: minutes(t.duration_since(at)) }),
        Ack::Pending => Some(SyncDelay { late: ctx.now > due, minutes: minutes(ctx.now.duration_since(at)) }),
        Ack::Unknown => None,
    }
}

/// A dossier submitted online and received late (or not yet received past its due time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceiptLate {
    pub mahoso: String,
    pub agency: String,
    pub procedure: String,
    /// NgayNopHoSo, `yyyyMMddHHmmss`.
    pub submitted: String,
    /// Submission + the receipt rule's working hours.
    pub due: String,
    /// NgayTiepNhan, absent when not received yet.
    pub received: Option<String>,
    pub cause: Cause,
    /// Minutes between the receipt at the source and its national acknowledgement (or now).
    pub sync_minutes: Option<i64>,
}

/// The receipt facts of one dossier.
pub struct Receipt<'a> {
    pub online: bool,
    pub submitted: Option<DateTime>,
    pub received: Option<DateTime>,
    /// The national status (1: submitted, not received yet).
    pub status: u8,
    pub acks: Option<&'a AckTimes>,
}

/// The receipt rule for one dossier: late at the source when received after submission + the
/// working hours (or not received by now, past them); late by sync when received in time and
/// acknowledged after them. Returns (cause, due, sync minutes).
pub fn receipt(r: &Receipt<'_>, ctx: &Context) -> Option<(Cause, DateTime, Option<i64>)> {
    if !r.online {
        return None;
    }
    let rule = &ctx.calendar;
    let due = rule.calendar.add_working_hours(r.submitted?, rule.receipt_hours)?;
    match r.received {
        Some(received) => {
            let delay = sync_delay(r.acks, None, received, due, ctx);
            if received > due {
                Some((Cause::Source, due, delay.map(|d| d.minutes)))
            } else {
                delay.filter(|d| d.late).map(|d| (Cause::Sync, due, Some(d.minutes)))
            }
        }
        None if r.status == 1 && ctx.now > due => Some((Cause::Source, due, None)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    fn ctx(now: &str) -> Context {
        Context { now: at(now), calendar: CalendarConfig::default(), judged_since: None }
    }

    fn acked(received: Option<&str>) -> AckTimes {
        AckTimes { incomplete: false, received: received.map(at), statuses: BTreeMap::new() }
    }

    fn online(
        submitted: &str,
        received: Option<&str>,
        acks: &AckTimes,
    ) -> Option<(Cause, DateTime, Option<i64>)> {
        let r = Receipt {
            online: true,
            submitted: Some(at(submitted)),
            received: received.map(at),
            status: if received.is_some() { 2 } else { 1 },
            acks: Some(acks),
        };
        receipt(&r, &ctx("2026-12-01T09:00"))
    }

    #[test]
    fn received_in_time_and_acknowledged_in_time_is_not_late() {
        let a = acked(Some("2026-11-23T10:05"));
        assert_eq!(online("2026-11-20T16:30", Some("2026-11-23T10:00"), &a), None);
    }

    #[test]
    fn received_after_eight_working_hours_is_late_at_the_source() {
        // Friday 16:30: due Monday 16:30; received Tuesday.
        let a = acked(Some("2026-11-24T08:01"));
        let (cause, due, minutes) = online("2026-11-20T16:30", Some("2026-11-24T08:00"), &a).unwrap();
        assert_eq!((cause, due, minutes), (Cause::Source, at("2026-11-23T16:30"), Some(1)));
    }

    #[test]
    fn received_in_time_but_acknowledged_after_the_due_time_is_late_by_sync() {
        let a = acked(Some("2026-11-23T18:00"));
        let (cause, _, minutes) = online("2026-11-20T16:30", Some("2026-11-23T10:00"), &a).unwrap();
        assert_eq!((cause, minutes), (Cause::Sync, Some(480)));
        // Not acknowledged at all yet, and the due time passed: by sync too.
        let (cause, _, _) = online("2026-11-20T16:30", Some("2026-11-23T10:00"), &acked(None)).unwrap();
        assert_eq!(cause, Cause::Sync);
    }

    #[test]
    fn not_received_past_the_due_time_is_late_at_the_source() {
        assert_eq!(online("2026-11-20T16:30", None, &acked(None)).map(|r| r.0), Some(Cause::Source));
        // Before the due time it is simply waiting.
        let waiting = Receipt {
            online: true,
            submitted: Some(at("2026-12-01T08:00")),
            received: None,
            status: 1,
            acks: None,
        };
        assert_eq!(receipt(&waiting, &ctx("2026-12-01T09:00")), None);
    }

    #[test]
    fn a_submission_on_tet_is_due_after_the_break() {
        // Saturday 14/2/2026, the first day of the nine: due Monday 23/2 17:00.
        let a = acked(Some("2026-02-23T16:00"));
        assert_eq!(online("2026-02-14T10:00", Some("2026-02-23T15:00"), &a), None);
        let late = online("2026-02-14T10:00", Some("2026-02-24T07:45"), &a).unwrap();
        assert_eq!((late.0, late.1), (Cause::Source, at("2026-02-23T17:00")));
    }

    #[test]
    fn unknown_acknowledgement_times_judge_only_the_source() {
        let old = AckTimes { incomplete: true, ..AckTimes::default() };
        assert_eq!(online("2026-11-20T16:30", Some("2026-11-23T10:00"), &old), None);
        assert_eq!(
            online("2026-11-20T16:30", Some("2026-11-24T10:00"), &old).map(|r| r.0),
            Some(Cause::Source)
        );
        let (step, due) = (at("2026-11-23T10:00"), at("2026-11-23T11:00"));
        assert_eq!(sync_delay(Some(&old), Some(9), step, due, &ctx("2026-12-01T00:00")), None);
    }

    #[test]
    fn steps_before_the_database_judged_them_are_backfill_not_sync() {
        let pending = acked(None);
        let (step, due) = (at("2026-11-23T10:00"), at("2026-11-23T11:00"));
        let mut c = ctx("2026-12-01T00:00");
        assert!(sync_delay(Some(&pending), Some(9), step, due, &c).is_some_and(|d| d.late));
        c.judged_since = Some(at("2026-11-30T00:00"));
        assert_eq!(sync_delay(Some(&pending), Some(9), step, due, &c), None);
    }

    #[test]
    fn in_person_dossiers_have_no_receipt_rule() {
        let r = Receipt {
            online: false,
            submitted: Some(at("2026-11-20T16:30")),
            received: None,
            status: 1,
            acks: None,
        };
        assert_eq!(receipt(&r, &ctx("2026-12-01T09:00")), None);
    }
}
