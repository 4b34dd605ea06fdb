"""Against the fleet test bed (tests/fleet): skipped without $CCHQ_FLEET_ROOT, failed with
CCHQ_REQUIRE_FLEET=1. Read-only: `hostname` and service status."""

from __future__ import annotations

from typing import Any

import pytest

import cchq


def test_every_host_answers_with_its_own_name(fleet: cchq.Environment) -> None:
    names = [h.name for h in fleet.hosts()]
    assert len(names) >= 5
    results = fleet.run("all", "hostname")
    assert [r.host for r in results] == names
    for r in results:
        assert r.ok, r
        assert r.stdout.strip() == r.host


def test_failures_are_per_host(fleet: cchq.Environment) -> None:
    results = {r.host: r for r in fleet.run("webworkers", "test $(hostname) = fleet2 || exit 9")}
    assert results["fleet2"].ok
    assert results["fleet3"].exit_code == 9
    with pytest.raises(cchq.CommandFailedError):
        results["fleet3"].check()


def test_events_for_every_host(fleet: cchq.Environment) -> None:
    events: list[dict[str, Any]] = []
    results = fleet.run("all", "hostname", on_event=events.append)
    hosts = {r.host for r in results}
    assert {e["host"] for e in events if e["event"] == "started"} == hosts
    assert {e["host"] for e in events if e["event"] == "finished" and e["ok"]} == hosts


def test_a_callback_that_raises_is_reported_after_the_run(fleet: cchq.Environment) -> None:
    seen: list[dict[str, Any]] = []

    def callback(event: dict[str, Any]) -> None:
        seen.append(event)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fleet.run("all", "hostname", on_event=callback)
    assert len(seen) == 1
    assert all(r.ok for r in fleet.run("all", "hostname"))


def test_lookup_gives_the_addresses(fleet: cchq.Environment) -> None:
    assert fleet.lookup("webworkers") == [h.address for h in fleet.hosts("webworkers")]
    assert all(a.startswith("127.0.0.") for a in fleet.lookup("webworkers"))


def test_webworker_status_has_rows_for_each_webworker_host(fleet: cchq.Environment) -> None:
    web = {h.name for h in fleet.hosts("webworkers")}
    report = fleet.service(["webworker"], "status")
    assert report.unreachable == {}
    assert {r.host for r in report.rows} == web
    for row in report:
        assert row.program.endswith("-django")
        assert isinstance(row.state, str) and row.state
        assert row.ok is (row.state == "RUNNING")
