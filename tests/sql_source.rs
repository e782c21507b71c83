//! The SQL source against real servers: Debian's MariaDB and PostgreSQL, started by the tests
//! themselves, holding the OpenCPS v2 tables that the provincial simulator writes.

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::dbserver::{DbServer, Kind};
use dvc_sync::{
    config::{self, Purpose},
    domain::normalize::normalize,
    mock::{
        opencps::{DbKnobs, Province},
        provincial::Knobs,
    },
    provincial::SqlSource,
    sync::ports::{Cursor, Source},
};
use tokio_util::sync::CancellationToken;

fn sql_config(url: &str, overrides: &[(&str, &str)]) -> config::Config {
    let mut env: HashMap<String, String> = [
        ("DVC_SYNC__PROVINCIAL__KIND", "sql"),
        ("DVC_SYNC__PROVINCIAL__DATABASE_URL", url),
        ("DVC_SYNC__PROVINCIAL__PROFILE", "opencps-v2"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    config::from_values(env, Purpose::Source).expect("config")
}

async fn province(server: &DbServer, world: Knobs, db: DbKnobs) -> Arc<Province> {
    let admin = server.create_database("opencps");
    let p = Province::connect(&admin, world, db).await.expect("connect as admin");
    p.create_schema().await.expect("schema");
    p.grant_reader(common::dbserver::READER, common::dbserver::READER_PASSWORD, "opencps")
        .await
        .expect("grant");
    Arc::new(p)
}

async fn read_everything(source: &SqlSource) -> Vec<serde_json::Value> {
    let mut cursor: Option<Cursor> = None;
    let mut all = Vec::new();
    loop {
        let page = source.page(cursor.as_ref(), 50).await.expect("page");
        all.extend(page.records.iter().map(|r| r.raw.clone()));
        let next = page.end.clone();
        if !page.has_more || next.is_none() {
            return all;
        }
        cursor = next;
    }
}

async fn profile_reads_what_the_province_wrote(kind: Kind) {
    let server = DbServer::start(kind);
    let p = province(
        &server,
        Knobs { dossiers: 60, changes_per_second: 400.0, seed: 3, ..Knobs::default() },
        DbKnobs { late_commit_rate: 0.0, ..DbKnobs::default() },
    )
    .await;
    let token = CancellationToken::new();
    let task = p.run(token.clone());
    while !p.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    let _ = task.await;
    let config = sql_config(&server.reader_url("opencps"), &[]);
    let source = SqlSource::new(&config.provincial).expect("source");
    let records = read_everything(&source).await;
    let map = config.status_map.clone();
    let truth = p.truth();
    let mut compared = 0;
    for t in truth.iter().filter(|t| t.defect.is_none()) {
        let expected = normalize(&t.record, &map).expect("truth normalises");
        let got = records
            .iter()
            .rev()
            .find(|r| r["MaHoSo"] == t.record["MaHoSo"])
            .unwrap_or_else(|| panic!("{} not read", t.key));
        let got = normalize(got, &map).unwrap_or_else(|q| panic!("{}: {q:?}\n{got:#}", t.key));
        let mut e = expected.dossier.clone();
        let mut g = got.dossier.clone();
        for f in ["TenTTHC", "MaLinhVuc", "TenLinhVuc"] {
            e.remove(f);
            g.remove(f);
        }
        assert_eq!(g, e, "{}", t.key);
        assert_eq!(got.history, expected.history, "{}", t.key);
        compared += 1;
    }
    assert!(compared > 40, "{compared}");
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_profile_reads_what_the_province_wrote() {
    profile_reads_what_the_province_wrote(Kind::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_profile_reads_what_the_province_wrote() {
    profile_reads_what_the_province_wrote(Kind::Postgres).await;
}

/// A province with `dossiers` dossiers lived to the end in the database (no late commits).
async fn settled_province(server: &DbServer, world: Knobs) -> Arc<Province> {
    let p = province(server, world, DbKnobs { late_commit_rate: 0.0, ..DbKnobs::default() }).await;
    let token = CancellationToken::new();
    let task = p.run(token.clone());
    while !p.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    let _ = task.await;
    p
}

fn check_source(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["--config", config.to_str().unwrap(), "check-source"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sql_daemon_config(dir: &std::path::Path, url: &str, national: &str, extra: &[&str]) -> std::path::PathBuf {
    let mut overrides = vec![
        "provincial.kind = \"sql\"".to_owned(),
        format!("provincial.database_url = {url:?}"),
        "provincial.profile = \"opencps-v2\"".to_owned(),
        "provincial.api_key = \"\"".to_owned(),
    ];
    overrides.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    common::daemon::write_config(dir, "http://127.0.0.1:9", national, &refs)
}

async fn check_source_shows_what_would_be_sent_and_why_not(kind: Kind) {
    let server = DbServer::start(kind);
    let p = settled_province(
        &server,
        Knobs { dossiers: 40, changes_per_second: 0.0, bad_record_rate: 0.3, seed: 11, ..Knobs::default() },
    )
    .await;
    let dir = common::daemon::test_dir();
    let config = sql_daemon_config(dir.path(), &server.reader_url("opencps"), "http://127.0.0.1:9", &[]);
    let (code, out, err) = check_source(&config, &["--limit", "40"]);
    assert_eq!(code, Some(1), "some would be quarantined:\n{out}\n{err}");
    assert!(out.contains("SEND ") && out.contains("QUARANTINE "), "{out}");
    assert!(out.contains("OpenCPS v2 (built-in opencps-v2)"), "{out}");
    assert!(out.contains("MISSING: CREATE INDEX dvcsync_dossier_changes"), "no index yet:\n{out}");
    for reason in ["no MaHoSo", "malformed MaHoSo", "unparseable date in NgayTiepNhan", "not in status_map"] {
        assert!(out.contains(reason), "{reason}:\n{out}");
    }
    let truth = p.truth();
    // ID numbers and phones are masked by default (names too, though a summary may hold one).
    let valid = truth.iter().find(|t| t.defect.is_none() && t.record["SoDienThoai"].is_string()).unwrap();
    let (id_number, phone) = (
        valid.record["SoGiayToChuHoSo"].as_str().unwrap().to_owned(),
        valid.record["SoDienThoai"].as_str().unwrap().to_owned(),
    );
    assert!(!out.contains(&id_number) && !out.contains(&phone), "personal data masked by default");
    let (_, json, _) = check_source(&config, &["--limit", "40", "--json", "--show-personal"]);
    let report: serde_json::Value = serde_json::from_str(&json).expect(&json);
    let sent = report["would_send"].as_u64().unwrap();
    let quarantined = report["would_quarantine"].as_u64().unwrap();
    let defects = truth.iter().filter(|t| t.defect.is_some()).count() as u64;
    assert_eq!((sent + quarantined, quarantined), (40, defects), "{json}");
    assert_eq!(report["server"]["tls"], "off");
    assert!(json.contains(&id_number) && json.contains(&phone), "--show-personal shows them");
    eprintln!("{out}");

    // The indexes in place: check-source says so.
    let profile =
        dvc_sync::provincial::sql::Profile::load("opencps-v2", dvc_sync::provincial::sql::Dialect::MySql)
            .unwrap();
    p.execute(&profile.indexes).await.unwrap();
    let (_, out, _) = check_source(&config, &["--limit", "5"]);
    assert!(out.contains("present: CREATE INDEX dvcsync_dossier_changes"), "{out}");

    // The database unreachable: exit 2, the reason given, no password printed.
    let unreachable = format!("{}://dvcsync:reader-secret@127.0.0.1:9/opencps", kind.scheme());
    let config = sql_daemon_config(dir.path(), &unreachable, "http://127.0.0.1:9", &[]);
    let (code, out, err) = check_source(&config, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("error") && !out.contains("reader-secret") && !err.contains("reader-secret"),
        "{out}{err}"
    );
    // A bad configuration: 78, by key.
    let config = sql_daemon_config(dir.path(), "sqlserver://x", "http://127.0.0.1:9", &[]);
    let (code, _, err) = check_source(&config, &[]);
    assert_eq!(code, Some(78));
    assert!(err.contains("provincial.database_url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_check_source_shows_what_would_be_sent_and_why_not() {
    check_source_shows_what_would_be_sent_and_why_not(Kind::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_check_source_shows_what_would_be_sent_and_why_not() {
    check_source_shows_what_would_be_sent_and_why_not(Kind::Postgres).await;
}
