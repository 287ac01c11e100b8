"""Training runs: start, run in the background, gate, register, promote, watch."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from .. import gate as gating
from .. import metrics as mt
from .. import profile as profiling
from .. import split as splitting
from .. import training as tr
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..metrics import Metrics
from ..schema import FieldError
from ..settings import FAMILIES, SPLITS
from ..store import ModelRecord
from ..store.outcomes import LoadedOutcomes
from ..versions import (ACTIVE_STATES, CANCELLED, FAILED, FULL_TRAINING, INCREMENTAL, QUEUED, READY, REJECTED,
                        RUNNING, SUCCEEDED, RunRecord)
from .catalog import Catalog
from .context import AppContext
from .ingest import Ingest
from .registry import Registry

log = structlog.get_logger("sahayak_rpc.training")
KINDS = ("full", "incremental")
TRIGGERS = ("manual", "schedule", "new_labels", "drift", "performance")
# Incremental updates replay this many older outcomes per new one (bounded).
REPLAY_RATIO = 4
REPLAY_MIN, REPLAY_MAX = 2000, 10000


@dataclass
class RunEvent:
    phase: str
    family: str = ""
    iteration: int = 0
    loss: float = math.nan
    metrics: Metrics | None = None
    message: str = ""
    time_us: int = 0
    final: RunRecord | None = None


@dataclass
class _Live:
    events: list[RunEvent] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: bool = False


def to_training_data(loaded: LoadedOutcomes) -> tr.TrainingData:
    return tr.TrainingData(loaded.rows, np.asarray(loaded.labels, dtype=np.int64), loaded.ids,  # type: ignore[arg-type]
                           np.asarray(loaded.times, dtype=np.int64))


class TrainingRunner:
    def __init__(self, ctx: AppContext, catalog: Catalog, registry: Registry, ingest: Ingest,
                 listeners: list[Callable[[RunRecord], None]] | None = None) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._registry = registry
        self._ingest = ingest
        self.runs = ctx.runs
        # One trainer thread: runs queue behind each other and never starve the RPC threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainer")
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._lock = threading.Lock()
        self._listeners = listeners or []
        self._perf: dict[str, float] = {}
        interrupted = self.runs.fail_interrupted(ctx.now_us())
        if interrupted:
            log.warning("training.interrupted_runs_failed", count=interrupted)

    def add_listener(self, listener: Callable[[RunRecord], None]) -> None:
        """Called with every run as it ends."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Cancel what runs, let the trainer thread finish, and fail what never started."""
        with self._lock:
            for live in self._live.values():
                live.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.runs.fail_interrupted(self._ctx.now_us())

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return sum(1 for live in self._live.values() if not live.done)

    # --- starting ---------------------------------------------------------

    def start(self, model: ModelRecord, kind: str = "full", trigger: str = "manual", families: tuple[str, ...] = (),
              split: str = "", description: str = "") -> RunRecord:
        if kind not in KINDS:
            raise InvalidArgument.fields([FieldError("kind", f"must be one of {', '.join(KINDS)}")])
        if any(f not in FAMILIES for f in families):
            raise InvalidArgument.fields([FieldError("families", f"must name {' or '.join(FAMILIES)}")])
        if split and split not in SPLITS:
            raise InvalidArgument.fields([FieldError("split", f"must be one of {', '.join(SPLITS)}")])
        if len(description) > 4096:
            raise InvalidArgument.fields([FieldError("description", "at most 4096 characters")])
        t = model.settings.training
        total = self._ctx.outcomes.count(model.id)
        if total < t.min_samples:
            raise FailedPrecondition(
                f"model {model.name!r} has {total} outcomes; training needs at least {t.min_samples}"
                " (settings.training.min_samples)", reason="NOT_ENOUGH_DATA")
        with self._lock:
            active = self.runs.active(model.id)
            if active is not None:
                raise FailedPrecondition(f"run {active.run_id} is already {active.state} for model {model.name!r}",
                                         reason="RUN_ACTIVE")
            run = RunRecord(
                run_id=f"run-{secrets.token_hex(8)}", model_id=model.id, kind=kind, trigger=trigger, state=QUEUED,
                created_us=self._ctx.now_us(), description=description,
                request={"families": list(families or t.families), "split": split or t.split},
            )
            self.runs.insert(run)
            live = _Live()
            self._live[run.run_id] = live
            while len(self._live) > 200:
                oldest = next(iter(self._live))
                if not self._live[oldest].done:
                    break
                self._live.pop(oldest)
        self._emit(run.run_id, RunEvent("queued", message=f"{kind} training queued ({trigger})"))
        self._executor.submit(self._execute, run.run_id)
        return run

    # --- reading ----------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        if not run_id:
            raise InvalidArgument.fields([FieldError("run_id", "required")])
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"training run {run_id!r} not found", reason="RUN_NOT_FOUND")
        return run

    def cancel(self, run_id: str) -> RunRecord:
        run = self.get(run_id)
        if run.state not in ACTIVE_STATES:
            raise FailedPrecondition(f"run {run_id} already ended ({run.state})", reason="RUN_ENDED")
        with self._lock:
            live = self._live.get(run_id)
        if live is not None:
            live.cancel.set()
        if run.state == QUEUED:
            # Not started: it ends now; the worker skips it when its turn comes.
            self._end(run, CANCELLED, "cancelled before it started")
        return self.get(run_id)

    def watch(self, run_id: str, active: Callable[[], bool]) -> Iterator[RunEvent]:
        """Every event of the run so far, then new ones, ending with the final one."""
        run = self.get(run_id)
        with self._lock:
            live = self._live.get(run_id)
        if live is None:  # ended before this process started, or long ago
            yield RunEvent("done", message=run.end_reason, final=run, time_us=run.ended_us)
            return
        sent = 0
        while True:
            with live.cond:
                live.cond.wait_for(lambda: len(live.events) > sent or live.done or self._ctx.stopping.is_set(), 0.5)
                fresh = live.events[sent:]
                done = live.done
            for event in fresh:
                yield event
                sent += 1
            if (done and sent >= len(live.events)) or not active() or self._ctx.stopping.is_set():
                return

    # --- running ----------------------------------------------------------

    def _emit(self, run_id: str, event: RunEvent) -> None:
        event.time_us = event.time_us or self._ctx.now_us()
        with self._lock:
            live = self._live.get(run_id)
        if live is None:
            return
        with live.cond:
            live.events.append(event)
            if event.final is not None:
                live.done = True
            live.cond.notify_all()

    def _end(self, run: RunRecord, state: str, reason: str, conn: Any = None) -> None:
        run.state = state
        run.end_reason = reason
        run.ended_us = self._ctx.now_us()
        started = self._perf.pop(run.run_id, None)
        if started is not None:
            run.result["duration_s"] = time.perf_counter() - started
        self.runs.update(run, conn)
        if conn is None:
            self._finished(run)

    def _finished(self, run: RunRecord) -> None:
        log.info("training.ended", run_id=run.run_id, state=run.state, reason=run.end_reason,
                 version=run.produced_version, promoted=run.promoted)
        # Listeners (alerts) first: whoever sees the run end also sees its consequences.
        for listener in self._listeners:
            try:
                listener(run)
            except Exception:  # a listener's bug must not break training
                log.exception("training.listener_failed", run_id=run.run_id)
        self._emit(run.run_id, RunEvent("done", message=run.end_reason, final=run))

    def _execute(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is None or run.state != QUEUED:
            return
        with self._lock:
            live = self._live[run_id]
        model = self._catalog.by_id(run.model_id)
        run.state = RUNNING
        run.started_us = self._ctx.now_us()
        run.through_seq = self._ctx.outcomes.max_seq(model.id)
        self.runs.update(run)
        self._ingest.trained_through(model, run.through_seq)
        self._perf[run_id] = time.perf_counter()

        def progress(phase: str, family: str = "", iteration: int = 0, loss: float = math.nan,
                     metrics: Metrics | None = None, message: str = "") -> None:
            self._emit(run_id, RunEvent(phase, family, iteration, loss, metrics, message))

        try:
            if run.kind == "incremental" and self._registry.champion(model) is not None:
                self._incremental(model, run, progress, live)
            else:
                if run.kind == "incremental":
                    run.result["note"] = "no champion yet: ran a full training instead"
                self._full(model, run, progress, live)
        except tr.Cancelled:
            self._end(run, CANCELLED, "cancelled while training")
        except tr.NotEnoughData as exc:
            self._end(run, FAILED, f"not enough data: {exc}")
        except Exception as exc:
            log.exception("training.crashed", run_id=run_id)
            self._end(run, FAILED, f"error: {type(exc).__name__}: {exc}")

    def _data_summary(self, model: ModelRecord, data: tr.TrainingData, train: int, valid: int) -> dict[str, Any]:
        return {"outcome_count": len(data), "train_count": train, "validation_count": valid,
                "positives": int(data.labels.sum()),
                "first_outcome_us": int(data.times.min()) if len(data) else 0,
                "last_outcome_us": int(data.times.max()) if len(data) else 0}

    def _full(self, model: ModelRecord, run: RunRecord, progress: Callable[..., None], live: _Live) -> None:
        progress("loading", message="loading outcomes")
        loaded = self._ctx.outcomes.load(model.id, through_seq=run.through_seq)
        data = to_training_data(loaded)
        families = tuple(run.request.get("families") or model.settings.training.families)
        split = str(run.request.get("split") or model.settings.training.split)
        trainer = tr.Trainer(model.schema, model.settings, progress=progress, cancelled=live.cancel.is_set,
                             threads=self._ctx.config.training_threads)
        result = trainer.run(data, families, split)
        run.result["data"] = self._data_summary(model, data, result.train_count, len(result.validation))
        run.result["parameters"] = {"families": ",".join(families), "split": split,
                                    "validation_fraction": str(model.settings.training.validation_fraction),
                                    "random_seed": str(model.settings.training.random_seed)}
        self._conclude(model, run, result.candidates, result.selected, result.validation, FULL_TRAINING, 0, progress, live,
                       train_rows=result.train_rows)

    def _incremental(self, model: ModelRecord, run: RunRecord, progress: Callable[..., None], live: _Live) -> None:
        champion = self._registry.champion(model)
        assert champion is not None
        last = self.runs.previous_through_seq(model.id, run.run_id)
        progress("loading", message=f"loading outcomes after #{last}")
        new = to_training_data(self._ctx.outcomes.load(model.id, after_seq=last, through_seq=run.through_seq))
        if len(new) == 0:
            raise tr.NotEnoughData("no new outcomes since the last run")
        want = min(REPLAY_MAX, max(REPLAY_MIN, len(new) * REPLAY_RATIO))
        replay = to_training_data(self._ctx.outcomes.sample(model.id, last, want, seed=int(run.through_seq)))
        allrows = tr.TrainingData(new.rows + replay.rows, np.concatenate([new.labels, replay.labels]),
                                  new.ids + replay.ids, np.concatenate([new.times, replay.times]))
        tr.check_trainable(allrows, 10)
        valid_mask = splitting.stratified(allrows.ids, allrows.labels, model.settings.training.validation_fraction,
                                          model.settings.training.random_seed)
        train, valid = allrows.take(~valid_mask), allrows.take(valid_mask)
        cal_mask = splitting.stratified(train.ids, train.labels, 0.15, model.settings.training.random_seed + 1)
        fit, cal = train.take(~cal_mask), train.take(cal_mask)
        new_fit = fit.take(np.isin(np.asarray(fit.ids), np.asarray(new.ids)))
        replay_fit = fit.take(~np.isin(np.asarray(fit.ids), np.asarray(new.ids)))
        candidates: list[tr.FittedCandidate] = []
        base_version = champion.version if champion.model.linear is not None else \
            self._registry.versions.latest(model.id, "logistic_regression", READY)
        if base_version:
            base = self._registry.served(model, version=base_version).model
            assert base.linear is not None
            progress("fitting", family="logistic_regression", message=f"warm start from version {base_version}")
            t0 = time.perf_counter()
            scoring, metrics, epochs, loss = tr.incremental_logistic(
                base.linear, model.schema, model.settings, new_fit, replay_fit, cal, valid)
            candidates.append(tr.FittedCandidate(
                family="logistic_regression", model=scoring, calibration=scoring.calibrator.method, metrics=metrics,
                stop_reason="max_iterations", iterations=epochs, final_loss=loss, fit_seconds=time.perf_counter() - t0,
                feature_weights=scoring.linear.feature_weights() if scoring.linear else [],
                parameters={"method": "sgd_warm_start", "base_version": str(base_version), "epochs": str(epochs)},
                validation_prob=scoring.predict_rows(valid.rows)))
        if live.cancel.is_set():
            raise tr.Cancelled("cancelled")
        # The champion itself, recalibrated on recent labels: cheap, and it follows shifts in base rates.
        progress("calibrating", family=champion.model.family, message=f"recalibrating version {champion.version}")
        t0 = time.perf_counter()
        recal = tr.recalibrate(champion.model, cal, valid)
        candidates.append(tr.FittedCandidate(
            family=recal.family, model=recal, calibration=recal.calibrator.method,
            metrics=mt.compute(valid.labels, recal.predict_rows(valid.rows), recal.threshold),
            stop_reason="converged", iterations=1, final_loss=math.nan, fit_seconds=time.perf_counter() - t0,
            feature_weights=self._registry.get(model, champion.version).weights,
            parameters={"method": "recalibration", "base_version": str(champion.version)}))
        best = min(candidates, key=lambda c: c.metrics.log_loss)
        best.selected = True
        run.result["data"] = self._data_summary(model, allrows, len(train), len(valid))
        run.result["data"]["new_outcomes"] = len(new)
        run.result["parameters"] = {"replay": str(len(replay)), "new": str(len(new))}
        parent = int(best.parameters.get("base_version", "0"))
        self._conclude(model, run, candidates, best, valid, INCREMENTAL, parent, progress, live, train_rows=train.rows)

    def _conclude(self, model: ModelRecord, run: RunRecord, candidates: list[tr.FittedCandidate],
                  best: tr.FittedCandidate, valid: tr.TrainingData, source: str, parent: int,
                  progress: Callable[..., None], live: _Live, train_rows: list[Any]) -> None:
        if live.cancel.is_set():
            raise tr.Cancelled("cancelled")
        progress("gating", family=best.family)
        champion = self._registry.champion(model)
        champ_metrics = None
        if champion is not None:
            champ_metrics = mt.compute(valid.labels, champion.model.predict_rows(valid.rows), champion.model.threshold)
        verdict = gating.evaluate(best.metrics, model.settings.gate, champ_metrics, champion.version if champion else 0)
        run.result["candidates"] = [_candidate_dict(c) for c in candidates]
        run.result["gate"] = verdict.to_dict()
        if champ_metrics is not None:
            run.result["champion_metrics"] = champ_metrics.to_dict()
        data = run.result.get("data", {})
        lineage = {"training_run_id": run.run_id, "outcome_count": data.get("outcome_count", 0),
                   "first_outcome_us": data.get("first_outcome_us", 0), "last_outcome_us": data.get("last_outcome_us", 0),
                   "parameters": {**run.result.get("parameters", {}), **best.parameters}}

        def finish(conn: Any, version: int) -> None:
            run.produced_version = version
            run.promoted = verdict.passed
            reason = (f"promoted version {version} ({best.family})" if verdict.passed
                      else f"version {version} rejected by the gate: {'; '.join(verdict.reasons)}")
            self._end(run, SUCCEEDED, reason, conn)

        # The reference for later drift checks: the training rows' features (at most
        # 20,000 of them) and the model's probabilities on the held-out rows.
        sample = train_rows[:: max(1, len(train_rows) // 20_000)]
        reference = profiling.build(model.schema, sample, best.model.predict_rows(valid.rows))
        self._registry.register(
            model, best.model, status=READY if verdict.passed else REJECTED, source=source, run_id=run.run_id, profile=reference,
            parent_version=parent, metrics=best.metrics.to_dict(), gate=verdict.to_dict(),
            weights=best.feature_weights, lineage=lineage, description=run.description,
            promote=verdict.passed, reason=f"promoted by {run.run_id}", on_commit=finish,
        )
        self._finished(run)


def _candidate_dict(c: tr.FittedCandidate) -> dict[str, Any]:
    return {"family": c.family, "calibration": c.calibration, "metrics": c.metrics.to_dict(),
            "stop_reason": c.stop_reason, "iterations": c.iterations, "final_loss": c.final_loss,
            "fit_seconds": c.fit_seconds, "selected": c.selected, "parameters": c.parameters}
