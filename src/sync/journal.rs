//! Noting national calls in the call journal (see [`crate::store::journal`]): every call that
//! concerned a dossier, with what came of it. The pusher and the audit each keep their own
//! calls here until their next transaction, which is the one that records what the calls led
//! to; a transaction that fails puts them back for the next.

use std::sync::Mutex;

use super::answer::Answer;
use crate::store::{
    Store, StoreError,
    journal::{Call, insert},
};

/// Calls noted and not yet written.
#[derive(Debug, Default)]
pub(crate) struct Pending(Mutex<Vec<Call>>);

impl Pending {
    pub(crate) fn note(&self, calls: impl IntoIterator<Item = Call>) {
        let mut pending = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(calls);
        bound(&mut pending);
    }

    /// Notes calls and writes them at once with whatever is pending; a failed write keeps
    /// them for the next transaction (the caller goes on either way).
    pub(crate) fn write_now(&self, store: &Store, calls: impl IntoIterator<Item = Call>) {
        self.note(calls);
        let _ = self.write(store, |_| Ok(()));
    }

    /// One transaction of `store` that writes what is pending, then does `f`; if it fails,
    /// the calls stay pending.
    pub(crate) fn write<T>(
        &self,
        store: &Store,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let calls = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let written = store.write(|tx| {
            insert(tx, &calls)?;
            f(tx)
        });
        if written.is_err() {
            let mut pending = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let newer = std::mem::replace(&mut *pending, calls);
            pending.extend(newer);
            bound(&mut pending);
        }
        written
    }
}

/// While the database refuses writes, the oldest calls noted go first: the journal is a
/// diagnosis, and memory stays bounded.
const MAX_PENDING: usize = 10_000;

fn bound(pending: &mut Vec<Call>) {
    if pending.len() > MAX_PENDING {
        let excess = pending.len() - MAX_PENDING;
        pending.drain(..excess);
    }
}

/// What an answer says of a call that concerned `mahoso`: `done` says what it carried or found
/// when the portal took it; a refusal names the portal's code and message; a failure its reason.
/// A refusal that named another dossier of the same call says so (the call went again without it).
pub(crate) fn entry(
    mahoso: &str,
    at: i64,
    service: &'static str,
    answer: &Answer,
    refused_for: Option<&str>,
    done: impl FnOnce() -> String,
) -> Call {
    let (error_code, http_status, message) = match answer {
        Answer::Ok(_) => (None, None, done()),
        Answer::Refused { code, message } => match refused_for {
            Some(other) if other != mahoso => (
                Some(*code),
                None,
                format!(
                    "refused for another dossier of the call ({other}): {message}; sent again without it"
                ),
            ),
            _ => (Some(*code), None, message.clone()),
        },
        Answer::Retry(t) => (None, t.http_status, t.reason.clone()),
    };
    Call { mahoso: mahoso.to_owned(), at, service, outcome: answer.label(), error_code, http_status, message }
}
