"""FeedbackService: RecordFeedback, ImportFeedback, GetFeedbackSummary."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.feedback import Feedback
from ..errors import InvalidArgument, ResourceExhausted, ServiceError
from ..feedback import FeedbackRecord, SchemeSummary
from ..ingest import MAX_TEXT_LEN, IngestReport, new_id
from ..schema import FieldError
from .._proto.sahayak.v1 import common_pb2, feedback_pb2, feedback_pb2_grpc
from . import convert

MAX_BATCH = 10_000


def _parse(f: feedback_pb2.Feedback, now_us: int, prefix: str) -> tuple[FeedbackRecord, list[FieldError]]:
    errors: list[FieldError] = []
    for name in ("feedback_id", "recommendation_id", "prediction_id", "artisan_id", "scheme_id"):
        convert.check_id(getattr(f, name), f"{prefix}.{name}", errors)
    interaction = (
        convert.enum_from_proto(feedback_pb2.Interaction, "INTERACTION_", f.interaction, f"{prefix}.interaction")
        if f.interaction in feedback_pb2.Interaction.values()
        else ""
    )
    if not interaction:
        errors.append(
            FieldError(f"{prefix}.interaction", "required: shown, viewed, clicked, saved, applied or dismissed")
        )
    outcome = ""
    if f.outcome:
        if f.outcome not in feedback_pb2.FeedbackOutcome.values():
            errors.append(FieldError(f"{prefix}.outcome", f"unknown value {f.outcome}"))
        else:
            outcome = feedback_pb2.FeedbackOutcome.Name(f.outcome)[len("FEEDBACK_OUTCOME_") :].lower()
    if not 0 <= f.rating <= 5:
        errors.append(FieldError(f"{prefix}.rating", "must be 1-5, or 0 for none"))
    if len(f.comment) > MAX_TEXT_LEN:
        errors.append(FieldError(f"{prefix}.comment", f"at most {MAX_TEXT_LEN} characters"))
    when = now_us
    given = f.HasField("occurred_at")
    if given and convert.check_timestamp(f.occurred_at, f"{prefix}.occurred_at", errors):
        when = convert.ts_to_us(f.occurred_at)
    record = FeedbackRecord(
        feedback_id=f.feedback_id or new_id(),
        interaction=interaction,
        occurred_at_us=when,
        recommendation_id=f.recommendation_id,
        prediction_id=f.prediction_id,
        artisan_id=f.artisan_id,
        scheme_id=f.scheme_id,
        outcome=outcome,
        rating=f.rating,
        comment=f.comment,
        features=convert.row_from_proto(f.features),
        occurred_at_given=given,
    )
    return record, errors


def _summary(s: SchemeSummary) -> feedback_pb2.SchemeFeedbackSummary:
    c = s.counts
    return feedback_pb2.SchemeFeedbackSummary(
        scheme_id=s.scheme_id,
        shown=c.get("shown", 0),
        viewed=c.get("viewed", 0),
        clicked=c.get("clicked", 0),
        saved=c.get("saved", 0),
        applied=c.get("applied", 0),
        dismissed=c.get("dismissed", 0),
        approved=c.get("approved", 0),
        rejected=c.get("rejected", 0),
        view_rate=s.rate("viewed", "shown"),
        click_rate=s.rate("clicked", "shown"),
        application_rate=s.rate("applied", "shown"),
        approval_rate=s.approval_rate,
        mean_rating=s.mean_rating,
    )


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, feedback: Feedback) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._feedback = feedback

    def RecordFeedback(
        self, request: feedback_pb2.RecordFeedbackRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.RecordFeedbackResponse:
        if not request.HasField("feedback"):
            raise InvalidArgument.fields([FieldError("feedback", "required")])
        model = self._catalog.get(request.feedback.model, "feedback.model")
        record, errors = _parse(request.feedback, self._ctx.now_us(), "feedback")
        duplicate, outcome_id = self._feedback.record(model, record, errors)
        return feedback_pb2.RecordFeedbackResponse(
            feedback_id=record.feedback_id, duplicate=duplicate, outcome_id=outcome_id
        )

    def ImportFeedback(
        self, request_iterator: Iterator[feedback_pb2.ImportFeedbackRequest], context: grpc.ServicerContext
    ) -> feedback_pb2.ImportFeedbackResponse:
        report = IngestReport()
        created = 0
        index = 0
        for message in request_iterator:
            if len(message.feedback) > MAX_BATCH:
                raise ResourceExhausted(f"at most {MAX_BATCH} feedback per message", reason="BATCH_TOO_LARGE")
            now = self._ctx.now_us()
            by_model: dict[str, list[tuple[int, FeedbackRecord, list[FieldError]]]] = {}
            for f in message.feedback:
                record, errors = _parse(f, now, "feedback")
                by_model.setdefault(f.model, []).append((index, record, errors))
                index += 1
            for name, items in by_model.items():
                try:
                    model = self._catalog.get(name, "feedback.model")
                except ServiceError as exc:  # an unknown model rejects its rows, not the stream
                    for i, record, _ in items:
                        report.received += 1
                        report.reject(i, record.feedback_id, "feedback.model", exc.message)
                    continue
                created += self._feedback.record_batch(model, items, report)
        return feedback_pb2.ImportFeedbackResponse(
            received=report.received,
            accepted=report.accepted,
            duplicates=report.duplicates,
            rejected=report.rejected,
            outcomes_created=created,
            errors=[common_pb2.RowError(index=i, id=ident, field=f, reason=r) for i, ident, f, r in report.errors],
        )

    def GetFeedbackSummary(
        self, request: feedback_pb2.GetFeedbackSummaryRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.GetFeedbackSummaryResponse:
        model = self._catalog.get(request.model)
        start, end = convert.time_window(request.window, "window")
        schemes, total = self._feedback.summary(model, start, end, request.scheme_id)
        return feedback_pb2.GetFeedbackSummaryResponse(schemes=[_summary(s) for s in schemes], total=_summary(total))
