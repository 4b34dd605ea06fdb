//! The result records: the core's results mapped onto the frozen dataclasses of `cchq._types`
//! (compared by value, picklable, `to_dict()`), which hold data only.

use cchq_core::fanout;
use cchq_core::transport::Output;
use cchq_core::{Error, RemoteCommand};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use serde::Serialize;

use crate::errors::{Failure, kind_name};

/// A record of class `kind` of `cchq._types`, from its fields as a dict.
pub fn record<'py>(
    py: Python<'py>,
    kind: &str,
    fields: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("cchq._types")?
        .getattr("_from_core")?
        .call1((kind, fields))
}

/// A serialisable value as Python objects (through JSON).
pub fn to_python<'py, T: Serialize + ?Sized>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| Failure::internal(format!("cannot serialise a result: {e}")).to_pyerr(py))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A record of class `kind` from a serialisable core value.
pub fn record_of<'py, T: Serialize + ?Sized>(
    py: Python<'py>,
    kind: &str,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    record(py, kind, &to_python(py, value)?)
}

/// `{"kind", "message", "hint"}` of an error, for a record's `failure`/`error` field.
pub fn failure_dict<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", kind_name(e.kind()))?;
    d.set_item("message", e.message())?;
    d.set_item("hint", e.hint().map(crate::errors::python_hint))?;
    Ok(d)
}

/// A record of class `kind` for one host's outcome: `{host, <field>: value, error: None}`, or,
/// when it failed, `{host, <field>: [], error: Failure}` (a per-host failure is a result).
pub fn host_outcome<'py, T: Serialize>(
    py: Python<'py>,
    kind: &str,
    host: &str,
    field: &str,
    outcome: cchq_core::Result<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("host", host)?;
    match outcome {
        Ok(v) => {
            d.set_item(field, to_python(py, &v)?)?;
            d.set_item("error", py.None())?;
        }
        Err(e) => {
            d.set_item(field, pyo3::types::PyList::empty(py))?;
            d.set_item("error", failure_dict(py, &e)?)?;
        }
    }
    record(py, kind, &d)
}

/// A `cchq.HostResult` from the core's result of `command` on one host.
pub fn host_result<'py>(
    py: Python<'py>,
    r: fanout::HostResult,
    command: &RemoteCommand,
) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("host", &r.host)?;
    d.set_item("duration", r.duration.as_secs_f64())?;
    d.set_item("command", command.to_string())?;
    match r.result {
        Ok(out) => {
            d.set_item("exit_code", out.exit_code)?;
            d.set_item("stdout", out.stdout_str())?;
            d.set_item("stderr", out.stderr_str())?;
            d.set_item("error", py.None())?;
            let failure = if out.success() {
                None
            } else {
                let checked = Output {
                    exit_code: out.exit_code,
                    stdout: out.stdout.clone(),
                    stderr: out.stderr.clone(),
                };
                checked.check(&r.host, command).err()
            };
            d.set_item(
                "failure",
                failure.as_ref().map(|e| failure_dict(py, e)).transpose()?,
            )?;
            d.set_item("stdout_bytes", PyBytes::new(py, &out.stdout))?;
            d.set_item("stderr_bytes", PyBytes::new(py, &out.stderr))?;
        }
        Err(e) => {
            d.set_item("exit_code", py.None())?;
            d.set_item("stdout", "")?;
            d.set_item("stderr", "")?;
            d.set_item("error", e.message())?;
            d.set_item("failure", failure_dict(py, &e)?)?;
        }
    }
    record(py, "HostResult", &d)
}
