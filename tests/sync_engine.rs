//! The real daemon (the release or debug binary, as a child process) against the real mocks
//! on loopback: it converges under faults, through SIGKILL, and through SIGTERM, and parks
//! exactly what was injected.

mod common;

use std::{collections::BTreeSet, path::Path, time::Duration};

use common::{daemon::*, *};
use dvc_sync::{
    mock::{national::Faults, provincial::Knobs},
    verify::{TruthItem, Verdict, provincial_truth},
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

/// Quarantined and dead items are exactly those the simulator injected, each with its reason.
fn assert_parked_as_injected(dir: &Path, truth: &[TruthItem]) {
    let conn = db(dir);
    let quarantined = rows(&conn, "SELECT key, reason FROM quarantine");
    let dead = rows(&conn, "SELECT mahoso, reason FROM dead");
    let mut expected_keys = BTreeSet::new();
    let mut keyless = 0;
    for t in truth.iter().filter(|t| t.defect.is_some()) {
        match t.record.get("MaHoSo").and_then(Value::as_str) {
            Some(listed) => {
                expected_keys.insert(listed.to_owned());
            }
            None => keyless += 1,
        }
        let listed = t.record.get("MaHoSo").and_then(Value::as_str);
        let reason_fragment = match t.defect.as_deref() {
            Some("no MaHoSo") => "no MaHoSo",
            Some("unparseable date") => "unparseable date",
            Some("local status not in the table") => "not in status_map",
            Some("malformed MaHoSo") => "malformed MaHoSo",
            other => panic!("unknown defect {other:?}"),
        };
        if let Some(listed) = listed {
            let (_, reason) = quarantined
                .iter()
                .find(|(k, _)| k == listed)
                .unwrap_or_else(|| panic!("{listed} ({:?}) not quarantined", t.defect));
            assert!(reason.contains(reason_fragment), "{listed}: {reason:?} should say {reason_fragment:?}");
        }
    }
    let keyed: BTreeSet<String> =
        quarantined.iter().map(|(k, _)| k.clone()).filter(|k| !k.starts_with("no-MaHoSo:")).collect();
    assert_eq!(keyed, expected_keys, "quarantined with a key");
    let keyless_rows: Vec<&(String, String)> =
        quarantined.iter().filter(|(k, _)| k.starts_with("no-MaHoSo:")).collect();
    assert_eq!(keyless_rows.len(), keyless, "quarantined without a MaHoSo");
    assert!(keyless_rows.iter().all(|(_, r)| r.starts_with("no MaHoSo")));

    let expected_dead: BTreeSet<String> =
        truth.iter().filter(|t| t.defect.is_none() && t.unknown_procedure).map(|t| t.key.clone()).collect();
    let dead_keys: BTreeSet<String> = dead.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(dead_keys, expected_dead, "dead: exactly the unknown procedures");
    for (mahoso, reason) in &dead {
        let t = truth.iter().find(|t| &t.key == mahoso).unwrap();
        let procedure = t.record["MaTTHC"].as_str().unwrap();
        assert!(reason.contains(procedure), "{mahoso}: {reason:?} should name {procedure}");
    }
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
    let dir = tempfile::tempdir().unwrap();
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
