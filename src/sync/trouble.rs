//! Quiet, honest logs for a repeating failure (polls, national calls, the database).

/// At most one log line a minute for an event that repeats, with how many were left out.
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    last: Option<std::time::Instant>,
    left_out: u64,
}

impl Quiet {
    /// Whether to log this one, with how many were left out since the last line logged.
    pub(crate) fn due(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60)) {
            self.left_out += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.left_out))
    }

    /// The event stopped: the next one is logged at once.
    pub(crate) fn reset(&mut self) {
        self.last = None;
        self.left_out = 0;
    }
}

/// Quiet, honest logs for a repeating failure: the first failure is logged at once, repeats
/// at most once a minute with how many there were, and the recovery once, with the count.
#[derive(Debug)]
pub(crate) struct Trouble {
    what: std::borrow::Cow<'static, str>,
    failures: u64,
    quiet: Quiet,
}

impl Trouble {
    pub(crate) fn new(what: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self { what: what.into(), failures: 0, quiet: Quiet { last: None, left_out: 0 } }
    }

    /// Records a failure; logs it unless one was logged less than a minute ago.
    pub(crate) fn failed(&mut self, error: &str, retry_in: std::time::Duration) {
        self.failures += 1;
        if let Some(suppressed) = self.quiet.due() {
            tracing::warn!(
                event = "failure_repeated",
                what = &*self.what,
                error,
                failures = self.failures,
                suppressed,
                retry_in_ms = retry_in.as_millis() as u64,
                "{} failing",
                &*self.what
            );
        }
    }

    /// Records a success; logs the recovery once if there were failures.
    pub(crate) fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                event = "failure_recovered",
                what = &*self.what,
                failures = self.failures,
                "{} recovered",
                &*self.what
            );
        }
        self.failures = 0;
        self.quiet.reset();
    }
}
