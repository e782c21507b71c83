//! The operator's first hour: what a careful newcomer did to the daemon, each the way they did
//! it, through the real binary (issue 29's points, numbered as there).

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::Value;

/// `dvc-sync [--config config] args`: exit code, stdout, stderr. A command that should end but
/// goes on (a daemon that ought to have refused) is killed after a minute, and fails the test.
fn cli(config: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    use std::{io::Read, process::Stdio};
    let mut command = Command::new(BIN);
    if let Some(c) = config {
        command.args(["--config", c.to_str().unwrap()]);
    }
    let mut child = command
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dvc-sync {args:?} still ran after a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), out.join().unwrap(), err.join().unwrap())
}

fn clean(dossiers: u32) -> Knobs {
    Knobs {
        dossiers,
        changes_per_second: 0.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    }
}

/// A configuration for mocks that are not running (for what needs no portal).
fn offline_config(dir: &Path, overrides: &[&str]) -> PathBuf {
    write_config(dir, "http://127.0.0.1:9", "http://127.0.0.1:9", overrides)
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// 1. One writer per database, whatever its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_through_another_name_of_the_file_refuses_with_the_first_ones_pid() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(Knobs { dossiers: 400, changes_per_second: 40.0, ..clean(400) }).await;
    let dir = test_dir();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let real = dir.path().join("real/s.db");
    let at = |db: &Path, name: &str| {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let store = format!("store.path = {:?}", db.display().to_string());
        write_config(&sub, &provincial.server.url(), &national.server.url(), &[&store])
    };
    let mut first = Daemon::start(&at(&real, "first")).await;
    wait_for("the first daemon's database", Duration::from_secs(20), || real.exists()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&real, &hard).unwrap();
    let dotted = dir.path().join("real/../real/./s.db");
    for (name, other) in [("symlink", &link), ("hardlink", &hard), ("dotted", &dotted)] {
        let mut second = Daemon::start(&at(other, name)).await;
        let status = second.wait(Duration::from_secs(20)).await.expect("the second daemon refuses at once");
        assert_eq!(status.code(), Some(1), "{name}: {}", second.logs());
        let said = second.logs();
        assert!(
            said.contains("already running") && said.contains(&format!("pid {}", first.pid())),
            "{name}: {said}"
        );
    }
    // Under load, the attempts changed nothing: no history entry twice.
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(90)).await;
    assert!(verdict.clean(), "{}", verdict.summary());
    assert_eq!(national.stats().await["duplicate_history_entries"], 0);
    first.sigterm().await;
    assert!(first.wait(Duration::from_secs(20)).await.unwrap().success());
}

// 2. A call refused as a whole (a wrong unit code) is FAILING in status, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_code_the_portal_refuses_makes_status_failing_with_what_to_check() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(50)).await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["national.madonvi = \"000.00.00.H99\"", "telemetry.metrics_listen = \"127.0.0.1:0\""],
    );
    let mut daemon = Daemon::start(&config).await;
    let addr = metrics_addr(&daemon).await;
    wait_for("status FAILING", Duration::from_secs(30), || status_json(&config)["health"] == "failing").await;
    let v = status_json(&config);
    let problems = v["problems"].to_string();
    assert!(problems.contains("as a whole") && problems.contains("national.madonvi"), "{v}");
    assert!(v["push"]["last_error"].as_str().is_some_and(|e| e.contains("error_code 7")), "{v}");
    let (code, table, _) = cli(Some(&config), &["status"]);
    assert_eq!(code, 1);
    assert!(table.contains("FAILING") && table.contains("national.madonvi"), "{table}");
    let scrape = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(scrape.contains("dvc_sync_national_refusing 1"), "{scrape}");
    // Refused again and again: logged once a minute, with the count left out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = daemon.logs().lines().filter(|l| l.contains("\"event\":\"call_refused\"")).count();
    assert!((1..=2).contains(&refused), "{refused} call_refused lines in a few seconds");
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
}

// 3. A syntax error shows the key and the line, never the line's text.
#[test]
fn a_toml_syntax_error_names_the_line_and_key_but_never_echoes_the_secret() {
    let dir = test_dir();
    let config = offline_config(dir.path(), &["national.password = \"TopSecretPW123"]);
    let (code, out, err) = cli(Some(&config), &["check-config"]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(!err.contains("TopSecretPW123") && !out.contains("TopSecretPW123"), "{err}");
    assert!(err.contains("line ") && err.contains("key password"), "{err}");
}

// 3b. The problems read in the operator's language: Vietnamese by the locale, English by the flag.
#[test]
fn configuration_problems_are_in_the_locales_language() {
    let dir = test_dir();
    let config = offline_config(dir.path(), &["national.batch_size = 0", "store.path = \"\""]);
    let run = |lang_env: &str, flag: &[&str]| {
        let out = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .args(flag)
            .arg("check-config")
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .env("LANG", lang_env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (out, err) = run("vi_VN.UTF-8", &[]);
    assert!(out.contains("# tệp cấu hình: "), "{out}");
    assert!(err.starts_with("cấu hình không hợp lệ (2 lỗi):"), "{err}");
    assert!(err.contains("  national.batch_size: phải từ 1 đến 1000, không phải 0"), "{err}");
    assert!(err.contains("  store.path: không được để trống"), "{err}");
    let (_, err) = run("vi_VN.UTF-8", &["--lang", "en"]);
    assert!(err.starts_with("invalid configuration (2 problems):"), "{err}");
    assert!(err.contains("  national.batch_size: must be from 1 to 1000, not 0"), "{err}");
}

// 4. Types are types.
#[test]
fn a_boolean_a_fraction_or_an_exponent_where_a_whole_number_is_due_is_refused_by_key() {
    let dir = test_dir();
    for (line, key) in [
        ("provincial.look_back_seconds = false", "provincial.look_back_seconds"),
        ("provincial.page_size = true", "provincial.page_size"),
        ("provincial.page_size = 5.5", "provincial.page_size"),
        ("national.batch_size = 1e3", "national.batch_size"),
        ("national.madonvi = 58", "national.madonvi"),
    ] {
        let config = offline_config(dir.path(), &[line]);
        let (code, _, err) = cli(Some(&config), &["check-config"]);
        assert_eq!(code, 78, "{line}: {err}");
        assert!(err.contains(key) && err.contains("expected"), "{line}: {err}");
    }
    // From the environment, the variable is named.
    let config = offline_config(dir.path(), &[]);
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("DVC_SYNC__NATIONAL__BATCH_SIZE", "1e3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("DVC_SYNC__NATIONAL__BATCH_SIZE"), "{err}");
}

// 5. The database must be ours, and its directory must exist unless told.
#[test]
fn run_refuses_someone_elses_database_and_a_missing_directory() {
    let dir = test_dir();
    let theirs = dir.path().join("customers.db");
    let conn = rusqlite::Connection::open(&theirs).unwrap();
    conn.execute_batch(
        "CREATE TABLE customers (id INTEGER, name TEXT); INSERT INTO customers VALUES (1, 'An');",
    )
    .unwrap();
    drop(conn);
    let store = format!("store.path = {:?}", theirs.display().to_string());
    let config = offline_config(dir.path(), &[&store]);
    let (code, _, err) = cli(Some(&config), &["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a dvc-sync database") && err.contains("customers"), "{err}");
    let conn = rusqlite::Connection::open(&theirs).unwrap();
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1, "nothing of ours was written into it");

    let typo = dir.path().join("var/lib/dvc-synk/dvc-sync.db");
    let store = format!("store.path = {:?}", typo.display().to_string());
    let config = offline_config(dir.path(), &[&store]);
    let (code, _, err) = cli(Some(&config), &["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not exist") && err.contains("store.create_dir"), "{err}");
    assert!(!dir.path().join("var").exists(), "no directory created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn told_to_the_daemon_creates_its_directory_private() {
    use std::os::unix::fs::PermissionsExt;
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(5)).await;
    let dir = test_dir();
    let db = dir.path().join("new/state/dvc-sync.db");
    let store = format!("store.path = {:?}", db.display().to_string());
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &[&store, "store.create_dir = true"],
    );
    let mut daemon = Daemon::start(&config).await;
    wait_for("the database", Duration::from_secs(20), || db.exists()).await;
    let mode = std::fs::metadata(db.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
}

// 6. The demo writes only a database of its own.
#[test]
fn demo_refuses_an_existing_database() {
    let dir = test_dir();
    let db = dir.path().join("kept.db");
    std::fs::write(&db, b"").unwrap();
    let (code, _, err) = cli(None, &["demo", "--dossiers", "10", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wants a new file") && err.contains("kept.db"), "{err}");
}

// 7. The drain starts nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_a_slow_portal_begins_no_new_call_and_ends_before_the_deadline() {
    let national = National::start(Faults { latency_ms: 4_000, ..Faults::default() }).await;
    let provincial = Provincial::start(clean(300)).await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &["daemon.drain_seconds = 20.0", "national.request_timeout_seconds = 30.0"],
    );
    let mut daemon = Daemon::start(&config).await;
    // Calls under way: the daemon polled and began pushing.
    wait_for("pushing", Duration::from_secs(30), || daemon.logs().contains("\"event\":\"daemon_started\""))
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    daemon.sigterm().await;
    let status = daemon.wait(Duration::from_secs(40)).await.expect("stopped");
    assert!(status.success());
    let logs = daemon.logs();
    assert!(logs.contains("drain_finished"), "{logs}");
    assert!(!logs.contains("drain_timeout"), "calls went on starting after the signal:\n{logs}");
}

// 8. Exit codes that mean one thing.
#[test]
fn usage_errors_exit_64_a_missing_configuration_78_and_audit_without_an_account_78() {
    let (code, _, err) = cli(None, &["status", "--no-such-flag"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = cli(None, &["--help"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(Some(Path::new("/nonexistent/dvc-sync.toml")), &["status"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("/nonexistent/dvc-sync.toml"), "{err}");
    let dir = test_dir();
    let config = offline_config(dir.path(), &["national.password = \"\""]);
    let (code, _, err) = cli(Some(&config), &["audit"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("national account"), "{err}");
}

// 9. Nothing cut silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_say_how_many_more_and_unknown_names_are_named() {
    let national = National::start(Faults::default()).await;
    let provincial =
        Provincial::start(Knobs { dossiers: 200, bad_record_rate: 0.15, seed: 3, ..clean(200) }).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    wait_for("quarantined recorded", Duration::from_secs(20), || {
        status_json(&config)["dossiers"]["quarantined"].as_u64().unwrap_or(0) > 10
    })
    .await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());

    let v = status_json(&config);
    let total = v["parked"]["total"].as_u64().unwrap();
    assert!(total > 10, "{v}");
    assert_eq!(v["parked"]["items"].as_array().unwrap().len() as u64, total.min(100), "{v}");
    let (_, table, _) = cli(Some(&config), &["status"]);
    assert!(table.contains(&format!("and {} more", total - 10)), "{table}");

    let (code, out, _) = cli(Some(&config), &["status", "--dossier", "000.00.15.H58-200101-9999"]);
    assert_eq!(code, 1);
    assert!(out.contains("no dossier 000.00.15.H58-200101-9999"), "{out}");
    let (code, _, err) = cli(Some(&config), &["retry", "000.00.15.H58-200101-9999", "garbage"]);
    assert_eq!(code, 0, "retry's exit code is 0; the names are said: {err}");
    assert!(err.contains("000.00.15.H58-200101-9999, garbage"), "{err}");
    let (code, _, err) = cli(Some(&config), &["report", "--month", "26-11"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("YYYY-MM"), "{err}");
}

// 10. Values that cannot be meant.
#[test]
fn values_that_cannot_be_meant_are_refused_by_key() {
    let dir = test_dir();
    let not_a_certificate = dir.path().join("ca.pem");
    std::fs::write(&not_a_certificate, "hello").unwrap();
    let ca = format!("national.ca_file = {:?}", not_a_certificate.display().to_string());
    for (line, key) in [
        ("provincial.poll_interval_seconds = 1e-9", "provincial.poll_interval_seconds"),
        ("national.madonvi = \"garbage\"", "national.madonvi"),
        (ca.as_str(), "national.ca_file"),
        ("daemon.drain_seconds = 1e10", "daemon.drain_seconds"),
        ("daemon.heartbeat_seconds = 500.0", "daemon.heartbeat_seconds"),
    ] {
        let config = offline_config(dir.path(), &[line]);
        let (code, _, err) = cli(Some(&config), &["check-config"]);
        assert_eq!(code, 78, "{line}: {err}");
        assert!(err.contains(key), "{line}: {err}");
    }
    let config = offline_config(
        dir.path(),
        &["provincial.kind = \"sql\"", "provincial.database_url = \"mysql://u:p@ss@host:port/db\""],
    );
    let (code, _, err) = cli(Some(&config), &["check-config"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("provincial.database_url") && !err.contains("p@ss"), "{err}");
}

// 11. SIGHUP drains, logged, and asks systemd for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_like_sigterm_and_exits_for_a_restart() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(20)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(30)).await;
    let sent = Command::new("kill").args(["-HUP", &daemon.pid().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = daemon.wait(Duration::from_secs(20)).await.expect("stopped");
    assert_eq!(status.code(), Some(75));
    let logs = daemon.logs();
    assert!(logs.contains("\"signal\":\"SIGHUP\"") && logs.contains("drain_finished"), "{logs}");
    assert_eq!(status_json(&config)["daemon"]["state"], "stopped", "a clean stop");
}

// 12. A packaged setup checked from a shell.
#[test]
fn check_config_reads_the_credentials_as_the_unit_hands_them_over_and_says_which_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = test_dir();
    let config = offline_config(dir.path(), &["national.password = \"\""]);
    let (code, _, err) = cli(Some(&config), &["check-config"]);
    assert_eq!(code, 78, "{err}");
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let secret = credentials.join("national-password");
    std::fs::write(&secret, "from-the-credentials\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) =
        cli(Some(&config), &["check-config", "--credentials", credentials.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("# configuration file: {}", config.display())), "{out}");
    assert!(!out.contains("from-the-credentials"), "{out}");
    // Without a file: said so.
    let (_, out, _) = cli(None, &["check-config"]);
    assert!(
        out.contains("# no configuration file") || out.contains("# configuration file: /etc/dvc-sync"),
        "{out}"
    );
}

// 13. The smaller things.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_log_lines_are_ours_and_errors_say_each_cause_once() {
    let dir = test_dir();
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(5)).await;
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    wait_for("started", Duration::from_secs(20), || daemon.logs().contains("daemon_started")).await;
    for line in daemon.logs().lines().take(5) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["event"].is_string(), "a line without an event: {line}");
        assert!(!line.contains(".cargo/registry"), "a build path: {line}");
    }
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());

    // A database where no file can be made: the cause said once, not twice.
    let store = "store.path = \"/proc/dvc-sync-first-hour.db\"";
    let nowhere = write_config(
        &dir.path().join("nowhere").tap_mkdir(),
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        &[store],
    );
    let (code, _, err) = cli(Some(&nowhere), &["run"]);
    assert_eq!(code, 1, "{err}");
    let cause = err.rsplit(": ").next().unwrap_or("").trim().to_owned();
    assert!(!cause.is_empty() && err.matches(cause.as_str()).count() == 1, "{err}");

    // A backup into a directory that is not there: the directory is named.
    let backup_to = dir.path().join("no/such/dir/b.db");
    let (code, _, err) = cli(Some(&config), &["backup", backup_to.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the directory") && err.contains("no/such/dir") && err.contains("does not exist"),
        "{err}"
    );
    // The 766 table's shares are percentages like every other table's.
    let (_, out, _) = cli(Some(&config), &["report"]);
    assert!(out.contains("share") && !out.contains("ratio"), "{out}");

    // A database server that refuses the connection is said to refuse it (not "pool timed out").
    let refused = write_config(
        &dir.path().join("sql").tap_mkdir(),
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        &[
            "provincial.kind = \"sql\"",
            "provincial.database_url = \"mysql://reader:pw@127.0.0.1:9/opencps\"",
            "provincial.connect_timeout_seconds = 1.0",
        ],
    );
    let (code, out, err) = cli(Some(&refused), &["check-source"]);
    assert_eq!(code, 2, "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.to_lowercase().contains("refused") && !said.contains("pool timed out"), "{said}");

    // The help names nothing the operator does not have (the specification's files).
    for args in [&["--help"][..], &["mock", "--help"], &["run", "--help"], &["check-config", "--help"]] {
        let (_, help, _) = cli(None, args);
        assert!(!help.is_empty() && !help.contains("spec/") && !help.contains("-portal.md"), "{help}");
    }
}

trait MkDir {
    fn tap_mkdir(self) -> Self;
}

impl MkDir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
