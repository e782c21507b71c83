//! Configuration: built-in defaults (`config/default.toml`) → the file → environment
//! variables (`DVC_SYNC__SECTION__KEY`), the last winning. Every problem is reported at once,
//! each by its key; secrets are a type that never prints, and may come from files that only
//! their owner can read.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use config::{Environment, File, FileFormat, Value, ValueKind};
use serde::de::DeserializeOwned;

use crate::{
    domain::status::NationalStatus,
    i18n::{Lang, Message},
};

/// How logs are written: one JSON object a line (journald, log pipelines) or text for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The defaults, one comment line each: the documentation of every key.
pub(crate) const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Used when no `--config` is given and this file exists.
pub(crate) const SYSTEM_PATH: &str = "/etc/dvc-sync/dvc-sync.toml";

/// A secret value: shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "<redacted>" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    /// The sources dossiers are read from, by name: `[provincial]` alone is the one source
    /// `provincial`; a merged province names several (`[sources.<name>]`).
    pub sources: Vec<ProvincialConfig>,
    pub national: NationalConfig,
    pub status_map: BTreeMap<String, NationalStatus>,
    pub telemetry: TelemetryConfig,
    pub daemon: DaemonConfig,
    /// Office hours, holidays and the receipt rule (`[calendar]`).
    pub calendar: CalendarConfig,
    /// Where the file layer came from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Create the database's directory if it does not exist.
    pub create_dir: bool,
    /// `store.key_file`: the key every stored body is sealed with (docs/personal-data.md).
    pub key_file: Option<PathBuf>,
    /// `store.previous_key_file`: a key older bodies may still be sealed with, during a
    /// rotation (read, never written with).
    pub previous_key_file: Option<PathBuf>,
    /// The keys those files hold, read once.
    pub keys: crate::store::Keys,
    /// `store.personal_data_days`: how long a finished, verified dossier keeps its personal
    /// fields in clear.
    pub personal_data_days: u32,
}

/// Settings of one HTTP peer that both portals share.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub base_url: reqwest::Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub ca_file: Option<PathBuf>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// Which adapter reads the provincial side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The listing of the provincial listing API, over HTTP.
    Http,
    /// The one-stop system's own database, through a source profile.
    Sql,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Http => "http",
            SourceKind::Sql => "sql",
        }
    }
}

/// The SQL source's settings (`provincial.kind = "sql"`).
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// `mysql://`, `mariadb://` or `postgres://`; the password is in it.
    pub database_url: Secret,
    /// A built-in profile's name or a profile file's path.
    pub profile: String,
    /// The zone of zone-less DATETIME and TIMESTAMP values.
    pub timezone: jiff::tz::TimeZone,
    /// Its name as configured, for messages and PostgreSQL's session.
    pub timezone_name: String,
    /// Bound to a profile's `:document_url`: where the system serves its files.
    pub document_url: String,
    pub pool_size: usize,
    pub statement_timeout: Duration,
}

/// One source of dossiers (`[provincial]`, or `[sources.<name>]` of a merged province).
#[derive(Debug, Clone)]
pub struct ProvincialConfig {
    /// `provincial`, or the `<name>` of `[sources.<name>]`.
    pub name: String,
    /// Where its keys are: `provincial` or `sources.<name>` (for messages).
    pub section: String,
    /// `sources.<name>.supersedes`: the sources whose copy of a dossier this one's replaces.
    pub supersedes: Vec<String>,
    pub kind: SourceKind,
    pub http: HttpConfig,
    pub api_key: Secret,
    /// Set when `kind` is `sql`.
    pub sql: Option<SqlConfig>,
    pub poll_interval: Duration,
    pub page_size: usize,
    pub look_back: Duration,
    pub reconcile_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct NationalConfig {
    pub http: HttpConfig,
    /// How calls are authorised: the adapter's own session, or a gateway's OAuth2 token.
    pub auth: NationalAuth,
    /// Session mode only (empty with OAuth2: the gateway holds the adapter's account).
    pub username: String,
    pub password: Secret,
    pub madonvi: String,
    /// `national.predecessors`: unit codes closed into `madonvi` by the 2025 merger.
    pub predecessors: Vec<String>,
    pub dstcode: Option<String>,
    pub batch_size: usize,
    pub max_concurrency: usize,
    pub session_renew: Duration,
    /// Look-ups a second the background audit may make; 0: no background audit.
    pub audit_per_second: f64,
    /// Every synchronized dossier is verified at least once in this time.
    pub audit_cycle: Duration,
}

/// `national.auth`.
#[derive(Debug, Clone)]
pub enum NationalAuth {
    /// `POST /auth` with username and password; the session travels in each call's body.
    Session,
    /// An LGSP/NGSP gateway: an OAuth2 client-credentials token from `token_url`, sent as
    /// `Authorization: Bearer` on every call.
    OAuth2 { token_url: reqwest::Url, client_id: String, client_secret: Secret },
}

/// The working calendar and the rule it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarConfig {
    pub calendar: crate::domain::calendar::Calendar,
    /// Working hours within which an online dossier must be received (8).
    pub receipt_hours: f64,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig { calendar: crate::domain::calendar::Calendar::official(), receipt_hours: 8.0 }
    }
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token `/` and `/metrics` require (read from `telemetry.access_token_file`);
    /// without it they are served on loopback only.
    pub access_token: Option<Secret>,
    /// How often the current month's 766 indicators are computed for /metrics (None: off).
    pub indicators_every: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub drain: Duration,
    pub heartbeat: Duration,
    pub stale_heartbeat: Duration,
    pub outbox_age_threshold: Duration,
}

/// What the configuration is for: running the daemon needs the credentials; reading the
/// provincial source (`check-source`) needs only the source's; inspecting the database
/// (`status`, `retry`) needs only the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    Source,
    Inspect,
}

/// What the configuration lacks for a command (credentials it needs), or what it says that
/// the database contradicts (a changed unit code): exit 78.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NeedsConfig(pub(crate) String);

/// Every problem found, each with the key it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<(String, Problem)>);

impl fmt::Display for ConfigErrors {
    /// One line per problem, in the reader's language.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(crate::i18n::current(), false))
    }
}

impl ConfigErrors {
    /// The report: the frame, then each problem by its key; `wrap` folds long problems to 100
    /// columns (for a terminal; a pipe or the journal keeps one line per problem, to grep).
    pub fn render(&self, lang: Lang, wrap: bool) -> String {
        let mut out = crate::tr!(lang, "config-invalid", n = self.0.len());
        out.push('\n');
        for (key, problem) in &self.0 {
            let line = format!("{key}: {}", problem.write(lang));
            if wrap {
                out.push_str(&crate::i18n::wrap_indented("  ", "      ", &line));
            } else {
                out.push_str("  ");
                out.push_str(&line);
            }
            out.push('\n');
        }
        out
    }

    /// [`ConfigErrors::render`] for standard error: wrapped when that is a terminal.
    pub fn for_stderr(&self) -> String {
        use std::io::IsTerminal;
        self.render(crate::i18n::current(), std::io::stderr().is_terminal())
    }

    fn one(key: impl Into<String>, message: Message) -> ConfigErrors {
        ConfigErrors(vec![(key.into(), Problem::new(message))])
    }
}

/// What is wrong with one key: a message from the catalogues, shown in the reader's language;
/// as text (through `Deref`, for tests and logs) it is the English.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    message: Message,
    /// The environment variable that set the value, when one did (that is what to fix).
    env_var: Option<String>,
    english: String,
}

impl Problem {
    fn new(message: Message) -> Problem {
        Problem::from_env(message, None)
    }

    fn from_env(message: Message, env_var: Option<String>) -> Problem {
        let mut problem = Problem { message, env_var, english: String::new() };
        problem.english = problem.write(Lang::En);
        problem
    }

    /// The problem in `lang`.
    pub fn write(&self, lang: Lang) -> String {
        let text = self.message.write(lang);
        match &self.env_var {
            Some(var) => format!("{text} {}", crate::tr!(lang, "cfg-set-by-env", var = var.as_str())),
            None => text,
        }
    }
}

impl std::ops::Deref for Problem {
    type Target = str;

    fn deref(&self) -> &str {
        &self.english
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.english)
    }
}

impl std::error::Error for ConfigErrors {}

/// Keys whose values are secrets, with the key of their file alternative.
const SECRETS: &[(&str, &str)] = &[
    ("provincial.api_key", "provincial.api_key_file"),
    ("national.password", "national.password_file"),
    ("provincial.database_url", "provincial.database_url_file"),
    ("national.client_secret", "national.client_secret_file"),
];

/// Loads the configuration from `path` (or the system file, or nothing) and the process
/// environment.
pub fn load(path: Option<&Path>, purpose: Purpose) -> Result<Config, ConfigErrors> {
    let env: HashMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("DVC_SYNC__")).collect();
    load_with_env(path, env, purpose)
}

/// As [`load`], with the environment given (tests).
pub(crate) fn load_with_env(
    path: Option<&Path>,
    env: HashMap<String, String>,
    purpose: Purpose,
) -> Result<Config, ConfigErrors> {
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Path::new(SYSTEM_PATH).exists().then(|| PathBuf::from(SYSTEM_PATH)),
    };
    build(file, env, purpose)
}

/// The built-in defaults with `values` (`DVC_SYNC__SECTION__KEY` names) on top, no file read:
/// for the demo, which must not pick up a production configuration.
pub fn from_values(values: HashMap<String, String>, purpose: Purpose) -> Result<Config, ConfigErrors> {
    build(None, values, purpose)
}

fn build(
    file: Option<PathBuf>,
    env: HashMap<String, String>,
    purpose: Purpose,
) -> Result<Config, ConfigErrors> {
    let mut builder = config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
    if let Some(file) = &file {
        let text = read_config_file(file)?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    builder = builder.add_source(
        Environment::with_prefix("DVC_SYNC")
            .prefix_separator("__")
            .separator("__")
            .source(Some(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect())),
    );
    let merged = builder.build().map_err(|e| {
        let key = file.as_ref().map_or_else(|| "DVC_SYNC__*".to_owned(), |f| f.display().to_string());
        ConfigErrors::one(key, Message::new("cfg-merge").text("detail", e.to_string()))
    })?;
    // `[provincial]` as the user wrote it (the defaults always have one).
    let user_provincial = env.keys().any(|k| k.starts_with("DVC_SYNC__PROVINCIAL__"))
        || file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).is_some_and(|text| {
            toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("provincial"))
        });
    let from_env = env.keys().cloned().collect();
    let mut r = Reader { cfg: &merged, problems: Vec::new(), from_env, user_provincial };
    r.check_unknown_keys();
    let config = r.read(file, purpose);
    match config {
        Some(config) if r.problems.is_empty() => Ok(config),
        _ => Err(ConfigErrors(r.problems)),
    }
}

/// No duration key means more than this (a typo such as `1e10` would stall a worker for
/// centuries).
const MAX_SECONDS: f64 = 30.0 * 86_400.0;

/// The type a key wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Text,
    Integer,
    Number,
    Bool,
}

/// The text of a configuration file, checked for TOML syntax. A syntax error names the line,
/// the column and the key, never the line's text: it may hold a secret (a password whose
/// closing quote is missing runs on).
fn read_config_file(path: &Path) -> Result<String, ConfigErrors> {
    let where_ = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => Message::new("cfg-file-missing"),
            _ => Message::new("cfg-file-unreadable").text("detail", e.to_string()),
        };
        ConfigErrors::one(where_.clone(), message)
    })?;
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let key =
            text.lines().nth(line - 1).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim()).filter(|k| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            });
        let detail = e.message().lines().next().unwrap_or("").trim();
        let message = match key {
            Some(key) => Message::new("cfg-toml-syntax-key").text("key", key),
            None => Message::new("cfg-toml-syntax"),
        };
        let message = message.int("line", line).int("column", column).text("detail", detail);
        return Err(ConfigErrors::one(where_, message));
    }
    Ok(text)
}

struct Reader<'a> {
    cfg: &'a config::Config,
    problems: Vec<(String, Problem)>,
    /// The environment variables that were set.
    from_env: BTreeSet<String>,
    /// The file or the environment sets `[provincial]` keys.
    user_provincial: bool,
}

/// A source's name: lowercase letters, digits, `-` and `_` (it is a metric label).
pub fn is_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Reader<'_> {
    /// A problem, by its key; by the environment variable too when that is where the value
    /// came from (that is what the operator must fix).
    fn problem(&mut self, key: &str, message: Message) {
        let var = Some(env_var(key)).filter(|v| self.from_env.contains(v));
        self.problems.push((key.to_owned(), Problem::from_env(message, var)));
    }

    /// A problem that is just its message's id.
    fn plainly(&mut self, key: &str, id: &'static str) {
        self.problem(key, Message::new(id));
    }

    /// Where `key`'s value is: a named source's key it does not set is `[provincial]`'s
    /// default.
    fn at<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        if let Some(rest) = key.strip_prefix("sources.")
            && let Some((_, name)) = rest.split_once('.')
            && self.cfg.get::<Value>(key).is_err()
        {
            return format!("provincial.{name}").into();
        }
        key.into()
    }

    fn get<T: DeserializeOwned>(&mut self, key: &str, what: &str) -> Option<T> {
        match self.cfg.get::<T>(&self.at(key)) {
            Ok(v) => Some(v),
            Err(e) => {
                let detail = e.to_string();
                let detail = detail.split(" for key").next().unwrap_or(&detail).to_owned();
                self.problem(
                    key,
                    Message::new("cfg-expected-detail").text("what", what).text("detail", detail),
                );
                None
            }
        }
    }

    /// The value at `key` if it is of the `want`ed type as written (a file's value as TOML
    /// typed it; the environment's, which is always text, as it parses): no boolean, fraction
    /// or exponent is turned into a number, no number into text. The problem names the key and
    /// the type, never the value.
    fn typed(&mut self, key: &str, want: Want) -> Option<Value> {
        let value = match self.cfg.get::<Value>(&self.at(key)) {
            Ok(v) => v,
            Err(e) => {
                self.problem(key, Message::new("cfg-cannot-read").text("detail", e.to_string()));
                return None;
            }
        };
        let given = match &value.kind {
            ValueKind::Boolean(_) => "boolean",
            ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => "integer",
            ValueKind::Float(_) => "float",
            // Text is refused only where it does not read as the type wanted (the environment
            // gives only text).
            ValueKind::String(_) => "not-one",
            ValueKind::Table(_) => "table",
            ValueKind::Array(_) => "list",
            ValueKind::Nil => "nothing",
        };
        let ok = match (&value.kind, want) {
            (ValueKind::String(_), Want::Text) => true,
            (ValueKind::Boolean(_), Want::Bool) => true,
            (
                ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_),
                Want::Integer,
            ) => true,
            (
                ValueKind::I64(_)
                | ValueKind::I128(_)
                | ValueKind::U64(_)
                | ValueKind::U128(_)
                | ValueKind::Float(_),
                Want::Number,
            ) => true,
            // The environment gives text: it must read as the type, strictly.
            (ValueKind::String(s), Want::Integer) => s.trim().parse::<i64>().is_ok(),
            (ValueKind::String(s), Want::Number) => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
            (ValueKind::String(s), Want::Bool) => matches!(s.trim(), "true" | "false"),
            _ => false,
        };
        if !ok {
            let wanted = match want {
                Want::Text => "text",
                Want::Integer => "integer",
                Want::Number => "number",
                Want::Bool => "bool",
            };
            self.problem(key, Message::new("cfg-expected").text("wanted", wanted).text("given", given));
            return None;
        }
        Some(value)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.typed(key, Want::Text)?;
        self.get::<String>(key, "string")
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        self.typed(key, Want::Bool)?;
        self.get::<bool>(key, "bool")
    }

    /// A number (whole or not) at `key`.
    fn number(&mut self, key: &str) -> Option<f64> {
        self.typed(key, Want::Number)?;
        self.get::<f64>(key, "number")
    }

    fn seconds(&mut self, key: &str, allow_zero: bool) -> Option<Duration> {
        let v = self.number(key)?;
        if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) {
            self.plainly(key, if allow_zero { "cfg-seconds-zero-or-more" } else { "cfg-seconds-positive" });
            return None;
        }
        if v > MAX_SECONDS {
            self.problem(key, Message::new("cfg-seconds-max").text("max", MAX_SECONDS.to_string()));
            return None;
        }
        Some(Duration::from_secs_f64(v))
    }

    /// As [`Reader::seconds`], within `min..=max` seconds (`why` says what the bounds protect: a
    /// variant of the message `cfg-seconds-within`).
    fn seconds_within(&mut self, key: &str, min: f64, max: f64, why: &str) -> Option<Duration> {
        let d = self.seconds(key, min == 0.0)?;
        if d.as_secs_f64() < min || d.as_secs_f64() > max {
            let message = Message::new("cfg-seconds-within")
                .text("min", min.to_string())
                .text("max", max.to_string())
                .text("why", why);
            self.problem(key, message);
            return None;
        }
        Some(d)
    }

    fn count(&mut self, key: &str, min: u64, max: u64) -> Option<usize> {
        self.typed(key, Want::Integer)?;
        let v = self.get::<i64>(key, "integer")?;
        if v < min as i64 || v > max as i64 {
            let message = Message::new("cfg-count-within")
                .text("min", min.to_string())
                .text("max", max.to_string())
                .text("value", v.to_string());
            self.problem(key, message);
            return None;
        }
        usize::try_from(v).ok()
    }

    fn url(&mut self, key: &str) -> Option<reqwest::Url> {
        let s = self.string(key)?;
        match reqwest::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.problem(key, Message::new("cfg-url-scheme").text("value", format!("{s:?}")));
                None
            }
            Err(e) => {
                let message = Message::new("cfg-url-invalid").text("value", format!("{s:?}"));
                self.problem(key, message.text("detail", e.to_string()));
                None
            }
        }
    }

    fn optional_path(&mut self, key: &str) -> Option<Option<PathBuf>> {
        let s = self.string(key)?;
        if s.is_empty() {
            return Some(None);
        }
        let path = PathBuf::from(&s);
        if !path.is_file() {
            self.problem(key, Message::new("cfg-not-a-file").text("path", s));
            return None;
        }
        if key.ends_with("ca_file") {
            let certificates =
                std::fs::read(&path).ok().and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok());
            if certificates.is_none_or(|c| c.is_empty()) {
                self.problem(key, Message::new("cfg-no-pem").text("path", s));
                return None;
            }
        }
        Some(Some(path))
    }

    /// A secret from its key or its `_file` key, never both.
    fn secret(&mut self, key: &str, file_key: &str, required: bool) -> Option<Secret> {
        let inline = self.string(key)?;
        let file = self.string(file_key)?;
        match (inline.is_empty(), file.is_empty()) {
            (false, false) => {
                self.problem(key, Message::new("cfg-secret-both").text("key", key).text("file", file_key));
                None
            }
            (false, true) => Some(Secret(inline)),
            (true, false) => match read_secret_file(Path::new(&file)) {
                Ok(s) => Some(Secret(s)),
                Err(e) => {
                    self.problem(file_key, e);
                    None
                }
            },
            (true, true) if required => {
                self.problem(key, Message::new("cfg-required-or").text("file", file_key));
                None
            }
            (true, true) => Some(Secret::default()),
        }
    }

    /// `national.auth` and, for `oauth2`, the gateway's token endpoint and client.
    fn national_auth(&mut self, run: bool) -> Option<NationalAuth> {
        match self.string("national.auth")?.as_str() {
            "session" => Some(NationalAuth::Session),
            "oauth2" => {
                let token_url = self.url("national.token_url");
                let client_id = self.string("national.client_id");
                if run && client_id.as_deref() == Some("") {
                    self.plainly("national.client_id", "cfg-required-oauth2");
                }
                let client_secret = self.secret(SECRETS[3].0, SECRETS[3].1, run);
                Some(NationalAuth::OAuth2 {
                    token_url: token_url?,
                    client_id: client_id?,
                    client_secret: client_secret?,
                })
            }
            other => {
                self.problem("national.auth", Message::new("cfg-auth").text("value", format!("{other:?}")));
                None
            }
        }
    }

    fn http(&mut self, section: &str) -> Option<HttpConfig> {
        let k = |name: &str| format!("{section}.{name}");
        let base_url = self.url(&k("base_url"));
        let connect_timeout = self.seconds(&k("connect_timeout_seconds"), false);
        let request_timeout = self.seconds(&k("request_timeout_seconds"), false);
        let max_response_bytes = self.count(&k("max_response_bytes"), 1024, 1 << 32);
        let ca_file = self.optional_path(&k("ca_file"));
        let retry_initial = self.seconds(&k("retry_initial_seconds"), false);
        let retry_max = self.seconds(&k("retry_max_seconds"), false);
        if let (Some(a), Some(b)) = (retry_initial, retry_max)
            && b < a
        {
            self.plainly(&k("retry_max_seconds"), "cfg-retry-max");
        }
        Some(HttpConfig {
            base_url: base_url?,
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            max_response_bytes: max_response_bytes?,
            ca_file: ca_file?,
            retry_initial: retry_initial?,
            retry_max: retry_max?,
        })
    }

    fn status_map(&mut self) -> Option<BTreeMap<String, NationalStatus>> {
        let table = match self.cfg.get_table("status_map") {
            Ok(t) => t,
            Err(e) => {
                self.problem("status_map", Message::new("cfg-status-map").text("detail", e.to_string()));
                return None;
            }
        };
        let mut map = BTreeMap::new();
        let mut ok = true;
        for (local, value) in table {
            let key = format!("status_map.{local}");
            // A whole number (or, from the environment, text that reads as one), never a
            // boolean or a fraction converted.
            let whole = match &value.kind {
                ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
                    value.clone().into_int().ok()
                }
                ValueKind::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match whole.and_then(|c| u8::try_from(c).ok()).and_then(NationalStatus::new) {
                Some(status) => {
                    map.insert(local, status);
                }
                None => {
                    self.problem(&key, Message::new("cfg-status-code").text("value", value.to_string()));
                    ok = false;
                }
            }
        }
        ok.then_some(map)
    }

    /// `provincial.database_timezone`: an IANA name (the system's tz database), `UTC`, or a
    /// fixed offset such as `+07:00`.
    fn timezone(&mut self, key: &str) -> Option<(jiff::tz::TimeZone, String)> {
        let name = self.string(key)?;
        let parsed = match name.as_str() {
            "" => Err(Message::new("cfg-empty")),
            // Vietnam has no DST: its fixed offset is exact even without a tz database.
            "Asia/Ho_Chi_Minh" | "Asia/Saigon" => {
                Ok(jiff::tz::TimeZone::get(&name).unwrap_or_else(|_| crate::domain::dates::vn_tz()))
            }
            n if n.starts_with(['+', '-']) => parse_offset(n)
                .map(jiff::tz::TimeZone::fixed)
                .ok_or_else(|| Message::new("cfg-offset").text("value", format!("{n:?}"))),
            n => jiff::tz::TimeZone::get(n).map_err(|e| {
                Message::new("cfg-timezone").text("value", format!("{n:?}")).text("detail", e.to_string())
            }),
        };
        match parsed {
            Ok(tz) => Some((tz, name)),
            Err(e) => {
                self.problem(key, e);
                None
            }
        }
    }

    /// The SQL source's keys in `section`, checked only when its `kind = "sql"`.
    fn sql(&mut self, section: &str, required: bool) -> Option<SqlConfig> {
        let k = |name: &str| format!("{section}.{name}");
        let url_key = k("database_url");
        let url = self.secret(&url_key, &k("database_url_file"), required)?;
        let scheme = url.expose().split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let supported = matches!(scheme.as_deref(), Some("mysql" | "mariadb" | "postgres" | "postgresql"));
        if !url.is_empty() && !supported {
            // Never echo the URL: the password is in it.
            self.plainly(&url_key, "cfg-sql-scheme");
        } else if !url.is_empty() && !reqwest::Url::parse(url.expose()).is_ok_and(|u| u.host().is_some()) {
            self.plainly(&url_key, "cfg-sql-url");
        }
        let profile = self.string(&k("profile"));
        if profile.as_deref() == Some("") {
            self.plainly(&k("profile"), "cfg-sql-profile");
        }
        let timezone = self.timezone(&k("database_timezone"));
        let document_url = self.string(&k("document_url")).map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &document_url
            && !u.is_empty()
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            self.plainly(&k("document_url"), "cfg-document-url");
        }
        let pool_size = self.count(&k("database_pool_size"), 1, 32);
        let statement_timeout = self.seconds(&k("statement_timeout_seconds"), false);
        let (timezone, timezone_name) = timezone?;
        Some(SqlConfig {
            database_url: url,
            profile: profile?,
            timezone,
            timezone_name,
            document_url: document_url?,
            pool_size: pool_size?,
            statement_timeout: statement_timeout?,
        })
    }

    /// Every section read, so that every problem is named at once; the configuration only if
    /// there were none.
    fn read(&mut self, source: Option<PathBuf>, purpose: Purpose) -> Option<Config> {
        let store = self.store();
        let sources = self.sources(matches!(purpose, Purpose::Run | Purpose::Source));
        let national = self.national(purpose == Purpose::Run);
        let status_map = self.status_map();
        let telemetry = self.telemetry();
        let daemon = self.daemon();
        let calendar = self.calendar();
        Some(Config {
            store: store?,
            sources: sources?,
            national: national?,
            status_map: status_map?,
            telemetry: telemetry?,
            daemon: daemon?,
            calendar: calendar?,
            source,
        })
    }

    fn store(&mut self) -> Option<StoreConfig> {
        let store_path = self.string("store.path");
        if store_path.as_deref() == Some("") {
            self.plainly("store.path", "cfg-empty");
        }
        let create_dir = self.boolean("store.create_dir");
        let key_file = self.optional_path("store.key_file");
        let previous_key_file = self.optional_path("store.previous_key_file");
        let personal_data_days = self.count("store.personal_data_days", 0, 3_650);
        let (key_file, previous_key_file) = (key_file?, previous_key_file?);
        let mut load =
            |key: &str, file: &Option<PathBuf>| match file.as_deref().map(crate::store::SealKey::from_file) {
                None => Some(None),
                Some(Ok(k)) => Some(Some(k)),
                Some(Err(e)) => {
                    self.problem(key, e.message());
                    None
                }
            };
        let sealing = load("store.key_file", &key_file);
        let previous = load("store.previous_key_file", &previous_key_file);
        if key_file.is_none() && previous_key_file.is_some() {
            // Bodies would be written unsealed beside sealed ones.
            self.plainly("store.previous_key_file", "cfg-previous-key");
            return None;
        }
        let keys = crate::store::Keys::new(sealing?, previous?);
        Some(StoreConfig {
            path: PathBuf::from(store_path?),
            create_dir: create_dir?,
            key_file,
            previous_key_file,
            keys,
            personal_data_days: personal_data_days? as u32,
        })
    }

    /// Every source: `[provincial]` alone is the source `provincial`; `[sources.<name>]` names
    /// several (never both).
    fn sources(&mut self, needs_source: bool) -> Option<Vec<ProvincialConfig>> {
        let named: Vec<String> = match self.cfg.get_table("sources") {
            Ok(table) => table.into_keys().collect(),
            Err(_) => Vec::new(),
        };
        if named.is_empty() {
            return Some(vec![self.source("provincial", "provincial", needs_source)?]);
        }
        if self.user_provincial {
            self.plainly("provincial", "cfg-provincial-and-sources");
            return None;
        }
        let mut names = named;
        names.sort();
        let mut sources = Vec::new();
        let mut ok = true;
        for name in &names {
            let section = format!("sources.{name}");
            if !is_source_name(name) {
                self.plainly(&section, "cfg-source-name");
                ok = false;
                continue;
            }
            match self.source(name, &section, needs_source) {
                Some(s) => sources.push(s),
                None => ok = false,
            }
        }
        // Ownership moves one way: a source that (through others) supersedes itself would
        // take dossiers back and forth.
        for source in &sources {
            let mut seen = vec![source.name.as_str()];
            let mut next: Vec<&str> = source.supersedes.iter().map(String::as_str).collect();
            while let Some(n) = next.pop() {
                if n == source.name {
                    self.problem(
                        &format!("{}.supersedes", source.section),
                        Message::new("cfg-supersedes-cycle")
                            .text("name", source.name.as_str())
                            .text("through", seen[1..].join(", ")),
                    );
                    ok = false;
                    break;
                }
                if !seen.contains(&n) {
                    seen.push(n);
                    next.extend(
                        sources
                            .iter()
                            .filter(|s| s.name == n)
                            .flat_map(|s| s.supersedes.iter().map(String::as_str)),
                    );
                }
            }
        }
        ok.then_some(sources)
    }

    /// One source's keys, under `section`.
    fn source(&mut self, name: &str, section: &str, needs_source: bool) -> Option<ProvincialConfig> {
        let k = |key: &str| format!("{section}.{key}");
        let kind = match self.string(&k("kind")).as_deref() {
            Some("http") => Some(SourceKind::Http),
            Some("sql") => Some(SourceKind::Sql),
            Some(other) => {
                self.problem(&k("kind"), Message::new("cfg-kind").text("value", format!("{other:?}")));
                None
            }
            None => None,
        };
        let http = self.http(section);
        // Each kind reads only its own secret: the unit names both files, and the one the
        // configured kind does not use may be absent.
        let api_key = match kind {
            Some(SourceKind::Sql) => Some(Secret::default()),
            _ => self.secret(&k("api_key"), &k("api_key_file"), needs_source),
        };
        let sql = match kind {
            Some(SourceKind::Sql) => Some(self.sql(section, needs_source)),
            _ => None,
        };
        let poll_interval = self.seconds_within(&k("poll_interval_seconds"), 0.1, 3600.0, "poll");
        let page_size = self.count(&k("page_size"), 1, 1000);
        let look_back = self.seconds(&k("look_back_seconds"), true);
        let reconcile = self.seconds(&k("reconcile_interval_seconds"), true);
        let supersedes =
            if section == "provincial" { Some(Vec::new()) } else { self.supersedes(name, section) };
        Some(ProvincialConfig {
            name: name.to_owned(),
            section: section.to_owned(),
            supersedes: supersedes?,
            kind: kind?,
            http: http?,
            api_key: api_key?,
            sql: match sql {
                Some(sql) => Some(sql?),
                None => None,
            },
            poll_interval: poll_interval?,
            page_size: page_size?,
            look_back: look_back?,
            reconcile_interval: Some(reconcile?).filter(|d| !d.is_zero()),
        })
    }

    /// `sources.<name>.supersedes`: a list of other sources' names (configured or retired).
    fn supersedes(&mut self, name: &str, section: &str) -> Option<Vec<String>> {
        let key = format!("{section}.supersedes");
        if self.cfg.get::<Value>(&key).is_err() {
            return Some(Vec::new());
        }
        let list = self.names(&key)?;
        let mut ok = true;
        for other in &list {
            if !is_source_name(other) || other == name {
                self.problem(
                    &key,
                    Message::new("cfg-not-another-source").text("value", format!("{other:?}")),
                );
                ok = false;
            }
        }
        ok.then_some(list)
    }

    /// A list of text values (a TOML array; from the environment, comma-separated).
    fn names(&mut self, key: &str) -> Option<Vec<String>> {
        let value = self.cfg.get::<Value>(key).ok()?;
        let items: Vec<String> = match value.kind {
            ValueKind::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item.kind {
                        ValueKind::String(s) => out.push(s.trim().to_owned()),
                        _ => {
                            self.plainly(key, "cfg-list");
                            return None;
                        }
                    }
                }
                out
            }
            ValueKind::String(s) => {
                s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
            }
            _ => {
                self.plainly(key, "cfg-list");
                return None;
            }
        };
        Some(items)
    }

    fn national(&mut self, run: bool) -> Option<NationalConfig> {
        let http = self.http("national");
        let auth = self.national_auth(run);
        // By the key itself: an invalid token_url must not make the session's keys required.
        let oauth2 = self.cfg.get::<String>("national.auth").is_ok_and(|a| a == "oauth2");
        let username = self.string("national.username");
        // Each mode reads only its own secret (the unit hands over both files' names).
        let password =
            if oauth2 { Some(Secret::default()) } else { self.secret(SECRETS[1].0, SECRETS[1].1, run) };
        let madonvi = self.string("national.madonvi");
        if run {
            let mut required = vec![("national.madonvi", &madonvi)];
            if !oauth2 {
                required.push(("national.username", &username));
            }
            for (key, value) in required {
                if value.as_deref() == Some("") {
                    self.plainly(key, "cfg-required");
                }
            }
        }
        if let Some(code) = madonvi.as_deref()
            && !code.is_empty()
            && !crate::domain::mahoso::is_unit_code(code)
        {
            self.problem(
                "national.madonvi",
                Message::new("cfg-unit-code").text("value", format!("{code:?}")),
            );
        }
        let predecessors = self.names("national.predecessors").unwrap_or_default();
        for code in &predecessors {
            if !crate::domain::mahoso::is_unit_code(code) {
                self.problem(
                    "national.predecessors",
                    Message::new("cfg-unit-code").text("value", format!("{code:?}")),
                );
            } else if madonvi.as_deref() == Some(code.as_str()) {
                self.problem(
                    "national.predecessors",
                    Message::new("cfg-predecessor-self").text("code", code.as_str()),
                );
            }
        }
        let dstcode = self.string("national.dstcode");
        let batch_size = self.count("national.batch_size", 1, 1000);
        let max_concurrency = self.count("national.max_concurrency", 1, 256);
        let session_renew = self.seconds("national.session_renew_seconds", false);
        let (audit_per_second, audit_cycle) = self.audit_pace();
        Some(NationalConfig {
            http: http?,
            auth: auth?,
            username: username?,
            password: password?,
            madonvi: madonvi?,
            predecessors,
            dstcode: dstcode.filter(|d| !d.is_empty()),
            batch_size: batch_size?,
            max_concurrency: max_concurrency?,
            session_renew: session_renew?,
            audit_per_second: audit_per_second?,
            audit_cycle: audit_cycle?,
        })
    }

    /// The audit's rate and cycle.
    fn audit_pace(&mut self) -> (Option<f64>, Option<Duration>) {
        let per_second = self.number("national.audit_per_second").filter(|v| {
            let ok = v.is_finite() && (0.0..=1000.0).contains(v);
            if !ok {
                self.plainly("national.audit_per_second", "cfg-audit-rate");
            }
            ok
        });
        let cycle = self.number("national.audit_cycle_days").and_then(|days| {
            if days.is_finite() && days > 0.0 && days <= 3650.0 {
                Some(Duration::from_secs_f64(days * 86_400.0))
            } else {
                self.plainly("national.audit_cycle_days", "cfg-audit-cycle");
                None
            }
        });
        (per_second, cycle)
    }

    fn telemetry(&mut self) -> Option<TelemetryConfig> {
        let log_format = match self.string("telemetry.log_format").as_deref() {
            Some("json") => Some(LogFormat::Json),
            Some("pretty") => Some(LogFormat::Pretty),
            Some(other) => {
                self.problem(
                    "telemetry.log_format",
                    Message::new("cfg-log-format").text("value", format!("{other:?}")),
                );
                None
            }
            None => None,
        };
        let metrics_listen = match self.string("telemetry.metrics_listen") {
            Some(s) if s.is_empty() => Some(None),
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(addr) => Some(Some(addr)),
                Err(_) => {
                    self.problem(
                        "telemetry.metrics_listen",
                        Message::new("cfg-listen").text("value", format!("{s:?}")),
                    );
                    None
                }
            },
            None => None,
        };
        let indicators_every = self.seconds("telemetry.indicators_seconds", true);
        let access_token = match self.optional_path("telemetry.access_token_file") {
            Some(Some(path)) => match read_secret_file(&path) {
                Ok(token) if token.trim().len() >= 16 => Some(Some(Secret::new(token.trim()))),
                Ok(_) => {
                    self.plainly("telemetry.access_token_file", "cfg-token-short");
                    None
                }
                Err(e) => {
                    self.problem("telemetry.access_token_file", e);
                    None
                }
            },
            Some(None) => Some(None),
            None => None,
        };
        Some(TelemetryConfig {
            log_format: log_format?,
            metrics_listen: metrics_listen?,
            access_token: access_token?,
            indicators_every: Some(indicators_every?).filter(|d| !d.is_zero()),
        })
    }

    fn calendar(&mut self) -> Option<CalendarConfig> {
        use crate::domain::calendar::{Calendar, parse_period, parse_weekday};
        let periods = self.names("calendar.office_hours").and_then(|list| {
            let parsed: Result<Vec<_>, Message> = list.iter().map(|p| parse_period(p)).collect();
            match parsed {
                Ok(mut periods) if !periods.is_empty() => {
                    periods.sort();
                    if periods.windows(2).any(|w| w[1].0 < w[0].1) {
                        self.plainly("calendar.office_hours", "cfg-periods-overlap");
                        return None;
                    }
                    Some(periods)
                }
                Ok(_) => {
                    self.plainly("calendar.office_hours", "cfg-periods-none");
                    None
                }
                Err(e) => {
                    self.problem("calendar.office_hours", e);
                    None
                }
            }
        });
        let weekdays = self.names("calendar.working_days").and_then(|list| {
            let mut days = [false; 7];
            for d in &list {
                match parse_weekday(d) {
                    Some(w) => days[w.to_monday_zero_offset() as usize] = true,
                    None => {
                        self.problem(
                            "calendar.working_days",
                            Message::new("cfg-weekday").text("value", format!("{d:?}")),
                        );
                        return None;
                    }
                }
            }
            Some(days)
        });
        let mut dates = |key: &str| {
            let list = self.names(key)?;
            let mut out = std::collections::BTreeSet::new();
            for d in &list {
                match d.parse::<jiff::civil::Date>() {
                    Ok(date) => {
                        out.insert(date);
                    }
                    Err(_) => {
                        self.problem(key, Message::new("cfg-date").text("value", format!("{d:?}")));
                        return None;
                    }
                }
            }
            Some(out)
        };
        let holidays = dates("calendar.holidays");
        let make_up_days = dates("calendar.make_up_days");
        let receipt_hours = self.number("calendar.receipt_hours");
        if receipt_hours.is_some_and(|h| !(h > 0.0 && h <= 1000.0)) {
            self.plainly("calendar.receipt_hours", "cfg-receipt-hours");
            return None;
        }
        Some(CalendarConfig {
            calendar: Calendar {
                periods: periods?,
                weekdays: weekdays?,
                holidays: holidays?,
                make_up_days: make_up_days?,
            },
            receipt_hours: receipt_hours?,
        })
    }

    fn daemon(&mut self) -> Option<DaemonConfig> {
        let drain = self.seconds_within("daemon.drain_seconds", 0.1, 600.0, "drain");
        let heartbeat = self.seconds("daemon.heartbeat_seconds", false);
        let stale_heartbeat = self.seconds("daemon.stale_heartbeat_seconds", false);
        if let (Some(beat), Some(stale)) = (heartbeat, stale_heartbeat)
            && beat >= stale
        {
            self.plainly("daemon.heartbeat_seconds", "cfg-heartbeat");
        }
        let outbox_age_threshold = self.seconds("daemon.outbox_age_threshold_seconds", false);
        Some(DaemonConfig {
            drain: drain?,
            heartbeat: heartbeat?,
            stale_heartbeat: stale_heartbeat?,
            outbox_age_threshold: outbox_age_threshold?,
        })
    }

    /// Keys the defaults do not define are typos (status_map is open-ended).
    fn check_unknown_keys(&mut self) {
        let known = default_keys();
        let mut found = BTreeSet::new();
        if let Ok(table) = self.cfg.clone().try_deserialize::<config::Map<String, Value>>() {
            flatten("", table, &mut found);
        }
        for key in found {
            // A named source takes `[provincial]`'s keys, and `supersedes`.
            let as_source =
                key.strip_prefix("sources.").and_then(|rest| rest.split_once('.')).map(|(_, k)| k);
            let source_key =
                as_source.is_some_and(|k| k == "supersedes" || known.contains(&format!("provincial.{k}")));
            if !known.contains(&key) && !key.starts_with("status_map.") && !source_key {
                self.plainly(&key, "cfg-unknown-key");
            }
        }
    }
}

/// The environment variable that sets `key`: `national.batch_size` is
/// `DVC_SYNC__NATIONAL__BATCH_SIZE`.
fn env_var(key: &str) -> String {
    format!("DVC_SYNC__{}", key.replace('.', "__").to_ascii_uppercase())
}

/// `+07:00`, `-05`, `+0530`: a fixed offset from UTC.
fn parse_offset(s: &str) -> Option<jiff::tz::Offset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 1 | 2 | 4) {
        return None;
    }
    let (h, m) = if digits.len() == 4 { digits.split_at(2) } else { (digits.as_str(), "0") };
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 {
        return None;
    }
    jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

fn flatten(prefix: &str, table: config::Map<String, Value>, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let full = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match value.kind {
            ValueKind::Table(inner) => flatten(&full, inner, out),
            _ => {
                out.insert(full);
            }
        }
    }
}

fn default_keys() -> BTreeSet<String> {
    let defaults = config::Config::builder()
        .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<config::Map<String, Value>>())
        .unwrap_or_default();
    let mut keys = BTreeSet::new();
    flatten("", defaults, &mut keys);
    keys
}

fn redacted(secret: &Secret) -> String {
    if secret.is_empty() { "\"\"".into() } else { "\"<redacted>\"".into() }
}

/// Reads a secret file: it must be readable and not readable by group or others.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, Message> {
    let bytes = crate::secret::read_bytes(path)?;
    let at = || path.display().to_string();
    let text =
        String::from_utf8(bytes).map_err(|_| Message::new("cfg-secret-not-utf8").text("path", at()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(Message::new("cfg-secret-empty").text("path", at()));
    }
    Ok(secret)
}

impl Config {
    /// The configured source called `name`.
    pub fn source(&self, name: &str) -> Option<&ProvincialConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The effective configuration as TOML dotted keys, secrets redacted, for `check-config`.
    pub(crate) fn render_redacted(&self) -> String {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| lines.push((k.to_owned(), v));
        let q = |s: &str| format!("{s:?}");
        let secs = |d: Duration| format!("{}", d.as_secs_f64());
        put("store.path", q(&self.store.path.display().to_string()));
        put("store.create_dir", self.store.create_dir.to_string());
        let path =
            |p: &Option<PathBuf>| q(&p.as_deref().map(|p| p.display().to_string()).unwrap_or_default());
        put("store.key_file", path(&self.store.key_file));
        put("store.previous_key_file", path(&self.store.previous_key_file));
        put("store.personal_data_days", self.store.personal_data_days.to_string());
        let http_sections = self
            .sources
            .iter()
            .map(|s| (s.section.as_str(), &s.http))
            .chain([("national", &self.national.http)]);
        for (section, http) in http_sections {
            put(&format!("{section}.base_url"), q(http.base_url.as_str()));
            put(&format!("{section}.connect_timeout_seconds"), secs(http.connect_timeout));
            put(&format!("{section}.request_timeout_seconds"), secs(http.request_timeout));
            put(&format!("{section}.max_response_bytes"), http.max_response_bytes.to_string());
            put(
                &format!("{section}.ca_file"),
                q(&http.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
            );
            put(&format!("{section}.retry_initial_seconds"), secs(http.retry_initial));
            put(&format!("{section}.retry_max_seconds"), secs(http.retry_max));
        }
        for source in &self.sources {
            let mut put = |k: &str, v: String| put(&format!("{}.{k}", source.section), v);
            put("kind", q(source.kind.name()));
            if source.section != "provincial" {
                put("supersedes", format!("{:?}", source.supersedes));
            }
            put("api_key", redacted(&source.api_key));
            if let Some(sql) = &source.sql {
                put("database_url", redacted(&sql.database_url));
                put("profile", q(&sql.profile));
                put("database_timezone", q(&sql.timezone_name));
                put("document_url", q(&sql.document_url));
                put("database_pool_size", sql.pool_size.to_string());
                put("statement_timeout_seconds", secs(sql.statement_timeout));
            }
            put("poll_interval_seconds", secs(source.poll_interval));
            put("page_size", source.page_size.to_string());
            put("look_back_seconds", secs(source.look_back));
            put("reconcile_interval_seconds", source.reconcile_interval.map_or_else(|| "0".to_owned(), secs));
        }
        match &self.national.auth {
            NationalAuth::Session => {
                put("national.auth", q("session"));
                put("national.username", q(&self.national.username));
                put("national.password", redacted(&self.national.password));
            }
            NationalAuth::OAuth2 { token_url, client_id, client_secret } => {
                put("national.auth", q("oauth2"));
                put("national.token_url", q(token_url.as_str()));
                put("national.client_id", q(client_id));
                put("national.client_secret", redacted(client_secret));
            }
        }
        put("national.madonvi", q(&self.national.madonvi));
        put("national.predecessors", format!("{:?}", self.national.predecessors));
        put("national.dstcode", q(self.national.dstcode.as_deref().unwrap_or("")));
        put("national.batch_size", self.national.batch_size.to_string());
        put("national.max_concurrency", self.national.max_concurrency.to_string());
        put("national.session_renew_seconds", secs(self.national.session_renew));
        put("national.audit_per_second", self.national.audit_per_second.to_string());
        put("national.audit_cycle_days", (self.national.audit_cycle.as_secs_f64() / 86_400.0).to_string());
        for (local, status) in &self.status_map {
            put(&format!("status_map.{local}"), status.to_string());
        }
        put(
            "telemetry.log_format",
            q(match self.telemetry.log_format {
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            }),
        );
        put(
            "telemetry.metrics_listen",
            q(&self.telemetry.metrics_listen.map(|a| a.to_string()).unwrap_or_default()),
        );
        put("telemetry.indicators_seconds", secs(self.telemetry.indicators_every.unwrap_or_default()));
        put("daemon.drain_seconds", secs(self.daemon.drain));
        put("daemon.heartbeat_seconds", secs(self.daemon.heartbeat));
        put("daemon.stale_heartbeat_seconds", secs(self.daemon.stale_heartbeat));
        put("daemon.outbox_age_threshold_seconds", secs(self.daemon.outbox_age_threshold));
        let mut out = String::new();
        if let Some(source) = &self.source {
            out.push_str(&format!(
                "# from {} and the environment over built-in defaults\n",
                source.display()
            ));
        } else {
            out.push_str("# built-in defaults and the environment (no configuration file)\n");
        }
        for (k, v) in lines {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn runnable() -> HashMap<String, String> {
        env(&[
            ("DVC_SYNC__PROVINCIAL__API_KEY", "k"),
            ("DVC_SYNC__NATIONAL__USERNAME", "u"),
            ("DVC_SYNC__NATIONAL__PASSWORD", "0123"),
            ("DVC_SYNC__NATIONAL__MADONVI", "000.00.00.H58"),
        ])
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    /// The national account, for a configuration of named sources (no [provincial] key set).
    fn national_only() -> HashMap<String, String> {
        env(&[
            ("DVC_SYNC__NATIONAL__USERNAME", "u"),
            ("DVC_SYNC__NATIONAL__PASSWORD", "0123"),
            ("DVC_SYNC__NATIONAL__MADONVI", "000.00.00.H20"),
        ])
    }

    /// Many problems at once, each in both languages: the Vietnamese names the same keys, keeps
    /// the values quoted as written, has no English sentence left, and folds to 100 columns for
    /// a terminal; the English (what tests and logs read) is unchanged by the translation.
    #[test]
    fn every_problem_reads_in_vietnamese_and_in_english() {
        let f = file(
            "[store]\npath = \"\"\n[provincial]\nkind = \"ftp\"\npage_size = 5.5\npoll_interval_seconds = 0.01\n\
             base_url = \"ftp://x\"\nca_file = \"/nonexistent/ca.pem\"\n[national]\nmadonvi = \"58\"\nauth = \"magic\"\n\
             batch_size = 0\npredecessors = [1]\n[calendar]\noffice_hours = [\"11:30-07:30\"]\nworking_days = [\"monday\"]\n\
             holidays = [\"2026-13-01\"]\nreceipt_hours = 0\n[telemetry]\nmetrics_listen = \"localhost\"\nlog_format = \"xml\"\n\
             bogus = 1\n[daemon]\nheartbeat_seconds = 100\nstale_heartbeat_seconds = 10\n",
        );
        let e =
            load_with_env(Some(f.path()), env(&[("DVC_SYNC__NATIONAL__MAX_CONCURRENCY", "0")]), Purpose::Run)
                .unwrap_err();
        assert!(e.0.len() >= 18, "{e}");
        let english = e.render(Lang::En, false);
        for said in [
            "store.path: must not be empty",
            "provincial.kind: must be \"http\" or \"sql\", not \"ftp\"",
            "provincial.page_size: expected a whole number, not a number with a fraction or an exponent",
            "national.max_concurrency: must be from 1 to 256, not 0 (set by the environment variable \
             DVC_SYNC__NATIONAL__MAX_CONCURRENCY)",
            "calendar.office_hours: \"11:30-07:30\" ends before it starts",
            "telemetry.bogus: unknown key (see config/default.toml for every key)",
        ] {
            assert!(english.contains(said), "{said:?} not in\n{english}");
        }
        let vietnamese = e.render(Lang::Vi, true);
        let unwrapped = e.render(Lang::Vi, false);
        for said in [
            "cấu hình không hợp lệ",
            "store.path: không được để trống",
            "provincial.kind: phải là \"http\" hoặc \"sql\", không phải \"ftp\"",
            "(đặt bằng biến môi trường DVC_SYNC__NATIONAL__MAX_CONCURRENCY)",
            "national.password: bắt buộc (hoặc national.password_file)",
            "\"11:30-07:30\" kết thúc trước khi bắt đầu",
        ] {
            assert!(unwrapped.contains(said), "{said:?} not in\n{unwrapped}");
        }
        for (key, problem) in &e.0 {
            assert!(unwrapped.contains(&format!("  {key}: ")), "{key} not named");
            let vi = problem.write(Lang::Vi);
            assert_ne!(vi, **problem, "{key}: not translated");
        }
        for english_word in [" must ", " expected ", "required", " is not ", " not a ", "unknown key"] {
            assert!(!unwrapped.contains(english_word), "{english_word:?} left in\n{unwrapped}");
        }
        assert!(vietnamese.lines().all(|l| l.chars().count() <= crate::i18n::WIDTH), "{vietnamese}");
        assert!(
            unwrapped.lines().any(|l| l.chars().count() > crate::i18n::WIDTH),
            "the pipe's lines are whole"
        );
    }

    #[test]
    fn named_sources_take_provincial_keys_with_its_defaults_and_supersedes() {
        let f = file(
            "[national]\npredecessors = [\"000.00.00.H58\"]\n\
             [sources.tiengiang]\nkind = \"http\"\nbase_url = \"http://127.0.0.1:9001\"\napi_key = \"a\"\npage_size = 50\n\
             [sources.dong-thap]\nkind = \"http\"\nbase_url = \"http://127.0.0.1:9002\"\napi_key = \"b\"\n\
             supersedes = [\"tiengiang\"]\n",
        );
        let c = load_with_env(Some(f.path()), national_only(), Purpose::Run).unwrap();
        let names: Vec<_> = c.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dong-thap", "tiengiang"]);
        let (new, old) = (&c.sources[0], &c.sources[1]);
        assert_eq!((old.page_size, new.page_size), (50, 500), "a key not set is [provincial]'s default");
        assert_eq!(new.supersedes, ["tiengiang"]);
        assert_eq!(new.section, "sources.dong-thap");
        assert_eq!(c.national.predecessors, ["000.00.00.H58"]);
        let rendered = c.render_redacted();
        assert!(rendered.contains("sources.dong-thap.supersedes = [\"tiengiang\"]"), "{rendered}");
        assert!(rendered.contains("sources.tiengiang.api_key = \"<redacted>\""), "{rendered}");
    }

    #[test]
    fn named_sources_are_refused_beside_provincial_with_a_bad_name_or_an_unknown_key() {
        let problems = |text: &str| {
            let f = file(text);
            load_with_env(Some(f.path()), national_only(), Purpose::Run).unwrap_err().0
        };
        let both = problems("[provincial]\napi_key = \"k\"\n[sources.a]\napi_key = \"k\"\n");
        assert!(both.iter().any(|(k, m)| k == "provincial" && m.contains("[sources.")), "{both:?}");
        let bad = problems("[sources.Tien_Giang]\napi_key = \"k\"\n");
        assert!(bad.iter().any(|(k, _)| k == "sources.Tien_Giang"), "{bad:?}");
        let unknown = problems("[sources.a]\napi_key = \"k\"\npage_sise = 3\n");
        assert!(unknown.iter().any(|(k, _)| k == "sources.a.page_sise"), "{unknown:?}");
        let itself = problems("[sources.a]\napi_key = \"k\"\nsupersedes = [\"a\"]\n");
        assert!(itself.iter().any(|(k, _)| k == "sources.a.supersedes"), "{itself:?}");
        let cycle = problems(
            "[sources.a]\napi_key = \"k\"\nsupersedes = [\"b\"]\n[sources.b]\napi_key = \"k\"\nsupersedes = [\"c\"]\n\
             [sources.c]\napi_key = \"k\"\nsupersedes = [\"a\"]\n",
        );
        assert!(cycle.iter().any(|(k, m)| k == "sources.a.supersedes" && m.contains("itself")), "{cycle:?}");
        let unit = problems(
            "[national]\npredecessors = [\"H58\", \"000.00.00.H20\"]\n[sources.a]\napi_key = \"k\"\n",
        );
        assert_eq!(unit.iter().filter(|(k, _)| k == "national.predecessors").count(), 2, "{unit:?}");
        let value = problems("[sources.a]\napi_key = \"k\"\npage_size = 5000\n");
        assert!(value.iter().any(|(k, _)| k == "sources.a.page_size"), "{value:?}");
    }

    #[test]
    fn defaults_load_for_inspection_and_env_wins_over_the_file() {
        let c = load_with_env(
            Some(Path::new("/nonexistent-dir-for-test/x.toml")),
            HashMap::new(),
            Purpose::Inspect,
        );
        assert!(c.is_err(), "a named file must exist");
        let f = file("[provincial]\npage_size = 200\n[store]\npath = \"/tmp/a.db\"\n");
        let mut e = runnable();
        e.insert("DVC_SYNC__PROVINCIAL__PAGE_SIZE".into(), "300".into());
        let c = load_with_env(Some(f.path()), e, Purpose::Run).unwrap();
        assert_eq!(c.sources[0].page_size, 300);
        assert_eq!(c.store.path, PathBuf::from("/tmp/a.db"));
        assert_eq!(c.national.password.expose(), "0123", "a numeric-looking secret keeps its leading zero");
        assert_eq!(c.status_map.get("processing").copied(), NationalStatus::new(4));
    }

    #[test]
    fn a_status_code_is_a_whole_number_not_a_boolean_or_a_fraction() {
        let f = file("[status_map]\ndone = true\nhalf = 4.5\nfine = 4\n");
        let errors = load_with_env(Some(f.path()), runnable(), Purpose::Run).unwrap_err();
        let keys: BTreeSet<&str> = errors.0.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains("status_map.done") && keys.contains("status_map.half"), "{errors}");
        assert!(!keys.contains("status_map.fine"), "{errors}");
        let mut e = runnable();
        e.insert("DVC_SYNC__STATUS_MAP__FROM_ENV".into(), "7".into());
        let c = load_with_env(None, e, Purpose::Run).unwrap();
        assert_eq!(c.status_map.get("from_env").map(|s| s.code()), Some(7));
    }

    #[test]
    fn every_bad_key_is_named_at_once() {
        let f = file(
            "[provincial]\npage_size = 5000\npoll_interval_seconds = \"soon\"\nbase_url = \"ftp://x\"\n\
             [national]\nbatch_size = 0\naudit_per_second = -1\naudit_cycle_days = 0\n[status_map]\nprocessing = 11\n[telemetry]\nlog_format = \"xml\"\n\
             metrics_listen = \"nowhere\"\n[daemon]\ndrain_seconds = -1\n[typo]\nkey = 1\n",
        );
        let errors = load_with_env(Some(f.path()), HashMap::new(), Purpose::Run).unwrap_err();
        let keys: BTreeSet<&str> = errors.0.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "provincial.page_size",
            "provincial.poll_interval_seconds",
            "provincial.base_url",
            "national.batch_size",
            "national.audit_per_second",
            "national.audit_cycle_days",
            "status_map.processing",
            "telemetry.log_format",
            "telemetry.metrics_listen",
            "daemon.drain_seconds",
            "typo.key",
            "provincial.api_key",
            "national.password",
            "national.username",
            "national.madonvi",
        ] {
            assert!(keys.contains(key), "{key} not named in {errors}");
        }
    }

    #[test]
    fn oauth2_needs_its_token_endpoint_and_client_and_not_the_session_account() {
        let mut e = runnable();
        e.remove("DVC_SYNC__NATIONAL__USERNAME");
        e.remove("DVC_SYNC__NATIONAL__PASSWORD");
        e.insert("DVC_SYNC__NATIONAL__AUTH".into(), "oauth2".into());
        let errors = load_with_env(None, e.clone(), Purpose::Run).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|(k, _)| k.as_str()).collect();
        for key in ["national.token_url", "national.client_id", "national.client_secret"] {
            assert!(keys.contains(&key), "{key} required: {errors}");
        }
        assert!(!keys.contains(&"national.username") && !keys.contains(&"national.password"), "{errors}");
        e.insert("DVC_SYNC__NATIONAL__TOKEN_URL".into(), "https://lgsp.example.vn/oauth2/token".into());
        e.insert("DVC_SYNC__NATIONAL__CLIENT_ID".into(), "tinh-h58".into());
        e.insert("DVC_SYNC__NATIONAL__CLIENT_SECRET".into(), "gateway-secret".into());
        // The session's password file (as the unit names it) is not read in this mode.
        e.insert("DVC_SYNC__NATIONAL__PASSWORD_FILE".into(), "/nonexistent/national-password".into());
        let c = load_with_env(None, e.clone(), Purpose::Run).unwrap();
        match &c.national.auth {
            NationalAuth::OAuth2 { token_url, client_id, client_secret } => {
                assert_eq!(token_url.as_str(), "https://lgsp.example.vn/oauth2/token");
                assert_eq!((client_id.as_str(), client_secret.expose()), ("tinh-h58", "gateway-secret"));
            }
            other => panic!("{other:?}"),
        }
        let rendered = c.render_redacted();
        assert!(
            rendered.contains("national.client_secret = \"<redacted>\"")
                && !rendered.contains("gateway-secret")
        );
        e.insert("DVC_SYNC__NATIONAL__AUTH".into(), "kerberos".into());
        let errors = load_with_env(None, e, Purpose::Run).unwrap_err();
        assert!(errors.0.iter().any(|(k, m)| k == "national.auth" && m.contains("\"oauth2\"")), "{errors}");
    }

    #[test]
    fn secrets_never_print_and_files_must_be_private() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "from-file\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(
                read_secret_file(&path).unwrap_err().write(Lang::En).contains("readable by group or others")
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(read_secret_file(&path).unwrap(), "from-file");
        let mut e = runnable();
        e.remove("DVC_SYNC__NATIONAL__PASSWORD");
        e.insert("DVC_SYNC__NATIONAL__PASSWORD_FILE".into(), path.display().to_string());
        let c = load_with_env(None, e, Purpose::Run).unwrap();
        assert_eq!(c.national.password.expose(), "from-file");
        let rendered = c.render_redacted();
        assert!(!rendered.contains("from-file") && !rendered.contains("\"k\""), "{rendered}");
        assert!(rendered.contains("national.password = \"<redacted>\""), "{rendered}");
    }

    #[test]
    fn both_a_secret_and_its_file_is_refused() {
        let mut e = runnable();
        e.insert("DVC_SYNC__NATIONAL__PASSWORD_FILE".into(), "/etc/hostname".into());
        let errors = load_with_env(None, e, Purpose::Run).unwrap_err();
        assert!(errors.0.iter().any(|(k, m)| k == "national.password" && m.contains("not both")), "{errors}");
    }

    #[test]
    fn the_sql_source_needs_its_url_and_profile_not_the_listings_key() {
        let mut e = runnable();
        e.remove("DVC_SYNC__PROVINCIAL__API_KEY");
        e.insert("DVC_SYNC__PROVINCIAL__KIND".into(), "sql".into());
        // The unit names the listing's key file too: absent, it is not read for kind = "sql".
        e.insert("DVC_SYNC__PROVINCIAL__API_KEY_FILE".into(), "/nonexistent/provincial-api-key".into());
        let errors = load_with_env(None, e.clone(), Purpose::Run).unwrap_err();
        assert!(errors.0.iter().any(|(k, _)| k == "provincial.database_url"), "{errors}");
        assert!(!errors.0.iter().any(|(k, _)| k.starts_with("provincial.api_key")), "not needed: {errors}");
        e.insert(
            "DVC_SYNC__PROVINCIAL__DATABASE_URL".into(),
            "mysql://u:s3cret@10.0.0.5:3306/opencps".into(),
        );
        let c = load_with_env(None, e.clone(), Purpose::Run).unwrap();
        let sql = c.sources[0].sql.as_ref().unwrap();
        assert_eq!(
            (c.sources[0].kind, sql.profile.as_str(), sql.pool_size),
            (SourceKind::Sql, "opencps-v2", 2)
        );
        assert_eq!(sql.timezone.to_offset(jiff::Timestamp::now()).seconds(), 7 * 3600);
        let rendered = c.render_redacted();
        assert!(
            !rendered.contains("s3cret") && rendered.contains("provincial.database_url = \"<redacted>\""),
            "{rendered}"
        );
        // check-source needs the source, not the national account.
        let mut only_source = e.clone();
        only_source.remove("DVC_SYNC__NATIONAL__PASSWORD");
        assert!(load_with_env(None, only_source, Purpose::Source).is_ok());

        let mut bad = e.clone();
        bad.insert("DVC_SYNC__PROVINCIAL__DATABASE_URL".into(), "sqlserver://u:s3cret@db/x".into());
        bad.insert("DVC_SYNC__PROVINCIAL__DATABASE_TIMEZONE".into(), "Mars/Olympus".into());
        bad.insert("DVC_SYNC__PROVINCIAL__KIND".into(), "sql ".into());
        let errors = load_with_env(None, bad.clone(), Purpose::Run).unwrap_err();
        assert!(errors.0.iter().any(|(k, _)| k == "provincial.kind"), "{errors}");
        bad.insert("DVC_SYNC__PROVINCIAL__KIND".into(), "sql".into());
        let errors = load_with_env(None, bad, Purpose::Run).unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("provincial.database_url") && text.contains("provincial.database_timezone"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "the URL is never echoed: {text}");

        let mut fixed = e;
        fixed.insert("DVC_SYNC__PROVINCIAL__DATABASE_TIMEZONE".into(), "+05:30".into());
        let c = load_with_env(None, fixed, Purpose::Run).unwrap();
        assert_eq!(
            c.sources[0].sql.clone().unwrap().timezone.to_offset(jiff::Timestamp::UNIX_EPOCH).seconds(),
            19_800
        );
    }

    #[test]
    fn the_database_url_may_come_from_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://reader:pw@db.tinh.gov.vn/opencps\n").unwrap();
        let mut e = runnable();
        e.insert("DVC_SYNC__PROVINCIAL__KIND".into(), "sql".into());
        e.insert("DVC_SYNC__PROVINCIAL__DATABASE_URL_FILE".into(), path.display().to_string());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let errors = load_with_env(None, e.clone(), Purpose::Run).unwrap_err();
            assert!(
                errors
                    .0
                    .iter()
                    .any(|(k, m)| k == "provincial.database_url_file" && m.contains("readable by group"))
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let c = load_with_env(None, e, Purpose::Run).unwrap();
        assert_eq!(
            c.sources[0].sql.clone().unwrap().database_url.expose(),
            "postgres://reader:pw@db.tinh.gov.vn/opencps"
        );
    }

    #[test]
    fn offsets_parse_strictly() {
        assert_eq!(parse_offset("+07:00").unwrap().seconds(), 25_200);
        assert_eq!(parse_offset("-05").unwrap().seconds(), -18_000);
        assert_eq!(parse_offset("+0530").unwrap().seconds(), 19_800);
        for bad in ["+7:0", "07:00", "+25:00", "+07:61", "+x"] {
            assert!(parse_offset(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn inspection_does_not_need_credentials() {
        assert!(load_with_env(None, HashMap::new(), Purpose::Inspect).is_ok());
        assert!(load_with_env(None, HashMap::new(), Purpose::Run).is_err());
    }

    #[test]
    fn the_rendered_config_is_valid_toml_that_loads_back() {
        let c = load_with_env(None, runnable(), Purpose::Run).unwrap();
        let rendered = c.render_redacted();
        let f = file(&rendered);
        let again = load_with_env(Some(f.path()), runnable(), Purpose::Run).unwrap();
        assert_eq!(
            again.render_redacted().lines().skip(1).collect::<Vec<_>>(),
            rendered.lines().skip(1).collect::<Vec<_>>()
        );
    }
}
