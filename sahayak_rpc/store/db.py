"""The SQLite database: WAL mode, one serialised writer, per-thread readers."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from ..errors import ResourceExhausted, Unavailable
from .migrations import MIGRATIONS
from .segments import LogSegments, folder_for

log = structlog.get_logger("sahayak_rpc.db")

# Checkpoints (the WAL's pages copied into the database file, with an fsync each side) run on a
# thread of their own every CHECKPOINT_INTERVAL_S, so that no commit waits for one. The writer
# still checkpoints by itself past BACKSTOP_PAGES of WAL (64 MiB), should that thread fall behind.
CHECKPOINT_INTERVAL_S = 0.5
BACKSTOP_PAGES = 16384


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


class StoreError(RuntimeError):
    """The database cannot be used (corrupt, newer schema, unopenable)."""


def _connect(path: str, synchronous: str, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    # 64 MiB of page cache: bulk inserts touch index pages all over the file,
    # and SQLite's 2 MiB default thrashes past ~100k outcomes.
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def translate(exc: sqlite3.Error) -> Exception:
    """Operational faults become errors a client can act on; the rest stay bugs."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return Unavailable(f"database busy, retry: {exc}", reason="DATABASE_LOCKED")
    if "disk is full" in text or "database or disk is full" in text:
        return ResourceExhausted(f"storage full: {exc}", reason="STORAGE_FULL")
    if "disk i/o" in text or "readonly" in text or "unable to open" in text:
        return Unavailable(f"storage unavailable: {exc}", reason="STORAGE_UNAVAILABLE")
    return exc


class Database:
    def __init__(self, path: str | Path, synchronous: str = "full", busy_timeout_s: float = 5.0,
                 max_pages: int = 0, checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = str(path)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        try:
            self._writer = _connect(self.path, synchronous, busy_timeout_s)
        except sqlite3.Error as exc:
            hint = ""
            folder = os.path.dirname(os.path.abspath(self.path))
            if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
                hint = f" (the folder {folder} is not writable by this user, uid {os.getuid()})"
            raise StoreError(f"cannot open database {self.path}: {exc}{hint}") from None
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self.migrate()
        if max_pages:
            # Per connection, and never below the current size: only the writer grows the file.
            self._writer.execute(f"PRAGMA max_page_count={int(max_pages)}")
        self._writer.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        # Logged batches' features go to files beside the database (store/segments.py), except under
        # a page cap: the cap is on the database file, so then new ones stay inside it (and segments
        # written before stay readable).
        self.segments = LogSegments(folder_for(self.path)) if self.path != ":memory:" else None
        self.batches_to_segments = self.segments is not None and not max_pages
        self.checkpoints = Checkpointer(_connect(self.path, synchronous, busy_timeout_s), checkpoint_interval_s,
                                        before=self.segments.sync if self.segments else None)

    @property
    def schema_version(self) -> int:
        return int(self._writer.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {current} is newer than this server knows ({len(MIGRATIONS)})"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.write() as conn:
                for statement in script.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version}")

    @property
    def serial(self) -> threading.RLock:
        """Held by every write transaction; hold it across a write and what must follow
        its commit in the same order as the commits (re-entrant)."""
        return self._write_lock

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; committed (and, with synchronous=full, fsynced) on exit.

        ``durable=False`` skips the fsync of this commit only (synchronous=NORMAL for it): the
        commit survives a crash of the process, and reaches the disk with the next durable
        commit or checkpoint. For writes nobody was promised, such as the served-prediction log.
        """
        if self._closed:
            raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
        with self._write_lock:
            conn = self._writer
            relaxed = not durable and self._synchronous == "full"
            if relaxed:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise translate(exc) from None
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error):
                        raise translate(exc) from None
                    raise
            finally:
                if relaxed:
                    conn.execute("PRAGMA synchronous=FULL")

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: readers never block the writer)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
            conn = _connect(self.path, self._synchronous, self._busy_timeout_s)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several queries."""
        conn = self.reader()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def integrity_check(self) -> str:
        return str(self._writer.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self.checkpoints.close()
            if self.segments is not None:
                self.segments.close()
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._writer.execute("PRAGMA optimize")
            self._writer.close()


class Checkpointer:
    """Runs passive checkpoints on its own connection and thread, so that commits never wait for one.

    A passive checkpoint copies what it can of the WAL into the database file without waiting for
    readers or the writer (SQLite's rules keep that safe alongside them); once a checkpoint has
    copied everything and no reader still needs the WAL, the next commit starts the WAL afresh. A
    failed checkpoint (a full disk, say) is logged and tried again at the next interval. ``before``
    runs ahead of each one: the log segments' fdatasync, so that what a checkpointed row refers to
    is on disk too (store/segments.py).
    """

    def __init__(self, conn: sqlite3.Connection, interval_s: float,
                 before: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self._interval = interval_s
        self._before = before
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, frames checkpointed)
        self.runs = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.run()

    def run(self) -> tuple[int, int, int] | None:
        """One passive checkpoint now: (busy, WAL frames, frames checkpointed), or None if it failed."""
        with self._lock:
            if self._closed:
                return None
            if self._before is not None:
                try:
                    self._before()
                except Exception:  # a bug of ours: logged; the checkpoint, and the thread, go on
                    log.exception("db.before_checkpoint_failed")
            try:
                busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                self.failures += 1
                log.warning("db.checkpoint_failed", error=str(exc))
                return None
            self.last = (int(busy), int(frames), int(done))
            self.runs += 1
            return self.last

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            self._closed = True
            self._conn.close()
