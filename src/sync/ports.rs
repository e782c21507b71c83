//! What the engine needs from the world, as traits: a source of provincial pages, a sink
//! that speaks the national services, and a clock. The adapters (`provincial/`, `national/`)
//! implement them for production; the simulation implements them in memory with controlled
//! time.

use std::future::Future;

use jiff::Timestamp;
use serde_json::value::RawValue;

pub use super::answer::Answer;
use crate::domain::normalize::record_position;
pub use crate::domain::raw::{Raw, RawRecord};

pub use crate::domain::cursor::Cursor;

/// One raw record, still to be judged by the normaliser.
#[derive(Debug, Clone)]
pub struct Record {
    pub raw: RawRecord,
    /// Where the record sits in the source's order; None when it has no usable position.
    pub position: Option<Cursor>,
    /// A hash of everything the record says, for sources without a version counter of their
    /// own (the SQL source): a record read again with the same fingerprint is already known.
    pub fingerprint: Option<i64>,
    /// The source's own key of the record, when it has one besides MaHoSo (the SQL source's
    /// primary key): quarantined versions are kept under it, and two records claiming one
    /// MaHoSo are told apart.
    pub source_id: Option<String>,
}

/// One page of records, in the source's order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    pub has_more: bool,
    /// The furthest position the page read, when the source knows it better than its records
    /// do (the SQL source reads rows it then leaves out, such as inter-agency copies).
    pub end: Option<Cursor>,
}

impl Page {
    /// A page of the HTTP listing's form: each record's position is its (updated_at, MaHoSo),
    /// its `version` the source's own counter.
    pub(crate) fn from_listing<R: Into<RawRecord>>(items: Vec<R>, has_more: bool) -> Page {
        let records = items
            .into_iter()
            .map(|raw| {
                let raw = raw.into();
                let position = record_position(&raw).map(|(updated_at, id)| Cursor { updated_at, id });
                Record { raw, position, fingerprint: None, source_id: None }
            })
            .collect();
        Page { records, has_more, end: None }
    }
}

/// A page could not be read: retry later, with the cursor where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SourceError {
    pub reason: String,
    pub http_status: Option<u16>,
    pub timeout: bool,
}

impl SourceError {
    pub fn new(reason: impl Into<String>) -> SourceError {
        SourceError { reason: reason.into(), http_status: None, timeout: false }
    }
}

/// The provincial side: pages of changes after a cursor, and a full scan for reconciliation.
pub trait Source: Send + Sync + 'static {
    /// Changes strictly after `after` (from the beginning without it), oldest first.
    fn page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send;

    /// The full pass: every record once, strictly after `after` in the scan's own order.
    /// The HTTP listing has one order for both; the SQL source scans by id.
    fn scan(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send {
        self.page(after, limit)
    }

    /// Whether a first backfill reads better through the scan, one row per dossier, than
    /// through the change listing (true for the SQL source, whose listing names a dossier once
    /// per action).
    fn backfill_by_scan(&self) -> bool {
        false
    }

    /// Told once at start the highest record version already stored, for sources whose
    /// versions are their own read counters (the SQL source), so that a clock stepped back
    /// never makes a new read look older than one recorded before.
    fn resume_after(&self, _version: i64) {}

    /// Why a required field may be missing in this source, for the quarantine reason
    /// (`MaTTHC`, or `QuaTrinhXuLy.NguoiXuLy` for a history entry's field).
    fn explain(&self, _field: &str) -> Option<String> {
        None
    }
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
pub(crate) struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub(crate) fn starting_at(base: Timestamp) -> Self {
        Self { base, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.base.checked_add(elapsed).unwrap_or(self.base)
    }
}
