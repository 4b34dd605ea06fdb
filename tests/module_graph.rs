//! Issue 17, "no cycles": the top-level modules of `cchq-core` form layers, low ones (data,
//! parsing, transport: `error`, `yaml`, `clock`, `redact`, `profile`, `environment`, ...) never
//! using high ones (the commands: `deploy`, `services`, `notify`, `downtime`, `config`, ...).
//!
//! This test reads every `cchq-core/src/**/*.rs` (not its tests: files named `tests.rs`, files
//! under a `tests/` directory, `#[cfg(test)]` modules, inline or in their own file), maps each file
//! to its top-level module (`deploy/steps/mod.rs` is `deploy`; `lib.rs` is the root and ignored),
//! collects its references `crate::<module>` (in `use` and in paths, comments and strings left
//! out) to other top-level modules, and fails naming every cycle of that graph, with the files
//! that make each of its edges.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Cycles that exist and are not broken yet, each as the test names it (its smallest module
/// first). Empty: the modules are layered. A new cycle fails the test; so does an entry here that
/// no longer exists (remove it: the list only shrinks).
const KNOWN: &[&str] = &[];

/// A module's graph: each top-level module, the modules it uses and, for each edge, the files
/// that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[test]
fn top_level_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cchq-core/src");
    let graph = module_graph(&src);
    assert!(
        graph.len() > 20 && graph.contains_key("deploy") && graph.contains_key("environment"),
        "modules found: {:?}",
        graph.keys()
    );
    let found = cycles(&graph);
    let new: Vec<&String> = found
        .iter()
        .filter(|c| !KNOWN.contains(&c.as_str()))
        .collect();
    let gone: Vec<&&str> = KNOWN
        .iter()
        .filter(|k| !found.iter().any(|c| c == *k))
        .collect();
    let mut report = String::new();
    for cycle in &new {
        report.push_str(&format!("  {cycle}\n"));
        let names: Vec<&str> = cycle.split(" -> ").collect();
        for pair in names.windows(2) {
            let files = &graph[pair[0]][pair[1]];
            report.push_str(&format!(
                "      {} -> {}: {}\n",
                pair[0],
                pair[1],
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(
        new.is_empty(),
        "cycles between cchq-core's top-level modules (a low module must not use a high one: move the data it needs down, \
         see CONTRIBUTING.md, \"Layers\"):\n{report}"
    );
    assert!(
        gone.is_empty(),
        "cycles in KNOWN that no longer exist (remove them): {gone:?}"
    );
}

/// The graph of the top-level modules under `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    let rel = |p: &Path| {
        p.strip_prefix(src)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let top_of = |r: &str| -> Option<String> {
        let first = r.split('/').next()?;
        if r == "lib.rs" {
            return None;
        }
        Some(first.strip_suffix(".rs").unwrap_or(first).to_owned())
    };
    let mut graph = Graph::new();
    let mut test_files: BTreeSet<String> = BTreeSet::new();
    let mut texts = Vec::new();
    for path in &files {
        let r = rel(path);
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{r}: {e}"));
        let code = strip_comments_and_strings(&text);
        for name in test_module_files(&code) {
            // A `#[cfg(test)] mod name;` of `a/mod.rs` or `a.rs` (or `lib.rs`) is `a/name.rs` or `a/name/`.
            let dir = match r.rsplit_once('/') {
                Some((d, "mod.rs")) => format!("{d}/"),
                Some((d, f)) => format!("{d}/{}/", f.trim_end_matches(".rs")),
                None if r == "lib.rs" => String::new(),
                None => format!("{}/", r.trim_end_matches(".rs")),
            };
            test_files.insert(format!("{dir}{name}.rs"));
            test_files.insert(format!("{dir}{name}/"));
        }
        texts.push((r, code));
    }
    for (r, _) in &texts {
        if let Some(top) = top_of(r) {
            graph.entry(top).or_default();
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (r, code) in &texts {
        let is_test = r.rsplit('/').next() == Some("tests.rs")
            || r.split('/').rev().skip(1).any(|d| d == "tests")
            || test_files.iter().any(|t| {
                if t.ends_with('/') {
                    r.starts_with(t.as_str())
                } else {
                    r == t
                }
            });
        let Some(top) = top_of(r) else { continue };
        if is_test {
            continue;
        }
        let code = strip_test_modules(code);
        for used in crate_references(&code) {
            if used != top && modules.contains(&used) {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(used)
                    .or_default()
                    .insert(r.clone());
            }
        }
    }
    graph
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` with comments, string literals and character literals blanked (their line breaks
/// kept), so that only code is searched.
fn strip_comments_and_strings(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !b
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && {
                let mut j = i + if c == 'b' { 2 } else { 1 };
                while b.get(j) == Some(&'#') {
                    j += 1;
                }
                b.get(j) == Some(&'"')
            }
        {
            // A raw string: r"..", r#".."#, br"..".
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: the quote, the backslash, the escaped character.
            i += 3;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The names of the modules declared `#[cfg(test)] mod name;` (in their own file).
fn test_module_files(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("#[cfg(test)]") {
        let (name, body) = declared_module(&code[at + "#[cfg(test)]".len()..]);
        if let (Some(name), false) = (name, body) {
            out.push(name);
        }
    }
    out
}

/// After an attribute: the module declared next (`None` when the item is no module), and whether
/// it has a body (`mod x { .. }`) rather than a file (`mod x;`).
fn declared_module(rest: &str) -> (Option<String>, bool) {
    let mut rest = rest.trim_start();
    while rest.starts_with("#[") {
        rest = rest.split_once(']').map_or("", |(_, r)| r).trim_start();
    }
    if let Some(r) = rest.strip_prefix("pub") {
        rest = r.trim_start();
        if rest.starts_with('(') {
            rest = rest.split_once(')').map_or("", |(_, r)| r).trim_start();
        }
    }
    let Some(r) = rest.strip_prefix("mod ") else {
        return (None, false);
    };
    let r = r.trim_start();
    let name: String = r
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let after = r[name.len()..].trim_start();
    (Some(name), after.starts_with('{'))
}

/// `code` without its `#[cfg(test)] mod name { .. }` blocks.
fn strip_test_modules(code: &str) -> String {
    let mut code = code.to_owned();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]").map(|i| from + i) {
        let (name, body) = declared_module(&code[at + "#[cfg(test)]".len()..]);
        if name.is_none() || !body {
            from = at + 1;
            continue;
        }
        let open = at + code[at..].find('{').unwrap_or(0);
        let mut depth = 0;
        let mut end = code.len();
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code.replace_range(at..end, "");
        from = at;
    }
    code
}

/// The first segment of every `crate::` path in `code`, groups (`crate::{a, b::c}`) included.
fn crate_references(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`
        }
        let rest = code[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // The items at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        item_start = false;
                        out.insert(ident(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out.remove("self");
    out
}

/// Every cycle of `graph`, each the shortest one through one of its edges, written from its
/// smallest module (`a -> b -> c -> a`), sorted.
fn cycles(graph: &Graph) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (from, uses) in graph {
        for to in uses.keys() {
            // The shortest way back from `to` to `from`.
            let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = VecDeque::from([to.as_str()]);
            let mut seen = BTreeSet::from([to.as_str()]);
            while let Some(m) = queue.pop_front() {
                if m == from {
                    break;
                }
                for n in graph.get(m).into_iter().flat_map(|u| u.keys()) {
                    if seen.insert(n.as_str()) {
                        prev.insert(n.as_str(), m);
                        queue.push_back(n.as_str());
                    }
                }
            }
            if !seen.contains(from.as_str()) {
                continue;
            }
            let mut path = vec![from.as_str()];
            let mut m = from.as_str();
            while m != to {
                m = prev[m];
                path.push(m);
            }
            path.reverse(); // to .. from
            let mut cycle: Vec<&str> = std::iter::once(from.as_str())
                .chain(path.into_iter().take_while(|m| *m != from.as_str()))
                .collect();
            let smallest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(smallest);
            cycle.push(cycle[0]);
            out.insert(cycle.join(" -> "));
        }
    }
    out
}

#[test]
fn the_scanner_reads_paths_not_comments_or_strings() {
    let code = strip_comments_and_strings(
        "use crate::a::X; // crate::b\n/* crate::c */ let s = \"crate::d\"; let r = r#\"crate::e\"#;\n\
         use crate::{f::{G, H}, g, self};\nfn x<'a>(c: char) -> bool { c == '\"' || crate::h::y() }\n",
    );
    assert_eq!(
        crate_references(&code),
        ["a", "f", "g", "h"].map(String::from).into_iter().collect()
    );
    let code = "fn a() { crate::x::y() }\n#[cfg(test)]\nmod tests { use crate::z; fn f() { {} } }\nfn b() { crate::w::v() }\n";
    assert_eq!(
        crate_references(&strip_test_modules(code)),
        ["w", "x"].map(String::from).into_iter().collect()
    );
    assert_eq!(
        test_module_files("#[cfg(test)]\npub(crate) mod testserver;\n#[cfg(test)]\nmod tests { }"),
        ["testserver"]
    );
}

#[test]
fn cycles_are_named_from_their_smallest_module() {
    let mut g = Graph::new();
    for (a, b) in [
        ("profile", "notify"),
        ("notify", "environment"),
        ("environment", "profile"),
        ("deploy", "environment"),
    ] {
        g.entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("{a}.rs"));
        g.entry(b.into()).or_default();
    }
    assert_eq!(
        cycles(&g),
        BTreeSet::from(["environment -> profile -> notify -> environment".to_owned()])
    );
}
