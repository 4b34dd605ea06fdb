//! A host of an environment as a typed value: its inventory name, the address, port and user to
//! reach it, its merged variables, its groups and its [`Route`] (SSH or this machine).
//!
//! [`Host`] is what an environment knows about one host, built by [`crate::Environment::host`],
//! [`crate::Environment::hosts`] (a `--limit` pattern) and [`crate::Environment::host_or_address`]
//! (also an address outside the inventory, as `cchq ENV ssh 10.1.2.3` takes it). It is not
//! [`crate::inventory::Host`], the inventory's own entry: a name and the variables written on the
//! host's lines only, before group variables are merged and before anything about connecting is
//! decided.
//!
//! Whether a host is reached over SSH or locally is decided here, once ([`is_local_connection`]):
//! [`crate::Environment::transport`] builds its routes from [`Host::route`].

use crate::inventory::Vars;
use crate::transport::ssh::SshTarget;
use crate::yaml;

/// How a host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Over SSH, to this target.
    Ssh(SshTarget),
    /// On this machine, without SSH (`ansible_connection=local`).
    Local,
}

impl Route {
    /// `"ssh"` or `"local"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ssh(_) => "ssh",
            Self::Local => "local",
        }
    }
}

/// A host of an environment (see the module's documentation).
///
/// `address`, `port` and `user` are those of the SSH target the inventory describes (the address:
/// `ansible_host`, else the name; the port: `ansible_port`; the user: `ansible_user`, else the
/// environment's login user), for a local host too: they are what `cchq ENV hosts` and `lookup`
/// print, while nothing connects to them when the route is [`Route::Local`].
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// The inventory name (what patterns match), e.g. `web1` or `10.0.0.1`.
    pub name: String,
    /// The address to connect to.
    pub address: String,
    /// The SSH port, `None` for SSH's default.
    pub port: Option<u16>,
    /// The user to log in as.
    pub user: Option<String>,
    /// The variables as Ansible merges them: `all`'s, the groups' (by depth and priority), then
    /// the host's own ([`crate::inventory::Inventory::host_vars`]). Empty for an address outside
    /// the inventory.
    pub vars: Vars,
    /// Every group the host is in, ancestors included, `all` excluded, sorted (Ansible's
    /// `group_names`).
    pub groups: Vec<String>,
    /// How the host is reached.
    pub route: Route,
}

impl Host {
    /// A host from its merged variables and groups: routed locally when its variables say
    /// `ansible_connection=local` ([`is_local_connection`]), else over SSH to `target` (whose
    /// address, port and user the host carries either way).
    pub fn new(
        name: impl Into<String>,
        vars: Vars,
        groups: Vec<String>,
        target: SshTarget,
    ) -> Host {
        let local = is_local_connection(&vars);
        Host {
            name: name.into(),
            address: target.address.clone(),
            port: target.port,
            user: target.user.clone(),
            vars,
            groups,
            route: if local {
                Route::Local
            } else {
                Route::Ssh(target)
            },
        }
    }

    /// Whether the host is reached without SSH.
    pub fn is_local(&self) -> bool {
        self.route == Route::Local
    }

    /// The SSH target, `None` for a local host.
    pub fn ssh_target(&self) -> Option<&SshTarget> {
        match &self.route {
            Route::Ssh(t) => Some(t),
            Route::Local => None,
        }
    }

    /// The SSH target, `None` for a local host (for the transport, which takes targets).
    pub fn into_ssh_target(self) -> Option<SshTarget> {
        match self.route {
            Route::Ssh(t) => Some(t),
            Route::Local => None,
        }
    }

    /// The variable `key` (merged), `None` when unset.
    pub fn var(&self, key: &str) -> Option<&crate::Value> {
        self.vars.get(key)
    }
}

/// Whether merged host variables say the host is this machine: `ansible_connection` is `local`.
/// The one place that decides between SSH and local.
pub fn is_local_connection(vars: &Vars) -> bool {
    vars.get("ansible_connection")
        .and_then(yaml::scalar_to_string)
        .as_deref()
        == Some("local")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn target(name: &str) -> SshTarget {
        SshTarget {
            name: name.to_owned(),
            address: "10.0.0.1".to_owned(),
            port: Some(2222),
            user: Some("ansible".to_owned()),
            keyfile: None,
        }
    }

    #[test]
    fn a_host_without_ansible_connection_is_reached_over_ssh() {
        let h = Host::new(
            "web1",
            Vars::new(),
            vec!["webworkers".to_owned()],
            target("web1"),
        );
        assert_eq!(h.route, Route::Ssh(target("web1")));
        assert_eq!(h.route.as_str(), "ssh");
        assert!(!h.is_local());
        assert_eq!(h.ssh_target().map(|t| t.port), Some(Some(2222)));
        assert_eq!(h.clone().into_ssh_target(), Some(target("web1")));
        assert_eq!(
            (h.address.as_str(), h.port, h.user.as_deref()),
            ("10.0.0.1", Some(2222), Some("ansible"))
        );
    }

    #[test]
    fn ansible_connection_local_routes_locally_and_keeps_the_address() {
        let mut vars = Vars::new();
        vars.insert("ansible_connection".to_owned(), Value::from("local"));
        let h = Host::new("localhost", vars, Vec::new(), target("localhost"));
        assert_eq!(h.route, Route::Local);
        assert_eq!(h.route.as_str(), "local");
        assert!(h.is_local() && h.ssh_target().is_none());
        assert_eq!(h.clone().into_ssh_target(), None);
        assert_eq!(h.address, "10.0.0.1");
        assert_eq!(h.var("ansible_connection"), Some(&Value::from("local")));
    }

    #[test]
    fn another_connection_is_ssh() {
        for v in [Value::from("ssh"), Value::from("paramiko"), Value::Null] {
            let mut vars = Vars::new();
            vars.insert("ansible_connection".to_owned(), v);
            assert!(!is_local_connection(&vars));
        }
    }
}
