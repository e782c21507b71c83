//! What the engine needs from the world, as traits: a source of provincial pages, a sink
//! that speaks the national services, and a clock. The HTTP adapters implement them for
//! production; the simulation implements them in memory with controlled time.

use std::future::Future;

use jiff::Timestamp;
use serde_json::{Value, value::RawValue};

use crate::national::{Answer, NationalClient, Transport};
use crate::provincial::HttpProvincial;

/// A position in the provincial listing: strictly after (updated_at, id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub updated_at: Timestamp,
    pub id: String,
}

/// One page of raw records, each still to be judged by the normaliser.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Value>,
    pub has_more: bool,
}

/// A page could not be read: retry later, with the cursor where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SourceError {
    pub reason: String,
    pub http_status: Option<u16>,
    pub timeout: bool,
}

pub trait Source: Send + Sync + 'static {
    fn page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send;
}

/// The national services, each answer classified (see `national::classify`).
pub trait Sink: Send + Sync + 'static {
    /// DongBoHoSoMC: create (`updating = false`) or replace the dossiers.
    fn sync_dossiers(&self, updating: bool, items: &[&RawValue]) -> impl Future<Output = Answer> + Send;
    /// CapNhatTienDoHoSoMC: append history entries.
    fn append_history(&self, entries: &[&RawValue]) -> impl Future<Output = Answer> + Send;
    /// TraCuuHoSo: the dossier with its history, or an empty result.
    fn look_up(&self, mahoso: &str) -> impl Future<Output = Answer> + Send;
    /// LayThuTuc: the procedure, or an empty result.
    fn procedure(&self, code: &str) -> impl Future<Output = Answer> + Send;
    /// Logins after the first.
    fn session_renewals(&self) -> u64;
}

/// Wall-clock time as the engine sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Wall-clock time that advances with tokio's clock, so that under a paused runtime (the
/// simulation) it is virtual and exactly reproducible. Copies share the same origin.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: Timestamp) -> Self {
        Self { base, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.base.checked_add(elapsed).unwrap_or(self.base)
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
