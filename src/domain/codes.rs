//! The national portal's `error_code`s (the national API), one table for the client, the
//! engine and the mock, and how a refusal names its item. Codes marked (mock) are this project's choices where the real list is
//! unpublished.

pub const OK: i64 = 0;
/// Session missing, unknown or expired: log in again (mock).
pub(crate) const SESSION: i64 = -1;
/// Malformed request: not JSON, an unknown service, `data` not a list, a bad `isUpdating` (mock).
pub(crate) const MALFORMED: i64 = 1;
/// An item failed validation; the message names it, `MaHoSo=<code>: <field>: <reason>` (mock).
pub(crate) const INVALID: i64 = 2;
/// A create of a MaHoSo that exists ("... đã tồn tại").
pub const EXISTS: i64 = 3;
/// An update or history for a MaHoSo the portal does not know (mock).
pub(crate) const UNKNOWN_DOSSIER: i64 = 4;
/// A status change the rules do not allow (mock).
pub const STATUS: i64 = 5;
/// A MaTTHC the national catalogue does not know (mock).
pub(crate) const UNKNOWN_PROCEDURE: i64 = 6;
/// `madonvi` is not the session's unit, or the MaHoSo is not the unit's (mock).
pub(crate) const NOT_YOUR_UNIT: i64 = 7;
/// More items than the portal takes in one call (mock).
pub(crate) const TOO_MANY: i64 = 8;
/// `/auth` with wrong credentials (mock: the real code is unpublished).
pub(crate) const BAD_CREDENTIALS: i64 = 9;

/// Whether a refusal concerns one item of a call (the others concern the call as a whole).
pub(crate) fn concerns_one_item(code: i64) -> bool {
    (INVALID..=NOT_YOUR_UNIT).contains(&code)
}

/// Whether a refusal of a call about one item (a look-up, a catalogue question) concerns the
/// call rather than the item: another unit's session (unless the message names the one
/// dossier that is not the unit's), a malformed envelope, a code unknown.
pub fn refuses_the_call(code: i64, message: &str) -> bool {
    (code == NOT_YOUR_UNIT && named_item(message).is_none()) || !concerns_one_item(code)
}

/// The MaHoSo an all-or-nothing refusal names (`MaHoSo=<code>: ...`), if any.
pub(crate) fn named_item(message: &str) -> Option<&str> {
    let start = message.find("MaHoSo=")? + "MaHoSo=".len();
    let rest = &message[start..];
    let end =
        rest.find(|c: char| c == ':' || c.is_whitespace() || c == ',' || c == ';').unwrap_or(rest.len());
    let name = &rest[..end];
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_that_names_one_dossier_is_not_a_refusal_of_the_call() {
        // Another unit's dossier looked up: that one dossier, not the account.
        assert!(!refuses_the_call(
            NOT_YOUR_UNIT,
            "MaHoSo=000.00.15.H20-250101-0001: hồ sơ không thuộc đơn vị"
        ));
        // The session's unit is not the madonvi sent: every call is refused.
        assert!(refuses_the_call(NOT_YOUR_UNIT, "madonvi không thuộc tài khoản"));
        assert!(refuses_the_call(MALFORMED, "MaHoSo=x: malformed"));
        assert!(!refuses_the_call(UNKNOWN_DOSSIER, "MaHoSo=x: không tồn tại"));
    }
}
