//! YAML reading with errors that name the file, line and column, and small helpers over
//! [`Value`]s as Ansible reads them.
//!
//! # YAML 1.1, as Ansible reads it
//!
//! commcare-cloud's environment files are read by Ansible and by commcare-cloud itself with PyYAML,
//! which implements YAML 1.1: a plain (unquoted) `yes`, `no`, `on`, `off` (lower case, capitalized
//! or upper case) is a boolean there, `0755` an octal number, `1_000` a thousand. `yaml_serde`
//! implements YAML 1.2, where they are strings: `EMAIL_USE_TLS: no` would become
//! `EMAIL_USE_TLS = 'no'` in `localsettings.py`, which Python reads as true. [`load`] reads a file
//! as PyYAML's resolver does ([`resolve_plain`]): only plain scalars change, so a quoted `'no'`
//! stays the string `no`, as it does for Ansible. Mapping keys are left as written (the settings
//! context has string keys only: a key `no` read as `False` would render as `'false'`, which is
//! neither what its author meant nor what Ansible renders).
//!
//! `yaml_serde` does not say whether a scalar was quoted; [`load`] finds out from where the scalar's
//! text sits in the input (yaml_serde hands out the value as a slice of the input when it can):
//! the character before a quoted scalar's value is its opening quote. A scalar yaml_serde cannot
//! hand out that way (one with escapes, or folded over lines) is quoted or is not one of the words
//! and numbers that change. Left as yaml_serde reads them: `0o17` and `1e3` (numbers in YAML 1.2,
//! strings for PyYAML) and an explicit `!!bool yes` (an error in yaml_serde).

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::Value;
use crate::error::{Error, Result};

/// Parses `text` (the contents of `path`) into `T` with yaml_serde (YAML 1.2); errors name
/// `path:line:column`. For cchq's own typed files; the environment's Ansible files are read with
/// [`load`].
pub fn from_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let text = if text.trim().is_empty() { "null" } else { text };
    yaml_serde::from_str(text).map_err(|e| located(path, e))
}

/// A yaml_serde error as cchq's, `path:line:column: message`, yaml_serde's as its source.
fn located(path: &Path, e: yaml_serde::Error) -> Error {
    let loc = e.location();
    let msg = e.to_string();
    // yaml_serde appends " at line X column Y"; the location goes in front instead.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    let syntax = ![
        "invalid type",
        "invalid value",
        "missing field",
        "unknown field",
        "unknown variant",
        "duplicate",
    ]
    .iter()
    .any(|p| msg.starts_with(p));
    let e = Error::at(
        path,
        loc.as_ref().map(yaml_serde::Location::line),
        loc.as_ref().map(yaml_serde::Location::column),
        msg,
    )
    .with_source(e);
    if syntax {
        // The parser names where it gave up, often after the mistake itself.
        e.with_hint("fix the YAML there or just before it: an unclosed bracket or quote, a tab, a wrong indentation")
    } else {
        e
    }
}

/// Parses `text` (the contents of `path`) as Ansible does: YAML 1.1, where a plain `yes`/`no`/
/// `on`/`off` is a boolean and `0755` and `1_000` are numbers (see the module's documentation).
/// Errors name `path:line:column`.
pub fn load(text: &str, path: &Path) -> Result<Value> {
    load_value(text).map_err(|e| located(path, e))
}

/// [`load`] without a path: yaml_serde's error as it is (for callers that must not show it whole).
pub(crate) fn load_value(text: &str) -> std::result::Result<Value, yaml_serde::Error> {
    let text = if text.trim().is_empty() { "null" } else { text };
    Node {
        text,
        resolve: true,
    }
    .deserialize(yaml_serde::Deserializer::from_str(text))
}

/// `v` as YAML text that Ansible (YAML 1.1) and [`load`] read back as `v`: a string that a plain
/// scalar would not give back (`no`, `on`, `0755`, `1_000`: [`resolve_plain`]) is written quoted,
/// key or value; yaml_serde alone writes them plain (they are strings in YAML 1.2).
///
/// # Errors
/// yaml_serde's, for a value it cannot write.
pub fn to_string(v: &Value) -> std::result::Result<String, yaml_serde::Error> {
    fn mark(v: &Value, prefix: &str, quoted: &mut Vec<String>) -> Value {
        let mut one = |s: &String| {
            if resolve_plain(s).is_some() {
                quoted.push(s.clone());
                Value::String(format!("{prefix}{}__", quoted.len() - 1))
            } else {
                Value::String(s.clone())
            }
        };
        match v {
            Value::String(s) => one(s),
            Value::Sequence(items) => {
                Value::Sequence(items.iter().map(|x| mark(x, prefix, quoted)).collect())
            }
            Value::Mapping(m) => Value::Mapping(
                m.iter()
                    .map(|(k, x)| (mark(k, prefix, quoted), mark(x, prefix, quoted)))
                    .collect(),
            ),
            Value::Tagged(t) => Value::Tagged(Box::new(yaml_serde::value::TaggedValue {
                tag: t.tag.clone(),
                value: mark(&t.value, prefix, quoted),
            })),
            other => other.clone(),
        }
    }
    // A prefix that no string of `v` holds (so only placeholders are replaced).
    let plain = yaml_serde::to_string(v)?;
    let mut prefix = "__CCHQ_YAML11_".to_owned();
    while plain.contains(&prefix) {
        prefix.push('X');
    }
    let mut quoted = Vec::new();
    let marked = mark(v, &prefix, &mut quoted);
    if quoted.is_empty() {
        return Ok(plain);
    }
    let mut text = yaml_serde::to_string(&marked)?;
    // The words and numbers that need quotes hold no quote, backslash or line break.
    for (i, s) in quoted.iter().enumerate() {
        text = text.replacen(&format!("{prefix}{i}__"), &format!("'{s}'"), 1);
    }
    Ok(text)
}

/// [`load`], then `T` from the value: for a typed file that Ansible also reads. A type error is
/// reported where yaml_serde's own reading of the text places it, when that reading finds the
/// same error.
pub fn load_as<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let value = load(text, path)?;
    yaml_serde::from_value(value).map_err(|e| {
        let msg = e.to_string();
        match from_str::<T>(text, path) {
            Err(at) if at.message().ends_with(&format!(": {msg}")) => at,
            _ => Error::at(path, None, None, msg),
        }
    })
}

/// PyYAML's (YAML 1.1) integers: binary, octal with a leading `0`, decimal and sexagesimal
/// (`1:30` = 90), each with `_` allowed between digits.
static INT_11: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$")
        .expect("a valid regular expression")
});

/// PyYAML's (YAML 1.1) floats, less the infinities and NaNs (which yaml_serde reads alike).
static FLOAT_11: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*)$")
        .expect("a valid regular expression")
});

/// What PyYAML's resolver makes of a plain scalar that yaml_serde reads as the string `s`: a
/// boolean for `yes`/`Yes`/`YES`, `no`, `on`, `off` (not `y`/`n`, which PyYAML leaves strings), a
/// number for YAML 1.1 integers and floats that YAML 1.2 does not have (`0755`, `1_000`, `1:30`,
/// `1_0.5`); `None` when it stays a string.
pub fn resolve_plain(s: &str) -> Option<Value> {
    match s {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(Value::Bool(true)),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(Value::Bool(false)),
        _ => {}
    }
    if INT_11.is_match(s) {
        return int_11(s).map(Value::Number);
    }
    if FLOAT_11.is_match(s) {
        return float_11(s).map(|f| Value::Number(f.into()));
    }
    None
}

/// PyYAML's `construct_yaml_int`.
fn int_11(s: &str) -> Option<yaml_serde::Number> {
    let digits = s.replace('_', "");
    let (negative, digits) = match digits.as_bytes().first() {
        Some(b'-') => (true, &digits[1..]),
        Some(b'+') => (false, &digits[1..]),
        _ => (false, digits.as_str()),
    };
    let magnitude: u64 = if digits == "0" {
        0
    } else if let Some(b) = digits.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()?
    } else if let Some(x) = digits.strip_prefix("0x") {
        u64::from_str_radix(x, 16).ok()?
    } else if let Some(o) = digits.strip_prefix('0') {
        u64::from_str_radix(o, 8).ok()?
    } else if digits.contains(':') {
        digits.split(':').try_fold(0u64, |acc, part| {
            acc.checked_mul(60)?.checked_add(part.parse().ok()?)
        })?
    } else {
        digits.parse().ok()?
    };
    if negative {
        i64::try_from(magnitude).ok().map(|m| (-m).into())
    } else {
        Some(magnitude.into())
    }
}

/// PyYAML's `construct_yaml_float` (for the forms [`FLOAT_11`] matches).
fn float_11(s: &str) -> Option<f64> {
    let text = s.replace('_', "").to_ascii_lowercase();
    let (sign, text) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text.as_str()),
    };
    let value = if text.contains(':') {
        text.split(':').try_fold(0.0, |acc, part| {
            Some(acc * 60.0 + part.parse::<f64>().ok()?)
        })?
    } else {
        text.parse().ok()?
    };
    Some(sign * value).filter(|f: &f64| f.is_finite())
}

/// Whether `s`, a value yaml_serde handed out as a slice of `text`, was a plain scalar without
/// an explicit tag: not preceded by its opening quote, nor by a tag (`!!str no`, `!t &a no`).
fn is_plain_untagged(text: &str, s: &str) -> bool {
    let (base, start) = (text.as_ptr() as usize, s.as_ptr() as usize);
    if start < base || start + s.len() > base + text.len() {
        return false;
    }
    let Some(mut before) = text.get(..start - base) else {
        return false;
    };
    if before.ends_with(['\'', '"']) {
        return false;
    }
    // The node's properties (an anchor and a tag, in either order) come before it.
    for _ in 0..2 {
        let trimmed = before.trim_end_matches([' ', '\t', '\n', '\r']);
        let token_start = trimmed
            .rfind([' ', '\t', '\n', '\r', '[', '{', ','])
            .map_or(0, |i| i + 1);
        let token = &trimmed[token_start..];
        if token.starts_with('!') {
            return false;
        }
        if !token.starts_with('&') {
            break;
        }
        before = &trimmed[..token_start];
    }
    true
}

/// Builds a [`Value`] as yaml_serde does, resolving plain scalars as YAML 1.1 ([`resolve_plain`])
/// when `resolve` (not for mapping keys, nor for a tagged scalar, which its tag gives meaning).
#[derive(Clone, Copy)]
struct Node<'t> {
    text: &'t str,
    resolve: bool,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> std::result::Result<Value, E> {
        Ok(Value::Number(f.into()))
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> std::result::Result<Value, E> {
        if self.resolve
            && is_plain_untagged(self.text, s)
            && let Some(v) = resolve_plain(s)
        {
            return Ok(v);
        }
        Ok(Value::String(s.to_owned()))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Value, E> {
        // Not a slice of the input: quoted with escapes, or folded; never a word that resolves.
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Node {
            resolve: true,
            ..self
        })? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = yaml_serde::Mapping::new();
        while let Some(key) = map.next_key_seed(Node {
            resolve: false,
            ..self
        })? {
            if out.contains_key(&key) {
                let shown = scalar_to_string(&key)
                    .map_or_else(|| "in YAML map".to_owned(), |k| format!("with key {k:?}"));
                return Err(A::Error::custom(format!("duplicate entry {shown}")));
            }
            let value = map.next_value_seed(Node {
                resolve: true,
                ..self
            })?;
            out.insert(key, value);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> std::result::Result<Value, A::Error> {
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(A::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(Node {
            resolve: false,
            ..self
        })?;
        Ok(Value::Tagged(Box::new(yaml_serde::value::TaggedValue {
            tag: yaml_serde::value::Tag::new(tag),
            value,
        })))
    }
}

/// Converts an already-parsed value into `T`; errors name `path`.
pub fn from_value<T: DeserializeOwned>(value: Value, path: &Path) -> Result<T> {
    yaml_serde::from_value(value).map_err(|e| Error::at(path, None, None, &e).with_source(e))
}

/// A scalar as text (`1` -> `"1"`, `true` -> `"true"`); `None` for null, sequences and mappings.
pub fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(t) => scalar_to_string(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// Ansible's truthiness for settings: `yes`/`true`/`on`/`1` (any case) and non-zero numbers.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(
            s.to_ascii_lowercase().as_str(),
            "yes" | "true" | "on" | "1" | "y"
        ),
        Value::Tagged(t) => truthy(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_line_and_column() {
        let err = from_str::<Value>("a: 1\nb: [x\n", Path::new("f.yml")).unwrap_err();
        assert!(err.message().starts_with("f.yml:"), "{err}");
    }

    fn load_str(text: &str) -> Value {
        load(text, Path::new("f.yml")).unwrap()
    }

    /// Issue 13: a plain `yes`/`no`/`on`/`off`, in the cases YAML 1.1 allows, is a boolean; a
    /// quoted one, a tagged one, `y`/`n` and other cases stay strings (as for PyYAML).
    #[test]
    fn plain_yaml_1_1_booleans_are_booleans_quoted_ones_strings() {
        let v = load_str(
            "EMAIL_USE_TLS: no\nX: 'no'\nY: Yes\nZ: off\nQ: \"on\"\nU: YES\nL: [on, 'off', OFF, \"No\"]\n\
             N: {a: NO, b: y, c: n, d: nO, e: yES}\nT: !!str no\nA: &anchor yes\nB: *anchor\nTA: !custom no\n\
             F: false\nTT: True\n'quoted key': on\nno: key stays a string\n",
        );
        let b = Value::Bool;
        let s = |x: &str| Value::String(x.into());
        let want = [
            ("EMAIL_USE_TLS", b(false)),
            ("X", s("no")),
            ("Y", b(true)),
            ("Z", b(false)),
            ("Q", s("on")),
            ("U", b(true)),
            ("T", s("no")),
            ("A", b(true)),
            ("B", b(true)),
            ("F", b(false)),
            ("TT", b(true)),
            ("quoted key", b(true)),
            ("no", s("key stays a string")),
        ];
        for (k, want) in want {
            assert_eq!(v[k], want, "{k}");
        }
        assert_eq!(
            v["L"],
            Value::Sequence(vec![b(true), s("off"), b(false), s("No")])
        );
        let n = &v["N"];
        assert_eq!(
            (&n["a"], &n["b"], &n["c"], &n["d"], &n["e"]),
            (&b(false), &s("y"), &s("n"), &s("nO"), &s("yES"))
        );
        let Value::Tagged(t) = &v["TA"] else {
            panic!("{:?}", v["TA"])
        };
        assert_eq!(
            (t.tag.to_string().as_str(), &t.value),
            ("!custom", &s("no"))
        );
    }

    /// Where yaml_serde cannot hand out a scalar as a slice of the input, it was quoted or is not
    /// a word that changes; text before it (non-ASCII, a BOM, flow collections) does not matter.
    #[test]
    fn resolution_holds_after_multibyte_text_and_in_flow_and_block_forms() {
        let v = load_str(
            "# é 中 ünïcode\nA: \"é\"\nB: no\nC: \"n\\x6f\"\nD: >\n  no\nE: |\n  yes\nF: [é, no]\nG:\n  - off\n  -  on\n",
        );
        assert_eq!(v["B"], Value::Bool(false));
        assert_eq!(v["C"], Value::String("no".into()));
        assert_eq!(v["D"], Value::String("no\n".into()));
        assert_eq!(v["E"], Value::String("yes\n".into()));
        assert_eq!(
            v["F"],
            Value::Sequence(vec![Value::String("é".into()), Value::Bool(false)])
        );
        assert_eq!(
            v["G"],
            Value::Sequence(vec![Value::Bool(false), Value::Bool(true)])
        );
        assert_eq!(load_str("\u{feff}A: no\n")["A"], Value::Bool(false));
        assert_eq!(load_str("no"), Value::Bool(false));
        assert_eq!(load_str(""), Value::Null);
    }

    /// YAML 1.1 numbers that YAML 1.2 reads as strings: octal with a leading 0, `_` between
    /// digits, sexagesimal; what is a string for both stays one.
    #[test]
    fn yaml_1_1_numbers() {
        let v = load_str(
            "a: 0755\nb: 1_000\nc: -0x_1F\nd: 0b1_0\ne: 1:30\nf: 1_0.5\ng: 08\nh: 1:60\ni: 12\nj: '0755'\nk: 99999999999999999999_9\nl: -1:30.5\n",
        );
        let n = |x: i64| Value::Number(x.into());
        assert_eq!(
            (&v["a"], &v["b"], &v["c"], &v["d"], &v["e"]),
            (&n(493), &n(1000), &n(-31), &n(2), &n(90))
        );
        assert_eq!(v["f"], Value::Number(10.5.into()));
        assert_eq!(v["l"], Value::Number((-90.5).into()));
        assert_eq!(
            (&v["g"], &v["h"], &v["j"]),
            (
                &Value::String("08".into()),
                &Value::String("1:60".into()),
                &Value::String("0755".into())
            )
        );
        assert_eq!(v["i"], n(12));
        assert_eq!(
            v["k"],
            Value::String("99999999999999999999_9".into()),
            "too large: kept as written"
        );
    }

    /// What yaml_serde refuses, `load` refuses alike, at the same place.
    #[test]
    fn load_errors_name_the_place_and_duplicates() {
        let e = load("a: 1\nb: [x\n", Path::new("f.yml")).unwrap_err();
        assert!(e.message().starts_with("f.yml:"), "{e}");
        let e = load("a: 1\na: 2\n", Path::new("f.yml")).unwrap_err();
        assert!(
            e.message().contains("duplicate entry with key \"a\""),
            "{e}"
        );
        let e = load("a: !!bool yes\n", Path::new("f.yml")).unwrap_err();
        assert!(e.message().starts_with("f.yml:"), "{e}");
    }

    /// A typed file read as Ansible does: the booleans are booleans, and a type error keeps the
    /// line yaml_serde finds.
    #[test]
    fn load_as_reads_yaml_1_1_and_locates_type_errors() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            flag: bool,
            port: Option<u16>,
        }
        let t: T = load_as("flag: yes\n", Path::new("t.yml")).unwrap();
        assert!(t.flag);
        let e = load_as::<T>("flag: true\nport: many\n", Path::new("t.yml")).unwrap_err();
        assert!(e.message().starts_with("t.yml:2:"), "{e}");
        // yaml_serde's reading stops at `on` first: the file and the error, without a line.
        let e = load_as::<T>("flag: on\nport: many\n", Path::new("t.yml")).unwrap_err();
        assert_eq!(
            e.message(),
            "t.yml: invalid type: string \"many\", expected u16"
        );
        let e = load_as::<T>("flag: on\nother: 1\n", Path::new("t.yml")).unwrap_err();
        assert!(e.message().contains("unknown field `other`"), "{e}");
    }

    /// What `to_string` writes, Ansible's reading and `load` read back as it was: strings that
    /// would resolve are quoted (keys too), everything else is written as yaml_serde writes it.
    #[test]
    fn to_string_quotes_what_yaml_1_1_would_resolve() {
        let v = load_str(
            "a: 'no'\nb: no\n'on': 'x'\nc: ['0755', '1_000', 'y', Yes]\nd: !t 'off'\ne: __CCHQ_YAML11_0__\n",
        );
        let text = to_string(&v).unwrap();
        assert!(
            text.contains("a: 'no'\n") && text.contains("b: false\n") && text.contains("'on': x\n"),
            "{text}"
        );
        assert!(
            text.contains("- '0755'\n- '1_000'\n- y\n- true\n"),
            "{text}"
        );
        assert_eq!(load_str(&text), v, "{text}");
        assert_eq!(
            to_string(&Value::String("plain".into())).unwrap(),
            "plain\n"
        );
    }

    #[test]
    fn truthiness_is_ansibles() {
        for (s, t) in [
            ("yes", true),
            ("no", false),
            ("True", true),
            ("0", false),
            ("on", true),
        ] {
            assert_eq!(truthy(&Value::String(s.into())), t, "{s}");
        }
        assert!(truthy(&Value::Bool(true)));
        assert!(!truthy(&Value::Null));
    }
}
