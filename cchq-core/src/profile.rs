//! Profiles: what commcare-cloud hard-codes in its Ansible roles (where the code lives, the www
//! root, the app user), built in as the `commcare` profile and overridable per environment in an
//! optional `cchq.yml`, and the data of `cchq.yml` that other modules interpret: the
//! notifications' settings ([`notify`]) and the deploy's
//! steps ([`steps`]).

pub mod notify;
pub mod steps;

use std::path::Path;

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fab_settings::FabSettings;
use crate::{Value, yaml};

/// The `commcare` profile's settings defaults (commcare-cloud's group_vars and role defaults:
/// `formplayer_port`, ...), the lowest layer of the settings' context.
pub const SETTINGS_DEFAULTS: &str = include_str!("../profiles/commcare/settings-defaults.yml");

/// One value of [`SETTINGS_DEFAULTS`] (for modules below the settings, e.g. a service's port).
pub fn settings_default(key: &str) -> Option<Value> {
    match yaml::load(SETTINGS_DEFAULTS, Path::new("settings-defaults.yml")) {
        Ok(Value::Mapping(m)) => m
            .iter()
            .find(|(k, _)| yaml::scalar_to_string(k).as_deref() == Some(key))
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

/// Where supervisord listens when `cchq.yml` does not say (`[unix_http_server] file` of the
/// Debian/Ubuntu package; `/var/run` is `/run`).
pub const DEFAULT_SUPERVISOR_SOCKET: &str = "/var/run/supervisor.sock";

/// The built-in `commcare` profile's supervisor program commands (handlebars), as commcare-cloud's
/// templates run CommCare HQ (`roles/commcarehq/templates/supervisor_*.conf.j2`; compared word by
/// word with them by `cchq-core/tests/golden_programs.rs`). Celery workers run, as upstream's,
/// through the per-host bash runner (`{{celery_bash_runner}}`,
/// `<www_home>/services/<deploy_env>_celery_bash_runner.sh`, written with the program files by
/// `update-supervisor-confs`: see [`crate::services::supervisor::celery_runner_script`]), which
/// applies `celery_command_prefix`, adds a start time to `--hostname` and turns supervisord's
/// TERM into a warm shutdown. Environments running another app override them in `cchq.yml`.
pub const COMMCARE_PROGRAMS: &[(&str, &str)] = &[
    (
        "django",
        "{{django_command_prefix}}{{python_env}}/bin/gunicorn deployment.gunicorn.commcarehq_wsgi:application \
-c deployment/gunicorn/gunicorn_conf.py -k gevent --workers {{gunicorn_workers}} --max-requests {{gunicorn_max_requests}} \
--max-requests-jitter {{gunicorn_max_requests_jitter}} --graceful-timeout {{gunicorn_graceful_timeout}} --bind {{django_bind}}:{{django_port}} \
--log-file {{log_dir}}/{{project}}.gunicorn.log --log-level debug --statsd-host localhost:8125 --pid {{www_home}}/gunicorn.pid",
    ),
    (
        "celery",
        "/bin/bash {{celery_bash_runner}} --events --loglevel=INFO --without-gossip --queues={{queues}} \
--hostname={{celery_hostname}} \
{{#if (eq pooling \"gevent\")}}-P gevent --concurrency={{concurrency}}{{else}}--autoscale={{concurrency}},0 -Ofair\
{{#if max_tasks_per_child}} --max-tasks-per-child={{max_tasks_per_child}}{{/if}}{{/if}} \
--prefetch-multiplier={{prefetch_multiplier}}",
    ),
    (
        "celerybeat",
        "{{python_env}}/bin/celery -A corehq beat --loglevel=INFO",
    ),
    (
        "flower",
        "{{python_env}}/bin/celery -A corehq flower --address=0.0.0.0 --port={{flower_port}}\
{{#if flower_max_tasks}} --max-tasks={{flower_max_tasks}}{{/if}}",
    ),
    (
        "pillowtop",
        "{{python}} {{code_home}}/manage.py run_ptop --pillow-name {{pillow}} --num-processes={{num_processes}} \
--process-number={{process_number}}{{#if dedicated_migration_process}} --dedicated-migration-process{{/if}}\
{{#if processor_chunk_size}} --processor-chunk-size={{processor_chunk_size}}{{/if}}\
{{#if exclude_ucrs}} --exclude-ucrs={{exclude_ucrs}}{{/if}}{{#if gevent_workers}} --gevent-workers={{gevent_workers}}{{/if}}",
    ),
    (
        "formplayer",
        "{{formplayer_java}} {{formplayer_command_args}} -Xms{{formplayer_memory}} -Xmx{{formplayer_memory}} {{extra_formplayer_args}} \
-XX:+UseG1GC -XX:+UseStringDeduplication -XX:+ParallelRefProcEnabled -XX:G1HeapRegionSize={{formplayer_g1heapregionsize}} \
-XX:MaxMetaspaceSize={{formplayer_maxmetaspacesize}} -XX:-OmitStackTraceInFastThrow -Xss1024k \
-jar {{www_home}}/formplayer_build/current/formplayer.jar",
    ),
    (
        "management_command",
        "{{python}} {{code_home}}/manage.py {{command}}",
    ),
];

/// The resolved profile of an environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The profile's name (`commcare`).
    pub name: String,
    /// The www root: releases live in `<www_root>/<env>/releases` (commcare-cloud: `/home/cchq/www`).
    pub www_root: String,
    /// The user the app runs as (`cchq`).
    pub app_user: String,
    /// The code repository deployed.
    pub code_repo: String,
    /// The branch deployed when no revision is given.
    pub default_branch: String,
    /// Where supervisor program files are written (`/etc/supervisor/conf.d`).
    pub supervisor_conf_dir: String,
    /// supervisord's XML-RPC unix socket (`[unix_http_server] file`; `/var/run/supervisor.sock`).
    pub supervisor_socket: String,
    /// The command template of each kind of supervisor program (`django`, `celery`, `celerybeat`,
    /// `flower`, `pillowtop`, `formplayer`, `management_command`).
    pub program_commands: BTreeMap<String, String>,
    /// Deploy notifications (`notify:`), when configured.
    pub notify: Option<notify::Config>,
    /// `rollback_on_failure: true`: a deploy whose new release fails to start switches back to the
    /// previous release and restarts it (`deploy --rollback-on-failure`; off by default).
    pub rollback_on_failure: bool,
    /// The deploy's steps: the profile's (`profiles/<name>/steps.yml`) with `cchq.yml`'s `steps:`
    /// changes applied (see [`crate::deploy::steps`]).
    pub steps: Vec<steps::Step>,
    /// `django:` in `cchq.yml` (the `django` profile): the project's settings module, when
    /// `manage.py` does not name it.
    pub django_settings_module: Option<String>,
    /// Sections of `cchq.yml` this version does not use yet (components, services), kept as
    /// written.
    pub extra: IndexMap<String, Value>,
}

/// `django:` in `cchq.yml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DjangoSection {
    settings_module: Option<String>,
}

/// The `django` profile's program commands (the others are the `commcare` profile's).
pub const DJANGO_PROGRAMS: &[(&str, &str)] = &[(
    "django",
    "{{python_env}}/bin/gunicorn cchq_wsgi:application --workers {{gunicorn_workers}} --max-requests {{gunicorn_max_requests}} \
--max-requests-jitter {{gunicorn_max_requests_jitter}} --graceful-timeout {{gunicorn_graceful_timeout}} --bind {{django_bind}}:{{django_port}}",
)];

/// `cchq.yml` as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profile: Option<String>,
    www_root: Option<String>,
    app_user: Option<String>,
    code_repo: Option<String>,
    default_branch: Option<String>,
    supervisor_conf_dir: Option<String>,
    supervisor_socket: Option<String>,
    programs: Option<BTreeMap<String, String>>,
    components: Option<Value>,
    services: Option<Value>,
    build: Option<Value>,
    steps: Option<Value>,
    django: Option<DjangoSection>,
    notify: Option<notify::Config>,
    rollback_on_failure: Option<bool>,
}

impl Profile {
    /// The built-in `commcare` profile for an environment with these fab settings.
    pub fn commcare(fab: &FabSettings) -> Self {
        Self {
            name: "commcare".to_owned(),
            www_root: format!("{}/www", fab.home.trim_end_matches('/')),
            app_user: fab.sudo_user.clone(),
            code_repo: fab.code_repo.clone(),
            default_branch: fab.default_branch.clone(),
            supervisor_conf_dir: "/etc/supervisor/conf.d".to_owned(),
            supervisor_socket: DEFAULT_SUPERVISOR_SOCKET.to_owned(),
            program_commands: COMMCARE_PROGRAMS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            notify: None,
            rollback_on_failure: false,
            steps: steps::builtin("commcare").unwrap_or_default(),
            django_settings_module: None,
            extra: IndexMap::new(),
        }
    }

    /// The profile of the environment in `dir`: `commcare`, with `cchq.yml` over it.
    pub fn load(dir: &Path, fab: &FabSettings) -> Result<Self> {
        let mut p = Self::commcare(fab);
        let path = dir.join("cchq.yml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let f: ProfileFile =
            yaml::from_str::<Option<ProfileFile>>(&text, &path)?.unwrap_or_default();
        if let Some(name) = f.profile.filter(|n| n != "commcare") {
            if !steps::PROFILES.contains(&name.as_str()) {
                return Err(
                    Error::at(&path, None, None, format!("unknown profile `{name}`")).with_hint(
                        format!("the built-in profiles are {}", steps::PROFILES.join(", ")),
                    ),
                );
            }
            p.steps = steps::builtin(&name)?;
            if name == "django" {
                for (k, v) in DJANGO_PROGRAMS {
                    p.program_commands.insert((*k).to_owned(), (*v).to_owned());
                }
            }
            p.name = name;
        }
        if f.build.is_some() {
            return Err(Error::at(&path, None, None, "`build:` is not a section of cchq.yml")
                .with_hint("a deploy's steps are changed under `steps:` (remove, replace, add, order): see docs/deploy-steps.md"));
        }
        if let Some(v) = f.steps {
            p.steps = steps::apply(std::mem::take(&mut p.steps), v, &path)?;
        }
        if let Some(d) = f.django {
            if p.name != "django" {
                return Err(
                    Error::at(&path, None, None, "`django:` is for the `django` profile")
                        .with_hint("add `profile: django`"),
                );
            }
            if let Some(m) = &d.settings_module
                && (m.is_empty()
                    || !m.split('.').all(|part| {
                        !part.is_empty()
                            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    }))
            {
                return Err(Error::at(
                    &path,
                    None,
                    None,
                    format!("`django.settings_module`: `{m}` is not a Python module path"),
                ));
            }
            p.django_settings_module = d.settings_module;
        }
        if let Some(v) = f.www_root {
            if !v.starts_with('/') {
                return Err(Error::at(
                    &path,
                    None,
                    None,
                    format!("`www_root` must be an absolute path, not `{v}`"),
                ));
            }
            p.www_root = v;
        }
        if let Some(v) = f.app_user {
            p.app_user = v;
        }
        if let Some(v) = f.code_repo {
            p.code_repo = v;
        }
        if let Some(v) = f.default_branch {
            p.default_branch = v;
        }
        if let Some(v) = f.supervisor_conf_dir {
            p.supervisor_conf_dir = v;
        }
        if let Some(v) = f.supervisor_socket {
            if !v.starts_with('/') {
                return Err(Error::at(
                    &path,
                    None,
                    None,
                    format!("`supervisor_socket` must be an absolute path, not `{v}`"),
                ));
            }
            p.supervisor_socket = v;
        }
        for (kind, command) in f.programs.unwrap_or_default() {
            if !p.program_commands.contains_key(&kind) {
                let known: Vec<&str> = COMMCARE_PROGRAMS.iter().map(|(k, _)| *k).collect();
                return Err(Error::at(
                    &path,
                    None,
                    None,
                    format!("unknown program kind `{kind}` under `programs`"),
                )
                .with_hint(format!("known kinds: {}", known.join(", "))));
            }
            p.program_commands.insert(kind, command);
        }
        if let Some(v) = f.rollback_on_failure {
            p.rollback_on_failure = v;
        }
        if let Some(n) = f.notify {
            n.check(&path)?;
            p.notify = Some(n);
        }
        for (k, v) in [("components", f.components), ("services", f.services)] {
            if let Some(v) = v {
                p.extra.insert(k.to_owned(), v);
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fab() -> FabSettings {
        FabSettings {
            sudo_user: "cchq".into(),
            default_branch: "master".into(),
            home: "/home/cchq".into(),
            project: "commcare-hq".into(),
            code_repo: "https://example.invalid/r.git".into(),
            email_enabled: false,
            shared_dir_for_staticfiles: None,
            tag_deploy_commits: false,
            timing_log: None,
            keepalive: None,
            ignore_kafka_checkpoint_warning: None,
            acceptable_maintenance_window: None,
            deploy_event_url: None,
            generate_deploy_diffs: true,
            custom_deploy_details: IndexMap::new(),
        }
    }

    #[test]
    fn rollback_on_failure_is_off_by_default_and_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !Profile::load(dir.path(), &fab())
                .unwrap()
                .rollback_on_failure
        );
        std::fs::write(dir.path().join("cchq.yml"), "rollback_on_failure: true\n").unwrap();
        assert!(
            Profile::load(dir.path(), &fab())
                .unwrap()
                .rollback_on_failure
        );
        std::fs::write(
            dir.path().join("cchq.yml"),
            "rollback_on_failure: sometimes\n",
        )
        .unwrap();
        assert!(Profile::load(dir.path(), &fab()).is_err(), "not a boolean");
        std::fs::write(dir.path().join("cchq.yml"), "rollback_on_failures: true\n").unwrap();
        let err = Profile::load(dir.path(), &fab()).unwrap_err();
        assert!(
            err.message().contains("rollback_on_failures"),
            "unknown keys are refused: {err}"
        );
    }

    #[test]
    fn the_django_profile_its_steps_and_the_steps_section() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::load(dir.path(), &fab()).unwrap();
        assert!(
            p.steps
                .iter()
                .any(|s| s.name.as_str() == "record_deploy_success")
        );
        std::fs::write(
            dir.path().join("cchq.yml"),
            "profile: django\ndjango:\n  settings_module: mysite.settings\nsteps:\n  remove: [check]\n",
        )
        .unwrap();
        let p = Profile::load(dir.path(), &fab()).unwrap();
        assert_eq!(p.name, "django");
        assert_eq!(
            p.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["virtualenv", "collectstatic", "migrate"]
        );
        assert!(p.program_commands["django"].contains("cchq_wsgi:application"));
        assert_eq!(p.django_settings_module.as_deref(), Some("mysite.settings"));
        for (text, says) in [
            ("build:\n  - x\n", "`build:` is not a section"),
            (
                "django:\n  settings_module: a.b\n",
                "for the `django` profile",
            ),
            (
                "profile: django\ndjango:\n  settings_module: 'a; b'\n",
                "not a Python module path",
            ),
            ("profile: rails\n", "unknown profile `rails`"),
            ("steps:\n  remove: [nope]\n", "`steps.remove` names `nope`"),
        ] {
            std::fs::write(dir.path().join("cchq.yml"), text).unwrap();
            let e = Profile::load(dir.path(), &fab()).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }
}
