//! dvc-sync: keeps a province's one-stop dossiers synchronized with the National Public
//! Service Portal. docs/DESIGN.md describes the architecture; `main.rs` only dispatches the CLI.

pub(crate) mod backup;
pub(crate) mod check_source;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod demo_merger;
pub mod domain;
pub(crate) mod help;
pub mod i18n;
pub mod memory;
pub(crate) mod metrics;
pub mod mock;
pub mod national;
pub(crate) mod ops;
pub mod page;
pub(crate) mod privacy;
pub mod provincial;
pub mod report;
pub(crate) mod say;
pub(crate) mod secret;
pub(crate) mod shutdown;
pub mod sim;
pub mod status;
pub mod store;
pub(crate) mod summaries;
pub mod sync;
pub mod telemetry;
pub mod transport;
pub mod verify;
