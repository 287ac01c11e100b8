"""MonitorService: server status and the prediction log (monitoring comes later)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import json_format

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.ingest import Ingest
from ..app.monitor import SEVERITIES, LoggedPrediction, Monitor
from ..app.registry import Registry
from ..app.training_runs import TrainingRunner
from ..errors import InvalidArgument, ResourceExhausted, ServiceError
from ..ingest import IngestReport
from ..runtime.predlog import PredictionLog
from ..runtime.replica import Replica
from ..runtime.scheduler import Scheduler
from ..store.events import ReplicaRow
from ..schema import FieldError
from .._proto.sahayak.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc
from . import convert

MAX_LOG_ROWS = 10_000


def _replica_to_proto(r: ReplicaRow, leader: bool) -> monitor_pb2.ReplicaStatus:
    return monitor_pb2.ReplicaStatus(
        id=r.id,
        name=r.name,
        host=r.host,
        pid=r.pid,
        server_version=r.version,
        leader=leader,
        training_worker=r.trains,
        start_time=convert.us_to_ts(r.started_us),
        heartbeat_time=convert.us_to_ts(r.heartbeat_us),
    )


class _StatusServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(
        self,
        ctx: AppContext,
        catalog: Catalog,
        ingest: Ingest,
        registry: Registry,
        runner: TrainingRunner,
        scheduler: Scheduler,
        predlog: PredictionLog,
        implemented: Callable[[], list[str]],
        version: str,
        monitor: Monitor,
        replica: Replica,
    ) -> None:
        self._monitor = monitor
        self._replica = replica
        self._ctx = ctx
        self._catalog = catalog
        self._ingest = ingest
        self._registry = registry
        self._runner = runner
        self._scheduler = scheduler
        self._predlog = predlog
        self._implemented = implemented
        self._version = version

    def GetServerStatus(
        self, request: monitor_pb2.GetServerStatusRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.GetServerStatusResponse:
        now = self._ctx.clock.now()
        response = monitor_pb2.GetServerStatusResponse(
            server_version=self._version,
            start_time=convert.us_to_ts(int(self._ctx.started_at * 1e6)),
            uptime=convert.s_to_duration(max(0.0, now - self._ctx.started_at)),
            queues=monitor_pb2.QueueDepths(prediction_log=self._predlog.depth, training=self._runner.queue_depth),
            implemented_methods=self._implemented(),
            database=self._ctx.db.dialect,
        )
        replicas = self._replica.status()
        if replicas.me is not None:
            response.replica.CopyFrom(_replica_to_proto(replicas.me, leader=replicas.leading))
        response.replicas.extend(_replica_to_proto(r, r.leader) for r in replicas.seen)
        for record in self._catalog.all():
            since = self._ingest.labels_since_training(record)
            every = record.settings.training.incremental_every
            champion = self._registry.champion(record)
            status = response.models.add(
                model=record.name,
                serving_version=champion.version if champion else 0,
                outcome_count=self._ctx.outcomes.count(record.id),
                labels_since_training=since,
                labels_until_incremental=max(0, every - since) if every else 0,
            )
            last = self._runner.runs.last(record.id)
            if last is not None:
                status.last_training_time.CopyFrom(convert.us_to_ts(last.created_us))
            due = self._scheduler.next_retrain_us(record)
            if due:
                status.next_retrain_time.CopyFrom(convert.us_to_ts(due))
            active = self._runner.runs.active(record.id)
            if active is not None:
                status.active_run_id = active.run_id
            status.open_alerts = self._monitor.repo.open_alerts(record.id)
        return response

    def LogPredictions(
        self, request_iterator: Iterator[monitor_pb2.LogPredictionsRequest], context: grpc.ServicerContext
    ) -> monitor_pb2.LogPredictionsResponse:
        report = IngestReport()
        model = None
        index = 0
        for n, message in enumerate(request_iterator):
            if model is None:
                if not message.model:
                    raise InvalidArgument.fields([FieldError("model", "required in the first message")])
                model = self._catalog.get(message.model)
            elif message.model and message.model != model.name:
                raise InvalidArgument.fields([FieldError("model", f"message {n} names another model")])
            if len(message.predictions) > MAX_LOG_ROWS:
                raise ResourceExhausted(f"at most {MAX_LOG_ROWS} predictions per message", reason="BATCH_TOO_LARGE")
            items = [_logged_from_proto(p) for p in message.predictions]
            index = self._monitor.log_predictions(model, items, report, index)
        return monitor_pb2.LogPredictionsResponse(
            accepted=report.accepted,
            rejected=report.rejected,
            errors=[common_pb2.RowError(index=i, id=ident, field=f, reason=r) for i, ident, f, r in report.errors],
        )


# --- monitoring conversions ---------------------------------------------


def _logged_from_proto(p: monitor_pb2.LoggedPrediction) -> tuple[LoggedPrediction, list[FieldError]]:
    """A LogPredictions entry as the domain's record, with what is wrong with its form (the domain's
    own rules are Monitor.log_predictions')."""
    errors: list[FieldError] = []
    if not p.prediction_id:
        errors.append(FieldError("prediction.prediction_id", "required"))
    convert.check_id(p.prediction_id, "prediction.prediction_id", errors)
    if p.label not in (common_pb2.LABEL_POSITIVE, common_pb2.LABEL_NEGATIVE):
        errors.append(FieldError("prediction.label", "required: LABEL_POSITIVE or LABEL_NEGATIVE"))
    when = None
    if p.HasField("time") and convert.check_timestamp(p.time, "prediction.time", errors):
        when = convert.ts_to_us(p.time)
    if p.entities:
        convert.check_string_map(p.entities, "prediction.entities", errors)
    record = LoggedPrediction(
        p.prediction_id,
        p.version,
        p.probability,
        p.label == common_pb2.LABEL_POSITIVE,
        when,
        convert.row_from_proto(p.features),
        dict(p.entities),
    )
    return record, errors


def _window(w: monitor_pb2.PerformanceWindow, path: str) -> tuple[int | None, int | None, int]:
    errors: list[FieldError] = []
    which = w.WhichOneof("window")
    start = end = None
    last_n = 0
    if which == "time_window":
        start, end = convert.time_window(w.time_window, f"{path}.time_window")
    elif which == "last_n":
        last_n = w.last_n
        if not 0 < last_n <= 1_000_000:
            errors.append(FieldError(f"{path}.last_n", "must be 1-1000000"))
    if errors:
        raise InvalidArgument.fields(errors)
    return start, end, last_n


def _snapshot(s: Any) -> monitor_pb2.PerformanceSnapshot:
    e = s.estimated
    out = monitor_pb2.PerformanceSnapshot(
        prediction_count=s.predictions,
        labelled_count=s.labelled,
        estimated=monitor_pb2.EstimatedMetrics(
            accuracy=e.accuracy,
            precision=e.precision,
            recall=e.recall,
            f1=e.f1,
            roc_auc=e.roc_auc,
            unlabelled_count=e.unlabelled_count,
        ),
    )
    if s.start_us:
        out.start_time.CopyFrom(convert.us_to_ts(s.start_us))
    if s.end_us:
        out.end_time.CopyFrom(convert.us_to_ts(s.end_us))
    if s.realised is not None:
        out.realised.CopyFrom(convert.metrics_to_proto(s.realised.to_dict()))
    return out


def _feature_drift(f: Any) -> monitor_pb2.FeatureDrift:
    return monitor_pb2.FeatureDrift(
        feature=f.feature,
        drifted=f.drifted,
        reference_count=f.reference_count,
        current_count=f.current_count,
        missing_share=f.missing_share,
        reference_missing_share=f.reference_missing_share,
        unseen_share=f.unseen_share,
        statistics=[
            monitor_pb2.DriftStatistic(
                method=convert.enum_to_proto(monitor_pb2.DriftMethod, "DRIFT_METHOD_", st.method),
                value=st.value,
                threshold=st.threshold,
                drifted=st.drifted,
            )
            for st in f.statistics
        ],
    )


def _drift(model: str, report: Any, version: int, now_us: int) -> monitor_pb2.DriftReport:
    return monitor_pb2.DriftReport(
        model=model,
        reference_version=version,
        features=[_feature_drift(f) for f in report.features],
        prediction=_feature_drift(report.prediction),
        dataset_drift=report.dataset_drift,
        drifted_share=report.drifted_share,
        drift_share_threshold=report.drift_share_threshold,
        compute_time=convert.us_to_ts(now_us),
    )


def _alert(a: Any, model_name: str) -> monitor_pb2.Alert:
    out = monitor_pb2.Alert(
        alert_id=a.alert_id,
        model=model_name,
        rule=convert.enum_to_proto(monitor_pb2.AlertRule, "ALERT_RULE_", a.rule),
        severity=convert.enum_to_proto(monitor_pb2.AlertSeverity, "ALERT_SEVERITY_", a.severity),
        state=convert.enum_to_proto(monitor_pb2.AlertState, "ALERT_STATE_", a.state),
        message=a.message,
        value=a.value,
        threshold=a.threshold,
        details=a.details,
        raise_time=convert.us_to_ts(a.raised_us),
        note=a.note,
    )
    if a.acknowledged_us:
        out.acknowledge_time.CopyFrom(convert.us_to_ts(a.acknowledged_us))
    if a.resolved_us:
        out.resolve_time.CopyFrom(convert.us_to_ts(a.resolved_us))
    return out


class MonitoringMixin:
    """The monitoring RPCs of MonitorService."""

    _ctx: AppContext
    _catalog: Catalog
    _monitor: Monitor
    _predlog: PredictionLog
    _runner: TrainingRunner

    def _names(self) -> dict[int, str]:
        return {m.id: m.name for m in self._catalog.all()}

    def GetPerformance(
        self, request: monitor_pb2.GetPerformanceRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.GetPerformanceResponse:
        model = self._catalog.get(request.model)
        start, end, last_n = _window(request.window, "window")
        snap, _ = self._monitor.snapshot(model, request.version, start, end, last_n)
        return monitor_pb2.GetPerformanceResponse(snapshot=_snapshot(snap))

    def GetPerformanceTrend(
        self, request: monitor_pb2.GetPerformanceTrendRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.GetPerformanceTrendResponse:
        model = self._catalog.get(request.model)
        errors: list[FieldError] = []
        if not (request.range.HasField("start_time") and request.range.HasField("end_time")):
            errors.append(FieldError("range", "required: start_time and end_time"))
        if errors:
            raise InvalidArgument.fields(errors)
        start, end = convert.time_window(request.range, "range")  # checks the range and the order
        assert start is not None and end is not None
        width = convert.duration_to_s(request.window) if request.HasField("window") else 86400.0
        metric = request.metric or "accuracy"
        snaps, t = self._monitor.trend(model, request.version, start, end, width, metric)
        return monitor_pb2.GetPerformanceTrendResponse(
            windows=[_snapshot(s) for s in snaps],
            metric=metric,
            slope=t.slope_per_day,
            p_value=t.p_value,
            verdict=convert.enum_to_proto(monitor_pb2.TrendVerdict, "TREND_VERDICT_", t.verdict),
        )

    def RecordPerformance(
        self, request: monitor_pb2.RecordPerformanceRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.RecordPerformanceResponse:
        model = self._catalog.get(request.model)
        errors: list[FieldError] = []
        if request.version <= 0:
            errors.append(FieldError("version", "required"))
        if not (request.window.HasField("start_time") and request.window.HasField("end_time")):
            errors.append(FieldError("window", "required: start_time and end_time"))
        m = request.metrics
        for name in ("accuracy", "precision", "recall", "f1", "calibration_error"):
            v = getattr(m, name)
            if not (math.isnan(v) or 0.0 <= v <= 1.0):
                errors.append(FieldError(f"metrics.{name}", "must be in [0, 1]"))
        if len(request.source) > 200:
            errors.append(FieldError("source", "at most 200 characters"))
        if errors:
            raise InvalidArgument.fields(errors)
        start, end = convert.time_window(request.window, "window")
        assert start is not None and end is not None
        metrics = json_format.MessageToDict(m, preserving_proto_field_name=True)
        rid = self._monitor.repo.record_performance(
            model.id, request.version, start, end, metrics, request.source or "external", self._ctx.now_us()
        )
        return monitor_pb2.RecordPerformanceResponse(record_id=str(rid))

    def DetectDrift(
        self, request: monitor_pb2.DetectDriftRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.DetectDriftResponse:
        model = self._catalog.get(request.model)
        start, end, last_n = _window(request.window, "window")
        report, version = self._monitor.drift(model, request.version, start, end, last_n)
        return monitor_pb2.DetectDriftResponse(report=_drift(model.name, report, version, self._ctx.now_us()))

    def ListAlerts(
        self, request: monitor_pb2.ListAlertsRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.ListAlertsResponse:
        model = self._catalog.get(request.model) if request.model else None
        state = convert.enum_from_proto(monitor_pb2.AlertState, "ALERT_STATE_", request.state, "state")
        severity = convert.enum_from_proto(
            monitor_pb2.AlertSeverity, "ALERT_SEVERITY_", request.min_severity, "min_severity"
        )
        if request.page_size < 0:
            raise InvalidArgument.fields([FieldError("page_size", "must not be negative")])
        size = min(request.page_size or 50, 500)
        token = convert.decode_token(request.page_token)
        before = convert.parse_int64(token) if token else 2**62
        if before is None:
            raise InvalidArgument.fields([FieldError("page_token", "not a page token this server issued")])
        wanted = SEVERITIES[SEVERITIES.index(severity) :] if severity else ()
        rows = self._monitor.repo.list_alerts(model.id if model else None, state, wanted, before, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        names = self._names()
        return monitor_pb2.ListAlertsResponse(
            alerts=[_alert(r.alert, names.get(r.alert.model_id, "")) for r in rows],
            next_page_token=convert.encode_token(str(rows[-1].seq) if more else ""),
        )

    def AcknowledgeAlert(
        self, request: monitor_pb2.AcknowledgeAlertRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.AcknowledgeAlertResponse:
        row = self._monitor.acknowledge(request.alert_id, request.note)
        return monitor_pb2.AcknowledgeAlertResponse(alert=_alert(row, self._names().get(row.model_id, "")))

    def WatchAlerts(
        self, request: monitor_pb2.WatchAlertsRequest, context: grpc.ServicerContext
    ) -> Iterator[monitor_pb2.WatchAlertsResponse]:
        model = self._catalog.get(request.model) if request.model else None
        severity = convert.enum_from_proto(
            monitor_pb2.AlertSeverity, "ALERT_SEVERITY_", request.min_severity, "min_severity"
        )
        if request.cursor:
            parsed = convert.parse_int64(request.cursor)
            if parsed is None:
                raise InvalidArgument.fields([FieldError("cursor", "not a cursor this server issued")])
            cursor = parsed
        else:
            cursor = self._monitor.repo.last_event_seq()
        # Headers now: a client that waits for them knows the watch is listening.
        context.send_initial_metadata(())
        names = self._names()
        for change in self._monitor.watch(cursor, model.id if model else None, severity, context.is_active):
            if change.alert.model_id not in names:
                names = self._names()
            yield monitor_pb2.WatchAlertsResponse(
                event_type=convert.enum_to_proto(monitor_pb2.AlertEventType, "ALERT_EVENT_TYPE_", change.event),
                alert=_alert(change.alert, names.get(change.alert.model_id, "")),
                cursor=str(change.seq),
            )

    def RunHealthCheck(
        self, request: monitor_pb2.RunHealthCheckRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.RunHealthCheckResponse:
        self._predlog.flush()  # judge the predictions served so far, not only those written
        results = self._monitor.check_all(request.model)
        now = self._ctx.now_us()
        response = monitor_pb2.RunHealthCheckResponse(check_time=convert.us_to_ts(now))
        for r in results:
            out = response.results.add(
                model=r.model,
                training_run_id=r.training_run_id,
                raised=[_alert(a, r.model) for a in r.raised],
                resolved=[_alert(a, r.model) for a in r.resolved],
            )
            if r.snapshot is not None:
                out.performance.CopyFrom(_snapshot(r.snapshot))
            if r.drift is not None:
                out.drift.CopyFrom(_drift(r.model, r.drift, r.reference_version, now))
            if r.last_prediction_us:
                out.last_prediction_time.CopyFrom(convert.us_to_ts(r.last_prediction_us))
            if r.last_outcome_us:
                out.last_outcome_time.CopyFrom(convert.us_to_ts(r.last_outcome_us))
        return response

    def GetMonitoringReport(
        self, request: monitor_pb2.GetMonitoringReportRequest, context: grpc.ServicerContext
    ) -> monitor_pb2.GetMonitoringReportResponse:
        model = self._catalog.get(request.model)
        start, end = convert.time_window(request.window, "window")
        snap, _ = self._monitor.snapshot(model, 0, start, end, 0)
        response = monitor_pb2.GetMonitoringReportResponse(performance=_snapshot(snap))
        drift_text = "no reference profile or no champion"
        try:
            report, version = self._monitor.drift(model, 0, start, end, 0)
            response.drift.CopyFrom(_drift(model.name, report, version, self._ctx.now_us()))
            drifted = [f.feature for f in report.features if f.drifted]
            drift_text = (
                f"{len(drifted)} of {len(report.features)} features drifted against version {version}"
                + (f": {', '.join(drifted)}" if drifted else "")
                + f"; dataset drift: {report.dataset_drift}"
            )
        except ServiceError:
            pass
        alerts = [
            a
            for a in (r.alert for r in self._monitor.repo.list_alerts(model.id, "", (), 2**62, 500))
            if (start is None or a.raised_us >= start) and (end is None or a.raised_us < end)
        ]
        response.alerts.extend([_alert(a, model.name) for a in alerts])
        runs = [
            listed.run
            for listed in self._runner.runs.list(model.id, "", None, 10_000)
            if (start is None or listed.run.created_us >= start) and (end is None or listed.run.created_us < end)
        ]
        response.training_runs = len(runs)
        response.promotions = sum(1 for r in runs if r.promoted)
        r = snap.realised
        perf_text = (
            f"accuracy {r.accuracy:.3f}, F1 {r.f1:.3f}, ROC AUC {r.roc_auc:.3f}, calibration error "
            f"{r.calibration_error:.3f} on {snap.labelled} labelled"
            if r is not None
            else "no labelled predictions"
        )
        response.markdown = (
            "\n".join(
                [
                    f"# Monitoring report: {model.name}",
                    "",
                    f"- Predictions: {snap.predictions} ({snap.labelled} labelled); {perf_text}",
                    f"- Estimated from probabilities (unlabelled {snap.estimated.unlabelled_count}): accuracy "
                    f"{snap.estimated.accuracy:.3f}",
                    f"- Drift: {drift_text}",
                    f"- Alerts: {len(alerts)} ({sum(a.state != 'resolved' for a in alerts)} not resolved)",
                    f"- Training runs: {len(runs)}, promotions: {response.promotions}",
                ]
            )
            + "\n"
        )
        return response


class MonitorServicer(MonitoringMixin, _StatusServicer):
    """MonitorService: status, prediction log, performance, drift, alerts, health checks, reports."""
