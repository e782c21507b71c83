//! The demo: its report's numbers against the mocks' own counters, and the command line.

use std::time::Duration;

use dvc_sync::{
    demo::{Demo, DemoOptions},
    verify::provincial_truth,
};
use serde_json::Value;

async fn stats(url: &str) -> Value {
    reqwest::get(format!("{url}/_mock/stats")).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_demo_reports_what_the_mocks_themselves_counted() {
    let opts = DemoOptions {
        dossiers: 300,
        seed: 4,
        progress: false,
        timeout: Duration::from_secs(120),
        ..DemoOptions::default()
    };
    let mut demo = Demo::start(&opts).await.unwrap();
    let report = demo.run_to_end(&opts).await.unwrap();
    let (national_url, provincial_url) = (demo.national.url(), demo.provincial.url());
    let national = stats(&national_url).await;
    let provincial = stats(&provincial_url).await;
    let truth = provincial_truth(&reqwest::Client::new(), &provincial_url).await.unwrap();

    assert!(report.kept_the_promise(), "{report:#?}");
    assert_eq!(report.dossiers, 300);
    assert_eq!(report.dossiers as u64, provincial["dossiers_created"].as_u64().unwrap());
    assert_eq!(report.changes, provincial["changes"].as_u64().unwrap());
    let valid = truth.iter().filter(|t| t.defect.is_none() && !t.unknown_procedure).count();
    assert_eq!(report.valid_dossiers, valid);
    assert_eq!(
        report.valid_dossiers as u64,
        national["dossiers"].as_u64().unwrap(),
        "every valid one created, nothing else"
    );
    assert_eq!(report.history_entries.national as u64, national["history_entries_stored"].as_u64().unwrap());
    assert_eq!(report.history_entries.national, report.history_entries.provincial);
    assert_eq!(report.quarantined.total as u64, provincial["bad_records"].as_u64().unwrap());
    assert!(report.quarantined.as_injected && report.refused.as_injected, "{report:#?}");
    let unknown = truth.iter().filter(|t| t.defect.is_none() && t.unknown_procedure).count();
    assert_eq!(report.refused.total, unknown);
    for (kind, n) in national["http_faults"].as_object().unwrap() {
        assert_eq!(report.faults_absorbed.national.get(kind).copied(), n.as_u64(), "{kind}");
    }
    assert!(
        report.faults_absorbed.national.len() >= 3,
        "several kinds of national fault: {:?}",
        report.faults_absorbed.national
    );
    assert_eq!(report.faults_absorbed.sessions_renewed, national["sessions_issued"].as_u64().unwrap() - 1);
    let pages = provincial["error_pages"].as_u64().unwrap() + provincial["malformed_pages"].as_u64().unwrap();
    assert_eq!(report.faults_absorbed.provincial_pages, pages);
    assert_eq!(report.verdict.duplicated, national["duplicate_history_entries"].as_u64().unwrap());
    assert_eq!(report.verdict.out_of_order, national["out_of_order_history_entries"].as_u64().unwrap());
    assert_eq!((report.verdict.lost, report.verdict.duplicated, report.verdict.out_of_order), (0, 0, 0));
    let applied = &national["items_applied"];
    let items: u64 = ["dossiers_created", "dossiers_updated", "history_entries"]
        .iter()
        .map(|k| applied[k].as_u64().unwrap())
        .sum();
    let reported = report.throughput.national_items_per_second * report.duration_seconds;
    assert!((reported - items as f64).abs() < 1.0, "{reported} vs {items}");
    assert!(report.lag_seconds.p50.is_some() && report.lag_seconds.p99 >= report.lag_seconds.p50);
    // The 766 figures: both sides agree, and the national side's are what /_mock/report says.
    let i = &report.indicators;
    assert!(i.agree, "{:#?}", i);
    let url = format!("{national_url}/_mock/report?from={}&to={}", i.from, i.to);
    let nat: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(nat["province"], i.national);
    assert_eq!(i.local["2.1"]["denominator"].as_u64(), Some(valid as u64), "every valid dossier is judged");
    let text = dvc_sync::demo::render(&report, dvc_sync::i18n::Lang::En);
    assert!(text.contains("Quyết định 766") && text.contains("agree number for number"), "{text}");
    let vi = dvc_sync::demo::render(&report, dvc_sync::i18n::Lang::Vi);
    assert!(vi.contains("hai bên khớp từng con số") && vi.contains("GIỮ ĐÚNG CAM KẾT"), "{vi}");
    assert!(vi.lines().chain(text.lines()).all(|l| l.chars().count() <= 100), "100 columns:\n{text}\n{vi}");
    demo.stop().await;
}

#[test]
fn the_demo_command_prints_a_json_report_and_exits_0() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvc-sync"))
        .args(["demo", "--dossiers", "120", "--json", "--seed", "9"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["dossiers"], 120);
    assert_eq!(report["verdict"]["clean"], true);
    assert_eq!(report["coverage_percent"], 100.0);
    assert_eq!(report["indicators"]["agree"], true, "{report}");
}

#[test]
fn the_merger_demo_moves_dossiers_at_its_cutover_and_keeps_the_promise_per_source() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvc-sync"))
        .args(["demo", "--merger", "--dossiers", "600", "--json", "--seed", "3"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["kept_the_promise"], true);
    let sources = report["sources"].as_array().unwrap();
    let names: Vec<&str> = sources.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["tiengiang", "dongthap"]);
    for s in sources {
        assert_eq!(s["synchronized"], s["valid"], "{s}");
        assert!(s["valid"].as_u64().unwrap() > 0, "{s}");
    }
    assert!(report["moved"].as_u64().unwrap() > 0 && report["ignored"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["duplicate_history_entries"], 0);
    assert_eq!(report["status_regressions"], 0);
}
