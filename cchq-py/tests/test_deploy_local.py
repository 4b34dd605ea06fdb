"""Ctrl-C during a deploy, on this machine: the `local` example environment (a monolith reached
without SSH) copied with its www root in a temporary directory, the current user as the app user
and the demo app's git repository as the code. The deploy is interrupted while it builds, before
anything is switched or restarted (a full deploy needs supervisord: the fleet tests do that)."""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cchq

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path: Path) -> tuple[cchq.Environment, Path]:
    """The environment `local` and its www home (`<www_root>/local`)."""
    repo = tmp_path / "demo-app.git"
    subprocess.run([str(REPO / "examples" / "demo-app" / "make-repo"), str(repo)], check=True, capture_output=True)
    root = tmp_path / "envs"
    shutil.copytree(REPO / "examples" / "environments", root)
    env_dir = root / "local"
    www_root = tmp_path / "www"
    with (env_dir / "cchq.yml").open("a") as f:
        f.write(f"www_root: {www_root}\napp_user: {getpass.getuser()}\n")
    (env_dir / "fab-settings.yml").write_text(f"code_repo: {repo}\ndefault_branch: master\nemail_enabled: False\n")
    return cchq.Environment.load("local", root), www_root / "local"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_ctrl_c_during_a_deploy_frees_the_lock_and_names_the_release(demo: tuple[cchq.Environment, Path]) -> None:
    env, www = demo
    assert threading.current_thread() is threading.main_thread()
    timers: list[threading.Timer] = []
    seen: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        # Once the virtualenv step runs: SIGINT from outside the callback, as a terminal sends it.
        if not timers and event["event"] == "started" and "virtualenv" in event["step"].split(", "):
            timers.append(threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)))
            timers[0].start()

    start = time.monotonic()
    try:
        # The first Ctrl-C asks the deploy to stop at its next safe point (as in the CLI).
        with pytest.raises(KeyboardInterrupt) as info, pytest.warns(cchq.CchqWarning, match="next safe point"):
            env.deploy(on_event=on_event)
    finally:
        for t in timers:
            t.cancel()
    assert timers, f"the deploy never reached its build step: {seen}"
    assert time.monotonic() - start < 30
    release = getattr(info.value, "release", None)
    assert isinstance(release, str) and release
    assert f"deploy(resume='{release}')" in str(info.value)
    # Stopped by the core at its safe point ("interrupted (Ctrl-C)"), wherever the signal landed
    # (while the core ran, or while Python code ran: the event callback, a log handler): it says
    # interrupted and how to resume, the Python way.
    assert "interrupted" in str(info.value) and "--resume" not in str(info.value)
    assert (www / "releases" / release).is_dir(), "the release stays, to resume"
    assert not (www / ".deploy-lock").exists(), "the lock is freed for the resume"
    assert not (www / "current").exists(), "nothing was switched"
    assert not any(e["event"] == "phase" and e["phase"] == "switch" for e in seen)
    # cchq works after the interrupt.
    assert env.run("all", "true")[0].ok


class _InterruptingHandler(logging.Handler):
    """A log handler that raises `KeyboardInterrupt` once the virtualenv step starts: Ctrl-C
    landing while the logging module runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "cchq_event", {})
        if not self.fired and event.get("event") == "started" and "virtualenv" in (event.get("step") or "").split(", "):
            self.fired = True
            raise KeyboardInterrupt


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("where", ["callback", "log handler"])
def test_ctrl_c_landing_in_python_code_stops_the_deploy_at_its_safe_point(
    demo: tuple[cchq.Environment, Path], where: str
) -> None:
    """Python runs a signal handler wherever Python code runs next: a Ctrl-C that lands in the
    event callback or in a log handler is the first Ctrl-C all the same (stop at the next safe
    point, lock freed, release named), never lost (the deploy running to its end)."""
    env, www = demo
    seen: list[dict[str, Any]] = []
    fired: list[bool] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        if where == "callback" and not fired and event["event"] == "started" and "virtualenv" in event["step"].split(", "):
            fired.append(True)
            raise KeyboardInterrupt

    handler = _InterruptingHandler()
    logger = logging.getLogger("cchq")
    old_level = logger.level
    if where == "log handler":
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with pytest.raises(KeyboardInterrupt) as info, pytest.warns(cchq.CchqWarning, match="next safe point"):
            env.deploy(on_event=on_event)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert fired or handler.fired, f"the deploy never reached its build step: {seen}"
    release = getattr(info.value, "release", None)
    assert isinstance(release, str) and release, info.value
    assert f"deploy(resume='{release}')" in str(info.value)
    assert not (www / ".deploy-lock").exists(), "the lock is freed for the resume"
    assert not (www / "current").exists(), "nothing was switched"
    assert not any(e["event"] == "phase" and e["phase"] == "switch" for e in seen)


def test_a_deploy_with_an_encrypted_vault_and_no_password_starts_nothing(
    demo: tuple[cchq.Environment, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: a first deploy with an encrypted vault rendered localsettings.py without any
    vault value. Without the password it now raises `VaultError` before anything starts."""
    env, www = demo
    shutil.copy(REPO / "tests" / "fixtures" / "ansible-vault" / "vault.yml", env.dir / "vault.yml")
    env = cchq.Environment.load("local", env.dir.parent)
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD", raising=False)
    monkeypatch.delenv("CCHQ_VAULT_PASSWORD_FILE", raising=False)
    for component in ("commcare", "formplayer"):
        with pytest.raises(cchq.VaultError) as info:
            env.deploy(component)
        assert info.value.hint is not None and "ANSIBLE_VAULT_PASSWORD" in info.value.hint
    assert not www.exists(), "nothing was written under the www root"
