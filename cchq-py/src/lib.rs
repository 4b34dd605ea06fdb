//! `cchq._cchq`: the Python bindings of `cchq-core`, re-exported by the `cchq` Python package.
//!
//! The bindings hold no logic of their own: they map arguments to the core's calls and the core's
//! results, events and errors to Python objects, callbacks and exceptions.
//!
//! - [`environment`]: `Environment` (load, hosts, lookup, run, service, deploy, rollback,
//!   list/clean releases, lock, downtime status, check_services, after_reboot,
//!   update_supervisor_confs, secrets_view, update_config, django_manage) and `list_environments`;
//! - [`types`]: the core's results as the records of `cchq._types` (frozen dataclasses);
//! - [`cancel`]: `Cancel`, the token that stops an operation from any thread;
//! - [`errors`]: the exception hierarchy under `CchqError`, one class per `ErrorKind`;
//! - [`runtime`]: the process-wide tokio runtime, GIL release, Ctrl-C, events, panic guard.

// pyo3's macros generate public items (type objects, module init) that cannot carry docs.
#![allow(missing_docs)]

pub mod cancel;
pub mod environment;
pub mod errors;
pub mod runtime;
pub mod types;

use pyo3::prelude::*;

/// The Rust half of the `cchq` package; use it through `import cchq`.
#[pymodule]
#[pyo3(name = "_cchq")]
fn cchq_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<environment::PyEnvironment>()?;
    m.add_class::<cancel::PyCancel>()?;
    m.add_function(wrap_pyfunction!(environment::list_environments, m)?)?;
    // A test hook: set as an attribute so that it stays out of `__all__`.
    m.setattr("_test_panic", wrap_pyfunction!(runtime::test_panic, m)?)?;
    m.setattr("_error", wrap_pyfunction!(errors::make_error, m)?)?;
    m.setattr("_python_hint", wrap_pyfunction!(errors::python_hint_py, m)?)?;
    errors::register(m)?;
    Ok(())
}
