"""The tests' shared helpers: a real server on an ephemeral loopback port and its client, the small
model's schema, the demo rows, and waiting for a condition. Fixtures are in conftest.py."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc


from sahayak_rpc import config
from sahayak_rpc.client import Client
from sahayak_rpc.runtime.clock import ManualClock
from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes
from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec, Schema
from sahayak_rpc.server import Server

from .processes import ReplicaProcess, free_port, server_command  # noqa: F401  (the tests' helpers, here too)


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


def database_for(backend: str, tmp_path: Path, name: str = "test.db") -> str:
    """A fresh database on ``backend``: a file under ``tmp_path``, or a new PostgreSQL database on the
    session's throwaway cluster (tests/pg_cluster.py; never a mock, and a failure to start one fails
    the test instead of skipping it)."""
    if backend == "postgresql":
        from .pg_cluster import shared_cluster

        return shared_cluster().create_database()
    return str(tmp_path / name)


def eventually(check: Callable[[], object], timeout: float = 60.0) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def start_server(
    db: Path | str, clock: ManualClock | None = None, scheduler: bool = False, **overrides: object
) -> Running:
    """A server on ``db`` (a SQLite file, or a PostgreSQL URL) on an ephemeral loopback port."""
    clock = clock or ManualClock()
    port = int(overrides.pop("port", 0))  # type: ignore[call-overload]
    cfg = config.load(env={}, host="127.0.0.1", port=port, db=str(db), synchronous="normal", **overrides)
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
    client.import_outcomes(
        DEMO_MODEL_NAME,
        [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id, occurred_at=e.occurred_at) for e in examples],
    )
    return examples


def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until the server process ``proc`` on ``port`` answers its health check SERVING."""
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                channel.close()
                return
        except grpc.RpcError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


# --- the OIP features tensor's documented layout, written out independently of the server's code --------

OIP_WIDTH = len(DEMO_SCHEMA.features)


def encode(rows: Sequence[Mapping[str, Any]], schema: Schema = DEMO_SCHEMA, dtype: Any = np.float32) -> np.ndarray:
    """Rows as the ``features`` tensor: schema order; numeric value, boolean 0/1,
    categorical index into the declared categories, NaN for missing."""
    x = np.full((len(rows), len(schema.features)), np.nan, dtype=dtype)
    for i, row in enumerate(rows):
        for j, f in enumerate(schema.features):
            v = row.get(f.name)
            if v is None:
                continue
            x[i, j] = f.categories.index(v) if f.type is FeatureType.CATEGORICAL else float(v)
    return x


def decode(x: np.ndarray, schema: Schema = DEMO_SCHEMA) -> list[dict[str, Any]]:
    """The rows a tensor stands for (what Predict must be asked to compare)."""
    rows = []
    for values in x.astype(np.float64).tolist():
        row: dict[str, Any] = {}
        for f, v in zip(schema.features, values, strict=True):
            if math.isnan(v):
                continue
            if f.type is FeatureType.CATEGORICAL:
                row[f.name] = f.categories[int(v)]
            elif f.type is FeatureType.BOOLEAN:
                row[f.name] = v == 1.0
            else:
                row[f.name] = v
        rows.append(row)
    return rows


def sample_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rows = [dict(e.features) for e in generate_outcomes(n, seed=seed)]
    # Make sure missing optional features are in the sample.
    for row, name in zip(rows, ("annual_income_inr", "education", "distance_to_office_km")):
        row.pop(name, None)
    return rows
