"""events: the change feed that replicas follow; replicas: who serves; schedule: the leader's clock.

A change that other replicas must act on (a champion moved, a model updated, a
run queued or cancelled, an alert raised ...) appends an event in the transaction
that makes the change. Its ``seq`` is the feed's cursor. On PostgreSQL, identity
values are not handed out in commit order, so a follower reading ``seq > cursor``
could pass over a row whose smaller seq commits later; ``append`` therefore takes
a transaction-level lock before its insert (store/sql.py ``Lock.EVENTS``), held
until commit: whoever inserts next gets a larger seq *and* commits later. SQLite
has one writer, so the same holds there without a lock. tests/server/test_store_backends.py
has concurrent writers in several processes and a follower that must see every
event exactly once, in order.

NOTIFY (``Conn.notify``) is only a wake-up: a replica that was away reads the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .database import Database
from .sql import Conn, Lock

CHANNEL = "sahayak_events"

# Event kinds, and what a replica does on each (runtime/replica.py).
MODEL = "model"  # created or updated: reload it
ALIAS = "alias"  # an alias moved (subject: the alias): reload the champion
VERSION = "version"  # a version's status changed (subject: its number): drop it from the cache
RUN = "run"  # a run was queued, or ended (subject: the run id): wake the trainers and the watchers
CANCEL = "cancel"  # a run's cancel was asked for (subject: the run id): its trainer stops it
ALERT = "alert"  # an alert event was stored: wake WatchAlerts
LABELS = "labels"  # enough new labels for an incremental update: wake the scheduler


@dataclass(frozen=True)
class Event:
    """One row of the change feed: its cursor (``seq``), its kind (MODEL, ALIAS ...), the model and the subject."""

    seq: int
    kind: str
    model_id: int
    subject: str
    created_us: int


def append(conn: Conn, kind: str, now_us: int, model_id: int = 0, subject: str = "") -> None:
    """Append an event to the caller's write transaction. It is inserted as the transaction's last step
    (``Conn.before_commit``): the lock it takes is held until commit, and is the last one taken."""

    def insert(c: Conn) -> None:
        c.lock(Lock.EVENTS)
        c.execute(
            "INSERT INTO events (kind, model_id, subject, created_us) VALUES (?, ?, ?, ?)",
            (kind, model_id, subject, now_us),
        )
        c.notify(CHANNEL, kind)

    conn.before_commit(insert)


class EventRepository:
    """The change feed: reading it after a cursor, appending a wake-up, deleting old rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def after(self, cursor: int, limit: int = 1000) -> list[Event]:
        """Events with a seq above ``cursor``, oldest first."""
        rows = (
            self._db.reader()
            .execute(
                "SELECT seq, kind, model_id, subject, created_us FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, limit),
            )
            .fetchall()
        )
        return [Event(*r) for r in rows]

    def last_seq(self) -> int:
        """The feed's newest seq (0 when empty): where a replica that has just loaded everything starts following."""
        return int(self._db.reader().execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def append(self, kind: str, now_us: int, model_id: int = 0, subject: str = "") -> None:
        """Append an event in a transaction of its own (for a wake-up that needs no other write)."""
        with self._db.write() as conn:
            append(conn, kind, now_us, model_id, subject)

    def purge(self, before_us: int, batch: int = 1000) -> int:
        """Delete events older than ``before_us``, keeping the newest (it holds the cursor's place)."""
        total = 0
        while True:
            with self._db.write() as conn:
                deleted = conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE created_us < ?"
                    " AND seq < (SELECT max(seq) FROM events) ORDER BY seq LIMIT ?)",
                    (before_us, batch),
                ).rowcount
            total += deleted
            if deleted < batch:
                return total


@dataclass(frozen=True)
class ReplicaRow:
    """A replica's row: who and where it is, whether it trains or leads, its last heartbeat, when it stopped (0: not)."""

    id: int
    name: str
    host: str
    pid: int
    address: str
    version: str
    trains: bool
    started_us: int
    heartbeat_us: int
    leader: bool
    stopped_us: int


_REPLICA_COLS = "id, name, host, pid, address, version, trains, started_us, heartbeat_us, leader, stopped_us"


def _replica(r: Any) -> ReplicaRow:
    return ReplicaRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], bool(r[9]), r[10])


class ReplicaRepository:
    """One row per serving process: registered at start, heartbeated, marked stopped."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def register(
        self, name: str, host: str, pid: int, address: str, version: str, trains: bool, now_us: int
    ) -> ReplicaRow:
        """A new replica's row, with its id (never reused)."""
        with self._db.write() as conn:
            row = conn.execute(
                "INSERT INTO replicas (name, host, pid, address, version, trains, started_us, heartbeat_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (name, host, pid, address, version, int(trains), now_us, now_us),
            ).fetchone()
            return ReplicaRow(int(row[0]), name, host, pid, address, version, trains, now_us, now_us, False, 0)

    def beat(self, row: ReplicaRow) -> None:
        """Record the replica's heartbeat, leadership, name and address; committed without a flush to disk
        (a lost beat is only a late one). A row purged meanwhile (its replica was frozen past retention, or
        the clock jumped ahead of its last beat) is written again, with its id."""
        with self._db.write(durable=False) as conn:
            conn.execute(
                f"INSERT INTO replicas ({_REPLICA_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_us = excluded.heartbeat_us, leader = excluded.leader,"
                " name = excluded.name, address = excluded.address",
                (
                    row.id,
                    row.name,
                    row.host,
                    row.pid,
                    row.address,
                    row.version,
                    int(row.trains),
                    row.started_us,
                    row.heartbeat_us,
                    int(row.leader),
                ),
            )

    def stopped(self, replica: int, now_us: int) -> None:
        """Mark the replica stopped (and no longer leading); committed before it returns."""
        with self._db.write() as conn:
            conn.execute("UPDATE replicas SET stopped_us = ?, leader = 0 WHERE id = ?", (now_us, replica))

    def get(self, replica: int) -> ReplicaRow | None:
        """The replica's row, or None when it has none (never registered, or purged)."""
        r = self._db.reader().execute(f"SELECT {_REPLICA_COLS} FROM replicas WHERE id = ?", (replica,)).fetchone()
        return _replica(r) if r else None

    def seen_since(self, since_us: int) -> list[ReplicaRow]:
        """Replicas whose last heartbeat is at or after ``since_us``, by id."""
        rows = (
            self._db.reader()
            .execute(
                f"SELECT {_REPLICA_COLS} FROM replicas WHERE heartbeat_us >= ? AND stopped_us = 0 ORDER BY id",
                (since_us,),
            )
            .fetchall()
        )
        return [_replica(r) for r in rows]

    def purge(self, before_us: int) -> int:
        """Forget replicas stopped, or last seen (killed), before ``before_us``."""
        with self._db.write() as conn:
            return int(
                conn.execute(
                    "DELETE FROM replicas WHERE (stopped_us > 0 AND stopped_us < ?) OR heartbeat_us < ?",
                    (before_us, before_us),
                ).rowcount
            )


class ScheduleRepository:
    """When the leader last ran each periodic task, so that a new leader neither repeats nor skips one."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, task: str, now_us: int, interval_us: int) -> bool:
        """Record that ``task`` runs now, if it last ran at least ``interval_us`` ago (or never); True
        when this call claimed it. One statement decides, so two leaders (a moment of overlap while
        one loses its lock) cannot both claim a run."""
        if self.last(task) > now_us - interval_us:
            return False  # (most calls: not due, and no write transaction for it)
        with self._db.write() as conn:
            row = conn.execute(
                "INSERT INTO schedule (task, at_us) VALUES (?, ?) ON CONFLICT (task) DO UPDATE"
                " SET at_us = excluded.at_us WHERE schedule.at_us <= ? RETURNING at_us",
                (task, now_us, now_us - interval_us),
            ).fetchone()
        return row is not None

    def last(self, task: str) -> int:
        """When ``task`` last ran (0: never)."""
        row = self._db.reader().execute("SELECT at_us FROM schedule WHERE task = ?", (task,)).fetchone()
        return int(row[0]) if row else 0
