//! How many dossier items a second the national mock takes on one core with no fault set.
//! The mock runs alone on a current-thread runtime (one OS thread, so one core at most); a
//! client on another thread sends prepared batches of 100 (creates, then one history entry
//! each) with 8 calls in flight. Five runs on fresh mocks; the median is what counts.
//!
//!     cargo bench --bench national_mock [-- DOSSIERS_PER_RUN]

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use dvc_sync::mock::national::{self, NationalConfig};
use serde_json::{Value, json};

const BATCH: usize = 100;
const IN_FLIGHT: usize = 8;
const RUNS: usize = 5;

fn mahoso(i: usize) -> String {
    let day = 1 + i / 90_000;
    format!("000.00.10.H58-2601{day:02}-{:05}", i % 90_000 + 1)
}

fn dossier(i: usize) -> Value {
    json!({
        "MaHoSo": mahoso(i), "MaTTHC": "1.001193", "TenTTHC": "Đăng ký khai sinh",
        "MaLinhVuc": "G09-TP09", "TenLinhVuc": "Hộ tịch", "KenhThucHien": "2", "LoaiDoiTuong": "1",
        "ChuHoSo": "Nguyễn Văn An", "SoGiayToChuHoSo": "079123456789", "Email": "",
        "SoDienThoai": "0912345678", "TrichYeuHoSo": "Đăng ký khai sinh cho con - Nguyễn Văn An",
        "NgayTiepNhan": "20260101083000", "NgayHenTra": "20260105170000", "TrangThaiHoSo": "4",
        "NgayTra": "", "NgayKetThucXuLy": "", "HinhThuc": "0", "DonViXuLy": "Sở Kế hoạch và Đầu tư",
    })
}

fn entry(i: usize) -> Value {
    json!({
        "MaHoSo": mahoso(i), "NguoiXuLy": "Trần Văn Hậu", "ChucDanh": "Chuyên viên",
        "PhongBanXuLy": "Phòng Hành chính - Tư pháp", "ThoiDiemXuLy": "20260101090000",
        "NoiDungXuLy": "Chuyển xử lý hồ sơ", "TrangThai": "4", "NgayBatDau": "20260101090000",
        "NgayKetThucTheoQuyDinh": "20260105170000",
    })
}

/// CPU seconds used so far by the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    items: usize,
    wall: Duration,
    mock_cpu: f64,
}

fn run_once(dossiers: usize) -> Run {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (cpu_tx, cpu_rx) = mpsc::channel();
    let mock = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = national::start(listener, NationalConfig::default()).await.unwrap();
            addr_tx.send(server.url()).unwrap();
            let cpu_start = thread_cpu_seconds();
            let _ = stop_rx.await;
            cpu_tx.send(thread_cpu_seconds() - cpu_start).unwrap();
            server.stop().await;
        });
    });
    let url = addr_rx.recv().unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (items, wall) = client_rt.block_on(async {
        let http = reqwest::Client::new();
        let auth: Value = http
            .post(format!("{url}/auth"))
            .json(&json!({"username": "dvc-sync", "password": "dvc-sync-secret"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = auth["session"].as_str().unwrap().to_owned();
        let envelope = |service: &str, data: Vec<Value>| {
            let mut body =
                json!({"session": session, "madonvi": "000.00.00.H58", "service": service, "data": data});
            if service == "DongBoHoSoMC" {
                body["isUpdating"] = json!("False");
            }
            bytes_of(&body)
        };
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for start in (0..dossiers).step_by(BATCH) {
            bodies.push(envelope(
                "DongBoHoSoMC",
                (start..(start + BATCH).min(dossiers)).map(dossier).collect(),
            ));
        }
        for start in (0..dossiers).step_by(BATCH) {
            bodies.push(envelope(
                "CapNhatTienDoHoSoMC",
                (start..(start + BATCH).min(dossiers)).map(entry).collect(),
            ));
        }
        let started = Instant::now();
        // Creates must land before their history: send the two halves one after the other.
        let half = bodies.len() / 2;
        for part in [&bodies[..half], &bodies[half..]] {
            let mut queue = part.iter();
            let mut in_flight = tokio::task::JoinSet::new();
            loop {
                while in_flight.len() < IN_FLIGHT {
                    let Some(body) = queue.next() else { break };
                    let request = http
                        .post(format!("{url}/integration"))
                        .header("content-type", "application/json")
                        .body(body.clone());
                    in_flight.spawn(async move {
                        let answer: Value = request.send().await.unwrap().json().await.unwrap();
                        let code = &answer["error_code"];
                        assert!(code == &json!(0) || code == &json!("0") || code == &json!("00"), "{answer}");
                    });
                }
                if in_flight.join_next().await.is_none() {
                    break;
                }
            }
        }
        (dossiers * 2, started.elapsed())
    });
    let _ = stop_tx.send(());
    let mock_cpu = cpu_rx.recv().unwrap();
    mock.join().unwrap();
    Run { items, wall, mock_cpu }
}

fn bytes_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn main() {
    let dossiers: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(50_000);
    println!(
        "national mock: {dossiers} creates + {dossiers} history entries per run, batches of {BATCH}, {IN_FLIGHT} in flight"
    );
    let mut rates = Vec::new();
    for i in 1..=RUNS {
        let run = run_once(dossiers);
        let rate = run.items as f64 / run.wall.as_secs_f64();
        let per_cpu = run.items as f64 / run.mock_cpu.max(1e-9);
        println!(
            "run {i}: {} items in {:.2} s = {rate:.0} items/s wall; mock thread {:.2} CPU s = {per_cpu:.0} items per CPU-second",
            run.items,
            run.wall.as_secs_f64(),
            run.mock_cpu
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} items/s on one mock thread (target: at least 20000)", rates[RUNS / 2]);
}
