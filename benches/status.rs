//! How long `dvc-sync status` takes on a database of 1,000,000 dossiers (target: under
//! 100 ms). The database is built once (realistic rows: a ~700-byte payload and six history
//! entries each; 2% pending, 0.5% retrying, 0.1% dead, 0.2% quarantined) under
//! `target/bench-data/` and reused. The binary is timed as an operator runs it, a new process
//! each time: one warm-up, then the median of 9 runs.
//!
//! Also `dvc-sync report --month` on the same database (median of 3), which reads every dossier.
//!
//!     cargo bench --bench status [-- DOSSIERS]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use dvc_sync::store::Store;
use rusqlite::params;
use serde_json::json;

fn mahoso(i: usize) -> String {
    format!("000.00.10.H58-{:06}-{:05}", 250101 + (i / 90_000) % 28, i % 90_000 + 1)
}

fn build(db: &Path, n: usize) {
    let store = Store::open(db).unwrap();
    let existing: i64 =
        store.read(|c| c.query_row("SELECT n FROM counts WHERE name = 'dossier'", [], |r| r.get(0))).unwrap();
    if existing as usize == n {
        println!("reusing {} ({n} dossiers)", db.display());
        return;
    }
    assert_eq!(existing, 0, "{} holds another size; delete it", db.display());
    let started = Instant::now();
    let now = jiff::Timestamp::now().as_microsecond();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
        store
            .write(|tx| {
                let mut dossier = tx.prepare_cached(
                    "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure,
                         history_len, national_exists, acked_hash, acked_status, acked_history, acked_at, local_status)
                     VALUES (?1, 6, ?2, ?2, ?3, 10, '1.001193', 6, 1, ?3, 10, ?4, ?2, 'done')",
                )?;
                let mut body = tx.prepare_cached("INSERT INTO body (mahoso, payload, history) VALUES (?1, body_pack(?2), body_pack(?3))")?;
                let mut outbox = tx.prepare_cached(
                    "INSERT INTO outbox (mahoso, enqueued_at, next_attempt_at, attempts, last_error) VALUES (?1, ?2, ?2, ?3, ?4)",
                )?;
                let mut dead = tx.prepare_cached(
                    "INSERT INTO dead (mahoso, dead_at, attempts, error_code, reason) VALUES (?1, ?2, 1, 6, 'national portal refused (error_code 6)')",
                )?;
                let mut quarantine = tx.prepare_cached(
                    "INSERT INTO quarantine (key, mahoso, version, updated_at, reason, record, first_seen_at, last_seen_at)
                     VALUES (?1, ?1, 6, ?2, 'local status \"x\" not in status_map', '{}', ?2, ?2)",
                )?;
                for &i in chunk {
                    let m = mahoso(i);
                    let payload = json!({
                        "MaHoSo": m, "MaTTHC": "1.001193", "TenTTHC": "Đăng ký khai sinh", "MaLinhVuc": "G09-TP09",
                        "TenLinhVuc": "Hộ tịch", "KenhThucHien": "2", "LoaiDoiTuong": "1", "ChuHoSo": "Nguyễn Văn An",
                        "SoGiayToChuHoSo": "079123456789", "Email": "", "SoDienThoai": "0912345678",
                        "TrichYeuHoSo": "Đăng ký khai sinh cho con - Nguyễn Văn An", "NgayTiepNhan": "20250101083000",
                        "NgayHenTra": "20250105170000", "TrangThaiHoSo": "10", "NgayTra": "20250104100000",
                        "NgayKetThucXuLy": "20250104090000", "HinhThuc": "0", "DonViXuLy": "Sở Kế hoạch và Đầu tư",
                    })
                    .to_string();
                    let history: Vec<_> = (0..6)
                        .map(|k| json!({"MaHoSo": m, "NguoiXuLy": "Trần Văn Hậu", "ChucDanh": "Chuyên viên",
                            "PhongBanXuLy": "Phòng Hành chính - Tư pháp", "ThoiDiemXuLy": format!("2025010{}090000", k + 1),
                            "NoiDungXuLy": "Chuyển xử lý hồ sơ", "TrangThai": "4", "NgayBatDau": "", "NgayKetThucTheoQuyDinh": ""}))
                        .collect();
                    let hash = dvc_sync::domain::stable_hash(payload.as_bytes());
                    let pending = i % 50 == 7;
                    let retrying = i % 200 == 11;
                    let acked_history = if pending || retrying { 4 } else { 6 };
                    dossier.execute(params![m, now - 1_000_000, hash, acked_history])?;
                    body.execute(params![m, payload, json!(history).to_string()])?;
                    if pending || retrying {
                        let attempts = i64::from(retrying);
                        let error = retrying.then_some("HTTP 503 (text/html)");
                        outbox.execute(params![m, now - (i as i64 % 600) * 1_000_000, attempts, error])?;
                    } else if i % 1000 == 13 {
                        dead.execute(params![m, now])?;
                    } else if i % 500 == 17 {
                        quarantine.execute(params![m, now])?;
                    }
                }
                Ok(())
            })
            .unwrap();
    }
    store.write(|tx| {
        tx.execute("INSERT INTO heartbeat (id, pid, version, started_at, beat_at) VALUES (1, 1, '0.1.0', ?1, ?1)", [now])?;
        dvc_sync::store::meta_set(tx, "head_cursor", Some(&format!("{now}|{}", mahoso(n - 1))))
    })
    .unwrap();
    println!("built {n} dossiers in {:.1} s", started.elapsed().as_secs_f64());
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("status-{n}.db"));
    build(&db, n);
    let _ =
        Store::open(&db).unwrap().read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    let config = dir.join("status-bench.toml");
    std::fs::write(&config, format!("[store]\npath = {:?}\n", db.display().to_string())).unwrap();
    let bin = env!("CARGO_BIN_EXE_dvc-sync");
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "status"])
            .args(args)
            .output()
            .unwrap();
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
        (took, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for (label, args) in [
        ("status --json", &["--json"][..]),
        ("status (table)", &[][..]),
        ("status --dossier", &["--dossier", "000.00.10.H58-250101-00008"][..]),
    ] {
        run(args);
        let mut times: Vec<f64> = (0..9).map(|_| run(args).0).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{label}: median {:.1} ms (min {:.1}, max {:.1}) over 9 runs, new process each",
            times[4], times[0], times[8]
        );
    }
    let conn = dvc_sync::store::open_read_only(&db).unwrap();
    let thresholds = dvc_sync::status::Thresholds {
        stale_heartbeat: std::time::Duration::from_secs(60),
        outbox_age: std::time::Duration::from_secs(900),
        audit_cycle: Some(std::time::Duration::from_secs(30 * 86_400)),
        sources: vec![("provincial".into(), "http".into())],
    };
    let mut times: Vec<f64> = (0..9)
        .map(|_| {
            let started = Instant::now();
            dvc_sync::status::report(&conn, &db, jiff::Timestamp::now(), &thresholds).unwrap();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("in-process report(): median {:.2} ms", times[4]);
    // `dvc-sync report` reads every dossier (the 766 figures): its cost per dossier, which is
    // also what the daemon pays every telemetry.indicators_seconds.
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new(bin)
                .args(["--config", config.to_str().unwrap(), "report", "--json", "--month", "2025-01"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "report --json --month: median {:.0} ms over 3 runs ({:.1} µs a dossier)",
        times[1],
        times[1] * 1000.0 / n as f64
    );
    println!("database: {n} dossiers, {:.0} MiB", size as f64 / 1024.0 / 1024.0);
    println!("{}", run(&["--json"]).1);
}
