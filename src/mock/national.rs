//! The national portal mock (`dvc-sync mock national`): a strict, in-memory emulation of the
//! DVCQG integration adapter described in the national API, with seeded transport faults
//! and `/_mock/` views that make it the oracle of the project's tests.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

// tokio's clock: real in the mock server, virtual (and exact) in simulations.
use tokio::time::Instant;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::{
    catalogue,
    faults::{html_error, merge_patch},
    server::{self, DropConnection, MockServer},
};
use crate::domain::{
    dates::{self, parse_national},
    entry::{EntryIdentity, identity as entry_identity},
    mahoso::{self, province_of},
    scoring,
    service::Service,
    status::{NationalStatus, transition_allowed},
    text::{DEFAULT_MAX_CHARS, char_len, is_normalized, max_chars},
};

/// Start-up settings of the national mock.
#[derive(Debug, Clone)]
pub struct NationalConfig {
    /// In `oauth2` mode, the client id and secret of the token endpoint.
    pub username: String,
    pub password: String,
    /// How integration calls are authorised (`--auth`).
    pub auth: MockAuth,
    /// The unit code (madonvi) of the one account the mock knows.
    pub madonvi: String,
    /// Unit codes closed into `madonvi` by the 2025 merger (`--predecessor`): MaHoSo under
    /// them are the account's too.
    pub predecessors: Vec<String>,
    pub faults: Faults,
}

impl Default for NationalConfig {
    fn default() -> Self {
        Self {
            username: "dvc-sync".into(),
            password: "dvc-sync-secret".into(),
            auth: MockAuth::Session,
            madonvi: catalogue::PROVINCE_UNIT.into(),
            predecessors: Vec::new(),
            faults: Faults::default(),
        }
    }
}

/// `--auth`: the adapter's own session (`POST /auth`, the session in the body), or an
/// OAuth2 gateway in front of it (`POST /token`, `Authorization: Bearer` on every call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MockAuth {
    #[default]
    Session,
    #[value(name = "oauth2")]
    OAuth2,
}

/// The fault profile: every knob of the national API, settable at start (flags of the
/// same names in kebab case) and at run time (`PUT /_mock/faults`, partial JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Share of calls answered HTTP 500 with an HTML page (nothing applied).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Integration calls per second above which the answer is 429 with Retry-After (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_per_second: f64,
    /// Delay before every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// The delay varies uniformly by up to this much either way.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Every call gets HTTP 503.
    #[arg(long, default_value_t = false)]
    pub outage: bool,
    /// Share of integration calls applied and then left unanswered (connection closed).
    #[arg(long, default_value_t = 0.0)]
    pub drop_after_apply_rate: f64,
    /// How long a session lives.
    #[arg(long, default_value_t = 600.0)]
    pub session_ttl_seconds: f64,
    /// Most items one call may carry (error code 8 above it).
    #[arg(long, default_value_t = 100)]
    pub max_items_per_call: usize,
    /// Seed of every random choice (faults, error_code forms, session tokens).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// OAuth2 mode: the token endpoint answers HTTP 503.
    #[arg(long, default_value_t = false)]
    #[serde(default)]
    pub token_outage: bool,
    /// OAuth2 mode: delay before the token endpoint answers.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub token_latency_ms: u64,
    /// OAuth2 mode: the token endpoint refuses every client (HTTP 401, a revoked client).
    #[arg(long, default_value_t = false)]
    #[serde(default)]
    pub token_reject: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            rate_limit_per_second: 0.0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            outage: false,
            drop_after_apply_rate: 0.0,
            session_ttl_seconds: 600.0,
            max_items_per_call: 100,
            seed: 1,
            token_outage: false,
            token_latency_ms: 0,
            token_reject: false,
        }
    }
}

impl Faults {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (name, rate) in
            [("error_rate", self.error_rate), ("drop_after_apply_rate", self.drop_after_apply_rate)]
        {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{name} must be between 0 and 1"));
            }
        }
        if !(self.rate_limit_per_second.is_finite() && self.rate_limit_per_second >= 0.0) {
            problems.push("rate_limit_per_second must be 0 (no limit) or positive".into());
        }
        if !(self.session_ttl_seconds.is_finite()
            && self.session_ttl_seconds > 0.0
            && self.session_ttl_seconds <= 1e9)
        {
            problems.push("session_ttl_seconds must be positive (at most 1e9)".into());
        }
        if self.max_items_per_call == 0 {
            problems.push("max_items_per_call must be at least 1".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

/// Error codes of the national API, shared with the client and the engine.
pub use crate::domain::codes as code;

/// Starts the mock on `listener`; returns once it accepts connections.
pub async fn start(listener: TcpListener, config: NationalConfig) -> anyhow::Result<MockServer> {
    config.faults.validate().map_err(anyhow::Error::msg)?;
    let mock = Arc::new(NationalCore::new(config));
    let router = Router::new()
        .route("/auth", post(auth))
        .route("/token", post(token))
        .route("/integration", post(integration))
        .route("/_mock/state", get(list_state))
        .route("/_mock/state/{mahoso}", get(one_state).delete(forget_one))
        .route("/_mock/state/{mahoso}/truncate", post(truncate_one))
        .route("/_mock/stats", get(stats))
        .route("/_mock/faults", get(get_faults).put(put_faults))
        .route("/_mock/reset", post(reset))
        .route("/_mock/report", get(report))
        .route("/_mock/calls", get(calls))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(mock);
    Ok(server::spawn(listener, router)?)
}

/// The provinces whose MaHoSo an account owns: its unit's, then its predecessors'.
struct Provinces(Vec<String>);

impl Provinces {
    fn owns(&self, agency: &str) -> bool {
        let province = province_of(agency);
        self.0.iter().any(|p| p == province)
    }
}

/// The national portal's behaviour, without HTTP: the mock server wraps it, the simulation
/// calls it directly.
pub(crate) struct NationalCore {
    username: String,
    password: String,
    auth: MockAuth,
    madonvi: String,
    /// The provinces (last segments) whose MaHoSo the account owns: its own and its
    /// predecessors'.
    provinces: Provinces,
    state: Mutex<MockState>,
}

struct MockState {
    faults: Faults,
    rng: fastrand::Rng,
    sessions: HashMap<String, Instant>,
    dossiers: BTreeMap<String, Stored>,
    stats: Stats,
    bucket: TokenBucket,
    calls: VecDeque<CallRecord>,
    next_call: u64,
    /// History entries held over all dossiers, kept as they change: `/_mock/stats` is polled
    /// ten times a second by the benchmarks, and summing a million dossiers' histories each
    /// time took a fifth of a core from the daemon it measured.
    entries_stored: usize,
}

/// What the mock holds for one dossier.
#[derive(Debug, Clone, Serialize)]
struct Stored {
    dossier: Map<String, Value>,
    history: Vec<Map<String, Value>>,
    /// Each entry's identity (`domain::entry`), to tell a duplicate: the same step sent again,
    /// whatever its status code or form.
    #[serde(skip)]
    identities: std::collections::HashSet<EntryIdentity>,
    status_sequence: Vec<String>,
    creates: u64,
    updates: u64,
}

#[derive(Debug, Default, Serialize)]
struct Stats {
    /// Processed calls by service and outcome ("ok" or "error_<code>").
    calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every error_code answered, success included.
    error_codes: BTreeMap<String, u64>,
    sessions_issued: u64,
    /// Transport faults by kind: error_500, rate_limited_429, outage_503, dropped_after_apply.
    http_faults: BTreeMap<String, u64>,
    items_applied: ItemsApplied,
    /// Calls by the value of their `dstcode` header ("" when absent).
    dstcodes: BTreeMap<String, u64>,
    duplicate_history_entries: u64,
    out_of_order_history_entries: u64,
    rejected_status_changes: u64,
}

#[derive(Debug, Default, Serialize)]
struct ItemsApplied {
    dossiers_created: u64,
    dossiers_updated: u64,
    history_entries: u64,
}

/// One call, as `/_mock/calls` lists it (a bounded ring of the most recent).
#[derive(Debug, Clone, Serialize)]
struct CallRecord {
    seq: u64,
    service: String,
    outcome: String,
    error_code: Option<i64>,
    items: Vec<String>,
}

const CALL_RING: usize = 5_000;

/// A token bucket holding one second's worth of calls.
struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Takes a token, or says how many whole seconds until one is available.
    fn take(&mut self, rate: f64, now: Instant) -> Result<(), u64> {
        let capacity = rate.max(1.0);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / rate).ceil() as u64).max(1))
        }
    }
}

impl NationalCore {
    pub fn new(config: NationalConfig) -> Self {
        let rng = fastrand::Rng::with_seed(config.faults.seed);
        let bucket = TokenBucket { tokens: config.faults.rate_limit_per_second.max(1.0), at: Instant::now() };
        Self {
            username: config.username,
            password: config.password,
            auth: config.auth,
            provinces: Provinces(
                std::iter::once(&config.madonvi)
                    .chain(&config.predecessors)
                    .map(|u| province_of(u).to_owned())
                    .collect(),
            ),
            madonvi: config.madonvi,
            state: Mutex::new(MockState {
                faults: config.faults,
                rng,
                sessions: HashMap::new(),
                dossiers: BTreeMap::new(),
                stats: Stats::default(),
                bucket,
                calls: VecDeque::new(),
                next_call: 0,
                entries_stored: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MockState> {
        // A panic while holding the lock would be a bug in the mock; keep serving regardless.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The transport faults decided on arrival: a delay, and maybe an answer that replaces
    /// processing.
    fn transport(&self, rate_limited: bool) -> (Duration, Option<Response>) {
        let mut st = self.lock();
        let st = &mut *st;
        let f = &st.faults;
        let jitter = if f.latency_jitter_ms > 0 {
            st.rng.i64(-(f.latency_jitter_ms as i64)..=f.latency_jitter_ms as i64)
        } else {
            0
        };
        let delay = Duration::from_millis((f.latency_ms as i64 + jitter).max(0) as u64);
        let fault = if f.outage {
            Some(("outage_503", html_error(StatusCode::SERVICE_UNAVAILABLE)))
        } else if f.error_rate > 0.0 && st.rng.f64() < f.error_rate {
            Some(("error_500", html_error(StatusCode::INTERNAL_SERVER_ERROR)))
        } else if rate_limited && f.rate_limit_per_second > 0.0 {
            match st.bucket.take(f.rate_limit_per_second, Instant::now()) {
                Ok(()) => None,
                Err(retry_after) => Some((
                    "rate_limited_429",
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, retry_after.to_string())],
                        html_error(StatusCode::TOO_MANY_REQUESTS),
                    )
                        .into_response(),
                )),
            }
        } else {
            None
        };
        let fault = fault.map(|(kind, response)| {
            *st.stats.http_faults.entry(kind.into()).or_default() += 1;
            response
        });
        (delay, fault)
    }
}

/// A JSON answer (sent with HTTP 200) with an error_code in one of the forms the real adapter
/// uses; `extra` adds `result` or `session` beside it.
fn answer(st: &mut MockState, code: i64, message: &str, extra: Option<(&str, Value)>) -> Value {
    *st.stats.error_codes.entry(code.to_string()).or_default() += 1;
    let error_code = match (code, st.rng.u8(0..6)) {
        (0, 0 | 1) => json!(0),
        (0, 2 | 3) => json!("0"),
        (0, _) => json!("00"),
        (c, 0..=2) => json!(c),
        (c, _) => json!(c.to_string()),
    };
    let mut body = json!({"error_code": error_code, "message": message});
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    body
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn auth(State(mock): State<Arc<NationalCore>>, headers: HeaderMap, body: Bytes) -> Response {
    if mock.auth == MockAuth::OAuth2 {
        return (StatusCode::NOT_FOUND, "behind the gateway: POST /token").into_response();
    }
    let (delay, fault) = mock.transport(false);
    tokio::time::sleep(delay).await;
    if let Some(fault) = fault {
        return fault;
    }
    let request: Option<Value> = if is_json(&headers) { serde_json::from_slice(&body).ok() } else { None };
    Json(mock.auth(request.as_ref())).into_response()
}

/// `POST /token` (OAuth2 mode): client credentials in HTTP Basic or in the form.
async fn token(State(mock): State<Arc<NationalCore>>, headers: HeaderMap, body: Bytes) -> Response {
    if mock.auth != MockAuth::OAuth2 {
        return (StatusCode::NOT_FOUND, "no OAuth2 here: POST /auth").into_response();
    }
    let (latency, outage) = {
        let st = mock.lock();
        (st.faults.token_latency_ms, st.faults.token_outage)
    };
    tokio::time::sleep(Duration::from_millis(latency)).await;
    if outage {
        *mock.lock().stats.http_faults.entry("token_outage_503".into()).or_default() += 1;
        return html_error(StatusCode::SERVICE_UNAVAILABLE);
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| b.split_once(':').map(|(i, s)| (form_decoded(i), form_decoded(s))));
    let creds = basic.or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())));
    let (status, answer) = mock.token(form.get("grant_type").map(String::as_str), creds);
    (status, Json(answer)).into_response()
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded inside HTTP Basic.
fn form_decoded(s: &str) -> String {
    form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl NationalCore {
    /// How integration calls are authorised.
    pub(crate) fn auth_mode(&self) -> MockAuth {
        self.auth
    }

    /// The token endpoint (OAuth2 mode): a token that lives `session_ttl_seconds`, or HTTP 401
    /// with `{"error": "invalid_client"}` (or 400 for another grant type).
    pub fn token(&self, grant_type: Option<&str>, creds: Option<(String, String)>) -> (StatusCode, Value) {
        let mut st = self.lock();
        let st = &mut *st;
        if grant_type != Some("client_credentials") {
            record_call(st, "token", "unsupported_grant_type".into(), None, Vec::new());
            return (StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"}));
        }
        let valid = creds.is_some_and(|(id, secret)| id == self.username && secret == self.password);
        if !valid || st.faults.token_reject {
            record_call(st, "token", "invalid_client".into(), None, Vec::new());
            return (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
        }
        let now = Instant::now();
        st.sessions.retain(|_, expires| *expires > now);
        let token: String = std::iter::repeat_with(|| st.rng.alphanumeric()).take(40).collect();
        let ttl = st.faults.session_ttl_seconds;
        st.sessions.insert(token.clone(), now + Duration::from_secs_f64(ttl));
        st.stats.sessions_issued += 1;
        record_call(st, "token", "ok".into(), None, Vec::new());
        (
            StatusCode::OK,
            json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl.ceil() as u64}),
        )
    }

    /// Whether a bearer token is one the token endpoint issued and still live (OAuth2 mode).
    pub(crate) fn bearer_valid(&self, token: Option<&str>) -> bool {
        let st = self.lock();
        token.and_then(|t| st.sessions.get(t)).is_some_and(|expires| *expires > Instant::now())
    }

    /// `POST /auth`: `request` is None when the body is not JSON.
    pub fn auth(&self, request: Option<&Value>) -> Value {
        let mut st = self.lock();
        let st = &mut *st;
        let creds = request.and_then(|r| Some((r.get("username")?.as_str()?, r.get("password")?.as_str()?)));
        let (code, message, session) = match creds {
            None => (code::MALFORMED, "Yêu cầu không hợp lệ: cần JSON {username, password}", None),
            Some((u, p)) if u == self.username && p == self.password => {
                let now = Instant::now();
                st.sessions.retain(|_, expires| *expires > now);
                let token: String = std::iter::repeat_with(|| st.rng.alphanumeric()).take(32).collect();
                let ttl = Duration::from_secs_f64(st.faults.session_ttl_seconds);
                st.sessions.insert(token.clone(), now + ttl);
                st.stats.sessions_issued += 1;
                (code::OK, "Đăng nhập thành công", Some(token))
            }
            Some(_) => (code::BAD_CREDENTIALS, "Tên đăng nhập hoặc mật khẩu không đúng", None),
        };
        count_call(st, "auth", code, Vec::new());
        answer(st, code, message, session.map(|s| ("session", Value::String(s))))
    }

    /// `POST /integration`: `request` is Err(why) when the body is not the API's JSON.
    pub fn integrate(&self, request: Result<Value, String>, dstcode: &str) -> Value {
        let mut st = self.lock();
        let st = &mut *st;
        *st.stats.dstcodes.entry(dstcode.to_owned()).or_default() += 1;
        let outcome = match request {
            Ok(request) => process(self, st, request),
            Err(why) => Outcome::fail(UNKNOWN_SERVICE, code::MALFORMED, why),
        };
        count_call(st, outcome.service, outcome.code, outcome.items);
        let result = outcome.result.map(|r| ("result", r));
        answer(st, outcome.code, &outcome.message, result)
    }

    /// Whether this answer is lost (the drop_after_apply fault), counted as such.
    pub(crate) fn roll_drop(&self) -> bool {
        let mut st = self.lock();
        let rate = st.faults.drop_after_apply_rate;
        if rate > 0.0 && st.rng.f64() < rate {
            *st.stats.http_faults.entry("dropped_after_apply".into()).or_default() += 1;
            if let Some(last) = st.calls.back_mut() {
                last.outcome.push_str("+dropped");
            }
            true
        } else {
            false
        }
    }

    /// Every dossier held, as `/_mock/state` shows it, by MaHoSo.
    pub fn state(&self) -> BTreeMap<String, Value> {
        self.lock().dossiers.iter().map(|(k, v)| (k.clone(), state_view(v))).collect()
    }

    /// The counters of `/_mock/stats`.
    pub fn stats(&self) -> Value {
        let st = self.lock();
        let mut value = serde_json::to_value(&st.stats).unwrap_or_default();
        value["dossiers"] = json!(st.dossiers.len());
        value["history_entries_stored"] = json!(st.entries_stored);
        value["sessions_live"] = json!(st.sessions.values().filter(|e| **e > Instant::now()).count());
        value
    }

    /// Forgets one dossier (a loss at the national side); false if it was not held.
    pub fn forget(&self, mahoso: &str) -> bool {
        let mut st = self.lock();
        let Some(gone) = st.dossiers.remove(mahoso) else { return false };
        st.entries_stored -= gone.history.len();
        true
    }

    /// Forgets every dossier, and nothing else (a restore from an empty backup: counters and
    /// sessions stay).
    pub(crate) fn forget_all(&self) {
        let mut st = self.lock();
        st.dossiers.clear();
        st.entries_stored = 0;
    }

    /// Keeps only the first `keep` history entries of a dossier (the end of its history lost);
    /// the number of entries it holds now, None if it is not held.
    pub fn truncate(&self, mahoso: &str, keep: usize) -> Option<usize> {
        let mut st = self.lock();
        let stored = st.dossiers.get_mut(mahoso)?;
        let before = stored.history.len();
        stored.history.truncate(keep);
        let lost = before - stored.history.len();
        // Entries lost are not there any more: sending them again is no duplicate.
        stored.identities =
            stored.history.iter().map(|e| entry_identity(&Value::Object(e.clone()))).collect();
        let held = stored.history.len();
        st.entries_stored -= lost;
        Some(held)
    }
}

fn count_call(st: &mut MockState, service: &str, code: i64, items: Vec<String>) {
    let outcome = if code == code::OK { "ok".to_string() } else { format!("error_{code}") };
    *st.stats.calls.entry(service.into()).or_default().entry(outcome.clone()).or_default() += 1;
    record_call(st, service, outcome, Some(code), items);
}

fn record_call(st: &mut MockState, service: &str, outcome: String, code: Option<i64>, items: Vec<String>) {
    st.next_call += 1;
    if st.calls.len() == CALL_RING {
        st.calls.pop_front();
    }
    st.calls.push_back(CallRecord {
        seq: st.next_call,
        service: service.into(),
        outcome,
        error_code: code,
        items,
    });
}

async fn integration(
    State(mock): State<Arc<NationalCore>>,
    Extension(drop_connection): Extension<DropConnection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (delay, fault) = mock.transport(true);
    tokio::time::sleep(delay).await;
    if let Some(fault) = fault {
        return fault;
    }
    if mock.auth == MockAuth::OAuth2 {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !mock.bearer_valid(bearer) {
            let mut st = mock.lock();
            record_call(&mut st, "integration", "http_401".into(), None, Vec::new());
            return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_token"}))).into_response();
        }
    }
    let dstcode = headers.get("dstcode").and_then(|v| v.to_str().ok()).unwrap_or("");
    let request = if is_json(&headers) {
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("Yêu cầu không phải JSON: {e}"))
    } else {
        Err("Content-Type phải là application/json".into())
    };
    let answer = mock.integrate(request, dstcode);
    if mock.roll_drop() {
        return drop_connection.now().await;
    }
    Json(answer).into_response()
}

/// The result of processing one integration call.
struct Outcome {
    service: &'static str,
    code: i64,
    message: String,
    result: Option<Value>,
    items: Vec<String>,
}

impl Outcome {
    fn fail(service: &'static str, code: i64, message: String) -> Self {
        Self { service, code, message, result: None, items: Vec::new() }
    }
}

/// The service label of calls whose service is missing or unknown (keeps stats bounded).
const UNKNOWN_SERVICE: &str = "unknown";

fn service_label(name: &str) -> &'static str {
    Service::from_name(name).map_or(UNKNOWN_SERVICE, Service::name)
}

fn process(mock: &NationalCore, st: &mut MockState, mut request: Value) -> Outcome {
    let Some(envelope) = request.as_object_mut() else {
        return Outcome::fail(UNKNOWN_SERVICE, code::MALFORMED, "Yêu cầu phải là một đối tượng JSON".into());
    };
    let name = envelope.get("service").and_then(Value::as_str).unwrap_or("");
    let service = service_label(name);
    let now = Instant::now();
    // Behind the gateway the bearer token was checked before (HTTP 401 otherwise).
    let session_ok = mock.auth == MockAuth::OAuth2
        || envelope
            .get("session")
            .and_then(Value::as_str)
            .and_then(|s| st.sessions.get(s))
            .is_some_and(|expires| *expires > now);
    if !session_ok {
        return Outcome::fail(service, code::SESSION, "Phiên làm việc không hợp lệ hoặc đã hết hạn".into());
    }
    if envelope.get("madonvi").and_then(Value::as_str) != Some(mock.madonvi.as_str()) {
        return Outcome::fail(
            service,
            code::NOT_YOUR_UNIT,
            "madonvi không phải đơn vị của phiên làm việc".into(),
        );
    }
    let province = &mock.provinces;
    match Service::from_name(name) {
        Some(Service::SyncDossiers) => sync_dossiers(st, envelope, province),
        Some(Service::AppendHistory) => append_history(st, envelope, province),
        Some(Service::LookUp) => look_up_dossier(st, envelope, province),
        Some(Service::Procedure) => look_up_procedure(envelope),
        None => {
            let message = format!("service không được hỗ trợ: {name:?}");
            Outcome::fail(UNKNOWN_SERVICE, code::MALFORMED, message)
        }
    }
}

/// Takes `data` out of the envelope as an array of at most `max` items.
fn take_items(
    st: &MockState,
    envelope: &mut Map<String, Value>,
    service: &'static str,
) -> Result<Vec<Value>, Outcome> {
    let items = match envelope.get_mut("data").map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => return Err(Outcome::fail(service, code::MALFORMED, "data phải là một mảng".into())),
    };
    let max = st.faults.max_items_per_call;
    if items.len() > max {
        return Err(Outcome::fail(
            service,
            code::TOO_MANY,
            format!("Số hồ sơ trong một lần gọi ({}) vượt quá giới hạn {max}", items.len()),
        ));
    }
    Ok(items)
}

fn mahoso_of(item: &Value) -> String {
    item.get("MaHoSo").and_then(Value::as_str).unwrap_or("").to_owned()
}

fn sync_dossiers(st: &mut MockState, envelope: &mut Map<String, Value>, province: &Provinces) -> Outcome {
    const SERVICE: &str = Service::SyncDossiers.name();
    let updating = match envelope.get("isUpdating") {
        Some(Value::String(s)) if s == "True" => true,
        Some(Value::String(s)) if s == "False" => false,
        _ => {
            return Outcome::fail(
                SERVICE,
                code::MALFORMED,
                "isUpdating phải là chuỗi \"True\" hoặc \"False\"".into(),
            );
        }
    };
    let items = match take_items(st, envelope, SERVICE) {
        Ok(items) => items,
        Err(outcome) => return outcome,
    };
    let names: Vec<String> = items.iter().map(mahoso_of).collect();
    // Validate everything first: the call is all-or-nothing.
    let mut overlay: HashMap<&str, NationalStatus> = HashMap::new();
    for (item, mahoso) in items.iter().zip(&names) {
        if let Err(e) = validate_item(item, DOSSIER_FIELDS, province) {
            return e.into_outcome(SERVICE, mahoso, names.clone());
        }
        // Validation guarantees a valid status code.
        let to = item
            .get("TrangThaiHoSo")
            .and_then(Value::as_str)
            .and_then(NationalStatus::parse)
            .unwrap_or(NationalStatus::REGISTERED);
        let current = overlay.get(mahoso.as_str()).copied().or_else(|| {
            st.dossiers.get(mahoso).map(|d| {
                d.dossier
                    .get("TrangThaiHoSo")
                    .and_then(Value::as_str)
                    .and_then(NationalStatus::parse)
                    .unwrap_or(NationalStatus::REGISTERED)
            })
        });
        match (updating, current) {
            (false, Some(_)) => {
                return ItemError::new(code::EXISTS, "MaHoSo", "hồ sơ đã tồn tại".into()).into_outcome(
                    SERVICE,
                    mahoso,
                    names.clone(),
                );
            }
            (true, None) => {
                return ItemError::new(code::UNKNOWN_DOSSIER, "MaHoSo", "không tìm thấy hồ sơ".into())
                    .into_outcome(SERVICE, mahoso, names.clone());
            }
            (true, Some(from)) if !transition_allowed(from, to) => {
                st.stats.rejected_status_changes += 1;
                let reason = format!(
                    "không được chuyển trạng thái từ {from} ({}) sang {to} ({})",
                    from.name(),
                    to.name()
                );
                return ItemError::new(code::STATUS, "TrangThaiHoSo", reason).into_outcome(
                    SERVICE,
                    mahoso,
                    names.clone(),
                );
            }
            _ => {}
        }
        overlay.insert(mahoso.as_str(), to);
    }
    for (item, mahoso) in items.into_iter().zip(&names) {
        let Value::Object(dossier) = item else { continue };
        let status = dossier.get("TrangThaiHoSo").and_then(Value::as_str).unwrap_or("").to_owned();
        match st.dossiers.get_mut(mahoso) {
            Some(stored) => {
                stored.dossier = dossier;
                stored.updates += 1;
                if stored.status_sequence.last() != Some(&status) {
                    stored.status_sequence.push(status);
                }
                st.stats.items_applied.dossiers_updated += 1;
            }
            None => {
                st.dossiers.insert(
                    mahoso.clone(),
                    Stored {
                        dossier,
                        history: Vec::new(),
                        identities: std::collections::HashSet::new(),
                        status_sequence: vec![status],
                        creates: 1,
                        updates: 0,
                    },
                );
                st.stats.items_applied.dossiers_created += 1;
            }
        }
    }
    Outcome {
        service: SERVICE,
        code: code::OK,
        message: "Đồng bộ hồ sơ thành công".into(),
        result: None,
        items: names,
    }
}

fn append_history(st: &mut MockState, envelope: &mut Map<String, Value>, province: &Provinces) -> Outcome {
    const SERVICE: &str = Service::AppendHistory.name();
    let items = match take_items(st, envelope, SERVICE) {
        Ok(items) => items,
        Err(outcome) => return outcome,
    };
    let names: Vec<String> = items.iter().map(mahoso_of).collect();
    for (item, mahoso) in items.iter().zip(&names) {
        if let Err(e) = validate_item(item, HISTORY_FIELDS, province) {
            return e.into_outcome(SERVICE, mahoso, names.clone());
        }
        if !st.dossiers.contains_key(mahoso) {
            return ItemError::new(code::UNKNOWN_DOSSIER, "MaHoSo", "không tìm thấy hồ sơ".into())
                .into_outcome(SERVICE, mahoso, names.clone());
        }
    }
    for (item, mahoso) in items.into_iter().zip(&names) {
        let Value::Object(entry) = item else { continue };
        let Some(stored) = st.dossiers.get_mut(mahoso) else { continue };
        let id = entry_identity(&Value::Object(entry.clone()));
        if !stored.identities.insert(id) {
            st.stats.duplicate_history_entries += 1;
        }
        let time =
            |e: &Map<String, Value>| e.get("ThoiDiemXuLy").and_then(Value::as_str).and_then(parse_national);
        if let (Some(last), Some(this)) = (stored.history.last().and_then(time), time(&entry))
            && this < last
        {
            st.stats.out_of_order_history_entries += 1;
        }
        stored.history.push(entry);
        st.entries_stored += 1;
        st.stats.items_applied.history_entries += 1;
    }
    Outcome {
        service: SERVICE,
        code: code::OK,
        message: "Cập nhật tiến độ thành công".into(),
        result: None,
        items: names,
    }
}

fn look_up_dossier(st: &mut MockState, envelope: &Map<String, Value>, province: &Provinces) -> Outcome {
    const SERVICE: &str = Service::LookUp.name();
    let Some(mahoso) = envelope.get("mahoso").and_then(Value::as_str) else {
        return Outcome::fail(SERVICE, code::MALFORMED, "thiếu mahoso".into());
    };
    if let Ok(parsed) = mahoso::parse(mahoso)
        && !province.owns(parsed.agency)
    {
        let message = format!("MaHoSo={mahoso}: hồ sơ không thuộc đơn vị");
        return Outcome::fail(SERVICE, code::NOT_YOUR_UNIT, message);
    }
    let result = match st.dossiers.get(mahoso) {
        Some(stored) => {
            let mut dossier = stored.dossier.clone();
            dossier.insert(
                "QuaTrinhXuLy".into(),
                Value::Array(stored.history.iter().cloned().map(Value::Object).collect()),
            );
            vec![Value::Object(dossier)]
        }
        None => Vec::new(),
    };
    Outcome {
        service: SERVICE,
        code: code::OK,
        message: "Thành công".into(),
        result: Some(Value::Array(result)),
        items: vec![mahoso.into()],
    }
}

fn look_up_procedure(envelope: &Map<String, Value>) -> Outcome {
    const SERVICE: &str = Service::Procedure.name();
    let Some(wanted) = envelope.get("maTTHC").and_then(Value::as_str) else {
        return Outcome::fail(SERVICE, code::MALFORMED, "thiếu maTTHC".into());
    };
    let result: Vec<Value> = catalogue::find(wanted)
        .map(|p| {
            json!({
                "MATTHC": p.code,
                "TENTTHC": p.name,
                "LINHVUCTHUCHIEN": [{"MALINHVUC": p.field_code, "TENLINHVUC": p.field_name}],
                "CACHTHUCTHUCHIEN": [{"KENH": "1", "THOIGIAN": [{
                    "THOIGIANGIAIQUYET": p.days.to_string(),
                    "DONVITINH": catalogue::duration_unit(p),
                    "MOTA": "Kể từ ngày nhận đủ hồ sơ hợp lệ",
                }]}],
            })
        })
        .into_iter()
        .collect();
    Outcome {
        service: SERVICE,
        code: code::OK,
        message: "Thành công".into(),
        result: Some(Value::Array(result)),
        items: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    /// One of these codes.
    Code(&'static [&'static str]),
    Date,
    MaHoSo,
    Procedure,
    /// A list of objects, each item's fields checked against the table (`domain::scoring`).
    List(&'static [(&'static str, scoring::Kind)]),
}

struct Field {
    name: &'static str,
    required: bool,
    kind: Kind,
}

const fn f(name: &'static str, required: bool, kind: Kind) -> Field {
    Field { name, required, kind }
}

const STATUS_CODES: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

/// The dossier's fields in the order the national table lists them; the first failing one
/// is the one reported.
const DOSSIER_FIELDS: &[Field] = &[
    f("MaHoSo", true, Kind::MaHoSo),
    f("MaTTHC", true, Kind::Procedure),
    f("TenTTHC", true, Kind::Text),
    f("MaLinhVuc", true, Kind::Text),
    f("TenLinhVuc", true, Kind::Text),
    f("KenhThucHien", true, Kind::Code(&["1", "2", "3"])),
    f("LoaiDoiTuong", true, Kind::Code(&["1", "2", "3", "4"])),
    f("ChuHoSo", false, Kind::Text),
    f("SoGiayToChuHoSo", false, Kind::Text),
    f("Email", false, Kind::Text),
    f("SoDienThoai", false, Kind::Text),
    f("TrichYeuHoSo", true, Kind::Text),
    f("NgayTiepNhan", true, Kind::Date),
    f("NgayHenTra", false, Kind::Date),
    f("TrangThaiHoSo", true, Kind::Code(STATUS_CODES)),
    f("NgayTra", false, Kind::Date),
    f("NgayKetThucXuLy", false, Kind::Date),
    f("HinhThuc", true, Kind::Code(&["0", "1"])),
    f("DonViXuLy", true, Kind::Text),
    // The fields the 766 indicators read (domain::scoring), all optional.
    f("DuocThanhToanTrucTuyen", false, Kind::Code(scoring::PAID_ONLINE)),
    f("DanhSachLePhi", false, Kind::List(scoring::FEES)),
    f("TaiLieuNop", false, Kind::List(scoring::DOCUMENTS)),
    f("DanhSachGiayToKetQua", false, Kind::List(scoring::RESULTS)),
    f("HoSoCoThanhPhanSoHoa", false, Kind::Code(scoring::ZERO_ONE)),
    f("NgayNopHoSo", false, Kind::Date),
];

/// Checks one item of a 766 list: an object of strings from its table, each inside its code
/// table or amount form, NFC, within the default length.
fn validate_list_item(
    list: &str,
    n: usize,
    item: &Value,
    fields: &[(&str, scoring::Kind)],
) -> Result<(), ItemError> {
    let at = |field: &str| format!("{list}[{n}].{field}");
    let Some(obj) = item.as_object() else {
        return Err(ItemError::invalid(list, format!("phần tử {n} không phải đối tượng JSON")));
    };
    for (key, value) in obj {
        let Some((_, kind)) = fields.iter().find(|(f, _)| f == key) else {
            return Err(ItemError::invalid(&at(key), "trường không được hỗ trợ"));
        };
        let Value::String(value) = value else {
            return Err(ItemError::invalid(
                &at(key),
                format!("phải là chuỗi JSON, nhận được {}", json_kind(value)),
            ));
        };
        if value.is_empty() {
            continue;
        }
        if !is_normalized(value) {
            return Err(ItemError::invalid(&at(key), "văn bản phải ở dạng Unicode dựng sẵn (NFC)"));
        }
        let len = char_len(value);
        if len > DEFAULT_MAX_CHARS {
            return Err(ItemError::invalid(
                &at(key),
                format!("dài {len} ký tự, vượt quá {DEFAULT_MAX_CHARS}"),
            ));
        }
        let fine = match kind {
            scoring::Kind::Text => true,
            scoring::Kind::Code(codes) => codes.contains(&value.as_str()),
            scoring::Kind::Amount => scoring::is_amount(value),
            scoring::Kind::Date => parse_national(value).is_some(),
        };
        if !fine {
            return Err(ItemError::invalid(&at(key), format!("giá trị {value:?} không hợp lệ")));
        }
    }
    Ok(())
}

const HISTORY_FIELDS: &[Field] = &[
    f("MaHoSo", true, Kind::MaHoSo),
    f("NguoiXuLy", true, Kind::Text),
    f("ChucDanh", false, Kind::Text),
    f("PhongBanXuLy", false, Kind::Text),
    f("ThoiDiemXuLy", true, Kind::Date),
    f("NoiDungXuLy", true, Kind::Text),
    f("TrangThai", true, Kind::Code(STATUS_CODES)),
    f("NgayBatDau", false, Kind::Date),
    f("NgayKetThucTheoQuyDinh", false, Kind::Date),
];

struct ItemError {
    code: i64,
    field: String,
    reason: String,
}

impl ItemError {
    fn new(code: i64, field: &str, reason: String) -> Self {
        Self { code, field: field.into(), reason }
    }

    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::new(code::INVALID, field, reason.into())
    }

    fn into_outcome(self, service: &'static str, mahoso: &str, items: Vec<String>) -> Outcome {
        let message = format!("MaHoSo={mahoso}: {}: {}", self.field, self.reason);
        Outcome { service, code: self.code, message, result: None, items }
    }
}

/// Checks one item against its field table; the order of checks decides which error a
/// doubly-bad item reports: shape (2), then province (7), then catalogue (6).
fn validate_item(item: &Value, fields: &[Field], province: &Provinces) -> Result<(), ItemError> {
    let Some(obj) = item.as_object() else {
        return Err(ItemError::invalid("MaHoSo", "mục dữ liệu không phải đối tượng JSON"));
    };
    if let Some(unknown) = obj.keys().find(|k| !fields.iter().any(|f| f.name == k.as_str())) {
        return Err(ItemError::invalid(unknown, "trường không được hỗ trợ"));
    }
    let mut deferred: Option<ItemError> = None;
    for field in fields {
        let value = match (obj.get(field.name), field.kind) {
            (Some(Value::Array(items)), Kind::List(item_fields)) => {
                if items.len() > scoring::MAX_LIST_ITEMS {
                    return Err(ItemError::invalid(
                        field.name,
                        format!("{} phần tử, vượt quá {}", items.len(), scoring::MAX_LIST_ITEMS),
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    validate_list_item(field.name, i + 1, item, item_fields)?;
                }
                continue;
            }
            (Some(other), Kind::List(_)) => {
                return Err(ItemError::invalid(
                    field.name,
                    format!("phải là mảng JSON, nhận được {}", json_kind(other)),
                ));
            }
            (None, _) => None,
            (Some(Value::String(s)), _) => Some(s.as_str()),
            (Some(other), _) => {
                return Err(ItemError::invalid(
                    field.name,
                    format!("phải là chuỗi JSON, nhận được {}", json_kind(other)),
                ));
            }
        };
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ if field.required => {
                return Err(ItemError::invalid(field.name, "bắt buộc, không được để trống"));
            }
            _ => continue,
        };
        if !is_normalized(value) {
            return Err(ItemError::invalid(field.name, "văn bản phải ở dạng Unicode dựng sẵn (NFC)"));
        }
        let limit = max_chars(field.name);
        let len = char_len(value);
        if len > limit {
            return Err(ItemError::invalid(field.name, format!("dài {len} ký tự, vượt quá {limit}")));
        }
        match field.kind {
            Kind::Text | Kind::List(_) => {}
            Kind::Code(codes) => {
                if !codes.contains(&value) {
                    return Err(ItemError::invalid(field.name, format!("mã {value:?} không hợp lệ")));
                }
            }
            Kind::Date => {
                if parse_national(value).is_none() {
                    return Err(ItemError::invalid(
                        field.name,
                        format!("{value:?} không phải thời điểm yyyyMMddHHmmss hợp lệ"),
                    ));
                }
            }
            Kind::MaHoSo => match mahoso::parse(value) {
                Err(e) => return Err(ItemError::invalid(field.name, format!("mã hồ sơ sai định dạng: {e}"))),
                Ok(parsed) if !province.owns(parsed.agency) => {
                    deferred.get_or_insert(ItemError::new(
                        code::NOT_YOUR_UNIT,
                        field.name,
                        format!("hồ sơ không thuộc tỉnh {}", province.0[0]),
                    ));
                }
                Ok(_) => {}
            },
            Kind::Procedure => {
                if catalogue::find(value).is_none() {
                    // Reported after every shape check and the province check.
                    if deferred.as_ref().is_none_or(|d| d.code != code::NOT_YOUR_UNIT) {
                        deferred = Some(ItemError::new(
                            code::UNKNOWN_PROCEDURE,
                            field.name,
                            format!("thủ tục {value} không có trong danh mục"),
                        ));
                    }
                }
            }
        }
    }
    let date = |name: &str| obj.get(name).and_then(Value::as_str).and_then(parse_national);
    if let (Some(received), Some(due)) = (date("NgayTiepNhan"), date("NgayHenTra"))
        && due < received
    {
        return Err(ItemError::invalid("NgayHenTra", "ngày hẹn trả trước ngày tiếp nhận"));
    }
    deferred.map_or(Ok(()), Err)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "số",
        Value::String(_) => "chuỗi",
        Value::Array(_) => "mảng",
        Value::Object(_) => "đối tượng",
    }
}

// ---------------------------------------------------------------------------------------------
// `/_mock/` views

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

fn state_view(stored: &Stored) -> Value {
    json!({
        "dossier": stored.dossier,
        "history": stored.history,
        "status_sequence": stored.status_sequence,
        "creates": stored.creates,
        "updates": stored.updates,
    })
}

async fn one_state(State(mock): State<Arc<NationalCore>>, Path(mahoso): Path<String>) -> Response {
    match mock.lock().dossiers.get(&mahoso) {
        Some(stored) => Json(state_view(stored)).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "unknown MaHoSo"}))).into_response(),
    }
}

async fn forget_one(State(mock): State<Arc<NationalCore>>, Path(mahoso): Path<String>) -> Response {
    if mock.forget(&mahoso) {
        Json(json!({"forgotten": mahoso})).into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": "unknown MaHoSo"}))).into_response()
    }
}

#[derive(Deserialize)]
struct Truncate {
    keep: usize,
}

async fn truncate_one(
    State(mock): State<Arc<NationalCore>>,
    Path(mahoso): Path<String>,
    body: Bytes,
) -> Response {
    let keep = match serde_json::from_slice::<Truncate>(&body) {
        Ok(t) => t.keep,
        Err(e) => {
            let error = format!("expected {{\"keep\": n}}: {e}");
            return (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
        }
    };
    match mock.truncate(&mahoso, keep) {
        Some(entries) => Json(json!({"mahoso": mahoso, "history_entries": entries})).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "unknown MaHoSo"}))).into_response(),
    }
}

async fn list_state(State(mock): State<Arc<NationalCore>>, Query(page): Query<Page>) -> Response {
    let limit = page.limit.unwrap_or(1000).clamp(1, 10_000);
    let st = mock.lock();
    let range = match &page.after {
        Some(after) => {
            st.dossiers.range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        }
        None => st.dossiers.range::<String, _>(..),
    };
    let mut items: Vec<Value> = Vec::with_capacity(limit.min(st.dossiers.len()));
    let mut has_more = false;
    for (_, stored) in range {
        if items.len() == limit {
            has_more = true;
            break;
        }
        items.push(state_view(stored));
    }
    Json(json!({"items": items, "has_more": has_more})).into_response()
}

async fn stats(State(mock): State<Arc<NationalCore>>) -> Response {
    Json(mock.stats()).into_response()
}

async fn get_faults(State(mock): State<Arc<NationalCore>>) -> Response {
    Json(mock.lock().faults.clone()).into_response()
}

async fn put_faults(State(mock): State<Arc<NationalCore>>, body: Bytes) -> Response {
    let mut st = mock.lock();
    let updated: Faults = match merge_patch(&st.faults, &body) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    };
    if let Err(e) = updated.validate() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    }
    if updated.seed != st.faults.seed {
        st.rng = fastrand::Rng::with_seed(updated.seed);
    }
    st.faults = updated;
    Json(st.faults.clone()).into_response()
}

async fn reset(State(mock): State<Arc<NationalCore>>) -> Response {
    let mut st = mock.lock();
    st.sessions.clear();
    st.dossiers.clear();
    st.entries_stored = 0;
    st.stats = Stats::default();
    st.calls.clear();
    st.rng = fastrand::Rng::with_seed(st.faults.seed);
    Json(json!({"reset": true})).into_response()
}

#[derive(Deserialize)]
struct CallsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn calls(State(mock): State<Arc<NationalCore>>, Query(q): Query<CallsQuery>) -> Response {
    let st = mock.lock();
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).clamp(1, CALL_RING);
    let items: Vec<&CallRecord> = st.calls.iter().filter(|c| c.seq > after).take(limit).collect();
    Json(json!({"items": items, "last_seq": st.next_call})).into_response()
}

#[derive(Deserialize)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The Quyết định 766 indicators from what the mock holds (`mock::report`): `from` and `to`
/// are whole days, `YYYY-MM-DD`, by default everything up to today.
async fn report(State(mock): State<Arc<NationalCore>>, Query(q): Query<ReportQuery>) -> Response {
    let today = dates::to_vn_local(jiff::Timestamp::now()).date().to_string();
    let (from, to) = (q.from.unwrap_or_else(|| "2000-01-01".into()), q.to.unwrap_or(today));
    for (name, day) in [("from", &from), ("to", &to)] {
        if day.len() != 10 || day.parse::<jiff::civil::Date>().is_err() {
            let error = format!("{name} {day:?} is not a date like 2026-11-30");
            return (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
        }
    }
    let st = mock.lock();
    let held = st.dossiers.values().map(|d| super::report::Held { dossier: &d.dossier, history: &d.history });
    Json(super::report::report(held, &from, &to, &mock.madonvi)).into_response()
}
