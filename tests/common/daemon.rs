//! The real daemon as a child process, configured through a file in a temporary directory,
//! against mocks started in the test process.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use dvc_sync::{
    domain::{
        normalize::StatusMap,
        status::{DEFAULT_STATUS_MAP, NationalStatus},
    },
    verify::{self, Verdict},
};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_dvc-sync");

pub fn status_map() -> StatusMap {
    DEFAULT_STATUS_MAP.iter().map(|(k, v)| ((*k).to_owned(), NationalStatus::new(*v).unwrap())).collect()
}

/// Writes a configuration for a fast test run; `extra` lines are appended under their
/// sections (TOML allows a table once, so extra keys go in as dotted keys at the top).
pub fn write_config(dir: &Path, provincial: &str, national: &str, extra: &[&str]) -> PathBuf {
    let mut text = String::new();
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        r#"
[store]
path = "{db}"

[provincial]
base_url = "{provincial}"
api_key = "provincial-secret-key"
poll_interval_seconds = 0.2
page_size = 200
look_back_seconds = 2.0
retry_initial_seconds = 0.05
retry_max_seconds = 1.0
request_timeout_seconds = 10.0

[national]
base_url = "{national}"
username = "dvc-sync"
password = "dvc-sync-secret"
madonvi = "000.00.00.H58"
retry_initial_seconds = 0.1
retry_max_seconds = 2.0
request_timeout_seconds = 5.0

[telemetry]
log_format = "json"
metrics_listen = ""

[daemon]
drain_seconds = 5.0
heartbeat_seconds = 0.5
"#,
        db = dir.join("state.db").display(),
    ));
    let path = dir.join("dvc-sync.toml");
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
