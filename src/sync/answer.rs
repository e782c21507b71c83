//! What a national call came to, as the engine sees it: the adapter (`national::classify`)
//! turns every HTTP answer into one of these, and the pusher decides from them alone.

use std::time::Duration;

use serde_json::Value;

pub use crate::domain::service::Service;

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// error_code 0 (or "0", "00"): the whole body.
    Ok(Value),
    /// A non-zero error_code: the portal read the call and refused it; nothing was applied.
    Refused { code: i64, message: String },
    /// No usable answer: retry later.
    Retry(Transient),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transient {
    pub kind: TransientKind,
    pub reason: String,
    /// The call may have been applied although no answer says so (a lost acknowledgement):
    /// read back before sending anything that must not be applied twice.
    pub maybe_applied: bool,
    pub retry_after: Option<Duration>,
    pub http_status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientKind {
    /// HTTP 429.
    RateLimited,
    /// HTTP 503: refused at the door.
    Unavailable,
    /// Another 5xx (or an unexpected status): the backend may have acted.
    ServerError,
    Timeout,
    /// Could not connect: nothing sent.
    Connect,
    /// The connection broke after sending.
    Dropped,
    /// HTTP 200 with a body that is not the API's JSON (an HTML page, garbage, no error_code).
    BadAnswer,
    TooLarge,
    /// The session was refused again right after a new login.
    Session,
    /// Logging in failed.
    Login,
    /// Not sent: the daemon is stopping, and a drain begins no new call.
    Stopping,
}

impl TransientKind {
    /// A bounded label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            TransientKind::RateLimited => "rate_limited",
            TransientKind::Unavailable => "unavailable",
            TransientKind::ServerError => "server_error",
            TransientKind::Timeout => "timeout",
            TransientKind::Connect => "connect",
            TransientKind::Dropped => "dropped",
            TransientKind::BadAnswer => "bad_answer",
            TransientKind::TooLarge => "too_large",
            TransientKind::Session => "session",
            TransientKind::Login => "login",
            TransientKind::Stopping => "stopping",
        }
    }
}

impl Transient {
    /// Whether the call was never sent because the daemon is stopping.
    pub fn not_sent(&self) -> bool {
        self.kind == TransientKind::Stopping
    }

    /// A failure with no status and nothing the portal asked for.
    pub fn new(kind: TransientKind, reason: impl Into<String>, maybe_applied: bool) -> Transient {
        Transient { kind, reason: reason.into(), maybe_applied, retry_after: None, http_status: None }
    }

    /// An answer that cannot be used (it says success without what was asked, or refuses a
    /// look-up): nothing was applied.
    pub(crate) fn bad_answer(reason: impl Into<String>) -> Transient {
        Transient::new(TransientKind::BadAnswer, reason, false)
    }
}

impl Answer {
    /// A bounded label for metrics: "ok", "refused", or the transient kind.
    pub fn label(&self) -> &'static str {
        match self {
            Answer::Ok(_) => "ok",
            Answer::Refused { .. } => "refused",
            Answer::Retry(t) => t.kind.label(),
        }
    }

    pub fn retry(kind: TransientKind, reason: impl Into<String>, maybe_applied: bool) -> Answer {
        Answer::Retry(Transient::new(kind, reason, maybe_applied))
    }
}
