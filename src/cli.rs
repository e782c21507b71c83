//! The command line: one subcommand each, dispatched to the module that does the work.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, Purpose},
    daemon,
    mock::{self, MockServer},
    ops,
    store::Store,
    telemetry::{self, LogFormat, Output},
};

#[derive(Debug, Parser)]
#[command(
    name = "dvc-sync",
    version,
    about = "Keeps provincial dossiers synchronized with the National Public Service Portal"
)]
pub struct Cli {
    /// Configuration file [default: /etc/dvc-sync/dvc-sync.toml if present, else built-in defaults]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT (exit 0 after a clean drain, 78 bad config, 1 fatal)
    Run,
    /// Validate the configuration and print it with secrets redacted (exit 78 when invalid)
    CheckConfig,
    /// Re-enqueue parked items: dead dossiers and quarantined records (both when neither flag is given)
    Retry {
        /// Dossiers the national portal refused
        #[arg(long)]
        dead: bool,
        /// Records quarantined locally (they are judged again by the next full pass)
        #[arg(long)]
        quarantined: bool,
        /// Only these (MaHoSo, or a quarantine key)
        mahoso: Vec<String>,
    },
    /// One full reconciliation pass now (by the running daemon if there is one)
    Reconcile {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run a portal mock (for tests, demos and benchmarks; bind it to loopback)
    Mock {
        #[command(subcommand)]
        portal: MockCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MockCommand {
    /// The national DVCQG adapter (see national-portal.md)
    National(NationalArgs),
    /// A simulated provincial one-stop system (see provincial-portal.md)
    Provincial(ProvincialArgs),
}

#[derive(Debug, Args)]
pub struct MockCommon {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Log format (logs go to stderr)
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct NationalArgs {
    #[command(flatten)]
    pub common: MockCommon,
    #[arg(long, default_value = "dvc-sync")]
    pub username: String,
    #[arg(long, default_value = "dvc-sync-secret")]
    pub password: String,
    /// The account's unit code; its last segment is the province
    #[arg(long, default_value = mock::catalogue::PROVINCE_UNIT)]
    pub madonvi: String,
    #[command(flatten)]
    pub faults: mock::national::Faults,
}

#[derive(Debug, Args)]
pub struct ProvincialArgs {
    #[command(flatten)]
    pub common: MockCommon,
    #[arg(long, default_value = "provincial-secret-key")]
    pub api_key: String,
    #[command(flatten)]
    pub knobs: mock::provincial::Knobs,
}

/// Exit code for an invalid configuration (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// Runs a command to completion and gives the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Mock { portal } => block_on(run_mock(portal)),
        Command::CheckConfig => match config::load(config_path, Purpose::Run) {
            Ok(c) => {
                print!("{}", c.render_redacted());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run => {
            let config = match config::load(config_path, Purpose::Run) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            telemetry::init(config.telemetry.log_format, Output::Stdout, "info");
            block_on(async move {
                let token = CancellationToken::new();
                let signals = token.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!(
                        event = "signal_received",
                        "stopping: draining in-flight work (a second signal aborts)"
                    );
                    signals.cancel();
                    shutdown_signal().await;
                    tracing::warn!(event = "signal_received", "second signal: aborting now");
                    std::process::exit(130);
                });
                match daemon::run(config, token).await {
                    Ok(()) => Ok(ExitCode::SUCCESS),
                    Err(e) => {
                        tracing::error!(event = "daemon_failed", error = format!("{e:#}"));
                        eprintln!("dvc-sync: {e:#}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            })
        }
        Command::Retry { dead, quarantined, mahoso } => {
            let config = match config::load(config_path, Purpose::Inspect) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let result = Store::open(&config.store.path)
                .map_err(anyhow::Error::from)
                .and_then(|store| ops::retry(&store, dead, quarantined, &mahoso));
            match result {
                Ok(done) => {
                    println!(
                        "re-enqueued {} dead dossier(s); released {} quarantined record(s) to be judged again by the next full pass",
                        done.dead, done.quarantined
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dvc-sync retry: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reconcile { json } => {
            let config = match config::load(config_path, Purpose::Inspect) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            telemetry::init(config.telemetry.log_format, Output::Stderr, "warn");
            block_on(async move {
                let report = ops::reconcile(&config, std::time::Duration::from_secs(24 * 3600)).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "reconciled {} records: {} changes the poller had missed, {} quarantined, {} dossiers re-enqueued; coverage {:.2}%",
                        report.records,
                        report.drift,
                        report.quarantined,
                        report.requeued,
                        report.coverage_percent
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

fn block_on(fut: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dvc-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dvc-sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_mock(portal: MockCommand) -> anyhow::Result<ExitCode> {
    let (common, default_port) = match &portal {
        MockCommand::National(a) => (&a.common, 8081),
        MockCommand::Provincial(a) => (&a.common, 8082),
    };
    telemetry::init(common.log_format, Output::Stderr, "info");
    let listen = common.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)));
    let listener =
        TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server: MockServer = match portal {
        MockCommand::National(a) => {
            let config = mock::national::NationalConfig {
                username: a.username,
                password: a.password,
                madonvi: a.madonvi,
                faults: a.faults,
            };
            mock::national::start(listener, config).await?
        }
        MockCommand::Provincial(a) => {
            let config = mock::provincial::ProvincialConfig { api_key: a.api_key, knobs: a.knobs };
            mock::provincial::start(listener, config).await?
        }
    };
    // The one line tests and scripts read to find the mock.
    println!("{}", server.addr());
    std::io::stdout().flush()?;
    tracing::info!(event = "mock_started", addr = %server.addr());
    shutdown_signal().await;
    tracing::info!(event = "mock_stopping");
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
