"""TrainingService: durable ingest of labelled outcomes (training runs come later)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.ingest import Candidate, ImportSession, Ingest
from ..errors import InvalidArgument, ResourceExhausted
from ..ingest import IngestReport
from ..schema import FieldError
from .._proto.sahayak.v1 import common_pb2, training_pb2, training_pb2_grpc
from . import convert

# One message of an import stream may carry at most this many outcomes.
MAX_BATCH_ROWS = 10_000


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, ingest: Ingest) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._ingest = ingest

    def RecordOutcome(self, request: training_pb2.RecordOutcomeRequest, context: grpc.ServicerContext) -> training_pb2.RecordOutcomeResponse:
        model = self._catalog.get(request.model)
        if not request.HasField("outcome"):
            raise InvalidArgument.fields([FieldError("outcome", "required")])
        record, errors = convert.outcome_from_proto(request.outcome, self._ctx.now_us(), "outcome", "api")
        duplicate, since = self._ingest.record_one(model, Candidate(record, errors))
        return training_pb2.RecordOutcomeResponse(
            outcome_id=record.outcome_id, duplicate=duplicate, labels_since_training=since
        )

    def ImportOutcomes(self, request_iterator: Iterator[training_pb2.ImportOutcomesRequest], context: grpc.ServicerContext) -> training_pb2.ImportOutcomesResponse:
        session: ImportSession | None = None
        try:
            for n, message in enumerate(request_iterator):
                if session is None:
                    if not message.model:
                        raise InvalidArgument.fields([FieldError("model", "required in the first message")])
                    session = self._ingest.session(self._catalog.get(message.model))
                elif message.model and message.model != session.model.name:
                    raise InvalidArgument.fields([FieldError(
                        "model", f"message {n} names {message.model!r}; the stream is for {session.model.name!r}")])
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
                        for record, errors in convert.outcomes_from_columns(
                            message.columns, session.model.schema, now, "import")
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
