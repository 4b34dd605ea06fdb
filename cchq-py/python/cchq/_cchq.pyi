"""Type stubs of the extension module `cchq._cchq` (checked with `python -m mypy.stubtest cchq._cchq`)."""

import builtins
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Union, final

from cchq._types import (
    CeleryHost,
    Component,
    ConfigPlan,
    DbComparison,
    DeployResult,
    Downtime,
    DowntimeStarted,
    ErrorKindName,
    Host,
    HostResult,
    KilledWorkers,
    LockInfo,
    Ping,
    PostgresDb,
    Preindex,
    RebootResult,
    Release,
    ServiceAction,
    ServiceCheck,
    ServiceReport,
    StaleWorker,
    SupervisorConfs,
)

__all__ = [
    "Cancel",
    "CancelledError",
    "CchqError",
    "CchqWarning",
    "CommandFailedError",
    "ConfigError",
    "ConnectionError",
    "DeployFailedError",
    "Environment",
    "InternalError",
    "IoError",
    "LockHeldError",
    "NotFoundError",
    "PatternError",
    "UsageError",
    "VaultError",
    "__version__",
    "list_environments",
]

__version__: str

_PathLike = Union[str, os.PathLike[str]]
_OnEvent = Callable[[Any], object]

def list_environments(environments: _PathLike | None = None) -> list[str]:
    """The environments under the environments root (`environments`, else `$CCHQ_ENVIRONMENTS`,
    else `$COMMCARE_CLOUD_ENVIRONMENTS`), sorted."""

def _test_panic(in_future: bool = False) -> None:
    """Test hook: panics in Rust (in the calling thread or inside a driven future); raises `InternalError`."""

def _python_hint(hint: str) -> str:
    """Test hook: a core hint as Python users get it (CLI commands and flags become methods and arguments)."""

def _error(kind: str, message: str, hint: str | None = None, extra: dict[str, Any] | None = None) -> CchqError:
    """The exception of a recorded failure (`HostResult.check()`), with the attributes of `extra` set."""

@final
class Cancel:
    """A cancellation token: pass it as `cancel=` to an operation, call `cancel()` from any thread.

    A deploy or rollback stops at its next safe point (never in the middle of the switch):
    programs its restart stopped are started again, the lock is released, and it raises
    `CancelledError` whose `release` names the release to resume. Other operations are dropped
    at once (their remote commands stopped) and raise `CancelledError`."""

    def __init__(self) -> None: ...
    def cancel(self, reason: str = "cancelled") -> None:
        """Fires the token (any thread); the first reason stays."""
    @property
    def cancelled(self) -> bool:
        """Whether the token was fired."""
    @property
    def reason(self) -> str | None:
        """Why it was fired, once it was."""

@final
class Environment:
    """A loaded commcare-cloud environment: `Environment.load(name)`; usable as a context manager."""

    @staticmethod
    def load(name: str, environments: _PathLike | None = None) -> Environment:
        """Loads environment `name` from the environments root (`environments`, else
        `$CCHQ_ENVIRONMENTS`, else `$COMMCARE_CLOUD_ENVIRONMENTS`)."""
    def reload(self) -> None:
        """Reads the environment's files again; running operations keep the one they started with."""
    def __enter__(self) -> Environment: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> bool: ...
    @property
    def name(self) -> str:
        """The environment's name (its directory name)."""
    @property
    def deploy_env(self) -> str:
        """`deploy_env` from meta.yml."""
    @property
    def dir(self) -> Path:
        """The environment's directory."""
    def hosts(self, pattern: str = "all") -> list[Host]:
        """The hosts an Ansible pattern selects, in inventory order."""
    def host(self, name: str) -> Host:
        """The inventory host named `name` (`NotFoundError` when there is none)."""
    def lookup(self, server: str) -> list[str]:
        """The addresses of a server spec, as `cchq <env> lookup` prints them."""
    def run(
        self,
        pattern: str,
        command: str | Sequence[str],
        become: bool | str | None = None,
        *,
        timeout: float | None = None,
        forks: int = 256,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
    ) -> list[HostResult]:
        """Runs `command` on every host `pattern` selects; one `HostResult` per host (failures are results).

        Each line of output reaches `on_event` (a `LineEvent`, step `"run"`) and the `cchq.host.<host>`
        logger at DEBUG as the host prints it; the result holds the whole output.
        """
    def service(
        self,
        names: str | Sequence[str],
        action: ServiceAction | str,
        only: str | Sequence[str] | None = None,
        limit: str | None = None,
        *,
        all_at_once: bool = False,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
        timeout: float | None = None,
    ) -> ServiceReport:
        """Starts, stops, restarts or shows services on their hosts (web workers: rolling, unless `all_at_once`)."""
    def deploy(
        self,
        components: Component | str | Sequence[str] | None = None,
        rev: str | None = None,
        resume: str | None = None,
        private: bool = False,
        limit: str | None = None,
        update_config: bool = False,
        *,
        keep: int = 3,
        keep_days: int | None = None,
        lock_wait: float | None = None,
        force: bool = False,
        all_at_once: bool = False,
        notify: bool = True,
        skip_record: bool = False,
        ignore_kafka_checkpoint_warning: bool = False,
        rollback_on_failure: bool | None = None,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
        timeout: float | None = None,
    ) -> list[DeployResult]:
        """Deploys the components one after the other; one `DeployResult` per component.
        Raises `DeployFailedError` (`release`, `phase`, `step`, `hosts`), `LockHeldError`
        (`holder`), `CancelledError` (resumable: `deploy(resume=e.release)`)."""
    def rollback(
        self,
        to: str | None = None,
        component: Component | str = "commcare",
        *,
        notify: bool = True,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
        timeout: float | None = None,
    ) -> DeployResult:
        """Switches back to an earlier complete release (`to`, else the previous one) and restarts."""
    def list_releases(
        self, component: Component | str = "commcare", limit: str | None = None, *, cancel: Cancel | None = None
    ) -> list[Release]:
        """The releases of a component on its hosts, one `Release` per release per host."""
    def clean_releases(
        self,
        keep: int = 3,
        component: Component | str = "commcare",
        *,
        exclude: Sequence[str] | None = None,
        cancel: Cancel | None = None,
    ) -> dict[str, list[str]]:
        """Deletes old releases, keeping `keep` (never current, dated or excluded ones): `{host: [removed]}`."""
    def lock_status(self) -> LockInfo | None:
        """The deploy lock when it is taken, else `None`."""
    def lock_wait(self, timeout: float = 3600.0, *, cancel: Cancel | None = None) -> LockInfo | None:
        """Waits until no running deploy holds the lock: `None` once free, the `LockInfo` of a gone holder's lock, `LockHeldError` after `timeout` seconds."""
    def release_lock(self, force: bool = False) -> LockInfo | None:
        """Frees the deploy lock when its holder is gone (or with `force=True`); returns what was released."""
    def downtime_status(self) -> Downtime | None:
        """The downtime record, or `None` when no downtime is in progress."""
    def downtime_start(
        self,
        message: str = "",
        hours: float = 24.0,
        *,
        on_lingering: Literal["wait", "kill", "continue", "abort"] = "wait",
        wait_seconds: float = 30.0,
        max_waits: int = 10,
        cancel: Cancel | None = None,
    ) -> DowntimeStarted:
        """Records a downtime, stops every CommCare service, deals with lingering processes as `on_lingering` says."""
    def downtime_end(self, *, cancel: Cancel | None = None) -> ServiceReport:
        """Starts every CommCare service and, when they all run, removes the downtime record."""
    def preindex_views(
        self,
        rev: str | None = None,
        *,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
        timeout: float | None = None,
    ) -> Preindex:
        """Builds a private release of `rev` and starts `preindex_everything` in it in the background."""
    def check_services(
        self, services: str | Sequence[str] | None = None, limit: str | None = None, *, cancel: Cancel | None = None
    ) -> list[ServiceCheck]:
        """What is and is not in its expected state, per program, unit or port (`cchq <env> check-services`)."""
    def ping(
        self,
        pattern: str = "all",
        *,
        forks: int = 256,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
    ) -> list[Ping]:
        """Each selected host answers over SSH, `sudo` works and supervisord answers (`cchq <env> ping`); one `Ping` per host."""
    def postgresql_dbs(self) -> list[PostgresDb]:
        """The databases `postgresql.yml` expects, by host; reads no host (`NotFoundError` without postgresql.yml)."""
    def compare_postgresql_dbs(self, *, cancel: Cancel | None = None) -> list[DbComparison]:
        """The expected databases against those each database host has; one `DbComparison` per host."""
    def stale_celery_workers(self, limit: str | None = None, *, cancel: Cancel | None = None) -> list[CeleryHost]:
        """This environment's celery workers running from releases other than `current`; one `CeleryHost` per celery host."""
    def kill_stale_celery_workers(
        self, workers: Sequence[StaleWorker], *, signal: Literal["KILL", "TERM"] = "KILL", cancel: Cancel | None = None
    ) -> list[KilledWorkers]:
        """Kills those of `workers` still stale when the kill reaches their host; one `KilledWorkers` per host."""
    def after_reboot(self, limit: str, pattern: str = "all", *, cancel: Cancel | None = None) -> list[RebootResult]:
        """Brings rebooted hosts back (drive, supervisord, units); one `RebootResult` per host."""
    def update_supervisor_confs(
        self, limit: str | None = None, check: bool = True, *, empty_hosts: bool = False, cancel: Cancel | None = None
    ) -> list[SupervisorConfs]:
        """The supervisor program files of the app hosts: the plan (`check=True`), or applied."""
    def secrets_view(self, name: str | None = None) -> str:
        """The vault as YAML, or one secret (a dotted path), unmasked (no prompt for the password)."""
    def update_config(
        self,
        limit: str | None = None,
        check: bool = True,
        *,
        force: bool = False,
        on_event: _OnEvent | None = None,
        cancel: Cancel | None = None,
        timeout: float | None = None,
    ) -> ConfigPlan:
        """Renders and compares the settings files (`check=True`), or writes them (`check=False`)."""
    def django_manage(
        self,
        args: str | Sequence[str],
        server: str | None = None,
        release: str | None = None,
        *,
        tee: _PathLike | None = None,
        cancel: Cancel | None = None,
    ) -> HostResult:
        """Runs `manage.py <args>` in the live release (or `release`) on `server`; a `HostResult`."""

class CchqError(Exception):
    """Base class of every cchq error. `str(e)` is the message and the hint."""

    message: str
    """The message, without the hint."""
    hint: str | None
    """What to do next, worded for Python."""
    kind: ErrorKindName | None
    """The core's error kind, in snake case (`None` on an exception made by hand)."""
    release: str | None
    """The release of the deploy the error ended, to resume it."""
    phase: str | None
    """The deploy phase that failed (`build`, `switch`, `restart`...)."""
    step: str | None
    """The step that failed within the phase."""
    hosts: tuple[str, ...]
    """The hosts the step failed on."""
    host: str | None
    """The host, when the failure is on one host."""
    holder: str | None
    """Who holds the deploy lock (`LockHeldError`)."""
    completed: tuple[DeployResult, ...]
    """The results of the components `deploy` finished before this error (e.g. commcare's when
    formplayer's deploy then failed); empty otherwise."""

class ConfigError(CchqError):
    """A configuration file is missing, malformed or inconsistent."""

class NotFoundError(CchqError):
    """An environment, host, group, service, component or release that does not exist."""

class PatternError(CchqError):
    """A host pattern or server spec that is malformed or selects nothing."""

class ConnectionError(CchqError, builtins.ConnectionError):
    """A host could not be reached. Also a `builtins.ConnectionError`."""

class CommandFailedError(CchqError):
    """A command ran and failed; `exit_code`, `stdout` and `stderr` are set when known."""

    exit_code: int | None
    stdout: str | None
    stderr: str | None

class UsageError(CchqError, ValueError):
    """Arguments that are not acceptable. Also a `builtins.ValueError`."""

class IoError(CchqError, OSError):
    """Reading or writing a file failed. Also a `builtins.OSError`."""

class VaultError(CchqError):
    """Decrypting or encrypting a vault failed."""

class LockHeldError(CchqError):
    """A deploy lock is held by someone else (`holder`)."""

class DeployFailedError(CchqError):
    """A deploy failed part way and can be resumed: `deploy(resume=e.release)`."""

class CancelledError(CchqError):
    """The operation was stopped by its `Cancel` token; `release` names an interrupted deploy's release."""

class InternalError(CchqError):
    """A bug in cchq (a Rust panic is reported as this, never as a crash)."""

class CchqWarning(UserWarning):
    """Warnings from cchq, e.g. parts of a host pattern that matched nothing."""
