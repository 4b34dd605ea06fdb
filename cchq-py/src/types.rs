//! The result classes: plain, immutable records mapped from the core's types.

use std::sync::Arc;

use cchq_core::fanout;
use cchq_core::services;
use cchq_core::transport::Output;
use cchq_core::{ErrorKind, RemoteCommand};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::errors::Failure;
use crate::runtime::guard;

/// `repr()` of a string, as Python writes it.
fn r(py: Python<'_>, s: &str) -> PyResult<String> {
    Ok(PyString::new(py, s).repr()?.to_string())
}

/// `repr()` of an optional string.
fn r_opt(py: Python<'_>, s: Option<&str>) -> PyResult<String> {
    s.map_or_else(|| Ok("None".to_owned()), |s| r(py, s))
}

/// A host of an environment's inventory.
#[pyclass(module = "cchq._cchq", name = "Host", frozen)]
#[derive(Debug, Clone)]
pub struct Host {
    /// The inventory name.
    #[pyo3(get)]
    pub name: String,
    /// Where SSH connects (`ansible_host`, else the name).
    #[pyo3(get)]
    pub address: String,
    /// The SSH port (`ansible_port`); `None` for SSH's default.
    #[pyo3(get)]
    pub port: Option<u16>,
    /// The login user (`ansible_user`, else `commcare_cloud_remote_user`, else `ansible`).
    #[pyo3(get)]
    pub user: Option<String>,
    /// Every group the host is in (ancestors included, `all` excluded), sorted.
    #[pyo3(get)]
    pub groups: Vec<String>,
    /// Whether it is reached without SSH (`ansible_connection=local`).
    #[pyo3(get)]
    pub local: bool,
}

#[pymethods]
impl Host {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || {
            let groups: Vec<String> = self.groups.iter().map(|g| r(py, g)).collect::<PyResult<_>>()?;
            Ok(format!(
                "Host(name={}, address={}, port={}, user={}, groups=[{}], local={})",
                r(py, &self.name)?,
                r(py, &self.address)?,
                self.port.map_or_else(|| "None".to_owned(), |p| p.to_string()),
                r_opt(py, self.user.as_deref())?,
                groups.join(", "),
                if self.local { "True" } else { "False" },
            ))
        })
    }
}

/// What one host gave back from `Environment.run`.
#[pyclass(module = "cchq._cchq", name = "HostResult", frozen)]
#[derive(Debug)]
pub struct HostResult {
    /// The host.
    #[pyo3(get)]
    pub host: String,
    /// The exit code; `None` when the command did not run or was killed by a signal.
    #[pyo3(get)]
    pub exit_code: Option<i32>,
    /// Standard output (decoded as UTF-8, invalid bytes replaced).
    #[pyo3(get)]
    pub stdout: String,
    /// Standard error (decoded as UTF-8, invalid bytes replaced).
    #[pyo3(get)]
    pub stderr: String,
    /// Why the command could not run on the host (unreachable, timed out...), else `None`.
    #[pyo3(get)]
    pub error: Option<String>,
    /// Wall time on the host, in seconds.
    #[pyo3(get)]
    pub duration: f64,
    failure: Option<Failure>,
    command: Arc<RemoteCommand>,
}

impl HostResult {
    /// Maps the core's result.
    pub fn new(r: fanout::HostResult, command: Arc<RemoteCommand>) -> Self {
        let duration = r.duration.as_secs_f64();
        match r.result {
            Ok(out) => Self {
                host: r.host,
                exit_code: out.exit_code,
                stdout: out.stdout_str(),
                stderr: out.stderr_str(),
                error: None,
                duration,
                failure: None,
                command,
            },
            Err(e) => Self {
                host: r.host,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                error: Some(e.message().to_owned()),
                duration,
                failure: Some(Failure::from(e)),
                command,
            },
        }
    }
}

#[pymethods]
impl HostResult {
    /// Whether the command ran and exited 0.
    #[getter]
    fn ok(&self) -> bool {
        self.failure.is_none() && self.exit_code == Some(0)
    }

    /// Whether the host could not be reached (a connection error).
    #[getter]
    fn unreachable(&self) -> bool {
        self.failure.as_ref().is_some_and(|f| f.kind == ErrorKind::Connection)
    }

    /// Raises unless the command ran and exited 0: the error of the host (`cchq.ConnectionError`
    /// for an unreachable host), or `cchq.CommandFailedError` with `exit_code`, `stdout` and `stderr`.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            if let Some(f) = &self.failure {
                return Err(f.to_pyerr(py));
            }
            let out =
                Output { exit_code: self.exit_code, stdout: self.stdout.clone().into_bytes(), stderr: self.stderr.clone().into_bytes() };
            match out.check(&self.host, &self.command) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let extra = [
                        ("exit_code", self.exit_code.into_pyobject(py)?.unbind()),
                        ("stdout", PyString::new(py, &self.stdout).into_any().unbind()),
                        ("stderr", PyString::new(py, &self.stderr).into_any().unbind()),
                    ];
                    Err(Failure::from(e).to_pyerr_with(py, &extra))
                }
            }
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || {
            Ok(format!(
                "HostResult(host={}, exit_code={}, error={}, duration={:.3})",
                r(py, &self.host)?,
                self.exit_code.map_or_else(|| "None".to_owned(), |c| c.to_string()),
                r_opt(py, self.error.as_deref())?,
                self.duration
            ))
        })
    }
}

/// One program or unit on one host, after a service action.
#[pyclass(module = "cchq._cchq", name = "ServiceRow", frozen)]
#[derive(Debug, Clone)]
pub struct ServiceRow {
    /// The host.
    #[pyo3(get)]
    pub host: String,
    /// The supervisor program, systemd unit or monit service.
    #[pyo3(get)]
    pub program: String,
    /// Its state after the action (`RUNNING`, `STOPPED`, `MISSING`, `active`...).
    #[pyo3(get)]
    pub state: String,
    /// Uptime, exit description or error.
    #[pyo3(get)]
    pub detail: String,
    /// Whether it is in the state the action wanted.
    #[pyo3(get)]
    pub ok: bool,
}

impl From<services::Row> for ServiceRow {
    fn from(r: services::Row) -> Self {
        Self { host: r.host, program: r.program, state: r.state, detail: r.detail, ok: r.ok }
    }
}

#[pymethods]
impl ServiceRow {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || {
            Ok(format!(
                "ServiceRow(host={}, program={}, state={}, detail={}, ok={})",
                r(py, &self.host)?,
                r(py, &self.program)?,
                r(py, &self.state)?,
                r(py, &self.detail)?,
                if self.ok { "True" } else { "False" }
            ))
        })
    }
}

/// The outcome of `Environment.service`: rows (iterate the report for them), unreachable hosts,
/// the failed batch of a rolling restart, and the planning warnings.
#[pyclass(module = "cchq._cchq", name = "ServiceReport", frozen)]
#[derive(Debug)]
pub struct ServiceReport {
    rows: Vec<Py<ServiceRow>>,
    unreachable: Vec<(String, String)>,
    /// Hosts of a rolling restart batch that failed its health check (the roll stopped there).
    #[pyo3(get)]
    failed_batch: Vec<String>,
    /// Warnings from planning, e.g. a service with no host in `limit` (also issued as `CchqWarning`).
    #[pyo3(get)]
    warnings: Vec<String>,
    /// Whether everything ended in the wanted state, every host reached.
    #[pyo3(get)]
    ok: bool,
}

impl ServiceReport {
    /// Maps the core's report.
    pub fn new(py: Python<'_>, report: services::Report, warnings: Vec<String>) -> PyResult<Self> {
        let ok = report.ok();
        let rows = report.rows.into_iter().map(|r| Py::new(py, ServiceRow::from(r))).collect::<PyResult<_>>()?;
        Ok(Self { rows, unreachable: report.unreachable, failed_batch: report.failed_batch, warnings, ok })
    }
}

#[pymethods]
impl ServiceReport {
    /// One row per program/unit per host, in host order.
    #[getter]
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.rows)
    }

    /// Hosts that could not be reached: host -> why.
    #[getter]
    fn unreachable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (host, why) in &self.unreachable {
            d.set_item(host, why)?;
        }
        Ok(d)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, &self.rows)?.try_iter()?.into_any())
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "ServiceReport(rows={}, unreachable={}, failed_batch={}, ok={})",
            self.rows.len(),
            self.unreachable.len(),
            self.failed_batch.len(),
            if self.ok { "True" } else { "False" }
        )
    }
}
