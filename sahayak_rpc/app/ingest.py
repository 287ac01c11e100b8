"""Taking in labelled outcomes: validation against the schema, durable storage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import AlreadyExists, InvalidArgument, ServiceError
from ..ingest import IngestReport, OutcomeRecord
from ..schema import FieldError
from ..store import ModelRecord, events
from ..store.outcomes import InsertResult, Totals
from .context import AppContext

# An open import stream holds automatic training off for this long past each batch (so a stream
# whose replica died stops holding it).
IMPORT_LEASE_US = 60_000_000


@dataclass(slots=True)
class Candidate:
    """An outcome as the api layer parsed it, with any parse errors."""

    record: OutcomeRecord
    errors: list[FieldError]
    # The features were already checked against the schema (columnar batches).
    checked: bool = False


class Ingest:
    """Storing outcomes: one at a time, or a stream's batches through an ImportSession; wakes the
    scheduler when enough new labels for an incremental update are stored, and holds automatic training
    off while an import is open."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        # Called when enough new labels for an incremental update are stored (this replica's scheduler).
        self.on_threshold: Callable[[], None] | None = None
        self._importing: dict[int, int] = {}  # open import streams per model, on this replica
        self._leases: dict[int, int] = {}  # the import lease this replica wrote last, per model
        # Commits import batches while the RPC thread parses the next one.
        self._writer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-writer")

    def labels_since_training(self, model: ModelRecord) -> int:
        """Labels stored since the latest training run started reading them (any replica's)."""
        return self._ctx.outcomes.totals(model.id).since_training

    def _stored(self, model: ModelRecord, totals: Totals, added: int) -> int:
        """After a commit that stored ``added`` outcomes: wake the scheduler when the model has enough
        new labels for an incremental update. Returns the labels since training."""
        since = totals.since_training
        t = model.settings.training
        every = t.incremental_every
        if added and every and since >= every and t.schedule_enabled:
            if self.on_threshold is not None:
                self.on_threshold()
            if since - added < every:  # this commit crossed the line: tell the leader, wherever it runs
                self._ctx.events.append(events.LABELS, self._ctx.now_us(), model.id)
        return since

    def record_one(self, model: ModelRecord, cand: Candidate) -> tuple[bool, int]:
        """Store one outcome; returns (duplicate, labels since training)."""
        errors = cand.errors + model.schema.validate_row(cand.record.features, prefix="outcome.features")
        if errors:
            raise InvalidArgument.fields(errors)
        stored = self._ctx.outcomes.insert(model.id, [cand.record], self._ctx.now_us())
        [result] = stored.results
        if result is InsertResult.CONFLICT:
            raise AlreadyExists(
                f"outcome {cand.record.outcome_id!r} already exists with different content",
                reason="OUTCOME_ID_CONFLICT",
            )
        return result is InsertResult.DUPLICATE, self._stored(
            model, stored.totals, int(result is InsertResult.INSERTED)
        )

    def prepare(
        self, model: ModelRecord, cands: Sequence[Candidate], first_index: int, report: IngestReport
    ) -> PreparedBatch:
        """Check a batch's rows; the bad ones go into ``report``, the good ones come back."""
        batch = PreparedBatch()
        validate = model.schema.validate_row
        for i, cand in enumerate(cands):
            index = first_index + i
            errors = cand.errors or ([] if cand.checked else validate(cand.record.features, "outcome.features"))
            if errors:
                report.reject(index, cand.record.outcome_id, errors[0].field, errors[0].reason)
                continue
            cand.record.encoded()  # here, on the caller's thread, while the writer stores the last batch
            batch.records.append(cand.record)
            batch.indices.append(index)
        report.received += len(cands)
        return batch

    def store(self, model: ModelRecord, batch: PreparedBatch, importing: bool = False) -> IngestReport:
        """Commit a prepared batch in one transaction; returns what happened to its rows. ``importing``:
        more batches of the stream follow (automatic training waits for the end of the import)."""
        report = IngestReport()
        if not batch.records:
            return report
        now = self._ctx.now_us()
        lease = now + IMPORT_LEASE_US if importing else None
        stored = self._ctx.outcomes.insert(model.id, batch.records, now, importing_until_us=lease)
        if lease is not None:
            with self._lock:
                self._leases[model.id] = lease
        for index, rec, result in zip(batch.indices, batch.records, stored.results, strict=True):
            if result is InsertResult.INSERTED:
                report.accepted += 1
            elif result is InsertResult.DUPLICATE:
                report.duplicates += 1
            else:
                report.reject(index, rec.outcome_id, "outcome_id", "already exists with different content")
        self._stored(model, stored.totals, report.accepted)
        return report

    def session(self, model: ModelRecord) -> ImportSession:
        """Open an import stream for the model; automatic training waits until it (and every other open
        one) finishes or is abandoned."""
        with self._lock:
            self._importing[model.id] = self._importing.get(model.id, 0) + 1
        return ImportSession(self, model, self._writer)

    def importing(self, model: ModelRecord) -> bool:
        """An import stream for the model is still open (on this replica, or one on another replica sent a
        batch within the lease): automatic training waits for it."""
        with self._lock:
            if self._importing.get(model.id, 0) > 0:
                return True
        return self._ctx.outcomes.totals(model.id).importing_until_us > self._ctx.now_us()

    def session_ended(self, model: ModelRecord) -> None:
        """An import session of the model finished or was abandoned (ImportSession calls this)."""
        with self._lock:
            left = self._importing[model.id] = self._importing.get(model.id, 1) - 1
            lease = self._leases.pop(model.id, None) if left <= 0 else None
        if lease is not None:
            try:
                self._ctx.outcomes.import_ended(model.id, lease)
            except ServiceError:  # the lease runs out by itself
                pass
        if self.on_threshold is not None:
            self.on_threshold()

    def close(self) -> None:
        """Wait for in-flight import commits, then stop the writer threads."""
        self._writer.shutdown(wait=True)


@dataclass
class PreparedBatch:
    """A batch's rows that passed the checks, with each one's index in the stream."""

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
        """Check a batch (bad rows go into ``report``) and hand the good ones to the writer, after waiting
        for the previous batch's commit; raises what that commit raised (e.g. Unavailable)."""
        batch = self._ingest.prepare(self.model, cands, self.rows, self.report)
        self.rows += len(cands)
        self._settle()
        self._pending = self._writer.submit(self._ingest.store, self.model, batch, True)

    def _settle(self) -> None:
        if self._pending is not None:
            done, self._pending = self._pending, None
            self.report.merge(done.result())

    def finish(self) -> IngestReport:
        """Wait for the last commit; the report's errors come back in row order."""
        try:
            self._settle()
        finally:
            self._ingest.session_ended(self.model)
        self.report.errors.sort(key=lambda e: e[0])
        return self.report

    def abandon(self) -> None:
        """The stream failed: let an in-flight commit finish (it is durable and idempotent)."""
        if self._pending is not None:
            self._pending.exception()
            self._pending = None
        self._ingest.session_ended(self.model)
