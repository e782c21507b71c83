//! "Once", whatever the look-up answers look like: the real daemon reaches the national mock
//! through a gateway that rewrites every TraCuuHoSo answer (codes as numbers, times in another
//! format, text padded or decomposed) while acknowledgements are lost; and for three dossiers
//! the gateway loses the answer to their first history write and then shows, in the look-up,
//! an entry that matches none of ours. Nothing is sent twice, nothing out of order; the three
//! are parked, visibly, instead of resent; released once the look-up is honest again.

mod common;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse};
use common::{daemon::*, *};
use dvc_sync::{
    mock::{national::Faults, provincial::Knobs},
    verify,
};
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

#[derive(Default)]
struct Gateway {
    national: String,
    /// Dossiers whose first history write loses its answer, and whose look-up then holds a
    /// foreign entry.
    poisoned: BTreeSet<String>,
    lost_once: BTreeSet<String>,
    honest: bool,
    rewritten: u64,
    style: u64,
}

fn rewrite(map: &mut serde_json::Map<String, Value>, style: u64) {
    for (key, value) in map.iter_mut() {
        let Value::String(s) = value else { continue };
        if (key.starts_with("Ngay") || key == "ThoiDiemXuLy") && s.len() == 14 {
            let (y, mo, d, h, mi, se) = (&s[0..4], &s[4..6], &s[6..8], &s[8..10], &s[10..12], &s[12..14]);
            *value = Value::String(match style % 3 {
                0 => format!("{y}-{mo}-{d}T{h}:{mi}:{se}+07:00"),
                1 => format!("{d}/{mo}/{y} {h}:{mi}:{se}"),
                _ => format!("{y}-{mo}-{d} {h}:{mi}:{se}"),
            });
        } else if !s.is_empty() && s.len() <= 2 && s.chars().all(|c| c.is_ascii_digit()) {
            *value = json!(s.parse::<i64>().unwrap());
        } else if key != "MaHoSo" && !s.is_empty() {
            *value = Value::String(match style % 3 {
                0 => format!("  {s}   "),
                1 => s.nfd().collect(),
                _ => s.replace(' ', " \t "),
            });
        }
    }
}

async fn forward(
    State(gw): State<Arc<Mutex<Gateway>>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> axum::response::Response {
    let (url, request) = {
        let g = gw.lock().unwrap();
        (
            format!("{}{}", g.national, uri.path()),
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let service = request["service"].as_str().unwrap_or("").to_owned();
    let answer = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await;
    let Ok(answer) = answer else { return StatusCode::BAD_GATEWAY.into_response() };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut g = gw.lock().unwrap();
    if service == "CapNhatTienDoHoSoMC" && status.is_success() {
        // Applied at the portal, answer lost on the way back: the daemon must read back.
        let names: BTreeSet<String> = request["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["MaHoSo"].as_str().map(str::to_owned))
            .collect();
        let first_loss: Vec<String> =
            names.iter().filter(|m| g.poisoned.contains(*m) && !g.lost_once.contains(*m)).cloned().collect();
        if !first_loss.is_empty() {
            g.lost_once.extend(first_loss);
            return StatusCode::BAD_GATEWAY.into_response();
        }
    }
    if service != "TraCuuHoSo" || !status.is_success() {
        return (status, [("content-type", "application/json")], bytes).into_response();
    }
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let style = g.style;
    g.style += 1;
    g.rewritten += 1;
    let mahoso = request["mahoso"].as_str().unwrap_or("").to_owned();
    for dossier in value["result"].as_array_mut().into_iter().flatten() {
        let Some(map) = dossier.as_object_mut() else { continue };
        let mut entries = map.remove("QuaTrinhXuLy").unwrap_or(json!([]));
        rewrite(map, style);
        for e in entries.as_array_mut().into_iter().flatten().filter_map(Value::as_object_mut) {
            rewrite(e, style);
        }
        if g.poisoned.contains(&mahoso) && !g.honest {
            // An entry some other system appended: none of ours.
            entries.as_array_mut().unwrap().push(json!({
                "MaHoSo": mahoso, "NguoiXuLy": "Hệ thống khác", "ThoiDiemXuLy": "20200101080000",
                "NoiDungXuLy": "Cập nhật từ hệ thống khác", "TrangThai": "4",
            }));
        }
        map.insert("QuaTrinhXuLy".into(), entries);
    }
    (StatusCode::OK, [("content-type", "application/json")], serde_json::to_vec(&value).unwrap())
        .into_response()
}

async fn gateway(national: &str) -> (String, Arc<Mutex<Gateway>>) {
    let gw = Arc::new(Mutex::new(Gateway { national: national.to_owned(), ..Gateway::default() }));
    let router = Router::new().fallback(axum::routing::post(forward)).with_state(gw.clone());
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_look_ups_with_lost_acknowledgements_duplicate_nothing_and_park_what_they_cannot_prove() {
    let national = National::start(Faults {
        drop_after_apply_rate: 0.25,
        error_rate: 0.02,
        seed: 12,
        ..Faults::default()
    })
    .await;
    let provincial = Provincial::start(Knobs {
        dossiers: 300,
        changes_per_second: 150.0,
        bad_record_rate: 0.0,
        unknown_procedure_rate: 0.0,
        seed: 12,
        ..Knobs::default()
    })
    .await;
    let (through, gw) = gateway(&national.server.url()).await;
    // Three of the first dossiers the province files.
    let poisoned: BTreeSet<String> = loop {
        let truth =
            verify::provincial_truth(&reqwest::Client::new(), &provincial.server.url()).await.unwrap();
        if truth.len() >= 3 {
            break truth.iter().take(3).map(|t| t.key.clone()).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gw.lock().unwrap().poisoned = poisoned.clone();
    let dir = test_dir();
    let config = write_config(dir.path(), &provincial.server.url(), &through, &[]);
    let mut daemon = Daemon::start(&config).await;

    // Every dossier but the three synchronized; the three parked with the reason.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::ZERO).await;
        let missing: BTreeSet<&String> = verdict.not_synchronized.keys().collect();
        let status = status_json(&config);
        let parked = status["dossiers"]["dead"].as_u64() == Some(3);
        if provincial.stats().await["finished"] == json!(true)
            && parked
            && missing.iter().all(|m| poisoned.contains(*m))
        {
            let problems = status["problems"].to_string();
            assert!(problems.contains("match none of ours"), "{problems}");
            break;
        }
        assert!(Instant::now() < deadline, "{}\nstatus: {status}", verdict.summary());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let reasons = rows(&db(dir.path()), "SELECT mahoso, reason FROM dead WHERE kind = 'unmatched'");
    assert_eq!(reasons.iter().map(|(m, _)| m.clone()).collect::<BTreeSet<_>>(), poisoned);
    assert!(reasons.iter().all(|(_, r)| r.contains("read-back inconclusive, nothing resent")), "{reasons:?}");
    let stats = national.stats().await;
    assert_eq!(stats["duplicate_history_entries"], 0, "{stats}");
    assert_eq!(stats["out_of_order_history_entries"], 0);
    assert!(gw.lock().unwrap().rewritten > 20, "the look-ups were rewritten");
    assert!(
        stats["http_faults"]["dropped_after_apply"].as_u64().unwrap_or(0) > 5,
        "acknowledgements were lost: {stats}"
    );

    // The look-up honest again: `retry --dead` reads them back, and they complete, once.
    gw.lock().unwrap().honest = true;
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "retry", "--dead"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let verdict = converge(&provincial.server.url(), &national.server.url(), Duration::from_secs(60)).await;
    assert!(verdict.clean() && verdict.synchronized == verdict.valid, "{}", verdict.summary());
    assert_eq!(national.stats().await["duplicate_history_entries"], 0);
    daemon.sigterm().await;
    assert!(daemon.wait(Duration::from_secs(15)).await.expect("stops").success());
}
