//! cchq's settings files against commcare-cloud's own rendering of them for the same environment
//! (`tests/fixtures/golden/<env>/<host>/`, written by `tests/golden/regenerate`), setting by
//! setting: `localsettings.py` by what Python makes of it (`tests/golden/settings_json.py`, with
//! `python3`), `application.properties` by what Java's `Properties` reads from it.
//!
//! What deliberately differs is listed in [`IGNORED`], with why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cchq_core::environment::{Environment, Vault};
use cchq_core::settings;
use cchq_testsupport::fixtures;
use serde_json::Value as J;

/// The formplayer release the golden files were rendered for (`render_upstream.py`).
const RELEASE: &str = "2026-01-02_03.04";

/// Settings that differ on purpose: `(file, setting, why)`.
const IGNORED: &[(&str, &str, &str)] = &[
    // commcare-cloud's application.properties has lines starting with `//`, meant as comments;
    // Java's Properties has no such comments and reads them as a property named `//` (the last
    // one wins). cchq writes `#` comments.
    (
        "application.properties",
        "//",
        "commcare-cloud's `//` comment lines are a property named `//` to Java",
    ),
];

/// `(environment, host, file)` of every golden file.
fn golden_files() -> Vec<(String, String, PathBuf)> {
    let root = fixtures::golden_root();
    let mut out = Vec::new();
    for env in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        // Host directories only: `programs.json` beside them is golden_programs.rs's.
        for host in std::fs::read_dir(env.path())
            .unwrap()
            .flatten()
            .filter(|h| h.path().is_dir())
        {
            for file in std::fs::read_dir(host.path()).unwrap().flatten() {
                out.push((
                    env.file_name().to_string_lossy().into_owned(),
                    host.file_name().to_string_lossy().into_owned(),
                    file.path(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// The settings a localsettings.py defines, by name (as `settings_json.py` prints them).
fn python_settings(path: &Path) -> BTreeMap<String, J> {
    let out = Command::new("python3")
        .arg(fixtures::repo().join("tests/golden/settings_json.py"))
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The properties Java's `Properties.load` reads from `text` (comments `#`/`!`, separators `=`,
/// `:` or white space, backslash escapes and continued lines).
fn java_properties(text: &str) -> BTreeMap<String, J> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let mut logical = first.trim_start().to_owned();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        while logical.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1 {
            logical.pop();
            match lines.next() {
                Some(next) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (mut key, mut value, mut in_key) = (String::new(), String::new(), true);
        let mut chars = logical.chars().peekable();
        while let Some(c) = chars.next() {
            let c = if c == '\\' {
                match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('f') => '\u{c}',
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap_or('\u{fffd}')
                    }
                    Some(other) => other,
                    None => break,
                }
                .to_string()
                .chars()
                .next()
                .unwrap()
            } else if in_key && (c == '=' || c == ':' || c.is_whitespace()) {
                in_key = false;
                let mut seen_sep = c != ' ' && c != '\t';
                while let Some(&n) = chars.peek() {
                    if n == ' ' || n == '\t' || (!seen_sep && (n == '=' || n == ':')) {
                        seen_sep |= n == '=' || n == ':';
                        chars.next();
                    } else {
                        break;
                    }
                }
                continue;
            } else {
                c
            };
            if in_key { key.push(c) } else { value.push(c) }
        }
        out.insert(key, J::String(value));
    }
    out
}

fn vault(env: &Environment) -> Option<cchq_core::Value> {
    match &env.vault {
        Vault::Plain(v) => Some(v.clone()),
        _ => None,
    }
}

#[test]
fn cchq_writes_the_settings_commcare_cloud_writes() {
    let fixtures = fixtures::environments();
    let tmp = tempfile::tempdir().unwrap();
    let files = golden_files();
    assert!(
        files.len() >= 8,
        "the golden files are missing: run tests/golden/regenerate"
    );
    let mut problems = Vec::new();
    for (env_name, host, golden) in &files {
        let name = golden.file_name().unwrap().to_string_lossy().into_owned();
        let env = Environment::load(&fixtures, env_name).unwrap();
        let v = vault(&env);
        let rendered = settings::render_for_host(&env, host, v.as_ref(), Some(RELEASE))
            .unwrap_or_else(|e| panic!("{env_name} {host}: {e}"));
        let ours = rendered
            .iter()
            .find(|f| f.relative_path == name)
            .unwrap_or_else(|| panic!("{env_name} {host}: cchq writes no {name}"));
        let (expected, got) = if name == "localsettings.py" {
            let path = tmp.path().join(format!("{env_name}-{host}.py"));
            std::fs::write(&path, &ours.contents).unwrap();
            (python_settings(golden), python_settings(&path))
        } else {
            (
                java_properties(&std::fs::read_to_string(golden).unwrap()),
                java_properties(&ours.contents),
            )
        };
        let ignored = |k: &str| IGNORED.iter().any(|(f, s, _)| *f == name && *s == k);
        for key in expected
            .keys()
            .chain(got.keys().filter(|k| !expected.contains_key(*k)))
        {
            if ignored(key) {
                continue;
            }
            match (expected.get(key), got.get(key)) {
                (Some(e), Some(g)) if e == g => {}
                (e, g) => problems.push(format!(
                    "{env_name} {host} {name}: `{key}`: expected {}, got {}",
                    e.map_or("(not set)".into(), J::to_string),
                    g.map_or("(not set)".into(), J::to_string)
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn java_properties_are_read_as_java_reads_them() {
    let p = java_properties(
        "# c\n! c\na=1\nb : 2\nc 3\nd\n// x y\nlong=one \\\n    two\ne=\\u00e9\\n\n",
    );
    assert_eq!(p["a"], "1");
    assert_eq!(p["b"], "2");
    assert_eq!(p["c"], "3");
    assert_eq!(p["d"], "");
    assert_eq!(p["//"], "x y");
    assert_eq!(p["long"], "one two");
    assert_eq!(p["e"], "é\n");
}
