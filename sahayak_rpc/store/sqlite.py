"""The SQLite backend (the embedded default): WAL mode, one serialised writer, per-thread readers."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..errors import Unavailable
from .database import Coordinator, Database, StoreError
from .migrations import MIGRATIONS
from .segments import LogSegments, folder_for
from .sql import FetchedRows, SqliteConn, translate_sqlite

log = structlog.get_logger("sahayak_rpc.db")

# Checkpoints (the WAL's pages copied into the database file, with an fsync each side) run on a
# thread of their own every CHECKPOINT_INTERVAL_S, so that no commit waits for one. The writer
# still checkpoints by itself past BACKSTOP_PAGES of WAL (64 MiB), should that thread fall behind.
CHECKPOINT_INTERVAL_S = 0.5
BACKSTOP_PAGES = 16384
MIN_SQLITE = (3, 35, 0)


def _connect(path: str, synchronous: str, busy_timeout_s: float = 5.0) -> SqliteConn:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s, factory=SqliteConn
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    # 64 MiB of page cache: bulk inserts touch index pages all over the file,
    # and SQLite's 2 MiB default thrashes past ~100k outcomes.
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class SqliteDatabase(Database):
    """A SQLite file in WAL mode: one writer connection behind a lock, a reader per thread."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        synchronous: str = "full",
        busy_timeout_s: float = 5.0,
        max_pages: int = 0,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.path = self.location = str(path)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old: sahayak-rpc needs {'.'.join(map(str, MIN_SQLITE))}"
                " or newer (for RETURNING and UPDATE ... FROM); use a Python built with a newer SQLite"
            )
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
        self._readers: list[SqliteConn] = []
        self._reader = SqliteReader(self._read_connection)
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
        self.checkpoints = Checkpointer(
            _connect(self.path, synchronous, busy_timeout_s),
            checkpoint_interval_s,
            before=self.segments.sync if self.segments else None,
        )

    @property
    def schema_version(self) -> int:
        """The last migration applied (the file's ``user_version``)."""
        return int(self._writer.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply the migrations this file lacks. Each runs in a write transaction that first reads the
        version again, so that several processes starting together on one file migrate it once."""
        # Some migrations rebuild a table that others refer to; SQLite can only turn the foreign-key
        # checks off outside a transaction, and checks the whole file afterwards.
        self._writer.execute("PRAGMA foreign_keys=OFF")
        try:
            while True:
                with self.write() as conn:
                    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
                    if current > len(MIGRATIONS):
                        raise StoreError(
                            f"database schema version {current} is newer than this server knows"
                            f" ({len(MIGRATIONS)}): upgrade sahayak-rpc"
                        )
                    if current == len(MIGRATIONS):
                        break
                    for statement in MIGRATIONS[current].split(";\n"):
                        if statement.strip():
                            try:
                                conn.execute(statement)
                            except sqlite3.Error as exc:
                                raise StoreError(
                                    f"cannot upgrade {self.path} to schema version {current + 1}:"
                                    f" {exc} (in: {statement.strip()[:80]} ...)"
                                ) from None
                    conn.execute(f"PRAGMA user_version={current + 1}")
                    broken = conn.execute("PRAGMA foreign_key_check").fetchone()
                    if broken is not None:
                        raise StoreError(f"migration {current + 1} broke a foreign key: {tuple(broken)}")
        finally:
            self._writer.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[SqliteConn]:
        """One write transaction on the writer connection (BEGIN IMMEDIATE, behind the write lock), its
        ``before_commit`` steps run last, committed on exit and rolled back on an exception. ``durable=False``
        commits at synchronous=NORMAL (no fsync). Raises Unavailable (SHUTTING_DOWN, DATABASE_LOCKED,
        STORAGE_UNAVAILABLE) or ResourceExhausted (STORAGE_FULL)."""
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
                    raise translate_sqlite(exc) from None
                conn.pending = []
                try:
                    yield conn
                    for step in conn.pending:
                        step(conn)
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error):
                        raise translate_sqlite(exc) from None
                    raise
            finally:
                if relaxed:
                    conn.execute("PRAGMA synchronous=FULL")

    def reader(self) -> SqliteReader:
        """The reader: each statement on this thread's read connection (WAL: readers never block the
        writer), its rows fetched whole, its errors mapped (translate_sqlite). Raises Unavailable
        (SHUTTING_DOWN) once the database is closed, on a thread that read before as on a new one."""
        return self._reader

    def _read_connection(self) -> SqliteConn:
        """This thread's read connection, opened on first use."""
        if self._closed:
            raise Unavailable("the server is shutting down", reason="SHUTTING_DOWN")
        conn: SqliteConn | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self._synchronous, self._busy_timeout_s)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[SqliteConn]:
        """A read transaction on this thread's reader: one snapshot for several queries."""
        try:
            conn = self._read_connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate_sqlite(exc) from None

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``'s first line: "ok" for a sound file."""
        return str(self._writer.execute("PRAGMA integrity_check").fetchone()[0])

    def coordinator(self, heartbeat_s: float = 1.0) -> Coordinator:
        """A FileCoordinator on lock files beside the database (``heartbeat_s`` is not used: file locks need none)."""
        return FileCoordinator(Path(f"{self.path}-locks"))

    def close(self) -> None:
        """Stop the checkpointer and the log segments, close every connection; later write transactions
        raise Unavailable (SHUTTING_DOWN). Calling it again does nothing."""
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
            try:
                self._writer.execute("PRAGMA optimize")
            except sqlite3.Error as exc:  # (another process of the file may hold its lock: only a tune-up is lost)
                log.info("db.optimize_skipped", error=str(exc))
            self._writer.close()


class SqliteReader:
    """``Database.reader`` on SQLite: each statement on the calling thread's read connection."""

    dialect = "sqlite"

    def __init__(self, connection: Callable[[], SqliteConn]) -> None:
        self._connection = connection  # the calling thread's read connection

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> FetchedRows:
        """Run one statement outside any transaction; returns its rows fetched. Raises what
        translate_sqlite maps a fault to (Unavailable: DATABASE_LOCKED, STORAGE_UNAVAILABLE ...)."""
        try:
            cur = self._connection().execute(sql, args)
            return FetchedRows(cur.fetchall(), cur.rowcount)
        except sqlite3.Error as exc:
            raise translate_sqlite(exc) from None


class FileCoordinator(Coordinator):
    """Replicas of one SQLite file (``serve --workers N``: one machine) coordinate through file locks
    in a folder beside it. flock's locks belong to an open file and go when it closes, or when its
    process dies (SIGKILL included): a lock held is a process alive. Replicas poll the events table
    for changes (``wait`` only sleeps)."""

    poll_s = 0.1

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._mine: dict[str, int] = {}  # lock name -> descriptor holding it
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def _take(self, name: str) -> bool:
        with self._lock:
            if name in self._mine:
                return True
            try:
                self.folder.mkdir(exist_ok=True)
                fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                log.warning("coordination.lock_file_failed", folder=str(self.folder), error=exc.strerror)
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False
                raise
            self._mine[name] = fd
            return True

    def keep(self, replica: int) -> bool:
        """Hold ``replica``'s lock file; False when it cannot be taken (or made)."""
        return self._take(f"replica-{replica}")

    def alive(self, replica: int) -> bool:
        """Whether a process holds ``replica``'s lock file (this one counts); a lock file nobody holds is
        deleted on the way."""
        name = f"replica-{replica}"
        with self._lock:
            if name in self._mine:
                return True
        try:
            fd = os.open(self.folder / name, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Nobody holds it: that replica is gone (ids are never reused), and so can its file.
            try:
                os.unlink(self.folder / name)
            except OSError:
                pass
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)  # (also releases the lock if this took it)
        return False

    def try_lead(self) -> bool:
        """Take the leader lock file, or keep it; False while another process holds it."""
        return self._take("leader")

    def wait(self, timeout_s: float) -> bool:
        """Sleep ``timeout_s`` (or until ``interrupt``); always False: SQLite replicas poll."""
        self._closed.wait(timeout_s)
        return False

    def interrupt(self) -> None:
        """End a ``wait`` in progress, and every later one at once."""
        self._closed.set()

    @property
    def reconnected(self) -> bool:
        """Always False: file locks have no connection to lose."""
        return False

    def close(self) -> None:
        """Release every lock file this process holds; ``wait`` returns at once from now on."""
        self._closed.set()
        with self._lock:
            for fd in self._mine.values():
                os.close(fd)
            self._mine.clear()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a passive checkpoint did (``PRAGMA wal_checkpoint``'s answer)."""

    busy: int  # 1 when it could not run to completion (a reader or writer held it back)
    wal_frames: int  # frames in the WAL
    checkpointed: int  # of those, frames now in the database file


class Checkpointer:
    """Runs passive checkpoints on its own connection and thread, so that commits never wait for one.

    A passive checkpoint copies what it can of the WAL into the database file without waiting for
    readers or the writer (SQLite's rules keep that safe alongside them); once a checkpoint has
    copied everything and no reader still needs the WAL, the next commit starts the WAL afresh. A
    failed checkpoint (a full disk, say) is logged and tried again at the next interval. ``before``
    runs ahead of each one: the log segments' fdatasync, so that what a checkpointed row refers to
    is on disk too (store/segments.py).
    """

    def __init__(self, conn: sqlite3.Connection, interval_s: float, before: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self._interval = interval_s
        self._before = before
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self.last: Checkpoint | None = None
        self.runs = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.run()

    def run(self) -> Checkpoint | None:
        """One passive checkpoint now; None if it failed."""
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
            self.last = Checkpoint(int(busy), int(frames), int(done))
            self.runs += 1
            return self.last

    def close(self) -> None:
        """Stop the checkpoint thread (waiting for a checkpoint in progress) and close its connection."""
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            self._closed = True
            self._conn.close()
