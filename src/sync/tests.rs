//! The pusher and the poller through the engine's seams: a source that serves given pages and
//! a scripted sink that answers each national call as the test says, recording every call.
//! One decision at a time, without HTTP.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json, value::RawValue};

use super::{
    Engine, EngineConfig,
    answer::{Answer, TransientKind},
    poll::Applied,
    ports::{Page, Record, Sink, Source, SourceError, SystemClock},
};
use crate::{
    domain::{codes, normalize::StatusMap, status::DEFAULT_STATUS_MAP, status::NationalStatus},
    store::Store,
};

/// A source with nothing to say (the tests apply pages themselves).
struct Quiet;

impl Source for Quiet {
    async fn page(&self, _: Option<&super::ports::Cursor>, _: usize) -> Result<Page, SourceError> {
        Ok(Page::default())
    }
}

/// A national portal that answers from a script, per service, and records every call.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<Mutex<Vec<(&'static str, Value)>>>,
    answers: Arc<Mutex<HashMap<&'static str, VecDeque<Answer>>>>,
}

impl Scripted {
    fn answer(&self, service: &'static str, answer: Answer) {
        self.answers.lock().unwrap().entry(service).or_default().push_back(answer);
    }

    fn next(&self, service: &'static str, body: Value) -> Answer {
        self.calls.lock().unwrap().push((service, body));
        self.answers
            .lock()
            .unwrap()
            .get_mut(service)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| Answer::Ok(json!({"error_code": 0})))
    }

    fn calls(&self) -> Vec<(&'static str, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

fn values(items: &[&RawValue]) -> Value {
    Value::Array(items.iter().map(|r| serde_json::from_str(r.get()).unwrap()).collect())
}

impl Sink for Scripted {
    async fn sync_dossiers(&self, updating: bool, items: &[&RawValue]) -> Answer {
        self.next("DongBoHoSoMC", json!({"isUpdating": updating, "data": values(items)}))
    }
    async fn append_history(&self, entries: &[&RawValue]) -> Answer {
        self.next("CapNhatTienDoHoSoMC", json!({"data": values(entries)}))
    }
    async fn look_up(&self, mahoso: &str) -> Answer {
        self.next("TraCuuHoSo", json!({"mahoso": mahoso}))
    }
    async fn procedure(&self, code: &str) -> Answer {
        self.next("LayThuTuc", json!({"maTTHC": code}))
    }
    fn session_renewals(&self) -> u64 {
        0
    }
}

fn map() -> StatusMap {
    DEFAULT_STATUS_MAP.iter().filter_map(|(k, v)| Some(((*k).to_owned(), NationalStatus::new(*v)?))).collect()
}

fn config() -> EngineConfig {
    EngineConfig {
        page_size: 100,
        poll_interval: Duration::from_secs(1),
        look_back: Duration::ZERO,
        reconcile_interval: None,
        poll_retry: (Duration::from_millis(10), Duration::from_millis(100)),
        push_retry: (Duration::from_millis(10), Duration::from_millis(100)),
        batch_size: 10,
        max_concurrency: 1,
        round_size: 100,
        status_map: map(),
        drain: Duration::from_secs(1),
        heartbeat: Duration::from_secs(10),
        seed: 7,
        audit_per_second: 0.0,
        audit_cycle: Duration::from_secs(86_400),
        personal_data: None,
    }
}

fn engine(sink: &Scripted) -> (Engine<Quiet, Scripted, SystemClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
    (Engine::new(store, Quiet, sink.clone(), SystemClock, config()).unwrap(), dir)
}

/// A valid provincial record with `entries` steps, the catalogue fields given.
fn record(mahoso: &str, version: i64, entries: usize) -> Value {
    let history: Vec<Value> = (0..entries)
        .map(|i| {
            json!({"NguoiXuLy": "Trần Văn Hậu", "ThoiDiemXuLy": format!("202603011{i}0000"),
                   "NoiDungXuLy": format!("Bước xử lý {}", i + 1),
                   "TrangThai": if i == 0 { "new" } else if i == 1 { "waiting" } else { "processing" }})
        })
        .collect();
    json!({
        "MaHoSo": mahoso, "MaTTHC": "1.001193", "TenTTHC": "Đăng ký khai sinh", "MaLinhVuc": "G09-TP09",
        "TenLinhVuc": "Hộ tịch", "KenhThucHien": "2", "LoaiDoiTuong": "1", "ChuHoSo": "Nguyễn Văn An",
        "TrichYeuHoSo": "Đăng ký khai sinh", "NgayTiepNhan": "20260301083000", "NgayHenTra": "20260302083000",
        "TrangThai": "processing",
        "HinhThuc": "0", "DonViXuLy": "Sở Tư pháp", "updated_at": "2026-03-01T08:30:00+07:00",
        "version": version, "QuaTrinhXuLy": history,
    })
}

/// An engine over a scripted portal, with `records` applied.
fn engine_with(records: Vec<Record>) -> (Scripted, Engine<Quiet, Scripted, SystemClock>, tempfile::TempDir) {
    let sink = Scripted::default();
    let (e, dir) = engine(&sink);
    apply(&e, records);
    (sink, e, dir)
}

fn apply(e: &Engine<Quiet, Scripted, SystemClock>, records: Vec<Record>) -> Applied {
    e.sources[0].0.apply_page(&records, None).unwrap()
}

/// The `isUpdating` flag of every DongBoHoSoMC call made, in order.
fn updating_flags(sink: &Scripted) -> Vec<Value> {
    sink.calls().iter().filter(|(s, _)| *s == "DongBoHoSoMC").map(|(_, b)| b["isUpdating"].clone()).collect()
}

fn plain(raw: Value) -> Record {
    Record { raw: raw.into(), position: None, fingerprint: None, source_id: None }
}

/// The dossier as if its payload and its first `acked` entries were acknowledged, and a
/// history write's answer then lost.
fn uncertain_after(e: &Engine<Quiet, Scripted, SystemClock>, mahoso: &str, acked: i64) {
    e.store()
        .write(|tx| {
            tx.execute(
                "UPDATE dossier SET national_exists = 1, acked_hash = payload_hash, acked_history = ?2, inflight = 2 WHERE mahoso = ?1",
                rusqlite::params![mahoso, acked],
            )
        })
        .unwrap();
}

fn row<T: rusqlite::types::FromSql>(e: &Engine<Quiet, Scripted, SystemClock>, sql: &str) -> T {
    e.store().read(|c| c.query_row(sql, [], |r| r.get(0))).unwrap()
}

const A: &str = "000.00.15.H58-260301-0001";
const B: &str = "000.00.15.H58-260301-0002";
const C: &str = "000.00.15.H58-260301-0003";

/// The national copy of `record`'s first `n` entries, as a gateway might rewrite them:
/// times in RFC 3339, codes as numbers, padded and decomposed text, and (a status_map changed
/// since) another status code.
fn rewritten_look_up(mahoso: &str, n: usize) -> Answer {
    use unicode_normalization::UnicodeNormalization;
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            json!({"MaHoSo": mahoso, "NguoiXuLy": format!("  {} ", "Trần Văn Hậu".nfd().collect::<String>()),
                   "ThoiDiemXuLy": format!("2026-03-01T1{i}:00:00+07:00"),
                   "NoiDungXuLy": format!("Bước  xử lý {}", i + 1), "TrangThai": 9})
        })
        .collect();
    Answer::Ok(
        json!({"error_code": 0, "result": [{"MaHoSo": mahoso, "TrangThaiHoSo": 4, "QuaTrinhXuLy": entries}]}),
    )
}

#[tokio::test]
async fn a_rewritten_read_back_proves_what_was_applied_and_only_the_rest_is_sent() {
    let (sink, e, _dir) = engine_with(vec![plain(record(A, 1, 3))]);
    uncertain_after(&e, A, 1);
    // The lost write had carried the second entry: the portal holds two.
    sink.answer("TraCuuHoSo", rewritten_look_up(A, 2));
    e.pusher().round().await.unwrap();
    let calls = sink.calls();
    let sent: Vec<&Value> =
        calls.iter().filter(|(s, _)| *s == "CapNhatTienDoHoSoMC").map(|(_, b)| b).collect();
    assert_eq!(calls[0].0, "TraCuuHoSo");
    assert_eq!(sent.len(), 1, "{calls:?}");
    assert_eq!(sent[0]["data"].as_array().unwrap().len(), 1, "only the third entry");
    assert_eq!(sent[0]["data"][0]["NoiDungXuLy"], "Bước xử lý 3");
    assert_eq!(row::<i64>(&e, "SELECT acked_history FROM dossier"), 3);
    assert_eq!(row::<i64>(&e, "SELECT COUNT(*) FROM outbox"), 0, "in sync");
}

#[tokio::test]
async fn a_read_back_with_an_entry_none_of_ours_parks_the_dossier_and_sends_nothing() {
    let (sink, e, _dir) = engine_with(vec![plain(record(A, 1, 3))]);
    uncertain_after(&e, A, 1);
    let foreign = json!({"MaHoSo": A, "NguoiXuLy": "Hệ thống khác", "ThoiDiemXuLy": "20200101080000",
                         "NoiDungXuLy": "Cập nhật từ hệ thống khác", "TrangThai": "4"});
    let Answer::Ok(mut answer) = rewritten_look_up(A, 1) else { unreachable!() };
    answer["result"][0]["QuaTrinhXuLy"].as_array_mut().unwrap().push(foreign);
    sink.answer("TraCuuHoSo", Answer::Ok(answer));
    e.pusher().round().await.unwrap();
    assert!(sink.calls().iter().all(|(s, _)| *s == "TraCuuHoSo"), "nothing sent: {:?}", sink.calls());
    let (kind, reason): (String, String) = e
        .store()
        .read(|c| c.query_row("SELECT kind, reason FROM dead", [], |r| Ok((r.get(0)?, r.get(1)?))))
        .unwrap();
    assert_eq!(kind, "unmatched");
    assert!(
        reason.contains("nothing resent") && reason.contains("entry 2 (20200101080000 by Hệ thống khác)"),
        "{reason}"
    );
    assert_eq!(
        row::<i64>(&e, "SELECT inflight FROM dossier"),
        2,
        "still uncertain: a retry reads back first"
    );
    // A look-up without its history list is no proof either.
    let (sink, e, _dir) = engine_with(vec![plain(record(A, 1, 2))]);
    uncertain_after(&e, A, 1);
    sink.answer("TraCuuHoSo", Answer::Ok(json!({"error_code": 0, "result": [{"MaHoSo": A}]})));
    e.pusher().round().await.unwrap();
    assert_eq!(row::<String>(&e, "SELECT kind FROM dead"), "unmatched");
    assert_eq!(sink.calls().len(), 1);
}

#[tokio::test]
async fn a_refused_item_is_isolated_from_the_rest_of_its_batch() {
    let (sink, e, _dir) =
        engine_with(vec![plain(record(A, 1, 1)), plain(record(B, 1, 1)), plain(record(C, 1, 1))]);
    sink.answer(
        "DongBoHoSoMC",
        Answer::Refused { code: codes::INVALID, message: format!("MaHoSo={B}: TrichYeuHoSo: quá dài") },
    );
    e.pusher().round().await.unwrap();
    let creates: Vec<Vec<String>> = sink
        .calls()
        .iter()
        .filter(|(s, _)| *s == "DongBoHoSoMC")
        .map(|(_, b)| {
            b["data"].as_array().unwrap().iter().map(|d| d["MaHoSo"].as_str().unwrap().to_owned()).collect()
        })
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert_eq!(creates[1], vec![A.to_owned(), C.to_owned()], "the rest sent again at once");
    let (mahoso, code, reason): (String, i64, String) = e
        .store()
        .read(|c| {
            c.query_row("SELECT mahoso, error_code, reason FROM dead", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .unwrap();
    assert_eq!((mahoso.as_str(), code), (B, codes::INVALID));
    assert!(reason.contains("quá dài"), "{reason}");
    assert_eq!(row::<i64>(&e, "SELECT COUNT(*) FROM dossier WHERE acked_history = 1"), 2, "A and C complete");
}

#[tokio::test]
async fn an_existing_dossier_is_replaced_and_an_unknown_one_created_again() {
    let (sink, e, _dir) = engine_with(vec![plain(record(A, 1, 1))]);
    sink.answer(
        "DongBoHoSoMC",
        Answer::Refused { code: codes::EXISTS, message: format!("MaHoSo={A} đã tồn tại") },
    );
    e.pusher().round().await.unwrap();
    let payloads = updating_flags(&sink);
    // What the portal holds of a dossier it had without our knowing is read back before
    // anything is written.
    assert_eq!(payloads, vec![json!(false)], "nothing written blind");
    assert_eq!(row::<i64>(&e, "SELECT acked_history FROM dossier"), 0);
    assert_eq!(row::<i64>(&e, "SELECT inflight FROM dossier"), 2, "to be read back");
    assert!(sink.calls().iter().all(|(s, _)| *s != "CapNhatTienDoHoSoMC"), "nothing appended blind");
    let held = json!({"error_code": 0, "result": [{"MaHoSo": A, "QuaTrinhXuLy": []}]});
    sink.answer("TraCuuHoSo", Answer::Ok(held));
    assert_eq!(row::<i64>(&e, "SELECT attempts FROM outbox"), 1, "after a backoff");
    e.store().write(|tx| tx.execute("UPDATE outbox SET next_attempt_at = 0", [])).unwrap();
    e.pusher().round().await.unwrap();
    let payloads = updating_flags(&sink);
    assert_eq!(payloads, vec![json!(false), json!(true)], "then replaced: it held other fields");
    assert_eq!(row::<i64>(&e, "SELECT acked_history FROM dossier"), 1);

    // History refused for an unknown dossier: it is created again.
    apply(&e, vec![plain(record(A, 2, 2))]);
    sink.answer(
        "CapNhatTienDoHoSoMC",
        Answer::Refused {
            code: codes::UNKNOWN_DOSSIER,
            message: format!("MaHoSo={A}: không tìm thấy hồ sơ"),
        },
    );
    e.pusher().round().await.unwrap();
    assert_eq!(row::<i64>(&e, "SELECT national_exists FROM dossier"), 0, "to be created again");
    assert_eq!(row::<i64>(&e, "SELECT COUNT(*) FROM outbox"), 1);
}

#[tokio::test]
async fn the_poller_knows_a_record_by_its_fingerprint_and_parks_a_second_claim_to_its_number() {
    let sink = Scripted::default();
    let (e, _dir) = engine(&sink);
    let sql = |raw: Value, fingerprint: i64, id: &str| Record {
        raw: raw.into(),
        position: None,
        fingerprint: Some(fingerprint),
        source_id: Some(id.to_owned()),
    };
    let first = apply(&e, vec![sql(record(A, 10, 2), 42, "1")]);
    assert_eq!((first.changed, first.seen), (1, 0));
    // Read again later (a larger read number), unchanged: seen, nothing written.
    let again = apply(&e, vec![sql(record(A, 11, 2), 42, "1")]);
    assert_eq!((again.changed, again.seen), (0, 1));
    assert_eq!(row::<i64>(&e, "SELECT version FROM dossier"), 10);
    // Changed content: recorded.
    let changed = apply(&e, vec![sql(record(A, 12, 3), 43, "1")]);
    assert_eq!(changed.changed, 1);
    // Another source record with the same MaHoSo: parked under its own key.
    let claim = apply(&e, vec![sql(record(A, 13, 3), 44, "2")]);
    assert_eq!(claim.quarantined, 1);
    let (key, reason): (String, String) = e
        .store()
        .read(|c| c.query_row("SELECT key, reason FROM quarantine", [], |r| Ok((r.get(0)?, r.get(1)?))))
        .unwrap();
    assert_eq!(key, format!("{A}#id:2"));
    assert!(reason.contains("source record 1"), "{reason}");
    assert_eq!(row::<i64>(&e, "SELECT version FROM dossier"), 12, "the first claim keeps its state");
}

#[tokio::test]
async fn a_record_too_deep_to_read_is_quarantined_under_its_dossier_until_a_readable_version() {
    let (e, _dir) = engine(&Scripted::default());
    let as_text = |text: String| Record {
        raw: serde_json::value::RawValue::from_string(text).unwrap().into(),
        position: None,
        fingerprint: None,
        source_id: None,
    };
    // Version 1 carries a field nested 200 deep (serde_json reads 128).
    let mut deep = serde_json::to_string(&record(A, 1, 1)).unwrap();
    deep.insert_str(1, &format!(r#""Nested": {}{}, "#, "[".repeat(200), "]".repeat(200)));
    assert_eq!(apply(&e, vec![as_text(deep)]).quarantined, 1);
    let (key, version, reason): (String, i64, String) = e
        .store()
        .read(|c| {
            c.query_row("SELECT key, version, reason FROM quarantine", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .unwrap();
    assert_eq!((key.as_str(), version), (A, 1), "under its MaHoSo and version");
    assert!(reason.contains("cannot be read"), "{reason}");
    assert_eq!(apply(&e, vec![as_text(serde_json::to_string(&record(A, 2, 1)).unwrap())]).changed, 1);
    assert_eq!(row::<i64>(&e, "SELECT COUNT(*) FROM quarantine"), 0, "a readable version releases it");
}

#[tokio::test]
async fn an_update_the_portal_lost_is_created_again_with_its_whole_history_even_if_the_answer_is_lost() {
    let (sink, e, _dir) = engine_with(vec![plain(record(A, 1, 1))]);
    e.pusher().round().await.unwrap();
    assert_eq!(row::<i64>(&e, "SELECT acked_history FROM dossier"), 1);
    // A newer version: the portal no longer knows the dossier, and the answer to the create
    // sent instead is lost.
    let mut newer = record(A, 2, 2);
    newer["TrichYeuHoSo"] = json!("Đăng ký khai sinh (bổ sung)");
    apply(&e, vec![plain(newer)]);
    sink.answer(
        "DongBoHoSoMC",
        Answer::Refused {
            code: codes::UNKNOWN_DOSSIER,
            message: format!("MaHoSo={A}: không tìm thấy hồ sơ"),
        },
    );
    sink.answer("DongBoHoSoMC", Answer::retry(TransientKind::Dropped, "connection closed", true));
    e.pusher().round().await.unwrap();
    // Recorded before the create left: the first entry is not taken as held any more.
    assert_eq!(row::<i64>(&e, "SELECT national_exists FROM dossier"), 0);
    assert_eq!(row::<i64>(&e, "SELECT acked_history FROM dossier"), 0);
    assert_eq!(row::<i64>(&e, "SELECT inflight FROM dossier"), 1, "the create's outcome is uncertain");
    // The create was applied: the probe finds the dossier without history; both entries follow.
    let held = json!({"error_code": 0, "result": [{"MaHoSo": A, "QuaTrinhXuLy": []}]});
    sink.answer("TraCuuHoSo", Answer::Ok(held));
    e.store().write(|tx| tx.execute("UPDATE outbox SET next_attempt_at = 0", [])).unwrap();
    e.pusher().round().await.unwrap();
    let appended: usize = sink
        .calls()
        .iter()
        .filter(|(s, _)| *s == "CapNhatTienDoHoSoMC")
        .map(|(_, b)| b["data"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(appended, 1 + 2, "the first entry once before the loss, then both after it");
    assert_eq!(row::<i64>(&e, "SELECT acked_history FROM dossier"), 2);
}

#[tokio::test]
async fn a_dossier_without_a_due_date_asks_the_catalogue_for_its_duration_without_waiting_for_it() {
    let sink = Scripted::default();
    let (e, _dir) = engine(&sink);
    let due_less = |version: i64| {
        let mut r = record(A, version, version as usize);
        r.as_object_mut().unwrap().remove("NgayHenTra");
        plain(r)
    };
    let asked = |sink: &Scripted| sink.calls().iter().filter(|(s, _)| *s == "LayThuTuc").count();
    apply(&e, vec![due_less(1)]);
    // The catalogue fails: the dossier went first anyway, and the duration is not asked again
    // before a minute has passed.
    sink.answer("LayThuTuc", Answer::Ok(json!({"error_code": 0})));
    e.pusher().round().await.unwrap();
    let services: Vec<&str> = sink.calls().iter().map(|(s, _)| *s).collect();
    assert_eq!(services, ["DongBoHoSoMC", "CapNhatTienDoHoSoMC", "LayThuTuc"]);
    assert_eq!(row::<i64>(&e, "SELECT national_exists FROM dossier"), 1);
    apply(&e, vec![due_less(2)]);
    e.pusher().round().await.unwrap();
    assert_eq!(asked(&sink), 1, "not again at once");
    // A minute later (made so here), with nothing else to do, it is asked and kept.
    e.sources[0].0.catalogue.retry_later("1.001193", 0);
    sink.answer(
        "LayThuTuc",
        Answer::Ok(json!({"error_code": 0, "result": [{"MATTHC": "1.001193", "TENTTHC": "Đăng ký khai sinh",
            "CACHTHUCTHUCHIEN": [{"THOIGIAN": [{"THOIGIANGIAIQUYET": "3", "DONVITINH": "Ngày làm việc"}]}]}]})),
    );
    assert_eq!(e.pusher().round().await.unwrap(), 0, "an idle round");
    assert_eq!(
        row::<String>(&e, "SELECT duration || ' ' || duration_unit FROM procedure"),
        "3.0 working_days"
    );
    assert_eq!(asked(&sink), 2);
    // Cached: a later version does not ask.
    apply(&e, vec![due_less(3)]);
    e.pusher().round().await.unwrap();
    assert_eq!(asked(&sink), 2);
}

/// Recording pages trains the body dictionary once the store holds enough dossiers
/// (store::body); dossiers recorded before and after it read back whole, to be pushed and
/// compared with their next versions.
#[test]
fn recording_pages_trains_the_body_dictionary_and_bodies_read_back() {
    let sink = Scripted::default();
    let (e, _dir) = engine(&sink);
    let mahoso = |i: i64| format!("000.00.15.H58-260301-{i:04}");
    let page = |from: i64, to: i64, version: i64| -> Vec<Record> {
        (from..to).map(|i| plain(record(&mahoso(i), version, 3))).collect()
    };
    let dictionaries =
        |e: &Engine<Quiet, Scripted, SystemClock>| -> i64 { row(e, "SELECT COUNT(*) FROM body_dict") };
    let threshold = crate::store::body::TRAIN_AFTER;
    apply(&e, page(0, threshold - 1, 1));
    assert_eq!(dictionaries(&e), 0, "not before {threshold} dossiers");
    apply(&e, page(threshold - 1, threshold + 1, 1));
    assert_eq!(dictionaries(&e), 1);
    apply(&e, page(threshold + 1, threshold + 50, 1));
    assert_eq!(dictionaries(&e), 1, "trained once");
    let size = |i: i64| -> i64 {
        row(&e, &format!("SELECT length(history) FROM body WHERE mahoso = '{}'", mahoso(i)))
    };
    assert!(size(threshold + 10) * 2 < size(10), "{} vs {}", size(threshold + 10), size(10));
    // A new version of a dossier from each side of the dictionary: its stored history is
    // read and compared (the entries only grow here), and the new body stored.
    let applied =
        apply(&e, vec![plain(record(&mahoso(10), 2, 4)), plain(record(&mahoso(threshold + 10), 2, 4))]);
    assert_eq!(applied.changed, 2, "{applied:?}");
    for i in [10, threshold + 10] {
        let history: String =
            row(&e, &format!("SELECT body_text(history) FROM body WHERE mahoso = '{}'", mahoso(i)));
        let entries: Vec<Value> = serde_json::from_str(&history).unwrap();
        assert_eq!(entries.len(), 4, "{i}");
        let payload: String =
            row(&e, &format!("SELECT body_text(payload) FROM body WHERE mahoso = '{}'", mahoso(i)));
        assert!(payload.contains(&mahoso(i)), "{payload}");
    }
}
