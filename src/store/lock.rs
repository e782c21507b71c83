//! One daemon per database, whatever name it is reached by: an exclusive `flock` on the
//! database file itself, so that a symlink, a hard link, a path through `..` or a bind mount
//! all lead to the one file and so to the one lock. It is held for the process's life and
//! released by the kernel when the process dies, even by SIGKILL.
//!
//! `flock`, not a POSIX record lock: SQLite's own POSIX locks on the file are dropped whenever
//! any descriptor of the file is closed in the process, while a `flock` belongs to its open
//! file description; neither disturbs the other. Who holds it is read from `/proc/locks`.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another dvc-sync daemon is already running on {db} (pid {pid}); only one may use a database")]
    Held { db: PathBuf, pid: String },
    #[error("cannot open the database {path} to lock it: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Locks `db` (created empty, 0600, if it does not exist; its directory must).
    pub fn acquire(db: &Path) -> Result<DaemonLock, LockError> {
        let io = |source| LockError::Io { path: db.to_path_buf(), source };
        refuse_if_an_earlier_release_runs(db)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(db)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DaemonLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
                db: db.to_path_buf(),
                pid: holder(db)
                    .or_else(|| recorded_pid(db))
                    .map_or_else(|| "unknown".into(), |p| p.to_string()),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Whether a daemon holds the lock of `db` now (for commands that must not race it).
    pub fn is_held(db: &Path) -> bool {
        if holder(db).is_some() {
            return true;
        }
        // Without /proc/locks, or a file system it names by other numbers: ask the lock itself.
        // (Read-only is enough to test a lock, and works for an operator who cannot write.)
        let Ok(file) = OpenOptions::new().read(true).open(db) else { return false };
        let held = match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        };
        // Never closed: closing any descriptor of the file drops every POSIX lock this process
        // holds on it, SQLite's own included (the commands that ask hold a connection open).
        std::mem::forget(file);
        held
    }
}

/// An earlier release locked `<db>.lock` instead of the database: refuse while one runs.
fn refuse_if_an_earlier_release_runs(db: &Path) -> Result<(), LockError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let Ok(mut file) = OpenOptions::new().read(true).open(PathBuf::from(name)) else { return Ok(()) };
    if file.try_lock_shared().is_ok() {
        return Ok(());
    }
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    let pid = pid.trim();
    Err(LockError::Held {
        db: db.to_path_buf(),
        pid: if pid.is_empty() { "unknown".into() } else { pid.into() },
    })
}

/// The pid the running daemon recorded in its heartbeat, where `/proc/locks` is hidden (as
/// under the packaged unit's `ProcSubset=pid`). Only asked when this process will not open
/// the database (closing this connection would drop its SQLite locks otherwise).
fn recorded_pid(db: &Path) -> Option<u32> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("SELECT pid FROM heartbeat WHERE id = 1 AND stopped_at IS NULL", [], |r| {
        r.get::<_, i64>(0)
    })
    .ok()
    .and_then(|p| u32::try_from(p).ok())
}

/// The process holding an exclusive `flock` on `path`, as `/proc/locks` lists it (by the
/// file's device and inode, so by any name of the file).
fn holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let wanted = format!("{:02x}:{:02x}:{}", libc::major(dev), libc::minor(dev), meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 12345 fe:00:10010771 0 EOF"
        let at = fields.iter().position(|f| *f == "FLOCK")?;
        (fields.get(at + 2) == Some(&"WRITE") && fields.get(at + 4) == Some(&wanted.as_str()))
            .then(|| fields.get(at + 3)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let first = DaemonLock::acquire(&db).unwrap();
        assert!(DaemonLock::is_held(&db));
        let err = DaemonLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(err.contains("already running"), "{err}");
        drop(first);
        assert!(!DaemonLock::is_held(&db));
        DaemonLock::acquire(&db).unwrap();
    }

    #[test]
    fn every_name_of_the_file_is_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        let db = dir.path().join("real/state.db");
        let _first = DaemonLock::acquire(&db).unwrap();
        let symlink = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &symlink).unwrap();
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&db, &hard).unwrap();
        let dotted = dir.path().join("real/../real/./state.db");
        for other in [symlink, hard, dotted] {
            let err = DaemonLock::acquire(&other).unwrap_err().to_string();
            assert!(err.contains(&format!("pid {}", std::process::id())), "{}: {err}", other.display());
            assert!(DaemonLock::is_held(&other), "{}", other.display());
        }
    }
}
