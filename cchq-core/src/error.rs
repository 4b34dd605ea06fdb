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
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), hint: None, source: None }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A configuration error located in a file, optionally at a line and column.
    pub fn at(path: &Path, line: Option<usize>, column: Option<usize>, message: impl fmt::Display) -> Self {
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

    /// Prefixes the message with context, keeping kind and hint.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
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
