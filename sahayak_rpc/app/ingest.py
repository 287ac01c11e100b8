"""Taking in labelled outcomes: validation against the schema, durable storage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import AlreadyExists, InvalidArgument
from ..ingest import IngestReport, OutcomeRecord
from ..schema import FieldError
from ..store import ModelRecord
from ..store.outcomes import InsertResult
from .context import AppContext


@dataclass(slots=True)
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
        self.on_threshold: Callable[[], None] | None = None
        self._importing: dict[int, int] = {}
        # Commits import batches while the RPC thread parses the next one.
        self._writer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-writer")

    def labels_since_training(self, model: ModelRecord) -> int:
        with self._lock:
            if model.id not in self._since_training:
                self._since_training[model.id] = self._ctx.outcomes.count(model.id, after_seq=self._watermark(model.id))
            return self._since_training[model.id]

    def _watermark(self, model_id: int) -> int:
        return self._ctx.runs.latest_through_seq(model_id)

    def trained_through(self, model: ModelRecord, seq: int) -> None:
        """A run has read every outcome up to ``seq``: count labels from there."""
        since = self._ctx.outcomes.count(model.id, after_seq=seq)
        with self._lock:
            self._since_training[model.id] = since

    def _added(self, model: ModelRecord, n: int) -> int:
        self.labels_since_training(model)  # counted from the store if this is the first time
        with self._lock:  # read and write together: concurrent ingests must not lose counts
            total = self._since_training[model.id] = self._since_training[model.id] + n
        every = model.settings.training.incremental_every
        if n and every and total >= every and self.on_threshold is not None:
            self.on_threshold()  # enough new labels: the scheduler should look now
        return total

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

    def prepare(self, model: ModelRecord, cands: Sequence[Candidate], first_index: int, report: IngestReport) -> PreparedBatch:
        """Check a batch's rows; the bad ones go into ``report``, the good ones come back."""
        batch = PreparedBatch()
        validate = model.schema.validate_row
        for i, cand in enumerate(cands):
            index = first_index + i
            errors = cand.errors or ([] if cand.checked else validate(cand.record.features, "outcome.features"))
            if errors:
                report.reject(index, cand.record.outcome_id, errors[0].field, errors[0].reason)
                continue
            batch.records.append(cand.record)
            batch.indices.append(index)
        report.received += len(cands)
        return batch

    def store(self, model: ModelRecord, batch: PreparedBatch) -> IngestReport:
        """Commit a prepared batch in one transaction; returns what happened to its rows."""
        report = IngestReport()
        if not batch.records:
            return report
        self.labels_since_training(model)
        results = self._ctx.outcomes.insert(model.id, batch.records, self._ctx.now_us())
        for index, rec, result in zip(batch.indices, batch.records, results, strict=True):
            if result is InsertResult.INSERTED:
                report.accepted += 1
            elif result is InsertResult.DUPLICATE:
                report.duplicates += 1
            else:
                report.reject(index, rec.outcome_id, "outcome_id", "already exists with different content")
        self._added(model, report.accepted)
        return report

    def session(self, model: ModelRecord) -> ImportSession:
        with self._lock:
            self._importing[model.id] = self._importing.get(model.id, 0) + 1
        return ImportSession(self, model, self._writer)

    def importing(self, model: ModelRecord) -> bool:
        """An import stream for the model is still open: automatic training waits for it."""
        with self._lock:
            return self._importing.get(model.id, 0) > 0

    def _session_ended(self, model: ModelRecord) -> None:
        with self._lock:
            self._importing[model.id] = self._importing.get(model.id, 1) - 1
        if self.on_threshold is not None:
            self.on_threshold()

    def close(self) -> None:
        self._writer.shutdown(wait=True)


@dataclass
class PreparedBatch:
    records: list[OutcomeRecord] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)


class ImportSession:
    """One import stream: batch N commits on a writer thread while batch N+1 is parsed.

    SQLite releases the GIL while it writes and syncs, so parsing and storing
    overlap. At most one batch per session is in flight, so rows commit in order.
    """

    def __init__(self, ingest: Ingest, model: ModelRecord, writer: ThreadPoolExecutor) -> None:
        self._ingest = ingest
        self.model = model
        self._writer = writer
        self._pending: Future[IngestReport] | None = None
        self.report = IngestReport()
        self.rows = 0

    def add(self, cands: Sequence[Candidate]) -> None:
        batch = self._ingest.prepare(self.model, cands, self.rows, self.report)
        self.rows += len(cands)
        self._settle()
        self._pending = self._writer.submit(self._ingest.store, self.model, batch)

    def _settle(self) -> None:
        if self._pending is not None:
            done, self._pending = self._pending, None
            self.report.merge(done.result())

    def finish(self) -> IngestReport:
        """Wait for the last commit; the report's errors come back in row order."""
        try:
            self._settle()
        finally:
            self._ingest._session_ended(self.model)
        self.report.errors.sort(key=lambda e: e[0])
        return self.report

    def abandon(self) -> None:
        """The stream failed: let an in-flight commit finish (it is durable and idempotent)."""
        if self._pending is not None:
            self._pending.exception()
            self._pending = None
        self._ingest._session_ended(self.model)
