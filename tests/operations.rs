//! Running it in production: `status` in every state (JSON, table, exit codes), metrics and
//! health endpoints against the documentation, secrets never shown, systemd notifications.

mod common;

use std::{collections::BTreeSet, path::Path, time::Duration};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

fn clean_knobs(dossiers: u32) -> Knobs {
    Knobs {
        dossiers,
        changes_per_second: 0.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    }
}

/// `dvc-sync status [args]`: exit code, stdout, stderr.
fn status(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "status"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// While the daemon is still creating its database, status may not read it yet.
fn status_soon(config: &Path) -> Value {
    let (_, out, _) = status(config, &["--json"]);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn status_json(config: &Path) -> (i32, Value) {
    let (code, out, err) = status(config, &["--json"]);
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out} {err}")))
}

/// The exact field names of daemon.md's `status --json`.
fn assert_status_shape(v: &Value) {
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    let set = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        keys(v),
        set(&[
            "health",
            "problems",
            "daemon",
            "dossiers",
            "coverage_percent",
            "outbox",
            "poll",
            "push",
            "audit",
            "sources",
            "workers",
            "parked",
            "personal_data"
        ])
    );
    assert_eq!(
        keys(&v["personal_data"]),
        set(&[
            "dossiers_in_clear",
            "dossiers_minimised",
            "quarantined_in_clear",
            "sealed_with",
            "all_sealed"
        ]),
        "{}",
        v["personal_data"]
    );
    for source in v["sources"].as_array().unwrap() {
        assert_eq!(
            keys(source),
            set(&["name", "kind", "retired", "dossiers", "last_success_at", "last_error", "cursor"]),
            "{source}"
        );
        assert_eq!(source["dossiers"], v["dossiers"]["total"], "one source owns every dossier");
    }
    assert_eq!(keys(&v["parked"]), set(&["total", "items"]), "{}", v["parked"]);
    for item in v["parked"]["items"].as_array().unwrap() {
        assert_eq!(keys(item), set(&["kind", "key", "reason"]), "{item}");
        assert!(["dead", "quarantined"].contains(&item["kind"].as_str().unwrap()), "{item}");
    }
    for w in v["workers"].as_array().unwrap() {
        assert_eq!(keys(w), set(&["name", "state", "since", "last_error", "failures"]), "{w}");
        assert!(["busy", "idle", "failing", "stopped"].contains(&w["state"].as_str().unwrap()), "{w}");
    }
    assert_eq!(
        keys(&v["audit"]),
        set(&[
            "verified_percent",
            "oldest_verified_age_seconds",
            "drift_found",
            "drift_repaired",
            "last_pass_at"
        ])
    );
    assert!(v["audit"]["verified_percent"].is_f64() && v["audit"]["oldest_verified_age_seconds"].is_f64());
    assert_eq!(keys(&v["daemon"]), set(&["state", "pid", "heartbeat_age_seconds", "version"]));
    assert_eq!(
        keys(&v["dossiers"]),
        set(&["total", "in_sync", "pending", "retrying", "dead", "quarantined"])
    );
    assert_eq!(keys(&v["outbox"]), set(&["depth", "oldest_pending_age_seconds"]));
    assert_eq!(keys(&v["poll"]), set(&["last_success_at", "last_error", "cursor"]));
    assert_eq!(keys(&v["push"]), set(&["last_success_at", "last_error", "session_renewals"]));
    if !v["poll"]["cursor"].is_null() {
        assert_eq!(keys(&v["poll"]["cursor"]), set(&["updated_at", "id"]));
    }
    assert!(["ok", "degraded", "failing"].contains(&v["health"].as_str().unwrap()));
    assert!(["running", "stopped", "stale"].contains(&v["daemon"]["state"].as_str().unwrap()));
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_healthy_while_running_and_after_a_clean_stop() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean_knobs(150)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    // Last successes reach the database with the next heartbeat.
    wait_until("status ok", Duration::from_secs(20), || {
        let v = status_soon(&config);
        v["dossiers"]["in_sync"] == 150 && v["push"]["last_success_at"].is_string()
    })
    .await;

    let (code, v) = status_json(&config);
    assert_status_shape(&v);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["health"], "ok");
    assert_eq!(v["problems"], json!([]));
    assert_eq!(v["daemon"]["state"], "running");
    assert_eq!(v["daemon"]["pid"], daemon.pid());
    assert_eq!(v["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["dossiers"],
        json!({"total": 150, "in_sync": 150, "pending": 0, "retrying": 0, "dead": 0, "quarantined": 0})
    );
    assert_eq!(v["coverage_percent"], 100.0);
    assert_eq!(v["outbox"]["depth"], 0);
    assert!(v["poll"]["last_success_at"].is_string() && v["push"]["last_success_at"].is_string());
    assert!(v["poll"]["cursor"]["id"].as_str().unwrap().contains(".H58-"), "{v}");

    // Each loop of the daemon is a worker, recorded with every heartbeat.
    let names: Vec<&str> =
        v["workers"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["audit", "heartbeat", "minimiser", "poller:provincial", "pusher", "reconciler"],
        "{v}"
    );
    assert!(
        v["workers"].as_array().unwrap().iter().all(|w| w["state"] != "stopped" && w["failures"] == 0),
        "{v}"
    );

    let (code, table, _) = status(&config, &[]);
    assert_eq!(code, 0);
    assert!(table.contains("health     OK"), "{table}");
    assert!(table.contains("workers    audit "), "{table}");
    assert!(table.contains("150 total: 150 in sync"), "{table}");

    let mahoso = v["poll"]["cursor"]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = status(&config, &["--dossier", &mahoso, "--json"]);
    assert_eq!(code, 0);
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["sync_state"], "in_sync");
    assert_eq!(d["national"]["current"], true);
    assert_eq!(d["local"]["history_entries"], d["national"]["history_entries_acknowledged"]);
    assert_eq!(d["local"]["status"], d["national"]["status"]);

    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(10)).await.unwrap().success());
    let (code, v) = status_json(&config);
    assert_status_shape(&v);
    assert_eq!(
        (code, v["daemon"]["state"].as_str(), v["health"].as_str()),
        (0, Some("stopped"), Some("ok")),
        "{v}"
    );
    assert!(v["workers"].as_array().unwrap().iter().all(|w| w["state"] == "stopped"), "{v}");
    let (code, out, _) = status(&config, &["--dossier", "000.00.15.H58-200101-9999"]);
    assert_eq!(code, 1, "an unknown dossier: {out}");
    assert!(out.contains("unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_quarantined_items_make_status_degraded_and_are_listed_with_reasons() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 300,
        changes_per_second: 0.0,
        bad_record_rate: 0.05,
        unknown_procedure_rate: 0.03,
        seed: 5,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    let injected_bad: usize = verdict.injected_defects.values().sum();
    let dead = verdict.injected_unknown_procedures.len();
    assert!(injected_bad > 0 && dead > 0);
    wait_until("parked", Duration::from_secs(20), || status_soon(&config)["dossiers"]["dead"] == dead).await;
    let (code, v) = status_json(&config);
    assert_status_shape(&v);
    assert_eq!(code, 1);
    assert_eq!(v["health"], "degraded");
    assert_eq!(v["dossiers"]["quarantined"], injected_bad);
    assert_eq!(v["dossiers"]["total"], 300);
    let problems = v["problems"].to_string();
    assert!(problems.contains("dead") && problems.contains("quarantined"), "{problems}");
    assert_eq!(v["parked"]["total"], dead + injected_bad, "{}", v["parked"]);
    let listed = v["parked"]["items"].as_array().unwrap();
    assert_eq!(listed.len(), (dead + injected_bad).min(100));
    for dead_one in &verdict.injected_unknown_procedures {
        assert!(
            listed.iter().any(|i| i["kind"] == "dead" && i["key"] == dead_one.as_str() && i["reason"] != ""),
            "{dead_one} listed with its reason: {}",
            v["parked"]
        );
    }
    let valid = 300 - injected_bad;
    let expected = (valid - dead) as f64 * 100.0 / valid as f64;
    assert!((v["coverage_percent"].as_f64().unwrap() - expected).abs() < 1e-9, "{v}");

    let (code, table, _) = status(&config, &[]);
    assert_eq!(code, 1);
    assert!(table.contains("DEGRADED") && table.contains("quarantined"), "{table}");
    for dead_one in &verdict.injected_unknown_procedures {
        assert!(table.contains(dead_one.as_str()), "{dead_one} listed: {table}");
    }
    let dead_one = verdict.injected_unknown_procedures[0].clone();
    let (code, out, _) = status(&config, &["--dossier", &dead_one, "--json"]);
    assert_eq!(code, 1);
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["sync_state"], "dead");
    assert!(
        d["last_error"].as_str().unwrap().contains("9.99")
            || d["last_error"].as_str().unwrap().contains("3.000777")
    );
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_shows_as_stale_and_an_old_backlog_as_degraded() {
    let national = National::start(Faults::default()).await;
    national.put_faults(json!({"outage": true})).await;
    let provincial = Provincial::start(clean_knobs(50)).await;
    let dir = test_dir();
    let overrides = ["daemon.stale_heartbeat_seconds = 2.0", "daemon.outbox_age_threshold_seconds = 1.0"];
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &overrides);
    let mut daemon = Daemon::start(&config).await;
    wait_until("a backlog", Duration::from_secs(20), || status_soon(&config)["outbox"]["depth"] == 50).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, v) = status_json(&config);
    assert_eq!(code, 1);
    assert_eq!(v["daemon"]["state"], "running");
    assert!(v["problems"].to_string().contains("oldest change"), "{v}");
    assert!(v["push"]["last_error"].as_str().unwrap().contains("503"), "{v}");
    // National failures for longer than the stale threshold, work waiting: failing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, v) = status_json(&config);
    assert_eq!(v["health"], "failing", "{v}");

    daemon.kill9().await;
    let (code, v) = status_json(&config);
    assert_eq!((code, v["daemon"]["state"].as_str()), (1, Some("stale")), "killed without stopping: {v}");
    assert_eq!(v["health"], "degraded");
    assert!(v["problems"].to_string().contains("heartbeat"), "{v}");
}

#[test]
fn unreadable_state_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "http://127.0.0.1:9", &[]);
    let (code, _, err) = status(&config, &["--json"]);
    assert_eq!(code, 2, "no database yet");
    assert!(err.contains("cannot read the state"), "{err}");
    std::fs::write(dir.path().join("state.db"), vec![7u8; 4096]).unwrap();
    let (code, _, err) = status(&config, &[]);
    assert_eq!(code, 2, "not a database: {err}");
    std::fs::remove_file(dir.path().join("state.db")).unwrap();
    rusqlite::Connection::open(dir.path().join("state.db"))
        .unwrap()
        .execute("CREATE TABLE other (x)", [])
        .unwrap();
    let (code, _, err) = status(&config, &[]);
    assert_eq!(code, 2, "another program's database: {err}");
    assert!(err.contains("not a dvc-sync database"), "{err}");
}

/// The metrics address from the daemon's `daemon_started` log line.
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let table = doc.split("## Metrics").nth(1).unwrap().split("PromQL").next().unwrap();
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("dvc_sync_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_serve_what_the_documentation_names() {
    let national =
        National::start(Faults { error_rate: 0.2, session_ttl_seconds: 1.0, ..Faults::default() }).await;
    let provincial = Provincial::start(clean_knobs(200)).await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["telemetry.metrics_listen = \"127.0.0.1:0\""],
    );
    let mut daemon = Daemon::start(&config).await;
    let addr = metrics_addr(&daemon).await;
    let http = client();
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let scrape = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let documented = documented_metrics();
    assert!(documented.len() >= 15, "{documented:?}");
    for name in &documented {
        assert!(exported.contains(name), "{name} is documented but not exported:\n{scrape}");
    }
    for name in exported.iter().filter(|n| n.starts_with("dvc_sync_")) {
        assert!(documented.contains(name), "{name} is exported but not documented");
    }
    assert!(scrape.contains("# HELP dvc_sync_outbox_depth "), "help text");
    assert!(scrape.contains("dvc_sync_coverage_ratio 1"), "{scrape}");
    assert!(!scrape.contains("000.00."), "no MaHoSo in labels");

    let health = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], true);
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;

    // Not ready while the provincial portal is down, and it says why.
    provincial.put_faults(json!({"outage": true})).await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["telemetry.metrics_listen = \"127.0.0.1:0\""],
    );
    let mut daemon = Daemon::start(&config).await;
    let addr = metrics_addr(&daemon).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.json::<Value>().await.unwrap();
    assert!(
        why["reasons"].to_string().contains("no successful poll yet")
            && why["reasons"].to_string().contains("503"),
        "{why}"
    );
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_secret_appears_in_no_log_line_and_no_status_output() {
    const PASSWORD: &str = "SENTINEL-pw-7f3a9c";
    const API_KEY: &str = "SENTINEL-key-51be0d";
    let national = dvc_sync::mock::national::start(
        loopback().await,
        dvc_sync::mock::national::NationalConfig {
            password: PASSWORD.into(),
            faults: Faults { session_ttl_seconds: 0.5, error_rate: 0.1, ..Faults::default() },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let provincial = dvc_sync::mock::provincial::start(
        loopback().await,
        dvc_sync::mock::provincial::ProvincialConfig {
            api_key: API_KEY.into(),
            knobs: Knobs { bad_record_rate: 0.05, ..clean_knobs(100) },
        },
    )
    .await
    .unwrap();
    let dir = test_dir();
    // The password from a private file, the key from the environment: both paths.
    let secret_file = dir.path().join("password");
    std::fs::write(&secret_file, format!("{PASSWORD}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = write_config(
        dir.path(),
        &provincial.url(),
        &national.url(),
        &[
            "national.password = \"\"",
            &format!("national.password_file = {:?}", secret_file.display().to_string()),
            "provincial.api_key = \"\"",
            "telemetry.metrics_listen = \"127.0.0.1:0\"",
        ],
    );
    let log = dir.path().join("daemon.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("DVC_SYNC__PROVINCIAL__API_KEY", API_KEY)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::from(out.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(out))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    converge(&provincial.url(), &national.url(), Duration::from_secs(60)).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.lines().count() > 50, "trace logging produced little: {}", logs.lines().count());
    let mut outputs = vec![logs];
    for args in [&[][..], &["--json"][..], &["--dossier", &code(1)][..]] {
        outputs.push(status(&config, args).1);
    }
    let check = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("DVC_SYNC__PROVINCIAL__API_KEY", API_KEY)
        .output()
        .unwrap();
    assert!(check.status.success());
    outputs.push(String::from_utf8_lossy(&check.stdout).into_owned());
    let metrics_addr = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["event"] == "daemon_started"))
        .unwrap()["metrics"]
        .as_str()
        .unwrap()
        .to_owned();
    outputs.push(
        client().get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap(),
    );
    for output in &outputs {
        assert!(!output.contains(PASSWORD) && !output.contains(API_KEY), "a secret leaked:\n{output}");
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains(PASSWORD) && !logs.contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_status_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean_knobs(30)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut asked_to_stop = false;
    while std::time::Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let all = messages.join("\n");
        if !asked_to_stop && all.contains("WATCHDOG=1") && all.contains("synced 30/30") {
            std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
            asked_to_stop = true;
        }
        if all.contains("STOPPING=1") {
            break;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let all = messages.join("\n");
    assert!(messages.first().is_some_and(|m| m.contains("READY=1")), "READY first: {all}");
    assert!(all.contains("WATCHDOG=1"), "{all}");
    assert!(all.contains("STATUS=synced 30/30, outbox 0, dead 0, quarantined 0"), "{all}");
    assert!(all.contains("STOPPING=1"), "{all}");
}

#[test]
fn the_alert_rules_and_the_dashboard_name_only_documented_metrics() {
    let documented = documented_metrics();
    let names = |text: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("dvc_sync_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
            let name =
                tail[..end].trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            out.insert(name.to_owned());
            rest = &tail[end..];
        }
        out
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!("{root}/deploy/prometheus/dvc-sync.rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(format!("{root}/deploy/grafana/dvc-sync.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 8);
    for (file, text) in [("alert rules", &rules), ("dashboard", &dashboard)] {
        let used = names(text);
        assert!(!used.is_empty());
        for name in used {
            assert!(
                documented.contains(&name),
                "the {file} name {name}, which docs/operations.md does not list"
            );
        }
    }
    for alert in [
        "DvcSyncDown",
        "OutboxGrowing",
        "OldestPendingTooOld",
        "DeadDossiers",
        "QuarantinedRecords",
        "CoverageBelowFull",
        "LoginFailures",
    ] {
        assert!(rules.contains(alert), "alert {alert}");
    }
}

#[test]
fn status_json_prints_its_document_on_an_absent_or_corrupt_database() {
    let dir = test_dir();
    for case in ["absent", "corrupt"] {
        let db = dir.path().join(format!("{case}.db"));
        if case == "corrupt" {
            std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
        }
        let config = dir.path().join(format!("{case}.toml"));
        std::fs::write(&config, format!("[store]\npath = {:?}\n", db.display().to_string())).unwrap();
        let (code, out, err) = status(&config, &["--json"]);
        assert_eq!(code, 2, "{case}: the same exit code as before: {err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{case}: {e}: {out:?}"));
        assert_status_shape(&v);
        assert_eq!(v["health"], "failing", "{case}");
        let problems = v["problems"].as_array().unwrap();
        assert!(
            problems.len() == 1 && problems[0].as_str().unwrap().contains("cannot read the state"),
            "{v}"
        );
        assert_eq!(v["daemon"]["state"], "stopped");
        assert_eq!(v["dossiers"]["total"], 0);
        assert!(err.contains("cannot read the state"), "and said on stderr: {err}");
        // Without --json: the message only, as before.
        let (code, out, _) = status(&config, &[]);
        assert_eq!((code, out.as_str()), (2, ""));
    }
}

/// `status --dossier` journals every national call that concerned the dossier, as the portal
/// saw it: the answered calls it lists (newest first) are exactly the national mock's own record
/// of the calls that carried the dossier, with the same services and error codes; failures at
/// the door are listed too, with their HTTP status; an audit's look-ups join them; at most ten
/// are kept per dossier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_dossier_journals_the_national_calls_as_the_portal_saw_them() {
    let national = National::start(Faults { error_rate: 0.15, ..Faults::default() }).await;
    let provincial =
        Provincial::start(Knobs { unknown_procedure_rate: 0.05, seed: 11, ..clean_knobs(80) }).await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["national.batch_size = 7", "national.audit_per_second = 0"],
    );
    let mut daemon = Daemon::start(&config).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    assert!(verdict.not_synchronized.is_empty(), "{:?}", verdict.not_synchronized);
    assert!(!verdict.injected_unknown_procedures.is_empty());
    let dead = verdict.injected_unknown_procedures.len();
    wait_until("parked", Duration::from_secs(20), || status_soon(&config)["dossiers"]["dead"] == dead).await;
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await.expect("the daemon stops");
    // Audit every dossier once, standalone (the daemon is stopped): its look-ups join the journal.
    audit_command(&config, &["--all", "--per-second", "500"]);

    let (_, calls) = national.get("/_mock/calls?limit=5000").await;
    let calls = calls["items"].as_array().unwrap().clone();
    let journal = |mahoso: &str| -> Vec<Value> {
        let (_, out, err) = status(&config, &["--dossier", mahoso, "--json"]);
        let d: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
        d["calls"].as_array().unwrap().clone()
    };
    let mut door_failures = 0;
    let mut audited = 0;
    let mut dossiers = 0;
    let mut parked_calls = 0;
    for record in provincial.truth().await {
        let mahoso = record["key"].as_str().unwrap().to_owned();
        let kept = journal(&mahoso);
        assert!(kept.len() <= 10, "{mahoso}: {} calls kept", kept.len());
        let dead = verdict.injected_unknown_procedures.contains(&mahoso);
        // A dossier parked from the cached catalogue was never in a call.
        assert!(dead || !kept.is_empty(), "{mahoso}: no call journalled");
        dossiers += 1;
        door_failures +=
            kept.iter().filter(|c| c["outcome"] == "server_error" && c["http_status"] == 500).count();
        audited += kept.iter().filter(|c| c["message"].as_str().unwrap().starts_with("audit: ")).count();
        let answered: Vec<(String, i64)> = kept
            .iter()
            // The mock does not name the dossiers of a catalogue look-up.
            .filter(|c| (c["outcome"] == "ok" || c["outcome"] == "refused") && c["service"] != "LayThuTuc")
            .map(|c| (c["service"].as_str().unwrap().to_owned(), c["error_code"].as_i64().unwrap_or(0)))
            .collect();
        let seen: Vec<(String, i64)> = calls
            .iter()
            .rev()
            .filter(|c| c["items"].as_array().unwrap().iter().any(|i| i == mahoso.as_str()))
            .map(|c| (c["service"].as_str().unwrap().to_owned(), c["error_code"].as_i64().unwrap()))
            .take(answered.len())
            .collect();
        assert_eq!(answered, seen, "{mahoso}: the journal against the portal's own record");
        if dead {
            // Refused by the catalogue look-up or by the portal itself, and said so.
            let last = kept.iter().find(|c| c["outcome"] != "server_error");
            if let Some(last) = last {
                assert!(last["message"].as_str().unwrap().contains("MaTTHC"), "{mahoso}: {kept:?}");
                parked_calls += 1;
            }
        }
    }
    assert!(dossiers >= 70, "{dossiers} dossiers read from the truth");
    assert!(door_failures > 0, "HTTP 500s at the door are journalled too");
    assert!(audited > 0, "the audit's look-ups are journalled");
    assert!(parked_calls > 0, "the call that parked a dossier is journalled with the portal's reason");

    // The table for people names the calls.
    let first = provincial.truth().await[0]["key"].as_str().unwrap().to_owned();
    let (_, table, _) = status(&config, &["--dossier", &first]);
    assert!(table.contains("national call") && table.contains("DongBoHoSoMC"), "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 100), "100 columns: {table}");
    let rows: i64 = db(dir.path()).query_row("SELECT COUNT(*) FROM call_journal", [], |r| r.get(0)).unwrap();
    assert!(rows <= 10 * 80, "{rows} rows for 80 dossiers");
}
