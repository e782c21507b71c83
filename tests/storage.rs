//! Storage faults: a full disk (a file size limit, lifted while the daemon runs), a read-only
//! database directory, and a corrupt database file. Each gives a clear error, loses and
//! invents nothing, and the daemon recovers once the fault clears.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use tokio::process::Command;

fn clean(dossiers: u32, cps: f64) -> Knobs {
    Knobs {
        dossiers,
        changes_per_second: cps,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn sha(path: &Path) -> u64 {
    dvc_sync::domain::stable_hash(&std::fs::read(path).unwrap()) as u64
}

async fn wait_log(log: &Path, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !std::fs::read_to_string(log).unwrap_or_default().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_loses_nothing_and_recovers_when_space_returns() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(1_500, 600.0)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let log = dir.path().join("daemon.log");
    // No file may grow beyond 1 MiB (a soft limit, so that it can be lifted without
    // privileges); SIGXFSZ ignored, so writes fail with EFBIG instead of killing the process
    // (ignored signals stay ignored across exec).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize=1048576:unlimited -- {BIN} --config {} run",
            config.display()
        ))
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("stderr.log")).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    wait_log(&log, "store_failed", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "the daemon keeps running while the disk is full");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("full") || said.contains("disk") || said.contains("too large"),
        "a clear error: {}",
        &said[said.find("store_failed").unwrap()..][..300]
    );

    // Space comes back.
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .unwrap();
    assert!(lifted.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while provincial.stats().await["finished"] != serde_json::json!(true) {
        assert!(Instant::now() < deadline, "the province did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(120)).await;
    assert!(
        verdict.clean() && verdict.synchronized == verdict.valid && verdict.valid == 1_500,
        "{}",
        verdict.summary()
    );
    assert_eq!(national.stats().await["duplicate_history_entries"], 0);
    assert!(child.try_wait().unwrap().is_none(), "recovered without a restart");
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

/// A directory and files that `nobody` can use, and a way to run the daemon as them: when the
/// tests run as root, permissions would not apply to the daemon otherwise.
fn as_daemon_user(command: &mut Command, args: &[&str]) {
    if is_root() {
        command.arg("--reuid=65534").arg("--regid=65534").arg("--clear-groups").arg(BIN);
    }
    command.args(args);
}

fn daemon_command() -> Command {
    if is_root() { Command::new("setpriv") } else { Command::new(BIN) }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(path: &Path) {
    if is_root() {
        assert!(
            std::process::Command::new("chown")
                .args(["-R", "65534:65534", path.to_str().unwrap()])
                .status()
                .unwrap()
                .success()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_directory_is_refused_clearly_and_works_once_writable() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(100, 0.0)).await;
    // Under /tmp with open permissions, so that `nobody` can reach it.
    let base = tempfile::Builder::new().prefix("dvc-sync-ro-").tempdir_in("/tmp").unwrap();
    chmod(base.path(), 0o755);
    let state: PathBuf = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = write_config(base.path(), &provincial.server.url(), &national.server.url(), &[]);
    let config_text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{:?}", base.path().join("state.db").display().to_string()),
        &format!("{:?}", state.join("state.db").display().to_string()),
    );
    std::fs::write(&config, config_text).unwrap();
    chmod(&config, 0o644);
    chown_nobody(&state);

    // First run while writable: some state to protect.
    let mut run = daemon_command();
    as_daemon_user(&mut run, &["--config", config.to_str().unwrap(), "run"]);
    let mut child = run.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap();
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status();
    assert!(child.wait().await.unwrap().success());
    let db = state.join("state.db");
    let before = sha(&db);
    let creates_before = national.stats().await["items_applied"]["dossiers_created"].clone();

    // Read-only directory: no -wal/-shm can be created: a clear refusal, exit 1.
    chmod(&state, 0o555);
    let mut run = daemon_command();
    as_daemon_user(&mut run, &["--config", config.to_str().unwrap(), "run"]);
    let out = run.output().await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&db.display().to_string()) || said.contains(&state.display().to_string()),
        "names the path: {said}"
    );
    assert_eq!(sha(&db), before, "nothing written");
    assert_eq!(national.stats().await["items_applied"]["dossiers_created"], creates_before, "nothing sent");

    // Writable again: it starts, with its state intact (nothing created twice).
    chmod(&state, 0o755);
    let mut run = daemon_command();
    as_daemon_user(&mut run, &["--config", config.to_str().unwrap(), "run"]);
    let mut child = run.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(national.stats().await["items_applied"]["dossiers_created"], creates_before);
    assert_eq!(national.stats().await["duplicate_history_entries"], 0);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status();
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_refused_and_left_untouched() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(clean(400, 0.0)).await;
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &national.server.url(), &[]);
    let mut daemon = Daemon::start(&config).await;
    converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(10)).await.unwrap().success());
    let db = dir.path().join("state.db");
    let backup = dir.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();

    // Garbage over a few pages in the middle of the file.
    let mut bytes = std::fs::read(&db).unwrap();
    let middle = (bytes.len() / 2) & !4095;
    for b in &mut bytes[middle..middle + 3 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let corrupt = sha(&db);
    let out =
        std::process::Command::new(BIN).args(["--config", config.to_str().unwrap(), "run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("integrity") || said.contains("malformed") || said.contains("corrupt"), "{said}");
    assert_eq!(sha(&db), corrupt, "the corrupt file is left as it was, for the operator");

    // Restored from the backup: it carries on where it was, nothing sent twice.
    std::fs::copy(&backup, &db).unwrap();
    let updates_before = national.stats().await["items_applied"]["dossiers_updated"].clone();
    let mut daemon = Daemon::start(&config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(30)).await;
    assert!(verdict.clean() && verdict.synchronized == 400, "{}", verdict.summary());
    assert_eq!(national.stats().await["items_applied"]["dossiers_updated"], updates_before, "no resend");
    daemon.sigterm().await;
    daemon.wait(Duration::from_secs(10)).await;
}
