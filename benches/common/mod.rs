//! Helpers the benchmarks share: the mocks, the daemon as its own process, and what /proc
//! says of it.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use dvc_sync::mock::{
    MockServer,
    national::{self, Faults, NationalConfig},
    provincial::{self, Knobs, ProvincialConfig},
};
use serde_json::Value;
use tokio::net::TcpListener;

pub const BIN: &str = env!("CARGO_BIN_EXE_dvc-sync");

/// The daemon binary the scenarios run: this build's, or `DVC_SYNC_BENCH_BIN` (another build,
/// to compare two in one run).
pub fn bin() -> String {
    std::env::var("DVC_SYNC_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

pub async fn get(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

pub async fn mocks(faults: Faults, knobs: Knobs) -> (MockServer, MockServer) {
    let national = national::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        NationalConfig { faults, ..NationalConfig::default() },
    )
    .await
    .unwrap();
    let provincial = provincial::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ProvincialConfig { knobs, ..ProvincialConfig::default() },
    )
    .await
    .unwrap();
    (national, provincial)
}

pub fn clean(dossiers: u32, cps: f64) -> Knobs {
    Knobs {
        dossiers,
        changes_per_second: cps,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    }
}

/// `store`: more keys of the `[store]` table (`key_file = "..."`).
pub fn write_config(dir: &Path, provincial: &str, national: &str, store: &str) -> PathBuf {
    let text = format!(
        r#"[store]
path = "{db}"
{store}
[provincial]
base_url = "{provincial}"
api_key = "provincial-secret-key"
poll_interval_seconds = 0.2
page_size = 500
look_back_seconds = 2.0
[national]
base_url = "{national}"
username = "dvc-sync"
password = "dvc-sync-secret"
madonvi = "000.00.00.H58"
request_timeout_seconds = 30.0
[telemetry]
metrics_listen = ""
[daemon]
heartbeat_seconds = 1.0
"#,
        db = dir.join("state.db").display()
    );
    let path = dir.join("dvc-sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn spawn_daemon(config: &Path, log: &Path) -> Child {
    Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// CPU seconds (user + system) a process used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

pub fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn db_size_mib(dir: &Path) -> f64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / 1024.0
        / 1024.0
}

/// Waits until the national mock holds every dossier and every history entry of a backfill.
pub async fn wait_complete(national: &str, provincial: &str, dossiers: u64, limit: Duration) -> bool {
    let entries = get(&format!("{provincial}/_mock/stats")).await["changes"].as_u64().unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let s = get(&format!("{national}/_mock/stats")).await;
        if s["dossiers"].as_u64() == Some(dossiers) && s["history_entries_stored"].as_u64() == Some(entries) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    format!("{cores} cores ({cpu}), {mem:.0} GiB")
}

pub fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}
