"""Shared fixtures: a real server on an ephemeral loopback port, and a client."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sahayak_rpc import config, logs
from sahayak_rpc.client import Client
from sahayak_rpc.runtime.clock import ManualClock
from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec
from sahayak_rpc.server import Server

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
    db_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    clock = ManualClock()
    cfg = config.load(env={}, host="127.0.0.1", port=0, db=str(tmp_path / "test.db"), synchronous="normal")
    # The scheduler trains on its own; tests of it start it themselves.
    server = Server(cfg, clock=clock, scheduler=False)
    server.start()
    client = Client(f"127.0.0.1:{server.port}", timeout=30)
    try:
        yield Running(server, client, clock, tmp_path / "test.db")
    finally:
        client.close()
        server.stop(grace=1)


@pytest.fixture
def small_model(running: Running) -> str:
    running.client.create_model("small", SMALL_FEATURES, SMALL_LABEL)
    return "small"


def server_command(*args: str) -> list[str]:
    """The real `sahayak-rpc` command, as CI installs it, run by this interpreter."""
    return [sys.executable, "-m", "sahayak_rpc.cli", *args]


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SAHAYAK_TARGET", None)
    return env
