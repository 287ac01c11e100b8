"""What a repository sees of a database: the same contract on SQLite and on PostgreSQL.

Repositories write each statement once, with ``?`` placeholders, in the SQL both
databases accept (``ON CONFLICT``, ``RETURNING``, row values, ``coalesce``...).
The few things that differ are methods of the connection, so that no repository
branches on the backend:

- ``lock(name, key)`` serialises a critical section until the transaction ends:
  PostgreSQL takes a transaction-level advisory lock; SQLite has one writer, so
  every write transaction is already serial and it does nothing.
- ``try_execute`` runs a statement that may meet a unique constraint and answers
  None instead of raising (PostgreSQL needs a savepoint for that, SQLite does not).
- ``insert_new`` stores rows whose key may already exist and says which rows it
  stored; ``copy_rows`` appends rows in bulk (PostgreSQL: COPY).
- ``any_of`` writes "column is one of these values" (``IN (?, ...)`` / ``= ANY(?)``),
  and ``skip_locked`` ends a claiming SELECT (``FOR UPDATE SKIP LOCKED`` / nothing).
- ``notify`` wakes other replicas when the transaction commits (PostgreSQL's NOTIFY;
  SQLite's replicas poll instead).
- ``before_commit`` runs a step as the transaction's last, just before it commits: the
  change feed's event (store/events.py) goes there, so that the lock it takes is always
  the last lock a transaction takes (no two transactions can then wait for each other
  through it).

Errors: a backend's own exceptions never leave ``store/``. ``Database.write`` and
``read`` turn operational faults into ``errors.Unavailable`` / ``ResourceExhausted``
by error code (SQLSTATE on PostgreSQL, the extended result code on SQLite).
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from ..errors import ResourceExhausted, Unavailable


class Lock(enum.IntEnum):
    """Named critical sections. A transaction-level lock is held until commit; take them in this
    order (a lower number first) so that no two transactions wait for each other."""

    OUTCOMES = 1  # per model: outcome seqs in commit order, and their running totals
    ALIASES = 2  # per model: alias moves, their history and archive checks
    VERSIONS = 3  # per model: version numbers
    PARTITIONS = 4  # creating prediction-log partitions (PostgreSQL)
    ALERT_EVENTS = 5  # the WatchAlerts cursor in commit order
    EVENTS = 6  # the change feed's cursor in commit order
    # Session-level locks (held by a replica's coordination connection, not by a transaction):
    MIGRATE = 10
    LEADER = 11
    REPLICA = 12  # per replica: held while the replica lives


# PostgreSQL's two-int advisory locks: (namespace | lock, key). The namespace keeps ours apart
# from any other application's advisory locks on the same database.
PG_LOCK_NAMESPACE = 0x5A480000


class Cursor(Protocol):
    """The result of a statement: rows as tuples, in the statement's column order."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed (an INSERT, UPDATE or DELETE)."""

    def fetchone(self) -> Any:
        """The next row, or None after the last."""

    def fetchall(self) -> list[Any]:
        """Every remaining row."""

    def __iter__(self) -> Iterator[Any]: ...


class Reader(Protocol):
    """Runs single statements outside any transaction (``Database.reader``)."""

    dialect: str

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Cursor:
        """Run one statement with ``?`` placeholders (``args`` in order); returns its cursor."""


class Conn(Reader, Protocol):
    """A connection inside one transaction."""

    # Appended to a SELECT that claims a row: concurrent claimers pass over rows another holds.
    skip_locked: str

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor:
        """Run one statement once per row of arguments."""

    def lock(self, name: Lock, key: int = 0) -> None:
        """Take the named lock (for ``key``: a model id, say) until the transaction ends (SQLite: no-op)."""

    def try_execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor | None:
        """Run a statement that may break a unique constraint: None when it did (nothing changed), else its cursor."""

    def insert_new(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: Sequence[str]
    ) -> list[bool]:
        """Insert the rows whose ``key`` does not exist yet (nor came earlier in ``rows``); per row, True if it
        was stored."""

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows in bulk, every one new (PostgreSQL: COPY)."""

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL for "``column`` is one of ``values``", and its arguments (always false for no values)."""

    def notify(self, channel: str, payload: str = "") -> None:
        """Wake the other replicas listening on ``channel`` when the transaction commits."""

    def before_commit(self, step: Callable[[Conn], object]) -> None:
        """Run ``step`` as the transaction's last statements, just before it commits."""


def first_occurrences(keys: Sequence[Any]) -> list[bool]:
    """Per position: is this the first time its key appears in the sequence?"""
    seen: set[Any] = set()
    out = []
    for k in keys:
        out.append(k not in seen)
        seen.add(k)
    return out


# --- SQLite ---------------------------------------------------------------------

# Extended result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_CONSTRAINT = 13, 14, 19
_SQLITE_CONSTRAINT_PRIMARYKEY, _SQLITE_CONSTRAINT_UNIQUE = 1555, 2067
_IN_CHUNK = 500


def sqlite_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's unique or primary-key constraint failure."""
    return isinstance(exc, sqlite3.IntegrityError) and getattr(exc, "sqlite_errorcode", 0) in (
        _SQLITE_CONSTRAINT_UNIQUE,
        _SQLITE_CONSTRAINT_PRIMARYKEY,
    )


def translate_sqlite(exc: sqlite3.Error) -> Exception:
    """Operational faults become errors a client can act on; the rest stay bugs (by result code)."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return Unavailable(f"database busy, retry: {exc}", reason="DATABASE_LOCKED")
    if primary == _SQLITE_FULL:
        return ResourceExhausted(f"storage full: {exc}", reason="STORAGE_FULL")
    if primary in (_SQLITE_IOERR, _SQLITE_READONLY, _SQLITE_CANTOPEN):
        return Unavailable(f"storage unavailable: {exc}", reason="STORAGE_UNAVAILABLE")
    return exc


class FetchedRows:
    """A result fetched whole that reads like a cursor: what a reader's single statement returns, so that no
    database error can surface later, while its rows are read."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        """The next row, or None after the last."""
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[Any]:
        """The rows not read yet."""
        rest = self._rows[self._at :]
        self._at = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class SqliteConn(sqlite3.Connection):
    """sqlite3's own connection (so ``execute`` stays a C call) with the contract's extra methods."""

    dialect = "sqlite"
    skip_locked = ""  # one writer: a claim in a write transaction is already alone
    pending: list[Callable[[Conn], object]]  # before_commit's steps (SqliteDatabase.write runs them)

    def lock(self, name: Lock, key: int = 0) -> None:
        """Nothing to do: SQLite has one writer, so a write transaction is already serial."""

    def try_execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor | None:
        """``Conn.try_execute``: None on a unique or primary-key violation; other integrity errors raise."""
        try:
            return self.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            if sqlite_unique_violation(exc):
                return None
            raise

    def insert_new(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: Sequence[str]
    ) -> list[bool]:
        """Insert ``rows`` in order, skipping those whose ``key`` exists (or came earlier in ``rows``);
        per row, True if it was stored. Inside a write transaction (the one writer: rowids grow)."""
        if not rows:
            return []
        before = self.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0]
        marks = ", ".join("?" * len(columns))
        stored = self.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) DO NOTHING",
            rows,
        ).rowcount
        if stored == len(rows):  # the usual case: every key was new
            return [True] * len(rows)
        at = [columns.index(k) for k in key]
        keys = [tuple(r[i] for i in at) for r in rows]
        new: set[tuple[Any, ...]] = set()
        # Which keys this call stored: their rows are newer than ``before``.
        fixed, varying = key[:-1], key[-1]
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for k in keys:
            groups.setdefault(k[:-1], []).append(k[-1])
        for prefix, values in groups.items():
            where = "".join(f"{c} = ? AND " for c in fixed)
            for start in range(0, len(values), _IN_CHUNK):
                chunk = list(dict.fromkeys(values[start : start + _IN_CHUNK]))
                sql = (
                    f"SELECT {varying} FROM {table} WHERE {where}{varying} IN ({','.join('?' * len(chunk))})"
                    " AND rowid > ?"
                )
                new.update((*prefix, v) for (v,) in self.execute(sql, (*prefix, *chunk, before)))
        first = first_occurrences(keys)
        return [k in new and f for k, f in zip(keys, first, strict=True)]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``Conn.copy_rows``: one INSERT per row, in one executemany."""
        if rows:
            marks = ", ".join("?" * len(columns))
            self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``Conn.any_of``: ``column IN (?, ...)``, or FALSE for no values."""
        if not values:
            return "FALSE", []
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def notify(self, channel: str, payload: str = "") -> None:
        """Nothing to do: replicas on SQLite poll the events table."""

    def before_commit(self, step: Callable[[Conn], object]) -> None:
        """``Conn.before_commit``: queued for SqliteDatabase.write, which runs the steps before its COMMIT."""
        self.pending.append(step)
