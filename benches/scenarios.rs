//! The benchmarks of docs/BENCHMARKS.md: the real daemon (the release binary, its own
//! process) against the real mocks (in this process), each scenario run several times and its
//! median reported.
//!
//!     cargo bench --bench scenarios -- backfill|slow|freshness|memory|restart|audit|audit-freshness|sealing|all [--runs N] [--dossiers N]
//!
//! `status` on a large database is `cargo bench --bench status`.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use dvc_sync::{
    config::{self, Purpose},
    daemon,
    mock::national::Faults,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A bare client pushing exactly what the daemon pushed (creates, then history) to a freshly
/// reset national mock, with the same batch size and concurrency: the raw limit. The request
/// bodies are prepared from the national mock's own state before the mock is reset, and only
/// the pushing is timed.
async fn raw_push(national: &str, concurrency: usize) -> RawPush {
    let http = http();
    // Prepared page by page, in batches of 100 items.
    let mut creates: Vec<Vec<Value>> = Vec::new();
    let mut history: Vec<Vec<Value>> = Vec::new();
    let mut dossiers = 0usize;
    let mut after = String::new();
    let mut current_creates = Vec::new();
    let mut current_history = Vec::new();
    loop {
        let page = get(&format!("{national}/_mock/state?limit=10000&after={after}")).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if let Some(last) = items.last() {
            after = last["dossier"]["MaHoSo"].as_str().unwrap().to_owned();
        }
        for item in items {
            dossiers += 1;
            current_creates.push(item["dossier"].clone());
            if current_creates.len() == 100 {
                creates.push(std::mem::take(&mut current_creates));
            }
            for entry in item["history"].as_array().into_iter().flatten() {
                current_history.push(entry.clone());
                if current_history.len() == 100 {
                    history.push(std::mem::take(&mut current_history));
                }
            }
        }
        if page["has_more"] != json!(true) {
            break;
        }
    }
    creates.push(current_creates);
    history.push(current_history);
    http.post(format!("{national}/_mock/reset")).send().await.unwrap();
    // The client on a thread of its own (a one-thread runtime), so that its CPU is its own
    // and not the national mock's, which runs on this process's runtime.
    let national = national.to_owned();
    let pushing = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(push_prepared(&national, concurrency, creates, history))
    });
    let (seconds, client_cpu) = tokio::task::spawn_blocking(move || pushing.join().unwrap()).await.unwrap();
    RawPush {
        rate: dossiers as f64 / seconds,
        client_cpu_per_thousand: client_cpu / dossiers as f64 * 1000.0,
    }
}

/// The raw push limit, and what the bare client itself spent (CPU-s per 1,000 dossiers).
struct RawPush {
    rate: f64,
    client_cpu_per_thousand: f64,
}

/// Logs in and pushes the prepared batches; (seconds, the thread's CPU seconds) of the pushing.
async fn push_prepared(
    national: &str,
    concurrency: usize,
    creates: Vec<Vec<Value>>,
    history: Vec<Vec<Value>>,
) -> (f64, f64) {
    let http = http();
    let login: Value = http
        .post(format!("{national}/auth"))
        .json(&json!({"username": "dvc-sync", "password": "dvc-sync-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["session"].as_str().unwrap().to_owned();
    let envelope = |service: &str, data: Vec<Value>| {
        let mut body =
            json!({"session": session, "madonvi": "000.00.00.H58", "service": service, "data": data});
        if service == "DongBoHoSoMC" {
            body["isUpdating"] = json!("False");
        }
        serde_json::to_vec(&body).unwrap()
    };
    let creates: Vec<Vec<u8>> =
        creates.into_iter().filter(|c| !c.is_empty()).map(|c| envelope("DongBoHoSoMC", c)).collect();
    let history: Vec<Vec<u8>> =
        history.into_iter().filter(|c| !c.is_empty()).map(|c| envelope("CapNhatTienDoHoSoMC", c)).collect();
    let cpu_before = thread_cpu_seconds();
    let started = Instant::now();
    for part in [creates, history] {
        let mut queue = part.into_iter();
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            while in_flight.len() < concurrency {
                let Some(body) = queue.next() else { break };
                let request = http
                    .post(format!("{national}/integration"))
                    .header("content-type", "application/json")
                    .body(body);
                in_flight.spawn(async move {
                    let answer: Value = request.send().await.unwrap().json().await.unwrap();
                    assert!(dvc_sync::national::error_code(&answer["error_code"]) == Some(0), "{answer}");
                });
            }
            if in_flight.join_next().await.is_none() {
                break;
            }
        }
    }
    (started.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu_before)
}

/// CPU seconds the calling thread used so far.
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

struct Backfill {
    rate: f64,
    raw_rate: f64,
    /// The bare client's own CPU for the same pushes (CPU-s per 1,000 dossiers).
    raw_client_cpu_per_thousand: f64,
    cpu_per_thousand: f64,
    /// This process during the backfill: both mocks and the harness's polling.
    mocks_cpu_per_thousand: f64,
    /// National write calls (DongBoHoSoMC and CapNhatTienDoHoSoMC) the backfill took.
    calls: u64,
    peak_rss_mib: f64,
    db_mib: f64,
    seconds: f64,
}

/// Scenarios 1 and 4: a fresh database backfills `n` dossiers from fault-free portals.
async fn backfill(n: u32, with_raw: bool) -> Backfill {
    backfill_with(n, with_raw, "").await
}

/// A backfill with `extra` keys of the `[store]` table.
async fn backfill_with(n: u32, with_raw: bool, extra: &str) -> Backfill {
    let setup = Instant::now();
    let (national, provincial) = mocks(Faults::default(), clean(n, 0.0)).await;
    eprintln!("  mocks ready in {:.1} s (the province filed {n} dossiers)", setup.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &provincial.url(), &national.url(), extra);
    let started = Instant::now();
    let harness_cpu = cpu_seconds(std::process::id());
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    let complete =
        wait_complete(&national.url(), &provincial.url(), u64::from(n), Duration::from_secs(3600)).await;
    let seconds = started.elapsed().as_secs_f64();
    let harness_cpu = cpu_seconds(std::process::id()) - harness_cpu;
    assert!(complete, "backfill did not complete");
    let calls = national_write_calls(&get(&format!("{}/_mock/stats", national.url())).await);
    let cpu = cpu_seconds(child.id());
    let peak = peak_rss_mib(child.id());
    stop(&mut child);
    let db_mib = db_size_mib(dir.path());
    eprintln!("  backfill {seconds:.1} s; harness peak RSS {:.0} MiB", peak_rss_mib(std::process::id()));
    // For a look at what the bytes are (`sqlite3 ... "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"`).
    if let Some(keep) = std::env::var_os("DVC_SYNC_BENCH_KEEP_DB") {
        std::fs::copy(dir.path().join("state.db"), &keep).expect("copy the database");
    }
    let raw_started = Instant::now();
    let raw = if with_raw {
        raw_push(&national.url(), 8).await
    } else {
        RawPush { rate: f64::NAN, client_cpu_per_thousand: f64::NAN }
    };
    if with_raw {
        eprintln!("  raw push measured in {:.1} s", raw_started.elapsed().as_secs_f64());
    }
    national.stop().await;
    provincial.stop().await;
    Backfill {
        rate: f64::from(n) / seconds,
        raw_rate: raw.rate,
        raw_client_cpu_per_thousand: raw.client_cpu_per_thousand,
        cpu_per_thousand: cpu / f64::from(n) * 1000.0,
        mocks_cpu_per_thousand: harness_cpu / f64::from(n) * 1000.0,
        calls,
        peak_rss_mib: peak,
        db_mib,
        seconds,
    }
}

/// The write calls the national mock answered, whatever the outcome.
fn national_write_calls(stats: &Value) -> u64 {
    ["DongBoHoSoMC", "CapNhatTienDoHoSoMC"]
        .iter()
        .filter_map(|service| stats["calls"][service].as_object())
        .flat_map(|outcomes| outcomes.values())
        .filter_map(Value::as_u64)
        .sum()
}

/// Scenario 2: a slow, rate-limited national portal. Returns (items/s after the first 10 s,
/// share of calls answered 429 after the first 10 s).
async fn slow(dossiers: u32, window: Duration) -> (f64, f64) {
    let faults = Faults {
        latency_ms: 200,
        latency_jitter_ms: 50,
        rate_limit_per_second: 20.0,
        max_items_per_call: 100,
        ..Faults::default()
    };
    let (national, provincial) = mocks(faults, clean(dossiers, 0.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &provincial.url(), &national.url(), "");
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    let snapshot = |s: &Value| {
        let items = &s["items_applied"];
        let applied = items["dossiers_created"].as_u64().unwrap_or(0)
            + items["dossiers_updated"].as_u64().unwrap_or(0)
            + items["history_entries"].as_u64().unwrap_or(0);
        let limited = s["http_faults"]["rate_limited_429"].as_u64().unwrap_or(0);
        let calls: u64 = s["calls"]
            .as_object()
            .map(|c| {
                c.iter()
                    .filter(|(k, _)| *k != "auth")
                    .flat_map(|(_, o)| o.as_object().into_iter().flat_map(|o| o.values()))
                    .filter_map(Value::as_u64)
                    .sum()
            })
            .unwrap_or(0);
        (applied, limited, calls + limited)
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let first = snapshot(&get(&format!("{}/_mock/stats", national.url())).await);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let last = snapshot(&get(&format!("{}/_mock/stats", national.url())).await);
    let seconds = started.elapsed().as_secs_f64();
    stop(&mut child);
    national.stop().await;
    provincial.stop().await;
    let items_per_second = (last.0 - first.0) as f64 / seconds;
    let share_429 = (last.1 - first.1) as f64 / ((last.2 - first.2).max(1)) as f64;
    (items_per_second, share_429)
}

/// Scenario 3: a steady 100 changes/s with a 1 s poll interval; the daemon's own engine runs
/// in this process so that every change's lag is measured exactly. Returns (p50, p99) s.
async fn freshness(window: Duration) -> (f64, f64) {
    let (p50, p99, _) = freshness_with(window, None).await;
    (p50, p99)
}

/// Scenario 3 with the audit off (None) or reading back at `Some(rate)` look-ups a second, with
/// a cycle so short that every dossier is always due: the audit never runs out of work.
/// Returns (p50, p99, look-ups the national mock answered a second).
async fn freshness_with(window: Duration, audit: Option<f64>) -> (f64, f64, f64) {
    let knobs = clean(100_000, 100.0);
    let (national, provincial) = mocks(Faults::default(), knobs).await;
    let dir = tempfile::tempdir().unwrap();
    let values = [
        ("STORE__PATH", dir.path().join("state.db").display().to_string()),
        ("PROVINCIAL__BASE_URL", provincial.url()),
        ("PROVINCIAL__API_KEY", "provincial-secret-key".to_owned()),
        ("PROVINCIAL__POLL_INTERVAL_SECONDS", "1.0".to_owned()),
        ("PROVINCIAL__LOOK_BACK_SECONDS", "2.0".to_owned()),
        ("NATIONAL__BASE_URL", national.url()),
        ("NATIONAL__USERNAME", "dvc-sync".to_owned()),
        ("NATIONAL__PASSWORD", "dvc-sync-secret".to_owned()),
        ("NATIONAL__MADONVI", "000.00.00.H58".to_owned()),
        ("TELEMETRY__METRICS_LISTEN", String::new()),
        ("NATIONAL__AUDIT_PER_SECOND", audit.unwrap_or(0.0).to_string()),
        ("NATIONAL__AUDIT_CYCLE_DAYS", "0.00001".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("DVC_SYNC__{k}"), v))
    .collect();
    let config = config::from_values(values, Purpose::Run).unwrap();
    let engine = daemon::build_engine(&config).unwrap();
    let token = CancellationToken::new();
    let running = {
        let engine = engine.clone();
        let token = token.clone();
        tokio::spawn(async move { engine.run(token).await })
    };
    tokio::time::sleep(window).await;
    let stats = engine.stats();
    let calls = get(&format!("{}/_mock/stats", national.url())).await;
    let look_ups: u64 =
        calls["calls"]["TraCuuHoSo"].as_object().map_or(0, |o| o.values().filter_map(Value::as_u64).sum());
    token.cancel();
    let _ = running.await;
    national.stop().await;
    provincial.stop().await;
    (
        stats.lag_p50_seconds.unwrap_or(f64::NAN),
        stats.lag_p99_seconds.unwrap_or(f64::NAN),
        look_ups as f64 / window.as_secs_f64(),
    )
}

/// Scenario 3 as a share of the machine: the daemon (its own process) while the province
/// changes `cps` dossiers a second and it polls every `poll` seconds, after a warm-up that
/// takes in the dossiers filed before. Returns the daemon's CPU over the window as a share of
/// one core (from /proc), and the same for the national mock's process (the benchmark, less
/// the daemon: mocks and harness).
async fn load(cps: f64, poll: f64, window: Duration) -> (f64, f64) {
    // With no changes, a small province filed at once: the backfill is over before the window.
    let knobs = if cps > 0.0 { clean(100_000, cps) } else { clean(2_000, 0.0) };
    let (national, provincial) = mocks(Faults::default(), knobs).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &provincial.url(), &national.url(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("poll_interval_seconds = 0.2", &format!("poll_interval_seconds = {poll}")),
    )
    .unwrap();
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (daemon0, harness0) = (cpu_seconds(child.id()), cpu_seconds(std::process::id()));
    tokio::time::sleep(window).await;
    let (daemon1, harness1) = (cpu_seconds(child.id()), cpu_seconds(std::process::id()));
    stop(&mut child);
    national.stop().await;
    provincial.stop().await;
    let w = window.as_secs_f64();
    ((daemon1 - daemon0) / w, (harness1 - harness0) / w)
}

/// Scenario 8: what a full audit costs. A fresh database backfills `n` dossiers (audit off);
/// then `dvc-sync audit --all` reads every one back as fast as it can (standalone, its own
/// process). Returns (look-ups a second, CPU ms per look-up, database MiB before and after).
async fn audit_cost(n: u32) -> (f64, f64, f64, f64) {
    let (national, provincial) = mocks(Faults::default(), clean(n, 0.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &provincial.url(), &national.url(), "");
    // The backfill without the background audit (a key of write_config's [national] table).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("madonvi = ", "audit_per_second = 0.0\nmadonvi = ")).unwrap();
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    assert!(wait_complete(&national.url(), &provincial.url(), u64::from(n), Duration::from_secs(3600)).await);
    stop(&mut child);
    let before = db_size_mib(dir.path());
    let started = Instant::now();
    let mut audit = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "audit", "--all", "--json", "--per-second", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = audit.id();
    let mut cpu = 0.0;
    while audit.try_wait().unwrap().is_none() {
        cpu = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let out = audit.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(report["verified"].as_u64(), Some(u64::from(n)), "{report}");
    let after = db_size_mib(dir.path());
    national.stop().await;
    provincial.stop().await;
    (f64::from(n) / seconds, cpu * 1000.0 / f64::from(n), before, after)
}

/// Scenario 5: from start to the first push with a backlog of `n` dossiers already polled.
/// Returns (seconds from spawning the process to the first national write, and to the first
/// acknowledged one), measured from the national mock's call log.
async fn restart(n: u32, runs: usize) -> Vec<(f64, f64)> {
    let (national, provincial) = mocks(Faults::default(), clean(n, 0.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &provincial.url(), &national.url(), "");
    // The backlog: a full pass records every dossier, due at once, and pushes nothing.
    let out = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "reconcile", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(report["records"].as_u64(), Some(u64::from(n)), "{out:?}");
    let backlog = dir.path().join("backlog.db");
    std::fs::copy(dir.path().join("state.db"), &backlog).unwrap();
    let mut results = Vec::new();
    for run in 0..runs {
        std::fs::copy(&backlog, dir.path().join("state.db")).unwrap();
        let _ = std::fs::remove_file(dir.path().join("state.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("state.db-shm"));
        http().post(format!("{}/_mock/reset", national.url())).send().await.unwrap();
        let before = get(&format!("{}/_mock/calls", national.url())).await["last_seq"].as_u64().unwrap_or(0);
        let started = Instant::now();
        let mut child = spawn_daemon(&config, &dir.path().join(format!("run-{run}.log")));
        let (mut first_write, mut first_ack) = (None, None);
        while first_ack.is_none() {
            let calls = get(&format!("{}/_mock/calls?after={before}", national.url())).await;
            for c in calls["items"].as_array().into_iter().flatten() {
                let write = matches!(c["service"].as_str(), Some("DongBoHoSoMC" | "CapNhatTienDoHoSoMC"));
                if write && first_write.is_none() {
                    first_write = Some(started.elapsed().as_secs_f64());
                }
                if write && c["outcome"] == "ok" && first_ack.is_none() {
                    first_ack = Some(started.elapsed().as_secs_f64());
                }
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no push after a restart");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop(&mut child);
        results.push((first_write.unwrap_or(f64::NAN), first_ack.unwrap_or(f64::NAN)));
    }
    national.stop().await;
    provincial.stop().await;
    results
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .unwrap_or_else(|| "all".into());
    let runs: usize = arg("--runs").unwrap_or(5);
    println!("machine: {}", machine());
    let want = |s: &str| which == "all" || which == s;
    if want("backfill") {
        let n: u32 = arg("--dossiers").unwrap_or(200_000);
        let mut results = Vec::new();
        for i in 0..runs {
            let r = backfill(n, true).await;
            println!(
                "backfill run {}: {n} dossiers in {:.1} s = {:.0}/s; raw push limit {:.0}/s; ratio {:.2}; daemon {:.3} CPU-s per 1000 (raw client {:.3}, mocks and harness {:.3}); {} national write calls; peak RSS {:.0} MiB; database {:.0} bytes a dossier",
                i + 1,
                r.seconds,
                r.rate,
                r.raw_rate,
                r.rate / r.raw_rate,
                r.cpu_per_thousand,
                r.raw_client_cpu_per_thousand,
                r.mocks_cpu_per_thousand,
                r.calls,
                r.peak_rss_mib,
                r.db_mib * 1024.0 * 1024.0 / f64::from(n)
            );
            results.push(r);
        }
        println!(
            "BACKFILL median: {:.0} dossiers/s, raw {:.0}/s, ratio {:.2}, daemon {:.3} CPU-s/1000 dossiers (raw client {:.3}), peak RSS {:.1} MiB",
            median(results.iter().map(|r| r.rate).collect()),
            median(results.iter().map(|r| r.raw_rate).collect()),
            median(results.iter().map(|r| r.rate / r.raw_rate).collect()),
            median(results.iter().map(|r| r.cpu_per_thousand).collect()),
            median(results.iter().map(|r| r.raw_client_cpu_per_thousand).collect()),
            median(results.iter().map(|r| r.peak_rss_mib).collect())
        );
    }
    if which == "sealing" {
        // Issue 27: the cost of sealing every body (store.key_file), the same backfill with and
        // without a key, alternately in one process.
        let n: u32 = arg("--dossiers").unwrap_or(50_000);
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("store.key");
        {
            use std::{io::Read, os::unix::fs::PermissionsExt};
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
            std::fs::write(&key, bytes).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let sealed_line = format!("key_file = {:?}", key.display().to_string());
        let (mut plain, mut sealed) = (Vec::new(), Vec::new());
        for i in 0..runs {
            for (name, extra, into) in
                [("plain", "", &mut plain), ("sealed", sealed_line.as_str(), &mut sealed)]
            {
                let r = backfill_with(n, false, extra).await;
                println!(
                    "sealing run {} {name}: {:.3} CPU-s per 1000 dossiers, {:.0} dossiers/s, database {:.0} bytes a dossier",
                    i + 1,
                    r.cpu_per_thousand,
                    r.rate,
                    r.db_mib * 1024.0 * 1024.0 / f64::from(n)
                );
                into.push(r);
            }
        }
        let cpu = |v: &[Backfill]| median(v.iter().map(|r| r.cpu_per_thousand).collect());
        let bytes =
            |v: &[Backfill]| median(v.iter().map(|r| r.db_mib * 1024.0 * 1024.0 / f64::from(n)).collect());
        println!(
            "SEALING median: CPU-s/1000 plain {:.3}, sealed {:.3} ({:+.1} %); bytes a dossier plain {:.0}, sealed {:.0} ({:+.1} %)",
            cpu(&plain),
            cpu(&sealed),
            (cpu(&sealed) / cpu(&plain) - 1.0) * 100.0,
            bytes(&plain),
            bytes(&sealed),
            (bytes(&sealed) / bytes(&plain) - 1.0) * 100.0
        );
    }
    if want("slow") {
        let mut rates = Vec::new();
        let mut shares = Vec::new();
        for i in 0..runs {
            let (rate, share) = slow(20_000, Duration::from_secs(60)).await;
            println!(
                "slow run {}: {rate:.0} items/s ({:.1}% of the 2000/s ceiling), {:.2}% answered 429",
                i + 1,
                rate / 20.0,
                share * 100.0
            );
            rates.push(rate);
            shares.push(share);
        }
        let rate = median(rates);
        println!(
            "SLOW median: {rate:.0} items/s = {:.1}% of the ceiling; 429 share {:.2}%",
            rate / 20.0,
            median(shares) * 100.0
        );
    }
    if want("freshness") {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for i in 0..runs {
            let (p50, p99) = freshness(Duration::from_secs(60)).await;
            println!("freshness run {}: p50 {p50:.3} s, p99 {p99:.3} s", i + 1);
            p50s.push(p50);
            p99s.push(p99);
        }
        println!(
            "FRESHNESS median: p50 {:.3} s, p99 {:.3} s (target p99 <= 2 s)",
            median(p50s),
            median(p99s)
        );
    }
    if want("audit") {
        let n: u32 = arg("--dossiers").unwrap_or(20_000);
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        let mut growth = Vec::new();
        for i in 0..runs {
            let (rate, cpu_ms, before, after) = audit_cost(n).await;
            println!(
                "audit run {}: {n} dossiers read back at {rate:.0}/s; {cpu_ms:.2} CPU-ms per look-up; database {before:.1} -> {after:.1} MiB",
                i + 1
            );
            rates.push(rate);
            cpus.push(cpu_ms);
            growth.push((after - before) * 1024.0 * 1024.0 / f64::from(n));
        }
        let cpu_ms = median(cpus);
        println!(
            "AUDIT median: {:.0} look-ups/s flat out; {cpu_ms:.2} CPU-ms per look-up; database +{:.0} bytes per dossier. \
             1,000,000 dossiers at the default 1/s: {:.1} days, {:.0} CPU-s ({:.3} % of a core)",
            median(rates),
            median(growth),
            1e6 / 86_400.0,
            cpu_ms * 1e6 / 1000.0,
            cpu_ms / 1000.0 * 100.0
        );
    }
    if want("audit-freshness") {
        let mut off = Vec::new();
        let mut on = Vec::new();
        let window = Duration::from_secs(40);
        for i in 0..runs {
            let a = freshness_with(window, None).await;
            let b = freshness_with(window, Some(20.0)).await;
            println!(
                "audit-freshness run {}: audit off p50 {:.3} s p99 {:.3} s ({:.1} look-ups/s); audit at 20/s p50 {:.3} s p99 {:.3} s ({:.1} look-ups/s); p99 ratio {:.3}",
                i + 1,
                a.0,
                a.1,
                a.2,
                b.0,
                b.1,
                b.2,
                b.1 / a.1
            );
            off.push(a);
            on.push(b);
        }
        let ratio50 = median(off.iter().zip(&on).map(|(a, b)| b.0 / a.0).collect());
        let ratio99 = median(off.iter().zip(&on).map(|(a, b)| b.1 / a.1).collect());
        println!(
            "AUDIT-FRESHNESS median: off p50 {:.3} s p99 {:.3} s; on p50 {:.3} s p99 {:.3} s ({:.1} look-ups/s); ratios p50 {ratio50:.3}, p99 {ratio99:.3}",
            median(off.iter().map(|a| a.0).collect()),
            median(off.iter().map(|a| a.1).collect()),
            median(on.iter().map(|a| a.0).collect()),
            median(on.iter().map(|a| a.1).collect()),
            median(on.iter().map(|a| a.2).collect()),
        );
    }
    if want("memory") {
        let n: u32 = arg("--dossiers").unwrap_or(1_000_000);
        let mut peaks = Vec::new();
        for i in 0..runs {
            let r = backfill(n, false).await;
            println!(
                "memory run {}: {n} dossiers in {:.0} s, peak RSS {:.1} MiB, database {:.0} MiB",
                i + 1,
                r.seconds,
                r.peak_rss_mib,
                r.db_mib
            );
            peaks.push(r.peak_rss_mib);
        }
        println!("MEMORY median: peak RSS {:.1} MiB (target <= 64)", median(peaks));
    }
    if want("load") {
        // The daemon's share of a core at a province's normal load (a few changes a second),
        // at the freshness scenario's 100/s, and idle, for three poll intervals.
        for cps in [0.0, 5.0, 100.0] {
            for poll in [0.2, 1.0, 5.0] {
                let mut daemon = Vec::new();
                let mut harness = Vec::new();
                for _ in 0..runs {
                    let (d, h) = load(cps, poll, Duration::from_secs(60)).await;
                    daemon.push(d);
                    harness.push(h);
                }
                println!(
                    "LOAD {cps} changes/s, poll every {poll} s: daemon {:.2} % of a core (runs: {}), mocks and harness {:.2} %",
                    median(daemon.clone()) * 100.0,
                    daemon.iter().map(|d| format!("{:.2}", d * 100.0)).collect::<Vec<_>>().join(" "),
                    median(harness) * 100.0
                );
            }
        }
    }
    if want("restart") {
        let n: u32 = arg("--dossiers").unwrap_or(100_000);
        let results = restart(n, runs).await;
        for (i, (write, ack)) in results.iter().enumerate() {
            println!(
                "restart run {}: first national write {:.3} s, first acknowledged {:.3} s after spawn",
                i + 1,
                write,
                ack
            );
        }
        println!(
            "RESTART median: first write {:.3} s, first acknowledged {:.3} s (target < 1 s)",
            median(results.iter().map(|r| r.0).collect()),
            median(results.iter().map(|r| r.1).collect())
        );
    }
}
