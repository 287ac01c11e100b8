"""Training runs: queue, run on a worker, gate, register, promote, watch.

Runs are a queue in the database (store/runs.py). ``start`` queues a run on any
replica; a replica that trains (``[training] worker``) claims the oldest queued
run, runs it on its trainer thread and heartbeats it (runtime/replica.py), so a
run whose worker dies is failed by the leader rather than left running. Progress
events are rows too, so ``watch`` works on any replica, and a cancel from any
replica reaches the run's worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from .. import gate as gating
from .. import metrics as mt
from .. import profile as profiling
from .. import split as splitting
from .. import training as tr
from ..errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from ..metrics import Metrics
from ..schema import FieldError
from ..settings import FAMILIES, SPLITS
from ..store import ModelRecord
from ..store.outcomes import LoadedOutcomes
from ..versions import (
    ACTIVE_STATES,
    CANCELLED,
    FAILED,
    FULL_TRAINING,
    INCREMENTAL,
    QUEUED,
    READY,
    REJECTED,
    SUCCEEDED,
    RunRecord,
)
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
# A trainer with nothing to do looks at the queue this often (a queued run also wakes it at once,
# on this replica directly and on others through the change feed).
CLAIM_POLL_S = 2.0
# A watcher re-reads the run's events this often when nothing woke it sooner.
WATCH_POLL_S = 0.25
# A run that ended without its final event (its worker died after the last write) is reported
# ended once this long has passed without that event.
FINAL_EVENT_GRACE_S = 2.0
# A run's end that the database refused is written again after these waits (then given up).
END_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class RunEvent:
    """One progress event of a training run (a phase, with a family's iteration, loss and metrics where
    they apply), stored as JSON in the run's events; ``final`` carries the run as it ended, for watchers."""

    phase: str
    family: str = ""
    iteration: int = 0
    loss: float = math.nan
    metrics: Metrics | None = None
    message: str = ""
    time_us: int = 0
    final: RunRecord | None = None

    def to_json(self) -> str:
        """The event as stored (without ``final``); NaN losses and undefined metrics stay NaN."""
        # json (not orjson): NaN losses and undefined metrics come back as NaN.
        return json.dumps(
            {
                "phase": self.phase,
                "family": self.family,
                "iteration": self.iteration,
                "loss": self.loss,
                "metrics": self.metrics.to_dict() if self.metrics else None,
                "message": self.message,
                "time_us": self.time_us,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunEvent:
        """An event as ``to_json`` stored it."""
        d = json.loads(text)
        metrics = Metrics.from_dict(d["metrics"]) if d.get("metrics") else None
        return cls(d["phase"], d["family"], d["iteration"], d["loss"], metrics, d["message"], d["time_us"])


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or a no-op elsewhere (musl, macOS)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


# A full run holds every outcome as Python objects and arrays, and frees them at its end; glibc keeps
# the freed pages (in the trainer's arena and others) until something trims them. Trimming when a run
# ends gives them back at once (a few ms; docs/reliability.md, "Load and soak").
release_free_memory = _malloc_trim()


class RunTaken(Exception):
    """The run is no longer this worker's (the leader failed it: its heartbeat had stopped)."""


def to_training_data(loaded: LoadedOutcomes) -> tr.TrainingData:
    """Loaded outcomes as the trainer takes them: rows, 0/1 labels, ids and times as arrays."""
    return tr.TrainingData(
        loaded.rows, np.asarray(loaded.labels, dtype=np.int64), loaded.ids, np.asarray(loaded.times, dtype=np.int64)
    )


@dataclass
class _Local:
    """A run this process is running."""

    cancel: threading.Event = field(default_factory=threading.Event)


class TrainingRunner:
    """Training runs: queues them in the database, claims and runs them on this process's trainer thread
    when it is a worker, gates and registers what they produce, and lets anyone watch or cancel them."""

    def __init__(
        self,
        ctx: AppContext,
        catalog: Catalog,
        registry: Registry,
        ingest: Ingest,
        listeners: list[Callable[[RunRecord], None]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._registry = registry
        self._ingest = ingest
        self.runs = ctx.runs
        self._local: dict[str, _Local] = {}
        # Held while a run is claimed and registered as this process's (and while the set is read), so
        # that a run is never in the database as this worker's without being in _local too.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchers = threading.Condition()
        self._listeners = listeners or []
        self._perf: dict[str, float] = {}

    def add_listener(self, listener: Callable[[RunRecord], None]) -> None:
        """Called with every run as it ends."""
        self._listeners.append(listener)

    def start_worker(self) -> None:
        """Claim and run queued runs on a thread of this process (one run at a time, so training never
        starves the RPC threads)."""
        self._thread = threading.Thread(target=self._work, name="trainer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something may have changed: a run queued or ended (here or on another replica)."""
        self._wake.set()
        self.progressed()

    def progressed(self) -> None:
        """A run's progress may have been stored: watchers read again."""
        with self._watchers:
            self._watchers.notify_all()

    def close(self) -> None:
        """Stop the trainer: the run it is running is cancelled and failed ("interrupted"); queued runs
        stay queued for another worker, or for this one's next start."""
        self._stop.set()
        with self._lock:
            for local in self._local.values():
                local.cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.progressed()

    def local_runs(self) -> set[str]:
        """The runs this process is running (its heartbeat beats for these alone)."""
        with self._lock:
            return set(self._local)

    @property
    def queue_depth(self) -> int:
        """Runs waiting for a worker (on any replica), plus those this process is running."""
        with self._lock:
            here = len(self._local)
        return self.runs.queued() + here

    # --- starting ---------------------------------------------------------

    def start(
        self,
        model: ModelRecord,
        kind: str = "full",
        trigger: str = "manual",
        families: tuple[str, ...] = (),
        split: str = "",
        description: str = "",
    ) -> RunRecord:
        """Queue a run. Raises InvalidArgument (a bad kind, family, split or description) or
        FailedPrecondition (too few outcomes: NOT_ENOUGH_DATA; a run already queued or running: RUN_ACTIVE)."""
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
                " (settings.training.min_samples)",
                reason="NOT_ENOUGH_DATA",
            )
        now = self._ctx.now_us()
        run = RunRecord(
            run_id=f"run-{secrets.token_hex(8)}",
            model_id=model.id,
            kind=kind,
            trigger=trigger,
            state=QUEUED,
            created_us=now,
            description=description,
            request={"families": list(families or t.families), "split": split or t.split},
        )
        queued = RunEvent("queued", message=f"{kind} training queued ({trigger})", time_us=now)
        if not self.runs.insert(run, queued.to_json()):
            active = self.runs.active(model.id)
            what = f"run {active.run_id} is already {active.state}" if active else "a run is already active"
            raise FailedPrecondition(f"{what} for model {model.name!r}", reason="RUN_ACTIVE")
        self.wake()
        return run

    # --- reading ----------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        """The run with this id; raises InvalidArgument for no id, NotFound (RUN_NOT_FOUND) when there is none."""
        if not run_id:
            raise InvalidArgument.fields([FieldError("run_id", "required")])
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"training run {run_id!r} not found", reason="RUN_NOT_FOUND")
        return run

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel from any replica: a queued run ends now, a running one stops at its next check."""
        run = self.get(run_id)
        if run.state not in ACTIVE_STATES:
            raise FailedPrecondition(f"run {run_id} already ended ({run.state})", reason="RUN_ENDED")
        changed = self.runs.request_cancel(run_id, self._ctx.now_us())
        if changed is not None and changed.state == CANCELLED:
            self._finished(changed)  # it never started
        elif changed is not None:
            self.cancel_local([run_id])
        return self.get(run_id)

    def cancel_local(self, run_ids: list[str]) -> None:
        """Stop these runs if this process runs them (their cancel was asked for, here or elsewhere)."""
        with self._lock:
            for run_id in run_ids:
                local = self._local.get(run_id)
                if local is not None:
                    local.cancel.set()

    def watch(self, run_id: str, active: Callable[[], bool]) -> Iterator[RunEvent]:
        """Every event of the run so far, then new ones, ending with the final one (from the database,
        so on any replica)."""
        self.get(run_id)
        seen = 0
        ended_since: float | None = None
        while True:
            fresh = self.runs.events_after(run_id, seen)
            for stored in fresh:
                seen = stored.n
                event = RunEvent.from_json(stored.event_json)
                if event.phase == "done":
                    event.final = self.get(run_id)
                    yield event
                    return
                yield event
            if not active() or self._ctx.stopping.is_set():
                return
            if not fresh:
                run = self.get(run_id)
                if run.state not in ACTIVE_STATES:
                    # Its final event is on its way, or was never written (a run from before events were
                    # stored, or a worker that died between the two writes).
                    ended_since = ended_since if ended_since is not None else time.monotonic()
                    if seen == 0 or time.monotonic() - ended_since > FINAL_EVENT_GRACE_S:
                        yield RunEvent("done", message=run.end_reason, final=run, time_us=run.ended_us)
                        return
                with self._watchers:
                    self._watchers.wait(WATCH_POLL_S)

    # --- running ----------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                with self._lock:
                    run = self.runs.claim(self._ctx.replica_id, self._ctx.now_us())
                    if run is not None:
                        self._local[run.run_id] = _Local()
            except ServiceError as exc:  # the database is away: try again later
                log.warning("training.claim_failed", error=exc.message)
                run = None
            except Exception:  # a bug of ours must not stop the trainer
                log.exception("training.claim_crashed")
                run = None
            if run is None:
                self._wake.wait(CLAIM_POLL_S)
                continue
            try:
                self._execute(run)
            except Exception:
                log.exception("training.execute_crashed", run_id=run.run_id)
            finally:
                with self._lock:
                    self._local.pop(run.run_id, None)
                release_free_memory()

    def _emit(self, run_id: str, event: RunEvent) -> None:
        event.time_us = event.time_us or self._ctx.now_us()
        try:
            self.runs.add_event(run_id, event.to_json(), event.time_us)
        except Exception as exc:  # progress is informative: a lost event must not fail the run
            log.warning("training.event_lost", run_id=run_id, phase=event.phase, error=str(exc))
        self.progressed()

    def _end(self, run: RunRecord, state: str, reason: str, conn: Any = None) -> None:
        run.state = state
        run.end_reason = reason
        run.ended_us = self._ctx.now_us()
        started = self._perf.pop(run.run_id, None)
        if started is not None:
            run.result["duration_s"] = time.perf_counter() - started
        if not self.runs.update(run, conn, worker=self._ctx.replica_id):
            raise RunTaken(run.run_id)
        if conn is None:
            self._finished(run)

    def _finished(self, run: RunRecord) -> None:
        log.info(
            "training.ended",
            run_id=run.run_id,
            state=run.state,
            reason=run.end_reason,
            version=run.produced_version,
            promoted=run.promoted,
        )
        # Listeners (alerts) first: whoever sees the run end also sees its consequences.
        for listener in self._listeners:
            try:
                listener(run)
            except Exception:  # a listener's bug must not break training
                log.exception("training.listener_failed", run_id=run.run_id)
        self._emit(run.run_id, RunEvent("done", message=run.end_reason, final=run))

    def interrupted(self, run: RunRecord) -> None:
        """A run the cluster failed because its worker stopped (runtime/replica.py): its listeners and
        final event, as for any end."""
        self._finished(run)

    def _execute(self, run: RunRecord) -> None:
        with self._lock:
            local = self._local[run.run_id]
        self._perf[run.run_id] = time.perf_counter()
        if self._stop.is_set():
            local.cancel.set()

        def progress(
            phase: str,
            family: str = "",
            iteration: int = 0,
            loss: float = math.nan,
            metrics: Metrics | None = None,
            message: str = "",
        ) -> None:
            self._emit(run.run_id, RunEvent(phase, family, iteration, loss, metrics, message))

        try:
            model = self._catalog.by_id(run.model_id)
            if run.kind == "incremental" and self._registry.champion(model) is not None:
                self._incremental(model, run, progress, local)
            else:
                if run.kind == "incremental":
                    run.result["note"] = "no champion yet: ran a full training instead"
                self._full(model, run, progress, local)
        except RunTaken:
            log.warning(
                "training.run_taken",
                run_id=run.run_id,
                reason="the run was failed while it ran here (its heartbeat had stopped)",
            )
        except tr.Cancelled:
            self._end_quietly(run, CANCELLED, "cancelled while training")
        except tr.NotEnoughData as exc:
            self._end_quietly(run, FAILED, f"not enough data: {exc}")
        except Exception as exc:
            log.exception("training.crashed", run_id=run.run_id)
            self._end_quietly(run, FAILED, f"error: {type(exc).__name__}: {exc}")

    def _end_quietly(self, run: RunRecord, state: str, reason: str) -> None:
        """End the run, trying again for a while if the database is away. Given up, the run is no longer
        this process's (nor heartbeated): the leader fails it as a stopped worker's."""
        if self._stop.is_set() and state == CANCELLED:
            state, reason = FAILED, "interrupted: the server stopped before the run finished"
        for delay in (*END_RETRY_S, None):
            try:
                self._end(run, state, reason)
                return
            except RunTaken:
                log.warning("training.run_taken", run_id=run.run_id)
                return
            except ServiceError as exc:
                if delay is None:
                    log.error("training.end_lost", run_id=run.run_id, error=exc.message)
                    return
                log.warning("training.end_failed", run_id=run.run_id, error=exc.message, retry_in=delay)
                if self._stop.wait(delay):
                    return

    def _data_summary(self, model: ModelRecord, data: tr.TrainingData, train: int, valid: int) -> dict[str, Any]:
        return {
            "outcome_count": len(data),
            "train_count": train,
            "validation_count": valid,
            "positives": int(data.labels.sum()),
            "first_outcome_us": int(data.times.min()) if len(data) else 0,
            "last_outcome_us": int(data.times.max()) if len(data) else 0,
        }

    def _full(self, model: ModelRecord, run: RunRecord, progress: Callable[..., None], live: _Local) -> None:
        progress("loading", message="loading outcomes")
        loaded = self._ctx.outcomes.load(model.id, through_seq=run.through_seq)
        data = to_training_data(loaded)
        families = tuple(run.request.get("families") or model.settings.training.families)
        split = str(run.request.get("split") or model.settings.training.split)
        t = model.settings.training
        run.result["parameters"] = {
            "families": ",".join(families),
            "split": split,
            "validation_fraction": str(t.validation_fraction),
            "random_seed": str(t.random_seed),
            "data_sha256": tr.data_digest(data, model.schema, model.settings, families, split),
        }
        if self._unchanged(model, run, data, split):
            return
        trainer = tr.Trainer(
            model.schema,
            model.settings,
            progress=progress,
            cancelled=live.cancel.is_set,
            threads=self._ctx.config.training_threads,
        )
        result = trainer.run(data, families, split)
        run.result["data"] = self._data_summary(model, data, result.train_count, len(result.validation))
        # What each family chose (the L2 strength and how, the trees' iterations), in the run's record.
        for c in result.candidates:
            for key, value in c.parameters.items():
                run.result["parameters"][f"{c.family}.{key}"] = value
            run.result["parameters"][f"{c.family}.iterations"] = str(c.iterations)
        self._conclude(
            model,
            run,
            result.candidates,
            result.selected,
            result.validation,
            FULL_TRAINING,
            0,
            progress,
            live,
            train_rows=result.train_rows,
        )

    def _unchanged(self, model: ModelRecord, run: RunRecord, data: tr.TrainingData, split: str) -> bool:
        """A full run on exactly the outcomes and settings of the champion's own run (the same data digest)
        registers nothing: it would train the same model again. It ends SUCCEEDED without a version."""
        champion = self._registry.champion(model)
        if champion is None:
            return False
        lineage = self._registry.get(model, champion.version).lineage or {}
        digest = run.result["parameters"]["data_sha256"]
        if (lineage.get("parameters") or {}).get("data_sha256") != digest:
            return False
        valid = int(tr.split_rows(data, model.settings, split).sum())
        run.result["data"] = self._data_summary(model, data, len(data) - valid, valid)
        run.result["parameters"]["unchanged_from_version"] = str(champion.version)
        self._end(
            run,
            SUCCEEDED,
            f"unchanged: champion version {champion.version} was trained on exactly these "
            f"{len(data)} outcomes with the same settings; no new version registered",
        )
        return True

    def _incremental(self, model: ModelRecord, run: RunRecord, progress: Callable[..., None], live: _Local) -> None:
        champion = self._registry.champion(model)
        assert champion is not None
        last = self.runs.previous_through_seq(model.id, run.run_id)
        progress("loading", message=f"loading outcomes after #{last}")
        new = to_training_data(self._ctx.outcomes.load(model.id, after_seq=last, through_seq=run.through_seq))
        if len(new) == 0:
            raise tr.NotEnoughData("no new outcomes since the last run")
        want = min(REPLAY_MAX, max(REPLAY_MIN, len(new) * REPLAY_RATIO))
        replay = to_training_data(self._ctx.outcomes.sample(model.id, last, want, seed=int(run.through_seq)))
        allrows = tr.TrainingData(
            new.rows + replay.rows,
            np.concatenate([new.labels, replay.labels]),
            new.ids + replay.ids,
            np.concatenate([new.times, replay.times]),
        )
        tr.check_trainable(allrows, 10)
        valid_mask = splitting.stratified(
            allrows.ids,
            allrows.labels,
            model.settings.training.validation_fraction,
            model.settings.training.random_seed,
        )
        train, valid = allrows.take(~valid_mask), allrows.take(valid_mask)
        cal_mask = splitting.stratified(train.ids, train.labels, 0.15, model.settings.training.random_seed + 1)
        fit, cal = train.take(~cal_mask), train.take(cal_mask)
        new_fit = fit.take(np.isin(np.asarray(fit.ids), np.asarray(new.ids)))
        replay_fit = fit.take(~np.isin(np.asarray(fit.ids), np.asarray(new.ids)))
        candidates: list[tr.FittedCandidate] = []
        base_version = (
            champion.version
            if champion.model.linear is not None
            else self._registry.versions.latest(model.id, "logistic_regression", READY)
        )
        if base_version:
            base = self._registry.served(model, version=base_version).model
            assert base.linear is not None
            progress("fitting", family="logistic_regression", message=f"warm start from version {base_version}")
            t0 = time.perf_counter()
            l2 = tr.incremental_l2(
                model.settings,
                _float(((self._registry.get(model, base_version).lineage or {}).get("parameters") or {}).get("l2")),
            )
            scoring, metrics, epochs, loss = tr.incremental_logistic(
                base.linear, model.schema, model.settings, new_fit, replay_fit, cal, valid, l2=l2
            )
            candidates.append(
                tr.FittedCandidate(
                    family="logistic_regression",
                    model=scoring,
                    calibration=scoring.calibrator.method,
                    metrics=metrics,
                    stop_reason="max_iterations",
                    iterations=epochs,
                    final_loss=loss,
                    fit_seconds=time.perf_counter() - t0,
                    feature_weights=scoring.linear.feature_weights() if scoring.linear else [],
                    parameters={
                        "method": "sgd_warm_start",
                        "base_version": str(base_version),
                        "epochs": str(epochs),
                        "l2": repr(l2),
                    },
                    validation_prob=scoring.predict_rows(valid.rows),
                )
            )
        if live.cancel.is_set():
            raise tr.Cancelled("cancelled")
        # The champion itself, recalibrated on recent labels: cheap, and it follows shifts in base rates.
        progress("calibrating", family=champion.model.family, message=f"recalibrating version {champion.version}")
        t0 = time.perf_counter()
        recal = tr.recalibrate(champion.model, cal, valid)
        recal_prob = recal.predict_rows(valid.rows)
        candidates.append(
            tr.FittedCandidate(
                family=recal.family,
                model=recal,
                calibration=recal.calibrator.method,
                metrics=mt.compute(valid.labels, recal_prob, recal.threshold),
                validation_prob=recal_prob,
                stop_reason="converged",
                iterations=1,
                final_loss=math.nan,
                fit_seconds=time.perf_counter() - t0,
                feature_weights=self._registry.get(model, champion.version).weights,
                parameters={"method": "recalibration", "base_version": str(champion.version)},
            )
        )
        best = min(candidates, key=lambda c: c.metrics.log_loss)
        best.selected = True
        run.result["data"] = self._data_summary(model, allrows, len(train), len(valid))
        run.result["data"]["new_outcomes"] = len(new)
        run.result["parameters"] = {"replay": str(len(replay)), "new": str(len(new))}
        parent = int(best.parameters.get("base_version", "0"))
        self._conclude(model, run, candidates, best, valid, INCREMENTAL, parent, progress, live, train_rows=train.rows)

    def _conclude(
        self,
        model: ModelRecord,
        run: RunRecord,
        candidates: list[tr.FittedCandidate],
        best: tr.FittedCandidate,
        valid: tr.TrainingData,
        source: str,
        parent: int,
        progress: Callable[..., None],
        live: _Local,
        train_rows: list[Any],
    ) -> None:
        if live.cancel.is_set():
            raise tr.Cancelled("cancelled")
        progress("gating", family=best.family)
        champion = self._registry.champion(model)
        champ_metrics = None
        paired = None
        if champion is not None:
            champ_prob = champion.model.predict_rows(valid.rows)
            champ_metrics = mt.compute(valid.labels, champ_prob, champion.model.threshold)
            cand_prob = (
                best.validation_prob if len(best.validation_prob) == len(valid) else best.model.predict_rows(valid.rows)
            )
            paired = gating.PairedScores(valid.labels, cand_prob, champ_prob)
        # A person asking for a full run gets the fresh model unless it is worse beyond noise; a run the
        # server started on its own, and any incremental update, must be better beyond noise.
        require_improvement = run.kind == "incremental" or run.trigger != "manual"
        verdict = gating.evaluate(
            best.metrics,
            model.settings.gate,
            champ_metrics,
            champion.version if champion else 0,
            paired=paired,
            require_improvement=require_improvement,
            seed=model.settings.training.random_seed,
        )
        run.result["candidates"] = [_candidate_dict(c) for c in candidates]
        run.result["gate"] = verdict.to_dict()
        if champ_metrics is not None:
            run.result["champion_metrics"] = champ_metrics.to_dict()
        data = run.result.get("data", {})
        lineage = {
            "training_run_id": run.run_id,
            "outcome_count": data.get("outcome_count", 0),
            "first_outcome_us": data.get("first_outcome_us", 0),
            "last_outcome_us": data.get("last_outcome_us", 0),
            "parameters": {**run.result.get("parameters", {}), **best.parameters},
        }

        def finish(conn: Any, version: int) -> None:
            run.produced_version = version
            run.promoted = verdict.passed
            reason = (
                f"promoted version {version} ({best.family})"
                if verdict.passed
                else f"version {version} rejected by the gate: {'; '.join(verdict.reasons)}"
            )
            self._end(run, SUCCEEDED, reason, conn)

        # The reference for later drift checks: the training rows' features (at most
        # 20,000 of them) and the model's probabilities on the held-out rows.
        sample = train_rows[:: max(1, len(train_rows) // 20_000)]
        reference = profiling.build(model.schema, sample, best.model.predict_rows(valid.rows))
        self._registry.register(
            model,
            best.model,
            status=READY if verdict.passed else REJECTED,
            source=source,
            run_id=run.run_id,
            profile=reference,
            parent_version=parent,
            metrics=best.metrics.to_dict(),
            gate=verdict.to_dict(),
            weights=best.feature_weights,
            lineage=lineage,
            description=run.description,
            promote=verdict.passed,
            reason=f"promoted by {run.run_id}",
            on_commit=finish,
        )
        self._finished(run)


def _float(value: Any) -> float:
    """A stored parameter as a number (0.0 when absent or not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _candidate_dict(c: tr.FittedCandidate) -> dict[str, Any]:
    return {
        "family": c.family,
        "calibration": c.calibration,
        "metrics": c.metrics.to_dict(),
        "stop_reason": c.stop_reason,
        "iterations": c.iterations,
        "final_loss": c.final_loss,
        "fit_seconds": c.fit_seconds,
        "selected": c.selected,
        "parameters": c.parameters,
    }
