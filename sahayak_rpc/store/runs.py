"""training_runs: the queue of runs (claimed by workers with a heartbeat), and run_events: their progress."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..versions import ACTIVE_STATES, CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING, RunRecord
from . import events
from .database import Database, equal_clause
from .sql import Conn, Lock

_COLS = (
    "run_id, model_id, kind, trigger, state, created_us, started_us, ended_us, through_seq, request_json,"
    " result_json, produced_version, promoted, end_reason, description, worker"
)


def _run(r: Any) -> RunRecord:
    return RunRecord(
        run_id=r[0],
        model_id=r[1],
        kind=r[2],
        trigger=r[3],
        state=r[4],
        created_us=r[5],
        started_us=r[6],
        ended_us=r[7],
        through_seq=r[8],
        request=orjson.loads(r[9]),
        result=orjson.loads(r[10]),
        produced_version=r[11],
        promoted=bool(r[12]),
        end_reason=r[13],
        description=r[14],
        worker=r[15],
    )


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


@dataclass(frozen=True, slots=True)
class ListedRun:
    """A run as ``list`` pages them: ``position`` orders runs created in the same microsecond."""

    position: int
    run: RunRecord


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A run's progress event: its number (1, 2, ... per run) and the event as JSON."""

    n: int
    event_json: str


@dataclass(frozen=True)
class Running:
    """A claimed run as the leader watches it: its worker and heartbeat counter."""

    run_id: str
    model_id: int
    worker: int
    heartbeat: int


class RunRepository:
    """The training-run queue and its progress events: queueing, claiming by workers, heartbeats, cancels,
    ends (each committed in its own transaction unless the caller passes one), and reading them back."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- the queue ------------------------------------------------------------------------

    def insert(self, run: RunRecord, first_event: str) -> bool:
        """Queue a run, with its first progress event; False (nothing written) when the model already has
        a queued or running run (a unique index decides, so two replicas cannot both queue one)."""
        with self._db.write() as conn:
            cur = conn.try_execute(
                f"INSERT INTO training_runs ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.model_id,
                    run.kind,
                    run.trigger,
                    run.state,
                    run.created_us,
                    run.started_us,
                    run.ended_us,
                    run.through_seq,
                    _dump(run.request),
                    _dump(run.result),
                    run.produced_version,
                    int(run.promoted),
                    run.end_reason,
                    run.description,
                    run.worker,
                ),
            )
            if cur is None:
                return False
            self._add_event(conn, run.run_id, first_event, run.created_us)
            events.append(conn, events.RUN, run.created_us, run.model_id, run.run_id)
            return True

    def claim(self, worker: int, now_us: int) -> RunRecord | None:
        """Take the oldest queued run for ``worker``: running from now, reading the outcomes stored so far
        (``through_seq``; how many: ``through_count``). None: none queued. Concurrent workers get different
        runs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT seq, model_id FROM training_runs WHERE state = ? ORDER BY created_us, seq LIMIT 1"
                + conn.skip_locked,
                (QUEUED,),
            ).fetchone()
            if row is None:
                return None
            seq, model_id = row
            conn.lock(Lock.OUTCOMES, model_id)  # every outcome up to last_seq has committed (store/outcomes.py)
            totals = conn.execute(
                "SELECT outcomes, last_seq FROM outcome_totals WHERE model_id = ?", (model_id,)
            ).fetchone() or (0, 0)
            claimed = conn.execute(
                f"UPDATE training_runs SET state = ?, worker = ?, started_us = ?, through_seq = ?, through_count = ?,"
                f" heartbeat = 0 WHERE seq = ? RETURNING {_COLS}",
                (RUNNING, worker, now_us, totals[1], totals[0], seq),
            ).fetchone()
            return _run(claimed)

    def heartbeat(self, worker: int, run_ids: Sequence[str]) -> list[str]:
        """Beat for these runs, which ``worker`` is running; returns those whose cancel was asked for."""
        if not run_ids:
            return []
        with self._db.write(durable=False) as conn:
            where, args = conn.any_of("run_id", run_ids)
            rows = conn.execute(
                f"UPDATE training_runs SET heartbeat = heartbeat + 1 WHERE worker = ? AND state = ? AND {where}"
                " RETURNING run_id, cancel_requested",
                (worker, RUNNING, *args),
            ).fetchall()
        return [run_id for run_id, asked in rows if asked]

    def running(self) -> list[Running]:
        """Every run some worker holds running, with its worker and heartbeat counter (for the leader's check)."""
        rows = (
            self._db.reader()
            .execute("SELECT run_id, model_id, worker, heartbeat FROM training_runs WHERE state = ?", (RUNNING,))
            .fetchall()
        )
        return [Running(*r) for r in rows]

    def fail_running(
        self, run_id: str, worker: int, heartbeat: int | None, reason: str, now_us: int
    ) -> RunRecord | None:
        """Fail a running run whose worker stopped: only if ``worker`` still holds it (and, when given, its
        heartbeat is still ``heartbeat``: it did not beat meanwhile). The reason starts with "interrupted"."""
        with self._db.write() as conn:
            sql = (
                "UPDATE training_runs SET state = ?, ended_us = ?, end_reason = ? WHERE run_id = ? AND state = ?"
                " AND worker = ?"
            )
            args: list[Any] = [FAILED, now_us, f"{INTERRUPTED}: {reason}", run_id, RUNNING, worker]
            if heartbeat is not None:
                sql += " AND heartbeat = ?"
                args.append(heartbeat)
            row = conn.execute(sql + f" RETURNING {_COLS}", args).fetchone()
            if row is None:
                return None
            run = _run(row)
            events.append(conn, events.RUN, now_us, run.model_id, run_id)
            return run

    def request_cancel(self, run_id: str, now_us: int) -> RunRecord | None:
        """Cancel a run from any replica: a queued run ends now; a running one is asked to stop (its
        worker sees the request with its next heartbeat, or at once through the change feed). Returns
        the run if this call changed it (None: it had ended)."""
        with self._db.write() as conn:
            row = conn.execute(
                f"UPDATE training_runs SET state = ?, ended_us = ?, end_reason = ? WHERE run_id = ? AND state = ?"
                f" RETURNING {_COLS}",
                (CANCELLED, now_us, "cancelled before it started", run_id, QUEUED),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"UPDATE training_runs SET cancel_requested = 1 WHERE run_id = ? AND state = ? RETURNING {_COLS}",
                    (run_id, RUNNING),
                ).fetchone()
            if row is None:
                return None
            run = _run(row)
            events.append(conn, events.CANCEL if run.state == RUNNING else events.RUN, now_us, run.model_id, run_id)
            return run

    def update(self, run: RunRecord, conn: Conn | None = None, worker: int = 0) -> bool:
        """Write the run's progress or end. With ``worker``, only while that worker still holds it running
        (a run the cluster failed meanwhile stays failed); returns whether the row changed."""
        sql = (
            "UPDATE training_runs SET state = ?, started_us = ?, ended_us = ?, through_seq = ?, result_json = ?,"
            " produced_version = ?, promoted = ?, end_reason = ? WHERE run_id = ?"
        )
        args: list[Any] = [
            run.state,
            run.started_us,
            run.ended_us,
            run.through_seq,
            _dump(run.result),
            run.produced_version,
            int(run.promoted),
            run.end_reason,
            run.run_id,
        ]
        if worker:
            sql += " AND worker = ? AND state = ?"
            args += [worker, RUNNING]
        if conn is not None:
            changed = conn.execute(sql, args).rowcount > 0
            if changed and run.state not in ACTIVE_STATES and not run.end_reason.startswith(INTERRUPTED):
                self._trained(conn, run.run_id, run.model_id)
                events.append(conn, events.RUN, run.ended_us, run.model_id, run.run_id)
            return changed
        with self._db.write() as c:
            return self.update(run, c, worker)

    @staticmethod
    def _trained(conn: Conn, run_id: str, model_id: int) -> None:
        """A run ended, not interrupted: the labels it read no longer count as new (an interrupted run's
        still do, so the schedule runs it again)."""
        conn.lock(Lock.OUTCOMES, model_id)
        conn.execute(
            "UPDATE outcome_totals SET trained_outcomes = CASE WHEN r.through_count > trained_outcomes"
            " THEN r.through_count ELSE trained_outcomes END"
            " FROM (SELECT through_count FROM training_runs WHERE run_id = ?) AS r WHERE model_id = ?",
            (run_id, model_id),
        )

    # --- progress events ----------------------------------------------------------------

    @staticmethod
    def _add_event(conn: Conn, run_id: str, event_json: str, now_us: int) -> int:
        # Numbered as the run's next; a number another writer took meanwhile (the leader ending a run
        # its worker is still writing to) means: take the next.
        for _ in range(5):
            row = conn.execute(
                "INSERT INTO run_events (run_id, n, event_json, created_us) VALUES"
                " (?, (SELECT coalesce(max(n), 0) + 1 FROM run_events WHERE run_id = ?), ?, ?)"
                " ON CONFLICT (run_id, n) DO NOTHING RETURNING n",
                (run_id, run_id, event_json, now_us),
            ).fetchone()
            if row is not None:
                conn.notify(events.CHANNEL, "progress")
                return int(row[0])
        raise RuntimeError(f"run {run_id}: its progress events kept being numbered by another writer")

    def add_event(self, run_id: str, event_json: str, now_us: int) -> int:
        """Append a progress event (JSON) to the run's; returns its number. One writer per run (its worker)."""
        with self._db.write(durable=False) as conn:
            return self._add_event(conn, run_id, event_json, now_us)

    def events_after(self, run_id: str, n: int) -> list[ProgressEvent]:
        """The run's progress events numbered above ``n``, in order."""
        rows = (
            self._db.reader()
            .execute("SELECT n, event_json FROM run_events WHERE run_id = ? AND n > ? ORDER BY n", (run_id, n))
            .fetchall()
        )
        return [ProgressEvent(int(k), str(e)) for k, e in rows]

    def purge_events(self, before_us: int) -> int:
        """Delete progress events of runs that ended before ``before_us``."""
        with self._db.write() as conn:
            return int(
                conn.execute(
                    "DELETE FROM run_events WHERE run_id IN (SELECT run_id FROM training_runs WHERE ended_us > 0"
                    " AND ended_us < ?)",
                    (before_us,),
                ).rowcount
            )

    # --- reading --------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        r = self._db.reader().execute(f"SELECT {_COLS} FROM training_runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run(r) if r else None

    def list(self, model_id: int | None, state: str, before: tuple[int, int] | None, limit: int) -> list[ListedRun]:
        """Newest first; ``before`` is the (created_us, position) of the previous page's last run."""
        filters, values = equal_clause(model_id=model_id, state=state)
        sql = f"SELECT seq, {_COLS} FROM training_runs WHERE TRUE" + filters
        args: list[Any] = list(values)
        if before is not None:
            sql += " AND (created_us, seq) < (?, ?)"
            args += list(before)
        # seq breaks ties between runs created in the same microsecond, in creation order.
        rows = self._db.reader().execute(sql + " ORDER BY created_us DESC, seq DESC LIMIT ?", (*args, limit))
        return [ListedRun(r[0], _run(r[1:])) for r in rows]

    def active(self, model_id: int) -> RunRecord | None:
        """The model's queued or running run (at most one: a unique index), or None."""
        r = (
            self._db.reader()
            .execute(
                f"SELECT {_COLS} FROM training_runs WHERE model_id = ? AND state IN (?, ?) ORDER BY created_us LIMIT 1",
                (model_id, *ACTIVE_STATES),
            )
            .fetchone()
        )
        return _run(r) if r else None

    def queued(self) -> int:
        """Runs waiting for a worker, over every model."""
        return int(
            self._db.reader().execute("SELECT count(*) FROM training_runs WHERE state = ?", (QUEUED,)).fetchone()[0]
        )

    def last(self, model_id: int, kind: str | None = None, *, counting_interrupted: bool = True) -> RunRecord | None:
        """The newest ended run (of ``kind``); ``counting_interrupted=False`` passes over runs that failed
        because their worker stopped."""
        sql = f"SELECT {_COLS} FROM training_runs WHERE model_id = ? AND state NOT IN (?, ?)"
        args: list[Any] = [model_id, *ACTIVE_STATES]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if not counting_interrupted:
            sql += " AND NOT (state = ? AND end_reason LIKE ?)"
            args += [FAILED, f"{INTERRUPTED}:%"]
        r = self._db.reader().execute(sql + " ORDER BY created_us DESC, seq DESC LIMIT 1", args).fetchone()
        return _run(r) if r else None

    def last_started_by(self, model_id: int, triggers: tuple[str, ...]) -> int:
        """When the newest run with one of these triggers was created (0: never)."""
        r = (
            self._db.reader()
            .execute(
                f"SELECT coalesce(max(created_us), 0) FROM training_runs WHERE model_id = ?"
                f" AND trigger IN ({','.join('?' * len(triggers))})",
                (model_id, *triggers),
            )
            .fetchone()
        )
        return int(r[0])

    def previous_through_seq(self, model_id: int, run_id: str) -> int:
        """How far the runs before ``run_id`` had read the model's outcomes (interrupted runs aside: what
        they read is read again)."""
        r = (
            self._db.reader()
            .execute(
                "SELECT coalesce(max(through_seq), 0) FROM training_runs WHERE model_id = ? AND run_id != ?"
                " AND started_us > 0 AND NOT (state = ? AND end_reason LIKE ?)",
                (model_id, run_id, FAILED, f"{INTERRUPTED}:%"),
            )
            .fetchone()
        )
        return int(r[0])
