//! Helpers both mocks use for their fault profiles and transport faults.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The HTML page a gateway (nginx in front of the adapter) answers with.
pub(crate) fn html_error(status: StatusCode) -> Response {
    let line = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
    let body = format!(
        "<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n<center><h1>{line}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// Applies a partial JSON object to a profile: keys present replace the current values,
/// unknown keys and wrong types are refused with a message naming them.
pub(crate) fn merge_patch<T: Serialize + DeserializeOwned>(current: &T, patch: &[u8]) -> Result<T, String> {
    let patch: Value = serde_json::from_slice(patch).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(patch) = patch else {
        return Err("body must be a JSON object of knobs".into());
    };
    let mut merged = serde_json::to_value(current).map_err(|e| e.to_string())?;
    let Value::Object(fields) = &mut merged else {
        return Err("fault profile is not an object".into());
    };
    for (key, value) in patch {
        if !fields.contains_key(&key) {
            return Err(format!("unknown knob {key:?}"));
        }
        fields.insert(key, value);
    }
    serde_json::from_value(merged).map_err(|e| format!("invalid knob value: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct P {
        a: f64,
        b: bool,
    }

    #[test]
    fn patch_replaces_only_the_given_keys_and_names_bad_ones() {
        let p = P { a: 0.5, b: false };
        assert_eq!(merge_patch(&p, br#"{"b": true}"#), Ok(P { a: 0.5, b: true }));
        assert!(merge_patch(&p, br#"{"c": 1}"#).unwrap_err().contains("\"c\""));
        assert!(merge_patch(&p, br#"{"a": "x"}"#).is_err());
        assert!(merge_patch(&p, b"[1]").is_err());
        assert!(merge_patch(&p, b"nope").is_err());
    }
}
