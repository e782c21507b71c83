//! One daemon per database: an exclusive lock on `<database>.lock`, held for the process's
//! life and released by the kernel when it dies, even by SIGKILL.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("another dvc-sync daemon is already running on {db} (pid {pid}); only one may use a database")]
    Held { db: PathBuf, pid: String },
    #[error("cannot create the lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    pub(crate) fn lock_path(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    pub(crate) fn acquire(db: &Path) -> Result<DaemonLock, LockError> {
        let path = Self::lock_path(db);
        let io = |source| LockError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    db: db.to_path_buf(),
                    pid: if pid.is_empty() { "unknown".into() } else { pid.into() },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DaemonLock { _file: file })
    }

    /// Whether a daemon holds the lock of `db` now (for commands that must not race it).
    pub(crate) fn is_held(db: &Path) -> bool {
        let path = Self::lock_path(db);
        // Read-only is enough to test a lock, and works for an operator who cannot write it.
        let Ok(file) = OpenOptions::new().read(true).open(&path) else { return false };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
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
}
