//! The one public error type of the SDK: a category (`ErrorKind`), a message, an optional hint.
//!
//! Messages follow one style: no trailing period, values in backticks, and a `hint` that tells the
//! operator what to do next. The CLI maps kinds to exit codes; the Python bindings map them to
//! exception classes.

use std::fmt;
use std::path::Path;

/// The category of an [`Error`]; stable, used for exit codes and exception classes.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A configuration file is missing, malformed or inconsistent.
    Config,
    /// An environment, host, group, service or release that does not exist.
    NotFound,
    /// A host pattern or server spec that is malformed or selects nothing.
    Pattern,
    /// A host could not be reached or the SSH connection failed.
    Connection,
    /// A remote or local command ran and failed.
    CommandFailed,
    /// The arguments given are not acceptable (for example a shell metacharacter where none is allowed).
    Usage,
    /// Reading or writing a file failed.
    Io,
    /// Decrypting or encrypting a vault failed.
    Vault,
    /// A deploy lock is held by someone else.
    LockHeld,
    /// A deploy failed part way; it can be resumed.
    DeployFailed,
    /// The operation was interrupted (Ctrl-C).
    Interrupted,
    /// A bug in cchq.
    Internal,
}

/// An error from the SDK: what went wrong and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    details: Option<Box<Details>>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What a program acting on an error needs besides its message, where it is known: the release
/// a deploy was making (to resume it), the phase and step that failed and on which hosts, and
/// who holds a deploy lock. The message says the same in words; the CLI only prints that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Details {
    /// The release of the deploy or rollback that failed (or was interrupted).
    pub release: Option<String>,
    /// The deploy phase that failed (`build`, `switch`, `restart`, ...).
    pub phase: Option<String>,
    /// The step that failed within the phase (`checkout`, `virtualenv`, ...).
    pub step: Option<String>,
    /// The hosts the step failed on.
    pub hosts: Vec<String>,
    /// Who holds the deploy lock, in words ([`crate::deploy::lock::LockState::who`]).
    pub holder: Option<String>,
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            details: None,
            source: None,
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A configuration error located in a file, optionally at a line and column.
    pub fn at(
        path: &Path,
        line: Option<usize>,
        column: Option<usize>,
        message: impl fmt::Display,
    ) -> Self {
        let loc = match (line, column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
            (Some(l), None) => format!("{}:{l}", path.display()),
            _ => path.display().to_string(),
        };
        Self::config(format!("{loc}: {message}"))
    }

    /// Something named that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A bad host pattern or server spec.
    pub fn pattern(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Pattern, message)
    }

    /// A connection failure.
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connection, message)
    }

    /// Bad arguments.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// An I/O failure on `what` (a path or a description).
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{what}: {err}")).with_source(err)
    }

    /// A bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Adds a hint: what the operator should do next.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    fn details_mut(&mut self) -> &mut Details {
        self.details.get_or_insert_with(Box::default)
    }

    /// Names the release of the deploy this error ended (see [`Error::details`]).
    #[must_use]
    pub fn with_release(mut self, release: impl Into<String>) -> Self {
        self.details_mut().release = Some(release.into());
        self
    }

    /// Names what failed: the phase, the step within it and the hosts it failed on; a `None`
    /// leaves what was set before.
    #[must_use]
    pub fn with_failure(
        mut self,
        phase: Option<String>,
        step: Option<String>,
        hosts: Vec<String>,
    ) -> Self {
        let d = self.details_mut();
        if phase.is_some() {
            d.phase = phase;
        }
        if step.is_some() {
            d.step = step;
        }
        if !hosts.is_empty() {
            d.hosts = hosts;
        }
        self
    }

    /// Names who holds the deploy lock.
    #[must_use]
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.details_mut().holder = Some(holder.into());
        self
    }

    /// Keeps the details of `other` (an error this one replaces), where this one has none.
    #[must_use]
    pub fn with_details_of(mut self, other: &Error) -> Self {
        if let Some(o) = &other.details {
            let d = self.details_mut();
            d.release = d.release.take().or_else(|| o.release.clone());
            d.phase = d.phase.take().or_else(|| o.phase.clone());
            d.step = d.step.take().or_else(|| o.step.clone());
            if d.hosts.is_empty() {
                d.hosts.clone_from(&o.hosts);
            }
            d.holder = d.holder.take().or_else(|| o.holder.clone());
        }
        self
    }

    /// The structured details, where any are known.
    pub fn details(&self) -> Option<&Details> {
        self.details.as_deref()
    }

    /// The release of the deploy this error ended, where known.
    pub fn release(&self) -> Option<&str> {
        self.details.as_ref().and_then(|d| d.release.as_deref())
    }

    /// Wraps this error in a new one of `kind` whose message is `message(self.message())`: this
    /// error becomes the new one's [`source`](std::error::Error::source) (see [`Error::cause`]),
    /// and its hint and details carry over (a later [`Error::with_hint`] replaces the hint,
    /// [`Error::without_hint`] drops it). The new message says everything by itself (the CLI
    /// prints only it), so it usually contains the old one:
    ///
    /// ```
    /// # use cchq_core::{Error, ErrorKind};
    /// let e = Error::connection("`web1` is unreachable").with_hint("check the VPN");
    /// let w = e.wrap(ErrorKind::DeployFailed, |m| format!("the switch failed: {m}"));
    /// assert_eq!((w.kind(), w.message(), w.hint()), (ErrorKind::DeployFailed, "the switch failed: `web1` is unreachable", Some("check the VPN")));
    /// assert_eq!(w.cause().map(Error::kind), Some(ErrorKind::Connection));
    /// ```
    #[must_use]
    pub fn wrap(self, kind: ErrorKind, message: impl FnOnce(&str) -> String) -> Self {
        Self {
            kind,
            message: message(&self.message),
            hint: self.hint.clone(),
            details: self.details.clone(),
            source: Some(Box::new(self)),
        }
    }

    /// Wraps this error (see [`Error::wrap`]) in one of the same kind with the message
    /// `message(self.message())`.
    #[must_use]
    pub fn map_message(self, message: impl FnOnce(&str) -> String) -> Self {
        let kind = self.kind;
        self.wrap(kind, message)
    }

    /// Prefixes the message with context (`<context>: <message>`), keeping kind, hint and details;
    /// the error it was is the new one's source (see [`Error::wrap`]).
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Self {
        self.map_message(|m| format!("{context}: {m}"))
    }

    /// Drops the hint: where a wrapper's message makes the wrapped error's hint wrong.
    #[must_use]
    pub fn without_hint(mut self) -> Self {
        self.hint = None;
        self
    }

    /// A copy of this error with `f` applied to its message and hint (to mask secrets, say): kind
    /// and details kept, and no source, which would still say what `f` hid.
    #[must_use]
    pub fn redacted(&self, f: impl Fn(&str) -> String) -> Self {
        Self {
            kind: self.kind,
            message: f(&self.message),
            hint: self.hint.as_deref().map(&f),
            details: self.details.clone(),
            source: None,
        }
    }

    /// The error this one wraps ([`Error::wrap`], [`Error::context`]), where it wraps one of
    /// cchq's own; `std::error::Error::source` gives any cause, a foreign one too.
    pub fn cause(&self) -> Option<&Error> {
        self.source.as_deref()?.downcast_ref::<Error>()
    }

    /// The category.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn io_error() -> Error {
        Error::io(
            "`/etc/cchq.yml`",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        )
        .with_hint("run as root")
    }

    #[test]
    fn wrap_keeps_the_cause_its_hint_and_details() {
        let inner = io_error().with_release("r1");
        let w = inner.wrap(ErrorKind::DeployFailed, |m| {
            format!("writing settings: {m}")
        });
        assert_eq!(w.kind(), ErrorKind::DeployFailed);
        assert_eq!(w.message(), "writing settings: `/etc/cchq.yml`: denied");
        assert_eq!(w.hint(), Some("run as root"));
        assert_eq!(w.release(), Some("r1"));
        let cause = w.cause().expect("the wrapped error is the source");
        assert_eq!(
            (cause.kind(), cause.message(), cause.hint()),
            (
                ErrorKind::Io,
                "`/etc/cchq.yml`: denied",
                Some("run as root")
            )
        );
        // The whole chain is there: the wrapper, the cchq error, the io::Error.
        let io = w
            .source()
            .and_then(std::error::Error::source)
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn a_new_hint_replaces_the_wrapped_one_and_without_hint_drops_it() {
        let w = io_error()
            .map_message(|m| format!("{m}; meanwhile"))
            .with_hint("try again");
        assert_eq!((w.kind(), w.hint()), (ErrorKind::Io, Some("try again")));
        assert_eq!(w.cause().and_then(Error::hint), Some("run as root"));
        let w = io_error().context("host `web1`").without_hint();
        assert_eq!(w.hint(), None);
        assert_eq!(w.cause().and_then(Error::hint), Some("run as root"));
    }

    #[test]
    fn context_prefixes_and_keeps_kind_hint_and_source() {
        let w = io_error().context("host `web1`").context("environment `e`");
        assert_eq!(
            w.to_string(),
            "environment `e`: host `web1`: `/etc/cchq.yml`: denied"
        );
        assert_eq!((w.kind(), w.hint()), (ErrorKind::Io, Some("run as root")));
        let inner = w
            .cause()
            .and_then(Error::cause)
            .expect("two levels of context");
        assert_eq!(inner.message(), "`/etc/cchq.yml`: denied");
        assert!(inner.source().is_some_and(|s| s.is::<std::io::Error>()));
    }

    #[test]
    fn redacted_masks_message_and_hint_and_keeps_no_source() {
        let e = Error::config("password `hunter2` refused")
            .with_hint("`hunter2` is wrong")
            .with_release("r1")
            .context("host `web1`");
        let r = e.redacted(|t| t.replace("hunter2", "********"));
        assert_eq!(
            (r.kind(), r.message(), r.hint()),
            (
                ErrorKind::Config,
                "host `web1`: password `********` refused",
                Some("`********` is wrong")
            )
        );
        assert_eq!(r.release(), Some("r1"));
        assert!(r.source().is_none(), "the unmasked error is not reachable");
    }

    #[test]
    fn an_error_without_a_wrapped_one_has_no_cause() {
        assert!(Error::config("x").cause().is_none());
        assert!(
            io_error().cause().is_none(),
            "an io::Error is a source, not a cchq cause"
        );
    }
}
