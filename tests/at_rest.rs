//! Citizens' personal data at rest (Law 91/2025/QH15; docs/personal-data.md), on the real
//! daemon against the real mocks:
//! - with `store.key_file`, after a run with national faults, bad records and SIGKILLs, no
//!   personal value of the provincial truth is in the database, its WAL or a backup, read as
//!   raw bytes or through every zstd frame in them decompressed with the file's own
//!   dictionaries (libzstd, what the stock `zstd` tool is built on); without the key, or with
//!   another, the daemon does not start (78, naming store.key_file);
//! - with `store.personal_data_days = 0`, finished and verified dossiers hold no personal value
//!   and open ones do; dossiers the national portal then loses are repaired by reading them
//!   again from the source, with no duplicate; `forget` erases and journals without the data;
//! - `rekey` seals a live, unsealed database under load, nothing lost; a rotation with `--from`.

mod common;

use std::{
    collections::BTreeSet,
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::Value;

/// A key file of 32 random bytes, 0600.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut key).unwrap();
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Everything readable in `bytes`: its printable runs as they are, and the output of every zstd
/// frame found in it, decompressed without a dictionary and with each of `dictionaries`.
fn readable(bytes: &[u8], dictionaries: &[Vec<u8>]) -> String {
    const FRAME: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    let mut out = String::from_utf8_lossy(bytes).into_owned();
    let starts = bytes.windows(4).enumerate().filter(|(_, w)| *w == FRAME).map(|(i, _)| i);
    for start in starts {
        for dictionary in std::iter::once(&Vec::new()).chain(dictionaries) {
            let Ok(mut decoder) = zstd::stream::read::Decoder::with_dictionary(&bytes[start..], dictionary)
            else {
                continue;
            };
            let mut text = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = decoder.read(&mut chunk) {
                if n == 0 || text.len() > 1 << 20 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
            }
            out.push_str(&String::from_utf8_lossy(&text));
        }
    }
    out
}

/// The dictionaries a database file holds, as stored, and any zstd dictionary found in its raw
/// bytes (from its magic number to the end of the page).
fn dictionaries(db: &Path, raw: &[u8]) -> Vec<Vec<u8>> {
    const MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];
    let mut found: Vec<Vec<u8>> = rusqlite::Connection::open(db)
        .ok()
        .and_then(|c| {
            let mut stmt = c.prepare("SELECT dict FROM body_dict").ok()?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).ok()?;
            Some(rows.filter_map(Result::ok).collect())
        })
        .unwrap_or_default();
    for (i, _) in raw.windows(4).enumerate().filter(|(_, w)| *w == MAGIC) {
        found.push(raw[i..(i + 65_536).min(raw.len())].to_vec());
    }
    found
}

/// The personal values of `personal` readable in the files.
fn leaked(files: &[PathBuf], db: &Path, personal: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for file in files.iter().filter(|f| f.exists()) {
        let raw = std::fs::read(file).unwrap();
        let text = readable(&raw, &dictionaries(db, &raw));
        out.extend(
            personal.iter().filter(|p| text.contains(p.as_str())).map(|p| format!("{}: {p}", file.display())),
        );
    }
    out
}

fn files_of(db: &Path) -> Vec<PathBuf> {
    ["", "-wal"].iter().map(|s| PathBuf::from(format!("{}{s}", db.display()))).collect()
}

async fn until_finished_and_synchronized(provincial: &Provincial, national: &National, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let v = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
        if provincial.stats().await["finished"] == Value::Bool(true) && v.not_synchronized.is_empty() {
            assert!(v.clean(), "{}", v.summary());
            return;
        }
        assert!(Instant::now() < deadline, "not synchronized in time: {}", v.summary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_no_personal_value_is_readable_in_the_database_its_wal_or_a_backup() {
    let national = National::start(Faults {
        error_rate: 0.05,
        drop_after_apply_rate: 0.05,
        seed: 27,
        ..Faults::default()
    })
    .await;
    let provincial = Provincial::start(Knobs {
        dossiers: 400,
        changes_per_second: 80.0,
        bad_record_rate: 0.10,
        messy_rate: 0.30,
        seed: 27,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let key = key_file(dir.path(), "store.key");
    let key_line = format!("store.key_file = {:?}", key.display().to_string());
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[&key_line]);
    let db = dir.path().join("state.db");

    // Three SIGKILLs while the province files.
    for _ in 0..3 {
        let mut daemon = Daemon::start(&config).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        daemon.kill9().await;
    }
    let mut daemon = Daemon::start(&config).await;
    until_finished_and_synchronized(&provincial, &national, Duration::from_secs(240)).await;
    let backup = dir.path().join("backup.db");
    let (code, said) = cli(&config, &["backup", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");

    let truth = provincial.truth().await;
    let personal = personal_values(&truth);
    assert!(personal.len() > 300, "{}", personal.len());
    let quarantined: i64 = db_conn(&db)
        .query_row("SELECT COUNT(*) FROM quarantine WHERE record != ''", [], |r| r.get(0))
        .unwrap();
    assert!(quarantined > 0, "bad records were quarantined, whole");
    // While the daemon runs (its WAL in use), and the backup.
    let mut files = files_of(&db);
    files.push(backup.clone());
    let found = leaked(&files, &db, &personal);
    assert!(
        found.is_empty(),
        "{} personal values readable: {:?}",
        found.len(),
        &found[..found.len().min(10)]
    );
    let status = status_json(&config);
    assert_eq!(status["personal_data"]["sealed_with"].as_array().map(Vec::len), Some(1), "{status}");
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
    let found = leaked(&files_of(&db), &db, &personal);
    assert!(found.is_empty(), "after the stop: {found:?}");

    // Without its key, or with another, nothing starts.
    let plain = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let (code, said) = cli(&plain, &["run"]);
    assert_eq!(code, 78, "{said}");
    assert!(said.contains("store.key_file") && said.contains("sealed"), "{said}");
    let other = key_file(dir.path(), "other.key");
    let other_line = format!("store.key_file = {:?}", other.display().to_string());
    let wrong = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[&other_line]);
    let (code, said) = cli(&wrong, &["run"]);
    assert_eq!(code, 78, "{said}");
    assert!(said.contains("store.key_file holds key"), "{said}");
    // The old key as a rotation's previous key alone: new bodies would be unsealed. Refused.
    let previous_line = format!("store.previous_key_file = {:?}", key.display().to_string());
    let half = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[&previous_line]);
    let (code, said) = cli(&half, &["check-config"]);
    assert_eq!(code, 78, "{said}");
    assert!(said.contains("store.previous_key_file") && said.contains("store.key_file"), "{said}");
    let plain = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    // `status` reads no body: it works without the key, and says the bodies are sealed.
    let (code, said) = cli(&plain, &["status"]);
    assert!(code <= 1 && said.contains("sealed (key"), "{code}: {said}");
}

fn db_conn(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).unwrap()
}

/// (MaHoSo, national status, verified since acknowledged or parked dead, minimised, payload as
/// stored) of every dossier, read through the daemon's own reader.
fn stored(db: &Path) -> Vec<(String, i64, bool, bool, String)> {
    let store = dvc_sync::store::Store::open(db).unwrap();
    store
        .read(|c| {
            c.prepare(
                "SELECT d.mahoso, d.status,
                        COALESCE(d.verified_at >= d.acked_at, 0) OR EXISTS (SELECT 1 FROM dead x WHERE x.mahoso = d.mahoso),
                        d.minimised_at IS NOT NULL,
                        body_text(b.payload)
                 FROM dossier d JOIN body b USING (mahoso)",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimised_at_once_repaired_from_the_source_and_forgotten_on_request() {
    let national = National::start(Faults { seed: 5, ..Faults::default() }).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 200,
        changes_per_second: 100.0,
        bad_record_rate: 0.05,
        // Values as the source holds them, so that each is found as it is.
        messy_rate: 0.0,
        seed: 5,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &[
            "store.personal_data_days = 0",
            "national.audit_per_second = 40.0",
            "national.audit_cycle_days = 0.0002",
        ],
    );
    let db = dir.path().join("state.db");
    let mut daemon = Daemon::start(&config).await;
    // While the province files: dossiers still open keep what they need.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The database first, then the truth: a dossier filed between the two reads is in the
    // truth (and ignored), never stored without its values known.
    let open: Vec<_> = stored(&db).into_iter().filter(|r| !matches!(r.1, 3 | 7 | 10)).collect();
    let personal = personal_values(&provincial.truth().await);
    assert!(open.len() > 10, "{} open", open.len());
    let open_with_personal =
        open.iter().filter(|r| personal.iter().any(|p| r.4.contains(p.as_str()))).count();
    assert_eq!(open_with_personal, open.len(), "open dossiers keep what they need");
    until_finished_and_synchronized(&provincial, &national, Duration::from_secs(180)).await;
    let truth = provincial.truth().await;
    let personal = personal_values(&truth);

    // Every finished dossier verified (or parked dead) and minimised (the minimiser looks
    // every 2 s).
    let finished = |s: i64| matches!(s, 3 | 7 | 10);
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = stored(&db);
        if rows.iter().filter(|r| finished(r.1)).all(|r| r.2 && r.3) {
            break rows;
        }
        let late: Vec<_> =
            rows.iter().filter(|r| finished(r.1) && !(r.2 && r.3)).map(|r| (&r.0, r.2, r.3)).collect();
        assert!(Instant::now() < deadline, "finished dossiers not all verified and minimised: {late:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (closed, open): (Vec<_>, Vec<_>) = rows.iter().partition(|r| finished(r.1));
    assert!(closed.len() > 20, "{} finished", closed.len());
    for (mahoso, _, _, _, payload) in &closed {
        let held: Vec<&String> = personal.iter().filter(|p| payload.contains(p.as_str())).collect();
        assert!(held.is_empty(), "{mahoso} still holds {held:?}: {payload}");
        assert!(payload.contains("hmac-sha256:"), "{payload}");
    }
    let status = status_json(&config);
    assert_eq!(status["personal_data"]["dossiers_minimised"], closed.len(), "{status}");
    assert_eq!(status["personal_data"]["dossiers_in_clear"], open.len(), "{status}");
    // The scan of the next test sees through compression: this unsealed file shows some.
    let raw = std::fs::read(&db).unwrap();
    let text = readable(&raw, &dictionaries(&db, &raw));
    assert!(personal.iter().any(|p| text.contains(p.as_str())), "the scan sees nothing unsealed");

    // The national portal loses twelve minimised dossiers: the audit finds them, the next full
    // pass reads them again from the source, and they are created again whole.
    let lost: Vec<String> = closed.iter().take(12).map(|r| r.0.clone()).collect();
    for mahoso in &lost {
        let answer =
            national.http.delete(national.url(&format!("/_mock/state/{mahoso}"))).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    let (code, said) = audit_command(&config, &["--all"]);
    assert_eq!(code, 1, "drift found: {said}");
    until_finished_and_synchronized(&provincial, &national, Duration::from_secs(120)).await;
    let stats = national.stats().await;
    assert_eq!(stats["duplicate_history_entries"], 0, "{stats}");
    assert_eq!(stats["rejected_status_changes"], 0, "{stats}");
    let reread: String = db_conn(&db)
        .query_row("SELECT value FROM meta WHERE key = 'personal_reread'", [], |r| r.get(0))
        .unwrap();
    assert!(reread.parse::<u64>().unwrap() >= 12, "{reread}");

    // An erasure carried out at the source: forgotten here, journalled without the data.
    let target = &closed.last().unwrap().0;
    let (code, said) = cli(&config, &["forget", target, "000.00.00.H58-000000-0000"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("erased the personal data of 1 dossier") && said.contains("nothing held of"),
        "{said}"
    );
    let payload = stored(&db).into_iter().find(|r| &r.0 == target).unwrap().4;
    for field in PERSONAL {
        assert!(!payload.contains(&format!("\"{field}\"")), "{field} kept: {payload}");
    }
    let journal: Vec<(String, i64)> = db_conn(&db)
        .prepare("SELECT mahoso, found FROM erasure ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(journal, [(target.clone(), 1), ("000.00.00.H58-000000-0000".into(), 0)]);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
}

/// Every stored body and quarantined record sealed (format 2), and how many there are.
fn all_sealed(db: &Path) -> (usize, Vec<String>) {
    let conn = db_conn(db);
    let mut stmt = conn
        .prepare(
            "SELECT 'body ' || mahoso, payload FROM body UNION ALL SELECT 'history ' || mahoso, history FROM body
             UNION ALL SELECT 'quarantine ' || key, record FROM quarantine WHERE record != ''",
        )
        .unwrap();
    let rows: Vec<(String, rusqlite::types::Value)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let unsealed = rows
        .iter()
        .filter(|(_, v)| !matches!(v, rusqlite::types::Value::Blob(b) if b.first() == Some(&2)))
        .map(|(k, _)| k.clone())
        .collect();
    (rows.len(), unsealed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_seals_a_live_database_under_load_and_rotates() {
    let national = National::start(Faults { seed: 9, ..Faults::default() }).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 300,
        changes_per_second: 40.0,
        bad_record_rate: 0.05,
        seed: 9,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let db = dir.path().join("state.db");
    let (p, n) = (provincial.server.url(), national.server.url());
    let plain = write_config(dir.path(), &p, &n, &[]);
    let mut daemon = Daemon::start(&plain).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
    let (stored, unsealed) = all_sealed(&db);
    assert!(stored > 50 && unsealed.len() == stored, "unsealed so far: {stored}");

    // The key is given; the daemon runs with it and the province goes on filing; rekey seals
    // what was stored before, beside it.
    let first = key_file(dir.path(), "first.key");
    let first_line = format!("store.key_file = {:?}", first.display().to_string());
    let keyed = write_config(dir.path(), &p, &n, &[&first_line]);
    let mut daemon = Daemon::start(&keyed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = status_json(&keyed);
    assert_eq!(status["personal_data"]["all_sealed"], false, "stored before the key: {status}");
    let (code, said) = cli(&keyed, &["rekey"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("sealed") && said.contains("the daemon runs"), "{said}");
    // Another key while the daemon seals with this one: refused.
    let second = key_file(dir.path(), "second.key");
    let second_line = format!("store.key_file = {:?}", second.display().to_string());
    let rotated = write_config(dir.path(), &p, &n, &[&second_line]);
    let (code, said) = cli(&rotated, &["rekey", "--from", first.to_str().unwrap()]);
    assert_eq!(code, 78, "{said}");
    assert!(said.contains("running daemon does not seal"), "{said}");
    let keyed = write_config(dir.path(), &p, &n, &[&first_line]);
    until_finished_and_synchronized(&provincial, &national, Duration::from_secs(180)).await;
    let (stored, unsealed) = all_sealed(&db);
    assert!(
        unsealed.is_empty(),
        "{} of {stored} unsealed: {:?}",
        unsealed.len(),
        &unsealed[..unsealed.len().min(5)]
    );
    let (code, said) = cli(&keyed, &["rekey", "--json"]);
    assert_eq!(code, 0, "{said}");
    let again: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(again["sealed"], 0, "nothing left to seal: {again}");
    assert_eq!(status_json(&keyed)["personal_data"]["all_sealed"], true);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());

    // A rotation with the daemon stopped: everything moves to the second key, the first is
    // needed no more.
    let rotated = write_config(dir.path(), &p, &n, &[&second_line]);
    let (code, said) = cli(&rotated, &["rekey", "--from", first.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{said}");
    let done: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(done["vacuumed"], true, "{done}");
    assert!(done["sealed"].as_u64().unwrap() as usize >= stored, "{done}");
    std::fs::remove_file(&first).unwrap();
    // Stopped, the rekey rewrote the free pages and emptied the WAL: nothing of before is left.
    assert_eq!(done["wal_truncated"], true, "{done}");
    let personal = personal_values(&provincial.truth().await);
    let found = leaked(&files_of(&db), &db, &personal);
    assert!(found.is_empty(), "after the rotation: {found:?}");
    let (code, said) = cli(&rotated, &["report", "--json"]);
    assert_eq!(code, 0, "the bodies open with the second key alone: {said}");
    let mut daemon = Daemon::start(&rotated).await;
    let verdict = converge(&p, &n, Duration::from_secs(60)).await;
    assert!(verdict.clean() && verdict.not_synchronized.is_empty(), "{}", verdict.summary());
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(20)).await.unwrap().success());
}
