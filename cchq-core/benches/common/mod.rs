//! Shared by the micro-benchmarks: a generated commcare-cloud-style inventory of `n` hosts, and
//! an environment directory (a copy of the `test` fixture) that uses it.
//!
//! The inventory is laid out like commcare-cloud's production `inventory.ini`: hosts are named by
//! their private address, every host sits in a group of its own (`web_a12`, `celery_a3`) with
//! inline host variables, and the role groups (`webworkers`, `celery`, `pillowtop`, `formplayer`,
//! `proxy`, `postgresql`, ...) are `:children` of those, with `:vars` sections;
//! `app-processes.yml` names the one-host celery and pillowtop groups.

use std::fmt::Write as _;
use std::path::PathBuf;

use cchq_core::Environment;
use tempfile::TempDir;

/// A role: its group, the prefix of its one-host groups, and its share of the hosts in percent.
struct Role {
    group: &'static str,
    prefix: &'static str,
    percent: usize,
}

const ROLES: &[Role] = &[
    Role {
        group: "proxy",
        prefix: "proxy_a",
        percent: 2,
    },
    Role {
        group: "webworkers",
        prefix: "web_a",
        percent: 40,
    },
    Role {
        group: "celery",
        prefix: "celery_a",
        percent: 20,
    },
    Role {
        group: "pillowtop",
        prefix: "pillow_a",
        percent: 8,
    },
    Role {
        group: "formplayer",
        prefix: "formplayer_a",
        percent: 8,
    },
    Role {
        group: "postgresql",
        prefix: "pg_a",
        percent: 4,
    },
    Role {
        group: "couchdb2",
        prefix: "couch_a",
        percent: 4,
    },
    Role {
        group: "elasticsearch",
        prefix: "es_a",
        percent: 6,
    },
    Role {
        group: "kafka",
        prefix: "kafka_a",
        percent: 3,
    },
    Role {
        group: "redis",
        prefix: "redis_a",
        percent: 2,
    },
    Role {
        group: "rabbitmq",
        prefix: "rabbit_a",
        percent: 2,
    },
];

const QUEUES: &[&str] = &[
    "background_queue,analytics_queue",
    "case_rule_queue,case_import_queue",
    "celery,email_queue",
    "export_download_queue",
    "reminder_case_update_queue,reminder_rule_queue",
    "repeat_record_queue",
    "saved_exports_queue",
    "submission_reprocessing_queue,sms_queue",
];

const PILLOWS: &[&str] = &[
    "AppDbChangeFeedPillow",
    "CaseToElasticsearchPillow",
    "FormSubmissionMetadataTrackerPillow",
    "xform-pillow",
];

/// The generated layout: for every role, the names of its one-host groups.
pub struct Layout {
    /// `(role group, one-host group names)`, in [`ROLES`] order.
    pub roles: Vec<(&'static str, Vec<String>)>,
}

/// How many hosts each role gets out of `n`: its share, at least one, the rest to web workers.
fn role_counts(n: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = ROLES.iter().map(|r| (n * r.percent / 100).max(1)).collect();
    let total: usize = counts.iter().sum();
    let web = ROLES
        .iter()
        .position(|r| r.group == "webworkers")
        .unwrap_or(0);
    counts[web] = (counts[web] + n).saturating_sub(total).max(1);
    counts
}

/// The address (and inventory name) of host number `i`.
pub fn address(i: usize) -> String {
    format!("10.{}.{}.{}", 20 + i / 62_500, (i / 250) % 250, i % 250 + 1)
}

/// A commcare-cloud-style `inventory.ini` of `n` hosts (at least one per role), and its layout.
pub fn inventory_ini(n: usize) -> (String, Layout) {
    let mut s = String::with_capacity(n * 160);
    let mut roles = Vec::new();
    s.push_str("[all:vars]\nansible_python_interpreter=/usr/bin/python3\ncommcare_cloud_node_type=cluster\n\n");
    let mut i = 0;
    for (role, count) in ROLES.iter().zip(role_counts(n)) {
        let mut groups = Vec::with_capacity(count);
        for k in 0..count {
            let g = format!("{}{k}", role.prefix);
            let host = address(i);
            let name = g.replace('_', "-");
            let _ = writeln!(
                s,
                "[{g}]\n{host} hostname={name}-bench ufw_private_interface=ens5 vcpus={} datadog_tags='[\"{}\", \"az-{}\"]'\n",
                [4, 8, 16][k % 3],
                role.group,
                k % 3
            );
            groups.push(g);
            i += 1;
        }
        roles.push((role.group, groups));
    }
    for (group, members) in &roles {
        let _ = writeln!(s, "[{group}:children]");
        for m in members {
            let _ = writeln!(s, "{m}");
        }
        s.push('\n');
    }
    let web = &roles
        .iter()
        .find(|(g, _)| *g == "webworkers")
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    let _ = writeln!(s, "[django_manage:children]\n{}\n", web[0]);
    s.push_str("[commcarehq:children]\nwebworkers\ncelery\npillowtop\nformplayer\nproxy\ndjango_manage\n\n");
    s.push_str("[shared_dir_host:children]\nproxy\n\n");
    s.push_str("[webworkers:vars]\ngunicorn_workers_factor=2\nnofile_limit=65536\n\n");
    s.push_str("[celery:vars]\ncelery_max_memory=4g\n\n");
    s.push_str("[postgresql:vars]\npostgresql_version=14\npostgresql_max_connections=300\n\n");
    s.push_str("[elasticsearch:vars]\nelasticsearch_node_name='{{ hostname }}'\nelasticsearch_memory=16g\n\n");
    s.push_str("[kafka:vars]\nkafka_broker_id_offset=1\n");
    (s, Layout { roles })
}

/// `app-processes.yml` for `layout`: celery queues spread over the celery hosts (beat and flower
/// on the first), pillows over the pillowtop hosts.
pub fn app_processes(layout: &Layout) -> String {
    let members = |role: &str| {
        layout
            .roles
            .iter()
            .find(|(g, _)| *g == role)
            .map(|(_, m)| m.as_slice())
            .unwrap_or_default()
    };
    let celery = members("celery");
    let pillows = members("pillowtop");
    let mut s = String::from("management_commands:\n");
    let _ = writeln!(
        s,
        "  {}:\n    run_submission_reprocessing_queue:\n    queue_schedule_instances:",
        celery[0]
    );
    s.push_str("celery_processes:\n");
    for (k, g) in celery.iter().enumerate() {
        let _ = writeln!(s, "  {g}:");
        if k == 0 {
            s.push_str("    beat: {}\n    flower: {}\n");
        }
        for q in [QUEUES[k % QUEUES.len()], QUEUES[(k + 3) % QUEUES.len()]] {
            let _ = writeln!(s, "    {q}:\n      concurrency: 4\n      num_workers: 2");
        }
    }
    s.push_str("pillows:\n");
    let total = pillows.len() * 2;
    for (k, g) in pillows.iter().enumerate() {
        let _ = writeln!(s, "  {g}:");
        for p in PILLOWS {
            let _ = writeln!(
                s,
                "    {p}:\n      start_process: {}\n      num_processes: 2\n      total_processes: {total}",
                k * 2
            );
        }
    }
    s
}

/// The `test` fixture environment.
fn fixture_dir() -> PathBuf {
    cchq_testsupport::fixtures::environment("test")
}

/// A temporary copy of the `test` fixture environment with a generated `n`-host inventory and a
/// matching `app-processes.yml`, loaded with [`Environment::load`]. Keep the [`TempDir`] alive.
pub fn environment(n: usize) -> (TempDir, Environment, Layout) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join(format!("bench{n}"));
    std::fs::create_dir(&dir).expect("environment directory");
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture environment") {
        let p = entry.expect("fixture entry").path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().expect("file name")))
                .expect("copy fixture file");
        }
    }
    let (ini, layout) = inventory_ini(n);
    std::fs::write(dir.join("inventory.ini"), ini).expect("write inventory.ini");
    std::fs::write(dir.join("app-processes.yml"), app_processes(&layout))
        .expect("write app-processes.yml");
    // A database lives on one host: the fixture's `postgresql` group has many here.
    let pg = std::fs::read_to_string(dir.join("postgresql.yml")).expect("read postgresql.yml");
    std::fs::write(
        dir.join("postgresql.yml"),
        pg.replace("host: postgresql", "host: pg_a0"),
    )
    .expect("write postgresql.yml");
    let env = Environment::load(tmp.path(), &format!("bench{n}"))
        .expect("the generated environment loads");
    assert_eq!(env.inventory.len(), n, "generated host count");
    (tmp, env, layout)
}
