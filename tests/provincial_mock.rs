//! The provincial mock against provincial-portal.md: the cursor (order, ties, paging, late
//! visibility), the simulated lives, mess and defects at their seeded rates, page faults, and
//! the `/_mock/` endpoints.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use common::*;
use dvc_sync::{
    domain::{
        dates::normalize_date,
        mahoso,
        status::{DEFAULT_STATUS_MAP, NationalStatus, transition_allowed},
        text::{char_len, is_normalized},
    },
    mock::{catalogue, provincial::Knobs},
};
use jiff::Timestamp;
use serde_json::{Value, json};

/// All dossiers filed and lived at start (changes_per_second = 0).
fn backfill(dossiers: u32) -> Knobs {
    Knobs { dossiers, changes_per_second: 0.0, ..Knobs::default() }
}

fn position(record: &Value) -> (Timestamp, String) {
    let ts = record["updated_at"].as_str().expect("updated_at").parse().expect("RFC 3339");
    (ts, record["MaHoSo"].as_str().unwrap_or("").to_owned())
}

fn national_of(local: &str) -> Option<NationalStatus> {
    DEFAULT_STATUS_MAP.iter().find(|(l, _)| *l == local).and_then(|(_, n)| NationalStatus::new(*n))
}

// ---- the API key ------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_wrong_api_key_gets_401_with_a_json_error() {
    let p = Provincial::start(backfill(5)).await;
    for key in [None, Some("wrong")] {
        let mut request = p.http.get(p.url("/api/v1/dossiers"));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("a JSON error");
        assert!(body["error"].is_string());
    }
    let one = p.http.get(p.url(&format!("/api/v1/dossiers/{}", code(1)))).send().await.unwrap();
    assert_eq!(one.status(), 401);
}

// ---- the cursor -------------------------------------------------------------------------------

#[tokio::test]
async fn items_come_ordered_by_updated_at_with_ties_broken_by_mahoso() {
    let p = Provincial::start(backfill(3_000)).await;
    let all = p.list_all(1_000).await;
    assert_eq!(all.len(), 3_000);
    let mut ties = 0;
    for pair in all.windows(2) {
        let (a, b) = (position(&pair[0]), position(&pair[1]));
        assert!(a < b, "{a:?} must come strictly before {b:?}");
        ties += usize::from(a.0 == b.0);
    }
    assert!(ties > 100, "the backfill stamps some changes alike: {ties} ties");
}

#[tokio::test]
async fn a_cursor_inside_a_tie_resumes_after_its_mahoso() {
    let p = Provincial::start(backfill(500)).await;
    let all = p.list_all(1_000).await;
    let tie = all.windows(2).find(|w| position(&w[0]).0 == position(&w[1]).0).expect("a tie");
    let (ts, id) = (tie[0]["updated_at"].as_str().unwrap(), tie[0]["MaHoSo"].as_str().unwrap());
    let page = p.page(Some((ts, id)), 1).await;
    assert_eq!(page["items"][0]["MaHoSo"], tie[1]["MaHoSo"], "the other side of the tie, not skipped");
    // The same instant written with another offset is the same position.
    let utc = ts.parse::<Timestamp>().unwrap().to_string();
    let page = p.page(Some((&utc, id)), 1).await;
    assert_eq!(page["items"][0]["MaHoSo"], tie[1]["MaHoSo"]);
}

#[tokio::test]
async fn paging_in_any_page_size_has_no_gap_and_no_repeat() {
    let p = Provincial::start(backfill(1_200)).await;
    let whole = p.list_all(1_000).await;
    for limit in [1, 7, 100, 999] {
        let paged = p.list_all(limit).await;
        assert_eq!(paged, whole, "limit {limit}");
    }
    let keys: HashSet<_> = whole.iter().map(position).collect();
    assert_eq!(keys.len(), 1_200);
    assert_eq!(p.stats().await["visible"], 1_200);
}

#[tokio::test]
async fn a_late_visible_change_appears_behind_a_cursor_that_passed_it() {
    let p = Provincial::start(backfill(0)).await;
    let late =
        p.post("/_mock/dossiers?visible_after_ms=400", json!({"MaHoSo": code(1), "TrangThai": "new"})).await;
    let early = p.post("/_mock/dossiers", json!({"MaHoSo": code(2), "TrangThai": "new"})).await;
    assert!(late["updated_at"].as_str() < early["updated_at"].as_str(), "A was written first");
    let first = p.page(None, 100).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "only B is visible yet");
    let cursor = position(&first["items"][0]);
    let status = |p: &Provincial| {
        let url = p.url(&format!("/api/v1/dossiers/{}", code(1)));
        let request = p.http.get(url).header("X-API-Key", API_KEY);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&p).await, 404, "not visible, not found");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cursor_ts = cursor.0.to_string();
    let after = p.page(Some((&cursor_ts, &cursor.1)), 100).await;
    assert_eq!(after["items"], json!([]), "a poller reading strictly after B never sees A");
    let all = p.list_all(100).await;
    let order: Vec<_> = all.iter().map(|r| r["MaHoSo"].as_str().unwrap().to_owned()).collect();
    assert_eq!(order, [code(1), code(2)], "A is there, before B");
    assert_eq!(status(&p).await, 200);
}

#[tokio::test]
async fn the_late_visibility_knob_hides_changes_from_a_strict_cursor() {
    let p = Provincial::start(Knobs {
        dossiers: 150,
        changes_per_second: 400.0,
        late_visibility_ms: 300,
        ..Knobs::default()
    })
    .await;
    // A naive poller: strictly after its last position, never looking back.
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut cursor: Option<(String, String)> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = p.page(cursor.as_ref().map(|(t, i)| (t.as_str(), i.as_str())), 1_000).await;
        for item in page["items"].as_array().unwrap() {
            seen.insert((
                item["MaHoSo"].as_str().unwrap_or("").to_owned(),
                item["version"].as_u64().unwrap(),
            ));
            cursor = Some((
                item["updated_at"].as_str().unwrap().to_owned(),
                item["MaHoSo"].as_str().unwrap_or("").to_owned(),
            ));
        }
        let stats = p.stats().await;
        if stats["finished"] == json!(true) && stats["pending_visibility"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "simulation did not finish: {stats}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let final_versions: Vec<(String, u64)> = p
        .list_all(1_000)
        .await
        .iter()
        .map(|r| (r["MaHoSo"].as_str().unwrap_or("").to_owned(), r["version"].as_u64().unwrap()))
        .collect();
    let missed = final_versions.iter().filter(|v| !seen.contains(v)).count();
    assert!(missed > 0, "some final versions slipped behind the strict cursor");
}

// ---- lives, mess and defects -------------------------------------------------------------------

#[tokio::test]
async fn status_lives_are_realistic_and_legal_under_the_national_rules() {
    let p = Provincial::start(Knobs { bad_record_rate: 0.0, ..backfill(3_000) }).await;
    let truth = p.truth().await;
    assert_eq!(truth.len(), 3_000);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &truth {
        let statuses: Vec<&str> =
            item["statuses"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let national: Vec<NationalStatus> = statuses
            .iter()
            .map(|s| national_of(s).unwrap_or_else(|| panic!("{s} is in the table")))
            .collect();
        for pair in national.windows(2) {
            assert!(transition_allowed(pair[0], pair[1]), "{statuses:?}");
        }
        assert!(national.last().unwrap().is_final(), "a backfilled life has ended: {statuses:?}");
        for s in &statuses {
            *kinds.entry(s).or_default() += 1;
        }
        let record = &item["record"];
        assert_eq!(record["TrangThai"], json!(statuses.last().unwrap()));
        let history = record["QuaTrinhXuLy"].as_array().unwrap();
        let steps: Vec<&str> = history.iter().map(|e| e["TrangThai"].as_str().unwrap()).collect();
        assert_eq!(steps, statuses, "one history entry per step");
        let times: Vec<String> =
            history.iter().map(|e| normalize_date(e["ThoiDiemXuLy"].as_str().unwrap()).unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "history in time order");
        assert_eq!(record["version"].as_u64(), Some(statuses.len() as u64));
    }
    for (status, _) in DEFAULT_STATUS_MAP {
        assert!(kinds.get(status).copied().unwrap_or(0) > 10, "{status} occurs: {kinds:?}");
    }
    let entries: usize = truth.iter().map(|t| t["statuses"].as_array().unwrap().len()).sum();
    let mean = entries as f64 / truth.len() as f64;
    assert!((5.0..8.0).contains(&mean), "about six history entries a dossier: {mean}");
}

/// `expected ± 4σ` of a binomial count.
#[track_caller]
fn assert_near_rate(count: usize, n: usize, rate: f64, what: &str) {
    let expected = n as f64 * rate;
    let sigma = (n as f64 * rate * (1.0 - rate)).sqrt();
    assert!(
        (count as f64 - expected).abs() <= 4.0 * sigma + 1.0,
        "{what}: {count} of {n}, expected about {expected}"
    );
}

#[tokio::test]
async fn defects_mess_and_unknown_procedures_come_at_their_seeded_rates() {
    let knobs = Knobs {
        bad_record_rate: 0.1,
        messy_rate: 0.2,
        unknown_procedure_rate: 0.05,
        seed: 11,
        ..backfill(4_000)
    };
    let p = Provincial::start(knobs.clone()).await;
    let truth = p.truth().await;
    let n = truth.len();
    let defects: Vec<&str> = truth.iter().filter_map(|t| t["defect"].as_str()).collect();
    assert_near_rate(defects.len(), n, 0.1, "bad records");
    for kind in ["no MaHoSo", "unparseable date", "local status not in the table", "malformed MaHoSo"] {
        let count = defects.iter().filter(|d| **d == kind).count();
        assert_near_rate(count, n, 0.025, kind);
    }
    let messy = truth.iter().filter(|t| !t["mess"].as_array().unwrap().is_empty()).count();
    assert_near_rate(messy, n, 0.2, "messy records");
    let unknown = truth.iter().filter(|t| t["unknown_procedure"] == json!(true)).count();
    assert_near_rate(unknown, n, 0.05, "unknown procedures");
    let stats = p.stats().await;
    assert_eq!(stats["bad_records"], defects.len());
    assert_eq!(stats["messy_records"], messy);
    assert_eq!(stats["unknown_procedure_records"], unknown);

    // The same seed files the same dossiers with the same trouble.
    let again = Provincial::start(knobs).await.truth().await;
    let strip = |t: &Value| {
        let mut r = t["record"].clone();
        r.as_object_mut().unwrap().remove("updated_at");
        (t["key"].clone(), r, t["defect"].clone(), t["mess"].clone())
    };
    assert!(truth.iter().map(strip).eq(again.iter().map(strip)));
}

#[tokio::test]
async fn each_defect_shows_in_the_record_as_named() {
    let p = Provincial::start(Knobs { bad_record_rate: 0.3, messy_rate: 0.0, ..backfill(600) }).await;
    for item in p.truth().await {
        let r = &item["record"];
        let date_ok = normalize_date(r["NgayTiepNhan"].as_str().unwrap()).is_some();
        let status_ok = national_of(r["TrangThai"].as_str().unwrap()).is_some();
        let mahoso_ok = r["MaHoSo"].as_str().is_some_and(|m| mahoso::parse(m).is_ok());
        let shown = (r.get("MaHoSo").is_some(), date_ok, status_ok, mahoso_ok);
        match item["defect"].as_str() {
            None => assert_eq!(shown, (true, true, true, true), "{r}"),
            Some("no MaHoSo") => assert_eq!(shown, (false, true, true, false)),
            Some("unparseable date") => assert_eq!(shown, (true, false, true, true)),
            Some("local status not in the table") => assert_eq!(shown, (true, true, false, true)),
            Some("malformed MaHoSo") => assert_eq!(shown, (true, true, true, false)),
            Some(other) => panic!("unknown defect {other}"),
        }
    }
}

fn texts(record: &Value) -> Vec<&str> {
    let mut all: Vec<&str> = record.as_object().unwrap().values().filter_map(Value::as_str).collect();
    for e in record["QuaTrinhXuLy"].as_array().unwrap() {
        all.extend(e.as_object().unwrap().values().filter_map(Value::as_str));
    }
    all
}

#[tokio::test]
async fn each_kind_of_mess_shows_in_the_record_and_clean_records_need_no_repair() {
    let p = Provincial::start(Knobs { bad_record_rate: 0.0, messy_rate: 0.5, ..backfill(800) }).await;
    let mut kinds_seen: BTreeMap<String, usize> = BTreeMap::new();
    for item in p.truth().await {
        let r = &item["record"];
        let mess: Vec<&str> = item["mess"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        let nfd = texts(r).iter().any(|t| !is_normalized(t));
        let numbers =
            r["KenhThucHien"].is_number() && r["LoaiDoiTuong"].is_number() && r["SoDienThoai"].is_number();
        let overlong = char_len(r["TrichYeuHoSo"].as_str().unwrap()) > 1000
            && char_len(r["QuaTrinhXuLy"][0]["NoiDungXuLy"].as_str().unwrap()) > 2000
            && char_len(r["QuaTrinhXuLy"][0]["NguoiXuLy"].as_str().unwrap()) > 50;
        let received = r["NgayTiepNhan"].as_str().unwrap();
        let rfc3339 = received.len() != 14 && normalize_date(received).is_some();
        assert_eq!(nfd, mess.contains(&"nfd"), "{mess:?}");
        assert_eq!(numbers, mess.contains(&"numbers"), "{mess:?}");
        assert_eq!(overlong, mess.contains(&"overlong"), "{mess:?}");
        assert_eq!(rfc3339, mess.contains(&"rfc3339"), "{mess:?}");
        for kind in mess {
            *kinds_seen.entry(kind.to_owned()).or_default() += 1;
        }
        let unknown = !catalogue::PROCEDURES.iter().any(|c| r["MaTTHC"] == json!(c.code));
        assert_eq!(unknown, item["unknown_procedure"] == json!(true));
    }
    assert_eq!(kinds_seen.len(), 4, "every kind occurs: {kinds_seen:?}");
}

#[tokio::test]
async fn catalogue_fields_are_often_absent() {
    let p = Provincial::start(backfill(300)).await;
    let absent = p.truth().await.iter().filter(|t| t["record"].get("TenTTHC").is_none()).count();
    assert!((60..=240).contains(&absent), "{absent} of 300 lack TenTTHC");
}

// ---- the simulation over time -----------------------------------------------------------------

async fn wait_for(p: &Provincial, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = p.stats().await;
        if cond(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_simulation_files_and_moves_dossiers_until_every_life_has_ended() {
    let p = Provincial::start(Knobs { dossiers: 80, changes_per_second: 2_000.0, ..Knobs::default() }).await;
    let stats = wait_for(&p, "finished", |s| s["finished"] == json!(true)).await;
    assert_eq!(stats["dossiers_created"], 80);
    let truth = p.truth().await;
    let steps: usize = truth.iter().map(|t| t["statuses"].as_array().unwrap().len()).sum();
    assert_eq!(stats["changes"], steps, "every change is one step of one life");
    for t in &truth {
        let last = t["statuses"].as_array().unwrap().last().unwrap().as_str().unwrap();
        assert!(national_of(last).unwrap().is_final());
    }
}

#[tokio::test]
async fn pause_stops_the_simulation_clock_and_resume_restarts_it() {
    let p =
        Provincial::start(Knobs { dossiers: 100_000, changes_per_second: 500.0, ..Knobs::default() }).await;
    wait_for(&p, "a first change", |s| s["changes"].as_u64() > Some(0)).await;
    p.post("/_mock/pause", json!({})).await;
    let before = p.stats().await["changes"].clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.stats().await["changes"], before, "nothing changes while paused");
    p.post("/_mock/resume", json!({})).await;
    wait_for(&p, "changes after resume", |s| s["changes"].as_u64() > before.as_u64()).await;
}

// ---- page faults and parameters ----------------------------------------------------------------

#[tokio::test]
async fn error_rate_and_outage_answer_with_html_errors() {
    let p = Provincial::start(backfill(10)).await;
    p.put_faults(json!({"error_rate": 1.0})).await;
    let (status, body) = p.page_raw(&[]).await;
    assert_eq!(status, 500);
    assert!(body.contains("<html>"));
    p.put_faults(json!({"error_rate": 0.0, "outage": true})).await;
    assert_eq!(p.page_raw(&[]).await.0, 503);
    p.put_faults(json!({"outage": false})).await;
    assert_eq!(p.page_raw(&[]).await.0, 200);
}

#[tokio::test]
async fn malformed_pages_are_cut_short_html_or_not_json() {
    let p = Provincial::start(Knobs { malformed_rate: 1.0, ..backfill(50) }).await;
    for _ in 0..30 {
        let (status, body) = p.page_raw(&[("limit", "50".into())]).await;
        assert_eq!(status, 200, "a malformed page still says 200");
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        assert!(parsed.is_none_or(|v| v.get("items").is_none()), "not a usable page: {body:.80}");
    }
    assert_eq!(p.stats().await["malformed_pages"], 30);
}

#[tokio::test]
async fn latency_delays_every_page() {
    let p = Provincial::start(Knobs { latency_ms: 250, ..backfill(5) }).await;
    let start = Instant::now();
    assert_eq!(p.page_raw(&[]).await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn limit_and_cursor_parameters_are_checked() {
    let p = Provincial::start(backfill(150)).await;
    for query in [
        vec![("limit", "0".to_owned())],
        vec![("limit", "1001".to_owned())],
        vec![("limit", "ten".to_owned())],
        vec![("updated_after", "yesterday".to_owned())],
    ] {
        assert_eq!(p.page_raw(&query).await.0, 400, "{query:?}");
    }
    let (_, body) = p.page_raw(&[]).await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 100, "default limit");
    assert_eq!(page["has_more"], true);
    assert_eq!(p.page(None, 1_000).await["items"].as_array().unwrap().len(), 150);
}

#[tokio::test]
async fn one_record_is_served_by_its_mahoso() {
    let p = Provincial::start(Knobs { bad_record_rate: 0.0, ..backfill(20) }).await;
    let first = p.page(None, 1).await["items"][0].clone();
    let mahoso = first["MaHoSo"].as_str().unwrap();
    let response = p
        .http
        .get(p.url(&format!("/api/v1/dossiers/{mahoso}")))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), first);
    let missing = p
        .http
        .get(p.url("/api/v1/dossiers/000.00.15.H58-200101-0001"))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

// ---- the /_mock/ endpoints ---------------------------------------------------------------------

#[tokio::test]
async fn raw_upserts_are_stored_as_given_and_stamped() {
    let p = Provincial::start(backfill(0)).await;
    let first = p
        .post("/_mock/dossiers", json!({"MaHoSo": code(1), "TrangThai": "new", "Odd": [1, {"x": null}]}))
        .await;
    assert_eq!(first["version"], 1);
    let second = p.post("/_mock/dossiers", json!({"MaHoSo": code(1), "TrangThai": "processing"})).await;
    assert_eq!(second["version"], 2);
    assert!(second["updated_at"].as_str() > first["updated_at"].as_str());
    p.post("/_mock/dossiers", json!({"TrangThai": "new"})).await;
    p.post("/_mock/dossiers", json!("not even an object")).await;
    let listed = p.list_all(10).await;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().filter(|r| r.get("MaHoSo").is_none()).count(), 2);
    let truth = p.truth().await;
    let dossier = truth.iter().find(|t| t["key"] == json!(code(1))).unwrap();
    assert_eq!(dossier["statuses"], json!(["new", "processing"]));
    assert_eq!(dossier["record"]["TrangThai"], "processing");
    assert_eq!(dossier["record"]["version"], 2);
    assert_eq!(p.stats().await["changes"], 4);
}

#[tokio::test]
async fn a_raw_upsert_takes_over_a_simulated_dossier() {
    let p = Provincial::start(Knobs { bad_record_rate: 0.0, ..backfill(3) }).await;
    let truth = p.truth().await;
    let key = truth[0]["key"].as_str().unwrap().to_owned();
    let version = truth[0]["record"]["version"].as_u64().unwrap();
    let mut record = truth[0]["record"].clone();
    record["ChuHoSo"] = json!("Lê Thị Sửa");
    let answer = p.post("/_mock/dossiers", record).await;
    assert_eq!(answer["version"].as_u64(), Some(version + 1));
    let listed = p.list_all(10).await;
    let fixed = listed.iter().find(|r| r["MaHoSo"] == json!(key)).unwrap();
    assert_eq!(fixed["ChuHoSo"], "Lê Thị Sửa");
    assert_eq!(listed.len(), 3);
}

#[tokio::test]
async fn knobs_read_back_and_take_partial_updates() {
    let p = Provincial::start(backfill(1)).await;
    let knobs: Value = p.http.get(p.url("/_mock/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(knobs["dossiers"], 1);
    assert_eq!(p.put_faults(json!({"latency_ms": 3, "messy_rate": 0.5})).await.status(), 200);
    let knobs: Value = p.http.get(p.url("/_mock/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!((knobs["latency_ms"].as_u64(), knobs["messy_rate"].as_f64()), (Some(3), Some(0.5)));
    for bad in [json!({"nope": 1}), json!({"bad_record_rate": -0.1}), json!({"dossiers": "many"})] {
        assert_eq!(p.put_faults(bad.clone()).await.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn the_cli_mock_takes_every_flag_and_prints_its_address() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvc-sync"))
        .args(["mock", "provincial", "--listen", "127.0.0.1:0", "--api-key", "k", "--dossiers", "7"])
        .args(["--changes-per-second", "0", "--seed", "5", "--bad-record-rate", "0", "--messy-rate", "0.5"])
        .args(["--unknown-procedure-rate", "0", "--late-visibility-ms", "0", "--error-rate", "0"])
        .args(["--malformed-rate", "0", "--latency-ms", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
    let page: Value = client()
        .get(format!("http://{addr}/api/v1/dossiers"))
        .header("X-API-Key", "k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    child.kill().await.unwrap();
}
