//! National dates: `yyyyMMddHHmmss` in Vietnam local time (Asia/Ho_Chi_Minh, UTC+7, no DST).

use jiff::{
    Timestamp,
    civil::{Date, DateTime},
    tz::{Offset, TimeZone},
};

/// Vietnam's offset. It has no DST, so a fixed offset is exact and needs no tz database.
pub(crate) const VN_OFFSET: Offset = Offset::constant(7);

pub(crate) fn vn_tz() -> TimeZone {
    TimeZone::fixed(VN_OFFSET)
}

/// Parses `yyyyMMddHHmmss` strictly: 14 ASCII digits forming a real calendar time.
pub fn parse_national(s: &str) -> Option<DateTime> {
    let b = s.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> i32 {
        b[r].iter().fold(0i32, |acc, d| acc * 10 + i32::from(d - b'0'))
    };
    let year = i16::try_from(num(0..4)).ok()?;
    let (mo, d, h, mi, se) = (num(4..6), num(6..8), num(8..10), num(10..12), num(12..14));
    if year < 1900 {
        return None;
    }
    DateTime::new(
        year,
        i8::try_from(mo).ok()?,
        i8::try_from(d).ok()?,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        i8::try_from(se).ok()?,
        0,
    )
    .ok()
}

pub(crate) fn format_national(dt: DateTime) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The Vietnam local civil time of an instant.
pub fn to_vn_local(ts: Timestamp) -> DateTime {
    VN_OFFSET.to_datetime(ts)
}

/// Reads a provincial date in any form the national API or the messy sources use and returns
/// the national form. Accepts `yyyyMMddHHmmss` and RFC 3339 with an offset (converted to
/// Vietnam local time). Returns `None` for anything else, which the caller quarantines.
pub fn normalize_date(s: &str) -> Option<String> {
    let s = s.trim();
    if let Some(dt) = parse_national(s) {
        return Some(format_national(dt));
    }
    let ts: Timestamp = s.parse().ok()?;
    let local = to_vn_local(ts);
    (local.year() >= 1900).then(|| format_national(local))
}

/// `updated_at` as the provincial portal writes it: RFC 3339, microseconds, +07:00.
pub(crate) fn format_rfc3339_vn(ts: Timestamp) -> String {
    let dt = to_vn_local(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+07:00",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1000
    )
}

/// A real date from the `yyMMdd` part of a MaHoSo (years 2000 to 2099).
pub(crate) fn parse_yymmdd(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |i: usize| i8::try_from((b[i] - b'0') * 10 + (b[i + 1] - b'0')).ok();
    Date::new(2000 + i16::from(two(0)?), two(2)?, two(4)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_dates_must_be_real_calendar_times() {
        assert!(parse_national("20260301083000").is_some());
        assert!(parse_national("20240229235959").is_some());
        for bad in [
            "20250229000000",
            "20260301246000",
            "2026030108300",
            "2026-03-01T08:30",
            "20261301000000",
            "",
            "2026030108300a",
        ] {
            assert!(parse_national(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_is_converted_to_vietnam_local_time() {
        assert_eq!(normalize_date("2026-03-01T01:30:00Z").as_deref(), Some("20260301083000"));
        assert_eq!(normalize_date("2026-03-01T08:30:00.5+07:00").as_deref(), Some("20260301083000"));
        assert_eq!(normalize_date("2026-02-28T20:00:00-05:00").as_deref(), Some("20260301080000"));
        assert_eq!(normalize_date("20260301083000").as_deref(), Some("20260301083000"));
        assert_eq!(normalize_date("31/02/2026 08:00"), None);
        assert_eq!(normalize_date("2026-03-01T08:30:00"), None, "no offset: ambiguous");
    }

    #[test]
    fn updated_at_has_microseconds_and_the_vietnam_offset() {
        let ts: Timestamp = "2026-03-01T01:30:00.123456Z".parse().unwrap();
        assert_eq!(format_rfc3339_vn(ts), "2026-03-01T08:30:00.123456+07:00");
        let back: Timestamp = format_rfc3339_vn(ts).parse().unwrap();
        assert_eq!(back, ts);
    }

    #[test]
    fn yymmdd_must_be_a_real_date() {
        assert!(parse_yymmdd("260301").is_some());
        assert!(parse_yymmdd("260230").is_none());
        assert!(parse_yymmdd("2603011").is_none());
    }
}
