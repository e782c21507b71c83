//! A position in the provincial side's listing: strictly after (updated_at, id).

use jiff::Timestamp;

/// A position in the provincial listing: records strictly after (updated_at, id) follow it.
/// The id is the HTTP listing's MaHoSo, or the SQL source's primary key (integers zero-padded
/// so that their text order is their number order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub updated_at: Timestamp,
    pub id: String,
}
