//! `cchq.Environment`: a loaded environment and the operations on its hosts.
//!
//! Every operation that talks to hosts (`run`, `service`, `deploy`, `rollback`, `update_config`,
//! `django_manage`, ...) has the same shape:
//!
//! 1. plan with the core, holding the GIL (pure and quick), mapping errors to exceptions;
//! 2. build the transport for exactly the hosts concerned (`Environment::transport`);
//! 3. [`drive`] the core's future with an [`Observer`] for `on_event`;
//! 4. close the transport ([`finish_quietly`]), also after Ctrl-C or an error;
//! 5. raise what the callback raised ([`Observer::finish`]), else map the result.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cchq_core::config::{self, UpdateOptions};
use cchq_core::deploy;
use cchq_core::django_manage::Manage;
use cchq_core::environment::{self, environments_root};
use cchq_core::fanout::{self, DEFAULT_FORKS, run_on_hosts};
use cchq_core::inventory::ServerSpec;
use cchq_core::services::{self, Action, Request, RollingOptions};
use cchq_core::transport::DynTransport;
use cchq_core::{Error, RemoteCommand};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::{IntoPyResult, to_pyerr};
use crate::runtime::{Observer, drive, finish_quietly, guard, warn};
use crate::types::{Host, HostResult, ServiceReport};

// The default of `forks` in `run`'s Python signature (a literal, so that it shows in `inspect`).
const _: () = assert!(DEFAULT_FORKS == 256, "update `forks=` in `run`'s signature and the stubs");

/// `str` or a sequence of `str`.
#[derive(FromPyObject)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several (a `str` is never taken for a sequence here: `One` is tried first).
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `become=`: `True` for root, a user name, or `False`/`None` for none.
#[derive(FromPyObject)]
pub enum Become {
    /// `True`/`False`.
    Flag(bool),
    /// A user.
    User(String),
}

/// The environments root: `environments`, else `$CCHQ_ENVIRONMENTS`, else `$COMMCARE_CLOUD_ENVIRONMENTS`.
fn root(py: Python<'_>, environments: Option<PathBuf>) -> PyResult<PathBuf> {
    environments_root(environments.as_deref()).py_err(py)
}

/// The names of the environments under the environments root (`environments`, else
/// `$CCHQ_ENVIRONMENTS`, else `$COMMCARE_CLOUD_ENVIRONMENTS`), sorted.
#[pyfunction]
#[pyo3(signature = (environments=None))]
pub fn list_environments(py: Python<'_>, environments: Option<PathBuf>) -> PyResult<Vec<String>> {
    guard(py, || {
        let root = root(py, environments)?;
        py.detach(|| environment::list_environments(&root)).py_err(py)
    })
}

/// A loaded commcare-cloud environment. Make one with `Environment.load(name)`.
#[pyclass(module = "cchq._cchq", name = "Environment", frozen)]
#[derive(Debug)]
pub struct PyEnvironment {
    env: Arc<cchq_core::Environment>,
}

impl PyEnvironment {
    /// Selects hosts with an Ansible pattern, issuing its warnings as `CchqWarning`.
    fn select(&self, py: Python<'_>, pattern: &str) -> PyResult<Vec<String>> {
        let sel = self.env.inventory.select(pattern).map_err(|e| e.context(format!("environment `{}`", self.env.name))).py_err(py)?;
        for w in &sel.warnings {
            warn(py, w)?;
        }
        Ok(sel.hosts)
    }

    /// The transport for `hosts`.
    fn transport(&self, py: Python<'_>, hosts: &[String]) -> PyResult<DynTransport> {
        let env = Arc::clone(&self.env);
        py.detach(|| env.transport(Some(hosts))).py_err(py)
    }
}

#[pymethods]
impl PyEnvironment {
    /// Loads environment `name` from the environments root: `environments`, else
    /// `$CCHQ_ENVIRONMENTS`, else `$COMMCARE_CLOUD_ENVIRONMENTS`.
    #[staticmethod]
    #[pyo3(signature = (name, environments=None))]
    fn load(py: Python<'_>, name: &str, environments: Option<PathBuf>) -> PyResult<Self> {
        guard(py, || {
            let root = root(py, environments)?;
            let env = py.detach(|| cchq_core::Environment::load(&root, name)).py_err(py)?;
            Ok(Self { env: Arc::new(env) })
        })
    }

    /// The environment's name (its directory name).
    #[getter]
    fn name(&self) -> &str {
        &self.env.name
    }

    /// `deploy_env` from `meta.yml`.
    #[getter]
    fn deploy_env(&self) -> &str {
        &self.env.meta.deploy_env
    }

    /// The environment's directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.env.dir.clone()
    }

    /// The hosts `pattern` selects (an Ansible `--limit` pattern), in inventory order.
    #[pyo3(signature = (pattern="all"))]
    fn hosts(&self, py: Python<'_>, pattern: &str) -> PyResult<Vec<Host>> {
        guard(py, || {
            Ok(self
                .select(py, pattern)?
                .into_iter()
                .map(|h| {
                    let target = self.env.ssh_target(&h);
                    Host {
                        groups: self.env.inventory.groups_of(&h).into_iter().map(str::to_owned).collect(),
                        local: self.env.is_local(&h),
                        name: h,
                        address: target.address,
                        port: target.port,
                        user: target.user,
                    }
                })
                .collect())
        })
    }

    /// The addresses of a server spec (`webworkers`, `webworkers[0]`, `user@proxy`, `-`), as
    /// `cchq <env> lookup` prints them: every host of a group without an index, `user@` kept.
    fn lookup(&self, py: Python<'_>, server: &str) -> PyResult<Vec<String>> {
        guard(py, || {
            let spec = ServerSpec::parse(server).py_err(py)?;
            for w in &spec.warnings {
                warn(py, w)?;
            }
            let hosts = self.env.inventory.resolve_all(&spec).py_err(py)?;
            Ok(hosts
                .iter()
                .map(|h| {
                    let address = self.env.ssh_target(h).address;
                    match &spec.user {
                        Some(u) => format!("{u}@{address}"),
                        None => address,
                    }
                })
                .collect())
        })
    }

    /// Runs `command` on every host `pattern` selects, at most `forks` at once; one result per
    /// host, in host order. A failing command or an unreachable host is a result, not an
    /// exception (`HostResult.check()` raises for it).
    ///
    /// `command`: a shell snippet (`str`, run with `/bin/sh -c`) or an argv (list of `str`).
    /// `become`: `True` for root, or a user name. `timeout`: seconds per host.
    #[pyo3(signature = (pattern, command, r#become=None, *, timeout=None, forks=256, on_event=None))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        pattern: &str,
        command: OneOrMany,
        r#become: Option<Become>,
        timeout: Option<f64>,
        forks: usize,
        on_event: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<HostResult>> {
        guard(py, || {
            let mut observer = Observer::new(on_event, "Environment.run")?;
            let hosts = self.select(py, pattern)?;
            let mut cmd = match command {
                OneOrMany::One(script) if script.trim().is_empty() => {
                    return Err(to_pyerr(
                        py,
                        &Error::usage("the command is empty").with_hint("give the shell command to run, e.g. 'uptime'"),
                    ));
                }
                OneOrMany::One(script) => RemoteCommand::shell(script),
                OneOrMany::Many(argv) if argv.is_empty() => {
                    return Err(to_pyerr(py, &Error::usage("the command is empty").with_hint("give the program and its arguments")));
                }
                OneOrMany::Many(argv) => RemoteCommand::from_argv(argv),
            };
            match r#become {
                Some(Become::Flag(true)) => cmd = cmd.become_user("root"),
                Some(Become::User(u)) => cmd = cmd.become_user(u),
                Some(Become::Flag(false)) | None => {}
            }
            if let Some(secs) = timeout {
                let t = Duration::try_from_secs_f64(secs)
                    .map_err(|_| to_pyerr(py, &Error::usage(format!("timeout `{secs}` is not a number of seconds"))))?;
                cmd = cmd.timeout(t);
            }
            let cmd = Arc::new(cmd);
            let transport = self.transport(py, &hosts)?;
            let sink = observer.sink();
            let outcome = drive(py, &mut observer, run_on_hosts(transport.as_ref(), &hosts, &cmd, forks, "run", &sink));
            finish_quietly(py, transport.close());
            let results = outcome?;
            observer.finish(py)?;
            Ok(results.into_iter().map(|r| HostResult::new(r, Arc::clone(&cmd))).collect())
        })
    }

    /// `start`, `stop`, `restart` or `status` of services (`commcare` is every app service) on
    /// their hosts; web workers restart in rolling, health-checked batches.
    ///
    /// `only`: programs, `"name"` or `"name:N"`, comma separated or as a list. `limit`: a host pattern.
    /// Raises `PatternError` when no host is left to act on.
    #[pyo3(signature = (names, action, only=None, limit=None, *, on_event=None))]
    fn service<'py>(
        &self,
        py: Python<'py>,
        names: OneOrMany,
        action: &str,
        only: Option<OneOrMany>,
        limit: Option<String>,
        on_event: Option<Bound<'py, PyAny>>,
    ) -> PyResult<ServiceReport> {
        guard(py, || {
            let mut observer = Observer::new(on_event, "Environment.service")?;
            let only = match only {
                None => Vec::new(),
                Some(o) => services::parse_only(&o.into_vec().join(",")).py_err(py)?,
            };
            let action = Action::parse(action).py_err(py)?;
            let req = Request { services: names.into_vec(), only, limit };
            let (plans, warnings) = services::plan(&self.env, &req, action).py_err(py)?;
            for w in &warnings {
                warn(py, w)?;
            }
            if plans.is_empty() {
                return Err(to_pyerr(
                    py,
                    &Error::pattern(format!("no hosts to act on for {}", req.services.join(", ")))
                        .with_hint("check `limit` and the services' groups (`cchq <env> service help`)"),
                ));
            }
            let hosts: Vec<String> = plans.iter().map(|p| p.host.clone()).collect();
            let transport = self.transport(py, &hosts)?;
            let sink = observer.sink();
            let rolling = RollingOptions::default();
            let outcome = drive(py, &mut observer, services::execute(transport.as_ref(), &plans, action, &rolling, &sink));
            finish_quietly(py, transport.close());
            let report = outcome?;
            observer.finish(py)?;
            ServiceReport::new(py, report, warnings)
        })
    }

    /// Deploys a component (`commcare` or `formplayer`): builds a release on every host, switches
    /// all at once, restarts, records. Returns a dict: `release`, `commit`, `previous_commit`,
    /// `hosts`, `switched`, `timings`, `duration_ms`. Raises `DeployFailedError` (resume with
    /// `resume=<release>`) or `LockHeldError`. `on_event` receives the same events the CLI renders.
    /// An encrypted vault is decrypted with `ANSIBLE_VAULT_PASSWORD` or `CCHQ_VAULT_PASSWORD_FILE`
    /// (settings are rendered for any host that has none); without either it raises `VaultError`
    /// before anything starts.
    /// `rollback_on_failure`: when the new release fails to start, switch back to the previous
    /// one and restart it (the deploy still raises `DeployFailedError`, naming both); `None`:
    /// `rollback_on_failure` in the environment's cchq.yml decides.
    #[pyo3(signature = (components=None, rev=None, resume=None, private=false, limit=None, update_config=false, *, keep=3, rollback_on_failure=None, on_event=None))]
    #[allow(clippy::too_many_arguments)]
    fn deploy<'py>(
        &self,
        py: Python<'py>,
        components: Option<OneOrMany>,
        rev: Option<String>,
        resume: Option<String>,
        private: bool,
        limit: Option<String>,
        update_config: bool,
        keep: usize,
        rollback_on_failure: Option<bool>,
        on_event: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let components = components.map_or_else(|| vec!["commcare".to_owned()], OneOrMany::into_vec);
            let mut last = None;
            // As the CLI: settings are rendered for any host that has none (a first deploy, a new
            // host) and with `update_config`, so an encrypted vault is opened before anything
            // starts; without a password this raises `VaultError`.
            let vault = match &self.env.vault {
                v if v.needs_opening() => {
                    let env = Arc::clone(&self.env);
                    py.detach(|| env.vault_without_prompt()).py_err(py)?
                }
                _ => None,
            };
            for component in components {
                let mut opts = self.deploy_options(component, rev.clone(), resume.clone(), private, limit.clone(), update_config, keep);
                if vault.is_some() {
                    opts.vault.clone_from(&vault);
                }
                opts.rollback_on_failure = rollback_on_failure;
                last = Some(self.run_deploy(py, opts, None, on_event.clone())?);
            }
            last.ok_or_else(|| to_pyerr(py, &Error::usage("no component to deploy")))
        })
    }

    /// Switches back to an earlier complete release (`to`, else the newest one older than
    /// current) and restarts. Returns the same dict as `deploy`.
    #[pyo3(signature = (to=None, component="commcare", *, on_event=None))]
    fn rollback<'py>(
        &self,
        py: Python<'py>,
        to: Option<String>,
        component: &str,
        on_event: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let mut opts = self.deploy_options(component.to_owned(), None, None, false, None, false, 3);
            // It renders settings only for a host that has none (and then stops without the
            // vault): an encrypted vault is opened when the environment gives its password, AWS
            // secrets are fetched.
            let given = std::env::var_os(cchq_core::vault::PASSWORD_ENV).is_some_and(|v| !v.is_empty())
                || std::env::var_os(cchq_core::vault::PASSWORD_FILE_ENV).is_some();
            if (given && matches!(self.env.vault, environment::Vault::Encrypted(_))) || matches!(self.env.vault, environment::Vault::Aws(_))
            {
                let env = Arc::clone(&self.env);
                opts.vault = py.detach(|| env.vault_without_prompt()).py_err(py)?;
            }
            self.run_deploy(py, opts, Some(to), on_event)
        })
    }

    /// The releases on every host of the component: a list of dicts with `host`, `name`,
    /// `commit`, `complete`, `current`, `keep_until`.
    #[pyo3(signature = (component="commcare"))]
    fn list_releases<'py>(&self, py: Python<'py>, component: &str) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let opts = self.deploy_options(component.to_owned(), None, None, false, None, false, 3);
            let hosts = deploy::component_hosts(&self.env, &opts).py_err(py)?;
            let transport = self.transport(py, &hosts)?;
            let mut observer = Observer::new(None, "Environment.list_releases")?;
            let outcome = drive(py, &mut observer, deploy::releases::list(&self.env, transport.as_ref(), &hosts, component));
            finish_quietly(py, transport.close());
            let rels = outcome?.py_err(py)?;
            to_python(py, &rels)
        })
    }

    /// Deletes old releases, keeping `keep` (never current or dated ones). Returns
    /// `{host: [removed release, ...]}`.
    #[pyo3(signature = (keep=3, component="commcare"))]
    fn clean_releases<'py>(&self, py: Python<'py>, keep: usize, component: &str) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let opts = self.deploy_options(component.to_owned(), None, None, false, None, false, keep);
            let hosts = deploy::component_hosts(&self.env, &opts).py_err(py)?;
            let transport = self.transport(py, &hosts)?;
            let mut observer = Observer::new(None, "Environment.clean_releases")?;
            let outcome = drive(py, &mut observer, deploy::releases::clean(&self.env, transport.as_ref(), &hosts, component, keep, &[]));
            finish_quietly(py, transport.close());
            let removed: std::collections::BTreeMap<String, Vec<String>> = outcome?.py_err(py)?.into_iter().collect();
            to_python(py, &removed)
        })
    }

    /// Renders the settings files (`localsettings.py`, `application.properties`) of every host
    /// that gets them (within `limit`, a host pattern) and compares them with the hosts' files.
    ///
    /// With `check=True` (the default) nothing is written. With `check=False` the changed files
    /// are written (atomically, as the app user, keeping their mode) with the record of what was
    /// applied, unless the drift guard stops it: settings applied from an environment commit this
    /// checkout does not contain, or edited by hand, raise `ConfigError` unless `force=True`.
    ///
    /// Returns a dict: `check`, `changed_files`, `forced`, `ok` (every host written to), `hosts`:
    /// per host `host`, `files` (`path`, `component`, `changed`, `new`, `diff`, `note`), `drift`
    /// (`host`, `kind`, `message`, `blocking`), `written`, `recorded`, `error`, `unreachable`.
    /// Diffs and messages have every secret masked, as `cchq <env> update-config` shows them. An
    /// encrypted vault is decrypted with `ANSIBLE_VAULT_PASSWORD` or `CCHQ_VAULT_PASSWORD_FILE`.
    /// Running services keep the old settings until restarted (`service("commcare", "restart")`).
    #[pyo3(signature = (limit=None, check=true, *, force=false, on_event=None))]
    fn update_config<'py>(
        &self,
        py: Python<'py>,
        limit: Option<String>,
        check: bool,
        force: bool,
        on_event: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let mut observer = Observer::new(on_event, "Environment.update_config")?;
            let mut warnings = Vec::new();
            let hosts = config::update_hosts(&self.env, limit.as_deref(), &mut |w| warnings.push(w.to_owned()));
            for w in &warnings {
                warn(py, w)?;
            }
            let hosts = hosts.py_err(py)?;
            let env = Arc::clone(&self.env);
            let vault = py.detach(|| env.vault_without_prompt()).py_err(py)?;
            let transport = self.transport(py, &hosts)?;
            let sink = observer.sink();
            let opts = UpdateOptions { check, force };
            let outcome = drive(py, &mut observer, config::update(&self.env, transport.as_ref(), &hosts, vault.as_ref(), opts, &sink));
            finish_quietly(py, transport.close());
            let report = outcome?.py_err(py)?;
            observer.finish(py)?;
            to_python(py, &report)
        })
    }

    /// Runs `manage.py <args>` with the release's Python as the app user, in the live release
    /// (`current`) or `release`, on `server` (a host, `group[N]`, `user@group[N]`; default the
    /// first `django_manage` host), without a terminal; `tee` also writes the output to that file
    /// (relative to the release directory) on the host, refusing an existing one.
    ///
    /// `args`: the command and its arguments (a `str` is the command alone). Returns a
    /// `HostResult`: a non-zero exit is a result (`check()` raises for it); a missing release
    /// raises `NotFoundError`, an unreachable host `ConnectionError`.
    #[pyo3(signature = (args, server=None, release=None, *, tee=None))]
    fn django_manage(
        &self,
        py: Python<'_>,
        args: OneOrMany,
        server: Option<String>,
        release: Option<String>,
        tee: Option<String>,
    ) -> PyResult<HostResult> {
        guard(py, || {
            let mut warnings = Vec::new();
            let manage = Manage::new(&self.env, server.as_deref(), release.as_deref(), tee.as_deref(), args.into_vec(), &mut |w| {
                warnings.push(w.to_owned());
            });
            for w in &warnings {
                warn(py, w)?;
            }
            let manage = manage.py_err(py)?;
            let transport = self.transport(py, std::slice::from_ref(&manage.host))?;
            let mut observer = Observer::new(None, "Environment.django_manage")?;
            let start = Instant::now();
            let outcome = drive(py, &mut observer, manage.run(&self.env, transport.as_ref()));
            finish_quietly(py, transport.close());
            let out = outcome?.py_err(py)?;
            let result = fanout::HostResult { host: manage.host.clone(), result: Ok(out), duration: start.elapsed() };
            Ok(HostResult::new(result, Arc::new(manage.command())))
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Environment({}, dir={})",
            PyString::new(py, &self.env.name).repr()?,
            PyString::new(py, &self.env.dir.to_string_lossy()).repr()?
        ))
    }
}

impl PyEnvironment {
    #[allow(clippy::too_many_arguments)]
    fn deploy_options(
        &self,
        component: String,
        rev: Option<String>,
        resume: Option<String>,
        private: bool,
        limit: Option<String>,
        update_config: bool,
        keep: usize,
    ) -> deploy::Options {
        let vault = self.env.vault.plain();
        deploy::Options {
            component,
            rev,
            name: if resume.is_none() { Some(deploy::layout::release_name_now()) } else { None },
            resume,
            private,
            limit,
            keep,
            skip_record: private,
            update_config,
            by: format!("{} (python)", cchq_core::identity::operator()),
            vault,
            ..deploy::Options::default()
        }
    }

    fn run_deploy<'py>(
        &self,
        py: Python<'py>,
        opts: deploy::Options,
        rollback_to: Option<Option<String>>,
        on_event: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut observer = Observer::new(on_event, "Environment.deploy")?;
        let hosts = deploy::connect_hosts(&self.env, &opts).py_err(py)?;
        let transport = self.transport(py, &hosts)?;
        let sink = observer.sink();
        let env = &self.env;
        let work = async {
            match &rollback_to {
                Some(to) => deploy::rollback(env, transport.as_ref(), to.as_deref(), &opts, &sink).await,
                None => deploy::deploy(env, transport.as_ref(), &opts, &sink).await,
            }
        };
        let outcome = drive(py, &mut observer, work);
        if let Err(e) = &outcome
            && e.is_instance_of::<PyKeyboardInterrupt>(py)
        {
            // Ctrl-C dropped the deploy's future: start again what a restart it cut short had
            // stopped (the guard outlives the future), by name, before anything else.
            finish_quietly(py, opts.restart_guard.restore(transport.as_ref(), &sink));
        }
        if let Err(e) = &outcome
            && rollback_to.is_none()
            && e.is_instance_of::<PyKeyboardInterrupt>(py)
            && let Some(name) = opts.resume.as_ref().or(opts.name.as_ref())
        {
            // As the CLI does: leave it resumable (the release's markers hold what was done) and
            // free the lock for the resume.
            finish_quietly(py, deploy::lock::release(env, transport.as_ref(), &opts.lock_token));
            finish_quietly(py, transport.close());
            return Err(interrupted_deploy(py, &self.env.name, name));
        }
        finish_quietly(py, transport.close());
        let result = outcome?.py_err(py)?;
        observer.finish(py)?;
        to_python(py, &result)
    }
}

/// The `KeyboardInterrupt` for an interrupted deploy: says how to resume, and names the release
/// in its `release` attribute.
fn interrupted_deploy(py: Python<'_>, env: &str, release: &str) -> PyErr {
    let err = PyKeyboardInterrupt::new_err(format!(
        "deploy of release `{release}` of `{env}` interrupted: continue it with deploy(resume={})",
        PyString::new(py, release).repr().map_or_else(|_| format!("'{release}'"), |r| r.to_string())
    ));
    if let Err(e) = err.value(py).setattr("release", release) {
        return e;
    }
    err
}

/// A serialisable value as Python objects (through JSON).
fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| to_pyerr(py, &Error::internal(e.to_string())))?;
    py.import("json")?.call_method1("loads", (text,))
}
