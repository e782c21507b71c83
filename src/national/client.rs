//! The HTTP client of the national integration API: logs in, keeps the session (renewing it
//! before it expires, and at once when the portal answers -1), and wraps each service call in
//! the envelope `{session, madonvi, service, ...}`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;
use serde_json::{Value, json, value::RawValue};
use tokio::{sync::Mutex, time::Instant};

use super::classify::{Answer, TransientKind, classify};
use crate::{
    config::{NationalConfig, Secret},
    metrics as m,
    sync::ports::Sink,
    transport,
};

struct Session {
    token: String,
    obtained: Instant,
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
    /// never copied into a new tree).
    fn post<B: Serialize + Sync + ?Sized>(
        &self,
        target: Target,
        body: &B,
    ) -> impl Future<Output = Answer> + Send;
}

/// The integration envelope: `{session, madonvi, service}` and the service's own fields.
#[derive(Serialize)]
struct Envelope<'a, F> {
    session: &'a str,
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
    dstcode: Option<String>,
    max_bytes: usize,
}

impl Transport for HttpTransport {
    async fn post<B: Serialize + Sync + ?Sized>(&self, target: Target, body: &B) -> Answer {
        let url = match target {
            Target::Auth => &self.auth_url,
            Target::Integration => &self.integration_url,
        };
        let mut request = self.http.post(url.clone()).json(body);
        if let Some(dstcode) = &self.dstcode {
            request = request.header("dstcode", dstcode);
        }
        classify(transport::send(request, self.max_bytes).await)
    }
}

/// The national client: the session (renewed before it expires, and at once on -1) and the
/// integration envelope `{session, madonvi, service, ...}`, over any transport.
pub struct NationalClient<T> {
    transport: T,
    username: String,
    password: Secret,
    madonvi: String,
    renew_after: Duration,
    session: Mutex<Option<Session>>,
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
        let transport = HttpTransport {
            http: transport::client(&cfg.http)?,
            auth_url: join(&cfg.http.base_url, "auth")?,
            integration_url: join(&cfg.http.base_url, "integration")?,
            dstcode: cfg.dstcode.clone(),
            max_bytes: cfg.http.max_response_bytes,
        };
        Ok(NationalClient::with_transport(
            transport,
            &cfg.username,
            cfg.password.clone(),
            &cfg.madonvi,
            cfg.session_renew,
        ))
    }
}

impl<T: Transport> NationalClient<T> {
    pub fn with_transport(
        transport: T,
        username: &str,
        password: Secret,
        madonvi: &str,
        renew_after: Duration,
    ) -> Self {
        NationalClient {
            transport,
            username: username.to_owned(),
            password,
            madonvi: madonvi.to_owned(),
            renew_after,
            session: Mutex::new(None),
            logins: AtomicU64::new(0),
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Logins after the first: proactive renewals and re-logins after -1.
    pub fn session_renewals(&self) -> u64 {
        self.logins.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// A live session token, logging in when there is none or it is due for renewal.
    async fn token(&self) -> Result<String, Answer> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref().filter(|s| s.obtained.elapsed() < self.renew_after) {
            return Ok(s.token.clone());
        }
        let body = json!({"username": self.username, "password": self.password.expose()});
        let answer = self.transport.post(Target::Auth, &body).await;
        metrics::counter!(m::CALLS, "service" => "auth", "outcome" => answer.label()).increment(1);
        if !matches!(answer, Answer::Ok(_)) {
            metrics::counter!(m::LOGIN_FAILURES).increment(1);
        }
        match answer {
            Answer::Ok(answer) => {
                match answer.get("session").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    Some(token) => {
                        self.logins.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(event = "session_opened", service = "auth");
                        *session = Some(Session { token: token.to_owned(), obtained: Instant::now() });
                        Ok(token.to_owned())
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

    /// Drops the session if it is still `token` (another call may have renewed it already).
    async fn forget(&self, token: &str) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.token == token) {
            *session = None;
        }
    }

    /// One integration call; on -1 logs in again and retries once (a -1 applied nothing).
    pub async fn call<F: Serialize + Sync>(&self, service: &str, fields: F) -> Answer {
        for _ in 0..2 {
            let token = match self.token().await {
                Ok(t) => t,
                Err(answer) => return answer,
            };
            let body = Envelope { session: &token, madonvi: &self.madonvi, service, fields: &fields };
            match self.transport.post(Target::Integration, &body).await {
                Answer::Refused { code: -1, .. } => {
                    tracing::info!(
                        event = "session_expired",
                        service,
                        "national session refused: logging in again"
                    );
                    self.forget(&token).await;
                }
                answer => return answer,
            }
        }
        Answer::retry(TransientKind::Session, "session refused again right after a new login", false)
    }

    pub async fn sync_dossiers(&self, updating: bool, items: &[&RawValue]) -> Answer {
        #[derive(Serialize)]
        struct Fields<'a> {
            #[serde(rename = "isUpdating")]
            is_updating: &'static str,
            data: &'a [&'a RawValue],
        }
        let is_updating = if updating { "True" } else { "False" };
        self.call("DongBoHoSoMC", Fields { is_updating, data: items }).await
    }

    pub async fn append_history(&self, entries: &[&RawValue]) -> Answer {
        #[derive(Serialize)]
        struct Fields<'a> {
            data: &'a [&'a RawValue],
        }
        self.call("CapNhatTienDoHoSoMC", Fields { data: entries }).await
    }

    pub async fn look_up(&self, mahoso: &str) -> Answer {
        self.call("TraCuuHoSo", json!({"mahoso": mahoso})).await
    }

    pub async fn procedure(&self, code: &str) -> Answer {
        self.call("LayThuTuc", json!({"maTTHC": code})).await
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
