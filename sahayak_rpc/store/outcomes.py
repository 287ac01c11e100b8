"""The outcomes table: labelled examples, idempotent by (model, outcome_id), and their running totals."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ..ingest import OutcomeRecord
from ..schema import Row
from .database import Database, time_clause
from .sql import Conn, Lock

_IN_CHUNK = 500
_COLUMNS = (
    "model_id",
    "outcome_id",
    "label",
    "features_json",
    "entities_json",
    "metadata_json",
    "occurred_us",
    "received_us",
    "prediction_id",
    "content_hash",
    "source",
)


class InsertResult(enum.Enum):
    """What storing one outcome did: stored it, found it already there, or found its id taken by other content."""

    INSERTED = "inserted"
    DUPLICATE = "duplicate"  # same id, same content: already stored
    CONFLICT = "conflict"  # same id, different content


@dataclass(frozen=True)
class Totals:
    """A model's outcomes: how many, the newest seq, and how many the latest training run read."""

    outcomes: int = 0
    last_seq: int = 0
    trained_outcomes: int = 0
    importing_until_us: int = 0

    @property
    def since_training(self) -> int:
        """Outcomes stored beyond those the latest training run read."""
        return self.outcomes - self.trained_outcomes


@dataclass(frozen=True)
class Stored:
    """What an insert did: a result per record, in order, and the model's totals after its commit."""

    results: list[InsertResult]
    totals: Totals


def _json(d: dict[str, str]) -> str | None:
    return orjson.dumps(d).decode() if d else None


class OutcomeRepository:
    """The outcomes table and its per-model running totals (outcome_totals): storing outcomes idempotently,
    loading and sampling them for training and evaluation."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(
        self, model_id: int, records: Sequence[OutcomeRecord], received_us: int, importing_until_us: int | None = None
    ) -> Stored:
        """Store the records whose ids are new, in one transaction committed before returning; per record,
        whether it was stored, already there, or its id is taken by other content; and the model's totals
        after the commit. ``importing_until_us`` marks an import stream as open until then (the scheduler
        waits for it)."""
        rows = []
        hashes = []
        for rec in records:
            features, digest = rec.encoded()
            hashes.append(digest)
            rows.append(
                (
                    model_id,
                    rec.outcome_id,
                    1 if rec.label else 0,
                    features.decode(),
                    _json(rec.entities),
                    _json(rec.metadata),
                    rec.occurred_at_us,
                    received_us,
                    rec.prediction_id or None,
                    digest,
                    rec.source,
                )
            )
        with self._db.write() as conn:
            # Per model, outcomes commit in seq order (PostgreSQL hands out identity values out of commit
            # order), so a run that read "through seq N" has read every outcome up to N.
            conn.lock(Lock.OUTCOMES, model_id)
            stored = conn.insert_new("outcomes", _COLUMNS, rows, ("model_id", "outcome_id"))
            totals = self._add(conn, model_id, sum(stored), importing_until_us)
            if all(stored):  # the usual case: every id was new
                return Stored([InsertResult.INSERTED] * len(rows), totals)
            known = self._hashes(conn, model_id, [r.outcome_id for r, s in zip(records, stored) if not s])
        results = []
        for rec, digest, new in zip(records, hashes, stored, strict=True):
            if new:
                results.append(InsertResult.INSERTED)
            elif known.get(rec.outcome_id) == digest:
                results.append(InsertResult.DUPLICATE)
            else:
                results.append(InsertResult.CONFLICT)
        return Stored(results, totals)

    @staticmethod
    def _add(conn: Conn, model_id: int, n: int, importing_until_us: int | None) -> Totals:
        """Add ``n`` stored outcomes to the model's totals (inside the inserting transaction). Every model
        has its totals row from its creation (ModelRepository.create; migration 9 for older ones)."""
        cols = "outcomes, last_seq, trained_outcomes, importing_until_us"
        if n == 0 and importing_until_us is None:  # (duplicates only: nothing to write)
            row = conn.execute(f"SELECT {cols} FROM outcome_totals WHERE model_id = ?", (model_id,)).fetchone()
            return Totals(*row) if row else Totals()
        sets = "outcomes = outcomes + ?, last_seq = (SELECT coalesce(max(seq), 0) FROM outcomes WHERE model_id = ?)"
        args: list[object] = [n, model_id]
        if importing_until_us is not None:
            sets += ", importing_until_us = ?"
            args.append(importing_until_us)
        update = f"UPDATE outcome_totals SET {sets} WHERE model_id = ? RETURNING {cols}"
        row = conn.execute(update, (*args, model_id)).fetchone()
        if row is None:  # (a model whose row went missing: made again, then counted)
            conn.execute(
                "INSERT INTO outcome_totals (model_id, outcomes) SELECT ?, count(*) - ? FROM outcomes"
                " WHERE model_id = ?",
                (model_id, n, model_id),
            )
            row = conn.execute(update, (*args, model_id)).fetchone()
        return Totals(*row)

    @staticmethod
    def _hashes(conn: Conn, model_id: int, ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            where, args = conn.any_of("outcome_id", ids[start : start + _IN_CHUNK])
            found.update(
                (oid, bytes(h))
                for oid, h in conn.execute(
                    f"SELECT outcome_id, content_hash FROM outcomes WHERE model_id = ? AND {where}", (model_id, *args)
                )
            )
        return found

    def totals(self, model_id: int) -> Totals:
        """The model's totals as last committed (all zero when it has no totals row)."""
        r = (
            self._db.reader()
            .execute(
                "SELECT outcomes, last_seq, trained_outcomes, importing_until_us FROM outcome_totals WHERE model_id = ?",
                (model_id,),
            )
            .fetchone()
        )
        return Totals(*r) if r else Totals()

    def import_ended(self, model_id: int, lease_us: int) -> None:
        """An import stream ended: the scheduler need not wait for it any more, unless another replica's
        import has set the lease since (``lease_us`` is the one this replica set last)."""
        with self._db.write() as conn:
            conn.execute(
                "UPDATE outcome_totals SET importing_until_us = 0 WHERE model_id = ? AND importing_until_us = ?",
                (model_id, lease_us),
            )

    def count(self, model_id: int) -> int:
        """The model's stored outcomes."""
        return self.totals(model_id).outcomes

    def get(self, model_id: int, outcome_id: str) -> OutcomeRecord | None:
        """The model's outcome with this id as stored, or None."""
        r = (
            self._db.reader()
            .execute(
                "SELECT outcome_id, features_json, label, occurred_us, entities_json, metadata_json, prediction_id, source"
                " FROM outcomes WHERE model_id = ? AND outcome_id = ?",
                (model_id, outcome_id),
            )
            .fetchone()
        )
        if r is None:
            return None
        return OutcomeRecord(
            outcome_id=r[0],
            features=orjson.loads(r[1]),
            label=bool(r[2]),
            occurred_at_us=int(r[3]),
            entities=orjson.loads(r[4]) if r[4] else {},
            metadata=orjson.loads(r[5]) if r[5] else {},
            prediction_id=r[6] or "",
            source=r[7],
        )

    def load(
        self,
        model_id: int,
        *,
        after_seq: int = 0,
        through_seq: int | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        last_n: int = 0,
    ) -> LoadedOutcomes:
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
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq"
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
        return LoadedOutcomes(
            [r[1] for r in rows],
            [r[2] for r in rows],
            [loads(r[3]) for r in rows],
            [r[4] for r in rows],
            rows[-1][0] if rows else 0,
        )


@dataclass
class LoadedOutcomes:
    """Outcomes as loaded for training, column by column (ids, 0/1 labels, feature rows, occurrence times),
    and the largest seq read (where the next incremental load starts)."""

    ids: list[str]
    labels: list[int]
    rows: list[Row]
    times: list[int]
    max_seq: int
