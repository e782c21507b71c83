//! The one shutdown source: SIGTERM or SIGINT cancels a token that every task of a command
//! watches, for a bounded drain; a second signal aborts at once (exit 130).

use tokio_util::sync::CancellationToken;

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A token the first signal cancels; the second exits the process at once. Call inside the
/// runtime.
pub(crate) fn token() -> CancellationToken {
    let token = CancellationToken::new();
    let first = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!(
            event = "signal_received",
            "stopping: draining in-flight work (a second signal aborts)"
        );
        first.cancel();
        signal().await;
        tracing::warn!(event = "signal_received", "second signal: aborting now");
        std::process::exit(130);
    });
    token
}
