//! Quiet, honest logs for a repeating failure (polls, national calls, the database).

/// Quiet, honest logs for a repeating failure: the first failure is logged at once, repeats
/// at most once a minute with how many there were, and the recovery once, with the count.
#[derive(Debug)]
pub(crate) struct Trouble {
    what: &'static str,
    failures: u64,
    unlogged: u64,
    last_logged: Option<std::time::Instant>,
}

impl Trouble {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self { what, failures: 0, unlogged: 0, last_logged: None }
    }

    /// Records a failure; logs it unless one was logged less than a minute ago.
    pub(crate) fn failed(&mut self, error: &str, retry_in: std::time::Duration) {
        self.failures += 1;
        let due = self.last_logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
        if due {
            tracing::warn!(
                event = "failure_repeated",
                what = self.what,
                error,
                failures = self.failures,
                suppressed = self.unlogged,
                retry_in_ms = retry_in.as_millis() as u64,
                "{} failing",
                self.what
            );
            self.last_logged = Some(std::time::Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }

    /// Records a success; logs the recovery once if there were failures.
    pub(crate) fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                event = "failure_recovered",
                what = self.what,
                failures = self.failures,
                "{} recovered",
                self.what
            );
        }
        self.failures = 0;
        self.unlogged = 0;
        self.last_logged = None;
    }
}
