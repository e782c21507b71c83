//! The personal fields of a national dossier (Law 91/2025/QH15): the one list the daemon
//! minimises, masks and erases by, and docs/personal-data.md shows.

use serde_json::{Map, Value};

use crate::domain::entry;

/// What a minimised field holds: this prefix, the digest key's tag, the digest.
pub const DIGEST_PREFIX: &str = "hmac-sha256:";

/// Whether a stored value is a digest (of any key).
pub fn is_digest(value: &str) -> bool {
    value.starts_with(DIGEST_PREFIX)
}

/// A keyed digest of personal values (the store's digest key).
pub trait Digester {
    /// The digest of a value by meaning (`DIGEST_PREFIX`, the key's tag, the digest).
    fn digest(&self, meaning: &str) -> String;
    /// Whether `stored` is a digest made with this key.
    fn made(&self, stored: &str) -> bool;
}

/// Fields of the national payload that identify the applicant or carry what identifies them:
/// the applicant's name, ID number, phone and e-mail, the summary (TrichYeuHoSo names the
/// applicant: "Đăng ký khai sinh cho cháu Nguyễn Văn A"), and any address.
pub const FIELDS: [&str; 5] = ["ChuHoSo", "SoGiayToChuHoSo", "SoDienThoai", "Email", "TrichYeuHoSo"];

/// Whether a payload field is personal: one of [`FIELDS`], or an address (`DiaChi...`).
pub fn is_personal(field: &str) -> bool {
    FIELDS.contains(&field) || field.starts_with("DiaChi")
}

/// A value worth a digest: text or a number, not empty.
fn meaning(value: &Value) -> Option<String> {
    match value {
        Value::String(_) | Value::Number(_) => Some(entry::text(Some(value))).filter(|t| !t.is_empty()),
        _ => None,
    }
}

/// Replaces every personal value of `payload` by its keyed digest (by meaning, as the audit
/// compares); how many it replaced. Digests already there stay.
pub fn minimise(payload: &mut Map<String, Value>, key: &impl Digester) -> usize {
    let mut replaced = 0;
    for (field, value) in payload.iter_mut() {
        if !is_personal(field) || value.as_str().is_some_and(is_digest) {
            continue;
        }
        if let Some(text) = meaning(value) {
            *value = Value::String(key.digest(&text));
            replaced += 1;
        }
    }
    replaced
}

/// Removes every personal value of `payload` (an erasure); how many it removed.
pub fn erase(payload: &mut Map<String, Value>) -> usize {
    let before = payload.len();
    payload.retain(|field, _| !is_personal(field));
    before - payload.len()
}

/// Whether `payload` still holds a personal value in clear.
pub fn holds_personal(payload: &Map<String, Value>) -> bool {
    payload.iter().any(|(f, v)| is_personal(f) && meaning(v).is_some() && !v.as_str().is_some_and(is_digest))
}

/// Whether our stored `ours` (a digest made with `key`) is the digest of `theirs`: None when
/// `ours` is not a digest of this key (then it cannot be compared).
pub fn digest_matches(ours: &Value, theirs: &Value, key: &impl Digester) -> Option<bool> {
    let ours = ours.as_str().filter(|s| key.made(s))?;
    Some(meaning(theirs).is_some_and(|t| key.digest(&t) == ours))
}

/// A minimised payload and a look-up answer (`{"result": [dossier]}`), made comparable by
/// meaning: where our value is a digest of this key, theirs becomes its digest too; a digest
/// of another key (a key since rotated) is left out of the comparison. None: `payload` holds
/// no digest, compare them as they are.
pub fn comparable(payload: &Value, answer: &Value, key: &impl Digester) -> Option<(Value, Value)> {
    let ours = payload.as_object()?;
    let digested: Vec<&String> =
        ours.iter().filter(|(_, v)| v.as_str().is_some_and(is_digest)).map(|(k, _)| k).collect();
    if digested.is_empty() {
        return None;
    }
    let (mut ours, mut answer) = (ours.clone(), answer.clone());
    let theirs = answer.get_mut("result").and_then(|r| r.get_mut(0)).and_then(Value::as_object_mut);
    let mut empty = Map::new();
    let theirs = theirs.unwrap_or(&mut empty);
    for field in digested {
        let made = ours.get(field).and_then(Value::as_str).is_some_and(|d| key.made(d));
        match theirs.get_mut(field) {
            Some(value) if made => {
                *value = meaning(value).map_or(Value::Null, |t| Value::String(key.digest(&t)))
            }
            _ if made => {}
            _ => {
                ours.remove(field);
            }
        }
    }
    Some((Value::Object(ours), answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stand-in key: a keyed hash is the store's (tested there); here only its use.
    struct Fake(u8);

    impl Digester for Fake {
        fn digest(&self, meaning: &str) -> String {
            let h = crate::domain::stable_hash(format!("{}{meaning}", self.0).as_bytes());
            format!("{DIGEST_PREFIX}{:02x}:{h:016x}", self.0)
        }
        fn made(&self, stored: &str) -> bool {
            stored.starts_with(&format!("{DIGEST_PREFIX}{:02x}:", self.0))
        }
    }

    fn key() -> Fake {
        Fake(3)
    }

    #[test]
    fn personal_values_become_digests_that_compare_by_meaning() {
        let mut p = json!({"MaHoSo": "H", "ChuHoSo": "Nguyễn  Văn An", "SoGiayToChuHoSo": 79123456789_i64,
            "Email": "", "DiaChiThuongTru": "12 Lê Lợi", "DonViXuLy": "Sở Tư pháp"})
        .as_object()
        .unwrap()
        .clone();
        assert!(holds_personal(&p));
        assert_eq!(minimise(&mut p, &key()), 3, "{p:?}");
        assert!(!holds_personal(&p));
        assert_eq!(minimise(&mut p, &key()), 0, "once");
        assert_eq!(p["DonViXuLy"], "Sở Tư pháp");
        assert_eq!(p["Email"], "");
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            !text.contains("Nguy") && !text.contains("79123456789") && !text.contains("Lê Lợi"),
            "{text}"
        );
        assert_eq!(digest_matches(&p["ChuHoSo"], &json!("Nguyễn Văn An "), &key()), Some(true));
        assert_eq!(digest_matches(&p["SoGiayToChuHoSo"], &json!("79123456789"), &key()), Some(true));
        assert_eq!(digest_matches(&p["ChuHoSo"], &json!("Nguyễn Văn Bình"), &key()), Some(false));
        let other = Fake(4);
        assert_eq!(digest_matches(&p["ChuHoSo"], &json!("Nguyễn Văn An"), &other), None);
        assert_eq!(digest_matches(&json!("Nguyễn Văn An"), &json!("Nguyễn Văn An"), &key()), None);
    }

    #[test]
    fn a_minimised_payload_compares_with_the_national_copy_by_digest() {
        let national = json!({"MaHoSo": "H", "ChuHoSo": "Nguyễn Văn An", "SoDienThoai": "0912345678"});
        let mut ours = national.as_object().unwrap().clone();
        assert!(comparable(&Value::Object(ours.clone()), &json!({}), &key()).is_none(), "nothing digested");
        minimise(&mut ours, &key());
        let answer = json!({"result": [national]});
        let (a, b) = comparable(&Value::Object(ours.clone()), &answer, &key()).unwrap();
        assert_eq!(a["ChuHoSo"], b["result"][0]["ChuHoSo"]);
        assert_eq!(a["SoDienThoai"], b["result"][0]["SoDienThoai"]);
        let changed =
            json!({"result": [{"MaHoSo": "H", "ChuHoSo": "Trần Thị Bình", "SoDienThoai": "0912345678"}]});
        let (a, b) = comparable(&Value::Object(ours.clone()), &changed, &key()).unwrap();
        assert_ne!(a["ChuHoSo"], b["result"][0]["ChuHoSo"]);
        let other = Fake(4);
        let (a, _) = comparable(&Value::Object(ours), &answer, &other).unwrap();
        assert!(a.get("ChuHoSo").is_none(), "another key's digest is not compared");
    }

    #[test]
    fn erasure_removes_the_fields() {
        let mut p = json!({"MaHoSo": "H", "ChuHoSo": "A", "TrichYeuHoSo": "B", "MaTTHC": "1"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(erase(&mut p), 2);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["MaHoSo", "MaTTHC"]);
    }
}
