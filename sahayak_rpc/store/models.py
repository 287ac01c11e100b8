"""The models table: declared models with their schema and settings."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import orjson

from .. import settings as ms
from ..errors import AlreadyExists
from ..schema import Schema, schema_from_dict, schema_to_dict
from .db import Database


@dataclass(frozen=True)
class ModelRecord:
    id: int
    name: str
    description: str
    schema: Schema
    settings: ms.ModelSettings
    created_us: int
    updated_us: int


_COLUMNS = "id, name, description, schema_json, settings_json, created_us, updated_us"


def _row(r: tuple[object, ...]) -> ModelRecord:
    return ModelRecord(
        id=int(r[0]),  # type: ignore[call-overload]
        name=str(r[1]),
        description=str(r[2]),
        schema=schema_from_dict(orjson.loads(r[3])),  # type: ignore[arg-type]
        settings=ms.from_dict(orjson.loads(r[4])),  # type: ignore[arg-type]
        created_us=int(r[5]),  # type: ignore[call-overload]
        updated_us=int(r[6]),  # type: ignore[call-overload]
    )


class ModelRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str, description: str, schema: Schema, settings: ms.ModelSettings, now_us: int) -> ModelRecord:
        with self._db.write() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO models (name, description, schema_json, settings_json, created_us, updated_us)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, description, orjson.dumps(schema_to_dict(schema)).decode(),
                     orjson.dumps(ms.to_dict(settings)).decode(), now_us, now_us),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"model {name!r} already exists", reason="MODEL_EXISTS") from None
            model_id = int(cur.lastrowid or 0)
        return ModelRecord(model_id, name, description, schema, settings, now_us, now_us)

    def get(self, name: str) -> ModelRecord | None:
        r = self._db.reader().execute(f"SELECT {_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
        return _row(r) if r else None

    def list(self, after_name: str, limit: int) -> list[ModelRecord]:
        rows = self._db.reader().execute(
            f"SELECT {_COLUMNS} FROM models WHERE name > ? ORDER BY name LIMIT ?", (after_name, limit)
        ).fetchall()
        return [_row(r) for r in rows]

    def update(self, name: str, description: str, settings: ms.ModelSettings, now_us: int) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE models SET description = ?, settings_json = ?, updated_us = ? WHERE name = ?",
                (description, orjson.dumps(ms.to_dict(settings)).decode(), now_us, name),
            )
