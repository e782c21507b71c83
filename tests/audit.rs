//! The audit, with the real daemon against the real mocks: after a full sync the national mock
//! loses everything (`/_mock/reset`, as a restore from an old backup would), then one dossier,
//! then the end of some histories, each while answers are lost and calls are rate-limited. The
//! audit finds each loss and the engine repairs it: every dossier equal on both sides again,
//! nothing appended twice or out of order, verified coverage back to 100 %. And `dvc-sync audit`
//! through the running daemon: drift reported (exit 1), repaired, then none (exit 0), its
//! look-ups within the rate it was given, counted at the mock.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

/// Look-ups the national mock has answered, whatever the outcome.
async fn look_ups(national: &National) -> u64 {
    let stats = national.stats().await;
    stats["calls"]["TraCuuHoSo"].as_object().map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
}

/// Until every valid dossier is equal on both sides and the daemon has verified all of them.
async fn synchronized_and_verified(
    provincial: &Provincial,
    national: &National,
    config: &Path,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::ZERO).await;
        let status = status_json(config);
        let done = provincial.stats().await["finished"] == json!(true)
            && verdict.not_synchronized.is_empty()
            && verdict.valid > 0
            && status["outbox"]["depth"] == 0
            && status["audit"]["verified_percent"].as_f64() == Some(100.0);
        if done {
            assert!(verdict.clean(), "{}", verdict.summary());
            return;
        }
        assert!(Instant::now() < deadline, "{}\nstatus: {status}", verdict.summary());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn clean_knobs(dossiers: u32, seed: u64) -> Knobs {
    Knobs {
        dossiers,
        changes_per_second: 400.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        seed,
        ..Knobs::default()
    }
}

/// Dossiers the national mock holds with at least `entries` history entries, by MaHoSo.
async fn held_with_history(national: &National, entries: usize) -> Vec<String> {
    let (_, page) = national.get("/_mock/state?limit=10000").await;
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["history"].as_array().map_or(0, Vec::len) >= entries)
        .filter_map(|d| d["dossier"]["MaHoSo"].as_str().map(str::to_owned))
        .collect()
}

async fn truncate(national: &National, mahoso: &str, keep: usize) {
    let url = national.url(&format!("/_mock/state/{mahoso}/truncate"));
    let answer = national.http.post(url).json(&json!({"keep": keep})).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

async fn forget(national: &National, mahoso: &str) {
    let answer = national.http.delete(national.url(&format!("/_mock/state/{mahoso}"))).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

fn assert_no_duplicates(stats: &Value) {
    assert_eq!(stats["duplicate_history_entries"], 0, "{stats}");
    assert_eq!(stats["out_of_order_history_entries"], 0, "{stats}");
    assert_eq!(stats["rejected_status_changes"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_national_loss_is_found_and_repaired_while_answers_are_lost_and_calls_limited() {
    let national = National::start(Faults { seed: 16, ..Faults::default() }).await;
    let provincial = Provincial::start(clean_knobs(150, 16)).await;
    let dir = test_dir();
    // Verified dossiers are read again after ~9 s (half a cycle of 17 s), at most 40 a second.
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["national.audit_per_second = 40.0", "national.audit_cycle_days = 0.0002"],
    );
    let mut daemon = Daemon::start(&config).await;
    synchronized_and_verified(&provincial, &national, &config, Duration::from_secs(120)).await;
    assert_no_duplicates(&national.stats().await);
    let status = status_json(&config);
    assert_eq!(status["audit"]["drift_found"], 0, "nothing lost yet: {status}");

    // From now on a fifth of the answers are lost after the call was applied, and more than 30
    // calls a second are refused with 429.
    let faults =
        national.put_faults(json!({"drop_after_apply_rate": 0.2, "rate_limit_per_second": 30.0})).await;
    assert!(faults.status().is_success());

    // 1. Everything lost (reset also clears the mock's counters and sessions).
    let before = status_json(&config)["audit"]["drift_found"].as_u64().unwrap();
    let (_, reset) = {
        let r = national.http.post(national.url("/_mock/reset")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(reset["reset"], true);
    synchronized_and_verified(&provincial, &national, &config, Duration::from_secs(180)).await;
    let status = status_json(&config);
    let found = status["audit"]["drift_found"].as_u64().unwrap();
    assert!(found >= before + 100, "the loss of 150 dossiers was found (most by the audit): {status}");
    let stats = national.stats().await;
    assert_no_duplicates(&stats);
    assert!(stats["http_faults"]["dropped_after_apply"].as_u64().unwrap_or(0) > 5, "{stats}");
    assert!(stats["http_faults"]["rate_limited_429"].as_u64().unwrap_or(0) > 0, "{stats}");

    // 2. One dossier lost.
    let victim = held_with_history(&national, 1).await.into_iter().next().expect("a dossier");
    forget(&national, &victim).await;
    synchronized_and_verified(&provincial, &national, &config, Duration::from_secs(120)).await;
    let status = status_json(&config);
    assert!(status["audit"]["drift_found"].as_u64().unwrap() > found, "{status}");
    assert_no_duplicates(&national.stats().await);

    // 3. The end of five histories lost.
    let found = status["audit"]["drift_found"].as_u64().unwrap();
    let long: Vec<String> = held_with_history(&national, 3).await.into_iter().take(5).collect();
    assert_eq!(long.len(), 5);
    for mahoso in &long {
        truncate(&national, mahoso, 1).await;
    }
    synchronized_and_verified(&provincial, &national, &config, Duration::from_secs(120)).await;
    let status = status_json(&config);
    let found_now = status["audit"]["drift_found"].as_u64().unwrap();
    assert!(found_now >= found + 5, "each truncated history found: {status}");
    assert_no_duplicates(&national.stats().await);
    // Each drifted dossier verified again after its repair.
    assert_eq!(status["audit"]["drift_repaired"], status["audit"]["drift_found"], "{status}");
    assert!(status["audit"]["last_pass_at"].is_string(), "{status}");
    let one = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "status", "--json", "--dossier", &long[0]])
        .output()
        .unwrap();
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one["national"]["audit_finding"], "verified", "{one}");
    assert_eq!(one["national"]["verified_since_acknowledged"], true, "{one}");
    assert!(daemon.logs().contains("national_drift_found"), "drift is logged");

    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dvc_sync_audit_reports_drift_repairs_it_and_keeps_to_its_rate() {
    let national = National::start(Faults { seed: 17, ..Faults::default() }).await;
    let provincial = Provincial::start(clean_knobs(120, 17)).await;
    let dir = test_dir();
    // No background audit: every look-up below is the command's.
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["national.audit_per_second = 0.0"],
    );
    let mut daemon = Daemon::start(&config).await;
    let verdict = loop {
        let verdict =
            converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
        if provincial.stats().await["finished"] == json!(true) && verdict.not_synchronized.is_empty() {
            break verdict;
        }
    };
    let valid = verdict.valid as u64;
    let status = status_json(&config);
    assert_eq!(status["audit"]["verified_percent"], 0.0, "nothing verified yet: {status}");

    let long = held_with_history(&national, 2).await;
    let (lost, cut) = (long[0].clone(), long[1].clone());
    forget(&national, &lost).await;
    truncate(&national, &cut, 1).await;
    let calls_before = look_ups(&national).await;
    let started = Instant::now();
    let (code, report) = audit_command(&config, &["--all", "--per-second", "50"]);
    let elapsed = started.elapsed().as_secs_f64();
    let calls = look_ups(&national).await - calls_before;
    assert_eq!(code, 1, "drift found: {report}");
    assert_eq!(report["audited"], valid, "{report}");
    assert_eq!(report["verified"], valid - 2, "{report}");
    assert_eq!(report["drift"], json!({"missing": 1, "history": 1}), "{report}");
    assert_eq!(report["repairs_enqueued"], 2, "{report}");
    let mut drifted: Vec<String> =
        report["drifted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    drifted.sort();
    let mut expected = vec![lost.clone(), cut.clone()];
    expected.sort();
    assert_eq!(drifted, expected);
    // At most 50 a second (one more for the first, which needs no wait).
    assert_eq!(calls, valid, "one look-up per dossier");
    assert!(calls as f64 <= 50.0 * elapsed + 1.0, "{calls} look-ups in {elapsed:.2} s");
    println!("audit --all: {calls} look-ups in {elapsed:.2} s ({:.1}/s, limit 50/s)", calls as f64 / elapsed);

    // The running daemon repairs both; the next pass finds nothing.
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    assert!(verdict.clean() && verdict.synchronized == verdict.valid, "{}", verdict.summary());
    assert_no_duplicates(&national.stats().await);
    let (code, report) = audit_command(&config, &["--all", "--per-second", "50"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (report["audited"].as_u64(), report["verified"].as_u64()),
        (Some(valid), Some(valid)),
        "{report}"
    );
    assert_eq!(report["verified_percent"], 100.0);
    let status = status_json(&config);
    assert_eq!(status["audit"]["verified_percent"], 100.0, "{status}");
    assert_eq!(
        (status["audit"]["drift_found"].as_u64(), status["audit"]["drift_repaired"].as_u64()),
        (Some(2), Some(2))
    );

    // Standalone, with the daemon stopped: the next due share, a day's worth of the 30-day
    // cycle (at least one dossier), read from the oldest verification.
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
    let (code, report) = audit_command(&config, &["--per-second", "100"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["scope"], "due");
    assert_eq!(report["audited"], valid.div_ceil(30), "{report}");
    assert_eq!(report["verified"], report["audited"]);
    // A loss found standalone is enqueued, and sent once the daemon runs again.
    forget(&national, &cut).await;
    let (code, report) = audit_command(&config, &["--all", "--per-second", "100"]);
    assert_eq!((code, report["drift"].clone()), (1, json!({"missing": 1})), "{report}");
    let status = status_json(&config);
    assert_eq!(status["outbox"]["depth"], 1, "the repair waits in the outbox: {status}");
    let mut daemon = Daemon::start(&config).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    assert!(verdict.clean() && verdict.synchronized == verdict.valid, "{}", verdict.summary());
    assert_no_duplicates(&national.stats().await);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
}
