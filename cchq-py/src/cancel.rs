//! `cchq.Cancel`: a token that stops an operation from any thread (or from `asyncio`, through
//! `cchq.aio`), wrapping the core's [`cchq_core::cancel::Cancel`].

use pyo3::prelude::*;

/// A cancellation token: pass it as `cancel=` to an operation, call `cancel()` from any thread.
///
/// A deploy (or rollback) stops at its next safe point, never in the middle of the switch: the
/// programs its restart had stopped are started again, the lock is released, and it raises
/// `cchq.CancelledError` whose `release` names the release to resume. Any other operation is
/// dropped at once (its remote commands are stopped) and raises `cchq.CancelledError`.
/// A token fired before the operation starts stops it before it does anything. One token may
/// serve several operations; it stays fired.
#[pyclass(module = "cchq._cchq", name = "Cancel", frozen)]
#[derive(Debug, Clone, Default)]
pub struct PyCancel {
    pub inner: cchq_core::cancel::Cancel,
}

#[pymethods]
impl PyCancel {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Fires the token (from any thread); `reason` is shown in the error. Firing it again keeps
    /// the first reason.
    #[pyo3(signature = (reason="cancelled"))]
    fn cancel(&self, reason: &str) {
        self.inner.cancel(reason);
    }

    /// Whether the token was fired.
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Why the token was fired, once it was.
    #[getter]
    fn reason(&self) -> Option<String> {
        self.inner.reason()
    }

    fn __repr__(&self) -> String {
        match self.inner.reason() {
            Some(r) => format!("Cancel(cancelled, reason={r:?})"),
            None => "Cancel()".to_owned(),
        }
    }
}
