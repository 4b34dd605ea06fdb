"""Loading environments and reading their inventories (no host is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cchq
from conftest import EXAMPLES, FIXTURES

DEVELOPMENT_HOSTS = ["192.168.33.15", "192.168.33.16", "192.168.33.17", "192.168.33.14"]


def test_load_and_properties(development: cchq.Environment) -> None:
    assert development.name == "development"
    assert development.deploy_env == "dev"
    assert isinstance(development.dir, Path)
    assert development.dir == FIXTURES / "development"
    assert repr(development).startswith("Environment('development', dir=")


def test_the_root_may_be_a_string() -> None:
    assert cchq.Environment.load("test", str(FIXTURES)).name == "test"


def test_the_root_comes_from_cchq_environments_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMCARE_CLOUD_ENVIRONMENTS", str(EXAMPLES))
    assert cchq.Environment.load("local").name == "local"
    monkeypatch.setenv("CCHQ_ENVIRONMENTS", str(FIXTURES))
    assert cchq.Environment.load("test").name == "test"
    with pytest.raises(cchq.NotFoundError):
        cchq.Environment.load("local")
    # An explicit root wins over both variables.
    assert cchq.Environment.load("local", EXAMPLES).deploy_env == "local"


def test_list_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cchq.list_environments(FIXTURES) == ["development", "prod-aws", "prod-sharded", "test", "upstream-prod"]
    monkeypatch.setenv("CCHQ_ENVIRONMENTS", str(EXAMPLES))
    assert "local" in cchq.list_environments()


def test_environments_are_made_by_load_only() -> None:
    with pytest.raises(TypeError):
        cchq.Environment()


def test_hosts_all_in_inventory_order(development: cchq.Environment) -> None:
    assert [h.name for h in development.hosts()] == DEVELOPMENT_HOSTS
    assert [h.name for h in development.hosts("all")] == DEVELOPMENT_HOSTS


def test_hosts_with_a_pattern(development: cchq.Environment) -> None:
    assert [h.name for h in development.hosts("redis:!webworkers")] == ["192.168.33.16", "192.168.33.17"]
    assert [h.name for h in development.hosts("redis[0]")] == ["192.168.33.15"]


def test_host_fields(test_env: cchq.Environment) -> None:
    hosts = test_env.hosts("commcarehq")
    assert len(hosts) == 7
    first = hosts[0]
    assert first.name == "cloud_worker_1"
    assert first.address == "cloud_worker_1"
    assert first.port is None
    assert first.user == "admin"
    assert "django_manage" in first.groups and "commcarehq" in first.groups
    assert "all" not in first.groups
    assert first.groups == sorted(first.groups)
    assert first.local is False
    assert repr(first).startswith("Host(name='cloud_worker_1', address='cloud_worker_1'")


def test_records_are_immutable(development: cchq.Environment) -> None:
    host = development.hosts()[0]
    with pytest.raises(AttributeError):
        host.name = "other"  # type: ignore[misc]


def test_a_pattern_part_that_matches_nothing_is_a_warning(development: cchq.Environment) -> None:
    with pytest.warns(cchq.CchqWarning, match="Could not match supplied host pattern, ignoring: nosuchgroup"):
        hosts = development.hosts("webworkers:nosuchgroup")
    assert [h.name for h in hosts] == ["192.168.33.15"]


def test_lookup(development: cchq.Environment) -> None:
    assert development.lookup("-") == ["192.168.33.15"]
    assert development.lookup("root@redis[2]") == ["root@192.168.33.17"]
    assert development.lookup("redis") == ["192.168.33.15", "192.168.33.16", "192.168.33.17"]
    assert development.lookup("10.1.2.3") == ["10.1.2.3"]


def test_lookup_warns_about_the_deprecated_colon_index(development: cchq.Environment) -> None:
    with pytest.warns(cchq.CchqWarning, match="deprecated"):
        assert development.lookup("redis:1") == ["192.168.33.16"]


def test_the_local_environment_is_one_local_host(local: cchq.Environment) -> None:
    (host,) = local.hosts()
    assert host.name == "localhost"
    assert host.local is True
    assert "webworkers" in host.groups
