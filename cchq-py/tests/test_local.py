"""Running commands through the local transport (`ansible_connection=local`): results, events,
callbacks, the GIL, Ctrl-C. Commands run on this machine; nothing outside the test's temp dirs
is changed."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cchq


def test_run_hostname(local: cchq.Environment) -> None:
    results = local.run("all", "hostname")
    assert len(results) == 1
    r = results[0]
    assert r.host == "localhost"
    assert r.exit_code == 0
    assert r.stdout.strip() == socket.gethostname()
    assert r.stderr == ""
    assert r.error is None
    assert r.ok and not r.unreachable
    assert 0 <= r.duration < 30
    r.check()
    assert repr(r).startswith("HostResult(host='localhost', exit_code=0, error=None")


def test_an_argv_is_run_without_a_shell(local: cchq.Environment) -> None:
    (r,) = local.run("all", ["printf", "%s|", "a b", "$HOME", "it's"])
    assert r.stdout == "a b|$HOME|it's|"


def test_a_failing_command_is_a_result_and_check_raises(local: cchq.Environment) -> None:
    (r,) = local.run("all", "echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.error, r.ok) == (3, "out\n", "err\n", None, False)
    with pytest.raises(cchq.CommandFailedError) as info:
        r.check()
    e = info.value
    assert (e.exit_code, e.stdout, e.stderr) == (3, "out\n", "err\n")
    assert "exit code 3" in e.message and "err" in e.message


def test_a_timeout_is_an_error_result(local: cchq.Environment) -> None:
    start = time.monotonic()
    (r,) = local.run("all", "sleep 5", timeout=0.2)
    assert time.monotonic() - start < 4
    assert r.exit_code is None and not r.ok and not r.unreachable
    assert r.error is not None and "timed out" in r.error
    with pytest.raises(cchq.CommandFailedError, match="timed out"):
        r.check()


@pytest.mark.skipif(os.geteuid() != 0, reason="become to root needs root (or sudo) on this machine")
def test_become_root(local: cchq.Environment) -> None:
    (r,) = local.run("all", "id -un", become=True)
    assert r.stdout.strip() == "root"
    (r,) = local.run("all", "id -un", become="root")
    assert r.stdout.strip() == "root"


def test_events_are_dicts_in_order(local: cchq.Environment) -> None:
    events: list[dict[str, Any]] = []
    local.run("all", "true", on_event=events.append)
    assert [e["event"] for e in events] == ["started", "finished"]
    started, finished = events
    assert isinstance(started["timestamp"], float) and abs(started["timestamp"] - time.time()) < 60
    assert {k: v for k, v in started.items() if k != "timestamp"} == {"event": "started", "host": "localhost", "step": "run"}
    assert list(finished) == ["event", "host", "step", "ok", "duration_ms", "timestamp"]
    assert finished["ok"] is True and isinstance(finished["duration_ms"], int)
    assert started["timestamp"] <= finished["timestamp"]


def test_output_lines_reach_on_event_and_the_logger_while_the_command_runs(
    local: cchq.Environment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The command prints a line, then waits until the callback has seen it: lines that only came
    # at the end would make it wait out its 10 s and print no "two".
    flag = tmp_path / "seen"
    lines: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "line":
            lines.append(event)
            if event["text"] == "one":
                flag.touch()

    script = f"echo one; i=0; while [ ! -e {flag} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; [ -e {flag} ] && echo two >&2"
    with caplog.at_level(logging.DEBUG, logger="cchq"):
        (r,) = local.run("all", script, on_event=on_event)
    assert r.ok, r
    assert (r.stdout, r.stderr) == ("one\n", "two\n")
    assert [(e["host"], e["step"], e["stream"], e["text"]) for e in lines] == [
        ("localhost", "run", "stdout", "one"),
        ("localhost", "run", "stderr", "two"),
    ]
    assert [rec.getMessage() for rec in caplog.records if rec.name == "cchq.host.localhost" and rec.levelno == logging.DEBUG] == [
        "localhost [run] one",
        "localhost [run] two",
    ]


def test_an_exception_in_the_callback_is_raised_after_the_run_completes(local: cchq.Environment, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    calls: list[dict[str, Any]] = []

    def callback(event: dict[str, Any]) -> None:
        calls.append(event)
        raise ValueError("callback broke")

    with pytest.raises(ValueError, match="callback broke") as info:
        local.run("all", f"sleep 0.2; touch {marker}", on_event=callback)
    assert marker.exists(), "the run went on to its end"
    assert len(calls) == 1, "the callback is not called again after it raised"
    if sys.version_info >= (3, 11):
        assert any("on_event callback" in n for n in info.value.__notes__)
    # Nothing is left broken.
    assert local.run("all", "true")[0].ok


def test_keyboard_interrupt_in_the_callback_stops_the_run(local: cchq.Environment) -> None:
    def callback(event: dict[str, Any]) -> None:
        if event["event"] == "started":
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        local.run("all", "sleep 5", on_event=callback)
    assert time.monotonic() - start < 3, "the run was abandoned, not waited for"
    # Not asserted: that the command is dead. The local transport kills the `/bin/sh` it started,
    # not that shell's children (cchq-core's LocalTransport does not kill the process group).


def test_the_callback_may_call_cchq(local: cchq.Environment) -> None:
    inner: list[str] = []

    def callback(event: dict[str, Any]) -> None:
        if event["event"] == "started":
            inner.append(local.run("all", "echo nested")[0].stdout)

    assert local.run("all", "true", on_event=callback)[0].ok
    assert inner == ["nested\n"]


def test_the_gil_is_released_while_hosts_work(local: cchq.Environment) -> None:
    results: list[float] = []

    def work() -> None:
        t = time.monotonic()
        local.run("all", "sleep 2")
        results.append(time.monotonic() - t)

    threads = [threading.Thread(target=work) for _ in range(3)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    assert time.monotonic() - start < 4.5, "three 2 s runs overlapped (one after the other: 6 s)"


def test_ctrl_c_interrupts_a_run(local: cchq.Environment) -> None:
    assert threading.current_thread() is threading.main_thread()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            local.run("all", "sleep 5")
    finally:
        timer.cancel()
    assert time.monotonic() - start < 3, "the run was abandoned, not waited for"
    # (The command's own children are not killed: see test_keyboard_interrupt_in_the_callback_stops_the_run.)
    assert local.run("all", "true")[0].ok, "cchq works after an interrupt"


def test_service_status_rows(local: cchq.Environment) -> None:
    # Read-only: `supervisorctl status` on this machine; the programs need not exist.
    report = local.service("webworker", "status")
    assert report.unreachable == {}
    assert report.failed_batch == []
    assert len(report) == len(report.rows) >= 1
    assert list(report) == report.rows
    for row in report.rows:
        assert row.host == "localhost"
        if row.program == "supervisor":  # no supervisord answers on this machine: one row says so
            assert row.state == "ERROR" and not row.ok and "supervisord" in row.detail
            continue
        assert row.program.endswith("-django")
        assert isinstance(row.state, str) and isinstance(row.detail, str)
        assert row.ok is (row.state == "RUNNING")
    assert report.ok is all(r.ok for r in report.rows)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
def test_a_forked_child_gets_its_own_runtime(local: cchq.Environment) -> None:
    assert local.run("all", "true")[0].ok  # the parent's runtime exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: never returns into pytest
        code = 1
        try:
            code = 0 if local.run("all", "echo child")[0].stdout == "child\n" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert local.run("all", "true")[0].ok
