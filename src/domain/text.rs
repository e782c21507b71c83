//! Text rules of the national API: NFC and length limits counted in characters.

use std::borrow::Cow;

use unicode_normalization::{UnicodeNormalization, is_nfc};

/// Default limit for any field the national tables do not limit otherwise.
pub const DEFAULT_MAX_CHARS: usize = 500;

/// The national length limit of a field, in characters.
pub fn max_chars(field: &str) -> usize {
    match field {
        "TrichYeuHoSo" => 1000,
        "NguoiXuLy" => 50,
        "NoiDungXuLy" => 2000,
        _ => DEFAULT_MAX_CHARS,
    }
}

pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

pub fn is_normalized(s: &str) -> bool {
    is_nfc(s)
}

/// `s` in NFC, borrowed when it is NFC already (as it nearly always is).
pub fn nfc(s: &str) -> Cow<'_, str> {
    if is_nfc(s) { Cow::Borrowed(s) } else { Cow::Owned(s.nfc().collect()) }
}

/// `s` in NFC, owned.
pub fn to_nfc(s: &str) -> String {
    nfc(s).into_owned()
}

/// Cuts `s` to at most `max` characters, at a character boundary (never inside a UTF-8
/// sequence). Callers normalise to NFC first, so that a cut counts precomposed letters and
/// cannot strand a combining mark.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((byte, _)) => &s[..byte],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let s = "Nguyễn Văn Ánh";
        assert_eq!(truncate_chars(s, 6), "Nguyễn");
        assert_eq!(truncate_chars(s, 100), s);
        assert_eq!(truncate_chars("", 3), "");
        assert_eq!(char_len("Đặng"), 4);
    }

    #[test]
    fn nfd_is_detected_and_normalised() {
        let nfd: String = "Nguyễn".nfd().collect();
        assert!(!is_normalized(&nfd));
        assert_eq!(to_nfc(&nfd), "Nguyễn");
        assert!(is_normalized("Nguyễn"));
    }
}
