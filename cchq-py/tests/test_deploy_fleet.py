"""A real deploy -> rollback -> service restart round trip from Python, on the fleet test bed
(skipped without $CCHQ_FLEET_ROOT, failed with CCHQ_REQUIRE_FLEET=1); a callback that raises
during a deploy (the deploy completes, the exception comes back afterwards, nothing is locked);
update-config check -> apply -> drift guard after a deploy; django-manage; and Ctrl-C during a
deploy (KeyboardInterrupt, then a resume completes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import cchq

# Where the fleet's settings live (deploy_env `fleet`, www_root /home/cchq/www).
WWW = "/home/cchq/www/fleet"
LS = f"{WWW}/current/localsettings.py"
# The hosts of the commcare release (formplayer's own host may have no release of its own).
APP_HOSTS = "commcarehq"


def _current(env: cchq.Environment) -> set[str]:
    return {r.name for r in env.list_releases() if r.current}


def test_deploy_rollback_and_restart(fleet: cchq.Environment) -> None:
    events: list[dict[str, Any]] = []
    (first,) = fleet.deploy(on_event=events.append)
    assert first.switched and first.commit and first.component == "commcare"
    assert _current(fleet) == {first.release}
    assert all(e["component"] == "commcare" and e["release"] == first.release for e in events)
    assert all(e["phase"] for e in events if e["event"] in ("started", "finished"))
    phases = [e["phase"] for e in events if e["event"] == "phase" and e["ok"]]
    assert "build" in phases and "switch" in phases and "restart" in phases
    (second,) = fleet.deploy()
    assert _current(fleet) == {second.release}
    back = fleet.rollback()
    assert back.release == first.release and back.previous_commit == second.commit
    assert _current(fleet) == {first.release}
    report = fleet.service(["webworker"], "restart")
    assert report.ok, report.rows
    with pytest.raises(cchq.NotFoundError):
        fleet.rollback(to="1999-01-01_00.00.00")


def test_a_callback_that_raises_during_a_deploy(fleet: cchq.Environment) -> None:
    def boom(event: dict[str, Any]) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        fleet.deploy(on_event=boom)
    # The deploy itself completed and released its lock: another one proceeds.
    (again,) = fleet.deploy()
    assert _current(fleet) == {again.release}


def _forget_applied(env: cchq.Environment) -> None:
    """Removes the record of applied settings, so that later deploys see no drift."""
    for r in env.run(APP_HOSTS, f"rm -f {WWW}/.cchq-applied.json", become="cchq"):
        r.check()


def test_update_config_round_trip_after_a_deploy(fleet: cchq.Environment) -> None:
    fleet.deploy()
    _forget_applied(fleet)
    web = fleet.hosts("django_manage")[0].name
    try:
        # A hand edit: check shows it (masked), writes nothing.
        fleet.run(web, f"echo 'HAND_EDIT = 1' >> {LS}", become="cchq")[0].check()
        report = fleet.update_config(limit=APP_HOSTS)
        assert "SENTINEL" not in json.dumps(report.to_dict()), "a secret leaked"
        assert report.check and report.changed_files >= 1
        by_host = {h.host: h for h in report.hosts}
        assert set(by_host) == {h.name for h in fleet.hosts(APP_HOSTS)}
        (ls,) = [f for f in by_host[web].files if f.path == LS]
        assert ls.changed and "-HAND_EDIT = ********" in ls.diff, ls
        assert f"+++ {web}:{LS} (rendered)" in ls.diff
        assert all(h.written == [] for h in report.hosts)
        assert "HAND_EDIT" in fleet.run(web, f"cat {LS}", become="cchq")[0].stdout

        # Apply: written, recorded; then nothing left to do.
        events: list[dict[str, Any]] = []
        report = fleet.update_config(limit=APP_HOSTS, check=False, on_event=events.append)
        assert report.ok, report
        assert LS in {h.host: h for h in report.hosts}[web].written
        assert all(h.recorded for h in report.hosts if h.written)
        assert "HAND_EDIT" not in fleet.run(web, f"cat {LS}", become="cchq")[0].stdout
        assert [e["phase"] for e in events if e["event"] == "phase" and e["ok"]] == ["plan", "apply"]
        assert fleet.update_config(limit=APP_HOSTS).changed_files == 0

        # Now that a record exists, a hand edit is drift: kept until forced.
        fleet.run(web, f"echo 'HAND_EDIT = 2' >> {LS}", become="cchq")[0].check()
        with pytest.raises(cchq.ConfigError, match="edited by hand"):
            fleet.update_config(limit=APP_HOSTS, check=False)
        assert "HAND_EDIT = 2" in fleet.run(web, f"cat {LS}", become="cchq")[0].stdout
        report = fleet.update_config(limit=APP_HOSTS, check=False, force=True)
        assert report.forced and report.ok
        assert "HAND_EDIT" not in fleet.run(web, f"cat {LS}", become="cchq")[0].stdout

        # The services pick the settings up.
        assert fleet.service("commcare", "restart", limit=web).ok
    finally:
        _forget_applied(fleet)


def test_django_manage_returns_exit_codes_and_output(fleet: cchq.Environment) -> None:
    if not _current(fleet):
        fleet.deploy()
    r = fleet.django_manage(["preindex_everything", "--check"])
    assert r.host == fleet.hosts("django_manage")[0].name
    assert (r.exit_code, r.ok) == (0, True), r
    assert "all views and indices are up to date" in r.stdout
    r = fleet.django_manage("check", server="webworkers[1]")
    assert r.exit_code == 0 and "System check identified no issues" in r.stdout, r
    assert r.host == fleet.hosts("webworkers")[1].name
    # manage.py's own exit code (argparse: 2), arguments passed unchanged.
    r = fleet.django_manage(["no_such_command", "--with 'odd' $(args)"])
    assert r.exit_code == 2 and "invalid choice: 'no_such_command'" in r.stderr, r
    with pytest.raises(cchq.CommandFailedError):
        r.check()
    with pytest.raises(cchq.NotFoundError, match="release `nope` does not exist"):
        fleet.django_manage("check", release="nope")


# The child: a deploy that prints its events as JSON lines, and how it ended.
_CHILD = r"""
import json, sys
import cchq

def emit(obj):
    # One write per line: print() writes the text and the newline apart, and a SIGINT landing
    # between them would glue the next line onto this one.
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

env = cchq.Environment.load("fleet", sys.argv[1])
try:
    env.deploy(on_event=emit)
except KeyboardInterrupt as e:
    emit({"interrupted": getattr(e, "release", None), "message": str(e)})
    sys.exit(130)
emit({"completed": True})
"""


def test_ctrl_c_during_a_deploy_raises_keyboard_interrupt_and_resume_completes(fleet_root: Path, fleet: cchq.Environment) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(fleet_root)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    seen: list[dict[str, Any]] = []
    sent_at = None
    try:
        for line in child.stdout:
            event = json.loads(line)
            seen.append(event)
            if sent_at is None and event.get("event") == "started" and "virtualenv" in (event.get("step") or "").split(", "):
                child.send_signal(signal.SIGINT)
                sent_at = time.monotonic()
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert sent_at is not None, f"the deploy never started building: {seen}"
    assert code == 130, seen[-3:]
    ended = seen[-1]
    release = ended.get("interrupted")
    assert isinstance(release, str) and release, ended
    assert f"deploy(resume='{release}')" in ended["message"]
    assert time.monotonic() - sent_at < 25, "the deploy stopped promptly (not at its end)"
    assert not any(e.get("event") == "phase" and e.get("phase") == "switch" for e in seen), "nothing was switched"

    # Resumable: the lock was left free, and the resume finishes the same release.
    events: list[dict[str, Any]] = []
    (done,) = fleet.deploy(resume=release, on_event=events.append)
    assert done.release == release and done.switched
    assert _current(fleet) == {release}
    assert not any(e["event"] == "warning" and "taking over the lock" in e["message"] for e in events), events
