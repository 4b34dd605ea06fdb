//! Supervisor programs per host, derived from `app-processes.yml` and the inventory the way
//! commcare-cloud derives them (`commcare-hq-<env>-django`, `...-celery_<queues>_<n>`,
//! `...-celerybeat`, `...-celery_flower`, `...-pillowtop-<Pillow>-<n>`, `...-formsplayer-spring`,
//! `...-<management command>`).

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Serialize;

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
            Some((n, num)) => (n, num.parse::<u32>().ok()),
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

/// Does an `app-processes.yml` host key (a host, or a group of one host) name `host`?
fn key_names_host(env: &Environment, key: &str, host: &str) -> bool {
    if key == host {
        return true;
    }
    if env.inventory.host(key).is_some() {
        return false;
    }
    env.inventory.group_hosts(key).is_some_and(|h| h.len() == 1 && h[0] == host)
}

/// The names an `app-processes.yml` key naming `host` can have: the host, `all`, and the groups
/// the host is in (`groups`, from [`crate::inventory::Inventory::groups_of`]).
fn candidate_keys<'a>(host: &'a str, groups: &[&'a str]) -> Vec<&'a str> {
    [host, crate::inventory::ALL].into_iter().chain(groups.iter().copied()).collect()
}

/// The entries of an `app-processes.yml` section whose key names `host`, in file order. Only the
/// names that can stand for the host are looked up (`keys`: the host, `all` and its groups), so
/// the cost follows the host's groups, not the size of the file (which grows with the fleet).
fn entries_for<'a, V>(env: &Environment, section: &'a IndexMap<String, V>, host: &str, keys: &[&str]) -> Vec<&'a V> {
    let mut idx: Vec<usize> = keys.iter().filter_map(|k| section.get_index_of(*k)).collect();
    idx.sort_unstable();
    idx.dedup();
    idx.into_iter().filter_map(|i| section.get_index(i)).filter(|(k, _)| key_names_host(env, k, host)).map(|(_, v)| v).collect()
}

/// Every supervisor program on `host`, in a stable order.
pub fn programs_for_host(env: &Environment, host: &str) -> Vec<Program> {
    let p = prefix(env);
    let mut out = Vec::new();
    let mk = |name: String, kind, sub: &str, number, vars| Program { name, kind, sub: sub.to_owned(), number, vars };
    // Every group the host is in (ancestors included), sorted by name.
    let groups = env.inventory.groups_of(host);
    let in_group = |g: &str| groups.binary_search(&g).is_ok();
    if in_group("webworkers") {
        out.push(mk(format!("{p}-django"), ProgramKind::Django, "django", 0, BTreeMap::new()));
    }
    let Some(ap) = &env.app_processes else { return out };
    let keys = candidate_keys(host, &groups);
    for cmds in entries_for(env, &ap.management_commands, host, &keys) {
        for cmd in cmds.iter().flat_map(|m| m.keys()) {
            out.push(mk(format!("{p}-{cmd}"), ProgramKind::ManagementCommand, cmd, 0, vars([("command", cmd.as_str().into())])));
        }
    }
    for queues in entries_for(env, &ap.celery_processes, host, &keys) {
        for (qs, opts) in queues.iter().flatten() {
            let opts = opts.clone().unwrap_or_else(default_celery);
            match qs.as_str() {
                "beat" => out.push(mk(format!("{p}-celerybeat"), ProgramKind::CeleryBeat, "beat", 0, BTreeMap::new())),
                "flower" => out.push(mk(format!("{p}-celery_flower"), ProgramKind::Flower, "flower", 0, BTreeMap::new())),
                _ => {
                    for n in 0..opts.num_workers.max(1) {
                        let v = vars([
                            ("queues", qs.as_str().into()),
                            ("concurrency", opts.concurrency.into()),
                            ("pooling", opts.pooling.as_str().into()),
                            ("prefetch_multiplier", opts.prefetch_multiplier.into()),
                            ("max_tasks_per_child", opts.max_tasks_per_child.map_or(serde_json::Value::Null, Into::into)),
                            ("worker_number", n.into()),
                            ("celery_hostname", format!("{host}_{qs}_{n}").into()),
                        ]);
                        out.push(mk(format!("{p}-celery_{qs}_{n}"), ProgramKind::Celery, qs, n, v));
                    }
                }
            }
        }
    }
    for pillows in entries_for(env, &ap.pillows, host, &keys) {
        for (name, opts) in pillows.iter().flatten() {
            let (start, num, total) = opts.as_ref().map_or((0, 1, None), |o| (o.start_process, o.num_processes.max(1), o.total_processes));
            for n in start..start + num {
                let v =
                    vars([("pillow", name.as_str().into()), ("num_processes", total.unwrap_or(num).into()), ("process_number", n.into())]);
                out.push(mk(format!("{p}-pillowtop-{name}-{n}"), ProgramKind::Pillowtop, name, n, v));
            }
        }
    }
    if in_group("formplayer") {
        out.push(mk(format!("{p}-formsplayer-spring"), ProgramKind::Formplayer, "formplayer", 0, BTreeMap::new()));
    }
    out
}

fn default_celery() -> crate::app_processes::CeleryOptions {
    crate::app_processes::CeleryOptions {
        concurrency: 1,
        pooling: "prefork".into(),
        max_tasks_per_child: None,
        num_workers: 1,
        prefetch_multiplier: 4,
        env_vars: indexmap::IndexMap::new(),
        other: indexmap::IndexMap::new(),
    }
}

fn vars<const N: usize>(items: [(&str, serde_json::Value); N]) -> BTreeMap<String, serde_json::Value> {
    items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Environment {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/commcare-cloud/environments");
        Environment::load(&root, name).unwrap()
    }

    #[test]
    fn programs_follow_commcare_cloud_names() {
        let env = fixture("test");
        let names: Vec<String> = programs_for_host(&env, "cloud_worker_5").into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "commcare-hq-test-celerybeat",
                "commcare-hq-test-celery_background_queue,analytics_queue,case_rule_queue,case_import_queue,celery,email_queue,export_download_queue,reminder_case_update_queue,reminder_rule_queue,repeat_record_queue,saved_exports_queue_0",
                "commcare-hq-test-celery_flower",
            ]
        );
        let web: Vec<String> = programs_for_host(&env, "cloud_worker_2").into_iter().map(|p| p.name).collect();
        assert_eq!(web, ["commcare-hq-test-django"]);
        let pt = programs_for_host(&env, "cloud_worker_6");
        assert_eq!(pt[0].name, "commcare-hq-test-pillowtop-AppDbChangeFeedPillow-0");
    }

    #[test]
    fn looking_up_the_hosts_own_keys_finds_what_scanning_every_key_finds() {
        let ini = "[celery_a0]\nc0\n[celery_a1]\nc1\n[pillow_a0]\np0\n[celery:children]\ncelery_a0\ncelery_a1\n\
                   [pillowtop:children]\npillow_a0\n[webworkers]\nw0\nw1\n[solo]\nw1\n[c1]\nw0\n";
        let ap = "celery_processes:\n  celery_a0: {beat: {}}\n  c1: {q1: {}}\n  celery: {q2: {}}\n  solo: {q3: {}}\n  \
                  nohost: {q4: {}}\n  all: {q5: {}}\n  w0: {q6: {}}\npillows:\n  pillow_a0: {P: {num_processes: 2}}\n  all: {Q: {}}\n";
        let mut env = fixture("test");
        env.app_processes = Some(crate::app_processes::AppProcesses::load(ap, std::path::Path::new("app-processes.yml")).unwrap());
        for inventory in [ini, "[g]\nonly\n"] {
            env.inventory = crate::inventory::Inventory::parse_ini(inventory, std::path::Path::new("inventory.ini")).unwrap();
            let sections = env.app_processes.as_ref().unwrap();
            let hosts: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).chain(["nohost".to_owned()]).collect();
            for host in &hosts {
                let groups = env.inventory.groups_of(host);
                let keys = candidate_keys(host, &groups);
                let scan: Vec<_> =
                    sections.celery_processes.iter().filter(|(k, _)| key_names_host(&env, k, host)).map(|(_, v)| v).collect();
                assert_eq!(entries_for(&env, &sections.celery_processes, host, &keys), scan, "celery of {host}");
                let scan: Vec<_> = sections.pillows.iter().filter(|(k, _)| key_names_host(&env, k, host)).map(|(_, v)| v).collect();
                assert_eq!(entries_for(&env, &sections.pillows, host, &keys), scan, "pillows of {host}");
            }
        }
        assert_eq!(programs_for_host(&env, "only").len(), 2, "`all` names the only host");
    }

    #[test]
    fn only_matches_queue_pillow_and_number() {
        let env = fixture("development");
        let progs = programs_for_host(&env, "192.168.33.16");
        let only = |item: &str| progs.iter().filter(|p| p.matches_only(item)).map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(only("email_queue"), ["commcare-hq-dev-celery_email_queue,reminder_case_update_queue_0"]);
        assert_eq!(only("GroupPillow:0"), ["commcare-hq-dev-pillowtop-GroupPillow-0"]);
        assert!(only("GroupPillow:1").is_empty());
        assert_eq!(only("beat"), ["commcare-hq-dev-celerybeat"]);
        assert_eq!(only("formplayer"), ["commcare-hq-dev-formsplayer-spring"]);
    }
}
