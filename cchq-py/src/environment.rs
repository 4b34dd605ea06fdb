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
//!
//! The rule for failures: a failure on one host of several (unreachable, a command that exited
//! non-zero) is a result (`HostResult`, `ServiceReport.unreachable`, `RebootResult.error`...); a
//! failure of the operation as a whole (bad arguments, a deploy that failed, a held lock) is an
//! exception.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use cchq_core::apply::{self, UpdateOptions};
use cchq_core::deploy;
use cchq_core::django_manage::Manage;
use cchq_core::environment::{self, environments_root};
use cchq_core::fanout::{self, DEFAULT_FORKS, run_on_hosts};
use cchq_core::identity::Frontend;
use cchq_core::inventory::ServerSpec;
use cchq_core::services::{self, Action, Request, RollingOptions};
use cchq_core::transport::DynTransport;
use cchq_core::{Error, RemoteCommand};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::cancel::PyCancel;
use crate::errors::{Failure, IntoPyResult, to_pyerr};
use crate::runtime::{Observer, drive, finish_quietly, guard, warn};
use crate::types::{failure_dict, host_outcome, host_result, record, record_of, to_python};

// The default of `forks` in `run`'s Python signature (a literal, so that it shows in `inspect`).
const _: () = assert!(
    DEFAULT_FORKS == 256,
    "update `forks=` in `run`'s signature and the stubs"
);

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
        py.detach(|| environment::list_environments(&root))
            .py_err(py)
    })
}

/// A loaded commcare-cloud environment. Make one with `Environment.load(name)`.
#[pyclass(module = "cchq._cchq", name = "Environment", frozen)]
#[derive(Debug)]
pub struct PyEnvironment {
    /// The environment as last loaded (`reload()` replaces it; operations running keep theirs).
    current: RwLock<Arc<cchq_core::Environment>>,
    /// The environments root it was loaded from.
    root: PathBuf,
}

/// A `cancel=` argument: the core's token.
fn token(cancel: Option<&Bound<'_, PyCancel>>) -> Option<cchq_core::cancel::Cancel> {
    cancel.map(|c| c.get().inner.clone())
}

/// Seconds as a duration; `UsageError` naming `what` otherwise.
fn seconds(py: Python<'_>, what: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        to_pyerr(
            py,
            &Error::usage(format!("{what} `{secs}` is not a number of seconds")),
        )
    })
}

impl PyEnvironment {
    /// The environment (as last loaded).
    fn env(&self) -> Arc<cchq_core::Environment> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Selects hosts with an Ansible pattern, issuing its warnings as `CchqWarning`.
    fn select(&self, py: Python<'_>, pattern: &str) -> PyResult<Vec<String>> {
        let env = self.env();
        Self::shown(py, &env, env.inventory.select(pattern))
    }

    /// [`Self::select`] of the hosts of `base` within `limit` (read whole).
    fn select_within(&self, py: Python<'_>, base: &str, limit: &str) -> PyResult<Vec<String>> {
        let env = self.env();
        Self::shown(py, &env, env.inventory.select_within(base, limit))
    }

    /// A selection's hosts, its warnings issued as Python warnings; its error naming the
    /// environment.
    fn shown(
        py: Python<'_>,
        env: &cchq_core::Environment,
        sel: cchq_core::error::Result<cchq_core::inventory::Selection>,
    ) -> PyResult<Vec<String>> {
        let sel = sel
            .map_err(|e| e.context(format!("environment `{}`", env.name)))
            .py_err(py)?;
        for w in &sel.warnings {
            warn(py, w)?;
        }
        Ok(sel.hosts)
    }

    /// The celery hosts (the `celery` group's and those with celery programs), within `limit`.
    fn celery_hosts(&self, py: Python<'_>, limit: Option<&str>) -> PyResult<Vec<String>> {
        let within = limit.map(|l| self.select(py, l)).transpose()?;
        cchq_core::daily::celery::celery_hosts_within(&self.env(), within.as_deref()).py_err(py)
    }

    /// The transport for `hosts`.
    fn transport(&self, py: Python<'_>, hosts: &[String]) -> PyResult<DynTransport> {
        let env = self.env();
        py.detach(|| env.transport(Some(hosts))).py_err(py)
    }

    /// Runs `work` (given the environment and a transport for `hosts`) with `observer`, then
    /// closes the transport and raises what the callback raised.
    fn operate<'py, T, F, W>(
        &self,
        py: Python<'py>,
        observer: &mut Observer<'py>,
        hosts: &[String],
        work: W,
    ) -> PyResult<T>
    where
        T: Send,
        F: std::future::Future<Output = T> + Send,
        W: FnOnce(Arc<cchq_core::Environment>, DynTransport, crate::runtime::ChannelSink) -> F,
    {
        let transport = self.transport(py, hosts)?;
        let sink = observer.sink();
        let outcome = drive(py, observer, work(self.env(), transport.clone(), sink));
        finish_quietly(py, transport.close());
        outcome
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
            let env = py
                .detach(|| cchq_core::Environment::load(&root, name))
                .py_err(py)?;
            Ok(Self {
                current: RwLock::new(Arc::new(env)),
                root,
            })
        })
    }

    /// Reads the environment's files again (after `git pull` in the environments checkout, say).
    /// Operations running keep the environment they started with. On an error the environment
    /// stays as it was.
    fn reload(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            let name = self.env().name.clone();
            let root = self.root.clone();
            let env = py
                .detach(|| cchq_core::Environment::load(&root, &name))
                .py_err(py)?;
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(env);
            Ok(())
        })
    }

    /// `with cchq.Environment.load(...) as env:` gives the environment. Connections are opened
    /// per operation and closed when it ends, so leaving the block has nothing left to close.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaves the `with` block; exceptions propagate.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        false
    }

    /// The environment's name (its directory name).
    #[getter]
    fn name(&self) -> String {
        self.env().name.clone()
    }

    /// `deploy_env` from `meta.yml`.
    #[getter]
    fn deploy_env(&self) -> String {
        self.env().meta.deploy_env.clone()
    }

    /// The environment's directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.env().dir.clone()
    }

    /// The hosts `pattern` selects (an Ansible `--limit` pattern), in inventory order.
    #[pyo3(signature = (pattern="all"))]
    fn hosts<'py>(&self, py: Python<'py>, pattern: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let env = self.env();
            self.select(py, pattern)?
                .into_iter()
                .map(|h| host_record(py, &env.host_or_address(&h)))
                .collect()
        })
    }

    /// The inventory host named `name` (`NotFoundError` when there is none).
    fn host<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let host = self.env().host(name).py_err(py)?;
            host_record(py, &host)
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
            let env = self.env();
            let hosts = env.inventory.resolve_all(&spec).py_err(py)?;
            Ok(hosts
                .iter()
                .map(|h| {
                    let address = env.ssh_target(h).address;
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
    /// `become`: `True` for root, or a user name. `timeout`: seconds per host. `cancel`: a
    /// `cchq.Cancel` that stops the commands (raising `CancelledError`).
    #[pyo3(signature = (pattern, command, r#become=None, *, timeout=None, forks=256, on_event=None, cancel=None))]
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
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let mut observer = Observer::new(on_event, "Environment.run")?
                .with_cancel(token(cancel.as_ref()), true);
            let hosts = self.select(py, pattern)?;
            let mut cmd = match command {
                OneOrMany::One(script) if script.trim().is_empty() => {
                    return Err(to_pyerr(
                        py,
                        &Error::usage("the command is empty")
                            .with_hint("give the shell command to run, e.g. 'uptime'"),
                    ));
                }
                OneOrMany::One(script) => RemoteCommand::shell(script),
                OneOrMany::Many(argv) if argv.is_empty() => {
                    return Err(to_pyerr(
                        py,
                        &Error::usage("the command is empty")
                            .with_hint("give the program and its arguments"),
                    ));
                }
                OneOrMany::Many(argv) => RemoteCommand::from_argv(argv),
            };
            match r#become {
                Some(Become::Flag(true)) => cmd = cmd.become_user("root"),
                Some(Become::User(u)) => cmd = cmd.become_user(u),
                Some(Become::Flag(false)) | None => {}
            }
            if let Some(secs) = timeout {
                cmd = cmd.timeout(seconds(py, "timeout", secs)?);
            }
            let cmd = Arc::new(cmd);
            let c = Arc::clone(&cmd);
            let hs = hosts.clone();
            let results =
                self.operate(py, &mut observer, &hosts, move |_env, t, sink| async move {
                    run_on_hosts(t.as_ref(), &hs, &c, forks, "run", &sink).await
                })?;
            observer.finish(py)?;
            results
                .into_iter()
                .map(|r| host_result(py, r, &cmd))
                .collect()
        })
    }

    /// `start`, `stop`, `restart` or `status` of services (`commcare` is every app service) on
    /// their hosts; web workers restart in rolling, health-checked batches (`all_at_once=True`:
    /// every host at once, no health checks).
    ///
    /// `only`: programs, `"name"` or `"name:N"`, comma separated or as a list. `limit`: a host pattern.
    /// Raises `PatternError` when no host is left to act on; unreachable hosts are in the report.
    /// `timeout`: seconds for the whole operation (then `CancelledError`).
    #[pyo3(signature = (names, action, only=None, limit=None, *, all_at_once=false, on_event=None, cancel=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn service<'py>(
        &self,
        py: Python<'py>,
        names: OneOrMany,
        action: &str,
        only: Option<OneOrMany>,
        limit: Option<String>,
        all_at_once: bool,
        on_event: Option<Bound<'py, PyAny>>,
        cancel: Option<Bound<'py, PyCancel>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let timeout = timeout.map(|s| seconds(py, "timeout", s)).transpose()?;
            let mut observer = Observer::new(on_event, "Environment.service")?
                .with_cancel(token(cancel.as_ref()), true)
                .with_timeout(timeout);
            let only = match only {
                None => Vec::new(),
                Some(o) => services::parse_only(&o.into_vec().join(",")).py_err(py)?,
            };
            let action = Action::parse(action).py_err(py)?;
            let req = Request {
                services: names.into_vec(),
                only,
                limit,
            };
            let (plans, warnings) = services::plan(&self.env(), &req, action).py_err(py)?;
            for w in &warnings {
                warn(py, w)?;
            }
            if plans.is_empty() {
                return Err(to_pyerr(
                    py,
                    &Error::pattern(format!("no hosts to act on for {}", req.services.join(", ")))
                        .with_hint("check `limit` and the services' groups (`env.service(name, 'help')` does not exist: see `cchq <env> service help`)"),
                ));
            }
            let hosts: Vec<String> = plans.iter().map(|p| p.host.clone()).collect();
            let rolling = RollingOptions {
                all_at_once,
                ..RollingOptions::default()
            };
            let report =
                self.operate(py, &mut observer, &hosts, move |_env, t, sink| async move {
                    services::execute(t.as_ref(), &plans, action, &rolling, &sink).await
                })?;
            observer.finish(py)?;
            service_report(py, report, &warnings)
        })
    }

    /// Deploys components (`commcare`, `formplayer`; default `commcare`, and `formplayer` too
    /// when meta.yml says `always_deploy_formplayer`), one after the other, as
    /// `cchq <env> deploy` does without its prompt: builds a release on every host, switches all
    /// at once, restarts, records. Returns one `DeployResult` per component, in order.
    ///
    /// Raises `DeployFailedError` (`release`, `phase`, `step`, `hosts` say what failed; resume with
    /// `deploy(resume=e.release)`), `LockHeldError` (`holder`; wait with `lock_wait=`),
    /// `ConfigError` (the drift guard of `update_config=True`; `force=True` overrides), or
    /// `CancelledError` (the `cancel` token fired: stopped at a safe point, lock freed, resumable).
    /// Unknown components raise `NotFoundError` before anything starts.
    ///
    /// `lock_wait`: seconds to wait for a held lock. `keep_days`: keep the release at least so
    /// many days (a private release: 1). `all_at_once`: restart web workers without rolling
    /// batches. `notify`: send the notifications of cchq.yml. `rollback_on_failure`: when the
    /// new release fails to start, switch back (`None`: cchq.yml decides). `timeout`: seconds for
    /// each component's deploy, after which it stops as if cancelled (`CancelledError`).
    /// An encrypted vault is decrypted with `ANSIBLE_VAULT_PASSWORD` or `CCHQ_VAULT_PASSWORD_FILE`.
    #[pyo3(signature = (components=None, rev=None, resume=None, private=false, limit=None, update_config=false, *, keep=3, keep_days=None, lock_wait=None, force=false, all_at_once=false, notify=true, skip_record=false, ignore_kafka_checkpoint_warning=false, rollback_on_failure=None, on_event=None, cancel=None, timeout=None))]
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
        keep_days: Option<u32>,
        lock_wait: Option<f64>,
        force: bool,
        all_at_once: bool,
        notify: bool,
        skip_record: bool,
        ignore_kafka_checkpoint_warning: bool,
        rollback_on_failure: Option<bool>,
        on_event: Option<Bound<'py, PyAny>>,
        cancel: Option<Bound<'py, PyCancel>>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let timeout = timeout.map(|s| seconds(py, "timeout", s)).transpose()?;
            let env = self.env();
            let request = deploy::Request {
                frontend: Frontend::Python,
                components: components
                    .map(|c| {
                        c.into_vec()
                            .iter()
                            .map(|c| c.parse())
                            .collect::<cchq_core::Result<Vec<deploy::Component>>>()
                    })
                    .transpose()
                    .py_err(py)?,
                rev,
                resume,
                private,
                limit,
                keep_days,
                keep,
                skip_record,
                ignore_kafka_checkpoint_warning,
                update_config,
                force_settings: force,
                lock_wait: lock_wait.map(|s| seconds(py, "lock_wait", s)).transpose()?,
                all_at_once,
                notify,
                rollback_on_failure,
            };
            let components = request.components(&env).py_err(py)?;
            let vault = deploy_vault(py, &env)?;
            let cancel = token(cancel.as_ref());
            let mut results: Vec<Bound<'py, PyAny>> = Vec::new();
            let mut interrupted = false;
            // An error after a component has finished carries that component's result
            // (`completed`): a script learns what was deployed before the failure.
            let with_completed = |e: PyErr, done: &[Bound<'py, PyAny>]| -> PyResult<PyErr> {
                if !done.is_empty() {
                    e.value(py).setattr("completed", PyTuple::new(py, done)?)?;
                }
                Ok(e)
            };
            for component in components {
                if let Some(c) = &cancel
                    && c.is_cancelled()
                {
                    return Err(with_completed(
                        crate::runtime::cancelled_error(py, "Environment.deploy", c),
                        &results,
                    )?);
                }
                if let Some(done) = results.last().filter(|_| interrupted) {
                    // Ctrl-C came too late to stop the previous component: it finished; this one
                    // is not started (as the CLI).
                    let release: String = done.getattr("release")?.extract()?;
                    let e = Failure::from(
                        Error::new(
                            cchq_core::ErrorKind::Interrupted,
                            format!(
                                "Ctrl-C: deployed release `{release}`, not deploying `{component}`"
                            ),
                        )
                        .with_release(release),
                    )
                    .to_pyerr(py);
                    return Err(with_completed(e, &results)?);
                }
                let opts = deploy::Options {
                    cancel: cancel.clone().unwrap_or_default(),
                    ..request.options(component, vault.clone())
                };
                let (result, signalled) = match self.run_deploy(
                    py,
                    opts,
                    Work::Deploy,
                    on_event.clone(),
                    cancel.is_some(),
                    timeout,
                ) {
                    Ok(r) => r,
                    Err(e) => return Err(with_completed(e, &results)?),
                };
                interrupted |= signalled;
                results.push(result);
            }
            Ok(results)
        })
    }

    /// Switches back to an earlier complete release (`to`, else the newest one older than
    /// current) and restarts. Returns its `DeployResult`; raises as `deploy` does.
    #[pyo3(signature = (to=None, component="commcare", *, notify=true, on_event=None, cancel=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn rollback<'py>(
        &self,
        py: Python<'py>,
        to: Option<String>,
        component: &str,
        notify: bool,
        on_event: Option<Bound<'py, PyAny>>,
        cancel: Option<Bound<'py, PyCancel>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let timeout = timeout.map(|s| seconds(py, "timeout", s)).transpose()?;
            let env = self.env();
            let component: deploy::Component = component.parse().py_err(py)?;
            // It renders settings only for a host that has none (and then stops without the
            // vault): an encrypted vault is opened when the environment gives its password, AWS
            // secrets are fetched.
            let given = std::env::var_os(cchq_core::vault::PASSWORD_ENV)
                .is_some_and(|v| !v.is_empty())
                || std::env::var_os(cchq_core::vault::PASSWORD_FILE_ENV).is_some();
            let vault = if (given && matches!(env.vault, environment::Vault::Encrypted(_)))
                || matches!(env.vault, environment::Vault::Aws(_))
            {
                let e = Arc::clone(&env);
                py.detach(|| e.vault_without_prompt()).py_err(py)?
            } else {
                env.vault.plain()
            };
            let cancel = token(cancel.as_ref());
            let opts = deploy::Options {
                component,
                by: Frontend::Python.operator(),
                vault,
                notify,
                cancel: cancel.clone().unwrap_or_default(),
                ..deploy::Options::default()
            };
            self.run_deploy(
                py,
                opts,
                Work::Rollback(to),
                on_event,
                cancel.is_some(),
                timeout,
            )
            .map(|(r, _)| r)
        })
    }

    /// The releases of a component on its hosts (within `limit`, a host pattern), as
    /// `cchq <env> list-releases`: one `Release` per release per host.
    #[pyo3(signature = (component="commcare", limit=None, *, cancel=None))]
    fn list_releases<'py>(
        &self,
        py: Python<'py>,
        component: &str,
        limit: Option<String>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let env = self.env();
            let component: deploy::Component = component.parse().py_err(py)?;
            let opts = deploy::Options {
                component,
                ..deploy::Options::default()
            };
            let mut hosts = deploy::component_hosts(&env, &opts).py_err(py)?;
            if let Some(l) = &limit {
                let sel = self.select(py, l)?;
                hosts.retain(|h| sel.contains(h));
            }
            let mut observer = Observer::new(None, "Environment.list_releases")?
                .with_cancel(token(cancel.as_ref()), true);
            let hs = hosts.clone();
            let rels = self
                .operate(py, &mut observer, &hosts, move |env, t, _| async move {
                    deploy::releases::list(&env, t.as_ref(), &hs, component).await
                })?
                .py_err(py)?;
            rels.iter().map(|r| record_of(py, "Release", r)).collect()
        })
    }

    /// Deletes old releases of a component, keeping the newest `keep` (never current, dated
    /// or `exclude`d ones), as `cchq <env> clean-releases --yes`. Returns `{host: [removed, ...]}`.
    #[pyo3(signature = (keep=3, component="commcare", *, exclude=None, cancel=None))]
    fn clean_releases<'py>(
        &self,
        py: Python<'py>,
        keep: usize,
        component: &str,
        exclude: Option<Vec<String>>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let env = self.env();
            let component: deploy::Component = component.parse().py_err(py)?;
            let opts = deploy::Options {
                component,
                ..deploy::Options::default()
            };
            let hosts = deploy::component_hosts(&env, &opts).py_err(py)?;
            // The clean holds the deploy lock: its host is reached too.
            let reach = deploy::connect_hosts(&env, &opts).py_err(py)?;
            let mut observer = Observer::new(None, "Environment.clean_releases")?
                .with_cancel(token(cancel.as_ref()), true);
            let hs = hosts.clone();
            let exclude = exclude.unwrap_or_default();
            let removed = self
                .operate(py, &mut observer, &reach, move |env, t, _| async move {
                    deploy::releases::clean(&env, t.as_ref(), &hs, component, keep, &exclude).await
                })?
                .py_err(py)?;
            let removed: std::collections::BTreeMap<String, Vec<String>> =
                removed.into_iter().collect();
            to_python(py, &removed)
        })
    }

    /// The deploy lock: a `LockInfo` when it is taken, else `None` (`cchq <env> lock status`).
    fn lock_status<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let h = deploy::lock::host(&self.env()).py_err(py)?;
            let mut observer = Observer::new(None, "Environment.lock_status")?;
            let state = self
                .operate(
                    py,
                    &mut observer,
                    std::slice::from_ref(&h),
                    |env, t, _| async move { deploy::lock::status(&env, t.as_ref()).await },
                )?
                .py_err(py)?;
            state.map(|s| lock_info(py, &s)).transpose()
        })
    }

    /// Waits until no running deploy holds the lock (`cchq <env> lock wait`): returns `None` once
    /// it is free, or the `LockInfo` of a lock whose holder is gone (a deploy takes it over).
    /// Raises `LockHeldError` (`holder`) when it is still held after `timeout` seconds. It takes
    /// nothing: `deploy(lock_wait=...)` waits and takes the lock at once. `cancel` stops the wait
    /// from any thread (`CancelledError`).
    #[pyo3(signature = (timeout=3600.0, *, cancel=None))]
    fn lock_wait<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let wait = seconds(py, "timeout", timeout)?;
            let h = deploy::lock::host(&self.env()).py_err(py)?;
            let mut observer = Observer::new(None, "Environment.lock_wait")?
                .with_cancel(token(cancel.as_ref()), true);
            let state = self
                .operate(
                    py,
                    &mut observer,
                    std::slice::from_ref(&h),
                    move |env, t, _| async move {
                        deploy::lock::wait_free(&env, t.as_ref(), wait).await
                    },
                )?
                .py_err(py)?;
            observer.finish(py)?;
            state.map(|s| lock_info(py, &s)).transpose()
        })
    }

    /// Frees the deploy lock by hand (`cchq <env> lock release --yes`): when its holder is gone,
    /// or with `force=True` when it may still run (only if you know it is dead). Returns the
    /// `LockInfo` of the lock released, `None` when it was not taken. Raises `LockHeldError`
    /// (`holder`) when the holder may run and `force` is not set, or when the lock changed meanwhile.
    #[pyo3(signature = (force=false))]
    fn release_lock<'py>(
        &self,
        py: Python<'py>,
        force: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let h = deploy::lock::host(&self.env()).py_err(py)?;
            let mut observer = Observer::new(None, "Environment.release_lock")?;
            let done = self
                .operate(
                    py,
                    &mut observer,
                    std::slice::from_ref(&h),
                    move |env, t, _| async move {
                        deploy::lock::release_by_hand(&env, t.as_ref(), force, &mut |_| Ok(true))
                            .await
                    },
                )?
                .py_err(py)?;
            match done {
                deploy::lock::HandReleased::Released(s)
                | deploy::lock::HandReleased::Declined(s) => lock_info(py, &s).map(Some),
                deploy::lock::HandReleased::NotLocked => Ok(None),
            }
        })
    }

    /// The downtime record (`cchq <env> downtime status`): a `Downtime`, or `None` when none is
    /// in progress (an expired one has `expired` set).
    fn downtime_status<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        guard(py, || {
            let (h, _) = cchq_core::downtime::location(&self.env()).py_err(py)?;
            let mut observer = Observer::new(None, "Environment.downtime_status")?;
            let rec = self
                .operate(
                    py,
                    &mut observer,
                    std::slice::from_ref(&h),
                    |env, t, _| async move { cchq_core::downtime::read(&env, t.as_ref()).await },
                )?
                .py_err(py)?;
            rec.map(|r| record_of(py, "Downtime", &downtime_json(&r)))
                .transpose()
        })
    }

    /// Starts a downtime (`cchq <env> downtime start --yes --on-lingering ...`): records it
    /// (who, `message`, for `hours`), stops every CommCare service, then deals with this
    /// environment's processes still running: `on_lingering` = `"wait"` (look again every
    /// `wait_seconds`, at most `max_waits` times, then raise with the downtime on), `"kill"`
    /// (SIGKILL exactly those, then look again), `"continue"` (leave them), `"abort"` (start the
    /// services again and cancel the downtime). Returns a `DowntimeStarted`; a downtime already in
    /// progress raises `UsageError` and changes nothing.
    #[pyo3(signature = (message="", hours=24.0, *, on_lingering="wait", wait_seconds=30.0, max_waits=10, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn downtime_start<'py>(
        &self,
        py: Python<'py>,
        message: &str,
        hours: f64,
        on_lingering: &str,
        wait_seconds: f64,
        max_waits: u32,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let policy: cchq_core::downtime::OnLingering = on_lingering.parse().py_err(py)?;
            if !(hours.is_finite() && hours > 0.0) {
                return Err(to_pyerr(
                    py,
                    &Error::usage(format!("`hours` must be a positive number, not {hours}")),
                ));
            }
            let wait = seconds(py, "wait_seconds", wait_seconds)?;
            let env = self.env();
            let cchq_core::downtime::Hosts {
                app_hosts,
                connect: hosts,
            } = cchq_core::downtime::hosts(&env).py_err(py)?;
            let opts = cchq_core::downtime::StartOptions {
                by: Frontend::Python.operator(),
                message: message.to_owned(),
                hours,
                wait,
                max_waits,
            };
            let mut observer = Observer::new(None, "Environment.downtime_start")?
                .with_cancel(token(cancel.as_ref()), true);
            let started = self
                .operate(py, &mut observer, &hosts, move |env, t, _| async move {
                    let mut op = Policy(policy);
                    cchq_core::downtime::start(&env, t.as_ref(), &app_hosts, &opts, &mut op).await
                })?
                .py_err(py)?;
            let v = match started {
                cchq_core::downtime::Started::Started {
                    record,
                    stopped,
                    lingering,
                } => serde_json::json!({
                    "started": true,
                    "downtime": downtime_json(&record),
                    "services": service_report_json(&stopped, &[]),
                    "lingering": lingering.iter().flat_map(|(h, ps)| ps.iter().map(move |p| serde_json::json!({"host": h, "pid": p.pid, "args": p.args}))).collect::<Vec<_>>(),
                }),
                cchq_core::downtime::Started::Aborted { restarted } => {
                    serde_json::json!({"started": false, "downtime": null, "services": service_report_json(&restarted, &[]), "lingering": []})
                }
                cchq_core::downtime::Started::Declined => {
                    return Err(to_pyerr(
                        py,
                        &Error::internal("a downtime start was declined without asking"),
                    ));
                }
            };
            record_of(py, "DowntimeStarted", &v)
        })
    }

    /// Ends the downtime in progress (`cchq <env> downtime end --yes`): starts every CommCare
    /// service and, when they all run, removes the record. Returns the `ServiceReport` of the
    /// start (when not `ok`, the record stays); no downtime in progress raises `UsageError`.
    #[pyo3(signature = (*, cancel=None))]
    fn downtime_end<'py>(
        &self,
        py: Python<'py>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let env = self.env();
            let hosts = cchq_core::downtime::hosts(&env).py_err(py)?.connect;
            let mut observer = Observer::new(None, "Environment.downtime_end")?
                .with_cancel(token(cancel.as_ref()), true);
            let ended = self
                .operate(py, &mut observer, &hosts, move |env, t, _| async move {
                    cchq_core::downtime::end(
                        &env,
                        t.as_ref(),
                        &mut Policy(cchq_core::downtime::OnLingering::Continue),
                    )
                    .await
                })?
                .py_err(py)?;
            match ended {
                cchq_core::downtime::Ended::Ended { started }
                | cchq_core::downtime::Ended::NotStarted { started } => {
                    service_report(py, started, &[])
                }
                cchq_core::downtime::Ended::Declined => Err(to_pyerr(
                    py,
                    &Error::internal("a downtime end was declined without asking"),
                )),
            }
        })
    }

    /// Builds a private release of `rev` on the first `django_manage` host (not switched, kept a
    /// day) and starts `manage.py preindex_everything` in it in the background
    /// (`cchq <env> preindex-views`), so that a deploy of that revision finds its views indexed.
    /// Returns a `Preindex` (the release, host, pid and log); raises as `deploy` does.
    #[pyo3(signature = (rev=None, *, on_event=None, cancel=None, timeout=None))]
    fn preindex_views<'py>(
        &self,
        py: Python<'py>,
        rev: Option<String>,
        on_event: Option<Bound<'py, PyAny>>,
        cancel: Option<Bound<'py, PyCancel>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let timeout = timeout.map(|s| seconds(py, "timeout", s)).transpose()?;
            let env = self.env();
            let vault = deploy_vault(py, &env)?;
            let cancel = token(cancel.as_ref());
            let opts = deploy::Options {
                component: deploy::Component::Commcare,
                rev,
                name: Some(deploy::layout::release_name_now()),
                private: true,
                by: Frontend::Python.operator(),
                vault,
                cancel: cancel.clone().unwrap_or_default(),
                ..deploy::Options::default()
            };
            self.run_deploy(
                py,
                opts,
                Work::Preindex,
                on_event,
                cancel.is_some(),
                timeout,
            )
            .map(|(r, _)| r)
        })
    }

    /// What is not in its expected state (`cchq <env> check-services`): one `ServiceCheck` per
    /// program, unit or port of `services` (default: every service) on their hosts (within `limit`).
    #[pyo3(signature = (services=None, limit=None, *, cancel=None))]
    fn check_services<'py>(
        &self,
        py: Python<'py>,
        services: Option<OneOrMany>,
        limit: Option<String>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let hosts: Vec<String> = self
                .env()
                .inventory
                .hosts()
                .map(|h| h.name.clone())
                .collect();
            let names = services.map(OneOrMany::into_vec).unwrap_or_default();
            let mut observer = Observer::new(None, "Environment.check_services")?
                .with_cancel(token(cancel.as_ref()), true);
            let checks = self
                .operate(py, &mut observer, &hosts, move |env, t, _| async move {
                    services::check::check_services(&env, t.as_ref(), &names, limit.as_deref())
                        .await
                })?
                .py_err(py)?;
            checks
                .iter()
                .map(|c| record_of(py, "ServiceCheck", c))
                .collect()
        })
    }

    /// Checks the hosts `pattern` selects (`cchq <env> ping`): each answers over SSH, `sudo` works
    /// there without a password, and supervisord answers where the environment's programs run.
    /// One `Ping` per host, in inventory order (an unreachable host is a result, `ok` false).
    #[pyo3(signature = (pattern="all", *, forks=256, on_event=None, cancel=None))]
    fn ping<'py>(
        &self,
        py: Python<'py>,
        pattern: &str,
        forks: usize,
        on_event: Option<Bound<'py, PyAny>>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let hosts = self.select(py, pattern)?;
            let mut observer = Observer::new(on_event, "Environment.ping")?
                .with_cancel(token(cancel.as_ref()), true);
            let hs = hosts.clone();
            let pings =
                self.operate(py, &mut observer, &hosts, move |env, t, sink| async move {
                    cchq_core::daily::ping::ping(&env, t.as_ref(), &hs, forks, &sink).await
                })?;
            observer.finish(py)?;
            pings.iter().map(|p| record_of(py, "Ping", p)).collect()
        })
    }

    /// The databases `postgresql.yml` expects, by host (`cchq <env> list-postgresql-dbs`); reads
    /// no host. Raises `NotFoundError` when the environment has no `postgresql.yml`.
    fn postgresql_dbs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let dbs = cchq_core::daily::pg_dbs::expected(&self.env()).py_err(py)?;
            dbs.iter().map(|d| record_of(py, "PostgresDb", d)).collect()
        })
    }

    /// The expected databases against those each database host has (`cchq <env>
    /// list-postgresql-dbs --compare`): one `DbComparison` per host (`missing`, `additional`;
    /// `error` when it could not be asked).
    #[pyo3(signature = (*, cancel=None))]
    fn compare_postgresql_dbs<'py>(
        &self,
        py: Python<'py>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let env = self.env();
            let dbs = cchq_core::daily::pg_dbs::expected(&env).py_err(py)?;
            let hosts = cchq_core::daily::pg_dbs::db_hosts(&env, &dbs);
            let mut observer = Observer::new(None, "Environment.compare_postgresql_dbs")?
                .with_cancel(token(cancel.as_ref()), true);
            let found = self.operate(py, &mut observer, &hosts, move |env, t, _| async move {
                cchq_core::daily::pg_dbs::compare(&env, t.as_ref(), &dbs).await
            })?;
            found
                .iter()
                .map(|c| record_of(py, "DbComparison", c))
                .collect()
        })
    }

    /// This environment's celery workers left running from releases other than `current`
    /// (`cchq <env> kill-stale-celery-workers --list`), on the celery hosts (`limit`: a host
    /// pattern). One `CeleryHost` per host (`error` when it could not be asked). Other
    /// environments' and other users' processes are never listed.
    #[pyo3(signature = (limit=None, *, cancel=None))]
    fn stale_celery_workers<'py>(
        &self,
        py: Python<'py>,
        limit: Option<&str>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let hosts = self.celery_hosts(py, limit)?;
            let mut observer = Observer::new(None, "Environment.stale_celery_workers")?
                .with_cancel(token(cancel.as_ref()), true);
            let hs = hosts.clone();
            let found = self.operate(py, &mut observer, &hosts, move |env, t, _| async move {
                cchq_core::daily::celery::find(&env, t.as_ref(), &hs).await
            })?;
            found
                .into_iter()
                .map(|(host, r)| host_outcome(py, "CeleryHost", &host, "workers", r))
                .collect()
        })
    }

    /// Kills the given stale workers (from `stale_celery_workers`) that are still stale when the
    /// kill reaches their host (a reused pid is left alone): `signal="KILL"` (default) or
    /// `"TERM"` (a warm shutdown). One `KilledWorkers` per host.
    #[pyo3(signature = (workers, *, signal="KILL", cancel=None))]
    fn kill_stale_celery_workers<'py>(
        &self,
        py: Python<'py>,
        workers: Vec<Bound<'py, PyAny>>,
        signal: &str,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        use cchq_core::daily::celery::{Signal, Stale};
        guard(py, || {
            let signal = match signal {
                "KILL" => Signal::Kill,
                "TERM" => Signal::Term,
                other => {
                    return Err(to_pyerr(
                        py,
                        &Error::usage(format!("unknown signal `{other}`")).with_hint(
                            "signal='KILL' (at once) or signal='TERM' (a warm shutdown)",
                        ),
                    ));
                }
            };
            if workers.is_empty() {
                return Ok(Vec::new());
            }
            let allowed = self.celery_hosts(py, None)?;
            let mut stale = Vec::new();
            for w in &workers {
                let s = Stale {
                    host: w.getattr("host")?.extract()?,
                    pid: w.getattr("pid")?.extract()?,
                    release: w.getattr("release")?.extract()?,
                    args: w.getattr("args")?.extract()?,
                };
                if !allowed.contains(&s.host) {
                    return Err(to_pyerr(
                        py,
                        &Error::new(
                            cchq_core::ErrorKind::NotFound,
                            format!("`{}` is not a celery host of `{}`", s.host, self.env().name),
                        )
                        .with_hint("pass workers from `env.stale_celery_workers()`"),
                    ));
                }
                stale.push(s);
            }
            stale.sort_by(|a, b| a.host.cmp(&b.host));
            let mut hosts: Vec<String> = stale.iter().map(|s| s.host.clone()).collect();
            hosts.dedup();
            let mut observer = Observer::new(None, "Environment.kill_stale_celery_workers")?
                .with_cancel(token(cancel.as_ref()), true);
            let killed = self.operate(py, &mut observer, &hosts, move |env, t, _| async move {
                cchq_core::daily::celery::kill(&env, t.as_ref(), &stale, signal).await
            })?;
            killed
                .into_iter()
                .map(|(host, r)| host_outcome(py, "KilledWorkers", &host, "pids", r))
                .collect()
        })
    }

    /// Brings rebooted hosts back (`cchq <env> after-reboot --limit LIMIT PATTERN`): mounts the
    /// encrypted drive where there is one, starts supervisord and the units, as the CLI does.
    /// One `RebootResult` per host (an unreachable host is a result with `error`).
    #[pyo3(signature = (limit, pattern="all", *, cancel=None))]
    fn after_reboot<'py>(
        &self,
        py: Python<'py>,
        limit: &str,
        pattern: &str,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        guard(py, || {
            let hosts = self.select_within(py, pattern, limit)?;
            let env = self.env();
            let vault = match &env.vault {
                v if v.needs_opening() => py.detach(|| env.vault_without_prompt()).py_err(py)?,
                v => v.plain(),
            };
            let mut observer = Observer::new(None, "Environment.after_reboot")?
                .with_cancel(token(cancel.as_ref()), true);
            let hs = hosts.clone();
            let results = self.operate(py, &mut observer, &hosts, move |env, t, _| async move {
                cchq_core::after_reboot::run(&env, t.as_ref(), &hs, vault.as_ref()).await
            })?;
            results
                .into_iter()
                .map(|(host, r)| {
                    let d = match r {
                        Ok(rep) => to_python(py, &rep)?.cast_into::<PyDict>()?,
                        Err(e) => {
                            let d = PyDict::new(py);
                            d.set_item("host", &host)?;
                            d.set_item("error", failure_dict(py, &e)?)?;
                            d
                        }
                    };
                    record(py, "RebootResult", d.as_any())
                })
                .collect()
        })
    }

    /// The supervisor program files of the app hosts (within `limit`), as
    /// `cchq <env> update-supervisor-confs`: with `check=True` (the default) the plan only; with
    /// `check=False` the changed files written, stale ones removed and supervisord updated. A host
    /// that would lose every program file is refused (its `error`) unless `empty_hosts=True`.
    /// One `SupervisorConfs` per host; a host that failed has `error`.
    #[pyo3(signature = (limit=None, check=true, *, empty_hosts=false, cancel=None))]
    fn update_supervisor_confs<'py>(
        &self,
        py: Python<'py>,
        limit: Option<String>,
        check: bool,
        empty_hosts: bool,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        use cchq_core::services::supervisor::{Allow, apply_confs, plan_confs};
        const APP_GROUPS: &str = "webworkers:celery:pillowtop:formplayer:django_manage";
        guard(py, || {
            let hosts = match &limit {
                Some(l) => self.select_within(py, APP_GROUPS, l)?,
                None => self.select(py, APP_GROUPS)?,
            };
            let mut observer = Observer::new(None, "Environment.update_supervisor_confs")?
                .with_cancel(token(cancel.as_ref()), true);
            let hs = hosts.clone();
            let (planned, applied) = self
                .operate(py, &mut observer, &hosts, move |env, t, _| async move {
                    let planned = plan_confs(&env, t.as_ref(), &hs).await?;
                    let plans: Vec<_> = planned
                        .iter()
                        .filter_map(|(_, p)| p.as_ref().ok().cloned())
                        .collect();
                    let applied = if check {
                        Vec::new()
                    } else {
                        apply_confs(&env, t.as_ref(), &plans, Allow { empty_hosts }).await
                    };
                    Ok::<_, Error>((planned, applied))
                })?
                .py_err(py)?;
            planned
                .into_iter()
                .map(|(host, p)| {
                    let d = PyDict::new(py);
                    d.set_item("host", &host)?;
                    let (mut error, mut output, mut written) = (None, String::new(), false);
                    match p {
                        Ok(plan) => {
                            for (k, v) in [
                                ("new", &plan.new),
                                ("changed", &plan.changed),
                                ("unchanged", &plan.unchanged),
                                ("remove", &plan.remove),
                            ] {
                                d.set_item(k, v)?;
                            }
                            if let Some((_, r)) = applied.iter().find(|(h, _)| *h == host) {
                                match r {
                                    Ok(u) => {
                                        output.clone_from(&u.output);
                                        written = plan.changes();
                                    }
                                    Err(e) => error = Some(failure_dict(py, e)?),
                                }
                            }
                        }
                        Err(e) => {
                            for k in ["new", "changed", "unchanged", "remove"] {
                                d.set_item(k, PyList::empty(py))?;
                            }
                            error = Some(failure_dict(py, &e)?);
                        }
                    }
                    d.set_item("written", written)?;
                    d.set_item("output", output)?;
                    d.set_item("error", error)?;
                    record(py, "SupervisorConfs", d.as_any())
                })
                .collect()
        })
    }

    /// The vault as YAML text, or one secret (`name`: a top-level key or a dotted path), as
    /// `cchq <env> secrets view` prints it (unmasked: it is what you asked for). An encrypted
    /// vault is decrypted with `ANSIBLE_VAULT_PASSWORD` or `CCHQ_VAULT_PASSWORD_FILE` (no prompt);
    /// with `secrets_backend: aws-secrets`, AWS Secrets Manager is read.
    #[pyo3(signature = (name=None))]
    fn secrets_view(&self, py: Python<'_>, name: Option<String>) -> PyResult<String> {
        use cchq_core::vault::edit as vault_edit;
        guard(py, || {
            let env = self.env();
            let text = py.detach(|| -> Result<String, Error> {
                if let environment::Vault::Aws(aws) = &env.vault {
                    let aenv = cchq_core::secrets::aws::AwsEnv::process();
                    return match &name {
                        None => {
                            let all = aws.fetch_all(&aenv)?;
                            vault_edit::to_yaml(&cchq_core::Value::Mapping(
                                all.into_iter()
                                    .map(|(k, v)| (cchq_core::Value::String(k), v))
                                    .collect(),
                            ))
                        }
                        Some(n) => vault_edit::to_yaml(&aws.view(&aenv, n)?),
                    };
                }
                let path = env.dir.join("vault.yml");
                if !path.is_file() {
                    return Err(Error::not_found(format!(
                        "environment `{}` has no vault.yml",
                        env.name
                    )));
                }
                let (_, plain, _) = vault_edit::read(&path, || {
                    cchq_core::vault::password_from_environment()?.ok_or_else(|| {
                        Error::new(
                            cchq_core::ErrorKind::Vault,
                            "the vault is encrypted and no password was given",
                        )
                        .with_hint("set ANSIBLE_VAULT_PASSWORD or CCHQ_VAULT_PASSWORD_FILE")
                    })
                })?;
                let Some(name) = &name else { return Ok(plain) };
                let root = vault_edit::parse(&path, &plain)?;
                let value = vault_edit::lookup(&root, name).ok_or_else(|| {
                    Error::not_found(format!("the vault of `{}` has no `{name}`", env.name))
                        .with_hint(format!(
                            "top-level keys: {}; use a dotted path for nested keys",
                            vault_edit::top_level_keys(&root).join(", ")
                        ))
                })?;
                vault_edit::to_yaml(value)
            });
            text.py_err(py)
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
    /// Returns a `ConfigPlan`: `check`, `changed_files`, `forced`, `ok` (every host written to),
    /// `hosts` (a `SettingsHost` each: `files`, `drift`, `written`, `recorded`, `error`).
    /// Diffs and messages have every secret masked, as `cchq <env> update-config` shows them. An
    /// encrypted vault is decrypted with `ANSIBLE_VAULT_PASSWORD` or `CCHQ_VAULT_PASSWORD_FILE`.
    /// Running services keep the old settings until restarted (`service("commcare", "restart")`).
    #[pyo3(signature = (limit=None, check=true, *, force=false, on_event=None, cancel=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_config<'py>(
        &self,
        py: Python<'py>,
        limit: Option<String>,
        check: bool,
        force: bool,
        on_event: Option<Bound<'py, PyAny>>,
        cancel: Option<Bound<'py, PyCancel>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let timeout = timeout.map(|s| seconds(py, "timeout", s)).transpose()?;
            let mut observer = Observer::new(on_event, "Environment.update_config")?
                .with_cancel(token(cancel.as_ref()), true)
                .with_timeout(timeout);
            let env = self.env();
            let mut warnings = Vec::new();
            let hosts =
                apply::update_hosts(&env, limit.as_deref(), &mut |w| warnings.push(w.to_owned()));
            for w in &warnings {
                warn(py, w)?;
            }
            let hosts = hosts.py_err(py)?;
            let vault = py.detach(|| env.vault_without_prompt()).py_err(py)?;
            let opts = UpdateOptions { check, force };
            let hs = hosts.clone();
            let report = self
                .operate(py, &mut observer, &hosts, move |env, t, sink| async move {
                    apply::update(&env, t.as_ref(), &hs, vault.as_ref(), opts, &sink).await
                })?
                .py_err(py)?;
            observer.finish(py)?;
            record_of(py, "ConfigPlan", &report)
        })
    }

    /// Runs `manage.py <args>` with the release's Python as the app user, in the live release
    /// (`current`) or `release`, on `server` (a host, `group[N]`, `user@group[N]`; default the
    /// first `django_manage` host), without a terminal; `tee` (a path, relative to the release
    /// directory, on the host) also gets the output, refusing an existing file.
    ///
    /// `args`: the command and its arguments (a `str` is the command alone). Returns a
    /// `HostResult`: a non-zero exit is a result (`check()` raises for it); a missing release
    /// raises `NotFoundError`, an unreachable host `ConnectionError`.
    #[pyo3(signature = (args, server=None, release=None, *, tee=None, cancel=None))]
    fn django_manage<'py>(
        &self,
        py: Python<'py>,
        args: OneOrMany,
        server: Option<String>,
        release: Option<String>,
        tee: Option<PathBuf>,
        cancel: Option<Bound<'py, PyCancel>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let env = self.env();
            let tee = tee.map(|p| p.to_string_lossy().into_owned());
            let mut warnings = Vec::new();
            let manage = Manage::new(
                &env,
                server.as_deref(),
                release.as_deref(),
                tee.as_deref(),
                args.into_vec(),
                &mut |w| {
                    warnings.push(w.to_owned());
                },
            );
            for w in &warnings {
                warn(py, w)?;
            }
            let manage = Arc::new(manage.py_err(py)?);
            let mut observer = Observer::new(None, "Environment.django_manage")?
                .with_cancel(token(cancel.as_ref()), true);
            let start = Instant::now();
            let m = Arc::clone(&manage);
            let out = self
                .operate(
                    py,
                    &mut observer,
                    std::slice::from_ref(&manage.host),
                    move |env, t, _| async move { m.run(&env, t.as_ref()).await },
                )?
                .py_err(py)?;
            let result = fanout::HostResult {
                host: manage.host.clone(),
                result: Ok(out),
                duration: start.elapsed(),
            };
            host_result(py, result, &manage.command())
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let env = self.env();
        Ok(format!(
            "Environment({}, dir={})",
            PyString::new(py, &env.name).repr()?,
            PyString::new(py, &env.dir.to_string_lossy()).repr()?
        ))
    }
}

/// The vault a deploy (or a preindex's private release) needs. As the CLI: settings are rendered
/// for any host that has none (a first deploy, a new host) and with `update_config`, so an
/// encrypted vault is opened before anything starts; without a password this raises `VaultError`.
fn deploy_vault(
    py: Python<'_>,
    env: &Arc<cchq_core::Environment>,
) -> PyResult<Option<cchq_core::Value>> {
    match &env.vault {
        v if v.needs_opening() => {
            let e = Arc::clone(env);
            py.detach(|| e.vault_without_prompt()).py_err(py)
        }
        v => Ok(v.plain()),
    }
}

/// The Python side of a downtime: never asks, answers lingering processes with its policy.
struct Policy(cchq_core::downtime::OnLingering);

impl cchq_core::downtime::Operator for Policy {
    fn confirm_start(
        &mut self,
        _hosts: usize,
        _replacing: Option<&cchq_core::downtime::Record>,
    ) -> bool {
        true
    }

    fn lingering(
        &mut self,
        _found: &[(String, Vec<cchq_core::downtime::Lingering>)],
    ) -> cchq_core::downtime::OnLingering {
        self.0
    }

    fn confirm_end(&mut self, _record: &cchq_core::downtime::Record) -> bool {
        true
    }
}

/// A `Downtime`'s fields from the core's record.
fn downtime_json(r: &cchq_core::downtime::Record) -> serde_json::Value {
    serde_json::json!({"by": r.by, "message": r.message, "started_at": r.started_at, "expires_at": r.expires_at, "expired": r.expired()})
}

/// A `ServiceReport` from the core's.
fn service_report<'py>(
    py: Python<'py>,
    report: services::Report,
    warnings: &[String],
) -> PyResult<Bound<'py, PyAny>> {
    record_of(py, "ServiceReport", &service_report_json(&report, warnings))
}

/// A `ServiceReport`'s fields from the core's report.
fn service_report_json(report: &services::Report, warnings: &[String]) -> serde_json::Value {
    let ok = report.ok();
    let rows: Vec<serde_json::Value> = report
        .rows
        .iter()
        .map(|r| serde_json::json!({"host": r.host, "program": r.program, "state": r.state, "detail": r.detail, "ok": r.ok}))
        .collect();
    let unreachable: serde_json::Map<String, serde_json::Value> = report
        .unreachable
        .iter()
        .map(|(h, why)| (h.clone(), serde_json::Value::String(why.clone())))
        .collect();
    serde_json::json!({
        "rows": rows, "unreachable": unreachable, "failed_batch": report.failed_batch, "warnings": warnings, "ok": ok,
    })
}

/// A `LockInfo` from the core's lock state (the holder's token is left out: it frees the lock).
fn lock_info<'py>(py: Python<'py>, s: &deploy::lock::LockState) -> PyResult<Bound<'py, PyAny>> {
    let holder = s.holder.as_ref().map(|h| {
        serde_json::json!({"by": h.by, "release": h.release, "message": h.message, "at": h.at, "controller": h.controller, "pid": h.pid})
    });
    let v = serde_json::json!({
        "who": s.who(),
        "holder": holder,
        "heartbeat_age_secs": s.heartbeat_age_secs,
        "stale_after_secs": s.stale_after_secs,
        "liveness": {"state": if s.liveness.is_gone() { "gone" } else { "alive" }, "why": s.liveness.why()},
    });
    record_of(py, "LockInfo", &v)
}

impl PyEnvironment {
    /// Runs one deploy (or a rollback, or a preindex: `what`) and maps its outcome; `true` when a
    /// Ctrl-C came too late to stop it (it finished).
    fn run_deploy<'py>(
        &self,
        py: Python<'py>,
        opts: deploy::Options,
        what: Work,
        on_event: Option<Bound<'py, PyAny>>,
        cancellable: bool,
        timeout: Option<Duration>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let env = self.env();
        let rollback = matches!(what, Work::Rollback(_));
        let operation = match what {
            Work::Deploy => "Environment.deploy",
            Work::Rollback(_) => "Environment.rollback",
            Work::Preindex => "Environment.preindex_views",
        };
        // The core watches the token itself and stops at a safe point: `drive` must not drop it.
        let mut observer = Observer::new(on_event, operation)?
            .with_cancel(Some(opts.cancel.clone()), false)
            .with_timeout(timeout);
        let cancellable = cancellable || timeout.is_some();
        observer.context("component", Some(opts.component.to_string()));
        observer.context(
            "release",
            if rollback {
                None
            } else {
                opts.resume.clone().or_else(|| opts.name.clone())
            },
        );
        let hosts = deploy::connect_hosts(&env, &opts).py_err(py)?;
        let transport = self.transport(py, &hosts)?;
        let sink = observer.sink();
        let work = async {
            match &what {
                Work::Rollback(to) => {
                    deploy::rollback(&env, transport.as_ref(), to.as_deref(), &opts, &sink)
                        .await
                        .map(|o| (o, None))
                }
                Work::Deploy => deploy::deploy(&env, transport.as_ref(), &opts, &sink)
                    .await
                    .map(|o| (o, None)),
                Work::Preindex => deploy::preindex_views(&env, transport.as_ref(), &opts, &sink)
                    .await
                    .map(|p| (p.outcome.clone(), Some(p))),
            }
        };
        let outcome = drive(py, &mut observer, work);
        if let Err(e) = &outcome
            && e.is_instance_of::<PyKeyboardInterrupt>(py)
        {
            // A second Ctrl-C dropped the deploy's future (the first one only asks the core to
            // stop at its next safe point, which restores and unlocks itself): the core's one
            // place for it starts again what a restart it cut short had stopped, by name, and
            // frees the lock for the resume.
            finish_quietly(
                py,
                deploy::abandoned(&env, transport.as_ref(), &opts, &sink),
            );
        }
        if let Err(e) = &outcome
            && !rollback
            && e.is_instance_of::<PyKeyboardInterrupt>(py)
            && let Some(name) = opts.resume.as_ref().or(opts.name.as_ref())
        {
            // As the CLI does: leave it resumable (the release's markers hold what was done).
            finish_quietly(py, transport.close());
            return Err(interrupted_deploy(py, &env.name, name));
        }
        finish_quietly(py, transport.close());
        let (result, preindex) = match outcome? {
            Ok(o) => o,
            Err(e) => {
                // Stopped by the caller's token: `CancelledError`; by Ctrl-C: `KeyboardInterrupt`.
                let mut f = Failure::from(&e);
                f.cancelled = cancellable
                    && !observer.signalled
                    && e.kind() == cchq_core::ErrorKind::Interrupted;
                return Err(f.to_pyerr(py));
            }
        };
        let signalled = observer.signalled;
        observer.finish(py)?;
        let v = to_python(py, &result)?;
        v.set_item("component", opts.component.as_str())?;
        if let Some(p) = preindex {
            let d = PyDict::new(py);
            d.set_item("release", v)?;
            d.set_item("host", &p.host)?;
            d.set_item("pid", p.pid)?;
            d.set_item("log", &p.log)?;
            return Ok((record(py, "Preindex", d.as_any())?, signalled));
        }
        Ok((record(py, "DeployResult", &v)?, signalled))
    }
}

/// What [`PyEnvironment::run_deploy`] runs.
enum Work {
    Deploy,
    /// To this release, else the newest complete one older than current.
    Rollback(Option<String>),
    Preindex,
}

/// The `KeyboardInterrupt` for an interrupted deploy: says how to resume, and names the release
/// in its `release` attribute.
fn interrupted_deploy(py: Python<'_>, env: &str, release: &str) -> PyErr {
    let e = Error::new(
        cchq_core::ErrorKind::Interrupted,
        format!(
            "deploy of release `{release}` of `{env}` interrupted: continue it with deploy(resume={})",
            PyString::new(py, release).repr().map_or_else(|_| format!("'{release}'"), |r| r.to_string())
        ),
    )
    .with_release(release);
    Failure::from(e).to_pyerr(py)
}

/// A `Host` record of `host`.
fn host_record<'py>(py: Python<'py>, host: &cchq_core::Host) -> PyResult<Bound<'py, PyAny>> {
    #[derive(serde::Serialize)]
    struct Fields<'a> {
        name: &'a str,
        address: &'a str,
        port: Option<u16>,
        user: Option<&'a str>,
        groups: &'a [String],
        local: bool,
        route: &'static str,
        vars: &'a cchq_core::inventory::Vars,
    }
    let fields = Fields {
        name: &host.name,
        address: &host.address,
        port: host.port,
        user: host.user.as_deref(),
        groups: &host.groups,
        local: host.is_local(),
        route: host.route.as_str(),
        vars: &host.vars,
    };
    record_of(py, "Host", &fields)
}
