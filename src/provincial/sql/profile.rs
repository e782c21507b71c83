//! A source profile: the SQL that reads a one-stop system's own tables, kept in a TOML file
//! beside the configuration (`config/sources/opencps-v2.toml` ships for OpenCPS v2).
//!
//! Four queries, each with named parameters that the daemon binds (never pastes):
//!
//! - `changes`: one row per change strictly after the cursor, `(updated_at, id)` ascending,
//!   at most `:limit` rows; columns `updated_at` and `id`. Parameters `:after_time`,
//!   `:after_id`, `:limit`.
//! - `scan`: every dossier's `id` strictly after `:after_id`, ascending, at most `:limit`: the
//!   full reconciliation pass.
//! - `dossiers`: one row per dossier of `:ids`, columns named as the record fields of
//!   the provincial listing API (`MaHoSo`, `MaTTHC`, ..., the local `TrangThai`), plus `id` and
//!   `updated_at`. A dossier the query leaves out (an inter-agency copy) is not synchronized.
//! - `history`: the processing history of the dossiers of `:ids`, oldest first per dossier;
//!   columns `id` (the dossier's), `updated_at` and the history entry's fields.
//!
//! And, in `[lists]`, one optional query per list of the 766 fields (`TaiLieuNop`,
//! `DanhSachGiayToKetQua`, `DanhSachLePhi`): the items of the dossiers of `:ids`, in the order
//! they are to be sent; columns `id` (the dossier's), optionally `updated_at`, and the item's
//! fields. A dossier without items carries no list (its payload stays as it was without one).
//!
//! Column names are matched to record fields without regard to case (PostgreSQL folds
//! unquoted aliases to lower case). A `TrangThaiHoSo` column (dossier) or `TrangThaiHoSo`
//! column (history entry) carries the national status the source itself maps to; it wins
//! over `status_map`, which serves codes the source's mapping lacks.

use std::{collections::BTreeMap, collections::BTreeSet, fmt, path::Path};

use serde::Deserialize;

/// The profiles that ship inside the binary, by name (`provincial.profile = "opencps-v2"`).
pub const BUILT_IN: &[(&str, &str)] =
    &[("opencps-v2", include_str!("../../../config/sources/opencps-v2.toml"))];

/// The database family a URL names; each has its own placeholders and session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Postgres,
}

impl Dialect {
    /// From a database URL's scheme.
    pub(crate) fn of_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "mysql" | "mariadb" => Some(Dialect::MySql),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::MySql => "mysql",
            Dialect::Postgres => "postgres",
        }
    }
}

/// How the profile's ids compare: numbers, or text in byte order (then the profile's
/// `ORDER BY` must use a binary collation, so that the database and the daemon agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    Integer,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueriesFile {
    changes: String,
    scan: String,
    dossiers: String,
    history: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    changes: Option<String>,
    scan: Option<String>,
    dossiers: Option<String>,
    history: Option<String>,
    #[serde(default)]
    lists: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DbaFile {
    #[serde(default)]
    indexes: Vec<String>,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    #[serde(default)]
    description: String,
    id: IdKind,
    queries: QueriesFile,
    /// One query per list of the 766 fields the schema has, by the list's national name.
    #[serde(default)]
    lists: BTreeMap<String, String>,
    /// Queries that differ on one database family, replacing the common ones there.
    #[serde(default)]
    mysql: OverridesFile,
    #[serde(default)]
    postgres: OverridesFile,
    /// Why a required field may be missing in this schema: added to the quarantine reason.
    #[serde(default)]
    explain: BTreeMap<String, String>,
    /// What the province's DBA runs once: the indexes the queries need, the read-only grants.
    #[serde(default)]
    dba: DbaFile,
}

/// A named parameter of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    AfterTime,
    AfterId,
    Limit,
    Ids,
    /// `provincial.document_url`, for the links a list query builds.
    DocumentUrl,
}

impl Param {
    fn parse(name: &str) -> Option<Param> {
        Some(match name {
            "after_time" => Param::AfterTime,
            "after_id" => Param::AfterId,
            "limit" => Param::Limit,
            "ids" => Param::Ids,
            "document_url" => Param::DocumentUrl,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Param::AfterTime => ":after_time",
            Param::AfterId => ":after_id",
            Param::Limit => ":limit",
            Param::Ids => ":ids",
            Param::DocumentUrl => ":document_url",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Param(Param),
}

/// One query with its parameters located, ready to be rendered for a dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    segments: Vec<Segment>,
}

impl Query {
    /// The tables the query reads: each name after a FROM or a JOIN (not a subquery), without
    /// quotes or schema, in lower case.
    pub fn tables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for segment in &self.segments {
            let Segment::Text(text) = segment else { continue };
            let lower = text.to_ascii_lowercase();
            let words: Vec<&str> = lower.split_whitespace().collect();
            for pair in words.windows(2) {
                if !matches!(pair[0], "from" | "join") || pair[1].starts_with('(') {
                    continue;
                }
                let name: String = pair[1]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '`' | '"'))
                    .filter(|c| !matches!(c, '`' | '"'))
                    .collect();
                if let Some(table) = name.rsplit('.').next().filter(|t| !t.is_empty()) {
                    out.insert(table.to_owned());
                }
            }
        }
        out
    }

    /// Splits `sql` at its `:name` parameters, skipping string literals, quoted identifiers,
    /// comments and PostgreSQL's `::` casts. Every parameter must be one of `allowed`, and each
    /// of `required` must appear.
    fn parse(sql: &str, allowed: &[Param], required: &[Param]) -> Result<Query, String> {
        let b = sql.as_bytes();
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        let mut seen = Vec::new();
        while i < b.len() {
            let c = b[i];
            let skip_to = match c {
                b'\'' | b'"' | b'`' => {
                    // A quoted run, with doubled quotes (and, in MySQL strings, backslashes) escaped.
                    let mut j = i + 1;
                    loop {
                        match b.get(j) {
                            None => return Err("a quote is never closed".into()),
                            Some(&q) if q == c && b.get(j + 1) == Some(&c) => j += 2,
                            Some(&q) if q == c => break j + 1,
                            Some(b'\\') if c == b'\'' => j += 2,
                            Some(_) => j += 1,
                        }
                    }
                }
                b'-' if b.get(i + 1) == Some(&b'-') => {
                    b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p)
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    let rest = &sql[i + 2..];
                    match rest.find("*/") {
                        Some(p) => i + 2 + p + 2,
                        None => return Err("a /* comment is never closed".into()),
                    }
                }
                b':' if b.get(i + 1) == Some(&b':') => i + 2,
                b':' if b.get(i + 1).is_some_and(|n| n.is_ascii_lowercase() || *n == b'_') => {
                    let end = b[i + 1..]
                        .iter()
                        .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                        .map_or(b.len(), |p| i + 1 + p);
                    let name = &sql[i + 1..end];
                    let param = Param::parse(name).filter(|p| allowed.contains(p)).ok_or_else(|| {
                        format!(
                            "unknown parameter :{name} (this query takes {})",
                            allowed.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                        )
                    })?;
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Param(param));
                    seen.push(param);
                    i = end;
                    continue;
                }
                b'?' => return Err("use the named parameters (:after_id, ...), not ?".into()),
                b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    return Err("use the named parameters (:after_id, ...), not $1".into());
                }
                _ => {
                    let ch = sql[i..].chars().next().unwrap_or(' ');
                    text.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
            };
            text.push_str(&sql[i..skip_to]);
            i = skip_to;
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        if let Some(missing) = required.iter().find(|p| !seen.contains(p)) {
            return Err(format!("must use {}", missing.name()));
        }
        Ok(Query { segments })
    }

    /// The SQL for `dialect` with `ids` values for `:ids`, and the parameters to bind, in order.
    pub fn render(&self, dialect: Dialect, ids: usize) -> (String, Vec<Param>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        let placeholder = |sql: &mut String, binds: &mut Vec<Param>, p: Param| {
            binds.push(p);
            match dialect {
                Dialect::MySql => sql.push('?'),
                Dialect::Postgres => sql.push_str(&format!("${}", binds.len())),
            }
        };
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => sql.push_str(t),
                // A zone-less local time in database_timezone, bound as text and cast, so that
                // the comparison is with the column's own type and its index serves.
                Segment::Param(Param::AfterTime) => {
                    sql.push_str("CAST(");
                    placeholder(&mut sql, &mut binds, Param::AfterTime);
                    sql.push_str(match dialect {
                        Dialect::MySql => " AS DATETIME(6))",
                        Dialect::Postgres => " AS TIMESTAMP)",
                    });
                }
                Segment::Param(Param::Ids) => {
                    for k in 0..ids.max(1) {
                        if k > 0 {
                            sql.push_str(", ");
                        }
                        placeholder(&mut sql, &mut binds, Param::Ids);
                    }
                }
                Segment::Param(p) => placeholder(&mut sql, &mut binds, *p),
            }
        }
        (sql, binds)
    }
}

/// A profile, checked and ready for one dialect.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Where it came from: a path, or `built-in opencps-v2`.
    pub origin: String,
    pub id: IdKind,
    pub changes: Query,
    pub scan: Query,
    pub dossiers: Query,
    pub history: Query,
    /// The lists the profile reads, each with the fields its items may carry.
    pub lists: Vec<ListQuery>,
    pub explain: BTreeMap<String, String>,
    pub indexes: Vec<String>,
    pub grants: Vec<String>,
}

/// The query of one list of the 766 fields (`[lists]` of a profile).
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The list's national name, as in [`crate::domain::scoring::LISTS`].
    pub name: &'static str,
    /// The fields its items may carry.
    pub fields: &'static [(&'static str, crate::domain::scoring::Kind)],
    pub query: Query,
}

/// Why a profile cannot be used, naming the part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError(pub String);

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProfileError {}

impl Profile {
    /// A built-in profile by name, or a profile file by path.
    pub fn load(name_or_path: &str, dialect: Dialect) -> Result<Profile, ProfileError> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Profile::parse(text, &format!("built-in {name}"), dialect);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            ProfileError(format!(
                "cannot read the profile {}: {e} (built-in profiles: {})",
                path.display(),
                names.join(", ")
            ))
        })?;
        Profile::parse(&text, &path.display().to_string(), dialect)
    }

    /// Parses and checks a profile's text for `dialect`.
    pub fn parse(text: &str, origin: &str, dialect: Dialect) -> Result<Profile, ProfileError> {
        let file: ProfileFile =
            toml::from_str(text).map_err(|e| ProfileError(format!("profile {origin}: {e}")))?;
        let overrides = match dialect {
            Dialect::MySql => &file.mysql,
            Dialect::Postgres => &file.postgres,
        };
        let pick =
            |common: &String, special: &Option<String>| special.clone().unwrap_or_else(|| common.clone());
        use Param::*;
        let query = |key: &str, sql: String, allowed: &[Param], required: &[Param]| {
            Query::parse(&sql, allowed, required).map_err(|e| {
                ProfileError(format!("profile {origin}: queries.{key} ({}): {e}", dialect.name()))
            })
        };
        let mut lists = Vec::new();
        for (name, common) in &file.lists {
            let Some((name, fields)) = crate::domain::scoring::LISTS.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = crate::domain::scoring::LISTS.iter().map(|(n, _)| *n).collect();
                return Err(ProfileError(format!(
                    "profile {origin}: lists.{name} is not a list of the national record (lists: {})",
                    known.join(", ")
                )));
            };
            let sql = pick(common, &overrides.lists.get(*name).cloned());
            lists.push(ListQuery {
                name,
                fields,
                query: query(&format!("lists.{name}"), sql, &[Ids, DocumentUrl], &[Ids])?,
            });
        }
        if let Some(extra) = overrides.lists.keys().find(|k| !file.lists.contains_key(*k)) {
            return Err(ProfileError(format!(
                "profile {origin}: {}.lists.{extra} overrides a list that [lists] does not have",
                dialect.name()
            )));
        }
        Ok(Profile {
            name: file.name,
            description: file.description,
            origin: origin.to_owned(),
            id: file.id,
            changes: query(
                "changes",
                pick(&file.queries.changes, &overrides.changes),
                &[AfterTime, AfterId, Limit],
                &[AfterTime, AfterId, Limit],
            )?,
            scan: query(
                "scan",
                pick(&file.queries.scan, &overrides.scan),
                &[AfterId, Limit],
                &[AfterId, Limit],
            )?,
            dossiers: query("dossiers", pick(&file.queries.dossiers, &overrides.dossiers), &[Ids], &[Ids])?,
            history: query("history", pick(&file.queries.history, &overrides.history), &[Ids], &[Ids])?,
            lists,
            explain: file.explain,
            indexes: file.dba.indexes,
            grants: file.dba.grants,
        })
    }

    /// Every table its queries read: what the account needs SELECT on.
    pub fn tables(&self) -> BTreeSet<String> {
        [&self.changes, &self.scan, &self.dossiers, &self.history]
            .into_iter()
            .chain(self.lists.iter().map(|l| &l.query))
            .flat_map(Query::tables)
            .collect()
    }

    /// The profile's GRANT for `table` in `dialect`'s form, if it gives one.
    pub fn grant_for(&self, table: &str, dialect: Dialect) -> Option<&str> {
        self.grants
            .iter()
            .filter(|g| g.contains("'@'") == (dialect == Dialect::MySql))
            .find(|g| grant_tables(g).contains(table))
            .map(String::as_str)
    }

    /// The hint for a missing field, if the profile gives one.
    pub fn explain(&self, field: &str) -> Option<&str> {
        self.explain.get(field).map(String::as_str)
    }
}

/// The tables a `GRANT SELECT ON a, b TO ...` names, without schema, in lower case.
pub fn grant_tables(grant: &str) -> BTreeSet<String> {
    let lower = grant.to_ascii_lowercase();
    let Some(on) = lower.find(" on ") else { return BTreeSet::new() };
    let rest = &lower[on + 4..];
    let list = rest.split(" to ").next().unwrap_or("");
    list.split(',')
        .filter_map(|t| t.trim().trim_matches(['`', '"']).rsplit('.').next().map(str::to_owned))
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_found_outside_quotes_comments_and_casts() {
        let q = Query::parse(
            "SELECT 'a :limit', \"x:ids\", `y:ids`, a::text -- :limit\n FROM t /* :ids */ WHERE id > :after_id LIMIT :limit",
            &[Param::AfterId, Param::Limit],
            &[Param::AfterId, Param::Limit],
        )
        .unwrap();
        let (mysql, binds) = q.render(Dialect::MySql, 0);
        assert!(mysql.ends_with("WHERE id > ? LIMIT ?"), "{mysql}");
        assert!(mysql.contains("'a :limit'") && mysql.contains("a::text") && mysql.contains("/* :ids */"));
        assert_eq!(binds, vec![Param::AfterId, Param::Limit]);
        let (pg, _) = q.render(Dialect::Postgres, 0);
        assert!(pg.ends_with("WHERE id > $1 LIMIT $2"), "{pg}");
    }

    #[test]
    fn ids_expand_and_times_are_cast_to_the_dialects_type() {
        let q = Query::parse(
            "SELECT * FROM t WHERE id IN (:ids) AND m > :after_time",
            &[Param::Ids, Param::AfterTime],
            &[],
        )
        .unwrap();
        let (mysql, binds) = q.render(Dialect::MySql, 3);
        assert_eq!(mysql, "SELECT * FROM t WHERE id IN (?, ?, ?) AND m > CAST(? AS DATETIME(6))");
        assert_eq!(binds, vec![Param::Ids, Param::Ids, Param::Ids, Param::AfterTime]);
        let (pg, _) = q.render(Dialect::Postgres, 2);
        assert_eq!(pg, "SELECT * FROM t WHERE id IN ($1, $2) AND m > CAST($3 AS TIMESTAMP)");
    }

    #[test]
    fn wrong_parameters_are_named() {
        let e = Query::parse("SELECT :nope", &[Param::Ids], &[]).unwrap_err();
        assert!(e.contains(":nope") && e.contains(":ids"), "{e}");
        let e = Query::parse("SELECT 1", &[Param::Ids], &[Param::Ids]).unwrap_err();
        assert!(e.contains("must use :ids"), "{e}");
        assert!(Query::parse("SELECT ?", &[], &[]).unwrap_err().contains("not ?"));
        assert!(Query::parse("SELECT 'x", &[], &[]).unwrap_err().contains("never closed"));
        assert!(Query::parse("SELECT 'it''s :ids'", &[], &[]).is_ok(), "doubled quotes");
    }

    #[test]
    fn the_built_in_profile_parses_for_both_dialects() {
        for dialect in [Dialect::MySql, Dialect::Postgres] {
            let p = Profile::load("opencps-v2", dialect).unwrap();
            assert_eq!(p.id, IdKind::Integer);
            assert!(!p.indexes.is_empty() && !p.grants.is_empty());
            assert!(p.origin.contains("built-in"));
        }
        let e = Profile::load("/nonexistent/profile.toml", Dialect::MySql).unwrap_err();
        assert!(e.0.contains("opencps-v2"), "names the built-in ones: {e}");
    }

    /// The least a profile must say, with ids of `id`'s kind.
    fn minimal(id: &str) -> String {
        format!(
            r#"
name = "t"
id = "{id}"
[queries]
changes = "SELECT 1 WHERE :after_time < x AND :after_id < y LIMIT :limit"
scan = "SELECT id WHERE id > :after_id LIMIT :limit"
dossiers = "SELECT * WHERE id IN (:ids)"
history = "SELECT * WHERE id IN (:ids)"
"#
        )
    }

    #[test]
    fn lists_are_the_national_ones_and_take_ids() {
        let base = minimal("integer");
        let p = Profile::parse(&base, "t", Dialect::MySql).unwrap();
        assert!(p.lists.is_empty(), "lists are optional");
        let with = format!(
            "{base}[lists]\nTaiLieuNop = \"SELECT f.id FROM f WHERE f.id IN (:ids)\"\n[postgres.lists]\nTaiLieuNop = \"SELECT f.id FROM g WHERE g.id IN (:ids)\"\n"
        );
        let my = Profile::parse(&with, "t", Dialect::MySql).unwrap();
        assert_eq!(my.lists.len(), 1);
        assert_eq!(my.lists[0].name, "TaiLieuNop");
        assert!(my.lists[0].fields.iter().any(|(f, _)| *f == "DuocSoHoa"));
        assert!(my.lists[0].query.render(Dialect::MySql, 2).0.contains("FROM f WHERE f.id IN (?, ?)"));
        let pg = Profile::parse(&with, "t", Dialect::Postgres).unwrap();
        assert!(pg.lists[0].query.render(Dialect::Postgres, 1).0.contains("FROM g"));
        let e = Profile::parse(
            &format!("{base}[lists]\nTaiLieu = \"SELECT 1 WHERE x IN (:ids)\"\n"),
            "t",
            Dialect::MySql,
        )
        .unwrap_err();
        assert!(e.0.contains("lists.TaiLieu") && e.0.contains("DanhSachGiayToKetQua"), "{e}");
        let e = Profile::parse(&format!("{base}[lists]\nTaiLieuNop = \"SELECT 1\"\n"), "t", Dialect::MySql)
            .unwrap_err();
        assert!(e.0.contains("must use :ids"), "{e}");
        let e = Profile::parse(
            &format!("{base}[mysql.lists]\nTaiLieuNop = \"SELECT 1 WHERE x IN (:ids)\"\n"),
            "t",
            Dialect::MySql,
        )
        .unwrap_err();
        assert!(e.0.contains("does not have"), "{e}");
    }

    #[test]
    fn a_dialect_override_replaces_the_common_query() {
        let text = minimal("text")
            + "[postgres]\nscan = \"SELECT id WHERE id > :after_id ORDER BY id COLLATE \\\"C\\\" LIMIT :limit\"\n";
        let my = Profile::parse(&text, "t", Dialect::MySql).unwrap();
        let pg = Profile::parse(&text, "t", Dialect::Postgres).unwrap();
        assert!(!my.scan.render(Dialect::MySql, 0).0.contains("COLLATE"));
        assert!(pg.scan.render(Dialect::Postgres, 0).0.contains("COLLATE"));
        let bad = text.replace("[postgres]", "[postgres]\nextra = 1");
        assert!(Profile::parse(&bad, "t", Dialect::Postgres).is_err());
    }
}
