use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    dvc_sync::memory::tune_allocator();
    dvc_sync::cli::run(dvc_sync::cli::Cli::parse())
}
