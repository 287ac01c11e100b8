"""Everything the use cases share: config, clock, database, repositories."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..config import ServerConfig
from ..runtime.clock import Clock
from ..store import Database, EventRepository, ModelRepository, OutcomeRepository, PredictionRepository, RunRepository


@dataclass
class AppContext:
    """Everything the use cases share, built once per server: config, clock, database, and a
    repository per aggregate over that database."""

    config: ServerConfig
    clock: Clock
    db: Database
    models: ModelRepository = field(init=False)
    outcomes: OutcomeRepository = field(init=False)
    runs: RunRepository = field(init=False)
    predictions: PredictionRepository = field(init=False)
    events: EventRepository = field(init=False)
    started_at: float = field(init=False)
    stopping: threading.Event = field(default_factory=threading.Event)
    # This process's replica (runtime/replica.py): its id in the replicas table, 0 before it registers.
    replica_id: int = 0

    def __post_init__(self) -> None:
        self.models = ModelRepository(self.db)
        self.outcomes = OutcomeRepository(self.db)
        self.runs = RunRepository(self.db)
        self.predictions = PredictionRepository(self.db)
        self.events = EventRepository(self.db)
        self.started_at = self.clock.now()

    def now_us(self) -> int:
        """The clock's time now, in whole microseconds since the Unix epoch."""
        return int(self.clock.now() * 1_000_000)
