//! A simulated dossier's whole life, planned deterministically from (seed, index), and its
//! record rendered at any step exactly as the provincial portal would serve it, with the
//! mess and defects the dossier was given.
//!
//! Nothing here is stored per dossier but the [`Traits`]: a record is re-planned and
//! re-rendered whenever it is served, so that a million dossiers fit in memory.

use jiff::{
    Timestamp,
    civil::{Date, DateTime},
};
use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;

use crate::domain::dates::{VN_OFFSET, format_national, format_rfc3339_vn};
use crate::mock::catalogue::{AGENCIES, Agency, PROCEDURES, Procedure, UNKNOWN_PROCEDURE_CODES};

/// Dossiers received per simulated day, across all agencies (sets the MaHoSo sequence range).
pub(crate) const PER_DAY: u32 = 2_000;

/// A defect that makes the daemon quarantine the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    NoMaHoSo,
    BadDate,
    UnknownStatus,
    MalformedMaHoSo,
}

impl Defect {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Defect::NoMaHoSo => "no MaHoSo",
            Defect::BadDate => "unparseable date",
            Defect::UnknownStatus => "local status not in the table",
            Defect::MalformedMaHoSo => "malformed MaHoSo",
        }
    }
}

/// Kinds of mess a record may carry; the daemon must repair each.
pub mod mess {
    pub(crate) const NFD: u8 = 1;
    pub(crate) const NUMBERS: u8 = 2;
    pub(crate) const OVERLONG: u8 = 4;
    pub(crate) const RFC3339: u8 = 8;
    pub(crate) const ALL: [(u8, &str); 4] =
        [(NFD, "nfd"), (NUMBERS, "numbers"), (OVERLONG, "overlong"), (RFC3339, "rfc3339")];
}

/// What a dossier was given at creation; stored, so that changing a rate at run time
/// changes only dossiers created afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    pub defect: Option<Defect>,
    pub mess: u8,
    pub unknown_procedure: bool,
    /// TenTTHC, MaLinhVuc, TenLinhVuc absent: the daemon fills them from LayThuTuc.
    pub omit_catalogue: bool,
}

/// Shares of dossiers given each kind of trouble.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub bad_record: f64,
    pub messy: f64,
    pub unknown_procedure: f64,
}

fn rng_for(seed: u64, index: u32, salt: u64) -> fastrand::Rng {
    // SplitMix64-style mixing so that neighbouring indices get unrelated streams.
    let mut z = seed ^ (u64::from(index) << 20) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    fastrand::Rng::with_seed(z ^ (z >> 31))
}

impl Traits {
    pub(crate) fn draw(seed: u64, index: u32, rates: Rates) -> Traits {
        let mut rng = rng_for(seed, index, 1);
        let defect = (rng.f64() < rates.bad_record).then(|| match rng.u8(0..4) {
            0 => Defect::NoMaHoSo,
            1 => Defect::BadDate,
            2 => Defect::UnknownStatus,
            _ => Defect::MalformedMaHoSo,
        });
        let mess = if rng.f64() < rates.messy {
            // At least one kind, sometimes several.
            let mut m = 1 << rng.u8(0..4);
            if rng.bool() {
                m |= 1 << rng.u8(0..4);
            }
            m
        } else {
            0
        };
        Traits {
            defect,
            mess,
            unknown_procedure: rng.f64() < rates.unknown_procedure,
            omit_catalogue: rng.bool(),
        }
    }

    pub(crate) fn mess_names(&self) -> Vec<&'static str> {
        mess::ALL.iter().filter(|(bit, _)| self.mess & bit != 0).map(|(_, n)| *n).collect()
    }
}

/// One step of a dossier's life: a local status change with its history entry.
#[derive(Debug, Clone)]
pub struct Step {
    pub status: &'static str,
    pub at: DateTime,
    pub officer: &'static str,
    pub title: &'static str,
    pub department: &'static str,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct Life {
    pub mahoso: String,
    pub procedure_code: &'static str,
    pub procedure: Option<&'static Procedure>,
    pub agency: &'static Agency,
    pub channel: u8,
    pub applicant_type: u8,
    pub applicant: String,
    pub id_number: String,
    pub email: String,
    pub phone: String,
    pub summary: String,
    pub received: DateTime,
    pub due: DateTime,
    pub delivery: u8,
    pub steps: Vec<Step>,
    pub scoring: Scoring,
}

/// What a dossier gives the 766 indicators (domain::scoring), drawn apart from the rest of its
/// life so that the older fields of every seed stay as they were.
#[derive(Debug, Clone)]
pub struct Scoring {
    /// NgayHenTra given (a few systems leave it empty: the procedure's duration decides).
    pub due_given: bool,
    /// NgayNopHoSo given.
    pub submitted_given: bool,
    /// DuocThanhToanTrucTuyen, when given.
    pub paid_online: Option<u8>,
    /// DanhSachLePhi: name and amount of each fee (an amount of 0 is a free procedure).
    pub fees: Vec<(&'static str, u32)>,
    /// TaiLieuNop: DuocSoHoa, DuocTaiSuDung, DuocLayTuKhoDMQG of each document.
    pub documents: Vec<(u8, u8, u8)>,
    /// HoSoCoThanhPhanSoHoa, when given.
    pub digitised: Option<u8>,
    /// Once finished: a result document, and whether it links to the electronic result.
    pub result: Option<bool>,
}

const FEES: &[&str] = &["Lệ phí giải quyết thủ tục", "Phí thẩm định hồ sơ", "Phí cung cấp thông tin"];
const DOCUMENTS: &[&str] =
    &["Tờ khai theo mẫu", "Bản sao giấy tờ tùy thân", "Giấy tờ chứng minh nơi cư trú", "Bản vẽ hiện trạng"];

/// Shares as a province reports them: about half online, most fees paid online when filed
/// online, a third of the documents digitised, electronic results for most finished dossiers.
fn draw_scoring(seed: u64, index: u32, channel: u8) -> Scoring {
    let mut rng = rng_for(seed, index, 3);
    let fees: Vec<(&'static str, u32)> = match rng.u8(0..10) {
        0..=3 => Vec::new(),
        4 => vec![(FEES[0], 0)],
        5..=8 => vec![(FEES[rng.usize(..FEES.len())], rng.u32(1..50) * 10_000)],
        _ => vec![(FEES[0], rng.u32(1..20) * 10_000), (FEES[1], rng.u32(1..20) * 5_000)],
    };
    let charged = fees.iter().any(|(_, amount)| *amount > 0);
    let paid_online = if rng.u8(0..10) == 0 {
        None
    } else if charged && rng.f64() < if channel == 2 { 0.7 } else { 0.1 } {
        Some(rng.u8(1..3))
    } else {
        Some(0)
    };
    let documents: Vec<(u8, u8, u8)> = if channel != 2 && rng.u8(0..4) == 0 {
        Vec::new()
    } else {
        (0..rng.usize(1..4))
            .map(|_| (u8::from(rng.f64() < 0.35), rng.u8(0..3), u8::from(rng.f64() < 0.15)))
            .collect()
    };
    let any_digitised = documents.iter().any(|d| d.0 == 1);
    let digitised = match rng.u8(0..10) {
        0..=1 => None,
        2 => Some(u8::from(!any_digitised)),
        _ => Some(u8::from(any_digitised)),
    };
    Scoring {
        due_given: rng.u8(0..25) != 0,
        submitted_given: rng.u8(0..5) != 0,
        paid_online,
        fees,
        documents,
        digitised,
        result: (rng.u8(0..10) != 0).then(|| rng.f64() < 0.75),
    }
}

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô",
    "Dương", "Lý",
];
const MIDDLE: &[&str] = &["Văn", "Thị", "Hữu", "Minh", "Ngọc", "Thanh", "Đức", "Thị Thu", "Quốc", "Hoài"];
const GIVEN: &[&str] = &[
    "An",
    "Bình",
    "Cường",
    "Dũng",
    "Hà",
    "Hải",
    "Hạnh",
    "Hoa",
    "Hùng",
    "Hương",
    "Khánh",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Minh",
    "Nam",
    "Nga",
    "Phương",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Vy",
    "Yến",
    "Đạt",
    "Ánh",
    "Ngọc Ánh",
];
const BUSINESS: &[&str] = &[
    "Công ty TNHH Thương mại Dịch vụ Tân Phát",
    "Công ty Cổ phần Xây dựng Hòa Bình Tây",
    "Công ty TNHH Nông sản Sông Vàm",
    "Hộ kinh doanh Bánh tráng Trảng Bàng",
    "Công ty TNHH Một thành viên Cơ khí Đồng Tiến",
    "Hợp tác xã Nông nghiệp Phước Minh",
];
const OFFICERS: &[&str] = &[
    "Nguyễn Thị Mỹ Linh",
    "Trần Văn Hậu",
    "Lê Hoàng Phúc",
    "Phạm Thị Ngọc Hân",
    "Võ Minh Trí",
    "Đặng Thị Kim Chi",
    "Huỳnh Quốc Bảo",
    "Bùi Thị Thanh Thúy",
];
/// Over 50 characters: the officer field limit of the national API.
const LONG_OFFICER: &str = "Nguyễn Thị Minh Khai - Phó Trưởng phòng Hành chính - Tư pháp kiêm Tổ trưởng";
const TITLES: &[&str] =
    &["Chuyên viên", "Cán bộ một cửa", "Trưởng phòng", "Phó Giám đốc", "Công chức Tư pháp - Hộ tịch"];
const DEPARTMENTS: &[&str] = &[
    "Bộ phận Tiếp nhận và Trả kết quả",
    "Phòng Hành chính - Tư pháp",
    "Phòng chuyên môn",
    "Văn phòng Đăng ký đất đai",
    "Ban Giám đốc",
];

/// An amount as the record carries it: a string, or a number in a messy record.
fn code_amount(amount: u32, code: &dyn Fn(u8) -> Value) -> Value {
    match code(0) {
        Value::String(_) => Value::String(amount.to_string()),
        _ => json!(amount),
    }
}

fn pick<'a, T: ?Sized>(rng: &mut fastrand::Rng, items: &'a [&'a T]) -> &'a T {
    items[rng.usize(..items.len())]
}

/// Plans dossier `index`: who files what, with whom, and every status it will pass through.
pub fn plan(seed: u64, base_day: Date, index: u32, traits: &Traits, province: &str) -> Life {
    let mut rng = rng_for(seed, index, 2);
    let agency = &AGENCIES[rng.usize(..AGENCIES.len())];
    let (procedure_code, procedure) = if traits.unknown_procedure {
        (UNKNOWN_PROCEDURE_CODES[rng.usize(..UNKNOWN_PROCEDURE_CODES.len())], None)
    } else {
        let p = &PROCEDURES[rng.usize(..PROCEDURES.len())];
        (p.code, Some(p))
    };
    let day = base_day.checked_add(jiff::Span::new().days(i64::from(index / PER_DAY))).unwrap_or(base_day);
    let sequence = index % PER_DAY + 1;
    // The agency's code in the system's province (H58's agencies under H20 for a successor).
    let unit = agency.code.rsplit_once('.').map_or(agency.code, |(prefix, _)| prefix);
    let mahoso = format!(
        "{unit}.{province}-{:02}{:02}{:02}-{:0width$}",
        day.year() % 100,
        day.month(),
        day.day(),
        sequence,
        width = agency.sequence_width
    );
    let channel = match rng.u8(0..10) {
        0..=4 => 2,
        5..=8 => 1,
        _ => 3,
    };
    let applicant_type = match rng.u8(0..20) {
        0..=14 => 1,
        15..=17 => 2,
        18 => 3,
        _ => 4,
    };
    let applicant = if applicant_type == 1 {
        format!("{} {} {}", pick(&mut rng, FAMILY), pick(&mut rng, MIDDLE), pick(&mut rng, GIVEN))
    } else {
        pick(&mut rng, BUSINESS).to_owned()
    };
    let id_number = if applicant_type == 1 {
        format!("0{:02}{:09}", rng.u32(1..97), rng.u32(0..1_000_000_000))
    } else {
        format!("39{:08}", rng.u32(0..100_000_000))
    };
    let email = if rng.bool() { format!("hoso{index}@example.vn") } else { String::new() };
    let phone = format!("09{:08}", rng.u32(0..100_000_000));
    let procedure_name = procedure.map_or("Thủ tục đặc thù của tỉnh", |p| p.name);
    let summary = format!("{procedure_name} - {applicant}");
    let received = day
        .to_datetime(jiff::civil::time(7, 30, 0, 0))
        .checked_add(jiff::Span::new().minutes(rng.i64(0..570)).seconds(rng.i64(0..60)))
        .unwrap_or_else(|_| day.to_datetime(jiff::civil::Time::midnight()));
    let days = procedure.map_or(10, |p| p.days);
    let due = received.checked_add(jiff::Span::new().days(days)).unwrap_or(received);

    // The statuses, in the local vocabulary (see the default status_map).
    let mut statuses: Vec<&'static str> = Vec::with_capacity(10);
    if channel == 2 {
        statuses.push("receiving");
    }
    statuses.push("new");
    let roll = rng.f64();
    if roll < 0.07 {
        statuses.push("denied");
    } else {
        statuses.push("processing");
        // Transferred between departments: more steps in the same status.
        let transfers = usize::from(rng.u8(0..3));
        statuses.extend(std::iter::repeat_n("processing", transfers));
        if rng.f64() < 0.3 {
            statuses.extend(["waiting", "processing"]);
        }
        if rng.f64() < 0.25 {
            statuses.extend(["paying", "processing"]);
        }
        let end = rng.f64();
        if end < 0.04 {
            statuses.push("cancelled");
        } else if end < 0.08 {
            statuses.extend(["unresolved", "done"]);
        } else {
            statuses.extend(["releasing", "done"]);
        }
    }

    // Times: on-time dossiers finish before the due date, about one in seven after it.
    let late = rng.f64() < 0.15;
    let window_secs = (days * 86_400 * 9 / 10).max(3_600);
    let n = statuses.len() as i64;
    let mut steps = Vec::with_capacity(statuses.len());
    let mut at = received;
    for (i, status) in statuses.iter().enumerate() {
        if i > 0 {
            let share = window_secs / n;
            let mut advance = share / 2 + rng.i64(0..share.max(2));
            if late && *status == "releasing" {
                advance += days * 86_400 + rng.i64(3_600..5 * 86_400);
            }
            at = at.checked_add(jiff::Span::new().seconds(advance.max(60))).unwrap_or(at);
        }
        let content = match *status {
            "receiving" => "Công dân nộp hồ sơ trực tuyến".to_owned(),
            "new" => "Tiếp nhận hồ sơ, hồ sơ đầy đủ hợp lệ".to_owned(),
            "denied" => "Từ chối tiếp nhận: hồ sơ không thuộc thẩm quyền giải quyết".to_owned(),
            "processing" if i > 0 && statuses[i - 1] == "processing" => {
                format!("Chuyển {} thẩm định", pick(&mut rng, DEPARTMENTS))
            }
            "processing" => "Chuyển xử lý hồ sơ".to_owned(),
            "waiting" => "Yêu cầu bổ sung: bản sao giấy tờ tùy thân có chứng thực".to_owned(),
            "paying" => format!("Thông báo nộp phí, lệ phí: {} đồng", rng.u32(1..50) * 10_000),
            "cancelled" => "Công dân có đơn xin rút hồ sơ".to_owned(),
            "unresolved" => "Dừng xử lý: công dân không bổ sung hồ sơ đúng hạn".to_owned(),
            "releasing" => "Đã xử lý xong, chuyển Bộ phận Trả kết quả".to_owned(),
            _ => "Đã trả kết quả cho công dân".to_owned(),
        };
        steps.push(Step {
            status,
            at,
            officer: pick(&mut rng, OFFICERS),
            title: pick(&mut rng, TITLES),
            department: pick(&mut rng, DEPARTMENTS),
            content,
        });
    }
    Life {
        mahoso,
        procedure_code,
        procedure,
        agency,
        channel,
        applicant_type,
        applicant,
        id_number,
        email,
        phone,
        summary,
        received,
        due,
        delivery: u8::from(rng.u8(0..4) == 0),
        steps,
        scoring: draw_scoring(seed, index, channel),
    }
}

impl Life {
    /// The 766 fields of the record after the steps `done`.
    fn render_scoring(
        &self,
        index: u32,
        done: &[Step],
        r: &mut Map<String, Value>,
        text: &dyn Fn(&str) -> Value,
        code: &dyn Fn(u8) -> Value,
        date: &dyn Fn(DateTime) -> Value,
    ) {
        let sc = &self.scoring;
        if sc.submitted_given {
            r.insert("NgayNopHoSo".into(), date(done[0].at));
        }
        if let Some(paid) = sc.paid_online {
            r.insert("DuocThanhToanTrucTuyen".into(), code(paid));
        }
        if let Some(digitised) = sc.digitised {
            r.insert("HoSoCoThanhPhanSoHoa".into(), code(digitised));
        }
        let fees: Vec<Value> = sc
            .fees
            .iter()
            .enumerate()
            .map(|(i, (name, amount))| {
                json!({"TenPhiLePhi": text(name), "MaPhiLePhi": format!("LP{:02}", i + 1),
                       "HinhThucThu": "1", "Gia": code_amount(*amount, code), "LoaiPhiLePhi": "1"})
            })
            .collect();
        r.insert("DanhSachLePhi".into(), Value::Array(fees));
        let documents: Vec<Value> = sc
            .documents
            .iter()
            .enumerate()
            .map(|(i, (digitised, reused, from_store))| {
                json!({"TepDinhKemId": format!("{index}-{}", i + 1), "TenTepDinhKem": text(DOCUMENTS[i % DOCUMENTS.len()]),
                       "MaThanhPhanHoSo": format!("TP{}", i + 1),
                       "DuongDanTaiTepTin": format!("https://motcua.example.vn/tep/{index}/{}", i + 1),
                       "DuocSoHoa": code(*digitised), "DuocTaiSuDung": code(*reused),
                       "DuocLayTuKhoDMQG": code(*from_store)})
            })
            .collect();
        r.insert("TaiLieuNop".into(), Value::Array(documents));
        let finished = done.iter().any(|s| matches!(s.status, "releasing" | "done"));
        if let (true, Some(linked)) = (finished, sc.result) {
            let link =
                if linked { format!("https://motcua.example.vn/ketqua/{index}") } else { String::new() };
            r.insert(
                "DanhSachGiayToKetQua".into(),
                json!([{"TenGiayTo": text("Kết quả giải quyết thủ tục hành chính"), "MaThanhPhanHoSo": "KQ1",
                        "GiayToId": format!("KQ-{index}"), "DuongDanTepTinKetQua": link, "MaGiayToKetQua": ""}]),
            );
        }
    }

    /// The local statuses of the first `steps` steps.
    pub fn statuses(&self, steps: usize) -> Vec<String> {
        self.steps.iter().take(steps).map(|s| s.status.to_owned()).collect()
    }

    /// The MaHoSo as the record carries it (absent or malformed for those defects).
    pub(crate) fn listed_mahoso(&self, index: u32, traits: &Traits) -> Option<String> {
        match traits.defect {
            Some(Defect::NoMaHoSo) => None,
            Some(Defect::MalformedMaHoSo) if index.is_multiple_of(2) => Some(self.mahoso.replace('-', "/")),
            Some(Defect::MalformedMaHoSo) => {
                // A day that does not exist: the 31st of February.
                let mut parts = self.mahoso.splitn(3, '-');
                let agency = parts.next().unwrap_or_default();
                let date = parts.next().unwrap_or_default();
                let seq = parts.next().unwrap_or_default();
                Some(format!("{agency}-{}0231-{seq}", &date[..2.min(date.len())]))
            }
            _ => Some(self.mahoso.clone()),
        }
    }

    /// The record after `steps` steps, as the portal serves it.
    pub fn render(
        &self,
        index: u32,
        traits: &Traits,
        steps: usize,
        updated_at: Timestamp,
        version: u32,
    ) -> Value {
        let steps = steps.clamp(1, self.steps.len());
        let done = &self.steps[..steps];
        let nfd = traits.mess & mess::NFD != 0;
        let numbers = traits.mess & mess::NUMBERS != 0;
        let overlong = traits.mess & mess::OVERLONG != 0;
        let rfc3339 = traits.mess & mess::RFC3339 != 0;
        let text = |s: &str| -> Value {
            if nfd { Value::String(s.nfd().collect()) } else { Value::String(s.to_owned()) }
        };
        let code = |c: u8| -> Value { if numbers { json!(c) } else { Value::String(c.to_string()) } };
        let date = |dt: DateTime| -> Value {
            if rfc3339 {
                let ts = VN_OFFSET.to_timestamp(dt).unwrap_or(Timestamp::UNIX_EPOCH);
                // Alternate between UTC and the local offset, as different vendor modules do.
                if index.is_multiple_of(2) {
                    Value::String(ts.to_string())
                } else {
                    Value::String(format_rfc3339_vn(ts))
                }
            } else {
                Value::String(format_national(dt))
            }
        };
        let mut r = Map::new();
        if let Some(mahoso) = self.listed_mahoso(index, traits) {
            r.insert("MaHoSo".into(), Value::String(mahoso));
        }
        r.insert("MaTTHC".into(), Value::String(self.procedure_code.into()));
        if !traits.omit_catalogue {
            let (name, field_code, field_name) = self
                .procedure
                .map_or(("Thủ tục đặc thù của tỉnh", "G09-KHAC", "Lĩnh vực khác"), |p| {
                    (p.name, p.field_code, p.field_name)
                });
            r.insert("TenTTHC".into(), text(name));
            r.insert("MaLinhVuc".into(), Value::String(field_code.into()));
            r.insert("TenLinhVuc".into(), text(field_name));
        }
        r.insert("KenhThucHien".into(), code(self.channel));
        r.insert("LoaiDoiTuong".into(), code(self.applicant_type));
        r.insert("ChuHoSo".into(), text(&self.applicant));
        r.insert(
            "SoGiayToChuHoSo".into(),
            if numbers {
                json!(self.id_number.parse::<u64>().unwrap_or(0))
            } else {
                Value::String(self.id_number.clone())
            },
        );
        r.insert("Email".into(), Value::String(self.email.clone()));
        r.insert(
            "SoDienThoai".into(),
            if numbers {
                json!(self.phone.parse::<u64>().unwrap_or(0))
            } else {
                Value::String(self.phone.clone())
            },
        );
        let summary = if overlong {
            // Well over 1000 characters, with multi-byte letters at every possible cut.
            let mut s = self.summary.clone();
            while s.chars().count() <= 1_050 {
                s.push_str("; kèm theo bản sao giấy tờ chứng minh nơi cư trú hợp pháp");
            }
            s
        } else {
            self.summary.clone()
        };
        r.insert("TrichYeuHoSo".into(), text(&summary));
        r.insert(
            "NgayTiepNhan".into(),
            if traits.defect == Some(Defect::BadDate) {
                Value::String(self.received.strftime("%d/%m/%Y %H:%M").to_string())
            } else {
                date(self.received)
            },
        );
        r.insert(
            "NgayHenTra".into(),
            if self.scoring.due_given { date(self.due) } else { Value::String(String::new()) },
        );
        let status = done[steps - 1].status;
        r.insert(
            "TrangThai".into(),
            Value::String(if traits.defect == Some(Defect::UnknownStatus) {
                "dang_tham_dinh".into()
            } else {
                status.into()
            }),
        );
        let finished_at = done.iter().find(|s| matches!(s.status, "releasing" | "unresolved")).map(|s| s.at);
        let returned_at = done.iter().find(|s| s.status == "done").map(|s| s.at);
        r.insert("NgayTra".into(), returned_at.map_or(Value::String(String::new()), date));
        r.insert(
            "NgayKetThucXuLy".into(),
            finished_at.or(returned_at).map_or(Value::String(String::new()), date),
        );
        r.insert("HinhThuc".into(), code(self.delivery));
        r.insert("DonViXuLy".into(), text(self.agency.name));
        self.render_scoring(index, done, &mut r, &text, &code, &date);
        let history: Vec<Value> = done
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut e = Map::new();
                if let Some(mahoso) = self.listed_mahoso(index, traits) {
                    e.insert("MaHoSo".into(), Value::String(mahoso));
                }
                let officer = if overlong && i == 0 { LONG_OFFICER } else { step.officer };
                e.insert("NguoiXuLy".into(), text(officer));
                e.insert("ChucDanh".into(), text(step.title));
                e.insert("PhongBanXuLy".into(), text(step.department));
                e.insert("ThoiDiemXuLy".into(), date(step.at));
                let content = if overlong && i == 0 {
                    let mut s = step.content.clone();
                    while s.chars().count() <= 2_050 {
                        s.push_str(". Đã kiểm tra thành phần hồ sơ theo quy định hiện hành");
                    }
                    s
                } else {
                    step.content.clone()
                };
                e.insert("NoiDungXuLy".into(), text(&content));
                e.insert("TrangThai".into(), Value::String(step.status.into()));
                e.insert("NgayBatDau".into(), date(step.at));
                e.insert("NgayKetThucTheoQuyDinh".into(), date(self.due));
                Value::Object(e)
            })
            .collect();
        r.insert("QuaTrinhXuLy".into(), Value::Array(history));
        r.insert("updated_at".into(), Value::String(format_rfc3339_vn(updated_at)));
        r.insert("version".into(), json!(version));
        Value::Object(r)
    }
}
