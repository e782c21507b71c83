//! The provincial side's adapters, behind the engine's `Source` trait: the HTTP listing of
//! the provincial listing API ([`http`]), and the one-stop system's own database through a source
//! profile ([`sql`]). A vendor whose system differs gets another adapter here, not a fork of
//! the engine.

pub(crate) mod http;
pub mod sql;

pub use http::HttpProvincial;
pub use sql::SqlSource;

use crate::{
    config::{ProvincialConfig, SourceKind},
    sync::ports::{Cursor, Page, Source, SourceError},
};

/// The configured source (`provincial.kind`).
pub enum Provincial {
    Http(HttpProvincial),
    Sql(Box<SqlSource>),
}

impl Provincial {
    pub fn new(cfg: &ProvincialConfig) -> anyhow::Result<Provincial> {
        Ok(match cfg.kind {
            SourceKind::Http => Provincial::Http(HttpProvincial::new(cfg)?),
            SourceKind::Sql => Provincial::Sql(Box::new(SqlSource::new(cfg)?)),
        })
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            Provincial::Http(_) => SourceKind::Http,
            Provincial::Sql(_) => SourceKind::Sql,
        }
    }
}

impl Source for Provincial {
    async fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        match self {
            Provincial::Http(s) => s.page(after, limit).await,
            Provincial::Sql(s) => Source::page(s.as_ref(), after, limit).await,
        }
    }

    async fn scan(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, SourceError> {
        match self {
            Provincial::Http(s) => Source::scan(s, after, limit).await,
            Provincial::Sql(s) => Source::scan(s.as_ref(), after, limit).await,
        }
    }

    fn resume_after(&self, version: i64) {
        match self {
            Provincial::Http(s) => s.resume_after(version),
            Provincial::Sql(s) => s.resume_after(version),
        }
    }

    fn backfill_by_scan(&self) -> bool {
        match self {
            Provincial::Http(s) => s.backfill_by_scan(),
            Provincial::Sql(s) => s.backfill_by_scan(),
        }
    }

    fn explain(&self, field: &str) -> Option<String> {
        match self {
            Provincial::Http(s) => s.explain(field),
            Provincial::Sql(s) => s.explain(field),
        }
    }
}
