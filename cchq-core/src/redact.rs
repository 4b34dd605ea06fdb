//! Hiding secrets in what cchq shows: messages, errors and diffs.
//!
//! - [`mask`] replaces known secret values in a text by [`MASK`];
//! - [`Masker`] also masks the value of any assignment whose key is a vault key or looks secret,
//!   and errors ([`Masker::mask_error`]);
//! - [`public_vault`] is the vault with every value replaced by a placeholder, so settings
//!   rendered from it are public by construction, and [`masked_diff`] the diff of a settings file
//!   built on it (see "Secrets" in `docs/ARCHITECTURE.md`); [`show_placeholders`] prints the
//!   placeholders as [`MASK`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::error::Error;
use crate::{Value, yaml};

/// What [`mask`] replaces secrets with.
pub const MASK: &str = "********";

const MIN_MASKED_LEN: usize = 4;

/// `text` with every occurrence of each secret replaced by `********`. Secrets shorter than 4 characters are left
/// alone (masking them would mangle ordinary words). Where occurrences overlap (one secret inside or across another,
/// or a secret overlapping itself), the whole overlapping stretch becomes one `********`, so a longer secret is
/// never partly revealed by masking a shorter one first.
pub fn mask(text: &str, secrets: &[&str]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for secret in secrets
        .iter()
        .filter(|s| s.chars().count() >= MIN_MASKED_LEN)
    {
        let mut from = 0;
        while let Some(i) = text[from..].find(secret) {
            let start = from + i;
            ranges.push((start, start + secret.len()));
            // Step one character on, to find overlapping occurrences too.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if ranges.is_empty() {
        return text.to_owned();
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (start, end) in merged {
        out.push_str(&text[pos..start]);
        out.push_str(MASK);
        pos = end;
    }
    out.push_str(&text[pos..]);
    out
}

/// Every secret string in the vault, for masking output (values of 4 characters or more).
pub fn secret_values(vault: Option<&Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => m.values().for_each(|x| walk(x, out)),
            Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            other => {
                if let Some(s) = yaml::scalar_to_string(other).filter(|s| s.len() >= 4) {
                    out.push(s);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(v) = vault {
        walk(v, &mut out);
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// The names of the vault's keys that hold scalars, at any depth (`SECRET_KEY`, `password`): a
/// settings line assigning one of them is masked in diffs even when its old value is no longer in
/// the vault (a rotated secret).
pub fn secret_keys(vault: Option<&Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, x) in m {
                    match x {
                        Value::Mapping(_) | Value::Sequence(_) => walk(x, out),
                        _ => out.extend(yaml::scalar_to_string(k)),
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(v) = vault {
        walk(v, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// How every placeholder of [`public_vault`] begins.
pub const PLACEHOLDER_PREFIX: &str = "__CCHQ_SECRET_";

/// A placeholder of [`public_vault`], or of a masked line of [`masked_diff`].
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"__CCHQ_(?:SECRET|OLD)_[0-9]+__").expect("a valid regular expression")
});

/// The vault with every secret replaced by a unique placeholder, `__CCHQ_SECRET_<n>__`: every
/// non-empty string and every number, at any depth, and every tagged value. Keys, `true`/`false`,
/// `null` and empty strings stay (they hold nothing secret, and `{{#if}}` in a template then takes
/// the same branch). Settings rendered from it ([`crate::settings::SettingsRenderer`]) hold no secret whatever
/// the template does with one (quoting, escaping, references in other values): their text is
/// public by construction, and a placeholder shows where a secret went.
pub fn public_vault(vault: Option<&Value>) -> Option<Value> {
    fn walk(v: &Value, n: &mut usize) -> Value {
        let mut next = || {
            *n += 1;
            Value::String(format!("{PLACEHOLDER_PREFIX}{n}__"))
        };
        match v {
            Value::Mapping(m) => {
                Value::Mapping(m.iter().map(|(k, x)| (k.clone(), walk(x, n))).collect())
            }
            Value::Sequence(s) => Value::Sequence(s.iter().map(|x| walk(x, n)).collect()),
            Value::String(s) if s.is_empty() => v.clone(),
            Value::String(_) | Value::Number(_) | Value::Tagged(_) => next(),
            Value::Bool(_) | Value::Null => v.clone(),
        }
    }
    vault.map(|v| walk(v, &mut 0))
}

/// `text` with every placeholder (of [`public_vault`] or a masked line) shown as `********`.
pub fn show_placeholders(text: &str) -> String {
    PLACEHOLDER.replace_all(text, MASK).into_owned()
}

static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<q>['"]?)(?P<sep>\s*[=:]\s*)(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,}\]{\[(][^\s,}\]]*)"#,
    )
    .expect("valid regex")
});

static SENSITIVE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(password|passwd|secret|token|credential|private|api_?key|access_?key)|_key$")
        .expect("valid regex")
});

/// Hides secrets in text: every secret value, and the value of any assignment (`KEY = value`,
/// `key=value`, `'key': value`) whose key is a vault key or looks secret (`password`, `secret`,
/// `token`, `..._key`), so that an old value no longer in the vault is hidden too.
#[derive(Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
    keys: BTreeSet<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("secrets", &self.secrets.len())
            .field("keys", &self.keys)
            .finish()
    }
}

impl Masker {
    /// A masker for the secrets of `vault`.
    pub fn new(vault: Option<&Value>) -> Self {
        Self {
            secrets: secret_values(vault),
            keys: secret_keys(vault).into_iter().collect(),
        }
    }

    /// A masker for these values and keys.
    pub fn with(secrets: Vec<String>, keys: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets,
            keys: keys.into_iter().collect(),
        }
    }

    /// Adds keys to mask the values of.
    pub fn add_keys(&mut self, keys: impl IntoIterator<Item = String>) {
        self.keys.extend(keys);
    }

    /// The secret values.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// `text` with secrets masked.
    pub fn mask(&self, text: &str) -> String {
        let refs: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let text = mask(text, &refs);
        ASSIGNMENT
            .replace_all(&text, |c: &regex::Captures<'_>| {
                let key = &c["key"];
                let last = key.rsplit('.').next().unwrap_or(key);
                if self.keys.contains(key)
                    || self.keys.contains(last)
                    || SENSITIVE_KEY.is_match(key)
                {
                    let val = &c["val"];
                    let masked = match val.chars().next() {
                        Some(q @ ('\'' | '"')) => format!("{q}{}{q}", MASK),
                        _ => MASK.to_owned(),
                    };
                    format!("{key}{}{}{masked}", &c["q"], &c["sep"])
                } else {
                    c[0].to_owned()
                }
            })
            .into_owned()
    }

    /// The keys in `text` whose assigned value holds a secret (`SECRET_KEY = '<secret>'`).
    pub fn keys_of_secret_lines(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| self.secrets.iter().any(|s| l.contains(s.as_str())))
        {
            for c in ASSIGNMENT.captures_iter(line) {
                if self
                    .secrets
                    .iter()
                    .any(|s| s.chars().count() >= 4 && c["val"].contains(s.as_str()))
                {
                    out.push(c["key"].to_owned());
                }
            }
        }
        out
    }
}

/// The start of an assignment on a line of an old settings file: indentation, the key (maybe
/// quoted: a dict entry), the separator; the value is what follows.
static LINE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<head>\s*['"]?[A-Za-z_][A-Za-z0-9_.\-]*['"]?\s*[=:]\s*)(?P<val>.*)$"#)
        .expect("valid regex")
});

/// `line` (of a file on a host, not known to be public) with only its key kept: `KEY = '<token>'`
/// for an assignment (the value's quote kept), else the whole line a token; blank lines stay.
fn mask_line(line: &str, token: &str) -> String {
    let body = line.trim_end_matches(['\n', '\r']);
    let end = &line[body.len()..];
    if body.trim().is_empty() {
        return line.to_owned();
    }
    let masked = match LINE_KEY.captures(body) {
        Some(c) => {
            let val = &c["val"];
            let q = val
                .chars()
                .next()
                .filter(|q| matches!(q, '\'' | '"') && val.len() > 1 && val.ends_with(*q));
            match q {
                Some(q) => format!("{}{q}{token}{q}", &c["head"]),
                None => format!("{}{token}", &c["head"]),
            }
        }
        None => token.to_owned(),
    };
    masked + end
}

/// The changed stretches between `real` and `public` lines: `(real lines, public lines)`, one
/// pair per line where both sides have as many lines (what `{{py}}` and every escaping template
/// gives), else one pair for the whole stretch.
fn secret_blocks<'a>(real: &[&'a str], public: &[&'a str]) -> Vec<(Vec<&'a str>, Vec<&'a str>)> {
    let mut out = Vec::new();
    let mut pending: Option<(std::ops::Range<usize>, std::ops::Range<usize>)> = None;
    let flush = |p: Option<(std::ops::Range<usize>, std::ops::Range<usize>)>, out: &mut Vec<_>| {
        let Some((r, p)) = p else { return };
        if r.len() == p.len() {
            out.extend(r.zip(p).map(|(i, j)| (vec![real[i]], vec![public[j]])));
        } else if !r.is_empty() {
            out.push((real[r].to_vec(), public[p].to_vec()));
        }
    };
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, real, public) {
        if let similar::DiffOp::Equal { .. } = op {
            flush(pending.take(), &mut out);
            continue;
        }
        let (r, p) = (op.old_range(), op.new_range());
        pending = Some(match pending.take() {
            Some((r0, p0)) => (r0.start..r.end.max(r0.end), p0.start..p.end.max(p0.end)),
            None => (r, p),
        });
    }
    flush(pending, &mut out);
    out
}

/// `old` (a file on a host) as it can be shown next to `public`: each stretch of it that is what
/// the vault renders now becomes its public rendering, each line that is public text (a line of
/// `public`) stays, and every other line (an old secret, a removed key, a hand edit: anything
/// not known to be public) keeps only its key (`KEY = '__CCHQ_OLD_<n>__'`).
fn public_old(old: &str, real: &str, public: &str) -> String {
    let o: Vec<&str> = old.split_inclusive('\n').collect();
    let r: Vec<&str> = real.split_inclusive('\n').collect();
    let p: Vec<&str> = public.split_inclusive('\n').collect();
    let public_lines: BTreeSet<&str> = p.iter().copied().collect();
    let mut used = vec![false; o.len()];
    let mut replaced: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (rb, pb) in secret_blocks(&r, &p) {
        let at = (0..=o.len().saturating_sub(rb.len())).find(|&i| {
            i + rb.len() <= o.len()
                && rb
                    .iter()
                    .enumerate()
                    .all(|(j, l)| !used[i + j] && o[i + j] == *l)
        });
        if let Some(i) = at {
            used[i..i + rb.len()].iter_mut().for_each(|u| *u = true);
            replaced.insert(i, pb);
        }
    }
    let mut out = String::with_capacity(old.len());
    for (i, line) in o.iter().enumerate() {
        if let Some(pb) = replaced.get(&i) {
            pb.iter().for_each(|l| out.push_str(l));
        } else if used[i] {
            // The rest of a stretch replaced above.
        } else if public_lines.contains(line) {
            out.push_str(line);
        } else {
            out.push_str(&mask_line(line, &format!("__CCHQ_OLD_{i}__")));
        }
    }
    out
}

/// A unified diff of `old` (the file on the host, `None`: none) and the file rendered from the
/// vault (`real`), with no secret in it by construction: the new side is `public`, the same file
/// rendered with every vault value replaced by a placeholder ([`public_vault`]), and the
/// old side keeps only what is public (`public_old`); placeholders show as `********`. Empty when
/// the host has `real`. A change of a secret shows as its key's line, masked, on both sides.
pub fn masked_diff(
    old: Option<&str>,
    real: &str,
    public: &str,
    old_label: &str,
    new_label: &str,
) -> String {
    if old == Some(real) {
        return String::new();
    }
    let old = old.map(|o| public_old(o, real, public)).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(old.as_str(), public);
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string();
    if text.is_empty() {
        // Different only where no line can tell (a line of the vault moved, line endings).
        text = format!(
            "--- {old_label}\n+++ {new_label}\n@@ differs in secret values only (masked) @@\n"
        );
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    show_placeholders(&text)
}

impl Masker {
    /// `e` with secrets masked in its message and hint (its kind and details kept; not its
    /// source, which would show them: see [`Error::redacted`]).
    pub fn mask_error(&self, e: &Error) -> Error {
        e.redacted(|text| self.mask(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_replaces_secrets() {
        assert_eq!(
            mask("user=bob pass=hunter22 again hunter22", &["hunter22"]),
            "user=bob pass=******** again ********"
        );
        assert_eq!(mask("abc abc", &["abc", ""]), "abc abc");
        // Longest first: the short secret inside the long one does not leave a piece of it behind.
        assert_eq!(
            mask("x secret123 y secret z", &["secret", "secret123"]),
            "x ******** y ******** z"
        );
        assert_eq!(
            mask("x secret123 y", &["secret123", "t123"]),
            "x ******** y"
        );
        // Overlapping secrets are masked as one stretch; adjacent ones separately.
        assert_eq!(mask("abcdefghi", &["abcdef", "defghi"]), "********");
        assert_eq!(mask("aaaaa", &["aaaa"]), "********");
        assert_eq!(mask("pass1pass2", &["pass1", "pass2"]), "****************");
        assert_eq!(
            mask("mot de passe: clé€secrète!", &["clé€secrète"]),
            "mot de passe: ********!"
        );
        assert_eq!(mask("nothing here", &["hunter22"]), "nothing here");
    }

    /// Every secret of the vault becomes a unique placeholder; what holds nothing secret stays.
    #[test]
    fn the_public_vault_holds_placeholders_for_every_secret() {
        let vault: Value =
            yaml_serde::from_str("A: s\nB: 12\nC: true\nD: null\nE: ''\nF: [x, {G: y}]\nH: !t z\n")
                .unwrap();
        let public = public_vault(Some(&vault)).unwrap();
        let text = yaml_serde::to_string(&public).unwrap();
        assert_eq!(
            text,
            "A: __CCHQ_SECRET_1__\nB: __CCHQ_SECRET_2__\nC: true\nD: null\nE: ''\nF:\n- __CCHQ_SECRET_3__\n- G: __CCHQ_SECRET_4__\nH: __CCHQ_SECRET_5__\n"
        );
        assert_eq!(
            show_placeholders("a '__CCHQ_SECRET_12__' __CCHQ_OLD_3__ __CCHQ_SECRET__"),
            "a '********' ******** __CCHQ_SECRET__"
        );
        assert_eq!(public_vault(None), None);
    }

    /// The old side of a diff keeps only what is public by construction.
    #[test]
    fn the_old_side_keeps_public_lines_and_maps_current_secrets() {
        let real = "A = 1\nS = 'x\\'y'\nB = 2\n";
        let public = "A = 1\nS = '__CCHQ_SECRET_1__'\nB = 2\n";
        // The current secret becomes its placeholder: not a change.
        assert_eq!(public_old(real, real, public), public);
        let old = "A = 1\nS = 'old'\nB = 3\n# note SECRET\n\nS = 'x\\'y'\n";
        assert_eq!(
            public_old(old, real, public),
            "A = 1\nS = '__CCHQ_OLD_1__'\nB = __CCHQ_OLD_2__\n__CCHQ_OLD_3__\n\nS = '__CCHQ_SECRET_1__'\n"
        );
        // A rendering without the vault whose lines do not pair with the real one's.
        let (real, public) = ("a=1\ns=x\ny\nb=2\n", "a=1\ns=__CCHQ_SECRET_1__\nb=2\n");
        assert_eq!(public_old(real, real, public), public);
        assert_eq!(
            public_old("a=1\ns=x\nz\nb=2\n", real, public),
            "a=1\ns=__CCHQ_OLD_1__\n__CCHQ_OLD_2__\nb=2\n"
        );
    }
}
