//! The HTTP client both adapters use: timeouts on every call, TLS verified against the
//! system's roots plus an optional extra CA bundle (a government PKI), no automatic retries
//! (every retry decision is the engine's), and answers read under a size limit.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use crate::config::HttpConfig;

/// Builds the client for one peer. There is deliberately no setting that turns certificate
/// verification off.
pub fn client(cfg: &HttpConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .user_agent(concat!("dvc-sync/", env!("CARGO_PKG_VERSION")))
        .retry(reqwest::retry::never())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(path) = &cfg.ca_file {
        let pem =
            std::fs::read(path).with_context(|| format!("while reading the CA file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("while parsing the CA file {} (PEM expected)", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "the CA file {} holds no certificate", path.display());
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().context("while building the HTTP client")
}

/// How a request failed before a whole answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// No answer in time: the request may have been processed.
    Timeout,
    /// The connection could not be made: nothing was sent.
    Connect(String),
    /// The connection broke after the request was sent: it may have been processed.
    Dropped(String),
    /// The answer was larger than the limit.
    TooLarge(usize),
}

impl TransportError {
    pub(crate) fn from_reqwest(e: &reqwest::Error) -> TransportError {
        if e.is_timeout() {
            TransportError::Timeout
        } else if e.is_connect() {
            TransportError::Connect(error_chain(e))
        } else {
            TransportError::Dropped(error_chain(e))
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("timed out"),
            TransportError::Connect(e) => write!(f, "cannot connect: {e}"),
            TransportError::Dropped(e) => write!(f, "connection lost before the answer: {e}"),
            TransportError::TooLarge(limit) => write!(f, "answer larger than {limit} bytes"),
        }
    }
}

/// An error with its causes, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Sends `request` and reads the answer, refusing bodies over `max_bytes`.
pub async fn send(request: reqwest::RequestBuilder, max_bytes: usize) -> Result<RawResponse, TransportError> {
    let mut response = request.send().await.map_err(|e| TransportError::from_reqwest(&e))?;
    if response.content_length().is_some_and(|len| len > max_bytes as u64) {
        return Err(TransportError::TooLarge(max_bytes));
    }
    let status = response.status().as_u16();
    let header = |name: reqwest::header::HeaderName| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    // Retry-After in seconds; the HTTP-date form is rare from gateways and ignored.
    let retry_after = header(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0).min(max_bytes as u64) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| TransportError::from_reqwest(&e))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(TransportError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(RawResponse { status, retry_after, content_type, body: Bytes::from(body) })
}
