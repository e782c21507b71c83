//! `dvc-sync backup`, with the real daemon against the real mocks: a copy taken while the
//! daemon pushes a backlog is private (0600), passes its integrity check, and, restored into a
//! new daemon after the original went on and finished, carries on without sending anything
//! again: the national portal applies no item twice, and none at all that it already held.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_daemon_that_resends_nothing() {
    let national =
        National::start(Faults { drop_after_apply_rate: 0.05, seed: 21, ..Faults::default() }).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 400,
        changes_per_second: 150.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        seed: 21,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;

    // Under load: the province still filing, the national portal holding part of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while national.stats().await["dossiers"].as_u64().unwrap_or(0) < 100 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let copy = dir.path().join("backup.db");
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "backup", "--json", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["integrity"], "ok", "{report}");
    assert!(report["dossiers"].as_u64().unwrap() >= 100, "{report}");
    assert!(report["bytes"].as_u64().unwrap() > 0 && report["seconds"].as_f64().unwrap() < 30.0, "{report}");
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds personal data");
    assert!(provincial.stats().await["finished"] != json!(true), "taken while the province still files");
    // A second copy onto the first is refused, and the first left as it was.
    let again = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "backup", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("must not exist"), "{again:?}");

    // The original goes on to the end.
    let verdict = loop {
        let v = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(120)).await;
        if provincial.stats().await["finished"] == json!(true) && v.not_synchronized.is_empty() {
            break v;
        }
    };
    assert!(verdict.clean(), "{}", verdict.summary());
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
    // No more faults: every call from here on is counted as applied or not.
    assert!(national.put_faults(json!({"drop_after_apply_rate": 0.0})).await.status().is_success());
    let before = national.stats().await;

    // Restored into a new daemon (the old database gone): it reads back what it is unsure of,
    // and sends nothing the portal holds.
    let restored = test_dir();
    std::fs::copy(&copy, restored.path().join("state.db")).unwrap();
    let config2 = write_config(restored.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon2 = Daemon::start(&config2).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = status_json(&config2);
        let polled = status["dossiers"]["total"].as_u64() == Some(verdict.valid as u64);
        if polled && status["outbox"]["depth"] == 0 && status["coverage_percent"] == 100.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the restored daemon did not catch up: {status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = national.stats().await;
    assert_eq!(after["duplicate_history_entries"], 0, "{after}");
    assert_eq!(after["out_of_order_history_entries"], 0, "{after}");
    assert_eq!(after["items_applied"], before["items_applied"], "nothing sent again: {before} then {after}");
    let look_ups = |s: &Value| s["calls"]["TraCuuHoSo"]["ok"].as_u64().unwrap_or(0);
    assert!(look_ups(&after) > look_ups(&before), "the restored daemon read back before writing");
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::ZERO).await;
    assert!(verdict.clean() && verdict.synchronized == verdict.valid, "{}", verdict.summary());
    daemon2.sigterm().await;
    assert!(daemon2.wait(Duration::from_secs(15)).await.expect("stops").success());
}
