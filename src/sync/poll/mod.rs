//! The poller: a worker that reads one source's change listing and records every change (see
//! [`record`]).
//!
//! Two passes share the work. The head pass reads strictly after the head cursor: fresh
//! changes, fast. A timestamp cursor is not a log, though: a change can become visible after
//! others with a later `updated_at`. So a trailing pass follows `look_back` behind the clock
//! and re-reads that window once; by then every change in it is visible. Each record is thus
//! read about twice, whatever the window's length. The reconciler's full pass catches
//! anything later still.
//!
//! A unit of work is one poll (both passes, to the end of the listing). A page that cannot be
//! read fails the unit: the runner backs off and the next unit resumes from the cursor, which
//! moved with every page recorded.

pub(crate) mod record;

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub(crate) use self::record::{Applied, Recorder};
use super::{
    ports::{Clock, Cursor, Page, Record, Source},
    worker::{Failure, Step, Worker},
};
use crate::{
    metrics as m,
    store::{
        meta_set,
        state::{BACKFILL, BACKFILL_THEN, HEAD, TAIL, read_cursor, write_cursor},
    },
};

/// How one source is polled.
#[derive(Debug, Clone)]
pub(crate) struct PollConfig {
    pub(crate) page_size: usize,
    pub(crate) interval: Duration,
    pub(crate) look_back: Duration,
}

/// The furthest position among `records` and `end` (never behind `current`: a page that goes
/// backwards cannot move the cursor back).
pub(crate) fn furthest(records: &[Record], end: Option<&Cursor>, current: Option<&Cursor>) -> Option<Cursor> {
    let on_page = records.iter().filter_map(|r| r.position.as_ref()).chain(end).max().cloned();
    match (on_page, current) {
        (Some(p), Some(c)) if &p <= c => Some(c.clone()),
        (Some(p), _) => Some(p),
        (None, c) => c.cloned(),
    }
}

/// Which of the source's two orders a page is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Changes after the cursor (the head and look-back passes).
    Changes,
    /// Every record once (the reconciler's full pass, a first backfill).
    Scan,
}

/// Reads one page; None if the daemon stops meanwhile (a read is abandoned, never half
/// recorded). A failure is counted and noted for `status`.
pub(crate) async fn fetch<S: Source, C: Clock>(
    recorder: &Recorder<S, C>,
    stop: &CancellationToken,
    read: Read,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Option<Page>, Failure> {
    // Boxed: a source's own future (a database driver's) is deep, and every worker that
    // reads pages would otherwise nest it inside its own, past what the compiler lays out.
    let reading = Box::pin(async {
        match read {
            Read::Changes => recorder.source.page(cursor, limit).await,
            Read::Scan => recorder.source.scan(cursor, limit).await,
        }
    });
    let result = tokio::select! {
        biased;
        () = stop.cancelled() => return Ok(None),
        result = reading => result,
    };
    result.map(Some).map_err(|e| {
        metrics::counter!(m::PAGES, "source" => recorder.name.clone(), "outcome" => "failed").increment(1);
        recorder.shared.stats.page_failed();
        recorder.shared.note_poll_error(&recorder.name, &e.reason);
        Failure { error: e.reason, retry_after: None }
    })
}

/// Records a page (and the cursor it moved), counting what it did.
pub(crate) fn apply_and_count<S: Source, C: Clock>(
    recorder: &Recorder<S, C>,
    records: &[Record],
    cursor: Option<(&str, &Cursor)>,
) -> Result<Applied, Failure> {
    let shared = &recorder.shared;
    match recorder.apply_page(records, cursor) {
        Ok(applied) => {
            let source = recorder.name.clone();
            metrics::counter!(m::PAGES, "source" => source.clone(), "outcome" => "ok").increment(1);
            for (result, n) in [
                ("changed", applied.changed),
                ("seen", applied.seen),
                ("quarantined", applied.quarantined),
                ("ignored", applied.ignored),
            ] {
                metrics::counter!(m::RECORDS, "source" => source.clone(), "result" => result)
                    .increment(n as u64);
            }
            shared.stats.page_applied(&applied);
            if applied.enqueued > 0 || applied.changed > 0 {
                shared.work_arrived.notify_one();
            }
            Ok(applied)
        }
        Err(e) => {
            // The database refused (disk full, read-only): nothing was committed, so the
            // cursor did not move; the page is read again after the pause.
            tracing::error!(event = "store_failed", what = "recording a page", error = %e);
            let error = format!("cannot record a page: {e}");
            shared.note_poll_error(&recorder.name, &error);
            Err(Failure::new(error))
        }
    }
}

/// The poller of one source (see the module's comment).
pub(crate) struct Poller<S, C> {
    recorder: Arc<Recorder<S, C>>,
    cfg: PollConfig,
    /// The trail started and the first backfill done.
    ready: bool,
    tick: Interval,
}

impl<S: Source, C: Clock> Poller<S, C> {
    pub(crate) fn new(recorder: Arc<Recorder<S, C>>, cfg: PollConfig) -> Self {
        let mut tick = tokio::time::interval_at(Instant::now() + cfg.interval, cfg.interval);
        // A poll that overran its interval is followed by the next at once, not by a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Poller { recorder, cfg, ready: false, tick }
    }

    fn now(&self) -> Timestamp {
        self.recorder.shared.clock.now()
    }

    /// Reads after the cursor kept under `key` to the end of the source, in `read`'s order (the
    /// change listing for the head pass; the scan for the first backfill). False if stopped.
    ///
    /// The next page is fetched while this one is recorded (its position is known as soon as
    /// the page is read): the source's answer time and the local write overlap. The cursor is
    /// written only with the page that moved it, so a crash still replays at most one page.
    async fn head_pass(&self, stop: &CancellationToken, read: Read, key: &str) -> Result<bool, Failure> {
        let recorder = &self.recorder;
        let limit = self.cfg.page_size;
        let mut cursor = recorder.shared.store.read(|c| read_cursor(c, key))?;
        let Some(mut page) = fetch(recorder, stop, read, cursor.as_ref(), limit).await? else {
            return Ok(false);
        };
        loop {
            let next = furthest(&page.records, page.end.as_ref(), cursor.as_ref());
            let stuck = next.is_none() || next == cursor;
            let prefetch = (page.has_more && !stuck).then(|| {
                let (recorder, stop, after) = (recorder.clone(), stop.clone(), next.clone());
                let task =
                    tokio::spawn(async move { fetch(&recorder, &stop, read, after.as_ref(), limit).await });
                let guard = super::AbortOnDrop(vec![task.abort_handle()]);
                (task, guard)
            });
            apply_and_count(recorder, &page.records, next.as_ref().map(|c| (key, c)))?;
            recorder.shared.note_poll_success(&recorder.name);
            if !page.has_more {
                return Ok(true);
            }
            let Some((task, _guard)) = prefetch else {
                // A full page without a usable position: it cannot be read past. Say so loudly;
                // the reconciler's full pass still covers these records.
                tracing::error!(
                    event = "cursor_stuck",
                    "a full page gave no position to read after; waiting for the next poll"
                );
                return Ok(true);
            };
            let fetched = task.await.map_err(|e| Failure::new(format!("reading a page: {e}")))?;
            let Some(fetched) = fetched? else { return Ok(false) };
            page = fetched;
            cursor = next;
        }
    }

    /// Re-reads the look-back window once it is old enough for every change in it to be
    /// visible. False if stopped.
    async fn tail_pass(&self, stop: &CancellationToken) -> Result<bool, Failure> {
        let look_back = self.cfg.look_back;
        if look_back.is_zero() {
            return Ok(true);
        }
        let recorder = &self.recorder;
        let boundary = self.now().checked_sub(look_back).unwrap_or(Timestamp::UNIX_EPOCH);
        loop {
            let tail = recorder.key(TAIL);
            let Some(cursor) = recorder.shared.store.read(|c| read_cursor(c, &tail))? else {
                self.start_trail()?;
                return Ok(true);
            };
            if cursor.updated_at >= boundary {
                return Ok(true);
            }
            let Some(page) = fetch(recorder, stop, Read::Changes, Some(&cursor), self.cfg.page_size).await?
            else {
                return Ok(false);
            };
            let (ripe, next, reached_boundary) = ripe_part(&page, &cursor, boundary);
            let applied = apply_and_count(recorder, ripe, Some((&tail, &next)))?;
            if applied.changed > 0 {
                recorder.shared.stats.late_found(applied.changed);
                tracing::info!(
                    event = "late_changes_found",
                    count = applied.changed,
                    "the look-back pass found changes the head pass had missed"
                );
            }
            if reached_boundary || !page.has_more || next == cursor {
                return Ok(true);
            }
        }
    }

    /// On a first start, the trail begins one window before *now*, before the head pass
    /// starts: everything older was visible when the head pass began reading from the start,
    /// and so is read by it. (Started after the head pass instead, the trail would skip
    /// changes that became visible while a long first pass ran.)
    fn start_trail(&self) -> Result<(), Failure> {
        let boundary = self.now().checked_sub(self.cfg.look_back).unwrap_or(Timestamp::UNIX_EPOCH);
        let start = Cursor { updated_at: boundary, id: String::new() };
        let tail = self.recorder.key(TAIL);
        self.recorder.shared.store.write(|tx| {
            if read_cursor(tx, &tail)?.is_none() {
                write_cursor(tx, &tail, &start)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// A first start on a source whose change listing names each dossier once per change (the
    /// SQL source: a dossier row and each of its actions, spread over the months of its life):
    /// the backlog is read once per dossier through the scan instead, and the change listing
    /// takes over from one look-back window before the backfill began. Changes made meanwhile
    /// are after that position; late commits within the window are the look-back pass's, as
    /// always. The scan's position is kept, so that a restart resumes it. False if stopped.
    async fn first_backfill(&self, stop: &CancellationToken) -> Result<bool, Failure> {
        if !self.recorder.source.backfill_by_scan() {
            return Ok(true);
        }
        let store = &self.recorder.shared.store;
        let [head, backfill, backfill_then] = [HEAD, BACKFILL, BACKFILL_THEN].map(|k| self.recorder.key(k));
        let then = store.write(|tx| {
            if read_cursor(tx, &head)?.is_some() {
                return Ok(None);
            }
            if let Some(then) = read_cursor(tx, &backfill_then)? {
                return Ok(Some(then));
            }
            let at = self.now().checked_sub(self.cfg.look_back).unwrap_or(Timestamp::UNIX_EPOCH);
            let then = Cursor { updated_at: at, id: String::new() };
            write_cursor(tx, &backfill_then, &then)?;
            Ok(Some(then))
        })?;
        let Some(then) = then else { return Ok(true) };
        tracing::info!(
            event = "backfill_started",
            source = %self.recorder.name,
            "first start: reading every dossier once, by the source's scan"
        );
        if !self.head_pass(stop, Read::Scan, &backfill).await? {
            return Ok(false);
        }
        store.write(|tx| {
            write_cursor(tx, &head, &then)?;
            meta_set(tx, &backfill, None)?;
            meta_set(tx, &backfill_then, None)
        })?;
        tracing::info!(event = "backfill_finished", source = %self.recorder.name, "the change listing takes over");
        Ok(true)
    }
}

/// The part of a look-back page that is ripe (at or before `boundary`), the cursor to keep
/// after it, and whether the page reached the boundary.
fn ripe_part<'a>(page: &'a Page, cursor: &Cursor, boundary: Timestamp) -> (&'a [Record], Cursor, bool) {
    let ripe_count = page
        .records
        .iter()
        .take_while(|r| r.position.as_ref().is_none_or(|p| p.updated_at <= boundary))
        .count();
    let ripe = &page.records[..ripe_count];
    let end_ripe = page.end.as_ref().filter(|e| e.updated_at <= boundary);
    let reached_boundary = ripe_count < page.records.len() || page.end.is_some() && end_ripe.is_none();
    // Past the last ripe record only when the whole page was ripe: rows the source left out
    // between a ripe record and an unripe one are read again next time.
    let end = if reached_boundary { None } else { end_ripe };
    let next = furthest(ripe, end, Some(cursor)).filter(|c| c.updated_at <= boundary);
    (ripe, next.unwrap_or_else(|| cursor.clone()), reached_boundary)
}

impl<S: Source, C: Clock> Worker for Poller<S, C> {
    async fn work(&mut self, stop: &CancellationToken) -> Result<Step, Failure> {
        if !self.ready {
            if !self.cfg.look_back.is_zero() {
                self.start_trail()?;
            }
            if !self.first_backfill(stop).await? {
                return Ok(Step::Idle);
            }
            self.ready = true;
        }
        if self.head_pass(stop, Read::Changes, &self.recorder.key(HEAD)).await? {
            self.tail_pass(stop).await?;
        }
        Ok(Step::Idle)
    }

    async fn wait_for_work(&mut self) {
        self.tick.tick().await;
    }
}
