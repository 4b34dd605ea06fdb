//! Ansible's INI inventory plugin (`ansible/plugins/inventory/ini.py`), line for line.
//!
//! - Lines before any section are hosts of `ungrouped`; `[g]` (or `[g:hosts]`) lists hosts,
//!   `[g:vars]` holds `key=value` lines, `[g:children]` names child groups.
//! - Full-line comments start with `#` or `;`; a section header may end with a `#` comment.
//! - Host lines are split like `shlex.split(line, comments=True)`: the first token is a host pattern
//!   (`host`, `host:port`, `[v6::addr]:port`, ranges `web[01:10]`, `db-[a:f]`, `x[1:9:2]`), the rest
//!   `key=value` pairs whose values go through `ast.literal_eval` (`literal.rs`).
//! - `[g:vars]` lines split at the first `=`, both sides stripped; the value goes through the same
//!   `literal_eval` (so `8080 # comment` is the number 8080 and `FALSE` the string `FALSE`).
//! - A group named under `[p:children]` before it is defined is "pending"; it must be defined
//!   later in the file (`[g]` or `[g:children]`), and so must a group that only has `[g:vars]`:
//!   otherwise the file is rejected, as Ansible does.
//! - Group names are kept as written (Ansible's default `TRANSFORM_INVALID_GROUP_CHARS=never`).

use super::InventoryBuilder;
use super::address::{expand_hostname_range, parse_address, py_splitlines, py_strip};
use super::literal::parse_value;
use crate::{Error, Result};
use indexmap::IndexMap;
use regex::Regex;
use std::path::Path;
use std::sync::LazyLock;

static GROUPNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([^:\]\s]+)\s*(?:#.*)?$").expect("valid regex"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hosts,
    Vars,
    Children,
}

#[derive(Debug)]
struct Pending {
    line: usize,
    state: State,
    parents: Vec<String>,
}

/// Parses INI `text` into `b`.
pub(super) fn parse(b: &mut InventoryBuilder, text: &str, path: &Path) -> Result<()> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pending: IndexMap<String, Pending> = IndexMap::new();
    let mut groupname = super::UNGROUPED.to_string();
    let mut state = State::Hosts;
    let err =
        |lineno: usize, col: Option<usize>, msg: String| Error::at(path, Some(lineno), col, msg);

    for (idx, raw) in py_splitlines(text).into_iter().enumerate() {
        let lineno = idx + 1;
        let line = py_strip(raw);
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }

        if let Some((name, kind)) = parse_section(line) {
            let name = name.to_string();
            state = match kind {
                None | Some("hosts") => State::Hosts,
                Some("vars") => State::Vars,
                Some("children") => State::Children,
                Some(other) => {
                    return Err(err(
                        lineno,
                        Some(1),
                        format!("section `[{name}:{other}]` has unknown type `{other}`"),
                    )
                    .with_hint("a section is `[group]`, `[group:vars]` or `[group:children]`"));
                }
            };
            if !b.has_group(&name) {
                // [g] or [g:children] declares a group; [g:vars] alone must be backed by a
                // declaration somewhere in the file.
                if state == State::Vars && !pending.contains_key(&name) {
                    pending.insert(
                        name.clone(),
                        Pending {
                            line: lineno,
                            state,
                            parents: Vec::new(),
                        },
                    );
                }
                b.group_idx_or_create(&name);
            }
            if state != State::Vars {
                match pending.get(&name).map(|p| p.state) {
                    Some(State::Children) => {
                        add_pending_children(b, &name, &mut pending)
                            .map_err(|m| err(lineno, None, m))?;
                    }
                    Some(State::Vars) => {
                        pending.shift_remove(&name);
                    }
                    Some(State::Hosts) | None => {}
                }
            }
            groupname = name;
            continue;
        } else if line.starts_with('[') && line.ends_with(']') {
            return Err(
                err(lineno, Some(1), format!("invalid section entry `{line}`")).with_hint(
                    "a section header has no spaces and no `:` except before `vars` or `children`",
                ),
            );
        }

        match state {
            State::Hosts => {
                let (hosts, port, vars) =
                    parse_host_definition(line).map_err(|(col, m)| err(lineno, col, m))?;
                for host in &hosts {
                    b.add_host_inner(host, Some(&groupname), port)
                        .map_err(|m| err(lineno, Some(1), m))?;
                    for (k, v) in &vars {
                        b.set_variable_inner(host, k, v.clone())
                            .map_err(|m| err(lineno, None, m))?;
                    }
                }
            }
            State::Vars => {
                let Some((k, v)) = line.split_once('=') else {
                    return Err(err(lineno, Some(1), format!("expected key=value, got `{line}`"))
                        .with_hint(format!("lines under `[{groupname}:vars]` set one variable each: `name=value`")));
                };
                let value = parse_value(py_strip(v)).map_err(|m| err(lineno, None, m))?;
                b.set_group_var_inner(&groupname, py_strip(k), value)
                    .map_err(|m| err(lineno, None, m))?;
            }
            State::Children => {
                // Fast path: a bare name (the regex's greedy match is then the whole line).
                let child = if !line.contains(|c: char| c == ':' || c == ']' || c.is_whitespace()) {
                    line.to_string()
                } else {
                    let Some(caps) = GROUPNAME.captures(line) else {
                        return Err(err(
                            lineno,
                            Some(1),
                            format!("expected a group name, got `{line}`"),
                        )
                        .with_hint(format!(
                            "lines under `[{groupname}:children]` name one group each"
                        )));
                    };
                    caps[1].to_string()
                };
                if !b.has_group(&child) {
                    pending
                        .entry(child)
                        .or_insert_with(|| Pending {
                            line: lineno,
                            state: State::Children,
                            parents: Vec::new(),
                        })
                        .parents
                        .push(groupname.clone());
                } else {
                    b.add_child_inner(&groupname, &child)
                        .map_err(|m| err(lineno, None, m))?;
                }
            }
        }
    }

    // Anything still pending was referenced but never declared; report the first, as Ansible does.
    if let Some((name, decl)) = pending.into_iter().next() {
        return Err(match decl.state {
            State::Vars => err(
                decl.line,
                None,
                format!("section `[{name}:vars]` is not valid for undefined group `{name}`"),
            )
            .with_hint(format!(
                "declare the group with a `[{name}]` or `[{name}:children]` section"
            )),
            _ => {
                let parent = decl.parents.last().cloned().unwrap_or_default();
                err(
                    decl.line,
                    None,
                    format!("section `[{parent}:children]` includes undefined group `{name}`"),
                )
                .with_hint(format!(
                    "declare the group with a `[{name}]` section, even an empty one"
                ))
            }
        });
    }
    Ok(())
}

/// Ansible's section regex, `^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$`: the group name and the
/// optional type after `:`.
fn parse_section(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let name_len = rest
        .find(|c: char| c == ':' || c == ']' || c.is_whitespace())
        .unwrap_or(rest.len());
    if name_len == 0 {
        return None;
    }
    let (name, mut rest) = rest.split_at(name_len);
    let mut kind = None;
    if let Some(after) = rest.strip_prefix(':') {
        let kind_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if kind_len == 0 {
            return None;
        }
        kind = Some(&after[..kind_len]);
        rest = &after[kind_len..];
    }
    let tail = rest.strip_prefix(']')?.trim_start();
    (tail.is_empty() || tail.starts_with('#')).then_some((name, kind))
}

fn add_pending_children(
    b: &mut InventoryBuilder,
    group: &str,
    pending: &mut IndexMap<String, Pending>,
) -> std::result::Result<(), String> {
    let parents = pending
        .get(group)
        .map(|p| p.parents.clone())
        .unwrap_or_default();
    for parent in parents {
        b.add_child_inner(&parent, group)?;
        if pending
            .get(&parent)
            .is_some_and(|p| p.state == State::Children)
        {
            add_pending_children(b, &parent, pending)?;
        }
    }
    pending.shift_remove(group);
    Ok(())
}

type HostDefinition = (Vec<String>, Option<u64>, Vec<(String, crate::Value)>);

/// `_parse_host_definition`: host names, port, and inline variables of one host line. Errors
/// carry an optional 1-based column.
fn parse_host_definition(
    line: &str,
) -> std::result::Result<HostDefinition, (Option<usize>, String)> {
    let tokens = shlex_split(line)
        .map_err(|e| (None, format!("error parsing host definition `{line}`: {e}")))?;
    let Some(first) = tokens.first() else {
        return Err((Some(1), format!("expected a host name, got `{line}`")));
    };
    let (hostnames, port) = expand_hostpattern(first).map_err(|m| (Some(1), m))?;
    let mut vars: Vec<(String, crate::Value)> = Vec::new();
    for t in &tokens[1..] {
        let Some((k, v)) = t.split_once('=') else {
            let col = line.find(t.as_str()).map(|i| line[..i].chars().count() + 1);
            return Err((
                col,
                format!("expected key=value host variable assignment, got `{t}`"),
            ));
        };
        let value = parse_value(v).map_err(|m| (None, m))?;
        if let Some(slot) = vars.iter_mut().find(|(key, _)| key == k) {
            slot.1 = value;
        } else {
            vars.push((k.to_string(), value));
        }
    }
    Ok((hostnames, port, vars))
}

/// `_expand_hostpattern`: the host names a host pattern stands for, and its port.
pub(crate) fn expand_hostpattern(
    hostpattern: &str,
) -> std::result::Result<(Vec<String>, Option<u64>), String> {
    // parse_address only matters when there is a ':' (otherwise no port, same pattern).
    let (pattern, port) = if hostpattern.contains(':') {
        match parse_address(hostpattern) {
            Some((host, port)) => (host, port),
            None => (hostpattern.to_string(), None),
        }
    } else {
        (hostpattern.to_string(), None)
    };
    let port = match port {
        Some(p) => Some(
            p.parse::<u64>()
                .map_err(|_| format!("port `{p}` of host `{hostpattern}` is out of range"))?,
        ),
        None => None,
    };
    let hostnames = if pattern.contains('[') {
        expand_hostname_range(&pattern)
            .map_err(|e| format!("{e} (in host pattern `{hostpattern}`)"))?
    } else {
        vec![pattern]
    };
    if py_strip(hostpattern).ends_with(':') && port.is_none() {
        return Err(format!(
            "invalid host pattern `{hostpattern}`: ending in `:` is not allowed, this character is reserved to provide a port"
        ));
    }
    if hostnames.iter().any(|h| py_strip(h) == "---") {
        return Err(format!(
            "invalid host pattern `{hostpattern}`: `---` is normally a sign this is a YAML file"
        ));
    }
    if hostnames.iter().any(String::is_empty) {
        return Err("invalid empty host name".to_string());
    }
    Ok((hostnames, port))
}

/// Python's `shlex.split(s, comments=True)` (POSIX mode).
pub(crate) fn shlex_split(s: &str) -> std::result::Result<Vec<String>, &'static str> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Space,
        Word,
        Quote(char),
        Escape(Option<char>),
    }
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut quoted = false;
    let mut state = St::Space;
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut chars = s.chars();
    loop {
        let next = chars.next();
        match state {
            St::Space | St::Word => match next {
                None => break,
                Some(c) if is_ws(c) => {
                    if !token.is_empty() || quoted {
                        tokens.push(std::mem::take(&mut token));
                        quoted = false;
                    }
                    state = St::Space;
                }
                Some('#') => {
                    // A comment runs to the end of the (single) line.
                    break;
                }
                Some('\\') => state = St::Escape(None),
                Some(c @ ('\'' | '"')) => state = St::Quote(c),
                Some(c) => {
                    token.push(c);
                    state = St::Word;
                }
            },
            St::Quote(q) => {
                quoted = true;
                match next {
                    None => return Err("No closing quotation"),
                    Some(c) if c == q => state = St::Word,
                    Some('\\') if q == '"' => state = St::Escape(Some(q)),
                    Some(c) => token.push(c),
                }
            }
            St::Escape(inside) => {
                let Some(c) = next else {
                    return Err("No escaped character");
                };
                if inside.is_some_and(|q| c != '\\' && c != q) {
                    token.push('\\');
                }
                token.push(c);
                state = match inside {
                    Some(q) => St::Quote(q),
                    None => St::Word,
                };
            }
        }
    }
    if !token.is_empty() || quoted {
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{DEVELOPMENT_INI, TEST_INI};
    use super::super::{Inventory, Value};
    use super::*;
    use proptest::prelude::*;
    use yaml_serde::{Mapping, Number};

    fn parse(text: &str) -> Result<Inventory> {
        Inventory::parse_ini(text, Path::new("inv.ini"))
    }

    fn names<'a>(v: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        v.into_iter().map(String::from).collect()
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn n(v: i64) -> Value {
        Value::Number(Number::from(v))
    }

    #[test]
    fn section_headers() {
        assert_eq!(parse_section("[web]"), Some(("web", None)));
        assert_eq!(
            parse_section("[web:vars]  # c"),
            Some(("web", Some("vars")))
        );
        assert_eq!(
            parse_section("[w#b:children]"),
            Some(("w#b", Some("children")))
        );
        assert_eq!(parse_section("[[x]"), Some(("[x", None)));
        assert_eq!(parse_section("[web:foo]"), Some(("web", Some("foo"))));
        assert_eq!(parse_section("[web:]"), None);
        assert_eq!(parse_section("[web] x"), None);
        assert_eq!(parse_section("[]"), None);
        assert_eq!(parse_section("[a b]"), None);
        assert_eq!(parse_section("[a:b:c]"), None);
        assert_eq!(parse_section("[web"), None);
    }

    #[test]
    fn shlex_like_python() {
        assert_eq!(shlex_split("a \"\" b").unwrap(), ["a", "", "b"]);
        assert_eq!(shlex_split("a\\ b").unwrap(), ["a b"]);
        assert_eq!(shlex_split(r#"x="a\\b\"c\d""#).unwrap(), [r#"x=a\b"c\d"#]);
        assert_eq!(shlex_split("h#c").unwrap(), ["h"]);
        assert_eq!(shlex_split("\"a\"#b c").unwrap(), ["a"]);
        assert_eq!(shlex_split("a '#' b").unwrap(), ["a", "#", "b"]);
        assert_eq!(shlex_split("a=''").unwrap(), ["a="]);
        assert_eq!(
            shlex_split("a='x y' b=\"'q'\"").unwrap(),
            ["a=x y", "b='q'"]
        );
        assert_eq!(shlex_split("a 'b").unwrap_err(), "No closing quotation");
        assert_eq!(shlex_split("a \\").unwrap_err(), "No escaped character");
        assert_eq!(shlex_split("'it'\\''s'").unwrap(), ["it's"]);
    }

    #[test]
    fn real_environments_load() {
        let dev = parse(DEVELOPMENT_INI).unwrap();
        assert_eq!(dev.len(), 4);
        assert_eq!(dev.groups().count(), 2 + 22);
        let test = parse(TEST_INI).unwrap();
        assert_eq!(test.len(), 9);
        assert_eq!(test.group("commcarehq").unwrap().children.len(), 5);
    }

    #[test]
    fn ungrouped_hosts_and_implicit_groups() {
        let inv = parse("h1\nh2 x=1\n[g]\nh2\nh3\n[all]\nh4\n").unwrap();
        assert_eq!(inv.group_hosts("ungrouped").unwrap(), ["h1", "h4"]);
        assert_eq!(inv.group("ungrouped").unwrap().hosts, names(["h1", "h4"]));
        assert_eq!(inv.group_hosts("g").unwrap(), ["h2", "h3"]);
        // `all` lists its own hosts first, then ungrouped, then top-level groups.
        assert_eq!(inv.group_hosts("all").unwrap(), ["h4", "h1", "h2", "h3"]);
        assert_eq!(
            inv.group("all").unwrap().children,
            names(["ungrouped", "g"])
        );
        assert_eq!(inv.host("h2").unwrap().vars["x"], n(1));
    }

    #[test]
    fn host_vars_inline_are_literals() {
        let inv = parse(concat!(
            "[g]\n",
            "h a=1 b=1.5 c=True d=None e='q' f=\"[1, 'x']\" g=\"{'k': 2}\" h=yes i=0022 j=abc#comment\n",
            "h k='a b' l=\"'03#pa33w0rd'\" m= a=2\n",
        ))
        .unwrap();
        let v = &inv.host("h").unwrap().vars;
        assert_eq!(v["a"], n(2));
        assert_eq!(v["b"], Value::Number(Number::from(1.5)));
        assert_eq!(v["c"], Value::Bool(true));
        assert_eq!(v["d"], Value::Null);
        assert_eq!(v["e"], s("q"));
        assert_eq!(v["f"], Value::Sequence(vec![n(1), s("x")]));
        let mut m = Mapping::new();
        m.insert(s("k"), n(2));
        assert_eq!(v["g"], Value::Mapping(m));
        assert_eq!(v["h"], s("yes"));
        assert_eq!(v["i"], s("0022"));
        assert_eq!(v["j"], s("abc"));
        assert_eq!(v["k"], s("a b"));
        assert_eq!(v["l"], s("03#pa33w0rd"));
        assert_eq!(v["m"], s(""));
        // Key order: first definition's position, later value.
        assert_eq!(v.keys().next().map(String::as_str), Some("a"));
    }

    #[test]
    fn group_vars_are_literals_too() {
        let inv = parse(concat!(
            "[web]\nh\n",
            "[web:vars]\n",
            "http_port=8080 # all members\n",
            "myvar = 23\n",
            "flag=FALSE\n",
            "empty=\n",
            "eq = a=b\n",
            "s = 'x' # c\n",
            "raw = bar # comment\n",
        ))
        .unwrap();
        let v = &inv.group("web").unwrap().vars;
        assert_eq!(v["http_port"], n(8080));
        assert_eq!(v["myvar"], n(23));
        assert_eq!(v["flag"], s("FALSE"));
        assert_eq!(v["empty"], s(""));
        assert_eq!(v["eq"], s("a=b"));
        assert_eq!(v["s"], s("x"));
        assert_eq!(v["raw"], s("bar # comment"));
    }

    #[test]
    fn children_and_pending_declarations() {
        // Children named before they are defined, in declaration order of the children.
        let inv = parse("[p:children]\nb\na\n[a]\nh1\n[b]\nh2\n").unwrap();
        assert_eq!(inv.group("p").unwrap().children, names(["a", "b"]));
        assert_eq!(inv.group_hosts("p").unwrap(), ["h1", "h2"]);
        // `[g:vars]` before `[g]` is fine.
        let inv = parse("[g:vars]\nx=1\n[g]\nh\n").unwrap();
        assert_eq!(inv.host_vars("h")["x"], n(1));
        // A child that is never defined is an error, with the line of its first mention.
        let e = parse("[p:children]\nghost\n[q:children]\nghost\n").unwrap_err();
        assert_eq!(
            e.message(),
            "inv.ini:2: section `[q:children]` includes undefined group `ghost`"
        );
        // `[g:vars]` for a group never declared.
        let e = parse("[h]\nx\n[g:vars]\na=1\n").unwrap_err();
        assert_eq!(
            e.message(),
            "inv.ini:3: section `[g:vars]` is not valid for undefined group `g`"
        );
        // A child group may also be declared by its own `[g:children]`.
        let inv = parse("[p:children]\nm\n[m:children]\nleaf\n[leaf]\nh\n").unwrap();
        assert_eq!(inv.group_hosts("p").unwrap(), ["h"]);
        assert_eq!(inv.group("leaf").unwrap().depth, 3);
        // `[g:hosts]` is the same as `[g]`.
        let inv = parse("[g:hosts]\nh\n").unwrap();
        assert_eq!(inv.group_hosts("g").unwrap(), ["h"]);
        // A host is one host however many groups list it.
        let inv = parse("[a]\nh x=1 y=1\n[b]\nh x=2\n").unwrap();
        assert_eq!(inv.len(), 1);
        assert_eq!(inv.host("h").unwrap().vars["x"], n(2));
        assert_eq!(inv.host("h").unwrap().vars["y"], n(1));
        assert_eq!(inv.groups_of("h"), ["a", "b"]);
    }

    /// Ansible quirks around names shared by a host and a group, checked against ansible-core.
    #[test]
    fn host_and_group_with_the_same_name() {
        // Inline vars of host `db` land on group `db` (InventoryData.set_variable looks at groups first).
        let inv = parse("[db]\nh3\n[web]\ndb v=1\n").unwrap();
        assert_eq!(inv.group("db").unwrap().vars["v"], n(1));
        assert!(inv.host("db").unwrap().vars.is_empty());
        assert_eq!(inv.host_vars("h3")["v"], n(1));
        // A host only in `[all]` goes to `ungrouped`, but if a group has its name the group does.
        let inv = parse("[db]\nh3\n[all]\nh1\ndb\n").unwrap();
        assert_eq!(inv.group("ungrouped").unwrap().children, ["db"]);
        assert_eq!(inv.group("ungrouped").unwrap().hosts, names(["h1"]));
        assert_eq!(inv.group_hosts("all").unwrap(), ["h1", "db", "h3"]);
        assert_eq!(inv.group("db").unwrap().depth, 2);
        assert!(inv.warnings().iter().any(|w| w.ends_with("same name: db")));
    }

    #[test]
    fn ungrouped_as_a_child_orphans_its_hosts_like_ansible() {
        let inv = parse("h1\n[x:children]\nungrouped\n[all:vars]\na=1\n").unwrap();
        assert!(inv.group_hosts("all").unwrap().is_empty());
        assert!(inv.groups_of("h1").is_empty());
        assert_eq!(inv.host_vars("h1")["a"], n(1));
        assert_eq!(inv.select("~h").unwrap().hosts, ["h1"]);
    }

    #[test]
    fn cycles_are_errors() {
        let e = parse("[a:children]\nb\n[b:children]\na\n").unwrap_err();
        assert!(e.message().starts_with("inv.ini:4: "), "{}", e.message());
        assert!(
            e.message().contains("a -> b -> a") || e.message().contains("b -> a -> b"),
            "{}",
            e.message()
        );
        let e = parse("[a:children]\na\n").unwrap_err();
        assert!(e.message().contains("itself"), "{}", e.message());
        let e = parse("[a]\nh\n[x:children]\ny\n[y:children]\nz\n[z:children]\nx\n").unwrap_err();
        assert!(e.message().contains("loop"), "{}", e.message());
        // Making `all` a child closes a loop through `all` when the inventory is finished.
        let e = parse("[a:children]\nall\n").unwrap_err();
        assert!(e.message().contains("loop"), "{}", e.message());
    }

    #[test]
    fn ranges_and_ports() {
        let inv = parse(
            "[web]\nweb[01:03]:2222 role=x\ndb-[a:c]\nn[1:7:3]\n[v6]\nfe80::1\n[fe80::2]:22\n",
        )
        .unwrap();
        assert_eq!(
            inv.group_hosts("web").unwrap(),
            [
                "web01", "web02", "web03", "db-a", "db-b", "db-c", "n1", "n4", "n7"
            ]
        );
        assert_eq!(inv.host("web02").unwrap().vars["ansible_port"], n(2222));
        assert_eq!(inv.host("web02").unwrap().vars["role"], s("x"));
        assert_eq!(inv.group_hosts("v6").unwrap(), ["fe80::1", "fe80::2"]);
        assert_eq!(inv.port("fe80::2"), Some(22));
        assert_eq!(inv.port("fe80::1"), None);
        // The port is only taken when the host is created.
        let inv = parse("[a]\nh\n[b]\nh:2222\n").unwrap();
        assert_eq!(inv.port("h"), None);
        // Port 0 is ignored (falsy in Python).
        let inv = parse("h:0\n").unwrap();
        assert_eq!(inv.port("h"), None);
        // A numeric range with begin > end expands to nothing.
        let inv = parse("[g]\nh[5:1]\n").unwrap();
        assert!(inv.group_hosts("g").unwrap().is_empty());
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "[g:foo]\n",
                "inv.ini:1:1: section `[g:foo]` has unknown type `foo`",
            ),
            (
                "\n[bad group]\n",
                "inv.ini:2:1: invalid section entry `[bad group]`",
            ),
            (
                "[g]\nh x\n",
                "inv.ini:2:3: expected key=value host variable assignment, got `x`",
            ),
            (
                "[g:vars]\nnovalue\n",
                "inv.ini:2:1: expected key=value, got `novalue`",
            ),
            (
                "[g:children]\na b\n",
                "inv.ini:2:1: expected a group name, got `a b`",
            ),
            (
                "[g]\nh 'x\n",
                "inv.ini:2: error parsing host definition `h 'x`: No closing quotation",
            ),
            (
                "[g]\nweb[1]\n",
                "inv.ini:2:1: host range `[1]` must be begin:end or begin:end:step (in host pattern `web[1]`)",
            ),
            (
                "[g]\nweb[x:\n",
                "inv.ini:2:1: malformed host range in `web[x:`",
            ),
            (
                "[g]\nweb[01:100]\n",
                "inv.ini:2:1: host range `[01:100]` must specify equal-length begin and end formats (in host pattern `web[01:100]`)",
            ),
            (
                "[g]\nweb[b:a]\n",
                "inv.ini:2:1: host range `[b:a]` must have begin <= end (in host pattern `web[b:a]`)",
            ),
            (
                "[g]\nhost:\n",
                "inv.ini:2:1: invalid host pattern `host:`: ending in `:` is not allowed",
            ),
            ("[g]\n---\n", "inv.ini:2:1: invalid host pattern `---`"),
            ("[g]\n''\n", "inv.ini:2:1: invalid empty host name"),
            ("[g]\nh x={[1]:2}\n", "inv.ini:2: unhashable type `list`"),
            (
                "[g]\nh x={2}\n[g:vars]\ny = {[1]: 2}\n",
                "inv.ini:4: unhashable type `list`",
            ),
            (
                "[g:vars]\nansible_group_priority=high\n[g]\n",
                "inv.ini:2: invalid `ansible_group_priority` value `high`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(
                e.message().starts_with(want),
                "{text:?}: got {:?}, want {want:?}",
                e.message()
            );
            assert_eq!(e.kind(), crate::ErrorKind::Config);
        }
        // An unterminated `[` in a host section fails as a malformed range.
        assert!(parse("[g\n").is_err());
    }

    #[test]
    fn comments_and_blank_lines() {
        let inv = parse("# c\n; c\n\n  [g]   # trailing\n  h1  # c\n\t\n[g:vars]\n; c\n# c\nx=1\n")
            .unwrap();
        assert_eq!(inv.group_hosts("g").unwrap(), ["h1"]);
        assert_eq!(inv.group("g").unwrap().vars["x"], n(1));
        // A BOM is tolerated; CRLF lines too.
        let inv = parse("\u{feff}[g]\r\nh\r\n").unwrap();
        assert_eq!(inv.group_hosts("g").unwrap(), ["h"]);
    }

    #[test]
    fn several_sources_merge() {
        let mut b = Inventory::builder();
        b.parse_ini("[web]\nw1\n", Path::new("a.ini")).unwrap();
        b.parse_ini("[app:children]\nweb\n[web]\nw2\n", Path::new("b.ini"))
            .unwrap();
        let inv = b.build().unwrap();
        assert_eq!(inv.group_hosts("app").unwrap(), ["w1", "w2"]);
    }

    fn ini_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[g]".to_string()),
            Just("[g:vars]".to_string()),
            Just("[g:children]".to_string()),
            Just("[h:children]".to_string()),
            Just("[all:vars]".to_string()),
            Just("[ungrouped]".to_string()),
            Just("[x:y]".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("g".to_string()),
            Just("h".to_string()),
            Just("all".to_string()),
            Just("web[1:3]".to_string()),
            Just("web[a:c]:22".to_string()),
            Just("db[1:".to_string()),
            Just("x=1".to_string()),
            Just("x='a b'".to_string()),
            Just("y=[1,".to_string()),
            Just("z={[1]: 2}".to_string()),
            Just("ansible_group_priority=3".to_string()),
            Just("# c".to_string()),
            Just("; c".to_string()),
            Just("'".to_string()),
            Just("\\".to_string()),
            Just(":".to_string()),
            Just("fe80::1".to_string()),
            Just("[::1]:22".to_string()),
            "[a-z0-9_=:\\[\\]'\" #-]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_ini_like_lines(lines in proptest::collection::vec(
            proptest::collection::vec(ini_piece(), 1..4).prop_map(|p| p.join(" ")), 0..12)) {
            let text = lines.join("\n");
            if let Ok(inv) = parse(&text) {
                // Invariants of a built inventory.
                let all: Vec<&str> = inv.group_hosts("all").unwrap();
                prop_assert!(all.len() <= inv.len());
                for h in all {
                    prop_assert!(inv.host(h).is_some());
                    let _ = inv.host_vars(h);
                }
            }
        }

        #[test]
        fn never_panics_on_shlex(text in any::<String>()) {
            let _ = shlex_split(&text);
        }
    }
}
