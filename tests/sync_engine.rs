//! The real daemon (the release or debug binary, as a child process) against the real mocks
//! on loopback: it converges under faults, through SIGKILL, and through SIGTERM, and parks
//! exactly what was injected.

mod common;

use std::time::Duration;

use common::{daemon::*, *};
use dvc_sync::{
    mock::{national::Faults, provincial::Knobs},
    verify::{Verdict, provincial_truth},
};
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(180);

async fn wait_finished(p: &Provincial) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while p.stats().await["finished"] != json!(true) {
        assert!(std::time::Instant::now() < deadline, "the simulation did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[track_caller]
fn assert_clean(v: &Verdict, logs: &str) {
    assert!(
        v.clean() && v.synchronized == v.valid,
        "{}\n--- last daemon log lines ---\n{}",
        v.summary(),
        logs.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

fn faulty_national(seed: u64) -> Faults {
    Faults {
        error_rate: 0.05,
        rate_limit_per_second: 40.0,
        session_ttl_seconds: 2.0,
        drop_after_apply_rate: 0.03,
        seed,
        ..Faults::default()
    }
}

fn busy_province(seed: u64) -> Knobs {
    Knobs { dossiers: 2_000, changes_per_second: 3_000.0, late_visibility_ms: 300, seed, ..Knobs::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_dossiers_converge_through_every_national_fault() {
    let national = National::start(faulty_national(7)).await;
    let provincial = Provincial::start(busy_province(7)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;

    // A short outage while the daemon is busy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    national.put_faults(json!({"outage": true})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    national.put_faults(json!({"outage": false})).await;

    wait_finished(&provincial).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), CONVERGE).await;
    assert_clean(&verdict, &daemon.logs());
    assert!(verdict.valid > 1_800, "{}", verdict.valid);

    let stats = national.stats().await;
    for fault in ["error_500", "rate_limited_429", "dropped_after_apply", "outage_503"] {
        assert!(stats["http_faults"][fault].as_u64() > Some(0), "{fault} was injected: {stats}");
    }
    assert!(stats["sessions_issued"].as_u64() > Some(2), "sessions expired and were renewed: {stats}");

    // Let the outbox settle (parked items are parked only after their last attempt).
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.sigterm().await;
    let status = daemon.wait(Duration::from_secs(10)).await.expect("stops after SIGTERM");
    assert!(status.success(), "{status:?}");
    let truth = provincial_truth(&reqwest::Client::new(), &provincial.server.url()).await.unwrap();
    assert_parked_as_injected(dir.path(), &truth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_by_sigkill_again_and_again_it_still_converges_without_duplicates() {
    let national = National::start(Faults { rate_limit_per_second: 80.0, ..faulty_national(11) }).await;
    let provincial = Provincial::start(busy_province(11)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut rng = fastrand::Rng::with_seed(11);
    let mut daemon = Daemon::start(&config).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.u64(400..2_500))).await;
        daemon.kill9().await;
        daemon = Daemon::start(&config).await;
    }
    wait_finished(&provincial).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), CONVERGE).await;
    assert_clean(&verdict, &daemon.logs());
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(10)).await.expect("stops").success());
    let truth = provincial_truth(&reqwest::Client::new(), &provincial.server.url()).await.unwrap();
    assert_parked_as_injected(dir.path(), &truth);
    let readbacks = national.stats().await["calls"]["TraCuuHoSo"]["ok"].as_u64().unwrap_or(0);
    assert!(readbacks > 0, "uncertain writes were read back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_becomes_visible_late_is_still_delivered() {
    let national = National::start(Faults::default()).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 0, changes_per_second: 0.0, ..Knobs::default() }).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    // A is written first but commits late; B is written after and visible at once.
    provincial.post("/_mock/dossiers?visible_after_ms=1500", provincial_record(&code(1), "new", 1)).await;
    provincial.post("/_mock/dossiers", provincial_record(&code(2), "new", 1)).await;
    let b = format!("/_mock/state/{}", code(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while national.get(&b).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "B never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(national.get(&format!("/_mock/state/{}", code(1))).await.0, 404, "A is not visible yet");
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(30)).await;
    assert_clean(&verdict, &daemon.logs());
    assert_eq!(verdict.synchronized, 2);
    assert!(daemon.logs().contains("late_changes_found"), "found by the look-back pass, not the head");
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dossier_does_not_hold_back_the_rest_of_its_batch() {
    let national = National::start(Faults::default()).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 0, changes_per_second: 0.0, ..Knobs::default() }).await;
    for i in 1..=10 {
        let mut r = provincial_record(&code(i), "new", 2);
        if i == 5 {
            r["MaTTHC"] = json!("9.990001"); // unknown nationally, yet its names are filled in
        }
        provincial.post("/_mock/dossiers", r).await;
    }
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    // The simulator's truth knows that raw record 5's procedure is unknown nationally: the
    // other nine are expected, and it is not.
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        let v =
            dvc_sync::verify::verify(&http, &provincial.server.url(), &national.server.url(), &status_map())
                .await
                .unwrap();
        if v.synchronized == 9 || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(verdict.synchronized, 9, "{}", verdict.summary());
    assert_eq!(verdict.valid, 9, "{}", verdict.summary());
    assert!(verdict.not_synchronized.is_empty(), "{}", verdict.summary());
    assert_eq!(verdict.injected_unknown_procedures, [code(5)]);
    assert_eq!(verdict.duplicate_history_entries, 0);
    let (_, calls) = national.get("/_mock/calls").await;
    let creates: Vec<&Value> =
        calls["items"].as_array().unwrap().iter().filter(|c| c["service"] == "DongBoHoSoMC").collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert_eq!(creates[0]["outcome"], "error_6");
    assert_eq!(creates[0]["items"].as_array().unwrap().len(), 10);
    assert_eq!(creates[1]["outcome"], "ok");
    let sent: Vec<&str> =
        creates[1]["items"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    assert_eq!(sent.len(), 9);
    assert!(!sent.contains(&code(5).as_str()));
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(10)).await.unwrap().success());
    let dead = rows(&db(dir.path()), "SELECT mahoso, reason FROM dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, code(5));
    assert!(dead[0].1.contains("error_code 6") && dead[0].1.contains("9.990001"), "{}", dead[0].1);

    // `retry --dead` puts it back in the outbox; the portal refuses it again.
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "retry", "--dead"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-enqueued 1 dead"), "{out:?}");
    assert!(rows(&db(dir.path()), "SELECT mahoso, reason FROM dead").is_empty());
    let outbox = rows(&db(dir.path()), "SELECT mahoso, CAST(attempts AS TEXT) FROM outbox");
    assert_eq!(outbox, vec![(code(5), "0".to_owned())]);
    let mut daemon = Daemon::start(&config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rows(&db(dir.path()), "SELECT mahoso, reason FROM dead").is_empty() {
        assert!(std::time::Instant::now() < deadline, "not parked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_heavy_pushing_exits_0_within_the_drain_and_loses_nothing() {
    let national = National::start(Faults { latency_ms: 150, ..Faults::default() }).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 3_000, changes_per_second: 0.0, seed: 3, ..Knobs::default() })
            .await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = national.stats().await["items_applied"]["history_entries"].as_u64().unwrap_or(0);
        if stored > 500 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pushing never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::ZERO).await;
    assert!(!verdict.not_synchronized.is_empty(), "still busy when stopped");
    let asked = std::time::Instant::now();
    daemon.sigterm().await;
    let status =
        daemon.wait(Duration::from_secs(5 + 3)).await.expect("exits within the drain deadline (5 s)");
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(asked.elapsed() < Duration::from_secs(8));
    assert!(daemon.logs().contains("drain_finished"));

    let mut daemon = Daemon::start(&config).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), CONVERGE).await;
    assert_clean(&verdict, &daemon.logs());
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let national = National::start(Faults::default()).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 5, changes_per_second: 0.0, ..Knobs::default() }).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut first = Daemon::start(&config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "run"])
        .output()
        .await
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("already running") && said.contains(&first.pid().to_string()), "{said}");
    assert!(first.child.try_wait().unwrap().is_none(), "the first keeps running");
    first.sigterm().await;
    first.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_runs_a_full_pass_with_or_without_the_daemon() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 120,
        changes_per_second: 0.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let reconcile = || async {
        let out = tokio::process::Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "reconcile", "--json"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Without a daemon: the pass records every dossier, nothing is pushed yet.
    let report = reconcile().await;
    assert_eq!(report["records"], 120);
    assert_eq!(report["coverage_percent"], 0.0);
    assert_eq!(national.stats().await["dossiers"], 0);
    // With one: it runs the pass and the command waits for its report.
    let mut daemon = Daemon::start(&config).await;
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = reconcile().await;
    assert_eq!(report["records"], 120);
    assert_eq!(report["drift"], 0, "nothing missed");
    assert_eq!(report["coverage_percent"], 100.0, "{report}");
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[test]
fn check_config_names_each_invalid_key_and_exits_78() {
    let dir = test_dir();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[provincial]\npage_size = 0\nbase_url = \"not a url\"\n[national]\nbatch_size = \"lots\"\n\
         [status_map]\nfinished = 42\n[telemetry]\nlog_format = \"yaml\"\n[daemon]\ndrain_secs = 3\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let said = String::from_utf8_lossy(&out.stderr);
    for key in [
        "provincial.page_size",
        "provincial.base_url",
        "national.batch_size",
        "status_map.finished",
        "telemetry.log_format",
        "daemon.drain_secs",
        "national.password",
    ] {
        assert!(said.contains(key), "{key} not named:\n{said}");
    }
    // A valid one prints the effective configuration, secrets redacted.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[provincial]\napi_key = \"sentinel-key-123\"\n[national]\nusername = \"u\"\npassword = \"sentinel-pw-456\"\nmadonvi = \"000.00.00.H58\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", good.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("national.password = \"<redacted>\""), "{printed}");
    assert!(!printed.contains("sentinel"), "{printed}");
}

/// A regression: the look-back window must start when the first pass starts. A slow first
/// pass reads past a change that is not visible yet; only the trailing pass can find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_hidden_during_a_slow_first_pass_is_found_by_the_look_back() {
    let national = National::start(Faults::default()).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 0, changes_per_second: 0.0, ..Knobs::default() }).await;
    provincial.post("/_mock/dossiers?visible_after_ms=3000", provincial_record(&code(1), "new", 1)).await;
    for i in 2..=600 {
        provincial.post("/_mock/dossiers", provincial_record(&code(i), "new", 1)).await;
    }
    provincial.put_faults(json!({"latency_ms": 700})).await;
    let dir = test_dir();
    let overrides = ["provincial.look_back_seconds = 5.0", "provincial.page_size = 100"];
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &overrides);
    let mut daemon = Daemon::start(&config).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(40)).await;
    assert_clean(&verdict, &daemon.logs());
    assert_eq!(verdict.synchronized, 600);
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_aborts_the_drain() {
    let national = National::start(Faults { latency_ms: 4_000, ..Faults::default() }).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 200, changes_per_second: 0.0, ..Knobs::default() }).await;
    let dir = test_dir();
    let overrides = ["daemon.drain_seconds = 30.0", "national.request_timeout_seconds = 20.0"];
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &overrides);
    let mut daemon = Daemon::start(&config).await;
    // Wait until calls are in flight (the login itself takes 4 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    daemon.sigterm().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(daemon.child.try_wait().unwrap().is_none(), "draining, not stopped yet");
    let asked = std::time::Instant::now();
    daemon.sigterm().await;
    let status = daemon.wait(Duration::from_secs(3)).await.expect("a second signal stops at once");
    assert_eq!(status.code(), Some(130));
    assert!(asked.elapsed() < Duration::from_secs(3));
}
