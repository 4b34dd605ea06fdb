//! `postgresql.yml` as commcare-cloud reads it (`environment/schemas/postgresql.py`,
//! `PostgresqlConfig`): the typed file with commcare-cloud's defaults ([`PostgresqlConfig::parse`],
//! its `wrap`), host names resolved against the inventory ([`PostgresqlConfig::resolve`], its
//! `replace_hosts`), its checks ([`PostgresqlConfig::check`]), and the variables it generates for
//! templates ([`PostgresqlConfig::generated_variables`], its `to_generated_variables`:
//! `postgresql_dbs` with `all` and `by_pgbouncer_host`, which upstream's `localsettings.py.j2`
//! reads to write `DATABASES`).
//!
//! Keys are refused where commcare-cloud refuses them (its objects forbid unknown properties), and
//! values must have the types it requires (a string is a string, not a number). Errors name the
//! file and the key (`dbs.form_processing.partitions.p1.shards`).

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde_json::{Map, Value as J, json};

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::{Value, yaml};

/// A netmask that starts like an IPv4 address (commcare-cloud's test), not `host/bits`.
static ADDRESS_LIKE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^(\d+\.?){4}").expect("a valid regular expression")
});

/// The port a database is reached on without `port` or `host_settings` (pgbouncer's).
pub const DEFAULT_PORT: i64 = 6432;
/// A database's `user` when it sets none (rendered by Jinja from the vault's `POSTGRES_USERS`).
pub const DEFAULT_USER: &str = "{{ postgres_users.commcare.username }}";
/// A database's `password` when it sets none.
pub const DEFAULT_PASSWORD: &str = "{{ postgres_users.commcare.password }}";

/// The variables of commcare-cloud's `postgresql_base` role defaults, which `postgres_override`
/// may set (and `allow_dump_from_pgstandby`).
pub const POSTGRES_OVERRIDE_KEYS: &[&str] = &[
    "postgresql_version",
    "postgresql_cluster_name",
    "postgresql_port",
    "postgresql_ssl_enabled",
    "postgresql_user_home",
    "postgresql_bin_path",
    "postgresql_dir_path",
    "postgresql_process_path",
    "postgresql_backup_dir",
    "postgresql_data_dir",
    "postgresql_config_home",
    "postgresql_pid_file",
    "postgres_install_dir",
    "postgresql_log_directory",
    "postgresql_recovery_conf",
    "postgresql_num_logs_to_keep",
    "postgresql_wal_level",
    "pgstandby_wal_keep_segments",
    "postgresql_wal_keep_segments",
    "postgresql_wal_keep_size",
    "pgstandby_wal_keep_size",
    "postgresql_archive_timeout",
    "postgresql_archive_path",
    "postgresql_archive_command",
    "postgresql_enable_archive",
    "disable_archive_cleanup_cron",
    "postgresql_vacuum_cost_limit",
    "postgresql_autovacuum_multixact_freeze_max_age",
    "postgresql_autovacuum_max_workers",
    "postgresql_autovacuum_analyze_scale_factor",
    "postgresql_autovacuum_vacuum_scale_factor",
    "postgresql_idle_in_transaction_session_timeout",
    "postgresql_custom_settings",
    "postgresql_systemd_config_dir",
    "allow_dump_from_pgstandby",
    "postgresql_max_connections",
    "postgresql_work_mem",
    "postgresql_shared_buffers",
    "postgresql_max_stack_depth",
    "postgresql_effective_cache_size",
    "postgresql_max_standby_delay",
    "postgresql_maintenance_work_mem",
    "postgresql_checkpoint_completion_target",
    "postgresql_wal_buffers",
    "postgresql_default_statistics_target",
    "postgresql_min_wal_size",
    "postgresql_max_wal_size",
    "postgresql_slow_log_threshold",
    "postgresql_random_page_cost",
    "postgresql_max_worker_processes",
    "postgresql_max_parallel_workers_per_gather",
    "postgresql_effective_io_concurrency",
    "postgresql_max_locks_per_transaction",
    "postgresql_apt_repo",
    "postgresql_apt_key_url",
    "postgresql_binary",
    "postgresql_shared_preload_libraries",
    "postgresql_hba_entries",
];

/// The variables of commcare-cloud's `pgbouncer` role defaults, which `pgbouncer_override` may set.
pub const PGBOUNCER_OVERRIDE_KEYS: &[&str] = &[
    "pgbouncer_port",
    "pgbouncer_pid_file",
    "pgbouncer_config_home",
    "pgbouncer_ini",
    "pgbouncer_users",
    "pgbouncer_socket_dir",
    "pgbouncer_log_file",
    "pgbouncer_ulimit_fd",
    "pgbouncer_max_connections",
    "pgbouncer_default_pool",
    "pgbouncer_reserve_pool",
    "pgbouncer_pool_timeout",
    "pgbouncer_pool_mode",
    "pgbouncer_server_lifetime",
    "pgbouncer_server_idle_timeout",
    "pgbouncer_kernel_settings",
    "postgresql_port",
    "pgbouncer_processes",
    "pgbouncer_current_processes",
    "pgbouncer_min_version",
];

/// Which of commcare-cloud's database classes a [`Db`] is: it decides the defaults and the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// `main`, `formplayer`, `ucr`, `project_db`, `synclogs`, `auditcare`, `repeaters`, and the
    /// form-processing `proxy` / `proxy_standby` (`DBOptions`).
    Plain,
    /// A form-processing partition (`StrictPartitionDBOptions`: `shards`, alias `p<N>`).
    Partition,
    /// A `custom` database (`CustomDBOptions`: `shards`, `django_migrate` required).
    Custom,
    /// A `standby` database (`StandbyDBOptions`: `master`, `acceptable_replication_delay`).
    Standby,
}

/// A `pg_config` item: a setting applied at the database level.
#[derive(Debug, Clone, PartialEq)]
pub struct PgConfigItem {
    /// The setting.
    pub name: Option<String>,
    /// Its value (any type).
    pub value: Value,
}

/// One database (`DBOptions` and its subclasses).
#[derive(Debug, Clone, PartialEq)]
pub struct Db {
    /// Which class it is.
    pub kind: DbKind,
    /// The database name (a standby's defaults to its master's, at [`PostgresqlConfig::resolve`]).
    pub name: Option<String>,
    /// Where the database lives (an inventory host once resolved; `127.0.0.1` is kept).
    pub host: Option<String>,
    /// The pgbouncers that route to it (`[host]` when none are given).
    pub pgbouncer_hosts: Vec<String>,
    /// The pgbouncer Django connects to (`host` when `pgbouncer_hosts` is empty).
    pub pgbouncer_endpoint: Option<String>,
    /// pgbouncer's pool size for this database.
    pub pgbouncer_pool_size: Option<i64>,
    /// pgbouncer's reserve pool size for this database.
    pub pgbouncer_reserve_pool_size: Option<i64>,
    /// The port Django connects to: `port`, else `host_settings[host].port`, else 6432.
    pub port: Option<i64>,
    /// The user ([`DEFAULT_USER`] when unset).
    pub user: String,
    /// The password ([`DEFAULT_PASSWORD`] when unset).
    pub password: String,
    /// Django's `OPTIONS`.
    pub options: IndexMap<String, String>,
    /// The Django alias (`None`: not in `DATABASES`, e.g. formplayer's).
    pub django_alias: Option<String>,
    /// Whether Django migrates it.
    pub django_migrate: bool,
    /// `pg_stat_statements` on it.
    pub query_stats: bool,
    /// Whether commcare-cloud creates it.
    pub create: bool,
    /// Database-level settings.
    pub pg_config: Vec<PgConfigItem>,
    /// A partition's (or custom / standby database's) `[start, end]` shard range.
    pub shards: Option<Vec<i64>>,
    /// A standby's master (a Django alias).
    pub master: Option<String>,
    /// A standby's acceptable replication delay.
    pub acceptable_replication_delay: Option<i64>,
}

/// `dbs.form_processing` (`FormProcessingConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct FormProcessing {
    /// The plproxy database.
    pub proxy: Db,
    /// The plproxy database for standbys (listed only when it has a `host`).
    pub proxy_standby: Db,
    /// The partitions by Django alias (`p1`, `p2`, ...).
    pub partitions: IndexMap<String, Db>,
}

/// `dbs` (`SmartDBConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dbs {
    /// `commcarehq`, alias `default`.
    pub main: Db,
    /// `formplayer`, no Django alias.
    pub formplayer: Db,
    /// `commcarehq_ucr`, alias `ucr`.
    pub ucr: Db,
    /// `commcarehq_project_db` (off unless given; lives with `ucr` by default).
    pub project_db: Option<Db>,
    /// `commcarehq_synclogs` (on unless `null`).
    pub synclogs: Option<Db>,
    /// Form processing (on unless `null`).
    pub form_processing: Option<FormProcessing>,
    /// `commcarehq_auditcare` (off unless given).
    pub auditcare: Option<Db>,
    /// `commcarehq_repeaters` (off unless given).
    pub repeaters: Option<Db>,
    /// Other databases.
    pub custom: Vec<Db>,
    /// Read replicas of other databases.
    pub standby: Vec<Db>,
}

/// A `replications` entry (`LogicalReplicationOptions`).
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// The subscriber.
    pub target_host: String,
    /// The subscriber's database.
    pub target_db_name: String,
    /// The publisher.
    pub source_host: String,
    /// The publisher's database.
    pub source_db_name: String,
    /// The `[start, end]` range.
    pub replication_set: Vec<i64>,
}

/// `postgresql.yml` (`PostgresqlConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresqlConfig {
    /// `SEPARATE_SYNCLOGS_DB` (true).
    pub separate_synclogs_db: bool,
    /// `SEPARATE_FORM_PROCESSING_DBS` (true).
    pub separate_form_processing_dbs: bool,
    /// `DEFAULT_POSTGRESQL_HOST` (the `postgresql` group's first host once resolved).
    pub default_postgresql_host: Option<String>,
    /// `REPORTING_DATABASES` (`{ucr: ucr}`).
    pub reporting_databases: IndexMap<String, Value>,
    /// `LOAD_BALANCED_APPS` (`{}`).
    pub load_balanced_apps: IndexMap<String, Value>,
    /// `host_settings`: a port per host.
    pub host_settings: IndexMap<String, i64>,
    /// `dbs`.
    pub dbs: Dbs,
    /// `replications`.
    pub replications: Vec<Replication>,
    /// `postgres_override`, as given.
    pub postgres_override: IndexMap<String, Value>,
    /// `pgbouncer_override`, as given.
    pub pgbouncer_override: IndexMap<String, Value>,
    /// `pg_repack`: host -> databases.
    pub pg_repack: IndexMap<String, Value>,
}

/// A database's route, as [`PostgresqlConfig::routes`] derives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The database name.
    pub name: String,
    /// The Django alias.
    pub django_alias: Option<String>,
    /// Where it lives.
    pub host: String,
    /// The port Django connects to.
    pub port: i64,
    /// The pgbouncer Django connects to.
    pub pgbouncer_endpoint: String,
    /// The pgbouncers that route to it.
    pub pgbouncer_hosts: Vec<String>,
    /// The Django aliases of its standbys (read replicas).
    pub standbys: Vec<String>,
}

/// Where a value is: the file and a dotted key.
#[derive(Clone, Copy)]
struct At<'a> {
    path: &'a Path,
    key: &'a str,
}

impl At<'_> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        if self.key.is_empty() {
            Error::at(self.path, None, None, what)
        } else {
            Error::at(self.path, None, None, format!("`{}`: {what}", self.key))
        }
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// A mapping with string keys; `null` is an empty one.
fn map_of(v: &Value, at: At<'_>) -> Result<IndexMap<String, Value>> {
    match untag(v) {
        Value::Null => Ok(IndexMap::new()),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let k = yaml::scalar_to_string(k)
                    .ok_or_else(|| at.err("has a key that is not a string"))?;
                Ok((k, v.clone()))
            })
            .collect(),
        other => Err(at
            .err(format!("expected a mapping, found {}", kind_of(other)))
            .with_hint("see commcare-cloud's postgresql.yml schema")),
    }
}

/// Refuses keys outside `allowed` (commcare-cloud's `_allow_dynamic_properties = False`).
fn only_keys(m: &IndexMap<String, Value>, allowed: &[&str], at: At<'_>) -> Result<()> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            let key = child(at.key, k);
            return Err(At {
                path: at.path,
                key: &key,
            }
            .err("unknown key (commcare-cloud refuses it)")
            .with_hint(format!("the keys allowed here: {}", allowed.join(", "))));
        }
    }
    Ok(())
}

fn opt_string(v: Option<&Value>, at: At<'_>) -> Result<Option<String>> {
    match v.map(untag) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(at
            .err(format!("expected a string, found {}", kind_of(other)))
            .with_hint("quote the value")),
    }
}

fn opt_bool(v: Option<&Value>, at: At<'_>) -> Result<Option<bool>> {
    match v.map(untag) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(at
            .err(format!("expected a boolean, found {}", kind_of(other)))
            .with_hint("write `true` or `false`")),
    }
}

fn opt_int(v: Option<&Value>, at: At<'_>) -> Result<Option<i64>> {
    match v.map(untag) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(other) => Err(at
            .err(format!("expected an integer, found {}", kind_of(other)))
            .with_hint("write a whole number")),
    }
}

fn list_of<T>(
    v: Option<&Value>,
    at: At<'_>,
    mut each: impl FnMut(&Value, At<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    match v.map(untag) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(s)) => s
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = format!("{}[{i}]", at.key);
                each(
                    item,
                    At {
                        path: at.path,
                        key: &key,
                    },
                )
            })
            .collect(),
        Some(other) => Err(at.err(format!("expected a list, found {}", kind_of(other)))),
    }
}

fn int_list(v: Option<&Value>, at: At<'_>) -> Result<Vec<i64>> {
    list_of(v, at, |item, at| {
        opt_int(Some(item), at)?.ok_or_else(|| at.err("expected an integer, found null"))
    })
}

fn string_list(v: Option<&Value>, at: At<'_>) -> Result<Vec<String>> {
    list_of(v, at, |item, at| {
        opt_string(Some(item), at)?.ok_or_else(|| at.err("expected a string, found null"))
    })
}

const DB_KEYS: &[&str] = &[
    "name",
    "host",
    "pgbouncer_hosts",
    "pgbouncer_endpoint",
    "pgbouncer_pool_size",
    "pgbouncer_reserve_pool_size",
    "port",
    "user",
    "password",
    "options",
    "django_alias",
    "django_migrate",
    "query_stats",
    "create",
    "pg_config",
];

/// The defaults of one database class: name, Django alias, `django_migrate`, `create`.
struct DbDefaults {
    kind: DbKind,
    name: Option<&'static str>,
    alias: Option<&'static str>,
    migrate: bool,
    create: bool,
}

const fn plain(name: &'static str, alias: Option<&'static str>, migrate: bool) -> DbDefaults {
    DbDefaults {
        kind: DbKind::Plain,
        name: Some(name),
        alias,
        migrate,
        create: true,
    }
}

/// `DBOptions.wrap` for one class: `null`/missing gives the class's defaults.
fn parse_db(v: Option<&Value>, d: &DbDefaults, at: At<'_>) -> Result<Db> {
    let mut m = match v {
        Some(v) => map_of(v, at)?,
        None => IndexMap::new(),
    };
    let mut allowed: Vec<&str> = DB_KEYS.to_vec();
    match d.kind {
        DbKind::Plain => {}
        DbKind::Partition | DbKind::Custom => allowed.push("shards"),
        DbKind::Standby => allowed.extend(["shards", "master", "acceptable_replication_delay"]),
    }
    allowed.push("pgbouncer_host");
    only_keys(&m, &allowed, at)?;
    let sub = |k: &str| child(at.key, k);
    let a = |k: &str| sub(k);
    // `pgbouncer_host: h` is `pgbouncer_hosts: [h]` + `pgbouncer_endpoint: h`.
    if let Some(h) = m.shift_remove("pgbouncer_host") {
        if m.contains_key("pgbouncer_hosts") || m.contains_key("pgbouncer_endpoint") {
            let k = a("pgbouncer_host");
            return Err(At {
                path: at.path,
                key: &k,
            }
            .err("is given with `pgbouncer_hosts` or `pgbouncer_endpoint`")
            .with_hint(
                "give either `pgbouncer_host`, or `pgbouncer_hosts` and `pgbouncer_endpoint`",
            ));
        }
        m.insert("pgbouncer_hosts".into(), Value::Sequence(vec![h.clone()]));
        m.insert("pgbouncer_endpoint".into(), h);
    }
    macro_rules! field {
        ($f:ident, $k:literal) => {{
            let k = a($k);
            $f(
                m.get($k),
                At {
                    path: at.path,
                    key: &k,
                },
            )?
        }};
    }
    let name = field!(opt_string, "name").or(d.name.map(str::to_owned));
    // `django_alias: null` is "no alias" (formplayer's default).
    let django_alias = if m.contains_key("django_alias") {
        field!(opt_string, "django_alias")
    } else {
        d.alias.map(str::to_owned)
    };
    let django_migrate = match field!(opt_bool, "django_migrate") {
        Some(b) => b,
        None if d.kind == DbKind::Custom => {
            let k = a("django_migrate");
            return Err(At {
                path: at.path,
                key: &k,
            }
            .err("is required for a custom database")
            .with_hint("say whether Django migrates it: `django_migrate: true` or `false`"));
        }
        None => d.migrate,
    };
    if name.is_none() && d.kind != DbKind::Standby {
        let k = a("name");
        return Err(At {
            path: at.path,
            key: &k,
        }
        .err("is required")
        .with_hint("give the database's name"));
    }
    let options = {
        let k = a("options");
        let at = At {
            path: at.path,
            key: &k,
        };
        map_of(m.get("options").unwrap_or(&Value::Null), at)?
            .into_iter()
            .map(|(key, v)| {
                let kk = child(&k, &key);
                let s = opt_string(
                    Some(&v),
                    At {
                        path: at.path,
                        key: &kk,
                    },
                )?
                .ok_or_else(|| {
                    At {
                        path: at.path,
                        key: &kk,
                    }
                    .err("expected a string, found null")
                })?;
                Ok((key, s))
            })
            .collect::<Result<IndexMap<_, _>>>()?
    };
    let pg_config = {
        let k = a("pg_config");
        list_of(
            m.get("pg_config"),
            At {
                path: at.path,
                key: &k,
            },
            |item, at| {
                let im = map_of(item, at)?;
                only_keys(&im, &["name", "value"], at)?;
                let nk = child(at.key, "name");
                Ok(PgConfigItem {
                    name: opt_string(
                        im.get("name"),
                        At {
                            path: at.path,
                            key: &nk,
                        },
                    )?,
                    value: im.get("value").cloned().unwrap_or(Value::Null),
                })
            },
        )?
    };
    let shards = if m.contains_key("shards") {
        let k = a("shards");
        if m.get("shards").is_some_and(|v| !v.is_null()) {
            Some(int_list(
                m.get("shards"),
                At {
                    path: at.path,
                    key: &k,
                },
            )?)
        } else {
            None
        }
    } else {
        None
    };
    let master = field!(opt_string, "master");
    if d.kind == DbKind::Standby && master.is_none() {
        let k = a("master");
        return Err(At {
            path: at.path,
            key: &k,
        }
        .err("is required for a standby database")
        .with_hint("give the Django alias of the database it replicates"));
    }
    Ok(Db {
        kind: d.kind,
        name,
        host: field!(opt_string, "host"),
        pgbouncer_hosts: field!(string_list, "pgbouncer_hosts"),
        pgbouncer_endpoint: field!(opt_string, "pgbouncer_endpoint"),
        pgbouncer_pool_size: field!(opt_int, "pgbouncer_pool_size"),
        pgbouncer_reserve_pool_size: field!(opt_int, "pgbouncer_reserve_pool_size"),
        port: field!(opt_int, "port"),
        user: field!(opt_string, "user")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned()),
        password: field!(opt_string, "password")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_PASSWORD.to_owned()),
        options,
        django_alias,
        django_migrate,
        query_stats: field!(opt_bool, "query_stats").unwrap_or(false),
        create: field!(opt_bool, "create").unwrap_or(d.create),
        pg_config,
        shards,
        master,
        acceptable_replication_delay: field!(opt_int, "acceptable_replication_delay"),
    })
}

/// An optional database: missing gives the defaults when `on_by_default`, `null` gives none.
fn parse_opt_db(
    m: &IndexMap<String, Value>,
    key: &str,
    d: &DbDefaults,
    on_by_default: bool,
    at: At<'_>,
) -> Result<Option<Db>> {
    let k = child(at.key, key);
    let at = At {
        path: at.path,
        key: &k,
    };
    match m.get(key) {
        None if on_by_default => parse_db(None, d, at).map(Some),
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_db(Some(v), d, at).map(Some),
    }
}

/// `alphanum_key`: `p10` sorts after `p9`.
fn alphanum_key(s: &str) -> Vec<(u8, u128, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            out.push((
                0,
                rest[..digits].parse().unwrap_or(u128::MAX),
                String::new(),
            ));
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            out.push((1, 0, rest[..text].to_owned()));
            rest = &rest[text..];
        }
    }
    out
}

fn parse_form_processing(v: &Value, at: At<'_>) -> Result<FormProcessing> {
    let m = map_of(v, at)?;
    only_keys(&m, &["proxy", "proxy_standby", "partitions"], at)?;
    let k = child(at.key, "proxy");
    let proxy = parse_db(
        m.get("proxy"),
        &plain("commcarehq_proxy", Some("proxy"), true),
        At {
            path: at.path,
            key: &k,
        },
    )?;
    let k = child(at.key, "proxy_standby");
    let proxy_standby = parse_db(
        m.get("proxy_standby"),
        &plain("commcarehq_proxy_standby", Some("proxy_standby"), true),
        At {
            path: at.path,
            key: &k,
        },
    )?;
    let pk = child(at.key, "partitions");
    let pat = At {
        path: at.path,
        key: &pk,
    };
    if !m.contains_key("partitions") {
        return Err(pat
            .err("is required")
            .with_hint("list the partitions (`p1: {shards: [0, 511]}`, ...)"));
    }
    let mut partitions = IndexMap::new();
    for (alias, db) in map_of(m.get("partitions").unwrap_or(&Value::Null), pat)? {
        let k = child(&pk, &alias);
        let at = At {
            path: at.path,
            key: &k,
        };
        // `FormProcessingConfig.wrap`: the alias defaults to the key, the name to `commcarehq_<alias>`.
        let mut dm = map_of(&db, at)?;
        if !dm.contains_key("django_alias") {
            dm.insert("django_alias".into(), Value::String(alias.clone()));
        }
        if !dm.contains_key("name") {
            let a = match dm.get("django_alias").map(untag) {
                Some(Value::String(s)) => s.clone(),
                _ => "None".to_owned(),
            };
            dm.insert("name".into(), Value::String(format!("commcarehq_{a}")));
        }
        let d = parse_db(
            Some(&to_mapping(dm)),
            &DbDefaults {
                kind: DbKind::Partition,
                name: None,
                alias: None,
                migrate: true,
                create: true,
            },
            at,
        )?;
        // `StrictPartitionDBOptions.validate`.
        let a = d.django_alias.clone().unwrap_or_default();
        if !a
            .strip_prefix('p')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(at
                .err(format!(
                    "the partition's Django alias is `{a}`, which is not `p<N>`"
                ))
                .with_hint("name partitions `p1`, `p2`, ... (commcare-cloud requires it)"));
        }
        if d.name.as_deref() != Some(&format!("commcarehq_{a}")) {
            return Err(at
                .err(format!("the partition's database name is `{}`, not `commcarehq_{a}`", d.name.as_deref().unwrap_or_default()))
                .with_hint("leave `name` out, or set it to `commcarehq_<alias>` (commcare-cloud requires it)"));
        }
        partitions.insert(alias, d);
    }
    Ok(FormProcessing {
        proxy,
        proxy_standby,
        partitions,
    })
}

fn to_mapping(m: IndexMap<String, Value>) -> Value {
    Value::Mapping(m.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
}

const TOP_KEYS: &[&str] = &[
    "SEPARATE_SYNCLOGS_DB",
    "SEPARATE_FORM_PROCESSING_DBS",
    "DEFAULT_POSTGRESQL_HOST",
    "REPORTING_DATABASES",
    "LOAD_BALANCED_APPS",
    "host_settings",
    "dbs",
    "replications",
    "postgres_override",
    "pgbouncer_override",
    "pg_repack",
];

const DBS_KEYS: &[&str] = &[
    "main",
    "formplayer",
    "ucr",
    "project_db",
    "synclogs",
    "form_processing",
    "auditcare",
    "repeaters",
    "custom",
    "standby",
];

impl PostgresqlConfig {
    /// Reads `postgresql.yml`'s value (`PostgresqlConfig.wrap`): the keys commcare-cloud knows,
    /// with its defaults. `path` is named in errors.
    ///
    /// # Errors
    /// An unknown key, a value of the wrong type, a required key missing.
    pub fn parse(v: &Value, path: &Path) -> Result<Self> {
        let root = At { path, key: "" };
        let m = map_of(v, root)?;
        only_keys(&m, TOP_KEYS, root)?;
        let at = |k: &'static str| At { path, key: k };
        let dbs_v = m.get("dbs").cloned().unwrap_or(Value::Null);
        let dm = map_of(&dbs_v, at("dbs"))?;
        only_keys(&dm, DBS_KEYS, at("dbs"))?;
        let dat = at("dbs");
        let dbs = Dbs {
            main: parse_db(
                dm.get("main").filter(|v| !v.is_null()),
                &plain("commcarehq", Some("default"), true),
                At {
                    path,
                    key: "dbs.main",
                },
            )?,
            formplayer: parse_db(
                dm.get("formplayer").filter(|v| !v.is_null()),
                &plain("formplayer", None, true),
                At {
                    path,
                    key: "dbs.formplayer",
                },
            )?,
            ucr: parse_db(
                dm.get("ucr").filter(|v| !v.is_null()),
                &plain("commcarehq_ucr", Some("ucr"), false),
                At {
                    path,
                    key: "dbs.ucr",
                },
            )?,
            project_db: parse_opt_db(
                &dm,
                "project_db",
                &plain("commcarehq_project_db", Some("project_db"), false),
                false,
                dat,
            )?,
            synclogs: parse_opt_db(
                &dm,
                "synclogs",
                &plain("commcarehq_synclogs", Some("synclogs"), true),
                true,
                dat,
            )?,
            form_processing: match dm.get("form_processing") {
                Some(Value::Null) => None,
                None => Some(FormProcessing {
                    proxy: parse_db(
                        None,
                        &plain("commcarehq_proxy", Some("proxy"), true),
                        At {
                            path,
                            key: "dbs.form_processing.proxy",
                        },
                    )?,
                    proxy_standby: parse_db(
                        None,
                        &plain("commcarehq_proxy_standby", Some("proxy_standby"), true),
                        At {
                            path,
                            key: "dbs.form_processing.proxy_standby",
                        },
                    )?,
                    partitions: IndexMap::new(),
                }),
                Some(v) => Some(parse_form_processing(
                    v,
                    At {
                        path,
                        key: "dbs.form_processing",
                    },
                )?),
            },
            auditcare: parse_opt_db(
                &dm,
                "auditcare",
                &plain("commcarehq_auditcare", Some("auditcare"), true),
                false,
                dat,
            )?,
            repeaters: parse_opt_db(
                &dm,
                "repeaters",
                &plain("commcarehq_repeaters", Some("repeaters"), true),
                false,
                dat,
            )?,
            custom: list_of(
                dm.get("custom"),
                At {
                    path,
                    key: "dbs.custom",
                },
                |v, at| {
                    parse_db(
                        Some(v),
                        &DbDefaults {
                            kind: DbKind::Custom,
                            name: None,
                            alias: None,
                            migrate: true,
                            create: true,
                        },
                        at,
                    )
                },
            )?,
            standby: list_of(
                dm.get("standby"),
                At {
                    path,
                    key: "dbs.standby",
                },
                |v, at| {
                    parse_db(
                        Some(v),
                        &DbDefaults {
                            kind: DbKind::Standby,
                            name: None,
                            alias: None,
                            migrate: false,
                            create: false,
                        },
                        at,
                    )
                },
            )?,
        };
        let host_settings = map_of(
            m.get("host_settings").unwrap_or(&Value::Null),
            at("host_settings"),
        )?
        .into_iter()
        .map(|(h, v)| {
            let k = format!("host_settings.{h}");
            let a = At { path, key: &k };
            let hm = map_of(&v, a)?;
            only_keys(&hm, &["port"], a)?;
            let pk = format!("{k}.port");
            Ok((
                h,
                opt_int(hm.get("port"), At { path, key: &pk })?.unwrap_or(DEFAULT_PORT),
            ))
        })
        .collect::<Result<IndexMap<_, _>>>()?;
        let replications = list_of(m.get("replications"), at("replications"), |v, a| {
            let rm = map_of(v, a)?;
            const KEYS: &[&str] = &[
                "target_host",
                "target_db_name",
                "source_host",
                "source_db_name",
                "replication_set",
            ];
            only_keys(&rm, KEYS, a)?;
            let req = |k: &str| -> Result<String> {
                let kk = child(a.key, k);
                let at = At { path, key: &kk };
                opt_string(rm.get(k), at)?.ok_or_else(|| at.err("is required"))
            };
            let rk = child(a.key, "replication_set");
            if !rm.contains_key("replication_set") {
                return Err(At { path, key: &rk }.err("is required"));
            }
            Ok(Replication {
                target_host: req("target_host")?,
                target_db_name: req("target_db_name")?,
                source_host: req("source_host")?,
                source_db_name: req("source_db_name")?,
                replication_set: int_list(rm.get("replication_set"), At { path, key: &rk })?,
            })
        })?;
        let postgres_override = map_of(
            m.get("postgres_override").unwrap_or(&Value::Null),
            at("postgres_override"),
        )?;
        only_keys(
            &postgres_override,
            POSTGRES_OVERRIDE_KEYS,
            at("postgres_override"),
        )?;
        let pgbouncer_override = map_of(
            m.get("pgbouncer_override").unwrap_or(&Value::Null),
            at("pgbouncer_override"),
        )?;
        only_keys(
            &pgbouncer_override,
            PGBOUNCER_OVERRIDE_KEYS,
            at("pgbouncer_override"),
        )?;
        let reporting_databases = match m.get("REPORTING_DATABASES") {
            None => std::iter::once(("ucr".to_owned(), Value::String("ucr".into()))).collect(),
            Some(v) => map_of(v, at("REPORTING_DATABASES"))?,
        };
        Ok(Self {
            separate_synclogs_db: opt_bool(
                m.get("SEPARATE_SYNCLOGS_DB"),
                at("SEPARATE_SYNCLOGS_DB"),
            )?
            .unwrap_or(true),
            separate_form_processing_dbs: opt_bool(
                m.get("SEPARATE_FORM_PROCESSING_DBS"),
                at("SEPARATE_FORM_PROCESSING_DBS"),
            )?
            .unwrap_or(true),
            default_postgresql_host: opt_string(
                m.get("DEFAULT_POSTGRESQL_HOST"),
                at("DEFAULT_POSTGRESQL_HOST"),
            )?,
            reporting_databases,
            load_balanced_apps: map_of(
                m.get("LOAD_BALANCED_APPS").unwrap_or(&Value::Null),
                at("LOAD_BALANCED_APPS"),
            )?,
            host_settings,
            dbs,
            replications,
            postgres_override,
            pgbouncer_override,
            pg_repack: map_of(m.get("pg_repack").unwrap_or(&Value::Null), at("pg_repack"))?,
        })
    }

    /// Every database, in commcare-cloud's order (`generate_postgresql_dbs`): main, synclogs, the
    /// form-processing proxy (and proxy standby when it has a host) and partitions (in natural
    /// order of alias), ucr, project_db, formplayer, auditcare, repeaters, custom, standby.
    pub fn all_dbs(&self) -> Vec<&Db> {
        let d = &self.dbs;
        let mut out = vec![&d.main];
        out.extend(d.synclogs.as_ref());
        if let Some(fp) = &d.form_processing {
            out.push(&fp.proxy);
            if fp.proxy_standby.host.is_some() {
                out.push(&fp.proxy_standby);
            }
            let mut parts: Vec<&Db> = fp.partitions.values().collect();
            parts.sort_by_key(|db| alphanum_key(db.django_alias.as_deref().unwrap_or_default()));
            out.extend(parts);
        }
        out.push(&d.ucr);
        out.extend(d.project_db.as_ref());
        out.push(&d.formplayer);
        out.extend(d.auditcare.as_ref());
        out.extend(d.repeaters.as_ref());
        out.extend(d.custom.iter());
        out.extend(d.standby.iter());
        out
    }

    fn all_dbs_mut(&mut self) -> Vec<&mut Db> {
        let d = &mut self.dbs;
        let mut out = vec![&mut d.main];
        out.extend(d.synclogs.as_mut());
        if let Some(fp) = &mut d.form_processing {
            out.push(&mut fp.proxy);
            if fp.proxy_standby.host.is_some() {
                out.push(&mut fp.proxy_standby);
            }
            out.extend(fp.partitions.values_mut());
        }
        out.push(&mut d.ucr);
        out.extend(d.project_db.as_mut());
        out.push(&mut d.formplayer);
        out.extend(d.auditcare.as_mut());
        out.extend(d.repeaters.as_mut());
        out.extend(d.custom.iter_mut());
        out.extend(d.standby.iter_mut());
        out
    }

    /// Resolves host names against the inventory, as commcare-cloud's `replace_hosts`:
    /// `DEFAULT_POSTGRESQL_HOST` defaults to the `postgresql` group's first host; every host
    /// named (a database's `host`, `pgbouncer_hosts`, `pgbouncer_endpoint`, `host_settings`,
    /// `pg_repack`, `replications`, `postgresql_hba_entries` netmasks) is an inventory host or a
    /// group of exactly one host (`translate_host`; `127.0.0.1` and `None` stay); a database
    /// without a host is on the default host; without `pgbouncer_hosts` its pgbouncer is its host;
    /// without a port, `host_settings[host].port`, else 6432; `project_db` takes `ucr`'s host and
    /// pgbouncers; a standby without a name takes its master's.
    ///
    /// # Errors
    /// A host that is unknown or a group of several hosts; no `postgresql` group to default to.
    pub fn resolve(&mut self, inventory: &Inventory, path: &Path) -> Result<()> {
        let translate = |host: &str, key: &str| translate_host(inventory, host, path, key);
        self.default_postgresql_host = Some(match self.default_postgresql_host.take() {
            None => inventory.group_hosts("postgresql").and_then(|h| h.first().map(|s| (*s).to_owned())).ok_or_else(|| {
                Error::at(
                    path,
                    None,
                    None,
                    "`DEFAULT_POSTGRESQL_HOST` is not set and the inventory has no `postgresql` group to take it from",
                )
                .with_hint("set `DEFAULT_POSTGRESQL_HOST`, or add a `[postgresql]` group to the inventory")
            })?,
            Some(h) if h == "127.0.0.1" => h,
            Some(h) => translate(&h, "DEFAULT_POSTGRESQL_HOST")?,
        });
        let default_host = self.default_postgresql_host.clone().unwrap_or_default();
        let host_settings: IndexMap<String, i64> = self
            .host_settings
            .iter()
            .map(|(h, p)| Ok((translate(h, &format!("host_settings.{h}"))?, *p)))
            .collect::<Result<_>>()?;
        if self.dbs.project_db.is_some() {
            let ucr = self.dbs.ucr.clone();
            if let Some(p) = self.dbs.project_db.as_mut() {
                if p.host.is_none() {
                    p.host.clone_from(&ucr.host);
                }
                if p.pgbouncer_hosts.is_empty() {
                    p.pgbouncer_hosts.clone_from(&ucr.pgbouncer_hosts);
                }
                if p.pgbouncer_endpoint.is_none() {
                    p.pgbouncer_endpoint.clone_from(&ucr.pgbouncer_endpoint);
                }
            }
        }
        for db in self.all_dbs_mut() {
            let what = db
                .django_alias
                .clone()
                .or_else(|| db.name.clone())
                .unwrap_or_default();
            let host = match db.host.take() {
                None => default_host.clone(),
                Some(h) if h == "127.0.0.1" => h,
                Some(h) => translate(&h, &format!("host` of database `{what}"))?,
            };
            if db.pgbouncer_hosts.is_empty() {
                db.pgbouncer_hosts = vec![host.clone()];
                db.pgbouncer_endpoint = Some(host.clone());
            } else {
                db.pgbouncer_hosts = db
                    .pgbouncer_hosts
                    .iter()
                    .map(|h| translate(h, &format!("pgbouncer_hosts` of database `{what}")))
                    .collect::<Result<_>>()?;
                let endpoint = db
                    .pgbouncer_endpoint
                    .clone()
                    .unwrap_or_else(|| "None".to_owned());
                if db.pgbouncer_endpoint.is_none() {
                    return Err(Error::at(
                        path,
                        None,
                        None,
                        format!("database `{what}` has `pgbouncer_hosts` but no `pgbouncer_endpoint`"),
                    )
                    .with_hint("set `pgbouncer_endpoint` to the pgbouncer Django connects to (commcare-cloud requires it)"));
                }
                db.pgbouncer_endpoint = Some(translate(
                    &endpoint,
                    &format!("pgbouncer_endpoint` of database `{what}"),
                )?);
            }
            if db.port.is_none() {
                db.port = Some(host_settings.get(&host).copied().unwrap_or(DEFAULT_PORT));
            }
            db.host = Some(host);
        }
        self.host_settings = host_settings;
        self.pg_repack = self
            .pg_repack
            .iter()
            .map(|(h, v)| Ok((translate(h, &format!("pg_repack.{h}"))?, v.clone())))
            .collect::<Result<_>>()?;
        for (i, r) in self.replications.iter_mut().enumerate() {
            r.source_host = translate(&r.source_host, &format!("replications[{i}].source_host"))?;
            r.target_host = translate(&r.target_host, &format!("replications[{i}].target_host"))?;
        }
        if let Some(Value::Sequence(entries)) =
            self.postgres_override.get_mut("postgresql_hba_entries")
        {
            for (i, entry) in entries.iter_mut().enumerate() {
                let Value::Mapping(e) = entry else { continue };
                let key = Value::String("netmask".into());
                let Some(Value::String(mask)) = e.get(&key) else {
                    continue;
                };
                if mask.is_empty() || ADDRESS_LIKE.is_match(mask) {
                    continue;
                }
                let k = format!("postgres_override.postgresql_hba_entries[{i}].netmask");
                let (host, bits) = mask.split_once('/').ok_or_else(|| {
                    Error::at(
                        path,
                        None,
                        None,
                        format!("`{k}` is `{mask}`, which is neither an address nor `host/bits`"),
                    )
                    .with_hint("write `10.0.0.0/8` or `<inventory host>/32`")
                })?;
                let host = translate(host, &k)?;
                e.insert(key, Value::String(format!("{host}/{bits}")));
            }
        }
        let by_alias: BTreeMap<String, Option<String>> = self
            .all_dbs()
            .iter()
            .filter_map(|d| d.django_alias.clone().map(|a| (a, d.name.clone())))
            .collect();
        for db in &mut self.dbs.standby {
            if db.name.is_none()
                && let Some(Some(n)) = db.master.as_ref().and_then(|m| by_alias.get(m))
            {
                db.name = Some(n.clone());
            }
        }
        Ok(())
    }

    /// commcare-cloud's `check`: `REPORTING_DATABASES` names defined aliases, partitions' shards
    /// are consecutive from 0 and a power of 2 in number, standbys name a master of the same
    /// database name, `synclogs` / `form_processing` are `null` exactly when
    /// `SEPARATE_SYNCLOGS_DB` / `SEPARATE_FORM_PROCESSING_DBS` is false.
    ///
    /// # Errors
    /// The first check that fails, naming the file and key.
    pub fn check(&self, path: &Path) -> Result<()> {
        let defined: BTreeMap<&str, &Db> = self
            .all_dbs()
            .into_iter()
            .filter_map(|d| d.django_alias.as_deref().map(|a| (a, d)))
            .collect();
        let mut referenced = Vec::new();
        for (alias, v) in &self.reporting_databases {
            match untag(v) {
                Value::String(s) => referenced.push(s.clone()),
                other => {
                    let k = format!("REPORTING_DATABASES.{alias}");
                    let at = At { path, key: &k };
                    let m = map_of(other, at)?;
                    if let Some(w) = m.get("WRITE").and_then(yaml::scalar_to_string) {
                        referenced.push(w);
                    } else {
                        return Err(at
                            .err("has no `WRITE` alias")
                            .with_hint("write `{WRITE: alias, READ: [[alias, weight], ...]}`"));
                    }
                    let rk = format!("{k}.READ");
                    let Some(Value::Sequence(reads)) = m.get("READ").map(untag) else {
                        return Err(At { path, key: &rk }
                            .err("is not a list of `[alias, weight]`")
                            .with_hint("write `READ: [[alias, weight], ...]`"));
                    };
                    for r in reads {
                        match untag(r) {
                            Value::Sequence(pair) if pair.len() == 2 => {
                                referenced.extend(yaml::scalar_to_string(&pair[0]))
                            }
                            _ => {
                                return Err(At { path, key: &rk }
                                    .err("has an item that is not `[alias, weight]`")
                                    .with_hint("write `READ: [[alias, weight], ...]`"));
                            }
                        }
                    }
                }
            }
        }
        let mut missing: Vec<&String> = referenced
            .iter()
            .filter(|a| !defined.contains_key(a.as_str()))
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            return Err(Error::at(
                path,
                None,
                None,
                format!(
                    "`REPORTING_DATABASES` must refer only to defined Django aliases: {} not in {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    defined.keys().copied().collect::<Vec<_>>().join(", ")
                ),
            )
            .with_hint("use the `django_alias` of a database in `dbs`"));
        }
        if let Some(fp) = &self.dbs.form_processing {
            check_shards(fp, path)?;
        }
        for (i, db) in self.dbs.standby.iter().enumerate() {
            let master = db.master.as_deref().unwrap_or_default();
            let k = format!("dbs.standby[{i}]");
            let at = At { path, key: &k };
            let Some(m) = defined.get(master) else {
                return Err(at
                    .err(format!(
                        "the standby's master `{master}` is not a defined Django alias"
                    ))
                    .with_hint(
                        "set `master` to the `django_alias` of the database it replicates",
                    ));
            };
            if m.name != db.name {
                return Err(at
                    .err(format!(
                        "the standby's name `{}` differs from its master's `{}`",
                        db.name.as_deref().unwrap_or("None"),
                        m.name.as_deref().unwrap_or("None")
                    ))
                    .with_hint("leave `name` out: a standby takes its master's"));
            }
        }
        if self.separate_synclogs_db != self.dbs.synclogs.is_some() {
            return Err(Error::at(
                path,
                None,
                None,
                "`dbs.synclogs` should be null if and only if `SEPARATE_SYNCLOGS_DB` is false",
            )
            .with_hint(
                "set `SEPARATE_SYNCLOGS_DB: false` with `dbs.synclogs: null`, or leave both out",
            ));
        }
        if self.separate_form_processing_dbs != self.dbs.form_processing.is_some() {
            return Err(Error::at(
                path,
                None,
                None,
                "`dbs.form_processing` should be null if and only if `SEPARATE_FORM_PROCESSING_DBS` is false",
            )
            .with_hint("set `SEPARATE_FORM_PROCESSING_DBS: false` with `dbs.form_processing: null`, or give its partitions"));
        }
        Ok(())
    }

    /// Each database's route (after [`PostgresqlConfig::resolve`]), sorted by name as
    /// `postgresql_dbs.all`: host, port, pgbouncer endpoint and hosts, and the aliases of its
    /// standbys.
    pub fn routes(&self) -> Vec<Route> {
        let mut dbs = self.all_dbs();
        dbs.sort_by(|a, b| a.name.cmp(&b.name));
        dbs.iter()
            .map(|d| Route {
                name: d.name.clone().unwrap_or_default(),
                django_alias: d.django_alias.clone(),
                host: d.host.clone().unwrap_or_default(),
                port: d.port.unwrap_or(DEFAULT_PORT),
                pgbouncer_endpoint: d.pgbouncer_endpoint.clone().unwrap_or_default(),
                pgbouncer_hosts: d.pgbouncer_hosts.clone(),
                standbys: self
                    .dbs
                    .standby
                    .iter()
                    .filter(|s| d.django_alias.is_some() && s.master == d.django_alias)
                    .filter_map(|s| s.django_alias.clone())
                    .collect(),
            })
            .collect()
    }

    /// The variables commcare-cloud generates from the file (`to_generated_variables`, after
    /// [`PostgresqlConfig::resolve`]): its keys as written with defaults, `dbs` renamed
    /// `postgresql_dbs` with `all` (every database, sorted by name) and `by_pgbouncer_host` (the
    /// databases each pgbouncer host serves; a `pg_standby` host gets its root master's), and
    /// the overrides' variables at the top level.
    ///
    /// # Errors
    /// A `pg_standby` host without a `hot_standby_master` leading to a `postgresql` host.
    pub fn generated_variables(
        &self,
        inventory: &Inventory,
        path: &Path,
    ) -> Result<Map<String, J>> {
        let mut data = Map::new();
        data.insert(
            "SEPARATE_SYNCLOGS_DB".into(),
            J::Bool(self.separate_synclogs_db),
        );
        data.insert(
            "SEPARATE_FORM_PROCESSING_DBS".into(),
            J::Bool(self.separate_form_processing_dbs),
        );
        data.insert(
            "DEFAULT_POSTGRESQL_HOST".into(),
            json!(self.default_postgresql_host),
        );
        data.insert(
            "REPORTING_DATABASES".into(),
            map_json(&self.reporting_databases),
        );
        data.insert(
            "LOAD_BALANCED_APPS".into(),
            map_json(&self.load_balanced_apps),
        );
        data.insert(
            "host_settings".into(),
            J::Object(
                self.host_settings
                    .iter()
                    .map(|(h, p)| (h.clone(), json!({ "port": p })))
                    .collect(),
            ),
        );
        data.insert(
            "replications".into(),
            J::Array(
                self.replications
                    .iter()
                    .map(|r| {
                        json!({"target_host": r.target_host, "target_db_name": r.target_db_name, "source_host": r.source_host,
                               "source_db_name": r.source_db_name, "replication_set": r.replication_set})
                    })
                    .collect(),
            ),
        );
        data.insert("pg_repack".into(), map_json(&self.pg_repack));
        let d = &self.dbs;
        let opt = |db: &Option<Db>| db.as_ref().map_or(J::Null, Db::to_json);
        let mut dbs = Map::new();
        dbs.insert("main".into(), d.main.to_json());
        dbs.insert("formplayer".into(), d.formplayer.to_json());
        dbs.insert("ucr".into(), d.ucr.to_json());
        dbs.insert("project_db".into(), opt(&d.project_db));
        dbs.insert("synclogs".into(), opt(&d.synclogs));
        dbs.insert(
            "form_processing".into(),
            d.form_processing.as_ref().map_or(J::Null, |fp| {
                json!({
                    "proxy": fp.proxy.to_json(),
                    "proxy_standby": fp.proxy_standby.to_json(),
                    "partitions": J::Object(fp.partitions.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
                })
            }),
        );
        dbs.insert("auditcare".into(), opt(&d.auditcare));
        dbs.insert("repeaters".into(), opt(&d.repeaters));
        dbs.insert(
            "custom".into(),
            J::Array(d.custom.iter().map(Db::to_json).collect()),
        );
        dbs.insert(
            "standby".into(),
            J::Array(d.standby.iter().map(Db::to_json).collect()),
        );
        let mut sorted = self.all_dbs();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        dbs.insert(
            "all".into(),
            J::Array(sorted.iter().map(|d| d.to_json()).collect()),
        );

        // The databases each pgbouncer serves (for pgbouncer's and postgresql's configuration).
        let mut pgbouncer_hosts: Vec<String> = inventory
            .group_hosts("postgresql")
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some(h) = &self.default_postgresql_host
            && !pgbouncer_hosts.contains(h)
        {
            pgbouncer_hosts.push(h.clone());
        }
        pgbouncer_hosts.extend(
            inventory
                .group_hosts("pgbouncer")
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned),
        );
        let mut by_host: IndexMap<String, Vec<J>> = IndexMap::new();
        for db in &sorted {
            for h in &db.pgbouncer_hosts {
                if pgbouncer_hosts.contains(h) {
                    by_host.entry(h.clone()).or_default().push(db.to_json());
                }
            }
        }
        for standby in inventory.group_hosts("pg_standby").unwrap_or_default() {
            let root = root_pg_host(inventory, standby, path, &mut Vec::new())?;
            // A defaultdict in commcare-cloud: the root gets an (empty) entry too.
            let list = by_host.entry(root).or_default().clone();
            by_host.insert(standby.to_owned(), list);
        }
        dbs.insert(
            "by_pgbouncer_host".into(),
            J::Object(by_host.into_iter().map(|(k, v)| (k, J::Array(v))).collect()),
        );
        data.insert("postgresql_dbs".into(), J::Object(dbs));
        for (k, v) in self
            .postgres_override
            .iter()
            .chain(&self.pgbouncer_override)
        {
            data.insert(k.clone(), to_json(v));
        }
        Ok(data)
    }
}

fn to_json(v: &Value) -> J {
    serde_json::to_value(v).unwrap_or(J::Null)
}

fn map_json(m: &IndexMap<String, Value>) -> J {
    J::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

impl Db {
    /// The database as commcare-cloud's `to_json` gives it to templates (the keys of its class).
    pub fn to_json(&self) -> J {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("host".into(), json!(self.host));
        m.insert("pgbouncer_hosts".into(), json!(self.pgbouncer_hosts));
        m.insert("pgbouncer_endpoint".into(), json!(self.pgbouncer_endpoint));
        m.insert(
            "pgbouncer_pool_size".into(),
            json!(self.pgbouncer_pool_size),
        );
        m.insert(
            "pgbouncer_reserve_pool_size".into(),
            json!(self.pgbouncer_reserve_pool_size),
        );
        m.insert("port".into(), json!(self.port));
        m.insert("user".into(), json!(self.user));
        m.insert("password".into(), json!(self.password));
        m.insert("options".into(), json!(self.options));
        m.insert("django_alias".into(), json!(self.django_alias));
        m.insert("django_migrate".into(), json!(self.django_migrate));
        m.insert("query_stats".into(), json!(self.query_stats));
        m.insert("create".into(), json!(self.create));
        m.insert(
            "pg_config".into(),
            J::Array(
                self.pg_config
                    .iter()
                    .map(|p| json!({"name": p.name, "value": to_json(&p.value)}))
                    .collect(),
            ),
        );
        if self.kind != DbKind::Plain
            && let Some(s) = &self.shards
        {
            m.insert("shards".into(), json!(s));
        }
        if self.kind == DbKind::Standby {
            m.insert("master".into(), json!(self.master));
            m.insert(
                "acceptable_replication_delay".into(),
                json!(self.acceptable_replication_delay),
            );
        }
        J::Object(m)
    }
}

/// `translate_host`: an inventory host (or `None`) as is, a group of one host as that host.
fn translate_host(inventory: &Inventory, host: &str, path: &Path, key: &str) -> Result<String> {
    if host == "None" || inventory.host(host).is_some() {
        return Ok(host.to_owned());
    }
    match inventory.group_hosts(host) {
        Some(hosts) if hosts.len() == 1 => Ok(hosts[0].to_owned()),
        Some(hosts) if !hosts.is_empty() => Err(Error::at(
            path,
            None,
            None,
            format!(
                "`{key}`: `{host}` is a group of {} hosts, not a single host",
                hosts.len()
            ),
        )
        .with_hint("name one inventory host, or a group of exactly one host")),
        _ => Err(
            Error::at(path, None, None, format!("`{key}`: unknown host `{host}`"))
                .with_hint("name an inventory host, or a group of exactly one host"),
        ),
    }
}

/// `_get_root_pg_host`: follows `hot_standby_master` from a standby to a `postgresql` host.
fn root_pg_host(
    inventory: &Inventory,
    standby: &str,
    path: &Path,
    seen: &mut Vec<String>,
) -> Result<String> {
    let inv = Path::new("the inventory");
    let standby = translate_host(inventory, standby, inv, "pg_standby")?;
    if seen.contains(&standby) {
        return Err(Error::at(
            path,
            None,
            None,
            format!("`hot_standby_master` loops back to `{standby}`"),
        )
        .with_hint("point standbys at a `postgresql` host"));
    }
    seen.push(standby.clone());
    let master = inventory
        .host_var(&standby, "hot_standby_master")
        .and_then(|v| yaml::scalar_to_string(&v))
        .filter(|s| !s.is_empty());
    let Some(master) = master else {
        return Err(Error::config(format!("the `pg_standby` host `{standby}` has no root PG host (no `hot_standby_master`)"))
            .with_hint("set `hot_standby_master` on the standby to its `postgresql` host (or to another standby)"));
    };
    let master = translate_host(
        inventory,
        &master,
        inv,
        &format!("hot_standby_master` of `{standby}"),
    )?;
    if inventory
        .group_hosts("postgresql")
        .unwrap_or_default()
        .contains(&master.as_str())
    {
        return Ok(master);
    }
    root_pg_host(inventory, &master, path, seen)
}

/// `validate_shards`: shard ranges consecutive from 0, a power of 2 in number.
fn check_shards(fp: &FormProcessing, path: &Path) -> Result<()> {
    let mut ranges = Vec::new();
    for (alias, db) in &fp.partitions {
        let k = format!("dbs.form_processing.partitions.{alias}.shards");
        match db.shards.as_deref() {
            Some([a, b]) => ranges.push((*a, *b, k)),
            _ => {
                return Err(Error::at(
                    path,
                    None,
                    None,
                    format!("`{k}` is not a `[start, end]` pair"),
                )
                .with_hint("write `shards: [0, 511]`"));
            }
        }
    }
    ranges.sort();
    let mut seen = std::collections::BTreeSet::new();
    let mut previous: Option<i64> = None;
    for (a, b, k) in &ranges {
        match previous {
            None if *a != 0 => {
                return Err(Error::at(
                    path,
                    None,
                    None,
                    format!("`{k}`: shard numbering must start at 0"),
                )
                .with_hint("the first partition's shards start at 0"));
            }
            Some(end) if end + 1 != *a => {
                return Err(Error::at(
                    path,
                    None,
                    None,
                    format!("`{k}`: shards must be numbered consecutively: {end} -> {a}"),
                )
                .with_hint("each partition starts where the previous one ended, plus one"));
            }
            _ => {}
        }
        seen.extend(*a..=*b);
        previous = Some(*b);
    }
    let n = seen.len();
    if n == 0 || !n.is_power_of_two() {
        return Err(Error::at(
            path,
            None,
            None,
            format!("`dbs.form_processing.partitions`: the total number of shards must be a power of 2: {n}"),
        )
        .with_hint(
            "give the partitions shard ranges covering 0..2^k-1 (or set `SEPARATE_FORM_PROCESSING_DBS: false` and `form_processing: null`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
