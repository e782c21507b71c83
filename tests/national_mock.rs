//! The national mock against national-portal.md: every error code, every validation rule,
//! all-or-nothing calls, sessions, both forms of error_code, every fault knob, every
//! `/_mock/` endpoint.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dvc_sync::mock::national::Faults;
use serde_json::{Value, json};

async fn national() -> National {
    National::start(Faults::default()).await
}

/// Asserts an answer's code and that its message names `needle`.
#[track_caller]
fn assert_refused(answer: &Value, code: i64, needle: &str) {
    assert_eq!(code_of(answer), code, "{answer}");
    assert!(
        message_of(answer).contains(needle),
        "message {:?} should contain {needle:?}",
        message_of(answer)
    );
}

// ---- error code 0 and the stored state -------------------------------------------------------

#[tokio::test]
async fn a_valid_dossier_is_created_and_stored_as_sent() {
    let n = national().await;
    let answer = n.create(vec![dossier(&code(1))]).await;
    assert_eq!(code_of(&answer), 0, "{answer}");
    let (status, state) = n.get(&format!("/_mock/state/{}", code(1))).await;
    assert_eq!(status, 200);
    assert_eq!(state["dossier"], dossier(&code(1)));
    assert_eq!(state["status_sequence"], json!(["2"]));
    assert_eq!((state["creates"].as_u64(), state["updates"].as_u64()), (Some(1), Some(0)));
    assert_eq!(n.get("/_mock/state/000.00.15.H58-260301-9999").await.0, 404);
}

#[tokio::test]
async fn one_dossier_or_the_end_of_its_history_can_be_lost() {
    let n = national().await;
    assert_eq!(code_of(&n.create(vec![dossier(&code(1)), dossier(&code(2))]).await), 0);
    let entries: Vec<Value> = ["20260301090000", "20260301100000", "20260301110000"]
        .iter()
        .map(|at| entry(&code(1), at, "4"))
        .collect();
    assert_eq!(code_of(&n.history(entries.clone()).await), 0);
    let truncate = |mahoso: String, body: Value| {
        let http = n.http.clone();
        let url = n.url(&format!("/_mock/state/{mahoso}/truncate"));
        async move { http.post(url).json(&body).send().await.expect("send") }
    };
    let answer = truncate(code(1), json!({"keep": 1})).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["history_entries"], 1);
    let state = n.get(&format!("/_mock/state/{}", code(1))).await.1;
    assert_eq!(state["history"], json!([entries[0]]));
    // What was lost can be sent again without counting as a duplicate; what was kept cannot.
    assert_eq!(code_of(&n.history(entries[1..].to_vec()).await), 0);
    assert_eq!(n.stats().await["duplicate_history_entries"], 0);
    assert_eq!(code_of(&n.history(vec![entries[0].clone()]).await), 0);
    assert_eq!(n.stats().await["duplicate_history_entries"], 1);
    let stored = |stats: Value| stats["history_entries_stored"].as_u64();
    assert_eq!(
        stored(n.stats().await),
        Some(4),
        "kept as entries come and go (1 kept, 2 again, 1 duplicate)"
    );
    // Bad bodies and unknown dossiers are told apart.
    assert_eq!(truncate(code(1), json!({"keep": -1})).await.status(), 400);
    assert_eq!(truncate(code(1), json!({})).await.status(), 400);
    assert_eq!(truncate(code(9), json!({"keep": 0})).await.status(), 404);

    let delete = |mahoso: String| {
        let http = n.http.clone();
        let url = n.url(&format!("/_mock/state/{mahoso}"));
        async move { http.delete(url).send().await.expect("send").status() }
    };
    assert_eq!(code_of(&n.history(vec![entry(&code(2), "20260301090000", "4")]).await), 0);
    assert_eq!(stored(n.stats().await), Some(5));
    assert_eq!(delete(code(2)).await, 200);
    assert_eq!(stored(n.stats().await), Some(4), "a lost dossier's entries are gone with it");
    assert_eq!(n.get(&format!("/_mock/state/{}", code(2))).await.0, 404);
    assert_eq!(delete(code(2)).await, 404);
    // Lost nationally: an update is refused as unknown, a create is accepted again.
    assert_eq!(code_of(&n.update(vec![dossier(&code(2))]).await), 4);
    assert_eq!(code_of(&n.create(vec![dossier(&code(2))]).await), 0);
    assert_eq!(n.get(&format!("/_mock/state/{}", code(1))).await.0, 200, "the other one stays");
}

// ---- error code 3 -----------------------------------------------------------------------------

#[tokio::test]
async fn creating_an_existing_dossier_is_code_3_da_ton_tai() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    let answer = n.create(vec![dossier(&code(1))]).await;
    assert_refused(&answer, 3, "đã tồn tại");
    assert!(message_of(&answer).contains(&format!("MaHoSo={}", code(1))));
    // The client's recovery: resend as an update.
    assert_eq!(code_of(&n.update(vec![dossier(&code(1))]).await), 0);
}

#[tokio::test]
async fn the_same_new_dossier_twice_in_one_create_is_code_3() {
    let n = national().await;
    assert_refused(&n.create(vec![dossier(&code(1)), dossier(&code(1))]).await, 3, "đã tồn tại");
}

// ---- error code -1 and sessions ---------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_unknown_session_is_code_minus_1() {
    let n = national().await;
    for session in [Value::Null, json!("not-a-session"), json!(42)] {
        let mut body = json!({"madonvi": MADONVI, "service": "LayThuTuc", "maTTHC": "1.001193"});
        if !session.is_null() {
            body["session"] = session;
        }
        assert_eq!(code_of(&n.post_raw("/integration", body).await), -1);
    }
}

#[tokio::test]
async fn sessions_expire_after_their_ttl_and_a_new_login_works() {
    let n = National::start(Faults { session_ttl_seconds: 0.3, ..Faults::default() }).await;
    assert_eq!(code_of(&n.call("LayThuTuc", json!({"maTTHC": "1.001193"})).await), 0);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(code_of(&n.call("LayThuTuc", json!({"maTTHC": "1.001193"})).await), -1);
    let mut n = n;
    n.session = n.login().await;
    assert_eq!(code_of(&n.call("LayThuTuc", json!({"maTTHC": "1.001193"})).await), 0);
    assert_eq!(n.stats().await["sessions_issued"], 2);
}

#[tokio::test]
async fn wrong_credentials_get_a_non_zero_code_and_no_session() {
    let n = national().await;
    for body in [
        json!({"username": "dvc-sync", "password": "wrong"}),
        json!({"username": "someone", "password": "dvc-sync-secret"}),
    ] {
        let answer = n.post_raw("/auth", body).await;
        assert_ne!(code_of(&answer), 0);
        assert!(answer.get("session").is_none());
    }
    let answer = n.post_raw("/auth", json!({"username": "dvc-sync"})).await;
    assert_eq!(code_of(&answer), 1, "missing password is malformed");
}

// ---- error code 1 -----------------------------------------------------------------------------

#[tokio::test]
async fn a_body_that_is_not_json_is_code_1() {
    let n = national().await;
    let response = n
        .http
        .post(n.url("/integration"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "errors travel in the body");
    assert_eq!(code_of(&response.json().await.unwrap()), 1);
}

#[tokio::test]
async fn a_body_without_the_json_content_type_is_code_1() {
    let n = national().await;
    let body =
        json!({"session": n.session, "madonvi": MADONVI, "service": "LayThuTuc", "maTTHC": "1.001193"});
    let response = n.http.post(n.url("/integration")).body(body.to_string()).send().await.unwrap();
    assert_eq!(code_of(&response.json().await.unwrap()), 1);
}

#[tokio::test]
async fn an_unknown_service_is_code_1() {
    let n = national().await;
    assert_eq!(code_of(&n.call("XoaHoSo", json!({})).await), 1);
    assert_eq!(n.stats().await["calls"]["unknown"]["error_1"], 1, "unknown services share one label");
}

#[tokio::test]
async fn data_that_is_not_an_array_is_code_1() {
    let n = national().await;
    for data in [json!(dossier(&code(1))), json!("x"), Value::Null] {
        let answer = n.call("DongBoHoSoMC", json!({"isUpdating": "False", "data": data})).await;
        assert_eq!(code_of(&answer), 1, "{data}");
    }
    assert_eq!(code_of(&n.call("CapNhatTienDoHoSoMC", json!({"data": {}})).await), 1);
}

#[tokio::test]
async fn is_updating_must_be_the_string_true_or_false() {
    let n = national().await;
    for flag in [json!(true), json!(false), json!("true"), json!("FALSE"), json!(1), Value::Null] {
        let answer = n.call("DongBoHoSoMC", json!({"isUpdating": flag, "data": [dossier(&code(1))]})).await;
        assert_eq!(code_of(&answer), 1, "isUpdating {flag}");
    }
    assert_eq!(n.get(&format!("/_mock/state/{}", code(1))).await.0, 404);
}

// ---- error code 2: each validation rule -------------------------------------------------------

const REQUIRED_DOSSIER_FIELDS: &[&str] = &[
    "MaHoSo",
    "MaTTHC",
    "TenTTHC",
    "MaLinhVuc",
    "TenLinhVuc",
    "KenhThucHien",
    "LoaiDoiTuong",
    "TrichYeuHoSo",
    "NgayTiepNhan",
    "TrangThaiHoSo",
    "HinhThuc",
    "DonViXuLy",
];
const OPTIONAL_DOSSIER_FIELDS: &[&str] =
    &["ChuHoSo", "SoGiayToChuHoSo", "Email", "SoDienThoai", "NgayHenTra", "NgayTra", "NgayKetThucXuLy"];
const REQUIRED_HISTORY_FIELDS: &[&str] = &["MaHoSo", "NguoiXuLy", "ThoiDiemXuLy", "NoiDungXuLy", "TrangThai"];

#[tokio::test]
async fn each_required_field_missing_or_empty_is_code_2_naming_it() {
    let n = national().await;
    for field in REQUIRED_DOSSIER_FIELDS {
        assert_refused(&n.create(vec![without(dossier(&code(1)), field)]).await, 2, field);
        assert_refused(&n.create(vec![with(dossier(&code(1)), field, json!(""))]).await, 2, field);
    }
    n.create(vec![dossier(&code(1))]).await;
    for field in REQUIRED_HISTORY_FIELDS {
        let e = entry(&code(1), "20260301090000", "4");
        assert_refused(&n.history(vec![without(e.clone(), field)]).await, 2, field);
        assert_refused(&n.history(vec![with(e, field, json!(""))]).await, 2, field);
    }
}

#[tokio::test]
async fn optional_fields_may_be_absent_or_empty() {
    let n = national().await;
    let mut d = dossier(&code(1));
    for field in OPTIONAL_DOSSIER_FIELDS {
        d = without(d, field);
    }
    assert_eq!(code_of(&n.create(vec![d]).await), 0);
    let e = without(
        without(without(entry(&code(1), "20260301090000", "4"), "ChucDanh"), "PhongBanXuLy"),
        "NgayBatDau",
    );
    assert_eq!(code_of(&n.history(vec![with(e, "NgayKetThucTheoQuyDinh", json!(""))]).await), 0);
}

#[tokio::test]
async fn every_scalar_must_be_a_json_string() {
    let n = national().await;
    for (field, value) in [
        ("KenhThucHien", json!(2)),
        ("LoaiDoiTuong", json!(1)),
        ("TrangThaiHoSo", json!(2)),
        ("SoDienThoai", json!(912345678)),
        ("HinhThuc", json!(false)),
        ("ChuHoSo", Value::Null),
        ("DonViXuLy", json!(["Sở Tư pháp"])),
    ] {
        assert_refused(&n.create(vec![with(dossier(&code(1)), field, value)]).await, 2, field);
    }
    n.create(vec![dossier(&code(1))]).await;
    let e = with(entry(&code(1), "20260301090000", "4"), "TrangThai", json!(4));
    assert_refused(&n.history(vec![e]).await, 2, "TrangThai");
}

#[tokio::test]
async fn codes_must_be_inside_their_tables() {
    let n = national().await;
    for (field, bad) in [
        ("KenhThucHien", "4"),
        ("KenhThucHien", "0"),
        ("LoaiDoiTuong", "5"),
        ("TrangThaiHoSo", "11"),
        ("TrangThaiHoSo", "0"),
        ("TrangThaiHoSo", "04"),
        ("HinhThuc", "2"),
    ] {
        assert_refused(&n.create(vec![with(dossier(&code(1)), field, json!(bad))]).await, 2, field);
    }
    n.create(vec![dossier(&code(1))]).await;
    let e = with(entry(&code(1), "20260301090000", "4"), "TrangThai", json!("processing"));
    assert_refused(&n.history(vec![e]).await, 2, "TrangThai");
}

#[tokio::test]
async fn the_766_fields_are_optional_and_checked_like_the_others() {
    let n = national().await;
    let full = with(dossier(&code(1)), "DuocThanhToanTrucTuyen", json!("2"));
    let full = with(full, "HoSoCoThanhPhanSoHoa", json!("1"));
    let full = with(full, "NgayNopHoSo", json!("20260301070000"));
    let full = with(
        full,
        "DanhSachLePhi",
        json!([{"TenPhiLePhi": "Lệ phí hộ tịch", "Gia": "8000", "MaPhiLePhi": "LP01"}]),
    );
    let full = with(
        full,
        "TaiLieuNop",
        json!([{"TepDinhKemId": "1", "TenTepDinhKem": "Tờ khai", "DuocSoHoa": "1", "DuocTaiSuDung": "2",
                "DuocLayTuKhoDMQG": "0", "DuongDanTaiTepTin": "https://example.vn/1"}]),
    );
    let full =
        with(full, "DanhSachGiayToKetQua", json!([{"TenGiayTo": "Trích lục", "DuongDanTepTinKetQua": ""}]));
    assert_eq!(code_of(&n.create(vec![full.clone()]).await), 0);
    assert_eq!(n.get(&format!("/_mock/state/{}", code(1))).await.1["dossier"], full, "stored as sent");
    let empty = with(with(dossier(&code(2)), "TaiLieuNop", json!([])), "DuocThanhToanTrucTuyen", json!(""));
    assert_eq!(code_of(&n.create(vec![empty]).await), 0, "empty is absent");

    let long: String = "ễ".repeat(501);
    let nfd = "Te\u{0302}\u{0301}p";
    for (field, bad, named) in [
        ("DuocThanhToanTrucTuyen", json!("3"), "DuocThanhToanTrucTuyen"),
        ("DuocThanhToanTrucTuyen", json!(1), "DuocThanhToanTrucTuyen"),
        ("HoSoCoThanhPhanSoHoa", json!("2"), "HoSoCoThanhPhanSoHoa"),
        ("NgayNopHoSo", json!("20260231080000"), "NgayNopHoSo"),
        ("DanhSachLePhi", json!({"Gia": "1"}), "DanhSachLePhi"),
        ("DanhSachLePhi", json!([{"Gia": "năm mươi nghìn"}]), "DanhSachLePhi[1].Gia"),
        ("DanhSachLePhi", json!([{"Gia": 50000}]), "DanhSachLePhi[1].Gia"),
        ("TaiLieuNop", json!([{}, {"DuocSoHoa": "2"}]), "TaiLieuNop[2].DuocSoHoa"),
        ("TaiLieuNop", json!([{"DuocTaiSuDung": "3"}]), "TaiLieuNop[1].DuocTaiSuDung"),
        ("TaiLieuNop", json!([{"DuocLayTuKhoDMQG": "2"}]), "TaiLieuNop[1].DuocLayTuKhoDMQG"),
        ("TaiLieuNop", json!([{"TenTepDinhKem": nfd}]), "TaiLieuNop[1].TenTepDinhKem"),
        ("TaiLieuNop", json!([{"TenTepDinhKem": long}]), "vượt quá 500"),
        ("TaiLieuNop", json!(["tờ khai"]), "TaiLieuNop"),
        ("DanhSachGiayToKetQua", json!([{"SoHieu": "1"}]), "DanhSachGiayToKetQua[1].SoHieu"),
        ("DanhSachGiayToKetQua", Value::Array(vec![json!({}); 101]), "vượt quá 100"),
    ] {
        let answer = n.create(vec![with(dossier(&code(3)), field, bad.clone())]).await;
        assert_refused(&answer, 2, named);
    }
}

#[tokio::test]
async fn dates_must_be_real_calendar_times_in_the_national_form() {
    let n = national().await;
    for (field, bad) in [
        ("NgayTiepNhan", "20260230083000"),
        ("NgayTiepNhan", "2026-03-01T08:30:00+07:00"),
        ("NgayTiepNhan", "202603010830"),
        ("NgayHenTra", "20260305250000"),
        ("NgayTra", "01/03/2026"),
        ("NgayKetThucXuLy", "20261301000000"),
    ] {
        assert_refused(&n.create(vec![with(dossier(&code(1)), field, json!(bad))]).await, 2, field);
    }
    n.create(vec![dossier(&code(1))]).await;
    for field in ["ThoiDiemXuLy", "NgayBatDau", "NgayKetThucTheoQuyDinh"] {
        let e = with(entry(&code(1), "20260301090000", "4"), field, json!("20260229090000"));
        assert_refused(&n.history(vec![e]).await, 2, field);
    }
}

#[tokio::test]
async fn the_promised_date_may_not_precede_intake() {
    let n = national().await;
    let d = with(dossier(&code(1)), "NgayHenTra", json!("20260301082959"));
    assert_refused(&n.create(vec![d]).await, 2, "NgayHenTra");
    let same = with(dossier(&code(1)), "NgayHenTra", json!("20260301083000"));
    assert_eq!(code_of(&n.create(vec![same]).await), 0);
}

#[tokio::test]
async fn text_in_nfd_is_refused_and_nfc_accepted() {
    use unicode_normalization::UnicodeNormalization;
    let n = national().await;
    let nfd: String = "Nguyễn Văn An".nfd().collect();
    assert_refused(&n.create(vec![with(dossier(&code(1)), "ChuHoSo", json!(nfd))]).await, 2, "ChuHoSo");
    n.create(vec![dossier(&code(1))]).await;
    let nfd: String = "Chuyển xử lý".nfd().collect();
    let e = with(entry(&code(1), "20260301090000", "4"), "NoiDungXuLy", json!(nfd));
    assert_refused(&n.history(vec![e]).await, 2, "NoiDungXuLy");
}

#[tokio::test]
async fn length_limits_count_characters_not_bytes() {
    let n = national().await;
    let long = |c: char, len: usize| json!(std::iter::repeat_n(c, len).collect::<String>());
    // 'ễ' is 3 bytes: exactly the limit in characters passes although it is 3x in bytes.
    let limits = [("TrichYeuHoSo", 1000), ("ChuHoSo", 500), ("DonViXuLy", 500), ("TenTTHC", 500)];
    for (i, (field, limit)) in (1..).zip(limits) {
        let over = with(dossier(&code(i)), field, long('ễ', limit + 1));
        assert_refused(&n.create(vec![over]).await, 2, field);
        let at = with(dossier(&code(i)), field, long('ễ', limit));
        assert_eq!(code_of(&n.create(vec![at]).await), 0, "{field} at its limit");
    }
}

#[tokio::test]
async fn history_length_limits_are_50_and_2000_characters() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    let long = |len: usize| json!(std::iter::repeat_n('ư', len).collect::<String>());
    for (field, limit) in [("NguoiXuLy", 50), ("NoiDungXuLy", 2000), ("PhongBanXuLy", 500)] {
        let e = with(entry(&code(1), "20260301090000", "4"), field, long(limit + 1));
        assert_refused(&n.history(vec![e]).await, 2, field);
        let e = with(entry(&code(1), "20260301090000", "4"), field, long(limit));
        assert_eq!(code_of(&n.history(vec![e]).await), 0, "{field} at its limit");
    }
}

#[tokio::test]
async fn a_malformed_mahoso_or_an_impossible_date_in_it_is_code_2() {
    let n = national().await;
    for bad in [
        "HS-2026-0001",
        "000.00.15.H58/260301/0001",
        "000.00.15.H58-260231-0001",
        "000.00.15.H58-260301-001",
        "000.00.15.H58-260301-000001",
        "000.00.15.H58--260301-0001",
    ] {
        assert_refused(&n.create(vec![dossier(bad)]).await, 2, "MaHoSo");
    }
    assert_eq!(code_of(&n.create(vec![dossier("000.00.10.H58-260301-12345")]).await), 0, "5 digits");
}

#[tokio::test]
async fn an_unknown_field_is_code_2() {
    let n = national().await;
    assert_refused(&n.create(vec![with(dossier(&code(1)), "GhiChu", json!("x"))]).await, 2, "GhiChu");
    assert_refused(&n.create(vec![json!("not an object")]).await, 2, "MaHoSo=");
}

// ---- error codes 4, 5, 6, 7, 8 -----------------------------------------------------------------

#[tokio::test]
async fn updating_or_appending_to_an_unknown_dossier_is_code_4() {
    let n = national().await;
    assert_refused(&n.update(vec![dossier(&code(1))]).await, 4, &code(1));
    assert_refused(&n.history(vec![entry(&code(1), "20260301090000", "4")]).await, 4, &code(1));
}

#[tokio::test]
async fn a_final_status_never_moves_and_nothing_returns_to_1_code_5() {
    let n = national().await;
    n.create(vec![with(dossier(&code(1)), "TrangThaiHoSo", json!("10"))]).await;
    let answer = n.update(vec![with(dossier(&code(1)), "TrangThaiHoSo", json!("4"))]).await;
    assert_refused(&answer, 5, "10");
    assert!(message_of(&answer).contains(" 4 "), "names from and to: {}", message_of(&answer));
    n.create(vec![dossier(&code(2))]).await;
    assert_refused(&n.update(vec![with(dossier(&code(2)), "TrangThaiHoSo", json!("1"))]).await, 5, "1");
    assert_eq!(n.stats().await["rejected_status_changes"], 2);
    let state = n.get(&format!("/_mock/state/{}", code(1))).await.1;
    assert_eq!(state["status_sequence"], json!(["10"]));
}

#[tokio::test]
async fn skipping_forward_resending_and_moving_between_open_states_are_allowed() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    for status in ["9", "9", "4", "5", "4", "8", "10", "10"] {
        let answer = n.update(vec![with(dossier(&code(1)), "TrangThaiHoSo", json!(status))]).await;
        assert_eq!(code_of(&answer), 0, "to {status}: {answer}");
    }
    let state = n.get(&format!("/_mock/state/{}", code(1))).await.1;
    assert_eq!(state["status_sequence"], json!(["2", "9", "4", "5", "4", "8", "10"]));
    assert_eq!(state["updates"], 8);
    assert_eq!(n.stats().await["rejected_status_changes"], 0);
}

#[tokio::test]
async fn an_unknown_procedure_code_is_code_6() {
    let n = national().await;
    assert_refused(
        &n.create(vec![with(dossier(&code(1)), "MaTTHC", json!("9.990001"))]).await,
        6,
        "9.990001",
    );
}

#[tokio::test]
async fn another_unit_or_another_provinces_dossier_is_code_7() {
    let n = national().await;
    let mut body = json!({"session": n.session, "madonvi": "000.00.00.H01", "service": "DongBoHoSoMC",
        "isUpdating": "False", "data": [dossier(&code(1))]});
    assert_eq!(code_of(&n.post_raw("/integration", body.clone()).await), 7);
    body["madonvi"] = json!(MADONVI);
    body["data"] = json!([dossier("000.00.15.H01-260301-0001")]);
    assert_refused(&n.post_raw("/integration", body).await, 7, "000.00.15.H01-260301-0001");
    let answer = n.call("TraCuuHoSo", json!({"mahoso": "000.00.15.H01-260301-0001"})).await;
    assert_eq!(code_of(&answer), 7);
}

#[tokio::test]
async fn more_items_than_the_limit_is_code_8() {
    let n = national().await;
    let batch: Vec<Value> = (1..=101).map(|i| dossier(&code(i))).collect();
    assert_eq!(code_of(&n.create(batch).await), 8);
    let batch: Vec<Value> = (1..=100).map(|i| dossier(&code(i))).collect();
    assert_eq!(code_of(&n.create(batch).await), 0);
    n.put_faults(json!({"max_items_per_call": 3})).await;
    let entries: Vec<Value> = (1..=4).map(|i| entry(&code(i), "20260301090000", "4")).collect();
    assert_eq!(code_of(&n.history(entries).await), 8);
}

// ---- all or nothing ---------------------------------------------------------------------------

#[tokio::test]
async fn a_call_with_one_bad_item_applies_nothing_and_names_the_first_bad_item() {
    let n = national().await;
    let batch = vec![
        dossier(&code(1)),
        with(dossier(&code(2)), "KenhThucHien", json!("9")),
        dossier(&code(3)),
        with(dossier(&code(4)), "MaTTHC", json!("9.990001")),
    ];
    let answer = n.create(batch).await;
    assert_refused(&answer, 2, &format!("MaHoSo={}: KenhThucHien", code(2)));
    for i in 1..=4 {
        assert_eq!(n.get(&format!("/_mock/state/{}", code(i))).await.0, 404, "item {i} not applied");
    }
    n.create(vec![dossier(&code(1))]).await;
    let entries = vec![entry(&code(1), "20260301090000", "4"), entry(&code(9), "20260301100000", "4")];
    assert_refused(&n.history(entries).await, 4, &format!("MaHoSo={}", code(9)));
    let state = n.get(&format!("/_mock/state/{}", code(1))).await.1;
    assert_eq!(state["history"], json!([]));
}

// ---- history: appended, duplicates and out-of-order counted ----------------------------------

#[tokio::test]
async fn history_is_appended_in_arrival_order_with_duplicates_and_reordering_counted() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    let first = entry(&code(1), "20260301090000", "4");
    let second = entry(&code(1), "20260302090000", "5");
    let older = entry(&code(1), "20260301100000", "4");
    assert_eq!(code_of(&n.history(vec![first.clone(), second.clone()]).await), 0);
    assert_eq!(code_of(&n.history(vec![first.clone()]).await), 0, "a duplicate is accepted...");
    assert_eq!(code_of(&n.history(vec![older.clone()]).await), 0, "...and so is an older entry");
    let stats = n.stats().await;
    assert_eq!(stats["duplicate_history_entries"], 1, "...but both are counted");
    // `first` (03-01 09:00) resent after `second` (03-02) is out of order; `older`
    // (03-01 10:00) after that resent `first` is in order again.
    assert_eq!(stats["out_of_order_history_entries"], 1);
    let state = n.get(&format!("/_mock/state/{}", code(1))).await.1;
    assert_eq!(state["history"], json!([first, second, first, older]));
    assert_eq!(stats["items_applied"]["history_entries"], 4);
}

// ---- lookups ----------------------------------------------------------------------------------

#[tokio::test]
async fn tra_cuu_ho_so_returns_the_dossier_with_its_history_or_nothing() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    let e = entry(&code(1), "20260301090000", "4");
    n.history(vec![e.clone()]).await;
    let answer = n.call("TraCuuHoSo", json!({"mahoso": code(1)})).await;
    assert_eq!(code_of(&answer), 0);
    let mut expected = dossier(&code(1));
    expected["QuaTrinhXuLy"] = json!([e]);
    assert_eq!(answer["result"], json!([expected]));
    let answer = n.call("TraCuuHoSo", json!({"mahoso": code(2)})).await;
    assert_eq!((code_of(&answer), &answer["result"]), (0, &json!([])));
    assert_eq!(code_of(&n.call("TraCuuHoSo", json!({})).await), 1);
}

#[tokio::test]
async fn lay_thu_tuc_reads_the_catalogue() {
    let n = national().await;
    let answer = n.call("LayThuTuc", json!({"maTTHC": "1.001193"})).await;
    assert_eq!(
        answer["result"],
        json!([{"MATTHC": "1.001193", "TENTTHC": "Đăng ký khai sinh",
                "LINHVUCTHUCHIEN": [{"MALINHVUC": "G09-TP09", "TENLINHVUC": "Hộ tịch"}],
                "CACHTHUCTHUCHIEN": [{"KENH": "1", "THOIGIAN": [{"THOIGIANGIAIQUYET": "1", "DONVITINH": "Ngày",
                    "MOTA": "Kể từ ngày nhận đủ hồ sơ hợp lệ"}]}]}])
    );
    // The long procedures count working days.
    let answer = n.call("LayThuTuc", json!({"maTTHC": "1.009994"})).await;
    assert_eq!(answer["result"][0]["CACHTHUCTHUCHIEN"][0]["THOIGIAN"][0]["DONVITINH"], "Ngày làm việc");
    let answer = n.call("LayThuTuc", json!({"maTTHC": "9.990001"})).await;
    assert_eq!((code_of(&answer), &answer["result"]), (0, &json!([])));
}

// ---- error_code forms -------------------------------------------------------------------------

#[tokio::test]
async fn error_code_comes_both_as_a_number_and_as_a_string() {
    let n = national().await;
    let mut forms = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let ok = n.call("LayThuTuc", json!({"maTTHC": "1.001193"})).await;
        forms.insert(ok["error_code"].to_string());
        let bad = n.call("LayThuTuc", json!({})).await;
        forms.insert(bad["error_code"].to_string());
    }
    for form in ["0", "\"0\"", "\"00\"", "1", "\"1\""] {
        assert!(forms.contains(form), "form {form} never seen in {forms:?}");
    }
}

// ---- fault knobs ------------------------------------------------------------------------------

async fn raw_call(n: &National, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
    n.http.post(n.url("/integration")).json(body).send().await
}

fn create_body(n: &National, dossiers: Vec<Value>) -> Value {
    json!({"session": n.session, "madonvi": MADONVI, "service": "DongBoHoSoMC", "isUpdating": "False", "data": dossiers})
}

#[tokio::test]
async fn error_rate_answers_500_with_an_html_page_and_applies_nothing() {
    let n = national().await;
    n.put_faults(json!({"error_rate": 1.0})).await;
    let response = raw_call(&n, &create_body(&n, vec![dossier(&code(1))])).await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("<html>"));
    n.put_faults(json!({"error_rate": 0.0})).await;
    assert_eq!(n.get(&format!("/_mock/state/{}", code(1))).await.0, 404);
    assert_eq!(n.stats().await["http_faults"]["error_500"], 1);
}

#[tokio::test]
async fn a_partial_error_rate_fails_about_that_share_reproducibly_by_seed() {
    async fn outcomes(seed: u64) -> Vec<u16> {
        // Log in first, then turn faults on: the sequence of random draws stays the seed's.
        let n = National::start(Faults { seed, ..Faults::default() }).await;
        n.put_faults(json!({"error_rate": 0.3})).await;
        let mut statuses = Vec::new();
        for _ in 0..100 {
            let body = json!({"session": n.session, "madonvi": MADONVI, "service": "LayThuTuc", "maTTHC": "1.001193"});
            statuses.push(raw_call(&n, &body).await.unwrap().status().as_u16());
        }
        statuses
    }
    let a = outcomes(7).await;
    let b = outcomes(7).await;
    let c = outcomes(8).await;
    assert_eq!(a, b, "same seed, same faults");
    assert_ne!(a, c, "another seed, other faults");
    let failures = a.iter().filter(|s| **s == 500).count();
    assert!((15..=45).contains(&failures), "{failures} of 100 failed at rate 0.3");
}

#[tokio::test]
async fn over_the_rate_limit_calls_get_429_with_retry_after() {
    let n = National::start(Faults { rate_limit_per_second: 5.0, ..Faults::default() }).await;
    let body =
        json!({"session": n.session, "madonvi": MADONVI, "service": "LayThuTuc", "maTTHC": "1.001193"});
    let mut limited = 0;
    for _ in 0..20 {
        let response = raw_call(&n, &body).await.unwrap();
        if response.status() == 429 {
            limited += 1;
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry_after >= 1);
        }
    }
    assert!(limited >= 10, "20 calls at once against 5/s: {limited} limited");
    assert_eq!(n.stats().await["http_faults"]["rate_limited_429"], limited);
    // /auth is not rate limited.
    n.login().await;
}

#[tokio::test]
async fn latency_delays_every_answer_by_about_that_much() {
    let n = National::start(Faults { latency_ms: 300, latency_jitter_ms: 100, ..Faults::default() }).await;
    let body =
        json!({"session": n.session, "madonvi": MADONVI, "service": "LayThuTuc", "maTTHC": "1.001193"});
    let mut took = Vec::new();
    for _ in 0..8 {
        let start = Instant::now();
        raw_call(&n, &body).await.unwrap();
        took.push(start.elapsed());
    }
    let min = *took.iter().min().unwrap();
    let max = *took.iter().max().unwrap();
    assert!(min >= Duration::from_millis(200), "never faster than latency - jitter: {took:?}");
    assert!(max - min >= Duration::from_millis(20), "jitter varies the delay: {took:?}");
}

#[tokio::test]
async fn an_outage_answers_503_to_every_call() {
    let n = national().await;
    n.put_faults(json!({"outage": true})).await;
    let response = raw_call(&n, &create_body(&n, vec![dossier(&code(1))])).await.unwrap();
    assert_eq!(response.status(), 503);
    let auth = n
        .http
        .post(n.url("/auth"))
        .json(&json!({"username": "dvc-sync", "password": "dvc-sync-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 503);
    n.put_faults(json!({"outage": false})).await;
    assert_eq!(n.stats().await["http_faults"]["outage_503"], 2);
}

#[tokio::test]
async fn a_dropped_answer_still_applies_the_call() {
    let n = national().await;
    n.put_faults(json!({"drop_after_apply_rate": 1.0})).await;
    let result = raw_call(&n, &create_body(&n, vec![dossier(&code(1))])).await;
    let error = match result {
        Ok(response) => response.text().await.expect_err("no answer may arrive"),
        Err(e) => e,
    };
    assert!(!error.is_timeout(), "the connection closes, it does not hang: {error}");
    n.put_faults(json!({"drop_after_apply_rate": 0.0})).await;
    let state = n.get(&format!("/_mock/state/{}", code(1))).await;
    assert_eq!(state.0, 200, "applied although unanswered");
    assert_eq!(n.stats().await["http_faults"]["dropped_after_apply"], 1);
}

#[tokio::test]
async fn fault_profile_reads_back_and_takes_partial_updates() {
    let n = national().await;
    let (_, before) = n.get("/_mock/faults").await;
    assert_eq!(before["max_items_per_call"], 100);
    assert_eq!(before["session_ttl_seconds"], 600.0);
    let response = n.put_faults(json!({"latency_ms": 5, "seed": 9})).await;
    assert_eq!(response.status(), 200);
    let (_, after) = n.get("/_mock/faults").await;
    assert_eq!((after["latency_ms"].as_u64(), after["seed"].as_u64()), (Some(5), Some(9)));
    assert_eq!(after["max_items_per_call"], 100, "untouched knobs keep their values");
    for bad in [json!({"no_such_knob": 1}), json!({"error_rate": 2.0}), json!({"outage": "yes"}), json!([1])]
    {
        assert_eq!(n.put_faults(bad.clone()).await.status(), 400, "{bad}");
    }
}

// ---- the other /_mock/ endpoints --------------------------------------------------------------

#[tokio::test]
async fn the_state_listing_pages_by_mahoso() {
    let n = national().await;
    let batch: Vec<Value> = (1..=25).rev().map(|i| dossier(&code(i))).collect();
    n.create(batch).await;
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (_, page) = n.get(&format!("/_mock/state?after={after}&limit=10")).await;
        let items = page["items"].as_array().unwrap();
        for item in items {
            seen.push(item["dossier"]["MaHoSo"].as_str().unwrap().to_owned());
        }
        if page["has_more"] != json!(true) {
            break;
        }
        after = seen.last().unwrap().clone();
    }
    let expected: Vec<String> = (1..=25).map(code).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn stats_count_calls_by_service_and_outcome() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    n.create(vec![dossier(&code(1))]).await;
    n.history(vec![entry(&code(1), "20260301090000", "4")]).await;
    let stats = n.stats().await;
    assert_eq!(stats["calls"]["DongBoHoSoMC"]["ok"], 1);
    assert_eq!(stats["calls"]["DongBoHoSoMC"]["error_3"], 1);
    assert_eq!(stats["calls"]["CapNhatTienDoHoSoMC"]["ok"], 1);
    assert_eq!(stats["calls"]["auth"]["ok"], 1);
    assert_eq!(stats["error_codes"]["3"], 1);
    assert_eq!(stats["items_applied"]["dossiers_created"], 1);
    assert_eq!(stats["sessions_issued"], 1);
    for key in ["duplicate_history_entries", "out_of_order_history_entries", "rejected_status_changes"] {
        assert_eq!(stats[key], 0, "{key} at the top level");
    }
    let (_, calls) = n.get("/_mock/calls").await;
    let services: Vec<&str> =
        calls["items"].as_array().unwrap().iter().map(|c| c["service"].as_str().unwrap()).collect();
    assert_eq!(services, ["auth", "DongBoHoSoMC", "DongBoHoSoMC", "CapNhatTienDoHoSoMC"]);
}

#[tokio::test]
async fn the_dstcode_header_is_accepted_and_recorded() {
    let n = national().await;
    let body =
        json!({"session": n.session, "madonvi": MADONVI, "service": "LayThuTuc", "maTTHC": "1.001193"});
    let response =
        n.http.post(n.url("/integration")).header("dstcode", "VXP-TEST").json(&body).send().await.unwrap();
    assert_eq!(code_of(&response.json().await.unwrap()), 0);
    assert_eq!(n.stats().await["dstcodes"]["VXP-TEST"], 1);
}

#[tokio::test]
async fn reset_forgets_everything() {
    let n = national().await;
    n.create(vec![dossier(&code(1))]).await;
    n.post_raw("/_mock/reset", json!({})).await;
    assert_eq!(n.get(&format!("/_mock/state/{}", code(1))).await.0, 404);
    assert_eq!(n.stats().await["dossiers"], 0);
    assert_eq!(code_of(&n.create(vec![dossier(&code(1))]).await), -1, "sessions are forgotten too");
}

/// 3.3: submitted online, and where the dossier lists a result document, a link to it.
#[tokio::test]
async fn the_report_counts_online_only_with_a_link_to_a_listed_result() {
    let n = national().await;
    let online = |i: u32, results: Value| {
        let d = with(dossier(&code(i)), "KenhThucHien", json!("2"));
        if results.is_null() { d } else { with(d, "DanhSachGiayToKetQua", results) }
    };
    let dossiers = vec![
        online(1, Value::Null),
        online(
            2,
            json!([{"TenGiayTo": "Giấy khai sinh", "DuongDanTepTinKetQua": "https://example.vn/kq/2"}]),
        ),
        online(3, json!([{"TenGiayTo": "Giấy khai sinh", "DuongDanTepTinKetQua": ""}])),
    ];
    assert_eq!(code_of(&n.create(dossiers).await), 0);
    let (_, report) = n.get("/_mock/report?from=2026-03-01&to=2026-03-31").await;
    let p = &report["province"]["3.3"];
    assert_eq!((p["numerator"].as_u64(), p["denominator"].as_u64()), (Some(2), Some(3)), "{report}");
}

#[tokio::test]
async fn the_report_computes_the_766_indicators_from_what_it_holds() {
    let n = national().await;
    // Received 2026-03-01 08:30, due 2026-03-05 17:00 (common::dossier).
    let paid = with(dossier(&code(1)), "DuocThanhToanTrucTuyen", json!("1"));
    let paid = with(paid, "DanhSachLePhi", json!([{"Gia": "8000"}]));
    let paid =
        with(paid, "TaiLieuNop", json!([{"DuongDanTaiTepTin": "https://example.vn/1", "DuocSoHoa": "1"}]));
    let paid = with(paid, "DanhSachGiayToKetQua", json!([{"DuongDanTepTinKetQua": "https://example.vn/kq"}]));
    let free =
        with(with(dossier(&code(2)), "DanhSachLePhi", json!([{"Gia": "0"}])), "KenhThucHien", json!("1"));
    let no_due = with(dossier(&code(3)), "NgayHenTra", json!(""));
    assert_eq!(code_of(&n.create(vec![paid, free, no_due]).await), 0);
    // 1: finished on time after a supplement request; 2: two requests, no end: late;
    // 3: no NgayHenTra, Đăng ký khai sinh takes 1 day: finished after two, late.
    let steps = [
        (1, "20260301083000", "2"),
        (1, "20260302080000", "5"),
        (1, "20260304080000", "4"),
        (1, "20260306080000", "9"),
        (2, "20260301083000", "2"),
        (2, "20260302080000", "5"),
        (2, "20260302090000", "4"),
        (2, "20260302100000", "5"),
        (3, "20260301083000", "2"),
        (3, "20260303090000", "9"),
    ];
    let entries = steps.iter().map(|(i, at, st)| entry(&code(*i), at, st)).collect();
    assert_eq!(code_of(&n.history(entries).await), 0);
    let (status, report) = n.get("/_mock/report?from=2026-03-01&to=2026-03-31").await;
    assert_eq!(status, 200, "{report}");
    let p = &report["province"];
    let figure = |id: &str| (p[id]["numerator"].as_u64().unwrap(), p[id]["denominator"].as_u64().unwrap());
    assert_eq!(figure("1.4"), (3, 3));
    assert_eq!(figure("2.1"), (1, 3), "{report}");
    assert_eq!(figure("3.3"), (2, 3));
    assert_eq!(figure("3.6"), (1, 1), "a fee of 0 is no fee");
    assert_eq!(figure("4.1"), (1, 2));
    assert_eq!(figure("4.2"), (1, 3));
    assert_eq!(figure("4.3"), (1, 3));
    assert_eq!(p["2.1"]["ratio"], 0.33);
    assert_eq!(p["3.3"]["points_share"], 1.0);
    assert_eq!(report["by_agency"]["Sở Tư pháp"], *p);
    assert_eq!(report["by_unit"]["000.00.00.H58"], *p);
    // At the end of the 1st, all three are open within term; at the end of the 2nd, 1 waits
    // for the applicant (the request is its end: on time), 2 has two requests (late), 3 is
    // open past its one day (late). Nothing after the period is read.
    let (_, first) = n.get("/_mock/report?from=2026-03-01&to=2026-03-01").await;
    assert_eq!(first["province"]["2.1"]["numerator"], 3, "{first}");
    let (_, second) = n.get("/_mock/report?from=2026-03-01&to=2026-03-02").await;
    assert_eq!(second["province"]["2.1"]["numerator"], 1, "{second}");
    // April: nothing received, so N/A; 2 is still open, carried over into 2.1.
    let (_, april) = n.get("/_mock/report?from=2026-04-01&to=2026-04-30").await;
    assert_eq!(april["province"]["3.3"]["ratio"], "N/A", "{april}");
    assert_eq!(april["province"]["3.3"]["points_share"], "N/A");
    assert_eq!(
        (april["province"]["2.1"]["numerator"].as_u64(), april["province"]["2.1"]["denominator"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(n.get("/_mock/report?from=2026-02-30&to=2026-03-01").await.0, 400);
}

// ---- the command line -------------------------------------------------------------------------

#[tokio::test]
async fn the_cli_mock_prints_its_bound_address_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvc-sync"))
        .args(["mock", "national", "--listen", "127.0.0.1:0", "--username", "u", "--password", "p"])
        .args(["--madonvi", "000.00.00.H01", "--error-rate", "0", "--rate-limit-per-second", "0"])
        .args(["--latency-ms", "0", "--latency-jitter-ms", "0", "--drop-after-apply-rate", "0"])
        .args(["--session-ttl-seconds", "60", "--max-items-per-call", "2", "--seed", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
    let http = client();
    let auth: Value = http
        .post(format!("http://{addr}/auth"))
        .json(&json!({"username": "u", "password": "p"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code_of(&auth), 0);
    let faults: Value =
        http.get(format!("http://{addr}/_mock/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!((faults["max_items_per_call"].as_u64(), faults["seed"].as_u64()), (Some(2), Some(3)));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_cli_mock_accepts_the_outage_flag() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvc-sync"))
        .args(["mock", "national", "--listen", "127.0.0.1:0", "--outage"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines.next_line().await.unwrap().unwrap();
    let status = client()
        .post(format!("http://{}/auth", addr.trim()))
        .json(&json!({"username": "dvc-sync", "password": "dvc-sync-secret"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);
    child.kill().await.unwrap();
}
