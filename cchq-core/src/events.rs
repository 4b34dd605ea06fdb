//! Typed events: what long-running work reports instead of printing. The CLI renders them as
//! progress lines or JSON; Python receives them as callbacks.

use serde::Serialize;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A step started on a host.
    Started {
        /// The host.
        host: String,
        /// What started.
        step: String,
    },
    /// A step finished on a host.
    Finished {
        /// The host.
        host: String,
        /// What finished.
        step: String,
        /// Whether it succeeded.
        ok: bool,
        /// How long it took, in milliseconds.
        duration_ms: u64,
    },
    /// A deploy phase started or finished (`ok` is set when it finished).
    Phase {
        /// The phase (`lock`, `build`, `migrate`, `switch`, `restart`, ...).
        phase: String,
        /// `None` when it starts, then whether it succeeded.
        ok: Option<bool>,
        /// How long it took, in milliseconds, when it finished.
        duration_ms: Option<u64>,
        /// A short description.
        detail: String,
    },
    /// Output of a step on a host (for failures: what the host printed).
    Output {
        /// The host.
        host: String,
        /// The step.
        step: String,
        /// The text (secrets masked).
        text: String,
    },
    /// One line a step printed on a host, as it printed it (secrets masked): progress for long
    /// steps (a pip install, a migration). The `::cchq-*` markers are not lines.
    Line {
        /// The host.
        host: String,
        /// The step printing it.
        step: String,
        /// `stdout` or `stderr`.
        stream: crate::transport::Stream,
        /// The line, without its newline.
        text: String,
    },
    /// A deploy notification was handed over (`ok`), or was not (a [`Event::Warning`] says why).
    Notification {
        /// `start`, `success` or `failure`.
        stage: String,
        /// `email` or `webhook`.
        channel: String,
        /// The recipients and server, or the webhook's `scheme://host:port` (never its path).
        target: String,
        /// Whether it was handed over.
        ok: bool,
    },
    /// Something the operator should know.
    Warning {
        /// The host concerned, if any.
        host: Option<String>,
        /// The warning.
        message: String,
    },
}

/// Where events go.
pub trait EventSink: Send + Sync {
    /// Receives one event. Must not block for long.
    fn emit(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: &Event) {
        self(event);
    }
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}
