"""The result records of cchq: frozen dataclasses, compared by value, picklable, with
``to_dict()`` (JSON-ready: ``json.dumps(r.to_dict())`` works; bytes fields are left out).

They hold data only: the extension module (``cchq._cchq``) fills them from the core's results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Optional, TypedDict, Union

ErrorKindName = Literal[
    "config",
    "not_found",
    "pattern",
    "connection",
    "command_failed",
    "usage",
    "io",
    "vault",
    "lock_held",
    "deploy_failed",
    "interrupted",
    "internal",
]


Component = Literal["commcare", "formplayer"]
"""The components a deploy knows; another name raises `NotFoundError` before anything starts."""
ServiceAction = Literal["start", "stop", "restart", "status"]
"""The actions of `Environment.service`; another raises `UsageError`."""
Route = Literal["ssh", "local"]
"""How a host is reached (`Host.route`): over SSH, or on this machine (`ansible_connection=local`)."""

class _EventBase(TypedDict):
    """The keys every event has."""

    timestamp: float
    """When it happened (seconds since the epoch)."""

class StartedEvent(_EventBase, total=False):
    """A step started on a host. `phase`, `component`, `release`: in a deploy or rollback."""

    event: Literal["started"]
    host: str
    step: str
    phase: Optional[str]
    component: str
    release: Optional[str]

class FinishedEvent(_EventBase, total=False):
    """A step finished on a host."""

    event: Literal["finished"]
    host: str
    step: str
    ok: bool
    duration_ms: int
    phase: Optional[str]
    component: str
    release: Optional[str]

class PhaseEvent(_EventBase, total=False):
    """A deploy phase started (`ok` is `None`) or finished."""

    event: Literal["phase"]
    phase: str
    ok: Optional[bool]
    duration_ms: Optional[int]
    detail: str
    component: str
    release: Optional[str]

class OutputEvent(_EventBase, total=False):
    """Output of a step on a host (what a failed step printed; secrets masked)."""

    event: Literal["output"]
    host: str
    step: str
    text: str
    phase: Optional[str]
    component: str
    release: Optional[str]

class LineEvent(_EventBase, total=False):
    """One line a host printed, as it printed it: a deploy step's (secrets masked, `step` is the
    step) or a `run` command's (`step` is `"run"`), delivered while the command still runs."""

    event: Literal["line"]
    host: str
    step: str
    stream: Literal["stdout", "stderr"]
    text: str
    phase: Optional[str]
    component: str
    release: Optional[str]

class NotificationEvent(_EventBase, total=False):
    """A deploy notification was (`ok`) or was not handed over."""

    event: Literal["notification"]
    stage: str
    channel: str
    target: str
    ok: bool
    component: str
    release: Optional[str]

class WarningEvent(_EventBase, total=False):
    """Something the operator should know."""

    event: Literal["warning"]
    host: Optional[str]
    message: str
    component: str
    release: Optional[str]

Event = Union[StartedEvent, FinishedEvent, PhaseEvent, OutputEvent, LineEvent, NotificationEvent, WarningEvent]
"""A core event as `on_event` receives it (a dict; `event` says which), also logged to the `cchq` logger."""



def _plain(value: Any) -> Any:
    """`value` as JSON types: records as dicts, tuples as lists, bytes dropped by the caller."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict()  # type: ignore[attr-defined]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class _Record:
    """The base of every result record: frozen, compared by value, picklable."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready dicts, lists, strings, numbers and `None` (bytes fields are left out)."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not isinstance(getattr(self, f.name), (bytes, bytearray))
        }


@dataclasses.dataclass(frozen=True)
class Failure(_Record):
    """Why something failed on one host: the error's kind, message and hint (`HostResult.failure`)."""

    kind: ErrorKindName
    message: str
    hint: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Host(_Record):
    """A host of an environment's inventory (`Environment.host`, `Environment.hosts`): the core's
    `cchq_core::Host`."""

    name: str
    """The inventory name."""
    address: str
    """Where SSH connects (`ansible_host`, else the name)."""
    port: Optional[int]
    """The SSH port (`ansible_port`); `None` for SSH's default."""
    user: Optional[str]
    """The login user."""
    groups: list[str]
    """Every group the host is in (ancestors included, `all` excluded), sorted."""
    local: bool
    """Whether it is reached without SSH (`ansible_connection=local`): `route == "local"`."""
    route: Route
    """How it is reached: `"ssh"`, or `"local"` (`ansible_connection=local`: this machine, where
    `address`, `port` and `user` are what the inventory says, and nothing connects to them)."""
    vars: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """Its variables as Ansible merges them (`all`'s, its groups' by depth, then its own)."""


@dataclasses.dataclass(frozen=True, repr=False)
class HostResult(_Record):
    """What one host gave back from a command (`Environment.run`, `django_manage`)."""

    host: str
    exit_code: Optional[int]
    """The exit code; `None` when the command did not run or was killed by a signal."""
    stdout: str
    """Standard output, decoded as UTF-8 (invalid bytes replaced: `stdout_bytes` has them as they were)."""
    stderr: str
    """Standard error, decoded as UTF-8 (invalid bytes replaced: `stderr_bytes` has them as they were)."""
    error: Optional[str]
    """Why the command could not run on the host (unreachable, timed out...), else `None`."""
    duration: float
    """Wall time, in seconds."""
    failure: Optional[Failure] = None
    """Why it failed (a non-zero exit, a timeout, an unreachable host), else `None`."""
    command: str = ""
    """The command as it ran (`become` included)."""
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        """Whether the command ran and exited 0."""
        return self.failure is None and self.exit_code == 0

    @property
    def unreachable(self) -> bool:
        """Whether the host could not be reached (a connection error)."""
        return self.failure is not None and self.failure.kind == "connection"

    def check(self) -> None:
        """Raises unless the command ran and exited 0: `cchq.ConnectionError` for an unreachable
        host, `cchq.CommandFailedError` (with `exit_code`, `stdout`, `stderr`, `host`) otherwise."""
        if self.failure is None:
            return
        from cchq import _cchq

        extra: dict[str, Any] = {"host": self.host}
        if self.failure.kind == "command_failed":
            extra.update(exit_code=self.exit_code, stdout=self.stdout, stderr=self.stderr)
        raise _cchq._error(self.failure.kind, self.failure.message, self.failure.hint, extra)

    def __repr__(self) -> str:
        return f"HostResult(host={self.host!r}, exit_code={self.exit_code!r}, error={self.error!r}, duration={self.duration:.3f})"


@dataclasses.dataclass(frozen=True)
class ServiceRow(_Record):
    """One program or unit on one host, after a service action."""

    host: str
    program: str
    """The supervisor program, systemd unit or monit service."""
    state: str
    """Its state after the action (`RUNNING`, `STOPPED`, `MISSING`, `active`...)."""
    detail: str
    ok: bool
    """Whether it is in the state the action wanted."""


@dataclasses.dataclass(frozen=True)
class ServiceReport(_Record):
    """The outcome of `Environment.service` (iterate it for the rows)."""

    rows: list[ServiceRow]
    unreachable: dict[str, str]
    """Hosts that could not be reached: host -> why."""
    failed_batch: list[str]
    """Hosts of a rolling restart batch that failed its health check (the roll stopped there)."""
    warnings: list[str]
    """Warnings from planning (also issued as `CchqWarning`)."""
    ok: bool
    """Whether everything ended in the wanted state, every host reached."""

    def __iter__(self) -> Iterator[ServiceRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


@dataclasses.dataclass(frozen=True)
class Timing(_Record):
    """How long a deploy phase took."""

    phase: str
    ms: int


@dataclasses.dataclass(frozen=True)
class RoundTrips(_Record):
    """The round trips (commands and file transfers) of one deploy phase, as counted by the
    transport."""

    phase: str
    total: int
    """On every host together."""
    hosts: int
    """The hosts the phase reached."""
    max_per_host: int
    min_per_host: int


@dataclasses.dataclass(frozen=True)
class DeployResult(_Record):
    """What a deploy (or rollback) of one component did."""

    component: str
    """`commcare` or `formplayer`."""
    release: str
    """The release (directory name), e.g. `2026-11-26_16.00.00`."""
    commit: str
    """The commit deployed (formplayer: the jar's SHA-256)."""
    previous_commit: Optional[str]
    """What was current before, where known."""
    hosts: list[str]
    switched: bool
    """Whether `current` was switched (not for a private release)."""
    timings: list[Timing]
    duration_ms: int
    round_trips: list[RoundTrips] = dataclasses.field(default_factory=list)
    """Round trips per phase (issue 18)."""

    @property
    def duration(self) -> float:
        """Total wall time, in seconds."""
        return self.duration_ms / 1000


@dataclasses.dataclass(frozen=True)
class Release(_Record):
    """A release directory on one host (`Environment.list_releases`)."""

    host: str
    name: str
    commit: str
    """Empty when unknown."""
    complete: bool
    """Whether every build and run-once step is done."""
    current: bool
    """Whether `current` points at it."""
    keep_until: Optional[str] = None
    """`YYYY-MM-DD_HH.MM` of a `keep_days` marker."""
    missing: list[str] = dataclasses.field(default_factory=list)
    """The markers of the steps not done."""


@dataclasses.dataclass(frozen=True)
class LockInfo(_Record):
    """A taken deploy lock (`Environment.lock_status`)."""

    holder: str
    """Who holds it, in words."""
    by: Optional[str]
    """`login@machine` of the holder (`None` without a holder record)."""
    release: Optional[str]
    """The release the holder deploys."""
    message: Optional[str]
    taken_at: Optional[int]
    """When it was taken (seconds since the epoch)."""
    controller: Optional[str]
    """The machine running the holder."""
    pid: Optional[int]
    heartbeat_age_secs: int
    stale_after_secs: int
    alive: bool
    """Whether the holder still runs (or may), as this machine sees it."""
    why: str
    """Why cchq thinks the holder is alive or gone."""


@dataclasses.dataclass(frozen=True)
class Downtime(_Record):
    """A downtime record (`Environment.downtime_status`)."""

    by: str
    message: str
    started_at: int
    """Seconds since the epoch, UTC."""
    expires_at: int
    expired: bool


@dataclasses.dataclass(frozen=True)
class ServiceCheck(_Record):
    """One check of `Environment.check_services`."""

    host: str
    service: str
    what: str
    """A program, a unit, or `tcp <address>:<port>`."""
    ok: bool
    state: str
    detail: str


@dataclasses.dataclass(frozen=True)
class RebootStep(_Record):
    """One step of `after_reboot` on one host."""

    step: str
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class ProgramState(_Record):
    """A supervisor program's state."""

    name: str
    state: str
    pid: Optional[int]
    uptime_secs: Optional[int]
    detail: str


@dataclasses.dataclass(frozen=True)
class RebootResult(_Record):
    """What `Environment.after_reboot` did on one host; `error` when it could not (`unreachable`)."""

    host: str
    steps: list[RebootStep]
    programs: list[ProgramState]
    error: Optional[Failure] = None

    @property
    def ok(self) -> bool:
        """Whether every step worked and every program runs."""
        return self.error is None and all(s.ok for s in self.steps) and all(p.state == "RUNNING" for p in self.programs)

    @property
    def unreachable(self) -> bool:
        """Whether the host could not be reached."""
        return self.error is not None and self.error.kind == "connection"


@dataclasses.dataclass(frozen=True)
class SupervisorConfs(_Record):
    """`update_supervisor_confs` on one host: the plan and, when applied, what was done."""

    host: str
    new: list[str]
    changed: list[str]
    unchanged: list[str]
    remove: list[str]
    written: bool
    """Whether the changes were applied (not with `check=True`)."""
    output: str = ""
    """supervisord's account of what changed."""
    error: Optional[Failure] = None

    @property
    def changes(self) -> bool:
        """Whether anything would change (or changed)."""
        return bool(self.new or self.changed or self.remove)

    @property
    def ok(self) -> bool:
        """Whether the host was planned (and applied) without error."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class SettingsFile(_Record):
    """One settings file of one host in a `ConfigPlan`."""

    path: str
    """Where it goes on the host."""
    component: str
    """The component it configures (`commcare`, `formplayer`)."""
    changed: bool
    """Whether the host's file differs from the rendered one."""
    new: bool
    """Whether the host has no such file yet."""
    diff: str
    """The unified diff (host -> rendered), every secret masked; empty when unchanged."""
    note: Optional[str] = None
    """How the path was chosen, when it is worth saying."""


@dataclasses.dataclass(frozen=True)
class SettingsDrift(_Record):
    """A finding of the drift guard: the settings on a host are not what this checkout applied."""

    host: str
    kind: Literal["newer_environment", "hand_edit", "dirty_apply", "unverifiable"]
    message: str
    blocking: bool
    """Whether it stops `update_config(check=False)` unless `force=True`."""


@dataclasses.dataclass(frozen=True)
class SettingsHost(_Record):
    """One host of a `ConfigPlan`."""

    host: str
    files: list[SettingsFile]
    drift: list[SettingsDrift]
    written: list[str]
    """The paths written (none with `check=True`)."""
    recorded: bool
    """Whether its record of what was applied was (re)written."""
    error: Optional[str] = None
    """Why writing to it failed (secrets masked)."""
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        """Whether nothing failed on this host."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class ConfigPlan(_Record):
    """What `Environment.update_config` compared and, with `check=False`, did."""

    check: bool
    """Whether it only compared."""
    changed_files: int
    """How many files differed from the environment (before anything was written)."""
    forced: bool
    """Whether blocking drift was overridden (`force=True`)."""
    hosts: list[SettingsHost]
    """One entry per host, in the order asked."""
    ok: bool
    """Whether every host that was to be written to was."""

    @property
    def files(self) -> list[SettingsFile]:
        """Every file of every host."""
        return [f for h in self.hosts for f in h.files]


@dataclasses.dataclass(frozen=True)
class LingeringProcess(_Record):
    """A process of the environment still running after its services stopped."""

    host: str
    pid: int
    args: str
    """Its command line."""


@dataclasses.dataclass(frozen=True)
class DowntimeStarted(_Record):
    """What `Environment.downtime_start` did."""

    started: bool
    """`True`: the downtime is on; `False`: aborted (services started again, no record)."""
    downtime: Optional[Downtime]
    """The record written (`None` when aborted)."""
    services: ServiceReport
    """The services stopped (or, when aborted, started again)."""
    lingering: list[LingeringProcess] = dataclasses.field(default_factory=list)
    """Processes left running (`on_lingering="continue"`)."""


@dataclasses.dataclass(frozen=True)
class Preindex(_Record):
    """What `Environment.preindex_views` started."""

    release: DeployResult
    """The private release built for it (not switched, kept a day)."""
    host: str
    """Where `preindex_everything` runs."""
    pid: int
    """Its process id there."""
    log: str
    """Its output file, on the host."""


@dataclasses.dataclass(frozen=True)
class Ping(_Record):
    """What `Environment.ping` found on one host: SSH, `sudo`, supervisord (`ok`: all of them)."""

    host: str
    address: str
    """The address cchq connects to."""
    reachable: bool
    sudo: Optional[bool]
    """`sudo -n true` worked (`None`: not tried, the host did not answer)."""
    supervisord: Optional[str]
    """supervisord's state (`RUNNING`) or why it did not answer; `None` where it is not needed."""
    hostname: Optional[str]
    uptime: Optional[str]
    ok: bool
    problem: str
    """What failed, in words (empty when `ok`)."""
    duration_ms: int


@dataclasses.dataclass(frozen=True)
class PostgresDb(_Record):
    """A database `postgresql.yml` expects (`Environment.postgresql_dbs`)."""

    host: str
    name: str
    django_alias: Optional[str]
    port: Optional[int]
    pgbouncer_endpoint: Optional[str]


@dataclasses.dataclass(frozen=True)
class DbComparison(_Record):
    """The databases expected on one host against those it has (`compare_postgresql_dbs`)."""

    host: str
    present: list[str]
    missing: list[str]
    additional: list[str]
    error: Optional[str] = None
    """Why its databases could not be listed."""

    @property
    def ok(self) -> bool:
        """Whether the host answered and has every expected database."""
        return self.error is None and not self.missing


@dataclasses.dataclass(frozen=True)
class StaleWorker(_Record):
    """A celery process of this environment running from a release that is not `current`."""

    host: str
    pid: int
    release: str
    args: str
    """Its command line."""


@dataclasses.dataclass(frozen=True)
class CeleryHost(_Record):
    """The stale celery workers found on one host (`stale_celery_workers`); `error` when it could not be asked."""

    host: str
    workers: list[StaleWorker]
    error: Optional[Failure] = None


@dataclasses.dataclass(frozen=True)
class KilledWorkers(_Record):
    """The pids `kill_stale_celery_workers` killed on one host (those still stale); `error` when it could not."""

    host: str
    pids: list[int]
    error: Optional[Failure] = None


def _failure(d: Optional[Mapping[str, Any]]) -> Optional[Failure]:
    return None if d is None else Failure(**d)


def _from_core(kind: str, d: dict[str, Any]) -> Any:
    """Builds a record from the core's serialised value (called by the extension module)."""
    if kind == "HostResult":
        return HostResult(**{**d, "failure": _failure(d.get("failure"))})
    if kind == "ServiceReport":
        return ServiceReport(**{**d, "rows": [ServiceRow(**r) for r in d["rows"]]})
    if kind == "DeployResult":
        return DeployResult(
            **{
                **d,
                "timings": [Timing(**t) for t in d["timings"]],
                "round_trips": [RoundTrips(**r) for r in d.get("round_trips", [])],
            }
        )
    if kind == "LockInfo":
        h = d.get("holder") or {}
        live = d["liveness"]
        return LockInfo(
            holder=d["who"],
            by=h.get("by"),
            release=h.get("release"),
            message=h.get("message"),
            taken_at=h.get("at"),
            controller=h.get("controller") or None,
            pid=h.get("pid") or None,
            heartbeat_age_secs=d["heartbeat_age_secs"],
            stale_after_secs=d["stale_after_secs"],
            alive=live["state"] != "gone",
            why=live["why"],
        )
    if kind == "RebootResult":
        return RebootResult(
            host=d["host"],
            steps=[RebootStep(**s) for s in d.get("steps", [])],
            programs=[ProgramState(**p) for p in d.get("programs", [])],
            error=_failure(d.get("error")),
        )
    if kind == "SupervisorConfs":
        return SupervisorConfs(**{**d, "error": _failure(d.get("error"))})
    if kind == "ConfigPlan":
        hosts = [
            SettingsHost(
                **{
                    **h,
                    "files": [SettingsFile(**f) for f in h["files"]],
                    "drift": [SettingsDrift(**x) for x in h["drift"]],
                }
            )
            for h in d["hosts"]
        ]
        return ConfigPlan(**{**d, "hosts": hosts})
    if kind == "DowntimeStarted":
        return DowntimeStarted(
            started=d["started"],
            downtime=None if d.get("downtime") is None else Downtime(**d["downtime"]),
            services=_from_core("ServiceReport", d["services"]),
            lingering=[LingeringProcess(**p) for p in d.get("lingering", [])],
        )
    if kind == "Preindex":
        return Preindex(**{**d, "release": _from_core("DeployResult", d["release"])})
    if kind == "CeleryHost":
        return CeleryHost(host=d["host"], workers=[StaleWorker(**w) for w in d["workers"]], error=_failure(d.get("error")))
    if kind == "KilledWorkers":
        return KilledWorkers(host=d["host"], pids=list(d["pids"]), error=_failure(d.get("error")))
    cls = {
        "Host": Host,
        "Release": Release,
        "Downtime": Downtime,
        "ServiceCheck": ServiceCheck,
        "Ping": Ping,
        "PostgresDb": PostgresDb,
        "DbComparison": DbComparison,
        "StaleWorker": StaleWorker,
    }[kind]
    return cls(**d)
