//! The provincial simulator in a real database: the simulated province of `mock::provincial`
//! (its `World`: dossiers, lives, mess, defects) written into the OpenCPS v2 tables of a
//! MariaDB/MySQL or PostgreSQL server, as OpenCPS would hold them, with what a real
//! one-stop database adds:
//!
//! - **late commits**: a share of changes is written in a transaction held open while later
//!   changes commit, so that an earlier `modifiedDate` becomes visible after later ones;
//! - **whole-second times**: `modifiedDate` at second precision, as Liferay writes it in
//!   practice, so that many changes tie;
//! - **silent dossier rows**: a share of steps rewrite the dossier row without moving its
//!   `modifiedDate`; only the new action row's time marks the change;
//! - **inter-agency copies**: a share of dossiers get a copy at another agency
//!   (`originDossierId` set), which must not be synchronized;
//! - the mess and defects of the world, in the database's own forms: NFD text, over-long text,
//!   no `dossierNo`, a malformed one, a local status no mapping knows, and an unreadable
//!   reception date (MySQL's zero date, PostgreSQL's `infinity`).
//!
//! The writer is an administrator of the database; the daemon reads with a SELECT-only account
//! (`grant_reader`), and [`Province::fingerprint`] shows that nothing else wrote.

pub mod schema;

use std::{
    collections::{HashMap, VecDeque},
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context;
use jiff::{Timestamp, civil::DateTime};
use serde_json::{Map, Value, json};
use sqlx::{
    AssertSqlSafe, Database, Executor,
    mysql::{MySqlConnectOptions, MySqlPool},
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPool},
};
use tokio_util::sync::CancellationToken;

use self::schema::Ty;
use crate::{
    domain::{
        dates::{parse_national, to_vn_local},
        status::DEFAULT_STATUS_MAP,
    },
    mock::{
        catalogue::PROCEDURES,
        provincial::{Change, Knobs, TruthItem, World, truth_items, wall_clock},
    },
    provincial::sql::Dialect,
};

/// The Liferay site the simulated province's dossiers belong to.
pub(crate) const GROUP_ID: i64 = 35_417;
/// The one service process every simulated procedure follows.
pub(crate) const SERVICE_PROCESS_ID: i64 = 501;
/// Inter-agency copies get ids from here (the originals' ids are their slot + 1).
pub(crate) const COPY_ID_BASE: i64 = 900_000_000;
/// Local statuses the status mapping table leaves to dvc-sync's status_map.
pub(crate) const UNMAPPED_STATUSES: [&str; 2] = ["releasing", "unresolved"];
/// The sub-status of transfer steps ("processing" again), mapped by sub-status.
pub(crate) const TRANSFER_SUB_STATUS: &str = "thamdinh";

/// What a real database adds to the world's own trouble.
#[derive(Debug, Clone, PartialEq)]
pub struct DbKnobs {
    /// Share of changes written in a transaction held open while later ones commit.
    pub late_commit_rate: f64,
    /// How long such a transaction stays open, at most.
    pub late_commit_ms: u64,
    /// Share of dossiers that also get an inter-agency copy.
    pub copy_rate: f64,
    /// Share of steps whose dossier row is rewritten without its modifiedDate moving.
    pub silent_dossier_rate: f64,
    /// modifiedDate at whole seconds (many ties), as Liferay writes it in practice.
    pub whole_seconds: bool,
    pub seed: u64,
}

impl Default for DbKnobs {
    fn default() -> Self {
        Self {
            late_commit_rate: 0.02,
            late_commit_ms: 1_500,
            copy_rate: 0.02,
            silent_dossier_rate: 0.2,
            whole_seconds: true,
            seed: 1,
        }
    }
}

/// What the writer did, for tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    pub changes_written: u64,
    pub late_commits: u64,
    pub copies: u64,
    pub silent_dossier_updates: u64,
    pub write_errors: u64,
}

/// A value for one column.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    /// A time as the database's text (`2026-03-01 08:30:00.000000`), or what a broken row
    /// holds instead (a zero date, `infinity`).
    Time(String),
}

/// One statement to run.
#[derive(Debug, Clone)]
struct Statement {
    sql: String,
    binds: Vec<V>,
}

/// One row to write.
#[derive(Debug, Clone)]
enum Op {
    Insert(&'static schema::Table, Vec<(&'static str, V)>),
    Update(&'static schema::Table, Vec<(&'static str, V)>, (&'static str, i64)),
}

#[derive(Debug, Clone, Copy, Default)]
struct SlotState {
    written: bool,
    actions: usize,
    last_action: i64,
    /// TaiLieuNop items and result files written.
    documents: usize,
    results: usize,
}

/// Where the simulated OpenCPS serves its files: tests set `provincial.document_url` to it.
pub const DOCUMENT_URL: &str = "https://motcua.example.vn";

/// The `dossierFileId` of a dossier's `k`-th file of a kind (submitted documents from 1,
/// results from 901): known to both the writer and the truth.
fn file_id(dossier: i64, result: bool, k: usize) -> i64 {
    dossier * 1000 + if result { 901 } else { 1 } + k as i64
}

/// The link the profile builds for a file.
fn file_url(dossier: i64, file: i64) -> String {
    format!("{DOCUMENT_URL}/o/rest/v2/dossiers/{dossier}/files/f{file}")
}

/// The `paymentFileId` of a dossier's `k`-th fee: known to both the writer and the truth.
fn payment_id(dossier: i64, k: usize) -> i64 {
    dossier * 1000 + 501 + k as i64
}

/// A code or amount of the world's record, whichever JSON type it came as.
fn plain(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The world's fees with a non-zero amount (name and amount), as OpenCPS holds them.
fn charged_fees(record: &Map<String, Value>) -> Vec<(Value, i64)> {
    record
        .get("DanhSachLePhi")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|f| Some((f["TenPhiLePhi"].clone(), plain(&f["Gia"])?.parse::<i64>().ok()?)))
        .filter(|(_, amount)| *amount > 0)
        .collect()
}

/// How OpenCPS would hold a charged dossier's payment (`paymentStatus`, `paymentMethod`) for
/// the world's DuocThanhToanTrucTuyen: confirmed (5) through the national portal's KeyPay or
/// the province's own gateway; otherwise paid at the counter, or an online payment begun on
/// the national portal and never confirmed (which is not paid online).
fn payment_state(dossier: i64, paid_online: Option<&str>) -> (i64, &'static str) {
    match paid_online {
        Some("1") => (5, "KeyPayDVCQG"),
        Some("2") if dossier % 2 == 0 => (5, "Keypay"),
        Some("2") => (5, "ViettelPay"),
        _ if dossier % 2 == 0 => (5, "Tiền mặt"),
        _ => (1, "KeyPayDVCQG"),
    }
}

/// The dossier's `opencps_paymentfile` rows: one per fee of the world, a free one (amount 0)
/// included, as OpenCPS writes a fee request whatever its amount.
fn payments(id: i64, record: &Value, modified: &V) -> Vec<Vec<(&'static str, V)>> {
    let fees = record.get("DanhSachLePhi").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let paid = plain(&record["DuocThanhToanTrucTuyen"]);
    let (status, method) = payment_state(id, paid.as_deref());
    fees.iter()
        .enumerate()
        .map(|(k, fee)| {
            let file = payment_id(id, k);
            let amount = plain(&fee["Gia"]).and_then(|a| a.parse::<i64>().ok()).unwrap_or(0);
            vec![
                ("paymentFileId", V::Int(file)),
                ("uuid_", V::Text(format!("dvcsync-sim-payment-{file}"))),
                ("groupId", V::Int(GROUP_ID)),
                ("companyId", V::Int(20_099)),
                ("userId", V::Int(1)),
                ("createDate", modified.clone()),
                ("modifiedDate", modified.clone()),
                ("dossierId", V::Int(id)),
                ("referenceUid", V::Text(format!("p{file}"))),
                ("paymentFee", text(&fee["TenPhiLePhi"])),
                ("advanceAmount", V::Int(0)),
                ("feeAmount", V::Int(amount)),
                ("serviceAmount", V::Int(0)),
                ("shipAmount", V::Int(0)),
                ("paymentAmount", V::Int(amount)),
                ("paymentNote", V::Text(String::new())),
                ("paymentStatus", V::Int(status)),
                ("paymentMethod", V::Text(method.into())),
            ]
        })
        .collect()
}

/// The result documents the world gives that OpenCPS would hold as a stored file (a result
/// without a link has none).
fn stored_results(list: Option<&Value>) -> Vec<&Value> {
    list.and_then(Value::as_array)
        .map(|l| {
            l.iter().filter(|r| r["DuongDanTepTinKetQua"].as_str().is_some_and(|u| !u.is_empty())).collect()
        })
        .unwrap_or_default()
}

struct WriterState {
    slots: HashMap<u32, SlotState>,
    next_action: i64,
    rng: fastrand::Rng,
    /// Slots whose late transaction is still open: their next changes wait.
    busy: HashMap<u32, tokio::task::JoinHandle<()>>,
    waiting: VecDeque<Change>,
    /// Changes planned and not yet committed.
    in_flight: usize,
    stats: WriterStats,
}

#[derive(Clone)]
enum Pool {
    MySql(MySqlPool),
    Postgres(PgPool),
}

enum Conn {
    MySql(PoolConnection<sqlx::MySql>),
    Postgres(PoolConnection<sqlx::Postgres>),
}

fn bind_all<DB: Database>(
    mut q: sqlx::query::Query<'_, DB, DB::Arguments>,
    binds: Vec<V>,
) -> sqlx::query::Query<'_, DB, DB::Arguments>
where
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for b in binds {
        q = match b {
            V::Null => q.bind(None::<String>),
            V::Int(i) => q.bind(i),
            V::Bool(v) => q.bind(v),
            V::Text(s) | V::Time(s) => q.bind(Some(s)),
        };
    }
    q
}

impl Conn {
    async fn run(&mut self, st: Statement) -> Result<u64, sqlx::Error> {
        match self {
            Conn::MySql(c) => bind_all(sqlx::query::<sqlx::MySql>(AssertSqlSafe(st.sql)), st.binds)
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()),
            Conn::Postgres(c) => bind_all(sqlx::query::<sqlx::Postgres>(AssertSqlSafe(st.sql)), st.binds)
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()),
        }
    }

    async fn plain(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Conn::MySql(c) => c.execute(AssertSqlSafe(sql.to_owned())).await.map(|_| ()),
            Conn::Postgres(c) => c.execute(AssertSqlSafe(sql.to_owned())).await.map(|_| ()),
        }
    }
}

/// A time as the database's text.
fn db_time(dt: DateTime) -> String {
    dt.strftime("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// A date field of the world's record, as the database holds it: parsed from the national or
/// RFC 3339 form; what does not parse becomes the database's own broken value.
fn record_date(v: &Value, dialect: Dialect) -> V {
    let Some(s) = v.as_str().filter(|s| !s.is_empty()) else { return V::Null };
    let parsed = parse_national(s).or_else(|| s.parse::<Timestamp>().ok().map(to_vn_local));
    match parsed {
        Some(dt) => V::Time(db_time(dt)),
        None => V::Time(match dialect {
            Dialect::MySql => "0000-00-00 00:00:00".into(),
            Dialect::Postgres => "infinity".into(),
        }),
    }
}

/// A scalar of the world's record as text (numbers, as the "numbers" mess gives them, too).
fn text(v: &Value) -> V {
    match v {
        Value::String(s) => V::Text(s.clone()),
        Value::Number(n) => V::Text(n.to_string()),
        Value::Bool(b) => V::Text(b.to_string()),
        _ => V::Null,
    }
}

fn code(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The local service code of a national procedure: half of the known procedures carry a code
/// of their own, mapped in opencps_serviceinfomapping; the rest (and unknown ones) carry the
/// national code itself, which OpenCPS's client sends as it is.
pub(crate) fn local_service_code(national: &str) -> String {
    match PROCEDURES.iter().position(|p| p.code == national) {
        Some(i) if i % 2 == 0 => format!("TP-{national}"),
        _ => national.to_owned(),
    }
}

fn step_code(local: &str, transfer: bool) -> String {
    if transfer { format!("STEP_{local}_{TRANSFER_SUB_STATUS}") } else { format!("STEP_{local}") }
}

/// The simulated province in a database.
pub struct Province {
    pool: Pool,
    dialect: Dialect,
    knobs: DbKnobs,
    world: Arc<Mutex<World>>,
    state: Mutex<WriterState>,
}

impl Province {
    /// Connects as an administrator of `url`'s database and starts the world (nothing is
    /// written until [`Province::create_schema`] and [`Province::run`] or
    /// [`Province::write_backfill`]).
    pub async fn connect(url: &str, world: Knobs, knobs: DbKnobs) -> anyhow::Result<Province> {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let dialect = Dialect::of_url(&url).context("a mysql:// or postgres:// URL")?;
        let connections = 24;
        let pool = match dialect {
            Dialect::MySql => {
                let opts = MySqlConnectOptions::from_str(&url)?;
                Pool::MySql(
                    sqlx::mysql::MySqlPoolOptions::new()
                        .max_connections(connections)
                        .after_connect(|c, _| {
                            Box::pin(async move {
                                // Zero dates are what broken rows hold; strict mode would refuse them.
                                c.execute("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'").await?;
                                Ok(())
                            })
                        })
                        .connect_with(opts)
                        .await?,
                )
            }
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(&url)?;
                Pool::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(connections)
                        .connect_with(opts)
                        .await?,
                )
            }
        };
        let world = World::with_journal(world, wall_clock());
        Ok(Province {
            pool,
            dialect,
            world: Arc::new(Mutex::new(world)),
            state: Mutex::new(WriterState {
                slots: HashMap::new(),
                next_action: 1,
                rng: fastrand::Rng::with_seed(knobs.seed ^ 0x0c95),
                busy: HashMap::new(),
                waiting: VecDeque::new(),
                in_flight: 0,
                stats: WriterStats::default(),
            }),
            knobs,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn state(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> WriterStats {
        self.state().stats.clone()
    }

    async fn conn(&self) -> Result<Conn, sqlx::Error> {
        Ok(match &self.pool {
            Pool::MySql(p) => Conn::MySql(p.acquire().await?),
            Pool::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }

    /// Runs statements as they are (DDL, grants, test set-up).
    pub async fn execute(&self, statements: &[String]) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        for sql in statements {
            conn.plain(sql).await.with_context(|| format!("while running {sql}"))?;
        }
        Ok(())
    }

    /// Creates the OpenCPS tables with Liferay's indexes, and the process steps, status
    /// mappings and service mappings of the simulated province.
    pub async fn create_schema(&self) -> anyhow::Result<()> {
        self.execute(&schema::create_all(self.dialect)).await?;
        let created = V::Time("2025-01-01 00:00:00.000000".into());
        // Every reference row: its table, its key, and its columns after groupId and the dates.
        let row = |table: &'static schema::Table, id: i64, rest: Vec<(&'static str, V)>| {
            let mut values = vec![
                (table.columns[0].0, V::Int(id)),
                ("groupId", V::Int(GROUP_ID)),
                ("createDate", created.clone()),
            ];
            values.push(("modifiedDate", created.clone()));
            values.extend(rest);
            self.insert(table, &values)
        };
        let text = |s: &str| V::Text(s.to_owned());
        let mut statements = Vec::new();
        let mut id = 1;
        for (local, _) in DEFAULT_STATUS_MAP {
            for transfer in [false, true] {
                if transfer && *local != "processing" {
                    continue;
                }
                statements.push(row(
                    &schema::PROCESS_STEP,
                    id,
                    vec![
                        ("stepCode", V::Text(step_code(local, transfer))),
                        ("serviceProcessId", V::Int(SERVICE_PROCESS_ID)),
                        ("stepName", V::Text(format!("Bước {local}"))),
                        ("sequenceNo", V::Text(id.to_string())),
                        ("dossierStatus", text(local)),
                        ("dossierSubStatus", text(if transfer { TRANSFER_SUB_STATUS } else { "" })),
                    ],
                ));
                id += 1;
            }
        }
        // The status mapping: every local status but those left to status_map, and the
        // transfer steps' sub-status.
        let mappings = DEFAULT_STATUS_MAP
            .iter()
            .filter(|(local, _)| !UNMAPPED_STATUSES.contains(local))
            .map(|(local, national)| (*local, national.to_string(), ""))
            .chain([("processing", "4".to_owned(), TRANSFER_SUB_STATUS)]);
        for (local, national, sub) in mappings {
            statements.push(row(
                &schema::STATUS_MAPPING,
                id,
                vec![
                    ("companyId", V::Int(20_099)),
                    ("statusCode", text(local)),
                    ("statusCodeDVCQG", V::Text(national)),
                    ("subStatusCode", text(sub)),
                ],
            ));
            id += 1;
        }
        for (i, p) in PROCEDURES.iter().enumerate() {
            let local = local_service_code(p.code);
            if local != p.code {
                statements.push(row(
                    &schema::SERVICE_MAPPING,
                    i as i64 + 1,
                    vec![
                        ("serviceCode", V::Text(local)),
                        ("serviceCodeDVCQG", text(p.code)),
                        ("serviceNameDVCQG", text(p.name)),
                        ("synced", V::Int(1)),
                    ],
                ));
            }
        }
        let mut conn = self.conn().await?;
        for st in statements {
            conn.run(st).await?;
        }
        Ok(())
    }

    /// A SELECT-only account for the daemon, on the tables the profile reads.
    pub async fn grant_reader(&self, user: &str, password: &str, database: &str) -> anyhow::Result<()> {
        let tables: Vec<&str> = schema::TABLES.iter().map(|t| t.name).collect();
        let statements: Vec<String> = match self.dialect {
            Dialect::MySql => std::iter::once(format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
                .chain(tables.iter().map(|t| format!("GRANT SELECT ON {database}.{t} TO '{user}'@'%'")))
                .collect(),
            Dialect::Postgres => vec![
                format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
                format!("GRANT CONNECT ON DATABASE {database} TO {user}"),
                format!("GRANT USAGE ON SCHEMA public TO {user}"),
                format!("GRANT SELECT ON {} TO {user}", tables.join(", ")),
            ],
        };
        self.execute(&statements).await
    }

    /// `INSERT INTO table (columns) VALUES (...)`, times cast to the column's type.
    fn insert(&self, table: &schema::Table, values: &[(&str, V)]) -> Statement {
        self.insert_many(table, &[values.to_vec()])
    }

    fn insert_many(&self, table: &schema::Table, rows: &[Vec<(&str, V)>]) -> Statement {
        let columns: Vec<&str> =
            rows.first().map(|r| r.iter().map(|(c, _)| *c).collect()).unwrap_or_default();
        let mut binds = Vec::new();
        let mut tuples = Vec::new();
        for row in rows {
            let mut slots = Vec::new();
            for (column, v) in row {
                binds.push(v.clone());
                slots.push(self.placeholder(table.column(column), binds.len()));
            }
            tuples.push(format!("({})", slots.join(", ")));
        }
        Statement {
            sql: format!("INSERT INTO {} ({}) VALUES {}", table.name, columns.join(", "), tuples.join(", ")),
            binds,
        }
    }

    /// Statements for `ops`, consecutive inserts of the same columns into one table merged
    /// into multi-row inserts of at most `rows` rows.
    fn statements(&self, ops: Vec<Op>, rows: usize) -> Vec<Statement> {
        let mut out = Vec::new();
        let mut batch: Vec<Vec<(&str, V)>> = Vec::new();
        let mut batch_table: Option<&schema::Table> = None;
        let flush =
            |out: &mut Vec<Statement>, batch: &mut Vec<Vec<(&str, V)>>, table: Option<&schema::Table>| {
                if let (Some(t), false) = (table, batch.is_empty()) {
                    out.push(self.insert_many(t, batch));
                }
                batch.clear();
            };
        for op in ops {
            match op {
                Op::Insert(table, row) => {
                    let same = batch_table.is_some_and(|t| std::ptr::eq(t, table))
                        && batch.first().is_some_and(|b| b.iter().map(|c| c.0).eq(row.iter().map(|c| c.0)));
                    if !same || batch.len() >= rows {
                        flush(&mut out, &mut batch, batch_table);
                    }
                    batch_table = Some(table);
                    batch.push(row);
                }
                Op::Update(table, values, key) => {
                    flush(&mut out, &mut batch, batch_table);
                    out.push(self.update(table, &values, key));
                }
            }
        }
        flush(&mut out, &mut batch, batch_table);
        out
    }

    fn update(&self, table: &schema::Table, values: &[(&str, V)], key: (&str, i64)) -> Statement {
        let mut binds = Vec::new();
        let mut sets = Vec::new();
        for (column, v) in values {
            binds.push(v.clone());
            sets.push(format!("{column} = {}", self.placeholder(table.column(column), binds.len())));
        }
        binds.push(V::Int(key.1));
        let key_slot = self.placeholder(Some(Ty::Long), binds.len());
        Statement {
            sql: format!("UPDATE {} SET {} WHERE {} = {key_slot}", table.name, sets.join(", "), key.0),
            binds,
        }
    }

    fn placeholder(&self, ty: Option<Ty>, n: usize) -> String {
        let p = match self.dialect {
            Dialect::MySql => "?".to_owned(),
            Dialect::Postgres => format!("${n}"),
        };
        match (ty, self.dialect) {
            (Some(Ty::Date), Dialect::MySql) => format!("CAST({p} AS DATETIME(6))"),
            (Some(Ty::Date), Dialect::Postgres) => format!("CAST({p} AS TIMESTAMP)"),
            (Some(Ty::Long | Ty::Int), Dialect::Postgres) => format!("CAST({p} AS INT8)"),
            _ => p,
        }
    }

    fn modified(&self, updated_at: i64) -> V {
        let mut dt = to_vn_local(Timestamp::from_microsecond(updated_at).unwrap_or(Timestamp::UNIX_EPOCH));
        if self.knobs.whole_seconds {
            dt = dt.with().subsec_nanosecond(0).build().unwrap_or(dt);
        }
        V::Time(db_time(dt))
    }

    /// A step's time as a row's modifiedDate, never later than a minute ago.
    fn historical(&self, at: &Value) -> V {
        let cap = to_vn_local(Timestamp::now() - jiff::SignedDuration::from_secs(60));
        let at = at
            .as_str()
            .and_then(parse_national)
            .or_else(|| at.as_str()?.parse::<Timestamp>().ok().map(to_vn_local));
        V::Time(db_time(at.map_or(cap, |t| t.min(cap))))
    }

    /// The dossier row's columns for a world record (all but the key and modifiedDate).
    fn dossier_columns(&self, record: &Value) -> Vec<(&'static str, V)> {
        let r = |k: &str| record.get(k).cloned().unwrap_or(Value::Null);
        let mahoso = r("MaHoSo");
        let procedure = r("MaTTHC").as_str().unwrap_or_default().to_owned();
        let agency = mahoso.as_str().and_then(|m| m.split('-').next()).unwrap_or("").to_owned();
        let channel = code(&r("KenhThucHien"));
        let applicant = match code(&r("LoaiDoiTuong")) {
            2 => "business",
            3 => "government",
            4 => "organization",
            _ => "citizen",
        };
        let status = r("TrangThai").as_str().unwrap_or_default().to_owned();
        let transfer = Self::last_is_transfer(record);
        vec![
            ("dossierNo", text(&mahoso)),
            ("serviceCode", V::Text(local_service_code(&procedure))),
            ("serviceName", text(&r("TenTTHC"))),
            ("govAgencyCode", V::Text(agency)),
            ("govAgencyName", text(&r("DonViXuLy"))),
            ("applicantName", text(&r("ChuHoSo"))),
            ("applicantIdType", V::Text(applicant.into())),
            ("applicantIdNo", text(&r("SoGiayToChuHoSo"))),
            ("contactName", text(&r("ChuHoSo"))),
            ("contactTelNo", text(&r("SoDienThoai"))),
            ("contactEmail", text(&r("Email"))),
            ("dossierNote", text(&r("TrichYeuHoSo"))),
            ("submitDate", record_date(&r("NgayNopHoSo"), self.dialect)),
            ("receiveDate", record_date(&r("NgayTiepNhan"), self.dialect)),
            ("dueDate", record_date(&r("NgayHenTra"), self.dialect)),
            ("finishDate", record_date(&r("NgayTra"), self.dialect)),
            ("releaseDate", record_date(&r("NgayKetThucXuLy"), self.dialect)),
            ("dossierStatus", V::Text(status.clone())),
            (
                "dossierSubStatus",
                V::Text(if transfer && status == "processing" {
                    TRANSFER_SUB_STATUS.into()
                } else {
                    String::new()
                }),
            ),
            ("viaPostal", V::Int(if code(&r("HinhThuc")) == 1 { 2 } else { 0 })),
            ("online_", V::Bool(channel == 2)),
            ("fromViaPostal", V::Int(i64::from(channel == 3))),
        ]
    }

    /// Whether the record's last step is a transfer (a "processing" after a "processing").
    fn last_is_transfer(record: &Value) -> bool {
        let entries = record.get("QuaTrinhXuLy").and_then(Value::as_array);
        let status = |e: &Value| e.get("TrangThai").and_then(Value::as_str).unwrap_or("").to_owned();
        match entries.map(|e| e.as_slice()) {
            Some([.., a, b]) => status(a) == "processing" && status(b) == "processing",
            _ => false,
        }
    }

    /// The rows that write one change. Call in the order of the changes of each dossier: it
    /// numbers the new actions.
    ///
    /// `historical`: rows carry the times their steps happened (capped a minute before now), as
    /// years of a real database do, instead of the change's own stamp.
    fn plan(&self, change: Change, record: &Value, state: &mut WriterState, historical: bool) -> Vec<Op> {
        let id = i64::from(change.slot) + 1;
        let entries_times: Vec<V> = record
            .get("QuaTrinhXuLy")
            .and_then(Value::as_array)
            .map(|e| e.iter().map(|e| self.historical(&e["ThoiDiemXuLy"])).collect())
            .unwrap_or_default();
        let modified = match entries_times.last() {
            Some(last) if historical => last.clone(),
            _ => self.modified(change.updated_at),
        };
        let slot = state.slots.get(&change.slot).copied().unwrap_or_default();
        let mut out = Vec::new();
        let mut columns = self.dossier_columns(record);
        let entries = record.get("QuaTrinhXuLy").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut last_action = slot.last_action;
        let mut actions = Vec::new();
        let mut previous_status: Option<String> = slot
            .actions
            .checked_sub(1)
            .and_then(|i| entries.get(i))
            .and_then(|e| e["TrangThai"].as_str())
            .map(str::to_owned);
        for (i, entry) in entries.iter().enumerate().skip(slot.actions) {
            let action_modified = if historical { entries_times[i].clone() } else { modified.clone() };
            let action_id = state.next_action;
            state.next_action += 1;
            let local = entry["TrangThai"].as_str().unwrap_or_default().to_owned();
            let transfer = local == "processing" && previous_status.as_deref() == Some("processing");
            actions.push(vec![
                ("dossierActionId", V::Int(action_id)),
                ("groupId", V::Int(GROUP_ID)),
                ("companyId", V::Int(20_099)),
                ("userId", V::Int(1)),
                ("createDate", record_date(&entry["ThoiDiemXuLy"], self.dialect)),
                ("modifiedDate", action_modified),
                ("dossierId", V::Int(id)),
                ("serviceProcessId", V::Int(SERVICE_PROCESS_ID)),
                ("previousActionId", V::Int(last_action)),
                ("actionCode", V::Text(format!("ACT_{local}"))),
                ("actionUser", text(&entry["NguoiXuLy"])),
                ("actionName", V::Text(format!("Thực hiện bước {local}"))),
                ("actionNote", text(&entry["NoiDungXuLy"])),
                ("stepCode", V::Text(step_code(&local, transfer))),
                ("stepName", V::Text(format!("Bước {local}"))),
                ("dueDate", record_date(&entry["NgayKetThucTheoQuyDinh"], self.dialect)),
                ("pending", V::Bool(false)),
                ("state_", V::Int(0)),
            ]);
            previous_status = Some(local);
            last_action = action_id;
        }
        columns.push(("dossierActionId", V::Int(last_action)));
        if slot.written {
            // Some vendor modules rewrite the dossier without touching modifiedDate; the new
            // action row's time is then all that marks the change.
            let silent = !actions.is_empty() && state.rng.f64() < self.knobs.silent_dossier_rate;
            if silent {
                state.stats.silent_dossier_updates += 1;
            } else {
                columns.push(("modifiedDate", modified.clone()));
            }
            out.push(Op::Update(&schema::DOSSIER, columns, ("dossierId", id)));
        } else {
            let received = record_date(&record["NgayTiepNhan"], self.dialect);
            let mut row = vec![
                ("dossierId", V::Int(id)),
                ("uuid_", V::Text(format!("dvcsync-sim-{id}"))),
                ("groupId", V::Int(GROUP_ID)),
                ("companyId", V::Int(20_099)),
                ("userId", V::Int(1)),
                (
                    "createDate",
                    if matches!(&received, V::Time(t) if t.starts_with(['0', 'i'])) {
                        modified.clone()
                    } else {
                        received
                    },
                ),
                ("modifiedDate", modified.clone()),
                ("referenceUid", V::Text(format!("ref-{id}"))),
                ("originDossierId", V::Int(0)),
                ("originDossierNo", V::Text(String::new())),
            ];
            row.extend(columns);
            out.push(Op::Insert(&schema::DOSSIER, row));
            if state.rng.f64() < self.knobs.copy_rate {
                out.extend(self.copy_of(id, record, &modified, state));
            }
        }
        out.extend(actions.into_iter().map(|a| Op::Insert(&schema::ACTION, a)));
        // The dossier's files: the lists only grow in the simulated world.
        let documents = record.get("TaiLieuNop").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let results = stored_results(record.get("DanhSachGiayToKetQua"));
        let file = |result: bool, k: usize, name: &Value, part: &Value, code: &Value| {
            let file = file_id(id, result, k);
            vec![
                ("dossierFileId", V::Int(file)),
                ("uuid_", V::Text(format!("dvcsync-sim-file-{file}"))),
                ("groupId", V::Int(GROUP_ID)),
                ("companyId", V::Int(20_099)),
                ("userId", V::Int(1)),
                ("createDate", modified.clone()),
                ("modifiedDate", modified.clone()),
                ("dossierId", V::Int(id)),
                ("referenceUid", V::Text(format!("f{file}"))),
                ("dossierPartNo", text(part)),
                ("dossierPartType", V::Int(if result { 2 } else { 1 })),
                ("displayName", text(name)),
                ("fileEntryId", V::Int(file)),
                ("removed", V::Bool(false)),
                ("deliverableCode", text(code)),
            ]
        };
        for (k, d) in documents.iter().enumerate().skip(slot.documents) {
            out.push(Op::Insert(
                &schema::FILE,
                file(false, k, &d["TenTepDinhKem"], &d["MaThanhPhanHoSo"], &Value::Null),
            ));
        }
        for (k, r) in results.iter().enumerate().skip(slot.results) {
            out.push(Op::Insert(
                &schema::FILE,
                file(true, k, &r["TenGiayTo"], &r["MaThanhPhanHoSo"], &r["MaGiayToKetQua"]),
            ));
        }
        if !slot.written {
            out.extend(payments(id, record, &modified).into_iter().map(|p| Op::Insert(&schema::PAYMENT, p)));
        }
        state.slots.insert(
            change.slot,
            SlotState {
                written: true,
                actions: entries.len(),
                last_action,
                documents: documents.len().max(slot.documents),
                results: results.len().max(slot.results),
            },
        );
        out
    }

    /// An inter-agency copy of dossier `origin`: the same number, another agency, its own action.
    fn copy_of(&self, origin: i64, record: &Value, modified: &V, state: &mut WriterState) -> Vec<Op> {
        state.stats.copies += 1;
        let id = COPY_ID_BASE + origin;
        let action = state.next_action;
        state.next_action += 1;
        let mut row = vec![
            ("dossierId", V::Int(id)),
            ("uuid_", V::Text(format!("dvcsync-sim-copy-{origin}"))),
            ("groupId", V::Int(GROUP_ID + 1)),
            ("companyId", V::Int(20_099)),
            ("userId", V::Int(1)),
            ("createDate", modified.clone()),
            ("modifiedDate", modified.clone()),
            ("referenceUid", V::Text(format!("ref-copy-{origin}"))),
            ("originDossierId", V::Int(origin)),
            ("originDossierNo", text(&record["MaHoSo"])),
            ("dossierActionId", V::Int(action)),
        ];
        row.extend(self.dossier_columns(record));
        row.retain(|(c, _)| *c != "dossierStatus");
        row.push(("dossierStatus", V::Text("interoperating".into())));
        vec![
            Op::Insert(&schema::DOSSIER, row),
            Op::Insert(
                &schema::ACTION,
                vec![
                    ("dossierActionId", V::Int(action)),
                    ("groupId", V::Int(GROUP_ID + 1)),
                    ("createDate", modified.clone()),
                    ("modifiedDate", modified.clone()),
                    ("dossierId", V::Int(id)),
                    ("serviceProcessId", V::Int(SERVICE_PROCESS_ID)),
                    ("actionUser", V::Text("Liên thông".into())),
                    ("actionNote", V::Text("Tiếp nhận hồ sơ liên thông".into())),
                    ("stepCode", V::Text(step_code("processing", false))),
                ],
            ),
        ]
    }

    /// Writes the changes the world made since the last call. On-time changes commit in
    /// order; late ones hold their transaction open in a task of their own, and the next
    /// changes of the same dossier wait for it (a row lock would make them).
    pub(crate) async fn write_due(self: &Arc<Self>) -> anyhow::Result<()> {
        let fresh = self.world().take_journal();
        let mut now_writing: Vec<(Change, Vec<Statement>)> = Vec::new();
        {
            let mut state = self.state();
            state.waiting.extend(fresh);
            state.busy.retain(|_, task| !task.is_finished());
            let mut held = std::collections::HashSet::new();
            let waiting = std::mem::take(&mut state.waiting);
            for change in waiting {
                if state.busy.contains_key(&change.slot) || held.contains(&change.slot) {
                    held.insert(change.slot);
                    state.waiting.push_back(change);
                    continue;
                }
                let late = state.rng.f64() < self.knobs.late_commit_rate;
                // A late write must not overtake this dossier's on-time writes of this pass
                // (they commit after the loop): it waits for the next pass.
                if late && now_writing.iter().any(|(c, _)| c.slot == change.slot) {
                    held.insert(change.slot);
                    state.waiting.push_back(change);
                    continue;
                }
                let record = self.world().record_at(change.slot, change.version, change.updated_at);
                let ops = self.plan(change, &record, &mut state, false);
                let plan = self.statements(ops, 100);
                state.stats.changes_written += 1;
                state.in_flight += 1;
                if late {
                    state.stats.late_commits += 1;
                    let hold = Duration::from_millis(
                        state.rng.u64(self.knobs.late_commit_ms / 2..=self.knobs.late_commit_ms),
                    );
                    let me = self.clone();
                    let task = tokio::spawn(async move { me.commit(plan, hold).await });
                    state.busy.insert(change.slot, task);
                } else {
                    now_writing.push((change, plan));
                }
            }
        }
        for (_, plan) in now_writing {
            self.commit(plan, Duration::ZERO).await;
        }
        Ok(())
    }

    /// Runs one change's statements in a transaction, open for `hold` before it commits;
    /// retried until it goes through (the server may be restarting under a test).
    async fn commit(&self, plan: Vec<Statement>, hold: Duration) {
        loop {
            let attempt = async {
                let mut conn = self.conn().await?;
                conn.plain("BEGIN").await?;
                for st in plan.clone() {
                    conn.run(st).await?;
                }
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                conn.plain("COMMIT").await?;
                Ok::<(), sqlx::Error>(())
            };
            match attempt.await {
                Ok(()) => {
                    let mut state = self.state();
                    state.in_flight = state.in_flight.saturating_sub(1);
                    return;
                }
                Err(e) => {
                    self.state().stats.write_errors += 1;
                    tracing::debug!(event = "province_write_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Lets the province live in real time until `token` is cancelled: the world's clock
    /// ticks, its changes are written.
    pub fn run(self: &Arc<Self>, token: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = tokio::time::Instant::now();
                me.world().tick(now.duration_since(last));
                last = now;
                if let Err(e) = me.write_due().await {
                    tracing::warn!(event = "province_write_failed", error = %e);
                }
            }
        })
    }

    /// With the world's `changes_per_second = 0`: writes every dossier's whole life at once,
    /// `batch` dossiers per transaction in multi-row inserts (the benchmark's backfill).
    /// Returns how many changes it wrote.
    pub async fn write_backfill(&self, batch: usize) -> anyhow::Result<usize> {
        let changes = self.world().take_journal();
        let mut written = 0;
        for chunk in changes.chunks(batch.max(1)) {
            let ops: Vec<Op> = {
                let mut state = self.state();
                let mut ops = Vec::new();
                for change in chunk {
                    let record = self.world().record_at(change.slot, change.version, change.updated_at);
                    ops.extend(self.plan(*change, &record, &mut state, true));
                    state.stats.changes_written += 1;
                }
                state.in_flight += 1;
                ops
            };
            // Dossiers first, then actions: rows of one table together, as bulk loads do.
            let (mut first, mut rest): (Vec<Op>, Vec<Op>) = ops
                .into_iter()
                .partition(|op| matches!(op, Op::Insert(t, _) if t.name == schema::DOSSIER.name));
            first.append(&mut rest);
            self.commit(self.statements(first, 500), Duration::ZERO).await;
            written += chunk.len();
        }
        Ok(written)
    }

    /// Whether every change the world made is committed.
    pub fn settled(&self) -> bool {
        let (finished, journal_empty) = {
            let mut w = self.world();
            let fresh = w.take_journal();
            let empty = fresh.is_empty();
            drop(w);
            self.state().waiting.extend(fresh);
            (self.world().finished(), empty)
        };
        let mut state = self.state();
        state.busy.retain(|_, t| !t.is_finished());
        finished && journal_empty && state.busy.is_empty() && state.waiting.is_empty() && state.in_flight == 0
    }

    /// The province's truth as the daemon should see it through OpenCPS's tables: the world's
    /// records, less what OpenCPS has no column for (a history entry's ChucDanh and
    /// PhongBanXuLy; of the 766 fields, digitised, a fee's code, kind and way of collection, and
    /// a document's DuocSoHoa, DuocTaiSuDung and DuocLayTuKhoDMQG: docs/sql-source.md), with
    /// the files and fees as the profile reads them back (ids and links are OpenCPS's).
    pub fn truth(&self) -> Vec<TruthItem> {
        let by_slot = self.world().truth_by_slot();
        let slots: Vec<u32> = by_slot.iter().map(|(s, _)| *s).collect();
        let mut items = truth_items(&by_slot.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
        for (item, slot) in items.iter_mut().zip(slots) {
            let id = i64::from(slot) + 1;
            if let Some(record) = item.record.as_object_mut() {
                // The fees OpenCPS charges, and whether it was paid online, as the profile
                // reads them from opencps_paymentfile (a dossier charged nothing has neither).
                let fees: Vec<Value> = charged_fees(record)
                    .into_iter()
                    .map(|(name, amount)| json!({"TenPhiLePhi": name, "Gia": amount.to_string()}))
                    .collect();
                let paid = match record.get("DuocThanhToanTrucTuyen").and_then(plain).as_deref() {
                    Some(code @ ("1" | "2")) => code.to_owned(),
                    _ => "0".to_owned(),
                };
                for field in ["DuocThanhToanTrucTuyen", "HoSoCoThanhPhanSoHoa", "DanhSachLePhi"] {
                    record.remove(field);
                }
                if !fees.is_empty() {
                    record.insert("DanhSachLePhi".into(), Value::Array(fees));
                    record.insert("DuocThanhToanTrucTuyen".into(), Value::String(paid));
                }
                let documents: Vec<Value> = record
                    .get("TaiLieuNop")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .enumerate()
                    .map(|(k, d)| {
                        let file = file_id(id, false, k);
                        json!({"TepDinhKemId": file.to_string(), "TenTepDinhKem": d["TenTepDinhKem"],
                               "MaThanhPhanHoSo": d["MaThanhPhanHoSo"], "DuongDanTaiTepTin": file_url(id, file)})
                    })
                    .collect();
                let results: Vec<Value> = stored_results(record.get("DanhSachGiayToKetQua"))
                    .iter()
                    .enumerate()
                    .map(|(k, r)| {
                        let file = file_id(id, true, k);
                        json!({"TenGiayTo": r["TenGiayTo"], "MaThanhPhanHoSo": r["MaThanhPhanHoSo"],
                               "GiayToId": file.to_string(), "DuongDanTepTinKetQua": file_url(id, file),
                               "MaGiayToKetQua": r["MaGiayToKetQua"]})
                    })
                    .collect();
                record.remove("TaiLieuNop");
                record.remove("DanhSachGiayToKetQua");
                if !documents.is_empty() {
                    record.insert("TaiLieuNop".into(), Value::Array(documents));
                }
                if !results.is_empty() {
                    record.insert("DanhSachGiayToKetQua".into(), Value::Array(results));
                }
            }
            if let Some(entries) = item.record.get_mut("QuaTrinhXuLy").and_then(Value::as_array_mut) {
                for e in entries {
                    e["ChucDanh"] = Value::String(String::new());
                    e["PhongBanXuLy"] = Value::String(String::new());
                }
            }
        }
        items
    }

    /// Every table's row count and a hash of its content: equal before and after the daemon
    /// ran means the daemon wrote nothing.
    pub async fn fingerprint(&self) -> anyhow::Result<Vec<(String, usize, i64)>> {
        let mut out = Vec::new();
        for table in schema::TABLES {
            let key = table.columns[0].0;
            let rows: Vec<(String,)> = match &self.pool {
                Pool::MySql(p) => {
                    let columns: Vec<String> =
                        table.columns.iter().map(|(c, _)| format!("COALESCE(HEX({c}), '~')")).collect();
                    sqlx::query_as(AssertSqlSafe(format!(
                        "SELECT CONCAT_WS('|', {}) FROM {} ORDER BY {key}",
                        columns.join(", "),
                        table.name
                    )))
                    .fetch_all(p)
                    .await?
                }
                Pool::Postgres(p) => {
                    sqlx::query_as(AssertSqlSafe(format!(
                        "SELECT t::text FROM {} t ORDER BY {key}",
                        table.name
                    )))
                    .fetch_all(p)
                    .await?
                }
            };
            let all: String = rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>().join("\n");
            out.push((table.name.to_owned(), rows.len(), crate::domain::stable_hash(all.as_bytes())));
        }
        Ok(out)
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::MySql(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}
