"""`Environment.host` and `Environment.hosts`: typed host records (issue 17); no host is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

import cchq

INVENTORY = """\
[web]
web1 ansible_host=10.0.0.1 ansible_user=own
web2
[db]
db1 ansible_port=2300 role=primary
[local]
here ansible_connection=local
[prod:children]
web
[prod:vars]
ansible_user=produser
[web:vars]
ansible_host=10.0.0.9
ansible_port=2222
ansible_user=webuser
[all:vars]
ansible_user=everyone
"""


@pytest.fixture
def env(tmp_path: Path) -> cchq.Environment:
    """An environment `e` whose hosts take their connection variables from groups and hosts."""
    d = tmp_path / "e"
    d.mkdir()
    (d / "inventory.ini").write_text(INVENTORY)
    (d / "public.yml").write_text("commcare_cloud_remote_user: remote\n")
    (d / "meta.yml").write_text("deploy_env: e\nenv_monitoring_id: e\nusers: []\n")
    return cchq.Environment.load("e", tmp_path)


def test_a_host_has_its_address_port_user_route_and_vars(env: cchq.Environment) -> None:
    web1 = env.host("web1")
    assert isinstance(web1, cchq.Host)
    # The host's own `ansible_host` and `ansible_user` over its group's; the group's port.
    assert (web1.name, web1.address, web1.port, web1.user) == ("web1", "10.0.0.1", 2222, "own")
    assert web1.route == "ssh" and web1.local is False
    assert web1.groups == ["prod", "web"]
    assert web1.vars["ansible_host"] == "10.0.0.1"
    assert web1.vars["ansible_port"] == 2222


def test_group_vars_by_depth_under_host_vars(env: cchq.Environment) -> None:
    web2 = env.host("web2")
    # `web` (deeper) over `prod`, over `all`.
    assert (web2.address, web2.port, web2.user) == ("10.0.0.9", 2222, "webuser")
    db1 = env.host("db1")
    assert (db1.address, db1.port, db1.user) == ("db1", 2300, "everyone")
    assert db1.vars == {"ansible_user": "everyone", "ansible_port": 2300, "role": "primary"}


def test_a_local_host(env: cchq.Environment, local: cchq.Environment) -> None:
    here = env.host("here")
    assert here.route == "local" and here.local is True
    assert here.vars["ansible_connection"] == "local"
    (localhost,) = local.hosts()
    assert localhost.route == "local"
    assert local.host("localhost") == localhost


def test_hosts_with_a_pattern(env: cchq.Environment) -> None:
    assert [h.name for h in env.hosts("web")] == ["web1", "web2"]
    assert [h.route for h in env.hosts("db,here")] == ["ssh", "local"]
    assert env.hosts("prod:!web2") == [env.host("web1")]
    assert len(env.hosts()) == 4


def test_a_pattern_that_matches_nothing_is_an_error(env: cchq.Environment) -> None:
    for pattern in ["nosuch", "web:&db"]:
        with pytest.raises(cchq.PatternError, match="matches no hosts"):
            env.hosts(pattern)


def test_an_unknown_host_is_not_found_with_a_hint(env: cchq.Environment) -> None:
    with pytest.raises(cchq.NotFoundError, match="no host `web3`") as e:
        env.host("web3")
    assert e.value.hint is not None and "did you mean `web1` or `web2`?" in e.value.hint
    assert "`env.hosts()` lists them" in e.value.hint
    # A group is not a host.
    with pytest.raises(cchq.NotFoundError):
        env.host("web")


def test_the_record_round_trips_and_keeps_vars_out_of_its_repr(env: cchq.Environment) -> None:
    web1 = env.host("web1")
    assert cchq.Host(**web1.to_dict()) == web1
    assert web1.to_dict()["route"] == "ssh"
    assert "vars" not in repr(web1) and "route='ssh'" in repr(web1)
