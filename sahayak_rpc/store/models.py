"""The models table: declared models with their schema and settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .. import settings as ms
from ..errors import AlreadyExists
from ..schema import Schema, schema_from_dict, schema_to_dict
from . import events
from .database import Database


@dataclass(frozen=True)
class ModelRecord:
    """A declared model as stored: its id, name, description, schema (fixed at creation) and settings."""

    id: int
    name: str
    description: str
    schema: Schema
    settings: ms.ModelSettings
    created_us: int
    updated_us: int


_COLUMNS = "id, name, description, schema_json, settings_json, created_us, updated_us"


def _row(r: Any) -> ModelRecord:
    return ModelRecord(
        id=int(r[0]),
        name=str(r[1]),
        description=str(r[2]),
        schema=schema_from_dict(orjson.loads(r[3])),
        settings=ms.from_dict(orjson.loads(r[4])),
        created_us=int(r[5]),
        updated_us=int(r[6]),
    )


class ModelRepository:
    """The models table: each model with its schema and settings; creating or updating one appends a MODEL event."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self, name: str, description: str, schema: Schema, settings: ms.ModelSettings, now_us: int
    ) -> ModelRecord:
        """Store a new model; raises AlreadyExists (MODEL_EXISTS) when the name is taken."""
        with self._db.write() as conn:
            cur = conn.try_execute(
                "INSERT INTO models (name, description, schema_json, settings_json, created_us, updated_us)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    name,
                    description,
                    orjson.dumps(schema_to_dict(schema)).decode(),
                    orjson.dumps(ms.to_dict(settings)).decode(),
                    now_us,
                    now_us,
                ),
            )
            if cur is None:
                raise AlreadyExists(f"model {name!r} already exists", reason="MODEL_EXISTS")
            model_id = int(cur.fetchone()[0])
            conn.execute("INSERT INTO outcome_totals (model_id) VALUES (?)", (model_id,))
            events.append(conn, events.MODEL, now_us, model_id, name)
        return ModelRecord(model_id, name, description, schema, settings, now_us, now_us)

    def get(self, name: str) -> ModelRecord | None:
        """The model named ``name``, or None."""
        r = self._db.reader().execute(f"SELECT {_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
        return _row(r) if r else None

    def list(self, after_name: str, limit: int) -> list[ModelRecord]:
        """Up to ``limit`` models by name, after ``after_name`` ("": from the first)."""
        rows = (
            self._db.reader()
            .execute(f"SELECT {_COLUMNS} FROM models WHERE name > ? ORDER BY name LIMIT ?", (after_name, limit))
            .fetchall()
        )
        return [_row(r) for r in rows]

    def get_by_id(self, model_id: int) -> ModelRecord | None:
        """The model with this id, or None."""
        r = self._db.reader().execute(f"SELECT {_COLUMNS} FROM models WHERE id = ?", (model_id,)).fetchone()
        return _row(r) if r else None

    def update(self, name: str, description: str, settings: ms.ModelSettings, now_us: int) -> None:
        """Replace the description and settings of the model named ``name`` (nothing when there is none),
        with a MODEL event; committed before it returns."""
        with self._db.write() as conn:
            row = conn.execute(
                "UPDATE models SET description = ?, settings_json = ?, updated_us = ? WHERE name = ? RETURNING id",
                (description, orjson.dumps(ms.to_dict(settings)).decode(), now_us, name),
            ).fetchone()
            if row is not None:
                events.append(conn, events.MODEL, now_us, int(row[0]), name)
