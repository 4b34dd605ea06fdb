"""The exception hierarchy and how core errors map onto it."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

import cchq
from conftest import EXAMPLES, FIXTURES

SUBCLASSES = [
    cchq.ConfigError,
    cchq.NotFoundError,
    cchq.PatternError,
    cchq.ConnectionError,
    cchq.CommandFailedError,
    cchq.UsageError,
    cchq.IoError,
    cchq.VaultError,
    cchq.LockHeldError,
    cchq.DeployFailedError,
    cchq.InternalError,
]


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_every_error_is_a_cchq_error(cls: type[Exception]) -> None:
    assert issubclass(cls, cchq.CchqError)
    assert cls.__module__ == "cchq._cchq"
    assert cls.__doc__


def test_cchq_error_is_an_exception_with_hint_and_message() -> None:
    assert issubclass(cchq.CchqError, Exception)
    e = cchq.CchqError("made by hand")
    assert e.hint is None
    assert str(e) == "made by hand"


def test_connection_error_is_also_the_builtin_one() -> None:
    assert cchq.ConnectionError is not builtins.ConnectionError
    assert issubclass(cchq.ConnectionError, builtins.ConnectionError)
    assert issubclass(cchq.ConnectionError, OSError)
    with pytest.raises(builtins.ConnectionError):
        raise cchq.ConnectionError("refused")


def test_io_error_is_also_an_oserror() -> None:
    assert issubclass(cchq.IoError, OSError)


def test_detail_attributes_default_to_none() -> None:
    e = cchq.CommandFailedError("x")
    assert (e.exit_code, e.stdout, e.stderr) == (None, None, None)
    assert cchq.DeployFailedError("x").release is None


def test_star_import_does_not_shadow_the_builtin_connection_error() -> None:
    ns: dict[str, object] = {}
    exec("from cchq import *", ns)
    assert "ConnectionError" not in ns
    assert ns["CchqError"] is cchq.CchqError


def test_unknown_environment_is_not_found_and_the_hint_lists_the_environments() -> None:
    with pytest.raises(cchq.NotFoundError) as info:
        cchq.Environment.load("prod", FIXTURES)
    e = info.value
    assert e.message == "unknown environment `prod`"
    assert e.hint is not None and "development, prod-aws, prod-sharded, test" in e.hint
    assert str(e) == f"{e.message}\nhint: {e.hint}"
    assert isinstance(e, cchq.CchqError)


def test_no_environments_root_is_a_config_error() -> None:
    with pytest.raises(cchq.ConfigError) as info:
        cchq.Environment.load("development")
    assert info.value.hint is not None and "CCHQ_ENVIRONMENTS" in info.value.hint


def test_a_missing_environments_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(cchq.NotFoundError, match="does not exist"):
        cchq.Environment.load("development", tmp_path / "nowhere")


def test_a_malformed_inventory_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    env = tmp_path / "broken"
    env.mkdir()
    (env / "public.yml").write_text("{}\n")
    (env / "meta.yml").write_text("deploy_env: b\nenv_monitoring_id: b\nusers: []\n")
    (env / "inventory.ini").write_text("[web]\nh1\n[web:vars\nx=1\n")
    with pytest.raises(cchq.ConfigError, match=r"inventory\.ini:3"):
        cchq.Environment.load("broken", tmp_path)


@pytest.mark.parametrize("pattern", ["nosuchgroup", "", "webworkers[9]", "~(unclosed", "webworkers[0", "webworkers["])
def test_bad_patterns_are_pattern_errors(development: cchq.Environment, pattern: str) -> None:
    with pytest.raises(cchq.PatternError) as info:
        development.hosts(pattern)
    assert info.value.message


def test_a_pattern_that_selects_nothing_hints_at_the_groups(development: cchq.Environment) -> None:
    with pytest.raises(cchq.PatternError) as info:
        development.hosts("nosuchgroup")
    assert "`nosuchgroup` matches no hosts" in info.value.message
    assert info.value.hint is not None and "webworkers" in info.value.hint


def test_lookup_errors(development: cchq.Environment) -> None:
    with pytest.raises(cchq.NotFoundError, match="unknown server name or group `nosuch`"):
        development.lookup("nosuch")
    with pytest.raises(cchq.PatternError):
        development.lookup("redis:x")


def test_service_errors_are_raised_before_any_host_is_contacted(development: cchq.Environment) -> None:
    # The development hosts (192.168.33.x) are never reached: every call fails while planning.
    with pytest.raises(cchq.NotFoundError) as info:
        development.service("nosuch", "status")
    assert info.value.hint is not None and "webworker" in info.value.hint
    with pytest.raises(cchq.UsageError, match="unknown action `explode`"):
        development.service("webworker", "explode")
    with pytest.raises(cchq.UsageError, match="is not `name` or `name:number`"):
        development.service("celery", "status", only="not valid!")
    with pytest.raises(cchq.UsageError, match="no service given"):
        development.service([], "status")
    with pytest.warns(cchq.CchqWarning, match="no `webworker` hosts match `celery`"):
        with pytest.raises(cchq.PatternError, match="no hosts to act on"):
            development.service("webworker", "status", limit="celery")


def test_run_argument_errors() -> None:
    local = cchq.Environment.load("local", EXAMPLES)
    with pytest.raises(cchq.UsageError, match="the command is empty"):
        local.run("all", "  ")
    with pytest.raises(cchq.UsageError, match="the command is empty"):
        local.run("all", [])
    with pytest.raises(cchq.UsageError, match="timeout"):
        local.run("all", "true", timeout=-1)
    with pytest.raises(cchq.PatternError):
        local.run("nosuch", "true")
    with pytest.raises(TypeError):
        local.run("all", "true", become=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_future", [False, True], ids=["sync", "in-future"])
def test_a_rust_panic_is_an_internal_error_not_a_crash(in_future: bool) -> None:
    from cchq import _cchq

    with pytest.raises(cchq.InternalError) as info:
        _cchq._test_panic(in_future)
    assert "on purpose" in info.value.message
    assert info.value.hint is not None and "bug" in info.value.hint
    # The process-wide runtime survives a panic in a future.
    local = cchq.Environment.load("local", EXAMPLES)
    assert local.run("all", "true")[0].ok


def test_a_callback_that_is_not_callable_is_refused_before_anything_runs() -> None:
    local = cchq.Environment.load("local", EXAMPLES)
    with pytest.raises(TypeError, match="on_event must be callable"):
        local.run("all", "true", on_event=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_event must be callable"):
        local.service("webworker", "status", on_event="print")  # type: ignore[arg-type]
