//! The national portal as the engine reaches it: every call (the pusher's writes and
//! read-backs, the audit's look-ups) goes through [`Portal::call`], under the adaptive
//! limiter, measured, counted, and noted for `status` and `/readyz`; a repeating failure is
//! logged quietly.

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

use super::{
    Shared,
    answer::{Answer, Transient, TransientKind},
    limiter::{Limiter, Signal},
    ports::{Clock, Sink},
    trouble::{Quiet, Trouble},
};
use crate::{domain::service::Service, metrics as m};

/// The sink, its limiter and the notes every call leaves.
pub(crate) struct Portal<N, C> {
    pub(crate) sink: N,
    pub(crate) limiter: Arc<Limiter>,
    shared: Arc<Shared<C>>,
    /// National call failures, logged quietly.
    trouble: Mutex<Trouble>,
    /// The wait noted with a failure that names none (the push retry policy's first step).
    first_retry: std::time::Duration,
    /// Set when the daemon stops: no call begins after it (those under way finish).
    stopping: CancellationToken,
    /// Calls refused as a whole, logged at most once a minute.
    refusals: Mutex<Quiet>,
}

impl<N: Sink, C: Clock> Portal<N, C> {
    pub(crate) fn new(
        sink: N,
        shared: Arc<Shared<C>>,
        max_concurrency: usize,
        first_retry: std::time::Duration,
    ) -> Portal<N, C> {
        Portal {
            sink,
            limiter: Limiter::new(max_concurrency),
            shared,
            trouble: Mutex::new(Trouble::new("national calls")),
            first_retry,
            stopping: CancellationToken::new(),
            refusals: Mutex::default(),
        }
    }

    /// The portal refused a call as a whole (not an item of it): the unit code or the account
    /// is wrong, and every dossier waits until it is fixed. `status` says FAILING with the
    /// reason; the log says it at most once a minute.
    pub(crate) fn refused(&self, service: Service, code: i64, message: &str) {
        let reason = format!(
            "the national portal refuses {service} calls as a whole (error_code {code}: {message}): nothing can be \
             sent; check national.madonvi (the unit code) and the national account"
        );
        self.shared.note_refused(&reason);
        if let Some(suppressed) = self.refusals.lock().unwrap_or_else(|p| p.into_inner()).due() {
            tracing::error!(event = "call_refused", service = service.name(), error_code = code, message = %message, suppressed, "the national portal refused the call as a whole");
        }
    }

    /// From now on no call begins: each answers "not sent" at once.
    pub(crate) fn stop(&self) {
        self.stopping.cancel();
    }

    /// One call under the limiter, measured.
    pub(crate) async fn call<'a, F, Fut>(&'a self, service: Service, f: F) -> Answer
    where
        F: FnOnce(&'a N) -> Fut,
        Fut: Future<Output = Answer>,
    {
        let not_sent = || {
            Answer::Retry(Transient::new(TransientKind::Stopping, "not sent: the daemon is stopping", false))
        };
        if self.stopping.is_cancelled() {
            return not_sent();
        }
        // A stop while waiting for a slot (or out a rate limit's pause) ends the wait: nothing
        // sent. (A wait given up frees its place in the limiter.)
        let permit = tokio::select! {
            biased;
            () = self.stopping.cancelled() => return not_sent(),
            permit = self.limiter.acquire() => permit,
        };
        let answer = f(&self.sink).await;
        let signal = match &answer {
            Answer::Ok(_) | Answer::Refused { .. } => Signal::Answered,
            Answer::Retry(t) => match t.kind {
                TransientKind::RateLimited => Signal::RateLimited { retry_after: t.retry_after },
                TransientKind::Unavailable | TransientKind::ServerError | TransientKind::Timeout => {
                    Signal::Overloaded { retry_after: t.retry_after }
                }
                _ => Signal::Neutral,
            },
        };
        self.limiter.record(&permit, signal);
        let elapsed = tokio::time::Instant::now().duration_since(permit.started());
        drop(permit);
        let name = service.name();
        metrics::counter!(m::CALLS, "service" => name, "outcome" => answer.label()).increment(1);
        metrics::histogram!(m::CALL_DURATION, "service" => name).record(elapsed.as_secs_f64());
        metrics::gauge!(m::CONCURRENCY_LIMIT).set(self.limiter.limit() as f64);
        if service.writes() {
            // Pushes only: look-ups that answer say nothing of whether writes get through.
            let failing = matches!(answer, Answer::Retry(_));
            metrics::gauge!(m::PUSH_FAILING).set(if failing { 1.0 } else { 0.0 });
        }
        let mut trouble = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        match &answer {
            Answer::Ok(_) | Answer::Refused { .. } => {
                self.shared.note_push_success();
                if service.writes() && matches!(answer, Answer::Ok(_)) {
                    // A write taken: whatever refused them as a whole before is fixed (a
                    // look-up answered proves nothing of an account that may read only).
                    self.shared.note_taken();
                }
                trouble.recovered();
            }
            Answer::Retry(t) => {
                self.shared.note_push_error(&t.reason);
                trouble.failed(&format!("{name}: {}", t.reason), t.retry_after.unwrap_or(self.first_retry));
                self.shared.stats.fault(t.kind.label());
                tracing::debug!(event = "call_failed", service = name, error = %t.reason, http_status = t.http_status, duration_ms = elapsed.as_millis() as u64);
            }
        }
        answer
    }
}
