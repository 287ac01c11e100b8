"""predictions: the prediction log (served here, or logged by clients)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson
import structlog

from .batchcodec import decode_probabilities, value_at
from .database import Database
from .segments import LostPayload, read_columns

log = structlog.get_logger("sahayak_rpc.predictions")
_COLUMNS = (
    "prediction_id",
    "model_id",
    "version",
    "features_json",
    "probability",
    "label",
    "created_us",
    "entities_json",
    "source",
)
_BATCH_COLUMNS = (
    "batch_id",
    "model_id",
    "version",
    "row_count",
    "columns_data",
    "probabilities_data",
    "threshold",
    "created_us",
    "source",
)
_CREATED: Final = 6
assert _COLUMNS[_CREATED] == "created_us"

# A prediction to log, in _COLUMNS' order: (prediction_id, model_id, version, features_json, probability, label,
# created_us, entities_json, source). A plain tuple: the log makes one per served row, and a NamedTuple would
# cost several times a tuple's making on that thread (the store reads only created_us of it, by _CREATED).
PredictionRow = tuple[str, int, int, str, float, int, int, str | None, str]


class BatchRow(NamedTuple):
    """A logged batch to store (one per batch: named), its data encoded by store.batchcodec."""

    batch_id: str
    model_id: int
    version: int
    row_count: int
    columns_data: bytes
    probabilities_data: bytes
    threshold: float
    created_us: int
    source: str


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """A logged prediction, served alone or a row of a batch (``prediction_id`` "batch_id:index")."""

    prediction_id: str
    model_id: int
    version: int
    features_json: str | None  # None for a batch row whose features are lost (store/segments.py)
    probability: float
    label: int
    created_us: int
    entities_json: str | None
    source: str


@dataclass(frozen=True, slots=True)
class SegmentTotals:
    """The log segments on disk: how many files, and the bytes of logged features in them."""

    files: int
    bytes: int


def batch_row(columns: dict[str, Any], i: int) -> dict[str, Any]:
    """Row ``i`` of a logged batch's decoded columns (missing values left out)."""
    row = {}
    for name, values in columns.items():
        if values is None:  # a column of an empty batch (older JSON rows)
            continue
        value = value_at(values, i)
        if value is not None:
            row[name] = value
    return row


class PredictionRepository:
    """The prediction log: single predictions and whole batches (their features in log segments beside a
    SQLite database), their retention, and looking one up by id."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert_many(self, rows: Sequence[PredictionRow], durable: bool = True) -> None:
        """Rows as (prediction_id, model_id, version, features_json, probability, label, created_us, entities_json, source)."""
        self._db.prepare_partitions("predictions", [r[_CREATED] for r in rows])
        with self._db.write(durable) as conn:
            conn.copy_rows("predictions", _COLUMNS, rows)

    def insert_batches(self, rows: Sequence[BatchRow], durable: bool = True) -> None:
        """The batches' data encoded by store.batchcodec. With log segments (store/segments.py), the features are
        written there and the row keeps a reference: inside the write transaction, so that retention
        (``purge_segments``) never sees a segment between its bytes and the rows that refer to them."""
        segments = self._db.segments if self._db.batches_to_segments else None
        self._db.prepare_partitions("prediction_batches", [r.created_us for r in rows])
        with self._db.write(durable) as conn:
            if segments is not None:
                newest: dict[int, tuple[int, int]] = {}  # per segment: (newest created_us, bytes)
                stored = []
                for row in rows:
                    ref, number = segments.append(row.columns_data, row.created_us)
                    newest_us, size = newest.get(number, (0, 0))
                    newest[number] = (max(newest_us, row.created_us), size + len(row.columns_data))
                    stored.append(row._replace(columns_data=ref))
                rows = stored
                conn.executemany(
                    "INSERT INTO log_segments (segment, newest_us, bytes) VALUES (?, ?, ?) ON CONFLICT (segment)"
                    " DO UPDATE SET newest_us = max(newest_us, excluded.newest_us), bytes = bytes + excluded.bytes",
                    [(number, t, size) for number, (t, size) in newest.items()],
                )
            conn.copy_rows("prediction_batches", _BATCH_COLUMNS, rows)

    def prepare_ahead(self, now_us: int, days: int = 3) -> None:
        """Make the prediction log ready for the coming days (partitions on PostgreSQL; nothing to do on
        SQLite), so that the first writes of a day do not wait for it."""
        times = [now_us + k * 86_400_000_000 for k in range(days + 1)]
        for table in ("predictions", "prediction_batches"):
            self._db.prepare_partitions(table, times)

    def purge_segments(self, before_us: int) -> int:
        """Delete the log segments whose every record is older than ``before_us`` (retention has deleted
        their rows already); returns how many files went."""
        segments = self._db.segments
        expired = "SELECT 1 FROM log_segments WHERE newest_us < ? LIMIT 1"
        if segments is None or self._db.reader().execute(expired, (before_us,)).fetchone() is None:
            return 0  # (most health checks: no write transaction, no fsync)
        with self._db.write() as conn:
            old = [n for (n,) in conn.execute("SELECT segment FROM log_segments WHERE newest_us < ?", (before_us,))]
            gone = segments.remove(old)
            conn.executemany("DELETE FROM log_segments WHERE segment = ?", [(n,) for n in gone])
        return len(gone)

    def segment_totals(self) -> SegmentTotals:
        """How many log segments there are, and the bytes of features they hold."""
        count, size = self._db.reader().execute("SELECT count(*), coalesce(sum(bytes), 0) FROM log_segments").fetchone()
        return SegmentTotals(int(count), int(size))

    def count(self, model_id: int) -> int:
        """Logged predictions of the model, batch rows included."""
        conn = self._db.reader()
        single = conn.execute("SELECT count(*) FROM predictions WHERE model_id = ?", (model_id,)).fetchone()[0]
        batched = conn.execute(
            "SELECT coalesce(sum(row_count), 0) FROM prediction_batches WHERE model_id = ?", (model_id,)
        ).fetchone()[0]
        return int(single) + int(batched)

    def get(self, prediction_id: str) -> StoredPrediction | None:
        """The logged prediction with this id: a single one, or row i of a batch ("<batch id>:i"); None when
        there is none. A batch row whose features are lost comes back with ``features_json`` None."""
        conn = self._db.reader()
        row = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM predictions WHERE prediction_id = ?", (prediction_id,)
        ).fetchone()
        if row is not None:
            return StoredPrediction(*row)
        if ":" not in prediction_id:
            return None
        batch_id, _, index = prediction_id.rpartition(":")
        if not index.isdigit():
            return None
        b = conn.execute(
            "SELECT model_id, version, row_count, columns_data, probabilities_data, threshold, created_us, source"
            " FROM prediction_batches WHERE batch_id = ?",
            (batch_id,),
        ).fetchone()
        if b is None:
            return None
        model_id, version, row_count, columns_data, probabilities_data, threshold, created_us, source = b
        i = int(index)
        if i >= row_count:
            return None
        try:
            features: str | None = orjson.dumps(batch_row(read_columns(self._db.segments, columns_data), i)).decode()
        except LostPayload as exc:
            log.warning("predictions.features_lost", prediction_id=prediction_id, error=str(exc))
            features = None
        prob = decode_probabilities(probabilities_data)[i]
        return StoredPrediction(
            prediction_id, model_id, version, features, prob, int(prob >= threshold), created_us, None, source
        )


class SecretRepository:
    """Secrets the replicas share (the artifact signing key), stored in the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_or_create(self, name: str, make: Any) -> bytes:
        """The secret ``name``; made by ``make()`` and stored if it did not exist. Replicas starting
        together all get the one that was stored first."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, make())
            )
            return bytes(conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0])
