//! The end-to-end proof of the SQL source, on both databases: the real daemon reads the
//! OpenCPS tables of a real MariaDB and a real PostgreSQL with a SELECT-only account, while
//! the simulated province writes 2,000 dossiers into them (mess, defects, late commits,
//! inter-agency copies, silent dossier rows), the national mock answers with faults, and the
//! daemon is SIGKILLed again and again. Then: every valid dossier equal on both sides with its
//! whole history in order, the defective ones quarantined with their reasons, the unknown
//! procedures dead, nothing written to the provincial database, 0 duplicates.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    National,
    daemon::*,
    dbserver::{DbServer, Kind, READER, READER_PASSWORD},
};
use dvc_sync::{
    mock::{
        national::Faults,
        opencps::{DbKnobs, Province},
        provincial::Knobs,
    },
    provincial::sql::{Dialect, Profile},
    verify::{self, Verdict},
};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Polls the national mock until every valid dossier of the province is there or `limit` passes.
async fn converge(province: &Province, national: &str, limit: Duration) -> Verdict {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        let state = verify::national_state(&http, national).await.expect("national state");
        let stats: serde_json::Value =
            http.get(format!("{national}/_mock/stats")).send().await.unwrap().json().await.unwrap();
        let verdict = verify::compare(&province.truth(), &state, &stats, &status_map());
        if verdict.not_synchronized.is_empty() || Instant::now() > deadline {
            return verdict;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn the_promise_holds_on(kind: Kind) {
    let dossiers = env("DVC_SYNC_SQL_E2E_DOSSIERS", 2_000) as u32;
    let kills = env("DVC_SYNC_SQL_E2E_KILLS", 6) as u32;
    let seed = env("DVC_SYNC_SQL_E2E_SEED", 766);
    let server = DbServer::start(kind);
    let admin = server.create_database("opencps");
    let world = Knobs {
        dossiers,
        changes_per_second: 700.0,
        bad_record_rate: 0.03,
        messy_rate: 0.15,
        unknown_procedure_rate: 0.01,
        seed,
        ..Knobs::default()
    };
    let db = DbKnobs {
        late_commit_rate: 0.01,
        late_commit_ms: 1_500,
        copy_rate: 0.02,
        silent_dossier_rate: 0.2,
        whole_seconds: true,
        seed,
    };
    let province = Arc::new(Province::connect(&admin, world, db).await.expect("connect"));
    province.create_schema().await.unwrap();
    province.grant_reader(READER, READER_PASSWORD, "opencps").await.unwrap();
    let dialect = if kind == Kind::MariaDb { Dialect::MySql } else { Dialect::Postgres };
    province.execute(&Profile::load("opencps-v2", dialect).unwrap().indexes).await.unwrap();

    let national = National::start(Faults {
        error_rate: 0.03,
        drop_after_apply_rate: 0.03,
        rate_limit_per_second: 80.0,
        session_ttl_seconds: 3.0,
        latency_ms: 2,
        latency_jitter_ms: 2,
        seed,
        ..Faults::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &national.server.url(),
        &[
            "provincial.kind = \"sql\"",
            &format!("provincial.database_url = {:?}", server.reader_url("opencps")),
            "provincial.api_key = \"\"",
            "provincial.page_size = 500",
            // Longer than the longest open transaction plus modifiedDate's one-second precision.
            "provincial.look_back_seconds = 3.5",
            "provincial.reconcile_interval_seconds = 20",
            &format!("provincial.document_url = {:?}", dvc_sync::mock::opencps::DOCUMENT_URL),
        ],
    );

    let token = CancellationToken::new();
    let writing = province.run(token.clone());
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut daemon = Daemon::start(&config).await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.u64(800..3_500))).await;
        daemon.kill9().await;
        daemon = Daemon::start(&config).await;
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    while !province.settled() {
        assert!(Instant::now() < deadline, "the province did not finish writing: {:?}", province.stats());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let written = province.stats();
    let before = province.fingerprint().await.unwrap();
    let verdict = converge(&province, &national.server.url(), Duration::from_secs(300)).await;
    assert!(
        verdict.clean() && verdict.synchronized == verdict.valid,
        "{}\n{}",
        verdict.summary(),
        daemon.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let state = verify::national_state(&reqwest::Client::new(), &national.server.url()).await.unwrap();
    assert_eq!(
        state.len(),
        verdict.valid,
        "exactly the valid dossiers nationally: no inter-agency copy, nothing else"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
    token.cancel();
    let _ = writing.await;
    assert_eq!(
        province.fingerprint().await.unwrap(),
        before,
        "nothing was written to the provincial database"
    );
    let truth = province.truth();
    assert_parked_as_injected(dir.path(), &truth);
    let stats = national.stats().await;
    assert_eq!(stats["duplicate_history_entries"], 0);
    assert!(
        written.late_commits > 0 && written.copies > 0 && written.silent_dossier_updates > 0,
        "{written:?}"
    );
    eprintln!(
        "{}: {} dossiers ({} valid, {} history entries) in {:.0} s with {kills} SIGKILLs; writer {written:?}; national faults {}; read-backs {}; duplicates {}",
        kind.name(),
        verdict.dossiers,
        verdict.valid,
        verdict.history_entries,
        started.elapsed().as_secs_f64(),
        stats["http_faults"],
        stats["calls"]["TraCuuHoSo"]["ok"],
        stats["duplicate_history_entries"],
    );
    province.close().await;
}

on_both! {
    sigkills_late_commits_and_faults_lose_and_duplicate_nothing => the_promise_holds_on;
}
