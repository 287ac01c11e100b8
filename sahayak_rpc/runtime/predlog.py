"""The prediction-log writer: batches inserts off the request path.

Requests hand over their predictions with ``submit`` (a deque append, no
I/O); one thread turns them into rows and writes them in batches. The queue
is bounded in rows: past the bound, predictions are dropped from the log and
counted, rather than slowing the replies. ``close`` flushes what is queued.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import structlog

from ..errors import ServiceError
from ..store import PredictionRepository
from ..store.predictions import BatchRow, PredictionRow

log = structlog.get_logger("sahayak_rpc.predlog")
Expand = Callable[[], Iterable[PredictionRow]]


class PredictionLog:
    def __init__(
        self,
        repo: PredictionRepository,
        max_rows: int = 200_000,
        batch_rows: int = 2000,
        flush_interval_s: float = 0.05,
        enabled: bool = True,
    ) -> None:
        self._repo = repo
        self.enabled = enabled
        self._queue: collections.deque[tuple[int, Any]] = collections.deque()
        self._max_rows = max_rows
        self._batch_rows = batch_rows
        self._interval = flush_interval_s
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queued_rows

    def submit_one(
        self,
        prediction_id: str,
        model_id: int,
        version: int,
        row: dict[str, Any] | Callable[[], dict[str, Any]],
        probability: float,
        label: bool,
        created_us: int,
        entities: dict[str, str] | None,
        source: str = "served",
    ) -> None:
        """One prediction; ``row`` may be a function that makes it, called on the writer thread."""
        self._put(1, (prediction_id, model_id, version, row, probability, label, created_us, entities, source))

    def submit_batch(self, count: int, encode: Callable[[], BatchRow]) -> None:
        """A whole columnar batch as one log record; ``encode()`` runs on the writer thread."""
        self._put(count, ("batch", encode))

    def submit_many(self, count: int, expand: Expand) -> None:
        """``count`` rows that ``expand()`` yields later, on the writer thread, as row tuples."""
        self._put(count, expand)

    def _put(self, rows: int, item: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._queued_rows + rows > self._max_rows:
                self.dropped += rows
                return
            self._queued_rows += rows
            self._queue.append((rows, item))

    def _drain(self) -> tuple[list[PredictionRow], list[BatchRow]]:
        out: list[PredictionRow] = []
        batches: list[BatchRow] = []
        dumps = orjson.dumps
        while self._queue and len(out) < self._batch_rows and len(batches) < 64:
            rows, item = self._queue.popleft()
            with self._lock:
                self._queued_rows -= rows
            try:
                if isinstance(item, tuple) and item[0] == "batch":
                    batches.append(item[1]())
                elif callable(item):
                    out.extend(item())
                else:
                    pid, model_id, version, row, prob, label, created, entities, source = item
                    if row.__class__ is not dict:
                        row = row()
                    out.append(
                        (
                            pid,
                            model_id,
                            version,
                            dumps(row).decode(),
                            prob,
                            int(label),
                            created,
                            dumps(entities).decode() if entities else None,
                            source,
                        )
                    )
            except Exception:  # a bug of ours: lose this item, not the writer
                self.dropped += rows
                log.exception("predlog.encode_crashed", rows=rows)
        return out, batches

    def flush(self) -> None:
        """Write everything queued so far; returns when it is in the database."""
        # One flusher at a time: a caller's flush waits for the writer thread's
        # cycle in progress, whose items already left the queue.
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        while self._queue:
            rows, batches = self._drain()
            count = len(rows) + sum(b.row_count for b in batches)
            try:
                if rows:
                    # Logged after the reply, promised to no one: no fsync per flush
                    # (the next durable commit or checkpoint carries it to disk).
                    self._repo.insert_many(rows, durable=False)
                if batches:
                    self._repo.insert_batches(batches, durable=False)
                self.written += count
            except ServiceError as exc:
                # The database refused (full, locked): these rows are lost to the log.
                self.dropped += count
                log.warning("predlog.write_failed", rows=count, error=exc.message)
            except Exception:
                # A bug of ours: log it and drop these rows, but keep the writer alive,
                # or every later prediction would go unlogged.
                self.dropped += count
                log.exception("predlog.write_crashed", rows=count)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self._interval)
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()
