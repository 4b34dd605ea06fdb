//! How blocking work runs: one tokio runtime per process, the GIL released while waiting,
//! Ctrl-C honoured, events delivered to a Python callback on the calling thread, and no Rust
//! panic ever reaching Python.
//!
//! [`drive`] is the one place an operation's future is awaited. It polls the future on the
//! calling thread inside `Runtime::block_on` with the GIL released, and every [`SIGNAL_POLL`] (or
//! as soon as an event arrives) comes back to the interpreter: it hands pending events to the
//! `on_event` callback and calls `PyErr_CheckSignals`, so Ctrl-C raises `KeyboardInterrupt`.
//! Callbacks run outside the runtime, so they may call cchq again.

use std::any::Any;
use std::ffi::CString;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cchq_core::Error;
use cchq_core::events::{Event, EventSink};
use futures::FutureExt;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::errors::{CchqWarning, Failure};

/// How often a running operation comes back to the interpreter to check for signals.
pub const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// How long closing a transport may take after an operation (also after Ctrl-C).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The process-wide runtime, keyed by the pid that made it: after `os.fork()` the child's copy
/// of the parent's runtime has no worker threads, so the child makes (and keeps) its own.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The tokio runtime of this process, made on first use.
pub fn runtime() -> Result<&'static Runtime, Error> {
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, rt)) = *slot
        && owner == pid
    {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cchq-worker")
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    // Lives as long as the process: worker threads must never be torn down under a caller.
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The `InternalError` for a panic.
fn panic_error(py: Python<'_>, payload: &(dyn Any + Send)) -> PyErr {
    Failure::internal(format!("internal error in cchq: {}", panic_text(payload))).to_pyerr(py)
}

/// Runs `f`, turning a Rust panic into `cchq.InternalError` (pyo3 would raise a
/// `PanicException`, a `BaseException` that ordinary `except Exception` does not catch).
pub fn guard<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(panic_error(py, payload.as_ref())))
}

/// Issues a Python warning of class `cchq.CchqWarning`, attributed to the caller of cchq.
pub fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    PyErr::warn(py, &py.get_type::<CchqWarning>(), &text, 1)
}

/// An event as a dict, keys in the order the core declares them (`event` first): serde's JSON
/// read by Python's `json`.
pub fn event_to_py<'py>(py: Python<'py>, event: &Event) -> PyResult<Bound<'py, PyDict>> {
    let text = serde_json::to_string(event)
        .map_err(|e| Failure::internal(format!("cannot serialise an event: {e}")).to_pyerr(py))?;
    Ok(py
        .import("json")?
        .call_method1("loads", (text,))?
        .cast_into::<PyDict>()?)
}

/// Seconds since the epoch, now.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The [`EventSink`] handed to the core: queues events, with the time they happened, for the
/// calling thread (never blocks, never touches Python).
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: UnboundedSender<(Event, f64)>,
}

impl EventSink for ChannelSink {
    fn emit(&self, event: &Event) {
        let _ = self.tx.send((event.clone(), now()));
    }
}

/// The `on_event` side of an operation: the callback, its queue, the first exception it raised,
/// and the `cchq` logger every event also goes to.
///
/// Every event is a dict with the core's keys, plus `timestamp` (seconds since the epoch, when it
/// happened), `phase` on the step events of a deploy (the phase they ran in), and the context set
/// with [`Observer::context`] (`component`, `release` of a deploy).
///
/// Logging: the logger `cchq` (`cchq.host.<host>` for an event of one host) gets each event, at
/// INFO (a warning at WARNING, a failed step or phase at ERROR, output at DEBUG), with the event
/// dict as `record.cchq_event`.
///
/// Callback exceptions: the first `Exception` raised by the callback is kept, the callback is not
/// called again, the operation runs to its end (a half-done service restart is worse than a late
/// error), and then that exception is raised (see [`Observer::finish`]). A `BaseException` that is
/// not an `Exception` (`KeyboardInterrupt`, `SystemExit`) stops the operation at once, as Ctrl-C does.
pub struct Observer<'py> {
    callback: Option<Bound<'py, PyAny>>,
    tx: UnboundedSender<(Event, f64)>,
    rx: UnboundedReceiver<(Event, f64)>,
    error: Option<PyErr>,
    operation: &'static str,
    context: Vec<(&'static str, Option<String>)>,
    phase: Option<String>,
    logger: Option<Bound<'py, PyAny>>,
    /// A token that stops the operation (see [`drive`]).
    pub cancel: Option<cchq_core::cancel::Cancel>,
    /// Whether [`drive`] drops the work when `cancel` fires (`false`: the work watches the token
    /// itself and ends at a safe point, as a deploy does; the first Ctrl-C then fires the token).
    pub abort_on_cancel: bool,
    /// Set when Ctrl-C fired `cancel` (not the caller).
    pub signalled: bool,
    /// When `cancel` fires by itself (`timeout=`), and after how long.
    deadline: Option<(std::time::Instant, Duration)>,
}

impl<'py> Observer<'py> {
    /// An observer calling `callback` (if any) with each event as a dict; `TypeError` when the
    /// callback is not callable (before anything runs).
    pub fn new(callback: Option<Bound<'py, PyAny>>, operation: &'static str) -> PyResult<Self> {
        if let Some(cb) = &callback
            && !cb.is_callable()
        {
            return Err(PyTypeError::new_err(format!(
                "on_event must be callable, not {}",
                cb.get_type().name()?
            )));
        }
        let (tx, rx) = unbounded_channel();
        Ok(Self {
            callback,
            tx,
            rx,
            error: None,
            operation,
            context: Vec::new(),
            phase: None,
            logger: None,
            cancel: None,
            abort_on_cancel: true,
            signalled: false,
            deadline: None,
        })
    }

    /// With a cancel token (a `cchq.Cancel`).
    #[must_use]
    pub fn with_cancel(mut self, cancel: Option<cchq_core::cancel::Cancel>, abort: bool) -> Self {
        self.cancel = cancel;
        self.abort_on_cancel = abort;
        self
    }

    /// With a time limit: `cancel` (made when there is none) fires once it has passed.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        if let Some(t) = timeout {
            self.cancel
                .get_or_insert_with(cchq_core::cancel::Cancel::new);
            self.deadline = Some((std::time::Instant::now() + t, t));
        }
        self
    }

    /// Adds `key: value` to every event from now on (replacing an earlier value of `key`).
    pub fn context(&mut self, key: &'static str, value: Option<String>) {
        self.context.retain(|(k, _)| *k != key);
        self.context.push((key, value));
    }

    /// The sink to give the core.
    pub fn sink(&self) -> ChannelSink {
        ChannelSink {
            tx: self.tx.clone(),
        }
    }

    /// The event as the callback and the logger see it.
    fn decorate(
        &mut self,
        py: Python<'py>,
        event: &Event,
        at: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = event_to_py(py, event)?;
        match event {
            Event::Phase {
                phase, ok: None, ..
            } => self.phase = Some(phase.clone()),
            Event::Started { .. }
            | Event::Finished { .. }
            | Event::Output { .. }
            | Event::Line { .. }
                if self.operation.contains("deploy") || self.operation.contains("rollback") =>
            {
                d.set_item("phase", &self.phase)?;
            }
            _ => {}
        }
        for (k, v) in &self.context {
            d.set_item(*k, v)?;
        }
        d.set_item("timestamp", at)?;
        Ok(d)
    }

    /// Logs one event to `cchq` (or `cchq.host.<host>`).
    fn log(&mut self, py: Python<'py>, event: &Event, d: &Bound<'py, PyDict>) -> PyResult<()> {
        const DEBUG: i32 = 10;
        const INFO: i32 = 20;
        const WARNING: i32 = 30;
        const ERROR: i32 = 40;
        let logging = py.import("logging")?;
        let base = match &self.logger {
            Some(l) => l.clone(),
            None => {
                let l = logging.call_method1("getLogger", ("cchq",))?;
                self.logger = Some(l.clone());
                l
            }
        };
        let (level, host, text) = match event {
            Event::Started { host, step } => (INFO, Some(host), format!("{host}: {step} started")),
            Event::Finished {
                host,
                step,
                ok,
                duration_ms,
            } => (
                if *ok { INFO } else { ERROR },
                Some(host),
                format!(
                    "{host}: {step} {} in {duration_ms} ms",
                    if *ok { "done" } else { "FAILED" }
                ),
            ),
            Event::Phase {
                phase,
                ok: None,
                detail,
                ..
            } => (
                INFO,
                None,
                if detail.is_empty() {
                    format!("phase {phase}")
                } else {
                    format!("phase {phase} ({detail})")
                },
            ),
            Event::Phase {
                phase,
                ok: Some(ok),
                duration_ms,
                ..
            } => (
                if *ok { INFO } else { ERROR },
                None,
                format!(
                    "phase {phase} {} in {} ms",
                    if *ok { "done" } else { "FAILED" },
                    duration_ms.unwrap_or(0)
                ),
            ),
            Event::Output { host, step, text } => (
                DEBUG,
                Some(host),
                format!("{host} [{step}] {}", text.trim_end()),
            ),
            Event::Line {
                host, step, text, ..
            } => (DEBUG, Some(host), format!("{host} [{step}] {text}")),
            Event::Warning { host, message } => (WARNING, host.as_ref(), message.clone()),
            Event::Notification {
                stage,
                channel,
                target,
                ok,
            } => (
                INFO,
                None,
                format!(
                    "notification ({stage}) by {channel} to {target}: {}",
                    if *ok { "sent" } else { "not sent" }
                ),
            ),
            _ => (INFO, None, serde_json::to_string(event).unwrap_or_default()),
        };
        let logger = match host {
            Some(h) => base.call_method1("getChild", (format!("host.{}", h.replace('.', "_")),))?,
            None => base,
        };
        if !logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
            return Ok(());
        }
        let extra = PyDict::new(py);
        extra.set_item("cchq_event", d)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        logger.call_method("log", (level, "%s", text), Some(&kwargs))?;
        Ok(())
    }

    /// Logs one event and calls the callback with it. `Err` only for an exception that must stop
    /// the operation.
    fn deliver(&mut self, py: Python<'py>, event: &Event, at: f64) -> PyResult<()> {
        let d = self.decorate(py, event, at)?;
        // A failing log handler is the logging module's business (it prints and goes on); but
        // Ctrl-C may land while the logging code runs, and that `KeyboardInterrupt` is not lost.
        if let Err(e) = self.log(py, event, &d)
            && !e.is_instance_of::<PyException>(py)
        {
            return Err(e);
        }
        let Some(cb) = &self.callback else {
            return Ok(());
        };
        if self.error.is_some() {
            return Ok(());
        }
        match cb.call1((d,)) {
            Ok(_) => Ok(()),
            Err(e) if e.is_instance_of::<PyException>(py) => {
                self.error = Some(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What an exception raised while the work runs does: work that watches its token (a deploy)
    /// is asked to stop at its next safe point by the first Ctrl-C, as the CLI does (`Ok`); a
    /// second one, or any other exception, drops it at once (`Err`).
    fn interrupted(&mut self, py: Python<'py>, e: PyErr) -> PyResult<()> {
        match (&self.cancel, self.abort_on_cancel, self.signalled) {
            (Some(token), false, false) if e.is_instance_of::<PyKeyboardInterrupt>(py) => {
                self.signalled = true;
                token.cancel("Ctrl-C");
                let _ = warn(
                    py,
                    "Ctrl-C: stopping at the next safe point (programs the restart stopped are started again, the lock is released); press it again to stop at once",
                );
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Delivers every queued event.
    fn drain(&mut self, py: Python<'py>) -> PyResult<()> {
        while let Ok((ev, at)) = self.rx.try_recv() {
            self.deliver(py, &ev, at)?;
        }
        Ok(())
    }

    /// After the operation: raises the callback's exception, if it raised one (with a note, on
    /// Python 3.11+, saying that the operation completed first).
    pub fn finish(mut self, py: Python<'py>) -> PyResult<()> {
        self.drain(py)?;
        match self.error.take() {
            None => Ok(()),
            Some(e) => {
                let exc = e.value(py);
                if exc.hasattr("add_note")? {
                    let note = format!(
                        "raised by the on_event callback of cchq `{}`; the callback was not called again, and the operation ran to its end before this was re-raised",
                        self.operation
                    );
                    exc.call_method1("add_note", (note,))?;
                }
                Err(e)
            }
        }
    }
}

/// The exception of an operation stopped by its `cchq.Cancel` token.
pub fn cancelled_error(
    py: Python<'_>,
    operation: &str,
    cancel: &cchq_core::cancel::Cancel,
) -> PyErr {
    let why = cancel.reason().unwrap_or_else(|| "cancelled".to_owned());
    let mut f = Failure::from(cchq_core::Error::new(
        cchq_core::ErrorKind::Interrupted,
        format!("`{operation}` cancelled ({why})"),
    ));
    f.cancelled = true;
    f.to_pyerr(py)
}

enum Step<T> {
    Done(std::thread::Result<T>),
    Event(Event, f64),
    Tick,
    Cancelled,
}

/// Completes when `cancel` fires; never without one.
async fn fired(cancel: Option<&cchq_core::cancel::Cancel>) {
    match cancel {
        Some(c) => c.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Awaits `fut` on the process runtime with the GIL released, delivering events to `observer`
/// and checking for signals every [`SIGNAL_POLL`]. Ctrl-C (or a callback raising a
/// `BaseException`) drops the future, which cancels the work in flight, and raises; so does the
/// observer's cancel token when it fires (`cchq.CancelledError`), unless the work watches that
/// token itself (`abort_on_cancel` false). A panic in the future becomes `cchq.InternalError`.
pub fn drive<'py, T, F>(py: Python<'py>, observer: &mut Observer<'py>, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = T> + Send,
{
    let rt = runtime().map_err(|e| crate::errors::to_pyerr(py, &e))?;
    let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
    let cancel = observer.cancel.clone().filter(|_| observer.abort_on_cancel);
    let outcome = loop {
        if let (Some((at, after)), Some(token)) = (observer.deadline, &observer.cancel)
            && std::time::Instant::now() >= at
        {
            token.cancel(format!("timed out after {} s", after.as_secs_f64()));
            observer.deadline = None;
        }
        let rx = &mut observer.rx;
        let work = &mut fut;
        let token = cancel.as_ref();
        let step = py.detach(|| {
            rt.block_on(async {
                tokio::select! {
                    biased;
                    out = work => Step::Done(out),
                    Some((ev, at)) = rx.recv() => Step::Event(ev, at),
                    () = fired(token) => Step::Cancelled,
                    () = tokio::time::sleep(SIGNAL_POLL) => Step::Tick,
                }
            })
        });
        let checked = match step {
            Step::Done(Ok(v)) => break Ok(v),
            Step::Done(Err(payload)) => break Err(panic_error(py, payload.as_ref())),
            Step::Cancelled => {
                break Err(cancelled_error(
                    py,
                    observer.operation,
                    cancel.as_ref().unwrap_or(&cchq_core::cancel::Cancel::new()),
                ));
            }
            Step::Event(ev, at) => observer
                .deliver(py, &ev, at)
                .and_then(|()| observer.drain(py)),
            Step::Tick => Ok(()),
        };
        // Ctrl-C raises `KeyboardInterrupt` wherever Python code runs next: in the callback or a
        // log handler (`checked`), or here. Both are the same Ctrl-C.
        if let Err(e) = checked.and_then(|()| py.check_signals())
            && let Err(e) = observer.interrupted(py, e)
        {
            break Err(e);
        }
    };
    // Dropping an unfinished future cancels its work; do it inside the runtime, without the GIL.
    py.detach(|| {
        let _entered = rt.enter();
        drop(fut);
    });
    let value = outcome?;
    observer.drain(py)?;
    Ok(value)
}

/// Awaits `fut` (cleanup such as closing a transport) with the GIL released, at most
/// `CLOSE_TIMEOUT`, ignoring signals and panics: it runs after the work, also after Ctrl-C.
pub fn finish_quietly<F>(py: Python<'_>, fut: F)
where
    F: Future + Send,
{
    let Ok(rt) = runtime() else { return };
    py.detach(|| {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, fut).await;
            });
        }));
    });
}

/// A panic on purpose, for the tests that check that no panic reaches Python: in the calling
/// thread, or inside a future run by [`drive`].
#[pyfunction]
#[pyo3(name = "_test_panic", signature = (in_future=false))]
pub fn test_panic(py: Python<'_>, in_future: bool) -> PyResult<()> {
    guard(py, || {
        if in_future {
            let mut observer = Observer::new(None, "_test_panic")?;
            drive(py, &mut observer, async {
                tokio::task::yield_now().await;
                panic!("a panic inside a future, on purpose")
            })
        } else {
            panic!("a panic on purpose")
        }
    })
}
