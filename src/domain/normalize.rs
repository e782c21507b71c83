//! From a raw provincial record to what the national portal accepts (the provincial listing API):
//! NFC text, strings where numbers came, lengths cut at character boundaries, dates in Vietnam
//! local time, the local status through `status_map`. A record that cannot be repaired is
//! quarantined with its reason and never sent.

use std::{borrow::Cow, collections::BTreeMap};

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::{
    dates::normalize_date,
    form::{Field, Form},
    mahoso,
    raw::{Raw, RawRecord},
    scoring, stable_hash,
    status::NationalStatus,
    text::{char_len, max_chars, nfc, to_nfc, truncate_chars},
};

pub type StatusMap = BTreeMap<String, NationalStatus>;

/// The national fields the catalogue (LayThuTuc) supplies when the record lacks them.
pub(crate) const CATALOGUE_FIELDS: [&str; 3] = ["TenTTHC", "MaLinhVuc", "TenLinhVuc"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Date,
}

/// (field, required, kind) of the national dossier, in the national table's order. MaHoSo,
/// MaTTHC and TrangThaiHoSo are handled apart.
const DOSSIER_FIELDS: &[(&str, bool, Kind)] = &[
    ("KenhThucHien", true, Kind::Text),
    ("LoaiDoiTuong", true, Kind::Text),
    ("ChuHoSo", false, Kind::Text),
    ("SoGiayToChuHoSo", false, Kind::Text),
    ("Email", false, Kind::Text),
    ("SoDienThoai", false, Kind::Text),
    ("TrichYeuHoSo", true, Kind::Text),
    ("NgayTiepNhan", true, Kind::Date),
    ("NgayHenTra", false, Kind::Date),
    ("NgayTra", false, Kind::Date),
    ("NgayKetThucXuLy", false, Kind::Date),
    ("HinhThuc", true, Kind::Text),
    ("DonViXuLy", true, Kind::Text),
];

const HISTORY_FIELDS: &[(&str, bool, Kind)] = &[
    ("NguoiXuLy", true, Kind::Text),
    ("ChucDanh", false, Kind::Text),
    ("PhongBanXuLy", false, Kind::Text),
    ("ThoiDiemXuLy", true, Kind::Date),
    ("NoiDungXuLy", true, Kind::Text),
    ("NgayBatDau", false, Kind::Date),
    ("NgayKetThucTheoQuyDinh", false, Kind::Date),
];

/// A record in the national form.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub mahoso: String,
    pub version: i64,
    pub updated_at: Timestamp,
    /// Every national dossier field, as strings ("" for absent optional ones).
    pub dossier: Form,
    /// TenTTHC, MaLinhVuc or TenLinhVuc is missing: fill from the catalogue before sending.
    pub needs_catalogue: bool,
    pub procedure: String,
    pub status: NationalStatus,
    /// The provincial system's own status code (`TrangThai`).
    pub local_status: String,
    /// The processing history, oldest first, in the national form.
    pub history: Vec<Form>,
}

/// Why a record is quarantined, and how to recognise it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// The MaHoSo as given, or a fingerprint of the record when it has none.
    pub key: String,
    pub mahoso: Option<String>,
    pub version: Option<i64>,
    pub updated_at: Option<Timestamp>,
    pub reason: String,
    /// The field whose value is missing or unusable, when one is to blame (`MaTTHC`;
    /// `QuaTrinhXuLy.NguoiXuLy` for a history entry's), so that a source can explain why.
    pub field: Option<&'static str>,
}

/// A field's problem: which field, and what.
struct Problem {
    field: Option<&'static str>,
    reason: String,
}

/// A history entry's field as [`Quarantined::field`] names it.
fn in_history(field: &str) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("NguoiXuLy", "QuaTrinhXuLy.NguoiXuLy"),
        ("ChucDanh", "QuaTrinhXuLy.ChucDanh"),
        ("PhongBanXuLy", "QuaTrinhXuLy.PhongBanXuLy"),
        ("ThoiDiemXuLy", "QuaTrinhXuLy.ThoiDiemXuLy"),
        ("NoiDungXuLy", "QuaTrinhXuLy.NoiDungXuLy"),
        ("NgayBatDau", "QuaTrinhXuLy.NgayBatDau"),
        ("NgayKetThucTheoQuyDinh", "QuaTrinhXuLy.NgayKetThucTheoQuyDinh"),
        ("TrangThai", "QuaTrinhXuLy.TrangThai"),
    ];
    NAMES.iter().find(|(f, _)| *f == field).map(|(_, n)| *n)
}

impl From<String> for Problem {
    fn from(reason: String) -> Problem {
        Problem { field: None, reason }
    }
}

impl From<&str> for Problem {
    fn from(reason: &str) -> Problem {
        Problem { field: None, reason: reason.to_owned() }
    }
}

fn about(field: &'static str, reason: String) -> Problem {
    Problem { field: Some(field), reason }
}

/// The position of a raw record in the listing, read even from records that are otherwise
/// unusable, so that the cursor can move past them.
pub fn position_of(raw: &Raw) -> Option<(Timestamp, String)> {
    let ts = raw.get("updated_at")?.as_str()?.parse().ok()?;
    let id = raw.get("MaHoSo").and_then(Raw::as_str).unwrap_or("").to_owned();
    Some((ts, id))
}

/// The fields a listing item is placed and recognised by, read from its text without
/// building the record; None when they are not all plain (a string, an integer, or null), and
/// then the whole record is read instead.
#[derive(serde::Deserialize)]
struct Listed<'a> {
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(rename = "MaHoSo", borrow)]
    mahoso: Option<Cow<'a, str>>,
    version: Option<i64>,
}

fn listed(record: &RawRecord) -> Option<Listed<'_>> {
    let text = record.text()?;
    // serde fills a struct from an array too: only an object is read this way.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The position of a record as a source handed it over (see [`position_of`]).
pub fn record_position(record: &RawRecord) -> Option<(Timestamp, String)> {
    match listed(record) {
        Some(l) => Some((l.updated_at?.parse().ok()?, l.mahoso.map(Cow::into_owned).unwrap_or_default())),
        None => position_of(&record.view()),
    }
}

/// The MaHoSo and version a record claims, if it gives both, read as [`normalize_raw`] reads
/// them; for recognising a record already recorded before normalising it.
pub fn record_version(record: &RawRecord) -> Option<(String, i64)> {
    match listed(record) {
        Some(l) => Some((l.mahoso?.into_owned(), l.version?)),
        None => {
            let raw = record.view();
            Some((raw.get("MaHoSo")?.as_str()?.to_owned(), raw.get("version")?.as_i64()?))
        }
    }
}

/// A scalar as the national API wants it: a string. Numbers become their decimal form;
/// null or absent is `None`.
fn scalar<'r>(v: Option<&'r Raw>) -> Result<Option<Cow<'r, str>>, &'static str> {
    match v {
        None | Some(Raw::Null) => Ok(None),
        Some(Raw::Str(s)) => Ok(Some(Cow::Borrowed(s))),
        Some(Raw::Number(n)) => Ok(Some(Cow::Owned(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            _ => n.to_string(),
        }))),
        Some(Raw::Bool(_)) => Err("is a boolean, not text"),
        Some(Raw::Array(_) | Raw::Object(_) | Raw::Unreadable { .. }) => Err("is not a scalar"),
    }
}

/// Text as the national field takes it: NFC, cut to the field's length (one allocation when
/// the text is NFC already, as it nearly always is).
fn text(field: &str, s: &str) -> String {
    truncate_chars(&nfc(s), max_chars(field)).to_owned()
}

/// Converts the fields of `table` from `source` into `out`; the error names the field.
fn convert(source: &Raw, table: &[(&'static str, bool, Kind)], out: &mut Form) -> Result<(), Problem> {
    for (field, required, kind) in table {
        let value = scalar(source.get(field)).map_err(|why| about(field, format!("{field} {why}")))?;
        let value = match value {
            Some(v) if !v.trim().is_empty() => v,
            _ if *required => return Err(about(field, format!("missing {field}"))),
            _ => Cow::Borrowed(""),
        };
        if value.contains(char::REPLACEMENT_CHARACTER) {
            return Err(about(field, format!("{field} holds bytes that were not valid UTF-8")));
        }
        let converted = match kind {
            _ if value.is_empty() => String::new(),
            Kind::Text => text(field, &value),
            Kind::Date => normalize_date(&value)
                .ok_or_else(|| about(field, format!("unparseable date in {field}: {value:?}")))?,
        };
        out.insert_text(field, converted);
    }
    Ok(())
}

/// One value of a 766 field (`scoring`), converted, or `None` when absent or empty.
fn scoring_value(
    field: &'static str,
    value: Option<&Raw>,
    kind: scoring::Kind,
) -> Result<Option<String>, Problem> {
    let Some(value) = scalar(value).map_err(|why| about(field, format!("{field} {why}")))? else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.contains(char::REPLACEMENT_CHARACTER) {
        return Err(about(field, format!("{field} holds bytes that were not valid UTF-8")));
    }
    let converted = match kind {
        scoring::Kind::Text => text(field, value),
        scoring::Kind::Code(codes) if codes.contains(&value) => value.to_owned(),
        scoring::Kind::Code(codes) => {
            return Err(about(field, format!("{field} {value:?} is not one of {}", codes.join(", "))));
        }
        scoring::Kind::Amount if scoring::is_amount(value) => value.to_owned(),
        scoring::Kind::Amount => return Err(about(field, format!("{field} {value:?} is not an amount"))),
        scoring::Kind::Date => normalize_date(value)
            .ok_or_else(|| about(field, format!("unparseable date in {field}: {value:?}")))?,
    };
    Ok(Some(converted))
}

/// The 766 fields (`scoring`): carried when the source has them, absent otherwise, each
/// checked against its code table, date form or amount form, lists bounded.
fn convert_scoring(source: &Raw, out: &mut Form) -> Result<(), Problem> {
    for (field, kind) in scoring::SCALARS {
        if let Some(v) = scoring_value(field, source.get(field), *kind)? {
            out.insert_text(field, v);
        }
    }
    for (list, fields) in scoring::LISTS {
        let items = match source.get(list) {
            None | Some(Raw::Null) => continue,
            Some(Raw::Array(items)) => items,
            Some(_) => return Err(about(list, format!("{list} is not a list"))),
        };
        if items.len() > scoring::MAX_LIST_ITEMS {
            return Err(about(
                list,
                format!("{list} has {} items, more than {}", items.len(), scoring::MAX_LIST_ITEMS),
            ));
        }
        let mut converted = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if !item.is_object() {
                return Err(about(list, format!("{list} item {} is not an object", i + 1)));
            }
            let mut o = Form::with_capacity(fields.len());
            for (field, kind) in *fields {
                let v = scoring_value(field, item.get(field), *kind)
                    .map_err(|p| about(list, format!("{list} item {}: {}", i + 1, p.reason)))?;
                if let Some(v) = v {
                    o.insert_text(field, v);
                }
            }
            converted.push(o);
        }
        out.insert(list, Field::List(converted));
    }
    Ok(())
}

/// The national status of a record or history entry, and its local code. The source's own
/// mapping (a `TrangThaiHoSo` field, as the SQL source's profiles give it) wins; `status_map`
/// maps the local `TrangThai` where the source gives none.
fn local_status(record: &Raw, map: &StatusMap) -> Result<(NationalStatus, String), Problem> {
    let status_problem = |reason: String| about("TrangThai", reason);
    let local = scalar(record.get("TrangThai")).map_err(|why| status_problem(format!("TrangThai {why}")))?;
    let local = local.filter(|s| !s.trim().is_empty()).map(Cow::into_owned);
    let mapped = scalar(record.get("TrangThaiHoSo"))
        .map_err(|why| status_problem(format!("TrangThaiHoSo {why}")))?
        .filter(|s| !s.trim().is_empty());
    if let Some(code) = mapped {
        let status = NationalStatus::parse(code.trim()).ok_or_else(|| {
            status_problem(format!(
                "the source maps the local status to {code:?}, not a national status (1 to 10)"
            ))
        })?;
        return Ok((status, local.unwrap_or_else(|| code.trim().to_owned())));
    }
    let local = local.ok_or_else(|| status_problem("no local status (TrangThai)".into()))?;
    let status = map
        .get(&local)
        .copied()
        .ok_or_else(|| status_problem(format!("local status {local:?} not in status_map")))?;
    Ok((status, local))
}

/// A stable key for a record without a usable MaHoSo, from fields that do not change over
/// its life, so that every version of it lands on the same quarantine row.
/// Junk with none of those fields (a string, a number) is keyed by its whole text instead, so
/// that different junk is not merged into one row.
fn fingerprint(record: &Raw) -> String {
    const IDENTITY: [&str; 5] = ["MaTTHC", "NgayTiepNhan", "ChuHoSo", "SoGiayToChuHoSo", "DonViXuLy"];
    let identity = if IDENTITY.iter().any(|k| record.get(k).is_some()) {
        IDENTITY.map(|k| record.get(k).map(|v| v.to_value().to_string()).unwrap_or_default()).join("|")
    } else {
        record.to_value().to_string()
    };
    format!("no-MaHoSo:{:016x}", stable_hash(identity.as_bytes()) as u64)
}

/// Normalises one provincial record given as a `Value` (tests, `check-source`, the audit).
pub fn normalize(raw: &Value, map: &StatusMap) -> Result<Normalized, Box<Quarantined>> {
    normalize_raw(&Raw::from_value(raw), map)
}

/// Normalises one raw provincial record.
/// The quarantine is boxed: records are mostly valid, and the error is large.
pub fn normalize_raw(raw: &Raw, map: &StatusMap) -> Result<Normalized, Box<Quarantined>> {
    let record = raw;
    let mahoso_given = raw.get("MaHoSo").and_then(Raw::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let version = raw.get("version").and_then(Raw::as_i64);
    let updated_at = raw.get("updated_at").and_then(Raw::as_str).and_then(|s| s.parse::<Timestamp>().ok());
    let quarantine = |problem: Problem| {
        Box::new(Quarantined {
            key: mahoso_given.clone().unwrap_or_else(|| fingerprint(raw)),
            mahoso: mahoso_given.clone(),
            version,
            updated_at,
            reason: problem.reason,
            field: problem.field,
        })
    };
    if let Raw::Unreadable { reason, .. } = raw {
        return Err(quarantine(format!("the record cannot be read: {reason}").into()));
    }
    if !raw.is_object() {
        return Err(quarantine("the record is not a JSON object".into()));
    }
    // What the source itself could not read (the SQL source's undecodable values).
    if let Some(errors) = record.get("_source_errors").and_then(Raw::as_array) {
        let errors: Vec<&str> = errors.iter().filter_map(Raw::as_str).collect();
        return Err(quarantine(format!("the source could not read: {}", errors.join("; ")).into()));
    }
    let Some(mahoso) = mahoso_given.clone() else {
        return Err(quarantine(about(
            "MaHoSo",
            match record.get("MaHoSo") {
                None | Some(Raw::Null) => "no MaHoSo".into(),
                Some(Raw::Str(_)) => "no MaHoSo (empty)".into(),
                Some(other) => format!("malformed MaHoSo: {} is not a string", other.to_value()),
            },
        )));
    };
    if let Err(e) = mahoso::parse(&mahoso) {
        return Err(quarantine(format!("malformed MaHoSo {mahoso:?}: {e}").into()));
    }
    let Some(version) = version.filter(|v| *v >= 0) else {
        return Err(quarantine("no version (a non-negative integer)".into()));
    };
    let Some(updated_at) = updated_at else {
        return Err(quarantine(match record.get("updated_at") {
            None | Some(Raw::Null) => "no updated_at (the source gave no time of the last change)".into(),
            Some(_) => "unparseable updated_at".into(),
        }));
    };
    let (status, local) = local_status(record, map).map_err(quarantine)?;

    let mut dossier = Form::with_capacity(40);
    dossier.insert_text("MaHoSo", mahoso.clone());
    // A code, not prose: NFC like all text (found by fuzzing: an NFD MaTTHC went through
    // as it was), but never cut short, since a shortened code names another procedure.
    let procedure = match scalar(record.get("MaTTHC")) {
        Ok(Some(p)) if p.contains(char::REPLACEMENT_CHARACTER) => {
            return Err(quarantine("MaTTHC holds bytes that were not valid UTF-8".into()));
        }
        Ok(Some(p)) if !p.trim().is_empty() => to_nfc(p.trim()),
        Ok(_) => return Err(quarantine(about("MaTTHC", "missing MaTTHC".into()))),
        Err(why) => return Err(quarantine(format!("MaTTHC {why}").into())),
    };
    if char_len(&procedure) > max_chars("MaTTHC") {
        return Err(quarantine(format!("MaTTHC longer than {} characters", max_chars("MaTTHC")).into()));
    }
    dossier.insert_text("MaTTHC", procedure.clone());
    let mut needs_catalogue = false;
    for field in CATALOGUE_FIELDS {
        match scalar(record.get(field)) {
            Ok(Some(v)) if v.contains(char::REPLACEMENT_CHARACTER) => {
                return Err(quarantine(format!("{field} holds bytes that were not valid UTF-8").into()));
            }
            Ok(Some(v)) if !v.trim().is_empty() => {
                dossier.insert_text(field, text(field, &v));
            }
            Ok(_) => {
                needs_catalogue = true;
                dossier.insert_text(field, String::new());
            }
            Err(why) => return Err(quarantine(format!("{field} {why}").into())),
        }
    }
    convert(record, DOSSIER_FIELDS, &mut dossier).map_err(quarantine)?;
    convert_scoring(record, &mut dossier).map_err(quarantine)?;
    dossier.insert_text("TrangThaiHoSo", status.to_string());

    let entries = match record.get("QuaTrinhXuLy") {
        None | Some(Raw::Null) => &[][..],
        Some(Raw::Array(entries)) => &entries[..],
        Some(_) => return Err(quarantine("QuaTrinhXuLy is not an array".into())),
    };
    let mut history = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let n = i + 1;
        if !entry.is_object() {
            return Err(quarantine(format!("history entry {n} is not an object").into()));
        }
        let mut out = Form::with_capacity(HISTORY_FIELDS.len() + 2);
        out.insert_text("MaHoSo", mahoso.clone());
        let in_entry = |p: Problem| {
            quarantine(Problem {
                field: p.field.and_then(in_history),
                reason: format!("history entry {n}: {}", p.reason),
            })
        };
        convert(entry, HISTORY_FIELDS, &mut out).map_err(in_entry)?;
        let (status, _) = local_status(entry, map).map_err(in_entry)?;
        out.insert_text("TrangThai", status.to_string());
        history.push(out);
    }
    Ok(Normalized {
        mahoso,
        version,
        updated_at,
        dossier,
        needs_catalogue,
        procedure,
        status,
        local_status: local,
        history,
    })
}

/// A dossier whose catalogue fields can be read and filled: the normaliser's form, or a
/// stored payload read back as JSON (the pusher fills those).
pub(crate) trait TextFields {
    fn text_of(&self, field: &str) -> Option<&str>;
    fn set_text(&mut self, field: &'static str, value: String);
}

impl TextFields for Form {
    fn text_of(&self, field: &str) -> Option<&str> {
        self.get(field)
    }
    fn set_text(&mut self, field: &'static str, value: String) {
        self.insert_text(field, value);
    }
}

impl TextFields for Map<String, Value> {
    fn text_of(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }
    fn set_text(&mut self, field: &'static str, value: String) {
        self.insert(field.to_owned(), Value::String(value));
    }
}

/// Fills the catalogue fields from a `LayThuTuc` answer.
pub(crate) fn fill_catalogue(dossier: &mut impl TextFields, name: &str, field_code: &str, field_name: &str) {
    for (field, value) in CATALOGUE_FIELDS.iter().zip([name, field_code, field_name]) {
        if dossier.text_of(field).unwrap_or("").is_empty() {
            dossier.set_text(field, text(field, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether any catalogue field is still empty.
    fn lacks_catalogue(dossier: &impl TextFields) -> bool {
        CATALOGUE_FIELDS.iter().any(|f| dossier.text_of(f).is_none_or(str::is_empty))
    }
    use crate::domain::status::DEFAULT_STATUS_MAP;
    use serde_json::json;
    use unicode_normalization::UnicodeNormalization;

    fn map() -> StatusMap {
        DEFAULT_STATUS_MAP.iter().map(|(k, v)| ((*k).to_owned(), NationalStatus::new(*v).unwrap())).collect()
    }

    fn record() -> Value {
        json!({
            "MaHoSo": "000.00.15.H58-260301-0001", "MaTTHC": "1.001193",
            "KenhThucHien": "2", "LoaiDoiTuong": "1", "ChuHoSo": "Nguyễn Văn An",
            "TrichYeuHoSo": "Đăng ký khai sinh", "NgayTiepNhan": "20260301083000",
            "NgayHenTra": "20260305170000", "TrangThai": "processing", "HinhThuc": "0",
            "DonViXuLy": "Sở Tư pháp", "updated_at": "2026-03-01T08:30:00.123456+07:00", "version": 3,
            "QuaTrinhXuLy": [{"MaHoSo": "000.00.15.H58-260301-0001", "NguoiXuLy": "Trần Văn Hậu",
                "ThoiDiemXuLy": "20260301083000", "NoiDungXuLy": "Tiếp nhận", "TrangThai": "new"}],
        })
    }

    fn with(mut v: Value, k: &str, x: Value) -> Value {
        v[k] = x;
        v
    }

    #[test]
    fn a_records_position_reads_as_from_the_whole_record() {
        let text = |t: &str| RawRecord::Json(serde_json::value::RawValue::from_string(t.to_owned()).unwrap());
        let at = "2026-03-01T08:30:00+07:00".parse::<Timestamp>().unwrap();
        for (record, expected) in [
            (r#"{"MaHoSo": "A", "updated_at": "2026-03-01T08:30:00+07:00", "x": [1]}"#, Some((at, "A"))),
            (r#"{"updated_at": "2026-03-01T08:30:00+07:00", "MaHoSo": null}"#, Some((at, ""))),
            (r#"{"updated_at": "2026-03-01T08:30:00+07:00", "MaHoSo": {"nested": true}}"#, Some((at, ""))),
            (
                r#"{"updated_at": "2026-01-01T00:00:00Z", "updated_at": "2026-03-01T08:30:00+07:00", "MaHoSo": "B"}"#,
                Some((at, "B")),
            ),
            (r#"{"updated_at": 1772328600, "MaHoSo": "A"}"#, None),
            (r#"{"updated_at": "yesterday", "MaHoSo": "A"}"#, None),
            (r#""not a record""#, None),
            (r#"["2026-03-01T08:30:00+07:00", "A", 3]"#, None),
        ] {
            let got = record_position(&text(record));
            assert_eq!(got, expected.map(|(t, m)| (t, m.to_owned())), "{record}");
            assert_eq!(got, position_of(&Raw::parse(record)), "as the whole record reads: {record}");
        }
        for (record, expected) in [
            (r#"{"MaHoSo": "A", "version": 3}"#, Some(("A", 3))),
            (r#"{"MaHoSo": "A", "version": 3, "version": 4}"#, Some(("A", 4))),
            (r#"{"MaHoSo": "A", "version": 3.0}"#, None),
            (r#"{"MaHoSo": "A", "version": "3"}"#, None),
            (r#"{"MaHoSo": "A", "version": 18446744073709551615}"#, None),
            (r#"{"MaHoSo": 5, "version": 3}"#, None),
            (r#"{"version": 3}"#, None),
            (r#"[1]"#, None),
            (r#"["2026-03-01T08:30:00+07:00", "A", 3]"#, None),
        ] {
            assert_eq!(record_version(&text(record)), expected.map(|(m, v)| (m.to_owned(), v)), "{record}");
        }
    }

    #[test]
    fn a_clean_record_becomes_the_national_form() {
        let n = normalize(&record(), &map()).unwrap();
        assert_eq!(n.mahoso, "000.00.15.H58-260301-0001");
        assert_eq!((n.version, n.status.code()), (3, 4));
        assert_eq!(n.dossier["TrangThaiHoSo"], "4");
        assert_eq!(n.dossier["SoDienThoai"], "", "absent optional fields are empty strings");
        assert!(n.needs_catalogue, "no TenTTHC in the record");
        assert_eq!(n.history[0]["TrangThai"], "2");
        assert_eq!(n.history[0]["ChucDanh"], "");
        assert!(n.dossier.get("TrangThai").is_none() && n.dossier.get("version").is_none());
    }

    #[test]
    fn a_procedure_code_is_nfc_and_never_cut() {
        // Found by fuzzing: an NFD MaTTHC went through as it was.
        let nfd: String = "1 Ngô Đức Vy".nfd().collect();
        let n = normalize(&with(record(), "MaTTHC", json!(nfd)), &map()).unwrap();
        assert_eq!(n.dossier["MaTTHC"], "1 Ngô Đức Vy");
        assert_eq!(n.procedure, "1 Ngô Đức Vy");
        let long: String = std::iter::repeat_n('1', max_chars("MaTTHC") + 1).collect();
        let err = normalize(&with(record(), "MaTTHC", json!(long)), &map()).unwrap_err();
        assert!(err.reason.contains("MaTTHC longer than"), "{}", err.reason);
    }

    #[test]
    fn mess_is_repaired() {
        let nfd: String = "Nguyễn Văn An".nfd().collect();
        let long: String = std::iter::repeat_n('ễ', 1200).collect();
        let r = with(record(), "ChuHoSo", json!(nfd));
        let r = with(r, "KenhThucHien", json!(2));
        let r = with(r, "SoDienThoai", json!(912345678));
        let r = with(r, "TrichYeuHoSo", json!(long));
        let r = with(r, "NgayTiepNhan", json!("2026-03-01T01:30:00Z"));
        let n = normalize(&r, &map()).unwrap();
        assert_eq!(n.dossier["ChuHoSo"], "Nguyễn Văn An");
        assert_eq!(n.dossier["KenhThucHien"], "2");
        assert_eq!(n.dossier["SoDienThoai"], "912345678");
        assert_eq!(n.dossier.get("TrichYeuHoSo").unwrap().chars().count(), 1000);
        assert_eq!(n.dossier["NgayTiepNhan"], "20260301083000");
    }

    #[test]
    fn each_defect_is_quarantined_with_its_reason() {
        let cases = [
            (json!({"TrangThai": "new"}), "no MaHoSo"),
            (with(record(), "MaHoSo", json!("HS/2026/1")), "malformed MaHoSo"),
            (with(record(), "MaHoSo", json!("000.00.15.H58-260231-0001")), "malformed MaHoSo"),
            (with(record(), "NgayTiepNhan", json!("31/02/2026 08:00")), "unparseable date in NgayTiepNhan"),
            (with(record(), "TrangThai", json!("dang_tham_dinh")), "not in status_map"),
            (with(record(), "TrichYeuHoSo", json!({"x": 1})), "TrichYeuHoSo is not a scalar"),
            (
                with(record(), "QuaTrinhXuLy", json!([{"NguoiXuLy": "A"}])),
                "history entry 1: missing ThoiDiemXuLy",
            ),
            (json!("just a string"), "not a JSON object"),
            (
                with(record(), "ChuHoSo", json!("Nguy\u{FFFD}n")),
                "ChuHoSo holds bytes that were not valid UTF-8",
            ),
        ];
        for (raw, reason) in cases {
            let q = normalize(&raw, &map()).unwrap_err();
            assert!(q.reason.contains(reason), "{:?} should say {reason:?}", q.reason);
        }
    }

    #[test]
    fn the_sources_own_status_mapping_wins_over_status_map() {
        // The source maps "processing" to 5 itself (OpenCPS's opencps_dossierstatusmapping).
        let mut r = with(record(), "TrangThaiHoSo", json!("5"));
        r["QuaTrinhXuLy"][0]["TrangThaiHoSo"] = json!(9);
        let n = normalize(&r, &map()).unwrap();
        assert_eq!(n.dossier["TrangThaiHoSo"], "5");
        assert_eq!(n.local_status, "processing");
        assert_eq!(n.history[0]["TrangThai"], "9", "a number from the source is read as its code");
        // An empty mapping falls back to status_map; a mapping outside 1..10 is quarantined.
        let n = normalize(&with(record(), "TrangThaiHoSo", json!("")), &map()).unwrap();
        assert_eq!(n.dossier["TrangThaiHoSo"], "4");
        let q = normalize(&with(record(), "TrangThaiHoSo", json!("11")), &map()).unwrap_err();
        assert!(q.reason.contains("not a national status") && q.field == Some("TrangThai"), "{q:?}");
        // No local status either: the field named, for the source's hint.
        let q = normalize(&with(record(), "TrangThai", Value::Null), &map()).unwrap_err();
        assert_eq!((q.reason.as_str(), q.field), ("no local status (TrangThai)", Some("TrangThai")));
        let mut r = record();
        r["QuaTrinhXuLy"][0]["NguoiXuLy"] = Value::Null;
        let q = normalize(&r, &map()).unwrap_err();
        assert_eq!(q.field, Some("QuaTrinhXuLy.NguoiXuLy"), "{q:?}");
    }

    #[test]
    fn what_the_source_could_not_read_is_quarantined_with_it() {
        let r =
            with(record(), "_source_errors", json!(["ChuHoSo (GEOMETRY is not a type the daemon reads)"]));
        let q = normalize(&r, &map()).unwrap_err();
        assert_eq!(q.reason, "the source could not read: ChuHoSo (GEOMETRY is not a type the daemon reads)");
        let mut r = record();
        r.as_object_mut().unwrap().remove("updated_at");
        assert!(normalize(&r, &map()).unwrap_err().reason.starts_with("no updated_at"));
    }

    #[test]
    fn records_without_mahoso_keep_one_key_across_versions() {
        let a = without_mahoso(with(record(), "version", json!(1)));
        let b = without_mahoso(with(with(record(), "version", json!(2)), "TrangThai", json!("done")));
        let (qa, qb) = (normalize(&a, &map()).unwrap_err(), normalize(&b, &map()).unwrap_err());
        assert_eq!(qa.key, qb.key);
        assert!(qa.key.starts_with("no-MaHoSo:"));
        assert_eq!(qa.version, Some(1));
    }

    fn without_mahoso(mut v: Value) -> Value {
        v.as_object_mut().unwrap().remove("MaHoSo");
        v
    }

    #[test]
    fn the_766_fields_are_carried_repaired_and_checked() {
        let nfd: String = "Tờ khai đăng ký khai sinh".nfd().collect();
        let r = with(record(), "DuocThanhToanTrucTuyen", json!(2));
        let r = with(r, "NgayNopHoSo", json!("2026-03-01T00:10:00Z"));
        let r = with(r, "DanhSachLePhi", json!([{"TenPhiLePhi": "Lệ phí", "Gia": 50000}]));
        let r = with(
            r,
            "TaiLieuNop",
            json!([{"TenTepDinhKem": nfd, "DuocSoHoa": "1", "DuocTaiSuDung": 0, "TepDinhKemId": null}]),
        );
        let n = normalize(&r, &map()).unwrap();
        assert_eq!(n.dossier["DuocThanhToanTrucTuyen"], "2");
        assert_eq!(n.dossier["NgayNopHoSo"], "20260301071000");
        assert_eq!(n.dossier["DanhSachLePhi"].to_value(), json!([{"TenPhiLePhi": "Lệ phí", "Gia": "50000"}]));
        assert_eq!(
            n.dossier["TaiLieuNop"].to_value(),
            json!([{"TenTepDinhKem": "Tờ khai đăng ký khai sinh", "DuocSoHoa": "1", "DuocTaiSuDung": "0"}]),
            "NFC, codes as strings, absent sub-fields left out"
        );
        // Absent from the source: absent from the payload (not "", which would change nothing
        // nationally but every payload's hash).
        let plain = normalize(&record(), &map()).unwrap();
        assert!(scoring::SCALARS.iter().all(|(f, _)| plain.dossier.field(f).is_none()));
        assert!(plain.dossier.field("TaiLieuNop").is_none());

        let too_many: Vec<Value> = (0..=scoring::MAX_LIST_ITEMS).map(|_| json!({})).collect();
        let cases = [
            (
                with(record(), "DuocThanhToanTrucTuyen", json!("3")),
                "DuocThanhToanTrucTuyen \"3\" is not one of",
            ),
            (with(record(), "HoSoCoThanhPhanSoHoa", json!(true)), "HoSoCoThanhPhanSoHoa is a boolean"),
            (with(record(), "NgayNopHoSo", json!("hôm qua")), "unparseable date in NgayNopHoSo"),
            (with(record(), "DanhSachLePhi", json!({"Gia": "1"})), "DanhSachLePhi is not a list"),
            (
                with(record(), "DanhSachLePhi", json!([{"Gia": "50.000.000"}])),
                "item 1: Gia \"50.000.000\" is not an amount",
            ),
            (with(record(), "TaiLieuNop", json!([{}, {"DuocSoHoa": "2"}])), "TaiLieuNop item 2: DuocSoHoa"),
            (with(record(), "DanhSachGiayToKetQua", json!(["x"])), "item 1 is not an object"),
            (with(record(), "TaiLieuNop", Value::Array(too_many)), "more than 100"),
        ];
        for (raw, reason) in cases {
            let q = normalize(&raw, &map()).unwrap_err();
            assert!(q.reason.contains(reason), "{:?} should say {reason:?}", q.reason);
        }
    }

    #[test]
    fn catalogue_fields_are_filled_only_where_missing() {
        let mut n = normalize(&record(), &map()).unwrap();
        assert!(lacks_catalogue(&n.dossier));
        fill_catalogue(&mut n.dossier, "Đăng ký khai sinh", "G09-TP09", "Hộ tịch");
        assert!(!lacks_catalogue(&n.dossier));
        assert_eq!(n.dossier["TenLinhVuc"], "Hộ tịch");
        let r = with(
            with(with(record(), "TenTTHC", json!("Tên riêng")), "MaLinhVuc", json!("X")),
            "TenLinhVuc",
            json!("Y"),
        );
        assert!(!normalize(&r, &map()).unwrap().needs_catalogue);
    }
}
