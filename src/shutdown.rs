//! The one shutdown source: SIGTERM, SIGINT or SIGHUP cancels a token that every task of a
//! command watches, for a bounded drain; a second signal aborts at once (exit 130).
//!
//! SIGHUP drains exactly like SIGTERM: the daemon re-reads nothing while it runs (half a
//! configuration applied to work under way is not safe). The daemon then exits with
//! [`EXIT_RELOAD`], so that systemd (`Restart=on-failure`) starts it again, reading the
//! configuration as it is now: a reload that never cuts a call short.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// The exit code after a SIGHUP's drain (EX_TEMPFAIL: "try again").
pub(crate) const EXIT_RELOAD: u8 = 75;

static HANGUP: AtomicBool = AtomicBool::new(false);

/// Whether the stop came from a SIGHUP.
pub(crate) fn reload_requested() -> bool {
    HANGUP.load(Ordering::Relaxed)
}

/// Resolves on SIGINT, SIGTERM or SIGHUP, with the signal's name.
pub(crate) async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => {
            HANGUP.store(true, Ordering::Relaxed);
            "SIGHUP"
        }
    }
}

/// A token the first signal cancels; the second exits the process at once. Call inside the
/// runtime.
pub(crate) fn token() -> CancellationToken {
    let token = CancellationToken::new();
    let first = token.clone();
    tokio::spawn(async move {
        let name = signal().await;
        if name == "SIGHUP" {
            tracing::info!(
                event = "signal_received",
                signal = name,
                "reloading: draining in-flight work, then exiting {EXIT_RELOAD} so that systemd starts the daemon again with the configuration as it is now (a second signal aborts)"
            );
        } else {
            tracing::info!(
                event = "signal_received",
                signal = name,
                "stopping: draining in-flight work (a second signal aborts)"
            );
        }
        first.cancel();
        let name = signal().await;
        tracing::warn!(event = "signal_received", signal = name, "second signal: aborting now");
        std::process::exit(130);
    });
    token
}
