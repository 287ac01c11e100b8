"""Shared fixtures: a real server on an ephemeral loopback port, and a client."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sahayak_rpc import config, logs
from sahayak_rpc.client import Client
from sahayak_rpc.runtime.clock import ManualClock
from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec
from sahayak_rpc.server import Server

from .processes import ReplicaProcess, free_port, server_command  # noqa: F401  (the tests' helpers, here too)

logs.configure("info", cache=False)

SMALL_FEATURES = [
    FeatureSpec("age", FeatureType.NUMERIC, required=True, min=18, max=100),
    FeatureSpec("income", FeatureType.NUMERIC),
    FeatureSpec("craft", FeatureType.CATEGORICAL, required=True, categories=("weaver", "potter", "carpenter")),
    FeatureSpec("region", FeatureType.CATEGORICAL, allow_unknown_categories=True, categories=("north",)),
    FeatureSpec("has_card", FeatureType.BOOLEAN),
]
SMALL_LABEL = LabelSpec("outcome", "approved", "rejected")


def good_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {"age": 40.0, "income": 120000.0, "craft": "weaver", "region": "north", "has_card": True}
    row.update(overrides)
    return {k: v for k, v in row.items() if v is not None}


@dataclass
class Running:
    server: Server
    client: Client
    clock: ManualClock
    db: str  # the SQLite file, or the PostgreSQL URL

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def db_path(self) -> Path:
        """The SQLite file (tests of SQLite's own mechanics)."""
        assert not self.db.startswith("postgresql://"), "a PostgreSQL server has no database file"
        return Path(self.db)


BACKENDS = ("sqlite", "postgresql")


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


def database_for(backend: str, tmp_path: Path, name: str = "test.db") -> str:
    """A fresh database on ``backend``: a file under ``tmp_path``, or a new PostgreSQL database on the
    session's throwaway cluster (tests/pg_cluster.py; never a mock, and a failure to start one fails
    the test instead of skipping it)."""
    if backend == "postgresql":
        from .pg_cluster import shared_cluster

        return shared_cluster().create_database()
    return str(tmp_path / name)


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


def eventually(check: Callable[[], object], timeout: float = 60.0) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")




@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SAHAYAK_TARGET", None)
    return env


def start_server(db: Path | str, clock: ManualClock | None = None, scheduler: bool = False,
                 **overrides: object) -> Running:
    """A server on ``db`` (a SQLite file, or a PostgreSQL URL) on an ephemeral loopback port."""
    clock = clock or ManualClock()
    cfg = config.load(env={}, host="127.0.0.1", port=0, db=str(db), synchronous="normal", **overrides)
    server = Server(cfg, clock=clock, scheduler=scheduler)
    server.start()
    return Running(server, Client(f"127.0.0.1:{server.port}", timeout=60), clock, str(db))


def stop_server(r: Running) -> None:
    r.client.close()
    r.server.stop(grace=1)


def load_demo_rows(client: Client, n: int, seed: int = 0) -> list:
    """Create the demo model and import n generated outcomes; returns the examples."""
    from sahayak_rpc.client import OutcomeInput
    from sahayak_rpc.demo import ensure_demo_model
    from sahayak_rpc.demo_data import DEMO_MODEL_NAME, generate_outcomes

    ensure_demo_model(client)
    examples = generate_outcomes(n, seed=seed)
    client.import_outcomes(DEMO_MODEL_NAME, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id,
                                                          occurred_at=e.occurred_at) for e in examples])
    return examples


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
