//! The page at `/` of the metrics listener, for the province's leaders and operators: sync
//! health per source, what is parked and why, the 766 picture per month and per DonViXuLy,
//! and the late dossiers with their cause (spec: daemon.md, "The page"). Vietnamese unless
//! `?lang=en`; self-contained (inline CSS and SVG, no script, nothing fetched); no personal
//! data (MaHoSo, procedures and agencies only; parked reasons lose any quoted value).
//!
//! Off loopback it is served only when `telemetry.access_token_file` is set, and then only to
//! a request bearing the token (which `/metrics` then requires too).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use crate::{
    config::{CalendarConfig, Secret},
    i18n::Lang,
    report::{Period, Report, lateness::Context},
    status::{StatusReport, Thresholds},
};

mod html;
mod svg;

/// How many months the page shows, the current one last.
pub const MONTHS: usize = 12;
/// A computed page is reused this long (each computation reads every dossier).
const FRESH_FOR: Duration = Duration::from_secs(10);

/// What the page reads and who may read it.
pub struct PageConfig {
    pub path: PathBuf,
    pub keys: crate::store::Keys,
    pub thresholds: Thresholds,
    pub calendar: CalendarConfig,
    pub token: Option<Secret>,
}

/// Everything the page shows, gathered in one read.
pub struct PageData {
    pub status: StatusReport,
    /// The last [`MONTHS`] months, oldest first; the current month last, in detail.
    pub months: Vec<Report>,
    pub generated_at: jiff::Timestamp,
}

/// Reads the page's data from the database (read-only; the daemon may be running).
pub fn gather(cfg: &PageConfig, now: jiff::Timestamp) -> Result<PageData, String> {
    let conn = crate::store::open_read_only(&cfg.path).map_err(|e| e.to_string())?;
    crate::store::read_bodies(&conn, &cfg.keys).map_err(|e| e.to_string())?;
    let status = crate::status::report(&conn, &cfg.path, now, &cfg.thresholds).map_err(|e| e.to_string())?;
    let today = crate::domain::dates::to_vn_local(now).date();
    let mut periods = Vec::with_capacity(MONTHS);
    let mut first = today.first_of_month();
    for _ in 0..MONTHS {
        periods.push(Period { from: first, to: first.last_of_month() });
        first = first.checked_sub(jiff::Span::new().months(1)).map_err(|e| e.to_string())?;
    }
    periods.reverse();
    let mut ctx = Context::now(cfg.calendar.clone());
    ctx.now = crate::domain::dates::to_vn_local(now);
    let months = crate::report::for_periods(&conn, &periods, true, &ctx).map_err(|e| e.to_string())?;
    Ok(PageData { status, months, generated_at: now })
}

/// The page for `lang`.
pub fn render(data: &PageData, lang: Lang) -> String {
    html::page(data, lang)
}

/// Why a request is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A token is configured, and the request does not bear it.
    NoToken,
    /// No token is configured, and the request comes from another machine.
    OffLoopback,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "401: this page and /metrics need Authorization: Bearer <the token of telemetry.access_token_file>\n",
            )
                .into_response(),
            Refusal::OffLoopback => (
                StatusCode::FORBIDDEN,
                "403: the page is served off loopback only when telemetry.access_token_file is set \
                 (then with Authorization: Bearer <token>); read it on the machine, or set the token\n",
            )
                .into_response(),
        }
    }
}

/// Whether a request may see the page (or `/metrics`): with a token configured, only with it;
/// without one, only from loopback.
pub fn allowed(token: Option<&Secret>, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
    match token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if same(given.as_bytes(), token.expose().as_bytes()) { Ok(()) } else { Err(Refusal::NoToken) }
        }
        None if peer.ip().to_canonical().is_loopback() => Ok(()),
        None => Err(Refusal::OffLoopback),
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The last page data computed, and when.
type Cached = Option<(Instant, Arc<PageData>)>;

/// The page's handler state: its configuration and the last page data computed.
#[derive(Clone)]
pub struct PageState {
    cfg: Arc<PageConfig>,
    cache: Arc<Mutex<Cached>>,
}

impl PageState {
    pub fn new(cfg: PageConfig) -> PageState {
        PageState { cfg: Arc::new(cfg), cache: Arc::default() }
    }

    pub fn token(&self) -> Option<&Secret> {
        self.cfg.token.as_ref()
    }

    async fn data(&self) -> Result<Arc<PageData>, String> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, data)) = cache.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(data.clone());
        }
        let cfg = self.cfg.clone();
        let data = tokio::task::spawn_blocking(move || gather(&cfg, jiff::Timestamp::now()))
            .await
            .map_err(|e| e.to_string())??;
        let data = Arc::new(data);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), data.clone()));
        }
        Ok(data)
    }
}

#[derive(serde::Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
}

/// `GET /`.
pub async fn handler(
    State(state): State<PageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = allowed(state.token(), peer, &headers) {
        return refused.into_response();
    }
    let lang = Lang::of_query(q.lang.as_deref());
    match state.data().await {
        // No script may run and nothing may be fetched: the page is whole as served.
        Ok(data) => (
            [(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            )],
            Html(render(&data, lang)),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(event = "page_failed", error = %e);
            (StatusCode::SERVICE_UNAVAILABLE, format!("503: the state cannot be read: {e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        format!("{ip}:40000").parse().unwrap()
    }

    #[test]
    fn off_loopback_without_a_token_is_refused_with_the_reason() {
        let headers = HeaderMap::new();
        assert!(allowed(None, peer("127.0.0.1"), &headers).is_ok());
        assert!(allowed(None, peer("[::1]"), &headers).is_ok());
        let refused = allowed(None, peer("10.1.2.3"), &headers).unwrap_err();
        assert_eq!(refused.into_response().status(), StatusCode::FORBIDDEN);
    }

    /// The handler itself, as a request from another machine reaches it.
    #[tokio::test]
    async fn a_request_from_off_loopback_without_a_token_gets_403_with_the_reason() {
        use axum::{body::Body, extract::connect_info::MockConnectInfo, http::Request, routing::get};
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let state = PageState::new(PageConfig {
            path: dir.path().join("state.db"),
            keys: crate::store::Keys::default(),
            thresholds: Thresholds {
                stale_heartbeat: Duration::from_secs(30),
                outbox_age: Duration::from_secs(600),
                audit_cycle: None,
                sources: vec![],
            },
            calendar: CalendarConfig::default(),
            token: None,
        });
        let app = axum::Router::new()
            .route("/", get(handler).with_state(state))
            .layer(MockConnectInfo(peer("192.0.2.7")));
        let answer = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(answer.into_body(), 4096).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("telemetry.access_token_file"), "the reason: {body}");
    }

    #[test]
    fn with_a_token_only_its_bearer_is_served_wherever_it_comes_from() {
        let token = Secret::new("0123456789abcdef0123");
        let mut headers = HeaderMap::new();
        assert_eq!(
            allowed(Some(&token), peer("127.0.0.1"), &headers).unwrap_err().into_response().status(),
            StatusCode::UNAUTHORIZED
        );
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(
            allowed(Some(&token), peer("10.1.2.3"), &headers).unwrap_err().into_response().status(),
            StatusCode::UNAUTHORIZED
        );
        headers.insert(header::AUTHORIZATION, "Bearer 0123456789abcdef0123".parse().unwrap());
        assert!(allowed(Some(&token), peer("10.1.2.3"), &headers).is_ok());
    }
}
