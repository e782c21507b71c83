//! dvc-sync: keeps a province's one-stop dossiers synchronized with the National Public
//! Service Portal. See README.md for the architecture; `main.rs` only dispatches the CLI.

pub mod cli;
pub mod config;
pub mod domain;
pub mod mock;
pub mod store;
pub mod telemetry;
