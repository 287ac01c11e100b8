"""predictions: the prediction log (served here, or logged by clients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .batchcodec import decode_columns, decode_probabilities, value_at
from .db import Database

_INSERT = ("INSERT INTO predictions (prediction_id, model_id, version, features_json, probability, label,"
           " created_us, entities_json, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


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
        with self._db.write(durable) as conn:
            conn.executemany(_INSERT, rows)

    def insert_batches(self, rows: Sequence[tuple[Any, ...]], durable: bool = True) -> None:
        """Rows as (batch_id, model_id, version, row_count, columns_data, probabilities_data, threshold, created_us,
        source), the data encoded by store.batchcodec."""
        with self._db.write(durable) as conn:
            conn.executemany(
                "INSERT INTO prediction_batches (batch_id, model_id, version, row_count, columns_data,"
                " probabilities_data, threshold, created_us, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def count(self, model_id: int) -> int:
        """Logged predictions of the model, batch rows included."""
        conn = self._db.reader()
        single = conn.execute("SELECT count(*) FROM predictions WHERE model_id = ?", (model_id,)).fetchone()[0]
        batched = conn.execute("SELECT coalesce(sum(row_count), 0) FROM prediction_batches WHERE model_id = ?",
                               (model_id,)).fetchone()[0]
        return int(single) + int(batched)

    def get(self, prediction_id: str) -> tuple[Any, ...] | None:
        """(prediction_id, model_id, version, features_json, probability, label, created_us, entities_json, source)."""
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
        features = batch_row(decode_columns(b[3]), i)
        prob = decode_probabilities(b[4])[i]
        return (prediction_id, b[0], b[1], orjson.dumps(features).decode(), prob, int(prob >= b[5]), b[6], None, b[7])


class SecretRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get_or_create(self, name: str, make: Any) -> bytes:
        with self._db.write() as conn:
            r = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            if r:
                return bytes(r[0])
            value = make()
            conn.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (name, value))
            return bytes(value)
