"""model_versions, aliases and alias_events: the registry's tables."""

from __future__ import annotations

import builtins
from typing import Any

import orjson

from ..errors import FailedPrecondition
from ..versions import ARCHIVED, AliasEvent, VersionRecord
from . import events
from .database import Database
from .sql import Conn, Lock

_COLS = (
    "model_id, version, family, status, source, training_run_id, parent_version, metrics_json, gate_json,"
    " weights_json, lineage_json, calibration, threshold, artifact_sha256, length(artifact), description, created_us"
)


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _version(r: tuple[Any, ...], aliases: tuple[str, ...] = ()) -> VersionRecord:
    return VersionRecord(
        model_id=r[0],
        version=r[1],
        family=r[2],
        status=r[3],
        source=r[4],
        training_run_id=r[5] or "",
        parent_version=r[6],
        metrics=orjson.loads(r[7]),
        gate=orjson.loads(r[8]),
        weights=[tuple(w) for w in orjson.loads(r[9])],
        lineage=orjson.loads(r[10]),
        calibration=r[11],
        threshold=r[12],
        artifact_sha256=r[13],
        artifact_size=r[14],
        description=r[15],
        created_us=r[16],
        aliases=aliases,
    )


def _event(r: tuple[Any, ...]) -> AliasEvent:
    return AliasEvent(*r)


class VersionRepository:
    """The registry's tables: model versions with their artifacts and reference profiles, aliases, and the
    alias events that record every move. Methods that take a ``conn`` write in the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def next_version(self, model_id: int) -> int:
        """The number the model's next version would take now (another writer may take it first:
        ``insert`` then says so)."""
        r = (
            self._db.reader()
            .execute("SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE model_id = ?", (model_id,))
            .fetchone()
        )
        return int(r[0])

    def insert(self, conn: Conn, v: VersionRecord, artifact: bytes, profile: dict[str, Any]) -> bool:
        """Insert inside the caller's transaction (so promotion can commit with it); False when the
        version number is taken (by another replica's registration, say): nothing was written."""
        cur = conn.try_execute(
            "INSERT INTO model_versions (model_id, version, family, status, source, training_run_id, parent_version,"
            " metrics_json, gate_json, weights_json, lineage_json, calibration, threshold, artifact, artifact_sha256,"
            " description, created_us, profile_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                v.model_id,
                v.version,
                v.family,
                v.status,
                v.source,
                v.training_run_id or None,
                v.parent_version,
                _dump(v.metrics),
                _dump(v.gate),
                _dump(v.weights),
                _dump(v.lineage),
                v.calibration,
                v.threshold,
                artifact,
                v.artifact_sha256,
                v.description,
                v.created_us,
                _dump(profile),
            ),
        )
        return cur is not None

    def profile(self, model_id: int, version: int) -> dict[str, Any]:
        """The version's reference profile ({} for imported versions)."""
        r = (
            self._db.reader()
            .execute("SELECT profile_json FROM model_versions WHERE model_id = ? AND version = ?", (model_id, version))
            .fetchone()
        )
        return orjson.loads(r[0]) if r else {}

    def aliases_of(self, model_id: int, conn: Conn | None = None) -> dict[str, int]:
        """The model's aliases; inside a write transaction (``conn``), under the model's alias lock."""
        if conn is not None:
            conn.lock(Lock.ALIASES, model_id)
        rows = (conn or self._db.reader()).execute("SELECT alias, version FROM aliases WHERE model_id = ?", (model_id,))
        return {a: v for a, v in rows}

    def get(self, model_id: int, version: int) -> VersionRecord | None:
        """The version's record with the aliases that point at it now, or None."""
        r = (
            self._db.reader()
            .execute(f"SELECT {_COLS} FROM model_versions WHERE model_id = ? AND version = ?", (model_id, version))
            .fetchone()
        )
        if r is None:
            return None
        aliases = tuple(sorted(a for a, v in self.aliases_of(model_id).items() if v == version))
        return _version(r, aliases)

    def list(self, model_id: int, before_version: int, limit: int, include_archived: bool) -> list[VersionRecord]:
        """Newest first."""
        rows = (
            self._db.reader()
            .execute(
                f"SELECT {_COLS} FROM model_versions WHERE model_id = ? AND version < ?"
                + ("" if include_archived else " AND status != 'archived'")
                + " ORDER BY version DESC LIMIT ?",
                (model_id, before_version, limit),
            )
            .fetchall()
        )
        aliases = self.aliases_of(model_id)
        return [_version(r, tuple(sorted(a for a, v in aliases.items() if v == r[1]))) for r in rows]

    def artifact(self, model_id: int, version: int) -> bytes | None:
        """The version's signed artifact, or None when there is no such version."""
        r = (
            self._db.reader()
            .execute("SELECT artifact FROM model_versions WHERE model_id = ? AND version = ?", (model_id, version))
            .fetchone()
        )
        return bytes(r[0]) if r else None

    def set_status(self, model_id: int, version: int, status: str, now_us: int) -> None:
        """Raises FailedPrecondition (VERSION_HAS_ALIASES) when archiving a version an alias points at."""
        with self._db.write() as conn:
            conn.lock(Lock.ALIASES, model_id)
            if status == ARCHIVED:
                held = conn.execute(
                    "SELECT alias FROM aliases WHERE model_id = ? AND version = ?", (model_id, version)
                ).fetchall()
                if held:
                    names = ", ".join(sorted(a for (a,) in held))
                    raise FailedPrecondition(
                        f"version {version} holds alias(es) {names}; move them first", reason="VERSION_HAS_ALIASES"
                    )
            conn.execute(
                "UPDATE model_versions SET status = ? WHERE model_id = ? AND version = ?", (status, model_id, version)
            )
            events.append(conn, events.VERSION, now_us, model_id, str(version))

    def move_alias(self, conn: Conn, model_id: int, alias: str, version: int, reason: str, now_us: int) -> AliasEvent:
        """Point (or, with version 0, delete) an alias and append the event, in the caller's transaction."""
        conn.lock(Lock.ALIASES, model_id)
        r = conn.execute("SELECT version FROM aliases WHERE model_id = ? AND alias = ?", (model_id, alias)).fetchone()
        previous = int(r[0]) if r else 0
        if version:
            conn.execute(
                "INSERT INTO aliases (model_id, alias, version, updated_us) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version, updated_us = excluded.updated_us",
                (model_id, alias, version, now_us),
            )
        else:
            conn.execute("DELETE FROM aliases WHERE model_id = ? AND alias = ?", (model_id, alias))
        row = conn.execute(
            "INSERT INTO alias_events (model_id, alias, version, previous_version, reason, created_us)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (model_id, alias, version, previous, reason, now_us),
        ).fetchone()
        events.append(conn, events.ALIAS, now_us, model_id, alias)
        return AliasEvent(int(row[0]), model_id, alias, version, previous, reason, now_us)

    def history(self, model_id: int, alias: str, before_id: int, limit: int) -> builtins.list[AliasEvent]:
        """Newest first."""
        sql = (
            "SELECT id, model_id, alias, version, previous_version, reason, created_us FROM alias_events"
            " WHERE model_id = ? AND id < ?"
        )
        args: list[Any] = [model_id, before_id]
        if alias:
            sql += " AND alias = ?"
            args.append(alias)
        rows = self._db.reader().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_event(r) for r in rows]

    def last_event(self, conn: Conn, model_id: int, alias: str) -> AliasEvent | None:
        """The alias's newest move (taking the model's alias lock: what follows may move it)."""
        conn.lock(Lock.ALIASES, model_id)
        r = conn.execute(
            "SELECT id, model_id, alias, version, previous_version, reason, created_us FROM alias_events"
            " WHERE model_id = ? AND alias = ? ORDER BY id DESC LIMIT 1",
            (model_id, alias),
        ).fetchone()
        return _event(r) if r else None

    def status_of(self, conn: Conn, model_id: int, version: int) -> str | None:
        """The version's status (taking the model's alias lock: what follows may point an alias at it)."""
        conn.lock(Lock.ALIASES, model_id)
        r = conn.execute(
            "SELECT status FROM model_versions WHERE model_id = ? AND version = ?", (model_id, version)
        ).fetchone()
        return str(r[0]) if r else None

    def latest(self, model_id: int, family: str, status: str) -> int:
        """The newest version of ``family`` with ``status`` (0: none)."""
        r = (
            self._db.reader()
            .execute(
                "SELECT coalesce(max(version), 0) FROM model_versions WHERE model_id = ? AND family = ? AND status = ?",
                (model_id, family, status),
            )
            .fetchone()
        )
        return int(r[0])
