//! A merged province's cutover, as the mocks play it (provincial-portal.md, "Several
//! sources"): the new system's copy of a dossier migrated from the old one, and a step added to
//! a record. The simulation and the end-to-end tests move dossiers with these.

use serde_json::Value;

/// A record as a migration copies it into the new system: each entry's text with its
/// whitespace changed, a new processing unit.
pub fn migrated(record: &Value) -> Value {
    let mut copy = record.clone();
    if let Some(entries) = copy.get_mut("QuaTrinhXuLy").and_then(Value::as_array_mut) {
        for e in entries {
            if let Some(Value::String(text)) = e.get_mut("NoiDungXuLy")
                && text.chars().count() < 900
            {
                *text = format!(" {} ", text.replace(' ', "  "));
            }
        }
    }
    copy["DonViXuLy"] = Value::String("Trung tâm Phục vụ hành chính công tỉnh Đồng Tháp".into());
    copy
}

/// `record` with one more processing step, a minute after its last.
pub fn with_step(record: &Value, content: &str) -> Value {
    let mut copy = record.clone();
    let Some(entries) = copy.get_mut("QuaTrinhXuLy").and_then(Value::as_array_mut) else { return copy };
    let Some(mut step) = entries.last().cloned() else { return copy };
    let last =
        step.get("ThoiDiemXuLy").and_then(Value::as_str).and_then(crate::domain::dates::parse_national);
    let Some(at) = last.and_then(|t| t.checked_add(jiff::Span::new().minutes(1)).ok()) else { return copy };
    step["ThoiDiemXuLy"] = Value::String(at.strftime("%Y%m%d%H%M%S").to_string());
    step["NoiDungXuLy"] = Value::String(content.into());
    entries.push(step);
    copy
}
