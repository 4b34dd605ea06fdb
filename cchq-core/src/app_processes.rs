//! `app-processes.yml`: which CommCare HQ processes run where, merged over commcare-cloud's
//! defaults (`environmental-defaults/app-processes.yml`).

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::{Value, yaml};

const DEFAULTS: &str = include_str!("../profiles/commcare/environmental-defaults/app-processes.yml");

/// Options of one group of celery queues on one host.
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
    /// How many workers consume these queues on the host.
    #[serde(default = "one")]
    pub num_workers: u32,
    /// `--prefetch-multiplier`.
    #[serde(default = "four")]
    pub prefetch_multiplier: u32,
    /// Extra environment variables.
    #[serde(default)]
    pub env_vars: IndexMap<String, Value>,
    /// Anything else, kept as written.
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
}

/// Options of one pillow on one host.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PillowOptions {
    /// First process number on this host.
    #[serde(default)]
    pub start_process: u32,
    /// Processes on this host.
    #[serde(default = "one")]
    pub num_processes: u32,
    /// Total processes across hosts.
    #[serde(default)]
    pub total_processes: Option<u32>,
    /// gevent workers per process.
    #[serde(default)]
    pub gevent_workers: u32,
    /// Anything else, kept as written.
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
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
    /// `host -> {command_name: options}`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub management_commands: IndexMap<String, Option<IndexMap<String, Value>>>,
    /// `host -> {"q1,q2": options}`.
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
        let defaults: Value = yaml::from_str(DEFAULTS, Path::new("environmental-defaults/app-processes.yml"))?;
        let env: Value = yaml::from_str(text, path)?;
        let mut merged = match defaults {
            Value::Mapping(m) => m,
            _ => return Err(Error::internal("app-processes defaults are not a mapping")),
        };
        match env {
            Value::Null => {}
            Value::Mapping(m) => merged.extend(m),
            _ => return Err(Error::at(path, Some(1), None, "expected a mapping of settings")),
        }
        // Type errors are reported against the environment's own file, where the line is known.
        if !text.trim().is_empty() {
            yaml::from_str::<Self>(text, path)?;
        }
        yaml::from_value(Value::Mapping(merged), path)
    }

    /// Problems that make the file inconsistent with the inventory, as commcare-cloud checks:
    /// every host key must be an inventory host, a group with exactly one host, or `None`.
    pub fn check_hosts(&self, inventory: &Inventory) -> Vec<String> {
        let mut problems = Vec::new();
        let sections: [(&str, Vec<&String>); 3] = [
            ("management_commands", self.management_commands.keys().collect()),
            ("celery_processes", self.celery_processes.keys().collect()),
            ("pillows", self.pillows.keys().collect()),
        ];
        for (section, keys) in sections {
            for key in keys {
                if key == "None" || inventory.host(key).is_some() {
                    continue;
                }
                match inventory.group_hosts(key) {
                    Some(h) if h.len() == 1 => {}
                    Some(h) => problems
                        .push(format!("`{section}.{key}`: group `{key}` has {} hosts; use a single host or a group of one", h.len())),
                    None => problems.push(format!("`{section}.{key}`: no host or group `{key}` in the inventory")),
                }
            }
        }
        problems
    }
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
        assert!(err.message().contains("lots") || err.message().contains("invalid"), "{err}");
    }
}
