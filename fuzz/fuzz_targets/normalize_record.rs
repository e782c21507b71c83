//! Any bytes as a provincial record: the normaliser never panics, and whatever it accepts is
//! what the national API takes (NFC text within its limits, real dates, a valid status).
#![no_main]

use dvc_sync::domain::{
    dates::parse_national,
    normalize::{normalize_raw, position_of, record_position, record_version},
    raw::{Raw, RawRecord},
    status::{DEFAULT_STATUS_MAP, NationalStatus},
    text::{char_len, is_normalized, max_chars},
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // As the daemon reads a listing item: JSON text, judged from a borrowing view of it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(item) = serde_json::from_str::<&serde_json::value::RawValue>(text) else { return };
    let record = Raw::parse(item.get());
    // The light reading of a listing item's position and version gives what the whole record
    // gives (a record too deep to read whole is the exception: its position still moves the
    // cursor past it).
    if !matches!(record, Raw::Unreadable { .. }) {
        let listed = RawRecord::Json(item.to_owned());
        assert_eq!(record_position(&listed), position_of(&record), "position");
        let version = record
            .get("MaHoSo")
            .and_then(Raw::as_str)
            .zip(record.get("version").and_then(Raw::as_i64))
            .map(|(m, v)| (m.to_owned(), v));
        assert_eq!(record_version(&listed), version, "version");
    }
    let map = DEFAULT_STATUS_MAP.iter().filter_map(|(k, v)| Some(((*k).to_owned(), NationalStatus::new(*v)?))).collect();
    let Ok(n) = normalize_raw(&record, &map) else { return };
    let check = |fields: &serde_json::Map<String, Value>| {
        for (k, v) in fields {
            let s = v.as_str().expect("every value a string");
            assert!(is_normalized(s), "{k} not NFC");
            assert!(char_len(s) <= max_chars(k), "{k} too long");
            if k.starts_with("Ngay") || k == "ThoiDiemXuLy" {
                assert!(s.is_empty() || parse_national(s).is_some(), "{k}: {s}");
            }
        }
    };
    check(&n.dossier.to_map());
    for e in &n.history {
        check(&e.to_map());
    }
});
