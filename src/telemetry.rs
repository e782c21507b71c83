//! Logging set-up: JSON lines (for journald and log pipelines) or pretty text (for people).
//! Nothing is installed unless a command asks, so library code and tests stay silent; a test
//! that wants logs sets `DVC_SYNC_TEST_LOG=debug` and calls [`init_for_tests`].

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`. Calling it twice
/// is harmless (the second call does nothing).
pub fn init(format: LogFormat, output: Output, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match (format, output) {
        (LogFormat::Json, Output::Stdout) => registry
            .with(
                fmt::layer().json().flatten_event(true).with_current_span(false).with_writer(std::io::stdout),
            )
            .try_init(),
        (LogFormat::Json, Output::Stderr) => registry
            .with(
                fmt::layer().json().flatten_event(true).with_current_span(false).with_writer(std::io::stderr),
            )
            .try_init(),
        (LogFormat::Pretty, Output::Stdout) => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()).with_writer(std::io::stdout))
            .try_init(),
        (LogFormat::Pretty, Output::Stderr) => registry
            .with(fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr))
            .try_init(),
    };
}

/// For tests: logs to the test's captured output only when `DVC_SYNC_TEST_LOG` is set.
pub fn init_for_tests() {
    if let Ok(filter) = std::env::var("DVC_SYNC_TEST_LOG") {
        let _ = tracing_subscriber::registry()
            .with(EnvFilter::new(filter))
            .with(fmt::layer().with_test_writer())
            .try_init();
    }
}

/// Quiet, honest logs for a repeating failure: the first failure is logged at once, repeats
/// at most once a minute with how many there were, and the recovery once, with the count.
#[derive(Debug)]
pub struct Trouble {
    what: &'static str,
    failures: u64,
    unlogged: u64,
    last_logged: Option<std::time::Instant>,
}

impl Trouble {
    pub const fn new(what: &'static str) -> Self {
        Self { what, failures: 0, unlogged: 0, last_logged: None }
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Records a failure; logs it unless one was logged less than a minute ago.
    pub fn failed(&mut self, error: &str, retry_in: std::time::Duration) {
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
    pub fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                event = "recovered",
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
