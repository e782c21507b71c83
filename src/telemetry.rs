//! Logging set-up: JSON lines (for journald and log pipelines) or pretty text (for people).
//! Nothing is installed unless a command asks, so library code and tests stay silent; a test
//! that wants logs sets `DVC_SYNC_TEST_LOG=debug` and calls [`init_for_tests`].

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub use crate::config::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`. Calling it twice
/// is harmless (the second call does nothing).
pub fn init(format: LogFormat, output: Output, default_filter: &str) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // The migration library's own lines have no `event` and name its build paths: the store
    // logs `database_migrated` instead.
    if let Ok(quiet) = "rusqlite_migration=warn".parse() {
        filter = filter.add_directive(quiet);
    }
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

/// Installs the Prometheus recorder once per process and returns its handle. Durations are
/// histograms with buckets fit for each (a call lasts milliseconds; a sync lag, seconds).
pub(crate) fn install_metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let call = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            let lag = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(crate::metrics::CALL_DURATION.into()), &call)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(crate::metrics::SYNC_LAG.into()), &lag))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    event = "metrics_recorder_exists",
                    "another metrics recorder is installed; /metrics may be empty"
                );
            }
            crate::metrics::describe();
            handle
        })
        .clone()
}

/// `/` (the page), `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (doing its
/// job, or why not). Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the
/// page judges where a request comes from.
pub(crate) fn health_router<F>(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    readiness: F,
    page: crate::page::PageState,
) -> axum::Router
where
    F: Fn() -> crate::sync::Readiness + Clone + Send + Sync + 'static,
{
    use axum::{
        Json,
        extract::ConnectInfo,
        http::{HeaderMap, StatusCode},
        response::IntoResponse,
        routing::get,
    };
    let token = page.token().cloned();
    axum::Router::new()
        .route("/", get(crate::page::handler).with_state(page))
        .route(
            "/metrics",
            get(move |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>, headers: HeaderMap| {
                let handle = handle.clone();
                let token = token.clone();
                async move {
                    // With a token, /metrics needs it as the page does; without, it is served as
                    // before, wherever telemetry.metrics_listen lets it be reached.
                    if token.is_some()
                        && let Err(refused) = crate::page::allowed(token.as_ref(), peer, &headers)
                    {
                        return refused.into_response();
                    }
                    handle.run_upkeep();
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let r = readiness();
                    let status = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, Json(r)).into_response()
                }
            }),
        )
}
