//! Host addresses and host ranges as Ansible reads them (`ansible/parsing/utils/addresses.py` and
//! `expand_hostname_range` in `ansible/plugins/inventory/__init__.py`), plus the few Python string
//! helpers (`str.strip`, `str.splitlines`, `int()`) the inventory parsers need to match Ansible.

use regex::Regex;
use std::sync::LazyLock;

/// The most host names one host pattern may expand to; a guard against `web[0:999999999]`.
pub(crate) const MAX_RANGE_EXPANSION: usize = 100_000;

const NUMERIC_RANGE: &str = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]";
const HEXADECIMAL_RANGE: &str = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]";
const ALPHANUMERIC_RANGE: &str = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]";

static BRACKETED_HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[(.+)\]:([0-9]+)$").expect("valid regex"));

static HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$").expect("valid regex"));

static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    let i4 = format!(r"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{NUMERIC_RANGE})");
    Regex::new(&format!(r"(?i)^(?:{i4}\.){{3}}{i4}$")).expect("valid regex")
});

static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    let c = format!(r"(?:[0-9a-f]{{1,4}}|{HEXADECIMAL_RANGE})");
    // Ansible interpolates the IPv6 component into the IPv4-in-IPv6 variants too; keep that.
    let alts = [
        format!(r"(?:{c}:){{7}}{c}"),
        format!(r"(?:{c}:){{1,6}}:"),
        format!(r"(?:{c}:)(?::{c}){{1,6}}"),
        format!(r"(?:{c}:){{2}}(?::{c}){{1,5}}"),
        format!(r"(?:{c}:){{3}}(?::{c}){{1,4}}"),
        format!(r"(?:{c}:){{4}}(?::{c}){{1,3}}"),
        format!(r"(?:{c}:){{5}}(?::{c}){{1,2}}"),
        format!(r"(?:{c}:){{6}}(?::{c})"),
        format!(r":(?::{c}){{1,6}}"),
        format!(r"{c}?::"),
        format!(r"(?:0:){{6}}(?:{c}\.){{3}}{c}"),
        format!(r"::(?:ffff:)?(?:{c}\.){{3}}{c}"),
        format!(r"(?:0:){{5}}ffff:(?:{c}\.){{3}}{c}"),
    ];
    // Python's `^a|b|c$` anchors only the first alternative at the start and the last at the end;
    // `re.match` anchors every alternative at the start. Reproduce exactly that.
    let n = alts.len();
    let mut pattern = String::from("(?i)^(?:");
    for (k, alt) in alts.iter().enumerate() {
        if k > 0 {
            pattern.push('|');
        }
        pattern.push_str(alt);
        if k == n - 1 {
            pattern.push('$');
        }
    }
    pattern.push(')');
    Regex::new(&pattern).expect("valid regex")
});

static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    let label = format!(r"(?:\w|{ALPHANUMERIC_RANGE})(?:[\w-]|{ALPHANUMERIC_RANGE})*");
    Regex::new(&format!(r"(?i)^{label}(?:\.{label})*$")).expect("valid regex")
});

/// Ansible's hostname rule also forbids a label ending in `-` or `_` (a look-behind the `regex`
/// crate lacks). Labels are separated by `.`, which never occurs inside a range.
fn labels_end_well(address: &str) -> bool {
    let chars: Vec<char> = address.chars().collect();
    chars.iter().enumerate().all(|(i, &c)| {
        let ends_label = i + 1 == chars.len() || chars[i + 1] == '.';
        !(ends_label && (c == '-' || c == '_'))
    })
}

/// `parse_address(address, allow_ranges=True)`: the host part and the optional port.
///
/// `None` when Ansible raises ("Not a valid network hostname").
pub(crate) fn parse_address(address: &str) -> Option<(String, Option<String>)> {
    let mut address = address.to_string();
    let mut port = None;
    for re in [&*BRACKETED_HOSTPORT, &*HOSTPORT] {
        if let Some(c) = re.captures(&address) {
            let host = c[1].to_string();
            port = Some(c[2].to_string());
            address = host;
        }
    }
    let valid = IPV4.is_match(&address)
        || IPV6.is_match(&address)
        || (HOSTNAME.is_match(&address) && labels_end_well(&address));
    if valid && !address.is_empty() {
        Some((address, port))
    } else {
        None
    }
}

/// Python's `str.isspace` for one character (Unicode white space plus the ASCII separators).
pub(crate) fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_whitespace)
}

/// Python's `str.splitlines()`.
pub(crate) fn py_splitlines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !is_break {
            continue;
        }
        lines.push(&text[start..i]);
        let mut next = i + c.len_utf8();
        if let Some(&(j, '\n')) = iter.peek().filter(|_| c == '\r') {
            iter.next();
            next = j + 1;
        }
        start = next;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Python's `int(s)` for base 10: surrounding white space, a sign, digits with single underscores.
pub(crate) fn py_int(s: &str) -> Option<i128> {
    let t = py_strip(s);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(10)?;
        v = v.checked_mul(10)?.checked_add(i128::from(d))?;
    }
    Some(if neg { -v } else { v })
}

/// Python's `str(x).zfill(width)`.
fn zfill(x: i128, width: usize) -> String {
    let digits = x.unsigned_abs().to_string();
    let sign = if x < 0 { "-" } else { "" };
    let pad = width.saturating_sub(digits.len() + sign.len());
    format!("{sign}{}{digits}", "0".repeat(pad))
}

const ASCII_LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Python's `range(start, stop, step)`, bounded by `limit` items.
fn py_range(start: i128, stop: i128, step: i128, limit: usize) -> Result<Vec<i128>, String> {
    if step == 0 {
        return Err("host range step must not be zero".to_string());
    }
    let count = if step > 0 {
        if stop > start {
            (stop - start + step - 1) / step
        } else {
            0
        }
    } else if start > stop {
        (start - stop + (-step) - 1) / (-step)
    } else {
        0
    };
    if count > limit as i128 {
        return Err(format!("host range expands to more than {limit} hosts"));
    }
    Ok((0..count).map(|k| start + k * step).collect())
}

/// `expand_hostname_range`: expands every `[x:y(:z)]` in `line`, left to right, into host names.
///
/// Errors carry Ansible's reason ("host range must be begin:end or begin:end:step", ...).
pub(crate) fn expand_hostname_range(line: &str) -> Result<Vec<String>, String> {
    // Depth-first like Ansible's recursion, but with an explicit stack.
    let mut out = Vec::new();
    let mut stack = vec![line.to_string()];
    while let Some(cur) = stack.pop() {
        if !cur.contains('[') {
            out.push(cur);
            if out.len() > MAX_RANGE_EXPANSION {
                return Err(format!(
                    "host range expands to more than {MAX_RANGE_EXPANSION} hosts"
                ));
            }
            continue;
        }
        let items = expand_first(&cur)?;
        if stack.len() + items.len() > MAX_RANGE_EXPANSION {
            return Err(format!(
                "host range expands to more than {MAX_RANGE_EXPANSION} hosts"
            ));
        }
        stack.extend(items.into_iter().rev());
    }
    Ok(out)
}

/// Expands the first `[...]` of `line` (which contains a `[`).
fn expand_first(line: &str) -> Result<Vec<String>, String> {
    // line.replace('[', '|', 1).replace(']', '|', 1).split('|') must give exactly three parts.
    let replaced = line.replacen('[', "|", 1).replacen(']', "|", 1);
    let parts: Vec<&str> = replaced.split('|').collect();
    if parts.len() != 3 {
        return Err(format!(
            "malformed host range in `{line}`: expected `[begin:end]` or `[begin:end:step]`"
        ));
    }
    let (head, nrange, tail) = (parts[0], parts[1], parts[2]);
    let bounds: Vec<&str> = nrange.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host range `[{nrange}]` must be begin:end or begin:end:step"
        ));
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    let step = bounds.get(2).copied().unwrap_or("1");
    if end.is_empty() {
        return Err(format!("host range `[{nrange}]` must specify an end value"));
    }
    let pad = if beg.starts_with('0') && beg.chars().count() > 1 {
        let rlen = beg.chars().count();
        if rlen != end.chars().count() {
            return Err(format!(
                "host range `[{nrange}]` must specify equal-length begin and end formats"
            ));
        }
        Some(rlen)
    } else {
        None
    };
    let fill = |x: i128| match pad {
        Some(w) => zfill(x, w),
        None => x.to_string(),
    };

    // Alphabetic ranges: indexes into string.ascii_letters (Python's substring `index`).
    let mut items: Vec<String> = Vec::new();
    let mut alpha_done = false;
    if let (Some(i_beg), Some(i_end)) = (ASCII_LETTERS.find(beg), ASCII_LETTERS.find(end)) {
        if i_beg > i_end {
            return Err(format!("host range `[{nrange}]` must have begin <= end"));
        }
        if let Some(st) = py_int(step).filter(|&s| s != 0) {
            let letters: Vec<char> = ASCII_LETTERS.chars().collect();
            // letters[i_beg:i_end + 1:step]
            let (start, stop) = (i_beg as i128, i_end as i128 + 1);
            let idx = if st > 0 {
                py_range(start, stop, st, MAX_RANGE_EXPANSION)?
            } else {
                // A negative step over start < stop selects nothing.
                Vec::new()
            };
            items = idx
                .into_iter()
                .map(|k| letters[k as usize].to_string())
                .collect();
            alpha_done = true;
        }
    }
    if !alpha_done {
        let b = py_int(beg)
            .ok_or_else(|| format!("invalid host range begin `{beg}` in `[{nrange}]`"))?;
        let e =
            py_int(end).ok_or_else(|| format!("invalid host range end `{end}` in `[{nrange}]`"))?;
        let s = py_int(step)
            .ok_or_else(|| format!("invalid host range step `{step}` in `[{nrange}]`"))?;
        let e1 = e
            .checked_add(1)
            .ok_or_else(|| format!("host range end `{end}` is too large"))?;
        items = py_range(b, e1, s, MAX_RANGE_EXPANSION)?
            .into_iter()
            .map(fill)
            .collect();
    }

    Ok(items
        .into_iter()
        .map(|item| format!("{head}{item}{tail}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pa(s: &str) -> Option<(String, Option<String>)> {
        parse_address(s)
    }

    #[test]
    fn addresses() {
        assert_eq!(pa("web1"), Some(("web1".into(), None)));
        assert_eq!(pa("web1:2222"), Some(("web1".into(), Some("2222".into()))));
        assert_eq!(
            pa("10.0.0.1:22"),
            Some(("10.0.0.1".into(), Some("22".into())))
        );
        assert_eq!(pa("fe80::1"), Some(("fe80::1".into(), None)));
        assert_eq!(pa("::1"), Some(("::1".into(), None)));
        assert_eq!(
            pa("[fe80::1]:22"),
            Some(("fe80::1".into(), Some("22".into())))
        );
        assert_eq!(
            pa("web[01:10]:22"),
            Some(("web[01:10]".into(), Some("22".into())))
        );
        assert_eq!(pa("db-[a:f]"), Some(("db-[a:f]".into(), None)));
        assert_eq!(pa("web-"), None);
        assert_eq!(pa("web_.example"), None);
        assert_eq!(pa("a:b:22"), None);
        assert_eq!(pa("webworkers:proxy"), None);
        assert_eq!(pa("!web"), None);
        assert_eq!(pa(""), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            expand_hostname_range("web[01:03]").unwrap(),
            ["web01", "web02", "web03"]
        );
        assert_eq!(
            expand_hostname_range("db-[a:c]").unwrap(),
            ["db-a", "db-b", "db-c"]
        );
        assert_eq!(
            expand_hostname_range("x[1:10:3]y[a:b]").unwrap(),
            [
                "x1ya", "x1yb", "x4ya", "x4yb", "x7ya", "x7yb", "x10ya", "x10yb"
            ]
        );
        assert_eq!(
            expand_hostname_range("x[ab:cd]").unwrap(),
            ["xa", "xb", "xc"]
        );
        assert_eq!(
            expand_hostname_range("x[10:1:-3]").unwrap(),
            ["x10", "x7", "x4"]
        );
        assert_eq!(expand_hostname_range("x[:2]").unwrap(), ["x0", "x1", "x2"]);
        assert_eq!(
            expand_hostname_range("x[5:1]").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(expand_hostname_range("x[a:Z]").unwrap().len(), 52);
        assert!(
            expand_hostname_range("x[Y:b]")
                .unwrap_err()
                .contains("begin <= end")
        );
        assert!(
            expand_hostname_range("x[1]")
                .unwrap_err()
                .contains("begin:end")
        );
        assert!(
            expand_hostname_range("x[1:]")
                .unwrap_err()
                .contains("end value")
        );
        assert!(
            expand_hostname_range("x[01:100]")
                .unwrap_err()
                .contains("equal-length")
        );
        assert!(expand_hostname_range("x[1:5:0]").is_err());
        assert!(expand_hostname_range("x[a:5]").is_err());
        assert!(expand_hostname_range("x[1:2").is_err());
        assert!(expand_hostname_range("x[0:99999999]").is_err());
        assert!(expand_hostname_range("x[0:999][0:999]").is_err());
        assert_eq!(
            expand_hostname_range(&"a[1:1]".repeat(2_000)).unwrap(),
            ["a1".repeat(2_000)]
        );
    }

    #[test]
    fn python_helpers() {
        assert_eq!(
            py_splitlines("a\nb\r\nc\rd\x0ce"),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(py_splitlines("a\n\n"), ["a", ""]);
        assert_eq!(py_splitlines(""), Vec::<&str>::new());
        assert_eq!(py_int(" +1_0 "), Some(10));
        assert_eq!(py_int("-3"), Some(-3));
        assert_eq!(py_int("1__0"), None);
        assert_eq!(py_int("x"), None);
        assert_eq!(zfill(7, 3), "007");
        assert_eq!(zfill(-7, 3), "-07");
        assert_eq!(py_strip("\x1c a \u{a0}"), "a");
    }
}
