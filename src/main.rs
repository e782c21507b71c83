use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    dvc_sync::cli::run(dvc_sync::cli::Cli::parse())
}
