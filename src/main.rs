use std::process::ExitCode;

fn main() -> ExitCode {
    dvc_sync::memory::tune_allocator();
    dvc_sync::cli::main()
}
