//! A merged province end to end, on real servers: the old system is the HTTP listing (Tiền
//! Giang's, H58 codes), the new one OpenCPS on a real MariaDB (Đồng Tháp's, H20), read with a
//! SELECT-only account, 2,000 dossiers between them, national faults, SIGKILLs. Midway the
//! cutover: the old system stops, every in-flight dossier moves to the new one (its history
//! copied with the whitespace changed, a new processing unit, the new system's own version
//! numbers, row ids and times of its own); the new system then goes on with each; the old one
//! deletes some, touches others, and records a late step in one that moved. Then: every valid
//! dossier current nationally as its owner holds it (moved ones as the new system holds them),
//! each history entry once and in order, nothing re-keyed, no status backwards, the late step
//! ignored, what vanished from the old system kept nationally, and the quarantine equal to the
//! defects injected in either system.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    National, Provincial,
    daemon::*,
    dbserver::{DbServer, Kind, READER, READER_PASSWORD},
};
use dvc_sync::{
    mock::{
        national::Faults,
        opencps::{DbKnobs, Province},
        provincial::{Knobs, TruthItem, cutover, truth_items},
    },
    provincial::sql::{Dialect, Profile},
    verify::{self, Verdict},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The old system's whole truth, through its `/_mock/truth`.
async fn old_truth(old: &Provincial) -> Vec<TruthItem> {
    truth_items(&old.truth().await)
}

/// Whether a record is in flight: valid, a known procedure, not in a final state.
fn in_flight(t: &TruthItem) -> bool {
    let status = t.record.get("TrangThai").and_then(Value::as_str).unwrap_or("");
    t.defect.is_none() && !t.unknown_procedure && !matches!(status, "denied" | "cancelled" | "done")
}

struct Expected {
    /// Dossiers as their owner holds them (the old system's, as last synchronised for those it
    /// deleted), compared exactly.
    owned: Vec<TruthItem>,
    /// Moved dossiers as the new system holds them, compared by identity.
    moved: Vec<TruthItem>,
}

async fn verdict(national: &National, expected: &Expected) -> Verdict {
    let http = reqwest::Client::new();
    let state = verify::national_state(&http, &national.server.url()).await.expect("national state");
    let stats = national.stats().await;
    verify::compare_merged(&expected.owned, &expected.moved, &state, &stats, &status_map(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_from_the_http_listing_to_opencps_on_mariadb_loses_and_repeats_nothing() {
    let dossiers = env("DVC_SYNC_MERGER_E2E_DOSSIERS", 2_000) as u32;
    let kills = env("DVC_SYNC_MERGER_E2E_KILLS", 6) as u32;
    let seed = env("DVC_SYNC_MERGER_E2E_SEED", 2025);
    let rates = Knobs {
        dossiers: dossiers / 2,
        changes_per_second: 300.0,
        bad_record_rate: 0.03,
        messy_rate: 0.15,
        unknown_procedure_rate: 0.01,
        seed,
        ..Knobs::default()
    };
    let old = Provincial::start(Knobs { madonvi: "000.00.00.H58".into(), ..rates.clone() }).await;
    let server = DbServer::start(Kind::MariaDb);
    let admin = server.create_database("opencps");
    let writer = DbKnobs {
        late_commit_rate: 0.01,
        late_commit_ms: 1_500,
        copy_rate: 0.02,
        silent_dossier_rate: 0.2,
        whole_seconds: true,
        seed,
    };
    // The old system stops at the cutover, before it has filed all of its share: the new one
    // files more, so that the two hold more than `dossiers` between them.
    let new_world =
        Knobs { madonvi: "000.00.00.H20".into(), seed: seed ^ 0x4e20, dossiers: dossiers * 6 / 10, ..rates };
    let new = Arc::new(Province::connect(&admin, new_world, writer).await.expect("connect"));
    new.create_schema().await.unwrap();
    new.grant_reader(READER, READER_PASSWORD, "opencps").await.unwrap();
    new.execute(&Profile::load("opencps-v2", Dialect::MySql).unwrap().indexes).await.unwrap();
    let national = National::start_unit(
        Faults {
            error_rate: 0.03,
            drop_after_apply_rate: 0.03,
            rate_limit_per_second: 80.0,
            session_ttl_seconds: 3.0,
            latency_ms: 2,
            latency_jitter_ms: 2,
            seed,
            ..Faults::default()
        },
        "000.00.00.H20",
        &["000.00.00.H58"],
    )
    .await;
    let dir = test_dir();
    let old_url = old.server.url();
    let reader = format!("database_url = {:?}", server.reader_url("opencps"));
    let document_url = format!("document_url = {:?}", dvc_sync::mock::opencps::DOCUMENT_URL);
    let new_keys = [
        "kind = \"sql\"",
        "api_key = \"\"",
        &reader,
        &document_url,
        "page_size = 500",
        "look_back_seconds = 3.5",
        "supersedes = [\"tiengiang\"]",
    ];
    let config = write_sources_config(
        dir.path(),
        &[
            ("tiengiang", &old_url, &["reconcile_interval_seconds = 20"]),
            ("dongthap", "http://127.0.0.1:9", &new_keys),
        ],
        &national.server.url(),
        &["national.madonvi = \"000.00.00.H20\"", "national.predecessors = [\"000.00.00.H58\"]"],
    );
    let (code, text) = cli(&config, &["check-config"]);
    assert_eq!(code, 0, "{text}");

    let token = CancellationToken::new();
    let writing = new.run(token.clone());
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut daemon = Daemon::start(&config).await;
    // SIGKILLs throughout, the cutover among them.
    let cutover_after = kills / 2;
    let mut moved = BTreeSet::new();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.u64(800..3_500))).await;
        daemon.kill9().await;
        if k == cutover_after {
            // The cutover: the old system stops; its in-flight dossiers move to the new one.
            old.post("/_mock/pause", Value::Null).await;
            for t in old_truth(&old).await.into_iter().filter(in_flight) {
                new.world().upsert_raw(cutover::migrated(&t.record), 0);
                moved.insert(t.key);
            }
        }
        daemon = Daemon::start(&config).await;
    }
    assert!(moved.len() > 20, "only {} dossiers were in flight at the cutover", moved.len());
    let deadline = Instant::now() + Duration::from_secs(240);
    while !new.settled() {
        assert!(Instant::now() < deadline, "the new system did not finish writing: {:?}", new.stats());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new system goes on with each moved dossier.
    for t in new.truth().iter().filter(|t| moved.contains(&t.key)) {
        let record =
            new.world().truth().into_iter().find(|v| v["key"] == t.key.as_str()).unwrap()["record"].clone();
        new.world().upsert_raw(cutover::with_step(&record, "Đã chuyển xử lý tại hệ thống mới"), 0);
    }
    // Once the moves are recorded, the old system: a late step in a moved dossier, some moved
    // and some finished dossiers deleted, others touched (written again unchanged).
    let deadline = Instant::now() + Duration::from_secs(120);
    let recorded_moves = |dir: &std::path::Path| {
        rows(&db(dir), "SELECT mahoso, source FROM dossier WHERE moved_from = 'tiengiang'").len()
    };
    while recorded_moves(dir.path()) < moved.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} moves recorded",
            recorded_moves(dir.path()),
            moved.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before_old_changes = old_truth(&old).await;
    let finished: Vec<&TruthItem> =
        before_old_changes.iter().filter(|t| !moved.contains(&t.key) && t.defect.is_none()).collect();
    // The old system deletes some of these below, and they are expected nationally as last
    // synchronised: first let the daemon read each as the old system holds it (its poller may
    // still be catching up after the last SIGKILL; a dossier deleted unread was never the
    // daemon's to send).
    let read_as_held = |dir: &std::path::Path| {
        let conn = db(dir);
        finished.iter().all(|t| {
            let held: Option<i64> = conn
                .query_row(
                    "SELECT version FROM dossier WHERE mahoso = ?1 AND source = 'tiengiang'",
                    [&t.key],
                    |r| r.get(0),
                )
                .ok();
            held.is_some_and(|v| t.record["version"].as_i64().is_none_or(|want| v >= want))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !read_as_held(dir.path()) {
        assert!(Instant::now() < deadline, "the old system's finished dossiers were not all read");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let late = moved.iter().next().cloned().unwrap();
    let late_record = before_old_changes.iter().find(|t| t.key == late).unwrap().record.clone();
    old.post("/_mock/dossiers", cutover::with_step(&late_record, "Bước làm muộn ở hệ thống cũ")).await;
    let mut deleted = BTreeMap::new();
    for t in before_old_changes.iter().filter(|t| moved.contains(&t.key)).skip(1).step_by(5) {
        deleted.insert(t.key.clone(), t.clone());
    }
    for t in finished.iter().step_by(25) {
        deleted.insert(t.key.clone(), (*t).clone());
    }
    for key in deleted.keys() {
        let status =
            old.http.delete(old.url(&format!("/_mock/dossiers/{key}"))).send().await.unwrap().status();
        assert_eq!(status.as_u16(), 204, "{key}");
    }
    for t in finished.iter().skip(7).step_by(25) {
        old.post("/_mock/dossiers", t.record.clone()).await;
    }

    // Expected: the old system's dossiers as it holds them (those deleted as last
    // synchronised), moved ones as the new system holds them, the new system's own.
    let mut owned: Vec<TruthItem> =
        old_truth(&old).await.into_iter().filter(|t| !moved.contains(&t.key)).collect();
    owned.extend(deleted.values().filter(|t| !moved.contains(&t.key)).cloned());
    let (moved_truth, native): (Vec<TruthItem>, Vec<TruthItem>) =
        new.truth().into_iter().partition(|t| moved.contains(&t.key));
    owned.extend(native);
    let expected = Expected { owned, moved: moved_truth };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut v = verdict(&national, &expected).await;
    while !v.not_synchronized.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        v = verdict(&national, &expected).await;
    }
    assert!(
        v.clean() && v.synchronized == v.valid,
        "{}\n{}",
        v.summary(),
        daemon.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    // Nothing re-keyed: exactly the valid dossiers of both systems, under their MaHoSo.
    let state = verify::national_state(&reqwest::Client::new(), &national.server.url()).await.unwrap();
    assert_eq!(state.len(), v.valid, "exactly the valid dossiers nationally");
    assert!(v.dossiers >= dossiers as usize, "{} dossiers in the two systems", v.dossiers);
    assert!(state.keys().any(|k| k.contains(".H58-")) && state.keys().any(|k| k.contains(".H20-")));
    // The late step in the old system was ignored; deleted dossiers stay nationally.
    let late_state = &state[&late];
    assert!(
        !late_state["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["NoiDungXuLy"] == "Bước làm muộn ở hệ thống cũ"),
        "the old system's late step reached the national portal"
    );
    for t in deleted.values().filter(|t| !t.unknown_procedure) {
        assert!(state.contains_key(&t.key), "{} vanished from the old system and nationally", t.key);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
    token.cancel();
    let _ = writing.await;
    let mut truth = expected.owned.clone();
    truth.extend(expected.moved.clone());
    assert_parked_as_injected(dir.path(), &truth);
    let ignored =
        rows(&db(dir.path()), "SELECT mahoso, CAST(ignored AS TEXT) FROM dossier WHERE ignored > 0");
    assert!(ignored.iter().any(|(m, _)| *m == late), "the late step was not counted as ignored: {ignored:?}");
    let status = status_json(&config);
    let sources: BTreeMap<String, u64> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["dossiers"].as_u64().unwrap()))
        .collect();
    assert!(sources["dongthap"] > moved.len() as u64 && sources["tiengiang"] > 0, "{sources:?}");
    let stats = national.stats().await;
    assert_eq!(stats["duplicate_history_entries"], 0);
    eprintln!(
        "merger: {} dossiers ({} valid; {} moved, {} deleted in the old system) in {:.0} s with {kills} SIGKILLs; sources {sources:?}; writer {:?}; national faults {}",
        v.dossiers,
        v.valid,
        moved.len(),
        deleted.len(),
        started.elapsed().as_secs_f64(),
        new.stats(),
        stats["http_faults"],
    );
    new.close().await;
}
