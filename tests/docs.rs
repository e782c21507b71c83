//! What an operator copies from the documentation is what the code needs: the GRANT
//! statements of the README and docs/sql-source.md name exactly the tables the shipped
//! profiles read, and so do each profile's own `[dba]` grants (what `check-source` prints).

use std::collections::BTreeSet;

use dvc_sync::provincial::sql::{
    Dialect, Profile,
    profile::{BUILT_IN, grant_tables},
};

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The tables of every `GRANT SELECT ON ...` statement in `text` (a statement may run over
/// lines, and may sit in backquotes).
fn granted(text: &str) -> Vec<BTreeSet<String>> {
    let flat = text.replace('\n', " ");
    flat.match_indices("GRANT SELECT ON ")
        .map(|(at, _)| {
            let rest = &flat[at..];
            let end = rest.find(" TO ").map_or(rest.len(), |i| i + 4);
            grant_tables(&format!("{} x", &rest[..end]))
        })
        .collect()
}

fn profile_tables(dialect: Dialect) -> BTreeSet<String> {
    let (name, _) = BUILT_IN[0];
    Profile::load(name, dialect).unwrap().tables()
}

#[test]
fn the_opencps_profile_reads_the_seven_tables_it_says() {
    for dialect in [Dialect::MySql, Dialect::Postgres] {
        let tables = profile_tables(dialect);
        assert_eq!(tables.len(), 7, "{tables:?}");
        assert!(
            tables.contains("opencps_paymentfile") && tables.contains("opencps_dossierfile"),
            "{tables:?}"
        );
    }
}

#[test]
fn every_shipped_profile_grants_what_it_reads() {
    for (name, _) in BUILT_IN {
        for dialect in [Dialect::MySql, Dialect::Postgres] {
            let profile = Profile::load(name, dialect).unwrap();
            for table in profile.tables() {
                let grant = profile.grant_for(&table, dialect);
                assert!(grant.is_some(), "{name} ({dialect:?}) gives no GRANT for {table}");
            }
            let granted: BTreeSet<String> = profile.grants.iter().flat_map(|g| grant_tables(g)).collect();
            assert_eq!(granted, profile.tables(), "{name}: [dba] grants and the queries' tables");
        }
    }
}

#[test]
fn the_grants_in_the_docs_are_what_the_profile_reads() {
    let tables = profile_tables(Dialect::MySql);
    for doc in ["README.md", "docs/sql-source.md"] {
        let grants = granted(&read(doc));
        assert!(!grants.is_empty(), "{doc} shows no GRANT");
        // The MariaDB form grants one table a statement, PostgreSQL's all of them in one.
        let all: BTreeSet<String> = grants.iter().flatten().cloned().collect();
        assert_eq!(all, tables, "{doc}: the tables granted");
        for g in grants.iter().filter(|g| g.len() > 1) {
            assert_eq!(g, &tables, "{doc}: a statement granting several tables grants them all");
        }
    }
}
