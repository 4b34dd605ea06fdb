//! cchq's supervisor program plan per host (`services::programs::programs_for_host`, what
//! `service ... help` lists and `update-supervisor-confs --check` writes) against the programs
//! commcare-cloud's own deploy writes for the same environment: the `[program:NAME]` names of
//! the supervisor files its `deploy_commcarehq.yml` renders for each host
//! (`roles/commcarehq/templates/supervisor_*.conf.j2` over its `app_processes_config`), rendered
//! once by `tests/golden/regenerate` into `tests/fixtures/golden/<env>/programs.json`
//! (`{host: [sorted names]}`, every inventory host).
//!
//! What deliberately differs is listed in [`NOT_PLANNED`], with why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cchq_core::environment::Environment;
use cchq_core::services::programs::programs_for_host;

/// Programs commcare-cloud writes that cchq does not plan: `(program name suffix after
/// `commcare-hq-<deploy_env>-`, why)`.
const NOT_PLANNED: &[(&str, &str)] = &[
    // With `prometheus_monitoring_enabled`, commcare-cloud runs a Prometheus metrics exporter
    // (`supervisor_prometheus.conf.j2`, `manage.py prometheus_metrics`-style Django runner) on
    // every `commcarehq` host. cchq has no Prometheus support (it reads no
    // `prometheus_monitoring_enabled` and writes no `PROMETHEUS_MULTIPROC_DIR`); it is not one of
    // the queue/pillow programs this plan is about.
    ("prometheus", "cchq does not implement prometheus_monitoring_enabled (no metrics exporter program)"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `(environment, {host: [program names]})` of every fixture with a `programs.json`.
fn golden_tables() -> Vec<(String, BTreeMap<String, Vec<String>>)> {
    let root = repo().join("tests/fixtures/golden");
    let mut out = Vec::new();
    for env in std::fs::read_dir(&root).unwrap().flatten().filter(|e| e.path().is_dir()) {
        let path = env.path().join("programs.json");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let table = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((env.file_name().to_string_lossy().into_owned(), table));
    }
    out.sort();
    out
}

#[test]
fn cchq_plans_the_programs_commcare_cloud_writes() {
    let fixtures = repo().join("tests/fixtures/commcare-cloud/environments");
    let tables = golden_tables();
    assert!(tables.len() >= 4, "the golden program tables are missing: run tests/golden/regenerate");
    let mut problems = Vec::new();
    let mut compared = 0;
    for (env_name, table) in &tables {
        let env = Environment::load(&fixtures, env_name).unwrap();
        let prefix = format!("commcare-hq-{}-", env.meta.deploy_env);
        let not_planned = |name: &str| name.strip_prefix(&prefix).is_some_and(|s| NOT_PLANNED.iter().any(|(n, _)| *n == s));
        let hosts: BTreeSet<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
        for host in table.keys().filter(|h| !hosts.contains(*h)) {
            problems.push(format!("{env_name} {host}: in commcare-cloud's table, not in cchq's inventory"));
        }
        for host in &hosts {
            let expected: BTreeSet<&str> = table.get(host).into_iter().flatten().map(String::as_str).filter(|n| !not_planned(n)).collect();
            let planned = programs_for_host(&env, host);
            let got: BTreeSet<&str> = planned.iter().map(|p| p.name.as_str()).collect();
            if got.len() != planned.len() {
                problems.push(format!("{env_name} {host}: cchq plans a program twice"));
            }
            let missing: Vec<_> = expected.difference(&got).collect();
            let extra: Vec<_> = got.difference(&expected).collect();
            if !missing.is_empty() {
                problems.push(format!("{env_name} {host}: missing {missing:?}"));
            }
            if !extra.is_empty() {
                problems.push(format!("{env_name} {host}: extra {extra:?}"));
            }
            compared += expected.len();
        }
    }
    assert!(compared > 50, "only {compared} programs compared");
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}
