//! The exception hierarchy: one Python class per [`ErrorKind`], all under `cchq.CchqError`.
//!
//! | `ErrorKind`     | exception                                                   |
//! |-----------------|-------------------------------------------------------------|
//! | `Config`        | `ConfigError`                                               |
//! | `NotFound`      | `NotFoundError`                                             |
//! | `Pattern`       | `PatternError`                                              |
//! | `Connection`    | `ConnectionError` (also a `builtins.ConnectionError`)       |
//! | `CommandFailed` | `CommandFailedError` (`exit_code`, `stdout`, `stderr`)      |
//! | `Usage`         | `UsageError`                                                |
//! | `Io`            | `IoError` (also a `builtins.OSError`)                       |
//! | `Vault`         | `VaultError`                                                |
//! | `LockHeld`      | `LockHeldError`                                             |
//! | `DeployFailed`  | `DeployFailedError` (`release`)                             |
//! | `Interrupted`   | `KeyboardInterrupt` (the builtin)                           |
//! | `Internal`      | `InternalError` (also every Rust panic, which never escapes) |
//!
//! `str(e)` is the message and, when there is one, `hint: ...` on a second line; `e.message` and
//! `e.hint` hold them apart. The two classes with a second builtin base are made with `type()`
//! at import (a `create_exception!` class has one base).

use cchq_core::{Error, ErrorKind};
use pyo3::exceptions::{PyConnectionError, PyException, PyKeyboardInterrupt, PyOSError, PyUserWarning};
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
create_exception!(cchq._cchq, ConfigError, CchqError, "A configuration file is missing, malformed or inconsistent.");
create_exception!(cchq._cchq, NotFoundError, CchqError, "An environment, host, group, service or release that does not exist.");
create_exception!(cchq._cchq, PatternError, CchqError, "A host pattern or server spec that is malformed or selects nothing.");
create_exception!(
    cchq._cchq,
    CommandFailedError,
    CchqError,
    "A command ran and failed; `exit_code`, `stdout` and `stderr` are set when known."
);
create_exception!(cchq._cchq, UsageError, CchqError, "Arguments that are not acceptable.");
create_exception!(cchq._cchq, VaultError, CchqError, "Decrypting or encrypting a vault failed.");
create_exception!(cchq._cchq, LockHeldError, CchqError, "A deploy lock is held by someone else.");
create_exception!(
    cchq._cchq,
    DeployFailedError,
    CchqError,
    "A deploy failed part way and can be resumed; `release` names the release when known."
);
create_exception!(cchq._cchq, InternalError, CchqError, "A bug in cchq (a Rust panic is reported as this, never as a crash).");
create_exception!(cchq._cchq, CchqWarning, PyUserWarning, "Warnings from cchq, e.g. parts of a host pattern that matched nothing.");

static CONNECTION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static IO_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const CONNECTION_ERROR_DOC: &str = "A host could not be reached or the SSH connection failed. Also a `builtins.ConnectionError`.";
const IO_ERROR_DOC: &str = "Reading or writing a file failed. Also a `builtins.OSError`.";

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
    two_base_type(py, &CONNECTION_ERROR, "ConnectionError", PyConnectionError::type_object(py), CONNECTION_ERROR_DOC)
}

/// `cchq.IoError`.
pub fn io_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    two_base_type(py, &IO_ERROR, "IoError", PyOSError::type_object(py), IO_ERROR_DOC)
}

/// Adds the exception classes to the module, with their attributes' class-level defaults.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = CchqError::type_object(py);
    base.setattr("hint", py.None())?;
    base.setattr("message", "")?;
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
    m.add("UsageError", UsageError::type_object(py))?;
    m.add("IoError", io_error(py)?)?;
    m.add("VaultError", VaultError::type_object(py))?;
    m.add("LockHeldError", LockHeldError::type_object(py))?;
    let deploy = DeployFailedError::type_object(py);
    deploy.setattr("release", py.None())?;
    m.add("DeployFailedError", deploy)?;
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
        ErrorKind::Usage => UsageError::type_object(py),
        ErrorKind::Io => io_error(py)?,
        ErrorKind::Vault => VaultError::type_object(py),
        ErrorKind::LockHeld => LockHeldError::type_object(py),
        ErrorKind::DeployFailed => DeployFailedError::type_object(py),
        ErrorKind::Interrupted => PyKeyboardInterrupt::type_object(py),
        _ => InternalError::type_object(py),
    })
}

/// A kind, a message and a hint, detached from the core's [`Error`] (which is not `Clone`), so
/// that results can keep one and raise it later (`HostResult.check()`).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The category.
    pub kind: ErrorKind,
    /// The message, without the hint.
    pub message: String,
    /// The hint.
    pub hint: Option<String>,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        Self { kind: e.kind(), message: e.message().to_owned(), hint: e.hint().map(str::to_owned) }
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
        }
    }

    /// The Python exception, with `message`, `hint` and `extra` attributes set.
    pub fn to_pyerr_with(&self, py: Python<'_>, extra: &[(&str, Py<PyAny>)]) -> PyErr {
        let build = || -> PyResult<PyErr> {
            let cls = class_of(py, self.kind)?;
            if self.kind == ErrorKind::Interrupted {
                return Ok(PyErr::from_type(cls, self.message.clone()));
            }
            let text = match &self.hint {
                Some(h) => format!("{}\nhint: {h}", self.message),
                None => self.message.clone(),
            };
            let exc = cls.call1((text,))?;
            exc.setattr("message", &self.message)?;
            exc.setattr("hint", &self.hint)?;
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
