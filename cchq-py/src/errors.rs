//! The exception hierarchy: one Python class per [`ErrorKind`], all under `cchq.CchqError`.
//!
//! | `ErrorKind`     | exception                                                   |
//! |-----------------|-------------------------------------------------------------|
//! | `Config`        | `ConfigError`                                               |
//! | `NotFound`      | `NotFoundError`                                             |
//! | `Pattern`       | `PatternError`                                              |
//! | `Connection`    | `ConnectionError` (also a `builtins.ConnectionError`)       |
//! | `CommandFailed` | `CommandFailedError` (`exit_code`, `stdout`, `stderr`)      |
//! | `Usage`         | `UsageError` (also a `builtins.ValueError`)                 |
//! | `Io`            | `IoError` (also a `builtins.OSError`)                       |
//! | `Vault`         | `VaultError`                                                |
//! | `LockHeld`      | `LockHeldError`                                             |
//! | `DeployFailed`  | `DeployFailedError` (`release`)                             |
//! | `Interrupted`   | `KeyboardInterrupt` (the builtin); `CancelledError` when a  |
//! |                 | `cchq.Cancel` token stopped it                              |
//! | `Internal`      | `InternalError` (also every Rust panic, which never escapes) |
//!
//! `str(e)` is the message and, when there is one, `hint: ...` on a second line; `e.message` and
//! `e.hint` hold them apart. Every exception also has `kind` (the `ErrorKind` in snake case) and,
//! where the core knows them, `release`, `phase`, `step`, `hosts`, `host` and `holder`. Hints are
//! worded for Python ([`python_hint`]: `deploy(resume='...')`, not `deploy --resume ...`). The
//! three classes with a second builtin base are made with `type()` at import (a
//! `create_exception!` class has one base).

use cchq_core::{Error, ErrorKind};
use pyo3::exceptions::{
    PyConnectionError, PyException, PyKeyboardInterrupt, PyOSError, PyUserWarning, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTypeInfo, create_exception};

create_exception!(
    cchq._cchq,
    CchqError,
    PyException,
    "Base class of every cchq error. `str(e)` is the message and the hint; `e.message` and `e.hint` hold them apart."
);
create_exception!(
    cchq._cchq,
    ConfigError,
    CchqError,
    "A configuration file is missing, malformed or inconsistent."
);
create_exception!(
    cchq._cchq,
    NotFoundError,
    CchqError,
    "An environment, host, group, service or release that does not exist."
);
create_exception!(
    cchq._cchq,
    PatternError,
    CchqError,
    "A host pattern or server spec that is malformed or selects nothing."
);
create_exception!(
    cchq._cchq,
    CommandFailedError,
    CchqError,
    "A command ran and failed; `exit_code`, `stdout` and `stderr` are set when known."
);
create_exception!(
    cchq._cchq,
    CancelledError,
    CchqError,
    "The operation was stopped by its `cchq.Cancel` token (or by `asyncio` cancelling `cchq.aio`); `release` names an interrupted deploy's release, to resume it."
);
create_exception!(
    cchq._cchq,
    VaultError,
    CchqError,
    "Decrypting or encrypting a vault failed."
);
create_exception!(
    cchq._cchq,
    LockHeldError,
    CchqError,
    "A deploy lock is held by someone else."
);
create_exception!(
    cchq._cchq,
    DeployFailedError,
    CchqError,
    "A deploy failed part way and can be resumed; `release` names the release when known."
);
create_exception!(
    cchq._cchq,
    InternalError,
    CchqError,
    "A bug in cchq (a Rust panic is reported as this, never as a crash)."
);
create_exception!(
    cchq._cchq,
    CchqWarning,
    PyUserWarning,
    "Warnings from cchq, e.g. parts of a host pattern that matched nothing."
);

static CONNECTION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static IO_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static USAGE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const CONNECTION_ERROR_DOC: &str =
    "A host could not be reached or the SSH connection failed. Also a `builtins.ConnectionError`.";
const IO_ERROR_DOC: &str = "Reading or writing a file failed. Also a `builtins.OSError`.";
const USAGE_ERROR_DOC: &str = "Arguments that are not acceptable (an unknown component, action or release name...). Also a `builtins.ValueError`.";

/// `class <name>(CchqError, <builtin>)`, made once.
fn two_base_type<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    builtin: Bound<'py, PyType>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ty = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let bases = PyTuple::new(py, [CchqError::type_object(py), builtin])?;
        let ns = PyDict::new(py);
        ns.set_item("__module__", "cchq._cchq")?;
        ns.set_item("__doc__", doc)?;
        let made = PyType::type_object(py).call1((name, bases, ns))?;
        Ok(made.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py).clone())
}

/// `cchq.ConnectionError`.
pub fn connection_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    two_base_type(
        py,
        &CONNECTION_ERROR,
        "ConnectionError",
        PyConnectionError::type_object(py),
        CONNECTION_ERROR_DOC,
    )
}

/// `cchq.IoError`.
pub fn io_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    two_base_type(
        py,
        &IO_ERROR,
        "IoError",
        PyOSError::type_object(py),
        IO_ERROR_DOC,
    )
}

/// `cchq.UsageError`.
pub fn usage_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    two_base_type(
        py,
        &USAGE_ERROR,
        "UsageError",
        PyValueError::type_object(py),
        USAGE_ERROR_DOC,
    )
}

/// The attributes every cchq exception has, with their class-level defaults.
const DETAIL_ATTRS: [&str; 6] = ["release", "phase", "step", "host", "holder", "kind"];

/// Adds the exception classes to the module, with their attributes' class-level defaults.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = CchqError::type_object(py);
    base.setattr("hint", py.None())?;
    base.setattr("message", "")?;
    for attr in DETAIL_ATTRS {
        base.setattr(attr, py.None())?;
    }
    base.setattr("hosts", pyo3::types::PyTuple::empty(py))?;
    base.setattr("completed", pyo3::types::PyTuple::empty(py))?;
    m.add("CchqError", &base)?;
    m.add("ConfigError", ConfigError::type_object(py))?;
    m.add("NotFoundError", NotFoundError::type_object(py))?;
    m.add("PatternError", PatternError::type_object(py))?;
    m.add("ConnectionError", connection_error(py)?)?;
    let cmd = CommandFailedError::type_object(py);
    for attr in ["exit_code", "stdout", "stderr"] {
        cmd.setattr(attr, py.None())?;
    }
    m.add("CommandFailedError", cmd)?;
    m.add("UsageError", usage_error(py)?)?;
    m.add("CancelledError", CancelledError::type_object(py))?;
    m.add("IoError", io_error(py)?)?;
    m.add("VaultError", VaultError::type_object(py))?;
    m.add("LockHeldError", LockHeldError::type_object(py))?;
    m.add("DeployFailedError", DeployFailedError::type_object(py))?;
    m.add("InternalError", InternalError::type_object(py))?;
    m.add("CchqWarning", CchqWarning::type_object(py))?;
    Ok(())
}

/// The class an error kind is raised as.
fn class_of(py: Python<'_>, kind: ErrorKind) -> PyResult<Bound<'_, PyType>> {
    Ok(match kind {
        ErrorKind::Config => ConfigError::type_object(py),
        ErrorKind::NotFound => NotFoundError::type_object(py),
        ErrorKind::Pattern => PatternError::type_object(py),
        ErrorKind::Connection => connection_error(py)?,
        ErrorKind::CommandFailed => CommandFailedError::type_object(py),
        ErrorKind::Usage => usage_error(py)?,
        ErrorKind::Io => io_error(py)?,
        ErrorKind::Vault => VaultError::type_object(py),
        ErrorKind::LockHeld => LockHeldError::type_object(py),
        ErrorKind::DeployFailed => DeployFailedError::type_object(py),
        ErrorKind::Interrupted => PyKeyboardInterrupt::type_object(py),
        _ => InternalError::type_object(py),
    })
}

/// The name of a kind, as Python sees it (`e.kind`, `Failure.kind`): snake case.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "config",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Pattern => "pattern",
        ErrorKind::Connection => "connection",
        ErrorKind::CommandFailed => "command_failed",
        ErrorKind::Usage => "usage",
        ErrorKind::Io => "io",
        ErrorKind::Vault => "vault",
        ErrorKind::LockHeld => "lock_held",
        ErrorKind::DeployFailed => "deploy_failed",
        ErrorKind::Interrupted => "interrupted",
        _ => "internal",
    }
}

/// The kind of a name from [`kind_name`].
fn kind_of(name: &str) -> ErrorKind {
    [
        ErrorKind::Config,
        ErrorKind::NotFound,
        ErrorKind::Pattern,
        ErrorKind::Connection,
        ErrorKind::CommandFailed,
        ErrorKind::Usage,
        ErrorKind::Io,
        ErrorKind::Vault,
        ErrorKind::LockHeld,
        ErrorKind::DeployFailed,
        ErrorKind::Interrupted,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
    .unwrap_or(ErrorKind::Internal)
}

/// A `repr()`-like Python string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A hint worded for Python: the CLI's commands and flags that the core's hints name become the
/// methods and keyword arguments of `cchq.Environment` that do the same.
pub fn python_hint(hint: &str) -> String {
    use std::sync::LazyLock;
    type Render = fn(&regex::Captures<'_>) -> String;
    type Rewrite = (regex::Regex, Render);
    static REWRITES: LazyLock<Vec<Rewrite>> = LazyLock::new(|| {
        let rules: Vec<(&str, Render)> = vec![
            (r"`(?:cchq \S+ )?deploy --resume ([^`\s]+)`", |c| {
                format!("`deploy(resume={})`", lit(&c[1]))
            }),
            (r"`(?:cchq \S+ )?deploy --update-config`", |_| {
                "`deploy(update_config=True)`".to_owned()
            }),
            (r"`(?:cchq \S+ )?update-config --check`", |_| {
                "`update_config(check=True)`".to_owned()
            }),
            (r"`(?:cchq \S+ )?update-config`", |_| {
                "`update_config(check=False)`".to_owned()
            }),
            (r"`--lock-wait SECONDS`", |_| {
                "`lock_wait=SECONDS`".to_owned()
            }),
            (r"`cchq \S+ hosts`", |_| "`env.hosts()`".to_owned()),
            (r"`cchq \S+ lock status`", |_| {
                "`env.lock_status()`".to_owned()
            }),
            (r"`cchq \S+ lock release --force`", |_| {
                "`env.release_lock(force=True)`".to_owned()
            }),
            (r"`cchq \S+ lock release`", |_| {
                "`env.release_lock()`".to_owned()
            }),
            (r"`cchq \S+ rollback --to ([^`\s]+)`", |c| {
                format!("`env.rollback(to={})`", lit(&c[1]))
            }),
            (r"`cchq \S+ service (\S+) (\S+) --limit ([^`\s]+)`", |c| {
                format!(
                    "`env.service({}, {}, limit={})`",
                    lit(&c[1]),
                    lit(&c[2]),
                    lit(&c[3])
                )
            }),
            (r"`cchq \S+ service (\S+) ([^`\s]+)`", |c| {
                format!("`env.service({}, {})`", lit(&c[1]), lit(&c[2]))
            }),
            (r"`(?:cchq \S+ )?list-releases`", |_| {
                "`env.list_releases()`".to_owned()
            }),
            (r"`(?:cchq \S+ )?clean-releases`", |_| {
                "`env.clean_releases()`".to_owned()
            }),
            (r"`(?:cchq \S+ )?downtime end`", |_| {
                "`env.downtime_end()`".to_owned()
            }),
            (r"`(?:cchq \S+ )?downtime status`", |_| {
                "`env.downtime_status()`".to_owned()
            }),
            (r"`--commcare-rev`", |_| "`rev=`".to_owned()),
            (r"`--force`", |_| "`force=True`".to_owned()),
            (r"`--only`", |_| "`only=`".to_owned()),
            (r"pass `--environments DIR`", |_| {
                "pass `environments=DIR`".to_owned()
            }),
            (r"e\.g\. --only ", |_| "e.g. only=".to_owned()),
        ];
        rules
            .into_iter()
            .filter_map(|(re, f)| regex::Regex::new(re).ok().map(|r| (r, f)))
            .collect()
    });
    let mut out = hint.to_owned();
    for (re, f) in REWRITES.iter() {
        out = re
            .replace_all(&out, |c: &regex::Captures<'_>| f(c))
            .into_owned();
    }
    out
}

/// A kind, a message, a hint and the details, detached from the core's [`Error`] (which is not
/// `Clone`), so that results can keep one and raise it later.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The category.
    pub kind: ErrorKind,
    /// The message, without the hint.
    pub message: String,
    /// The hint, worded for Python.
    pub hint: Option<String>,
    /// The structured details, where known.
    pub details: cchq_core::Details,
    /// Raised as `cchq.CancelledError` (a `cchq.Cancel` token stopped it), not `KeyboardInterrupt`.
    pub cancelled: bool,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind(),
            message: e.message().to_owned(),
            hint: e.hint().map(python_hint),
            details: e.details().cloned().unwrap_or_default(),
            cancelled: false,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::from(&e)
    }
}

impl Failure {
    /// An internal error (a bug), e.g. from a panic.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
            hint: Some("this is a bug in cchq: please report it with the traceback".to_owned()),
            details: cchq_core::Details::default(),
            cancelled: false,
        }
    }

    /// The Python exception, with `message`, `hint`, `kind`, the details and `extra` set.
    pub fn to_pyerr_with(&self, py: Python<'_>, extra: &[(&str, Py<PyAny>)]) -> PyErr {
        let build = || -> PyResult<PyErr> {
            let text = match &self.hint {
                Some(h) => format!("{}\nhint: {h}", self.message),
                None => self.message.clone(),
            };
            let exc = if self.cancelled {
                CancelledError::type_object(py).call1((text,))?
            } else if self.kind == ErrorKind::Interrupted {
                // The builtin: no `message`/`hint` class attributes, so set them all.
                PyKeyboardInterrupt::type_object(py).call1((text,))?
            } else {
                class_of(py, self.kind)?.call1((text,))?
            };
            exc.setattr("message", &self.message)?;
            exc.setattr("hint", &self.hint)?;
            exc.setattr("kind", kind_name(self.kind))?;
            let d = &self.details;
            exc.setattr("release", &d.release)?;
            exc.setattr("phase", &d.phase)?;
            exc.setattr("step", &d.step)?;
            exc.setattr("holder", &d.holder)?;
            exc.setattr("hosts", pyo3::types::PyTuple::new(py, &d.hosts)?)?;
            exc.setattr(
                "host",
                if d.hosts.len() == 1 {
                    Some(d.hosts[0].as_str())
                } else {
                    None
                },
            )?;
            for (k, v) in extra {
                exc.setattr(*k, v)?;
            }
            Ok(PyErr::from_value(exc))
        };
        build().unwrap_or_else(|e| e)
    }

    /// The Python exception.
    pub fn to_pyerr(&self, py: Python<'_>) -> PyErr {
        self.to_pyerr_with(py, &[])
    }
}

/// `_cchq._python_hint(hint)`: [`python_hint`], for the tests.
#[pyfunction]
#[pyo3(name = "_python_hint")]
pub fn python_hint_py(hint: &str) -> String {
    python_hint(hint)
}

/// `_cchq._error(kind, message, hint, extra)`: the exception of a recorded failure
/// (`HostResult.check()`), with the attributes in `extra` set.
#[pyfunction]
#[pyo3(name = "_error", signature = (kind, message, hint=None, extra=None))]
pub fn make_error(
    py: Python<'_>,
    kind: &str,
    message: String,
    hint: Option<String>,
    extra: Option<Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let f = Failure {
        kind: kind_of(kind),
        message,
        hint,
        details: cchq_core::Details::default(),
        cancelled: false,
    };
    let mut attrs = Vec::new();
    if let Some(extra) = extra {
        for (k, v) in extra.iter() {
            attrs.push((k.extract::<String>()?, v.unbind()));
        }
    }
    let refs: Vec<(&str, Py<PyAny>)> = attrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone_ref(py)))
        .collect();
    Ok(f.to_pyerr_with(py, &refs).into_value(py).into_any())
}

/// The Python exception for a core error.
pub fn to_pyerr(py: Python<'_>, err: &Error) -> PyErr {
    Failure::from(err).to_pyerr(py)
}

/// Extension: `.py_err(py)?` on core results.
pub trait IntoPyResult<T> {
    /// Maps the core error to its Python exception.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, &e))
    }
}
