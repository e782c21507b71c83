//! A merged province (provincial-portal.md, "Several sources"): the real daemon reads the old
//! system (Tiền Giang's, H58 codes), the new one (Đồng Tháp's, H20, which supersedes it) and a
//! sector system, all real provincial mocks, into one national account (H20, with H58 among its
//! predecessors). Dossiers move mid-life from the old system to the new one; nothing is sent
//! twice, nothing re-keyed, the old system's later steps are ignored, a conflict and a
//! contradiction are quarantined naming both sources, and the old source, once removed from
//! the configuration, is shown retired while its dossiers go on being verified.

mod common;

use std::time::Duration;

use common::{
    National, Provincial, code,
    daemon::{
        Daemon, cli, db, metrics_addr, rows, status_json, test_dir, write_config, write_sources_config,
    },
    entry, provincial_record,
};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

const H58: &str = "000.00.00.H58";
const H20: &str = "000.00.00.H20";

/// The nth MaHoSo filed in the new system (H20).
fn h20(n: u32) -> String {
    format!("000.00.15.H20-260301-{n:04}")
}

/// An empty provincial system of unit `madonvi`: its records are upserted by the test.
async fn system(madonvi: &str) -> Provincial {
    Provincial::start(Knobs {
        dossiers: 0,
        changes_per_second: 0.0,
        bad_record_rate: 0.0,
        messy_rate: 0.0,
        unknown_procedure_rate: 0.0,
        madonvi: madonvi.into(),
        ..Knobs::default()
    })
    .await
}

/// The national state of a dossier (Null if unknown).
async fn national_state(national: &National, mahoso: &str) -> Value {
    let (status, body) = national.get(&format!("/_mock/state/{mahoso}")).await;
    if status == 200 { body } else { Value::Null }
}

/// Waits until `done` holds of every dossier's national state, or panics after a minute.
async fn wait_national(national: &National, mahoso: &[String], done: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for m in mahoso {
            if !done(&national_state(national, m).await) {
                all = false;
                break;
            }
        }
        if all {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the national side did not reach the expected state");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn history_len(state: &Value) -> usize {
    state["history"].as_array().map_or(0, Vec::len)
}

/// The new system's copy of an old dossier, as a migration writes it: the same entries with
/// their whitespace changed, a new processing unit, and `extra` entries after them.
fn moved_copy(mahoso: &str, keep_first: bool, extra: &[(&str, &str)]) -> Value {
    let mut record = provincial_record(mahoso, "processing", 2);
    record["DonViXuLy"] = json!("Sở Tư pháp tỉnh Đồng Tháp");
    let history = record["QuaTrinhXuLy"].as_array_mut().unwrap();
    for e in history.iter_mut() {
        let content = e["NoiDungXuLy"].as_str().unwrap().replace(' ', "  ");
        e["NoiDungXuLy"] = json!(format!(" {content} "));
    }
    if !keep_first {
        history.remove(0);
    }
    for (at, content) in extra {
        let mut e = entry(mahoso, at, "processing");
        e["NoiDungXuLy"] = json!(content);
        history.push(e);
    }
    record
}

async fn dossier_source(config: &std::path::Path, mahoso: &str) -> Option<String> {
    let (_, text) = cli(config, &["status", "--dossier", mahoso]);
    text.lines().find_map(|l| l.strip_prefix("source").map(|rest| rest.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_province_moves_dossiers_to_its_new_system_and_sends_nothing_twice() {
    let national = National::start_unit(Faults::default(), H20, &[H58]).await;
    let (old, new, sector) = (system(H58).await, system(H20).await, system(H20).await);
    let old_codes: Vec<String> = (1..=12).map(code).collect();
    let native: Vec<String> = (1..=3).map(h20).collect();
    for m in &old_codes {
        old.post("/_mock/dossiers", provincial_record(m, "processing", 2)).await;
    }
    for m in &native {
        new.post("/_mock/dossiers", provincial_record(m, "processing", 2)).await;
    }
    let dir = test_dir();
    let national_url = national.server.url();
    let units = [
        "national.madonvi = \"000.00.00.H20\"",
        "national.predecessors = [\"000.00.00.H58\"]",
        "telemetry.metrics_listen = \"127.0.0.1:0\"",
    ];
    let (old_url, new_url, sector_url) = (old.server.url(), new.server.url(), sector.server.url());
    let supersedes: &[&str] = &["supersedes = [\"tiengiang\"]"];
    let config = write_sources_config(
        dir.path(),
        &[("tiengiang", &old_url, &[]), ("dongthap", &new_url, supersedes), ("sector", &sector_url, &[])],
        &national_url,
        &units,
    );
    let (code_, text) = cli(&config, &["check-config"]);
    assert_eq!(code_, 0, "{text}");
    let mut daemon = Daemon::start(&config).await;
    let all: Vec<String> = old_codes.iter().chain(&native).cloned().collect();
    wait_national(&national, &all, |s| history_len(s) == 2).await;

    // The cutover: six in-flight dossiers move, each with one step made in the new system.
    let moved: Vec<String> = old_codes[..6].to_vec();
    for m in &moved {
        new.post("/_mock/dossiers", moved_copy(m, true, &[("20260301130000", "Chuyển bộ phận một cửa mới")]))
            .await;
    }
    // A contradiction: the copy of the seventh lacks its first entry, already sent.
    let contradicted = &old_codes[6];
    new.post("/_mock/dossiers", moved_copy(contradicted, false, &[("20260301130000", "Tiếp tục xử lý")]))
        .await;
    // A conflict: the sector system also holds a dossier the new system owns.
    sector.post("/_mock/dossiers", provincial_record(&native[0], "processing", 2)).await;
    wait_national(&national, &moved, |s| history_len(s) == 3).await;
    // A step added in the old system after the move is ignored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dossier_source(&config, &moved[0]).await.is_none_or(|s| !s.starts_with("dongthap")) {
        assert!(tokio::time::Instant::now() < deadline, "the move was not recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut late = provincial_record(&moved[0], "processing", 2);
    let mut step = entry(&moved[0], "20260301140000", "processing");
    step["NoiDungXuLy"] = json!("Bước làm muộn ở hệ thống cũ");
    late["QuaTrinhXuLy"].as_array_mut().unwrap().push(step);
    old.post("/_mock/dossiers", late).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = cli(&config, &["status", "--dossier", &moved[0]]);
        if text.contains("1 later version(s) of the old copy ignored") {
            assert!(text.contains("moved from tiengiang"), "{text}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the old system's late step was not ignored: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Nationally: each moved dossier as the new system holds it, each entry once and in order,
    // created once, never a status backwards; the late step absent; nothing re-keyed.
    for m in &moved {
        let state = national_state(&national, m).await;
        assert_eq!(state["creates"], json!(1), "{m}: {state}");
        assert_eq!(state["dossier"]["DonViXuLy"], json!("Sở Tư pháp tỉnh Đồng Tháp"), "{m}");
        let contents: Vec<&str> =
            state["history"].as_array().unwrap().iter().map(|e| e["NoiDungXuLy"].as_str().unwrap()).collect();
        assert_eq!(contents, ["Bước xử lý 1", "Bước xử lý 2", "Chuyển bộ phận một cửa mới"], "{m}");
    }
    let contradicted_state = national_state(&national, contradicted).await;
    assert_eq!(history_len(&contradicted_state), 2, "nothing is sent for a contradicted copy");
    assert_eq!(contradicted_state["dossier"]["DonViXuLy"], json!("Sở Tư pháp"));
    let stats = national.stats().await;
    for defect in ["duplicate_history_entries", "out_of_order_history_entries", "rejected_status_changes"] {
        assert_eq!(stats[defect], json!(0), "{defect}: {stats}");
    }
    assert_eq!(stats["items_applied"]["dossiers_created"], json!(15), "{stats}");

    // The two defects are quarantined under MaHoSo#<source>, naming both sources.
    let quarantined = rows(&db(dir.path()), "SELECT key, reason FROM quarantine ORDER BY key");
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    let reason_of =
        |key: String| quarantined.iter().find(|(k, _)| *k == key).map(|(_, r)| r.clone()).unwrap_or_default();
    let contradiction = reason_of(format!("{contradicted}#dongthap"));
    assert!(contradiction.contains("tiengiang") && contradiction.contains("dongthap"), "{contradiction}");
    let conflict = reason_of(format!("{}#sector", native[0]));
    assert!(conflict.contains("dongthap") && conflict.contains("sector"), "{conflict}");

    // status: each source, what it owns.
    let status = status_json(&config);
    let sources = status["sources"].as_array().unwrap();
    let owned = |name: &str| {
        sources
            .iter()
            .find(|s| s["name"] == json!(name))
            .map(|s| (s["dossiers"].clone(), s["retired"].clone()))
    };
    // (Its dossiers and its quarantined copies: dongthap's 3 + 6 moved + the contradicted copy,
    // sector's conflicting copy; the sources add up to the total.)
    assert_eq!(owned("dongthap"), Some((json!(10), json!(false))), "{status}");
    assert_eq!(owned("tiengiang"), Some((json!(6), json!(false))), "{status}");
    assert_eq!(owned("sector"), Some((json!(1), json!(false))), "{status}");
    assert_eq!(status["dossiers"]["total"], json!(17), "{status}");
    assert!(sources.iter().all(|s| s["last_success_at"].is_string()), "{status}");
    let workers: Vec<&str> =
        status["workers"].as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    for poller in ["poller:dongthap", "poller:sector", "poller:tiengiang"] {
        assert!(workers.contains(&poller), "{workers:?}");
    }
    // The poll metrics carry each configured source's name, and nothing read from a source.
    let metrics = reqwest::get(format!("http://{}/metrics", metrics_addr(&daemon).await))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["tiengiang", "dongthap", "sector"] {
        let labelled = |metric: &str| {
            metrics.lines().any(|l| l.starts_with(metric) && l.contains(&format!("source=\"{name}\"")))
        };
        assert!(labelled("dvc_sync_provincial_pages_total{"), "{name}: {metrics}");
        assert!(labelled("dvc_sync_last_successful_poll_timestamp_seconds{"), "{name}");
    }
    assert!(metrics.lines().any(|l| l.starts_with("dvc_sync_provincial_records_total{")
        && l.contains("result=\"ignored\"")
        && l.contains("source=\"tiengiang\"")
        && !l.ends_with(" 0")));
    assert!(!metrics.contains("H58-") && !metrics.contains("H20-"), "no MaHoSo in a label");
    // check-source: every source (a list), or one.
    let (exit, text) = cli(&config, &["check-source", "--json", "--limit", "5"]);
    let checked: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let names: Vec<&str> = checked.as_array().unwrap().iter().filter_map(|r| r["source"].as_str()).collect();
    assert_eq!((exit, names), (0, vec!["dongthap", "sector", "tiengiang"]), "{text}");
    let (exit, text) = cli(&config, &["check-source", "--json", "--source", "sector"]);
    let one: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        (exit, one["source"].as_str(), one["would_send"].as_u64()),
        (0, Some("sector"), Some(1)),
        "{text}"
    );
    let (exit, text) = cli(&config, &["check-source", "--source", "gone"]);
    assert!(exit == 64 && text.contains("dongthap, sector, tiengiang"), "{exit}: {text}");
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.is_some_and(|s| s.success()));

    // The old system retired: its source leaves the configuration; its dossiers stay, are
    // counted under it as retired, and are still verified by the audit.
    let config = write_sources_config(
        dir.path(),
        &[("dongthap", &new_url, supersedes), ("sector", &sector_url, &[])],
        &national_url,
        &units,
    );
    let status = status_json(&config);
    let retired =
        status["sources"].as_array().unwrap().iter().find(|s| s["name"] == json!("tiengiang")).cloned();
    let retired = retired.unwrap_or_else(|| panic!("no retired source: {status}"));
    assert_eq!(
        (retired["retired"].clone(), retired["dossiers"].clone()),
        (json!(true), json!(6)),
        "{status}"
    );
    let (exit, audit) = common::daemon::audit_command(&config, &["--all"]);
    assert_eq!(exit, 0, "{audit}");
    assert_eq!(audit["drift_found"], json!(0), "{audit}");
    let mut daemon = Daemon::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = status_json(&config);
    assert_eq!(status["outbox"]["depth"], json!(0), "{status}");
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(20)).await;
    assert_eq!(national.stats().await["duplicate_history_entries"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_synchronised_as_h58_goes_on_under_h20_only_with_h58_among_the_predecessors() {
    let old_national = National::start(Faults::default()).await;
    let system = system(H58).await;
    let codes: Vec<String> = (1..=10).map(code).collect();
    for m in &codes {
        system.post("/_mock/dossiers", provincial_record(m, "processing", 2)).await;
    }
    let dir = test_dir();
    let config = write_config(dir.path(), &system.server.url(), &old_national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    wait_national(&old_national, &codes, |s| history_len(s) == 2).await;
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(20)).await;

    // The unit changed without saying why: refused, with the reason and the fix.
    let new_national = National::start_unit(Faults::default(), H20, &[H58]).await;
    let h20 = "national.madonvi = \"000.00.00.H20\"";
    let config = write_config(dir.path(), &system.server.url(), &new_national.server.url(), &[h20]);
    let (exit, text) = cli(&config, &["run"]);
    assert_eq!(exit, 78, "{text}");
    assert!(text.contains("national.predecessors") && text.contains(H58), "{text}");

    // Listed among the predecessors: the database goes on, nothing is sent again. (This mock
    // starts empty where the real portal keeps the dossiers under their MaHoSo: the background
    // audit, which would find them missing here and repair them, is off.)
    let config = write_config(
        dir.path(),
        &system.server.url(),
        &new_national.server.url(),
        &[h20, "national.predecessors = [\"000.00.00.H58\"]", "national.audit_per_second = 0"],
    );
    let mut daemon = Daemon::start(&config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = status_json(&config);
    assert_eq!(status["dossiers"]["in_sync"], json!(10), "{status}");
    assert_eq!(status["outbox"]["depth"], json!(0), "{status}");
    let stats = new_national.stats().await;
    assert_eq!(stats["items_applied"]["dossiers_created"], json!(0), "{stats}");
    assert_eq!(stats["items_applied"]["dossiers_updated"], json!(0), "{stats}");
    assert_eq!(stats["items_applied"]["history_entries"], json!(0), "{stats}");
    // The one source of a [provincial] configuration, as before.
    let names: Vec<&str> =
        status["sources"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["provincial"]);
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(20)).await;
}
