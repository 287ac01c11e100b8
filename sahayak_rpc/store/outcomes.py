"""The outcomes table: labelled examples, idempotent by (model, outcome_id)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
import sqlite3
from collections.abc import Sequence

import orjson

from ..ingest import OutcomeRecord
from .db import Database, time_clause

_IN_CHUNK = 500
_INSERT = (
    "INSERT INTO outcomes (model_id, outcome_id, label, features_json, entities_json, metadata_json,"
    " occurred_us, received_us, prediction_id, content_hash, source)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_id, outcome_id) DO NOTHING"
)


class InsertResult(enum.Enum):
    INSERTED = "inserted"
    DUPLICATE = "duplicate"  # same id, same content: already stored
    CONFLICT = "conflict"  # same id, different content


def _json(d: dict[str, str]) -> str | None:
    return orjson.dumps(d).decode() if d else None


class OutcomeRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, model_id: int, records: Sequence[OutcomeRecord], received_us: int) -> list[InsertResult]:
        """Store the new records in one transaction, committed before returning."""
        rows = []
        hashes = []
        for rec in records:
            features, digest = rec.encoded()
            hashes.append(digest)
            rows.append((
                model_id, rec.outcome_id, 1 if rec.label else 0, features.decode(),
                _json(rec.entities), _json(rec.metadata), rec.occurred_at_us, received_us,
                rec.prediction_id or None, digest, rec.source,
            ))
        with self._db.write() as conn:
            before = conn.execute("SELECT coalesce(max(seq), 0) FROM outcomes").fetchone()[0]
            # Fast path: every id is new (the usual case), one statement does it.
            inserted = conn.executemany(_INSERT, rows).rowcount
            if inserted == len(rows):
                return [InsertResult.INSERTED] * len(rows)
            return self._classify(conn, model_id, records, hashes, before)

    @staticmethod
    def _classify(
        conn: sqlite3.Connection, model_id: int, records: Sequence[OutcomeRecord], hashes: list[bytes], before: int
    ) -> list[InsertResult]:
        """Which rows this call inserted (seq > before) and which met an existing id."""
        stored: dict[str, tuple[bytes, int]] = {}
        ids = [r.outcome_id for r in records]
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for oid, digest, seq in conn.execute(
                f"SELECT outcome_id, content_hash, seq FROM outcomes WHERE model_id = ? AND outcome_id IN ({marks})",
                (model_id, *chunk),
            ):
                stored[oid] = (digest, seq)
        results = []
        claimed: set[str] = set()
        for rec, digest in zip(records, hashes, strict=True):
            known, seq = stored[rec.outcome_id]
            if seq > before and rec.outcome_id not in claimed and known == digest:
                claimed.add(rec.outcome_id)
                results.append(InsertResult.INSERTED)
            elif known == digest:
                results.append(InsertResult.DUPLICATE)
            else:
                results.append(InsertResult.CONFLICT)
        return results

    def count(self, model_id: int, after_seq: int = 0) -> int:
        r = self._db.reader().execute(
            "SELECT count(*) FROM outcomes WHERE model_id = ? AND seq > ?", (model_id, after_seq)
        ).fetchone()
        return int(r[0])

    def get(self, model_id: int, outcome_id: str) -> OutcomeRecord | None:
        r = self._db.reader().execute(
            "SELECT outcome_id, features_json, label, occurred_us, entities_json, metadata_json, prediction_id, source"
            " FROM outcomes WHERE model_id = ? AND outcome_id = ?",
            (model_id, outcome_id),
        ).fetchone()
        if r is None:
            return None
        return OutcomeRecord(
            outcome_id=r[0], features=orjson.loads(r[1]), label=bool(r[2]), occurred_at_us=int(r[3]),
            entities=orjson.loads(r[4]) if r[4] else {}, metadata=orjson.loads(r[5]) if r[5] else {},
            prediction_id=r[6] or "", source=r[7],
        )

    def load(self, model_id: int, *, after_seq: int = 0, through_seq: int | None = None,
             start_us: int | None = None, end_us: int | None = None, last_n: int = 0) -> LoadedOutcomes:
        """Outcomes for training or evaluation, oldest first (by arrival)."""
        sql = "SELECT seq, outcome_id, label, features_json, occurred_us FROM outcomes WHERE model_id = ? AND seq > ?"
        args: list[object] = [model_id, after_seq]
        if through_seq is not None:
            sql += " AND seq <= ?"
            args.append(through_seq)
        window_sql, window_args = time_clause("occurred_us", start_us, end_us)
        sql += window_sql
        args += window_args
        if last_n:
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) ORDER BY seq"
            args.append(last_n)
        else:
            sql += " ORDER BY seq"
        with self._db.read() as conn:
            rows = conn.execute(sql, args).fetchall()
        loads = orjson.loads
        return LoadedOutcomes(
            ids=[r[1] for r in rows],
            labels=[r[2] for r in rows],
            rows=[loads(r[3]) for r in rows],
            times=[r[4] for r in rows],
            max_seq=rows[-1][0] if rows else after_seq,
        )

    def sample(self, model_id: int, through_seq: int, n: int, seed: int) -> LoadedOutcomes:
        """About ``n`` outcomes drawn evenly at random from those up to ``through_seq``."""
        total = self.count(model_id) or 1
        if n <= 0:
            return LoadedOutcomes([], [], [], [], 0)
        # A keyed pseudo-random filter on seq: cheap, and stable for a seed.
        modulus = max(1, total // n)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT seq, outcome_id, label, features_json, occurred_us FROM outcomes"
                " WHERE model_id = ? AND seq <= ? AND ((seq * 2654435761 + ?) % ?) = 0 ORDER BY seq LIMIT ?",
                (model_id, through_seq, seed, modulus, n),
            ).fetchall()
        loads = orjson.loads
        return LoadedOutcomes([r[1] for r in rows], [r[2] for r in rows], [loads(r[3]) for r in rows],
                              [r[4] for r in rows], rows[-1][0] if rows else 0)

    def max_seq(self, model_id: int) -> int:
        r = self._db.reader().execute("SELECT coalesce(max(seq), 0) FROM outcomes WHERE model_id = ?", (model_id,)).fetchone()
        return int(r[0])


@dataclass
class LoadedOutcomes:
    ids: list[str]
    labels: list[int]
    rows: list[dict[str, object]]
    times: list[int]
    max_seq: int
