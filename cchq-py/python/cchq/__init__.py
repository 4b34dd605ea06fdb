"""cchq: CommCare HQ deployment tooling (a Rust reimplementation of commcare-cloud).

    >>> import cchq
    >>> env = cchq.Environment.load("production")      # $CCHQ_ENVIRONMENTS/production
    >>> [h.name for h in env.hosts("webworkers")]
    >>> for r in env.run("all", "uptime"):
    ...     print(r.host, r.exit_code, r.stdout.strip())
    >>> report = env.service("commcare", "status")
    >>> report.ok, [(row.host, row.program, row.state) for row in report]
    >>> env.update_config()["changed_files"]           # check: masked diffs, nothing written
    >>> env.django_manage(["showmigrations"]).exit_code

Every call that talks to hosts blocks until done, with the GIL released; Ctrl-C stops it and
raises ``KeyboardInterrupt``. Errors are subclasses of :class:`CchqError`.
"""

from cchq._cchq import (
    CchqError,
    CchqWarning,
    CommandFailedError,
    ConfigError,
    ConnectionError as ConnectionError,
    DeployFailedError,
    Environment,
    Host,
    HostResult,
    InternalError,
    IoError,
    LockHeldError,
    NotFoundError,
    PatternError,
    ServiceReport,
    ServiceRow,
    UsageError,
    VaultError,
    __version__,
    list_environments,
)

# `ConnectionError` is left out of `__all__` so that `from cchq import *` does not shadow the
# builtin (cchq's is a subclass of it): use `cchq.ConnectionError`.
__all__ = [
    "CchqError",
    "CchqWarning",
    "CommandFailedError",
    "ConfigError",
    "DeployFailedError",
    "Environment",
    "Host",
    "HostResult",
    "InternalError",
    "IoError",
    "LockHeldError",
    "NotFoundError",
    "PatternError",
    "ServiceReport",
    "ServiceRow",
    "UsageError",
    "VaultError",
    "__version__",
    "list_environments",
]
