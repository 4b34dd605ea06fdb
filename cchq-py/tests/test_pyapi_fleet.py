"""Issue 15 on the fleet test bed (skipped without $CCHQ_FLEET_ROOT): every component's result,
records through a process pool, exception attributes of a held lock, cancellation from a thread
and from asyncio during the build and during the restart (the lock freed, every program running
again, the release resumable), and the README's ops script."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
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
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(_same, results).result() == results
    json.dumps([r.to_dict() for r in results])
    releases = fleet.list_releases("formplayer")
    assert releases and all(isinstance(r, cchq.Release) for r in releases)


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
