"""Model versions, aliases and training runs as the registry keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHAMPION = "champion"
ALIAS_RE = r"^[a-z][a-z0-9_-]{0,62}$"

READY, REJECTED, ARCHIVED = "ready", "rejected", "archived"
FULL_TRAINING, INCREMENTAL, IMPORT = "full_training", "incremental", "import"

# Training run states, kinds and triggers (the proto enums, lower-cased).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING)


@dataclass(frozen=True)
class VersionRecord:
    model_id: int
    version: int
    family: str
    status: str
    source: str
    training_run_id: str
    parent_version: int
    metrics: dict[str, Any]
    gate: dict[str, Any]
    weights: list[tuple[str, float]]
    lineage: dict[str, Any]
    calibration: str
    threshold: float
    artifact_sha256: str
    artifact_size: int
    description: str
    created_us: int
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class AliasEvent:
    event_id: int
    model_id: int
    alias: str
    version: int  # 0: deleted
    previous_version: int  # 0: new
    reason: str
    created_us: int


@dataclass
class RunRecord:
    run_id: str
    model_id: int
    kind: str
    trigger: str
    state: str
    created_us: int
    started_us: int = 0
    ended_us: int = 0
    through_seq: int = 0
    request: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    produced_version: int = 0
    promoted: bool = False
    end_reason: str = ""
    description: str = ""
    worker: int = 0  # the replica that claimed it (0: none yet)


# A run failed because its worker stopped (a crash, a kill, a lost heartbeat) says so first: the
# scheduler runs such a scheduled run again instead of waiting a whole interval.
INTERRUPTED = "interrupted"
