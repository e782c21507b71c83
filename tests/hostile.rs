//! Hostile input: a shim in front of each real mock serves a script of hostile answers, then
//! lets traffic through. The daemon never panics, keeps its memory bounded, classifies each
//! answer, and synchronizes everything else.

mod common;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use serde_json::{Value, json};

/// A dossier only the hostile page carries.
const EXTRA: &str = "000.00.15.H58-260101-9999";

/// What the shim does with one request.
#[derive(Clone)]
enum Hostile {
    /// Answer this, without asking the mock.
    Raw(u16, &'static str, Vec<u8>),
    /// Ask the mock, then change its (JSON) answer.
    Transform(fn(Value) -> Vec<u8>),
    /// Ask the mock, then answer this instead (it was applied).
    AfterApplying(u16, Vec<u8>),
    /// Ask the mock without the cursor (a page from the start: the cursor "going backwards").
    FromTheStart,
}

#[derive(Clone)]
struct Shim {
    upstream: String,
    script: Arc<Mutex<VecDeque<Hostile>>>,
    http: reqwest::Client,
}

async fn forward(
    shim: &Shim,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (u16, Vec<u8>) {
    let url = format!("{}{path_and_query}", shim.upstream);
    let mut request = if method == "POST" { shim.http.post(url).body(body) } else { shim.http.get(url) };
    for name in ["x-api-key", "content-type", "dstcode"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v);
        }
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

async fn handle(State(shim): State<Shim>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 64 << 20).await.unwrap();
    let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    // Only the listing and integration calls are scripted; logins and the rest pass.
    let scripted = uri.path() == "/api/v1/dossiers" || uri.path() == "/integration";
    let next = if scripted { shim.script.lock().unwrap().pop_front() } else { None };
    let reply = |status: u16, content_type: &str, bytes: Vec<u8>| {
        (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type.to_owned())],
            Body::from(bytes),
        )
            .into_response()
    };
    match next {
        None => {
            let (status, bytes) = forward(&shim, &method, &path_and_query, &headers, body).await;
            reply(status, "application/json", bytes)
        }
        Some(Hostile::Raw(status, content_type, bytes)) => reply(status, content_type, bytes),
        Some(Hostile::Transform(f)) => {
            let (status, bytes) = forward(&shim, &method, &path_and_query, &headers, body).await;
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            reply(status, "application/json", f(value))
        }
        Some(Hostile::AfterApplying(status, bytes)) => {
            forward(&shim, &method, &path_and_query, &headers, body).await;
            reply(status, "application/json", bytes)
        }
        Some(Hostile::FromTheStart) => {
            let (status, bytes) = forward(&shim, &method, "/api/v1/dossiers?limit=50", &headers, body).await;
            reply(status, "application/json", bytes)
        }
    }
}

async fn shim(upstream: String, script: Vec<Hostile>) -> (String, Arc<Mutex<VecDeque<Hostile>>>) {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let state = Shim { upstream, script: script.clone(), http: client() };
    let router = Router::new().fallback(handle).with_state(state);
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), script)
}

fn items(mut page: Value) -> (Vec<Value>, Value) {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    page["items"] = json!([]);
    (items, page)
}

fn with_items(page: Value, items: Vec<Value>) -> Vec<u8> {
    let mut page = page;
    page["items"] = Value::Array(items);
    serde_json::to_vec(&page).unwrap()
}

fn provincial_script() -> Vec<Hostile> {
    let huge_page = {
        let mut body = br#"{"items":[{"MaHoSo":"000.00.15.H58-260301-0001","TrichYeuHoSo":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', 50 * 1024 * 1024));
        body.extend(br#""}],"has_more":false}"#);
        body
    };
    let deep = {
        let mut body = br#"{"items":["#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        body.extend(std::iter::repeat_n(b']', 100_000));
        body.extend(br#"],"has_more":false}"#);
        body
    };
    vec![
        Hostile::Raw(200, "application/json", br#"{"items": [{"MaHoSo": "000.00.15.H58-2603"#.to_vec()),
        Hostile::Raw(200, "text/html", b"<!DOCTYPE html><html><body><h1>H\xe1\xbb\x87 th\xe1\xbb\x91ng b\xe1\xba\xa3o tr\xc3\xac</h1></body></html>".to_vec()),
        Hostile::Raw(502, "text/html", b"<html><body>502 Bad Gateway</body></html>".to_vec()),
        Hostile::Raw(200, "application/json", huge_page),
        Hostile::Raw(200, "application/json", b"[1, 2, 3]".to_vec()),
        // Invalid UTF-8 inside one record's name: that record is quarantined, the rest go on.
        Hostile::Transform(|page| {
            let mut bytes = serde_json::to_vec(&page).unwrap();
            if let Some(i) = bytes.windows(9).position(|w| w == b"\"ChuHoSo\"") {
                let at = i + 11;
                if at < bytes.len() {
                    bytes[at] = 0xFF;
                }
            }
            bytes
        }),
        // The same MaHoSo twice on one page.
        Hostile::Transform(|page| {
            let (mut list, page) = items(page);
            if let Some(first) = list.first().cloned() {
                list.push(first);
            }
            with_items(page, list)
        }),
        // Things that are not records; control characters; a huge field.
        Hostile::Transform(|page| {
            let (mut list, page) = items(page);
            list.push(json!("not a record"));
            list.push(json!(42));
            list.push(Value::Null);
            list.push(json!([1, 2]));
            list.push(json!({"MaHoSo": {"nested": true}, "updated_at": "2026-03-01T00:00:00Z", "version": 1}));
            // A dossier the simulator does not know, with control characters and a huge field.
            if let Some(r) = list.first() {
                let mut extra = r.clone();
                extra["MaHoSo"] = json!(EXTRA);
                extra["ChuHoSo"] = json!("Nguyễn\u{0007}Văn\u{0001}An");
                extra["TrichYeuHoSo"] = json!("ễ".repeat(300_000));
                for entry in extra["QuaTrinhXuLy"].as_array_mut().into_iter().flatten() {
                    entry["MaHoSo"] = json!(EXTRA);
                }
                list.push(extra);
            }
            with_items(page, list)
        }),
        // JSON, but one record nested deeper than can be read: that record is quarantined.
        Hostile::Raw(200, "application/json", deep),
        Hostile::FromTheStart,
        Hostile::Raw(401, "application/json", br#"{"error": "missing or wrong X-API-Key"}"#.to_vec()),
    ]
}

fn national_script() -> Vec<Hostile> {
    let huge = {
        let mut body = br#"{"error_code": 0, "message": ""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', 20 * 1024 * 1024));
        body.extend(br#""}"#);
        body
    };
    vec![
        Hostile::Raw(200, "application/json", br#"{"error_code": [0], "message": "ok"}"#.to_vec()),
        Hostile::AfterApplying(200, br#"{}"#.to_vec()),
        Hostile::AfterApplying(200, br#"{"error_code": "abc"}"#.to_vec()),
        Hostile::AfterApplying(200, b"<html><body>OK</body></html>".to_vec()),
        Hostile::AfterApplying(200, huge),
        Hostile::AfterApplying(200, br#"{"error_code": null, "message": "?"}"#.to_vec()),
        Hostile::Raw(200, "application/json", b"[]".to_vec()),
        Hostile::AfterApplying(200, br#"{"error_code": " 0 ", "message": "ok"}"#.to_vec()),
        Hostile::AfterApplying(200, br#"{"error_code": 0.0, "message": "ok"}"#.to_vec()),
        // A look-up "success" without a result must not be read as "not there".
        Hostile::AfterApplying(200, br#"{"error_code": 0, "message": "ok"}"#.to_vec()),
        Hostile::AfterApplying(200, br#"{"error_code": "00", "result": "not an array"}"#.to_vec()),
        Hostile::Raw(413, "text/html", b"<html>413</html>".to_vec()),
    ]
}

/// Peak resident memory of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_and_answers_never_crash_the_daemon_and_everything_else_arrives() {
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 300,
        changes_per_second: 300.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    })
    .await;
    let (provincial_shim, provincial_left) = shim(provincial.server.url(), provincial_script()).await;
    let (national_shim, national_left) = shim(national.server.url(), national_script()).await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial_shim,
        &national_shim,
        &[
            "provincial.page_size = 50",
            "provincial.max_response_bytes = 8388608",
            "national.max_response_bytes = 4194304",
        ],
    );
    let mut daemon = Daemon::start(&config).await;
    let pid = daemon.pid();
    // Until the province has filed all 300 and every one arrived (converge alone can return
    // while the last dossier is still to be filed: 299 of 299 synchronized).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let verdict = loop {
        let verdict =
            converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(120)).await;
        if verdict.valid == 300 || std::time::Instant::now() > deadline {
            break verdict;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        provincial_left.lock().unwrap().is_empty() && national_left.lock().unwrap().is_empty(),
        "every hostile answer served"
    );
    assert!(verdict.clean() && verdict.synchronized == 300, "{}", verdict.summary());
    assert_eq!(national.stats().await["duplicate_history_entries"], 0);
    let (status, extra) = national.get(&format!("/_mock/state/{EXTRA}")).await;
    assert_eq!(status, 200, "the extra dossier arrived");
    assert_eq!(extra["dossier"]["ChuHoSo"], "Nguyễn\u{0007}Văn\u{0001}An", "control characters kept");
    assert_eq!(
        extra["dossier"]["TrichYeuHoSo"].as_str().unwrap().chars().count(),
        1000,
        "the huge field cut to its limit"
    );
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
    let peak = peak_kib(pid);
    assert!(peak < 200 * 1024, "memory stayed bounded despite a 50 MB page and a 20 MB answer: {peak} KiB");
    let logs = daemon.logs();
    assert!(!logs.contains("panicked"), "no panic");
    // Records that cannot be sent are quarantined with their reason; failed pages and answers
    // are logged once (then counted), and the recovery once.
    let reasons = quarantine_reasons(dir.path());
    for expected in ["not a JSON object", "malformed MaHoSo", "the record cannot be read: recursion limit"] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "{expected} in {reasons:?}");
    }
    assert_eq!(
        reasons.iter().filter(|r| r.contains("not a JSON object")).count(),
        4,
        "each piece of junk on its own row"
    );
    // The record mangled in transit was quarantined, then read again intact and synchronized.
    assert!(logs.contains("holds bytes that were not valid UTF-8"), "quarantined when mangled");
    assert!(!reasons.iter().any(|r| r.contains("not valid UTF-8")), "released once read intact: {reasons:?}");
    for expected in ["\"what\":\"provincial poll\"", "\"what\":\"national calls\"", "failure_recovered"] {
        assert!(logs.contains(expected), "{expected} logged");
    }
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(10)).await.unwrap().success());
    eprintln!("peak RSS {} MiB", peak / 1024);
}

fn quarantine_reasons(dir: &std::path::Path) -> Vec<String> {
    rows(&db(dir), "SELECT key, reason FROM quarantine").into_iter().map(|(_, r)| r).collect()
}
