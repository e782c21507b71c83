//! The SQL source: the one-stop system's own database (MySQL/MariaDB, PostgreSQL), read
//! through a profile ([`profile`]) with an account that may only SELECT.
//!
//! A page is read in one read-only, repeatable-read transaction, so that a dossier and its
//! history come from the same moment: the `changes` query gives the positions, then the
//! `dossiers` and `history` queries the records of the ids it named. Each record carries a
//! version that is this source's own read counter (reads go one at a time, so a later read
//! always saw at least as much), and a fingerprint of its content, by which the engine
//! recognises a record read again unchanged. Everything after that is the engine's.
//!
//! A third driver (SQL Server) is another [`Pool`] variant with its placeholders in
//! [`profile::Query::render`] and its value decoding in [`value`]; nothing else changes.

pub mod profile;
pub(crate) mod value;

use std::{
    collections::HashMap,
    str::FromStr,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use jiff::{Timestamp, tz::TimeZone};
use serde_json::{Map, Value};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions, Database, Executor, Row,
    mysql::{MySqlConnectOptions, MySqlPool, MySqlSslMode},
    pool::PoolOptions,
    postgres::{PgConnectOptions, PgPool, PgSslMode},
};

pub use self::profile::{Dialect, IdKind, Profile};
use self::{profile::Param, value::Cell};
use crate::{
    config::{ProvincialConfig, SqlConfig},
    domain::{dates::format_rfc3339_vn, stable_hash},
    sync::ports::{Cursor, Page, Record, Source, SourceError},
};

/// The record fields of the provincial listing API, as columns may name them in any case.
const DOSSIER_FIELDS: &[&str] = &[
    "MaHoSo",
    "MaTTHC",
    "TenTTHC",
    "MaLinhVuc",
    "TenLinhVuc",
    "KenhThucHien",
    "LoaiDoiTuong",
    "ChuHoSo",
    "SoGiayToChuHoSo",
    "Email",
    "SoDienThoai",
    "TrichYeuHoSo",
    "NgayTiepNhan",
    "NgayHenTra",
    "NgayTra",
    "NgayKetThucXuLy",
    "TrangThai",
    "TrangThaiHoSo",
    "HinhThuc",
    "DonViXuLy",
    // The scalar fields the 766 indicators read (domain::scoring); the lists need queries of
    // their own, which profiles do not have yet (docs/sql-source.md).
    "DuocThanhToanTrucTuyen",
    "HoSoCoThanhPhanSoHoa",
    "NgayNopHoSo",
];

const ENTRY_FIELDS: &[&str] = &[
    "NguoiXuLy",
    "ChucDanh",
    "PhongBanXuLy",
    "ThoiDiemXuLy",
    "NoiDungXuLy",
    "TrangThai",
    "TrangThaiHoSo",
    "NgayBatDau",
    "NgayKetThucTheoQuyDinh",
];

/// The column's record field name: a known field whatever its case, else the column's name.
fn field_name(column: &str, known: &[&'static str]) -> String {
    known
        .iter()
        .find(|f| f.eq_ignore_ascii_case(column))
        .map_or_else(|| column.to_owned(), |f| (*f).to_owned())
}

/// Change rows asked for per dossier wanted on a page: a dossier row and its actions' rows
/// (OpenCPS's dossiers have 6 or 7 actions on average).
const CHANGE_ROWS_PER_DOSSIER: usize = 8;

/// The connections, by database family.
#[derive(Debug, Clone)]
enum Pool {
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// One result row: (column name in lower case, value).
type Cells = Vec<(String, Cell)>;

fn cell<'a>(row: &'a Cells, name: &str) -> Option<&'a Cell> {
    row.iter().find(|(n, _)| n == name).map(|(_, c)| c)
}

/// What check-source prints about the connection.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerInfo {
    pub server: String,
    pub user: String,
    pub tls: String,
    pub time_zone: String,
    /// The indexes the profile asks for, each found or not.
    pub indexes: Vec<(String, bool)>,
}

/// A table the profile reads that the account cannot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TableProblem {
    pub table: String,
    /// It does not exist (else: the account may not read it).
    pub missing: bool,
    /// The profile's GRANT for it.
    pub grant: Option<String>,
}

impl std::fmt::Display for TableProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.missing {
            write!(f, "table {} does not exist in this database (is it the one-stop system's?)", self.table)
        } else {
            write!(f, "the account may not read {}", self.table)?;
            match &self.grant {
                Some(g) => write!(f, "; ask the DBA to run: {g}"),
                None => write!(f, "; ask the DBA to grant SELECT on it"),
            }
        }
    }
}

/// A value to bind.
#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

/// The SQL source.
pub struct SqlSource {
    pool: Pool,
    dialect: Dialect,
    profile: Profile,
    tz: TimeZone,
    /// Bound to `:document_url`.
    document_url: String,
    /// The last read's version: reads go one at a time (`turn`), each with a larger number.
    last_version: AtomicI64,
    turn: tokio::sync::Mutex<()>,
    /// The whole of one page's queries.
    timeout: Duration,
    /// Host, port and database, for messages (never the URL: it holds the password).
    target: String,
}

/// Whether the URL names its TLS mode itself (then it is honoured as given).
fn url_sets_tls(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query.split('&').any(|kv| {
        let key = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
        matches!(key.as_str(), "ssl-mode" | "sslmode" | "ssl_mode")
    })
}

fn is_loopback(host: &str) -> bool {
    host.is_empty()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What check-source asks each database family about itself.
struct InfoSql {
    /// The server's version, the account, the session's time zone.
    server: &'static str,
    /// A row when the session is encrypted: (name, cipher).
    tls: &'static str,
    /// How many indexes of table `$1` lead with column `$2` (as `column_pattern` gives it).
    index: &'static str,
    column_pattern: fn(&str) -> String,
}

const MYSQL_INFO: InfoSql = InfoSql {
    server: "SELECT VERSION(), CURRENT_USER(), @@session.time_zone",
    tls: "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
    index: "SELECT COUNT(*) FROM information_schema.STATISTICS
             WHERE TABLE_SCHEMA = DATABASE() AND LOWER(TABLE_NAME) = ? AND LOWER(COLUMN_NAME) = ? AND SEQ_IN_INDEX = 1",
    column_pattern: str::to_owned,
};

const POSTGRES_INFO: InfoSql = InfoSql {
    server: "SELECT version(), current_user::text, current_setting('TimeZone')",
    tls: "SELECT 'Ssl_cipher', cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
    index: "SELECT COUNT(*) FROM pg_indexes WHERE lower(tablename) = $1 AND lower(indexdef) LIKE $2",
    column_pattern: |column| format!("%({column}%"),
};

/// Host, port and database, as messages name the database (never with the credentials).
fn describe(host: &str, port: u16, database: Option<&str>) -> String {
    format!("{host}:{port}/{}", database.unwrap_or_default())
}

fn connect_error(target: &str, e: &dyn std::fmt::Display) -> String {
    format!("the database at {target} is not usable: {e}")
}

impl SqlSource {
    /// The source of `provincial` (kind = "sql"). Connects lazily: the daemon starts, and
    /// reports, while the database is down.
    pub fn new(provincial: &ProvincialConfig) -> anyhow::Result<SqlSource> {
        let cfg = provincial.sql.as_ref().ok_or_else(|| anyhow::anyhow!("provincial.kind is not \"sql\""))?;
        let url = cfg.database_url.expose().replacen("mariadb://", "mysql://", 1);
        let dialect = Dialect::of_url(&url).ok_or_else(|| {
            anyhow::anyhow!("provincial.database_url must start with mysql:// or postgres://")
        })?;
        let profile = Profile::load(&cfg.profile, dialect)?;
        let explicit_tls = url_sets_tls(&url);
        let ca = provincial.http.ca_file.as_deref();
        let statement_ms = cfg.statement_timeout.as_millis().max(1);
        let (pool, target) = match dialect {
            Dialect::MySql => {
                let mut opts = MySqlConnectOptions::from_str(&url)
                    .map_err(|e| anyhow::anyhow!("provincial.database_url is not a usable MySQL URL: {e}"))?;
                let target = describe(opts.get_host(), opts.get_port(), opts.get_database());
                if !explicit_tls && !is_loopback(opts.get_host()) {
                    opts = opts.ssl_mode(MySqlSslMode::VerifyIdentity);
                }
                if let Some(ca) = ca {
                    opts = opts.ssl_ca(ca);
                }
                let offset = cfg.timezone.to_offset(Timestamp::now()).seconds();
                let hhmm = format!(
                    "{}{:02}:{:02}",
                    if offset < 0 { '-' } else { '+' },
                    offset.abs() / 3600,
                    offset.abs() % 3600 / 60
                );
                opts = opts
                    // TIMESTAMP columns come in the zone's local time, like DATETIME ones.
                    .timezone(Some(hhmm))
                    .log_statements(log::LevelFilter::Off)
                    .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(10));
                let pool = pool_options::<sqlx::MySql>(cfg, provincial)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            let version: String =
                                sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut *conn).await?;
                            // MariaDB counts seconds, MySQL milliseconds (and SELECTs only).
                            let limit = if version.contains("MariaDB") {
                                format!("SET SESSION max_statement_time = {}", statement_ms as f64 / 1000.0)
                            } else {
                                format!("SET SESSION max_execution_time = {statement_ms}")
                            };
                            conn.execute(AssertSqlSafe(limit)).await?;
                            conn.execute(
                                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_lazy_with(opts);
                (Pool::MySql(pool), target)
            }
            Dialect::Postgres => {
                let mut opts = PgConnectOptions::from_str(&url).map_err(|e| {
                    anyhow::anyhow!("provincial.database_url is not a usable PostgreSQL URL: {e}")
                })?;
                let target = describe(opts.get_host(), opts.get_port(), opts.get_database());
                if !explicit_tls && !is_loopback(opts.get_host()) {
                    opts = opts.ssl_mode(PgSslMode::VerifyFull);
                }
                if let Some(ca) = ca {
                    opts = opts.ssl_root_cert(ca);
                }
                opts = opts
                    .application_name("dvc-sync")
                    .options([
                        ("default_transaction_read_only", "on".to_owned()),
                        ("statement_timeout", statement_ms.to_string()),
                    ])
                    .log_statements(log::LevelFilter::Off)
                    .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(10));
                let zone = cfg.timezone_name.clone();
                let pool = pool_options::<sqlx::Postgres>(cfg, provincial)
                    .after_connect(move |conn, _| {
                        let zone = zone.clone();
                        Box::pin(async move {
                            // The driver asks for UTC at start-up; timestamptz columns compared with
                            // the cursor's zone-less time need the database's zone.
                            sqlx::query("SELECT set_config('TimeZone', $1, false)")
                                .bind(zone)
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_lazy_with(opts);
                (Pool::Postgres(pool), target)
            }
        };
        Ok(SqlSource {
            pool,
            dialect,
            profile,
            tz: cfg.timezone.clone(),
            document_url: cfg.document_url.clone(),
            last_version: AtomicI64::new(0),
            turn: tokio::sync::Mutex::new(()),
            timeout: provincial.http.request_timeout,
            target,
        })
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The next read's version: the clock in microseconds, always above the last one.
    fn next_version(&self) -> i64 {
        let now = Timestamp::now().as_microsecond();
        let mut last = self.last_version.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_version.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// `after` as binds for the changes query, or the start of time without it.
    fn after_values(&self, after: Option<&Cursor>) -> Result<(String, Bind), SourceError> {
        let time = after.map_or_else(
            || "1900-01-01 00:00:00.000000".to_owned(),
            |c| self.tz.to_datetime(c.updated_at).strftime("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        );
        let id = match (self.profile.id, after) {
            (IdKind::Integer, None) => Bind::Int(-1),
            (IdKind::Text, None) => Bind::Text(String::new()),
            (IdKind::Integer, Some(c)) if c.id.is_empty() => Bind::Int(-1),
            (IdKind::Integer, Some(c)) => Bind::Int(c.id.parse().map_err(|_| {
                SourceError::new(format!(
                    "the cursor's id {:?} is not an integer: was the profile changed?",
                    c.id
                ))
            })?),
            (IdKind::Text, Some(c)) => Bind::Text(c.id.clone()),
        };
        Ok((time, id))
    }

    /// An id as people read it (integers without the cursor's zero padding).
    fn display_id(&self, id: &str) -> String {
        match self.profile.id {
            IdKind::Integer => id.parse::<i64>().map_or_else(|_| id.to_owned(), |i| i.to_string()),
            IdKind::Text => id.to_owned(),
        }
    }

    /// A position's id as the cursor keeps it: integers zero-padded so that text order is
    /// number order.
    fn id_of(&self, cell: Option<&Cell>, query: &str) -> Result<(String, Bind), SourceError> {
        match (self.profile.id, cell) {
            (IdKind::Integer, Some(Cell::Int(i))) if *i >= 0 => Ok((format!("{i:020}"), Bind::Int(*i))),
            (IdKind::Text, Some(Cell::Text(s))) => Ok((s.clone(), Bind::Text(s.clone()))),
            (IdKind::Text, Some(Cell::Int(i))) => Ok((i.to_string(), Bind::Text(i.to_string()))),
            (kind, other) => Err(SourceError::new(format!(
                "the {query} query's id is {}, not {}",
                other.map_or_else(|| "missing".to_owned(), Cell::describe),
                if kind == IdKind::Integer { "a non-negative integer" } else { "text" }
            ))),
        }
    }

    async fn read(&self, scan: bool, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        let _turn = self.turn.lock().await;
        let version = self.next_version();
        let read = async {
            let page = (scan, after, limit, version);
            match &self.pool {
                // One snapshot for the page's queries: a dossier and its history of one moment.
                Pool::MySql(pool) => {
                    let begin = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
                    self.read_tx(pool, begin, value::mysql, page).await
                }
                Pool::Postgres(pool) => {
                    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
                    self.read_tx(pool, begin, value::postgres, page).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(result) => result,
            Err(_) => Err(SourceError {
                reason: format!(
                    "the database at {} did not answer one page within {:.0} s (provincial.request_timeout_seconds)",
                    self.target,
                    self.timeout.as_secs_f64()
                ),
                http_status: None,
                timeout: true,
            }),
        }
    }

    fn failed(&self, e: &sqlx::Error) -> SourceError {
        let timeout = matches!(e, sqlx::Error::PoolTimedOut)
            || e.to_string().contains("max_statement_time")
            || e.to_string().contains("statement timeout")
            || e.to_string().contains("maximum statement execution time");
        let hint = match e {
            sqlx::Error::PoolTimedOut => " (no connection within provincial.connect_timeout_seconds)",
            _ if timeout => {
                " (provincial.statement_timeout_seconds; is the index of docs/sql-source.md in place?)"
            }
            _ => "",
        };
        SourceError {
            reason: format!("{}{hint}", connect_error(&self.target, e)),
            http_status: None,
            timeout,
        }
    }

    /// Why the pool gave no connection: "pool timed out" says nothing, so one connection is
    /// tried directly to learn the cause (refused, unknown host, a wrong password).
    async fn why_unusable<DB: Database>(&self, pool: &sqlx::Pool<DB>, e: sqlx::Error) -> SourceError {
        if matches!(e, sqlx::Error::PoolTimedOut) {
            let options = pool.connect_options();
            let direct =
                tokio::time::timeout(Duration::from_secs(10), ConnectOptions::connect(&*options)).await;
            if let Ok(Err(cause)) = direct {
                return self.failed(&cause);
            }
        }
        self.failed(&e)
    }

    /// One page, `(scan, after, limit, version)`: its queries in one read-only transaction
    /// begun by `begin`.
    async fn read_tx<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
        begin: &'static str,
        decode: fn(&DB::Row, usize, &TimeZone) -> Cell,
        (scan, after, limit, version): (bool, Option<&Cursor>, usize, i64),
    ) -> Result<Page, SourceError>
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        DB::Arguments: sqlx::IntoArguments<DB>,
    {
        let mut tx = match pool.begin_with(begin).await {
            Ok(tx) => tx,
            Err(e) => return Err(self.why_unusable(pool, e).await),
        };
        let conn: &mut DB::Connection = &mut tx;
        let (after_time, after_id) = self.after_values(after)?;
        let (query, name) =
            if scan { (&self.profile.scan, "scan") } else { (&self.profile.changes, "changes") };
        // A change row per dossier row or action row: ask for enough rows that a page holds
        // about `limit` dossiers, and cut at the `limit`-th.
        let rows_wanted = if scan { limit } else { limit.saturating_mul(CHANGE_ROWS_PER_DOSSIER) };
        let scalar = |p: Param| match p {
            Param::AfterTime => Some(Bind::Text(after_time.clone())),
            Param::AfterId => Some(after_id.clone()),
            Param::Limit => Some(Bind::Int(i64::try_from(rows_wanted).unwrap_or(i64::MAX))),
            Param::Ids | Param::DocumentUrl => None,
        };
        let keys = self.rows::<DB>(&mut *conn, decode, query, name, &scalar, &[]).await?;
        let mut has_more = keys.len() >= rows_wanted;
        // The distinct ids in the query's order, each with its furthest position on the page.
        let mut order: Vec<String> = Vec::new();
        let mut position: HashMap<String, Cursor> = HashMap::new();
        let mut binds: HashMap<String, Bind> = HashMap::new();
        let mut end = None;
        for row in &keys {
            let (id, bind) = self.id_of(cell(row, "id"), name)?;
            let updated_at = if scan {
                Timestamp::UNIX_EPOCH
            } else {
                match cell(row, "updated_at") {
                    Some(Cell::Time(t)) => *t,
                    other => {
                        return Err(SourceError::new(format!(
                            "the changes query's updated_at is {}, not a date and time (row id {id})",
                            other.map_or_else(|| "missing".to_owned(), Cell::describe)
                        )));
                    }
                }
            };
            let here = Cursor { updated_at, id: id.clone() };
            if !position.contains_key(&id) {
                if order.len() == limit {
                    // The rest is the next page's.
                    has_more = true;
                    break;
                }
                order.push(id.clone());
                binds.insert(id.clone(), bind);
            }
            end = Some(here.clone());
            position.insert(id, here);
        }
        if order.is_empty() {
            tx.commit().await.map_err(|e| self.failed(&e))?;
            return Ok(Page { records: Vec::new(), has_more: false, end });
        }
        let ids: Vec<Bind> = order.iter().filter_map(|id| binds.get(id).cloned()).collect();
        let none = |_: Param| None;
        let dossiers =
            self.rows::<DB>(&mut *conn, decode, &self.profile.dossiers, "dossiers", &none, &ids).await?;
        let history =
            self.rows::<DB>(&mut *conn, decode, &self.profile.history, "history", &none, &ids).await?;
        // The lists of the 766 fields the profile reads: per dossier, each list's rows.
        let mut lists: HashMap<String, Vec<Vec<Cells>>> = HashMap::new();
        let document_url =
            |p: Param| (p == Param::DocumentUrl).then(|| Bind::Text(self.document_url.clone()));
        for (n, list) in self.profile.lists.iter().enumerate() {
            let what = format!("lists.{}", list.name);
            for row in self.rows::<DB>(&mut *conn, decode, &list.query, &what, &document_url, &ids).await? {
                let (id, _) = self.id_of(cell(&row, "id"), &what)?;
                lists.entry(id).or_insert_with(|| vec![Vec::new(); self.profile.lists.len()])[n].push(row);
            }
        }

        let mut by_id: HashMap<String, Cells> = HashMap::new();
        for row in dossiers {
            let (id, _) = self.id_of(cell(&row, "id"), "dossiers")?;
            by_id.insert(id, row);
        }
        let mut entries: HashMap<String, Vec<Cells>> = HashMap::new();
        for row in history {
            let (id, _) = self.id_of(cell(&row, "id"), "history")?;
            entries.entry(id).or_default().push(row);
        }
        let mut records: Vec<Record> = order
            .iter()
            .filter_map(|id| {
                let dossier = by_id.remove(id)?;
                let history = entries.remove(id).unwrap_or_default();
                let items = lists.remove(id).unwrap_or_default();
                Some(self.record(id, dossier, history, items, position.get(id).cloned(), version))
            })
            .collect();
        records.sort_by(|a, b| a.position.cmp(&b.position));
        tx.commit().await.map_err(|e| self.failed(&e))?;
        Ok(Page { records, has_more, end })
    }

    /// Runs one of the profile's queries with its parameters bound: `scalar` gives each
    /// parameter but `:ids`, which takes `ids`.
    async fn rows<DB>(
        &self,
        conn: &mut DB::Connection,
        decode: fn(&DB::Row, usize, &TimeZone) -> Cell,
        query: &profile::Query,
        name: &str,
        scalar: &(dyn Fn(Param) -> Option<Bind> + Sync),
        ids: &[Bind],
    ) -> Result<Vec<Cells>, SourceError>
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        DB::Arguments: sqlx::IntoArguments<DB>,
    {
        let (sql, params) = query.render(self.dialect, ids.len());
        let mut q = sqlx::query::<DB>(AssertSqlSafe(sql));
        let mut next_id = ids.iter().cloned();
        for p in params {
            let bind = if p == Param::Ids { next_id.next() } else { scalar(p) };
            q = match bind {
                Some(Bind::Int(i)) => q.bind(i),
                Some(Bind::Text(s)) => q.bind(s),
                None => {
                    return Err(SourceError::new(format!(
                        "the {name} query uses a parameter it cannot take"
                    )));
                }
            };
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(|e| {
            let mut err = self.failed(&e);
            err.reason = format!("the {name} query failed: {}", err.reason);
            err
        })?;
        Ok(rows
            .iter()
            .map(|row| {
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_ascii_lowercase(), decode(row, i, &self.tz)))
                    .collect()
            })
            .collect())
    }

    /// A provincial record from a dossier row, its history rows and the rows of each of the
    /// profile's lists (none when it has no items).
    fn record(
        &self,
        id: &str,
        dossier: Cells,
        history: Vec<Cells>,
        items: Vec<Vec<Cells>>,
        position: Option<Cursor>,
        version: i64,
    ) -> Record {
        let mut problems: Vec<String> = Vec::new();
        let mut latest: Option<Timestamp> = None;
        let mut fields = |cells: Cells, known: &[&'static str], what: &str, problems: &mut Vec<String>| {
            let mut out = Map::new();
            for (column, c) in cells {
                match column.as_str() {
                    "id" => continue,
                    "updated_at" => {
                        if let Cell::Time(t) = c {
                            latest = latest.max(Some(t));
                        }
                        continue;
                    }
                    _ => {}
                }
                let field = field_name(&column, known);
                match c.into_json() {
                    Ok(v) => {
                        out.insert(field, v);
                    }
                    Err(why) => problems.push(format!("{what}{field} ({why})")),
                }
            }
            out
        };
        let mut raw = fields(dossier, DOSSIER_FIELDS, "", &mut problems);
        let entries: Vec<Value> = history
            .into_iter()
            .enumerate()
            .map(|(i, cells)| {
                Value::Object(fields(
                    cells,
                    ENTRY_FIELDS,
                    &format!("history entry {}: ", i + 1),
                    &mut problems,
                ))
            })
            .collect();
        raw.insert("QuaTrinhXuLy".into(), Value::Array(entries));
        for (list, cells) in self.profile.lists.iter().zip(items) {
            let known: Vec<&'static str> = list.fields.iter().map(|(f, _)| *f).collect();
            let list_items: Vec<Value> = cells
                .into_iter()
                .enumerate()
                .map(|(i, cells)| {
                    let what = format!("{} item {}: ", list.name, i + 1);
                    Value::Object(fields(cells, &known, &what, &mut problems))
                })
                .collect();
            // No items, no list: the payload of a dossier without any stays as it was.
            if !list_items.is_empty() {
                raw.insert(list.name.into(), Value::Array(list_items));
            }
        }
        if let Some(t) = latest {
            raw.insert("updated_at".into(), Value::String(format_rfc3339_vn(t)));
        }
        if !problems.is_empty() {
            raw.insert("_source_errors".into(), Value::from(problems));
        }
        // serde_json's maps are ordered: the same content always serialises the same.
        let fingerprint = stable_hash(&serde_json::to_vec(&raw).unwrap_or_default());
        raw.insert("version".into(), Value::from(version));
        Record {
            raw: Value::Object(raw).into(),
            position,
            fingerprint: Some(fingerprint),
            source_id: Some(self.display_id(id)),
        }
    }

    /// The server, the account, TLS, and whether the profile's indexes exist: what
    /// check-source prints before any record.
    pub async fn server_info(&self) -> Result<ServerInfo, SourceError> {
        match &self.pool {
            Pool::MySql(pool) => self.info_of(pool, &MYSQL_INFO).await,
            Pool::Postgres(pool) => self.info_of(pool, &POSTGRES_INFO).await,
        }
    }

    async fn info_of<DB>(&self, pool: &sqlx::Pool<DB>, sql: &InfoSql) -> Result<ServerInfo, SourceError>
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'r> (String, String, String): sqlx::FromRow<'r, DB::Row>,
        for<'r> (String, Option<String>): sqlx::FromRow<'r, DB::Row>,
        for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
        DB::Arguments: sqlx::IntoArguments<DB>,
    {
        let failed = |e: sqlx::Error| self.failed(&e);
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return Err(self.why_unusable(pool, e).await),
        };
        let (server, user, time_zone): (String, String, String) =
            sqlx::query_as(sql.server).fetch_one(&mut *conn).await.map_err(failed)?;
        let cipher: Option<(String, Option<String>)> =
            sqlx::query_as(sql.tls).fetch_optional(&mut *conn).await.map_err(failed)?;
        let mut indexes = Vec::new();
        for (statement, table, column) in self.profile.indexes.iter().filter_map(|s| index_target(s)) {
            let (found,): (i64,) = sqlx::query_as(sql.index)
                .bind(table)
                .bind((sql.column_pattern)(&column))
                .fetch_one(&mut *conn)
                .await
                .map_err(failed)?;
            indexes.push((statement, found > 0));
        }
        let tls = match cipher {
            Some((_, Some(c))) if !c.is_empty() => format!("on ({c})"),
            _ => "off".into(),
        };
        let server = server.split(" on ").next().unwrap_or(&server).to_owned();
        Ok(ServerInfo { server, user, tls, time_zone, indexes })
    }

    /// Whether the account can read each table the profile reads: a table missing (not
    /// OpenCPS's database, or another version of it) or not granted is named, with the
    /// profile's GRANT for it.
    pub(crate) async fn table_access(&self) -> Result<Vec<TableProblem>, SourceError> {
        let mut problems = Vec::new();
        // The names come from the profile's own queries; only plain names are probed.
        let plain = |t: &String| t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        for table in self.profile.tables().into_iter().filter(plain) {
            let probe = format!("SELECT 1 FROM {table} WHERE 1 = 0");
            let result = match &self.pool {
                Pool::MySql(pool) => sqlx::query(AssertSqlSafe(probe)).execute(pool).await.map(drop),
                Pool::Postgres(pool) => sqlx::query(AssertSqlSafe(probe)).execute(pool).await.map(drop),
            };
            let Err(e) = result else { continue };
            let code = match &e {
                sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
                _ => return Err(self.failed(&e)),
            };
            let message = e.to_string().to_ascii_lowercase();
            let missing = matches!(code.as_str(), "42S02" | "42P01");
            let denied = code == "42501" || message.contains("denied") || message.contains("permission");
            if !missing && !denied {
                return Err(self.failed(&e));
            }
            let grant = self.profile.grant_for(&table, self.dialect).map(str::to_owned);
            problems.push(TableProblem { table, missing, grant });
        }
        Ok(problems)
    }

    /// Closes the connections (check-source, tests).
    pub async fn close(&self) {
        match &self.pool {
            Pool::MySql(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// The table and first column of `CREATE INDEX name ON table (col, ...)`, in lower case.
fn index_target(sql: &str) -> Option<(String, String, String)> {
    let lower = sql.to_ascii_lowercase();
    let on = lower.find(" on ")?;
    let rest = lower[on + 4..].trim_start();
    let open = rest.find('(')?;
    let table = rest[..open].trim().trim_matches(['`', '"']).rsplit('.').next()?.to_owned();
    let column = rest[open + 1..].split([',', ')']).next()?.trim().trim_matches(['`', '"']).to_owned();
    Some((sql.to_owned(), table, column))
}

fn pool_options<DB: Database>(cfg: &SqlConfig, provincial: &ProvincialConfig) -> PoolOptions<DB> {
    PoolOptions::<DB>::new()
        .max_connections(u32::try_from(cfg.pool_size).unwrap_or(2))
        .min_connections(0)
        .acquire_timeout(provincial.http.connect_timeout)
        // A connection the server dropped (a restart, a killed session) is found before use.
        .test_before_acquire(true)
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(1800)))
}

impl Source for SqlSource {
    async fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        self.read(false, after, limit).await
    }

    async fn scan(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        self.read(true, after, limit).await
    }

    fn resume_after(&self, version: i64) {
        self.last_version.fetch_max(version, Ordering::Relaxed);
    }

    fn backfill_by_scan(&self) -> bool {
        true
    }

    fn explain(&self, field: &str) -> Option<String> {
        self.profile.explain(field).map(str::to_owned)
    }
}
