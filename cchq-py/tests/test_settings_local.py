"""`update_config` and `django_manage` end to end on this machine: an environment whose one host
is reached without SSH (`ansible_connection=local`), with its www root in a temporary directory,
the current user as the app user, and the demo app (examples/demo-app) as release `r1`."""

from __future__ import annotations

import getpass
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cchq

REPO = Path(__file__).resolve().parents[2]
SENTINEL = "local-secret-SENTINEL"
PUBLIC = "localsettings:\n  HQ_INSTANCE: local-demo\n"


@pytest.fixture
def here(tmp_path: Path) -> tuple[cchq.Environment, Path]:
    """The environment `local` and its www home (`<www_root>/loc`)."""
    root = tmp_path / "envs"
    env_dir = root / "local"
    env_dir.mkdir(parents=True)
    www_root = tmp_path / "www"
    files = {
        "inventory.ini": "[webworkers]\nthis ansible_connection=local\n[django_manage]\nthis\n[formplayer]\nthis\n",
        "meta.yml": "deploy_env: loc\nenv_monitoring_id: loc\nusers: []\n",
        "public.yml": PUBLIC,
        "vault.yml": f"localsettings_private:\n  SECRET_KEY: {SENTINEL}\n",
        "proxy.yml": "SITE_HOST: local.example\n",
        "app-processes.yml": "{}\n",
        "cchq.yml": f"www_root: {www_root}\napp_user: {getpass.getuser()}\n",
    }
    for name, body in files.items():
        (env_dir / name).write_text(body)
    www = www_root / "loc"
    release = www / "releases" / "r1"
    shutil.copytree(REPO / "examples" / "demo-app", release, ignore=shutil.ignore_patterns("__pycache__"))
    (release / "python_env" / "bin").mkdir(parents=True)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    (release / "python_env" / "bin" / "python").symlink_to(python)
    (www / "current").symlink_to(release)
    return cchq.Environment.load("local", root), www


def _no_secret(value: object) -> None:
    assert SENTINEL not in repr(value), f"a secret leaked: {value!r}"


def test_update_config_checks_applies_and_then_has_nothing_to_do(here: tuple[cchq.Environment, Path]) -> None:
    env, www = here
    ls = www / "current" / "localsettings.py"
    fp = www / "current" / "formplayer" / "application.properties"

    report = env.update_config()  # check=True: nothing written
    _no_secret(report)
    assert isinstance(report, cchq.ConfigPlan) and report == pickle.loads(pickle.dumps(report))
    assert json.loads(json.dumps(report.to_dict()))["hosts"][0]["host"] == "this"
    assert report.check is True and report.ok is True and report.forced is False
    assert report.changed_files == 2
    (host,) = report.hosts
    assert host.host == "this" and host.written == [] and host.drift == [] and host.error is None
    by_path = {f.path: f for f in host.files}
    assert set(by_path) == {str(ls), str(fp)}
    local_settings = by_path[str(ls)]
    assert local_settings.changed and local_settings.new and local_settings.component == "commcare"
    assert "+SECRET_KEY = '********'" in local_settings.diff
    assert "+    'HQ_INSTANCE': 'local-demo'," in local_settings.diff
    assert local_settings.diff.startswith("--- /dev/null\n+++ this:")
    note = by_path[str(fp)].note
    assert note is not None and "formplayer_build/current" in note
    assert not ls.exists()

    events: list[dict[str, Any]] = []
    report = env.update_config(check=False, on_event=events.append)
    _no_secret(report)
    _no_secret(events)
    assert report.check is False and report.ok is True
    (host,) = report.hosts
    assert sorted(host.written) == sorted([str(ls), str(fp)]) and host.recorded
    assert SENTINEL in ls.read_text()
    assert ls.stat().st_mode & 0o777 == 0o600
    assert (www / ".cchq-applied.json").exists()
    phases = [(e["phase"], e["ok"]) for e in events if e["event"] == "phase"]
    assert phases == [("plan", None), ("plan", True), ("apply", None), ("apply", True)]

    report = env.update_config()
    assert report.changed_files == 0
    assert all(not f.changed and f.diff == "" for f in report.hosts[0].files)
    # Applying with nothing to change writes nothing.
    report = env.update_config(check=False)
    assert report.hosts[0].written == [] and not report.hosts[0].recorded


def test_the_drift_guard_raises_until_forced(here: tuple[cchq.Environment, Path]) -> None:
    env, www = here
    ls = www / "current" / "localsettings.py"
    env.update_config(check=False)
    with ls.open("a") as f:
        f.write("HAND_EDIT = 1\n")

    # check: the finding is reported (and issued as an event), the diff shows the edit.
    events: list[dict[str, Any]] = []
    report = env.update_config(on_event=events.append)
    (host,) = report.hosts
    (drift,) = host.drift
    assert drift.kind == "hand_edit" and drift.blocking and drift.host == "this"
    assert "edited by hand" in drift.message
    assert any(e["event"] == "warning" and "edited by hand" in e["message"] for e in events)
    # Only its key: a line not known to be public may hold an old secret.
    assert "-HAND_EDIT = ********" in next(f.diff for f in host.files if f.path == str(ls))

    with pytest.raises(cchq.ConfigError, match="was changed after") as info:
        env.update_config(check=False)
    assert info.value.hint is not None and "`force=True`" in info.value.hint and "--force" not in info.value.hint
    assert "HAND_EDIT" in ls.read_text(), "nothing was overwritten"

    report = env.update_config(check=False, force=True)
    assert report.forced is True and report.ok is True
    assert str(ls) in report.hosts[0].written
    assert "HAND_EDIT" not in ls.read_text()


def test_a_template_error_writes_nothing_and_masks_nothing_away(here: tuple[cchq.Environment, Path]) -> None:
    env, www = here
    (env.dir / "public.yml").write_text("localsettings:\n  HQ_INSTANCE: '{{ undefined_thing }}'\n")
    env = cchq.Environment.load("local", env.dir.parent)
    with pytest.raises(cchq.CchqError, match="undefined_thing"):
        env.update_config(check=False)
    assert not (www / "current" / "localsettings.py").exists()


def test_update_config_limit_and_pattern_errors(here: tuple[cchq.Environment, Path]) -> None:
    env, _ = here
    assert [h.host for h in env.update_config(limit="this").hosts] == ["this"]
    with pytest.warns(cchq.CchqWarning, match="nope"):
        assert [h.host for h in env.update_config(limit="this:nope").hosts] == ["this"]
    with pytest.raises(cchq.PatternError, match="nope"):
        env.update_config(limit="nope")


def test_django_manage_runs_in_current_and_returns_exit_codes(here: tuple[cchq.Environment, Path]) -> None:
    env, www = here
    env.update_config(check=False)

    r = env.django_manage(["preindex_everything", "--check"])
    assert isinstance(r, cchq.HostResult)
    assert (r.host, r.exit_code, r.ok, r.error) == ("this", 0, True, None)
    assert "all views and indices are up to date" in r.stdout
    r.check()

    # Without a terminal: `shell` reads an empty standard input and ends.
    assert env.django_manage("shell").exit_code == 0

    # A failing command is a result; its arguments reach manage.py unchanged.
    r = env.django_manage(["no_such_command", "a b", "$(x)"], server="django_manage[0]")
    assert r.exit_code == 2 and not r.ok
    assert "no_such_command" in r.stderr
    with pytest.raises(cchq.CommandFailedError) as info:
        r.check()
    assert info.value.exit_code == 2

    # In a named release.
    assert env.django_manage(["preindex_everything", "--check"], release="r1").exit_code == 0

    # --tee: the output is also written in the release directory; an existing file is refused.
    r = env.django_manage(["preindex_everything", "--check"], tee="tee.log")
    assert r.exit_code == 0 and "up to date" in (www / "releases" / "r1" / "tee.log").read_text()
    with pytest.raises(cchq.UsageError, match="already exists"):
        env.django_manage(["preindex_everything", "--check"], tee="tee.log")


def test_django_manage_errors(here: tuple[cchq.Environment, Path]) -> None:
    env, _ = here
    with pytest.raises(cchq.NotFoundError, match="release `r0` does not exist on `this`") as info:
        env.django_manage("check", release="r0")
    assert info.value.hint == "releases on `this`: r1"
    with pytest.raises(cchq.UsageError, match="not a release name"):
        env.django_manage("check", release="../r1")
    with pytest.raises(cchq.UsageError, match="no management command"):
        env.django_manage([])
    with pytest.raises(cchq.CchqError):
        env.django_manage("check", server="web9")


def test_the_cli_and_python_show_the_same_masked_diff(here: tuple[cchq.Environment, Path]) -> None:
    """The diff Python returns is the one `cchq <env> update-config --check` prints."""
    env, _ = here
    cchq_bin = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "cchq"
    if not cchq_bin.exists():
        pytest.skip("no debug build of the cchq binary")
    out = subprocess.run(
        [str(cchq_bin), "--environments", str(env.dir.parent), "local", "update-config", "--check"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    report = env.update_config()
    for f in report.hosts[0].files:
        assert f.diff and f.diff in out.stdout
    assert "'********'" in out.stdout and SENTINEL not in out.stdout


def test_tee_takes_a_path(here: tuple[cchq.Environment, Path]) -> None:
    env, www = here
    env.update_config(check=False)
    r = env.django_manage(["preindex_everything", "--check"], tee=Path("tee-path.log"))
    assert r.exit_code == 0, r.stderr
    assert "up to date" in (www / "releases" / "r1" / "tee-path.log").read_text()


def test_secrets_view(here: tuple[cchq.Environment, Path]) -> None:
    env, _ = here
    assert SENTINEL in env.secrets_view()
    assert env.secrets_view("localsettings_private.SECRET_KEY").strip() == SENTINEL
    with pytest.raises(cchq.NotFoundError, match="has no `nope`") as info:
        env.secrets_view("nope")
    assert info.value.hint is not None and "localsettings_private" in info.value.hint


@pytest.mark.filterwarnings("ignore::cchq.CchqWarning")  # groups this environment does not have
def test_update_supervisor_confs_check_plans_without_writing(here: tuple[cchq.Environment, Path]) -> None:
    env, _ = here
    try:
        plans = env.update_supervisor_confs()
    except cchq.ConfigError as e:  # an environment that does not validate: nothing is planned
        assert e.kind == "config"
        return
    assert [p.host for p in plans] == ["this"]
    for p in plans:
        assert isinstance(p, cchq.SupervisorConfs) and not p.written
        json.dumps(p.to_dict())
