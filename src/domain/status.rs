//! National dossier status codes (TrangThaiHoSo) and the rules for moving between them.

use std::fmt;

/// A national status code (TrangThaiHoSo), 1 to 10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NationalStatus(u8);

impl NationalStatus {
    /// Mới đăng ký: the first status, which nothing moves back to (`name` gives every code's).
    pub(crate) const REGISTERED: Self = Self(1);

    pub fn new(code: u8) -> Option<Self> {
        (1..=10).contains(&code).then_some(Self(code))
    }

    /// Parses the wire form: a decimal string "1" to "10" (no sign, no padding).
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 2 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().and_then(Self::new)
    }

    pub fn code(self) -> u8 {
        self.0
    }

    /// Refused at intake, withdrawn, result returned: nothing follows these.
    pub fn is_final(self) -> bool {
        matches!(self.0, 3 | 7 | 10)
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "Mới đăng ký",
            2 => "Được tiếp nhận",
            3 => "Không được tiếp nhận",
            4 => "Đang xử lý",
            5 => "Yêu cầu bổ sung giấy tờ",
            6 => "Yêu cầu thực hiện nghĩa vụ tài chính",
            7 => "Công dân yêu cầu rút hồ sơ",
            8 => "Dừng xử lý",
            9 => "Đã xử lý xong",
            _ => "Đã trả kết quả",
        }
    }
}

impl fmt::Display for NationalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The provincial vendor's local status codes and their national equivalents: the default
/// `status_map`.
pub const DEFAULT_STATUS_MAP: &[(&str, u8)] = &[
    ("receiving", 1),
    ("new", 2),
    ("denied", 3),
    ("processing", 4),
    ("waiting", 5),
    ("paying", 6),
    ("cancelled", 7),
    ("unresolved", 8),
    ("releasing", 9),
    ("done", 10),
];

/// The national rules: a final status never changes, nothing moves back to 1, skipping
/// forward is allowed (a poller may miss intermediate states), re-sending is allowed.
pub fn transition_allowed(from: NationalStatus, to: NationalStatus) -> bool {
    from == to || (!from.is_final() && to != NationalStatus::REGISTERED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(code: u8) -> NationalStatus {
        NationalStatus::new(code).unwrap()
    }

    #[test]
    fn parses_only_canonical_codes() {
        assert_eq!(NationalStatus::parse("4"), Some(s(4)));
        assert_eq!(NationalStatus::parse("10"), Some(s(10)));
        for bad in ["", "0", "11", "04", "-1", " 4", "4.0", "x"] {
            assert_eq!(NationalStatus::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn final_statuses_never_move() {
        for from in [3, 7, 10] {
            for to in 1..=10 {
                assert_eq!(transition_allowed(s(from), s(to)), from == to, "{from}->{to}");
            }
        }
    }

    #[test]
    fn nothing_moves_back_to_registered_but_skipping_forward_is_fine() {
        assert!(!transition_allowed(s(2), s(1)));
        assert!(transition_allowed(s(1), s(1)));
        assert!(transition_allowed(s(2), s(9)));
        assert!(transition_allowed(s(5), s(4)));
        assert!(transition_allowed(s(1), s(10)));
    }
}
