"""The database every repository works through, and the one place that picks its backend.

``open_database("sahayak.db")`` opens SQLite (the embedded default);
``open_database("postgresql://user@host:5432/dbname")`` opens PostgreSQL. Both
give a :class:`Database`: transactions that hand out a :class:`~.sql.Conn`, and a
:class:`Coordinator` for what replicas share (liveness, the leader, wake-ups).
Nothing above ``store/`` knows which backend runs.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .sql import Conn, Reader

if TYPE_CHECKING:
    from .segments import LogSegments


class StoreError(RuntimeError):
    """The database cannot be used (corrupt, newer schema, unreachable, unopenable)."""


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` is a PostgreSQL URL (postgresql:// or postgres://) rather than a SQLite file."""
    return target.startswith(("postgresql://", "postgres://"))


def time_clause(column: str, start_us: int | None, end_us: int | None) -> tuple[str, list[object]]:
    """`` AND column >= ? AND column < ?`` for the ends that are set, and their arguments."""
    sql, args = "", list[object]()
    if start_us is not None:
        sql += f" AND {column} >= ?"
        args.append(start_us)
    if end_us is not None:
        sql += f" AND {column} < ?"
        args.append(end_us)
    return sql, args


def equal_clause(**columns: object) -> tuple[str, list[object]]:
    """`` AND col = ?`` for every column whose value is given (None or "" means: any)."""
    given = [(c, v) for c, v in columns.items() if v is not None and v != ""]
    return "".join(f" AND {c} = ?" for c, _ in given), [v for _, v in given]


class Coordinator(abc.ABC):
    """What the replicas on one database share besides its rows: who lives, who leads, and a wake-up.

    Every method is safe to call from any thread. Losing the backend's connection loses the locks
    (another replica may then lead); ``leading`` says so, and ``keep`` takes them back when it can.
    """

    # How long a follower waits for a wake-up before it reads the change feed anyway.
    poll_s: float = 1.0

    @abc.abstractmethod
    def keep(self, replica: int) -> bool:
        """Hold ``replica``'s liveness lock (taking it again after a lost connection); False when
        the backend cannot be reached."""

    @abc.abstractmethod
    def alive(self, replica: int) -> bool:
        """Whether some process holds ``replica``'s liveness lock (its own holder counts)."""

    @abc.abstractmethod
    def try_lead(self) -> bool:
        """Take the leader lock, or keep it; False while another replica holds it."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> bool:
        """Block until another replica may have changed something (True) or ``timeout_s`` passes
        (False). A backend without notifications just sleeps: its replicas poll."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Make a ``wait`` in progress return now (the replica is stopping)."""

    @property
    @abc.abstractmethod
    def reconnected(self) -> bool:
        """True once after the wake-up channel was re-established (notifications may have been
        missed meanwhile: resynchronise)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every lock this process holds."""


class Database(abc.ABC):
    """Transactions over one database; see store/sql.py for what a connection offers."""

    dialect: str
    location: str  # the file, or the URL without its password: for logs and status
    # Logged batches' features in files beside the database (SQLite only; store/segments.py).
    segments: LogSegments | None = None
    batches_to_segments: bool = False

    @abc.abstractmethod
    def write(self, durable: bool = True) -> AbstractContextManager[Conn]:
        """One write transaction, committed on exit (rolled back on an exception). Raises
        errors.Unavailable (busy, unreachable, shutting down) or ResourceExhausted (storage full).

        ``durable=False`` lets this commit skip the flush to disk: it survives a crash of the
        server process, not of the machine. For writes nobody was promised, such as the
        served-prediction log.
        """

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[Conn]:
        """A read-only transaction: one consistent snapshot for several queries."""

    @abc.abstractmethod
    def reader(self) -> Reader:
        """For a single query outside any transaction (each statement sees the latest commits)."""

    @property
    @abc.abstractmethod
    def schema_version(self) -> int:
        """The last migration applied."""

    @abc.abstractmethod
    def coordinator(self, heartbeat_s: float = 1.0) -> Coordinator:
        """A new coordinator for this process's replica (``Coordinator`` above; one per process), which
        will be asked every ``heartbeat_s`` to keep its locks."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection; later transactions raise errors.Unavailable (SHUTTING_DOWN)."""

    # --- the prediction log's partitions (PostgreSQL); nothing to do elsewhere ---------------

    def prepare_partitions(self, table: str, times_us: Iterator[int] | list[int]) -> None:
        """Make sure ``table`` can take rows at these times."""

    def drop_partitions_before(self, table: str, before_us: int) -> int:
        """Drop ``table``'s partitions that hold only rows older than ``before_us``; returns
        how many rows they held (0 where the table is not partitioned)."""
        return 0


def open_database(
    target: str,
    *,
    synchronous: str = "full",
    busy_timeout_s: float = 5.0,
    max_pages: int = 0,
    pool_size: int = 10,
    application_name: str = "sahayak-rpc",
) -> Database:
    """Open (and migrate) the database ``target`` names: a PostgreSQL URL, else a SQLite file.

    Raises StoreError when it cannot be opened or its schema is newer than this server knows.
    ``synchronous`` and ``max_pages`` apply to SQLite; ``pool_size`` and ``application_name``
    to PostgreSQL (whose commits are always synchronous: acknowledged means on disk).
    """
    if is_postgres_url(target):
        from .postgres import PgDatabase

        return PgDatabase(target, pool_size=pool_size, busy_timeout_s=busy_timeout_s, application_name=application_name)
    from .sqlite import SqliteDatabase

    return SqliteDatabase(target, synchronous=synchronous, busy_timeout_s=busy_timeout_s, max_pages=max_pages)
