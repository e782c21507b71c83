//! Faithful mocks of both portals, for tests, the demo and benchmarks: the national DVCQG
//! adapter (`national`) and a simulated provincial one-stop system (`provincial`). Both run
//! in-process (`start(listener, config)`) or as `dvc-sync mock national|provincial`.

pub mod catalogue;
pub mod faults;
pub mod national;
pub mod opencps;
pub mod provincial;
pub mod report;
pub mod server;

pub use server::MockServer;
