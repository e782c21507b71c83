//! The worker contract. Every loop of the engine (each source's poller, the pusher, the
//! reconciler, the audit, the heartbeat) is a [`Worker`]: it does one unit of work when asked
//! and says whether more is waiting. One runner ([`run`]) owns what the loops have in common:
//! cancellation, waiting while idle, backoff after an error (reset by a success), the quiet
//! failure and recovery logs, and the record of each worker's state that `status` shows
//! (kept on a [`Board`], written to the database by the heartbeat).
//!
//! A worker never sleeps inside `work`: when it must wait (nothing due, a pace to keep) it says
//! `Idle` and waits in `wait_for_work`, which the runner abandons when the daemon stops. So a
//! stop is seen between two units of work, and a unit under way (a national call) finishes.

use std::{collections::BTreeMap, future::Future, sync::Mutex, time::Duration};

use backon::BackoffBuilder;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Shared, ports::Clock, trouble::Trouble};
use crate::store::StoreError;

/// What a unit of work came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More is waiting: work again at once.
    Busy,
    /// Nothing to do now: wait for work.
    Idle,
    /// Finished for good (a one-off pass).
    Done,
}

/// A unit of work failed; the runner waits (backoff, or what the other side asked) and tries
/// again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub(crate) error: String,
    /// The other side asked for at least this long (a 429's Retry-After).
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn new(error: impl Into<String>) -> Failure {
        Failure { error: error.into(), retry_after: None }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::new(format!("database: {e}"))
    }
}

/// Who a worker is to the runner: how `status` and the logs name it, and how long it waits
/// after a failure.
#[derive(Debug, Clone)]
pub(crate) struct Role {
    /// Its name in `status` (`poller:provincial`, `pusher`, ...).
    pub(crate) name: String,
    /// What its failure logs call it (the `what` of `failure_repeated`).
    pub(crate) what: String,
    /// The wait after a failure: from the first to the second, doubling, with jitter.
    pub(crate) retry: (Duration, Duration),
}

impl Role {
    pub(crate) fn new(name: impl Into<String>, what: impl Into<String>, retry: (Duration, Duration)) -> Role {
        Role { name: name.into(), what: what.into(), retry }
    }
}

/// One loop of the engine (see the module's comment).
pub(crate) trait Worker: Send {
    /// One unit of work. `stop` is cancelled when the daemon stops: a worker begins nothing
    /// long after it (a national call, a page), and may finish what it began.
    fn work(&mut self, stop: &CancellationToken) -> impl Future<Output = Result<Step, Failure>> + Send;
    /// Waits until work may be waiting again (called after `Idle`).
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;
}

/// A worker's state as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Busy,
    Idle,
    Failing,
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Busy => "busy",
            WorkerState::Idle => "idle",
            WorkerState::Failing => "failing",
            WorkerState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<WorkerState> {
        [WorkerState::Busy, WorkerState::Idle, WorkerState::Failing, WorkerState::Stopped]
            .into_iter()
            .find(|w| w.as_str() == s)
    }
}

/// What the runner last recorded of one worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// When it entered this state (µs since the epoch, the engine's clock).
    pub since: i64,
    pub last_error: Option<String>,
    /// Failures in a row (0 after a success).
    pub failures: u64,
}

/// Every worker's status, as the runners record it.
#[derive(Debug, Default)]
pub(crate) struct Board(Mutex<BTreeMap<String, WorkerStatus>>);

impl Board {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, WorkerStatus>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, name: &str, state: WorkerState, now: i64, failure: Option<&str>) {
        self.with(|board| {
            let entry = board.entry(name.to_owned()).or_insert_with(|| WorkerStatus {
                name: name.to_owned(),
                state,
                since: now,
                last_error: None,
                failures: 0,
            });
            if entry.state != state {
                entry.state = state;
                entry.since = now;
            }
            match failure {
                Some(error) => {
                    entry.failures += 1;
                    entry.last_error = Some(error.to_owned());
                }
                None if state != WorkerState::Stopped => entry.failures = 0,
                None => {}
            }
        });
    }

    /// Every worker's status, by name.
    pub(crate) fn snapshot(&self) -> Vec<WorkerStatus> {
        self.with(|board| board.values().cloned().collect())
    }

    /// Marks every worker stopped (the drain is over, or was cut off).
    pub(crate) fn stop_all(&self, now: i64) {
        self.with(|board| {
            for w in board.values_mut().filter(|w| w.state != WorkerState::Stopped) {
                w.state = WorkerState::Stopped;
                w.since = now;
            }
        });
    }
}

/// Runs `worker` until `stop` is cancelled (or it is `Done`): one unit of work after another,
/// waiting while it is idle, backing off after failures.
pub(crate) async fn run<W: Worker, C: Clock>(
    worker: &mut W,
    role: &Role,
    shared: &Shared<C>,
    stop: &CancellationToken,
) {
    let name = &role.name;
    let mut trouble = Trouble::new(role.what.clone());
    let (initial, max) = role.retry;
    let new_backoff = || super::backoff(initial, max, shared.next_seed()).build();
    let mut backoff = new_backoff();
    let now = || shared.clock.now().as_microsecond();
    let mut failing = false;
    while !stop.is_cancelled() {
        if !failing {
            shared.workers.set(name, WorkerState::Busy, now(), None);
        }
        match worker.work(stop).await {
            Ok(step) => {
                failing = false;
                trouble.recovered();
                backoff = new_backoff();
                match step {
                    Step::Busy => {
                        shared.workers.set(name, WorkerState::Busy, now(), None);
                        // Other tasks get their turn even when this one always has work.
                        tokio::task::yield_now().await;
                    }
                    Step::Idle => {
                        shared.workers.set(name, WorkerState::Idle, now(), None);
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => break,
                            () = worker.wait_for_work() => {}
                        }
                    }
                    Step::Done => break,
                }
            }
            // A unit cut short by the stop (its calls not sent) is not a failure to report.
            Err(_) if stop.is_cancelled() => break,
            Err(failure) => {
                failing = true;
                let wait = failure_wait(&failure, &mut backoff, max);
                trouble.failed(&failure.error, wait);
                shared.workers.set(name, WorkerState::Failing, now(), Some(&failure.error));
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    shared.workers.set(name, WorkerState::Stopped, now(), None);
}

/// The wait after a failure: the next backoff step, or what the other side asked, honoured up
/// to the policy's maximum (a Retry-After from outside must not stall a worker for days).
fn failure_wait(failure: &Failure, backoff: &mut impl Iterator<Item = Duration>, max: Duration) -> Duration {
    let next = backoff.next().unwrap_or(max);
    failure
        .retry_after
        .map(|after| after.min(max))
        .map_or(next, |after| after.max(next.min(after.saturating_mul(2))))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::sync::ports::TokioClock;

    /// Fails `failures` times, then is busy `busy` times, then idle.
    struct Scripted {
        failures: usize,
        busy: usize,
        calls: Arc<AtomicUsize>,
        waits: Arc<AtomicUsize>,
    }

    impl Worker for Scripted {
        async fn work(&mut self, _: &CancellationToken) -> Result<Step, Failure> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.failures > 0 {
                self.failures -= 1;
                return Err(Failure::new("it broke"));
            }
            if self.busy > 0 {
                self.busy -= 1;
                return Ok(Step::Busy);
            }
            Ok(Step::Idle)
        }
        async fn wait_for_work(&mut self) {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }

    fn shared() -> (Arc<Shared<TokioClock>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::Store::open(&dir.path().join("s.db")).unwrap());
        let clock = TokioClock::starting_at(jiff::Timestamp::UNIX_EPOCH);
        (Arc::new(Shared::new(store, clock, 7)), dir)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_counted_backed_off_and_cleared_by_a_success() {
        let (shared, _dir) = shared();
        let calls = Arc::new(AtomicUsize::new(0));
        let waits = Arc::new(AtomicUsize::new(0));
        let mut w = Scripted { failures: 3, busy: 2, calls: calls.clone(), waits: waits.clone() };
        let stop = CancellationToken::new();
        let task = {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                let role = Role::new(
                    "scripted",
                    "scripted work",
                    (Duration::from_millis(100), Duration::from_secs(1)),
                );
                run(&mut w, &role, &shared, &stop).await;
                w
            })
        };
        // Three failures: 100 ms, then about 200 and 400 (jittered, at most 1 s each).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let board = shared.workers.snapshot();
        assert_eq!(board[0].state, WorkerState::Failing);
        assert_eq!(board[0].failures, 1);
        assert_eq!(board[0].last_error.as_deref(), Some("it broke"));
        assert_eq!(calls.load(Ordering::Relaxed), 1, "no second try before the backoff");
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Then busy twice (at once), then idle and waiting.
        assert_eq!(calls.load(Ordering::Relaxed), 6);
        assert_eq!(waits.load(Ordering::Relaxed), 1);
        let board = shared.workers.snapshot();
        assert_eq!(board[0].state, WorkerState::Idle);
        assert_eq!(board[0].failures, 0, "a success clears the count");
        assert_eq!(board[0].last_error.as_deref(), Some("it broke"), "the last error stays visible");
        stop.cancel();
        let w = task.await.unwrap();
        assert_eq!(w.calls.load(Ordering::Relaxed), 6, "a stop abandons the wait, starts no work");
        assert_eq!(shared.workers.snapshot()[0].state, WorkerState::Stopped);
    }

    #[test]
    fn a_retry_after_from_outside_is_bounded() {
        let max = Duration::from_secs(300);
        let failure =
            |after: u64| Failure { error: "429".into(), retry_after: Some(Duration::from_secs(after)) };
        let mut backoff = std::iter::repeat(Duration::from_secs(1));
        assert_eq!(
            failure_wait(&failure(u64::MAX), &mut backoff, max),
            max,
            "no overflow, no 1,000-day stall"
        );
        assert_eq!(failure_wait(&failure(2), &mut backoff, max), Duration::from_secs(2));
        assert_eq!(failure_wait(&Failure::new("x"), &mut backoff, max), Duration::from_secs(1));
    }
}
