//! The variables commcare-cloud generates for every `ansible-playbook` run
//! (`Environment._create_generated_yml`, its `.generated.yml`), computed from the environment by
//! cchq's loaders: the environment's names and paths, `dev_users`, fab-settings.yml's values,
//! `ES_SETTINGS`, `app_processes_config` (app-processes.yml over the defaults, hosts translated,
//! every option filled in) with `CELERY_FLOWER_URL`, `celery_queues` and
//! `CELERY_HEARTBEAT_THRESHOLDS`, postgresql.yml's variables, proxy.yml's variables, the database
//! names and, per known secret, the Ansible expression that reads it from the vault.
//!
//! `release_name` (deploys only) is not among them. The golden test compares them, key by key
//! and value by value, with commcare-cloud's own output for every fixture environment
//! (`tests/golden/generated_vars.py`).

use std::path::Path;

use serde_json::{Map, Value as J, json};

use crate::environment::{Environment, Vault};
use crate::error::{Error, Result};
use crate::settings::generated as settings_generated;
use crate::{Value, yaml};

/// How a known secret's expression ends (commcare-cloud's `secrets.yml`: `required`, `default`,
/// `default_overrides_falsy_values`).
#[derive(Clone, Copy)]
enum SecretDefault {
    /// `| default(None)`.
    None,
    /// `| default('')`.
    Empty,
    /// `| default('', true)`: an empty value too gets the default.
    EmptyOverFalsy,
    /// Required: no default.
    Required,
}

/// commcare-cloud's known secrets (`environment/secrets/secrets.yml`): name, vault section
/// (`""`: top level), default, and whether the Ansible variable is the lower-cased name.
const SECRETS: &[(&str, &str, SecretDefault, bool)] = {
    use SecretDefault::{Empty as E, EmptyOverFalsy as F, None as N, Required as R};
    const L: &str = "localsettings_private";
    const S: &str = "secrets";
    &[
        ("AMAZON_S3_ACCESS_KEY", L, N, false),
        ("AMAZON_S3_SECRET_KEY", L, N, false),
        ("APPCUES_ID", L, F, false),
        ("APPCUES_KEY", L, F, false),
        ("BANK_ACCOUNT_NUMBER", L, N, false),
        ("BANK_ROUTING_NUMBER_ACH", L, E, false),
        ("BANK_ROUTING_NUMBER_WIRE", L, E, false),
        ("BITLY_OAUTH_TOKEN", L, E, false),
        ("BOOKKEEPER_CONTACT_EMAILS", L, N, false),
        ("COUCH_PASSWORD", L, N, false),
        ("COUCH_USERNAME", L, N, false),
        ("DATADOG_API_KEY", S, N, false),
        ("DATADOG_APP_KEY", S, N, false),
        ("DRIFT_ID", L, F, false),
        ("DROPBOX_KEY", L, N, false),
        ("DROPBOX_SECRET", L, N, false),
        ("ECRYPTFS_PASSWORD", S, N, false),
        ("EMAIL_LOGIN", L, N, false),
        ("EMAIL_PASSWORD", L, N, false),
        ("FORMPLAYER_INTERNAL_AUTH_KEY", L, N, false),
        ("FORMPLAYER_SENTRY_DSN", S, N, true),
        ("GMAPS_API_KEY", L, E, false),
        ("GOOGLE_ANALYTICS_API_ID", L, F, false),
        ("GOOGLE_ANALYTICS_SECRET", L, F, false),
        ("GOOGLE_ANALYTICS_MEASUREMENT_ID", L, F, false),
        ("GOOGLE_OAUTH_CLIENT_ID", L, E, false),
        ("GOOGLE_OAUTH_PROJECT_ID", L, E, false),
        ("GOOGLE_OAUTH_CLIENT_SECRET", L, E, false),
        ("GREENHOUSE_API_KEY", L, N, false),
        ("HQ_PRIVATE_KEY", L, N, false),
        ("HUBSPOT_API_ID", L, F, false),
        ("HUBSPOT_ACCESS_TOKEN", L, F, false),
        ("KISSMETRICS_KEY", L, F, false),
        ("KSPLICE_ACTIVATION_KEY", S, N, false),
        ("MAPBOX_ACCESS_TOKEN", L, E, false),
        ("MAPS_LAYERS", L, N, false),
        ("MAXMIND_ACCOUNT_ID", S, N, false),
        ("MAXMIND_LICENSE_KEY", S, N, false),
        ("MOBILE_INTEGRATION_TEST_TOKEN", L, N, false),
        ("OLD_S3_BLOB_DB_ACCESS_KEY", S, N, true),
        ("OLD_S3_BLOB_DB_SECRET_KEY", S, N, true),
        ("OPEN_EXCHANGE_RATES_API_ID", L, N, false),
        ("POSTGRES_USERS", S, N, true),
        ("RECAPTCHA_PRIVATE_KEY", S, N, false),
        ("RECAPTCHA_PUBLIC_KEY", S, N, false),
        ("REDIS_PASSWORD", L, N, false),
        ("RETURN_PATH_EMAIL_PASSWORD", L, N, false),
        ("S3_ACCESS_KEY", S, N, true),
        ("S3_SECRET_KEY", S, N, true),
        ("SECRET_KEY", L, R, false),
        ("SENTRY_API_KEY", L, N, false),
        ("SENTRY_DSN", L, N, false),
        ("SENTRY_PRIVATE_KEY", L, N, false),
        ("SENTRY_PROJECT_ID", L, N, false),
        ("SENTRY_PUBLIC_KEY", L, N, false),
        ("SENTRY_QUERY_URL", L, N, false),
        ("SIMPLE_API_KEYS", L, N, false),
        ("SNS_EMAIL_EVENT_SECRET", L, N, false),
        ("STRIPE_PRIVATE_KEY", L, N, false),
        ("STRIPE_PUBLIC_KEY", L, N, false),
        ("SUMOLOGIC_URL", L, N, false),
        ("TRANSIFEX_API_TOKEN", L, N, false),
        ("USERFLOW_TOKEN", S, E, false),
        ("ansible_sudo_pass", "", R, false),
        ("deploy_event_token", "", N, false),
        ("slack_token", "", N, false),
        ("ABDM_CLIENT_ID", S, N, false),
        ("ABDM_CLIENT_SECRET", S, N, false),
        ("FCM_CREDS", S, N, false),
        ("GTM_ID", S, E, false),
        ("EPIC_PRIVATE_KEY", S, E, false),
        ("EPIC_CLIENT_ID", S, E, false),
        ("CONNECTID_SECRET_KEY", S, E, false),
        ("CONNECTID_CLIENT_ID", S, E, false),
        ("CONNECTID_CREDENTIALS_CLIENT_ID", S, E, false),
        ("CONNECTID_CREDENTIALS_SECRET_KEY", S, E, false),
        ("AI_CHATBOT_ID", S, N, false),
        ("AI_CHATBOT_TOKEN", S, N, false),
        ("ORANGE_CAMEROON_X_AUTH_TOKEN", S, N, false),
        ("ORANGE_CAMEROON_CHANNEL_MSISDN", S, N, false),
        ("ORANGE_CAMEROON_CHANNEL_PIN", S, N, false),
    ]
};

/// Each known secret's Ansible variable and the expression that reads it from the vault
/// (`"{{ localsettings_private.X | default(None) }}"`); a secret read from a top-level vault key
/// of its own name without a default (`x: "{{ x }}"`) is left out.
pub fn secret_variables() -> Vec<(String, String)> {
    SECRETS
        .iter()
        .filter_map(|(name, section, default, lower)| {
            let mut expr = if section.is_empty() {
                (*name).to_owned()
            } else {
                format!("{section}.{name}")
            };
            match default {
                SecretDefault::None => expr.push_str(" | default(None)"),
                SecretDefault::Empty => expr.push_str(" | default('')"),
                SecretDefault::EmptyOverFalsy => expr.push_str(" | default('', true)"),
                SecretDefault::Required => {}
            }
            let var = if *lower {
                name.to_lowercase()
            } else {
                (*name).to_owned()
            };
            (expr != *name).then(|| (var, format!("{{{{ {expr} }}}}")))
        })
        .collect()
}

fn to_json(v: &Value) -> J {
    serde_json::to_value(v).unwrap_or(J::Null)
}

/// `dev_users`: the `present` and `absent` users of every `_users/<name>.yml` meta.yml names.
///
/// # Errors
/// A users file missing or not readable ([`crate::ErrorKind::Config`]).
fn dev_users(env: &Environment) -> Result<J> {
    let (mut present, mut absent) = (Vec::new(), Vec::new());
    let dir = env.dir.parent().unwrap_or(Path::new(".")).join("_users");
    for name in &env.meta.users {
        let path = dir.join(format!("{name}.yml"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::config(format!("`{}` (named by meta.yml's users) cannot be read: {e}", path.display()))
                .with_hint("commcare-cloud reads every users file meta.yml names; add it or take the name out of `users`")
        })?;
        let doc = yaml::load(&text, &path)?;
        let users = doc.get("dev_users");
        for (key, out) in [("present", &mut present), ("absent", &mut absent)] {
            if let Some(Value::Sequence(s)) = users.and_then(|u| u.get(key)) {
                out.extend(s.iter().map(to_json));
            }
        }
    }
    Ok(json!({ "present": present, "absent": absent }))
}

/// `authorized_keys_dir`: the environments directory's `_authorized_keys/`, as a real path.
fn authorized_keys_dir(env: &Environment) -> String {
    let parent = env.dir.parent().unwrap_or(Path::new("."));
    let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    let dir = parent.join("_authorized_keys");
    format!("{}/", std::fs::canonicalize(&dir).unwrap_or(dir).display())
}

/// The keys of a section of app-processes.yml (`a,b`, a group of one host, `None`) as hosts,
/// each with the value of its key.
fn translate_hosts(env: &Environment, section: Option<&J>) -> Map<String, J> {
    let mut out = Map::new();
    for (key, value) in section.and_then(J::as_object).into_iter().flatten() {
        for item in key.split(',') {
            let host = match crate::app_processes::translate_item(&env.inventory, item) {
                Ok(Some(h)) => h.to_owned(),
                Ok(None) => "None".to_owned(),
                Err(_) => item.to_owned(),
            };
            out.insert(host, value.clone());
        }
    }
    out
}

/// `options` (an object, or null for none) with `defaults` filled in where not given; the
/// `optional` keys appear only when given a value.
fn with_defaults(options: &J, defaults: &J, optional: &[&str]) -> J {
    let mut out = defaults.as_object().cloned().unwrap_or_default();
    for (k, v) in options.as_object().into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    for k in optional {
        if out.get(*k).is_some_and(J::is_null) {
            out.remove(*k);
        }
    }
    J::Object(out)
}

/// `app_processes_config`: app-processes.yml over commcare-cloud's defaults with every setting
/// (unset ones null, lists and maps empty), host keys translated to hosts, every celery and
/// pillow option filled in, and deprecated pillows left out.
///
/// # Errors
/// The file cannot be read or parsed.
fn app_processes_config(env: &Environment) -> Result<J> {
    let defaults_path = Path::new("environmental-defaults/app-processes.yml");
    let mut merged = match to_json(&yaml::load(crate::app_processes::DEFAULTS, defaults_path)?) {
        J::Object(m) => m,
        _ => Map::new(),
    };
    let path = env.dir.join("app-processes.yml");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let J::Object(m) = to_json(&yaml::load(&text, &path)?)
    {
        merged.extend(m);
    }
    let mut out = Map::new();
    for key in [
        "django_bind",
        "django_port",
        "flower_port",
        "flower_max_tasks",
        "gunicorn_workers_factor",
        "gunicorn_workers_static_factor",
        "gunicorn_max_requests",
        "gunicorn_graceful_timeout",
        "formplayer_memory",
        "formplayer_maxmetaspacesize",
        "formplayer_g1heapregionsize",
        "http_proxy",
        "django_command_prefix",
        "celery_command_prefix",
        "formplayer_command_args",
        "additional_no_proxy_hosts",
    ] {
        out.insert(key.to_owned(), merged.get(key).cloned().unwrap_or(J::Null));
    }
    let or_empty = |key: &str, empty: J| {
        merged
            .get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(empty)
    };
    out.insert(
        "service_blacklist".into(),
        or_empty("service_blacklist", json!([])),
    );
    out.insert("webworkers".into(), or_empty("webworkers", json!({})));
    out.insert(
        "celery_heartbeat_thresholds".into(),
        or_empty("celery_heartbeat_thresholds", json!({})),
    );
    let mut commands = translate_hosts(env, merged.get("management_commands"));
    for v in commands.values_mut().filter(|v| v.is_null()) {
        *v = json!({});
    }
    out.insert("management_commands".into(), J::Object(commands));

    let celery_defaults = json!({"concurrency": 1, "pooling": "prefork", "max_tasks_per_child": null, "num_workers": 1, "prefetch_multiplier": 4, "env_vars": {}});
    let mut celery = translate_hosts(env, merged.get("celery_processes"));
    for queues in celery.values_mut() {
        let filled: Map<String, J> = queues
            .as_object()
            .into_iter()
            .flatten()
            .map(|(q, o)| (q.clone(), with_defaults(o, &celery_defaults, &[])))
            .collect();
        *queues = J::Object(filled);
    }
    out.insert("celery_processes".into(), J::Object(celery));

    let pillow_defaults = json!({"start_process": 0, "num_processes": 1, "gevent_workers": 0, "dedicated_migration_process": false, "env_vars": {}, "process": {}});
    let optional = ["total_processes", "processor_chunk_size", "exclude_ucrs"];
    let mut pillows = translate_hosts(env, merged.get("pillows"));
    for names in pillows.values_mut() {
        let filled: Map<String, J> = names
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(p, _)| !crate::app_processes::DEPRECATED_PILLOWS.contains(&p.as_str()))
            .map(|(p, o)| (p.clone(), with_defaults(o, &pillow_defaults, &optional)))
            .collect();
        *names = J::Object(filled);
    }
    out.insert("pillows".into(), J::Object(pillows));
    Ok(J::Object(out))
}

/// proxy.yml's variables: every setting commcare-cloud knows (unset ones null, lists empty,
/// its defaults), `nginx_worker_rlimit_nofile` `{{ nofile_limit }}` when not set.
fn proxy_variables(env: &Environment) -> Map<String, J> {
    let given = |k: &str| env.proxy.get(k).map(to_json).filter(|v| !v.is_null());
    let mut out = Map::new();
    for (key, default) in [
        ("SITE_HOST", J::Null),
        ("NO_WWW_SITE_HOST", J::Null),
        ("J2ME_SITE_HOST", J::Null),
        ("nginx_combined_cert_value", J::Null),
        ("nginx_key_value", J::Null),
        ("nginx_hsts_max_age", J::Null),
        ("nginx_max_worker_connection", json!(512)),
        ("nginx_worker_rlimit_nofile", json!("{{ nofile_limit }}")),
        ("fake_ssl_cert", json!(false)),
        ("letsencrypt_cchq_ssl", json!(false)),
        ("primary_ssl_env", J::Null),
        ("trusted_proxies", json!([])),
        ("special_sites", json!([])),
        ("extra_sites", json!([])),
        ("nginx_block_ips", json!([])),
    ] {
        out.insert(key.to_owned(), given(key).unwrap_or(default));
    }
    for key in ["nginx_ssl_protocols", "nginx_ssl_ciphers", "tableau_server"] {
        if let Some(v) = given(key) {
            out.insert(key.to_owned(), v);
        }
    }
    out
}

/// The defaults of commcare-cloud's `postgresql_base` and `pgbouncer` roles (JSON), for the
/// variables `postgres_override` and `pgbouncer_override` may set: one set to its default is not
/// passed (commcare-cloud's `get_defaults_jsonobject` leaves it out).
const OVERRIDE_DEFAULTS: &[(&str, &str)] = &[
    ("postgresql_version", r#""14""#),
    ("postgresql_cluster_name", r#""main""#),
    ("postgresql_port", r#"5432"#),
    ("postgresql_ssl_enabled", r#"false"#),
    ("postgresql_user_home", r#""/var/lib/postgresql""#),
    (
        "postgresql_bin_path",
        r#""/usr/lib/postgresql/{{ postgresql_version }}/bin""#,
    ),
    (
        "postgresql_dir_path",
        r#""{{ encrypted_root }}/postgresql""#,
    ),
    ("postgresql_process_path", r#""/var/run/postgresql""#),
    (
        "postgresql_backup_dir",
        r#""{{ encrypted_root }}/backups/postgresql""#,
    ),
    (
        "postgresql_data_dir",
        r#""{{ postgresql_dir_path }}/{{ postgresql_version }}/{{ postgresql_cluster_name }}""#,
    ),
    (
        "postgresql_config_home",
        r#""/etc/postgresql/{{ postgresql_version }}/{{ postgresql_cluster_name }}""#,
    ),
    (
        "postgresql_pid_file",
        r#""{{ postgresql_process_path }}/{{ postgresql_version }}-{{ postgresql_cluster_name }}.pid""#,
    ),
    (
        "postgres_install_dir",
        r#""/usr/lib/postgresql/{{ postgresql_version }}""#,
    ),
    (
        "postgresql_log_directory",
        r#""{{ postgresql_data_dir }}/pg_log""#,
    ),
    (
        "postgresql_recovery_conf",
        r#""{{ postgresql_data_dir }}/recovery.conf""#,
    ),
    ("postgresql_num_logs_to_keep", r#"20"#),
    ("postgresql_wal_level", r#""hot_standby""#),
    ("pgstandby_wal_keep_segments", r#"8"#),
    ("postgresql_wal_keep_segments", r#"8"#),
    (
        "postgresql_wal_keep_size",
        r#""{% if postgresql_version is version('13', '>=') %} 128MB  {% endif %}""#,
    ),
    (
        "pgstandby_wal_keep_size",
        r#""{% if postgresql_version is version('13', '>=') %} 128MB {% endif %}""#,
    ),
    ("postgresql_archive_timeout", r#"300"#),
    (
        "postgresql_archive_path",
        r#""{{ postgresql_dir_path }}/wal_archive""#,
    ),
    (
        "postgresql_archive_command",
        r#""cp %p {{ postgresql_dir_path }}/wal_archive/%f""#,
    ),
    ("postgresql_enable_archive", r#"false"#),
    ("disable_archive_cleanup_cron", r#"false"#),
    ("postgresql_vacuum_cost_limit", r#"null"#),
    ("postgresql_autovacuum_multixact_freeze_max_age", r#"null"#),
    ("postgresql_autovacuum_max_workers", r#"null"#),
    ("postgresql_autovacuum_analyze_scale_factor", r#"null"#),
    ("postgresql_autovacuum_vacuum_scale_factor", r#"null"#),
    ("postgresql_idle_in_transaction_session_timeout", r#""""#),
    ("postgresql_custom_settings", r#"[]"#),
    (
        "postgresql_systemd_config_dir",
        r#""/etc/systemd/system/postgresql@.service.d""#,
    ),
    (
        "allow_dump_from_pgstandby",
        r#""{{ postgres_users.get('netvault') != None }}""#,
    ),
    ("postgresql_max_connections", r#"20"#),
    ("postgresql_work_mem", r#""8MB""#),
    (
        "postgresql_shared_buffers",
        r#""{{ (ansible_memtotal_mb/1024*0.25)|int|abs }}GB""#,
    ),
    ("postgresql_max_stack_depth", r#""2MB""#),
    ("postgresql_effective_cache_size", r#""128MB""#),
    ("postgresql_max_standby_delay", r#""""#),
    ("postgresql_maintenance_work_mem", r#""64MB""#),
    ("postgresql_checkpoint_completion_target", r#""0.5""#),
    ("postgresql_wal_buffers", r#""-1""#),
    ("postgresql_default_statistics_target", r#""100""#),
    ("postgresql_min_wal_size", r#"null"#),
    ("postgresql_max_wal_size", r#""256MB""#),
    ("postgresql_slow_log_threshold", r#"300"#),
    ("postgresql_random_page_cost", r#"4.0"#),
    ("postgresql_max_worker_processes", r#"null"#),
    ("postgresql_max_parallel_workers_per_gather", r#"null"#),
    ("postgresql_effective_io_concurrency", r#"null"#),
    ("postgresql_max_locks_per_transaction", r#"null"#),
    (
        "postgresql_apt_repo",
        r#""deb http://apt.postgresql.org/pub/repos/apt/ {{ ansible_lsb.codename}}-pgdg main""#,
    ),
    (
        "postgresql_apt_key_url",
        r#""https://www.postgresql.org/media/keys/ACCC4CF8.asc""#,
    ),
    (
        "postgresql_binary",
        r#""postgresql-{{ postgresql_version }}""#,
    ),
    (
        "postgresql_shared_preload_libraries",
        r#"["pg_stat_statements"]"#,
    ),
    ("postgresql_hba_entries", r#"[]"#),
    ("pgbouncer_port", r#"6432"#),
    (
        "pgbouncer_pid_file",
        r#""/var/run/postgresql/pgbouncer-{{ item }}.pid""#,
    ),
    ("pgbouncer_config_home", r#""/etc/pgbouncer""#),
    (
        "pgbouncer_ini",
        r#""{{ pgbouncer_config_home }}/pgbouncer-{{ item }}.ini""#,
    ),
    (
        "pgbouncer_users",
        r#""{{ pgbouncer_config_home }}/userlist.txt""#,
    ),
    (
        "pgbouncer_socket_dir",
        r#""/var/run/postgresql/pgbouncer-{{ item }}""#,
    ),
    (
        "pgbouncer_log_file",
        r#""/var/log/postgresql/pgbouncer-{{ item }}.log""#,
    ),
    ("pgbouncer_ulimit_fd", r#"65536"#),
    ("pgbouncer_max_connections", r#"100"#),
    ("pgbouncer_default_pool", r#"15"#),
    ("pgbouncer_reserve_pool", r#"4"#),
    ("pgbouncer_pool_timeout", r#"2"#),
    ("pgbouncer_pool_mode", r#""session""#),
    ("pgbouncer_server_lifetime", r#"3600"#),
    ("pgbouncer_server_idle_timeout", r#"600"#),
    ("pgbouncer_kernel_settings", r#"{}"#),
    ("pgbouncer_processes", r#"1"#),
    ("pgbouncer_current_processes", r#"[0]"#),
    ("pgbouncer_min_version", r#""1.13""#),
];

/// postgresql.yml's variables as commcare-cloud generates them: cchq's
/// [`crate::postgresql::PostgresqlConfig::generated_variables`], with what commcare-cloud's
/// `to_generated_variables` does differently: `host_settings` keyed as written (it translates
/// the hosts only to find the databases' ports), no user or password for a `proxy_standby`
/// without a host (it is not among the databases that get the default ones), and no override
/// set to its role's default.
///
/// # Errors
/// postgresql.yml's generated variables failing.
fn postgresql_variables(
    env: &Environment,
    pg: &crate::postgresql::PostgresqlConfig,
) -> Result<Map<String, J>> {
    let mut vars = pg.generated_variables(&env.inventory, &env.dir.join("postgresql.yml"))?;
    let mut host_settings = Map::new();
    if let Some(Value::Mapping(given)) = env.postgresql.get("host_settings") {
        for (host, s) in given {
            let port = s
                .get("port")
                .map(to_json)
                .filter(|p| !p.is_null())
                .unwrap_or(json!(crate::postgresql::DEFAULT_PORT));
            host_settings.insert(
                yaml::scalar_to_string(host).unwrap_or_default(),
                json!({ "port": port }),
            );
        }
    }
    vars.insert("host_settings".into(), J::Object(host_settings));
    if let Some(standby) = vars
        .get_mut("postgresql_dbs")
        .and_then(|d| d.get_mut("form_processing"))
        .and_then(|f| f.get_mut("proxy_standby"))
        && standby.get("host").is_none_or(J::is_null)
        && let Some(o) = standby.as_object_mut()
    {
        o.insert("user".into(), J::Null);
        o.insert("password".into(), J::Null);
    }
    for (key, default) in OVERRIDE_DEFAULTS {
        if vars
            .get(*key)
            .is_some_and(|v| serde_json::from_str::<J>(default).is_ok_and(|d| &d == v))
        {
            vars.remove(*key);
        }
    }
    Ok(vars)
}

/// Every generated variable, by name (see the module's documentation).
///
/// # Errors
/// A users file meta.yml names cannot be read; app-processes.yml or postgresql.yml failing.
pub fn variables(env: &Environment) -> Result<Map<String, J>> {
    let bare = env.meta.bare_non_cchq_environment;
    let mut m = Map::new();
    m.insert("deploy_env".into(), env.meta.deploy_env.clone().into());
    m.insert(
        "env_monitoring_id".into(),
        env.meta.env_monitoring_id.clone().into(),
    );
    m.insert("dev_users".into(), dev_users(env)?);
    m.insert(
        "authorized_keys_dir".into(),
        authorized_keys_dir(env).into(),
    );
    m.insert(
        "known_hosts_file".into(),
        crate::daily::known_hosts::path(env)
            .display()
            .to_string()
            .into(),
    );
    m.insert(
        "env_files_dir".into(),
        env.dir.join("files").display().to_string().into(),
    );
    m.insert(
        "commcarehq_repository".into(),
        if bare {
            json!({})
        } else {
            env.fab_settings.code_repo.clone().into()
        },
    );
    m.insert(
        "ignore_kafka_checkpoint_warning".into(),
        env.fab_settings
            .ignore_kafka_checkpoint_warning
            .unwrap_or(false)
            .into(),
    );
    m.insert(
        "shared_dir_for_staticfiles".into(),
        env.fab_settings.shared_dir_for_staticfiles.clone().into(),
    );
    m.insert(
        "ES_SETTINGS".into(),
        if bare {
            json!({})
        } else {
            settings_generated::es_settings(env)
        },
    );
    m.insert(
        "deploy_keys".into(),
        serde_json::to_value(&env.meta.deploy_keys).unwrap_or_default(),
    );
    if !bare {
        m.insert("app_processes_config".into(), app_processes_config(env)?);
        m.insert(
            "celery_queues".into(),
            settings_generated::CELERY_PROCESSES
                .iter()
                .map(|(name, _, _)| J::from(*name))
                .collect::<Vec<_>>()
                .into(),
        );
        for (k, v) in settings_generated::values(env) {
            if matches!(
                k.as_str(),
                "CELERY_FLOWER_URL" | "CELERY_HEARTBEAT_THRESHOLDS"
            ) {
                m.insert(k, v);
            }
        }
        if let Some(pg) = &env.postgresql_config {
            m.extend(postgresql_variables(env, pg)?);
        }
        m.extend(proxy_variables(env));
    }
    for (k, v) in settings_generated::values(env) {
        if k.ends_with("_db_name") {
            m.insert(k, v);
        }
    }
    let keystore = env.dir.join("DimagiKeyStore.vault");
    if keystore.exists() {
        m.insert(
            "keystore_file".into(),
            keystore.display().to_string().into(),
        );
    }
    if !matches!(env.vault, Vault::Aws(_)) {
        for (k, v) in secret_variables() {
            m.insert(k, v.into());
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// commcare-cloud's own generated variables for a fixture environment
    /// (`tests/fixtures/golden/<env>/generated_vars.json`, by `tests/golden/regenerate`), with
    /// `$ENVIRONMENTS` for the environments directory.
    fn golden(name: &str) -> Map<String, J> {
        let path = cchq_testsupport::fixtures::golden(name).join("generated_vars.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let envs = std::fs::canonicalize(cchq_testsupport::fixtures::environments()).unwrap();
        let text = text.replace("$ENVIRONMENTS", &envs.display().to_string());
        serde_json::from_str(&text).unwrap()
    }

    fn ours(name: &str) -> Map<String, J> {
        let mut env = crate::fixture_env(name);
        // commcare-cloud's paths are canonical (symbolic links resolved): so are these.
        env.dir = std::fs::canonicalize(&env.dir).unwrap();
        if let Some(kh) = &env.known_hosts {
            env.known_hosts = Some(std::fs::canonicalize(kh).unwrap());
        }
        variables(&env).unwrap()
    }

    /// Where `a` and `b` differ, as `path: upstream != cchq` lines.
    fn leaf_diffs(path: &str, a: &J, b: &J, out: &mut Vec<String>) {
        match (a, b) {
            (J::Object(x), J::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (p, q) = (x.get(k).unwrap_or(&J::Null), y.get(k).unwrap_or(&J::Null));
                    if x.contains_key(k) != y.contains_key(k) {
                        out.push(format!(
                            "{path}.{k}: upstream {:?} != cchq {:?}",
                            x.get(k),
                            y.get(k)
                        ));
                    } else {
                        leaf_diffs(&format!("{path}.{k}"), p, q, out);
                    }
                }
            }
            (J::Array(x), J::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    leaf_diffs(&format!("{path}[{i}]"), p, q, out);
                }
            }
            _ if a != b => out.push(format!("{path}: upstream {a} != cchq {b}")),
            _ => {}
        }
    }

    fn compare(name: &str) {
        let (want, got) = (golden(name), ours(name));
        let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let mut differ = Vec::new();
        for (k, v) in &want {
            if let Some(g) = got.get(k) {
                leaf_diffs(k, v, g, &mut differ);
            }
        }
        assert!(
            missing.is_empty() && extra.is_empty() && differ.is_empty(),
            "{name}: missing {missing:?}, not upstream's {extra:?}, values that differ:\n{}",
            differ.join("\n")
        );
    }

    #[test]
    fn test_env_matches_upstream() {
        compare("test");
    }

    #[test]
    fn development_matches_upstream() {
        compare("development");
    }

    #[test]
    fn prod_sharded_matches_upstream() {
        compare("prod-sharded");
    }

    #[test]
    fn prod_aws_matches_upstream() {
        compare("prod-aws");
    }

    #[test]
    fn upstream_prod_matches_upstream() {
        compare("upstream-prod");
    }

    #[test]
    fn a_few_values() {
        let g = ours("test");
        assert_eq!(g["SECRET_KEY"], "{{ localsettings_private.SECRET_KEY }}");
        assert_eq!(
            g["s3_access_key"],
            "{{ secrets.S3_ACCESS_KEY | default(None) }}"
        );
        assert_eq!(
            g["APPCUES_ID"],
            "{{ localsettings_private.APPCUES_ID | default('', true) }}"
        );
        assert!(
            !g.contains_key("ansible_sudo_pass"),
            "x: {{{{ x }}}} is left out"
        );
        assert_eq!(g["CELERY_FLOWER_URL"], "http://cloud_worker_5:5555");
        assert_eq!(g["nginx_worker_rlimit_nofile"], "{{ nofile_limit }}");
        assert_eq!(
            g["app_processes_config"]["celery_processes"]["cloud_worker_5"]["flower"]["prefetch_multiplier"],
            4
        );
        assert_eq!(
            g["celery_queues"].as_array().unwrap().len(),
            settings_generated::CELERY_PROCESSES.len()
        );
    }
}
