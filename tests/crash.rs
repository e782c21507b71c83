//! The real process, killed: the release binary against the real mocks, both portals faulty
//! at once, SIGKILL at random moments (50 times by default; `DVC_SYNC_CRASH_KILLS=500` for the
//! long mode). It must converge, with the promise checked through the mocks' views.

mod common;

use std::time::{Duration, Instant};

use common::{daemon::*, *};
use dvc_sync::{
    mock::{national::Faults, provincial::Knobs},
    verify::provincial_truth,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_with_both_portals_faulty_loses_and_duplicates_nothing() {
    crash_run(false).await;
}

/// The same behind an OAuth2 gateway (tokens that expire every three seconds), half as many kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_behind_an_oauth2_gateway_loses_and_duplicates_nothing() {
    crash_run(true).await;
}

async fn crash_run(gateway: bool) {
    let kills: u32 = std::env::var("DVC_SYNC_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let kills = if gateway { kills.div_ceil(2) } else { kills };
    let seed: u64 = std::env::var("DVC_SYNC_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(2026);
    let faults = Faults {
        error_rate: 0.03,
        drop_after_apply_rate: 0.03,
        rate_limit_per_second: 60.0,
        session_ttl_seconds: 3.0,
        latency_ms: 2,
        latency_jitter_ms: 2,
        seed,
        ..Faults::default()
    };
    let national =
        if gateway { National::start_gateway(faults).await } else { National::start(faults).await };
    // Enough activity to last through the kills: about 0.9 s between kills on average.
    let dossiers = (kills * 40).clamp(400, 20_000);
    let provincial = Provincial::start(Knobs {
        dossiers,
        changes_per_second: f64::from(dossiers) * 6.5 / (f64::from(kills) * 0.9),
        late_visibility_ms: 300,
        error_rate: 0.05,
        malformed_rate: 0.02,
        seed,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let token_url = format!("national.token_url = \"{}/token\"", national.server.url());
    let overrides: Vec<&str> = if gateway {
        vec![
            "national.auth = \"oauth2\"",
            &token_url,
            "national.client_id = \"dvc-sync\"",
            "national.client_secret = \"dvc-sync-secret\"",
        ]
    } else {
        Vec::new()
    };
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &overrides);
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut daemon = Daemon::start(&config).await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.u64(150..1_650))).await;
        daemon.kill9().await;
        daemon = Daemon::start(&config).await;
    }
    let killing = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(180);
    while provincial.stats().await["finished"] != json!(true) {
        assert!(Instant::now() < deadline, "the province did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(300)).await;
    assert!(
        verdict.clean() && verdict.synchronized == verdict.valid,
        "{}\n{}",
        verdict.summary(),
        daemon.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
    let truth = provincial_truth(&reqwest::Client::new(), &provincial.server.url()).await.unwrap();
    assert_parked_as_injected(dir.path(), &truth);
    let stats = national.stats().await;
    let page_faults = provincial.stats().await;
    eprintln!(
        "{kills} kills in {:.0} s; {} dossiers ({} valid) converged in {:.0} s total; national faults {}; provincial error pages {}, malformed {}; read-backs {}; duplicates {}",
        killing.as_secs_f64(),
        verdict.dossiers,
        verdict.valid,
        started.elapsed().as_secs_f64(),
        stats["http_faults"],
        page_faults["error_pages"],
        page_faults["malformed_pages"],
        stats["calls"]["TraCuuHoSo"]["ok"],
        stats["duplicate_history_entries"],
    );
}
