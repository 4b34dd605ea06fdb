"""Shared fixtures: the repository's fixture environments, the local example environment, and
the fleet test bed (tests/fleet) when one is up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cchq

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "commcare-cloud" / "environments"
EXAMPLES = REPO / "examples" / "environments"


@pytest.fixture(autouse=True)
def _no_environments_from_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests say which environments root they use; the caller's variables must not leak in."""
    monkeypatch.delenv("CCHQ_ENVIRONMENTS", raising=False)
    monkeypatch.delenv("COMMCARE_CLOUD_ENVIRONMENTS", raising=False)


@pytest.fixture
def development() -> cchq.Environment:
    return cchq.Environment.load("development", FIXTURES)


@pytest.fixture
def test_env() -> cchq.Environment:
    return cchq.Environment.load("test", FIXTURES)


@pytest.fixture
def local() -> cchq.Environment:
    return cchq.Environment.load("local", EXAMPLES)


@pytest.fixture
def fleet_root() -> Path:
    """The environments root of the fleet test bed ($CCHQ_FLEET_ROOT, as `tests/fleet/up` prints
    it). Skips without one, unless CCHQ_REQUIRE_FLEET=1 (CI), which makes it a failure."""
    root = os.environ.get("CCHQ_FLEET_ROOT")
    if root and (Path(root) / "fleet").is_dir():
        return Path(root)
    message = "no fleet: run `export CCHQ_FLEET_ROOT=$(tests/fleet/up 5 | tail -1)`"
    if os.environ.get("CCHQ_REQUIRE_FLEET") == "1":
        pytest.fail(f"CCHQ_REQUIRE_FLEET=1 but {message}")
    pytest.skip(message)


@pytest.fixture
def fleet(fleet_root: Path) -> cchq.Environment:
    return cchq.Environment.load("fleet", fleet_root)
