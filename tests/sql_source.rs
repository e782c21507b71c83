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
        ("DVC_SYNC__PROVINCIAL__DOCUMENT_URL", dvc_sync::mock::opencps::DOCUMENT_URL),
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
        all.extend(page.records.iter().map(|r| r.raw.to_value()));
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
    // Files OpenCPS's own client leaves out: removed, without a stored file, without a part type.
    p.execute(&["INSERT INTO opencps_dossierfile (dossierFileId, dossierId, dossierPartType, fileEntryId, removed, displayName, referenceUid)
                 VALUES (9000001, 1, 1, 5, TRUE, 'stray removed', 's1'), (9000002, 1, 2, 0, FALSE, 'stray no file', 's2'),
                        (9000003, 1, 0, 7, FALSE, 'stray no part', 's3')"
        .to_owned()])
        .await
        .expect("stray files");
    // A fee request of 0 (shipping only) is no fee.
    p.execute(&["INSERT INTO opencps_paymentfile (paymentFileId, dossierId, paymentFee, feeAmount, paymentStatus, paymentMethod)
                 VALUES (9000004, 1, 'stray free', 0, 5, 'KeyPayDVCQG')"
        .to_owned()])
        .await
        .expect("stray fee");
    let config = sql_config(&server.reader_url("opencps"), &[]);
    let source = SqlSource::new(&config.sources[0]).expect("source");
    let records = read_everything(&source).await;
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("stray"), "files OpenCPS leaves out are left out");
    let with =
        |list: &str| records.iter().filter(|r| r[list].as_array().is_some_and(|l| !l.is_empty())).count();
    assert!(
        with("TaiLieuNop") > 10 && with("DanhSachGiayToKetQua") > 5,
        "the lists are read: {} {}",
        with("TaiLieuNop"),
        with("DanhSachGiayToKetQua")
    );
    assert!(with("DanhSachLePhi") > 10, "the fees are read: {}", with("DanhSachLePhi"));
    for code in [0, 1, 2] {
        assert!(
            records.iter().any(|r| r["DuocThanhToanTrucTuyen"] == code),
            "some dossier is paid online {code}"
        );
    }
    assert!(
        records.iter().all(|r| r.get("HoSoCoThanhPhanSoHoa").is_none()
            && r["DanhSachLePhi"].as_array().is_none_or(|l| l.iter().all(|f| f.get("MaPhiLePhi").is_none()))),
        "nothing OpenCPS has no column for"
    );
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
        let mut e = expected.dossier.to_map();
        let mut g = got.dossier.to_map();
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
        format!("provincial.document_url = {:?}", dvc_sync::mock::opencps::DOCUMENT_URL),
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

    // A table the profile reads and the account may not: named, with the GRANT that fixes it.
    let revoke = match kind {
        Kind::MariaDb => "REVOKE SELECT ON opencps.opencps_paymentfile FROM 'dvcsync'@'%'",
        Kind::Postgres => "REVOKE SELECT ON opencps_paymentfile FROM dvcsync",
    };
    p.execute(&[revoke.to_owned()]).await.unwrap();
    let (code, out, err) = check_source(&config, &["--limit", "5"]);
    assert_eq!(code, Some(2), "{out}{err}");
    let grant = match kind {
        Kind::MariaDb => "GRANT SELECT ON opencps.opencps_paymentfile TO 'dvcsync'@'%'",
        Kind::Postgres => "GRANT SELECT ON opencps_dossier, opencps_dossieraction",
    };
    assert!(out.contains("may not read opencps_paymentfile") && out.contains(grant), "{out}");
    // A table that is not there at all (granted: MariaDB tells a user without the grant that
    // it may not read it, whether it exists or not): named as such.
    let regrant = match kind {
        Kind::MariaDb => grant.to_owned(),
        Kind::Postgres => "GRANT SELECT ON opencps_paymentfile TO dvcsync".to_owned(),
    };
    p.execute(&[regrant, "DROP TABLE opencps_paymentfile".to_owned()]).await.unwrap();
    let (code, out, _) = check_source(&config, &["--limit", "5"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("table opencps_paymentfile does not exist"), "{out}");

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

/// The throwaway CA and localhost certificate as PEM files in `dir`: (CA, certificate, key).
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let certs = common::tls::localhost();
    let (ca, crt, pem) = (dir.join("ca.pem"), dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&ca, certs.ca_pem).unwrap();
    std::fs::write(&crt, certs.cert_pem).unwrap();
    std::fs::write(&pem, certs.key_pem).unwrap();
    (ca, crt, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_is_verified_against_the_system_roots_and_ca_file() {
    use std::os::unix::fs::PermissionsExt;
    let certs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ca, crt, key) = certificates(certs.path());
    // The server reads its key as its own user, and only if no one else can.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&crt, std::fs::Permissions::from_mode(0o644)).unwrap();
    if let Some((uid, gid)) = unsafe_account("postgres") {
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
    }
    let server = DbServer::start_with(
        Kind::Postgres,
        &[("ssl", "on"), ("ssl_cert_file", crt.to_str().unwrap()), ("ssl_key_file", key.to_str().unwrap())],
    );
    let _p =
        settled_province(&server, Knobs { dossiers: 5, changes_per_second: 0.0, ..Knobs::default() }).await;
    let url =
        format!("postgres://dvcsync:reader-secret@localhost:{}/opencps?sslmode=verify-full", server.port);

    // Without the CA: the certificate is not trusted, and the error says so.
    let config = sql_config(&url, &[]);
    let source = SqlSource::new(&config.sources[0]).unwrap();
    let err = source.page(None, 10).await.unwrap_err();
    assert!(err.reason.to_lowercase().contains("certificate"), "{}", err.reason);
    source.close().await;

    // With provincial.ca_file: verified, and the session is encrypted.
    let config = sql_config(&url, &[("DVC_SYNC__PROVINCIAL__CA_FILE", ca.to_str().unwrap())]);
    let source = SqlSource::new(&config.sources[0]).unwrap();
    let page = source.page(None, 100).await.expect("a verified TLS session");
    assert!(!page.records.is_empty());
    let info = source.server_info().await.unwrap();
    assert!(info.tls.starts_with("on"), "{info:?}");
    source.close().await;
}

fn unsafe_account(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null() && unsafe { libc::geteuid() } == 0).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

async fn one_number_two_records(kind: Kind) {
    let server = DbServer::start(kind);
    let p = settled_province(
        &server,
        Knobs {
            dossiers: 6,
            changes_per_second: 0.0,
            bad_record_rate: 0.0,
            unknown_procedure_rate: 0.0,
            seed: 2,
            ..Knobs::default()
        },
    )
    .await;
    let national = common::National::start(dvc_sync::mock::national::Faults::default()).await;
    let dir = common::daemon::test_dir();
    let config = sql_daemon_config(
        dir.path(),
        &server.reader_url("opencps"),
        &national.server.url(),
        &["provincial.look_back_seconds = 1.0"],
    );
    let mut daemon = common::daemon::Daemon::start(&config).await;
    let first = server.sql("opencps", "SELECT dossierNo FROM opencps_dossier WHERE dossierId = 1");
    let second = server.sql("opencps", "SELECT dossierNo FROM opencps_dossier WHERE dossierId = 2");
    let quarantine = |dir: &std::path::Path| -> Vec<(String, String)> {
        rusqlite::Connection::open_with_flags(
            dir.join("state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()
        .map(|c| common::daemon::rows(&c, "SELECT key, reason FROM quarantine"))
        .unwrap_or_default()
    };
    let synced = |n: &str| {
        let n = n.to_owned();
        let national = &national;
        async move { national.get(&format!("/_mock/state/{n}")).await.0 == 200 }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !synced(&second).await {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dossier 2 is renumbered with dossier 1's number: one MaHoSo, two records.
    let now = dvc_sync::domain::dates::to_vn_local(jiff::Timestamp::now())
        .strftime("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    server.sql(
        "opencps",
        &format!(
            "UPDATE opencps_dossier SET dossierNo = '{first}', modifiedDate = '{now}' WHERE dossierId = 2"
        ),
    );
    let key = format!("{first}#id:2");
    while !quarantine(dir.path()).iter().any(|(k, _)| *k == key) {
        assert!(std::time::Instant::now() < deadline, "{:?}", quarantine(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reason = quarantine(dir.path()).into_iter().find(|(k, _)| *k == key).unwrap().1;
    assert!(reason.contains("is also the dossier of source record 1"), "{reason}");
    let (_, one) = national.get(&format!("/_mock/state/{first}")).await;
    assert_eq!(one["creates"], 1, "dossier 1's national copy is untouched: {one}");
    // Given its own number back: released.
    let now = dvc_sync::domain::dates::to_vn_local(jiff::Timestamp::now())
        .strftime("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    server.sql(
        "opencps",
        &format!(
            "UPDATE opencps_dossier SET dossierNo = '{second}', modifiedDate = '{now}' WHERE dossierId = 2"
        ),
    );
    while !quarantine(dir.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", quarantine(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(national.stats().await["duplicate_history_entries"], 0);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_column_of_the_wrong_type_fails_the_page_clearly() {
    let server = DbServer::start(Kind::MariaDb);
    let _p =
        settled_province(&server, Knobs { dossiers: 3, changes_per_second: 0.0, ..Knobs::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    let text = dvc_sync::provincial::sql::profile::BUILT_IN[0].1.replace(
        "(SELECT d.modifiedDate AS updated_at, d.dossierId AS id",
        "(SELECT CAST(d.modifiedDate AS CHAR) AS updated_at, d.dossierId AS id",
    );
    std::fs::write(&profile, text).unwrap();
    let config = sql_config(
        &server.reader_url("opencps"),
        &[("DVC_SYNC__PROVINCIAL__PROFILE", profile.to_str().unwrap())],
    );
    let source = SqlSource::new(&config.sources[0]).unwrap();
    let err = source.page(None, 10).await.unwrap_err();
    assert!(
        err.reason.contains("the changes query's updated_at is the text")
            && err.reason.contains("not a date and time"),
        "{}",
        err.reason
    );
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_filled_over_http_is_not_read_from_sql() {
    let server = DbServer::start(Kind::MariaDb);
    let _p =
        settled_province(&server, Knobs { dossiers: 2, changes_per_second: 0.0, ..Knobs::default() }).await;
    let dir = common::daemon::test_dir();
    {
        let store = dvc_sync::store::Store::open(&dir.path().join("state.db")).unwrap();
        store.write(|tx| dvc_sync::store::meta_set(tx, "source_kind", Some("http"))).unwrap();
    }
    let config = sql_daemon_config(dir.path(), &server.reader_url("opencps"), "http://127.0.0.1:9", &[]);
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["--config", config.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was filled from provincial.kind = \"http\"") && err.contains("new database"),
        "{err}"
    );
}

on_both! {
    profile_reads_what_the_province_wrote => profile_reads_what_the_province_wrote;
    check_source_shows_what_would_be_sent_and_why_not => check_source_shows_what_would_be_sent_and_why_not;
    two_records_with_one_number_park_the_second => one_number_two_records;
}
