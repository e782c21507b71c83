//! The adaptive limit on national calls: how many may be in flight, and, once the portal has
//! said 429, how many may start per second. It shrinks on 429 (honouring Retry-After), on
//! 503 and other overload signs, and on rising latency; it grows back slowly while calls
//! succeed. Everything runs on tokio's clock, so it is exact under simulated time.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// What one call's answer says about the portal's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Signal {
    /// Answered (success or a refusal in the body: the portal had capacity).
    Answered,
    /// HTTP 429.
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 503, a timeout, a 5xx: the portal is struggling or away.
    Overloaded { retry_after: Option<Duration> },
    /// Nothing to learn (a connection refused, a bad answer).
    Neutral,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// No call starts before this (Retry-After, or backing off an outage).
    paused_until: Option<Instant>,
    /// Calls per second allowed to start, learnt from 429s; None: no pacing.
    rate: Option<f64>,
    next_start: Instant,
    /// Starts of recent calls, to measure the rate that was accepted.
    starts: VecDeque<Instant>,
    /// Smallest latency seen recently: the portal's unloaded speed.
    floor: Option<Duration>,
    floor_at: Instant,
    successes: u32,
    last_decrease: Option<Instant>,
    last_rate_change: Instant,
}

/// Shared by every task that calls the national portal.
#[derive(Debug)]
pub(crate) struct Limiter {
    max: usize,
    state: Mutex<State>,
    changed: Notify,
}

/// Holding one allows a call; dropping it frees the slot.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    started: Instant,
}

impl Permit {
    pub(crate) fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.limiter.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        drop(st);
        self.limiter.changed.notify_waiters();
    }
}

const WINDOW: Duration = Duration::from_secs(2);

impl Limiter {
    pub(crate) fn new(max: usize) -> Arc<Limiter> {
        let now = Instant::now();
        Arc::new(Limiter {
            max: max.max(1),
            state: Mutex::new(State {
                // Start modestly and grow: a cold portal is not flooded.
                limit: (max as f64).clamp(1.0, 4.0),
                in_flight: 0,
                paused_until: None,
                rate: None,
                next_start: now,
                starts: VecDeque::new(),
                floor: None,
                floor_at: now,
                successes: 0,
                last_decrease: None,
                last_rate_change: now,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current concurrency limit (for metrics and status).
    pub(crate) fn limit(&self) -> usize {
        self.lock().limit.floor() as usize
    }

    /// The current pacing rate, if any.
    #[cfg(test)]
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// Waits until a call may start.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        enum Next {
            Go(Option<Instant>),
            Sleep(Duration),
            Wait,
        }
        loop {
            let notified = self.changed.notified();
            let next = {
                let mut st = self.lock();
                let now = Instant::now();
                match st.paused_until {
                    Some(until) if until > now => Next::Sleep(until - now),
                    _ => {
                        st.paused_until = None;
                        if (st.in_flight as f64) < st.limit.floor().max(1.0) {
                            st.in_flight += 1;
                            let slot = st.rate.map(|rate| {
                                let slot = st.next_start.max(now);
                                st.next_start = slot + Duration::from_secs_f64(1.0 / rate);
                                slot
                            });
                            Next::Go(slot.filter(|s| *s > now))
                        } else {
                            Next::Wait
                        }
                    }
                }
            };
            match next {
                Next::Go(slot) => {
                    // The permit exists before the wait, so that a cancelled wait still frees
                    // the slot.
                    let mut permit = Permit { limiter: self.clone(), started: Instant::now() };
                    if let Some(slot) = slot {
                        tokio::time::sleep_until(slot).await;
                    }
                    self.mark_started(&mut permit);
                    return permit;
                }
                Next::Sleep(d) => tokio::time::sleep(d).await,
                Next::Wait => notified.await,
            }
        }
    }

    fn mark_started(&self, permit: &mut Permit) {
        let now = Instant::now();
        permit.started = now;
        let mut st = self.lock();
        st.starts.push_back(now);
        while st.starts.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            st.starts.pop_front();
        }
    }

    /// Learns from one answer.
    pub(crate) fn record(&self, permit: &Permit, signal: Signal) {
        let now = Instant::now();
        let latency = now.duration_since(permit.started);
        let mut st = self.lock();
        let max = self.max as f64;
        match signal {
            Signal::Answered => {
                // The floor decays: after 30 s a fresh sample replaces it, so that a portal
                // that became slower for good is not judged against an old best.
                if st.floor.is_none_or(|f| latency < f)
                    || now.duration_since(st.floor_at) > Duration::from_secs(30)
                {
                    st.floor = Some(latency);
                    st.floor_at = now;
                }
                let floor = st.floor.unwrap_or(latency);
                let queueing = latency > floor * 2 + Duration::from_millis(50);
                if queueing {
                    decrease(&mut st, now, 0.9);
                } else {
                    st.successes += 1;
                    if f64::from(st.successes) >= st.limit && st.limit < max {
                        st.limit = (st.limit + 1.0).min(max);
                        st.successes = 0;
                    }
                }
                // Probe a learnt rate upwards, gently, while nothing says 429.
                if let Some(rate) = st.rate
                    && now.duration_since(st.last_rate_change) > Duration::from_secs(5)
                {
                    st.rate = Some(rate * 1.05);
                    st.last_rate_change = now;
                    let accepted = st.starts.len() as f64 / WINDOW.as_secs_f64();
                    if rate > 4.0 * accepted.max(1.0) {
                        st.rate = None; // far above what is used: no longer the bound
                    }
                }
            }
            Signal::RateLimited { retry_after } => {
                let accepted = st.starts.len() as f64 / WINDOW.as_secs_f64();
                let current = st.rate.unwrap_or(accepted);
                let target = (0.9 * accepted.min(current)).max(0.2);
                if st.rate.is_none_or(|r| target < r) {
                    st.rate = Some(target);
                }
                st.last_rate_change = now;
                decrease(&mut st, now, 0.7);
                pause(&mut st, now, retry_after.unwrap_or(Duration::from_secs(1)));
            }
            Signal::Overloaded { retry_after } => {
                decrease(&mut st, now, 0.5);
                if let Some(after) = retry_after {
                    pause(&mut st, now, after);
                }
            }
            Signal::Neutral => {}
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

fn decrease(st: &mut State, now: Instant, factor: f64) {
    // At most one decrease per 200 ms: the answers of one burst are one signal.
    if st.last_decrease.is_some_and(|t| now.duration_since(t) < Duration::from_millis(200)) {
        return;
    }
    st.limit = (st.limit * factor).max(1.0);
    st.successes = 0;
    st.last_decrease = Some(now);
}

fn pause(st: &mut State, now: Instant, after: Duration) {
    let until = now + after.min(Duration::from_secs(300));
    if st.paused_until.is_none_or(|p| p < until) {
        st.paused_until = Some(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_limit_grows_with_successes_up_to_the_maximum() {
        let limiter = Limiter::new(8);
        assert_eq!(limiter.limit(), 4);
        for _ in 0..100 {
            let p = limiter.acquire().await;
            tokio::time::advance(Duration::from_millis(10)).await;
            limiter.record(&p, Signal::Answered);
        }
        assert_eq!(limiter.limit(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_halts_every_call_until_retry_after_and_sets_a_pace() {
        let limiter = Limiter::new(8);
        for _ in 0..10 {
            let p = limiter.acquire().await;
            tokio::time::advance(Duration::from_millis(100)).await;
            limiter.record(&p, Signal::Answered);
        }
        let p = limiter.acquire().await;
        limiter.record(&p, Signal::RateLimited { retry_after: Some(Duration::from_secs(3)) });
        drop(p);
        let before = Instant::now();
        let _p = limiter.acquire().await;
        assert!(Instant::now().duration_since(before) >= Duration::from_secs(3), "Retry-After honoured");
        let rate = limiter.rate().expect("a pace once 429 was seen");
        assert!(rate > 0.0 && rate < 10.0, "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_limit_is_in_flight() {
        let limiter = Limiter::new(3);
        let a = limiter.acquire().await;
        let b = limiter.acquire().await;
        let c = limiter.acquire().await;
        let waiting = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(waiting.is_err(), "a fourth call waits");
        drop(a);
        let d = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(d.is_ok(), "freed by a finished call");
        drop((b, c));
    }

    #[tokio::test(start_paused = true)]
    async fn rising_latency_shrinks_the_limit() {
        let limiter = Limiter::new(8);
        for _ in 0..40 {
            let p = limiter.acquire().await;
            tokio::time::advance(Duration::from_millis(20)).await;
            limiter.record(&p, Signal::Answered);
        }
        let grown = limiter.limit();
        for _ in 0..10 {
            let p = limiter.acquire().await;
            tokio::time::advance(Duration::from_millis(400)).await;
            limiter.record(&p, Signal::Answered);
        }
        assert!(limiter.limit() < grown, "{} < {grown}", limiter.limit());
    }
}
