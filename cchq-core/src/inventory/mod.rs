//! Ansible inventories with Ansible's own semantics: hosts, groups, `:children`, variables and their
//! precedence, host patterns (`--limit`) and commcare-cloud server specs (`webworkers[0]`).
//!
//! An [`Inventory`] is built from an INI file ([`Inventory::parse_ini`], Ansible's `ini` plugin), a
//! commcare-cloud `inventory.csv` ([`Inventory::parse_csv`]), or by hand ([`Inventory::builder`]).
//! Building mirrors Ansible's `InventoryData`: the implicit groups `all` and `ungrouped`, every
//! group without a parent becomes a child of `all`, hosts in no other group land in `ungrouped`,
//! group depths and the ordered host list of every group are computed once. Host selection
//! ([`Inventory::select`]) follows `ansible/inventory/manager.py`; see `pattern.rs`.

mod address;
mod csv;
mod ini;
mod literal;
mod pattern;
mod spec;

pub use literal::literal_eval;
pub use spec::ServerSpec;

use crate::{Error, Result, Value};
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Variables of a host or group, in definition order.
pub type Vars = IndexMap<String, Value>;

/// The implicit group every host belongs to.
pub const ALL: &str = "all";
/// The implicit group of hosts that are in no other group.
pub const UNGROUPED: &str = "ungrouped";

const ALL_IDX: u32 = 0;
const UNGROUPED_IDX: u32 = 1;

/// A host as the inventory writes it: its name and its own variables. The typed host of an
/// environment (address, port, user, merged variables, groups, SSH or local route) is
/// [`crate::host::Host`], built by [`crate::Environment::host`].
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// The inventory host name (what patterns match), e.g. `10.0.0.1` or `web1`.
    pub name: String,
    /// The host's own variables: inline `key=value` pairs of its host lines (later lines win) and
    /// `ansible_port` from a `host:port` suffix. Group variables are not included; see
    /// [`Inventory::host_vars`].
    pub vars: Vars,
}

/// A group of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The group name.
    pub name: String,
    /// The hosts listed directly in the group, in the order they were added.
    pub hosts: Vec<String>,
    /// The child groups, in the order they were added (for `all`: `ungrouped`, then every group
    /// that has no other parent, in order of creation).
    pub children: Vec<String>,
    /// The group's own variables (`[group:vars]`).
    pub vars: Vars,
    /// Ansible's group depth: 0 for `all`, otherwise the length of the longest `:children` path
    /// from `all`. Variables of deeper groups win.
    pub depth: usize,
    /// `ansible_group_priority` (default 1): among groups of the same depth, a higher priority wins.
    pub priority: i64,
}

/// The hosts a pattern selected, and Ansible's warnings about the parts that matched nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Host names, deduplicated, in the order Ansible lists them.
    pub hosts: Vec<String>,
    /// Warnings, e.g. `Could not match supplied host pattern, ignoring: web9`.
    pub warnings: Vec<String>,
}

/// A parsed inventory; cheap to query (every group's transitive host list is precomputed).
#[derive(Debug, Clone)]
pub struct Inventory {
    hosts: Vec<Host>,
    host_index: HashMap<String, u32>,
    groups: Vec<Group>,
    group_index: HashMap<String, u32>,
    /// Per group: every host of the group and its descendants, in Ansible's `get_hosts()` order.
    members: Vec<Vec<u32>>,
    /// Per host: every group it is in, ancestors included (`all` too), ascending group index.
    host_groups: Vec<Vec<u32>>,
    warnings: Vec<String>,
}

impl Default for Inventory {
    fn default() -> Self {
        InventoryBuilder::new()
            .build()
            .expect("an empty inventory always builds")
    }
}

impl Inventory {
    /// Parses an Ansible INI inventory; `path` is only used in error messages.
    pub fn parse_ini(text: &str, path: &Path) -> Result<Inventory> {
        let mut b = InventoryBuilder::new();
        b.parse_ini(text, path)?;
        b.build().map_err(|e| e.context(path.display()))
    }

    /// Parses a commcare-cloud `inventory.csv`; `path` is only used in error messages.
    pub fn parse_csv(text: &str, path: &Path) -> Result<Inventory> {
        let mut b = InventoryBuilder::new();
        b.parse_csv(text, path)?;
        b.build().map_err(|e| e.context(path.display()))
    }

    /// A builder, for inventories made in code and for several sources merged into one.
    pub fn builder() -> InventoryBuilder {
        InventoryBuilder::new()
    }

    /// All hosts, in inventory order (order of first appearance).
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.host_index.get(name).map(|&i| &self.hosts[i as usize])
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.group_index
            .get(name)
            .map(|&i| &self.groups[i as usize])
    }

    /// All groups in order of creation, starting with the implicit `all` and `ungrouped`.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the inventory has no host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Warnings Ansible prints while loading this inventory (a group and a host with the same
    /// name, group names with characters Ansible considers invalid).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every host of `group` and of its descendants, as Ansible's `Group.get_hosts()` lists them:
    /// the group's own hosts, then those of its children, grandchildren... (breadth first, each
    /// level in `:children` order), without duplicates. `None` if there is no such group.
    pub fn group_hosts(&self, group: &str) -> Option<Vec<&str>> {
        let g = *self.group_index.get(group)?;
        Some(
            self.members[g as usize]
                .iter()
                .map(|&h| self.hosts[h as usize].name.as_str())
                .collect(),
        )
    }

    /// Every group `host` is in, ancestors included, `all` excluded, sorted by name (Ansible's
    /// `group_names`). Empty for an unknown host.
    pub fn groups_of(&self, host: &str) -> Vec<&str> {
        let Some(&h) = self.host_index.get(host) else {
            return Vec::new();
        };
        let mut names: Vec<&str> = self.host_groups[h as usize]
            .iter()
            .filter(|&&g| g != ALL_IDX)
            .map(|&g| self.groups[g as usize].name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The variables of `host` as Ansible merges inventory variables: `all`'s, then those of every
    /// group the host is in ordered by (depth, priority, name), then the host's own; later wins,
    /// key by key. Empty for an unknown host.
    pub fn host_vars(&self, host: &str) -> Vars {
        let Some(&h) = self.host_index.get(host) else {
            return Vars::new();
        };
        let mut groups: Vec<&Group> = self.host_groups[h as usize]
            .iter()
            .map(|&g| &self.groups[g as usize])
            .collect();
        groups.sort_by(|a, b| (a.depth, a.priority, &a.name).cmp(&(b.depth, b.priority, &b.name)));
        let mut out = Vars::new();
        for g in groups {
            for (k, v) in &g.vars {
                out.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &self.hosts[h as usize].vars {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// The variable `key` of `host` after merging (see [`Inventory::host_vars`]).
    pub fn host_var(&self, host: &str, key: &str) -> Option<Value> {
        let &h = self.host_index.get(host)?;
        if let Some(v) = self.hosts[h as usize].vars.get(key) {
            return Some(v.clone());
        }
        let mut best: Option<&Group> = None;
        for &g in &self.host_groups[h as usize] {
            let g = &self.groups[g as usize];
            if g.vars.contains_key(key)
                && best
                    .is_none_or(|b| (g.depth, g.priority, &g.name) > (b.depth, b.priority, &b.name))
            {
                best = Some(g);
            }
        }
        best.and_then(|g| g.vars.get(key).cloned())
    }

    /// The address to connect to: `ansible_ssh_host`, else `ansible_host`, else the host name
    /// (Ansible's ssh plugin reads them in that order, the last one set wins).
    pub fn address(&self, host: &str) -> String {
        self.connection_var(host, &["ansible_ssh_host", "ansible_host"])
            .and_then(|v| value_to_string(&v))
            .unwrap_or_else(|| host.to_string())
    }

    /// The SSH port: `ansible_ssh_port`, else `ansible_port`; `None` when unset or not a port.
    pub fn port(&self, host: &str) -> Option<u16> {
        let v = self.connection_var(host, &["ansible_ssh_port", "ansible_port"])?;
        match v {
            Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The remote user: `ansible_ssh_user`, else `ansible_user`.
    pub fn user(&self, host: &str) -> Option<String> {
        self.connection_var(host, &["ansible_ssh_user", "ansible_user"])
            .and_then(|v| value_to_string(&v))
    }

    fn connection_var(&self, host: &str, keys: &[&str]) -> Option<Value> {
        keys.iter()
            .find_map(|k| self.host_var(host, k).filter(|v| !v.is_null()))
    }

    fn host_name(&self, h: u32) -> &str {
        &self.hosts[h as usize].name
    }

    /// Group names close to `name`, for hints.
    fn suggest(&self, name: &str) -> Vec<&str> {
        suggest(
            name,
            self.groups
                .iter()
                .map(|g| g.name.as_str())
                .chain(self.hosts.iter().map(|h| h.name.as_str())),
        )
    }

    /// Up to three host names close to `name` (a small edit distance, or containing it), closest
    /// first: for "did you mean" hints about an unknown host.
    pub fn close_host_names(&self, name: &str) -> Vec<&str> {
        suggest(name, self.hosts.iter().map(|h| h.name.as_str()))
    }

    /// A short list of the inventory's group names for hints, skipping the implicit ones.
    fn some_groups(&self) -> String {
        let names: Vec<&str> = self
            .groups
            .iter()
            .skip(2)
            .filter(|g| !g.hosts.is_empty() || !g.children.is_empty())
            .map(|g| g.name.as_str())
            .collect();
        if names.is_empty() {
            return "this inventory has no groups besides `all`".to_string();
        }
        let shown: Vec<String> = names.iter().take(8).map(|n| format!("`{n}`")).collect();
        let more = if names.len() > 8 {
            format!(" and {} more", names.len() - 8)
        } else {
            String::new()
        };
        format!("groups in this inventory: {}{more}", shown.join(", "))
    }
}

fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Up to three candidates close to `name` (small edit distance, or containing it).
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &str)> = candidates
        .filter(|c| *c != name && *c != ALL && *c != UNGROUPED)
        .filter_map(|c| {
            let d = edit_distance(name, c);
            if d <= limit || (name.len() >= 3 && c.contains(name)) {
                Some((d, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

fn hint_from_suggestions(suggestions: &[&str]) -> Option<String> {
    if suggestions.is_empty() {
        return None;
    }
    let names: Vec<String> = suggestions.iter().map(|s| format!("`{s}`")).collect();
    Some(format!("did you mean {}?", names.join(" or ")))
}

// ---------------------------------------------------------------------------------------------
// Builder

#[derive(Debug, Clone)]
struct HostData {
    name: String,
    vars: Vars,
    /// Groups the host is directly in.
    groups: Vec<u32>,
}

#[derive(Debug, Clone)]
struct GroupData {
    name: String,
    hosts: Vec<u32>,
    children: Vec<u32>,
    parents: Vec<u32>,
    vars: Vars,
    priority: i64,
}

/// Builds an [`Inventory`] step by step, with the semantics of Ansible's `InventoryData`.
///
/// Several sources may be parsed into one builder ([`InventoryBuilder::parse_ini`],
/// [`InventoryBuilder::parse_csv`]), as Ansible does for an inventory directory.
#[derive(Debug, Clone)]
pub struct InventoryBuilder {
    hosts: Vec<HostData>,
    host_index: HashMap<String, u32>,
    groups: Vec<GroupData>,
    group_index: HashMap<String, u32>,
    /// (group, host) pairs of direct membership.
    membership: HashSet<(u32, u32)>,
    /// (parent, child) group edges.
    edges: HashSet<(u32, u32)>,
    /// Scratch marks for graph walks.
    marks: Vec<u32>,
    epoch: u32,
}

impl Default for InventoryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl InventoryBuilder {
    /// An inventory with only the implicit groups `all` and `ungrouped` (a child of `all`).
    pub fn new() -> Self {
        let mut b = InventoryBuilder {
            hosts: Vec::new(),
            host_index: HashMap::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            membership: HashSet::new(),
            edges: HashSet::new(),
            marks: Vec::new(),
            epoch: 0,
        };
        b.group_idx_or_create(ALL);
        b.group_idx_or_create(UNGROUPED);
        b.add_child_group(ALL_IDX, UNGROUPED_IDX)
            .expect("ungrouped under all");
        b
    }

    /// Parses an Ansible INI inventory into this builder.
    pub fn parse_ini(&mut self, text: &str, path: &Path) -> Result<&mut Self> {
        ini::parse(self, text, path)?;
        Ok(self)
    }

    /// Parses a commcare-cloud `inventory.csv` into this builder.
    pub fn parse_csv(&mut self, text: &str, path: &Path) -> Result<&mut Self> {
        csv::parse(self, text, path)?;
        Ok(self)
    }

    /// Whether a group of that name exists.
    pub fn has_group(&self, name: &str) -> bool {
        self.group_index.contains_key(name)
    }

    /// Adds a group if it does not exist yet.
    pub fn add_group(&mut self, name: &str) -> Result<&mut Self> {
        if name.is_empty() {
            return Err(Error::config("invalid empty group name"));
        }
        self.group_idx_or_create(name);
        Ok(self)
    }

    /// Adds a host if it does not exist yet, and puts it in `group` (which must exist).
    ///
    /// As in Ansible, `port` (a `host:port` suffix) becomes `ansible_port` only when the host is
    /// created, and a port of 0 is ignored.
    pub fn add_host(
        &mut self,
        name: &str,
        group: Option<&str>,
        port: Option<u64>,
    ) -> Result<&mut Self> {
        self.add_host_inner(name, group, port)
            .map_err(Error::config)?;
        Ok(self)
    }

    /// Makes `child` (a group, or else a host) a member of `group`. Adding a group edge that would
    /// close a loop is an error, as in Ansible.
    pub fn add_child(&mut self, group: &str, child: &str) -> Result<&mut Self> {
        self.add_child_inner(group, child).map_err(Error::config)?;
        Ok(self)
    }

    /// Sets a group variable; `ansible_group_priority` sets the group's priority instead.
    pub fn set_group_var(&mut self, group: &str, key: &str, value: Value) -> Result<&mut Self> {
        self.set_group_var_inner(group, key, value)
            .map_err(Error::config)?;
        Ok(self)
    }

    /// Sets a host variable.
    pub fn set_host_var(&mut self, host: &str, key: &str, value: Value) -> Result<&mut Self> {
        let &h = self
            .host_index
            .get(host)
            .ok_or_else(|| Error::config(format!("unknown host `{host}`")))?;
        self.hosts[h as usize].vars.insert(key.to_string(), value);
        Ok(self)
    }

    fn group_idx_or_create(&mut self, name: &str) -> u32 {
        if let Some(&g) = self.group_index.get(name) {
            return g;
        }
        let g = self.groups.len() as u32;
        self.groups.push(GroupData {
            name: name.to_string(),
            hosts: Vec::new(),
            children: Vec::new(),
            parents: Vec::new(),
            vars: Vars::new(),
            priority: 1,
        });
        self.group_index.insert(name.to_string(), g);
        g
    }

    pub(crate) fn add_host_inner(
        &mut self,
        name: &str,
        group: Option<&str>,
        port: Option<u64>,
    ) -> Result<(), String> {
        if name.is_empty() {
            return Err("invalid empty host name".to_string());
        }
        let g = match group {
            Some(group) => Some(
                *self
                    .group_index
                    .get(group)
                    .ok_or_else(|| format!("could not find group `{group}` in inventory"))?,
            ),
            None => None,
        };
        let h = match self.host_index.get(name) {
            Some(&h) => h,
            None => {
                let h = self.hosts.len() as u32;
                let mut vars = Vars::new();
                if let Some(p) = port.filter(|&p| p != 0) {
                    vars.insert("ansible_port".to_string(), Value::Number(p.into()));
                }
                self.hosts.push(HostData {
                    name: name.to_string(),
                    vars,
                    groups: Vec::new(),
                });
                self.host_index.insert(name.to_string(), h);
                h
            }
        };
        if let Some(g) = g {
            self.add_host_to_group(g, h);
        }
        Ok(())
    }

    fn add_host_to_group(&mut self, g: u32, h: u32) -> bool {
        if self.membership.insert((g, h)) {
            self.groups[g as usize].hosts.push(h);
            self.hosts[h as usize].groups.push(g);
            true
        } else {
            false
        }
    }

    fn remove_host_from_group(&mut self, g: u32, h: u32) {
        if self.membership.remove(&(g, h)) {
            self.groups[g as usize].hosts.retain(|&x| x != h);
            self.hosts[h as usize].groups.retain(|&x| x != g);
        }
    }

    pub(crate) fn add_child_inner(&mut self, group: &str, child: &str) -> Result<bool, String> {
        let &g = self
            .group_index
            .get(group)
            .ok_or_else(|| format!("`{group}` is not a known group"))?;
        if let Some(&c) = self.group_index.get(child) {
            self.add_child_group(g, c)
        } else if let Some(&h) = self.host_index.get(child) {
            Ok(self.add_host_to_group(g, h))
        } else {
            Err(format!("`{child}` is not a known host nor group"))
        }
    }

    fn next_epoch(&mut self) -> u32 {
        if self.marks.len() < self.groups.len() {
            self.marks.resize(self.groups.len(), 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
        self.epoch
    }

    /// `Group.add_child_group`: refuses self-children and loops.
    fn add_child_group(&mut self, parent: u32, child: u32) -> Result<bool, String> {
        if parent == child {
            return Err(format!(
                "can't add group `{}` to itself",
                self.groups[parent as usize].name
            ));
        }
        if self.edges.contains(&(parent, child)) {
            return Ok(false);
        }
        // A loop exists if `child` is an ancestor of `parent`: walk up from `parent`.
        let epoch = self.next_epoch();
        let mut came_from: HashMap<u32, u32> = HashMap::new();
        let mut queue = vec![parent];
        self.marks[parent as usize] = epoch;
        let mut found = false;
        let mut qi = 0;
        while qi < queue.len() {
            let g = queue[qi];
            qi += 1;
            if g == child {
                found = true;
                break;
            }
            for &p in &self.groups[g as usize].parents {
                if self.marks[p as usize] != epoch {
                    self.marks[p as usize] = epoch;
                    came_from.insert(p, g);
                    queue.push(p);
                }
            }
        }
        if found {
            // child -> ... -> parent, following children edges.
            let mut chain = vec![child];
            let mut cur = child;
            while let Some(&next) = came_from.get(&cur) {
                chain.push(next);
                cur = next;
            }
            chain.push(child);
            let names: Vec<&str> = chain
                .iter()
                .map(|&g| self.groups[g as usize].name.as_str())
                .collect();
            return Err(format!(
                "adding group `{}` as a child of `{}` creates a dependency loop: {}",
                self.groups[child as usize].name,
                self.groups[parent as usize].name,
                names.join(" -> ")
            ));
        }
        self.edges.insert((parent, child));
        self.groups[parent as usize].children.push(child);
        self.groups[child as usize].parents.push(parent);
        Ok(true)
    }

    pub(crate) fn set_group_var_inner(
        &mut self,
        group: &str,
        key: &str,
        value: Value,
    ) -> Result<(), String> {
        let &g = self
            .group_index
            .get(group)
            .ok_or_else(|| format!("`{group}` is not a known group"))?;
        if key == "ansible_group_priority" {
            // Group.set_variable calls set_priority(int(value)): whatever int() refuses is an error.
            let p = match &value {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite())
                        .map(|f| f.trunc() as i64)
                }),
                Value::Bool(b) => Some(i64::from(*b)),
                Value::String(s) => address::py_int(s).and_then(|v| i64::try_from(v).ok()),
                _ => None,
            };
            let shown = match &value {
                Value::String(s) => s.clone(),
                other => yaml_serde::to_string(other)
                    .map(|t| t.trim_end().to_string())
                    .unwrap_or_default(),
            };
            let p = p.ok_or_else(|| {
                format!("invalid `ansible_group_priority` value `{shown}`: expected an integer")
            })?;
            self.groups[g as usize].priority = p;
            return Ok(());
        }
        self.groups[g as usize].vars.insert(key.to_string(), value);
        Ok(())
    }

    /// `InventoryData.set_variable`: the entity is looked up among groups first, so the inline
    /// variables of a host that shares its name with a group end up on the group (an Ansible quirk,
    /// reported by the "Found both group and host with same name" warning).
    pub(crate) fn set_variable_inner(
        &mut self,
        entity: &str,
        key: &str,
        value: Value,
    ) -> Result<(), String> {
        if self.group_index.contains_key(entity) {
            self.set_group_var_inner(entity, key, value)
        } else {
            self.set_host_var_inner(entity, key, value)
        }
    }

    pub(crate) fn set_host_var_inner(
        &mut self,
        host: &str,
        key: &str,
        value: Value,
    ) -> Result<(), String> {
        let &h = self
            .host_index
            .get(host)
            .ok_or_else(|| format!("unknown host `{host}`"))?;
        self.hosts[h as usize].vars.insert(key.to_string(), value);
        Ok(())
    }

    /// Every group `h` is in, directly or through ancestors.
    fn transitive_groups(&mut self, h: u32) -> Vec<u32> {
        let epoch = self.next_epoch();
        let mut out: Vec<u32> = Vec::new();
        for &g in &self.hosts[h as usize].groups {
            if self.marks[g as usize] != epoch {
                self.marks[g as usize] = epoch;
                out.push(g);
            }
        }
        let mut qi = 0;
        while qi < out.len() {
            let g = out[qi];
            qi += 1;
            for &p in &self.groups[g as usize].parents {
                if self.marks[p as usize] != epoch {
                    self.marks[p as usize] = epoch;
                    out.push(p);
                }
            }
        }
        out
    }

    /// Finishes the inventory the way Ansible's `reconcile_inventory` does, and precomputes depths
    /// and every group's host list.
    pub fn build(mut self) -> Result<Inventory> {
        // Every group without a parent becomes a child of `all`.
        for g in 0..self.groups.len() as u32 {
            if g != ALL_IDX && self.groups[g as usize].parents.is_empty() {
                self.add_child_group(ALL_IDX, g).map_err(Error::config)?;
            }
        }
        // `ungrouped` holds exactly the hosts that are in no other group.
        for h in 0..self.hosts.len() as u32 {
            let mine = self.transitive_groups(h);
            if mine.contains(&UNGROUPED_IDX) {
                if mine.iter().any(|&g| g != ALL_IDX && g != UNGROUPED_IDX) {
                    self.remove_host_from_group(UNGROUPED_IDX, h);
                }
            } else if mine.is_empty() || (mine.len() == 1 && mine[0] == ALL_IDX) {
                // `add_child('ungrouped', host.name)` resolves the name as a group first.
                match self.group_index.get(&self.hosts[h as usize].name) {
                    Some(&g) => {
                        self.add_child_group(UNGROUPED_IDX, g)
                            .map_err(Error::config)?;
                    }
                    None => {
                        self.add_host_to_group(UNGROUPED_IDX, h);
                    }
                }
            }
        }

        let mut warnings = Vec::new();
        let invalid: Vec<&str> = self
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .filter(|n| !is_valid_group_name(n))
            .collect();
        if !invalid.is_empty() {
            let names: Vec<String> = invalid.iter().map(|n| format!("`{n}`")).collect();
            warnings.push(format!(
                "Invalid characters were found in group names but not replaced: {}",
                names.join(", ")
            ));
        }
        let mut conflicts: Vec<&str> = self
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .filter(|n| self.host_index.contains_key(*n))
            .collect();
        conflicts.sort_unstable();
        for c in conflicts {
            warnings.push(format!("Found both group and host with same name: {c}"));
        }

        let ng = self.groups.len();
        let nh = self.hosts.len();

        // Depth: the longest path from `all` (Kahn's order over the child edges).
        let mut depth = vec![0usize; ng];
        let mut indegree: Vec<usize> = self.groups.iter().map(|g| g.parents.len()).collect();
        let mut order: Vec<u32> = (0..ng as u32)
            .filter(|&g| indegree[g as usize] == 0)
            .collect();
        let mut qi = 0;
        while qi < order.len() {
            let g = order[qi];
            qi += 1;
            for &c in &self.groups[g as usize].children {
                depth[c as usize] = depth[c as usize].max(depth[g as usize] + 1);
                indegree[c as usize] -= 1;
                if indegree[c as usize] == 0 {
                    order.push(c);
                }
            }
        }

        // Each group's hosts in `Group.get_hosts()` order: breadth-first over the descendants
        // (the group itself first), each group's direct hosts in order, without duplicates.
        let mut group_mark = vec![u32::MAX; ng];
        let mut host_mark = vec![u32::MAX; nh];
        let mut members: Vec<Vec<u32>> = Vec::with_capacity(ng);
        let mut walk: Vec<u32> = Vec::new();
        for g in 0..ng as u32 {
            walk.clear();
            walk.push(g);
            group_mark[g as usize] = g;
            let mut qi = 0;
            while qi < walk.len() {
                let cur = walk[qi];
                qi += 1;
                for &c in &self.groups[cur as usize].children {
                    if group_mark[c as usize] != g {
                        group_mark[c as usize] = g;
                        walk.push(c);
                    }
                }
            }
            let mut list = Vec::new();
            for &cur in &walk {
                for &h in &self.groups[cur as usize].hosts {
                    if host_mark[h as usize] != g {
                        host_mark[h as usize] = g;
                        list.push(h);
                    }
                }
            }
            members.push(list);
        }
        let mut host_groups: Vec<Vec<u32>> = vec![Vec::new(); nh];
        for (g, list) in members.iter().enumerate() {
            for &h in list {
                host_groups[h as usize].push(g as u32);
            }
        }
        // A host always keeps `all` among its groups, even one orphaned by an odd `:children` use
        // of `ungrouped` (it then gets `all`'s variables but is not listed by `all`, as in Ansible).
        for groups in &mut host_groups {
            if groups.first() != Some(&ALL_IDX) {
                groups.insert(0, ALL_IDX);
            }
        }

        let group_names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        let groups: Vec<Group> = std::mem::take(&mut self.groups)
            .into_iter()
            .zip(depth)
            .map(|(g, depth)| Group {
                hosts: g
                    .hosts
                    .iter()
                    .map(|&h| self.hosts[h as usize].name.clone())
                    .collect(),
                children: g
                    .children
                    .iter()
                    .map(|&c| group_names[c as usize].clone())
                    .collect(),
                name: g.name,
                vars: g.vars,
                depth,
                priority: g.priority,
            })
            .collect();
        let hosts: Vec<Host> = self
            .hosts
            .into_iter()
            .map(|h| Host {
                name: h.name,
                vars: h.vars,
            })
            .collect();
        Ok(Inventory {
            hosts,
            host_index: self.host_index,
            groups,
            group_index: self.group_index,
            members,
            host_groups,
            warnings,
        })
    }
}

/// Ansible's `INVALID_VARIABLE_NAMES` (`^[\d\W]|[^\w]`) does not match the name.
fn is_valid_group_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        None => true,
        Some(first) => {
            (first == '_' || (first.is_alphanumeric() && !first.is_numeric()))
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `environments/development/inventory.ini` from commcare-cloud, unchanged.
    pub(crate) const DEVELOPMENT_INI: &str = r#"[app1]
192.168.33.15

[app1:vars]
hostname='app1'
ansible_python_interpreter = '/usr/bin/python3'

[db1]
192.168.33.16

[db1:vars]
hostname='db1'
ansible_python_interpreter = '/usr/bin/python3'

[proxy1]
192.168.33.17

[proxy1:vars]
hostname='proxy1'
ansible_python_interpreter = '/usr/bin/python3'

[webworkers]
192.168.33.15

[postgresql]
192.168.33.16

[postgresql:vars]
hot_standby_server="192.168.33.17"
postgresql_replication_slots="['standby1']"

[pg_standby]
192.168.33.17

[pg_standby:vars]
hot_standby_master="192.168.33.16"
replication_slot=standby1

[pg_backup]
192.168.33.15

[pg_backup:vars]
pg_backup_from="192.168.33.17"

[couchdb2]
192.168.33.16

[redis]
192.168.33.15
192.168.33.16
192.168.33.17

[redis_cluster_master]
192.168.33.15
192.168.33.16
192.168.33.17

[formplayer]
192.168.33.16

[celery]
192.168.33.16 datadog_integrations=celery

[elasticsearch]
192.168.33.16 elasticsearch_node_name=es0

[proxy]
192.168.33.17

[zookeeper]
192.168.33.16

[kafka]
192.168.33.16 kafka_broker_id=0

[pillowtop]
192.168.33.16

[shared_dir_host]
192.168.33.16

[mailrelay]
192.168.33.14 parent_mailrelay='mail.example.org'

[couchdb2_proxy]
192.168.33.17

[control]
192.168.33.14

[control:vars]
hostname='control'

[django_manage:children]
webworkers
"#;

    /// `environments/test/inventory.ini` from commcare-cloud, unchanged.
    pub(crate) const TEST_INI: &str = r#"[django_manage]
cloud_worker_1

[webworkers]
cloud_worker_2
cloud_worker_3
cloud_worker_4

[celery]
cloud_worker_5

[pillowtop]
cloud_worker_6

[proxy]
cloud_worker_7

[control]

[redis]
redis.fake

[elasticsearch]

[postgresql]
postgres.fake

[kafka]

[formplayer]

[commcarehq:children]
django_manage
webworkers
celery
pillowtop
proxy
"#;

    pub(crate) fn dev() -> Inventory {
        Inventory::parse_ini(DEVELOPMENT_INI, Path::new("development/inventory.ini")).unwrap()
    }

    pub(crate) fn test_env() -> Inventory {
        Inventory::parse_ini(TEST_INI, Path::new("test/inventory.ini")).unwrap()
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    #[test]
    fn development_environment() {
        let inv = dev();
        assert_eq!(inv.group_hosts("django_manage").unwrap(), ["192.168.33.15"]);
        assert_eq!(inv.host_vars("192.168.33.15")["hostname"], s("app1"));
        assert_eq!(
            inv.host_vars("192.168.33.16")["postgresql_replication_slots"],
            s("['standby1']")
        );
        assert_eq!(
            inv.host_vars("192.168.33.17")["replication_slot"],
            s("standby1")
        );
        assert_eq!(
            inv.host_vars("192.168.33.16")["kafka_broker_id"],
            Value::Number(0.into())
        );
        assert_eq!(
            inv.host_vars("192.168.33.14")["parent_mailrelay"],
            s("mail.example.org")
        );
        assert_eq!(
            inv.host_vars("192.168.33.15")["ansible_python_interpreter"],
            s("/usr/bin/python3")
        );
        assert_eq!(inv.group_hosts("redis").unwrap().len(), 3);
        assert!(inv.group_hosts("ungrouped").unwrap().is_empty());
        assert!(inv.group("ungrouped").unwrap().hosts.is_empty());
        assert_eq!(
            inv.hosts().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            [
                "192.168.33.15",
                "192.168.33.16",
                "192.168.33.17",
                "192.168.33.14"
            ]
        );
        assert_eq!(inv.group("webworkers").unwrap().depth, 2);
        assert_eq!(inv.group("django_manage").unwrap().children, ["webworkers"]);
        assert_eq!(
            inv.groups_of("192.168.33.15"),
            [
                "app1",
                "django_manage",
                "pg_backup",
                "redis",
                "redis_cluster_master",
                "webworkers"
            ]
        );
        assert_eq!(inv.address("192.168.33.15"), "192.168.33.15");
        assert_eq!(inv.port("192.168.33.15"), None);
        assert!(inv.warnings().is_empty());
        // Ansible's `groups.all` order for this file.
        assert_eq!(
            inv.group_hosts("all").unwrap(),
            [
                "192.168.33.15",
                "192.168.33.16",
                "192.168.33.17",
                "192.168.33.14"
            ]
        );
    }

    #[test]
    fn test_environment() {
        let inv = test_env();
        assert_eq!(inv.group_hosts("commcarehq").unwrap().len(), 7);
        assert!(inv.group_hosts("control").unwrap().is_empty());
        assert!(inv.group("control").is_some());
        assert_eq!(inv.len(), 9);
        // Checked against ansible-core: `ansible all --list-hosts` order.
        assert_eq!(
            inv.group_hosts("all").unwrap(),
            [
                "redis.fake",
                "postgres.fake",
                "cloud_worker_1",
                "cloud_worker_2",
                "cloud_worker_3",
                "cloud_worker_4",
                "cloud_worker_5",
                "cloud_worker_6",
                "cloud_worker_7"
            ]
        );
        assert_eq!(
            inv.group("all").unwrap().children,
            [
                "ungrouped",
                "control",
                "redis",
                "elasticsearch",
                "postgresql",
                "kafka",
                "formplayer",
                "commcarehq"
            ]
        );
        assert_eq!(inv.group("django_manage").unwrap().depth, 2);
        assert_eq!(
            inv.groups_of("cloud_worker_1"),
            ["commcarehq", "django_manage"]
        );
    }

    #[test]
    fn var_precedence_by_depth_priority_and_name() {
        let text = "[all:vars]\nv=0\nw=0\n[a]\nh\n[b]\nh\n[a:vars]\nv='a'\n[b:vars]\nv='b'\n[p:children]\na\n[p:vars]\nv='p'\nw='p'\n";
        let inv = Inventory::parse_ini(text, Path::new("x.ini")).unwrap();
        // a and b are both at depth 2 (under p? no: only a is under p).
        assert_eq!(inv.group("a").unwrap().depth, 2);
        assert_eq!(inv.group("b").unwrap().depth, 1);
        let vars = inv.host_vars("h");
        assert_eq!(vars["v"], s("a"));
        assert_eq!(vars["w"], s("p"));
        // Same depth: alphabetical, later name wins.
        let inv = Inventory::parse_ini(
            "[b]\nh\n[a]\nh\n[a:vars]\nv=1\n[b:vars]\nv=2\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(inv.host_vars("h")["v"], Value::Number(2.into()));
        // ansible_group_priority beats the name.
        let inv = Inventory::parse_ini(
            "[b]\nh\n[a]\nh\n[a:vars]\nv=1\nansible_group_priority=10\n[b:vars]\nv=2\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(inv.host_vars("h")["v"], Value::Number(1.into()));
        assert_eq!(inv.group("a").unwrap().priority, 10);
        assert!(
            !inv.group("a")
                .unwrap()
                .vars
                .contains_key("ansible_group_priority")
        );
        // Host vars win over everything.
        let inv = Inventory::parse_ini("[a]\nh v=3\n[a:vars]\nv=1\n", Path::new("x")).unwrap();
        assert_eq!(inv.host_vars("h")["v"], Value::Number(3.into()));
        assert_eq!(inv.host_var("h", "v"), Some(Value::Number(3.into())));
        assert_eq!(inv.host_var("h", "nope"), None);
    }

    #[test]
    fn connection_vars() {
        let text = "[a]\nh1 ansible_host=10.0.0.1 ansible_port=2222 ansible_user=ubuntu\nh2:2200\nh3 ansible_ssh_host=10.0.0.3 ansible_host=1.1.1.1 ansible_ssh_port='22' ansible_ssh_user=root\n[a:vars]\nansible_user=deploy\n";
        let inv = Inventory::parse_ini(text, Path::new("x")).unwrap();
        assert_eq!(inv.address("h1"), "10.0.0.1");
        assert_eq!(inv.port("h1"), Some(2222));
        assert_eq!(inv.user("h1").as_deref(), Some("ubuntu"));
        assert_eq!(inv.address("h2"), "h2");
        assert_eq!(inv.port("h2"), Some(2200));
        assert_eq!(inv.user("h2").as_deref(), Some("deploy"));
        assert_eq!(inv.address("h3"), "10.0.0.3");
        assert_eq!(inv.port("h3"), Some(22));
        assert_eq!(inv.user("h3").as_deref(), Some("root"));
        assert_eq!(inv.address("unknown"), "unknown");
    }

    #[test]
    fn builder_api() {
        let mut b = Inventory::builder();
        b.add_group("web").unwrap();
        b.add_host("w1", Some("web"), Some(2222)).unwrap();
        b.add_host("w2", Some("web"), None).unwrap();
        b.add_host("lonely", None, None).unwrap();
        b.add_group("app").unwrap();
        b.add_child("app", "web").unwrap();
        b.set_group_var("web", "x", Value::Bool(true)).unwrap();
        b.set_host_var("w1", "y", s("z")).unwrap();
        assert!(b.add_host("w3", Some("nope"), None).is_err());
        assert!(
            b.add_child("web", "app")
                .unwrap_err()
                .message()
                .contains("loop")
        );
        assert!(b.add_child("web", "web").is_err());
        assert!(b.add_child("web", "ghost").is_err());
        let inv = b.build().unwrap();
        assert_eq!(inv.group_hosts("app").unwrap(), ["w1", "w2"]);
        assert_eq!(inv.group_hosts("ungrouped").unwrap(), ["lonely"]);
        assert_eq!(
            inv.host_vars("w1")["ansible_port"],
            Value::Number(2222.into())
        );
        assert_eq!(inv.host_vars("w1")["x"], Value::Bool(true));
        assert_eq!(inv.host_vars("w1")["y"], s("z"));
        assert_eq!(inv.group("all").unwrap().children, ["ungrouped", "app"]);
        assert!(Inventory::default().is_empty());
    }

    #[test]
    fn warnings_for_conflicts_and_names() {
        let inv = Inventory::parse_ini("[web]\nweb\n[bad-name]\nh\n", Path::new("x")).unwrap();
        assert!(
            inv.warnings()
                .iter()
                .any(|w| w == "Found both group and host with same name: web")
        );
        assert!(inv.warnings().iter().any(|w| w.contains("`bad-name`")));
    }

    #[test]
    fn suggestions() {
        let inv = dev();
        assert_eq!(inv.suggest("webworker"), ["webworkers"]);
        assert!(inv.suggest("zzzzzzzz").is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn five_thousand_hosts_are_fast() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "[web{i}]\n10.0.{}.{} hostname=web{i}\n",
                i / 250,
                i % 250
            ));
        }
        text.push_str("[webworkers:children]\n");
        for i in 0..5000 {
            text.push_str(&format!("web{i}\n"));
        }
        text.push_str("[proxy]\n10.0.0.0\n");
        let start = std::time::Instant::now();
        let inv = Inventory::parse_ini(&text, Path::new("big.ini")).unwrap();
        let parsed = start.elapsed();
        assert_eq!(inv.len(), 5000);
        assert_eq!(inv.group_hosts("webworkers").unwrap().len(), 5000);
        let sel = inv.select("webworkers:!proxy:&all").unwrap();
        assert_eq!(sel.hosts.len(), 4999);
        let sel = inv.select("web1*").unwrap();
        assert_eq!(sel.hosts.len(), 1111);
        for i in 0..200 {
            inv.select(&format!("web{i}")).unwrap();
        }
        // Generous: a debug build on a loaded machine; a release build takes a few milliseconds.
        assert!(
            start.elapsed().as_secs() < 20,
            "parse {parsed:?}, total {:?}",
            start.elapsed()
        );
    }
}
