//! The one identity of a processing-history entry, used by every part that compares entries:
//! the poller (is the history already sent still there, unchanged?), the pusher's read-back
//! (which of our entries does the national copy hold?), and the national mock (is an appended
//! entry a duplicate?).
//!
//! **What is compared, and why.** An entry is a step of processing: *when* it happened
//! (`ThoiDiemXuLy`), *who* did it (`NguoiXuLy`) and *what* was done (`NoiDungXuLy`). Those three
//! are the provincial system's facts and never change once written. The status after the step
//! (`TrangThai`) is left out: it is our mapping of the local status (`status_map`), which an
//! operator may change between a write and its read-back. Titles, departments and step dates are
//! left out too: optional, and the first to be dropped or reformatted by a gateway.
//!
//! **Compared by meaning, not by bytes**, because the national adapter's look-up format is
//! unpublished and gateways in front of it rewrite answers:
//! - times are parsed to an instant, whatever the format (`yyyyMMddHHmmss` in Vietnam time,
//!   RFC 3339, ISO without an offset, `dd/MM/yyyy HH:mm:ss`, `yyyy/MM/dd`, epoch seconds or
//!   milliseconds, .NET's `/Date(ms)/`), at the national API's precision (seconds);
//! - text is compared in NFC, with surrounding whitespace ignored and runs of whitespace
//!   counted as one space;
//! - a number where text is due is its decimal text (`4` and `"4"` are one value).

use jiff::{Timestamp, civil::DateTime};
use serde_json::Value;

use super::{
    dates::{VN_OFFSET, parse_national},
    text::to_nfc,
};

/// What makes two history entries the same step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EntryIdentity {
    /// The step's time in seconds since the epoch; `None` when it cannot be read, and then the
    /// raw text, normalised, stands for it.
    at: Result<i64, String>,
    officer: String,
    content: String,
}

/// The identity of an entry given as JSON (ours, the provincial record's, or a read-back's).
pub(crate) fn identity(entry: &Value) -> EntryIdentity {
    EntryIdentity {
        at: instant(entry.get("ThoiDiemXuLy")).ok_or_else(|| text(entry.get("ThoiDiemXuLy"))),
        officer: text(entry.get("NguoiXuLy")),
        content: text(entry.get("NoiDungXuLy")),
    }
}

/// Text by meaning: a scalar's text, NFC, trimmed, inner whitespace runs as one space.
pub fn text(v: Option<&Value>) -> String {
    let raw = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    };
    to_nfc(&raw).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A code by meaning: `4`, `"4"`, `" 04 "` are one code.
pub fn code(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::Number(n)) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        }
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A time by meaning, in seconds since the epoch.
pub fn instant(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => epoch(n.as_i64()?),
        Value::String(s) => parse_any(s.trim()).map(|t| t.as_second()),
        _ => None,
    }
}

/// Seconds or milliseconds since the epoch (a 13-digit value is milliseconds).
fn epoch(n: i64) -> Option<i64> {
    let seconds = if n.abs() >= 100_000_000_000 { n / 1000 } else { n };
    Timestamp::from_second(seconds).ok().map(|t| t.as_second())
}

/// Every time format the portal or a gateway in front of it is known or likely to use. Times
/// without an offset are Vietnam time, as the national API's own are.
fn parse_any(s: &str) -> Option<Timestamp> {
    if s.is_empty() {
        return None;
    }
    let local = |dt: DateTime| VN_OFFSET.to_timestamp(dt).ok();
    if let Some(dt) = parse_national(s) {
        return local(dt);
    }
    // .NET's JSON dates: /Date(1700000000000)/ or /Date(1700000000000+0700)/.
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let digits: String = inner.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
        return Timestamp::from_second(epoch(digits.parse().ok()?)?).ok();
    }
    if s.chars().all(|c| c.is_ascii_digit()) && (s.len() == 10 || s.len() == 13) {
        return Timestamp::from_second(epoch(s.parse().ok()?)?).ok();
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    // ISO without an offset, with a T or a space, with or without fractions.
    let iso = s.replacen(' ', "T", 1);
    if let Ok(dt) = iso.parse::<DateTime>() {
        return local(dt);
    }
    // Day first or year first, with slashes or dashes.
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let parts: Vec<&str> = date.split(['/', '-', '.']).collect();
    let [a, b, c] = parts.as_slice() else { return None };
    let (y, m, d) = if a.len() == 4 { (*a, *b, *c) } else { (*c, *b, *a) };
    let mut hms = time.trim().split(':').map(|p| p.split('.').next().unwrap_or("0"));
    let (h, mi, se) = (hms.next().unwrap_or("0"), hms.next().unwrap_or("0"), hms.next().unwrap_or("0"));
    let dt = DateTime::new(
        y.parse().ok()?,
        m.parse().ok()?,
        d.parse().ok()?,
        h.parse().ok()?,
        mi.parse().ok()?,
        se.parse().ok()?,
        0,
    )
    .ok()?;
    local(dt)
}

/// How many of `ours` the national copy `theirs` holds, in order, from the first: the longest
/// common prefix by identity.
pub(crate) fn matched_prefix<'a, 'b>(
    ours: impl IntoIterator<Item = &'a Value>,
    theirs: impl IntoIterator<Item = &'b Value>,
) -> usize {
    ours.into_iter().zip(theirs).take_while(|(a, b)| identity(a) == identity(b)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use unicode_normalization::UnicodeNormalization;

    fn entry(at: Value, officer: &str, content: &str, status: Value) -> Value {
        json!({"ThoiDiemXuLy": at, "NguoiXuLy": officer, "NoiDungXuLy": content, "TrangThai": status})
    }

    #[test]
    fn an_entry_is_the_same_whatever_form_a_gateway_gives_it() {
        let ours = entry(json!("20260301083000"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!("4"));
        let nfd: String = "Trần Văn Hậu".nfd().collect();
        for theirs in [
            entry(json!("2026-03-01T08:30:00+07:00"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!("2026-03-01T01:30:00Z"), &nfd, "  Chuyển  xử lý\thồ sơ ", json!("04")),
            entry(json!("2026-03-01 08:30:00"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!("2026-03-01T08:30:00.000"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!("01/03/2026 08:30:00"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!("2026/03/01 08:30:00"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!(1_772_328_600), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!(1_772_328_600_000_i64), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            entry(json!("/Date(1772328600000)/"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!(4)),
            // Another status: a status_map changed between the write and the read-back.
            entry(json!("20260301083000"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!("5")),
        ] {
            assert_eq!(identity(&ours), identity(&theirs), "{theirs}");
        }
    }

    #[test]
    fn another_step_is_another_entry() {
        let ours = entry(json!("20260301083000"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!("4"));
        for theirs in [
            entry(json!("20260301083001"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!("4")),
            entry(json!("20260301083000"), "Trần Văn Hải", "Chuyển xử lý hồ sơ", json!("4")),
            entry(json!("20260301083000"), "Trần Văn Hậu", "Chuyển thẩm định", json!("4")),
            entry(json!("không rõ"), "Trần Văn Hậu", "Chuyển xử lý hồ sơ", json!("4")),
        ] {
            assert_ne!(identity(&ours), identity(&theirs), "{theirs}");
        }
        // An unreadable time is compared as text, so that it still matches itself.
        let odd = entry(json!(" không rõ "), "A", "B", json!(1));
        assert_eq!(identity(&odd), identity(&entry(json!("không rõ"), "A", "B", json!(2))));
    }

    #[test]
    fn codes_and_prefixes() {
        assert_eq!(code(Some(&json!(4))), Some(4));
        assert_eq!(code(Some(&json!(" 04 "))), Some(4));
        assert_eq!(code(Some(&json!(4.0))), Some(4));
        assert_eq!(code(Some(&json!("bốn"))), None);
        let a = entry(json!("20260301083000"), "A", "x", json!(2));
        let b = entry(json!("20260302083000"), "A", "y", json!(4));
        let c = entry(json!("20260303083000"), "A", "z", json!(9));
        assert_eq!(matched_prefix([&a, &b, &c], [&a, &b]), 2);
        assert_eq!(matched_prefix([&a, &b], [&a, &c, &b]), 1);
        assert_eq!(matched_prefix([&a], [] as [&Value; 0]), 0);
    }
}
