//! The call journal: the last national calls that concerned each dossier, written by the
//! pusher and the audit in the transaction that records what the call came to, read by
//! `status --dossier`. Bounded per dossier by a trigger (migration 0007), so that the
//! database grows with the dossiers and never with the calls.

use rusqlite::{Connection, params};
use serde::Serialize;

/// How many calls are kept per dossier (the migration's trigger keeps as many).
pub(crate) const KEPT_PER_DOSSIER: usize = 10;

/// One national call, as it concerned one dossier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub mahoso: String,
    /// When the answer came, µs since the epoch.
    pub at: i64,
    pub service: &'static str,
    /// `ok`, `refused`, or the kind of failure (the national call metrics' outcome labels).
    pub outcome: &'static str,
    /// The portal's error_code, when it refused.
    pub error_code: Option<i64>,
    /// The HTTP status of an answer that was not the API's own.
    pub http_status: Option<u16>,
    /// What the call carried or found, or why it failed (the portal's own message).
    pub message: String,
}

/// Writes calls (in the caller's transaction).
pub(crate) fn insert(tx: &Connection, calls: &[Call]) -> rusqlite::Result<()> {
    if calls.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO call_journal (mahoso, at, service, outcome, error_code, http_status, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for c in calls {
        stmt.execute(params![c.mahoso, c.at, c.service, c.outcome, c.error_code, c.http_status, c.message])?;
    }
    Ok(())
}

/// One call as read back, with its time as text.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub at: Option<String>,
    pub service: String,
    pub outcome: String,
    pub error_code: Option<i64>,
    pub http_status: Option<u16>,
    pub message: String,
}

/// The calls kept for a dossier, newest first.
pub(crate) fn of(conn: &Connection, mahoso: &str) -> rusqlite::Result<Vec<Recorded>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, service, outcome, error_code, http_status, message FROM call_journal
         WHERE mahoso = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([mahoso], |r| {
        let at: i64 = r.get(0)?;
        Ok(Recorded {
            at: jiff::Timestamp::from_microsecond(at).ok().map(|t| t.to_string()),
            service: r.get(1)?,
            outcome: r.get(2)?,
            error_code: r.get(3)?,
            http_status: r.get(4)?,
            message: r.get(5)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(mahoso: &str, n: i64) -> Call {
        Call {
            mahoso: mahoso.into(),
            at: 1_700_000_000_000_000 + n,
            service: "DongBoHoSoMC",
            outcome: "ok",
            error_code: None,
            http_status: None,
            message: format!("call {n}"),
        }
    }

    #[test]
    fn keeps_the_newest_calls_of_each_dossier_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        store
            .write(|tx| {
                for n in 0..25 {
                    insert(tx, &[call("A", n)])?;
                }
                insert(tx, &[call("B", 0), call("B", 1)])
            })
            .unwrap();
        let a = store.read(|c| of(c, "A")).unwrap();
        assert_eq!(a.len(), KEPT_PER_DOSSIER);
        let kept: Vec<&str> = a.iter().map(|c| c.message.as_str()).collect();
        let newest: Vec<String> = (15..25).rev().map(|n| format!("call {n}")).collect();
        assert_eq!(kept, newest);
        assert_eq!(store.read(|c| of(c, "B")).unwrap().len(), 2, "another dossier's calls are its own");
        let rows: i64 =
            store.read(|c| c.query_row("SELECT COUNT(*) FROM call_journal", [], |r| r.get(0))).unwrap();
        assert_eq!(rows, KEPT_PER_DOSSIER as i64 + 2, "the table holds no more than it shows");
    }
}
