"""Issue 15, on this machine: typed records (value equality, pickling, `to_dict`), errors a program
can act on (`kind`, `release`, `phase`, `step`, `hosts`, `holder`, hints worded for Python),
cancellation (a `Cancel` token from a thread, `asyncio` through `cchq.aio`, Ctrl-C) that leaves no
process behind, the lock and downtime operations, logging, `reload` and the context manager.
Deploys use the demo app in a temporary www root, as test_deploy_local.py does; nothing is
switched or restarted (that needs supervisord: the fleet tests)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cchq
import cchq.aio
from conftest import EXAMPLES, FIXTURES

REPO = Path(__file__).resolve().parents[2]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process `pid` is dead (or a zombie) within `within` seconds."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def _child_script(pidfile: Path) -> str:
    """A shell command whose child (`sleep 30`) writes its pid to `pidfile` and is waited for."""
    return f"sleep 30 & echo $! > {pidfile}; wait"


def _make_repo(tmp_path: Path, broken: bool = False) -> Path:
    repo = tmp_path / "demo-app.git"
    if not broken:
        subprocess.run([str(REPO / "examples" / "demo-app" / "make-repo"), str(repo)], check=True, capture_output=True)
        return repo
    # A demo app whose `manage.py collectstatic` fails: the build fails after its virtualenv step.
    src = tmp_path / "broken-src"
    shutil.copytree(REPO / "examples" / "demo-app", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "manage.py").rename(src / "real_manage.py")
    (src / "manage.py").write_text(
        "import os, runpy, sys\n"
        "if sys.argv[1:2] == ['collectstatic']:\n"
        "    print('manage.py: broken on purpose', file=sys.stderr)\n"
        "    sys.exit(3)\n"
        "runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'real_manage.py'), run_name='__main__')\n"
    )
    subprocess.run([str(src / "make-repo"), str(repo)], check=True, capture_output=True)
    return repo


def _demo(tmp_path: Path, repo: Path) -> tuple[cchq.Environment, Path]:
    root = tmp_path / "envs"
    shutil.copytree(REPO / "examples" / "environments", root)
    env_dir = root / "local"
    www_root = tmp_path / "www"
    with (env_dir / "cchq.yml").open("a") as f:
        f.write(f"www_root: {www_root}\napp_user: {getpass.getuser()}\n")
    (env_dir / "fab-settings.yml").write_text(f"code_repo: {repo}\ndefault_branch: master\nemail_enabled: False\n")
    return cchq.Environment.load("local", root), www_root / "local"


@pytest.fixture
def demo(tmp_path: Path) -> tuple[cchq.Environment, Path]:
    return _demo(tmp_path, _make_repo(tmp_path))


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


# --- records -------------------------------------------------------------------------------


def _same(x: object) -> object:
    return x


def test_results_are_frozen_comparable_picklable_and_json_ready(local: cchq.Environment) -> None:
    (a,) = local.run("all", "echo hi")
    (b,) = local.run("all", "echo hi")
    assert a.stdout == b.stdout == "hi\n" and a.stdout_bytes == b"hi\n"
    assert "echo hi" in a.command
    # By value (durations differ between two runs: compare a copy).
    assert pickle.loads(pickle.dumps(a)) == a
    assert a != b or a.duration == b.duration
    with pytest.raises(AttributeError):
        a.stdout = "x"  # type: ignore[misc]
    d = a.to_dict()
    assert d["host"] == "localhost" and d["exit_code"] == 0 and d["failure"] is None
    assert "stdout_bytes" not in d
    json.dumps(d)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(_same, a).result() == a
        host = local.hosts()[0]
        assert pool.submit(_same, host).result() == host
    assert cchq.Host(**host.to_dict()) == host
    report = local.service("webworker", "status")
    assert pickle.loads(pickle.dumps(report)) == report
    json.dumps(report.to_dict())
    assert isinstance(report, cchq.ServiceReport) and all(isinstance(r, cchq.ServiceRow) for r in report)


def test_a_failure_is_a_record_too(local: cchq.Environment) -> None:
    (r,) = local.run("all", "echo oops >&2; exit 4")
    assert r.failure is not None and r.failure.kind == "command_failed" and "exit code 4" in r.failure.message
    assert r.to_dict()["failure"]["kind"] == "command_failed"
    with pytest.raises(cchq.CommandFailedError) as info:
        r.check()
    e = info.value
    assert (e.kind, e.host, e.exit_code, e.stderr) == ("command_failed", "localhost", 4, "oops\n")


def test_output_that_is_not_utf8_is_kept_as_bytes(local: cchq.Environment) -> None:
    (r,) = local.run("all", r"printf 'a\377\376b'; printf '\377' >&2")
    assert r.stdout_bytes == b"a\xff\xfeb" and r.stderr_bytes == b"\xff"
    assert r.stdout == "a\ufffd\ufffdb"


# --- errors --------------------------------------------------------------------------------


def test_every_exception_has_kind_and_the_detail_attributes(development: cchq.Environment) -> None:
    with pytest.raises(cchq.PatternError) as info:
        development.hosts("nosuchgroup")
    e = info.value
    assert e.kind == "pattern"
    assert (e.release, e.phase, e.step, e.hosts, e.host, e.holder) == (None, None, None, (), None, None)
    assert cchq.CchqError("by hand").kind is None


def test_usage_errors_are_value_errors(local: cchq.Environment) -> None:
    assert issubclass(cchq.UsageError, ValueError)
    with pytest.raises(ValueError):
        local.run("all", "")
    with pytest.raises(cchq.UsageError, match="`resume` takes one component"):
        local.deploy(["commcare", "formplayer"], resume="2026-01-01_00.00.00")
    with pytest.raises(cchq.UsageError, match="lock_wait"):
        local.deploy(lock_wait=-1)


@pytest.mark.parametrize("call", ["deploy", "list_releases", "rollback", "clean_releases"])
def test_an_unknown_component_is_refused_naming_the_known_ones(local: cchq.Environment, call: str) -> None:
    with pytest.raises(cchq.NotFoundError, match="unknown component `comcare`") as info:
        if call == "deploy":
            local.deploy(["commcare", "comcare"])
        elif call == "list_releases":
            local.list_releases("comcare")
        elif call == "rollback":
            local.rollback(component="comcare")
        else:
            local.clean_releases(component="comcare")
    assert info.value.hint is not None and "`commcare`" in info.value.hint and "`formplayer`" in info.value.hint


@needs_git
def test_a_failed_deploy_names_release_phase_step_and_hosts(tmp_path: Path) -> None:
    env, www = _demo(tmp_path, _make_repo(tmp_path, broken=True))
    events: list[dict[str, Any]] = []
    with pytest.raises(cchq.DeployFailedError) as info:
        env.deploy(on_event=events.append)
    e = info.value
    assert e.kind == "deploy_failed"
    assert e.release is not None and (www / "releases" / e.release).is_dir()
    # The failed step, and the phase it ran in (the build's steps are phases of their own).
    assert (e.phase, e.step) == ("staticfiles_collect", "staticfiles_collect"), str(e)
    assert e.hosts == ("localhost",) and e.host == "localhost"
    assert e.hint is not None and f"deploy(resume='{e.release}')" in e.hint and "--resume" not in e.hint
    # The events carry the component and the release; step events carry their phase.
    assert {ev["component"] for ev in events} == {"commcare"} and {ev["release"] for ev in events} == {e.release}
    assert all(ev["phase"] for ev in events if ev["event"] in ("started", "finished", "output"))
    assert any(ev["event"] == "output" and "broken on purpose" in ev["text"] for ev in events)
    assert not (www / ".deploy-lock").exists()


def _hold_lock(www: Path, pid: int) -> None:
    lock = www / ".deploy-lock"
    lock.mkdir(parents=True)
    holder = {
        "by": "someone@elsewhere",
        "at": int(time.time()),
        "release": "2026-01-01_00.00.00",
        "message": "deploy commcare",
        "token": "0123456789abcdef0123456789abcdef",
        "controller": socket.gethostname(),
        "pid": pid,
        "heartbeat_secs": 10,
    }
    # As cchq writes it (compact: the token is looked for as `"token":"..."`).
    (lock / "holder.json").write_text(json.dumps(holder, separators=(",", ":")))


@needs_git
def test_a_held_lock_lock_status_and_release(demo: tuple[cchq.Environment, Path], sleeper: subprocess.Popen[bytes]) -> None:
    env, www = demo
    assert env.lock_status() is None
    assert env.release_lock() is None
    _hold_lock(www, sleeper.pid)
    info = env.lock_status()
    assert isinstance(info, cchq.LockInfo)
    assert (info.by, info.release, info.pid, info.alive) == ("someone@elsewhere", "2026-01-01_00.00.00", sleeper.pid, True)
    assert "someone@elsewhere" in info.holder and str(sleeper.pid) in info.why
    json.dumps(info.to_dict())
    assert pickle.loads(pickle.dumps(info)) == info

    start = time.monotonic()
    with pytest.raises(cchq.LockHeldError) as held:
        env.deploy(lock_wait=0.5)
    assert time.monotonic() - start < 30
    e = held.value
    assert e.kind == "lock_held" and e.holder is not None and "someone@elsewhere" in e.holder
    assert e.hint is not None
    for python_way in ("`lock_wait=SECONDS`", "`env.lock_status()`", "`env.release_lock(force=True)`"):
        assert python_way in e.hint, e.hint
    assert "--" not in e.hint and "cchq local" not in e.hint

    with pytest.raises(cchq.LockHeldError, match="may still be running") as refused:
        env.release_lock()
    assert refused.value.hint is not None and "`env.release_lock(force=True)`" in refused.value.hint
    released = env.release_lock(force=True)
    assert released is not None and released.pid == sleeper.pid
    assert env.lock_status() is None and not (www / ".deploy-lock").exists()


def test_lock_wait_answers_when_free_waits_for_the_holder_and_is_cancellable(
    demo: tuple[cchq.Environment, Path], sleeper: subprocess.Popen[bytes]
) -> None:
    env, www = demo
    assert env.lock_wait(timeout=0) is None
    _hold_lock(www, sleeper.pid)
    with pytest.raises(cchq.LockHeldError) as held:
        env.lock_wait(timeout=0.3)
    assert held.value.holder is not None and "someone@elsewhere" in held.value.holder
    with pytest.raises(cchq.UsageError, match="timeout"):
        env.lock_wait(timeout=-1)

    # Cancelled from another thread, and by asyncio.
    token = cchq.Cancel()
    timer = threading.Timer(0.3, token.cancel)
    timer.start()
    try:
        with pytest.raises(cchq.CancelledError):
            env.lock_wait(timeout=60, cancel=token)
    finally:
        timer.cancel()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cchq.aio.lock_wait(env, timeout=60), timeout=0.5)

    asyncio.run(main())

    # The holder's process ends: the wait answers with the gone holder's lock (a deploy takes it over).
    def end_holder() -> None:
        sleeper.kill()
        sleeper.wait()

    threading.Timer(0.3, end_holder).start()
    start = time.monotonic()
    gone = env.lock_wait(timeout=60)
    assert gone is not None and gone.pid == sleeper.pid and gone.alive is False
    assert time.monotonic() - start < 30
    # Released meanwhile: the wait answers None.
    shutil.rmtree(www / ".deploy-lock")
    assert env.lock_wait(timeout=1) is None


def test_downtime_status_without_a_downtime(tmp_path: Path) -> None:
    env, _ = _demo(tmp_path, tmp_path / "no-repo")
    assert env.downtime_status() is None


# --- cancellation --------------------------------------------------------------------------


def test_a_cancel_token_stops_a_run_from_another_thread_and_its_children(local: cchq.Environment, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    token = cchq.Cancel()
    assert not token.cancelled and token.reason is None
    timer = threading.Timer(0.5, token.cancel, ("stop it",))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(cchq.CancelledError, match="stop it") as info:
            local.run("all", _child_script(pidfile), cancel=token)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 5
    assert info.value.kind == "interrupted" and token.cancelled and token.reason == "stop it"
    assert _gone(int(pidfile.read_text())), "the command's child was stopped too"
    # A fired token stops the next operation at once; a fresh one does not.
    with pytest.raises(cchq.CancelledError):
        local.run("all", "sleep 5", cancel=token)
    assert local.run("all", "true", cancel=cchq.Cancel())[0].ok


def test_a_run_in_a_worker_thread_is_cancelled(local: cchq.Environment, tmp_path: Path) -> None:
    token = cchq.Cancel()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(local.run, "all", _child_script(tmp_path / "pid"), cancel=token)
        time.sleep(0.5)
        token.cancel()
        with pytest.raises(cchq.CancelledError):
            fut.result(timeout=5)


def test_ctrl_c_during_a_run_stops_the_commands_children(local: cchq.Environment, tmp_path: Path) -> None:
    assert threading.current_thread() is threading.main_thread()
    pidfile = tmp_path / "pid"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            local.run("all", _child_script(pidfile))
    finally:
        timer.cancel()
    assert _gone(int(pidfile.read_text())), "the remote /bin/sh's child is not orphaned"


def test_asyncio_wait_for_cancels_a_run(local: cchq.Environment, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cchq.aio.run(local, "all", _child_script(pidfile)), timeout=0.7)
        # When the cancellation is through, the work has stopped.
        assert _gone(int(pidfile.read_text()), within=0.5)
        (r,) = await cchq.aio.run(local, "all", "echo async")
        assert r.stdout == "async\n"

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 10


@needs_git
def test_a_deploy_cancelled_from_a_thread_stops_frees_the_lock_and_is_resumable(demo: tuple[cchq.Environment, Path]) -> None:
    env, www = demo
    token = cchq.Cancel()
    seen: list[dict[str, Any]] = []
    box: dict[str, BaseException] = {}

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["event"] == "started" and "virtualenv" in event["step"].split(", "):
            token.cancel("ops said stop")

    def work() -> None:
        try:
            env.deploy(on_event=on_event, cancel=token)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["e"] = e

    t = threading.Thread(target=work)
    start = time.monotonic()
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert time.monotonic() - start < 60
    e = box.get("e")
    assert isinstance(e, cchq.CancelledError), (e, seen[-3:])
    assert e.release is not None and "ops said stop" in str(e)
    assert e.hint is not None and f"deploy(resume='{e.release}')" in e.hint
    assert (www / "releases" / e.release).is_dir(), "the release stays, to resume"
    assert not (www / ".deploy-lock").exists(), "the lock is freed"
    assert not (www / "current").exists(), "nothing was switched"


@needs_git
def test_asyncio_cancelling_a_deploy_frees_the_lock(demo: tuple[cchq.Environment, Path]) -> None:
    env, www = demo

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task: asyncio.Task[list[cchq.DeployResult]]

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "started" and "virtualenv" in event["step"].split(", "):
                loop.call_soon_threadsafe(task.cancel)

        task = asyncio.create_task(cchq.aio.deploy(env, on_event=on_event))
        with pytest.raises(asyncio.CancelledError):
            await task
        # Once the cancellation is through, the deploy has stopped and freed its lock.
        assert not (www / ".deploy-lock").exists()
        assert env.lock_status() is None

    asyncio.run(main())
    assert not (www / "current").exists()


# --- habits --------------------------------------------------------------------------------


def test_events_and_output_go_to_the_cchq_logger(local: cchq.Environment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cchq")
    local.run("all", "true")
    records = [r for r in caplog.records if r.name.startswith("cchq")]
    assert [r.name for r in records] == ["cchq.host.localhost", "cchq.host.localhost"]
    started, finished = records
    assert started.levelno == logging.INFO and started.getMessage() == "localhost: run started"
    assert "localhost: run done in" in finished.getMessage()
    assert getattr(finished, "cchq_event")["event"] == "finished"
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="cchq")
    local.run("all", "true")
    assert not [r for r in caplog.records if r.name.startswith("cchq")]


def test_reload_and_the_context_manager(tmp_path: Path) -> None:
    root = tmp_path / "envs"
    shutil.copytree(EXAMPLES / "local", root / "local")
    with cchq.Environment.load("local", root) as env:
        assert isinstance(env, cchq.Environment)
        with pytest.raises(cchq.PatternError):
            env.hosts("extra")
        inventory = root / "local" / "inventory.ini"
        inventory.write_text(inventory.read_text() + "\n[extra]\nlocalhost\n")
        env.reload()
        assert [h.name for h in env.hosts("extra")] == ["localhost"]
        # A reload that fails leaves the environment as it was.
        (root / "local" / "meta.yml").write_text("{{{ not yaml\n")
        with pytest.raises(cchq.ConfigError):
            env.reload()
        assert [h.name for h in env.hosts("extra")] == ["localhost"]


def test_paths_may_be_pathlike(tmp_path: Path) -> None:
    assert cchq.Environment.load("test", FIXTURES).name == "test"
    assert cchq.list_environments(FIXTURES) == cchq.list_environments(str(FIXTURES))


def test_check_services_returns_records(local: cchq.Environment) -> None:
    # Read-only: supervisorctl on this machine (no supervisord needs to answer).
    checks = local.check_services("webworker")
    assert checks and all(isinstance(c, cchq.ServiceCheck) and c.host == "localhost" for c in checks)
    json.dumps([c.to_dict() for c in checks])
    with pytest.raises(cchq.NotFoundError):
        local.check_services("nosuch")


@needs_git
def test_a_deploy_with_a_timeout_stops_as_if_cancelled(demo: tuple[cchq.Environment, Path]) -> None:
    env, www = demo
    start = time.monotonic()
    with pytest.raises(cchq.CancelledError, match="timed out after 0.3 s") as info:
        env.deploy(timeout=0.3)
    assert time.monotonic() - start < 30
    assert info.value.release is not None
    assert not (www / ".deploy-lock").exists()
    with pytest.raises(cchq.UsageError, match="timeout"):
        env.deploy(timeout=-1)


def test_exceptions_keep_their_attributes_through_pickle() -> None:
    from cchq import _cchq

    e = _cchq._error("deploy_failed", "build failed", "resume it", {"release": "r1", "hosts": ("web1",)})
    assert isinstance(e, cchq.DeployFailedError)
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is cchq.DeployFailedError
    assert (again.message, again.hint, again.kind, again.release, again.hosts) == ("build failed", "resume it", "deploy_failed", "r1", ("web1",))
    assert str(again) == "build failed\nhint: resume it"


@pytest.mark.parametrize(
    ("cli", "python"),
    [
        ("fix the cause, then continue with `deploy --resume 2026-01-01_00.00.00` (steps", "`deploy(resume='2026-01-01_00.00.00')`"),
        ("continue it with `cchq prod deploy --resume r1`", "`deploy(resume='r1')`"),
        ("wait for it (`--lock-wait SECONDS`; ...)", "`lock_wait=SECONDS`"),
        ("`cchq prod lock status` shows it", "`env.lock_status()`"),
        ("only if dead: `cchq prod lock release --force`", "`env.release_lock(force=True)`"),
        ("or `cchq prod lock release` frees it", "`env.release_lock()`"),
        ("`cchq prod rollback --to r0` retries it", "`env.rollback(to='r0')`"),
        ("start them now: `cchq prod service commcare start --limit web1,web2`", "`env.service('commcare', 'start', limit='web1,web2')`"),
        ("`cchq prod service celery status` shows what runs", "`env.service('celery', 'status')`"),
        ("`list-releases` shows them", "`env.list_releases()`"),
        ("clean it (`clean-releases`)", "`env.clean_releases()`"),
        ("then run `cchq prod update-config` again", "`update_config(check=False)`"),
        ("(`update-config --check` shows its keys)", "`update_config(check=True)`"),
        ("`--force` overwrites", "`force=True` overwrites"),
        ("give a branch with `--commcare-rev`", "`rev=`"),
        ("pass `--environments DIR` or set", "pass `environments=DIR` or set"),
    ],
)
def test_hints_are_worded_for_python(cli: str, python: str) -> None:
    from cchq import _cchq

    out = _cchq._python_hint(cli)
    assert python in out, out
    assert "--" not in out and "cchq prod" not in out, out


def test_daily_commands_check_their_arguments_before_any_host(local: cchq.Environment, tmp_path: Path) -> None:
    (p,) = local.ping()
    assert isinstance(p, cchq.Ping) and p.host == "localhost" and p.reachable
    assert pickle.loads(pickle.dumps(p)) == p and json.dumps(p.to_dict())
    with pytest.raises(cchq.PatternError):
        local.ping("nosuchgroup")
    with pytest.raises(cchq.UsageError, match="signal"):
        local.kill_stale_celery_workers([], signal="HUP")  # type: ignore[arg-type]
    assert local.kill_stale_celery_workers([]) == []
