//! Server specs for `ssh`, `django-manage`, `lookup` and friends, as commcare-cloud reads them
//! (`commands/inventory_lookup/getinventory.py`): `[user@]group[index]` or `[user@]host`, and `-`
//! for `django_manage[0]`.
//!
//! Resolution follows `get_server_address`: an IPv4-looking name is used as is; otherwise the name
//! must be a group (commcare-cloud environments give every host its own group, e.g. `[app1]`) or,
//! as an extension, a host name. A group with several hosts needs an index, as in commcare-cloud
//! ("There are 3 servers in the 'webworkers' group"); [`Inventory::resolve_all`] is the
//! `lookup`-style variant that returns them all. The deprecated `group:1` form is accepted, with a
//! warning, as commcare-cloud does.

use super::{Inventory, hint_from_suggestions};
use crate::{Error, Result};
use regex::Regex;
use std::sync::LazyLock;

static SPEC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)^(?:(.*?)@)?(.*?)(?:\[([0-9]+)\])?$").expect("valid regex"));

static IPV4_LIKE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9]+\.?){4}").expect("valid regex"));

/// A parsed server spec: `webworkers[0]`, `ubuntu@proxy`, `app1`, `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The user before `@`, if any (`ubuntu@proxy` -> `ubuntu`).
    pub user: Option<String>,
    /// The target without the user: a group or host name with an optional `[index]`
    /// (`-` becomes `django_manage[0]`, the deprecated `web:1` becomes `web[1]`).
    pub pattern: String,
    /// Deprecation warnings from parsing (the `group:1` form).
    pub warnings: Vec<String>,
}

impl ServerSpec {
    /// Parses `[user@]name[index]`, or `-` for `django_manage[0]`.
    pub fn parse(spec: &str) -> Result<ServerSpec> {
        let spec = spec.trim();
        if spec == "-" {
            return Ok(ServerSpec {
                user: None,
                pattern: "django_manage[0]".to_string(),
                warnings: Vec::new(),
            });
        }
        let c = SPEC
            .captures(spec)
            .ok_or_else(|| Error::pattern(format!("invalid server spec `{spec}`")))?;
        let user = c
            .get(1)
            .map(|m| m.as_str().to_string())
            .filter(|u| !u.is_empty());
        let mut name = c.get(2).map_or("", |m| m.as_str()).to_string();
        let mut index = match c.get(3) {
            Some(m) => Some(parse_index(m.as_str(), spec)?),
            None => None,
        };
        let mut warnings = Vec::new();
        if let Some((group, idx)) = name.rsplit_once(':') {
            warnings.push(
                "Use '[x]' to select hosts instead of ':x' which has been deprecated.".to_string(),
            );
            if !idx.chars().all(|c| c.is_ascii_digit()) || idx.is_empty() {
                return Err(Error::pattern(format!(
                    "non-numeric group index `{idx}` in server spec `{spec}`"
                ))
                .with_hint(format!("select a host with an index: `{group}[0]`")));
            }
            index = Some(parse_index(idx, spec)?);
            name = group.to_string();
        }
        if name.is_empty() {
            return Err(Error::pattern(format!("server spec `{spec}` names no server or group"))
                .with_hint("write a group or host name, e.g. `webworkers[0]`, or `-` for `django_manage[0]`"));
        }
        check_spec(spec, user.as_deref(), &name)?;
        let pattern = match index {
            Some(i) => format!("{name}[{i}]"),
            None => name,
        };
        Ok(ServerSpec {
            user,
            pattern,
            warnings,
        })
    }

    /// The group or host name, without the index.
    pub fn name(&self) -> &str {
        self.split().0
    }

    /// The index, if one was given.
    pub fn index(&self) -> Option<usize> {
        self.split().1
    }

    fn split(&self) -> (&str, Option<usize>) {
        let parsed = self.pattern.rfind('[').and_then(|open| {
            let digits = self.pattern[open + 1..].strip_suffix(']')?;
            Some((&self.pattern[..open], Some(digits.parse().ok()?)))
        });
        parsed.unwrap_or((&self.pattern, None))
    }
}

/// Refuses a spec whose user or name holds what no group, host or user name does: a bracket left
/// over after the index (`webworkers[0`, `web[x]`, `web[0]x`), white space or control characters,
/// or a leading `-` (which `ssh` would read as an option).
fn check_spec(spec: &str, user: Option<&str>, name: &str) -> Result<()> {
    let malformed = |what: String| {
        Error::pattern(format!("malformed server spec `{spec}`: {what}"))
            .with_hint("write `group[index]`, `host` or `user@group[index]`, e.g. `webworkers[0]`, or `-` for `django_manage[0]`")
    };
    let position = |part: &str, i: usize| {
        let at = spec.find(part).unwrap_or(0) + i;
        spec.get(..at).map_or(at, |s| s.chars().count()) + 1
    };
    for (what, part) in [("user", user.unwrap_or("")), ("name", name)] {
        if part.starts_with('-') {
            return Err(malformed(format!("the {what} `{part}` starts with `-`")));
        }
        if let Some((i, c)) = part
            .char_indices()
            .find(|&(_, c)| c.is_whitespace() || c.is_control())
        {
            return Err(malformed(format!(
                "the {what} has {c:?} at position {}",
                position(part, i)
            )));
        }
        if let Some((i, c)) = part.char_indices().find(|&(_, c)| c == '[' || c == ']') {
            let what = if c == '[' && !part[i..].contains(']') {
                format!(
                    "the `[` at position {} is never closed (`{}`)",
                    position(part, i),
                    &part[i..]
                )
            } else if c == ']' {
                format!("the `]` at position {} closes nothing", position(part, i))
            } else {
                format!(
                    "`{}` at position {} is not an index (`[0]`, `[1]`, ...)",
                    &part[i..],
                    position(part, i)
                )
            };
            return Err(malformed(what));
        }
    }
    Ok(())
}

fn parse_index(digits: &str, spec: &str) -> Result<usize> {
    digits.parse().map_err(|_| {
        Error::pattern(format!(
            "index `{digits}` in server spec `{spec}` is too large"
        ))
    })
}

impl std::str::FromStr for ServerSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<ServerSpec> {
        ServerSpec::parse(s)
    }
}

impl Inventory {
    /// The one host a server spec names (commcare-cloud's `get_server_address`).
    ///
    /// An IPv4-looking name is returned as is, even if it is not in the inventory. A group with
    /// several hosts and no index is an error whose hint shows how to pick one.
    pub fn resolve(&self, spec: &ServerSpec) -> Result<String> {
        let (name, servers) = match self.servers(spec)? {
            Servers::Address(a) => return Ok(a),
            Servers::Hosts(name, hosts) => (name, hosts),
        };
        match spec.index() {
            Some(i) => Ok(servers[i].to_string()),
            None if servers.len() > 1 => Err(Error::pattern(format!(
                "there are {} servers in the `{name}` group",
                servers.len()
            ))
            .with_hint(format!(
                "specify the index of the server, for example `{name}[0]`"
            ))),
            None => Ok(servers[0].to_string()),
        }
    }

    /// Every host a server spec names: the indexed one, or all hosts of the group (commcare-cloud's
    /// `lookup`, which allows several).
    pub fn resolve_all(&self, spec: &ServerSpec) -> Result<Vec<String>> {
        match self.servers(spec)? {
            Servers::Address(a) => Ok(vec![a]),
            Servers::Hosts(_, hosts) => Ok(match spec.index() {
                Some(i) => vec![hosts[i].to_string()],
                None => hosts.iter().map(|h| h.to_string()).collect(),
            }),
        }
    }

    fn servers<'a>(&'a self, spec: &'a ServerSpec) -> Result<Servers<'a>> {
        let name = spec.name();
        if IPV4_LIKE.is_match(name) {
            return Ok(Servers::Address(name.to_string()));
        }
        let hosts: Vec<&str> = if let Some(hosts) = self.group_hosts(name) {
            hosts
        } else if self.host(name).is_some() {
            vec![name]
        } else {
            let mut err = Error::not_found(format!("unknown server name or group `{name}`"));
            err = err.with_hint(
                hint_from_suggestions(&self.suggest(name)).unwrap_or_else(|| self.some_groups()),
            );
            return Err(err);
        };
        if hosts.is_empty() {
            return Err(Error::not_found(format!("group `{name}` has no hosts"))
                .with_hint(self.some_groups()));
        }
        if let Some(i) = spec.index().filter(|&i| i >= hosts.len()) {
            let plural = if hosts.len() == 1 { "" } else { "s" };
            return Err(Error::pattern(format!(
                "invalid index {i} for `{name}`, which has {} host{plural}",
                hosts.len()
            ))
            .with_hint(format!(
                "specify a number between 0 and {} inclusive",
                hosts.len() - 1
            )));
        }
        Ok(Servers::Hosts(name, hosts))
    }
}

enum Servers<'a> {
    /// An address given directly (IPv4 short-circuit).
    Address(String),
    /// The name resolved and its hosts, in order.
    Hosts(&'a str, Vec<&'a str>),
}

#[cfg(test)]
mod tests {
    use super::super::tests::{dev, test_env};
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn spec(s: &str) -> ServerSpec {
        ServerSpec::parse(s).unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(
            spec("webworkers[0]"),
            ServerSpec {
                user: None,
                pattern: "webworkers[0]".into(),
                warnings: vec![]
            }
        );
        assert_eq!(spec("webworkers[0]").name(), "webworkers");
        assert_eq!(spec("webworkers[0]").index(), Some(0));
        assert_eq!(spec("ubuntu@proxy").user.as_deref(), Some("ubuntu"));
        assert_eq!(spec("ubuntu@proxy").pattern, "proxy");
        assert_eq!(spec("ubuntu@proxy").index(), None);
        assert_eq!(spec("-").pattern, "django_manage[0]");
        assert_eq!(spec("@web").user, None);
        assert_eq!(spec("a@b@web[2]").user.as_deref(), Some("a"));
        assert_eq!(spec("a@b@web[2]").name(), "b@web");
        let old = spec("webworkers:1");
        assert_eq!(old.pattern, "webworkers[1]");
        assert_eq!(old.warnings.len(), 1);
        assert_eq!(
            ServerSpec::parse("web:x").unwrap_err().kind(),
            ErrorKind::Pattern
        );
        assert!(ServerSpec::parse("").is_err());
        assert!(ServerSpec::parse("u@").is_err());
        assert!(ServerSpec::parse("web[99999999999999999999999]").is_err());
        assert_eq!("proxy".parse::<ServerSpec>().unwrap().pattern, "proxy");
    }

    #[test]
    fn resolving_in_commcare_environments() {
        let inv = dev();
        assert_eq!(inv.resolve(&spec("-")).unwrap(), "192.168.33.15");
        assert_eq!(inv.resolve(&spec("app1")).unwrap(), "192.168.33.15");
        assert_eq!(
            inv.resolve(&spec("ubuntu@control")).unwrap(),
            "192.168.33.14"
        );
        assert_eq!(inv.resolve(&spec("redis[2]")).unwrap(), "192.168.33.17");
        assert_eq!(
            inv.resolve(&spec("192.168.33.16")).unwrap(),
            "192.168.33.16"
        );
        // commcare-cloud returns any IPv4-looking name as is.
        assert_eq!(inv.resolve(&spec("10.9.9.9")).unwrap(), "10.9.9.9");
        let e = inv.resolve(&spec("redis")).unwrap_err();
        assert_eq!(e.message(), "there are 3 servers in the `redis` group");
        assert_eq!(
            e.hint(),
            Some("specify the index of the server, for example `redis[0]`")
        );
        assert_eq!(
            inv.resolve_all(&spec("redis")).unwrap(),
            ["192.168.33.15", "192.168.33.16", "192.168.33.17"]
        );
        assert_eq!(
            inv.resolve_all(&spec("redis[1]")).unwrap(),
            ["192.168.33.16"]
        );
        let e = inv.resolve(&spec("redis[3]")).unwrap_err();
        assert_eq!(
            e.message(),
            "invalid index 3 for `redis`, which has 3 hosts"
        );
        assert_eq!(e.hint(), Some("specify a number between 0 and 2 inclusive"));
        let e = inv.resolve(&spec("webworker")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "unknown server name or group `webworker`");
        assert_eq!(e.hint(), Some("did you mean `webworkers`?"));

        let inv = test_env();
        assert_eq!(inv.resolve(&spec("-")).unwrap(), "cloud_worker_1");
        assert_eq!(
            inv.resolve(&spec("cloud_worker_3")).unwrap(),
            "cloud_worker_3"
        );
        assert_eq!(
            inv.resolve(&spec("webworkers[1]")).unwrap(),
            "cloud_worker_3"
        );
        let e = inv.resolve(&spec("control")).unwrap_err();
        assert_eq!(e.message(), "group `control` has no hosts");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    /// Issue 12: a spec that does not parse is an error saying where, not a name looked up.
    #[test]
    fn malformed_specs_say_where() {
        for (s, what) in [
            (
                "webworkers[0",
                "the `[` at position 11 is never closed (`[0`)",
            ),
            (
                "webworkers[",
                "the `[` at position 11 is never closed (`[`)",
            ),
            ("webworkers]", "the `]` at position 11 closes nothing"),
            (
                "webworkers[x]",
                "`[x]` at position 11 is not an index (`[0]`, `[1]`, ...)",
            ),
            (
                "webworkers[-1]",
                "`[-1]` at position 11 is not an index (`[0]`, `[1]`, ...)",
            ),
            (
                "webworkers[0][1]",
                "`[0]` at position 11 is not an index (`[0]`, `[1]`, ...)",
            ),
            (
                "-oProxyCommand=x",
                "the name `-oProxyCommand=x` starts with `-`",
            ),
            ("-l@web", "the user `-l` starts with `-`"),
            ("web workers", "the name has ' ' at position 4"),
            ("u@web\nx", "the name has '\\n' at position 6"),
        ] {
            let s = s.replace("\\n", "\n");
            let e = ServerSpec::parse(&s).expect_err(&s);
            assert_eq!(e.kind(), ErrorKind::Pattern, "{s}");
            assert_eq!(
                e.message(),
                format!("malformed server spec `{s}`: {what}"),
                "{s}"
            );
            assert!(
                e.hint().is_some_and(|h| h.contains("`webworkers[0]`")),
                "{s}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_malformed_bracket_never_parses(name in "[a-z_]{1,10}", inside in "[0-9a-z:-]{0,4}", close in prop_oneof![Just(""), Just("]]"), Just("["), Just("]x")]) {
            let s = format!("{name}[{inside}{close}");
            prop_assert!(ServerSpec::parse(&s).is_err(), "{}", s);
            let s = format!("{name}]{inside}");
            prop_assert!(ServerSpec::parse(&s).is_err(), "{}", s);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            if let Ok(sp) = ServerSpec::parse(&s) {
                let _ = dev().resolve(&sp);
                let _ = dev().resolve_all(&sp);
            }
        }

        #[test]
        fn user_and_index_round_trip(user in "[a-z]{1,8}", name in "[a-z_]{1,10}", idx in 0usize..50) {
            let sp = ServerSpec::parse(&format!("{user}@{name}[{idx}]")).unwrap();
            prop_assert_eq!(sp.user.as_deref(), Some(user.as_str()));
            prop_assert_eq!(sp.name(), name.as_str());
            prop_assert_eq!(sp.index(), Some(idx));
        }
    }
}
