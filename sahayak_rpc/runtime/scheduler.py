"""The scheduler thread: weekly retrains and incremental updates on new labels.

It is the one place that decides to train on its own. With several replicas
only the leader's scheduler acts (runtime/replica.py); every fact it decides
by is a row (the runs, the labels since training, when a task last ran), so
a new leader neither repeats nor skips what the last one did. Time comes from
the injectable clock, so tests drive a week in milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.ingest import Ingest
from ..app.registry import Registry
from ..app.training_runs import TrainingRunner
from ..errors import ServiceError
from ..store import ModelRecord

log = structlog.get_logger("sahayak_rpc.scheduler")


class Scheduler:
    def __init__(
        self,
        ctx: AppContext,
        catalog: Catalog,
        runner: TrainingRunner,
        ingest: Ingest,
        registry: Registry,
        interval_s: float = 60.0,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._ctx, self._catalog, self._runner, self._ingest, self._registry = ctx, catalog, runner, ingest, registry
        self._interval = interval_s
        self.leading = leading
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.extra_tasks: list[Callable[[], None]] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            # The next tick is due an interval after this one began: time that passes during a tick (a
            # test's clock moved a week, say) is not waited for again.
            started = self._ctx.clock.now()
            try:
                if self.leading():
                    self.tick()
                    for task in self.extra_tasks:
                        task()
            except ServiceError as exc:  # the database is away: the next tick tries again
                log.warning("scheduler.tick_failed", error=exc.message)
            except Exception:  # the loop must survive anything one tick does
                log.exception("scheduler.tick_failed")
            self._ctx.clock.wait(self._wake, started + self._interval - self._ctx.clock.now())

    def next_retrain_us(self, model: ModelRecord) -> int:
        """When the next scheduled full retrain is due (0: never, scheduling is off)."""
        t = model.settings.training
        if not t.schedule_enabled:
            return 0
        # A run its worker's death interrupted does not count: the schedule runs it again.
        last = self._runner.runs.last(model.id, kind="full", counting_interrupted=False)
        base = last.created_us if last is not None else model.created_us
        return base + int(t.retrain_interval_s * 1_000_000)

    def tick(self) -> None:
        now = self._ctx.now_us()
        for model in self._catalog.all():
            t = model.settings.training
            if not t.schedule_enabled or self._runner.runs.active(model.id) is not None:
                continue
            if self._ingest.importing(model):
                continue  # train on the whole import, not on its first batches
            since = self._ingest.labels_since_training(model)
            has_champion = self._registry.champion(model) is not None
            kind, trigger = "", ""
            if has_champion and now >= self.next_retrain_us(model):
                kind, trigger = "full", "schedule"
            elif t.incremental_every and since >= t.incremental_every:
                # Without a champion there is nothing to update: train one in full.
                kind, trigger = ("incremental" if has_champion else "full"), "new_labels"
            if not kind:
                continue
            try:
                run = self._runner.start(model, kind=kind, trigger=trigger)
                log.info("scheduler.started", model=model.name, run_id=run.run_id, kind=kind, trigger=trigger)
            except ServiceError as exc:
                log.debug("scheduler.skipped", model=model.name, kind=kind, reason=exc.message)
