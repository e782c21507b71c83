//! Real database servers for the SQL source's tests and benchmark: Debian's MariaDB and
//! PostgreSQL, each started as an unprivileged instance in a temporary directory, on a free
//! loopback port, and killed when dropped (or when the test process dies). When the packages
//! are missing and the tests run as root, they are installed first (apt-get), once per
//! machine; otherwise the test stops and says which packages to install.
#![allow(dead_code)]

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const READER: &str = "dvcsync";
pub const READER_PASSWORD: &str = "reader-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MariaDb,
    Postgres,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::MariaDb => "mariadb",
            Kind::Postgres => "postgres",
        }
    }

    pub fn scheme(self) -> &'static str {
        match self {
            Kind::MariaDb => "mysql",
            Kind::Postgres => "postgres",
        }
    }
}

pub struct DbServer {
    pub kind: Kind,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<(String, String)>,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn postgres_bin(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn mariadb_bins() -> Option<(PathBuf, PathBuf)> {
    Some((
        find(&["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"])?,
        find(&["/usr/sbin/mariadbd", "/usr/sbin/mysqld"])?,
    ))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs Debian's mariadb-server and postgresql when missing.
fn ensure_installed() {
    apt_install(&["mariadb-server", "postgresql"], "the SQL source's tests", || {
        mariadb_bins().is_some() && postgres_bin("postgres").is_some()
    });
}

/// Installs Debian `packages` for `what` (the SQL servers here; Chromium for the page's test) unless `installed()` (as root, once per machine,
/// serialised by a lock file between test processes); otherwise stops, saying what to install.
pub fn apt_install(packages: &[&str], what: &str, installed: impl Fn() -> bool) {
    if installed() {
        return;
    }
    let root = is_root();
    let list = packages.join(" ");
    assert!(
        root && Path::new("/usr/bin/apt-get").exists(),
        "{what} need Debian's {list}: apt-get install {list}"
    );
    let lock = std::fs::File::create("/tmp/dvc-sync-test-apt.lock").expect("lock file");
    // SAFETY: flock on an open descriptor we own.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if installed() {
        return;
    }
    eprintln!("installing {list} (apt-get) for {what}");
    let install: Vec<&str> = ["install", "-y", "-qq"].into_iter().chain(packages.iter().copied()).collect();
    for args in [&["update", "-qq"][..], &install] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .expect("apt-get");
        assert!(status.success(), "apt-get {args:?} failed");
    }
}
/// (uid, gid) of a system account, for running the servers unprivileged under root.
fn account(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn chown_tree(path: &Path, owner: (u32, u32)) {
    for entry in walk(path) {
        let _ = std::os::unix::fs::chown(&entry, Some(owner.0), Some(owner.1));
    }
}

fn walk(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

/// Runs `cmd` as `owner` when root (servers refuse root, and tests should not need it), and
/// kills it if this process dies.
fn unprivileged(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: prctl is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

impl DbServer {
    pub fn start(kind: Kind) -> DbServer {
        Self::start_with(kind, &[])
    }

    /// A server with extra settings (`ssl = on`, ...).
    pub fn start_with(kind: Kind, extra: &[(&str, &str)]) -> DbServer {
        ensure_installed();
        let dir = tempfile::Builder::new()
            .prefix(&format!("dvc-sync-{}-", kind.name()))
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut server = DbServer {
            kind,
            port: free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        server.init();
        server.launch();
        server
    }

    fn owner(&self) -> Option<(u32, u32)> {
        if !is_root() {
            return None;
        }
        match self.kind {
            Kind::MariaDb => account("mysql"),
            Kind::Postgres => account("postgres"),
        }
        .or_else(|| account("nobody"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn init(&self) {
        let owner = self.owner();
        let data = self.data();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(self.tmp()).unwrap();
        if let Some(o) = owner {
            chown_tree(self.dir.path(), o);
        }
        let log = std::fs::File::create(self.dir.path().join("init.log")).unwrap();
        let status = match self.kind {
            Kind::MariaDb => {
                let (install, _) = mariadb_bins().unwrap();
                let mut cmd = Command::new(install);
                // Its own temporary directory: two installs at once in /tmp collide.
                cmd.args([
                    "--no-defaults",
                    &format!("--datadir={}", data.display()),
                    &format!("--tmpdir={}", self.tmp().display()),
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]);
                if let Some((uid, _)) = owner {
                    // The installer drops to this user itself.
                    cmd.arg(format!("--user={}", user_name(uid)));
                }
                cmd.stdout(log.try_clone().unwrap()).stderr(log).status()
            }
            Kind::Postgres => {
                let pwfile = self.dir.path().join("pwfile");
                std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
                if let Some(o) = owner {
                    chown_tree(&pwfile, o);
                }
                let mut cmd = Command::new(postgres_bin("initdb").unwrap());
                cmd.args(["-D"])
                    .arg(&data)
                    .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"])
                    .args(["--locale=C.UTF-8", "--no-sync"])
                    .arg(format!("--pwfile={}", pwfile.display()));
                unprivileged(&mut cmd, owner).stdout(log.try_clone().unwrap()).stderr(log).status()
            }
        };
        assert!(
            status.expect("run the installer").success(),
            "{} initialisation failed:\n{}",
            self.kind.name(),
            std::fs::read_to_string(self.dir.path().join("init.log")).unwrap_or_default()
        );
    }

    fn launch(&mut self) {
        let owner = self.owner();
        let data = self.data();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut cmd = match self.kind {
            Kind::MariaDb => {
                let (_, server) = mariadb_bins().unwrap();
                let mut cmd = Command::new(server);
                cmd.args([
                    "--no-defaults".to_owned(),
                    format!("--datadir={}", data.display()),
                    format!("--tmpdir={}", self.tmp().display()),
                    format!("--port={}", self.port),
                    "--bind-address=127.0.0.1".to_owned(),
                    format!("--socket={}", self.dir.path().join("mysqld.sock").display()),
                    format!("--pid-file={}", self.dir.path().join("mysqld.pid").display()),
                    "--skip-name-resolve".to_owned(),
                    "--innodb-buffer-pool-size=256M".to_owned(),
                    "--innodb-log-file-size=64M".to_owned(),
                    "--innodb-flush-log-at-trx-commit=2".to_owned(),
                    "--max-connections=300".to_owned(),
                    "--character-set-server=utf8mb4".to_owned(),
                    "--collation-server=utf8mb4_unicode_ci".to_owned(),
                ]);
                for (k, v) in &self.extra {
                    cmd.arg(format!("--{k}={v}"));
                }
                if let Some((uid, _)) = owner {
                    cmd.arg(format!("--user={}", user_name(uid)));
                }
                // mariadbd drops privileges itself; only the parent-death signal is set here.
                unprivileged(&mut cmd, None);
                cmd
            }
            Kind::Postgres => {
                let mut cmd = Command::new(postgres_bin("postgres").unwrap());
                cmd.arg("-D").arg(&data).args(["-p", &self.port.to_string()]);
                let settings = [
                    ("listen_addresses", "127.0.0.1".to_owned()),
                    ("unix_socket_directories", self.dir.path().display().to_string()),
                    ("fsync", "off".to_owned()),
                    ("max_connections", "200".to_owned()),
                    ("shared_buffers", "128MB".to_owned()),
                ];
                for (k, v) in
                    settings.iter().map(|(k, v)| (k.to_string(), v.clone())).chain(self.extra.clone())
                {
                    cmd.args(["-c", &format!("{k}={v}")]);
                }
                unprivileged(&mut cmd, owner);
                cmd
            }
        };
        let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start the server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited at start ({status}):\n{}", self.kind.name(), self.log_tail());
            }
            let ready = match self.kind {
                Kind::MariaDb => self.admin_sql("SELECT 1").is_ok(),
                Kind::Postgres => self.admin_sql("SELECT 1").is_ok(),
            };
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "{} did not start:\n{}", self.kind.name(), self.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Runs SQL as the administrator in database `db`, panicking with the server's words.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.admin_sql_in(db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs SQL as the administrator with the server's own client, over the local socket.
    pub fn admin_sql(&self, sql: &str) -> Result<String, String> {
        self.admin_sql_in(if self.kind == Kind::MariaDb { "" } else { "postgres" }, sql)
    }

    /// The same, in database `db`.
    pub fn admin_sql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = match self.kind {
            Kind::MariaDb => {
                let client = find(&["/usr/bin/mariadb", "/usr/bin/mysql"]).expect("mariadb client");
                Command::new(client)
                    .args(["--no-defaults", "-uroot", "-N", "-B"])
                    .arg(format!("--socket={}", self.dir.path().join("mysqld.sock").display()))
                    .args(["-e", sql])
                    .args((!db.is_empty()).then_some(db))
                    .output()
            }
            Kind::Postgres => {
                let client = postgres_bin("psql").or_else(|| find(&["/usr/bin/psql"])).expect("psql");
                let mut cmd = Command::new(client);
                cmd.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
                    .arg(self.dir.path())
                    .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]);
                unprivileged(&mut cmd, self.owner()).output()
            }
        }
        .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Creates database `name` (UTF-8) and returns the administrator's URL for it.
    pub fn create_database(&self, name: &str) -> String {
        let sql = match self.kind {
            Kind::MariaDb => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
            Kind::Postgres => format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"),
        };
        self.admin_sql(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        self.admin_url(name)
    }

    pub fn admin_url(&self, database: &str) -> String {
        match self.kind {
            Kind::MariaDb => format!("mysql://root@127.0.0.1:{}/{database}", self.port),
            Kind::Postgres => {
                format!("postgres://postgres:{ADMIN_PASSWORD}@127.0.0.1:{}/{database}", self.port)
            }
        }
    }

    /// The SELECT-only account's URL (see `Province::grant_reader`).
    pub fn reader_url(&self, database: &str) -> String {
        format!("{}://{READER}:{READER_PASSWORD}@127.0.0.1:{}/{database}", self.kind.scheme(), self.port)
    }

    /// Stops the server (SIGTERM, then wait): a restart is `stop` then `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns static storage or null; read at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return uid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }.to_string_lossy().into_owned()
}

impl Drop for DbServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test per database of an `async fn(Kind)`: `on_both!(name => body)` makes
/// `name::mariadb` and `name::postgres`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident => $body:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$body(super::Kind::MariaDb).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::Kind::Postgres).await;
            }
        }
    )*};
}
