use std::path::{Path, PathBuf};

use super::*;
use crate::environment::Environment;

fn fixtures() -> PathBuf {
    cchq_testsupport::fixtures::environments()
}

fn route(
    name: &str,
    alias: Option<&str>,
    host: &str,
    port: i64,
    endpoint: &str,
    pgbouncers: &[&str],
    standbys: &[&str],
) -> Route {
    Route {
        name: name.into(),
        django_alias: alias.map(Into::into),
        host: host.into(),
        port,
        pgbouncer_endpoint: endpoint.into(),
        pgbouncer_hosts: pgbouncers.iter().map(|s| (*s).into()).collect(),
        standbys: standbys.iter().map(|s| (*s).into()).collect(),
    }
}

/// The table derived by hand from commcare-cloud's `PostgresqlConfig.replace_hosts` (hosts by
/// `translate_host`: each name is a group of one host; no `host` -> `DEFAULT_POSTGRESQL_HOST`; no
/// `pgbouncer_hosts` -> `[host]` and endpoint `host`; no `port` -> `host_settings[host].port`,
/// else 6432; a standby's name from its master), in the order of
/// `PostgresqlConfig.to_generated_variables`'s `postgresql_dbs.all` (`generate_postgresql_dbs`
/// sorted by name, stably: the standby of `commcarehq` after it; `p10` before `p2`; the proxy
/// standby left out, having no host).
#[test]
fn upstream_prod_database_table_follows_replace_hosts() {
    let env = Environment::load(&fixtures(), "upstream-prod").unwrap();
    let pg = env.postgresql_config.as_ref().unwrap();
    let (main, ucr, s0, s1, bouncer, standby) = (
        "10.0.8.10",
        "10.0.8.11",
        "10.0.8.12",
        "10.0.8.13",
        "10.0.8.20",
        "10.0.8.30",
    );
    assert_eq!(
        pg.routes(),
        vec![
            route(
                "commcarehq",
                Some("default"),
                main,
                6432,
                bouncer,
                &[bouncer],
                &["default_standby"]
            ),
            route(
                "commcarehq",
                Some("default_standby"),
                standby,
                6432,
                standby,
                &[standby],
                &[]
            ),
            route("commcarehq_p1", Some("p1"), s0, 6432, s0, &[s0], &[]),
            route("commcarehq_p10", Some("p10"), s1, 6432, s1, &[s1], &[]),
            route("commcarehq_p2", Some("p2"), s1, 6432, s1, &[s1], &[]),
            route(
                "commcarehq_proxy",
                Some("proxy"),
                main,
                6432,
                bouncer,
                &[bouncer],
                &[]
            ),
            route(
                "commcarehq_synclogs",
                Some("synclogs"),
                ucr,
                6433,
                ucr,
                &[ucr],
                &[]
            ),
            route("commcarehq_ucr", Some("ucr"), ucr, 5432, ucr, &[ucr], &[]),
            route("formplayer", None, ucr, 5432, ucr, &[ucr], &[]),
        ]
    );
    assert_eq!(pg.default_postgresql_host.as_deref(), Some(main));
    // Django's users come from the vault's POSTGRES_USERS through Jinja, as upstream's.
    assert_eq!(pg.dbs.main.user, DEFAULT_USER);
    assert_eq!(pg.dbs.main.password, DEFAULT_PASSWORD);
    assert!(pg.dbs.main.query_stats);
    assert!(!pg.dbs.ucr.django_migrate);
    assert_eq!(pg.dbs.standby[0].acceptable_replication_delay, Some(30));
    // `postgresql_hba_entries` netmasks naming a host are translated.
    let hba = &pg.postgres_override["postgresql_hba_entries"];
    assert_eq!(hba[0]["netmask"], Value::String(format!("{bouncer}/32")));
}

/// `by_pgbouncer_host` as `to_generated_variables` builds it: each pgbouncer host (the
/// `postgresql` group, the default host, the `pgbouncer` group) with the databases it routes,
/// and each `pg_standby` host with its root master's list (a defaultdict: the master gets an
/// empty entry when it routes nothing itself).
#[test]
fn generated_variables_follow_to_generated_variables() {
    let env = Environment::load(&fixtures(), "upstream-prod").unwrap();
    let pg = env.postgresql_config.as_ref().unwrap();
    let vars = pg
        .generated_variables(&env.inventory, Path::new("postgresql.yml"))
        .unwrap();
    let dbs = &vars["postgresql_dbs"];
    let names = |h: &str| -> Vec<String> {
        dbs["by_pgbouncer_host"][h]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("10.0.8.20"), ["commcarehq", "commcarehq_proxy"]);
    assert_eq!(names("10.0.8.13"), ["commcarehq_p10", "commcarehq_p2"]);
    assert_eq!(
        names("10.0.8.11"),
        ["commcarehq_synclogs", "commcarehq_ucr", "formplayer"]
    );
    assert!(names("10.0.8.10").is_empty());
    assert!(names("10.0.8.30").is_empty());
    assert_eq!(dbs["all"].as_array().unwrap().len(), 9);
    assert_eq!(dbs["form_processing"]["proxy"]["name"], "commcarehq_proxy");
    assert_eq!(
        dbs["form_processing"]["partitions"]["p1"]["shards"],
        serde_json::json!([0, 511])
    );
    assert_eq!(dbs["standby"][0]["master"], "default");
    assert!(dbs["main"].get("shards").is_none());
    assert_eq!(vars["REPORTING_DATABASES"]["ucr"], "ucr");
    assert_eq!(vars["postgresql_max_connections"], 300);
    assert_eq!(vars["pgbouncer_max_connections"], 1000);
    assert_eq!(vars["SEPARATE_SYNCLOGS_DB"], true);
}

fn inv(text: &str) -> Inventory {
    Inventory::parse_ini(text, Path::new("inventory.ini")).unwrap()
}

fn load(yaml_text: &str, inventory: &str) -> Result<PostgresqlConfig> {
    let path = Path::new("/env/postgresql.yml");
    let v = yaml::load(yaml_text, path)?;
    let mut c = PostgresqlConfig::parse(&v, path)?;
    c.resolve(&inv(inventory), path)?;
    c.check(path)?;
    Ok(c)
}

const OFF: &str = "SEPARATE_SYNCLOGS_DB: no\nSEPARATE_FORM_PROCESSING_DBS: no\n";

#[test]
fn defaults_follow_upstream() {
    let c = load(
        &format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n"),
        "[postgresql]\ndb1\ndb2\n",
    )
    .unwrap();
    assert_eq!(c.default_postgresql_host.as_deref(), Some("db1"));
    let r = c.routes();
    assert_eq!(
        r,
        vec![
            route(
                "commcarehq",
                Some("default"),
                "db1",
                6432,
                "db1",
                &["db1"],
                &[]
            ),
            route(
                "commcarehq_ucr",
                Some("ucr"),
                "db1",
                6432,
                "db1",
                &["db1"],
                &[]
            ),
            route("formplayer", None, "db1", 6432, "db1", &["db1"], &[]),
        ]
    );
    assert_eq!(c.reporting_databases["ucr"], Value::String("ucr".into()));
    // 127.0.0.1 is kept as it is.
    let c = load(&format!("{OFF}DEFAULT_POSTGRESQL_HOST: 127.0.0.1\ndbs:\n  synclogs: null\n  form_processing: null\n"), "[web]\nw1\n")
        .unwrap();
    assert_eq!(c.dbs.main.host.as_deref(), Some("127.0.0.1"));
}

fn message(r: Result<PostgresqlConfig>) -> String {
    let e = r.unwrap_err();
    format!("{} / {}", e.message(), e.hint().unwrap_or_default())
}

#[test]
fn refusals_name_file_and_key() {
    let base = "[postgresql]\ndb1\n[pair]\na\nb\n";
    let fp = "dbs:\n  synclogs: null\n  form_processing: null\n";
    for (text, want) in [
        (format!("{OFF}nope: 1\n{fp}"), "/env/postgresql.yml: `nope`: unknown key"),
        (format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  main:\n    conn_max_age: 3\n"), "`dbs.main.conn_max_age`: unknown key"),
        (format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  main:\n    port: '5432'\n"), "`dbs.main.port`: expected an integer, found a string"),
        (format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  ucr:\n    host: pair\n"), "`pair` is a group of 2 hosts"),
        (format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  ucr:\n    host: nowhere\n"), "unknown host `nowhere`"),
        (format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  custom:\n    - name: x\n"), "`dbs.custom[0].django_migrate`: is required"),
        (format!("{OFF}postgres_override:\n  postgresql_nope: 1\n{fp}"), "`postgres_override.postgresql_nope`: unknown key"),
        (format!("{OFF}dbs:\n  form_processing: null\n"), "SEPARATE_SYNCLOGS_DB"),
        ("dbs:\n  synclogs: null\nSEPARATE_SYNCLOGS_DB: no\n".to_owned(), "power of 2: 0"),
        (
            "SEPARATE_SYNCLOGS_DB: no\ndbs:\n  synclogs: null\n  form_processing:\n    partitions:\n      p1: {shards: [0, 1]}\n      p2: {shards: [3, 3]}\n".to_owned(),
            "numbered consecutively: 1 -> 3",
        ),
        (
            "SEPARATE_SYNCLOGS_DB: no\ndbs:\n  synclogs: null\n  form_processing:\n    partitions:\n      x1: {shards: [0, 0]}\n".to_owned(),
            "not `p<N>`",
        ),
        (format!("{OFF}REPORTING_DATABASES: {{r: nope}}\n{fp}"), "nope not in default, ucr"),
        (format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  standby:\n    - master: ghost\n"), "`dbs.standby[0]`: the standby's master `ghost`"),
        (
            format!("{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  main:\n    pgbouncer_host: db1\n    pgbouncer_endpoint: db1\n"),
            "`dbs.main.pgbouncer_host`: is given with",
        ),
    ] {
        let got = message(load(&text, base));
        assert!(got.contains(want), "{text}\n=> {got}\nwant {want}");
    }
}

#[test]
fn standbys_take_their_masters_name_and_project_db_lives_with_ucr() {
    let text = format!(
        "{OFF}dbs:\n  synclogs: null\n  form_processing: null\n  ucr: {{host: db2, pgbouncer_host: bouncer}}\n  project_db: {{}}\n  standby:\n    - {{master: ucr, django_alias: ucr_standby, host: db3}}\n"
    );
    let c = load(
        &text,
        "[postgresql]\ndb1\ndb2\n[bouncer]\nb1\n[other]\ndb3\n",
    )
    .unwrap();
    let p = c.dbs.project_db.as_ref().unwrap();
    assert_eq!(
        (p.host.as_deref(), p.pgbouncer_endpoint.as_deref(), p.port),
        (Some("db2"), Some("b1"), Some(6432))
    );
    assert_eq!(c.dbs.standby[0].name.as_deref(), Some("commcarehq_ucr"));
    assert!(!c.dbs.standby[0].create && !c.dbs.standby[0].django_migrate);
    let ucr = c
        .routes()
        .into_iter()
        .find(|r| r.django_alias.as_deref() == Some("ucr"))
        .unwrap();
    assert_eq!(ucr.standbys, ["ucr_standby"]);
}
