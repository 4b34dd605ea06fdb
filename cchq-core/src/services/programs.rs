//! Supervisor programs per host, derived from `app-processes.yml` and the inventory the way
//! commcare-cloud derives them (`commcare-hq-<env>-django`, `...-celery_<queues>_<n>`,
//! `...-celerybeat`, `...-celery_flower`, `...-pillowtop-<Pillow>-<n>`, `...-formsplayer-spring`,
//! `...-<management command>`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Value;
use crate::app_processes::{AppProcesses, CeleryOptions, DEPRECATED_PILLOWS, PillowOptions};
use crate::environment::Environment;

/// What a program is, which decides its command template and its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramKind {
    /// The web workers (gunicorn in CommCare HQ).
    Django,
    /// A celery worker for a group of queues.
    Celery,
    /// celery beat.
    CeleryBeat,
    /// celery flower.
    Flower,
    /// A pillow process.
    Pillowtop,
    /// The form player.
    Formplayer,
    /// A long-running management command.
    ManagementCommand,
}

impl ProgramKind {
    /// The service this kind of program belongs to.
    pub fn service(self) -> &'static str {
        match self {
            Self::Django => "webworker",
            Self::Celery | Self::CeleryBeat | Self::Flower | Self::ManagementCommand => "celery",
            Self::Pillowtop => "pillowtop",
            Self::Formplayer => "formplayer",
        }
    }

    /// The name used for its template and conf file.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Django => "django",
            Self::Celery => "celery",
            Self::CeleryBeat => "celerybeat",
            Self::Flower => "flower",
            Self::Pillowtop => "pillowtop",
            Self::Formplayer => "formplayer",
            Self::ManagementCommand => "management_command",
        }
    }

    /// How long supervisor waits for the program to stop before killing it.
    pub fn stopwaitsecs(self) -> u32 {
        match self {
            Self::Celery => 30,
            Self::Pillowtop => 120,
            _ => 10,
        }
    }
}

/// One supervisor program on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Program {
    /// The supervisor program name.
    pub name: String,
    /// Its kind.
    pub kind: ProgramKind,
    /// What `--only` matches: the queue list, the pillow name, the command name, or the kind.
    pub sub: String,
    /// The worker or process number (what `--only name:N` matches).
    pub number: u32,
    /// Template variables specific to this program (queues, concurrency, pillow, ...).
    pub vars: BTreeMap<String, serde_json::Value>,
}

impl Program {
    /// Whether `--only` item `name[:N]` selects this program.
    pub fn matches_only(&self, item: &str) -> bool {
        let (name, number) = match item.split_once(':') {
            // A number that is none (too big) selects nothing, never every process.
            Some((n, num)) => match num.parse::<u32>() {
                Ok(num) => (n, Some(num)),
                Err(_) => return false,
            },
            None => (item, None),
        };
        let name_ok = self.sub == name
            || self.sub.split(',').any(|q| q == name)
            || self.name == name
            || self.kind.slug() == name
            || (name == "beat" && self.kind == ProgramKind::CeleryBeat)
            || (name == "flower" && self.kind == ProgramKind::Flower);
        name_ok && number.is_none_or(|n| n == self.number)
    }
}

/// The prefix of every program of an environment: `commcare-hq-<deploy_env>`.
pub fn prefix(env: &Environment) -> String {
    format!("commcare-hq-{}", env.meta.deploy_env)
}

/// Every supervisor program on `host`, in a stable order, as commcare-cloud's templates make them
/// (`roles/commcarehq/templates/supervisor_*.conf.j2`, over `app_processes_config` translated by
/// `check_and_translate_hosts`, see [`AppProcesses::entry_for`]): `django` on `webworkers`; one
/// program per management command; for each celery queue group `celerybeat` for `beat`, `celery_flower` for
/// `flower`, else `celery_<queues>_<n>` for `n` in `0..num_workers`; for each pillow (in file
/// order, deprecated ones left out) `pillowtop-<pillow>-<n>` for `n` in
/// `start_process..start_process+num_processes`; `formsplayer-spring` on `formplayer`. Programs
/// come in file order (commcare-cloud sorts some of them within their files; the order changes
/// no name and supervisord does not depend on it).
pub fn programs_for_host(env: &Environment, host: &str) -> Vec<Program> {
    let p = prefix(env);
    let mut out = Vec::new();
    let mk = |name: String, kind, sub: &str, number, vars| Program {
        name,
        kind,
        sub: sub.to_owned(),
        number,
        vars,
    };
    // Every group the host is in (ancestors included), sorted by name.
    let groups = env.inventory.groups_of(host);
    let in_group = |g: &str| groups.binary_search(&g).is_ok();
    if in_group("webworkers") {
        let webworkers = env
            .app_processes
            .as_ref()
            .and_then(|ap| ap.other.get("webworkers"));
        let v = vars([("env_vars", env_vars(&[], [namespace_env(webworkers)]))]);
        out.push(mk(
            format!("{p}-django"),
            ProgramKind::Django,
            "django",
            0,
            v,
        ));
    }
    let Some(ap) = &env.app_processes else {
        return out;
    };
    let inv = &env.inventory;
    if let Some(cmds) = AppProcesses::entry_for(inv, &ap.management_commands, host, &groups) {
        for (cmd, params) in cmds.iter().flatten() {
            let v = vars([
                ("command", cmd.as_str().into()),
                ("env_vars", env_vars(&[], [namespace_env(Some(params))])),
            ]);
            out.push(mk(
                format!("{p}-{cmd}"),
                ProgramKind::ManagementCommand,
                cmd,
                0,
                v,
            ));
        }
    }
    if let Some(queues) = AppProcesses::entry_for(inv, &ap.celery_processes, host, &groups) {
        for (qs, opts) in queues.iter().flatten() {
            let default = CeleryOptions::default();
            let opts = opts.as_ref().unwrap_or(&default);
            match qs.as_str() {
                "beat" => out.push(mk(
                    format!("{p}-celerybeat"),
                    ProgramKind::CeleryBeat,
                    "beat",
                    0,
                    BTreeMap::new(),
                )),
                "flower" => {
                    // `supervisor_celery_flower.conf.j2` sets it for every flower program.
                    let v = vars([(
                        "env_vars",
                        env_vars(&[("FLOWER_UNAUTHENTICATED_API", "true")], []),
                    )]);
                    out.push(mk(
                        format!("{p}-celery_flower"),
                        ProgramKind::Flower,
                        "flower",
                        0,
                        v,
                    ));
                }
                _ => {
                    for n in 0..opts.num_workers {
                        let v = vars([
                            ("queues", qs.as_str().into()),
                            ("concurrency", opts.concurrency.into()),
                            ("pooling", opts.pooling.as_str().into()),
                            ("prefetch_multiplier", opts.prefetch_multiplier.into()),
                            (
                                "max_tasks_per_child",
                                opts.max_tasks_per_child
                                    .map_or(serde_json::Value::Null, Into::into),
                            ),
                            ("worker_number", n.into()),
                            ("celery_hostname", format!("{host}_{qs}_{n}").into()),
                            ("env_vars", env_vars(&[], [map_env(&opts.env_vars)])),
                        ]);
                        out.push(mk(
                            format!("{p}-celery_{qs}_{n}"),
                            ProgramKind::Celery,
                            qs,
                            n,
                            v,
                        ));
                    }
                }
            }
        }
    }
    if let Some(pillows) = AppProcesses::entry_for(inv, &ap.pillows, host, &groups) {
        for (name, opts) in pillows.iter().flatten() {
            if DEPRECATED_PILLOWS.contains(&name.as_str()) {
                continue;
            }
            let default = PillowOptions::default();
            let o = opts.as_ref().unwrap_or(&default);
            for n in o.start_process..o.start_process + o.num_processes {
                // `supervisor_pillowtop.conf.j2`: process 0 of a pillow with a dedicated migration
                // process gets no gevent workers.
                let gevent = if n > 0 || !o.dedicated_migration_process {
                    o.gevent_workers
                } else {
                    0
                };
                let v = vars([
                    ("pillow", name.as_str().into()),
                    (
                        "num_processes",
                        o.total_processes.unwrap_or(o.num_processes).into(),
                    ),
                    ("process_number", n.into()),
                    ("gevent_workers", gevent.into()),
                    (
                        "dedicated_migration_process",
                        o.dedicated_migration_process.into(),
                    ),
                    (
                        "processor_chunk_size",
                        o.processor_chunk_size
                            .map_or(serde_json::Value::Null, Into::into),
                    ),
                    (
                        "exclude_ucrs",
                        o.exclude_ucrs
                            .as_ref()
                            .and_then(python_str)
                            .map_or(serde_json::Value::Null, Into::into),
                    ),
                    // `pillowtop.yml` + the pillow's `env_vars` + its process's (`process.<n>.env_vars`).
                    (
                        "env_vars",
                        env_vars(
                            &[("READ_FROM_PLPROXY_STANDBYS", "1")],
                            [
                                map_env(&o.env_vars),
                                namespace_env(o.process.get(&n.to_string())),
                            ],
                        ),
                    ),
                ]);
                out.push(mk(
                    format!("{p}-pillowtop-{name}-{n}"),
                    ProgramKind::Pillowtop,
                    name,
                    n,
                    v,
                ));
            }
        }
    }
    if in_group("formplayer") {
        out.push(mk(
            format!("{p}-formsplayer-spring"),
            ProgramKind::Formplayer,
            "formplayer",
            0,
            BTreeMap::new(),
        ));
    }
    out
}

/// A program's `environment=` variables as commcare-cloud's `env_vars` filter
/// (`roles/commcarehq/filter_plugins/filters.py`) makes them: `base` (what the role's task file
/// gives every program of the kind), then each layer's `env_vars` (the `app-processes.yml`
/// options), a later layer winning; a variable whose winning value is null or blank is left out.
/// Values are written as Python's `str()` writes them (`True`, `1`).
pub fn env_vars<const N: usize>(
    base: &[(&str, &str)],
    layers: [Vec<(String, Value)>; N],
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (k, v) in base {
        out.insert((*k).to_owned(), (*v).into());
    }
    for (k, v) in layers.into_iter().flatten() {
        match python_str(&v).filter(|s| !s.trim().is_empty()) {
            Some(s) => out.insert(k, s.into()),
            None => out.remove(&k),
        };
    }
    serde_json::Value::Object(out)
}

/// The `env_vars` of an options mapping (a management command's, `webworkers`, a pillow's
/// `process.<n>`).
fn namespace_env(ns: Option<&Value>) -> Vec<(String, Value)> {
    let Some(Value::Mapping(m)) = ns.and_then(|v| v.get("env_vars")) else {
        return Vec::new();
    };
    m.iter()
        .filter_map(|(k, v)| Some((python_str(k)?, v.clone())))
        .collect()
}

fn map_env(m: &indexmap::IndexMap<String, Value>) -> Vec<(String, Value)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A scalar as Python's `str()` writes it (`True`, `False`, `3`); `None` for null and
/// collections.
pub fn python_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".to_owned()),
        Value::Bool(false) => Some("False".to_owned()),
        Value::Tagged(t) => python_str(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

fn vars<const N: usize>(
    items: [(&str, serde_json::Value); N],
) -> BTreeMap<String, serde_json::Value> {
    items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture_env as fixture;
    use indexmap::IndexMap;

    #[test]
    fn programs_follow_commcare_cloud_names() {
        let env = fixture("test");
        let names: Vec<String> = programs_for_host(&env, "cloud_worker_5")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            [
                "commcare-hq-test-celerybeat",
                "commcare-hq-test-celery_background_queue,analytics_queue,case_rule_queue,case_import_queue,celery,email_queue,export_download_queue,reminder_case_update_queue,reminder_rule_queue,repeat_record_queue,saved_exports_queue_0",
                "commcare-hq-test-celery_flower",
            ]
        );
        let web: Vec<String> = programs_for_host(&env, "cloud_worker_2")
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(web, ["commcare-hq-test-django"]);
        let pt = programs_for_host(&env, "cloud_worker_6");
        assert_eq!(
            pt[0].name,
            "commcare-hq-test-pillowtop-AppDbChangeFeedPillow-0"
        );
    }

    /// [`AppProcesses::entry_for`] (which resolves only the key items that can stand for the
    /// host) finds what commcare-cloud's `check_and_translate_hosts` finds: every key split at
    /// its commas, every item translated (`translate_host`), later keys overwriting earlier ones.
    #[test]
    fn a_hosts_entry_is_what_translating_every_key_gives() {
        use crate::app_processes::translate_item;
        fn translated<'a, V>(
            inv: &crate::inventory::Inventory,
            section: &'a IndexMap<String, V>,
        ) -> IndexMap<String, &'a V> {
            let mut out = IndexMap::new();
            for (key, v) in section {
                for item in key.split(',') {
                    if let Ok(Some(h)) = translate_item(inv, item) {
                        out.insert(h.to_owned(), v);
                    }
                }
            }
            out
        }
        let ini = "[celery_a0]\nc0\n[celery_a1]\nc1\n[pillow_a0]\np0\n[celery:children]\ncelery_a0\ncelery_a1\n\
                   [pillowtop:children]\npillow_a0\n[webworkers]\nw0\nw1\n[solo]\nw1\n[c1]\nw0\n";
        let ap = "celery_processes:\n  celery_a0: {beat: {}}\n  c1: {q1: {}}\n  celery: {q2: {}}\n  solo,c0: {q3: {}}\n  \
                  nohost,w0: {q4: {}}\n  all: {q5: {}}\n  w0,None: {q6: {}}\npillows:\n  pillow_a0,c1: {P: {num_processes: 2}}\n  all: {Q: {}}\n";
        let mut env = fixture("test");
        env.app_processes =
            Some(AppProcesses::load(ap, std::path::Path::new("app-processes.yml")).unwrap());
        for inventory in [ini, "[g]\nonly\n"] {
            env.inventory = crate::inventory::Inventory::parse_ini(
                inventory,
                std::path::Path::new("inventory.ini"),
            )
            .unwrap();
            let sections = env.app_processes.as_ref().unwrap();
            let (celery, pillows) = (
                translated(&env.inventory, &sections.celery_processes),
                translated(&env.inventory, &sections.pillows),
            );
            let hosts: Vec<String> = env
                .inventory
                .hosts()
                .map(|h| h.name.clone())
                .chain(["nohost".to_owned(), "None".to_owned()])
                .collect();
            for host in &hosts {
                let groups = env.inventory.groups_of(host);
                let found = AppProcesses::entry_for(
                    &env.inventory,
                    &sections.celery_processes,
                    host,
                    &groups,
                );
                assert_eq!(found, celery.get(host).copied(), "celery of {host}");
                let found =
                    AppProcesses::entry_for(&env.inventory, &sections.pillows, host, &groups);
                assert_eq!(found, pillows.get(host).copied(), "pillows of {host}");
            }
        }
        assert_eq!(
            programs_for_host(&env, "only").len(),
            2,
            "`all` names the only host"
        );
    }

    /// commcare-cloud's `env_vars` filter: later layers win, a null or blank winner removes
    /// the variable, values as Python writes them.
    #[test]
    fn env_vars_layer_as_the_upstream_filter_does() {
        let layer = |text: &str| {
            namespace_env(Some(
                &crate::yaml::load(text, std::path::Path::new("x")).unwrap(),
            ))
        };
        let got = env_vars(
            &[("A", "base"), ("B", "base")],
            [
                layer("env_vars: {B: 1, C: yes, D: x}"),
                layer("env_vars: {D: null, E: ' ', F: false}"),
            ],
        );
        assert_eq!(
            got,
            serde_json::json!({"A": "base", "B": "1", "C": "True", "F": "False"})
        );
    }

    #[test]
    fn only_matches_queue_pillow_and_number() {
        let env = fixture("development");
        let progs = programs_for_host(&env, "192.168.33.16");
        let only = |item: &str| {
            progs
                .iter()
                .filter(|p| p.matches_only(item))
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            only("email_queue"),
            ["commcare-hq-dev-celery_email_queue,reminder_case_update_queue_0"]
        );
        assert_eq!(
            only("GroupPillow:0"),
            ["commcare-hq-dev-pillowtop-GroupPillow-0"]
        );
        assert!(only("GroupPillow:1").is_empty());
        assert_eq!(only("beat"), ["commcare-hq-dev-celerybeat"]);
        assert_eq!(only("formplayer"), ["commcare-hq-dev-formsplayer-spring"]);
    }

    /// Host -> programs (names without the `commcare-hq-<deploy_env>-` prefix) for every host of
    /// every fixture, worked out by hand from commcare-cloud (`dimagi/commcare-cloud`):
    /// `environment/schemas/app_processes.py` `check_and_translate_hosts` + `Environment.translate_host`
    /// (keys split at commas; each item a host, a group of one host, or `None`), the templates
    /// `roles/commcarehq/templates/supervisor_celery_workers.conf.j2` (`celery_<queues>_<n>` for
    /// `n in range(num_workers)`, beat and flower left to `supervisor_celery_beat.conf.j2` ->
    /// `celerybeat` and `supervisor_celery_flower.conf.j2` -> `celery_flower`),
    /// `supervisor_pillowtop.conf.j2` (`pillowtop-<pillow>-<n>` for `n` in
    /// `range(start_process, start_process + num_processes)`), `supervisor_management_commands.conf.j2`
    /// (`<command>`), `supervisor_django.conf.j2` (`django`, on `webworkers`) and
    /// `supervisor_formplayer_spring.conf.j2` (`formsplayer-spring`, on `formplayer`). Hosts not
    /// listed run nothing. (`cchq-core/tests/golden_programs.rs` checks every fixture against
    /// commcare-cloud's own run as well.)
    #[test]
    fn every_fixture_host_runs_what_commcare_cloud_would_run_there() {
        let big = "background_queue,analytics_queue,case_rule_queue,case_import_queue,celery,email_queue,export_download_queue,\
                   reminder_case_update_queue,reminder_rule_queue,repeat_record_queue,saved_exports_queue";
        let dev_pillows = [
            "kafka-ucr-main",
            "kafka-ucr-static",
            "AppDbChangeFeedPillow",
            "ApplicationBlobDeletionPillow",
            "ApplicationToElasticsearchPillow",
            "BlobDeletionPillow",
            "CacheInvalidatePillow",
            "CaseSearchToElasticsearchPillow",
            "CaseToElasticsearchPillow",
            "DomainDbKafkaPillow",
            "FormSubmissionMetadataTrackerPillow",
            "GroupPillow",
            "GroupToUserPillow",
            "KafkaDomainPillow",
            "LedgerToElasticsearchPillow",
            "SqlSMSPillow",
            "UnknownUsersPillow",
            "UpdateUserSyncHistoryPillow",
            "UserCacheInvalidatePillow",
            "UserGroupsDbKafkaPillow",
            "UserPillow",
            "XFormToElasticsearchPillow",
        ];
        let mut dev_db1: Vec<String> = [
            "celerybeat",
            "celery_celery_periodic_0",
            "celery_async_restore_queue,background_queue,case_rule_queue,celery,export_download_queue,analytics_queue,case_import_queue_0",
            "celery_email_queue,reminder_case_update_queue_0",
            "celery_linked_domain_queue,reminder_rule_queue,repeat_record_queue,saved_exports_queue,geospatial_queue_0",
            "celery_ucr_indicator_queue,ucr_queue_0",
            "celery_flower",
        ]
        .map(str::to_owned)
        .to_vec();
        dev_db1.extend(dev_pillows.iter().map(|p| format!("pillowtop-{p}-0")));
        dev_db1.push("formsplayer-spring".into());

        // The production-shaped fixture: three keys of several hosts each.
        let wide = [
            "celery_analytics_queue_0",
            "celery_background_queue,case_rule_queue,case_import_queue_0",
            "celery_reminder_case_update_queue_0",
            "celery_reminder_case_update_queue_1",
            "celery_reminder_case_update_queue_2",
            "celery_repeat_record_queue_0",
            "celery_repeat_record_queue_1",
        ];
        // `ucr_queue` has `num_workers: 0`: no program.
        let narrow = [
            "celery_celery,email_queue,export_download_queue_0",
            "celery_reminder_rule_queue,saved_exports_queue_0",
        ];
        let pillow_b = [
            "pillowtop-AppDbChangeFeedPillow-0",
            "pillowtop-UpdateUserSyncHistoryPillow-0",
            "pillowtop-UpdateUserSyncHistoryPillow-1",
        ];
        type Table<'a> = Vec<(&'a str, Vec<String>)>;
        let table: [(&str, Table); 3] = [
            (
                "test",
                vec![
                    ("cloud_worker_2", vec!["django".into()]),
                    ("cloud_worker_3", vec!["django".into()]),
                    ("cloud_worker_4", vec!["django".into()]),
                    (
                        "cloud_worker_5",
                        vec![
                            "celerybeat".into(),
                            format!("celery_{big}_0"),
                            "celery_flower".into(),
                        ],
                    ),
                    (
                        "cloud_worker_6",
                        vec!["pillowtop-AppDbChangeFeedPillow-0".into()],
                    ),
                ],
            ),
            (
                "development",
                vec![
                    ("192.168.33.15", vec!["django".into()]),
                    ("192.168.33.16", dev_db1),
                ],
            ),
            (
                "upstream-prod",
                vec![
                    ("10.0.5.10", vec!["django".into()]),
                    ("10.0.5.11", vec!["django".into()]),
                    ("10.0.1.10", wide.map(str::to_owned).to_vec()),
                    ("10.0.1.11", wide.map(str::to_owned).to_vec()),
                    ("10.0.2.10", wide.map(str::to_owned).to_vec()),
                    ("10.0.1.12", narrow.map(str::to_owned).to_vec()),
                    ("10.0.2.11", narrow.map(str::to_owned).to_vec()),
                    (
                        "10.0.3.10",
                        [
                            "run_submission_reprocessing_queue",
                            "queue_schedule_instances",
                            "celerybeat",
                            "celery_flower",
                            "celery_send_report_throttled_0",
                        ]
                        .map(str::to_owned)
                        .to_vec(),
                    ),
                    (
                        "10.0.4.10",
                        (0..3)
                            .map(|n| format!("pillowtop-xform-pillow-{n}"))
                            .collect(),
                    ),
                    (
                        "10.0.4.11",
                        std::iter::once("run_pillow_retry_queue".to_owned())
                            .chain((3..6).map(|n| format!("pillowtop-xform-pillow-{n}")))
                            .collect(),
                    ),
                    ("10.0.4.20", pillow_b.map(str::to_owned).to_vec()),
                    ("10.0.4.21", pillow_b.map(str::to_owned).to_vec()),
                    ("10.0.6.10", vec!["formsplayer-spring".into()]),
                ],
            ),
        ];
        for (name, hosts) in table {
            let env = fixture(name);
            assert_eq!(
                crate::validate::check(&env),
                crate::validate::Report::default(),
                "{name} validates"
            );
            let p = format!("{}-", prefix(&env));
            for host in env.inventory.hosts() {
                let got: Vec<String> = programs_for_host(&env, &host.name)
                    .into_iter()
                    .map(|pr| pr.name.strip_prefix(&p).unwrap().to_owned())
                    .collect();
                let want = hosts
                    .iter()
                    .find(|(h, _)| *h == host.name)
                    .map(|(_, w)| w.clone())
                    .unwrap_or_default();
                assert_eq!(got, want, "{name}: {}", host.name);
            }
        }
    }

    /// The variables of the production-shaped fixture's programs, as commcare-cloud's templates
    /// pass them: `--num-processes` is `total_processes`; process 0 of a pillow with a dedicated
    /// migration process gets no gevent workers; celery options per key, with defaults.
    #[test]
    fn program_variables_follow_the_upstream_templates() {
        let env = fixture("upstream-prod");
        let var = |host: &str, name: &str, v: &str| {
            let progs = programs_for_host(&env, host);
            let p = progs
                .iter()
                .find(|p| p.name == format!("commcare-hq-prod-{name}"))
                .unwrap_or_else(|| panic!("{name} on {host}"));
            p.vars.get(v).cloned().unwrap_or(serde_json::Value::Null)
        };
        assert_eq!(
            var("10.0.4.10", "pillowtop-xform-pillow-0", "gevent_workers"),
            0
        );
        assert_eq!(
            var("10.0.4.10", "pillowtop-xform-pillow-1", "gevent_workers"),
            4
        );
        assert_eq!(
            var("10.0.4.11", "pillowtop-xform-pillow-3", "gevent_workers"),
            4
        );
        assert_eq!(
            var("10.0.4.11", "pillowtop-xform-pillow-5", "num_processes"),
            6
        );
        assert_eq!(
            var(
                "10.0.4.20",
                "pillowtop-UpdateUserSyncHistoryPillow-1",
                "num_processes"
            ),
            2
        );
        assert_eq!(
            var(
                "10.0.4.20",
                "pillowtop-UpdateUserSyncHistoryPillow-1",
                "processor_chunk_size"
            ),
            100
        );
        assert_eq!(
            var(
                "10.0.4.20",
                "pillowtop-AppDbChangeFeedPillow-0",
                "num_processes"
            ),
            1
        );
        let q = "reminder_case_update_queue";
        assert_eq!(
            var("10.0.2.10", &format!("celery_{q}_2"), "pooling"),
            "gevent"
        );
        assert_eq!(
            var("10.0.2.10", &format!("celery_{q}_2"), "concurrency"),
            24
        );
        assert_eq!(
            var("10.0.2.10", &format!("celery_{q}_2"), "celery_hostname"),
            format!("10.0.2.10_{q}_2")
        );
        assert_eq!(
            var(
                "10.0.2.11",
                "celery_celery,email_queue,export_download_queue_0",
                "max_tasks_per_child"
            ),
            5
        );
        assert_eq!(
            var(
                "10.0.2.11",
                "celery_celery,email_queue,export_download_queue_0",
                "prefetch_multiplier"
            ),
            4
        );
        assert_eq!(
            var("10.0.3.10", "celery_send_report_throttled_0", "pooling"),
            "prefork"
        );
    }
}
