//! The house in order: no cycle among the top-level modules of src/ (each `crate::x` a module
//! names, outside its unit tests, is an edge). A cycle means two parts that cannot be read,
//! tested or changed apart; the engine, for one, must not know the adapters.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

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

/// The first path segment of every `crate::` path in `text`, including each branch of a
/// `crate::{a::b, c}` tree.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(tree) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (j, c) in tree.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = j;
                    break;
                }
            }
            // Top-level branches of the tree: split at commas outside braces.
            let mut depth = 0;
            let mut branch = String::new();
            for c in tree[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String = branch
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            out.insert(name);
                        }
                        branch.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    branch.push(c);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let top = |p: &Path| -> String {
        let rel = p.strip_prefix(&src).unwrap();
        rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned()
    };
    let modules: BTreeSet<String> =
        all.iter().map(|p| top(p)).filter(|m| m != "lib" && m != "main").collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &all {
        let module = top(path);
        // Unit tests may reach anywhere.
        if !modules.contains(&module) || path.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for target in crate_paths(code) {
            if target != module && modules.contains(&target) {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a path back to the start, from every module.
    fn reaches(
        from: &str,
        to: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> bool {
        for next in edges.get(from).into_iter().flatten() {
            path.push(next.clone());
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
    let mut cycles = Vec::new();
    for module in &modules {
        let mut path = vec![module.clone()];
        if reaches(module, module, &edges, &mut BTreeSet::new(), &mut path) {
            cycles.push(path.join(" -> "));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    // Not vacuous: the parse found the engine's and the adapters' dependencies.
    assert!(edges["provincial"].contains("sync") && edges["national"].contains("sync"), "{edges:?}");
    assert!(!edges["sync"].contains("national") && !edges["sync"].contains("provincial"), "{edges:?}");
}

#[test]
fn crate_paths_reads_use_trees() {
    let found = crate_paths("use crate::{a::{b, c}, d, e::f};\nlet x = crate::g::h();");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "d", "e", "g"]);
}
