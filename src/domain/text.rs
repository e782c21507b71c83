//! Text rules of the national API: NFC and length limits counted in characters.

use std::borrow::Cow;

use unicode_normalization::{UnicodeNormalization, is_nfc};

/// Default limit for any field the national tables do not limit otherwise.
pub(crate) const DEFAULT_MAX_CHARS: usize = 500;

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

/// Whether every character of `s` is one that is NFC on its own and composes with nothing
/// before it: below U+0300 (ASCII, Latin-1, Latin Extended-A and -B, which hold every
/// Vietnamese base letter and đ, ă, â, ê, ô, ơ, ư) or a precomposed Vietnamese letter of
/// U+1EA0..=U+1EF9. Such a string is NFC; this answers without the normalisation tables for
/// the text a province's records nearly always carry.
fn plainly_nfc(s: &str) -> bool {
    s.chars().all(|c| (c as u32) < 0x300 || ('\u{1EA0}'..='\u{1EF9}').contains(&c))
}

/// `s` in NFC, borrowed when it is NFC already (as it nearly always is).
pub(crate) fn nfc(s: &str) -> Cow<'_, str> {
    if plainly_nfc(s) || is_nfc(s) { Cow::Borrowed(s) } else { Cow::Owned(s.nfc().collect()) }
}

/// `s` in NFC, owned.
pub(crate) fn to_nfc(s: &str) -> String {
    nfc(s).into_owned()
}

/// Cuts `s` to at most `max` characters, at a character boundary (never inside a UTF-8
/// sequence). Callers normalise to NFC first, so that a cut counts precomposed letters and
/// cannot strand a combining mark.
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    // Never more characters than bytes.
    if s.len() <= max {
        return s;
    }
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
    fn the_plain_characters_are_nfc_alone_and_after_one_another() {
        let plain: Vec<char> = (0..0x300u32).chain(0x1EA0..=0x1EF9).filter_map(char::from_u32).collect();
        for &a in &plain {
            for &b in &plain {
                let pair: String = [a, b].into_iter().collect();
                assert!(plainly_nfc(&pair));
                assert!(is_nfc(&pair), "{a:?} {b:?}");
            }
        }
        // Anything else goes to the tables.
        let nfd: String = "Nguyễn".nfd().collect();
        assert!(!plainly_nfc(&nfd));
        assert!(!plainly_nfc("Ω Å ㄱ"));
        assert_eq!(nfc(&nfd), "Nguyễn");
        assert_eq!(truncate_chars("Đặng Thị", 4), "Đặng");
        assert_eq!(truncate_chars("ab", 2), "ab");
    }

    #[test]
    fn nfd_is_detected_and_normalised() {
        let nfd: String = "Nguyễn".nfd().collect();
        assert!(!is_normalized(&nfd));
        assert_eq!(to_nfc(&nfd), "Nguyễn");
        assert!(is_normalized("Nguyễn"));
    }
}
