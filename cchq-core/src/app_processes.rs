//! `app-processes.yml`: which CommCare HQ processes run where, merged over commcare-cloud's
//! defaults (`environmental-defaults/app-processes.yml`).

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::{Value, yaml};

pub(crate) const DEFAULTS: &str =
    include_str!("../profiles/commcare/environmental-defaults/app-processes.yml");

/// Options of one group of celery queues on one host (commcare-cloud's `CeleryOptions`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CeleryOptions {
    /// Worker concurrency.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// `prefork` or `gevent`.
    #[serde(default = "prefork")]
    pub pooling: String,
    /// `--max-tasks-per-child` (prefork only).
    #[serde(default)]
    pub max_tasks_per_child: Option<u32>,
    /// How many workers consume these queues on the host (0: none).
    #[serde(default = "one")]
    pub num_workers: u32,
    /// `--prefetch-multiplier`.
    #[serde(default = "four")]
    pub prefetch_multiplier: u32,
    /// Extra environment variables.
    #[serde(default)]
    pub env_vars: IndexMap<String, Value>,
    /// Anything else: commcare-cloud rejects it, so does validation ([`AppProcesses::check`]).
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
}

impl Default for CeleryOptions {
    /// commcare-cloud's defaults (`CeleryOptions` in `schemas/app_processes.py`).
    fn default() -> Self {
        Self {
            concurrency: 1,
            pooling: prefork(),
            max_tasks_per_child: None,
            num_workers: 1,
            prefetch_multiplier: 4,
            env_vars: IndexMap::new(),
            other: IndexMap::new(),
        }
    }
}

/// Options of one pillow on one host (commcare-cloud's `PillowOptions`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PillowOptions {
    /// First process number on this host.
    #[serde(default)]
    pub start_process: u32,
    /// Processes on this host (0: none).
    #[serde(default = "one")]
    pub num_processes: u32,
    /// Total processes across hosts (`--num-processes`; default `num_processes`).
    #[serde(default)]
    pub total_processes: Option<u32>,
    /// gevent workers per process.
    #[serde(default)]
    pub gevent_workers: u32,
    /// Process 0 only runs migrations (and gets no gevent workers).
    #[serde(default)]
    pub dedicated_migration_process: bool,
    /// `--processor-chunk-size`.
    #[serde(default)]
    pub processor_chunk_size: Option<u32>,
    /// `--exclude-ucrs`.
    #[serde(default)]
    pub exclude_ucrs: Option<Value>,
    /// Extra environment variables.
    #[serde(default)]
    pub env_vars: IndexMap<String, Value>,
    /// Per process number (`"0"`, ...): options of that process only (`env_vars`).
    #[serde(default)]
    pub process: IndexMap<String, Value>,
    /// Anything else: commcare-cloud rejects it, so does validation ([`AppProcesses::check`]).
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
}

impl Default for PillowOptions {
    /// commcare-cloud's defaults (`PillowOptions` in `schemas/app_processes.py`).
    fn default() -> Self {
        Self {
            start_process: 0,
            num_processes: 1,
            total_processes: None,
            gevent_workers: 0,
            dedicated_migration_process: false,
            processor_chunk_size: None,
            exclude_ucrs: None,
            env_vars: IndexMap::new(),
            process: IndexMap::new(),
            other: IndexMap::new(),
        }
    }
}

fn one() -> u32 {
    1
}
fn four() -> u32 {
    4
}
fn prefork() -> String {
    "prefork".to_owned()
}

/// The whole `app-processes.yml`, defaults applied.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct AppProcesses {
    /// gunicorn bind address.
    pub django_bind: String,
    /// gunicorn port.
    pub django_port: u16,
    /// flower port.
    pub flower_port: u16,
    /// gunicorn workers per vCPU.
    pub gunicorn_workers_factor: u32,
    /// gunicorn workers added to the per-vCPU ones.
    pub gunicorn_workers_static_factor: u32,
    /// gunicorn `--max-requests`.
    pub gunicorn_max_requests: u32,
    /// gunicorn `--graceful-timeout`.
    pub gunicorn_graceful_timeout: u32,
    /// formplayer heap.
    pub formplayer_memory: String,
    /// What commcare-cloud's celery runner puts before `celery` (e.g. `ddtrace-run `).
    pub celery_command_prefix: String,
    /// `host -> {command_name: options}`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub management_commands: IndexMap<String, Option<IndexMap<String, Value>>>,
    /// `host -> {"q1,q2": options}`; a key may list several hosts, `a,b` (as may the keys of
    /// `management_commands` and `pillows`): see [`AppProcesses::entry_for`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub celery_processes: IndexMap<String, Option<IndexMap<String, Option<CeleryOptions>>>>,
    /// `host -> {PillowName: options}`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pillows: IndexMap<String, Option<IndexMap<String, Option<PillowOptions>>>>,
    /// Every other setting, kept as written.
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl AppProcesses {
    /// Parses the environment's file `text` (at `path`) over the defaults.
    pub fn load(text: &str, path: &Path) -> Result<Self> {
        // commcare-cloud reads the file with PyYAML: YAML 1.1 (`yaml::load`).
        let defaults: Value = yaml::load(
            DEFAULTS,
            Path::new("environmental-defaults/app-processes.yml"),
        )?;
        let env: Value = yaml::load(text, path)?;
        let mut merged = match defaults {
            Value::Mapping(m) => m,
            _ => return Err(Error::internal("app-processes defaults are not a mapping")),
        };
        match env {
            Value::Null => {}
            Value::Mapping(m) => merged.extend(m),
            _ => {
                return Err(Error::at(
                    path,
                    Some(1),
                    None,
                    "expected a mapping of settings",
                ));
            }
        }
        // Type errors are reported against the environment's own file, where the line is known.
        if !text.trim().is_empty() {
            yaml::load_as::<Self>(text, path)?;
        }
        yaml::from_value(Value::Mapping(merged), path)
    }

    /// What makes the file invalid, as commcare-cloud's `AppProcessesConfig.check` and
    /// `check_and_translate_hosts` find it (`environment/schemas/app_processes.py`): host keys
    /// ([`translate_item`] for each comma-separated item; one host named by two keys of a section,
    /// where commcare-cloud silently keeps only the last), options commcare-cloud does not know or
    /// accept, `beat`/`flower` grouped with other queues or run on more than one host, and hosts
    /// of the `celery` and `pillowtop` groups that the file does not mention. commcare-cloud's
    /// catalog of CommCare HQ's queue names is not checked: cchq also runs other apps.
    pub fn check(&self, inventory: &Inventory) -> Check {
        let mut out = Check::default();
        check_section(
            &mut out.problems,
            inventory,
            "management_commands",
            &self.management_commands,
        );
        let celery_hosts = check_section(
            &mut out.problems,
            inventory,
            "celery_processes",
            &self.celery_processes,
        );
        let pillow_hosts = check_section(&mut out.problems, inventory, "pillows", &self.pillows);

        let mut solo_hosts: IndexMap<&str, Vec<&str>> = IndexMap::new();
        for (key, queues) in &self.celery_processes {
            let hosts: Vec<&str> = key
                .split(',')
                .map(|i| translate_item(inventory, i).ok().flatten().unwrap_or(i))
                .collect();
            for (queues, opts) in queues.iter().flatten() {
                let names: Vec<&str> = queues.split(',').collect();
                for solo in SOLO_QUEUES {
                    if names.contains(&solo) {
                        if names.len() > 1 {
                            out.problems.push(format!(
                                "`celery_processes.{key}.{queues}`: `{solo}` is not a queue and cannot be grouped with other queues"
                            ));
                        }
                        solo_hosts.entry(solo).or_default().extend(&hosts);
                    }
                }
                if names.iter().any(|q| q.is_empty() || q.trim() != *q) {
                    out.problems.push(format!(
                        "`celery_processes.{key}.{queues}`: an empty queue name or one with spaces"
                    ));
                }
                if let Some(o) = opts {
                    if !matches!(o.pooling.as_str(), "prefork" | "gevent") {
                        out.problems
                            .push(format!("`celery_processes.{key}.{queues}.pooling`: `{}` is neither `prefork` nor `gevent`", o.pooling));
                    }
                    for k in o.other.keys() {
                        out.problems.push(format!("`celery_processes.{key}.{queues}.{k}`: not a celery option ({CELERY_OPTIONS})"));
                    }
                }
            }
        }
        for (solo, mut hosts) in solo_hosts {
            hosts.sort_unstable();
            hosts.dedup();
            if hosts.len() > 1 {
                out.problems.push(format!(
                    "`celery_processes`: `{solo}` runs on {} hosts ({}); it may run on one only",
                    hosts.len(),
                    hosts.join(", ")
                ));
            }
        }
        for (key, pillows) in &self.pillows {
            for (name, opts) in pillows.iter().flatten() {
                if DEPRECATED_PILLOWS.contains(&name.as_str()) {
                    out.warnings.push(format!(
                        "`pillows.{key}.{name}`: a deprecated pillow, not run; remove it"
                    ));
                }
                for k in opts.iter().flat_map(|o| o.other.keys()) {
                    out.problems.push(format!(
                        "`pillows.{key}.{name}.{k}`: not a pillow option ({PILLOW_OPTIONS})"
                    ));
                }
            }
        }
        for (group, section, named) in [
            ("celery", "celery_processes", &celery_hosts),
            ("pillowtop", "pillows", &pillow_hosts),
        ] {
            for host in inventory.group_hosts(group).unwrap_or_default() {
                if !named.contains(&host) {
                    out.problems
                        .push(format!("`{section}`: `{group}` host `{host}` is not mentioned (under its name or a group of it alone)"));
                }
            }
        }
        out
    }

    /// The entry of a section (`management_commands`, `celery_processes`, `pillows`) for `host`, as
    /// commcare-cloud's `check_and_translate_hosts` reads it: each key is split at its commas;
    /// each item is a host, a group of exactly one host, or `None` ([`translate_item`]); when
    /// several keys name the host the last one wins (validation reports that). `groups` are the
    /// host's groups, sorted ([`Inventory::groups_of`]): only items that can stand for the host
    /// are resolved, so the cost is a string comparison per key item.
    pub fn entry_for<'a, V>(
        inventory: &Inventory,
        section: &'a IndexMap<String, V>,
        host: &str,
        groups: &[&str],
    ) -> Option<&'a V> {
        inventory.host(host)?;
        let names_host = |item: &str| {
            item == host
                || (inventory.host(item).is_none()
                    && (item == crate::inventory::ALL || groups.binary_search(&item).is_ok())
                    && inventory
                        .group_hosts(item)
                        .is_some_and(|h| h.len() == 1 && h[0] == host))
        };
        section
            .iter()
            .rev()
            .find(|(key, _)| key.split(',').any(names_host))
            .map(|(_, v)| v)
    }
}

/// Celery "queues" that are programs of their own (commcare-cloud's `SOLO_QUEUES`).
pub const SOLO_QUEUES: [&str; 2] = ["flower", "beat"];

/// Pillows commcare-cloud drops with a warning (`filter_out_deprecated_pillows`).
pub const DEPRECATED_PILLOWS: [&str; 2] = ["GeographyFluffPillow", "FarmerRecordFluffPillow"];

const CELERY_OPTIONS: &str =
    "concurrency, pooling, max_tasks_per_child, num_workers, prefetch_multiplier, env_vars";
const PILLOW_OPTIONS: &str = "start_process, num_processes, gevent_workers, dedicated_migration_process, total_processes, \
                              processor_chunk_size, exclude_ucrs, env_vars, process";

/// What [`AppProcesses::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// What makes the file invalid.
    pub problems: Vec<String>,
    /// What is accepted but should change.
    pub warnings: Vec<String>,
}

/// What one item of a (comma-separated) host key stands for, as commcare-cloud's
/// `Environment.translate_host` resolves it: `None` for the `None` placeholder (queues parked
/// nowhere), an inventory host itself, or the one host of a group; an unknown name or a group of
/// another size is an error (the message says which).
///
/// # Errors
/// The problem, as a sentence.
pub fn translate_item<'i>(
    inventory: &'i Inventory,
    item: &str,
) -> std::result::Result<Option<&'i str>, String> {
    if item == "None" {
        return Ok(None);
    }
    if let Some(h) = inventory.host(item) {
        return Ok(Some(h.name.as_str()));
    }
    match inventory.group_hosts(item) {
        Some(h) if h.len() == 1 => Ok(Some(h[0])),
        Some(h) => Err(format!(
            "group `{item}` has {} hosts; name a host or a group of one host (list several with commas)",
            h.len()
        )),
        None if item.trim() != item => Err(format!(
            "`{item}` has spaces around it: separate the hosts with commas only"
        )),
        None => Err(format!("no host or group `{item}` in the inventory")),
    }
}

/// Checks the keys of one section; returns the hosts they name.
fn check_section<'i, V>(
    problems: &mut Vec<String>,
    inventory: &'i Inventory,
    section: &str,
    map: &IndexMap<String, V>,
) -> Vec<&'i str> {
    let mut named: IndexMap<&'i str, &str> = IndexMap::new();
    for key in map.keys() {
        for item in key.split(',') {
            match translate_item(inventory, item) {
                Ok(None) => {}
                Ok(Some(host)) => {
                    if let Some(first) = named.insert(host, key)
                        && first != key
                    {
                        problems.push(format!(
                            "`{section}`: host `{host}` is named by `{first}` and by `{key}`; commcare-cloud would use only `{key}` \
                             for it: list it under one key"
                        ));
                    }
                }
                Err(why) => problems.push(format!("`{section}.{key}`: {why}")),
            }
        }
    }
    named.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_nulls_are_empty() {
        let text = "management_commands:\n  celery:\ncelery_processes:\n  celery:\n    beat: {}\n    a,b:\n      concurrency: 3\n";
        let ap = AppProcesses::load(text, Path::new("app-processes.yml")).unwrap();
        assert_eq!(ap.django_port, 9010);
        assert_eq!(ap.gunicorn_max_requests, 240);
        let q = ap.celery_processes["celery"].as_ref().unwrap();
        assert_eq!(q["a,b"].as_ref().unwrap().concurrency, 3);
        assert_eq!(q["a,b"].as_ref().unwrap().prefetch_multiplier, 4);
        assert!(ap.management_commands["celery"].is_none());
    }

    #[test]
    fn type_errors_name_the_line() {
        let text = "celery_processes:\n  celery:\n    q:\n      concurrency: lots\n";
        let err = AppProcesses::load(text, Path::new("app-processes.yml")).unwrap_err();
        assert!(err.message().starts_with("app-processes.yml:"), "{err}");
        assert!(
            err.message().contains("lots") || err.message().contains("invalid"),
            "{err}"
        );
    }

    fn checked(inventory: &str, text: &str) -> Check {
        let inv = Inventory::parse_ini(inventory, Path::new("inventory.ini")).unwrap();
        AppProcesses::load(text, Path::new("app-processes.yml"))
            .unwrap()
            .check(&inv)
    }

    const INV: &str = "[celery_a0]\nc0\n[celery_a1]\nc1\n[celery_b1]\nc2\n[celery:children]\ncelery_a0\ncelery_a1\ncelery_b1\n\
                       [pillow_a0]\np0\n[pillow_a1]\np1\n[pillowtop:children]\npillow_a0\npillow_a1\n";

    /// The shape of commcare-cloud's production file: several hosts per key, each a host or a
    /// group of one host, `None` parking queues nowhere.
    #[test]
    fn comma_separated_host_keys_validate() {
        let text = "management_commands:\n  celery_a0,p1:\n    run_sms_queue:\n\
                    celery_processes:\n  celery_a0:\n    beat: {}\n    flower: {}\n  celery_a1,c2,None:\n    celery,email_queue:\n      num_workers: 2\n\
                    pillows:\n  pillow_a0,p1:\n    xform-pillow:\n      num_processes: 3\n      dedicated_migration_process: true\n      gevent_workers: 4\n";
        assert_eq!(checked(INV, text), Check::default());
    }

    #[test]
    fn every_item_of_a_key_must_be_a_host_or_a_group_of_one() {
        let text = "celery_processes:\n  celery_a0,celery_a1,celery_c9:\n    celery: {}\n  celery_b1, c0:\n    q: {}\n  celery:\n    r: {}\n\
                    pillows:\n  pillow_a0,pillow_a1: {}\n";
        let c = checked(INV, text);
        let has = |needle: &str| c.problems.iter().any(|p| p.contains(needle));
        assert!(
            has(
                "`celery_processes.celery_a0,celery_a1,celery_c9`: no host or group `celery_c9` in the inventory"
            ),
            "{c:?}"
        );
        assert!(has("` c0` has spaces around it"), "{c:?}");
        assert!(
            has("`celery_processes.celery`: group `celery` has 3 hosts"),
            "{c:?}"
        );
        assert_eq!(c.problems.len(), 3, "{c:?}");
    }

    #[test]
    fn hosts_of_the_celery_and_pillowtop_groups_must_be_mentioned() {
        let text = "celery_processes:\n  celery_a0,celery_a1:\n    celery: {}\npillows:\n  pillow_a0: {}\n";
        let c = checked(INV, text);
        assert_eq!(
            c.problems,
            [
                "`celery_processes`: `celery` host `c2` is not mentioned (under its name or a group of it alone)",
                "`pillows`: `pillowtop` host `p1` is not mentioned (under its name or a group of it alone)",
            ]
        );
    }

    /// commcare-cloud would keep only the last key naming a host, dropping the other's programs.
    #[test]
    fn a_host_named_by_two_keys_is_a_problem() {
        let text = "celery_processes:\n  celery_a0:\n    beat: {}\n  c0,c1,c2:\n    celery: {}\npillows:\n  pillow_a0,pillow_a1: {}\n";
        let c = checked(INV, text);
        assert_eq!(
            c.problems,
            [
                "`celery_processes`: host `c0` is named by `celery_a0` and by `c0,c1,c2`; commcare-cloud would use only `c0,c1,c2` for it: list it under one key"
            ]
        );
    }

    #[test]
    fn options_and_queues_are_checked_as_commcare_cloud_does() {
        let text = "celery_processes:\n  c0:\n    beat,celery:\n      num_worker: 3\n    q:\n      pooling: threads\n    flower: {}\n  \
                    c1,c2:\n    flower: {}\n    a,,b: {}\npillows:\n  p0,p1:\n    P:\n      num_process: 2\n    GeographyFluffPillow: {}\n";
        let c = checked(INV, text);
        let has = |needle: &str| c.problems.iter().any(|p| p.contains(needle));
        assert!(
            has("`celery_processes.c0.beat,celery`: `beat` is not a queue and cannot be grouped"),
            "{c:?}"
        );
        assert!(
            has("`celery_processes.c0.beat,celery.num_worker`: not a celery option"),
            "{c:?}"
        );
        assert!(
            has("`celery_processes.c0.q.pooling`: `threads` is neither"),
            "{c:?}"
        );
        assert!(
            has(
                "`celery_processes`: `flower` runs on 3 hosts (c0, c1, c2); it may run on one only"
            ),
            "{c:?}"
        );
        assert!(
            has("`celery_processes.c1,c2.a,,b`: an empty queue name"),
            "{c:?}"
        );
        assert!(
            has("`pillows.p0,p1.P.num_process`: not a pillow option"),
            "{c:?}"
        );
        assert_eq!(c.problems.len(), 6, "{c:?}");
        assert_eq!(
            c.warnings,
            ["`pillows.p0,p1.GeographyFluffPillow`: a deprecated pillow, not run; remove it"]
        );
    }

    #[test]
    fn pillow_and_celery_defaults_are_commcare_clouds() {
        let text = "celery_processes:\n  c0:\n    q:\npillows:\n  p0:\n    P: {}\n";
        let ap = AppProcesses::load(text, Path::new("app-processes.yml")).unwrap();
        assert!(
            ap.celery_processes["c0"].as_ref().unwrap()["q"].is_none(),
            "`q:` is the defaults"
        );
        let p = ap.pillows["p0"].as_ref().unwrap()["P"].clone().unwrap();
        assert_eq!(p, PillowOptions::default());
        assert_eq!(
            (
                p.start_process,
                p.num_processes,
                p.gevent_workers,
                p.dedicated_migration_process
            ),
            (0, 1, 0, false)
        );
        let c = CeleryOptions::default();
        assert_eq!(
            (
                c.concurrency,
                c.pooling.as_str(),
                c.max_tasks_per_child,
                c.num_workers,
                c.prefetch_multiplier
            ),
            (1, "prefork", None, 1, 4)
        );
        assert_eq!(ap.celery_command_prefix, "", "from environmental-defaults");
    }
}
