//! Host patterns (`--limit`, play `hosts:`) with the semantics of `ansible/inventory/manager.py`.
//!
//! - `split_host_pattern`: a pattern with a comma is split on commas; otherwise, unless the whole
//!   pattern is one address (`fe80::1`, `web[1:3]`, `host:22`), it is split on `:` outside `[...]`
//!   (and on white space). Parts are stripped; empty parts are dropped.
//! - `order_patterns`: plain parts first, then `&` parts, then `!` parts; with no plain part the
//!   base is `all`.
//! - A part that is exactly a host name selects that host. Otherwise the part (without its `&`/`!`)
//!   may end in a subscript `[i]`, `[-i]`, `[a:b]` (inclusive) or `[a:]`, and is matched as a glob
//!   (`fnmatch`: `*`, `?`, `[seq]`, `[!seq]`) or, with a leading `~`, a regular expression anchored
//!   at the start (`re.match`), against every group name (`all` and `ungrouped` included): each
//!   matching group contributes its hosts (`Group.get_hosts()` order). Host names are matched too
//!   when no group matched, or when the part is a regex or contains one of `.?*[`.
//! - Plain parts are unioned in order, `&` parts intersect, `!` parts subtract; the result keeps
//!   the order in which hosts were first added.
//! - A part that matches nothing gives Ansible's warning
//!   `Could not match supplied host pattern, ignoring: <part>`.
//!
//! Deviations, all deliberate: a pattern with no part at all (empty, only commas) is an error where
//! Ansible selects `all`; a whole pattern that selects no host is an error (Ansible plays nothing);
//! Ansible's implicit `localhost` is not created; `~` regexes use the `regex` crate's syntax (no
//! look-around or back-references).

use super::{Inventory, Selection, hint_from_suggestions};
use crate::{Error, Result};
use regex::Regex;
use std::sync::LazyLock;

static PATTERN_WITH_SUBSCRIPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$").expect("valid regex")
});

static COLON_PARTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:[^\s:\[\]]|\[[^\]]*\])+").expect("valid regex"));

/// `split_host_pattern`: the parts of a pattern, stripped, without empty ones.
pub(crate) fn split_host_pattern(pattern: &str) -> Vec<String> {
    split_with_offsets(pattern)
        .into_iter()
        .map(|(_, p)| p.to_string())
        .collect()
}

/// [`split_host_pattern`] with the byte offset of each part in `pattern`.
fn split_with_offsets(pattern: &str) -> Vec<(usize, &str)> {
    let parts: Vec<(usize, &str)> = if pattern.contains(',') {
        let mut at = 0;
        pattern
            .split(',')
            .map(|p| {
                let start = at;
                at += p.len() + 1;
                (start, p)
            })
            .collect()
    } else if super::address::parse_address(pattern).is_some() {
        vec![(0, pattern)]
    } else {
        COLON_PARTS
            .find_iter(pattern)
            .map(|m| (m.start(), m.as_str()))
            .collect()
    };
    parts
        .into_iter()
        .map(|(at, p)| {
            let stripped = p.trim_start_matches(super::address::is_py_whitespace);
            (
                at + p.len() - stripped.len(),
                stripped.trim_end_matches(super::address::is_py_whitespace),
            )
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// The 1-based character position of byte offset `at` in `pattern`, for messages.
fn position(pattern: &str, at: usize) -> usize {
    pattern.get(..at).map_or(at, |s| s.chars().count()) + 1
}

fn malformed(pattern: &str, what: String) -> Error {
    Error::pattern(format!("malformed host pattern `{pattern}`: {what}")).with_hint(
        "close every `[` with `]`; subscripts are `[i]`, `[-i]`, `[a:b]` and `[a:]`, globs `*`, `?` and `[abc]`, a regular expression starts with `~`",
    )
}

/// Refuses what Ansible would silently read as something else: text the split drops (an
/// unclosed `[`, a stray `]`: `webworkers[0` would select every web worker), an empty or nested
/// bracket, and a trailing bracket of digits, `:` and `-` that is not a valid subscript
/// (`web[1:2:3]`, `web[:3]`). Regular-expression parts (`~...`) are checked when compiled.
fn check_syntax(pattern: &str) -> Result<()> {
    let parts = split_with_offsets(pattern);
    if !pattern.contains(',') && super::address::parse_address(pattern).is_none() {
        // What lies between the parts must be separators only.
        let mut prev = 0;
        let spans = COLON_PARTS.find_iter(pattern).map(|m| (m.start(), m.end()));
        for (start, end) in spans.chain(std::iter::once((pattern.len(), pattern.len()))) {
            if let Some((i, c)) = pattern[prev..start]
                .char_indices()
                .find(|&(_, c)| c != ':' && !super::address::is_py_whitespace(c))
            {
                let at = prev + i;
                let what = if c == '[' {
                    {
                        let rest = &pattern[at..];
                        let shown = &rest[..rest
                            .find(|c: char| c == ':' || super::address::is_py_whitespace(c))
                            .unwrap_or(rest.len())];
                        format!(
                            "the `[` at position {} is never closed (`{shown}`)",
                            position(pattern, at)
                        )
                    }
                } else {
                    format!(
                        "the `{c}` at position {} closes nothing",
                        position(pattern, at)
                    )
                };
                return Err(malformed(pattern, what));
            }
            prev = end;
        }
    }
    for (at, part) in parts {
        check_part(pattern, at, part)?;
    }
    Ok(())
}

/// The bracket rules of [`check_syntax`] for one part at byte offset `at`.
fn check_part(pattern: &str, at: usize, part: &str) -> Result<()> {
    let (skip, body) = match part.strip_prefix(['!', '&']) {
        Some(b) => (1, b),
        None => (0, part),
    };
    if body.starts_with('~') {
        return Ok(());
    }
    let base = at + skip;
    let mut open: Option<usize> = None;
    let mut last_content = None;
    for (i, c) in body.char_indices() {
        match (c, open) {
            ('[', None) => open = Some(i),
            ('[', Some(_)) => {
                return Err(malformed(
                    pattern,
                    format!(
                        "the `[` at position {} is inside another `[...]`",
                        position(pattern, base + i)
                    ),
                ));
            }
            (']', None) => {
                return Err(malformed(
                    pattern,
                    format!(
                        "the `]` at position {} closes nothing",
                        position(pattern, base + i)
                    ),
                ));
            }
            (']', Some(o)) => {
                let content = &body[o + 1..i];
                if content.is_empty() || content == "!" {
                    return Err(malformed(
                        pattern,
                        format!(
                            "the brackets `{}` at position {} are empty",
                            &body[o..=i],
                            position(pattern, base + o)
                        ),
                    ));
                }
                last_content = Some((o, content));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(o) = open {
        return Err(malformed(
            pattern,
            format!(
                "the `[` at position {} is never closed (`{}`)",
                position(pattern, base + o),
                &body[o..]
            ),
        ));
    }
    if let Some((o, content)) = last_content
        && body.ends_with(']')
        && content
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '-')
        && split_subscript(body).1.is_none()
    {
        return Err(malformed(
            pattern,
            format!(
                "`{}` at position {} is not a subscript",
                &body[o..],
                position(pattern, base + o)
            ),
        ));
    }
    Ok(())
}

/// `order_patterns`: plain parts, then `&` parts, then `!` parts; `all` when there is no plain part.
fn order_patterns(parts: Vec<String>) -> Vec<String> {
    let mut regular = Vec::new();
    let mut intersection = Vec::new();
    let mut exclude = Vec::new();
    for p in parts {
        if p.starts_with('!') {
            exclude.push(p);
        } else if p.starts_with('&') {
            intersection.push(p);
        } else {
            regular.push(p);
        }
    }
    if regular.is_empty() {
        regular.push(super::ALL.to_string());
    }
    regular
        .into_iter()
        .chain(intersection)
        .chain(exclude)
        .collect()
}

/// A parsed subscript: `[i]` or `[start:end]` (`end` `None` for `[start:]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscript {
    Index(i64),
    Range(i64, Option<i64>),
}

fn parse_i64_saturating(s: &str) -> i64 {
    match s.parse::<i64>() {
        Ok(v) => v,
        Err(_) if s.starts_with('-') => i64::MIN,
        Err(_) => i64::MAX,
    }
}

/// `_split_subscript`: the pattern without its subscript, the subscript, and a deprecation warning
/// for the `[x-y]` form.
fn split_subscript(pattern: &str) -> (String, Option<Subscript>, Option<String>) {
    if pattern.starts_with('~') {
        return (pattern.to_string(), None, None);
    }
    let Some(c) = PATTERN_WITH_SUBSCRIPT.captures(pattern) else {
        return (pattern.to_string(), None, None);
    };
    let expr = c[1].to_string();
    if let Some(idx) = c.get(2) {
        return (
            expr,
            Some(Subscript::Index(parse_i64_saturating(idx.as_str()))),
            None,
        );
    }
    let start = parse_i64_saturating(&c[3]);
    let end = c
        .get(5)
        .map(|m| m.as_str())
        .filter(|e| !e.is_empty())
        .map(parse_i64_saturating);
    let warning = (&c[4] == "-").then(|| {
        "Use [x:y] inclusive subscripts instead of [x-y] which has been removed".to_string()
    });
    (expr, Some(Subscript::Range(start, end)), warning)
}

/// `_apply_subscript`; `None` is Python's `IndexError`.
fn apply_subscript(hosts: Vec<u32>, subscript: Option<Subscript>) -> Option<Vec<u32>> {
    let Some(sub) = subscript else {
        return Some(hosts);
    };
    if hosts.is_empty() {
        return Some(hosts);
    }
    let len = hosts.len() as i64;
    let index = |i: i64| -> Option<Vec<u32>> {
        let i = if i < 0 { i.checked_add(len)? } else { i };
        if (0..len).contains(&i) {
            Some(vec![hosts[i as usize]])
        } else {
            None
        }
    };
    match sub {
        Subscript::Index(i) => index(i),
        // `if end:` is false for 0, so `[x:0]` is the single index x.
        Subscript::Range(start, Some(0)) => index(start),
        Subscript::Range(start, end) => {
            let end = end.unwrap_or(len - 1);
            // hosts[start:end + 1], Python slice clamping (start and end are never negative).
            let lo = start.clamp(0, len) as usize;
            let hi = end.saturating_add(1).clamp(0, len) as usize;
            Some(if lo < hi {
                hosts[lo..hi].to_vec()
            } else {
                Vec::new()
            })
        }
    }
}

/// One token of an `fnmatch` glob.
#[derive(Debug, Clone)]
enum GlobTok {
    Star,
    Any,
    Lit(char),
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// Python's `fnmatch.translate`, compiled into tokens (matching is case-sensitive and anchored at
/// both ends, like `re.match` on the translated pattern).
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    toks: Vec<GlobTok>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        let p: Vec<char> = pattern.chars().collect();
        let n = p.len();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < n {
            let c = p[i];
            i += 1;
            match c {
                '*' => {
                    if !matches!(toks.last(), Some(GlobTok::Star)) {
                        toks.push(GlobTok::Star);
                    }
                }
                '?' => toks.push(GlobTok::Any),
                '[' => {
                    let mut j = i;
                    if j < n && p[j] == '!' {
                        j += 1;
                    }
                    if j < n && p[j] == ']' {
                        j += 1;
                    }
                    while j < n && p[j] != ']' {
                        j += 1;
                    }
                    if j >= n {
                        toks.push(GlobTok::Lit('['));
                        continue;
                    }
                    let stuff = &p[i..j];
                    i = j + 1;
                    let (negated, body) = match stuff.first() {
                        Some('!') => (true, &stuff[1..]),
                        _ => (false, stuff),
                    };
                    let mut items = Vec::new();
                    let mut k = 0;
                    while k < body.len() {
                        let a = body[k];
                        if k + 2 < body.len() && body[k + 1] == '-' {
                            let b = body[k + 2];
                            // An empty range (z-a) matches nothing, as fnmatch removes it.
                            if a <= b {
                                items.push((a, b));
                            }
                            k += 3;
                        } else {
                            items.push((a, a));
                            k += 1;
                        }
                    }
                    toks.push(GlobTok::Class { negated, items });
                }
                c => toks.push(GlobTok::Lit(c)),
            }
        }
        Glob { toks }
    }

    fn tok_matches(tok: &GlobTok, c: char) -> bool {
        match tok {
            GlobTok::Any => true,
            GlobTok::Lit(l) => *l == c,
            GlobTok::Class { negated, items } => {
                items.iter().any(|&(a, b)| a <= c && c <= b) != *negated
            }
            GlobTok::Star => unreachable!("stars are handled by the matcher"),
        }
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        // Classic wildcard matching with one backtrack point; `si` is a byte offset into `s`.
        let (mut ti, mut si) = (0usize, 0usize);
        let mut backtrack: Option<(usize, usize)> = None;
        loop {
            if ti < self.toks.len() {
                match &self.toks[ti] {
                    GlobTok::Star => {
                        backtrack = Some((ti, si));
                        ti += 1;
                        continue;
                    }
                    tok => {
                        if let Some(c) = s[si..]
                            .chars()
                            .next()
                            .filter(|&c| Self::tok_matches(tok, c))
                        {
                            ti += 1;
                            si += c.len_utf8();
                            continue;
                        }
                    }
                }
            } else if si == s.len() {
                return true;
            }
            match backtrack {
                Some((bt, bs)) if bs < s.len() => {
                    let next = bs + s[bs..].chars().next().map_or(1, char::len_utf8);
                    backtrack = Some((bt, next));
                    ti = bt + 1;
                    si = next;
                }
                _ => return false,
            }
        }
    }

    /// Whether the glob is a plain name (matches only itself).
    fn literal(&self) -> Option<String> {
        self.toks
            .iter()
            .map(|t| match t {
                GlobTok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}

enum Matcher {
    Glob(Glob),
    Regex(Regex),
}

impl Matcher {
    fn new(pattern: &str) -> Result<Matcher> {
        match pattern.strip_prefix('~') {
            Some(re) => {
                let compiled = Regex::new(re).map_err(|e| {
                    Error::pattern(format!(
                        "invalid regular expression in host pattern `{pattern}`: {e}"
                    ))
                    .with_source(e)
                })?;
                Ok(Matcher::Regex(compiled))
            }
            None => Ok(Matcher::Glob(Glob::new(pattern))),
        }
    }

    fn is_match(&self, s: &str) -> bool {
        match self {
            Matcher::Glob(g) => g.is_match(s),
            // re.match: anchored at the start only. The leftmost match starts at 0 if any does.
            Matcher::Regex(r) => r.find(s).is_some_and(|m| m.start() == 0),
        }
    }
}

impl Inventory {
    /// Selects hosts with an Ansible host pattern (`--limit`), e.g. `webworkers`, `web*:!web3`,
    /// `all:&celery`, `~db[0-9]+`, `webworkers[0]`, `postgresql[1:]`, `10.0.0.1,10.0.0.2`.
    ///
    /// Errors: a malformed pattern (no part, `!`/`&` with nothing after it, a bad regex, an index
    /// out of range), or a pattern that selects no host at all (with a hint naming groups).
    pub fn select(&self, pattern: &str) -> Result<Selection> {
        check_syntax(pattern)?;
        let parts = split_host_pattern(pattern);
        if parts.is_empty() {
            return Err(Error::pattern(format!("empty host pattern `{pattern}`"))
                .with_hint("name a group or host, or `all`"));
        }
        let mut warnings = Vec::new();
        let mut unmatched = Vec::new();
        let mut hosts: Vec<u32> = Vec::new();
        let mut present = vec![false; self.hosts.len()];
        for p in order_patterns(parts) {
            if let Some(&h) = self.host_index.get(&p) {
                if !present[h as usize] {
                    present[h as usize] = true;
                    hosts.push(h);
                }
                continue;
            }
            let (op, body) = match p.chars().next() {
                Some(c @ ('!' | '&')) => (c, &p[1..]),
                _ => (' ', p.as_str()),
            };
            if body.is_empty() {
                return Err(Error::pattern(format!(
                    "`{p}` in host pattern `{pattern}` has nothing after `{op}`"
                ))
                .with_hint(format!("write `{op}group` or `{op}host`")));
            }
            let known = unmatched.len();
            let that = self.match_one_pattern(body, &mut warnings, &mut unmatched)?;
            // Ansible ignores an exclusion that names nothing, with a warning: a misspelt
            // `!web1x` then leaves `web1` selected. cchq refuses it: bad input never widens a
            // selection.
            if op == '!' && unmatched.len() > known {
                let hint = hint_from_suggestions(&self.suggest(&unmatched[known]))
                    .unwrap_or_else(|| self.some_groups());
                return Err(Error::pattern(format!(
                    "`{p}` in host pattern `{pattern}` excludes nothing: no group or host is called `{}`",
                    unmatched[known]
                ))
                .with_hint(format!(
                    "{hint} (an exclusion that matches nothing would leave selected the hosts it was meant to exclude)"
                )));
            }
            match op {
                '!' | '&' => {
                    let mut mark = vec![false; self.hosts.len()];
                    for &h in &that {
                        mark[h as usize] = true;
                    }
                    let keep_marked = op == '&';
                    hosts.retain(|&h| {
                        let keep = mark[h as usize] == keep_marked;
                        if !keep {
                            present[h as usize] = false;
                        }
                        keep
                    });
                }
                _ => {
                    for h in that {
                        if !present[h as usize] {
                            present[h as usize] = true;
                            hosts.push(h);
                        }
                    }
                }
            }
        }
        if hosts.is_empty() {
            let mut err = Error::pattern(format!("pattern `{pattern}` matches no hosts"));
            let suggestions: Vec<&str> = unmatched
                .iter()
                .flat_map(|u: &String| self.suggest(u))
                .collect();
            let hint = hint_from_suggestions(&suggestions).unwrap_or_else(|| self.some_groups());
            err = err.with_hint(hint);
            return Err(err);
        }
        Ok(Selection {
            hosts: hosts
                .into_iter()
                .map(|h| self.host_name(h).to_string())
                .collect(),
            warnings,
        })
    }

    /// The hosts of `base` that `limit` (an operator's `--limit`) also selects, in `base`'s order.
    /// Not `base:&limit`: with a comma in `limit`, Ansible splits the whole at the commas only,
    /// so `webworkers:&web1,db1` is the part `webworkers:&web1` (no such name: ignored) and
    /// `db1`, a host outside the base. `limit` is read whole, as a pattern of its own.
    ///
    /// # Errors
    /// As [`Self::select`] for either pattern, or when no host of `base` is in `limit`.
    pub fn select_within(&self, base: &str, limit: &str) -> Result<Selection> {
        let b = self.select(base)?;
        let l = self.select(limit)?;
        let keep: std::collections::HashSet<&str> = l.hosts.iter().map(String::as_str).collect();
        let hosts: Vec<String> = b
            .hosts
            .iter()
            .filter(|h| keep.contains(h.as_str()))
            .cloned()
            .collect();
        if hosts.is_empty() {
            let some: Vec<&str> = b.hosts.iter().take(5).map(String::as_str).collect();
            return Err(
                Error::pattern(format!("`{limit}` selects none of the hosts of `{base}`"))
                    .with_hint(format!(
                        "they are {}{}",
                        some.join(", "),
                        if b.hosts.len() > some.len() {
                            ", ..."
                        } else {
                            ""
                        }
                    )),
            );
        }
        let mut warnings = b.warnings;
        warnings.extend(l.warnings);
        Ok(Selection { hosts, warnings })
    }

    /// `_match_one_pattern` for a part without its `&`/`!`.
    fn match_one_pattern(
        &self,
        pattern: &str,
        warnings: &mut Vec<String>,
        unmatched: &mut Vec<String>,
    ) -> Result<Vec<u32>> {
        let (expr, subscript, warning) = split_subscript(pattern);
        warnings.extend(warning);
        let hosts = self.enumerate_matches(&expr, warnings, unmatched)?;
        let len = hosts.len();
        apply_subscript(hosts, subscript).ok_or_else(|| {
            Error::pattern(format!(
                "no hosts matched the subscripted pattern `{pattern}`"
            ))
            .with_hint(format!(
                "`{expr}` has {len} host{}; use an index from 0 to {}",
                if len == 1 { "" } else { "s" },
                len.saturating_sub(1)
            ))
        })
    }

    /// `_enumerate_matches`: hosts of matching groups, then matching hosts.
    fn enumerate_matches(
        &self,
        pattern: &str,
        warnings: &mut Vec<String>,
        unmatched: &mut Vec<String>,
    ) -> Result<Vec<u32>> {
        let matcher = Matcher::new(pattern)?;
        let mut results: Vec<u32> = Vec::new();
        let mut matched_group = false;
        let literal = match &matcher {
            Matcher::Glob(g) => g.literal(),
            Matcher::Regex(_) => None,
        };
        match &literal {
            Some(name) => {
                if let Some(&g) = self.group_index.get(name) {
                    matched_group = true;
                    results.extend_from_slice(&self.members[g as usize]);
                }
            }
            None => {
                for (g, group) in self.groups.iter().enumerate() {
                    if matcher.is_match(&group.name) {
                        matched_group = true;
                        results.extend_from_slice(&self.members[g]);
                    }
                }
            }
        }
        let check_hosts =
            !matched_group || pattern.starts_with('~') || pattern.contains(['.', '?', '*', '[']);
        if check_hosts {
            match &literal {
                Some(name) => {
                    if let Some(&h) = self.host_index.get(name) {
                        results.push(h);
                    }
                }
                None => {
                    for (h, host) in self.hosts.iter().enumerate() {
                        if matcher.is_match(&host.name) {
                            results.push(h as u32);
                        }
                    }
                }
            }
        }
        if results.is_empty() && !matched_group && pattern != super::ALL {
            warnings.push(format!(
                "Could not match supplied host pattern, ignoring: {pattern}"
            ));
            unmatched.push(pattern.to_string());
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Inventory;
    use super::super::tests::{dev, test_env};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn sel(inv: &Inventory, p: &str) -> Vec<String> {
        inv.select(p)
            .unwrap_or_else(|e| panic!("{p}: {}", e.message()))
            .hosts
    }

    /// An inventory with overlapping groups, nested children and a host/group name clash.
    const MIXED: &str = "\
[web]
web1
web2
web3
[db]
db1
db2 
web3
[app:children]
web
cache
[cache]
c1.example.com
[deep:children]
app
[solo]
10.0.0.9
";

    fn mixed() -> Inventory {
        Inventory::parse_ini(MIXED, Path::new("mixed.ini")).unwrap()
    }

    #[test]
    fn split_like_ansible() {
        assert_eq!(
            split_host_pattern("a,b[1], c[2:3] , d"),
            ["a", "b[1]", "c[2:3]", "d"]
        );
        assert_eq!(split_host_pattern("a:b:&c:!d"), ["a", "b", "&c", "!d"]);
        assert_eq!(split_host_pattern("web[0:2]"), ["web[0:2]"]);
        assert_eq!(split_host_pattern("web[1:]:db"), ["web[1:]", "db"]);
        assert_eq!(split_host_pattern("fe80::1"), ["fe80::1"]);
        assert_eq!(split_host_pattern("host:22"), ["host:22"]);
        assert_eq!(split_host_pattern("a b"), ["a", "b"]);
        assert_eq!(split_host_pattern("a,,b,"), ["a", "b"]);
        assert_eq!(split_host_pattern(" , "), Vec::<String>::new());
        assert_eq!(
            order_patterns(vec!["!a".into(), "&b".into(), "c".into()]),
            ["c", "&b", "!a"]
        );
        assert_eq!(order_patterns(vec!["!a".into()]), ["all", "!a"]);
    }

    #[test]
    fn subscripts_like_ansible() {
        assert_eq!(split_subscript("web[0]").1, Some(Subscript::Index(0)));
        assert_eq!(split_subscript("web[-1]").1, Some(Subscript::Index(-1)));
        assert_eq!(
            split_subscript("web[1:3]").1,
            Some(Subscript::Range(1, Some(3)))
        );
        assert_eq!(
            split_subscript("web[1:]").1,
            Some(Subscript::Range(1, None))
        );
        assert!(split_subscript("web[1-3]").2.is_some());
        assert_eq!(split_subscript("web[:3]").1, None);
        assert_eq!(split_subscript("web[a]").1, None);
        assert_eq!(split_subscript("~web[0]").1, None);
        let h = vec![10, 11, 12, 13];
        assert_eq!(
            apply_subscript(h.clone(), Some(Subscript::Index(-1))),
            Some(vec![13])
        );
        assert_eq!(apply_subscript(h.clone(), Some(Subscript::Index(4))), None);
        assert_eq!(
            apply_subscript(h.clone(), Some(Subscript::Range(1, Some(2)))),
            Some(vec![11, 12])
        );
        assert_eq!(
            apply_subscript(h.clone(), Some(Subscript::Range(2, None))),
            Some(vec![12, 13])
        );
        assert_eq!(
            apply_subscript(h.clone(), Some(Subscript::Range(2, Some(0)))),
            Some(vec![12])
        );
        assert_eq!(
            apply_subscript(h.clone(), Some(Subscript::Range(3, Some(1)))),
            Some(vec![])
        );
        assert_eq!(
            apply_subscript(h.clone(), Some(Subscript::Range(1, Some(99)))),
            Some(vec![11, 12, 13])
        );
        assert_eq!(
            apply_subscript(vec![], Some(Subscript::Index(5))),
            Some(vec![])
        );
    }

    #[test]
    fn globs_like_fnmatch() {
        let m = |p: &str, s: &str| Glob::new(p).is_match(s);
        assert!(m("web*", "web"));
        assert!(m("web*", "webworkers"));
        assert!(!m("web*", "aweb"));
        assert!(m("w?b", "wab"));
        assert!(m("*", ""));
        assert!(m("[abc]x", "bx"));
        assert!(!m("[!abc]x", "bx"));
        assert!(m("[a-c]*", "celery"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "a"));
        assert!(m("a[", "a["));
        assert!(m("[a-]", "-"));
        assert!(!m("[z-a]", "z"));
        assert!(m("*.example.com", "c1.example.com"));
        assert!(m("a*b*c", "aXbYbc"));
        assert!(!m("a*b*c", "aXbYb"));
        assert!(!m("Web", "web"));
        assert_eq!(Glob::new("web1").literal().as_deref(), Some("web1"));
        assert_eq!(Glob::new("web*").literal(), None);
    }

    // Expected values below were checked against ansible-core's InventoryManager.get_hosts.
    #[test]
    fn selection_like_ansible() {
        let inv = mixed();
        assert_eq!(
            sel(&inv, "all"),
            [
                "db1",
                "db2",
                "web3",
                "10.0.0.9",
                "web1",
                "web2",
                "c1.example.com"
            ]
        );
        assert_eq!(sel(&inv, "*"), sel(&inv, "all"));
        assert_eq!(sel(&inv, "app"), ["web1", "web2", "web3", "c1.example.com"]);
        assert_eq!(
            sel(&inv, "deep"),
            ["web1", "web2", "web3", "c1.example.com"]
        );
        assert_eq!(sel(&inv, "db:web"), ["db1", "db2", "web3", "web1", "web2"]);
        assert_eq!(sel(&inv, "web:&db"), ["web3"]);
        assert_eq!(sel(&inv, "web:!db"), ["web1", "web2"]);
        assert_eq!(
            sel(&inv, "!db"),
            ["10.0.0.9", "web1", "web2", "c1.example.com"]
        );
        assert_eq!(sel(&inv, "!db:web"), ["web1", "web2"]);
        assert_eq!(sel(&inv, "&db"), ["db1", "db2", "web3"]);
        assert_eq!(sel(&inv, "web[0]"), ["web1"]);
        assert_eq!(sel(&inv, "web[-1]"), ["web3"]);
        assert_eq!(sel(&inv, "web[1:]"), ["web2", "web3"]);
        assert_eq!(sel(&inv, "app[1:2]"), ["web2", "web3"]);
        assert_eq!(sel(&inv, "web[0],db[0]"), ["web1", "db1"]);
        assert_eq!(sel(&inv, "web*"), ["web1", "web2", "web3"]);
        assert_eq!(sel(&inv, "~web[12]"), ["web1", "web2"]);
        assert!(inv.select("~eb").is_err());
        assert_eq!(sel(&inv, "~.*example"), ["c1.example.com"]);
        assert_eq!(sel(&inv, "c1.example.com"), ["c1.example.com"]);
        assert_eq!(sel(&inv, "*.example.com"), ["c1.example.com"]);
        assert_eq!(sel(&inv, "10.0.0.9"), ["10.0.0.9"]);
        assert!(inv.select("ungrouped").is_err());
        assert_eq!(sel(&inv, "solo,web2"), ["10.0.0.9", "web2"]);
        assert_eq!(sel(&inv, "al*"), sel(&inv, "all"));
        assert_eq!(sel(&inv, "db1:db1:db[0]"), ["db1"]);
    }

    #[test]
    fn commcare_environments() {
        let inv = dev();
        assert_eq!(sel(&inv, "django_manage[0]"), ["192.168.33.15"]);
        assert_eq!(
            sel(&inv, "redis:!webworkers"),
            ["192.168.33.16", "192.168.33.17"]
        );
        assert_eq!(sel(&inv, "192.168.33.14"), ["192.168.33.14"]);
        assert_eq!(
            sel(&inv, "control,proxy"),
            ["192.168.33.14", "192.168.33.17"]
        );
        let inv = test_env();
        assert_eq!(sel(&inv, "commcarehq").len(), 7);
        assert_eq!(
            sel(&inv, "commcarehq[2:3]"),
            ["cloud_worker_3", "cloud_worker_4"]
        );
        assert_eq!(
            sel(&inv, "commcarehq:!webworkers:!proxy"),
            ["cloud_worker_1", "cloud_worker_5", "cloud_worker_6"]
        );
        let e = inv.select("control").unwrap_err();
        assert_eq!(e.message(), "pattern `control` matches no hosts");
        assert!(
            e.hint().unwrap().contains("`django_manage`"),
            "{:?}",
            e.hint()
        );
    }

    /// A limit with a comma narrows the base as a whole. Not `base:&a,b`: with a comma, Ansible
    /// splits at the commas only, so that is the part `base:&a` (no such name: ignored) and `b`,
    /// which need not be in the base at all.
    #[test]
    fn a_limit_is_read_whole_within_its_base() {
        let inv = mixed();
        assert_eq!(inv.select("web:&web1,db1").unwrap().hosts, ["db1"]);
        assert_eq!(
            inv.select_within("web", "web1,web2").unwrap().hosts,
            ["web1", "web2"]
        );
        assert_eq!(
            inv.select_within("web", "db1,web3").unwrap().hosts,
            ["web3"]
        );
        assert_eq!(
            inv.select_within("web:db", "web*:!web1").unwrap().hosts,
            ["web2", "web3"]
        );
        let e = inv.select_within("web", "db1").unwrap_err();
        assert!(
            e.message()
                .contains("`db1` selects none of the hosts of `web`"),
            "{e:?}"
        );
        assert!(inv.select_within("web", "nosuch").is_err());
    }

    #[test]
    fn warnings_and_errors() {
        let inv = mixed();
        let s = inv.select("web:nosuch").unwrap();
        assert_eq!(
            s.warnings,
            ["Could not match supplied host pattern, ignoring: nosuch"]
        );
        // An exclusion that matches nothing is refused: it would widen the selection.
        let e = inv.select("web:!nosuch[0]").unwrap_err();
        assert!(
            e.message()
                .contains("`!nosuch[0]` in host pattern `web:!nosuch[0]` excludes nothing"),
            "{e:?}"
        );
        let e = inv.select("web:!web1x").unwrap_err();
        assert!(e.hint().unwrap().contains("did you mean `web1`"), "{e:?}");
        // An empty group excludes nothing, knowingly: that is fine.
        let with_empty =
            Inventory::parse_ini("[web]\nweb1\nweb2\n[empty]\n", Path::new("e.ini")).unwrap();
        assert_eq!(
            with_empty.select("web:!empty").unwrap().hosts,
            ["web1", "web2"]
        );
        let s = inv.select("web[0-1]").unwrap();
        assert_eq!(s.hosts, ["web1", "web2"]);
        assert_eq!(
            s.warnings,
            ["Use [x:y] inclusive subscripts instead of [x-y] which has been removed"]
        );

        let e = inv.select("webb").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Pattern);
        assert_eq!(e.message(), "pattern `webb` matches no hosts");
        assert_eq!(e.hint(), Some("did you mean `web` or `web1` or `web2`?"));
        let e = inv.select("web:!web").unwrap_err();
        assert_eq!(e.message(), "pattern `web:!web` matches no hosts");
        let e = inv.select("").unwrap_err();
        assert_eq!(e.message(), "empty host pattern ``");
        let e = inv.select("web,!").unwrap_err();
        assert!(e.message().contains("nothing after `!`"), "{}", e.message());
        let e = inv.select("~web(").unwrap_err();
        assert!(
            e.message()
                .starts_with("invalid regular expression in host pattern `~web(`"),
            "{}",
            e.message()
        );
        let e = inv.select("web[5]").unwrap_err();
        assert_eq!(
            e.message(),
            "no hosts matched the subscripted pattern `web[5]`"
        );
        assert_eq!(
            e.hint(),
            Some("`web` has 3 hosts; use an index from 0 to 2")
        );
        // `[a]` is an fnmatch class in Ansible, not a subscript: it matches `weba` if there is one.
        assert!(inv.select("web[a]").is_err());
        let inv2 = Inventory::parse_ini("[weba]\nh\n", Path::new("x")).unwrap();
        assert_eq!(sel(&inv2, "web[a]"), ["h"]);
    }

    /// Issue 12: `webworkers[0` selected every web worker (the split dropped the `[`).
    #[test]
    fn malformed_patterns_are_errors_never_wider() {
        let inv = dev();
        for (p, what) in [
            (
                "webworkers[0",
                "the `[` at position 11 is never closed (`[0`)",
            ),
            (
                "webworkers[",
                "the `[` at position 11 is never closed (`[`)",
            ),
            (
                "webworkers[0:proxy",
                "the `[` at position 11 is never closed (`[0`)",
            ),
            (
                "proxy,webworkers[0",
                "the `[` at position 17 is never closed (`[0`)",
            ),
            ("webworkers]", "the `]` at position 11 closes nothing"),
            (
                "proxy:webworkers0]",
                "the `]` at position 18 closes nothing",
            ),
            ("webworkers[]", "the brackets `[]` at position 11 are empty"),
            ("webworkers[[0]]", "the `]` at position 15 closes nothing"),
            (
                "webworkers,x[[0]]",
                "the `[` at position 14 is inside another `[...]`",
            ),
            (
                "webworkers[1:2:3]",
                "`[1:2:3]` at position 11 is not a subscript",
            ),
            ("webworkers[:1]", "`[:1]` at position 11 is not a subscript"),
            (
                "proxy:!webworkers[--1]",
                "`[--1]` at position 18 is not a subscript",
            ),
            (
                "all,!webworkers[0",
                "the `[` at position 16 is never closed (`[0`)",
            ),
        ] {
            let e = inv.select(p).expect_err(p);
            assert_eq!(e.kind(), crate::ErrorKind::Pattern, "{p}");
            assert_eq!(
                e.message(),
                format!("malformed host pattern `{p}`: {what}"),
                "{p}"
            );
            assert!(e.hint().is_some_and(|h| h.contains("`[a:b]`")), "{p}");
        }
        // Still fine: subscripts, globs, classes, regexes.
        assert_eq!(sel(&inv, "webworkers[0]"), ["192.168.33.15"]);
        assert_eq!(sel(&inv, "redis[0:1]").len(), 2);
        assert!(inv.select("~web[a-z]+").is_ok());
        assert_eq!(sel(&inv, "[pr]edis").len(), 3);
        // A regex with an unclosed class is a regex error.
        assert!(
            inv.select("~web[")
                .unwrap_err()
                .message()
                .contains("malformed host pattern")
        );
        assert!(
            inv.select("proxy,~web[")
                .unwrap_err()
                .message()
                .contains("invalid regular expression")
        );
        // Matching nothing stays an error.
        assert_eq!(
            inv.select("nothing[0]").unwrap_err().message(),
            "pattern `nothing[0]` matches no hosts"
        );
    }

    #[test]
    fn host_name_wins_over_group_of_same_name() {
        let inv = Inventory::parse_ini("[web]\nweb\nother\n", Path::new("x")).unwrap();
        assert_eq!(sel(&inv, "web"), ["web"]);
        assert_eq!(sel(&inv, "web*"), ["web", "other"]);
    }

    // ---- properties ----

    fn arb_inventory() -> impl Strategy<Value = Inventory> {
        // Up to 12 hosts, 5 groups with random members and a few random child edges.
        (
            proptest::collection::vec(proptest::collection::vec(0usize..12, 0..6), 5),
            proptest::collection::vec((0usize..5, 0usize..5), 0..4),
            0usize..12,
        )
            .prop_map(|(members, edges, ungrouped)| {
                let mut b = Inventory::builder();
                for g in 0..5 {
                    b.add_group(&format!("g{g}")).unwrap();
                }
                for h in 0..ungrouped.min(3) {
                    b.add_host(&format!("u{h}"), None, None).unwrap();
                }
                for (g, hs) in members.iter().enumerate() {
                    for h in hs {
                        b.add_host(&format!("h{h}"), Some(&format!("g{g}")), None)
                            .unwrap();
                    }
                }
                for (p, c) in edges {
                    // Loops are refused; ignore those edges.
                    let _ = b.add_child(&format!("g{p}"), &format!("g{c}"));
                }
                b.build().unwrap()
            })
    }

    fn term() -> impl Strategy<Value = String> {
        prop_oneof![
            (0usize..5).prop_map(|g| format!("g{g}")),
            (0usize..12).prop_map(|h| format!("h{h}")),
            Just("all".to_string()),
            Just("g*".to_string()),
            Just("h1*".to_string()),
            Just("~g[0-2]".to_string()),
            Just("ungrouped".to_string()),
        ]
    }

    fn set(inv: &Inventory, p: &str) -> BTreeSet<String> {
        inv.select(p)
            .map(|s| s.hosts.into_iter().collect())
            .unwrap_or_default()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn union_is_commutative_and_is_the_union(inv in arb_inventory(), a in term(), b in term()) {
            let ab = set(&inv, &format!("{a}:{b}"));
            prop_assert_eq!(&ab, &set(&inv, &format!("{b}:{a}")));
            let union: BTreeSet<String> = set(&inv, &a).union(&set(&inv, &b)).cloned().collect();
            prop_assert_eq!(ab, union);
        }

        #[test]
        fn intersection_is_a_subset(inv in arb_inventory(), a in term(), b in term()) {
            let both = set(&inv, &format!("{a}:&{b}"));
            prop_assert!(both.is_subset(&set(&inv, &a)));
            prop_assert!(both.is_subset(&set(&inv, &b)));
        }

        #[test]
        fn exclusion_removes(inv in arb_inventory(), a in term(), b in term()) {
            // Selected: exactly a's hosts without b's. Refused: nothing would be left, or b
            // names nothing (an exclusion that excludes nothing is never taken as one).
            let b_hosts = set(&inv, &b);
            let expected: BTreeSet<String> = set(&inv, &a).difference(&b_hosts).cloned().collect();
            match inv.select(&format!("{a}:!{b}")) {
                Ok(s) => prop_assert_eq!(s.hosts.into_iter().collect::<BTreeSet<_>>(), expected),
                Err(_) => prop_assert!(expected.is_empty() || b_hosts.is_empty()),
            }
            let self_excluded = inv.select(&format!("{a}:!{a}"));
            prop_assert!(self_excluded.is_err());
            let all_but: BTreeSet<String> = set(&inv, "all").difference(&b_hosts).cloned().collect();
            for p in [format!("all:!{b}"), format!("!{b}")] {
                match inv.select(&p) {
                    Ok(s) => prop_assert_eq!(s.hosts.into_iter().collect::<BTreeSet<_>>(), all_but.clone()),
                    Err(_) => prop_assert!(all_but.is_empty() || b_hosts.is_empty()),
                }
            }
        }

        #[test]
        fn results_are_unique_and_known(inv in arb_inventory(), parts in proptest::collection::vec(term(), 1..5)) {
            if let Ok(s) = inv.select(&parts.join(",")) {
                let unique: BTreeSet<&String> = s.hosts.iter().collect();
                prop_assert_eq!(unique.len(), s.hosts.len());
                for h in &s.hosts {
                    prop_assert!(inv.host(h).is_some());
                }
            }
        }

        #[test]
        fn all_selects_every_host(inv in arb_inventory()) {
            let all = set(&inv, "all");
            prop_assert_eq!(all.len(), inv.len());
        }

        #[test]
        fn never_panics_on_arbitrary_patterns(p in any::<String>()) {
            let _ = mixed().select(&p);
        }

        #[test]
        fn arbitrary_patterns_select_within_all(inv in arb_inventory(), p in prop_oneof![
            any::<String>(),
            "[gh0-9u:,!&~*?\\[\\]\\- ]{0,16}",
            (term(), "[\\[\\]0-9:,!&-]{0,6}").prop_map(|(t, s)| format!("{t}{s}")),
        ]) {
            let all = set(&inv, "all");
            if let Ok(s) = inv.select(&p) {
                let chosen: BTreeSet<String> = s.hosts.iter().cloned().collect();
                prop_assert_eq!(chosen.len(), s.hosts.len());
                prop_assert!(chosen.is_subset(&all), "{} selected {:?}", p, chosen);
            }
        }

        #[test]
        fn a_malformed_bracket_never_parses(
            inv in arb_inventory(),
            before in proptest::collection::vec(term(), 0..3),
            // A `~` part is a regular expression, whose brackets the regex engine checks.
            t in term().prop_filter("not a regex", |t| !t.starts_with('~')),
            inside in "[0-9:-]{0,4}",
            close in prop_oneof![Just(""), Just("]]"), Just(":1:]"), Just("[")],
            sep in prop_oneof![Just(","), Just(":")],
        ) {
            let mut parts = before;
            parts.push(format!("{t}[{inside}{close}"));
            let p = parts.join(sep);
            let e = inv.select(&p).expect_err(&p);
            prop_assert_eq!(e.kind(), crate::ErrorKind::Pattern);
            let stray = format!("{t}]{inside}");
            prop_assert!(inv.select(&stray).is_err(), "{}", stray);
        }

        #[test]
        fn never_panics_on_pattern_like_text(p in "[a-z0-9:,!&~*?\\[\\]\\-\\.()^$ ]{0,16}") {
            let _ = mixed().select(&p);
        }
    }
}
