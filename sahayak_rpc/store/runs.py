"""training_runs: one row per run, updated as it progresses."""

from __future__ import annotations

from typing import Any

import orjson

from ..versions import ACTIVE_STATES, FAILED, RunRecord
from .db import Database, equal_clause

_COLS = ("run_id, model_id, kind, trigger, state, created_us, started_us, ended_us, through_seq, request_json,"
         " result_json, produced_version, promoted, end_reason, description")


def _run(r: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=r[0], model_id=r[1], kind=r[2], trigger=r[3], state=r[4], created_us=r[5], started_us=r[6],
        ended_us=r[7], through_seq=r[8], request=orjson.loads(r[9]), result=orjson.loads(r[10]),
        produced_version=r[11], promoted=bool(r[12]), end_reason=r[13], description=r[14],
    )


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class RunRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def insert(self, run: RunRecord) -> None:
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO training_runs ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.model_id, run.kind, run.trigger, run.state, run.created_us, run.started_us,
                 run.ended_us, run.through_seq, _dump(run.request), _dump(run.result), run.produced_version,
                 int(run.promoted), run.end_reason, run.description),
            )

    def update(self, run: RunRecord, conn: Any = None) -> None:
        sql = ("UPDATE training_runs SET state = ?, started_us = ?, ended_us = ?, through_seq = ?, result_json = ?,"
               " produced_version = ?, promoted = ?, end_reason = ? WHERE run_id = ?")
        args = (run.state, run.started_us, run.ended_us, run.through_seq, _dump(run.result), run.produced_version,
                int(run.promoted), run.end_reason, run.run_id)
        if conn is not None:
            conn.execute(sql, args)
            return
        with self._db.write() as c:
            c.execute(sql, args)

    def get(self, run_id: str) -> RunRecord | None:
        r = self._db.reader().execute(f"SELECT {_COLS} FROM training_runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run(r) if r else None

    def list(self, model_id: int | None, state: str, before: tuple[int, int] | None, limit: int) -> list[tuple[int, RunRecord]]:
        """(position, run), newest first; ``before`` is the (created_us, position) of the previous page's last run."""
        filters, values = equal_clause(model_id=model_id, state=state)
        sql = f"SELECT rowid, {_COLS} FROM training_runs WHERE 1" + filters
        args: list[Any] = list(values)
        if before is not None:
            sql += " AND (created_us, rowid) < (?, ?)"
            args += list(before)
        # rowid breaks ties between runs created in the same microsecond, in creation order.
        rows = self._db.reader().execute(sql + " ORDER BY created_us DESC, rowid DESC LIMIT ?", (*args, limit))
        return [(r[0], _run(r[1:])) for r in rows]

    def active(self, model_id: int) -> RunRecord | None:
        r = self._db.reader().execute(
            f"SELECT {_COLS} FROM training_runs WHERE model_id = ? AND state IN (?, ?) ORDER BY created_us LIMIT 1",
            (model_id, *ACTIVE_STATES),
        ).fetchone()
        return _run(r) if r else None

    def last(self, model_id: int, kind: str | None = None) -> RunRecord | None:
        sql = f"SELECT {_COLS} FROM training_runs WHERE model_id = ? AND state NOT IN (?, ?)"
        args: list[Any] = [model_id, *ACTIVE_STATES]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        r = self._db.reader().execute(sql + " ORDER BY created_us DESC, rowid DESC LIMIT 1", args).fetchone()
        return _run(r) if r else None

    def latest_through_seq(self, model_id: int) -> int:
        r = self._db.reader().execute(
            "SELECT coalesce(max(through_seq), 0) FROM training_runs WHERE model_id = ?", (model_id,)
        ).fetchone()
        return int(r[0])

    def previous_through_seq(self, model_id: int, run_id: str) -> int:
        """How far the runs before ``run_id`` had read the model's outcomes."""
        r = self._db.reader().execute(
            "SELECT coalesce(max(through_seq), 0) FROM training_runs WHERE model_id = ? AND run_id != ?"
            " AND started_us > 0", (model_id, run_id),
        ).fetchone()
        return int(r[0])

    def fail_interrupted(self, now_us: int) -> int:
        """Runs left queued or running by a previous process: they can never finish."""
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE training_runs SET state = ?, ended_us = ?, end_reason = ? WHERE state IN (?, ?)",
                (FAILED, now_us, "interrupted: the server stopped before the run finished", *ACTIVE_STATES),
            )
            return cur.rowcount
