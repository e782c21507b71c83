use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: the daemon parses and drops many small JSON
/// values a second; glibc's malloc cost a quarter of its CPU time and fragmented its arenas
/// (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dvc_sync::cli::run(dvc_sync::cli::Cli::parse())
}
