//! A record in the national form, as the normaliser builds it: an object of text fields (and
//! the 766 lists, objects of text fields too), its names static.
//!
//! Why not `serde_json::Map`: every field name was a new `String` in a B-tree node, built for
//! one serialisation and dropped (docs/BENCHMARKS.md §12). Fields are kept sorted by name, so
//! that a form serialises exactly as the `Map` did (serde_json's maps are sorted): the stored
//! payloads, and the hashes that say whether the portal holds them, are the same bytes as before.

use std::ops::Index;

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value};

/// One national object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form(Vec<(&'static str, Field)>);

/// A field's value: text, or a list of objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Text(String),
    List(Vec<Form>),
}

impl Form {
    pub(crate) fn with_capacity(fields: usize) -> Form {
        Form(Vec::with_capacity(fields))
    }

    /// Sets a field (replacing it if it is there).
    pub fn insert(&mut self, name: &'static str, value: Field) {
        match self.0.binary_search_by(|(n, _)| (*n).cmp(name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub(crate) fn insert_text(&mut self, name: &'static str, text: String) {
        self.insert(name, Field::Text(text));
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.0.binary_search_by(|(n, _)| (*n).cmp(name)).ok().map(|i| &self.0[i].1)
    }

    /// A text field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        match self.field(name)? {
            Field::Text(t) => Some(t),
            Field::List(_) => None,
        }
    }

    /// The same object as a JSON map.
    pub fn to_map(&self) -> Map<String, Value> {
        self.0.iter().map(|(n, v)| ((*n).to_owned(), v.to_value())).collect()
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.to_map())
    }
}

impl Field {
    pub fn to_value(&self) -> Value {
        match self {
            Field::Text(t) => Value::String(t.clone()),
            Field::List(items) => Value::Array(items.iter().map(Form::to_value).collect()),
        }
    }
}

impl Index<&str> for Form {
    type Output = Field;

    /// The field, which must be there (tests).
    fn index(&self, name: &str) -> &Field {
        self.field(name).unwrap_or_else(|| panic!("no field {name}"))
    }
}

impl PartialEq<&str> for Field {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, Field::Text(t) if t == other)
    }
}

impl Serialize for Form {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Text(t) => serializer.serialize_str(t),
            Field::List(items) => serializer.collect_seq(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_as_the_map_it_stands_for() {
        let mut form = Form::default();
        form.insert_text("TrangThaiHoSo", "4".into());
        form.insert_text("ChuHoSo", "Nguyễn \"An\"".into());
        let mut item = Form::default();
        item.insert_text("TenGiayTo", "Đơn".into());
        form.insert("TaiLieuNop", Field::List(vec![item]));
        form.insert_text("MaHoSo", "X".into());
        form.insert_text("ChuHoSo", "Trần".into());
        let expected = json!({"MaHoSo": "X", "ChuHoSo": "Trần", "TrangThaiHoSo": "4",
            "TaiLieuNop": [{"TenGiayTo": "Đơn"}]});
        assert_eq!(serde_json::to_string(&form).unwrap(), serde_json::to_string(&expected).unwrap());
        assert_eq!(form.to_value(), expected);
        assert_eq!(form.get("ChuHoSo"), Some("Trần"), "set twice: the last value");
        assert_eq!(form.get("TaiLieuNop"), None, "a list is not text");
        assert_eq!(form["TrangThaiHoSo"], "4");
        assert_eq!(form.get("missing"), None);
    }
}
