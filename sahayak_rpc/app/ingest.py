"""Taking in labelled outcomes: validation against the schema, durable storage."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import AlreadyExists, InvalidArgument
from ..ingest import IngestReport, OutcomeRecord
from ..schema import FieldError
from ..store import ModelRecord
from ..store.outcomes import InsertResult
from .context import AppContext


@dataclass(frozen=True)
class Candidate:
    """An outcome as the api layer parsed it, with any parse errors."""

    record: OutcomeRecord
    errors: list[FieldError]
    # The features were already checked against the schema (columnar batches).
    checked: bool = False


class Ingest:
    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        # Labels per model since its last training run: derived from the
        # store at start, so nothing here matters only in memory.
        self._since_training: dict[int, int] = {}

    def labels_since_training(self, model: ModelRecord) -> int:
        with self._lock:
            if model.id not in self._since_training:
                self._since_training[model.id] = self._ctx.outcomes.count(model.id)
            return self._since_training[model.id]

    def _added(self, model: ModelRecord, n: int) -> int:
        current = self.labels_since_training(model)
        with self._lock:
            self._since_training[model.id] = current + n
            return current + n

    def record_one(self, model: ModelRecord, cand: Candidate) -> tuple[bool, int]:
        """Store one outcome; returns (duplicate, labels since training)."""
        errors = cand.errors + model.schema.validate_row(cand.record.features, prefix="outcome.features")
        if errors:
            raise InvalidArgument.fields(errors)
        self.labels_since_training(model)  # count what was there before this insert
        [result] = self._ctx.outcomes.insert(model.id, [cand.record], self._ctx.now_us())
        if result is InsertResult.CONFLICT:
            raise AlreadyExists(
                f"outcome {cand.record.outcome_id!r} already exists with different content",
                reason="OUTCOME_ID_CONFLICT",
            )
        if result is InsertResult.DUPLICATE:
            return True, self.labels_since_training(model)
        return False, self._added(model, 1)

    def record_batch(self, model: ModelRecord, cands: Sequence[Candidate], first_index: int, report: IngestReport) -> None:
        """Store the valid rows of a batch (one commit); report the rest per row."""
        good: list[OutcomeRecord] = []
        good_index: list[int] = []
        validate = model.schema.validate_row
        for i, cand in enumerate(cands):
            index = first_index + i
            errors = cand.errors or ([] if cand.checked else validate(cand.record.features, "outcome.features"))
            if errors:
                report.reject(index, cand.record.outcome_id, errors[0].field, errors[0].reason)
                continue
            good.append(cand.record)
            good_index.append(index)
        report.received += len(cands)
        if not good:
            return
        self.labels_since_training(model)
        results = self._ctx.outcomes.insert(model.id, good, self._ctx.now_us())
        inserted = 0
        for index, rec, result in zip(good_index, good, results, strict=True):
            if result is InsertResult.INSERTED:
                inserted += 1
            elif result is InsertResult.DUPLICATE:
                report.duplicates += 1
            else:
                report.reject(index, rec.outcome_id, "outcome_id", "already exists with different content")
        report.accepted += inserted
        self._added(model, inserted)
