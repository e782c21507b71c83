//! A round's work: each due dossier as the round loaded it, and what the round decides for it.

use serde_json::value::RawValue;

use super::super::answer::Transient;

/// Which kind of write may have been applied without an answer (the `inflight` column):
/// ordered, so that the larger uncertainty wins when both are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum InFlight {
    None = 0,
    /// A dossier create or update: resending a payload is harmless, a probe saves refusals.
    Payload = 1,
    /// History entries: read the dossier back before anything is sent again.
    History = 2,
}

impl InFlight {
    pub(crate) fn from_db(v: i64) -> InFlight {
        match v {
            0 => InFlight::None,
            1 => InFlight::Payload,
            // Anything else is read back first: never assume less uncertainty than stored.
            _ => InFlight::History,
        }
    }

    pub(crate) fn db(self) -> i64 {
        self as i64
    }
}

/// One due dossier, as loaded at the start of a round.
#[derive(Debug)]
pub(crate) struct Work {
    pub(crate) mahoso: String,
    /// The version loaded, and its source: a version is one source's (a dossier that moves to
    /// a superseding source starts over with that source's numbers), so the two together say
    /// whether the row is still what the round loaded.
    pub(crate) version: i64,
    pub(crate) source: String,
    pub(crate) updated_at: i64,
    /// The national dossier as stored, sent as it is (parsed only to fill catalogue fields).
    pub(crate) payload: Box<RawValue>,
    pub(crate) payload_hash: i64,
    pub(crate) status: i64,
    pub(crate) procedure: String,
    pub(crate) needs_catalogue: bool,
    /// History entries as stored, each sent as it is.
    pub(crate) history: Vec<Box<RawValue>>,
    pub(crate) national_exists: bool,
    pub(crate) acked_hash: Option<i64>,
    pub(crate) acked_history: usize,
    /// The in-flight mark as the database holds it (including this round's writes).
    pub(crate) inflight: InFlight,
    /// Uncertainty left from earlier writes that no read-back has resolved yet: it survives
    /// this round's failures (a failed read-back must never clear it).
    pub(crate) unresolved: InFlight,
    pub(crate) attempts: i64,
    /// Its personal fields are digests (or erased): its payload is never sent as it is stored.
    pub(crate) minimised: bool,
    /// What the round decided, once it decided; a dossier with a fate takes no further part.
    pub(crate) fate: Option<Fate>,
    /// Whether its fate is written already.
    pub(crate) settled: bool,
}

/// What a round decided for a dossier it does not finish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    Retry(Transient),
    Dead {
        code: Option<i64>,
        reason: String,
    },
    /// The read-back cannot tell which of our history entries the portal holds (it holds
    /// entries that match none of ours): parked with the reason, never resent, the write
    /// still marked uncertain so that a retry reads back again.
    Unmatched {
        reason: String,
    },
    /// Changed under the round (a newer version): leave it for the next round.
    Later,
    /// Minimised, and its payload must be sent: parked until its source is read again
    /// (`sync::minimise::wait_for_source`), never sent with digests.
    WaitForSource,
}

impl Work {
    pub(crate) fn open(&self) -> bool {
        self.fate.is_none()
    }

    pub(crate) fn payload_acked(&self) -> bool {
        self.acked_hash == Some(self.payload_hash)
    }

    /// Whether the stored payload would have to be sent this round (an uncertain payload
    /// write is probed by sending it again; an uncertain history write is only read back).
    pub(crate) fn payload_wanted(&self) -> bool {
        !self.payload_acked()
            || !self.national_exists
            || self.needs_catalogue
            || self.inflight == InFlight::Payload
    }

    /// Whether history entries wait to be sent.
    pub(crate) fn history_due(&self) -> bool {
        self.acked_history < self.history.len()
    }

    /// The portal does not hold the dossier (any more): it is created again, with its whole
    /// history, by the next write.
    pub(crate) fn forget_national(&mut self) {
        self.national_exists = false;
        self.acked_hash = None;
        self.acked_history = 0;
    }
}
