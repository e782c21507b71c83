//! The command line: one subcommand each, dispatched to the module that does the work.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::{
    config::{self, Purpose},
    daemon,
    mock::{self, MockServer},
    ops, status,
    store::Store,
    telemetry::{self, LogFormat, Output},
};

#[derive(Debug, Parser)]
#[command(
    name = "dvc-sync",
    version,
    about = "Keeps provincial dossiers synchronized with the National Public Service Portal"
)]
pub struct Cli {
    /// Configuration file [default: /etc/dvc-sync/dvc-sync.toml if present, else built-in defaults]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The language of what is printed for people (JSON, CSV and logs never change)
    /// [default: the locale's (LC_ALL, LC_MESSAGES, LANG) when Vietnamese, else English]
    #[arg(long, global = true, value_enum)]
    pub lang: Option<crate::i18n::Lang>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT (exit 0 after a clean drain, 75 after SIGHUP's
    /// drain, for a restart; 78 bad config, 1 fatal)
    Run,
    /// The state of the synchronization, read from the database (exit 0 healthy, 1 degraded, 2 unreadable)
    Status {
        /// JSON with stable field names
        #[arg(long)]
        json: bool,
        /// One dossier: local and national status, sync state, attempts, last error, history
        #[arg(long, value_name = "MAHOSO")]
        dossier: Option<String>,
    },
    /// Validate the configuration and print it with secrets redacted (exit 78 when invalid)
    CheckConfig {
        /// Read the secrets from this directory as the systemd unit hands them over
        /// (national-password, provincial-database-url, ...) [default: $CREDENTIALS_DIRECTORY]
        #[arg(long, value_name = "DIR")]
        credentials: Option<PathBuf>,
    },
    /// Read the first records of the provincial source through the configuration and show
    /// each as it would be sent, or why it would be quarantined (exit 0 all would be sent,
    /// 1 some would be quarantined, 2 the source cannot be read, 78 bad config)
    CheckSource {
        /// How many dossiers to read, from the first
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// JSON instead of text
        #[arg(long)]
        json: bool,
        /// Show names, ID numbers, phones and emails as they are (masked by default)
        #[arg(long)]
        show_personal: bool,
        /// Only this source (a merged province's `[sources.<name>]`); every source by default
        #[arg(long)]
        source: Option<String>,
    },
    /// Re-enqueue parked items: dead dossiers and quarantined records (both when neither flag is given)
    Retry {
        /// Dossiers the national portal refused
        #[arg(long)]
        dead: bool,
        /// Records quarantined locally (they are judged again by the next full pass)
        #[arg(long)]
        quarantined: bool,
        /// Only these (MaHoSo, or a quarantine key)
        mahoso: Vec<String>,
    },
    /// One full reconciliation pass now (by the running daemon if there is one)
    Reconcile {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Read dossiers back from the national portal now and repair what it lost (by the running
    /// daemon if there is one; exit 0 no drift, 1 drift found or a fatal error, 69 nothing
    /// could be read back, 78 bad config or no national account)
    Audit {
        /// Every synchronized dossier (default: the next due share, at least a day's worth)
        #[arg(long)]
        all: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// Look-ups a second for this pass [default: national.audit_per_second, or 1 when that is 0]
        #[arg(long, value_name = "N")]
        per_second: Option<f64>,
    },
    /// The Quyết định 766 indicators computed from the local database for a period, for the
    /// province, per DonViXuLy and per procedure (read-only: the daemon may run; exit 0
    /// printed, 2 the database is unreadable, 64 a bad period)
    Report {
        /// First day of the period, YYYY-MM-DD [default: the first of --to's month]
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Last day of the period, YYYY-MM-DD [default: today]
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// A whole month, YYYY-MM [default when no date is given: the current month]
        #[arg(long, value_name = "MONTH", conflicts_with_all = ["from", "to"])]
        month: Option<String>,
        /// List the dossiers that count late under 2.1, with the reason
        #[arg(long)]
        late: bool,
        /// JSON with stable field names
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV for spreadsheets (with --late: the late dossiers)
        #[arg(long)]
        csv: bool,
    },
    /// A consistent copy of the live database, safe while the daemon runs (exit 0 written and
    /// checked, 1 not)
    Backup {
        /// Where to write it (must not exist yet); created 0600
        path: PathBuf,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Erase these dossiers' personal data from the local database, for an erasure already
    /// carried out at the source (journalled without the data; exit 0, 78 the key is missing)
    Forget {
        /// The dossiers (MaHoSo)
        #[arg(required = true)]
        mahoso: Vec<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Seal every stored body under store.key_file, online beside the running daemon (which
    /// must hold the same key) and resumable (exit 0 sealed, 78 the key is missing or wrong)
    Rekey {
        /// The key the database is sealed with now, for a rotation to store.key_file
        #[arg(long, value_name = "OLD_KEY_FILE")]
        from: Option<PathBuf>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// The whole system in one process on loopback: both mocks, the daemon, faults, and a
    /// verified report (exit 0 only when nothing was lost, duplicated or reordered)
    Demo {
        /// How many dossiers the province files
        #[arg(long, default_value_t = 3_000)]
        dossiers: u32,
        /// Keep the database here (default: a temporary directory)
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// Seed of the simulation and the faults
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A merged province: two provincial systems (H58, then H20 superseding it) and a
        /// cutover midway; the verdict per source
        #[arg(long)]
        merger: bool,
    },
    /// Deterministic simulation of the engine under seeded faults and crashes (for developers)
    #[command(hide = true)]
    Simulate {
        /// Replay one seed and print its report
        #[arg(long)]
        seed: Option<u64>,
        /// How many seeds to run
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// The first seed
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Threads (default: the machine's cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a portal mock (for tests, demos and benchmarks; bind it to loopback)
    Mock {
        #[command(subcommand)]
        portal: MockCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MockCommand {
    /// The national DVCQG integration adapter: sessions or an OAuth2 gateway, the four services, faults
    National(NationalArgs),
    /// A simulated provincial one-stop system serving its dossier listing over HTTP
    Provincial(ProvincialArgs),
    /// The same province written into the OpenCPS v2 tables of a real MariaDB/MySQL or
    /// PostgreSQL database, for the SQL source (runs until SIGTERM/SIGINT)
    Opencps(OpencpsArgs),
}

#[derive(Debug, Args)]
pub struct OpencpsArgs {
    /// An administrator's URL of the database to write (mysql://, mariadb:// or postgres://)
    #[arg(long, env = "DVC_SYNC_MOCK_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Create OpenCPS's tables (with Liferay's indexes) and their reference rows first
    #[arg(long)]
    pub create_schema: bool,
    /// Also create the indexes the SQL source's profile asks the DBA for
    #[arg(long)]
    pub with_indexes: bool,
    /// Create this SELECT-only account (USER:PASSWORD) on the tables the profile reads
    #[arg(long, value_name = "USER:PASSWORD")]
    pub reader: Option<String>,
    /// Share of changes written in a transaction held open while later ones commit
    #[arg(long, default_value_t = 0.02)]
    pub late_commit_rate: f64,
    /// How long such a transaction stays open, at most (ms)
    #[arg(long, default_value_t = 1_500)]
    pub late_commit_ms: u64,
    /// Share of dossiers that also get an inter-agency copy
    #[arg(long, default_value_t = 0.02)]
    pub copy_rate: f64,
    #[command(flatten)]
    pub knobs: mock::provincial::Knobs,
}

#[derive(Debug, Args)]
pub struct MockCommon {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Log format (logs go to stderr)
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct NationalArgs {
    #[command(flatten)]
    pub common: MockCommon,
    /// The adapter account (in --auth oauth2: the gateway's client id)
    #[arg(long, default_value = "dvc-sync")]
    pub username: String,
    /// Its password (in --auth oauth2: the client secret)
    #[arg(long, default_value = "dvc-sync-secret")]
    pub password: String,
    /// session: POST /auth and the session in the body; oauth2: a gateway, POST /token and
    /// Authorization: Bearer
    #[arg(long, value_enum, default_value_t = mock::national::MockAuth::Session)]
    pub auth: mock::national::MockAuth,
    /// The account's unit code; its last segment is the province
    #[arg(long, default_value = mock::catalogue::PROVINCE_UNIT)]
    pub madonvi: String,
    /// A unit code closed into --madonvi by the 2025 merger, whose MaHoSo the account owns too
    /// (repeatable), e.g. --madonvi 000.00.00.H20 --predecessor 000.00.00.H58
    #[arg(long = "predecessor")]
    pub predecessors: Vec<String>,
    #[command(flatten)]
    pub faults: mock::national::Faults,
}

#[derive(Debug, Args)]
pub struct ProvincialArgs {
    #[command(flatten)]
    pub common: MockCommon,
    #[arg(long, default_value = "provincial-secret-key")]
    pub api_key: String,
    #[command(flatten)]
    pub knobs: mock::provincial::Knobs,
}

/// Exit codes, one meaning each (docs/operations.md, "Exit codes"): 0 and 1 are each
/// command's own (healthy / degraded, no drift / drift, ...), 2 the state is unreadable.
pub(crate) const EXIT_UNREADABLE: u8 = 2;
/// The command line is wrong (EX_USAGE): an unknown flag, a bad period.
pub(crate) const EXIT_USAGE: u8 = 64;
/// The national portal could not be reached (EX_UNAVAILABLE): `audit` read nothing back.
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;
/// The configuration is invalid or missing, or credentials it needs are (EX_CONFIG).
pub(crate) const EXIT_CONFIG: u8 = 78;

/// Parses the command line (a usage error exits 64, `--help` and `--version` 0) and runs the
/// command.
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The help in the reader's language, chosen before clap reads the line.
    let lang = crate::help::lang_of_args(&args);
    let mut command = crate::help::localise(Cli::command(), lang);
    let parsed = command.try_get_matches_from_mut(&args).and_then(|matches| {
        if let Some(again) = crate::help::help_subcommand(&matches) {
            // `dvc-sync help CMD` in a rewritten tree: CMD's `--help`, which ends in help.
            return Err(crate::help::localise(Cli::command(), lang)
                .try_get_matches_from(again)
                .err()
                .unwrap_or_else(|| clap::Error::new(clap::error::ErrorKind::DisplayHelp)));
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
    });
    match parsed {
        Ok(cli) => run(cli),
        Err(e) => {
            let _ = e.print();
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_USAGE),
            }
        }
    }
}

/// The configuration for `purpose`, or the exit code after printing every problem.
fn load_config(path: Option<&std::path::Path>, purpose: Purpose) -> Result<config::Config, ExitCode> {
    config::load(path, purpose).map_err(|e| {
        eprint!("{}", e.for_stderr());
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Runs a command to completion and gives the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    crate::i18n::choose_for_process(cli.lang);
    let path = cli.config.as_deref();
    let with = |purpose: Purpose, f: &dyn Fn(config::Config) -> ExitCode| match load_config(path, purpose) {
        Ok(config) => f(config),
        Err(code) => code,
    };
    match cli.command {
        Command::Mock { portal } => block_on(run_mock(portal)),
        Command::Simulate { seed, seeds, from, threads } => simulate(seed, seeds, from, threads),
        Command::Demo { db: Some(_), merger: true, .. } => {
            eprintln!("dvc-sync demo: --merger keeps its database in a temporary directory (no --db)");
            ExitCode::from(EXIT_USAGE)
        }
        Command::Demo { dossiers, db: None, json, seed, merger: true } => block_on(async move {
            let kept = crate::demo_merger::run(dossiers, seed, json).await?;
            Ok(if kept { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }),
        Command::Demo { dossiers, db, json, seed, merger: false } => {
            demo(crate::demo::DemoOptions { dossiers, db, seed, ..Default::default() }, json)
        }
        Command::Status { json, dossier } => {
            with(Purpose::Inspect, &|c| status_command(&c, json, dossier.as_deref()))
        }
        Command::Report { from, to, month, late, json, csv } => {
            let args = ReportArgs { from, to, month, late, json, csv };
            with(Purpose::Inspect, &|c| report_command(&c, &args))
        }
        Command::CheckConfig { credentials } => check_config(path, credentials),
        Command::CheckSource { limit, json, show_personal, source } => {
            with(Purpose::Source, &|c| check_source(c, limit, json, show_personal, source.as_deref()))
        }
        Command::Run => with(Purpose::Run, &|c| run_daemon(c)),
        Command::Retry { dead, quarantined, mahoso } => {
            with(Purpose::Inspect, &|c| retry(&c, dead, quarantined, &mahoso))
        }
        Command::Audit { all, json, per_second } => {
            with(Purpose::Inspect, &|c| audit(c, all, json, per_second))
        }
        Command::Backup { path: to, json } => with(Purpose::Inspect, &|c| backup(&c, &to, json)),
        Command::Reconcile { json } => with(Purpose::Inspect, &|c| reconcile(c, json)),
        Command::Forget { mahoso, json } => with(Purpose::Inspect, &|c| forget(&c, &mahoso, json)),
        Command::Rekey { from, json } => with(Purpose::Inspect, &|c| rekey(&c, from.as_deref(), json)),
    }
}

fn demo(opts: crate::demo::DemoOptions, json: bool) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::Pretty, Output::Stderr, "info");
    }
    block_on(async move {
        let kept = crate::demo::run(opts, json).await?;
        Ok(if kept { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// Credentials as the systemd unit hands them over: the file of each secret key, named as in
/// /etc/dvc-sync/credentials/ (or with the `secret_` prefix of `$CREDENTIALS_DIRECTORY`).
const CREDENTIAL_FILES: &[(&str, &str)] = &[
    ("DVC_SYNC__NATIONAL__PASSWORD_FILE", "national-password"),
    ("DVC_SYNC__NATIONAL__CLIENT_SECRET_FILE", "national-client-secret"),
    ("DVC_SYNC__PROVINCIAL__API_KEY_FILE", "provincial-api-key"),
    ("DVC_SYNC__PROVINCIAL__DATABASE_URL_FILE", "provincial-database-url"),
];

/// `check-config`: which file was read (or that none was), the configuration with secrets
/// redacted, or every problem. With `--credentials DIR` (or `$CREDENTIALS_DIRECTORY`), the
/// secrets come from there as the unit hands them over, so that a packaged setup can be
/// checked from a shell.
fn check_config(path: Option<&std::path::Path>, credentials: Option<PathBuf>) -> ExitCode {
    let credentials = credentials.or_else(|| std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from));
    let mut env: std::collections::HashMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("DVC_SYNC__")).collect();
    if let Some(dir) = &credentials {
        for (var, name) in CREDENTIAL_FILES {
            let file = [dir.join(name), dir.join(format!("secret_{name}"))].into_iter().find(|f| f.is_file());
            if let Some(file) = file {
                env.entry((*var).to_owned()).or_insert_with(|| file.display().to_string());
            }
        }
    }
    let file = path.map(PathBuf::from).or_else(|| {
        let system = std::path::Path::new(config::SYSTEM_PATH);
        system.exists().then(|| system.to_path_buf())
    });
    let lang = crate::i18n::current();
    match &file {
        Some(f) => println!("# {}", crate::tr!(lang, "check-config-file", path = f.display().to_string())),
        None => println!("# {}", crate::tr!(lang, "check-config-no-file", path = config::SYSTEM_PATH)),
    }
    if let Some(dir) = &credentials {
        println!("# {}", crate::tr!(lang, "check-config-credentials", path = dir.display().to_string()));
    }
    match config::load_with_env(path, env, Purpose::Run) {
        Ok(c) => {
            print!("{}", c.render_redacted());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", e.for_stderr());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `check-source`: every source (one report each; JSON: one object for one source, an array
/// for several), or `--source NAME`. The exit code is the worst source's.
fn check_source(
    config: config::Config,
    limit: usize,
    json: bool,
    show_personal: bool,
    only: Option<&str>,
) -> ExitCode {
    telemetry::init(config.telemetry.log_format, Output::Stderr, "error");
    let sources: Vec<_> =
        config.sources.iter().filter(|s| only.is_none_or(|n| s.name == n)).cloned().collect();
    if sources.is_empty() {
        let names: Vec<_> = config.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "dvc-sync check-source: no source {:?} is configured (sources: {})",
            only.unwrap_or(""),
            names.join(", ")
        );
        return ExitCode::from(EXIT_USAGE);
    }
    block_on(async move {
        let mut reports = Vec::new();
        for source in &sources {
            reports
                .push(crate::check_source::check(&config, source, limit.clamp(1, 1000), show_personal).await);
        }
        if json && reports.len() == 1 {
            println!("{}", serde_json::to_string_pretty(&reports[0])?);
        } else if json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        } else {
            let text: Vec<String> =
                reports.iter().map(|r| crate::check_source::render(r, crate::i18n::current())).collect();
            print!("{}", text.join("\n"));
        }
        Ok(ExitCode::from(reports.iter().map(|r| r.exit_code()).max().unwrap_or(0)))
    })
}

fn run_daemon(config: config::Config) -> ExitCode {
    telemetry::init(config.telemetry.log_format, Output::Stdout, "info");
    block_on(async move {
        match daemon::run(config, crate::shutdown::token()).await {
            Ok(()) if crate::shutdown::reload_requested() => Ok(ExitCode::from(crate::shutdown::EXIT_RELOAD)),
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                tracing::error!(event = "daemon_failed", error = crate::say::causes(&e));
                eprintln!("dvc-sync: {}", crate::say::causes(&e));
                let needs_config = e.chain().any(|c| c.downcast_ref::<ops::NeedsConfig>().is_some());
                Ok(if is_key_problem(&e) || needs_config {
                    ExitCode::from(EXIT_CONFIG)
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    })
}

fn forget(config: &config::Config, mahoso: &[String], json: bool) -> ExitCode {
    let result = Store::open_keyed(&config.store.path, &config.store.keys)
        .map_err(anyhow::Error::from)
        .and_then(|store| crate::privacy::forget(&store, mahoso));
    match result {
        Ok(done) if json => {
            println!("{}", serde_json::to_string_pretty(&done).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(done) => {
            print!("{}", crate::summaries::forgotten(&done, crate::i18n::current()));
            ExitCode::SUCCESS
        }
        Err(e) => failed("forget", &e),
    }
}

fn rekey(config: &config::Config, from: Option<&std::path::Path>, json: bool) -> ExitCode {
    match crate::privacy::rekey(config, from) {
        Ok(done) if json => {
            println!("{}", serde_json::to_string_pretty(&done).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(done) => {
            println!("{}", crate::summaries::rekeyed(&done, crate::i18n::current()));
            ExitCode::SUCCESS
        }
        Err(e) => failed("rekey", &e),
    }
}

fn retry(config: &config::Config, dead: bool, quarantined: bool, only: &[String]) -> ExitCode {
    let result = Store::open_keyed(&config.store.path, &config.store.keys)
        .map_err(anyhow::Error::from)
        .and_then(|store| ops::retry(&store, dead, quarantined, only));
    match result {
        Ok(done) => {
            println!("{}", crate::summaries::retried(&done, crate::i18n::current()));
            // Said, but not a failure: what was parked was retried (and retry exits 0).
            if !done.not_parked.is_empty() {
                eprintln!(
                    "dvc-sync retry: not parked, nothing done: {} (`dvc-sync status` lists what is parked)",
                    done.not_parked.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) if is_key_problem(&e) => failed("retry", &e),
        Err(e) => {
            eprintln!("dvc-sync retry: {}", crate::say::causes(&e));
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// Whether the store's keys do not open the database: missing or wrong (the configuration's
/// problem, 78).
fn is_key_problem(e: &anyhow::Error) -> bool {
    use crate::store::StoreError;
    e.chain()
        .any(|c| matches!(c.downcast_ref::<StoreError>(), Some(StoreError::Key(_) | StoreError::KeyFile(_))))
}

/// The exit code of an operator command's failure: 78 for what the configuration lacks.
fn failed(command: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("dvc-sync {command}: {}", crate::say::causes(e));
    if e.downcast_ref::<ops::NeedsConfig>().is_some()
        || e.downcast_ref::<config::ConfigErrors>().is_some()
        || is_key_problem(e)
    {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

fn audit(config: config::Config, all: bool, json: bool, per_second: Option<f64>) -> ExitCode {
    telemetry::init(config.telemetry.log_format, Output::Stderr, "warn");
    let scope = if all { crate::sync::AuditScope::All } else { crate::sync::AuditScope::Due };
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let Ok(runtime) = runtime() else { return ExitCode::FAILURE };
    let report = runtime.block_on(ops::audit(
        &config,
        scope,
        per_second,
        std::time::Duration::from_secs(30 * 24 * 3600),
    ));
    let report = match report {
        Ok(r) => r,
        Err(e) => return failed("audit", &e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", crate::summaries::audit(&report, crate::i18n::current()));
    }
    if report.audited > 0 && report.failed == report.audited {
        eprintln!(
            "dvc-sync audit: no dossier could be read back from the national portal (see the failures above)"
        );
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    if report.drift_found > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn backup(config: &config::Config, to: &std::path::Path, json: bool) -> ExitCode {
    match crate::backup::backup(&config.store.path, to) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                println!("{}", crate::summaries::backed_up(&report, crate::i18n::current()));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dvc-sync backup: {}", crate::say::causes(&e));
            ExitCode::FAILURE
        }
    }
}

fn reconcile(config: config::Config, json: bool) -> ExitCode {
    telemetry::init(config.telemetry.log_format, Output::Stderr, "warn");
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return ExitCode::FAILURE;
    };
    let report = match runtime.block_on(ops::reconcile(&config, std::time::Duration::from_secs(24 * 3600))) {
        Ok(r) => r,
        Err(e) => return failed("reconcile", &e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("{}", crate::summaries::reconciled(&report, crate::i18n::current()));
    }
    ExitCode::SUCCESS
}

fn simulate(seed: Option<u64>, seeds: u64, from: u64, threads: Option<usize>) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::Pretty, Output::Stderr, "info");
    }
    if let Some(seed) = seed {
        let report = crate::sim::run(seed);
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let started = std::time::Instant::now();
    let reports = crate::sim::run_many(from, seeds, threads);
    let failed: Vec<&crate::sim::SimReport> = reports.iter().filter(|r| !r.ok).collect();
    let mut faults: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for r in &reports {
        for (k, v) in &r.faults {
            *faults.entry(k.clone()).or_default() += v;
        }
    }
    let crashes: u64 = reports.iter().map(|r| u64::from(r.crashes)).sum();
    let dossiers: usize = reports.iter().map(|r| r.dossiers).sum();
    println!(
        "{} seeds ({}..{}) in {:.1} s on {threads} threads: {} failed; {dossiers} dossiers, {crashes} crashes, faults {faults:?}",
        reports.len(),
        from,
        from + seeds,
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    for r in &failed {
        println!(
            "seed {} failed: {}
  replay: {}",
            r.seed,
            r.failures.join("; "),
            crate::sim::replay_command(r.seed)
        );
    }
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn status_command(config: &config::Config, json: bool, dossier: Option<&str>) -> ExitCode {
    let path = &config.store.path;
    let unreadable = |e: &dyn std::fmt::Display| {
        eprintln!("dvc-sync status: cannot read the state in {}: {e}", path.display());
        if json && dossier.is_none() {
            let report = status::unreadable(path, &e.to_string());
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        ExitCode::from(EXIT_UNREADABLE)
    };
    let conn = match open_state(path, None) {
        Ok(c) => c,
        Err(e) => return unreadable(&e),
    };
    if let Some(mahoso) = dossier {
        return match status::dossier(&conn, mahoso) {
            Ok(d) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
                } else {
                    print!("{}", crate::summaries::dossier(&d, crate::i18n::current()));
                }
                if matches!(d.sync_state, "in_sync" | "pending" | "retrying") {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => unreadable(&e),
        };
    }
    let thresholds = status::Thresholds::of(config);
    let report = match status::report(&conn, path, jiff::Timestamp::now(), &thresholds) {
        Ok(r) => r,
        Err(e) => return unreadable(&e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", status::render(&report, crate::i18n::current()));
    }
    match report.health {
        status::Health::Ok => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn block_on(fut: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dvc-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dvc-sync: {}", crate::say::causes(&e));
            ExitCode::FAILURE
        }
    }
}

/// `mock opencps`: the province written into a database until stopped.
async fn run_opencps(a: OpencpsArgs) -> anyhow::Result<ExitCode> {
    use crate::{
        mock::opencps::{DbKnobs, Province},
        provincial::sql::{Dialect, Profile},
    };
    let dialect = Dialect::of_url(&a.database_url).ok_or_else(|| {
        anyhow::anyhow!("--database-url must start with mysql://, mariadb:// or postgres://")
    })?;
    let database = a.database_url.rsplit('/').next().unwrap_or("").split('?').next().unwrap_or("").to_owned();
    let db = DbKnobs {
        late_commit_rate: a.late_commit_rate,
        late_commit_ms: a.late_commit_ms,
        copy_rate: a.copy_rate,
        seed: a.knobs.seed,
        ..DbKnobs::default()
    };
    a.knobs.validate().map_err(anyhow::Error::msg)?;
    let cps = a.knobs.changes_per_second;
    let province = std::sync::Arc::new(Province::connect(&a.database_url, a.knobs, db).await?);
    if a.create_schema {
        province.create_schema().await?;
    }
    if a.with_indexes {
        province.execute(&Profile::load("opencps-v2", dialect)?.indexes).await?;
    }
    if let Some(reader) = &a.reader {
        let (user, password) =
            reader.split_once(':').ok_or_else(|| anyhow::anyhow!("--reader USER:PASSWORD"))?;
        province.grant_reader(user, password, &database).await?;
    }
    tracing::info!(event = "mock_started", database = %database, "writing the province into the OpenCPS tables");
    if cps == 0.0 {
        // Every life at once: bulk inserts, then done.
        province.write_backfill(500).await?;
        println!("{}", serde_json::to_string(&province.stats())?);
        province.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let token = crate::shutdown::token();
    let writing = province.run(token.clone());
    token.cancelled().await;
    let _ = writing.await;
    let stats = province.stats();
    println!("{}", serde_json::to_string(&stats)?);
    province.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn run_mock(portal: MockCommand) -> anyhow::Result<ExitCode> {
    match portal {
        MockCommand::National(a) => {
            for unit in std::iter::once(&a.madonvi).chain(&a.predecessors) {
                anyhow::ensure!(
                    crate::domain::mahoso::is_unit_code(unit),
                    "{unit:?} is not a unit code like \"000.00.00.H58\""
                );
            }
            let config = mock::national::NationalConfig {
                username: a.username,
                password: a.password,
                auth: a.auth,
                madonvi: a.madonvi,
                predecessors: a.predecessors,
                faults: a.faults,
            };
            serve_mock(&a.common, 8081, |listener| mock::national::start(listener, config)).await
        }
        MockCommand::Provincial(a) => {
            let config = mock::provincial::ProvincialConfig { api_key: a.api_key, knobs: a.knobs };
            serve_mock(&a.common, 8082, |listener| mock::provincial::start(listener, config)).await
        }
        MockCommand::Opencps(a) => {
            telemetry::init(LogFormat::Pretty, Output::Stderr, "info");
            run_opencps(a).await
        }
    }
}

/// Binds the mock's address, starts it, prints the bound address and serves until a signal.
async fn serve_mock<F>(
    common: &MockCommon,
    default_port: u16,
    start: impl FnOnce(TcpListener) -> F,
) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<MockServer>>,
{
    telemetry::init(common.log_format, Output::Stderr, "info");
    let listen = common.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)));
    let listener =
        TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server = start(listener).await?;
    // The one line tests and scripts read to find the mock.
    println!("{}", server.addr());
    std::io::stdout().flush()?;
    tracing::info!(event = "mock_started", addr = %server.addr());
    let _ = crate::shutdown::signal().await;
    tracing::info!(event = "mock_stopping");
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// The state database, read-only, at this version's schema.
/// With `keys`, the connection reads dossier bodies too (refused when they do not open them);
/// `status` reads none, and works without the key.
fn open_state(
    path: &std::path::Path,
    keys: Option<&crate::store::Keys>,
) -> Result<rusqlite::Connection, String> {
    let conn = crate::store::open_read_only(path).map_err(|e| e.to_string())?;
    match crate::store::schema_version(&conn) {
        Ok(v) if v == crate::store::SCHEMA_VERSION => {
            if let Some(keys) = keys {
                crate::store::read_bodies(&conn, keys).map_err(|e| e.to_string())?;
            }
            Ok(conn)
        }
        Ok(0) => Err("not a dvc-sync database (no schema)".into()),
        Ok(v) if v < crate::store::SCHEMA_VERSION => Err(format!(
            "the database has schema {v}, older than this version's {}: start the daemon once to migrate it",
            crate::store::SCHEMA_VERSION
        )),
        Ok(v) => Err(format!(
            "the database has schema {v}, newer than this version's {}",
            crate::store::SCHEMA_VERSION
        )),
        Err(e) => Err(e.to_string()),
    }
}

struct ReportArgs {
    from: Option<String>,
    to: Option<String>,
    month: Option<String>,
    late: bool,
    json: bool,
    csv: bool,
}

/// The period the flags name; by default the current month (Vietnam local time).
fn report_period(a: &ReportArgs) -> Result<crate::report::Period, String> {
    use crate::report::Period;
    let day = |flag: &str, s: &str| {
        s.parse::<jiff::civil::Date>().map_err(|_| format!("{flag} {s:?} is not a date like 2026-11-30"))
    };
    let today = crate::domain::dates::to_vn_local(jiff::Timestamp::now()).date();
    match (&a.month, &a.from, &a.to) {
        (Some(m), _, _) => Period::month(m),
        (None, None, None) => Period::new(today.first_of_month(), today.last_of_month()),
        (None, from, to) => {
            let to = to.as_deref().map(|t| day("--to", t)).transpose()?.unwrap_or(today);
            let from = from.as_deref().map(|f| day("--from", f)).transpose()?.unwrap_or(to.first_of_month());
            Period::new(from, to)
        }
    }
}

fn report_command(config: &config::Config, a: &ReportArgs) -> ExitCode {
    let period = match report_period(a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dvc-sync report: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path = &config.store.path;
    let read = open_state(path, Some(&config.store.keys)).and_then(|conn| {
        let ctx = crate::report::lateness::Context::now(config.calendar.clone());
        crate::report::from_database(&conn, &period, true, &ctx).map_err(|e| e.to_string())
    });
    let report = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dvc-sync report: cannot read the state in {}: {e}", path.display());
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    let text = if a.json {
        format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default())
    } else if a.csv {
        crate::report::render_csv(&report, a.late)
    } else {
        crate::report::render_table(&report, a.late, crate::i18n::current())
    };
    // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}
