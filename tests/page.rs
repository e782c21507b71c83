//! The page at `/`, read by a real browser (headless Chromium; the page's Content-Security-
//! Policy forbids every script, as JavaScript off would) from the real
//! daemon after a run against the mocks: its figures are the ones `report --json` and
//! `status --json` give on the same database, it is Vietnamese unless `?lang=en`, its charts
//! are there without scripts, and no personal value of the provincial truth is on it. A
//! screenshot is kept in the test's target directory. Then the access token: with
//! `telemetry.access_token_file`, `/` and `/metrics` answer only its bearer.

mod common;

#[path = "common/browser.rs"]
mod browser;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

/// The value of `attr` in the first tag of `dom` that holds `marker`.
fn attr_after(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[..tag_end];
    let tag = &tag[tag.rfind('<')?..];
    let key = format!("{attr}=\"");
    let start = tag.find(&key)? + key.len();
    Some(tag[start..start + tag[start..].find('"')?].to_owned())
}

fn figure(dom: &str, name: &str) -> String {
    attr_after(dom, &format!("data-figure=\"{name}\""), "data-value")
        .unwrap_or_else(|| panic!("no figure {name}"))
}

/// `(numerator, denominator)` of an indicator cell: the score's `<span>`, or an agency's `<td>`.
fn fraction(dom: &str, marker: &str) -> (u64, u64) {
    let n = attr_after(dom, marker, "data-numerator").unwrap_or_else(|| panic!("no {marker}"));
    let d = attr_after(dom, marker, "data-denominator").unwrap();
    (n.parse().unwrap(), d.parse().unwrap())
}

fn report_json(config: &std::path::Path) -> Value {
    let (code, out) = cli(config, &["report", "--json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_browser_shows_what_report_and_status_compute_and_nothing_personal() {
    let national = National::start(Faults { error_rate: 0.02, seed: 5, ..Faults::default() }).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 500, changes_per_second: 2_000.0, seed: 5, ..Knobs::default() })
            .await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        // No background audit: verified coverage stays still between status and the page.
        &["telemetry.metrics_listen = \"127.0.0.1:0\"", "national.audit_per_second = 0"],
    );
    let daemon = Daemon::start(&config).await;
    let addr = metrics_addr(&daemon).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while provincial.stats().await["finished"] != json!(true) {
        assert!(std::time::Instant::now() < deadline, "the simulation did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(180)).await;
    assert!(verdict.clean() && verdict.synchronized == verdict.valid, "{}", verdict.summary());
    // Idle: nothing waiting, and the counts unchanged over a second.
    let mut last = Value::Null;
    let idle_by = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_json(&config);
        if s["outbox"]["depth"] == 0 && s["dossiers"] == last["dossiers"] {
            break;
        }
        assert!(std::time::Instant::now() < idle_by, "the daemon never went idle: {s}");
        last = s;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let status = status_json(&config);
    let report = report_json(&config);

    let profile = dir.path().join("chromium");
    let dom = browser::dump_dom(&format!("http://{addr}/"), &profile);
    assert!(dom.contains("<html lang=\"vi\""), "Vietnamese by default: {}", &dom[..dom.len().min(2000)]);
    assert!(
        dom.contains("Tình trạng đồng bộ") && dom.contains("Điểm theo Quyết định 766"),
        "Vietnamese words"
    );

    // Sync health as status --json gives it.
    for (name, key) in [
        ("dossiers_total", "total"),
        ("in_sync", "in_sync"),
        ("quarantined", "quarantined"),
        ("dead", "dead"),
    ] {
        assert_eq!(figure(&dom, name), status["dossiers"][key].to_string(), "{name}");
    }
    let coverage = status["coverage_percent"].as_f64().unwrap();
    assert_eq!(figure(&dom, "coverage_percent"), format!("{coverage:.2}"));
    let verified = status["audit"]["verified_percent"].as_f64().unwrap();
    assert_eq!(figure(&dom, "verified_percent"), format!("{verified:.2}"));
    assert_eq!(figure(&dom, "outbox_depth"), status["outbox"]["depth"].to_string());
    assert_eq!(figure(&dom, "parked_total"), status["parked"]["total"].to_string());
    assert!(dom.contains("data-source=\"provincial\""), "the source is listed");

    // The 766 picture as report --json gives it, for the province and every DonViXuLy.
    for id in ["1.4", "2.1", "3.3", "3.6", "4.1", "4.2", "4.3"] {
        let want = &report["province"][id];
        let got = fraction(&dom, &format!("<span data-indicator=\"{id}\""));
        assert_eq!(got, (want["numerator"].as_u64().unwrap(), want["denominator"].as_u64().unwrap()), "{id}");
    }
    let agencies = report["by_agency"].as_object().unwrap();
    assert!(!agencies.is_empty());
    for (agency, figures) in agencies {
        let row =
            dom.find(&format!("data-agency=\"{agency}\"")).unwrap_or_else(|| panic!("no row for {agency}"));
        for id in ["2.1", "4.1"] {
            let got = fraction(&dom[row..], &format!("data-indicator=\"{id}\""));
            let want = &figures[id];
            assert_eq!(
                got,
                (want["numerator"].as_u64().unwrap(), want["denominator"].as_u64().unwrap()),
                "{agency} {id}"
            );
        }
    }
    for (attr, key, cause) in [
        ("data-late-source", "late_by_cause", "source"),
        ("data-late-sync", "late_by_cause", "sync"),
        ("data-receipt-late-source", "receipt_late_by_cause", "source"),
        ("data-receipt-late-sync", "receipt_late_by_cause", "sync"),
    ] {
        assert_eq!(attr_after(&dom, attr, attr).unwrap(), report[key][cause].to_string(), "{attr}");
    }
    assert_eq!(dom.matches("data-late=\"").count(), report["late"].as_array().unwrap().len().min(200));

    // The charts are drawn with scripts off: one per indicator, late by cause, a line per cell.
    assert!(dom.matches("<svg class=\"chart\"").count() >= 8, "charts");
    assert!(dom.contains("class=\"bar\""), "bars with their values");
    assert!(dom.matches("<svg class=\"spark\"").count() >= 7 * agencies.len());
    assert!(!dom.contains("<script"), "no script");
    let served = reqwest::get(format!("http://{addr}/")).await.unwrap();
    let csp = served.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "scripts forbidden: {csp}");
    assert!(!dom.contains("src=\"http") && !dom.contains("href=\"http"), "nothing fetched from elsewhere");

    // No personal value of the provincial truth.
    let truth = provincial.truth().await;
    let personal = personal_values(&truth);
    assert!(!personal.is_empty());
    for value in &personal {
        assert!(!dom.contains(value.as_str()), "a personal value is on the page: {value}");
    }

    // English on request.
    let en = browser::dump_dom(&format!("http://{addr}/?lang=en"), &profile);
    assert!(en.contains("<html lang=\"en\"") && en.contains("Synchronization"), "English at ?lang=en");

    // The same database read in a terminal, by the locale: Vietnamese, at most 100 columns.
    for (args, words) in [
        (&["status"][..], &["tình trạng", "hồ sơ", "đã đồng bộ", "độ phủ", "bị cách ly"][..]),
        (
            &["report", "--late"][..],
            &["Chỉ số theo Quyết định 766", "giải quyết trước hạn, đúng hạn", "trễ hạn"][..],
        ),
        (&["check-source", "--limit", "20"][..], &["nguồn", "tóm tắt", "hồ sơ sẽ được gửi"][..]),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .env("LANG", "vi_VN.UTF-8")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        for w in words {
            assert!(text.contains(w), "{args:?} does not say {w:?}:\n{text}");
        }
        let wide: Vec<&str> = text.lines().filter(|l| l.chars().count() > 100).collect();
        assert!(wide.is_empty(), "{args:?}: lines wider than 100 columns: {wide:#?}");
    }
    let (_, english) = cli(&config, &["--lang", "en", "status"]);
    assert!(english.contains("coverage") && !english.contains("độ phủ"), "{english}");

    // The screenshot, kept as the test's artefact.
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page.png");
    browser::screenshot(&format!("http://{addr}/"), &profile, &png);
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "a screenshot of something");
    eprintln!("screenshot: {}", png.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_access_token_the_page_and_metrics_answer_only_its_bearer() {
    let national = National::start(Faults::default()).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 20, changes_per_second: 0.0, ..Knobs::default() }).await;
    let dir = test_dir();
    let token_file = dir.path().join("page-token");
    std::fs::write(&token_file, "s3cret-token-for-the-page\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &[
            "telemetry.metrics_listen = \"127.0.0.1:0\"",
            &format!("telemetry.access_token_file = {:?}", token_file.display().to_string()),
        ],
    );
    let daemon = Daemon::start(&config).await;
    let addr = metrics_addr(&daemon).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for path in ["/", "/metrics"] {
        let refused = get(path, None).await.unwrap();
        assert_eq!(refused.status(), 401, "{path} without the token");
        assert!(refused.text().await.unwrap().contains("telemetry.access_token_file"), "the reason");
        assert_eq!(get(path, Some("wrong-token-wrong-token")).await.unwrap().status(), 401, "{path}");
        let served = get(path, Some("s3cret-token-for-the-page")).await.unwrap();
        assert_eq!(served.status(), 200, "{path} with the token");
        let body = served.text().await.unwrap();
        assert!(if path == "/" { body.contains("<html lang=\"vi\"") } else { body.contains("dvc_sync_") });
    }
    assert_eq!(get("/healthz", None).await.unwrap().status(), 200, "health stays open");
    // A token file others may read is refused at start, by its key.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = cli(&config, &["check-config"]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("telemetry.access_token_file"), "{out}");
}
