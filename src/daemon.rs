//! `dvc-sync run`: the daemon. Takes the database's lock, opens the store, builds the HTTP
//! adapters and runs the engine until the token is cancelled (SIGTERM/SIGINT), then drains.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    national::HttpNational,
    provincial::HttpProvincial,
    store::{Store, lock::DaemonLock},
    sync::{Engine, EngineConfig, ports::SystemClock},
};

/// Runs the daemon until `token` is cancelled and the drain is over.
pub async fn run(config: Config, token: CancellationToken) -> anyhow::Result<()> {
    let _lock = DaemonLock::acquire(&config.store.path)?;
    let store = Arc::new(Store::open(&config.store.path)?);
    let source = HttpProvincial::new(&config.provincial).context("while setting up the provincial client")?;
    let sink = HttpNational::new(&config.national).context("while setting up the national client")?;
    let engine = Engine::new(store, source, sink, SystemClock, EngineConfig::from_config(&config))?;
    tracing::info!(
        event = "daemon_started",
        version = env!("CARGO_PKG_VERSION"),
        db = %config.store.path.display(),
        provincial = %config.provincial.http.base_url,
        national = %config.national.http.base_url,
        batch_size = config.national.batch_size,
    );
    engine.run(token).await;
    tracing::info!(event = "daemon_stopped");
    Ok(())
}
