"""The PostgreSQL backend: many serving processes, on any machines, on one database.

psycopg 3 with a connection pool. Every connection is in autocommit mode and
``write`` / ``read`` open their transaction explicitly, so a single query from
``reader`` never holds a transaction open. Commits are synchronous (the server's
default ``synchronous_commit = on``): an acknowledged write is on disk; only the
served-prediction log's commits turn it off for themselves.

Statements arrive with ``?`` placeholders (store/sql.py) and are rewritten once
each into psycopg's ``%s``. Errors map by SQLSTATE, never by message text.

The prediction log (``predictions``, ``prediction_batches``) is partitioned by
day of ``created_us``: a partition is created before the first row of its day is
written, and retention drops whole days instead of deleting millions of rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
import structlog
from psycopg import errors as pg_errors

from ..errors import ResourceExhausted, Unavailable
from .database import Coordinator, Database, StoreError
from .migrations import PG_MIGRATIONS
from .sql import PG_LOCK_NAMESPACE, FetchedRows, Lock, first_occurrences

log = structlog.get_logger("sahayak_rpc.postgres")

DAY_US = 86_400_000_000
PARTITIONED = ("predictions", "prediction_batches")
POOL_WAIT_S = 1.0
# Batches of at least this many rows are staged with COPY (measured here: VALUES costs 0.45 ms for a row
# against 1.8 ms staged, staging 12 ms for 1,000 rows against 25 ms as VALUES; docs/benchmarks.md).
STAGE_FROM_ROWS = 128
# Creating or dropping a partition waits this long (ms) for its table's lock, then gives up: never
# holding the prediction log's writers and readers behind it for long.
DDL_LOCK_TIMEOUT_MS = 2000
# Partitions made ahead of time at start (today and the next days), so that the log's first
# writes of a day rarely wait for DDL.
PARTITIONS_AHEAD = 2


def redact(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@functools.lru_cache(maxsize=2048)
def _pg(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (a literal ``%`` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


def translate_pg(exc: BaseException) -> BaseException:
    """Operational faults become errors a client can act on (by SQLSTATE); the rest stay bugs."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return Unavailable(f"no database connection free, retry: {exc}", reason="DATABASE_BUSY")
    if not isinstance(exc, psycopg.Error):
        return exc
    state = exc.sqlstate or ""
    if state == "53100":  # disk_full
        return ResourceExhausted(f"storage full: {exc}", reason="STORAGE_FULL")
    if state == "53200":  # out_of_memory: on the server, most often its lock table (max_locks_per_transaction)
        return ResourceExhausted(f"database out of memory: {exc}", reason="DATABASE_OUT_OF_MEMORY")
    if state in ("55P03", "57014"):  # lock_not_available, query_canceled (lock_timeout / statement_timeout)
        return Unavailable(f"database busy, retry: {exc}", reason="DATABASE_LOCKED")
    if state in ("40001", "40P01"):  # serialization_failure, deadlock_detected
        return Unavailable(f"database conflict, retry: {exc}", reason="DATABASE_CONFLICT")
    if (
        state.startswith(("08", "53", "57P", "58"))
        or state == "25006"
        or (isinstance(exc, psycopg.OperationalError) and not state)
    ):
        # connection lost or refused, out of resources, the server shutting down, I/O error,
        # a read-only standby, or a connection the client itself found broken
        return Unavailable(f"database unavailable, retry: {exc}", reason="DATABASE_UNAVAILABLE")
    return exc


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's unique (or primary-key) constraint failure."""
    return isinstance(exc, pg_errors.UniqueViolation)


class PgConn:
    """A pooled psycopg connection inside one transaction, speaking the contract of store/sql.py."""

    dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.pending: list[Callable[[Any], object]] = []
        self._staged: set[str] = set()  # staging tables this transaction has filled

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        """``Conn.execute``: the statement with ``?`` rewritten to ``%s``; returns psycopg's cursor."""
        return self.raw.execute(_pg(sql), args or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        """``Conn.executemany``, on a cursor of its own."""
        cur = self.raw.cursor()
        cur.executemany(_pg(sql), rows)
        return cur

    def lock(self, name: Lock, key: int = 0) -> None:
        """``Conn.lock``: a transaction-level advisory lock (our namespace | ``name``, ``key``), held until commit."""
        self.raw.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PG_LOCK_NAMESPACE | int(name), int(key)))

    def try_execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any] | None:
        """``Conn.try_execute``: in a savepoint, so a unique violation (None) leaves the transaction usable."""
        try:
            with self.raw.transaction():  # a savepoint: the failed statement must not abort the rest
                return self.execute(sql, args)
        except pg_errors.UniqueViolation:
            return None

    def insert_new(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: Sequence[str]
    ) -> list[bool]:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the keys stored: idempotent, and a per-row answer.
        A large batch is first COPYed into a staging table and inserted from there in one statement; a
        small one (RecordOutcome's single row, say) goes in as VALUES, which costs less than staging."""
        if not rows:
            return []
        cols = ", ".join(columns)
        keys_sql = ", ".join(key)
        conflict = f" ON CONFLICT ({keys_sql}) DO NOTHING RETURNING {keys_sql}"
        if len(rows) < STAGE_FROM_ROWS:
            marks = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
            stored = {
                tuple(r)
                for r in self.raw.execute(
                    f"INSERT INTO {table} ({cols}) VALUES {marks}{conflict}", [v for row in rows for v in row]
                )
            }
        else:
            stage = f"stage_{table}"
            # Per connection (a temporary table lives as long as its session), emptied at each commit
            # (an explicit TRUNCATE per batch cost 2.5 ms of ~20 here: only a second staging in one
            # transaction empties it first).
            if stage in self._staged:
                self.raw.execute(f"DELETE FROM {stage}")
            else:
                self.raw.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS"
                    f" SELECT 0::bigint AS ord, {cols} FROM {table} WITH NO DATA"
                )
                self._staged.add(stage)
            with self.raw.cursor().copy(f"COPY {stage} (ord, {cols}) FROM STDIN") as copy:
                for i, row in enumerate(rows):
                    copy.write_row((i, *row))
            stored = {
                tuple(r)
                for r in self.raw.execute(
                    f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ORDER BY ord{conflict}"
                )
            }
        at = [list(columns).index(k) for k in key]
        keys = [tuple(r[i] for i in at) for r in rows]
        first = first_occurrences(keys)
        return [k in stored and f for k, f in zip(keys, first, strict=True)]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``Conn.copy_rows``: COPY FROM STDIN."""
        if not rows:
            return
        with self.raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``Conn.any_of``: ``column = ANY(?)`` with the values as one array argument."""
        return f"{column} = ANY(?)", [list(values)]

    def notify(self, channel: str, payload: str = "") -> None:
        """``Conn.notify``: pg_notify, delivered to the listening sessions when the transaction commits."""
        # Delivered when the transaction commits, to the sessions listening then.
        self.raw.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def before_commit(self, step: Callable[[Any], object]) -> None:
        """``Conn.before_commit``: queued for PgDatabase.write, which runs the steps before it commits."""
        self.pending.append(step)


class PgReader:
    """``Database.reader`` on PostgreSQL: each statement borrows a pooled connection and returns it."""

    dialect = "postgresql"

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> FetchedRows:
        """Run one statement on a pooled connection, outside any transaction; returns its rows fetched
        (errors mapped as in ``PgDatabase.connection``)."""
        with self._db.connection() as raw:
            cur = raw.execute(_pg(sql), args or None)
            rows = cur.fetchall() if cur.description is not None else []
            return FetchedRows(rows, cur.rowcount)


class PgDatabase(Database):
    """A PostgreSQL database (migrated on opening) through a pool of ``pool_size`` connections; a call waits
    at most a second for a free one. Raises StoreError when it cannot be reached within ``connect_timeout_s``
    or its schema is newer than this server knows."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        busy_timeout_s: float = 5.0,
        application_name: str = "sahayak-rpc",
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.location = redact(url)
        self.application_name = application_name
        self._busy_timeout_s = busy_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._closed = False
        self._partitions: set[tuple[str, int]] = set()
        self._partition_lock = threading.Lock()
        self._migrate()
        # A call waits at most a second for a pooled connection: longer means the pool is exhausted (load
        # beyond its size) or PostgreSQL is unreachable, and UNAVAILABLE lets the client retry or give up.
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min(2, pool_size),
            max_size=pool_size,
            timeout=POOL_WAIT_S,
            kwargs=self._connect_kwargs(),
            configure=self._configure,
            name="sahayak",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise StoreError(f"cannot connect to {self.location} within {connect_timeout_s:.0f}s") from None
        self._reader = PgReader(self)
        today = int(time.time() * 1_000_000) // DAY_US * DAY_US
        for table in PARTITIONED:
            self.prepare_partitions(table, [today + d * DAY_US for d in range(PARTITIONS_AHEAD + 1)])

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "application_name": self.application_name,
            "connect_timeout": max(1, int(self._connect_timeout_s)),
            # A replica on a machine that vanished is noticed by TCP keepalives, not after hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # A write that waits this long for a row or advisory lock answers UNAVAILABLE (DATABASE_LOCKED),
        # as SQLite's busy timeout does.
        conn.execute(f"SET lock_timeout = {int(self._busy_timeout_s * 1000)}")
        # Acknowledged means on disk, whatever the server's own default says (the prediction log's
        # commits turn it off for themselves: PgDatabase.write(durable=False)).
        conn.execute("SET synchronous_commit = on")

    def connect(self, **extra: Any) -> psycopg.Connection[Any]:
        """A new connection of its own (not pooled): for session locks and LISTEN."""
        try:
            return psycopg.connect(self.url, **{**self._connect_kwargs(), **extra})
        except psycopg.Error as exc:
            raise translate_pg(exc) from None

    # --- schema ---------------------------------------------------------------------

    def _migrate(self) -> None:
        """Apply missing migrations under a session-level advisory lock: replicas that start together
        wait for each other, and the first one migrates."""
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self._connect_timeout_s)),
                application_name=self.application_name,
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.location}: {str(exc).strip()}") from None
        try:
            conn.execute("SELECT pg_advisory_lock(%s, 0)", (PG_LOCK_NAMESPACE | Lock.MIGRATE,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            current = int(row[0]) if row else 0
            if current > len(PG_MIGRATIONS):
                raise StoreError(
                    f"database schema version {current} is newer than this server knows"
                    f" ({len(PG_MIGRATIONS)}): upgrade sahayak-rpc"
                )
            for version in range(current + 1, len(PG_MIGRATIONS) + 1):
                with conn.transaction():
                    for statement in PG_MIGRATIONS[version - 1].split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("postgres.migrated", version=version, database=self.location)
        except psycopg.Error as exc:
            raise StoreError(f"cannot migrate {self.location}: {str(exc).strip()}") from None
        finally:
            conn.close()  # (releases the advisory lock)

    @property
    def schema_version(self) -> int:
        """The last migration applied (the largest row of ``schema_version``)."""
        row = self.reader().execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    # --- transactions -----------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit), with errors mapped."""
        if self._closed:
            raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
        try:
            with self._pool.connection() as raw:
                yield raw
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise translate_pg(exc) from None

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[PgConn]:
        """One write transaction on a pooled connection, its ``before_commit`` steps run last, committed on exit
        and rolled back on an exception. ``durable=False`` turns synchronous_commit off for this commit alone.
        Raises Unavailable (SHUTTING_DOWN, DATABASE_BUSY, DATABASE_LOCKED, DATABASE_CONFLICT, DATABASE_UNAVAILABLE)
        or ResourceExhausted (STORAGE_FULL, DATABASE_OUT_OF_MEMORY)."""
        with self.connection() as raw:
            with raw.transaction():
                if not durable:
                    raw.execute("SET LOCAL synchronous_commit TO OFF")
                conn = PgConn(raw)
                yield conn
                for step in conn.pending:
                    step(conn)

    @contextmanager
    def read(self) -> Iterator[PgConn]:
        """A read-only REPEATABLE READ transaction: one snapshot for several queries; errors mapped as in ``write``."""
        with self.connection() as raw:
            with raw.transaction():
                raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield PgConn(raw)

    def reader(self) -> PgReader:
        """The reader: each statement on a pooled connection of its own, autocommit."""
        return self._reader

    def coordinator(self, heartbeat_s: float = 1.0) -> Coordinator:
        """A PgCoordinator for this process's replica: advisory locks on a session of its own, LISTEN on
        another."""
        return PgCoordinator(self, heartbeat_s)

    def close(self) -> None:
        """Close the pool; later transactions raise Unavailable (SHUTTING_DOWN). Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    # --- the prediction log's partitions -------------------------------------------------

    def prepare_partitions(self, table: str, times_us: Iterator[int] | list[int]) -> None:
        """Make sure ``table`` has a day partition for each of these times, creating the missing ones in a
        transaction of its own (remembered by this process). Raises Unavailable (DATABASE_LOCKED) when the
        table's lock cannot be had within DDL_LOCK_TIMEOUT_MS."""
        days = {t // DAY_US for t in times_us}
        with self._partition_lock:
            missing = sorted(d for d in days if (table, d) not in self._partitions)
        if not missing:
            return
        # In a transaction of its own, before the rows' (creating a partition locks its table), waiting for
        # that lock a short while only: the leader makes the coming days' partitions ahead of time
        # (PredictionRepository.prepare_ahead), so a writer rarely gets here.
        with self.write() as conn:
            conn.raw.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}")
            conn.lock(Lock.PARTITIONS)
            for day in missing:
                conn.raw.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition_name(table, day)} PARTITION OF {table}"
                    f" FOR VALUES FROM ({day * DAY_US}) TO ({(day + 1) * DAY_US})"
                )
        with self._partition_lock:
            self._partitions.update((table, d) for d in missing)

    def drop_partitions_before(self, table: str, before_us: int) -> int:
        """Drop the day partitions that end at or before ``before_us`` (whole days past retention);
        returns how many rows they held. A drop that cannot have its table's lock at once is left for the
        next retention."""
        expired = []
        for (name,) in (
            self.reader()
            .execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = ?::regclass",
                (table,),
            )
            .fetchall()
        ):
            day = _partition_day(name, table)
            if day is not None and (day + 1) * DAY_US <= before_us:
                # Counted before the drop, outside its lock (no row arrives for a day past retention).
                expired.append((day, name, int(self.reader().execute(f"SELECT count(*) FROM {name}").fetchone()[0])))
        dropped_rows = 0
        for day, name, rows in expired:
            with self.write() as conn:
                conn.raw.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}")
                conn.lock(Lock.PARTITIONS)
                conn.raw.execute(f"DROP TABLE IF EXISTS {name}")
            with self._partition_lock:
                self._partitions.discard((table, day))
            dropped_rows += rows
        return dropped_rows


def _partition_name(table: str, day: int) -> str:
    return f"{table}_d{dt.datetime.fromtimestamp(day * 86400, dt.UTC):%Y%m%d}"


def _partition_day(name: str, table: str) -> int | None:
    prefix = f"{table}_d"
    if not name.startswith(prefix):
        return None
    try:
        when = dt.datetime.strptime(name[len(prefix) :], "%Y%m%d").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(when.timestamp()) // 86400


class PgCoordinator(Coordinator):
    """Session-level advisory locks on a connection of their own (the replica's liveness lock, and
    the leader lock while it leads): closing the session (the process dies, or the connection is
    cut) releases them, and another replica takes the lead. LISTEN on a second connection wakes the
    replica when another commits a change; a notification is a hint, the events table the record."""

    CHANNEL = "sahayak_events"

    def __init__(self, db: PgDatabase, heartbeat_s: float = 1.0) -> None:
        self._db = db
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._locks: psycopg.Connection[Any] | None = None
        self._replica = 0
        self._leading = False
        self._listen: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        self._reconnected = False
        self._closed = threading.Event()

    def _session(self) -> psycopg.Connection[Any] | None:
        """The lock session, checked with a round trip (under self._lock). A lost session has lost its
        locks: a new one takes this replica's liveness lock again (the leader lock is competed for anew)."""
        conn = self._locks
        if conn is not None and not conn.closed and not conn.broken:
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                pass
        if conn is not None:
            log.warning("coordination.session_lost", replica=self._replica, was_leading=self._leading)
            conn.close()
        self._locks, self._leading = None, False
        try:
            conn = self._db.connect(application_name=f"{self._db.application_name} locks")
            # The locks last as long as this session, and PostgreSQL ends a session only when it notices
            # its client gone: a frozen process (SIGSTOP, a stalled VM) answers TCP keepalives, and a host
            # that vanished is noticed after the server's TCP timeouts (two hours by default). This session
            # runs a query every heartbeat, so: end it when it has been idle ten heartbeats (PostgreSQL 14+),
            # and probe its TCP connection from the server's side every few seconds.
            idle_ms = int(max(10.0, 10 * self.heartbeat_s) * 1000)
            for setting, value in (
                ("idle_session_timeout", f"{idle_ms}"),
                ("tcp_keepalives_idle", "10"),
                ("tcp_keepalives_interval", "5"),
                ("tcp_keepalives_count", "3"),
                ("tcp_user_timeout", f"{idle_ms}"),
            ):
                try:
                    conn.execute(f"SET {setting} = {value}")
                except psycopg.Error:  # (idle_session_timeout: PostgreSQL 13 has none; then TCP alone)
                    conn.rollback()
            if self._replica and not self._try(conn, Lock.REPLICA, self._replica):
                conn.close()
                return None
        except Exception as exc:
            log.warning("coordination.connect_failed", error=str(exc))
            return None
        self._locks = conn
        return conn

    @staticmethod
    def _try(conn: psycopg.Connection[Any], name: Lock, key: int) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (PG_LOCK_NAMESPACE | int(name), key)).fetchone()
        return bool(row and row[0])

    def keep(self, replica: int) -> bool:
        """Hold ``replica``'s liveness lock on the lock session, reconnecting (and taking it again) after a
        lost session; False when the database cannot be reached or another session holds it."""
        with self._lock:
            if self._replica != replica:
                if self._locks is not None:  # (another replica id on this session: start afresh)
                    self._locks.close()
                    self._locks, self._leading = None, False
                self._replica = replica
            return self._session() is not None

    def alive(self, replica: int) -> bool:
        """Whether some session holds ``replica``'s liveness lock (this one's counts), as pg_locks shows."""
        with self._lock:
            if replica == self._replica and self._locks is not None and not self._locks.broken:
                return True
        # Someone holds its lock: a granted advisory lock with our namespace and its key.
        row = (
            self._db.reader()
            .execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = ? AND objid::bigint = ?"
                " AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname ="
                " current_database()) LIMIT 1",
                (PG_LOCK_NAMESPACE | Lock.REPLICA, replica),
            )
            .fetchone()
        )
        return row is not None

    def try_lead(self) -> bool:
        """Take the leader lock on the lock session, or keep it; False while another replica holds it or the
        database is away."""
        with self._lock:
            conn = self._session()
            if conn is None:
                return False
            if not self._leading:
                try:
                    self._leading = self._try(conn, Lock.LEADER, 0)
                except psycopg.Error:
                    self._leading = False
            return self._leading

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a notification on the events channel (True), reconnecting the listener
        when it was lost (``reconnected`` then says so); False on a timeout, a lost listener, or after
        ``interrupt``."""
        with self._listen_lock:
            conn = self._listen
            if conn is None or conn.closed or conn.broken:
                try:
                    conn = self._listen = self._db.connect(application_name=f"{self._db.application_name} listen")
                    conn.execute(f"LISTEN {self.CHANNEL}")
                except Exception as exc:
                    self._listen = None
                    log.warning("coordination.listen_failed", error=str(exc))
                    self._closed.wait(min(timeout_s, 1.0))
                    return False
                self._reconnected = True
        if self._closed.is_set():
            return False
        try:
            for _ in conn.notifies(timeout=timeout_s, stop_after=1):
                return True
        except psycopg.Error as exc:
            log.warning("coordination.listen_lost", error=str(exc))
        return False

    def interrupt(self) -> None:
        """End a ``wait`` in progress (by a notification of our own), and every later one at once."""
        self._closed.set()
        try:  # a notification is what ends the listener's wait
            with self._db.connection() as raw:
                raw.execute("SELECT pg_notify(%s, 'stop')", (self.CHANNEL,))
        except Exception:  # the database is away: the wait ends at its timeout
            pass

    @property
    def reconnected(self) -> bool:
        """True once after the listener connected afresh: notifications may have been missed meanwhile."""
        with self._listen_lock:
            was, self._reconnected = self._reconnected, False
            return was

    def close(self) -> None:
        """Close the lock and listen sessions, releasing their locks; ``wait`` returns at once from now on."""
        self._closed.set()
        with self._lock:
            if self._locks is not None:
                self._locks.close()
                self._locks = None
            self._leading = False
        with self._listen_lock:
            if self._listen is not None:
                self._listen.close()
                self._listen = None
