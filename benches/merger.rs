//! A merged province's costs (docs/BENCHMARKS.md, "Several sources"): the real daemon (the
//! release binary, its own process) against real mocks in this process.
//!
//!     cargo bench --bench merger -- backfill [--runs N] [--dossiers N]
//!     cargo bench --bench merger -- outage [--seconds S]
//!
//! `backfill`: a fresh database backfills N dossiers from two sources (N/2 each, the old
//! system's H58 and the new one's H20) and from one source holding all N, alternately in one
//! run. `outage`: two sources change steadily; after a warm-up one of them goes down for S
//! seconds; the other's change-to-acknowledgement lag before and during the outage, from the
//! daemon's database (each dossier's last acknowledged version: its acknowledgement time less
//! its source's `updated_at`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use dvc_sync::mock::{
    MockServer,
    national::{self, Faults, NationalConfig},
    provincial::{self, Knobs, ProvincialConfig},
};
use serde_json::json;
use tokio::net::TcpListener;

const H20: &str = "000.00.00.H20";
const H58: &str = "000.00.00.H58";

/// The merged province's national account: H20, with H58 among its predecessors.
async fn national() -> MockServer {
    let config = NationalConfig {
        madonvi: H20.into(),
        predecessors: vec![H58.into()],
        faults: Faults::default(),
        ..NationalConfig::default()
    };
    national::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await.unwrap()
}

async fn system(knobs: Knobs, unit: &str) -> MockServer {
    let knobs = Knobs { madonvi: unit.into(), ..knobs };
    let config = ProvincialConfig { knobs, ..ProvincialConfig::default() };
    provincial::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await.unwrap()
}

/// A configuration with one `[sources.<name>]` a system, the last superseding the others.
fn config(
    dir: &std::path::Path,
    systems: &[(&str, &MockServer)],
    national: &MockServer,
    poll: f64,
) -> std::path::PathBuf {
    let mut text = format!(
        "[store]\npath = {:?}\n[national]\nbase_url = {:?}\nusername = \"dvc-sync\"\npassword = \"dvc-sync-secret\"\n\
         madonvi = {H20:?}\npredecessors = [{H58:?}]\nrequest_timeout_seconds = 30.0\naudit_per_second = 0\n\
         [telemetry]\nmetrics_listen = \"\"\n[daemon]\nheartbeat_seconds = 1.0\n",
        dir.join("state.db").display().to_string(),
        national.url()
    );
    let names: Vec<&str> = systems.iter().map(|(n, _)| *n).collect();
    for (i, (name, mock)) in systems.iter().enumerate() {
        text.push_str(&format!(
            "[sources.{name}]\nkind = \"http\"\nbase_url = {:?}\napi_key = \"provincial-secret-key\"\n\
             poll_interval_seconds = {poll}\npage_size = 500\nlook_back_seconds = 2.0\n",
            mock.url()
        ));
        if i + 1 == systems.len() && i > 0 {
            text.push_str(&format!("supersedes = {:?}\n", &names[..i]));
        }
    }
    let path = dir.join("dvc-sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    rate: f64,
    cpu_per_thousand: f64,
}

/// A backfill of `n` dossiers split over `sources` systems (1 or 2).
async fn backfill(n: u32, sources: u32) -> Run {
    let national = national().await;
    let mut systems = Vec::new();
    if sources == 1 {
        systems.push(("dongthap", system(clean(n, 0.0), H20).await));
    } else {
        systems.push(("tiengiang", system(Knobs { seed: 58, ..clean(n / 2, 0.0) }, H58).await));
        systems.push(("dongthap", system(Knobs { seed: 20, ..clean(n - n / 2, 0.0) }, H20).await));
    }
    let mut entries = 0;
    for (_, mock) in &systems {
        entries += get(&format!("{}/_mock/stats", mock.url())).await["changes"].as_u64().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<(&str, &MockServer)> = systems.iter().map(|(name, mock)| (*name, mock)).collect();
    let config = config(dir.path(), &refs, &national, 0.2);
    let started = Instant::now();
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let s = get(&format!("{}/_mock/stats", national.url())).await;
        if s["dossiers"].as_u64() == Some(u64::from(n))
            && s["history_entries_stored"].as_u64() == Some(entries)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the backfill did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id());
    stop(&mut child);
    national.stop().await;
    for (_, mock) in systems {
        mock.stop().await;
    }
    Run { rate: f64::from(n) / seconds, cpu_per_thousand: cpu / f64::from(n) * 1000.0 }
}

/// Change-to-acknowledgement lags (s) of `source`'s dossiers last acknowledged in [from, to)
/// (µs since the epoch): (p50, p99, how many).
fn lags(db: &std::path::Path, source: &str, from: i64, to: i64) -> (f64, f64, usize) {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut lags: Vec<f64> = conn
        .prepare("SELECT (acked_at - updated_at) / 1e6 FROM dossier WHERE source = ?1 AND acked_at >= ?2 AND acked_at < ?3")
        .unwrap()
        .query_map(rusqlite::params![source, from, to], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    lags.sort_by(f64::total_cmp);
    let at = |p: f64| {
        lags.get(((lags.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99), lags.len())
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// Two systems changing steadily; the old one down for `outage` after a warm-up.
async fn outage(outage: Duration) {
    let national = national().await;
    let old = system(Knobs { seed: 58, ..clean(100_000, 50.0) }, H58).await;
    let new = system(Knobs { seed: 20, ..clean(100_000, 50.0) }, H20).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[("tiengiang", &old), ("dongthap", &new)], &national, 1.0);
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = now_us();
    tokio::time::sleep(outage).await;
    let down = now_us();
    let answer = http()
        .put(format!("{}/_mock/faults", old.url()))
        .json(&json!({"outage": true}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    tokio::time::sleep(outage).await;
    let up = now_us();
    // The daemon's last heartbeat writes what it noted; then it stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&mut child);
    national.stop().await;
    old.stop().await;
    new.stop().await;
    let db = dir.path().join("state.db");
    let (b50, b99, bn) = lags(&db, "dongthap", before, down);
    // Changes made before the outage may still be acknowledged in its first seconds.
    let (d50, d99, dn) = lags(&db, "dongthap", down + 5_000_000, up);
    let (_, _, old_during) = lags(&db, "tiengiang", down + 5_000_000, up);
    println!(
        "OUTAGE of tiengiang for {:.0} s: dongthap lag before p50 {b50:.2} s p99 {b99:.2} s ({bn} dossiers), during p50 {d50:.2} s p99 {d99:.2} s ({dn} dossiers); tiengiang dossiers acknowledged during: {old_during}",
        outage.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let which = std::env::args().skip(1).find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
    let which = which.unwrap_or_else(|| "all".into());
    println!("machine: {}", machine());
    if which == "all" || which == "backfill" {
        let n: u32 = arg("--dossiers").unwrap_or(50_000);
        let runs: usize = arg("--runs").unwrap_or(3);
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for i in 0..runs {
            for (sources, into) in [(1, &mut one), (2, &mut two)] {
                let r = backfill(n, sources).await;
                println!(
                    "backfill run {} from {sources} source(s): {n} dossiers, {:.0} dossiers/s, daemon {:.3} CPU-s per 1000",
                    i + 1,
                    r.rate,
                    r.cpu_per_thousand
                );
                into.push(r);
            }
        }
        let rate = |v: &[Run]| median(v.iter().map(|r| r.rate).collect());
        let cpu = |v: &[Run]| median(v.iter().map(|r| r.cpu_per_thousand).collect());
        println!(
            "BACKFILL median: one source {:.0} dossiers/s, {:.3} CPU-s/1000; two sources {:.0} dossiers/s ({:+.1} %), {:.3} CPU-s/1000 ({:+.1} %)",
            rate(&one),
            cpu(&one),
            rate(&two),
            (rate(&two) / rate(&one) - 1.0) * 100.0,
            cpu(&two),
            (cpu(&two) / cpu(&one) - 1.0) * 100.0
        );
    }
    if which == "all" || which == "outage" {
        outage(Duration::from_secs_f64(arg("--seconds").unwrap_or(120.0))).await;
    }
}
