//! The fields the Quyết định 766 indicators read (the national API, "The fields the 766
//! indicators read"): one table for the daemon, which carries and validates them, and the
//! mock, which validates them again. Every one is optional; codes are strings.

/// A field inside one of the lists, or one of the scalar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// One of these codes.
    Code(&'static [&'static str]),
    /// An amount of money: digits, with at most one decimal point.
    Amount,
    /// A national date (`yyyyMMddHHmmss`).
    Date,
}

pub(crate) const ZERO_ONE: &[&str] = &["0", "1"];
/// DuocThanhToanTrucTuyen: 0 no, 1 on the national portal, 2 through the province's gateway.
pub(crate) const PAID_ONLINE: &[&str] = &["0", "1", "2"];
/// DuocTaiSuDung: 0, 1 or 2.
pub(crate) const REUSED: &[&str] = &["0", "1", "2"];

/// The scalar 766 fields of a dossier.
pub(crate) const SCALARS: &[(&str, Kind)] = &[
    ("DuocThanhToanTrucTuyen", Kind::Code(PAID_ONLINE)),
    ("HoSoCoThanhPhanSoHoa", Kind::Code(ZERO_ONE)),
    ("NgayNopHoSo", Kind::Date),
];

/// DanhSachLePhi's items: the fees.
pub(crate) const FEES: &[(&str, Kind)] = &[
    ("TenPhiLePhi", Kind::Text),
    ("MaPhiLePhi", Kind::Text),
    ("HinhThucThu", Kind::Text),
    ("Gia", Kind::Amount),
    ("LoaiPhiLePhi", Kind::Text),
];

/// TaiLieuNop's items: the documents submitted.
pub(crate) const DOCUMENTS: &[(&str, Kind)] = &[
    ("TepDinhKemId", Kind::Text),
    ("TenTepDinhKem", Kind::Text),
    ("MaThanhPhanHoSo", Kind::Text),
    ("DuongDanTaiTepTin", Kind::Text),
    ("DuocSoHoa", Kind::Code(ZERO_ONE)),
    ("DuocTaiSuDung", Kind::Code(REUSED)),
    ("DuocLayTuKhoDMQG", Kind::Code(ZERO_ONE)),
];

/// DanhSachGiayToKetQua's items: the result documents.
pub(crate) const RESULTS: &[(&str, Kind)] = &[
    ("TenGiayTo", Kind::Text),
    ("MaThanhPhanHoSo", Kind::Text),
    ("GiayToId", Kind::Text),
    ("DuongDanTepTinKetQua", Kind::Text),
    ("MaGiayToKetQua", Kind::Text),
];

/// The lists of a dossier, each with the fields its items may carry.
pub(crate) const LISTS: &[(&str, &[(&str, Kind)])] =
    &[("DanhSachLePhi", FEES), ("TaiLieuNop", DOCUMENTS), ("DanhSachGiayToKetQua", RESULTS)];

/// Items a list may hold (this project's limit, the mock's as well: the real one is
/// unpublished). A dossier with more is quarantined rather than cut, since a cut list would
/// silently drop a document the indicators count.
pub(crate) const MAX_LIST_ITEMS: usize = 100;

/// Whether `s` is an amount: digits, with at most one decimal point between digits.
pub(crate) fn is_amount(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && parts.next().is_none_or(digits)
}

/// Whether an amount is non-zero (`"0"`, `"0.00"` and `""` are zero).
pub(crate) fn is_nonzero_amount(s: &str) -> bool {
    s.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// A procedure's maximum processing time, as `LayThuTuc` gives it
/// (`CACHTHUCTHUCHIEN[].THOIGIAN[].THOIGIANGIAIQUYET` with `DONVITINH`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxDuration {
    pub amount: f64,
    pub unit: DurationUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    Hours,
    Days,
    /// Monday to Friday (public holidays are not known to dvc-sync: see docs/operations.md).
    WorkingDays,
}

impl DurationUnit {
    /// The unit of a `DONVITINH` text ("Giờ", "Ngày", "Ngày làm việc"), if one of these.
    pub fn parse(s: &str) -> Option<DurationUnit> {
        let s = crate::domain::text::to_nfc(s.trim()).to_lowercase();
        match s.as_str() {
            "giờ" | "giờ làm việc" => Some(DurationUnit::Hours),
            "ngày" => Some(DurationUnit::Days),
            "ngày làm việc" => Some(DurationUnit::WorkingDays),
            _ => None,
        }
    }

    /// The form the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            DurationUnit::Hours => "hours",
            DurationUnit::Days => "days",
            DurationUnit::WorkingDays => "working_days",
        }
    }

    pub(crate) fn from_stored(s: &str) -> Option<DurationUnit> {
        [DurationUnit::Hours, DurationUnit::Days, DurationUnit::WorkingDays]
            .into_iter()
            .find(|u| u.as_str() == s)
    }
}

impl MaxDuration {
    /// The longest duration a `LayThuTuc` procedure gives (over its channels and times), if
    /// any is in a unit dvc-sync reads. Durations in different units are compared as if a
    /// working day were a day.
    pub fn of_procedure(procedure: &serde_json::Value) -> Option<MaxDuration> {
        let hours = |d: &MaxDuration| match d.unit {
            DurationUnit::Hours => d.amount,
            DurationUnit::Days | DurationUnit::WorkingDays => d.amount * 24.0,
        };
        procedure
            .get("CACHTHUCTHUCHIEN")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("THOIGIAN")?.as_array())
            .flatten()
            .filter_map(|t| {
                let amount = match t.get("THOIGIANGIAIQUYET")? {
                    serde_json::Value::String(s) => s.trim().replace(',', ".").parse::<f64>().ok()?,
                    serde_json::Value::Number(n) => n.as_f64()?,
                    _ => return None,
                };
                let unit = DurationUnit::parse(t.get("DONVITINH")?.as_str()?)?;
                // Ten years at most: anything longer is not a processing time (and would not fit
                // the date arithmetic).
                let d = MaxDuration { amount, unit };
                (amount.is_finite() && amount > 0.0 && hours(&d) <= 10.0 * 366.0 * 24.0).then_some(d)
            })
            .max_by(|a, b| hours(a).total_cmp(&hours(b)))
    }

    /// The latest on-time end for a dossier received at `received`, before the supplement
    /// time is added back. Working days skip the calendar's weekends and holidays.
    pub fn deadline(
        self,
        received: jiff::civil::DateTime,
        calendar: &super::calendar::Calendar,
    ) -> Option<jiff::civil::DateTime> {
        match self.unit {
            DurationUnit::Hours => {
                received.checked_add(jiff::SignedDuration::from_secs_f64(self.amount * 3600.0)).ok()
            }
            DurationUnit::Days => {
                received.checked_add(jiff::SignedDuration::from_secs_f64(self.amount * 86_400.0)).ok()
            }
            DurationUnit::WorkingDays => calendar.add_working_days(received, self.amount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields an item of `list` may carry, if `list` is one of [`LISTS`].
    fn list_fields(list: &str) -> Option<&'static [(&'static str, Kind)]> {
        LISTS.iter().find(|(name, _)| *name == list).map(|(_, fields)| *fields)
    }

    #[test]
    fn amounts_are_plain_decimals() {
        for ok in ["0", "50000", "12.5", "0.00"] {
            assert!(is_amount(ok), "{ok}");
        }
        for bad in ["", "50.000.000", "-5", "1e3", "5,000", ".5", "5.", " 5"] {
            assert!(!is_amount(bad), "{bad}");
        }
        assert!(is_nonzero_amount("0.50") && !is_nonzero_amount("0.00") && !is_nonzero_amount(""));
    }

    #[test]
    fn durations_read_from_the_catalogue_and_their_deadlines() {
        let p = serde_json::json!({"CACHTHUCTHUCHIEN": [
            {"KENH": "1", "THOIGIAN": [{"THOIGIANGIAIQUYET": "3", "DONVITINH": "Ngày làm việc"}]},
            {"KENH": "2", "THOIGIAN": [{"THOIGIANGIAIQUYET": "2", "DONVITINH": "Ngày"},
                                       {"THOIGIANGIAIQUYET": "8", "DONVITINH": "Giờ"},
                                       {"THOIGIANGIAIQUYET": "9", "DONVITINH": "Tuần trăng"}]}]});
        let d = MaxDuration::of_procedure(&p).unwrap();
        assert_eq!(d, MaxDuration { amount: 3.0, unit: DurationUnit::WorkingDays });
        assert_eq!(MaxDuration::of_procedure(&serde_json::json!({"TENTTHC": "x"})), None);
        // Outside input: absurd durations are no duration (they would overflow the dates).
        for absurd in ["1e15", "4000", "-3", "NaN"] {
            let p = serde_json::json!({"CACHTHUCTHUCHIEN": [{"THOIGIAN": [{"THOIGIANGIAIQUYET": absurd, "DONVITINH": "Ngày làm việc"}]}]});
            assert_eq!(MaxDuration::of_procedure(&p), None, "{absurd}");
        }
        // Received Thursday 2026-03-05 10:00: Friday, then Monday, Tuesday.
        let received = jiff::civil::date(2026, 3, 5).at(10, 0, 0, 0);
        assert_eq!(
            d.deadline(received, &crate::domain::calendar::Calendar::official()),
            Some(jiff::civil::date(2026, 3, 10).at(10, 0, 0, 0))
        );
        let days = MaxDuration { amount: 3.0, unit: DurationUnit::Days };
        assert_eq!(
            days.deadline(received, &crate::domain::calendar::Calendar::official()),
            Some(jiff::civil::date(2026, 3, 8).at(10, 0, 0, 0))
        );
        let hours = MaxDuration { amount: 8.0, unit: DurationUnit::Hours };
        assert_eq!(
            hours.deadline(received, &crate::domain::calendar::Calendar::official()),
            Some(jiff::civil::date(2026, 3, 5).at(18, 0, 0, 0))
        );
        assert_eq!(DurationUnit::parse(" NGÀY LÀM VIỆC "), Some(DurationUnit::WorkingDays));
        assert_eq!(DurationUnit::from_stored("working_days"), Some(DurationUnit::WorkingDays));
    }

    #[test]
    fn every_list_is_found_by_name() {
        assert!(LISTS.iter().all(|(name, fields)| list_fields(name) == Some(*fields)));
        assert_eq!(list_fields("QuaTrinhXuLy"), None);
    }
}
