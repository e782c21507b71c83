//! The SQL source's benchmark (docs/BENCHMARKS.md, §7): a backfill of the province's whole
//! OpenCPS database, dossiers per second, against the HTTP source backfilling the same
//! simulated province in the same run; and the changes query's plan without and with the
//! index the profile asks the DBA for (docs/sql-source.md).
//!
//!     cargo bench --bench sql_source -- [--dossiers 200000] [--runs 5] [--postgres [--postgres-runs N]]
//!
//! The database server is a real MariaDB (with `--postgres`, PostgreSQL as well), started as
//! the tests start it.

mod common;
#[path = "../tests/common/dbserver.rs"]
mod dbserver;

use std::time::{Duration, Instant};

use common::*;
use dbserver::{DbServer, Kind, READER, READER_PASSWORD};
use dvc_sync::{
    mock::{
        national::{self, Faults, NationalConfig},
        opencps::{DbKnobs, Province},
        provincial::Knobs,
    },
    provincial::sql::{Dialect, Profile},
};
use tokio::net::TcpListener;

struct Run {
    rate: f64,
    cpu_per_thousand: f64,
    peak_rss_mib: f64,
    seconds: f64,
}

/// Waits until the national mock holds `dossiers` dossiers and `entries` history entries.
async fn until_complete(national: &str, dossiers: u64, entries: u64, limit: Duration) -> bool {
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

/// The daemon backfills everything from the database into a fresh national mock.
async fn sql_backfill(url: &str, n: u32, entries: u64) -> Run {
    let national =
        national::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), NationalConfig::default())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[provincial]\nkind = \"sql\"\ndatabase_url = {url:?}\nprofile = \"opencps-v2\"\napi_key = \"\"\n"
    );
    // The common config has a [provincial] table already: merge by rewriting it.
    let config = write_config(dir.path(), "http://127.0.0.1:9", &national.url(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[provincial]\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"provincial-secret-key\"\n",
        &extra,
    );
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    let complete = until_complete(&national.url(), u64::from(n), entries, Duration::from_secs(3600)).await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        complete,
        "the SQL backfill did not complete:\n{}",
        std::fs::read_to_string(dir.path().join("daemon.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cpu = cpu_seconds(child.id());
    let peak = peak_rss_mib(child.id());
    stop(&mut child);
    national.stop().await;
    Run {
        rate: f64::from(n) / seconds,
        cpu_per_thousand: cpu / f64::from(n) * 1000.0,
        peak_rss_mib: peak,
        seconds,
    }
}

/// The same province through the HTTP listing.
async fn http_backfill(knobs: Knobs) -> Run {
    let n = knobs.dossiers;
    let (national, provincial) = mocks(Faults::default(), knobs).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &provincial.url(), &national.url(), "");
    let started = Instant::now();
    let mut child = spawn_daemon(&config, &dir.path().join("daemon.log"));
    let complete =
        wait_complete(&national.url(), &provincial.url(), u64::from(n), Duration::from_secs(3600)).await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(complete, "the HTTP backfill did not complete");
    let cpu = cpu_seconds(child.id());
    let peak = peak_rss_mib(child.id());
    stop(&mut child);
    national.stop().await;
    provincial.stop().await;
    Run {
        rate: f64::from(n) / seconds,
        cpu_per_thousand: cpu / f64::from(n) * 1000.0,
        peak_rss_mib: peak,
        seconds,
    }
}

/// The changes query at the newest minute of the data, as a poll in steady state runs it,
/// with literal values: its plan, and its median time over 5 runs.
async fn plan(province: &Province, server: &DbServer, dialect: Dialect) -> (String, f64) {
    let profile = dvc_sync::provincial::sql::profile::BUILT_IN[0].1;
    let changes: String =
        toml::from_str::<toml::Value>(profile).unwrap()["queries"]["changes"].as_str().unwrap().to_owned();
    let newest = server.sql("opencps", "SELECT MAX(modifiedDate) FROM opencps_dossier");
    let at = newest.split('.').next().unwrap_or(&newest).to_owned();
    let sql = changes
        .replace(":after_time", &format!("'{at}'"))
        .replace(":after_id", "-1")
        .replace(":limit", "500");
    let explain = match dialect {
        Dialect::MySql => format!("EXPLAIN {sql}"),
        Dialect::Postgres => format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}"),
    };
    let shown = server.sql("opencps", &explain);
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        server.sql("opencps", &sql);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = province;
    (shown, median(times))
}

async fn one_database(kind: Kind, n: u32, runs: usize) {
    let dialect = if kind == Kind::MariaDb { Dialect::MySql } else { Dialect::Postgres };
    let server = DbServer::start_with(
        kind,
        match kind {
            Kind::MariaDb => &[("innodb-buffer-pool-size", "2G")],
            Kind::Postgres => &[("shared_buffers", "1GB")],
        },
    );
    let admin = server.create_database("opencps");
    let knobs = clean(n, 0.0);
    let db =
        DbKnobs { late_commit_rate: 0.0, copy_rate: 0.0, silent_dossier_rate: 0.0, ..DbKnobs::default() };
    let province = Province::connect(&admin, knobs.clone(), db).await.unwrap();
    province.create_schema().await.unwrap();
    province.grant_reader(READER, READER_PASSWORD, "opencps").await.unwrap();
    let started = Instant::now();
    province.write_backfill(500).await.unwrap();
    let entries: u64 =
        province.truth().iter().map(|t| t.record["QuaTrinhXuLy"].as_array().map_or(0, Vec::len) as u64).sum();
    if kind == Kind::Postgres {
        server.sql("opencps", "ANALYZE");
    }
    println!(
        "{}: loaded {n} dossiers, {entries} actions in {:.0} s ({})",
        kind.name(),
        started.elapsed().as_secs_f64(),
        server.sql("opencps", "SELECT COUNT(*) FROM opencps_dossieraction")
    );
    let (before, before_ms) = plan(&province, &server, dialect).await;
    province.execute(&Profile::load("opencps-v2", dialect).unwrap().indexes).await.unwrap();
    if kind == Kind::Postgres {
        server.sql("opencps", "ANALYZE");
    }
    let (after, after_ms) = plan(&province, &server, dialect).await;
    println!("{}: changes query WITHOUT the index, median {before_ms:.1} ms:\n{before}", kind.name());
    println!("{}: changes query WITH the index, median {after_ms:.1} ms:\n{after}", kind.name());

    let url = server.reader_url("opencps");
    let mut sql_runs = Vec::new();
    let mut http_runs = Vec::new();
    for i in 0..runs {
        let s = sql_backfill(&url, n, entries).await;
        let h = http_backfill(knobs.clone()).await;
        println!(
            "{} run {}: SQL {:.0} dossiers/s ({:.1} s, {:.2} CPU-s/1000, peak {:.0} MiB); HTTP {:.0}/s ({:.1} s, {:.2} CPU-s/1000); ratio {:.2}",
            kind.name(),
            i + 1,
            s.rate,
            s.seconds,
            s.cpu_per_thousand,
            s.peak_rss_mib,
            h.rate,
            h.seconds,
            h.cpu_per_thousand,
            s.rate / h.rate
        );
        sql_runs.push(s);
        http_runs.push(h);
    }
    println!(
        "SQL BACKFILL {} median: {:.0} dossiers/s, HTTP {:.0}/s, ratio {:.2}; SQL {:.2} CPU-s/1000, peak {:.0} MiB",
        kind.name(),
        median(sql_runs.iter().map(|r| r.rate).collect()),
        median(http_runs.iter().map(|r| r.rate).collect()),
        median(sql_runs.iter().zip(&http_runs).map(|(s, h)| s.rate / h.rate).collect()),
        median(sql_runs.iter().map(|r| r.cpu_per_thousand).collect()),
        median(sql_runs.iter().map(|r| r.peak_rss_mib).collect()),
    );
    province.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = arg("--dossiers").unwrap_or(200_000);
    let runs: usize = arg("--runs").unwrap_or(5);
    println!("machine: {}", machine());
    one_database(Kind::MariaDb, n, runs).await;
    if std::env::args().any(|a| a == "--postgres") {
        one_database(Kind::Postgres, n, arg("--postgres-runs").unwrap_or(runs)).await;
    }
}
