//! The HTTP client of the national integration API: logs in, keeps the session (renewing it
//! before it expires, and at once when the portal answers -1), and wraps each service call in
//! the envelope `{session, madonvi, service, ...}`. Behind an LGSP/NGSP gateway it takes an
//! OAuth2 client-credentials token instead (kept until shortly before it expires, renewed once
//! at once on HTTP 401) and sends it as `Authorization: Bearer`, the envelope without `session`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;
use serde_json::{Value, json, value::RawValue};
use tokio::{sync::Mutex, time::Instant};

use super::classify::{Answer, TransientKind, classify};
use crate::{
    config::{NationalAuth, NationalConfig, Secret},
    domain::service::Service,
    metrics as m,
    sync::ports::Sink,
    transport::{self, RawResponse, TransportError},
};

/// A session or a token, and until when it is used.
struct Session {
    token: String,
    renew_at: Instant,
    /// When it stops being valid (a token whose renewal failed is used until then).
    expires_at: Instant,
}

/// The client's authorisation: the session (or token) in use, and the pause after a failed
/// login (or token fetch).
#[derive(Default)]
struct Auth {
    session: Option<Session>,
    backoff: Option<Backoff>,
}

/// After a failed login or token fetch, no other is tried until `until`: every call in the
/// meantime gets the failure itself, so that a portal or gateway in trouble is asked once per
/// pause, not once per waiting call.
struct Backoff {
    until: Instant,
    delay: Duration,
    failure: Answer,
}

/// The first pause after a failed login or token fetch; it doubles with each failure in a row,
/// up to [`AUTH_BACKOFF_MAX`], and a success ends it.
const AUTH_BACKOFF_FIRST: Duration = Duration::from_millis(500);
const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the client is authorised.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `POST /auth` with the adapter's account; the session goes in every call's body, and is
    /// renewed `renew_after` after each login.
    Session { username: String, password: Secret, renew_after: Duration },
    /// An OAuth2 client of the gateway's token endpoint.
    OAuth2 { client_id: String, client_secret: Secret },
}

/// A token granted: the access token and how long it lives (when the endpoint says).
pub type Granted = (String, Option<Duration>);

/// How long a token whose lifetime the endpoint did not give is used.
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

fn form_encoded(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// When to renew a token that lives `lifetime`: a tenth of it early, at most a minute.
fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// What the token endpoint answered: a token, or why there is none (always a transient
/// answer: nothing was sent to the portal, and the next attempt asks again).
pub fn token_answer(result: Result<RawResponse, TransportError>) -> Result<Granted, Answer> {
    let failed = |kind, reason: String| Err(Answer::retry(kind, format!("token endpoint: {reason}"), false));
    let response = match result {
        Ok(r) => r,
        Err(e) => return failed(TransientKind::Login, e.to_string()),
    };
    match response.status {
        200 => {}
        400 | 401 | 403 => {
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            let error = body.get("error").and_then(Value::as_str).unwrap_or("no error given");
            let error: String = error.chars().take(80).collect();
            return failed(
                TransientKind::Login,
                format!("the gateway refused the client credentials (HTTP {}: {error})", response.status),
            );
        }
        _ => {
            return match classify(Ok(response)) {
                Answer::Retry(mut t) => {
                    t.reason = format!("token endpoint: {}", t.reason);
                    t.maybe_applied = false;
                    Err(Answer::Retry(t))
                }
                _ => failed(TransientKind::Login, "unexpected answer".into()),
            };
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
        return failed(TransientKind::BadAnswer, "HTTP 200 without a JSON body".into());
    };
    let token = body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
    let bearer =
        body.get("token_type").and_then(Value::as_str).is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
    let lifetime = match body.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s > 0.0)
    .map(|s| Duration::from_secs_f64(s.min(86_400.0 * 366.0)));
    match token {
        Some(token) if bearer => Ok((token.to_owned(), lifetime)),
        Some(_) => failed(TransientKind::BadAnswer, "a token that is not a Bearer token".into()),
        None => failed(TransientKind::BadAnswer, "HTTP 200 without an access_token".into()),
    }
}

/// Where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Auth,
    Integration,
}

/// Carries one JSON body to the portal and classifies what comes back. HTTP in production;
/// in memory, with seeded faults, in the simulation.
pub trait Transport: Send + Sync + 'static {
    /// Sends `body` (serialised by the transport: the pusher's stored JSON goes out as it is,
    /// never copied into a new tree), with `Authorization: Bearer` when a token is given.
    fn post<B: Serialize + Sync + ?Sized>(
        &self,
        target: Target,
        bearer: Option<&str>,
        body: &B,
    ) -> impl Future<Output = Answer> + Send;

    /// Asks the gateway's token endpoint for a client-credentials token.
    fn fetch_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
    ) -> impl Future<Output = Result<Granted, Answer>> + Send;
}

/// The integration envelope: `{session, madonvi, service}` and the service's own fields.
#[derive(Serialize)]
struct Envelope<'a, F> {
    /// Not behind a gateway: the bearer token stands for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    madonvi: &'a str,
    service: &'a str,
    #[serde(flatten)]
    fields: &'a F,
}

/// The HTTP transport: timeouts, TLS, size limit, the optional dstcode header.
pub struct HttpTransport {
    http: reqwest::Client,
    auth_url: reqwest::Url,
    integration_url: reqwest::Url,
    token_url: Option<reqwest::Url>,
    dstcode: Option<String>,
    max_bytes: usize,
}

impl Transport for HttpTransport {
    async fn post<B: Serialize + Sync + ?Sized>(
        &self,
        target: Target,
        bearer: Option<&str>,
        body: &B,
    ) -> Answer {
        let url = match target {
            Target::Auth => &self.auth_url,
            Target::Integration => &self.integration_url,
        };
        let mut request = self.http.post(url.clone()).json(body);
        if let Some(dstcode) = &self.dstcode {
            request = request.header("dstcode", dstcode);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        classify(transport::send(request, self.max_bytes).await)
    }

    async fn fetch_token(&self, client_id: &str, client_secret: &Secret) -> Result<Granted, Answer> {
        let Some(url) = &self.token_url else {
            return Err(Answer::retry(TransientKind::Login, "national.token_url is not set", false));
        };
        let request = self
            .http
            .post(url.clone())
            // RFC 6749 §2.3.1: both form-encoded before they go into HTTP Basic.
            .basic_auth(form_encoded(client_id), Some(form_encoded(client_secret.expose())))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials");
        token_answer(transport::send(request, self.max_bytes).await)
    }
}

/// The national client: the session (renewed before it expires, and at once on -1) and the
/// integration envelope `{session, madonvi, service, ...}`, over any transport.
pub struct NationalClient<T> {
    transport: T,
    credentials: Credentials,
    madonvi: String,
    auth: Mutex<Auth>,
    logins: AtomicU64,
}

/// The production client.
pub type HttpNational = NationalClient<HttpTransport>;

fn join(base: &reqwest::Url, path: &str) -> anyhow::Result<reqwest::Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    Ok(base.join(path)?)
}

impl HttpNational {
    pub fn new(cfg: &NationalConfig) -> anyhow::Result<HttpNational> {
        let (credentials, token_url) = match &cfg.auth {
            NationalAuth::Session => (
                Credentials::Session {
                    username: cfg.username.clone(),
                    password: cfg.password.clone(),
                    renew_after: cfg.session_renew,
                },
                None,
            ),
            NationalAuth::OAuth2 { token_url, client_id, client_secret } => (
                Credentials::OAuth2 { client_id: client_id.clone(), client_secret: client_secret.clone() },
                Some(token_url.clone()),
            ),
        };
        let transport = HttpTransport {
            http: transport::client(&cfg.http)?,
            auth_url: join(&cfg.http.base_url, "auth")?,
            integration_url: join(&cfg.http.base_url, "integration")?,
            token_url,
            dstcode: cfg.dstcode.clone(),
            max_bytes: cfg.http.max_response_bytes,
        };
        Ok(NationalClient::with_transport(transport, credentials, &cfg.madonvi))
    }
}

impl<T: Transport> NationalClient<T> {
    pub(crate) fn with_transport(transport: T, credentials: Credentials, madonvi: &str) -> Self {
        NationalClient {
            transport,
            credentials,
            madonvi: madonvi.to_owned(),
            auth: Mutex::new(Auth::default()),
            logins: AtomicU64::new(0),
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Logins (or tokens) after the first: proactive renewals and renewals after -1 or 401.
    pub fn session_renewals(&self) -> u64 {
        self.logins.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// A live session (or token), logging in when there is none or it is due for renewal. A
    /// renewal that fails leaves the token it was to replace in use until it expires (a short
    /// outage of a gateway's token endpoint stops nothing), and starts a pause ([`Backoff`]).
    async fn token(&self) -> Result<String, Answer> {
        let mut auth = self.auth.lock().await;
        let now = Instant::now();
        let usable = |auth: &Auth, until: fn(&Session) -> Instant| {
            auth.session.as_ref().filter(|s| now < until(s)).map(|s| s.token.clone())
        };
        if let Some(token) = usable(&auth, |s| s.renew_at) {
            return Ok(token);
        }
        if let Some(failure) = auth.backoff.as_ref().filter(|b| now < b.until).map(|b| b.failure.clone()) {
            return usable(&auth, |s| s.expires_at).ok_or(failure);
        }
        let renewed = match &self.credentials {
            Credentials::Session { username, password, renew_after } => {
                self.log_in(username, password, *renew_after).await
            }
            Credentials::OAuth2 { client_id, client_secret } => {
                self.gateway_token(client_id, client_secret).await
            }
        };
        match renewed {
            Ok(renewed) => {
                let token = renewed.token.clone();
                self.logins.fetch_add(1, Ordering::Relaxed);
                auth.session = Some(renewed);
                auth.backoff = None;
                Ok(token)
            }
            Err(failure) => {
                let delay =
                    auth.backoff.as_ref().map_or(AUTH_BACKOFF_FIRST, |b| (b.delay * 2).min(AUTH_BACKOFF_MAX));
                tracing::debug!(event = "auth_backoff", delay_ms = delay.as_millis() as u64);
                auth.backoff =
                    Some(Backoff { until: Instant::now() + delay, delay, failure: failure.clone() });
                usable(&auth, |s| s.expires_at).ok_or(failure)
            }
        }
    }

    /// `POST /auth` with the adapter's account.
    async fn log_in(
        &self,
        username: &str,
        password: &Secret,
        renew_after: Duration,
    ) -> Result<Session, Answer> {
        let body = json!({"username": username, "password": password.expose()});
        let answer = self.transport.post(Target::Auth, None, &body).await;
        metrics::counter!(m::CALLS, "service" => "auth", "outcome" => answer.label()).increment(1);
        if !matches!(answer, Answer::Ok(_)) {
            metrics::counter!(m::LOGIN_FAILURES).increment(1);
        }
        match answer {
            Answer::Ok(answer) => {
                match answer.get("session").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    Some(token) => {
                        tracing::debug!(event = "session_opened", service = "auth");
                        let until = Instant::now() + renew_after;
                        Ok(Session { token: token.to_owned(), renew_at: until, expires_at: until })
                    }
                    None => Err(Answer::retry(
                        TransientKind::Login,
                        "login answered success without a session",
                        false,
                    )),
                }
            }
            Answer::Refused { code, message } => Err(Answer::retry(
                TransientKind::Login,
                format!("login refused (error_code {code}): {message}"),
                false,
            )),
            Answer::Retry(mut t) => {
                t.reason = format!("login failed: {}", t.reason);
                t.maybe_applied = false;
                Err(Answer::Retry(t))
            }
        }
    }

    /// A client-credentials token from the gateway's token endpoint.
    async fn gateway_token(&self, client_id: &str, client_secret: &Secret) -> Result<Session, Answer> {
        // Its lifetime counts from the request: the answer may be slow.
        let asked = Instant::now();
        let granted = self.transport.fetch_token(client_id, client_secret).await;
        let label = granted.as_ref().map_or_else(Answer::label, |_| "ok");
        metrics::counter!(m::CALLS, "service" => "auth", "outcome" => label).increment(1);
        let (token, lifetime) = granted.inspect_err(|_| metrics::counter!(m::LOGIN_FAILURES).increment(1))?;
        let lifetime = lifetime.unwrap_or(TOKEN_DEFAULT_LIFETIME);
        tracing::debug!(event = "session_opened", service = "token", lifetime_s = lifetime.as_secs_f64());
        Ok(Session {
            token,
            renew_at: asked + lifetime - renew_margin(lifetime),
            expires_at: asked + lifetime,
        })
    }

    /// Drops the session if it is still `token` (another call may have renewed it already).
    async fn forget(&self, token: &str) {
        let mut auth = self.auth.lock().await;
        if auth.session.as_ref().is_some_and(|s| s.token == token) {
            auth.session = None;
        }
    }

    /// One integration call; on -1 (or, behind a gateway, HTTP 401) logs in again (takes a new
    /// token) and retries once: either refusal applied nothing.
    pub async fn call<F: Serialize + Sync>(&self, service: &str, fields: F) -> Answer {
        let gateway = matches!(self.credentials, Credentials::OAuth2 { .. });
        for _ in 0..2 {
            let token = match self.token().await {
                Ok(t) => t,
                Err(answer) => return answer,
            };
            let (session, bearer) =
                if gateway { (None, Some(token.as_str())) } else { (Some(token.as_str()), None) };
            let body = Envelope { session, madonvi: &self.madonvi, service, fields: &fields };
            match self.transport.post(Target::Integration, bearer, &body).await {
                Answer::Refused { code: -1, .. } if !gateway => {
                    tracing::info!(
                        event = "session_expired",
                        service,
                        "national session refused: logging in again"
                    );
                    self.forget(&token).await;
                }
                Answer::Retry(t) if gateway && t.http_status == Some(401) => {
                    tracing::info!(
                        event = "session_expired",
                        service,
                        "the gateway refused the token (HTTP 401): taking a new one"
                    );
                    self.forget(&token).await;
                }
                answer => return answer,
            }
        }
        let what = if gateway {
            "the gateway refused a new token at once (HTTP 401)"
        } else {
            "session refused again right after a new login"
        };
        Answer::retry(TransientKind::Session, what, false)
    }

    pub(crate) async fn sync_dossiers(&self, updating: bool, items: &[&RawValue]) -> Answer {
        #[derive(Serialize)]
        struct Fields<'a> {
            #[serde(rename = "isUpdating")]
            is_updating: &'static str,
            data: &'a [&'a RawValue],
        }
        let is_updating = if updating { "True" } else { "False" };
        self.call(Service::SyncDossiers.name(), Fields { is_updating, data: items }).await
    }

    pub(crate) async fn append_history(&self, entries: &[&RawValue]) -> Answer {
        #[derive(Serialize)]
        struct Fields<'a> {
            data: &'a [&'a RawValue],
        }
        self.call(Service::AppendHistory.name(), Fields { data: entries }).await
    }

    pub(crate) async fn look_up(&self, mahoso: &str) -> Answer {
        self.call(Service::LookUp.name(), json!({"mahoso": mahoso})).await
    }

    pub async fn procedure(&self, code: &str) -> Answer {
        self.call(Service::Procedure.name(), json!({"maTTHC": code})).await
    }
}

/// The engine's sink is this client, over whichever transport.
impl<T: Transport> Sink for NationalClient<T> {
    fn sync_dossiers(&self, updating: bool, items: &[&RawValue]) -> impl Future<Output = Answer> + Send {
        NationalClient::sync_dossiers(self, updating, items)
    }

    fn append_history(&self, entries: &[&RawValue]) -> impl Future<Output = Answer> + Send {
        NationalClient::append_history(self, entries)
    }

    fn look_up(&self, mahoso: &str) -> impl Future<Output = Answer> + Send {
        NationalClient::look_up(self, mahoso)
    }

    fn procedure(&self, code: &str) -> impl Future<Output = Answer> + Send {
        NationalClient::procedure(self, code)
    }

    fn session_renewals(&self) -> u64 {
        NationalClient::session_renewals(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// A gateway that answers integration calls from a script (HTTP status per call) and
    /// counts the tokens it grants.
    struct Scripted {
        statuses: StdMutex<Vec<u16>>,
        tokens: AtomicU64,
        bearers: StdMutex<Vec<String>>,
        /// Token requests made, and how many of the next ones fail (the endpoint down).
        token_requests: AtomicU64,
        token_failures: AtomicU64,
    }

    impl Transport for Scripted {
        async fn post<B: Serialize + Sync + ?Sized>(
            &self,
            _: Target,
            bearer: Option<&str>,
            body: &B,
        ) -> Answer {
            let body = serde_json::to_value(body).unwrap();
            assert!(body.get("session").is_none(), "no session in the body behind a gateway: {body}");
            self.bearers.lock().unwrap().push(bearer.unwrap_or_default().to_owned());
            let status = self.statuses.lock().unwrap().remove(0);
            classify(Ok(RawResponse {
                status,
                retry_after: None,
                content_type: Some("application/json".into()),
                body: bytes::Bytes::from(if status == 200 {
                    r#"{"error_code": 0}"#
                } else {
                    r#"{"error": "invalid_token"}"#
                }),
            }))
        }

        async fn fetch_token(&self, client_id: &str, secret: &Secret) -> Result<Granted, Answer> {
            assert_eq!((client_id, secret.expose()), ("client", "s3cret"));
            self.token_requests.fetch_add(1, Ordering::Relaxed);
            if self.token_failures.load(Ordering::Relaxed) > 0 {
                self.token_failures.fetch_sub(1, Ordering::Relaxed);
                return Err(Answer::retry(TransientKind::Unavailable, "token endpoint: HTTP 503", false));
            }
            let n = self.tokens.fetch_add(1, Ordering::Relaxed) + 1;
            Ok((format!("token-{n}"), Some(Duration::from_secs(3600))))
        }
    }

    fn client(statuses: &[u16]) -> NationalClient<Scripted> {
        let transport = Scripted {
            statuses: StdMutex::new(statuses.to_vec()),
            tokens: AtomicU64::new(0),
            bearers: StdMutex::new(Vec::new()),
            token_requests: AtomicU64::new(0),
            token_failures: AtomicU64::new(0),
        };
        let credentials =
            Credentials::OAuth2 { client_id: "client".into(), client_secret: Secret::new("s3cret") };
        NationalClient::with_transport(transport, credentials, "000.00.00.H58")
    }

    #[tokio::test]
    async fn a_token_is_kept_and_a_401_takes_a_new_one_once() {
        let c = client(&[200, 200, 401, 200, 401, 401]);
        assert!(matches!(c.look_up("A").await, Answer::Ok(_)));
        assert!(matches!(c.look_up("B").await, Answer::Ok(_)), "the token is kept");
        assert!(matches!(c.look_up("C").await, Answer::Ok(_)), "a 401 is renewed once, then the call goes");
        match c.look_up("D").await {
            Answer::Retry(t) => {
                assert_eq!(t.kind, TransientKind::Session);
                assert!(!t.maybe_applied, "a 401 applied nothing");
            }
            other => panic!("two 401s in a row must fail the call: {other:?}"),
        }
        let bearers = c.transport().bearers.lock().unwrap().clone();
        assert_eq!(bearers, ["token-1", "token-1", "token-1", "token-2", "token-2", "token-3"]);
        assert_eq!(c.session_renewals(), 2);
    }

    /// The token endpoint down: it is asked once per pause (0.5 s, doubling), every call in
    /// between fails with its answer, a success ends the pause, and a token that failed to
    /// renew is used until it expires.
    #[tokio::test(start_paused = true)]
    async fn a_token_endpoint_in_trouble_is_asked_once_per_pause() {
        let c = client(&[200; 8]);
        let t = c.transport();
        let requests = || t.token_requests.load(Ordering::Relaxed);
        let step = |ms| tokio::time::advance(Duration::from_millis(ms));
        t.token_failures.store(3, Ordering::Relaxed);
        for (wait_ms, asked) in [(0, 1), (0, 1), (400, 1), (100, 2), (900, 2), (100, 3), (1900, 3)] {
            step(wait_ms).await;
            match c.look_up("A").await {
                Answer::Retry(f) => {
                    assert_eq!(f.kind, TransientKind::Unavailable);
                    assert!(f.reason.contains("token endpoint"), "{}", f.reason);
                }
                other => panic!("no token, no call: {other:?}"),
            }
            assert_eq!(requests(), asked, "after {wait_ms} ms");
        }
        assert!(t.bearers.lock().unwrap().is_empty(), "nothing was sent without a token");
        step(100).await;
        assert!(matches!(c.look_up("A").await, Answer::Ok(_)), "the endpoint is back after the pause");
        assert_eq!(requests(), 4);
        // An hour's token, due for renewal a minute early; the renewal fails: the token is
        // used until it expires, and the pause starts again from 0.5 s.
        step(3_541_000).await;
        t.token_failures.store(2, Ordering::Relaxed);
        assert!(matches!(c.look_up("B").await, Answer::Ok(_)), "the old token still serves");
        assert!(matches!(c.look_up("C").await, Answer::Ok(_)));
        assert_eq!(requests(), 5, "one request for both calls");
        step(500).await;
        assert!(matches!(c.look_up("D").await, Answer::Ok(_)));
        assert_eq!(requests(), 6, "the pause after a success starts again at 0.5 s");
        step(1000).await;
        assert!(matches!(c.look_up("E").await, Answer::Ok(_)));
        assert_eq!(requests(), 7);
        assert_eq!(*t.bearers.lock().unwrap(), ["token-1", "token-1", "token-1", "token-1", "token-2"]);
    }

    #[test]
    fn token_answers_are_read_strictly() {
        let raw = |status: u16, body: &'static str| {
            Ok(RawResponse {
                status,
                retry_after: None,
                content_type: Some("application/json".into()),
                body: bytes::Bytes::from(body),
            })
        };
        let granted =
            token_answer(raw(200, r#"{"access_token": "t", "token_type": "bearer", "expires_in": "60"}"#));
        assert_eq!(granted.unwrap(), ("t".to_owned(), Some(Duration::from_secs(60))));
        assert_eq!(token_answer(raw(200, r#"{"access_token": "t"}"#)).unwrap().1, None);
        for (status, body, needle) in [
            (200, r#"{"token_type": "Bearer"}"#, "without an access_token"),
            (200, r#"{"access_token": "t", "token_type": "mac"}"#, "not a Bearer"),
            (200, "<html>", "without a JSON body"),
            (
                401,
                r#"{"error": "invalid_client"}"#,
                "refused the client credentials (HTTP 401: invalid_client)",
            ),
            (503, "<html>down</html>", "token endpoint: HTTP 503"),
        ] {
            match token_answer(raw(status, body)) {
                Err(Answer::Retry(t)) => {
                    assert!(t.reason.contains(needle), "{status} {body}: {}", t.reason);
                    assert!(!t.maybe_applied);
                }
                other => panic!("{status} {body}: {other:?}"),
            }
        }
        // Renewed a tenth early, at most a minute.
        assert_eq!(renew_margin(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(renew_margin(Duration::from_secs(3600)), Duration::from_secs(60));
    }
}
