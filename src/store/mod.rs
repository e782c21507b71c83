//! SQLite: the one way to open the database (WAL, `synchronous = FULL`, a busy timeout,
//! foreign keys, migrations applied on open) and the small helpers every part shares. The
//! queries themselves live beside the code that needs them.
//!
//! Why `synchronous = FULL`: before each national write the pusher durably marks the
//! dossiers concerned as in flight. With FULL, that mark is on disk (the WAL fsynced) before
//! the request leaves, so a power cut can cost a read-back, never a resent history entry.

pub(crate) mod body;
pub(crate) mod journal;
pub(crate) mod lock;
pub(crate) mod seal;
pub(crate) mod state;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

pub use seal::{DigestKey, KeyError, Keys, SealKey};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot migrate the database {path}: {source}")]
    Migrate { path: PathBuf, source: rusqlite_migration::Error },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Body(#[from] body::BodyError),
    #[error("the directory {0} does not exist (set store.create_dir = true to have it created)")]
    NoDirectory(PathBuf),
    #[error("cannot create the directory {dir}: {source}")]
    CreateDirectory { dir: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a dvc-sync database: it holds other tables ({tables}); point store.path at a new file or at the daemon's own database"
    )]
    Foreign { path: PathBuf, tables: String },
    /// The keys do not open this database (missing, or another key): a configuration
    /// problem (exit 78).
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    KeyFile(#[from] KeyError),
}

/// Makes sure the directory of the database at `path` exists: created (0700) when `create`,
/// else its absence is reported (a typo in store.path must not start a full sync elsewhere).
pub fn prepare_dir(path: &Path, create: bool) -> Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    if dir.is_dir() {
        return Ok(());
    }
    if !create {
        return Err(StoreError::NoDirectory(dir.to_path_buf()));
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::CreateDirectory { dir: dir.to_path_buf(), source: e })
}

/// Refuses a database that is not ours: no schema version of ours, and tables nonetheless.
/// (An empty file, or an empty SQLite database, is a new one.)
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // A file that is not SQLite at all fails here: said with its path.
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let tables = || -> rusqlite::Result<Vec<String>> {
        let mut stmt =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name LIMIT 6")?;
        stmt.query_map([], |r| r.get(0))?.collect()
    };
    let tables = tables().map_err(open_err)?;
    // Ours has a schema version and our own tables: other programs set user_version too.
    let ours = ["dossier", "meta", "outbox"].iter().all(|t| {
        conn.query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [t], |_| Ok(()))
            .is_ok()
    });
    if ours && schema_version(conn).map_err(open_err)? > 0 {
        return Ok(());
    }
    if tables.is_empty() {
        return Ok(());
    }
    let mut list = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if tables.len() > 5 {
        list.push_str(", ...");
    }
    Err(StoreError::Foreign { path: path.to_path_buf(), tables: list })
}

/// The schema version this build writes (the number of migrations).
pub(crate) const SCHEMA_VERSION: i64 = 13;

/// The schema version of an open database (SQLite's user_version, kept by the migrations).
pub(crate) fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_initial.sql")),
        M::up(include_str!("../../migrations/0002_counts.sql")),
        M::up(include_str!("../../migrations/0003_body.sql")),
        M::up(include_str!("../../migrations/0004_source_keys.sql")),
        M::up(include_str!("../../migrations/0005_dead_kind.sql")),
        M::up(include_str!("../../migrations/0006_audit.sql")),
        M::up(include_str!("../../migrations/0007_call_journal.sql")),
        M::up(include_str!("../../migrations/0008_procedure_duration.sql")),
        M::up(include_str!("../../migrations/0009_body_dict.sql")),
        M::up(include_str!("../../migrations/0010_workers.sql")),
        M::up(include_str!("../../migrations/0011_personal_data.sql")),
        M::up(include_str!("../../migrations/0012_sources.sql")),
        M::up(include_str!("../../migrations/0013_ack_times.sql")),
    ])
}

/// The daemon's read-write handle: one connection, one writer at a time.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    codec: Arc<body::Codec>,
    digest: DigestKey,
}

/// Where the database records the ids of the keys its bodies are sealed with (comma-separated).
pub const SEALED_WITH: &str = "sealed_with";
/// A full pass asked of the reconciler (`dvc-sync reconcile`, `retry`, a dossier waiting for its
/// source): the time of the request.
pub(crate) const RECONCILE_REQUESTED: &str = "reconcile_requested";
/// The key every stored body is sealed with, once that is so (a database sealed from its first
/// body, or after `rekey`).
pub const SEALED_ALL: &str = "sealed_all";
/// The id of the key the running daemon seals with (empty for none), written at its start, for
/// `rekey` to check.
pub(crate) const DAEMON_KEY: &str = "daemon_key_id";

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `synchronous = FULL`: what the daemon always uses (see the module comment).
    Full,
    /// `synchronous = OFF` and `locking_mode = EXCLUSIVE`: only for the simulation, which
    /// models crashes of the process (at await points, never inside a transaction), not of
    /// the machine, with one connection at a time on a memory-backed file.
    SimulationOnly,
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, Durability::Full, &Keys::default())
    }

    /// Opens with the configured keys: refused (with the reason) when the database holds
    /// bodies sealed with a key that is not among them.
    pub fn open_keyed(path: &Path, keys: &Keys) -> Result<Store, StoreError> {
        Self::open_with(path, Durability::Full, keys)
    }

    pub(crate) fn open_with(path: &Path, durability: Durability, keys: &Keys) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            // A missing directory is a typo to report, not a place to start anew in (the
            // daemon creates it only when told: store.create_dir).
            return Err(StoreError::NoDirectory(dir.to_path_buf()));
        }
        make_private(path);
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(open_err)?;
        // Before anything is written, even the journal mode in the file's header.
        refuse_foreign(&conn, path)?;
        // Every statement the daemon runs stays prepared (rusqlite keeps 16 by default, fewer
        // than the engine uses, which would parse statements again and again).
        conn.set_prepared_statement_cache_capacity(128);
        // The query planner's stability guarantee: a prepared statement's plan does not depend
        // on the values bound to it. Without it SQLite recompiles a cached statement whenever
        // a parameter it looked at changes (a `LIMIT ?`, a range the statistics could weigh),
        // as the audit's queries do at every call.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(open_err)?;
        if durability == Durability::SimulationOnly {
            // Before WAL is entered, so that the WAL index lives in memory, without locks.
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(open_err)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::SimulationOnly => "OFF",
        };
        conn.pragma_update(None, "synchronous", synchronous).map_err(open_err)?;

        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        // What is deleted or rewritten (a payload minimised, a body sealed, a dossier's old
        // version) is overwritten with zeros, not left in free space for a copy to find.
        conn.pragma_update(None, "secure_delete", "ON").map_err(open_err)?;
        // SQLite's default page cache, 2 MiB, said explicitly: a larger one saves no measurable
        // CPU (the pages it would keep are in the operating system's cache anyway) and costs
        // the daemon's memory.
        conn.pragma_update(None, "cache_size", -2_048).map_err(open_err)?;
        // Integrity first: a corrupt file must stop the daemon with a clear message, not be
        // written to.
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(open_err)?;
        if check != "ok" {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(format!("integrity check failed: {check}")),
                ),
            });
        }
        let before = schema_version(&conn).map_err(open_err)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate { path: path.to_path_buf(), source })?;
        if before < SCHEMA_VERSION {
            tracing::info!(event = "database_migrated", db = %path.display(), from = before, to = SCHEMA_VERSION);
        }
        check_keys(&conn, path, keys)?;
        let codec = body::Codec::load(&conn, keys).map_err(open_err)?;
        body::register(&conn, Arc::clone(&codec)).map_err(open_err)?;
        let digest = match &keys.digest {
            Some(d) => d.clone(),
            None => DigestKey::beside(path)?,
        };
        Ok(Store { conn: Mutex::new(conn), path: path.to_path_buf(), codec, digest })
    }

    /// The key of the digests that replace personal values.
    pub(crate) fn digest_key(&self) -> &DigestKey {
        &self.digest
    }

    /// Whether a stored body is sealed with the current key.
    pub(crate) fn sealed_current(&self, stored: rusqlite::types::ValueRef) -> bool {
        self.codec.sealed_current(stored)
    }

    /// A stored dictionary, opened (for `rekey`).
    pub(crate) fn open_dictionary(&self, stored: &[u8]) -> Result<body::Dictionary, body::BodyError> {
        self.codec.open_dictionary(stored)
    }

    /// Seals a stored dictionary again with the current key (for `rekey`).
    pub(crate) fn seal_dictionary(&self, dictionary: &[u8]) -> Result<Vec<u8>, body::BodyError> {
        self.codec.seal_dictionary(dictionary)
    }

    /// Trains the dictionary dossier bodies are compressed with, once enough are stored
    /// (`store::body`); whether it did.
    pub(crate) fn train_body_dictionary(&self) -> Result<bool, StoreError> {
        if !self.codec.wants_training() {
            return Ok(false);
        }
        let codec = Arc::clone(&self.codec);
        let trained = self.write(|tx| codec.train(tx));
        match trained {
            // Used only once its row is committed: a body must never name a dictionary the
            // database does not hold.
            Ok(Some((id, dictionary))) => {
                self.codec.adopt(id, &dictionary)?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                // Not tried again by this process: bodies stay compressed without one.
                self.codec.give_up_training();
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A dossier body as it is stored (what `body_pack` gives in SQL), packed by the caller
    /// outside any transaction.
    pub(crate) fn pack(&self, text: &str) -> Result<Vec<u8>, body::BodyError> {
        self.codec.pack(text)
    }

    /// A stored body as text (what `body_text` gives in SQL), for callers that select the
    /// column as it is and decide in Rust whether to read it.
    pub(crate) fn body_text(
        &self,
        stored: rusqlite::types::ValueRef,
    ) -> Result<Option<String>, body::BodyError> {
        self.codec.text(stored)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection cannot leave a transaction open: rusqlite
        // rolls back on drop. The connection itself stays usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the connection (reads, or single statements).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        Ok(f(&self.lock())?)
    }

    /// Runs `f` in one transaction (`BEGIN IMMEDIATE`: this writer takes the write lock up
    /// front, so a concurrent `dvc-sync retry` waits instead of deadlocking on an upgrade),
    /// committed if it returns Ok, rolled back otherwise. The statements are cached: parsing
    /// BEGIN and COMMIT anew for every transaction was a measurable share of the work.
    pub fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        /// Rolls back unless committed, even if `f` panics.
        struct Open<'a>(&'a Connection, bool);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let _ = self.0.prepare_cached("ROLLBACK").and_then(|mut s| s.execute([]));
                }
            }
        }
        let conn = self.lock();
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let mut open = Open(&conn, false);
        let value = f(&conn)?;
        conn.prepare_cached("COMMIT")?.execute([])?;
        open.1 = true;
        drop(open);
        Ok(value)
    }
}

/// The database's sealing keys against the configured ones: every key it names must be
/// loaded (else the daemon would read garbage or nothing), and the current key is recorded
/// before anything is sealed with it.
fn check_keys(conn: &Connection, path: &Path, keys: &Keys) -> Result<(), StoreError> {
    let recorded = meta_get(conn, SEALED_WITH)?.unwrap_or_default();
    let ids: Vec<&str> = recorded.split(',').filter(|s| !s.is_empty()).collect();
    let missing: Vec<&str> = ids.iter().copied().filter(|id| keys.by_id(id).is_none()).collect();
    if !ids.is_empty() && keys.sealing.is_none() && missing.is_empty() {
        return Err(StoreError::Key(format!(
            "{} holds dossier bodies sealed with key {}; store.key_file is not set, and new bodies would be stored \
             unsealed beside them. Set store.key_file",
            path.display(),
            ids.join(", ")
        )));
    }
    if !missing.is_empty() {
        let given = match &keys.sealing {
            None => "store.key_file is not set".to_owned(),
            Some(k) => format!("store.key_file holds key {}, not that one", k.id()),
        };
        return Err(StoreError::Key(format!(
            "{} holds dossier bodies sealed with key {}; {given}. Set store.key_file to the key this database was \
             sealed with (during a rotation, the old one as store.previous_key_file)",
            path.display(),
            missing.join(", ")
        )));
    }
    if let Some(key) = &keys.sealing
        && !ids.contains(&key.id().as_str())
    {
        let mut all = ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        all.push(key.id());
        meta_set(conn, SEALED_WITH, Some(&all.join(",")))?;
        // Sealed from the first body: nothing for `rekey` to do.
        let empty: bool = conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM body) AND NOT EXISTS (SELECT 1 FROM quarantine WHERE record != '')",
            [],
            |r| r.get(0),
        )?;
        if empty {
            meta_set(conn, SEALED_ALL, Some(&key.id()))?;
        }
    }
    if let Some(key) = &keys.sealing
        && meta_get(conn, SEALED_ALL)?.as_deref() != Some(key.id().as_str())
    {
        tracing::warn!(
            event = "bodies_not_all_sealed",
            key = %key.id(),
            "bodies stored before store.key_file was set are not sealed yet: run `dvc-sync rekey`"
        );
    }
    Ok(())
}

/// The database holds citizens' personal data (Nghị định 13/2023): the file is created 0600
/// whatever the umask, and an existing one (or its WAL and shared-memory files) readable by
/// others is made private. SQLite gives the WAL and the shared-memory file the database file's
/// mode. Failures are left for SQLite to report when it opens the file.
fn make_private(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Opens the database read-only, for `status`: works while the daemon runs, and never
/// creates or migrates anything.
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    if !path.exists() {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("no such file".into()),
            ),
        });
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(2)).map_err(open_err)?;
    Ok(conn)
}

/// Gives a connection from [`open_read_only`] the functions that read dossier bodies
/// (`body_text`), with the database's dictionaries as they are now. Only the commands that
/// read bodies need it; `status` never touches the database beyond its counts.
pub(crate) fn read_bodies(conn: &Connection, keys: &Keys) -> rusqlite::Result<()> {
    body::register(conn, body::Codec::load(conn, keys)?)
}

pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

pub fn meta_set(conn: &Connection, key: &str, value: Option<&str>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Adds `by` to an integer kept in meta.
pub(crate) fn meta_add(conn: &Connection, key: &str, by: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = CAST(COALESCE(CAST(value AS INTEGER), 0) + ?2 AS TEXT)",
        params![key, by],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_2_database_keeps_every_dossier_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations().to_version(&mut conn, 2).unwrap();
            conn.execute(
                "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload, payload_hash, status, procedure, history, history_len, acked_history)
                 VALUES ('H1', 3, 0, 0, '{\"MaHoSo\":\"H1\"}', 7, 2, 'p', '[{\"TrangThai\":\"2\"}]', 1, 1)",
                [],
            )
            .unwrap();
            conn.execute("INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at) VALUES ('H1', 0, 0)", [])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.read(schema_version).unwrap(), SCHEMA_VERSION);
        let row: (String, String, i64, i64) = store
            .read(|c| {
                c.query_row(
                    "SELECT body_text(b.payload), body_text(b.history), d.version, d.acked_history FROM dossier d JOIN body b USING (mahoso)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
            })
            .unwrap();
        assert_eq!(row, ("{\"MaHoSo\":\"H1\"}".into(), "[{\"TrangThai\":\"2\"}]".into(), 3, 1));
        let outbox: i64 = store
            .read(|c| c.query_row("SELECT n FROM counts WHERE name = 'outbox'", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(outbox, 1);
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(store.read(schema_version).unwrap(), SCHEMA_VERSION);
    }

    /// A database made by the release before named sources (schema 11), with a dossier, a
    /// quarantined record and the poller's cursors, opens and goes on as the source
    /// `provincial`: its rows belong to it, its cursors are where that source reads them.
    #[test]
    fn a_database_from_before_named_sources_belongs_to_the_source_provincial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations().to_version(&mut conn, 11).unwrap();
            conn.execute_batch(
                "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure, history_len)
                 VALUES ('000.00.15.H58-260301-0001', 3, 1, 1, 7, 4, '1.001193', 2);
                 INSERT INTO quarantine (key, mahoso, version, reason, record, first_seen_at, last_seen_at)
                 VALUES ('000.00.15.H58-260301-0002', '000.00.15.H58-260301-0002', 1, 'bad', X'', 1, 1);
                 INSERT INTO meta (key, value) VALUES ('head_cursor', '1772329800000000|000.00.15.H58-260301-0001');",
            )
            .unwrap();
            assert_eq!(schema_version(&conn).unwrap(), 11);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.read(schema_version).unwrap(), SCHEMA_VERSION);
        let owners: Vec<String> = store
            .read(|c| {
                c.prepare("SELECT source FROM dossier UNION ALL SELECT source FROM quarantine")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .unwrap();
        assert_eq!(owners, ["provincial", "provincial"]);
        let key = state::source_key(crate::domain::ownership::DEFAULT_SOURCE, state::HEAD);
        let cursor = store.read(|c| state::read_cursor(c, &key)).unwrap().expect("the cursor where it was");
        assert_eq!(cursor.id, "000.00.15.H58-260301-0001");
        drop(store);
        let conn = open_read_only(&path).unwrap();
        let thresholds = crate::status::Thresholds {
            stale_heartbeat: std::time::Duration::from_secs(60),
            outbox_age: std::time::Duration::from_secs(900),
            audit_cycle: None,
            sources: vec![("provincial".into(), "http".into())],
        };
        let report = crate::status::report(&conn, &path, jiff::Timestamp::now(), &thresholds).unwrap();
        let sources: Vec<(&str, u64, bool)> =
            report.sources.iter().map(|s| (s.name.as_str(), s.dossiers, s.retired)).collect();
        assert_eq!(sources, [("provincial", 2, false)]);
        assert_eq!(report.dossiers.total, 2);
        assert_eq!(report.poll.cursor.map(|c| c.id).as_deref(), Some("000.00.15.H58-260301-0001"));
    }

    #[test]
    fn open_creates_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        prepare_dir(&path, true).unwrap();
        let store = Store::open(&path).unwrap();
        store.write(|tx| meta_set(tx, "k", Some("v"))).unwrap();
        store.write(|tx| meta_add(tx, "n", 2)).unwrap();
        store.write(|tx| meta_add(tx, "n", 3)).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.read(|c| meta_get(c, "k")).unwrap().as_deref(), Some("v"));
        assert_eq!(store.read(|c| meta_get(c, "n")).unwrap().as_deref(), Some("5"));
        let mode: String = store.read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).unwrap();
        assert_eq!(mode, "wal");
        let ro = open_read_only(&path).unwrap();
        assert_eq!(meta_get(&ro, "k").unwrap().as_deref(), Some("v"));
        assert!(ro.execute("DELETE FROM meta", []).is_err(), "read-only");
    }

    #[test]
    fn counts_follow_inserts_deletes_and_upserts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let counts = |store: &Store| -> Vec<(String, i64)> {
            store
                .read(|c| {
                    let mut stmt = c.prepare("SELECT name, n FROM counts ORDER BY name")?;
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
                })
                .unwrap()
        };
        let real = |store: &Store| -> Vec<(String, i64)> {
            store
                .read(|c| {
                    let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
                    Ok(vec![
                        ("dead".into(), q("SELECT COUNT(*) FROM dead")?),
                        ("dossier".into(), q("SELECT COUNT(*) FROM dossier")?),
                        ("minimised".into(), q("SELECT COUNT(*) FROM dossier WHERE minimised_at IS NOT NULL")?),
                        ("outbox".into(), q("SELECT COUNT(*) FROM outbox")?),
                        ("quarantine".into(), q("SELECT COUNT(*) FROM quarantine")?),
                        ("retrying".into(), q("SELECT COUNT(*) FROM outbox WHERE attempts > 0")?),
                        (
                            "verified".into(),
                            q("SELECT COUNT(*) FROM dossier
                               WHERE acked_at IS NOT NULL AND verified_at IS NOT NULL AND verified_at >= acked_at")?,
                        ),
                    ])
                })
                .unwrap()
        };
        store
            .write(|tx| {
                for i in 0..5 {
                    tx.execute(
                        "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure, history_len)
                         VALUES (?1, 1, 0, 0, 0, 2, 'p', 0)
                         ON CONFLICT(mahoso) DO UPDATE SET version = version + 1",
                        [format!("d{}", i % 3)],
                    )?;
                }
                tx.execute("INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at) VALUES ('d0', 0, 0), ('d1', 0, 0)", [])?;
                tx.execute("INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at) VALUES ('d0', 0, 0) ON CONFLICT DO NOTHING", [])?;
                tx.execute("UPDATE outbox SET attempts = 2 WHERE mahoso = 'd0'", [])?;
                tx.execute("UPDATE outbox SET attempts = 3 WHERE mahoso = 'd0'", [])?;
                tx.execute("INSERT INTO dead (mahoso, dead_at, attempts, reason) VALUES ('d2', 0, 1, 'x')", [])?;
                tx.execute(
                    "INSERT INTO dead (mahoso, dead_at, attempts, reason) VALUES ('d2', 0, 1, 'y') ON CONFLICT(mahoso) DO UPDATE SET reason = excluded.reason",
                    [],
                )?;
                tx.execute("INSERT INTO quarantine (key, reason, record, first_seen_at, last_seen_at) VALUES ('q', 'r', '{}', 0, 0)", [])?;
                // Verified, then acknowledged again (no longer verified), then verified again.
                tx.execute("UPDATE dossier SET acked_at = 10, verified_at = 20", [])?;
                tx.execute("UPDATE dossier SET acked_at = 30 WHERE mahoso = 'd0'", [])?;
                tx.execute("UPDATE dossier SET verified_at = NULL WHERE mahoso = 'd1'", [])?;
                tx.execute("UPDATE dossier SET verified_at = 25 WHERE mahoso = 'd2'", [])?;
                // Minimised twice (counted once), then a new version in clear.
                tx.execute("UPDATE dossier SET minimised_at = 5 WHERE mahoso IN ('d0', 'd1')", [])?;
                tx.execute("UPDATE dossier SET minimised_at = 6 WHERE mahoso = 'd0'", [])?;
                tx.execute("UPDATE dossier SET minimised_at = NULL WHERE mahoso = 'd1'", [])?;
                Ok(())
            })
            .unwrap();
        assert_eq!(counts(&store), real(&store));
        store
            .write(|tx| {
                tx.execute("DELETE FROM outbox WHERE mahoso = 'd0'", [])?;
                tx.execute("UPDATE outbox SET attempts = 1 WHERE mahoso = 'd1'", [])?;
                tx.execute("UPDATE outbox SET attempts = 0 WHERE mahoso = 'd1'", [])?;
                tx.execute("DELETE FROM dead", [])?;
                tx.execute("DELETE FROM quarantine", [])?;
                tx.execute("UPDATE dossier SET verified_at = 40 WHERE mahoso = 'd0'", [])?;
                tx.execute("DELETE FROM dead", [])?;
                tx.execute("DELETE FROM body", [])?;
                tx.execute("DELETE FROM dossier WHERE mahoso = 'd2'", [])?;
                Ok(())
            })
            .unwrap();
        assert_eq!(counts(&store), real(&store));
    }

    #[test]
    fn the_database_and_its_wal_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask only sets this process's file creation mask; 022 is the usual default,
        // under which every file a test creates is still readable by its owner.
        unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        store.write(|tx| meta_set(tx, "k", Some("v"))).unwrap();
        let mode =
            |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            assert_eq!(mode(name), 0o600, "{name}");
        }
        drop(store);
        // One made readable by others (copied with cp, say) is made private again on open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = Store::open(&path).unwrap();
        assert_eq!(mode("state.db"), 0o600);
    }

    #[test]
    fn another_programs_database_is_refused_even_with_a_schema_version_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("theirs.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE customers (id INTEGER); PRAGMA user_version = 3;").unwrap();
        drop(conn);
        let err = Store::open(&path).err().expect("refused").to_string();
        assert!(err.contains("not a dvc-sync database") && err.contains("customers"), "{err}");
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete", "its header untouched");
    }

    #[test]
    fn a_corrupt_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = Store::open(&path).err().expect("refused").to_string();
        assert!(err.contains("state.db"), "{err}");
    }
}
