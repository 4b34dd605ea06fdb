"""Issue 15 on the fleet test bed (skipped without $CCHQ_FLEET_ROOT): every component's result,
records through a process pool, exception attributes of a held lock, cancellation from a thread
and from asyncio during the build and during the restart (the lock freed, every program running
again, the release resumable), and the README's ops script."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import cchq
import cchq.aio

README = Path(__file__).resolve().parents[1] / "README.md"


def _same(x: object) -> object:
    return x


def _current(env: cchq.Environment, component: str = "commcare") -> set[str]:
    return {r.name for r in env.list_releases(component) if r.current}


def test_every_component_has_its_result(fleet: cchq.Environment) -> None:
    events: list[dict[str, Any]] = []
    results = fleet.deploy(["commcare", "formplayer"], on_event=events.append)
    assert [r.component for r in results] == ["commcare", "formplayer"]
    for r in results:
        assert isinstance(r, cchq.DeployResult) and r.switched and r.commit and r.hosts and r.timings
        assert _current(fleet, r.component) == {r.release}
        assert {e["release"] for e in events if e["component"] == r.component} == {r.release}
    # The lines steps print, as they print them, named by step and phase.
    lines = [e for e in events if e["event"] == "line"]
    assert lines and all(e["step"] and e["phase"] and e["stream"] in ("stdout", "stderr") for e in lines), lines[:5]
    assert not any(e["text"].startswith("::cchq-") for e in lines)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(_same, results).result() == results
    json.dumps([r.to_dict() for r in results])
    releases = fleet.list_releases("formplayer")
    assert releases and all(isinstance(r, cchq.Release) for r in releases)


def test_a_failure_after_a_finished_component_carries_its_result(fleet: cchq.Environment) -> None:
    # commcare deploys; formplayer's deploy is cancelled as it starts: the error carries
    # commcare's result (a script learns what went live before the failure).
    token = cchq.Cancel()

    def on_event(e: dict[str, Any]) -> None:
        if e.get("component") == "formplayer":
            token.cancel("stop formplayer")

    with pytest.raises(cchq.CancelledError) as info:
        fleet.deploy(["commcare", "formplayer"], on_event=on_event, cancel=token)
    (done,) = info.value.completed
    assert isinstance(done, cchq.DeployResult) and done.component == "commcare" and done.switched
    assert _current(fleet) == {done.release}
    assert fleet.lock_status() is None
    # A single component's failure carries nothing.
    with pytest.raises(cchq.CancelledError) as info:
        fleet.deploy("commcare", cancel=token)
    assert info.value.completed == ()


def _deploy_until(env: cchq.Environment, when: Callable[[dict[str, Any]], bool]) -> tuple[threading.Thread, threading.Event, dict[str, Any], cchq.Cancel]:
    """A deploy in a thread with a token; `reached` is set once an event matches `when`."""
    token = cchq.Cancel()
    reached = threading.Event()
    box: dict[str, Any] = {}

    def on_event(e: dict[str, Any]) -> None:
        if when(e):
            reached.set()

    def work() -> None:
        try:
            box["result"] = env.deploy(on_event=on_event, cancel=token)
        except BaseException as e:  # noqa: BLE001 - handed over
            box["error"] = e
        reached.set()

    t = threading.Thread(target=work)
    t.start()
    return t, reached, box, token


def _phase(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "phase" and e["phase"] == name and e["ok"] is None


def test_a_held_lock_names_its_holder(fleet: cchq.Environment) -> None:
    t, reached, box, token = _deploy_until(fleet, _phase("resolve"))
    assert reached.wait(120)
    try:
        with pytest.raises(cchq.LockHeldError) as info:
            fleet.deploy()
        e = info.value
        assert e.kind == "lock_held" and e.holder is not None and "(python)" in e.holder
        assert e.hint is not None and "lock_wait=" in e.hint and "--lock-wait" not in e.hint
        info_now = fleet.lock_status()
        assert info_now is not None and info_now.alive
    finally:
        token.cancel()
        t.join(300)
    assert isinstance(box.get("error"), cchq.CancelledError), box
    assert fleet.lock_status() is None


def _all_running(fleet: cchq.Environment) -> None:
    """Starts every program, so that each case starts from a fleet where everything runs."""
    fleet.service("commcare", "start")


@pytest.mark.parametrize("phase", ["build", "restart"])
def test_a_deploy_cancelled_from_a_thread(fleet: cchq.Environment, phase: str) -> None:
    _all_running(fleet)
    before = _current(fleet)
    t, reached, box, token = _deploy_until(fleet, _phase(phase))
    assert reached.wait(600)
    token.cancel("from a thread")
    t.join(300)
    assert not t.is_alive()
    e = box.get("error")
    assert isinstance(e, cchq.CancelledError), box
    assert e.release and f"deploy(resume='{e.release}')" in (e.hint or "")
    assert fleet.lock_status() is None, "the lock is freed"
    if phase == "build":
        assert _current(fleet) == before, "nothing was switched"
    # Every program runs: a cancelled restart started again what it had stopped.
    assert fleet.service("commcare", "status").ok
    (done,) = fleet.deploy(resume=e.release)
    assert done.release == e.release and _current(fleet) == {e.release}


@pytest.mark.parametrize("phase", ["build", "restart"])
def test_a_deploy_cancelled_by_asyncio(fleet: cchq.Environment, phase: str) -> None:
    _all_running(fleet)
    seen: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task: asyncio.Task[list[cchq.DeployResult]]

        def on_event(e: dict[str, Any]) -> None:
            if e.get("release"):
                seen.append(e["release"])
            if _phase(phase)(e):
                loop.call_soon_threadsafe(task.cancel)

        task = asyncio.create_task(cchq.aio.deploy(fleet, on_event=on_event))
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen
    assert fleet.lock_status() is None
    # Every program runs again (the guard started what the restart had stopped); a program just
    # started may still be STARTING for its startsecs.
    report = fleet.service("commcare", "status")
    for _ in range(30):
        if report.ok:
            break
        time.sleep(1)
        report = fleet.service("commcare", "status")
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    (done,) = fleet.deploy(resume=seen[-1])
    assert done.release == seen[-1]


def test_the_readme_ops_script_runs(fleet_root: Path) -> None:
    text = README.read_text()
    m = re.search(r"<!-- ops-script -->\n```python\n(.*?)```", text, re.S)
    assert m, "the README has the ops script"
    out = subprocess.run(
        [sys.executable, "-c", m.group(1)],
        env={**os.environ, "OPS_ENV": "fleet", "OPS_ROOT": str(fleet_root)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["component"] == "commcare" and result["switched"]
    assert "[commcare] build ..." in out.stderr


def _sleepers(env: cchq.Environment, host: str) -> str:
    return env.run(host, "pgrep -u cchq -a -x sleep || true")[0].stdout


def test_a_downtime_kills_only_this_environments_lingering_processes_and_ends(fleet: cchq.Environment) -> None:
    """`downtime_start(on_lingering="kill")`: the record, every program stopped, exactly this
    environment's lingering process killed (not the same user's in another directory); a second
    start refused; `downtime_end` starts everything and removes the record."""
    fleet.deploy()
    host = fleet.hosts("celery")[0].name
    fleet.run("all", "pkill -u cchq -x sleep; true", become="root")
    for where, secs in (("/home/cchq/www/fleet", 1000), ("/home/cchq", 1002)):
        fleet.run(host, f"mkdir -p {where} && cd {where} && setsid -f sleep {secs} >/dev/null 2>&1 </dev/null", become="cchq")[0].check()
    try:
        started = fleet.downtime_start("py downtime", hours=1, on_lingering="kill")
        assert isinstance(started, cchq.DowntimeStarted) and started.started, started
        assert started.downtime is not None and started.downtime.message == "py downtime"
        assert started.services.rows and all(r.state == "STOPPED" for r in started.services.rows), started.services
        assert started.lingering == []
        left = _sleepers(fleet, host)
        assert "sleep 1000" not in left and "sleep 1002" in left, left
        status = fleet.downtime_status()
        assert status is not None and status.message == "py downtime"
        with pytest.raises(cchq.UsageError, match="already in progress"):
            fleet.downtime_start(on_lingering="continue")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            assert pool.submit(_same, started).result() == started
        ended = fleet.downtime_end()
        assert isinstance(ended, cchq.ServiceReport) and ended.ok, ended
        assert all(r.state == "RUNNING" for r in ended.rows)
        assert fleet.downtime_status() is None
        with pytest.raises(cchq.UsageError, match="no downtime in progress"):
            fleet.downtime_end()
    finally:
        fleet.run("all", "pkill -u cchq -x sleep; true", become="root")
        if fleet.downtime_status() is not None:
            fleet.downtime_end()


def test_a_downtime_aborted_on_lingering_processes_leaves_everything_running(fleet: cchq.Environment) -> None:
    host = fleet.hosts("celery")[0].name
    fleet.run("all", "pkill -u cchq -x sleep; true", become="root")
    fleet.run(host, "cd /home/cchq/www/fleet && setsid -f sleep 1001 >/dev/null 2>&1 </dev/null", become="cchq")[0].check()
    try:
        with pytest.raises(cchq.UsageError, match="not one of abort"):
            fleet.downtime_start(on_lingering="later")  # type: ignore[arg-type]
        started = fleet.downtime_start(on_lingering="abort")
        assert not started.started and started.downtime is None
        assert started.services.ok and all(r.state == "RUNNING" for r in started.services.rows)
        assert fleet.downtime_status() is None
        assert "sleep 1001" in _sleepers(fleet, host), "abort kills nothing"
    finally:
        fleet.run("all", "pkill -u cchq -x sleep; true", become="root")


def test_preindex_views_builds_a_private_release_and_starts_preindexing(fleet: cchq.Environment) -> None:
    before = _current(fleet)
    events: list[dict[str, Any]] = []
    p = fleet.preindex_views(on_event=events.append)
    assert isinstance(p, cchq.Preindex) and p.pid > 0 and p.log.endswith("/preindex.log")
    assert not p.release.switched and p.release.release not in before
    assert _current(fleet) == before, "nothing was switched"
    assert p.host == fleet.hosts("django_manage")[0].name
    assert {e.get("release") for e in events if "release" in e} == {p.release.release}
    assert fleet.run(p.host, f"test -f {p.log}", become="cchq")[0].ok


# --- the daily commands ----------------------------------------------------------------------


def test_ping_checks_every_host(fleet: cchq.Environment) -> None:
    pings = fleet.ping(on_event=lambda e: None)
    assert [p.host for p in pings] == [h.name for h in fleet.hosts("all")]
    for p in pings:
        assert isinstance(p, cchq.Ping) and p.reachable and p.sudo is True and p.hostname == p.host, p
    web = fleet.hosts("webworkers")[0].name
    assert next(p for p in pings if p.host == web).supervisord == "RUNNING"
    assert pickle.loads(pickle.dumps(pings)) == pings
    json.dumps([p.to_dict() for p in pings])
    (one,) = asyncio.run(cchq.aio.ping(fleet, web))
    assert one.ok and one.host == web


def test_postgresql_dbs_are_listed_and_compared_with_the_server(fleet: cchq.Environment) -> None:
    dbs = fleet.postgresql_dbs()
    assert dbs and all(isinstance(d, cchq.PostgresDb) for d in dbs)
    assert "commcarehq" in {d.name for d in dbs}
    found = fleet.compare_postgresql_dbs()
    assert found and all(isinstance(c, cchq.DbComparison) and c.error is None for c in found), found
    assert sorted(n for c in found for n in c.present + c.missing) == sorted(d.name for d in dbs if d.host in {c.host for c in found})
    assert all("postgres" not in c.additional for c in found)


def test_stale_celery_workers_are_found_and_killed_only_here(fleet: cchq.Environment) -> None:
    if not _current(fleet):
        fleet.deploy("commcare")
    host = fleet.hosts("celery")[0].name
    old = "/home/cchq/www/fleet/releases/pytest-stale"
    start = f"mkdir -p {old} && cd {old} && {{ setsid bash -c 'exec -a celery-pytest-stale sleep 600' </dev/null >/dev/null 2>&1 & echo $!; }}"
    (r,) = fleet.run(host, start, become="cchq")
    r.check()
    pid = int(r.stdout.strip())
    try:
        time.sleep(0.3)
        scan = fleet.stale_celery_workers(limit=host)
        assert [h.host for h in scan] == [host] and scan[0].error is None, scan
        mine = [w for w in scan[0].workers if w.pid == pid]
        assert mine == [cchq.StaleWorker(host=host, pid=pid, release="pytest-stale", args=mine[0].args)], scan
        with pytest.raises(cchq.UsageError, match="signal"):
            fleet.kill_stale_celery_workers(mine, signal="HUP")  # type: ignore[arg-type]
        with pytest.raises(cchq.NotFoundError):
            fleet.kill_stale_celery_workers([cchq.StaleWorker(host="nowhere", pid=1, release="x", args="celery")])
        (killed,) = fleet.kill_stale_celery_workers(mine)
        assert killed == cchq.KilledWorkers(host=host, pids=[pid], error=None)
        (r,) = fleet.run(host, f"sleep 0.3; kill -0 {pid} 2>/dev/null && echo alive || echo gone", become="cchq")
        assert r.stdout.strip() == "gone"
    finally:
        fleet.run(host, f"kill -9 {pid} 2>/dev/null; rm -rf {old}; true", become="cchq")
