//! Which source a dossier belongs to, in a province that reads several (a merger's
//! predecessors' systems side by side, sector systems): the rules of provincial-portal.md,
//! "Several sources". The first source to read a MaHoSo owns it; a source that `supersedes`
//! the owner takes it over for good (a migration, a cutover); the owner's copy wins over a
//! source it supersedes; any other second copy is a conflict.

use std::collections::BTreeMap;

/// The name of the one source of a configuration with only `[provincial]`, and of every
/// dossier a database held before sources had names.
pub const DEFAULT_SOURCE: &str = "provincial";

/// Which sources' copies replace which (`sources.<name>.supersedes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precedence(BTreeMap<String, Vec<String>>);

impl Precedence {
    /// From each configured source's name and the names it supersedes.
    pub fn new<'a>(sources: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Precedence {
        Precedence(sources.into_iter().map(|(name, over)| (name.to_owned(), over.to_vec())).collect())
    }

    /// Whether `a`'s copy of a dossier replaces `b`'s.
    pub fn supersedes(&self, a: &str, b: &str) -> bool {
        self.0.get(a).is_some_and(|over| over.iter().any(|o| o == b))
    }
}

/// What a source's copy of a dossier is, given the dossier's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not owned yet, or owned by this source: recorded as usual.
    Own,
    /// This source supersedes the owner: ownership moves to it for good.
    Move,
    /// The owner supersedes this source (the copy left behind by a move): ignored, counted.
    Ignore,
    /// Neither supersedes the other: the owner keeps it, this copy is quarantined.
    Conflict,
}

/// The claim of `reader`'s copy of a dossier owned by `owner` (None: nobody yet).
pub fn claim(precedence: &Precedence, reader: &str, owner: Option<&str>) -> Claim {
    match owner {
        None => Claim::Own,
        Some(o) if o == reader => Claim::Own,
        Some(o) if precedence.supersedes(reader, o) => Claim::Move,
        Some(o) if precedence.supersedes(o, reader) => Claim::Ignore,
        Some(_) => Claim::Conflict,
    }
}

/// How far along its life a national status is, for "a status never goes backwards across a
/// move": registered, received, in processing (processing, supplement, fee, stopped), finished,
/// final (refused, withdrawn, returned).
fn stage(status: i64) -> u8 {
    match status {
        1 => 0,
        2 => 1,
        4..=6 | 8 => 2,
        9 => 3,
        _ => 4,
    }
}

/// Whether a moved copy in `new` status would take the national dossier, acknowledged in
/// `acked`, back along its life (a final state never changes).
pub fn goes_backwards(acked: i64, new: i64) -> bool {
    let final_state = matches!(acked, 3 | 7 | 10);
    (final_state && new != acked) || stage(new) < stage(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merger() -> Precedence {
        let over = vec!["tiengiang".to_owned()];
        Precedence::new([("dongthap", over.as_slice()), ("sector", &[][..]), ("tiengiang", &[][..])])
    }

    #[test]
    fn the_first_reader_owns_a_superseding_source_takes_over_others_conflict() {
        let p = merger();
        assert_eq!(claim(&p, "tiengiang", None), Claim::Own);
        assert_eq!(claim(&p, "tiengiang", Some("tiengiang")), Claim::Own);
        assert_eq!(claim(&p, "dongthap", Some("tiengiang")), Claim::Move);
        assert_eq!(claim(&p, "tiengiang", Some("dongthap")), Claim::Ignore);
        assert_eq!(claim(&p, "sector", Some("dongthap")), Claim::Conflict);
        assert_eq!(claim(&p, "dongthap", Some("sector")), Claim::Conflict);
        // A retired owner (no longer configured) is superseded only if named.
        assert_eq!(claim(&p, "dongthap", Some("gone")), Claim::Conflict);
    }

    #[test]
    fn a_status_never_goes_backwards_across_a_move() {
        assert!(!goes_backwards(2, 4));
        assert!(!goes_backwards(4, 5));
        assert!(!goes_backwards(5, 4));
        assert!(!goes_backwards(8, 4));
        assert!(!goes_backwards(4, 10));
        assert!(!goes_backwards(10, 10));
        assert!(goes_backwards(4, 2));
        assert!(goes_backwards(2, 1));
        assert!(goes_backwards(9, 4));
        assert!(goes_backwards(10, 9));
        assert!(goes_backwards(3, 4));
    }
}
