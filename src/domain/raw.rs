//! A provincial record as read, before the normaliser judges it: a JSON value that borrows
//! its text from the page it came in (or from a `serde_json::Value`, for sources that build
//! their records), objects as lists of fields in the order given.
//!
//! Why not `serde_json::Value`: a page of 500 records parsed into `Value` trees allocated a
//! string for every key and every value and a B-tree node for every few fields, then freed
//! them all once the record was normalised: about a fifth of the daemon's CPU during a
//! backfill (docs/BENCHMARKS.md §12). Here an unescaped string is a slice of the page, and an
//! object is one vector.
//!
//! Anything JSON can say is kept, so that the normaliser judges a record exactly as before:
//! a repeated key reads as its last value (as `Value` had it), and [`Raw::to_value`] gives
//! back the `Value` the record would have been, for the quarantine's copy and fingerprint.

use std::{borrow::Cow, fmt, ops::Range, sync::Arc};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value, value::RawValue};

/// A JSON value borrowing its strings where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Raw<'a>>),
    /// Fields in the order given; a key given twice is there twice (`get` reads the last).
    Object(Vec<(Cow<'a, str>, Raw<'a>)>),
    /// A record on a page that is JSON, but nested deeper than serde_json reads (its limit
    /// is 128 levels; a record has three): quarantined on its own, with serde_json's reason,
    /// rather than the whole page refused again and again.
    Unreadable {
        reason: String,
        text: &'a str,
    },
}

impl<'a> Raw<'a> {
    /// Parses a record's JSON text (a record of a page already checked to be JSON).
    pub fn parse(text: &'a str) -> Raw<'a> {
        serde_json::from_str(text).unwrap_or_else(|e| Raw::Unreadable { reason: e.to_string(), text })
    }

    /// A view of a `Value`, borrowing its strings.
    pub(crate) fn from_value(v: &'a Value) -> Raw<'a> {
        match v {
            Value::Null => Raw::Null,
            Value::Bool(b) => Raw::Bool(*b),
            Value::Number(n) => Raw::Number(n.clone()),
            Value::String(s) => Raw::Str(Cow::Borrowed(s)),
            Value::Array(a) => Raw::Array(a.iter().map(Raw::from_value).collect()),
            Value::Object(o) => {
                Raw::Object(o.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Raw::from_value(v))).collect())
            }
        }
    }

    /// The value of `key` in an object (the last, if the key was given twice).
    pub fn get(&self, key: &str) -> Option<&Raw<'a>> {
        match self {
            Raw::Object(fields) => fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Raw::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Raw::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Raw<'a>]> {
        match self {
            Raw::Array(items) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn is_object(&self) -> bool {
        matches!(self, Raw::Object(_))
    }

    /// The `Value` this record would have been parsed into (keys sorted, the last of a
    /// repeated key kept): what the quarantine stores and fingerprints.
    pub fn to_value(&self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Number(n) => Value::Number(n.clone()),
            Raw::Str(s) => Value::String(s.clone().into_owned()),
            Raw::Array(a) => Value::Array(a.iter().map(Raw::to_value).collect()),
            Raw::Object(o) => {
                let mut map = Map::new();
                for (k, v) in o {
                    map.insert(k.clone().into_owned(), v.to_value());
                }
                Value::Object(map)
            }
            // Its text, as text (the quarantine keeps the first 64 KiB of it).
            Raw::Unreadable { text, .. } => Value::String((*text).to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw<'de>, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

/// A key: borrowed from the text unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Raw<'de>, E> {
        // As `Value` reads it: a non-finite number (not JSON anyway) is null.
        Ok(Number::from_f64(n).map_or(Raw::Null, Raw::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(k)) = map.next_key()? {
            fields.push((k, map.next_value()?));
        }
        Ok(Raw::Object(fields))
    }
}

/// A record as a source hands it over: the JSON text of one listing item (alone, or where it
/// lies in its page's text, which all the page's records share), or a value the source built
/// (the SQL source, the simulation).
#[derive(Debug, Clone)]
pub enum RawRecord {
    Json(Box<RawValue>),
    InPage { page: Arc<str>, at: Range<usize> },
    Value(Value),
}

impl RawRecord {
    /// The items of a listing page's JSON text, each where it lies in `page` (`items` were
    /// parsed from `page` itself).
    pub(crate) fn in_page(page: &Arc<str>, items: &[&RawValue]) -> Vec<RawRecord> {
        let base = page.as_ptr() as usize;
        items
            .iter()
            .map(|item| {
                let start = item.get().as_ptr() as usize - base;
                RawRecord::InPage { page: Arc::clone(page), at: start..start + item.get().len() }
            })
            .collect()
    }

    /// The record's JSON text, if it came as text.
    pub fn text(&self) -> Option<&str> {
        match self {
            RawRecord::Json(text) => Some(text.get()),
            RawRecord::InPage { page, at } => page.get(at.clone()),
            RawRecord::Value(_) => None,
        }
    }

    /// The record to judge, borrowing from this one.
    pub fn view(&self) -> Raw<'_> {
        match (self, self.text()) {
            (RawRecord::Value(v), _) => Raw::from_value(v),
            (_, Some(text)) => Raw::parse(text),
            (_, None) => Raw::Null,
        }
    }

    /// The record as a `Value` (tests, `check-source`).
    pub fn to_value(&self) -> Value {
        match (self, self.text()) {
            (RawRecord::Value(v), _) => v.clone(),
            (_, Some(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
            (_, None) => Value::Null,
        }
    }
}

impl From<Value> for RawRecord {
    fn from(v: Value) -> RawRecord {
        RawRecord::Value(v)
    }
}

impl From<Box<RawValue>> for RawRecord {
    fn from(text: Box<RawValue>) -> RawRecord {
        RawRecord::Json(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_as_value_reads() {
        let text =
            r#"{"b": "Nguy\u1ec5n", "a": [1, -2, 3.5, true, null, {"x": "y"}], "b": "last", "c": "plain"}"#;
        let raw = Raw::parse(text);
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(raw.to_value(), value);
        assert_eq!(
            raw.get("b").and_then(Raw::as_str),
            Some("last"),
            "a repeated key reads as its last value"
        );
        assert!(matches!(raw.get("c"), Some(Raw::Str(Cow::Borrowed("plain")))), "unescaped text is borrowed");
        assert_eq!(Raw::from_value(&value).to_value(), value);
        assert_eq!(raw.get("a").and_then(Raw::as_array).map(<[_]>::len), Some(6));
        assert_eq!(raw.get("missing"), None);
        assert_eq!(Raw::parse("[1]").get("a"), None);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(Raw::parse(&deep), Raw::Unreadable { reason, .. } if reason.contains("recursion")));
    }

    #[test]
    fn a_record_reads_the_same_from_text_or_value() {
        let v = json!({"MaHoSo": "X", "version": 3, "QuaTrinhXuLy": [{"NguoiXuLy": "Trần"}]});
        let text = serde_json::value::to_raw_value(&v).unwrap();
        assert_eq!(RawRecord::from(text).view(), RawRecord::from(v.clone()).view());
        assert_eq!(RawRecord::from(v.clone()).to_value(), v);
        let page: Arc<str> = Arc::from(format!(r#"{{"items": [{v}, 7], "has_more": false}}"#));
        #[derive(serde::Deserialize)]
        struct Listing<'a> {
            #[serde(borrow)]
            items: Vec<&'a RawValue>,
        }
        let listing: Listing = serde_json::from_str(&page).unwrap();
        let records = RawRecord::in_page(&page, &listing.items);
        assert_eq!(records[0].to_value(), v);
        assert_eq!(records[1].view(), Raw::Number(7.into()));
    }
}
