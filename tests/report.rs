//! `dvc-sync report` against the national mock's `/_mock/report`: after a demo-sized run
//! with faults, the daemon's figures from its own database and the national side's figures
//! from what it holds agree number for number (two implementations, written apart), for the
//! whole run, for one day and for a month. The report reads while the daemon runs.

mod common;

use std::time::Duration;

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

fn report(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "report"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty() || out.status.code() != Some(0), "report wrote to stderr: {stderr}");
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
}

fn report_json(config: &std::path::Path, from: &str, to: &str) -> Value {
    let (code, out) = report(config, &["--json", "--from", from, "--to", to]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Every figure of a scope but 1.4's denominator (the national side knows only what it
/// holds; the daemon counts what the source holds, refused dossiers too).
#[track_caller]
fn assert_same_figures(local: &Value, national: &Value, scope: &str) {
    for id in ["1.4", "2.1", "3.3", "3.6", "4.1", "4.2", "4.3"] {
        let (l, n) = (&local[id], &national[id]);
        assert_eq!(l["numerator"], n["numerator"], "{scope} {id}: local {l} national {n}");
        if id != "1.4" {
            assert_eq!(l, n, "{scope} {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_run_with_faults_the_report_agrees_with_the_national_side_number_for_number() {
    let national = National::start(Faults {
        error_rate: 0.05,
        drop_after_apply_rate: 0.03,
        session_ttl_seconds: 2.0,
        seed: 11,
        ..Faults::default()
    })
    .await;
    let provincial = Provincial::start(Knobs {
        dossiers: 3_000,
        changes_per_second: 4_000.0,
        seed: 11,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["telemetry.metrics_listen = \"127.0.0.1:0\"", "telemetry.indicators_seconds = 1"],
    );
    let mut daemon = Daemon::start(&config).await;
    let metrics = metrics_addr(&daemon).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while provincial.stats().await["finished"] != json!(true) {
        assert!(std::time::Instant::now() < deadline, "the simulation did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(180)).await;
    assert!(verdict.clean() && verdict.synchronized == verdict.valid, "{}", verdict.summary());

    let truth = provincial.truth().await;
    let days: Vec<String> = truth
        .iter()
        .filter_map(|t| {
            t["record"]["NgayTiepNhan"].as_str().filter(|d| d.len() == 14).map(|d| d[..8].to_owned())
        })
        .collect();
    let first = days.iter().min().unwrap();
    let first: jiff::civil::Date =
        format!("{}-{}-{}", &first[..4], &first[4..6], &first[6..8]).parse().unwrap();
    let start = first.to_string();
    let second_day = first.tomorrow().unwrap().to_string();
    let month = &start[..7];
    for (from, to) in [
        (start.clone(), "2099-12-31".to_owned()),
        (second_day.clone(), second_day.clone()),
        (format!("{month}-01"), format!("{month}-28")),
    ] {
        let local = report_json(&config, &from, &to);
        let (status, nat) = national.get(&format!("/_mock/report?from={from}&to={to}")).await;
        assert_eq!(status, 200);
        assert_same_figures(&local["province"], &nat["province"], &format!("{from}..{to} province"));
        let agencies = local["by_agency"].as_object().unwrap();
        for (agency, figures) in nat["by_agency"].as_object().unwrap() {
            assert_same_figures(&agencies[agency], figures, &format!("{from}..{to} {agency}"));
        }
        // An agency only the daemon lists holds only dossiers the portal refused (1.4's).
        for (agency, figures) in agencies.iter().filter(|(a, _)| nat["by_agency"].get(*a).is_none()) {
            assert_eq!(figures["1.4"]["numerator"], 0, "{agency}");
            assert!(["2.1", "3.3", "4.1"].iter().all(|id| figures[id]["denominator"] == 0), "{agency}");
        }
    }

    // The whole run: every figure has a population, and the shares are the simulator's.
    let local = report_json(&config, &start, "2099-12-31");
    let p = &local["province"];
    for id in ["2.1", "3.3", "3.6", "4.1", "4.2", "4.3"] {
        assert!(p[id]["denominator"].as_u64() > Some(100), "{id}: {}", p[id]);
        assert!(p[id]["numerator"].as_u64() > Some(0), "{id}: {}", p[id]);
        assert!(p[id]["numerator"] != p[id]["denominator"], "{id} is neither none nor all: {}", p[id]);
    }
    assert!(
        p["1.4"]["numerator"].as_u64() < p["1.4"]["denominator"].as_u64(),
        "refused dossiers: {}",
        p["1.4"]
    );
    // Late under 2.1 are those late at the source; those late by sync are on time by 2.1.
    let late: Vec<Value> =
        local["late"].as_array().unwrap().iter().filter(|l| l["cause"] == "source").cloned().collect();
    assert_eq!(
        late.len() as u64,
        p["2.1"]["denominator"].as_u64().unwrap() - p["2.1"]["numerator"].as_u64().unwrap()
    );
    assert!(late.iter().all(|l| l["reason"].as_str().unwrap().starts_with("late: ")), "{late:?}");
    assert!(local["quarantined"].as_u64() > Some(0));

    // The table and the CSV say the same.
    let (code, table) = report(&config, &["--from", &start, "--to", "2099-12-31", "--late"]);
    assert_eq!(code, 0);
    assert!(table.contains("processed early or on time") && table.contains("Sở Tư pháp"), "{table}");
    assert!(table.contains(late[0]["mahoso"].as_str().unwrap()), "--late lists the late dossiers");
    let (_, csv) = report(&config, &["--csv", "--from", &start, "--to", "2099-12-31"]);
    let lines: Vec<&str> = csv.lines().collect();
    let agencies = local["by_agency"].as_object().unwrap().len();
    let procedures = local["by_procedure"].as_object().unwrap().len();
    assert_eq!(lines.len(), 1 + 7 * (1 + agencies + procedures), "{csv}");
    let want = format!(",province,,2.1,{},{},", p["2.1"]["numerator"], p["2.1"]["denominator"]);
    assert!(lines.iter().any(|l| l.contains(&want)), "{want} in {csv}");
    let (_, late_csv) = report(&config, &["--csv", "--late", "--from", &start, "--to", "2099-12-31"]);
    assert_eq!(late_csv.lines().count(), 1 + late.len());

    // Bad periods are refused with a clear error, nothing printed.
    for args in
        [&["--month", "2026-13"][..], &["--from", "2026-11-30", "--to", "2026-11-01"], &["--to", "yesterday"]]
    {
        let out = std::process::Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "report"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(out.stdout.is_empty() && !out.stderr.is_empty());
    }
    // The gauges are the current month's figures (recomputed every second here).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (code, out) = report(&config, &["--json"]);
    assert_eq!(code, 0);
    let month: Value = serde_json::from_str(&out).unwrap();
    let scrape = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    let gauge = |name: &str, id: &str| -> f64 {
        let prefix = format!("{name}{{indicator=\"{id}\"}} ");
        let line =
            scrape.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix} in {scrape}"));
        line[prefix.len()..].parse().unwrap()
    };
    for id in ["1.4", "2.1", "3.3", "3.6", "4.1", "4.2", "4.3"] {
        let f = &month["province"][id];
        assert_eq!(gauge("dvc_sync_indicator_numerator", id), f["numerator"].as_f64().unwrap(), "{id}");
        assert_eq!(gauge("dvc_sync_indicator_denominator", id), f["denominator"].as_f64().unwrap(), "{id}");
        match f["ratio"].as_f64() {
            Some(r) => assert!((gauge("dvc_sync_indicator_ratio", id) - r).abs() < 0.006, "{id}"),
            None => assert!(gauge("dvc_sync_indicator_ratio", id).is_nan(), "{id} N/A is NaN"),
        }
    }
    let late_line = format!("dvc_sync_indicator_late_dossiers {}", month["late"].as_array().unwrap().len());
    assert!(scrape.lines().any(|l| l == late_line), "{late_line} in {scrape}");
    assert!(!scrape.contains("000.00."), "no MaHoSo in labels");

    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(10)).await.expect("stops").success());
    // Stopped, it reads the same.
    assert_eq!(report_json(&config, &start, "2099-12-31")["province"], local["province"]);
}

/// The same crafted dossiers, at the edges of 2.1, given to both implementations: the mock
/// through the API, the daemon's computation through the payloads it would have sent.
#[tokio::test]
async fn both_implementations_agree_on_the_edge_cases_of_2_1() {
    use dvc_sync::report::{Facts, Period, compute, lateness::Context};
    let n = National::start(Faults::default()).await;
    // Received 2026-03-01 08:30 (common::dossier); Đăng ký khai sinh takes one day.
    let due = |i: u32, d: &str| with(dossier(&code(i)), "NgayHenTra", json!(d));
    let dossiers = vec![
        due(1, "20260305170000"),                                     // finished in 9 then 10
        due(2, "20260305170000"),                                     // 10 only, late
        due(3, "20260305170000"),                                     // two supplement requests, no end
        due(4, "20260305170000"), // two requests, then finished: both subtracted
        due(5, "20260305170000"), // one request, no end
        with(dossier(&code(6)), "NgayHenTra", json!("")), // no due date: the catalogue's day
        due(7, "20260301170000"), // open at the period's end, overdue
        due(8, "20260305170000"), // stopped (8) after a supplement request
        with(due(9, "20260305170000"), "TrangThaiHoSo", json!("10")), // finished without a 9 or 10 entry
    ];
    let steps: &[(u32, &str, &str)] = &[
        (1, "20260301083000", "2"),
        (1, "20260304080000", "9"),
        (1, "20260306080000", "10"),
        (2, "20260301083000", "2"),
        (2, "20260307080000", "10"),
        (3, "20260301083000", "2"),
        (3, "20260302080000", "5"),
        (3, "20260302090000", "4"),
        (3, "20260302100000", "5"),
        (4, "20260301083000", "2"),
        (4, "20260302080000", "5"),
        (4, "20260303080000", "4"),
        (4, "20260304080000", "5"),
        (4, "20260305080000", "4"),
        (4, "20260307080000", "9"),
        (5, "20260301083000", "2"),
        (5, "20260304080000", "5"),
        (6, "20260301083000", "2"),
        (6, "20260302090000", "9"),
        (7, "20260301083000", "2"),
        (7, "20260301090000", "4"),
        (8, "20260301083000", "2"),
        (8, "20260302080000", "5"),
        (8, "20260303080000", "8"),
        (9, "20260301083000", "2"),
        (9, "20260301090000", "4"),
    ];
    assert_eq!(code_of(&n.create(dossiers.clone()).await), 0);
    let entries: Vec<Value> = steps.iter().map(|(i, at, st)| entry(&code(*i), at, st)).collect();
    assert_eq!(code_of(&n.history(entries.clone()).await), 0);
    let lay = n.call("LayThuTuc", json!({"maTTHC": "1.001193"})).await;
    let duration = dvc_sync::domain::scoring::MaxDuration::of_procedure(&lay["result"][0]);
    assert!(duration.is_some());
    let facts: Vec<(Facts, bool)> = dossiers
        .iter()
        .map(|d| {
            let history: Vec<Value> =
                entries.iter().filter(|e| e["MaHoSo"] == d["MaHoSo"]).cloned().collect();
            let mut f = Facts::of_national(d.as_object().unwrap(), &history);
            f.synchronized = true;
            f.duration = duration;
            (f, false)
        })
        .collect();
    for (from, to) in
        [("2026-03-01", "2026-03-31"), ("2026-03-01", "2026-03-02"), ("2026-03-03", "2026-03-04")]
    {
        let period = Period::new(from.parse().unwrap(), to.parse().unwrap()).unwrap();
        let local =
            serde_json::to_value(compute(&facts, &period, &Context::now(Default::default())).province)
                .unwrap();
        let (_, nat) = n.get(&format!("/_mock/report?from={from}&to={to}")).await;
        assert_same_figures(&local, &nat["province"], &format!("{from}..{to}"));
        assert_eq!(local["1.4"], nat["province"]["1.4"]);
    }
    let month = compute(&facts, &Period::month("2026-03").unwrap(), &Context::now(Default::default()));
    let late: Vec<&str> = month.late.iter().map(|l| &l.mahoso[l.mahoso.len() - 4..]).collect();
    assert_eq!(late, ["0002", "0003", "0006", "0007", "0009"], "{:#?}", month.late);
    assert_eq!(
        month.findings.iter().map(|f| f.kind).collect::<Vec<_>>(),
        ["supplement_unanswered", "supplement_unanswered", "finished_without_history"]
    );
}
