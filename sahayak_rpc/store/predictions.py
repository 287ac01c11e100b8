"""predictions: the prediction log (served here, or logged by clients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .db import Database

_INSERT = ("INSERT INTO predictions (prediction_id, model_id, version, features_json, probability, label,"
           " created_us, entities_json, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


class PredictionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def insert_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows as (prediction_id, model_id, version, features_json, probability, label, created_us, entities_json, source)."""
        with self._db.write() as conn:
            conn.executemany(_INSERT, rows)

    def count(self, model_id: int) -> int:
        r = self._db.reader().execute("SELECT count(*) FROM predictions WHERE model_id = ?", (model_id,)).fetchone()
        return int(r[0])

    def get(self, prediction_id: str) -> tuple[Any, ...] | None:
        return self._db.reader().execute(
            "SELECT prediction_id, model_id, version, features_json, probability, label, created_us, entities_json,"
            " source FROM predictions WHERE prediction_id = ?", (prediction_id,)
        ).fetchone()


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
