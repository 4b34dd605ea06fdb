"""A host that refuses SSH connections (127.0.0.1, port 1): per-host errors, not exceptions."""

from __future__ import annotations

import builtins
import shutil
from pathlib import Path

import pytest

import cchq

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")


@pytest.fixture
def refused(tmp_path: Path) -> cchq.Environment:
    env = tmp_path / "refused"
    env.mkdir()
    (env / "public.yml").write_text("commcare_cloud_strict_host_key_checking: false\n")
    (env / "meta.yml").write_text(
        "deploy_env: refused\nenv_monitoring_id: refused\nusers: []\nbare_non_cchq_environment: true\n"
    )
    (env / "inventory.ini").write_text("[redis]\nh1 ansible_host=127.0.0.1 ansible_port=1 ansible_user=nobody\n")
    return cchq.Environment.load("refused", tmp_path)


def test_an_unreachable_host_is_a_result(refused: cchq.Environment) -> None:
    (r,) = refused.run("all", "true", timeout=20)
    assert r.host == "h1"
    assert r.unreachable and not r.ok
    assert r.exit_code is None and r.error
    with pytest.raises(cchq.ConnectionError) as info:
        r.check()
    assert isinstance(info.value, builtins.ConnectionError)
    assert info.value.message == r.error


def test_service_reports_unreachable_hosts(refused: cchq.Environment) -> None:
    report = refused.service("redis", "status")
    assert list(report.unreachable) == ["h1"]
    assert report.rows == []
    assert report.ok is False


def test_update_config_reports_unreachable_hosts(tmp_path: Path) -> None:
    env = tmp_path / "refused"
    env.mkdir()
    (env / "public.yml").write_text("commcare_cloud_strict_host_key_checking: false\n")
    (env / "meta.yml").write_text("deploy_env: refused\nenv_monitoring_id: refused\nusers: []\n")
    (env / "inventory.ini").write_text("[webworkers]\nh1 ansible_host=127.0.0.1 ansible_port=1 ansible_user=nobody\n")
    refused = cchq.Environment.load("refused", tmp_path)
    for check in (True, False):
        report = refused.update_config(check=check)
        (h,) = report.hosts
        assert h.host == "h1" and h.unreachable and h.error and not h.ok
        assert report.ok is False and report.changed_files == 0
