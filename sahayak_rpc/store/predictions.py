"""predictions: the prediction log (served here, or logged by clients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from .batchcodec import decode_probabilities, value_at
from .database import Database
from .segments import LostPayload, read_columns

log = structlog.get_logger("sahayak_rpc.predictions")
_COLUMNS = ("prediction_id", "model_id", "version", "features_json", "probability", "label", "created_us",
            "entities_json", "source")
_BATCH_COLUMNS = ("batch_id", "model_id", "version", "row_count", "columns_data", "probabilities_data", "threshold",
                  "created_us", "source")


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
    def __init__(self, db: Database) -> None:
        self._db = db

    def insert_many(self, rows: Sequence[tuple[Any, ...]], durable: bool = True) -> None:
        """Rows as (prediction_id, model_id, version, features_json, probability, label, created_us, entities_json, source)."""
        self._db.prepare_partitions("predictions", [r[6] for r in rows])
        with self._db.write(durable) as conn:
            conn.copy_rows("predictions", _COLUMNS, rows)

    def insert_batches(self, rows: Sequence[tuple[Any, ...]], durable: bool = True) -> None:
        """Rows as (batch_id, model_id, version, row_count, columns_data, probabilities_data, threshold, created_us,
        source), the data encoded by store.batchcodec. With log segments (store/segments.py), the features are
        written there and the row keeps a reference: inside the write transaction, so that retention
        (``purge_segments``) never sees a segment between its bytes and the rows that refer to them."""
        segments = self._db.segments if self._db.batches_to_segments else None
        self._db.prepare_partitions("prediction_batches", [r[7] for r in rows])
        with self._db.write(durable) as conn:
            if segments is not None:
                newest: dict[int, tuple[int, int]] = {}
                stored = []
                for row in rows:
                    ref, number = segments.append(row[4], row[7])
                    seen = newest.get(number, (0, 0))
                    newest[number] = (max(seen[0], row[7]), seen[1] + len(row[4]))
                    stored.append((*row[:4], ref, *row[5:]))
                rows = stored
                conn.executemany(
                    "INSERT INTO log_segments (segment, newest_us, bytes) VALUES (?, ?, ?) ON CONFLICT (segment)"
                    " DO UPDATE SET newest_us = max(newest_us, excluded.newest_us), bytes = bytes + excluded.bytes",
                    [(number, t, size) for number, (t, size) in newest.items()])
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

    def segment_totals(self) -> tuple[int, int]:
        """(log segments, bytes of logged features in them)."""
        count, size = self._db.reader().execute("SELECT count(*), coalesce(sum(bytes), 0) FROM log_segments").fetchone()
        return int(count), int(size)

    def count(self, model_id: int) -> int:
        """Logged predictions of the model, batch rows included."""
        conn = self._db.reader()
        single = conn.execute("SELECT count(*) FROM predictions WHERE model_id = ?", (model_id,)).fetchone()[0]
        batched = conn.execute("SELECT coalesce(sum(row_count), 0) FROM prediction_batches WHERE model_id = ?",
                               (model_id,)).fetchone()[0]
        return int(single) + int(batched)

    def get(self, prediction_id: str) -> tuple[Any, ...] | None:
        """(prediction_id, model_id, version, features_json, probability, label, created_us, entities_json, source);
        features_json is None for a batch row whose features are lost (store/segments.py)."""
        conn = self._db.reader()
        row = conn.execute(
            "SELECT prediction_id, model_id, version, features_json, probability, label, created_us, entities_json,"
            " source FROM predictions WHERE prediction_id = ?", (prediction_id,)
        ).fetchone()
        if row is not None or ":" not in prediction_id:
            return row
        batch_id, _, index = prediction_id.rpartition(":")
        if not index.isdigit():
            return None
        b = conn.execute(
            "SELECT model_id, version, row_count, columns_data, probabilities_data, threshold, created_us, source"
            " FROM prediction_batches WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        i = int(index)
        if b is None or i >= b[2]:
            return None
        try:
            features: str | None = orjson.dumps(batch_row(read_columns(self._db.segments, b[3]), i)).decode()
        except LostPayload as exc:
            log.warning("predictions.features_lost", prediction_id=prediction_id, error=str(exc))
            features = None
        prob = decode_probabilities(b[4])[i]
        return (prediction_id, b[0], b[1], features, prob, int(prob >= b[5]), b[6], None, b[7])


class SecretRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get_or_create(self, name: str, make: Any) -> bytes:
        """The secret ``name``; made by ``make()`` and stored if it did not exist. Replicas starting
        together all get the one that was stored first."""
        with self._db.write() as conn:
            conn.execute("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, make()))
            return bytes(conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0])
