//! The real daemon as a child process, configured through a file in a temporary directory,
//! against mocks started in the test process.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use dvc_sync::{
    domain::{
        normalize::StatusMap,
        status::{DEFAULT_STATUS_MAP, NationalStatus},
    },
    verify::{self, TruthItem, Verdict},
};
use serde_json::Value;
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_dvc-sync");

/// A temporary directory for one test; kept (and its path printed) when
/// `DVC_SYNC_KEEP_TEST_DIRS` is set, to look at a failed run's database and logs.
pub fn test_dir() -> tempfile::TempDir {
    let keep = std::env::var_os("DVC_SYNC_KEEP_TEST_DIRS").is_some();
    let dir = tempfile::Builder::new().prefix("dvc-sync-test-").disable_cleanup(keep).tempdir().unwrap();
    if keep {
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

pub fn status_map() -> StatusMap {
    DEFAULT_STATUS_MAP.iter().map(|(k, v)| ((*k).to_owned(), NationalStatus::new(*v).unwrap())).collect()
}

/// Writes a configuration for a fast test run; `overrides` are `section.key = value` lines
/// (TOML values) that replace or add to the defaults below.
pub fn write_config(dir: &Path, provincial: &str, national: &str, overrides: &[&str]) -> PathBuf {
    let db = dir.join("state.db");
    let mut sections: Vec<(&str, Vec<(String, String)>)> = vec![
        ("store", vec![("path".into(), format!("{:?}", db.display().to_string()))]),
        (
            "provincial",
            vec![
                ("base_url".into(), format!("{provincial:?}")),
                ("api_key".into(), "\"provincial-secret-key\"".into()),
                ("poll_interval_seconds".into(), "0.2".into()),
                ("page_size".into(), "200".into()),
                ("look_back_seconds".into(), "2.0".into()),
                ("retry_initial_seconds".into(), "0.05".into()),
                ("retry_max_seconds".into(), "1.0".into()),
                ("request_timeout_seconds".into(), "10.0".into()),
            ],
        ),
        (
            "national",
            vec![
                ("base_url".into(), format!("{national:?}")),
                ("username".into(), "\"dvc-sync\"".into()),
                ("password".into(), "\"dvc-sync-secret\"".into()),
                ("madonvi".into(), "\"000.00.00.H58\"".into()),
                ("retry_initial_seconds".into(), "0.1".into()),
                ("retry_max_seconds".into(), "2.0".into()),
                ("request_timeout_seconds".into(), "5.0".into()),
            ],
        ),
        (
            "telemetry",
            vec![("log_format".into(), "\"json\"".into()), ("metrics_listen".into(), "\"\"".into())],
        ),
        ("daemon", vec![("drain_seconds".into(), "5.0".into()), ("heartbeat_seconds".into(), "0.5".into())]),
        ("calendar", vec![]),
    ];
    for line in overrides {
        let (key, value) = line.split_once('=').expect("section.key = value");
        let (section, key) = key.trim().split_once('.').expect("section.key");
        let value = value.trim().to_owned();
        match sections.iter_mut().find(|(s, _)| *s == section) {
            Some((_, keys)) => match keys.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = value,
                None => keys.push((key.to_owned(), value)),
            },
            None => panic!("unknown section {section}"),
        }
    }
    let mut text = String::new();
    for (section, keys) in sections {
        text.push_str(&format!("[{section}]\n"));
        for (k, v) in keys {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text.push('\n');
    }
    let path = dir.join("dvc-sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// As [`write_config`], with named sources instead of `[provincial]`: each (name, base URL,
/// extra `key = value` lines of its section, e.g. `supersedes = ["old"]`), with the test
/// pace of `[provincial]`'s keys.
pub fn write_sources_config(
    dir: &Path,
    sources: &[(&str, &str, &[&str])],
    national: &str,
    overrides: &[&str],
) -> PathBuf {
    let path = write_config(dir, "http://127.0.0.1:1", national, overrides);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[provincial]\n").expect("a [provincial] section");
    let end = start + text[start..].find("\n\n").expect("the section's end");
    let keys: Vec<&str> = text[start..end].lines().skip(1).filter(|l| !l.starts_with("base_url")).collect();
    let mut sections = String::new();
    let key_of = |line: &str| line.split('=').next().unwrap_or("").trim().to_owned();
    for (name, url, extra) in sources {
        let base = ["kind = \"http\"".to_owned(), format!("base_url = {url:?}")];
        // The extra lines replace the same keys.
        let lines = base
            .iter()
            .map(String::as_str)
            .chain(keys.iter().copied())
            .filter(|line| !extra.iter().any(|e| key_of(e) == key_of(line)))
            .chain(extra.iter().copied());
        sections.push_str(&format!("[sources.{name}]\n"));
        for line in lines {
            sections.push_str(line);
            sections.push('\n');
        }
        sections.push('\n');
    }
    let text = format!("{}{}{}", &text[..start], sections, &text[end + 2..]);
    std::fs::write(&path, text).unwrap();
    path
}

pub struct Daemon {
    pub child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub async fn start(config: &Path) -> Daemon {
        Daemon::start_with_env(config, &[]).await
    }

    /// Started with these environment variables set (`RUST_LOG`, say).
    pub async fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let dir = config.parent().unwrap();
        let n = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("daemon-"))
            .count();
        let log = dir.join(format!("daemon-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "run"])
            .envs(env.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start the daemon");
        Daemon { child, config: config.to_path_buf(), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    pub async fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().await.unwrap();
        assert!(status.success());
    }

    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().map(Result::unwrap)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `dvc-sync status --json` of the configuration, or Null when it printed no document.
/// The address of the daemon's /metrics, from its start-up log line.
pub async fn metrics_addr(daemon: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for line in daemon.logs().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && v["event"] == "daemon_started"
            {
                return v["metrics"].as_str().unwrap().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no daemon_started line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn status_json(config: &Path) -> Value {
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `dvc-sync audit --json [args]`: its exit code and report.
pub fn audit_command(config: &Path, args: &[&str]) -> (i32, Value) {
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "audit", "--json"])
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit --json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

/// Polls the verifier until every valid dossier is synchronized or `limit` passes.
pub async fn converge(provincial: &str, national: &str, limit: Duration) -> Verdict {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        let verdict = verify::verify(&http, provincial, national, &status_map()).await.expect("verify");
        if verdict.not_synchronized.is_empty() || Instant::now() > deadline {
            return verdict;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The daemon's database, read-only.
/// (exit code, stdout + stderr) of a `dvc-sync` command on the configuration.
pub fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

pub fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(dir.join("state.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
}

pub fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<(String, String)> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Quarantined and dead items are exactly those the simulator injected, each with its reason.
pub fn assert_parked_as_injected(dir: &Path, truth: &[TruthItem]) {
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
