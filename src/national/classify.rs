//! Every answer of the national portal, classified once: success, a refusal the portal
//! stated in its body (HTTP 200 with a non-zero error_code, as a number or a string), or
//! transient trouble to retry, with whether the call may have been applied anyway.

use serde_json::Value;

pub use crate::sync::answer::{Answer, Transient, TransientKind};
use crate::transport::{RawResponse, TransportError};

/// error_code in any form the portal uses: 0, "0", "00", -1, "-1", 2.0.
pub fn error_code(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What a body that is not the API's JSON says, for a person: an HTML page by its title (a
/// proxy's or gateway's error page), anything else by its first 120 characters, whitespace
/// folded, a cut marked.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]);
    let lower = text.to_ascii_lowercase();
    if lower.trim_start().starts_with('<') && (lower.contains("<html") || lower.contains("<!doctype")) {
        let title = lower
            .find("<title>")
            .map(|at| at + "<title>".len())
            .and_then(|at| lower[at..].find("</title>").map(|end| text[at..at + end].trim().to_owned()))
            .filter(|t| !t.is_empty());
        return match title {
            Some(t) => format!("an HTML page titled {:?}", fold(&t, 80)),
            None => "an HTML page without a title".into(),
        };
    }
    fold(&text, 120)
}

/// Whitespace folded to single spaces, at most `max` characters, a cut marked with `…`.
fn fold(text: &str, max: usize) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &folded[..at]),
        None => folded,
    }
}

/// Classifies one exchange with the portal.
pub fn classify(result: Result<RawResponse, TransportError>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let (kind, maybe_applied) = match &e {
                TransportError::Timeout => (TransientKind::Timeout, true),
                TransportError::Connect(_) => (TransientKind::Connect, false),
                TransportError::Dropped(_) => (TransientKind::Dropped, true),
                TransportError::TooLarge(_) => (TransientKind::TooLarge, true),
            };
            return Answer::Retry(Transient {
                kind,
                reason: e.to_string(),
                maybe_applied,
                retry_after: None,
                http_status: None,
            });
        }
    };
    let status = response.status;
    if status != 200 {
        // 429 and 503 are refusals at the door; any other failure may come after the backend
        // acted (a gateway timing out on a slow backend, say).
        let (kind, maybe_applied) = match status {
            429 => (TransientKind::RateLimited, false),
            503 => (TransientKind::Unavailable, false),
            _ => (TransientKind::ServerError, true),
        };
        let what = response.content_type.as_deref().unwrap_or("no content type");
        return Answer::Retry(Transient {
            kind,
            reason: format!("HTTP {status} ({what}): {}", snippet(&response.body)),
            maybe_applied,
            retry_after: response.retry_after,
            http_status: Some(status),
        });
    }
    let bad = |why: String| {
        Answer::Retry(Transient {
            kind: TransientKind::BadAnswer,
            reason: why,
            maybe_applied: true,
            retry_after: None,
            http_status: Some(status),
        })
    };
    let body: Value = match serde_json::from_slice(&response.body) {
        Ok(v) => v,
        Err(_) => return bad(format!("HTTP 200 with a body that is not JSON: {}", snippet(&response.body))),
    };
    let Some(code) = body.get("error_code").and_then(error_code) else {
        return bad(format!("HTTP 200 without a readable error_code: {}", snippet(&response.body)));
    };
    if code == 0 {
        Answer::Ok(body)
    } else {
        let message = body.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
        Answer::Refused { code, message }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::codes::named_item;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn an_html_error_page_is_named_by_its_title_not_shown_raw() {
        let page = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";
        assert_eq!(snippet(page.as_bytes()), "an HTML page titled \"502 Bad Gateway\"");
        let Answer::Retry(t) = classify(response(502, "text/html", page)) else { panic!() };
        assert!(t.reason.ends_with("an HTML page titled \"502 Bad Gateway\""), "{}", t.reason);
        let long = "lỗi ".repeat(100);
        let said = snippet(long.as_bytes());
        assert!(said.ends_with('…') && said.chars().count() == 121, "{said}");
    }

    fn response(status: u16, content_type: &str, body: &str) -> Result<RawResponse, TransportError> {
        Ok(RawResponse {
            status,
            retry_after: (status == 429).then(|| Duration::from_secs(3)),
            content_type: Some(content_type.into()),
            body: Bytes::from(body.to_owned()),
        })
    }

    fn transient(answer: Answer) -> Transient {
        match answer {
            Answer::Retry(t) => t,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn success_in_every_form() {
        for code in [json!(0), json!("0"), json!("00"), json!(0.0), json!(" 0 ")] {
            let body = json!({"error_code": code, "message": "ok"}).to_string();
            assert!(matches!(classify(response(200, "application/json", &body)), Answer::Ok(_)), "{code}");
        }
    }

    #[test]
    fn refusals_in_both_forms_carry_code_and_message() {
        for code in [json!(2), json!("2"), json!("02")] {
            let body = json!({"error_code": code, "message": "MaHoSo=X: bad"}).to_string();
            assert_eq!(
                classify(response(200, "application/json", &body)),
                Answer::Refused { code: 2, message: "MaHoSo=X: bad".into() }
            );
        }
        let body = json!({"error_code": "-1", "message": "expired"}).to_string();
        assert!(matches!(
            classify(response(200, "application/json", &body)),
            Answer::Refused { code: -1, .. }
        ));
    }

    #[test]
    fn http_trouble_is_transient_and_says_whether_it_may_have_applied() {
        let t = transient(classify(response(429, "text/html", "<html>429</html>")));
        assert_eq!(
            (t.kind, t.maybe_applied, t.retry_after),
            (TransientKind::RateLimited, false, Some(Duration::from_secs(3)))
        );
        let t = transient(classify(response(503, "text/html", "<html>503</html>")));
        assert_eq!((t.kind, t.maybe_applied), (TransientKind::Unavailable, false));
        let t = transient(classify(response(
            500,
            "text/html",
            "<html><body>500 Internal Server Error</body></html>",
        )));
        assert_eq!((t.kind, t.maybe_applied, t.http_status), (TransientKind::ServerError, true, Some(500)));
        assert!(t.reason.contains("HTTP 500"), "{}", t.reason);
        let t = transient(classify(response(502, "text/html", "bad gateway")));
        assert!(t.maybe_applied);
    }

    #[test]
    fn a_200_that_is_not_the_apis_json_is_transient() {
        for body in [
            "<html>Bảo trì</html>",
            "",
            "{\"message\": \"no code\"}",
            "{\"error_code\": \"x\"}",
            "[1,2]",
            "{\"error_code\": null}",
        ] {
            let t = transient(classify(response(200, "text/html", body)));
            assert_eq!(t.kind, TransientKind::BadAnswer, "{body}");
            assert!(t.maybe_applied);
        }
    }

    #[test]
    fn transport_failures_are_transient() {
        let cases = [
            (TransportError::Timeout, TransientKind::Timeout, true),
            (TransportError::Connect("refused".into()), TransientKind::Connect, false),
            (TransportError::Dropped("reset".into()), TransientKind::Dropped, true),
            (TransportError::TooLarge(10), TransientKind::TooLarge, true),
        ];
        for (error, kind, maybe) in cases {
            let t = transient(classify(Err(error)));
            assert_eq!((t.kind, t.maybe_applied), (kind, maybe));
        }
    }

    #[test]
    fn the_refused_item_is_read_from_the_message() {
        assert_eq!(
            named_item("MaHoSo=000.00.15.H58-260301-0001: KenhThucHien: x"),
            Some("000.00.15.H58-260301-0001")
        );
        assert_eq!(named_item("lỗi MaHoSo=ABC"), Some("ABC"));
        assert_eq!(named_item("MaHoSo=: item"), None);
        assert_eq!(named_item("no item"), None);
    }
}
