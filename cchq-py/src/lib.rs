//! `cchq._cchq`: the Python bindings of `cchq-core`, re-exported by the `cchq` Python package.
//!
//! The bindings hold no logic of their own: they map arguments to the core's calls and the core's
//! results, events and errors to Python objects, callbacks and exceptions.
//!
//! - [`environment`]: `Environment` (load, hosts, lookup, run, service, deploy, rollback,
//!   list/clean releases, update_config, django_manage) and `list_environments`;
//! - [`types`]: the result records (`Host`, `HostResult`, `ServiceRow`, `ServiceReport`);
//! - [`errors`]: the exception hierarchy under `CchqError`, one class per `ErrorKind`;
//! - [`runtime`]: the process-wide tokio runtime, GIL release, Ctrl-C, events, panic guard.

// pyo3's macros generate public items (type objects, module init) that cannot carry docs.
#![allow(missing_docs)]

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
    m.add_class::<types::Host>()?;
    m.add_class::<types::HostResult>()?;
    m.add_class::<types::ServiceRow>()?;
    m.add_class::<types::ServiceReport>()?;
    m.add_function(wrap_pyfunction!(environment::list_environments, m)?)?;
    // A test hook: set as an attribute so that it stays out of `__all__`.
    m.setattr("_test_panic", wrap_pyfunction!(runtime::test_panic, m)?)?;
    errors::register(m)?;
    Ok(())
}
