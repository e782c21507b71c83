//! The command line: one subcommand each, dispatched to the module that does the work.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::{
    mock::{self, MockServer},
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

/// Runs a command to completion and gives the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Mock { portal } => block_on(run_mock(portal)),
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
