"""cchq: CommCare HQ deployment tooling (a Rust reimplementation of commcare-cloud).

    >>> import cchq
    >>> with cchq.Environment.load("production") as env:    # $CCHQ_ENVIRONMENTS/production
    ...     for r in env.run("all", "uptime"):                # one HostResult per host
    ...         print(r.host, r.exit_code, r.stdout.strip())
    ...     (result,) = env.deploy("commcare", lock_wait=600)  # [DeployResult]
    ...     print(result.release, result.commit, result.duration)

Every call that talks to hosts blocks until done, with the GIL released; Ctrl-C stops it and
raises ``KeyboardInterrupt``. A :class:`Cancel` token (``cancel=``) stops it from another thread;
:mod:`cchq.aio` has ``async`` versions that ``asyncio`` can cancel.

The rule for failures: a failure on one host of several (unreachable, a command that exited
non-zero) is a *result* (``HostResult.ok``/``check()``, ``ServiceReport.unreachable``,
``RebootResult.error``, ``SupervisorConfs.error``); a failure of the operation as a whole (bad
arguments, a deploy that failed, a held lock, a settings plan that cannot be made) is an
*exception*, a subclass of :class:`CchqError` with ``kind``, ``hint`` (worded for Python) and,
where known, ``release``, ``phase``, ``step``, ``hosts``, ``host`` and ``holder``.

Results are frozen dataclasses (``cchq._types``): compared by value, picklable, ``to_dict()``
gives JSON-ready dicts. Events go to ``on_event`` callbacks as dicts (typed in the stubs) and to
the ``logging`` logger ``cchq`` (``cchq.host.<host>`` for one host's events; output at DEBUG).
"""

from cchq._cchq import (
    Cancel,
    CancelledError,
    CchqError,
    CchqWarning,
    CommandFailedError,
    ConfigError,
    ConnectionError as ConnectionError,
    DeployFailedError,
    Environment,
    InternalError,
    IoError,
    LockHeldError,
    NotFoundError,
    PatternError,
    UsageError,
    VaultError,
    __version__,
    list_environments,
)
from cchq._types import (
    CeleryHost,
    Component,
    ConfigPlan,
    DbComparison,
    DeployResult,
    Downtime,
    DowntimeStarted,
    Event,
    Failure,
    Host,
    HostResult,
    KilledWorkers,
    LingeringProcess,
    LockInfo,
    Ping,
    PostgresDb,
    Preindex,
    ProgramState,
    RebootResult,
    RebootStep,
    Release,
    RoundTrips,
    Route,
    ServiceAction,
    ServiceCheck,
    ServiceReport,
    ServiceRow,
    SettingsDrift,
    SettingsFile,
    SettingsHost,
    StaleWorker,
    SupervisorConfs,
    Timing,
)

# `ConnectionError` is left out of `__all__` so that `from cchq import *` does not shadow the
# builtin (cchq's is a subclass of it): use `cchq.ConnectionError`.
__all__ = [
    "Cancel",
    "CancelledError",
    "CchqError",
    "CchqWarning",
    "CeleryHost",
    "CommandFailedError",
    "Component",
    "ConfigError",
    "ConfigPlan",
    "DbComparison",
    "DeployFailedError",
    "DeployResult",
    "Downtime",
    "DowntimeStarted",
    "Environment",
    "Event",
    "Failure",
    "Host",
    "HostResult",
    "InternalError",
    "IoError",
    "KilledWorkers",
    "LingeringProcess",
    "LockHeldError",
    "LockInfo",
    "NotFoundError",
    "PatternError",
    "Ping",
    "PostgresDb",
    "Preindex",
    "ProgramState",
    "RebootResult",
    "RebootStep",
    "Release",
    "RoundTrips",
    "Route",
    "ServiceAction",
    "ServiceCheck",
    "ServiceReport",
    "ServiceRow",
    "SettingsDrift",
    "SettingsFile",
    "SettingsHost",
    "StaleWorker",
    "SupervisorConfs",
    "Timing",
    "UsageError",
    "VaultError",
    "__version__",
    "list_environments",
]
