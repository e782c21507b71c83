//! The vocabulary shared by the daemon and the mocks: national status codes and their rules,
//! the MaHoSo format, national dates, and text limits. Pure functions, no I/O.

pub mod calendar;
pub mod codes;
pub mod cursor;
pub mod dates;
pub mod entry;
pub mod form;
pub mod mahoso;
pub mod normalize;
pub mod ownership;
pub mod personal;
pub mod raw;
pub mod scoring;
pub mod service;
pub mod status;
pub mod text;

/// FNV-1a, 64 bits: a stable hash (unlike std's) for comparing payloads across restarts and
/// releases. Returned as i64, SQLite's integer.
pub fn stable_hash(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(super::stable_hash(b""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(super::stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
    }
}
