"""Recording feedback, turning feedback with an outcome into training data, summaries."""

from __future__ import annotations

import orjson

from ..errors import AlreadyExists, InvalidArgument
from ..feedback import FeedbackRecord, SchemeSummary, summarise
from ..ingest import IngestReport, OutcomeRecord
from ..schema import FieldError, Row
from ..store import ModelRecord
from ..store.feedback import FeedbackRepository
from .context import AppContext
from .ingest import Candidate, Ingest


class Feedback:
    """Recording feedback, and turning feedback that carries an outcome into a training outcome
    (through Ingest); per-scheme summaries."""

    def __init__(self, ctx: AppContext, ingest: Ingest) -> None:
        self._ctx = ctx
        self._ingest = ingest
        self.repo = FeedbackRepository(ctx.db)

    def _features_for_outcome(
        self, model: ModelRecord, rec: FeedbackRecord, prefix: str
    ) -> tuple[Row, list[FieldError]]:
        """The scored row an outcome needs: the feedback's own features, or the logged prediction's."""
        if rec.features:
            return rec.features, model.schema.validate_row(rec.features, prefix=f"{prefix}.features")
        if rec.prediction_id:
            logged = self._ctx.predictions.get(rec.prediction_id)
            if logged is not None and logged.model_id == model.id:
                if logged.features_json is None:  # a logged batch whose features are gone (store/segments.py)
                    return {}, [
                        FieldError(
                            f"{prefix}.features",
                            f"the features logged with prediction {rec.prediction_id!r} are lost"
                            " (a damaged or missing log segment): give them",
                        )
                    ]
                return orjson.loads(logged.features_json), []
        return {}, [
            FieldError(
                f"{prefix}.features",
                "an outcome needs the scored features: give them, or the prediction_id of a logged prediction",
            )
        ]

    def _check(self, model: ModelRecord, rec: FeedbackRecord, errors: list[FieldError], prefix: str) -> Row:
        if rec.features and not rec.outcome:
            errors += model.schema.validate_row(rec.features, prefix=f"{prefix}.features", required=False)
        if not rec.outcome:
            return {}
        features, problems = self._features_for_outcome(model, rec, prefix)
        errors += problems
        return features

    def _outcome(self, model: ModelRecord, rec: FeedbackRecord, features: Row) -> Candidate:
        entities = {k: v for k, v in (("artisan_id", rec.artisan_id), ("scheme_id", rec.scheme_id)) if v}
        return Candidate(
            OutcomeRecord(
                outcome_id=rec.training_outcome_id,
                features=features,
                label=rec.outcome == "approved",
                occurred_at_us=rec.occurred_at_us,
                entities=entities,
                metadata={"feedback_id": rec.feedback_id, "interaction": rec.interaction},
                prediction_id=rec.prediction_id,
                source="feedback",
                occurred_at_given=rec.occurred_at_given,
            ),
            [],
            checked=True,
        )

    def record(self, model: ModelRecord, rec: FeedbackRecord, errors: list[FieldError]) -> tuple[bool, str]:
        """Store one feedback; returns (duplicate, the training outcome's id or "")."""
        features = self._check(model, rec, errors, "feedback")
        if errors:
            raise InvalidArgument.fields(errors)
        [result] = self.repo.insert(model.id, [rec], self._ctx.now_us())
        if result == "conflict":
            raise AlreadyExists(
                f"feedback {rec.feedback_id!r} already exists with different content", reason="FEEDBACK_ID_CONFLICT"
            )
        if rec.outcome:
            # Also on a duplicate: a crash between the two writes must not lose the outcome.
            self._ingest.record_one(model, self._outcome(model, rec, features))
        return result == "duplicate", rec.training_outcome_id if rec.outcome else ""

    def record_batch(
        self, model: ModelRecord, items: list[tuple[int, FeedbackRecord, list[FieldError]]], report: IngestReport
    ) -> int:
        """Store a batch's valid rows (index, record, parse errors), report the others; returns outcomes created."""
        good: list[tuple[int, FeedbackRecord, Row]] = []
        for index, rec, errors in items:
            features = self._check(model, rec, errors, "feedback")
            report.received += 1
            if errors:
                report.reject(index, rec.feedback_id, errors[0].field, errors[0].reason)
            else:
                good.append((index, rec, features))
        if not good:
            return 0
        results = self.repo.insert(model.id, [g[1] for g in good], self._ctx.now_us())
        outcomes = []
        for (index, rec, features), result in zip(good, results, strict=True):
            if result == "conflict":
                report.reject(index, rec.feedback_id, "feedback_id", "already exists with different content")
                continue
            if result == "duplicate":
                report.duplicates += 1
            else:
                report.accepted += 1
            if rec.outcome:
                outcomes.append(self._outcome(model, rec, features))
        if not outcomes:
            return 0
        session = self._ingest.session(model)
        session.add(outcomes)
        done = session.finish()
        return done.accepted

    def summary(
        self, model: ModelRecord, start_us: int | None, end_us: int | None, scheme_id: str
    ) -> tuple[list[SchemeSummary], SchemeSummary]:
        """Counts per scheme and in total of the model's feedback that occurred in [start_us, end_us)
        (None: unbounded), of one scheme when ``scheme_id`` is given."""
        return summarise(self.repo.summary_rows(model.id, start_us, end_us, scheme_id))
