//! `dvc-sync backup PATH`: a consistent copy of the live database, safe while the daemon runs.
//!
//! SQLite's `VACUUM INTO` writes a compacted copy from one read transaction: in WAL mode the
//! daemon keeps writing meanwhile (readers never block the writer; the WAL only grows until the
//! copy ends). The copy is created 0600 before SQLite writes into it, fsynced with its directory,
//! and checked (`PRAGMA integrity_check`) before the command reports success.
//!
//! **A copy knows it is a copy.** Whatever the daemon sent after the snapshot is not in it: a
//! dossier acknowledged later looks unacknowledged in the copy, and sending its history again
//! would append it twice. So the copy marks every dossier the national portal may hold as
//! uncertain (the same mark a lost answer leaves): restored, the daemon reads each one back
//! (`TraCuuHoSo`) before it writes to it, and sends only what the portal lacks.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use rusqlite::Connection;
use serde::Serialize;

use crate::store::{self, meta_set, open_read_only, schema_version};

/// What `backup` made.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
    pub schema_version: i64,
    pub dossiers: u64,
    pub integrity: String,
    pub taken_at: String,
}

/// Copies the database at `from` to `to` (which must not exist), consistently, while the
/// daemon may run.
pub(crate) fn backup(from: &Path, to: &Path) -> anyhow::Result<BackupReport> {
    // SQLite takes the target as text: a path that is not UTF-8 would name another file.
    let target = to.to_str().ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", to.display()))?;
    let started = Instant::now();
    let taken_at = jiff::Timestamp::now();
    let source = open_read_only(from)?;
    let version = schema_version(&source)?;
    anyhow::ensure!(version > 0, "{} is not a dvc-sync database (no schema)", from.display());
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        anyhow::bail!(
            "the directory {} does not exist: create it first, or give another path",
            dir.display()
        );
    }
    anyhow::ensure!(
        !to.exists(),
        "{} exists already: a backup is written to a new file, which must not exist yet",
        to.display()
    );
    // Private from the first byte, whatever the umask: it holds citizens' personal data.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("cannot create {} (it must not exist yet)", to.display()))?;
    let copied = source.execute("VACUUM INTO ?1", [target]);
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(e).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()));
    }
    drop(source);
    let result = mark_as_copy(to, taken_at).and_then(|()| check(to));
    let (integrity, dossiers) = match result {
        Ok(found) => found,
        Err(e) => {
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
    };
    sync_file_and_dir(to)?;
    Ok(BackupReport {
        path: to.to_path_buf(),
        bytes: std::fs::metadata(to)?.len(),
        seconds: started.elapsed().as_secs_f64(),
        schema_version: version,
        dossiers,
        integrity,
        taken_at: taken_at.to_string(),
    })
}

/// Every dossier the portal may hold is marked uncertain in the copy (see the module comment).
fn mark_as_copy(to: &Path, taken_at: jiff::Timestamp) -> anyhow::Result<()> {
    let conn = Connection::open(to)?;
    // The copy is a plain rollback-journal file until a daemon opens it (then WAL again).
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    let tx = conn.unchecked_transaction()?;
    tx.execute("UPDATE dossier SET inflight = 2", [])?;
    meta_set(&tx, "backup_taken_at", Some(&taken_at.as_microsecond().to_string()))?;
    // Nobody holds the copy's lock; no heartbeat of the original's daemon applies to it.
    tx.execute("DELETE FROM heartbeat", [])?;
    tx.commit()?;
    Ok(())
}

/// (integrity_check's answer, dossiers) of the copy; an error unless it is "ok".
fn check(to: &Path) -> anyhow::Result<(String, u64)> {
    let conn = store::open_read_only(to)?;
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    anyhow::ensure!(integrity == "ok", "the copy fails its integrity check: {integrity}");
    let dossiers: i64 = conn.query_row("SELECT COUNT(*) FROM dossier", [], |r| r.get(0))?;
    Ok((integrity, dossiers.max(0) as u64))
}

fn sync_file_and_dir(to: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(to)?;
    file.sync_all()?;
    let dir = to.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()?;
    let _ = std::io::stdout().flush();
    Ok(())
}
