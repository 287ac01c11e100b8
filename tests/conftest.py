"""The tests' fixtures: a real server on an ephemeral loopback port and its client, on each storage
backend a test's ``backends`` mark names. Helpers are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sahayak_rpc import logs

from .helpers import (
    BACKENDS,
    SMALL_FEATURES,
    SMALL_LABEL,
    Running,
    database_for,
    load_demo_rows,
    start_server,
    stop_server,
)

logs.configure("info", cache=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that take ``backend`` (``running`` does) run on the backends their ``backends`` mark names
    (SQLite alone without one): the behaviour tests run on both, SQLite-only mechanics on SQLite."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", marker.args if marker else ("sqlite",), indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    name = getattr(request, "param", "sqlite")
    assert name in BACKENDS, name
    return str(name)


@pytest.fixture
def running(tmp_path: Path, backend: str) -> Iterator[Running]:
    # The scheduler trains on its own; tests of it start it themselves.
    r = start_server(database_for(backend, tmp_path))
    try:
        yield r
    finally:
        stop_server(r)


@pytest.fixture
def small_model(running: Running) -> str:
    running.client.create_model("small", SMALL_FEATURES, SMALL_LABEL)
    return "small"


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SAHAYAK_TARGET", None)
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server whose demo model has a champion (read-only tests share it)."""
    r = start_server(tmp_path_factory.mktemp("trained") / "t.db")
    load_demo_rows(r.client, 2500)
    run = r.client.train("scheme-sahayak")
    assert run.promoted, run.end_reason
    try:
        yield r
    finally:
        stop_server(r)
