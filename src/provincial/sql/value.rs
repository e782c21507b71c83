//! One database value as the daemon reads it: never trusted, never a panic. Dates and times
//! are decoded here from the drivers' wire formats rather than through a date library's
//! decoder: PostgreSQL's `infinity` made that decoder panic, and a province's database holds
//! zero dates, infinities and invalid calendar days. Text that is not valid UTF-8 keeps its
//! place as replacement characters, so that the normaliser quarantines the record with the
//! field named.

use jiff::{
    Timestamp,
    civil::{Date, DateTime},
    tz::TimeZone,
};
use serde_json::Value;
use sqlx::{Row, TypeInfo, ValueRef, mysql::MySqlRow, postgres::PgRow};

/// A value read from one column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A date or time, as an instant (zone-less values read in `database_timezone`).
    Time(Timestamp),
    /// A value the daemon cannot read, with why.
    Invalid(String),
}

impl Cell {
    /// The record field's value: JSON as the provincial record form has it (times in RFC 3339).
    pub(crate) fn into_json(self) -> Result<Value, String> {
        Ok(match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::Int(i) => Value::from(i),
            Cell::Float(f) => {
                serde_json::Number::from_f64(f).map(Value::Number).ok_or("not a finite number")?
            }
            Cell::Text(s) => Value::String(s),
            Cell::Time(ts) => Value::String(crate::domain::dates::format_rfc3339_vn(ts)),
            Cell::Invalid(why) => return Err(why),
        })
    }

    /// A short description for error messages about the cursor's columns.
    pub(crate) fn describe(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Bool(b) => format!("the boolean {b}"),
            Cell::Int(i) => format!("the integer {i}"),
            Cell::Float(f) => format!("the number {f}"),
            Cell::Text(s) => format!("the text {:?}", s.chars().take(40).collect::<String>()),
            Cell::Time(t) => format!("the time {t}"),
            Cell::Invalid(why) => why.clone(),
        }
    }
}

fn civil_in(tz: &TimeZone, dt: DateTime) -> Cell {
    match tz.to_timestamp(dt) {
        Ok(ts) => Cell::Time(ts),
        Err(e) => {
            Cell::Invalid(format!("{dt} is not a time in {}: {e}", tz.iana_name().unwrap_or("the zone")))
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// MySQL's binary DATE/DATETIME/TIMESTAMP: a length byte (0, 4, 7 or 11), then year (2 bytes,
/// little-endian), month, day, hour, minute, second, microseconds (4 bytes, little-endian).
fn mysql_datetime(bytes: &[u8]) -> Result<DateTime, String> {
    let (len, rest) = bytes.split_first().ok_or("an empty date")?;
    let rest = rest.get(..usize::from(*len)).ok_or("a date cut short")?;
    if rest.is_empty() {
        return Err("0000-00-00 00:00:00".into());
    }
    let get = |i: usize| rest.get(i).copied().unwrap_or(0);
    let year = u16::from_le_bytes([get(0), get(1)]);
    let micros = u32::from_le_bytes([get(7), get(8), get(9), get(10)]);
    let text = || {
        format!("{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}", get(2), get(3), get(4), get(5), get(6))
    };
    let (y, mo, d, h, mi, s) = (
        i16::try_from(year).map_err(|_| text())?,
        i8::try_from(get(2)).map_err(|_| text())?,
        i8::try_from(get(3)).map_err(|_| text())?,
        i8::try_from(get(4)).map_err(|_| text())?,
        i8::try_from(get(5)).map_err(|_| text())?,
        i8::try_from(get(6)).map_err(|_| text())?,
    );
    let nanos = i32::try_from(micros).ok().and_then(|m| m.checked_mul(1000)).ok_or_else(text)?;
    DateTime::new(y, mo, d, h, mi, s, nanos).map_err(|_| text())
}

/// The text form some servers use for the same types (`2026-03-01 08:30:00.123456`).
fn text_datetime(s: &str) -> Result<DateTime, String> {
    let s = s.trim();
    if s.starts_with("0000-00-00") {
        return Err(s.to_owned());
    }
    s.replacen(' ', "T", 1)
        .parse::<DateTime>()
        .or_else(|_| s.parse::<Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .map_err(|_| s.to_owned())
}

/// Reads column `i` of a MySQL/MariaDB row.
pub(crate) fn mysql(row: &MySqlRow, i: usize, tz: &TimeZone) -> Cell {
    let Ok(raw) = row.try_get_raw(i) else { return Cell::Invalid("no such column".into()) };
    let ty = raw.type_info().name().to_owned();
    let temporal = matches!(ty.as_str(), "DATE" | "DATETIME" | "TIMESTAMP");
    if raw.is_null() {
        // The driver reports zero dates as NULL; they are not: say what the database holds.
        if temporal && row.try_get_unchecked::<&[u8], _>(i).is_ok_and(|b| b.first() == Some(&0)) {
            return Cell::Text("0000-00-00 00:00:00".into());
        }
        return Cell::Null;
    }
    if temporal {
        let bytes = row.try_get_unchecked::<&[u8], _>(i).unwrap_or_default();
        let parsed = if bytes.first().is_some_and(|b| *b <= 11) {
            mysql_datetime(bytes)
        } else {
            text_datetime(&lossy(bytes))
        };
        // Zone-less DATETIME in database_timezone; TIMESTAMP too, since the session's
        // time_zone is set to that zone's offset.
        return match parsed {
            Ok(dt) => civil_in(tz, dt),
            Err(shown) => Cell::Text(shown),
        };
    }
    if ty.contains("INT") || ty == "BOOLEAN" {
        if let Ok(v) = row.try_get::<i64, _>(i) {
            return Cell::Int(v);
        }
        return match row.try_get::<u64, _>(i) {
            Ok(v) => i64::try_from(v).map_or_else(|_| Cell::Text(v.to_string()), Cell::Int),
            Err(e) => Cell::Invalid(format!("{ty}: {e}")),
        };
    }
    match ty.as_str() {
        "FLOAT" => row
            .try_get::<f32, _>(i)
            .map_or_else(|e| Cell::Invalid(e.to_string()), |f| Cell::Float(f64::from(f))),
        "DOUBLE" => row.try_get::<f64, _>(i).map_or_else(|e| Cell::Invalid(e.to_string()), Cell::Float),
        // Sent as their decimal text.
        "DECIMAL" | "YEAR" | "TIME" => {
            Cell::Text(lossy(row.try_get_unchecked::<&[u8], _>(i).unwrap_or_default()))
        }
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" | "JSON"
        | "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            // Binary columns are decoded as UTF-8 too: a latin1 column that holds UTF-8 bytes
            // is read right with CAST(col AS BINARY) in the profile.
            Cell::Text(lossy(row.try_get_unchecked::<&[u8], _>(i).unwrap_or_default()))
        }
        other => {
            Cell::Invalid(format!("{other} is not a type the daemon reads (cast it to text in the profile)"))
        }
    }
}

/// PostgreSQL's binary epoch: 2000-01-01.
const PG_EPOCH_DAYS_FROM_UNIX: i64 = 10_957;

fn pg_be<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// PostgreSQL's binary NUMERIC: digit count, weight, sign, scale, then base-10000 digits.
fn pg_numeric(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?])) };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits.max(0) as usize).map(|k| word(8 + 2 * k)).collect::<Option<_>>()?;
    let mut int_part = String::new();
    for k in 0..=weight.max(-1) {
        let d = digits.get(k as usize).copied().unwrap_or(0);
        if int_part.is_empty() {
            int_part = d.to_string();
        } else {
            int_part.push_str(&format!("{d:04}"));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let mut k = weight as i32 + 1;
    while (frac.len() as i32) < i32::from(dscale) {
        let d = if k >= 0 { digits.get(k as usize).copied().unwrap_or(0) } else { 0 };
        frac.push_str(&format!("{d:04}"));
        k += 1;
    }
    frac.truncate(dscale.max(0) as usize);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() { format!("{sign}{int_part}") } else { format!("{sign}{int_part}.{frac}") })
}

/// Reads column `i` of a PostgreSQL row.
pub(crate) fn postgres(row: &PgRow, i: usize, tz: &TimeZone) -> Cell {
    let Ok(raw) = row.try_get_raw(i) else { return Cell::Invalid("no such column".into()) };
    if raw.is_null() {
        return Cell::Null;
    }
    let ty = raw.type_info().name().to_owned();
    let text_format = matches!(raw.format(), sqlx::postgres::PgValueFormat::Text);
    let Ok(bytes) = raw.as_bytes() else { return Cell::Invalid(format!("{ty}: no value")) };
    if text_format {
        return Cell::Text(lossy(bytes));
    }
    let bad = || Cell::Invalid(format!("{ty}: {} bytes that are not one", bytes.len()));
    match ty.as_str() {
        "BOOL" => bytes.first().map_or_else(bad, |b| Cell::Bool(*b != 0)),
        "INT2" => pg_be::<2>(bytes).map_or_else(bad, |b| Cell::Int(i64::from(i16::from_be_bytes(b)))),
        "INT4" | "OID" => pg_be::<4>(bytes).map_or_else(bad, |b| Cell::Int(i64::from(i32::from_be_bytes(b)))),
        "INT8" => pg_be::<8>(bytes).map_or_else(bad, |b| Cell::Int(i64::from_be_bytes(b))),
        "FLOAT4" => pg_be::<4>(bytes).map_or_else(bad, |b| Cell::Float(f64::from(f32::from_be_bytes(b)))),
        "FLOAT8" => pg_be::<8>(bytes).map_or_else(bad, |b| Cell::Float(f64::from_be_bytes(b))),
        "NUMERIC" => pg_numeric(bytes).map_or_else(bad, Cell::Text),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "BYTEA" | "JSON" | "XML" | "UNKNOWN" => {
            Cell::Text(lossy(bytes))
        }
        "JSONB" => Cell::Text(lossy(bytes.get(1..).unwrap_or_default())),
        "UUID" => match pg_be::<16>(bytes) {
            Some(b) => {
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                Cell::Text(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
            }
            None => bad(),
        },
        "TIMESTAMP" | "TIMESTAMPTZ" => match pg_be::<8>(bytes).map(i64::from_be_bytes) {
            Some(i64::MAX) => Cell::Text("infinity".into()),
            Some(i64::MIN) => Cell::Text("-infinity".into()),
            Some(micros) => {
                let unix = micros.checked_add(PG_EPOCH_DAYS_FROM_UNIX * 86_400_000_000);
                match unix.and_then(|u| Timestamp::from_microsecond(u).ok()) {
                    None => Cell::Invalid(format!("{ty} out of range")),
                    // timestamptz is an instant; timestamp a zone-less local time.
                    Some(ts) if ty == "TIMESTAMPTZ" => Cell::Time(ts),
                    Some(ts) => civil_in(tz, TimeZone::UTC.to_datetime(ts)),
                }
            }
            None => bad(),
        },
        "DATE" => match pg_be::<4>(bytes).map(i32::from_be_bytes) {
            Some(i32::MAX) => Cell::Text("infinity".into()),
            Some(i32::MIN) => Cell::Text("-infinity".into()),
            Some(days) => {
                let date =
                    Date::new(2000, 1, 1).ok().and_then(|e| e.checked_add(jiff::Span::new().days(days)).ok());
                match date {
                    Some(d) => civil_in(tz, d.to_datetime(jiff::civil::Time::midnight())),
                    None => Cell::Invalid("DATE out of range".into()),
                }
            }
            None => bad(),
        },
        other => {
            Cell::Invalid(format!("{other} is not a type the daemon reads (cast it to text in the profile)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_binary_datetimes_and_their_defects() {
        let dt = mysql_datetime(&[11, 234, 7, 3, 1, 8, 30, 0, 64, 226, 1, 0]).unwrap();
        assert_eq!(dt.to_string(), "2026-03-01T08:30:00.123456");
        assert_eq!(mysql_datetime(&[4, 234, 7, 3, 1]).unwrap().to_string(), "2026-03-01T00:00:00");
        assert_eq!(mysql_datetime(&[0]).unwrap_err(), "0000-00-00 00:00:00");
        // 31 February, which ALLOW_INVALID_DATES lets MySQL store.
        assert_eq!(mysql_datetime(&[4, 234, 7, 2, 31]).unwrap_err(), "2026-02-31 00:00:00.000000");
        assert!(mysql_datetime(&[11, 1]).is_err(), "cut short");
        assert!(mysql_datetime(&[]).is_err());
        assert_eq!(text_datetime("2026-03-01 08:30:00.5").unwrap().to_string(), "2026-03-01T08:30:00.5");
        assert!(text_datetime("0000-00-00 00:00:00").is_err());
    }

    #[test]
    fn postgres_numerics() {
        // 12.50: ndigits 2, weight 0, sign +, dscale 2, digits [12, 5000].
        let b = [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 19, 136];
        assert_eq!(pg_numeric(&b).as_deref(), Some("12.50"));
        // -1234567.8: digits [123, 4567, 8000], weight 1, dscale 1.
        let b = [0, 3, 0, 1, 0x40, 0, 0, 1, 0, 123, 0x11, 0xD7, 0x1F, 0x40];
        assert_eq!(pg_numeric(&b).as_deref(), Some("-1234567.8"));
        // 0.0005: digits [5], weight -1, dscale 4.
        let b = [0, 1, 0xFF, 0xFF, 0, 0, 0, 4, 0, 5];
        assert_eq!(pg_numeric(&b).as_deref(), Some("0.0005"));
        assert_eq!(pg_numeric(&[0, 0, 0, 0, 0xC0, 0, 0, 0]).as_deref(), Some("NaN"));
        assert_eq!(pg_numeric(&[0, 9]), None, "cut short");
    }

    #[test]
    fn cells_become_record_values() {
        assert_eq!(Cell::Int(2).into_json().unwrap(), Value::from(2));
        assert!(Cell::Float(f64::NAN).into_json().is_err());
        let ts: Timestamp = "2026-03-01T01:30:00Z".parse().unwrap();
        assert_eq!(Cell::Time(ts).into_json().unwrap(), Value::from("2026-03-01T08:30:00.000000+07:00"));
        assert_eq!(Cell::Invalid("x".into()).into_json().unwrap_err(), "x");
    }
}
