//! The SQL source against hostile content and faults, on MariaDB and PostgreSQL: NULLs where
//! values are due, wrong and unreadable types, text that is not valid UTF-8 in a latin1
//! column, a connection dropped in the middle of a page, a statement timeout, the account's
//! rights revoked, the server restarted. Each gives a clear error (or a quarantine with its
//! reason), leaves the cursor where it was, loses nothing, and the daemon recovers without a
//! restart.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    National,
    daemon::*,
    dbserver::{DbServer, Kind, READER, READER_PASSWORD},
};
use dvc_sync::{
    domain::dates::to_vn_local,
    mock::{
        national::Faults,
        opencps::{DbKnobs, Province},
        provincial::Knobs,
    },
    provincial::sql::{Dialect, Profile, profile::BUILT_IN},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Rig {
    server: DbServer,
    /// Kept so that its connections stay open for the test's length.
    _province: Arc<Province>,
    national: National,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn dialect(kind: Kind) -> Dialect {
    if kind == Kind::MariaDb { Dialect::MySql } else { Dialect::Postgres }
}

/// A settled province of clean dossiers, the daemon's config with a profile edited by
/// `edit`, and a knob table the edited profile may sleep on.
async fn rig(kind: Kind, edit: impl Fn(String) -> String, extra: &[&str]) -> Rig {
    let server = DbServer::start(kind);
    let admin = server.create_database("opencps");
    let world = Knobs {
        dossiers: 30,
        changes_per_second: 0.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        seed: 5,
        ..Knobs::default()
    };
    let province = Arc::new(
        Province::connect(
            &admin,
            world,
            DbKnobs { late_commit_rate: 0.0, copy_rate: 0.0, ..DbKnobs::default() },
        )
        .await
        .unwrap(),
    );
    province.create_schema().await.unwrap();
    province.grant_reader(READER, READER_PASSWORD, "opencps").await.unwrap();
    province.execute(&Profile::load("opencps-v2", dialect(kind)).unwrap().indexes).await.unwrap();
    let token = CancellationToken::new();
    let task = province.run(token.clone());
    while !province.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    let _ = task.await;
    let grant = match kind {
        Kind::MariaDb => format!("GRANT SELECT ON opencps.dvcsync_knob TO '{READER}'@'%'"),
        Kind::Postgres => format!("GRANT SELECT ON dvcsync_knob TO {READER}"),
    };
    server.sql("opencps", "CREATE TABLE dvcsync_knob (pause FLOAT)");
    server.sql("opencps", "INSERT INTO dvcsync_knob VALUES (0)");
    server.sql("opencps", &grant);

    let national = National::start(Faults::default()).await;
    let dir = test_dir();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, edit(BUILT_IN[0].1.to_owned())).unwrap();
    let mut overrides = vec![
        "provincial.kind = \"sql\"".to_owned(),
        format!("provincial.database_url = {:?}", server.reader_url("opencps")),
        format!("provincial.profile = {:?}", profile.display().to_string()),
        "provincial.api_key = \"\"".to_owned(),
        "provincial.look_back_seconds = 1.0".to_owned(),
        "provincial.connect_timeout_seconds = 2.0".to_owned(),
        format!("provincial.document_url = {:?}", dvc_sync::mock::opencps::DOCUMENT_URL),
    ];
    overrides.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let config = write_config(dir.path(), "http://127.0.0.1:9", &national.server.url(), &refs);
    Rig { server, _province: province, national, dir, config }
}

impl Rig {
    fn sql(&self, sql: &str) -> String {
        self.server.sql("opencps", sql)
    }

    fn mahoso(&self, id: i64) -> String {
        self.sql(&format!("SELECT dossierNo FROM opencps_dossier WHERE dossierId = {id}"))
    }

    /// A change of dossier `id` (its summary), stamped now in the database's zone.
    fn touch(&self, id: i64, note: &str) {
        self.sql(&format!(
            "UPDATE opencps_dossier SET dossierNote = '{note}', modifiedDate = '{}' WHERE dossierId = {id}",
            now_local()
        ));
    }

    async fn national_summary(&self, mahoso: &str) -> Option<String> {
        let (code, v) = self.national.get(&format!("/_mock/state/{mahoso}")).await;
        (code == 200).then(|| v["dossier"]["TrichYeuHoSo"].as_str().unwrap_or("").to_owned())
    }

    async fn arrives(&self, id: i64, note: &str) {
        let mahoso = self.mahoso(id);
        wait(&format!("{mahoso} updated nationally"), Duration::from_secs(60), || async {
            self.national_summary(&mahoso).await.as_deref() == Some(note)
        })
        .await;
    }

    fn status(&self) -> Value {
        let out = std::process::Command::new(BIN)
            .args(["--config", self.config.to_str().unwrap(), "status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn cursor(&self) -> Option<String> {
        let conn = try_db(self.dir.path())?;
        conn.query_row("SELECT value FROM meta WHERE key = 'head_cursor'", [], |r| r.get(0)).ok()
    }

    fn quarantine(&self) -> Vec<(String, String)> {
        try_db(self.dir.path())
            .map(|c| rows(&c, "SELECT key, reason FROM quarantine ORDER BY key"))
            .unwrap_or_default()
    }

    /// Until the daemon's status shows a poll error containing `fragment`.
    async fn poll_error(&self, fragment: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if let Some(e) = s["poll"]["last_error"].as_str()
                && e.contains(fragment)
            {
                return e.to_owned();
            }
            assert!(Instant::now() < deadline, "no poll error with {fragment:?}; last: {}", s["poll"]);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn now_local() -> String {
    to_vn_local(jiff::Timestamp::now()).strftime("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

async fn wait<F, Fut>(what: &str, limit: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The daemon's database, once it exists.
fn try_db(dir: &Path) -> Option<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(dir.join("state.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()
}

fn in_sync(dir: &Path) -> i64 {
    let Some(conn) = try_db(dir) else { return 0 };
    conn.query_row(
        "SELECT COUNT(*) FROM dossier d WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.mahoso = d.mahoso)
               AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.key = d.mahoso)",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

async fn hostile_content(kind: Kind) {
    // The profile reads the applicant's name from a legacy latin1 column when set (as bytes,
    // for what they are: UTF-8 an old front-end stored there), and the phone from a column of
    // a type no field can take, when set.
    let edit = move |p: String| match kind {
        Kind::MariaDb => p
            .replace(
                "d.contactName AS ChuHoSo",
                "COALESCE(CAST(d.legacyName AS BINARY), CAST(d.contactName AS BINARY)) AS ChuHoSo",
            )
            .replace("d.contactTelNo AS SoDienThoai", "d.contactTelNo AS SoDienThoai, d.geo AS extra_geo"),
        Kind::Postgres => p
            .replace(
                "d.contactName AS ChuHoSo",
                "COALESCE(d.legacyName, convert_to(d.contactName, 'UTF8')) AS ChuHoSo",
            )
            .replace("d.contactTelNo AS SoDienThoai", "d.contactTelNo AS SoDienThoai, d.geo AS extra_geo"),
    };
    let rig = rig(kind, edit, &[]).await;
    match kind {
        Kind::MariaDb => {
            rig.sql("ALTER TABLE opencps_dossier ADD COLUMN legacyName VARCHAR(255) CHARACTER SET latin1 NULL, ADD COLUMN geo POINT NULL");
        }
        Kind::Postgres => {
            rig.sql("ALTER TABLE opencps_dossier ADD COLUMN legacyName bytea, ADD COLUMN geo point");
        }
    }
    let mut daemon = Daemon::start(&rig.config).await;
    let pid = daemon.pid();
    wait("all 30 in sync", Duration::from_secs(60), || async { in_sync(rig.dir.path()) == 30 }).await;

    let now = now_local();
    let saved = |column: &str, id: i64| {
        rig.sql(&format!("SELECT {column} FROM opencps_dossier WHERE dossierId = {id}"))
    };
    let (no_number, number) = (2, rig.mahoso(2));
    let received = saved("receiveDate", 3);
    let local_status = saved("dossierStatus", 5);
    let first_action = rig.sql("SELECT MIN(dossierActionId) FROM opencps_dossieraction WHERE dossierId = 4");
    let officer = rig
        .sql(&format!("SELECT actionUser FROM opencps_dossieraction WHERE dossierActionId = {first_action}"));
    let bump = |id: i64, set: &str| {
        rig.sql(&format!("UPDATE opencps_dossier SET {set}, modifiedDate = '{now}' WHERE dossierId = {id}"))
    };
    bump(2, "dossierNo = NULL");
    bump(3, "receiveDate = NULL");
    bump(5, "dossierStatus = NULL");
    // Only the action row's time moves: the change must still be seen.
    rig.sql(&format!(
        "UPDATE opencps_dossieraction SET actionUser = NULL, modifiedDate = '{now}' WHERE dossierActionId = {first_action}"
    ));
    match kind {
        Kind::MariaDb => {
            // UTF-8 bytes in latin1: read right. A lone latin1 é: not UTF-8 at all.
            bump(6, "legacyName = CONVERT(X'4E677579E1BB856E2056C4836E2048C3B96E67' USING latin1)");
            bump(7, "legacyName = CONVERT(X'43C3B420E9' USING latin1)");
            bump(8, "geo = POINT(1, 2)");
        }
        Kind::Postgres => {
            bump(6, "legacyName = decode('4E677579E1BB856E2056C4836E2048C3B96E67', 'hex')");
            bump(7, "legacyName = decode('43C3B420E9', 'hex')");
            bump(8, "geo = point(1, 2)");
        }
    }
    let expect = [
        ("no-MaHoSo:id:2", "no MaHoSo (opencps_dossier.dossierNo is empty"),
        (&rig.mahoso(3) as &str, "missing NgayTiepNhan (opencps_dossier.receiveDate)"),
        (&rig.mahoso(4), "history entry 1: missing NguoiXuLy (opencps_dossieraction.actionUser)"),
        (&rig.mahoso(5), "no local status (TrangThai) (opencps_dossier.dossierStatus"),
        (&rig.mahoso(7), "ChuHoSo holds bytes that were not valid UTF-8"),
        (&rig.mahoso(8), "the source could not read: extra_geo"),
    ];
    let expect: Vec<(String, String)> = expect.iter().map(|(k, r)| (k.to_string(), r.to_string())).collect();
    wait("six quarantined", Duration::from_secs(60), || async { rig.quarantine().len() == 6 }).await;
    let quarantined = rig.quarantine();
    for (key, reason) in &expect {
        let (_, got) = quarantined
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} not quarantined: {quarantined:?}"));
        assert!(got.contains(reason.as_str()), "{key}: {got:?} should say {reason:?}");
    }
    // The UTF-8 that was in latin1 went through as Vietnamese.
    let (_, six) = rig.national.get(&format!("/_mock/state/{}", rig.mahoso(6))).await;
    wait("the legacy name sent", Duration::from_secs(30), || async {
        rig.national.get(&format!("/_mock/state/{}", rig.mahoso(6))).await.1["dossier"]["ChuHoSo"]
            == "Nguyễn Văn Hùng"
    })
    .await;
    let _ = six;
    let status = rig.status();
    assert_eq!(status["dossiers"]["quarantined"], 6, "{status}");
    assert_eq!(status["health"], "degraded");

    // Fixed at the source: every one leaves quarantine without a restart.
    let now = now_local();
    let bump = |id: i64, set: &str| {
        rig.sql(&format!("UPDATE opencps_dossier SET {set}, modifiedDate = '{now}' WHERE dossierId = {id}"))
    };
    bump(no_number, &format!("dossierNo = '{number}'"));
    bump(3, &format!("receiveDate = '{received}'"));
    bump(5, &format!("dossierStatus = '{local_status}'"));
    rig.sql(&format!(
        "UPDATE opencps_dossieraction SET actionUser = '{officer}', modifiedDate = '{now}' WHERE dossierActionId = {first_action}"
    ));
    bump(7, "legacyName = NULL");
    bump(8, "geo = NULL");
    wait("none quarantined, all in sync", Duration::from_secs(60), || async {
        rig.quarantine().is_empty() && in_sync(rig.dir.path()) == 30
    })
    .await;
    assert_eq!(daemon.pid(), pid, "no restart");
    assert_eq!(rig.national.stats().await["duplicate_history_entries"], 0);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
}

async fn faults(kind: Kind) {
    // The dossiers query sleeps as long as the knob says: a page then stays open long enough
    // to cut its connection, or to outlast the statement timeout.
    let edit = move |p: String| {
        let sleep = match kind {
            Kind::MariaDb => "AND (SELECT SLEEP(k.pause) FROM dvcsync_knob k) = 0",
            Kind::Postgres => {
                "AND (SELECT COUNT(*) FROM (SELECT pg_sleep(k.pause) FROM dvcsync_knob k) s) = 1"
            }
        };
        p.replace(
            "   AND COALESCE(d.originDossierNo, '') = ''",
            &format!("   AND COALESCE(d.originDossierNo, '') = ''\n   {sleep}"),
        )
    };
    let rig = rig(
        kind,
        edit,
        &["provincial.statement_timeout_seconds = 2.0", "provincial.retry_max_seconds = 0.5"],
    )
    .await;
    let mut daemon = Daemon::start(&rig.config).await;
    let pid = daemon.pid();
    wait("all 30 in sync", Duration::from_secs(60), || async { in_sync(rig.dir.path()) == 30 }).await;

    // 1. The connection dropped in the middle of a page (while its second query runs).
    rig.sql("UPDATE dvcsync_knob SET pause = 1.5");
    rig.touch(10, "Sau khi mất kết nối");
    tokio::time::sleep(Duration::from_millis(700)).await;
    match kind {
        Kind::MariaDb => {
            let ids =
                rig.sql(&format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{READER}'"));
            for id in ids.split_whitespace() {
                let _ = rig.server.admin_sql(&format!("KILL {id}"));
            }
        }
        Kind::Postgres => {
            rig.sql(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{READER}'"
            ));
        }
    }
    rig.sql("UPDATE dvcsync_knob SET pause = 0");
    rig.arrives(10, "Sau khi mất kết nối").await;
    let logs = daemon.logs();
    assert!(
        logs.contains("\"event\":\"failure_repeated\"") && logs.contains("\"event\":\"failure_recovered\""),
        "the dropped connection was logged, and the recovery:\n{}",
        logs.lines().filter(|l| l.contains("failure_")).collect::<Vec<_>>().join("\n")
    );

    // 2. A statement that outlasts statement_timeout_seconds: a clear error, the cursor still.
    let before = rig.cursor();
    rig.sql("UPDATE dvcsync_knob SET pause = 3");
    rig.touch(11, "Sau khi quá thời gian");
    let error = rig.poll_error("statement_timeout_seconds").await;
    assert_eq!(rig.cursor(), before, "a failed page moves no cursor: {error}");
    rig.sql("UPDATE dvcsync_knob SET pause = 0");
    rig.arrives(11, "Sau khi quá thời gian").await;

    // 3. The account's rights revoked on one table, then given back.
    let (revoke, grant) = match kind {
        Kind::MariaDb => (
            format!("REVOKE SELECT ON opencps.opencps_dossieraction FROM '{READER}'@'%'"),
            format!("GRANT SELECT ON opencps.opencps_dossieraction TO '{READER}'@'%'"),
        ),
        Kind::Postgres => (
            format!("REVOKE SELECT ON opencps_dossieraction FROM {READER}"),
            format!("GRANT SELECT ON opencps_dossieraction TO {READER}"),
        ),
    };
    let before = rig.cursor();
    rig.sql(&revoke);
    rig.touch(12, "Sau khi cấp lại quyền");
    let denied = if kind == Kind::MariaDb { "SELECT command denied" } else { "permission denied" };
    let error = rig.poll_error(denied).await;
    assert!(error.contains("opencps_dossieraction"), "{error}");
    assert_eq!(rig.cursor(), before);
    rig.sql(&grant);
    rig.arrives(12, "Sau khi cấp lại quyền").await;

    // 4. The server restarted: errors while it is down, then on as before.
    let before = rig.cursor();
    let mut server = rig.server;
    server.stop();
    let rig = Rig { server, ..rig };
    let error = rig.poll_error("is not usable").await;
    assert_eq!(rig.cursor(), before, "{error}");
    let mut server = rig.server;
    server.restart();
    let rig = Rig { server, ..rig };
    rig.touch(13, "Sau khi khởi động lại");
    rig.arrives(13, "Sau khi khởi động lại").await;
    wait("the poll error cleared", Duration::from_secs(30), || async {
        rig.status()["poll"]["last_error"].is_null()
    })
    .await;

    assert_eq!(daemon.pid(), pid, "recovered without a restart");
    assert_eq!(in_sync(rig.dir.path()), 30);
    assert_eq!(rig.national.stats().await["duplicate_history_entries"], 0);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
}

on_both! {
    hostile_content_is_quarantined_with_its_reason_and_recovers => hostile_content;
    faults_give_a_clear_error_keep_the_cursor_and_recover => faults;
}
