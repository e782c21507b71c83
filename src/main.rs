use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cap_malloc_arenas();
    dvc_sync::cli::run(dvc_sync::cli::Cli::parse())
}

/// glibc gives each thread that contends for the allocator an arena of its own, up to eight
/// per core, and keeps what each arena once held: resident memory grows well past the live
/// heap (about 45 MiB during a backfill). Two arenas, one per runtime worker, keep it close
/// (docs/BENCHMARKS.md, memory); measured, the cap costs no throughput.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists, and M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
