"""TrainingService: durable ingest of labelled outcomes (training runs come later)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.ingest import Candidate, ImportSession, Ingest
from ..app.training_runs import TrainingRunner
from ..errors import InvalidArgument, ResourceExhausted
from ..ingest import IngestReport
from ..schema import FieldError
from .._proto.sahayak.v1 import common_pb2, registry_pb2, training_pb2, training_pb2_grpc
from . import convert, convert_training

# One message of an import stream may carry at most this many outcomes.
MAX_BATCH_ROWS = 10_000


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, ingest: Ingest, runner: TrainingRunner) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._ingest = ingest
        self._runner = runner

    def RecordOutcome(
        self, request: training_pb2.RecordOutcomeRequest, context: grpc.ServicerContext
    ) -> training_pb2.RecordOutcomeResponse:
        model = self._catalog.get(request.model)
        if not request.HasField("outcome"):
            raise InvalidArgument.fields([FieldError("outcome", "required")])
        record, errors = convert.outcome_from_proto(request.outcome, self._ctx.now_us(), "outcome", "api")
        duplicate, since = self._ingest.record_one(model, Candidate(record, errors))
        return training_pb2.RecordOutcomeResponse(
            outcome_id=record.outcome_id, duplicate=duplicate, labels_since_training=since
        )

    def ImportOutcomes(
        self, request_iterator: Iterator[training_pb2.ImportOutcomesRequest], context: grpc.ServicerContext
    ) -> training_pb2.ImportOutcomesResponse:
        session: ImportSession | None = None
        try:
            for n, message in enumerate(request_iterator):
                if session is None:
                    if not message.model:
                        raise InvalidArgument.fields([FieldError("model", "required in the first message")])
                    session = self._ingest.session(self._catalog.get(message.model))
                elif message.model and message.model != session.model.name:
                    raise InvalidArgument.fields(
                        [
                            FieldError(
                                "model",
                                f"message {n} names {message.model!r}; the stream is for {session.model.name!r}",
                            )
                        ]
                    )
                rows = len(message.outcomes) + max(0, message.columns.features.row_count)
                if rows > MAX_BATCH_ROWS:
                    raise ResourceExhausted(
                        f"message {n} carries {rows} outcomes; at most {MAX_BATCH_ROWS} per message",
                        reason="BATCH_TOO_LARGE",
                    )
                now = self._ctx.now_us()
                cands = [Candidate(*convert.outcome_from_proto(o, now, "outcome", "import")) for o in message.outcomes]
                if message.HasField("columns"):
                    cands += [
                        Candidate(record, errors, checked=True)
                        for record, errors in convert_training.outcomes_from_columns(
                            message.columns, session.model.schema, now, "import"
                        )
                    ]
                session.add(cands)
        except BaseException:
            if session is not None:
                session.abandon()
            raise
        report = session.finish() if session is not None else IngestReport()
        return training_pb2.ImportOutcomesResponse(
            received=report.received,
            accepted=report.accepted,
            duplicates=report.duplicates,
            rejected=report.rejected,
            errors=[common_pb2.RowError(index=i, id=ident, field=f, reason=r) for i, ident, f, r in report.errors],
            errors_truncated=report.errors_truncated,
        )

    # --- training runs ----------------------------------------------------

    def StartTraining(
        self, request: training_pb2.StartTrainingRequest, context: grpc.ServicerContext
    ) -> training_pb2.StartTrainingResponse:
        model = self._catalog.get(request.model)
        kind = convert.enum_from_proto(training_pb2.TrainingKind, "TRAINING_KIND_", request.kind, "kind") or "full"
        families = tuple(
            convert.enum_from_proto(registry_pb2.ModelFamily, "MODEL_FAMILY_", f, "families", False)
            for f in request.families
        )
        split = convert.enum_from_proto(registry_pb2.SplitStrategy, "SPLIT_STRATEGY_", request.split, "split")
        run = self._runner.start(
            model, kind=kind, trigger="manual", families=families, split=split, description=request.description
        )
        return training_pb2.StartTrainingResponse(run=convert_training.run_to_proto(model.name, run))

    def GetTrainingRun(
        self, request: training_pb2.GetTrainingRunRequest, context: grpc.ServicerContext
    ) -> training_pb2.GetTrainingRunResponse:
        run = self._runner.get(request.run_id)
        return training_pb2.GetTrainingRunResponse(
            run=convert_training.run_to_proto(self._catalog.by_id(run.model_id).name, run)
        )

    def ListTrainingRuns(
        self, request: training_pb2.ListTrainingRunsRequest, context: grpc.ServicerContext
    ) -> training_pb2.ListTrainingRunsResponse:
        model = self._catalog.get(request.model) if request.model else None
        state = convert.enum_from_proto(training_pb2.TrainingRunState, "TRAINING_RUN_STATE_", request.state, "state")
        if request.page_size < 0:
            raise InvalidArgument.fields([FieldError("page_size", "must not be negative")])
        size = min(request.page_size or 50, 500)
        before = None
        token = convert.decode_token(request.page_token)
        if token:
            created, _, position = token.partition("/")
            c, p = convert.parse_int64(created), convert.parse_int64(position)
            if c is None or p is None:
                raise InvalidArgument.fields([FieldError("page_token", "not a page token this server issued")])
            before = (c, p)
        rows = self._runner.runs.list(model.id if model else None, state, before, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        names = {m.id: m.name for m in self._catalog.all()}
        last = f"{rows[-1].run.created_us}/{rows[-1].position}" if more else ""
        return training_pb2.ListTrainingRunsResponse(
            runs=[convert_training.run_to_proto(names.get(r.run.model_id, ""), r.run) for r in rows],
            next_page_token=convert.encode_token(last),
        )

    def CancelTrainingRun(
        self, request: training_pb2.CancelTrainingRunRequest, context: grpc.ServicerContext
    ) -> training_pb2.CancelTrainingRunResponse:
        run = self._runner.cancel(request.run_id)
        return training_pb2.CancelTrainingRunResponse(
            run=convert_training.run_to_proto(self._catalog.by_id(run.model_id).name, run)
        )

    def WatchTrainingRun(
        self, request: training_pb2.WatchTrainingRunRequest, context: grpc.ServicerContext
    ) -> Iterator[training_pb2.WatchTrainingRunResponse]:
        run = self._runner.get(request.run_id)
        name = self._catalog.by_id(run.model_id).name
        for event in self._runner.watch(request.run_id, context.is_active):
            msg = training_pb2.WatchTrainingRunResponse(
                phase=convert.enum_to_proto(training_pb2.TrainingPhase, "TRAINING_PHASE_", event.phase),
                family=convert.enum_to_proto(registry_pb2.ModelFamily, "MODEL_FAMILY_", event.family),
                iteration=event.iteration,
                loss=event.loss,
                message=event.message,
                time=convert.us_to_ts(event.time_us),
            )
            if event.metrics is not None:
                msg.validation_metrics.CopyFrom(convert.metrics_to_proto(event.metrics.to_dict()))
            if event.final is not None:
                msg.run.CopyFrom(convert_training.run_to_proto(name, event.final))
            yield msg
