//! The dossier code, MaHoSo: `<agency code>-<yyMMdd>-<4 or 5 digit sequence>`
//! (Thông tư 01/2018/TT-VPCP), e.g. `000.00.15.H58-260301-0042`.

use jiff::civil::Date;

use super::dates::parse_yymmdd;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaHoSo<'a> {
    pub agency: &'a str,
    pub date: Date,
    pub sequence: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaHoSoError {
    #[error("not of the form <agency code>-<yyMMdd>-<4 or 5 digits>")]
    Shape,
    #[error("agency code has characters other than letters, digits and dots")]
    Agency,
    #[error("yyMMdd is not a real date")]
    Date,
    #[error("sequence is not 4 or 5 digits")]
    Sequence,
}

pub fn parse(code: &str) -> Result<MaHoSo<'_>, MaHoSoError> {
    let mut parts = code.split('-');
    let (Some(agency), Some(date), Some(sequence), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MaHoSoError::Shape);
    };
    if agency.is_empty()
        || agency.starts_with('.')
        || agency.ends_with('.')
        || agency.contains("..")
        || !agency.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    {
        return Err(MaHoSoError::Agency);
    }
    let date = parse_yymmdd(date).ok_or(MaHoSoError::Date)?;
    if !(4..=5).contains(&sequence.len()) || !sequence.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MaHoSoError::Sequence);
    }
    Ok(MaHoSo { agency, date, sequence })
}

/// Whether `code` has the form of a unit code (mã định danh): four dot-separated segments,
/// three, two and two letters or digits, then a letter and two digits (`000.00.00.H58`).
pub fn is_unit_code(code: &str) -> bool {
    let parts: Vec<&str> = code.split('.').collect();
    let plain =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    matches!(parts.as_slice(), [a, b, c, d]
        if plain(a, 3) && plain(b, 2) && plain(c, 2) && d.len() == 3
            && d.as_bytes()[0].is_ascii_uppercase() && d[1..].bytes().all(|b| b.is_ascii_digit()))
}

/// The province part of a unit or agency code: its last dot-separated segment
/// (`000.00.00.H58` → `H58`).
pub(crate) fn province_of(code: &str) -> &str {
    code.rsplit('.').next().unwrap_or(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_codes_have_their_form() {
        for good in ["000.00.00.H58", "000.00.15.H20", "000.20.31.H58", "A01.00.00.G22"] {
            assert!(is_unit_code(good), "{good}");
        }
        for bad in [
            "garbage",
            "000.00.00.H5",
            "000.00.00.58H",
            "00.00.00.H58",
            "000.00.00.h58",
            "000.00.00.H58.1",
            "",
        ] {
            assert!(!is_unit_code(bad), "{bad}");
        }
    }

    #[test]
    fn well_formed_codes_parse() {
        let m = parse("000.00.15.H58-260301-0042").unwrap();
        assert_eq!(m.agency, "000.00.15.H58");
        assert_eq!(m.sequence, "0042");
        assert!(parse("G22.99-251231-12345").is_ok());
    }

    #[test]
    fn malformed_codes_say_why() {
        assert_eq!(parse("HS/2026/000123"), Err(MaHoSoError::Shape));
        assert_eq!(parse("000.00.15.H58-260230-0042"), Err(MaHoSoError::Date));
        assert_eq!(parse("000.00.15.H58-260301-042"), Err(MaHoSoError::Sequence));
        assert_eq!(parse("000.00.15.H58-260301-123456"), Err(MaHoSoError::Sequence));
        assert_eq!(parse("000 15-260301-0042"), Err(MaHoSoError::Agency));
        assert_eq!(parse("-260301-0042"), Err(MaHoSoError::Agency));
        assert_eq!(parse("a-b-c-d"), Err(MaHoSoError::Shape));
    }

    #[test]
    fn province_is_the_last_segment() {
        assert_eq!(province_of("000.00.00.H58"), "H58");
        assert_eq!(province_of("H58"), "H58");
    }
}
