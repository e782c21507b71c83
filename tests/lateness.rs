//! Lateness with its cause, end to end: dossiers crafted at the provincial side with times
//! around now, a national outage longer than some of their due times, and `report` must put
//! down to synchronisation exactly the ones that were in time at the source and reached the
//! portal after their due time, and to the source exactly the ones late there; on time ones
//! appear nowhere. Both rules: the end of processing (2.1) and the receipt of an online dossier
//! (here within 3 working minutes, on a calendar that works every minute, so that the test
//! does not depend on the hour it runs at).

mod common;

use std::time::Duration;

use common::{daemon::*, *};
use dvc_sync::mock::{national::Faults, provincial::Knobs};
use jiff::{SignedDuration, civil::DateTime};
use serde_json::{Value, json};

fn vn_now() -> DateTime {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(7))).datetime()
}

fn national_time(t: DateTime) -> String {
    t.strftime("%Y%m%d%H%M%S").to_string()
}

/// A provincial record submitted online at `submitted`, received at `received`, due at `due`,
/// with these steps (local status, time).
fn record(
    mahoso: &str,
    submitted: DateTime,
    received: DateTime,
    due: DateTime,
    steps: &[(&str, DateTime)],
) -> Value {
    let mut r = dossier(mahoso);
    let o = r.as_object_mut().unwrap();
    o.remove("TrangThaiHoSo");
    o.insert("TrangThai".into(), json!(steps.last().unwrap().0));
    o.insert("NgayNopHoSo".into(), json!(national_time(submitted)));
    o.insert("NgayTiepNhan".into(), json!(national_time(received)));
    o.insert("NgayHenTra".into(), json!(national_time(due)));
    let history: Vec<Value> = steps
        .iter()
        .map(|(status, at)| {
            let mut e = entry(mahoso, &national_time(*at), status);
            e["NgayKetThucTheoQuyDinh"] = json!(national_time(due));
            e
        })
        .collect();
    o.insert("QuaTrinhXuLy".into(), Value::Array(history));
    r
}

/// Waits until the national portal holds each dossier with `entries` history entries.
async fn wait_national(national: &National, wanted: &[(&str, usize)]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for (m, entries) in wanted {
        loop {
            let (status, body) = national.get(&format!("/_mock/state/{m}")).await;
            if status == 200 && body["history"].as_array().map_or(0, Vec::len) >= *entries {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{m} never reached the national portal");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_some_due_times_is_put_down_to_sync_and_only_those() {
    // The calendar below has a minute off at midnight: keep away from it.
    while {
        let minute = vn_now().hour() as i32 * 60 + vn_now().minute() as i32;
        !(6..=23 * 60 + 49).contains(&minute)
    } {
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    let national = National::start(Faults::default()).await;
    let provincial = Provincial::start(Knobs {
        dossiers: 0,
        changes_per_second: 0.0,
        bad_record_rate: 0.0,
        messy_rate: 0.0,
        unknown_procedure_rate: 0.0,
        ..Knobs::default()
    })
    .await;
    let dir = test_dir();
    let config = write_config(
        dir.path(),
        &provincial.server.url(),
        &national.server.url(),
        &[
            "telemetry.metrics_listen = \"127.0.0.1:0\"",
            "telemetry.indicators_seconds = 1",
            "calendar.office_hours = [\"00:00-23:59\"]",
            "calendar.working_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]",
            "calendar.holidays = []",
            "calendar.make_up_days = []",
            "calendar.receipt_hours = 0.05",
        ],
    );
    let daemon = Daemon::start(&config).await;
    let metrics = metrics_addr(&daemon).await;
    // Steps happen after the database was made (earlier ones would be a backfill's).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let day = vn_now().strftime("%y%m%d").to_string();
    let m = |n: u32| format!("000.00.15.H58-{day}-{n:04}");
    let at = |t: DateTime, secs: i64| t.checked_add(SignedDuration::from_secs(secs)).unwrap();

    // Before the outage: on time (A), late at the source (B), received late at the source (C).
    let t0 = vn_now();
    let before = [
        record(&m(1), at(t0, -30), t0, at(t0, 7200), &[("new", t0), ("releasing", t0)]),
        record(
            &m(2),
            at(t0, -7230),
            at(t0, -7200),
            at(t0, -3600),
            &[("new", at(t0, -7200)), ("releasing", t0)],
        ),
        // Open: due after the month's end (2.1 ends an open dossier with the period).
        record(&m(3), at(t0, -600), t0, at(t0, 40 * 86_400), &[("new", t0)]),
    ];
    for r in before {
        provincial.post("/_mock/dossiers", r).await;
    }
    wait_national(&national, &[(&m(1), 2), (&m(2), 2), (&m(3), 1)]).await;

    // A national outage of 35 s. Finished in time at the source, due 15 s later (D); submitted
    // so that its receipt is due 15 s later, received at once (E); due in an hour (F).
    assert_eq!(national.put_faults(json!({"outage": true})).await.status(), 200);
    let t1 = vn_now();
    let during = [
        record(&m(4), at(t1, -30), t1, at(t1, 15), &[("new", t1), ("releasing", t1)]),
        record(&m(5), at(t1, -165), t1, at(t1, 40 * 86_400), &[("new", t1)]),
        record(&m(6), at(t1, -30), t1, at(t1, 3600), &[("new", t1), ("releasing", t1)]),
    ];
    for r in during {
        provincial.post("/_mock/dossiers", r).await;
    }
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(national.put_faults(json!({"outage": false})).await.status(), 200);
    wait_national(&national, &[(&m(4), 2), (&m(5), 1), (&m(6), 2)]).await;

    let (code, out) = cli(&config, &["report", "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let listed = |key: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["mahoso"].as_str().unwrap().to_owned(), l["cause"].as_str().unwrap().to_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed("late"), vec![(m(2), "source".into()), (m(4), "sync".into())], "{out}");
    assert_eq!(listed("receipt_late"), vec![(m(3), "source".into()), (m(5), "sync".into())], "{out}");
    assert_eq!(report["late_by_cause"], json!({"source": 1, "sync": 1}));
    assert_eq!(report["receipt_late_by_cause"], json!({"source": 1, "sync": 1}));
    // 2.1 itself judges by the source's times: only B is late there.
    assert_eq!(report["late_total"], 1);
    let d = report["late"].as_array().unwrap().iter().find(|l| l["mahoso"] == m(4)).unwrap();
    assert!(d["sync_minutes"].is_u64() && d["reason"].as_str().unwrap().starts_with("on time"), "{d}");

    // The table says it in the reader's language; the metric and the page count it.
    let (_, vi) = cli(&config, &["--lang", "vi", "report", "--late"]);
    assert!(vi.contains("do đồng bộ") && vi.contains("do nguồn") && vi.contains(&m(4)), "{vi}");
    let (_, en) = cli(&config, &["--lang", "en", "report", "--late"]);
    assert!(en.contains("by synchronisation") && en.contains("at the source"), "{en}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
        let sync = r#"dvc_sync_late_dossiers{kind="processing",cause="sync"} 1"#;
        let receipt = r#"dvc_sync_late_dossiers{kind="receipt",cause="sync"} 1"#;
        if scrape.contains(sync) && scrape.contains(receipt) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no late-by-sync gauge: {scrape}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let page = reqwest::get(format!("http://{metrics}/")).await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"data-late-source="1" data-late-sync="1""#), "the page counts them");
    assert!(page.contains(&format!(r#"data-late="{}" data-cause="sync""#, m(4))), "and lists them");
}
