"""Type stubs of the extension module `cchq._cchq` (checked with `python -m mypy.stubtest cchq._cchq`)."""

import builtins
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, Union, final

__all__ = [
    "CchqError",
    "CchqWarning",
    "CommandFailedError",
    "ConfigError",
    "ConnectionError",
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

__version__: str

_PathLike = Union[str, os.PathLike[str]]
_Event = dict[str, Any]
"""A core event (`cchq_core::events::Event` as serde writes it), keys in declaration order, e.g.
`{"event": "started", "host": str, "step": str}`,
`{"event": "finished", "host": str, "step": str, "ok": bool, "duration_ms": int}`,
`{"event": "phase", "phase": str, "ok": bool | None, "duration_ms": int | None, "detail": str}`,
`{"event": "output", "host": str, "step": str, "text": str}`,
`{"event": "notification", "stage": str, "channel": str, "target": str, "ok": bool}`,
`{"event": "warning", "host": str | None, "message": str}`."""

class _SettingsFile(TypedDict):
    """One settings file of one host in `Environment.update_config`'s report."""

    path: str
    component: str
    changed: bool
    new: bool
    diff: str
    """The unified diff (host -> rendered), every secret masked; empty when unchanged."""
    note: str | None

class _Drift(TypedDict):
    """A finding of the drift guard."""

    host: str
    kind: Literal["newer_environment", "hand_edit", "dirty_apply", "unverifiable"]
    message: str
    blocking: bool

class _SettingsHost(TypedDict):
    host: str
    files: list[_SettingsFile]
    drift: list[_Drift]
    written: list[str]
    recorded: bool
    error: str | None
    unreachable: bool

class _UpdateConfigReport(TypedDict):
    """What `Environment.update_config` compared and did (`cchq_core::config::UpdateReport`)."""

    check: bool
    changed_files: int
    forced: bool
    hosts: list[_SettingsHost]
    ok: bool

def list_environments(environments: _PathLike | None = None) -> list[str]: ...
def _test_panic(in_future: bool = False) -> None:
    """Test hook: panics in Rust (in the calling thread or inside a driven future); raises `InternalError`."""

@final
class Environment:
    @staticmethod
    def load(name: str, environments: _PathLike | None = None) -> Environment: ...
    @property
    def name(self) -> str: ...
    @property
    def deploy_env(self) -> str: ...
    @property
    def dir(self) -> Path: ...
    def hosts(self, pattern: str = "all") -> list[Host]: ...
    def lookup(self, server: str) -> list[str]: ...
    def run(
        self,
        pattern: str,
        command: str | Sequence[str],
        become: bool | str | None = None,
        *,
        timeout: float | None = None,
        forks: int = 256,
        on_event: Callable[[_Event], object] | None = None,
    ) -> list[HostResult]: ...
    def service(
        self,
        names: str | Sequence[str],
        action: str,
        only: str | Sequence[str] | None = None,
        limit: str | None = None,
        *,
        on_event: Callable[[_Event], object] | None = None,
    ) -> ServiceReport: ...
    def deploy(
        self,
        components: str | Sequence[str] | None = None,
        rev: str | None = None,
        resume: str | None = None,
        private: bool = False,
        limit: str | None = None,
        update_config: bool = False,
        *,
        keep: int = 3,
        rollback_on_failure: bool | None = None,
        on_event: Callable[[_Event], object] | None = None,
    ) -> dict[str, Any]: ...
    def rollback(
        self,
        to: str | None = None,
        component: str = "commcare",
        *,
        on_event: Callable[[_Event], object] | None = None,
    ) -> dict[str, Any]: ...
    def list_releases(self, component: str = "commcare") -> list[dict[str, Any]]: ...
    def update_config(
        self,
        limit: str | None = None,
        check: bool = True,
        *,
        force: bool = False,
        on_event: Callable[[_Event], object] | None = None,
    ) -> _UpdateConfigReport: ...
    def django_manage(
        self,
        args: str | Sequence[str],
        server: str | None = None,
        release: str | None = None,
        *,
        tee: str | None = None,
    ) -> HostResult: ...
    def clean_releases(self, keep: int = 3, component: str = "commcare") -> dict[str, list[str]]: ...

@final
class Host:
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def groups(self) -> list[str]: ...
    @property
    def local(self) -> bool: ...

@final
class HostResult:
    @property
    def host(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def duration(self) -> float: ...
    @property
    def ok(self) -> bool: ...
    @property
    def unreachable(self) -> bool: ...
    def check(self) -> None: ...

@final
class ServiceRow:
    @property
    def host(self) -> str: ...
    @property
    def program(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def ok(self) -> bool: ...

@final
class ServiceReport:
    @property
    def rows(self) -> list[ServiceRow]: ...
    @property
    def unreachable(self) -> dict[str, str]: ...
    @property
    def failed_batch(self) -> list[str]: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def ok(self) -> bool: ...
    def __iter__(self) -> Iterator[ServiceRow]: ...
    def __len__(self) -> int: ...

class CchqError(Exception):
    message: str
    hint: str | None

class ConfigError(CchqError): ...
class NotFoundError(CchqError): ...
class PatternError(CchqError): ...
class ConnectionError(CchqError, builtins.ConnectionError): ...

class CommandFailedError(CchqError):
    exit_code: int | None
    stdout: str | None
    stderr: str | None

class UsageError(CchqError): ...
class IoError(CchqError, OSError): ...
class VaultError(CchqError): ...
class LockHeldError(CchqError): ...

class DeployFailedError(CchqError):
    release: str | None

class InternalError(CchqError): ...
class CchqWarning(UserWarning): ...
