"""Monitoring: windowed performance, drift, alerts (with cooldown and a live feed), health checks, retention."""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import structlog

from .. import drift as drifting
from .. import performance as perf
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..metrics import Metrics
from ..ingest import IngestReport
from ..schema import FieldError, Row
from ..store import ModelRecord, ReplicaRepository, ScheduleRepository
from ..store.predictions import PredictionRow
from ..store.monitoring import AlertChange, AlertRow, MonitoringRepository, PredictionWindow
from ..versions import RunRecord
from .catalog import Catalog
from .context import AppContext
from .registry import Registry
from .training_runs import TrainingRunner

log = structlog.get_logger("sahayak_rpc.monitor")
SEVERITIES = ("info", "warning", "critical")
RULE_SEVERITY = {
    "accuracy_below_min": "critical",
    "f1_below_min": "warning",
    "calibration_error_above_max": "warning",
    "feature_drift": "warning",
    "prediction_drift": "warning",
    "data_quality": "warning",
    "no_recent_predictions": "info",
    "no_recent_outcomes": "warning",
    "training_failed": "critical",
    "candidate_rejected": "info",
}
# A health check judges performance on the newest labelled predictions, drift on the last day.
PERFORMANCE_LAST_N = 1000
MIN_LABELLED = 50
DRIFT_WINDOW_S = 86400.0
MIN_DRIFT_ROWS = 100
# ...and on at most the newest 50,000 of them: ample for the statistics, bounded in cost.
MAX_DRIFT_ROWS = 50_000
DAY_US = 86_400_000_000
# The change feed's rows are for replicas catching up (a replica away longer reloads everything at
# start); stopped replicas' rows are kept this long for the status.
EVENTS_RETENTION_US = DAY_US
HEALTH_CHECK = "health_check"


@dataclass
class Snapshot:
    """Performance over one window: how many predictions, how many of them labelled, metrics realised
    on the labelled ones (None without any) and estimated from the others' probabilities."""

    start_us: int
    end_us: int
    predictions: int
    labelled: int
    realised: Metrics | None
    estimated: perf.Estimated


@dataclass
class HealthResult:
    """What one model's health check found: its snapshot and drift report (None when not judged), the
    freshness of its log, the alerts it raised and resolved, and the retrain it started, if any."""

    model: str
    snapshot: Snapshot | None = None
    drift: drifting.DriftReport | None = None
    reference_version: int = 0
    last_prediction_us: int = 0
    last_outcome_us: int = 0
    raised: list[AlertRow] = field(default_factory=list)
    resolved: list[AlertRow] = field(default_factory=list)
    training_run_id: str = ""


@dataclass(frozen=True)
class LoggedPrediction:
    """A prediction scored outside the server (the local scorer's), sent to LogPredictions."""

    prediction_id: str
    version: int
    probability: float
    positive: bool
    time_us: int | None  # None: now
    features: Row
    entities: dict[str, str]


class Monitor:
    """Monitoring use cases: performance and drift over the prediction log, alerts (raised with a cooldown,
    acknowledged, resolved, watched live), the periodic health check and retention."""

    def __init__(self, ctx: AppContext, catalog: Catalog, registry: Registry, runner: TrainingRunner) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._registry = registry
        self._runner = runner
        self.repo = MonitoringRepository(ctx.db)
        self.schedule = ScheduleRepository(ctx.db)
        self._replicas = ReplicaRepository(ctx.db)
        self._next_check_us = 0  # when the health check is next due, as this replica last saw the schedule
        self._events = threading.Condition()
        self.metrics: Any = None  # runtime.metrics.Metrics when /metrics is on
        runner.add_listener(self._on_run)

    # --- performance ----------------------------------------------------------

    def snapshot(
        self, model: ModelRecord, version: int, start_us: int | None, end_us: int | None, last_n: int
    ) -> tuple[Snapshot, PredictionWindow]:
        """Performance of the model's predictions (of one version; 0: any) in [start_us, end_us) (None: unbounded),
        with the window it was computed on. ``last_n`` keeps only the newest N labelled predictions (0: all).
        The snapshot's ends are its first and last prediction's times."""
        w = self.repo.window(model.id, version, start_us, end_us, last_n)
        labels = np.asarray(w.labels, dtype=np.int64)
        probs = np.asarray(w.probabilities, dtype=np.float64)
        known = labels >= 0
        threshold = model.settings.decision_threshold
        snap = Snapshot(
            start_us=w.times[0] if w.times else (start_us or 0),
            end_us=w.times[-1] if w.times else (end_us or 0),
            predictions=len(probs),
            labelled=int(known.sum()),
            realised=perf.realised(labels[known], probs[known], threshold),
            estimated=perf.estimate(probs[~known], threshold),
        )
        return snap, w

    def trend(
        self, model: ModelRecord, version: int, start_us: int, end_us: int, width_s: float, metric: str
    ) -> tuple[list[Snapshot], perf.Trend]:
        """Snapshots of consecutive windows of ``width_s`` seconds over [start_us, end_us), and the trend of
        ``metric`` over the windows with at least 10 labels. Raises InvalidArgument for an unknown metric, a
        width under a microsecond, or over 1000 windows."""
        if width_s <= 0:
            raise InvalidArgument.fields([FieldError("window", "must be positive")])
        if metric not in Metrics.__dataclass_fields__ or metric in ("count", "positives", "threshold"):
            raise InvalidArgument.fields([FieldError("metric", f"unknown metric {metric!r}")])
        width = int(width_s * 1_000_000)
        if width <= 0:  # under a microsecond
            raise InvalidArgument.fields([FieldError("window", "must be at least 1 microsecond")])
        if (end_us - start_us) // width > 1000:
            raise InvalidArgument.fields([FieldError("window", "at most 1000 windows per call")])
        snaps, times, values = [], [], []
        t = start_us
        while t < end_us:
            snap, _ = self.snapshot(model, version, t, min(end_us, t + width), 0)
            snap.start_us, snap.end_us = t, min(end_us, t + width)
            snaps.append(snap)
            if snap.realised is not None and snap.labelled >= 10:
                times.append((t + width / 2) / 1e6)
                values.append(float(getattr(snap.realised, metric)))
            t += width
        return snaps, perf.trend(times, values)

    # --- drift ----------------------------------------------------------------

    def drift(
        self, model: ModelRecord, version: int, start_us: int | None, end_us: int | None, last_n: int
    ) -> tuple[drifting.DriftReport, int]:
        """Drift of the logged predictions in the window (``last_n``: the newest N; 0: all) against a version's
        reference profile (``version`` 0: the champion's); returns the report and the version compared against.
        Raises FailedPrecondition: NO_CHAMPION, or NO_PROFILE for a version without a profile (imported, or no
        such version)."""
        if not version:
            champion = self._registry.champion(model)
            if champion is None:
                raise FailedPrecondition(
                    f"model {model.name!r} has no champion to compare against", reason="NO_CHAMPION"
                )
            version = champion.version
        profile = self._registry.versions.profile(model.id, version)
        if not profile:
            raise FailedPrecondition(
                f"version {version} has no reference profile (imported versions have none)", reason="NO_PROFILE"
            )
        window = self.repo.window_columns(model.id, start_us, end_us, last_n)
        m = model.settings.monitoring
        report = drifting.detect_columns(
            profile, window.columns, window.count, window.probabilities, m.drift_psi_threshold, m.drift_share
        )
        if self.metrics is not None and window.count:
            for f in report.features:
                if f.statistics:
                    self.metrics.drift_psi.labels(model.name, f.feature).set(f.statistics[0].value)
        return report, version

    # --- alerts ---------------------------------------------------------------

    def log_predictions(
        self,
        model: ModelRecord,
        items: Sequence[tuple[LoggedPrediction, list[FieldError]]],
        report: IngestReport,
        index: int,
    ) -> int:
        """Store predictions scored elsewhere, each with the problems its conversion found; a prediction
        with any problem (those, or the domain's: a version, a probability in [0, 1], a time within the
        prediction retention and at most a day ahead, features that keep the schema) is rejected in
        ``report`` under its index, the others are committed before this returns. Returns the next index."""
        now = self._ctx.now_us()
        retention_s = self._ctx.config.prediction_retention_s
        oldest = now - int(retention_s * 1_000_000)
        batch: list[PredictionRow] = []
        for p, errors in items:
            errors = list(errors)
            if p.version <= 0:
                errors.append(FieldError("prediction.version", "required: the version that scored it"))
            if not (math.isfinite(p.probability) and 0.0 <= p.probability <= 1.0):
                errors.append(FieldError("prediction.probability", "must be in [0, 1]"))
            # Older than the log keeps would be deleted at once; a day ahead means a wrong clock.
            if p.time_us is not None and not oldest <= p.time_us <= now + DAY_US:
                errors.append(
                    FieldError(
                        "prediction.time",
                        f"must be within the prediction retention "
                        f"({retention_s / 86400:g} days) and at most a day ahead of the server's clock",
                    )
                )
            errors += model.schema.validate_row(p.features, prefix="prediction.features")
            report.received += 1
            if errors:
                report.reject(index, p.prediction_id, errors[0].field, errors[0].reason)
            else:
                batch.append(
                    (
                        p.prediction_id,
                        model.id,
                        p.version,
                        orjson.dumps(p.features).decode(),
                        p.probability,
                        int(p.positive),
                        now if p.time_us is None else p.time_us,
                        orjson.dumps(p.entities).decode() if p.entities else None,
                        "logged",
                    )
                )
            index += 1
        # Logged predictions are client data: committed before the reply, like outcomes.
        if batch:
            self._ctx.predictions.insert_many(batch)
            report.accepted += len(batch)
        return index

    def _notify(self) -> None:
        with self._events:
            self._events.notify_all()

    def alerts_changed(self) -> None:
        """An alert event was stored (on another replica, say): wake the watchers."""
        self._notify()

    def raise_alert(
        self,
        model: ModelRecord,
        rule: str,
        message: str,
        value: float = 0.0,
        threshold: float = 0.0,
        details: dict[str, str] | None = None,
        severity: str = "",
    ) -> AlertRow | None:
        """Raise unless an alert of this rule is still open or was raised within the cooldown."""
        now = self._ctx.now_us()
        cooldown = int(model.settings.monitoring.alert_cooldown_s * 1_000_000)
        alert = AlertRow(
            f"alert-{secrets.token_hex(8)}",
            model.id,
            rule,
            severity or RULE_SEVERITY[rule],
            "open",
            message,
            float(value),
            float(threshold),
            details or {},
            now,
            0,
            0,
            "",
        )
        if self.repo.raise_alert(alert, cooldown) is None:
            return None
        log.warning("alert.raised", model=model.name, rule=rule, severity=alert.severity, message=message)
        self._notify()
        return alert

    def resolve(self, model: ModelRecord, rule: str) -> AlertRow | None:
        """Resolve the model's latest alert of ``rule`` if it is not resolved yet; returns it resolved, or None
        when there was nothing to resolve."""
        latest = self.repo.latest_alert(model.id, rule)
        if latest is None or latest.state == "resolved":
            return None
        resolved = self.repo.transition(latest.alert_id, "resolved", self._ctx.now_us())
        self._notify()
        return resolved

    def acknowledge(self, alert_id: str, note: str) -> AlertRow:
        """Mark an open alert acknowledged, with ``note``; returns it (unchanged if it already was). Raises
        InvalidArgument (no id, a note over 4096 characters), NotFound (ALERT_NOT_FOUND) or FailedPrecondition
        (ALERT_RESOLVED)."""
        if not alert_id:
            raise InvalidArgument.fields([FieldError("alert_id", "required")])
        if len(note) > 4096:
            raise InvalidArgument.fields([FieldError("note", "at most 4096 characters")])
        current = self.repo.get_alert(alert_id)
        if current is None:
            raise NotFound(f"alert {alert_id!r} not found", reason="ALERT_NOT_FOUND")
        if current.state == "resolved":
            raise FailedPrecondition(f"alert {alert_id} is already resolved", reason="ALERT_RESOLVED")
        row = self.repo.transition(alert_id, "acknowledged", self._ctx.now_us(), note)
        self._notify()
        assert row is not None
        return row

    def watch(
        self, cursor: int, model_id: int | None, min_severity: str, active: Callable[[], bool]
    ) -> Iterator[AlertChange]:
        """Alert events after ``cursor`` (from the store, so a reconnect misses and repeats nothing), then live."""
        wanted = SEVERITIES[SEVERITIES.index(min_severity) :] if min_severity else SEVERITIES
        while active() and not self._ctx.stopping.is_set():
            events = self.repo.events_after(cursor)
            for change in events:
                cursor = change.seq
                if (model_id is None or change.alert.model_id == model_id) and change.alert.severity in wanted:
                    yield change
            if not events:
                with self._events:
                    self._events.wait(0.5)

    # --- training events ------------------------------------------------------

    def _on_run(self, run: RunRecord) -> None:
        try:
            model = self._catalog.by_id(run.model_id)
        except NotFound:
            return
        if run.state == "failed":
            self.raise_alert(
                model,
                "training_failed",
                f"training run {run.run_id} failed: {run.end_reason}",
                details={"run_id": run.run_id},
            )
        elif run.state == "succeeded":
            self.resolve(model, "training_failed")
            if not run.promoted:
                self.raise_alert(
                    model,
                    "candidate_rejected",
                    run.end_reason,
                    details={"run_id": run.run_id, "version": str(run.produced_version)},
                )

    # --- health check ---------------------------------------------------------

    def _rule(
        self,
        result: HealthResult,
        model: ModelRecord,
        rule: str,
        breached: bool,
        message: str,
        value: float,
        threshold: float,
        severity: str = "",
        details: dict[str, str] | None = None,
    ) -> None:
        if breached:
            alert = self.raise_alert(model, rule, message, value, threshold, details, severity)
            if alert is not None:
                result.raised.append(alert)
        else:
            cleared = self.resolve(model, rule)
            if cleared is not None:
                result.resolved.append(cleared)

    def check(self, model: ModelRecord) -> HealthResult:
        """Metrics, drift and freshness for one model; raises and resolves alerts; may start a retrain."""
        now = self._ctx.now_us()
        result = HealthResult(model.name)
        champion = self._registry.champion(model)
        if champion is None:
            return result
        gate = model.settings.gate
        mon = model.settings.monitoring
        snap, _ = self.snapshot(model, 0, None, None, PERFORMANCE_LAST_N)
        result.snapshot = snap
        breach = False
        if snap.realised is not None and snap.labelled >= MIN_LABELLED:
            r = snap.realised
            for rule, bad, value, limit, text in (
                ("accuracy_below_min", r.accuracy < gate.min_accuracy, r.accuracy, gate.min_accuracy, "accuracy"),
                ("f1_below_min", r.f1 < gate.min_f1, r.f1, gate.min_f1, "F1"),
                (
                    "calibration_error_above_max",
                    r.calibration_error > gate.max_calibration_error,
                    r.calibration_error,
                    gate.max_calibration_error,
                    "calibration error",
                ),
            ):
                self._rule(
                    result,
                    model,
                    rule,
                    bad,
                    f"{text} {value:.3f} on the last {snap.labelled} labelled predictions (limit {limit:.3f})",
                    value,
                    limit,
                )
                breach = breach or (bad and rule == "accuracy_below_min")
        window_start = now - int(DRIFT_WINDOW_S * 1_000_000)
        critical_drift = False
        try:
            report, ref = self.drift(model, champion.version, window_start, None, MAX_DRIFT_ROWS)
        except FailedPrecondition:
            report, ref = None, 0
        if report is not None and report.current_count >= MIN_DRIFT_ROWS:
            result.drift, result.reference_version = report, ref
            drifted = [f.feature for f in report.features if f.drifted]
            critical_drift = report.dataset_drift
            self._rule(
                result,
                model,
                "feature_drift",
                bool(drifted),
                f"{len(drifted)} of {len(report.features)} features drifted: {', '.join(drifted[:8])}",
                report.drifted_share,
                report.drift_share_threshold,
                severity="critical" if critical_drift else "warning",
                details={"features": ",".join(drifted)},
            )
            pd = report.prediction
            psi_value = pd.statistics[0].value if pd.statistics else 0.0
            self._rule(
                result,
                model,
                "prediction_drift",
                pd.drifted,
                f"prediction PSI {psi_value:.3f}",
                psi_value,
                mon.drift_psi_threshold,
            )
            quality = [
                f.feature
                for f in report.features
                if f.missing_share - f.reference_missing_share > 0.2 or f.unseen_share > 0.1
            ]
            self._rule(
                result,
                model,
                "data_quality",
                bool(quality),
                f"missing values or unseen categories rising in {', '.join(quality[:8])}",
                float(len(quality)),
                0.0,
                details={"features": ",".join(quality)},
            )
        limit = int(mon.freshness_limit_s * 1_000_000)
        result.last_prediction_us = self.repo.last_prediction_us(model.id)
        result.last_outcome_us = self.repo.last_outcome_us(model.id)
        for rule, last, what in (
            ("no_recent_predictions", result.last_prediction_us, "predictions"),
            ("no_recent_outcomes", result.last_outcome_us, "outcomes"),
        ):
            stale = now - last > limit
            self._rule(
                result,
                model,
                rule,
                stale,
                f"no {what} for over {mon.freshness_limit_s / 3600:.1f} h",
                (now - last) / 1e6 if last else math.inf,
                mon.freshness_limit_s,
            )
        if (critical_drift or breach) and mon.retrain_on_breach:
            result.training_run_id = self._self_heal(model, "drift" if critical_drift else "performance")
        if snap.realised is not None and snap.labelled:
            self.repo.record_performance(
                model.id, champion.version, snap.start_us, snap.end_us, snap.realised.to_dict(), "health_check", now
            )
        return result

    def _self_heal(self, model: ModelRecord, trigger: str) -> str:
        """Start a retrain, at most once per alert cooldown per model (judged by the runs table, so a new
        leader keeps the cooldown its predecessor started)."""
        now = self._ctx.now_us()
        last = self._runner.runs.last_started_by(model.id, ("drift", "performance"))
        if last and now - last < int(model.settings.monitoring.alert_cooldown_s * 1_000_000):
            return ""
        try:
            run = self._runner.start(model, kind="full", trigger=trigger, description=f"health check: {trigger}")
        except Exception as exc:  # busy or not enough data: the next check tries again
            log.info("monitor.retrain_skipped", model=model.name, reason=str(exc))
            return ""
        return run.run_id

    def check_all(self, name: str = "") -> list[HealthResult]:
        """Health-check the model named ``name`` (NotFound when there is none), or every model without a name."""
        models = [self._catalog.get(name)] if name else self._catalog.all()
        return [self.check(m) for m in models]

    def retention(self) -> dict[str, int]:
        """Delete predictions and performance records past their retention, in small batches."""
        now = self._ctx.now_us()
        cfg = self._ctx.config
        before_pred = now - int(cfg.prediction_retention_s * 1_000_000)
        before_perf = now - int(cfg.performance_retention_s * 1_000_000)
        self._ctx.predictions.prepare_ahead(now)
        return {
            "predictions": self.repo.purge("predictions", "created_us", before_pred)
            + self.repo.purge("prediction_batches", "created_us", before_pred),
            # After the rows: a segment goes once every record in it is past retention.
            "log_segments": self._ctx.predictions.purge_segments(before_pred),
            "performance_records": self.repo.purge("performance_records", "created_us", before_perf),
            "events": self._ctx.events.purge(now - EVENTS_RETENTION_US),
            "run_events": self._runner.runs.purge_events(before_perf),
            "replicas": self._replicas.purge(now - EVENTS_RETENTION_US),
        }

    def periodic(self) -> None:
        """The leader's tick: a health check and retention every health_check_interval. When they last ran
        is a row (store/events.py ScheduleRepository), so a new leader neither repeats nor skips them."""
        interval = int(self._ctx.config.health_check_interval_s * 1_000_000)
        now = self._ctx.now_us()
        if now < self._next_check_us:
            return  # (most ticks: not due as this replica last saw it; no query)
        if not self.schedule.claim(HEALTH_CHECK, now, interval):
            self._next_check_us = self.schedule.last(HEALTH_CHECK) + interval
            return
        self._next_check_us = now + interval
        log.info("monitor.health_check", replica=self._ctx.replica_id)
        try:
            self.check_all()
        finally:
            self.retention()
