"""A real deploy -> rollback -> service restart round trip from Python, on the fleet test bed
(skipped without $CCHQ_FLEET_ROOT, failed with CCHQ_REQUIRE_FLEET=1), and a callback that raises
during a deploy: the deploy completes, the exception comes back afterwards, nothing is locked."""

from __future__ import annotations

from typing import Any

import pytest

import cchq


def _current(env: cchq.Environment) -> set[str]:
    return {r["name"] for r in env.list_releases() if r["current"]}


def test_deploy_rollback_and_restart(fleet: cchq.Environment) -> None:
    events: list[dict[str, Any]] = []
    first = fleet.deploy(on_event=events.append)
    assert first["switched"] and first["commit"]
    assert _current(fleet) == {first["release"]}
    phases = [e["phase"] for e in events if e["event"] == "phase" and e["ok"]]
    assert "build" in phases and "switch" in phases and "restart" in phases
    second = fleet.deploy()
    assert _current(fleet) == {second["release"]}
    back = fleet.rollback()
    assert back["release"] == first["release"]
    assert _current(fleet) == {first["release"]}
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
    again = fleet.deploy()
    assert _current(fleet) == {again["release"]}
