"""MonitorService: server status and the prediction log (monitoring comes later)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import grpc
import orjson

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.ingest import Ingest
from ..app.registry import Registry
from ..app.training_runs import TrainingRunner
from ..errors import InvalidArgument, ResourceExhausted
from ..ingest import IngestReport
from ..runtime.predlog import PredictionLog
from ..runtime.scheduler import Scheduler
from ..schema import FieldError
from .._proto.sahayak.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc
from . import convert

MAX_LOG_ROWS = 10_000


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, ingest: Ingest, registry: Registry, runner: TrainingRunner,
                 scheduler: Scheduler, predlog: PredictionLog, implemented: Callable[[], list[str]], version: str) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._ingest = ingest
        self._registry = registry
        self._runner = runner
        self._scheduler = scheduler
        self._predlog = predlog
        self._implemented = implemented
        self._version = version

    def GetServerStatus(self, request: monitor_pb2.GetServerStatusRequest, context: grpc.ServicerContext) -> monitor_pb2.GetServerStatusResponse:
        now = self._ctx.clock.now()
        response = monitor_pb2.GetServerStatusResponse(
            server_version=self._version,
            start_time=convert.us_to_ts(int(self._ctx.started_at * 1e6)),
            uptime=convert.s_to_duration(max(0.0, now - self._ctx.started_at)),
            queues=monitor_pb2.QueueDepths(prediction_log=self._predlog.depth, training=self._runner.queue_depth),
            implemented_methods=self._implemented(),
        )
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
        return response

    def LogPredictions(self, request_iterator: Iterator[monitor_pb2.LogPredictionsRequest], context: grpc.ServicerContext) -> monitor_pb2.LogPredictionsResponse:
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
            now = self._ctx.now_us()
            batch: list[tuple[object, ...]] = []
            for p in message.predictions:
                errors: list[FieldError] = []
                if not p.prediction_id:
                    errors.append(FieldError("prediction.prediction_id", "required"))
                convert.check_id(p.prediction_id, "prediction.prediction_id", errors)
                if p.version <= 0:
                    errors.append(FieldError("prediction.version", "required: the version that scored it"))
                if not (math.isfinite(p.probability) and 0.0 <= p.probability <= 1.0):
                    errors.append(FieldError("prediction.probability", "must be in [0, 1]"))
                if p.label not in (common_pb2.LABEL_POSITIVE, common_pb2.LABEL_NEGATIVE):
                    errors.append(FieldError("prediction.label", "required: LABEL_POSITIVE or LABEL_NEGATIVE"))
                when = now
                if p.HasField("time") and convert.check_timestamp(p.time, "prediction.time", errors):
                    when = convert.ts_to_us(p.time)
                row = convert.row_from_proto(p.features)
                errors += model.schema.validate_row(row, prefix="prediction.features")
                if p.entities:
                    convert.check_string_map(p.entities, "prediction.entities", errors)
                report.received += 1
                if errors:
                    report.reject(index, p.prediction_id, errors[0].field, errors[0].reason)
                else:
                    batch.append((p.prediction_id, model.id, p.version, orjson.dumps(row).decode(), p.probability,
                                  int(p.label == common_pb2.LABEL_POSITIVE), when,
                                  orjson.dumps(dict(p.entities)).decode() if p.entities else None, "logged"))
                index += 1
            # Logged predictions are client data: committed before the reply, like outcomes.
            if batch:
                self._ctx.predictions.insert_many(batch)
                report.accepted += len(batch)
        return monitor_pb2.LogPredictionsResponse(
            accepted=report.accepted, rejected=report.rejected,
            errors=[common_pb2.RowError(index=i, id=ident, field=f, reason=r) for i, ident, f, r in report.errors],
        )
