//! The HTTP client of the provincial listing: `GET /api/v1/dossiers` with the API key and
//! the (updated_after, after_id) cursor. Pages are read under a size limit and parsed into
//! raw records; judging each record is the normaliser's job.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    config::{ProvincialConfig, Secret},
    domain::dates::format_rfc3339_vn,
    sync::ports::{Cursor, Page, RawRecord, Source, SourceError},
    transport::{self, TransportError},
};

pub struct HttpProvincial {
    http: reqwest::Client,
    list_url: reqwest::Url,
    api_key: Secret,
    max_bytes: usize,
}

/// A listing page, its items left as JSON text (checked to be JSON, not parsed): each record
/// is a range of the page's text, which the normaliser reads borrowing from it (`domain::raw`).
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
    has_more: bool,
}

impl HttpProvincial {
    pub fn new(cfg: &ProvincialConfig) -> anyhow::Result<HttpProvincial> {
        let mut list_url = cfg.http.base_url.clone();
        let base_path = list_url.path().trim_end_matches('/').to_owned();
        list_url.set_path(&format!("{base_path}/api/v1/dossiers"));
        Ok(HttpProvincial {
            http: transport::client(&cfg.http)?,
            list_url,
            api_key: cfg.api_key.clone(),
            max_bytes: cfg.http.max_response_bytes,
        })
    }

    /// One page strictly after `after` (from the beginning without it).
    pub async fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        let mut url = self.list_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            if let Some(cursor) = after {
                query.append_pair("updated_after", &format_rfc3339_vn(cursor.updated_at));
                query.append_pair("after_id", &cursor.id);
            }
        }
        let request = self.http.get(url).header("X-API-Key", self.api_key.expose());
        let response = transport::send(request, self.max_bytes).await.map_err(|e| SourceError {
            reason: e.to_string(),
            http_status: None,
            timeout: e == TransportError::Timeout,
        })?;
        if response.status != 200 {
            let text = String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned();
            return Err(SourceError {
                reason: format!(
                    "HTTP {} ({}): {}",
                    response.status,
                    response.content_type.as_deref().unwrap_or("no content type"),
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
                http_status: Some(response.status),
                timeout: false,
            });
        }
        // Invalid UTF-8 somewhere: read the page with replacement characters, so that the rest
        // of it goes through; the normaliser quarantines the records they landed in.
        let text: Arc<str> = match std::str::from_utf8(&response.body) {
            Ok(text) => Arc::from(text),
            Err(_) => Arc::from(String::from_utf8_lossy(&response.body)),
        };
        let bytes = response.body.len();
        drop(response);
        let page = serde_json::from_str::<RawPage>(&text).map_err(|e| SourceError {
            reason: format!("the page is not the listing's JSON ({bytes} bytes): {e}"),
            http_status: Some(200),
            timeout: false,
        })?;
        Ok(Page::from_listing(RawRecord::in_page(&text, &page.items), page.has_more))
    }
}

impl Source for HttpProvincial {
    fn page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send {
        HttpProvincial::page(self, after, limit)
    }
}
