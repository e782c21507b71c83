//! The house in order: no cycle among the modules of src/, at any depth. Every path a module
//! names outside its unit tests (`crate::a::b`, `super::c`, `self::d`, in `use` trees or in
//! code) is an edge from it to the module the path lands in; an edge between two modules is
//! counted between their ancestors that are siblings (so `sync::audit::look` naming
//! `sync::push::outbox` is an edge `sync::audit -> sync::push`), and an edge from a module to
//! its own parent or child is not one (a folder and its files are one part). A cycle means two
//! parts that cannot be read, tested or changed apart; the engine, for one, must not know the
//! adapters, and the audit and the pusher must not know each other.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

type ModPath = Vec<String>;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is: `src/sync/push/mod.rs` is `sync::push`, `src/sync/push/outbox.rs`
/// is `sync::push::outbox`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: ModPath = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a file without its unit tests and its comments.
fn code(text: &str) -> String {
    let without_tests = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    without_tests
        .lines()
        .map(|line| {
            // A `//` not after `:` starts a comment (`https://` in a string does not).
            let mut cut = line.len();
            let bytes = line.as_bytes();
            for i in 0..bytes.len().saturating_sub(1) {
                if bytes[i] == b'/' && bytes[i + 1] == b'/' && (i == 0 || bytes[i - 1] != b':') {
                    cut = i;
                    break;
                }
            }
            &line[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths of a use tree or an expression path that starts at `text` (after a `crate::`,
/// `super::` or `self::`): `{a::{b, c}, d}` gives `a::b`, `a::c`, `d`.
fn tree_paths(text: &str) -> Vec<ModPath> {
    fn parse(chars: &[char], i: &mut usize, prefix: &ModPath, out: &mut Vec<ModPath>) {
        let mut path = prefix.clone();
        loop {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
            if *i < chars.len() && chars[*i] == '{' {
                *i += 1;
                loop {
                    parse(chars, i, &path, out);
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    match chars.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    if chars.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            if *i == start {
                break;
            }
            path.push(chars[start..*i].iter().collect());
            if chars.get(*i) == Some(&':') && chars.get(*i + 1) == Some(&':') {
                *i += 2;
            } else {
                break;
            }
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
    let chars: Vec<char> = text.chars().take(4000).collect();
    let mut out = Vec::new();
    parse(&chars, &mut 0, &Vec::new(), &mut out);
    out
}

/// Every module path `code` names, resolved from `module` (`self::` and `super::` relative to
/// it), as written (the caller finds the module each lands in).
fn named_paths(module: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        out.extend(tree_paths(&code[at + "crate::".len()..]));
    }
    let mut rest_at = 0;
    while let Some(found) = code[rest_at..].find("super::").or_else(|| code[rest_at..].find("self::")) {
        let at = rest_at + found;
        rest_at = at + 1;
        if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // `self` is the module; each `super` its parent (a file's `self` is itself too).
        let mut base = module.clone();
        let mut tail = &code[at..];
        if let Some(t) = tail.strip_prefix("self::") {
            tail = t;
        }
        while let Some(t) = tail.strip_prefix("super::") {
            base.pop();
            tail = t;
        }
        for mut p in tree_paths(tail).into_iter().filter(|p| !p.iter().any(|s| s == "super" || s == "self")) {
            let mut full = base.clone();
            full.append(&mut p);
            out.push(full);
        }
    }
    out
}

/// The modules of src/ and the edges between sibling parts.
fn graph() -> (BTreeSet<ModPath>, BTreeMap<ModPath, BTreeSet<ModPath>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<ModPath> =
        all.iter().map(|f| module_of(&src, f)).filter(|m| !m.is_empty()).collect();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for file in &all {
        let module = module_of(&src, file);
        // Unit tests may reach anywhere.
        if module.is_empty() || file.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for path in named_paths(&module, &code(&text)) {
            // The module the path lands in: its longest prefix that is a module.
            let Some(target) =
                (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p))
            else {
                continue;
            };
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == target.len() {
                continue; // itself, its parent or its child
            }
            edges.entry(module[..=common].to_vec()).or_default().insert(target[..=common].to_vec());
        }
    }
    (modules, edges)
}

fn reaches(
    from: &ModPath,
    to: &ModPath,
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
    seen: &mut BTreeSet<ModPath>,
    path: &mut Vec<String>,
) -> bool {
    for next in edges.get(from).into_iter().flatten() {
        path.push(next.join("::"));
        if next == to {
            return true;
        }
        if seen.insert(next.clone()) && reaches(next, to, edges, seen, path) {
            return true;
        }
        path.pop();
    }
    false
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let (modules, edges) = graph();
    let mut cycles = Vec::new();
    for module in &modules {
        let mut path = vec![module.join("::")];
        if reaches(module, module, &edges, &mut BTreeSet::new(), &mut path) {
            cycles.push(path.join(" -> "));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    // Not vacuous: the parse found the engine's and the adapters' dependencies, at the top and
    // inside folders.
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<ModPath>();
    let has = |from: &str, to: &str| edges.get(&m(from)).is_some_and(|t| t.contains(&m(to)));
    assert!(has("provincial", "sync") && has("national", "sync"), "{edges:?}");
    assert!(!has("sync", "national") && !has("sync", "provincial"), "{edges:?}");
    assert!(has("sync::push", "sync::readback") && has("sync::audit", "sync::readback"), "{edges:?}");
    assert!(has("sync::push", "sync::portal") && has("sync::audit", "sync::portal"), "{edges:?}");
    assert!(!has("sync::audit", "sync::push") && !has("sync::push", "sync::audit"), "{edges:?}");
}

#[test]
fn paths_are_read_from_use_trees_and_code() {
    let found = tree_paths("{a::{b, c::D}, d, e::f};\nlet x = 1;");
    let joined: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::D", "d", "e::f"]);
    let module = vec!["sync".to_owned(), "push".to_owned(), "outbox".to_owned()];
    let named = named_paths(
        &module,
        "use super::{work::Work, outbox};\nlet s = crate::store::x(super::super::answer::Service);",
    );
    let joined: Vec<String> = named.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["store::x", "sync::push::work::Work", "sync::push::outbox", "sync::answer::Service"]);
    assert_eq!(code("let u = \"https://x\"; // crate::a\n"), "let u = \"https://x\"; ");
}
