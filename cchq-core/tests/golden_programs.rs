//! cchq's supervisor program plan per host (`services::programs::programs_for_host`, what
//! `service ... help` lists and `update-supervisor-confs --check` writes) against the programs
//! commcare-cloud's own deploy writes for the same environment: the `[program:NAME]` names of
//! the supervisor files its `deploy_commcarehq.yml` renders for each host
//! (`roles/commcarehq/templates/supervisor_*.conf.j2` over its `app_processes_config`), rendered
//! once by `tests/golden/regenerate` into `tests/fixtures/golden/<env>/programs.json`
//! (`{host: [sorted names]}`, every inventory host); and the contents of those programs (command,
//! environment, directory, user) against the program files cchq renders
//! (`tests/fixtures/golden/<env>/program_commands.json`, see
//! [`cchq_writes_the_program_commands_commcare_cloud_writes`]).
//!
//! What deliberately differs is listed in [`NOT_PLANNED`] and [`ENV_NOT_SET`], with why.

use std::collections::{BTreeMap, BTreeSet};

use cchq_core::environment::Environment;
use cchq_core::services::programs::programs_for_host;
use cchq_testsupport::fixtures;

/// Programs commcare-cloud writes that cchq does not plan: `(program name suffix after
/// `commcare-hq-<deploy_env>-`, why)`.
const NOT_PLANNED: &[(&str, &str)] = &[
    // With `prometheus_monitoring_enabled`, commcare-cloud runs a Prometheus metrics exporter
    // (`supervisor_prometheus.conf.j2`, `manage.py prometheus_metrics`-style Django runner) on
    // every `commcarehq` host. cchq has no Prometheus support (it reads no
    // `prometheus_monitoring_enabled` and writes no `PROMETHEUS_MULTIPROC_DIR`); it is not one of
    // the queue/pillow programs this plan is about.
    (
        "prometheus",
        "cchq does not implement prometheus_monitoring_enabled (no metrics exporter program)",
    ),
];

/// `(environment, {host: [program names]})` of every fixture with a `programs.json`.
fn golden_tables() -> Vec<(String, BTreeMap<String, Vec<String>>)> {
    let root = fixtures::golden_root();
    let mut out = Vec::new();
    for env in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let path = env.path().join("programs.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let table =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((env.file_name().to_string_lossy().into_owned(), table));
    }
    out.sort();
    out
}

#[test]
fn cchq_plans_the_programs_commcare_cloud_writes() {
    let fixtures = fixtures::environments();
    let tables = golden_tables();
    assert!(
        tables.len() >= 5,
        "the golden program tables are missing: run tests/golden/regenerate"
    );
    let mut problems = Vec::new();
    let mut compared = 0;
    for (env_name, table) in &tables {
        let env = Environment::load(&fixtures, env_name).unwrap();
        let prefix = format!("commcare-hq-{}-", env.meta.deploy_env);
        let not_planned = |name: &str| {
            name.strip_prefix(&prefix)
                .is_some_and(|s| NOT_PLANNED.iter().any(|(n, _)| *n == s))
        };
        let hosts: BTreeSet<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
        for host in table.keys().filter(|h| !hosts.contains(*h)) {
            problems.push(format!(
                "{env_name} {host}: in commcare-cloud's table, not in cchq's inventory"
            ));
        }
        for host in &hosts {
            let expected: BTreeSet<&str> = table
                .get(host)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|n| !not_planned(n))
                .collect();
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
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Environment variables commcare-cloud's task files give every program of a kind
/// (`roles/commcarehq/tasks/{webworkers,celery,pillowtop,management_commands,formplayer}.yml`,
/// the `item.env_vars` of their `template` tasks) that cchq does not set, with why. Variables
/// that come from `app-processes.yml` (`env_vars` of a queue group, a pillow, a pillow process, a
/// management command, `webworkers`) and the ones the templates hard-code for CommCare HQ
/// (`READ_FROM_PLPROXY_STANDBYS` for pillows, `FLOWER_UNAUTHENTICATED_API` for flower) are
/// compared.
const ENV_NOT_SET: &[(&str, &str)] = &[
    (
        "TMPDIR",
        "commcare-cloud's `encrypted_tmp` (/opt/tmp), a directory its roles create on encrypted storage; cchq sets up no such directory",
    ),
    (
        "DD_ENV",
        "Datadog APM tags: cchq has no Datadog integration",
    ),
    (
        "DD_SERVICE",
        "Datadog APM tags: cchq has no Datadog integration",
    ),
    (
        "DD_TRACE_ENABLED",
        "Datadog APM switch (False unless app-processes.yml sets it): cchq has no Datadog integration",
    ),
    (
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED",
        "Datadog: cchq has no Datadog integration",
    ),
    (
        "PROMETHEUS_MULTIPROC_DIR",
        "prometheus_monitoring_enabled: not implemented (see NOT_PLANNED)",
    ),
];

/// One program of a supervisor file: `(command words, environment, directory, user)`.
#[derive(Debug, Default, PartialEq)]
struct Conf {
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    directory: Option<String>,
    user: Option<String>,
}

/// The `[program:NAME]` sections of a supervisor file cchq renders, read as supervisord reads
/// them (and as `tests/golden/render_upstream.py` reads upstream's): `key=value`, continuation
/// lines start with whitespace, the last of a repeated key counts.
fn parse_confs(text: &str) -> BTreeMap<String, Conf> {
    let mut raw: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut program, mut key): (Option<String>, Option<String>) = (None, None);
    for line in text.lines() {
        if let Some(name) = line
            .trim_end()
            .strip_prefix("[program:")
            .and_then(|l| l.strip_suffix(']'))
        {
            program = Some(name.to_owned());
            raw.entry(name.to_owned()).or_default();
            key = None;
            continue;
        }
        let Some(p) = &program else { continue };
        if line.trim().is_empty() || line.trim_start().starts_with([';', '#']) {
            continue;
        }
        let keys = raw.get_mut(p).unwrap();
        if line.starts_with(char::is_whitespace) {
            if let Some(k) = &key {
                let v = keys.get_mut(k).unwrap();
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if line.starts_with('[') {
            program = None;
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        keys.insert(k.trim().to_owned(), v.trim().to_owned());
        key = Some(k.trim().to_owned());
    }
    raw.into_iter()
        .map(|(name, keys)| {
            let environment = keys
                .get("environment")
                .map(|e| env_pairs(e))
                .unwrap_or_default();
            let conf = Conf {
                command: keys
                    .get("command")
                    .map(|c| c.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
                environment,
                directory: keys.get("directory").cloned(),
                user: keys.get("user").cloned(),
            };
            (name, conf)
        })
        .collect()
}

/// supervisord's `K="v",K2="v2"` as a map.
fn env_pairs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((k, after)) = rest.split_once("=\"") {
        let Some((v, tail)) = after.split_once('"') else {
            break;
        };
        out.insert(
            k.trim().trim_start_matches(',').trim().to_owned(),
            v.to_owned(),
        );
        rest = tail;
    }
    out
}

/// Upstream's `supervisor_pillowtop.conf.j2` writes `--exclude-ucrs={{ exclude_ucrs | join(", ") }}`
/// but `exclude_ucrs` is a string (`PillowOptions.exclude_ucrs = StringProperty()`), so Jinja joins
/// its characters: `abc` becomes the words `--exclude-ucrs=a,` `b,` `c`. cchq passes the value as
/// written (`--exclude-ucrs=abc`, what `run_ptop` reads); this puts upstream's words back together.
fn rejoin_exclude_ucrs(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let first = w
            .strip_prefix("--exclude-ucrs=")
            .filter(|v| v.chars().count() == 2 && v.ends_with(','));
        if let Some(first) = first {
            let mut value = first.trim_end_matches(',').to_owned();
            i += 1;
            while i < words.len() {
                let c = &words[i];
                i += 1;
                if c.chars().count() == 2 && c.ends_with(',') {
                    value.push_str(c.trim_end_matches(','));
                } else {
                    value.push_str(c);
                    break;
                }
            }
            out.push(format!("--exclude-ucrs={value}"));
            continue;
        }
        out.push(w.clone());
        i += 1;
    }
    out
}

/// cchq's command `words` as what it starts: when they are `/bin/bash <path>_bash_runner.sh ARGS`
/// and cchq renders that runner for the host (`runners`: its files named by absolute path, see
/// `render_confs`), the runner's starting line (the one ending in `&`, as `render_upstream.py`
/// reads upstream's) with `"$hostname_arg"` the `--hostname=`/`-n=` argument and `"${args[@]}"`
/// the others, in their order, without the start time the runner appends to the hostname (as
/// upstream's golden data). Returns the words and the runner's file name (`None`: no runner).
fn expand_runner(
    words: &[String],
    runners: &BTreeMap<String, String>,
) -> (Vec<String>, Option<String>) {
    let [bash, path, args @ ..] = words else {
        return (words.to_vec(), None);
    };
    if bash != "/bin/bash" || !path.ends_with("_bash_runner.sh") {
        return (words.to_vec(), None);
    }
    let name = path.rsplit('/').next().unwrap_or(path).to_owned();
    let Some(script) = runners.get(path) else {
        return (words.to_vec(), Some(name));
    };
    let start: Vec<&str> = script
        .lines()
        .filter(|l| l.trim_end().ends_with('&') && !l.starts_with([' ', '#']))
        .collect();
    assert_eq!(start.len(), 1, "one starting line in {path}: {start:?}");
    let (host_args, other): (Vec<String>, Vec<String>) = args
        .iter()
        .cloned()
        .partition(|a| a.starts_with("--hostname=") || a.starts_with("-n="));
    let mut out = Vec::new();
    for w in start[0].trim_end().trim_end_matches('&').split_whitespace() {
        match w {
            "\"$hostname_arg\"" => out.extend(host_args.iter().cloned()),
            "\"${args[@]}\"" => out.extend(other.iter().cloned()),
            w => out.push(w.to_owned()),
        }
    }
    (out, Some(name))
}

/// The contents of every program commcare-cloud writes and cchq plans (names compared by
/// [`cchq_plans_the_programs_commcare_cloud_writes`]): `tests/fixtures/golden/<env>/program_commands.json`
/// against the `[program:NAME]` sections of the files `services::supervisor::render_confs`
/// renders for the same host (what `update-supervisor-confs` writes), with the built-in
/// `commcare` profile.
///
/// - `command`: word by word (supervisord splits the command at whitespace; line breaks and runs
///   of spaces in upstream's templates are not significant), as what the program starts. Upstream
///   starts celery workers, and, with `prometheus_monitoring_enabled`, Django processes, through
///   bash runners it writes (`<env>_celery_bash_runner.sh`, `<env>_django_bash_runner.sh`); the
///   golden data holds what those runners start (see `render_upstream.py`) and the runner's file
///   name (`runner`). cchq runs celery workers through its own runner (`render_confs` renders it
///   with the host's program files): [`expand_runner`] replaces cchq's `/bin/bash <runner> ARGS`
///   by what cchq's runner starts, the same way, so what is compared is the command the worker
///   runs, `celery_command_prefix` included; the celery runner's file name (`runner`, `None` for
///   a program without one) must be upstream's too (upstream's django runner, there with
///   `prometheus_monitoring_enabled` only, is not: cchq starts what it starts directly). (What the runner does on TERM is
///   `supervisor::tests::the_runner_starts_celery_and_asks_it_to_shut_down_on_term`'s.) The other
///   normalisation here is [`rejoin_exclude_ucrs`] (an upstream rendering defect). Paths
///   are not normalised: cchq's release layout (`<home>/www/<deploy_env>/current`, its
///   `python_env`, `log`, `formplayer_build/current`) is commcare-cloud's.
/// - `environment`: every variable upstream sets must be set by cchq to the same value, except
///   [`ENV_NOT_SET`]; cchq's own (`HOME`, `USER`, `CCHQ_DEPLOY_ENV`, `CCHQ_HOST`) are extra.
///   `no_proxy` is compared as a set of hosts: upstream lists `groups['all']` in the order
///   Ansible's inventory keeps (not the file's), cchq in the file's; the order has no meaning.
/// - `directory`: equal, ignoring a trailing `/` (upstream writes `{{ code_home }}/` for django).
/// - `user`: equal.
#[test]
fn cchq_writes_the_program_commands_commcare_cloud_writes() {
    use cchq_core::services::supervisor::{render_confs, renderer};
    #[derive(serde::Deserialize)]
    struct Golden {
        command: Vec<String>,
        runner: Option<String>,
        environment: BTreeMap<String, String>,
        directory: Option<String>,
        user: Option<String>,
    }
    let fixtures = fixtures::environments();
    let root = fixtures::golden_root();
    let mut problems = Vec::new();
    let (mut compared, mut envs, mut runners_compared) = (0, 0, 0);
    for entry in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let path = entry.path().join("program_commands.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        envs += 1;
        let golden: BTreeMap<String, BTreeMap<String, Golden>> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let env_name = entry.file_name().to_string_lossy().into_owned();
        let env = Environment::load(&fixtures, &env_name).unwrap();
        let r = renderer(&env).unwrap();
        let prefix = format!("commcare-hq-{}-", env.meta.deploy_env);
        for (host, programs) in &golden {
            let (mut ours, mut runners) = (BTreeMap::new(), BTreeMap::new());
            for (file, text) in render_confs(&env, host, &r).unwrap() {
                if file.starts_with('/') {
                    runners.insert(file, text);
                } else {
                    ours.extend(parse_confs(&text));
                }
            }
            for (name, want) in programs {
                if name
                    .strip_prefix(&prefix)
                    .is_some_and(|s| NOT_PLANNED.iter().any(|(n, _)| *n == s))
                {
                    continue;
                }
                let Some(got) = ours.get(name) else { continue }; // a missing name is the other test's
                compared += 1;
                let at = format!("{env_name} {host} {name}");
                let want_command = rejoin_exclude_ucrs(&want.command);
                let (got_command, got_runner) = expand_runner(&got.command, &runners);
                if got_command != want_command {
                    problems.push(format!(
                        "{at}: command\n  cchq:     {}\n  upstream: {}",
                        got_command.join(" "),
                        want_command.join(" ")
                    ));
                }
                // Upstream's django runner exists for `prometheus_monitoring_enabled` only (see
                // NOT_PLANNED): cchq starts what it starts directly.
                let want_runner = want
                    .runner
                    .clone()
                    .filter(|r| r.ends_with("_celery_bash_runner.sh"));
                if got_runner != want_runner {
                    problems.push(format!(
                        "{at}: runner: cchq {got_runner:?}, upstream {:?}",
                        want.runner
                    ));
                }
                if got_runner.is_some() {
                    runners_compared += 1;
                }
                for (k, v) in &want.environment {
                    if ENV_NOT_SET.iter().any(|(n, _)| n == k) {
                        continue;
                    }
                    if k == "no_proxy" {
                        // A set of hosts: upstream lists `groups['all']` in Ansible's inventory
                        // order (not the file's), cchq in the inventory file's.
                        let set =
                            |s: &str| s.split(',').map(str::to_owned).collect::<BTreeSet<_>>();
                        if got.environment.get(k).map(|g| set(g)) != Some(set(v)) {
                            problems.push(format!(
                                "{at}: environment {k}: cchq {:?}, upstream {v:?}",
                                got.environment.get(k)
                            ));
                        }
                        continue;
                    }
                    if got.environment.get(k) != Some(v) {
                        problems.push(format!(
                            "{at}: environment {k}: cchq {:?}, upstream {v:?}",
                            got.environment.get(k)
                        ));
                    }
                }
                let dir =
                    |d: &Option<String>| d.as_deref().map(|d| d.trim_end_matches('/').to_owned());
                if dir(&got.directory) != dir(&want.directory) {
                    problems.push(format!(
                        "{at}: directory: cchq {:?}, upstream {:?}",
                        got.directory, want.directory
                    ));
                }
                if got.user != want.user {
                    problems.push(format!(
                        "{at}: user: cchq {:?}, upstream {:?}",
                        got.user, want.user
                    ));
                }
            }
        }
    }
    assert!(
        envs >= 5,
        "the golden program contents are missing: run tests/golden/regenerate"
    );
    assert!(compared > 50, "only {compared} programs compared");
    assert!(
        runners_compared > 20,
        "only {runners_compared} programs run through a runner"
    );
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
