"""Move a server's state from its SQLite file to a PostgreSQL database (``sahayak-rpc migrate-db``).

The copy keeps every key as it was (model ids, outcome seqs, version numbers, alias event ids,
run seqs, alert seqs and alert event seqs): clients hold page tokens and WatchAlerts cursors
built from them. It reads the source in one read transaction (one snapshot), in chunks, and
loads the target with binary COPY in one write transaction, so a failure, or Ctrl-C, leaves the
target without a row of it and the next attempt may simply run again: there is no half-copied
target to detect or clean up. Size was weighed: PostgreSQL writes a transaction's rows to the
tables as they come (memory does not grow with it) and a rollback only leaves them dead (the
disk space comes back with autovacuum, or at once with DROP DATABASE). What grows is the locks
held until commit: one per table, partition and index touched. The prediction log has a
partition per day, so a log that spans a few thousand days needs a larger
``max_locks_per_transaction`` (PostgreSQL's error says so; 1,500 days load with its default
settings). The price of one transaction is that a failure late in a long copy redoes it
all.

What is not copied: ``events`` (the change feed that running replicas follow: a cursor only in
their memory), ``replicas`` (who served the SQLite file; their ids are kept out of use on the
target, see ``_RESERVED``), and ``log_segments`` (SQLite's bookkeeping of the files beside it:
on PostgreSQL a logged batch's features are stored inline, so the transfer reads them from the
segments and stores the bytes themselves).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import psycopg

from ..errors import ServiceError
from .batchcodec import MAGIC, encode_probabilities
from .database import StoreError, is_postgres_url, open_database
from .postgres import DAY_US, PgConn, PgDatabase
from .segments import LogSegments, LostPayload, is_ref
from .sql import SqliteConn
from .sqlite import SqliteDatabase

# The tables that hold the server's state, in an order that satisfies their foreign keys.
COPY_ORDER = (
    "models",
    "outcome_totals",
    "outcomes",
    "model_versions",
    "aliases",
    "alias_events",
    "training_runs",
    "run_events",
    "predictions",
    "prediction_batches",
    "secrets",
    "feedback",
    "performance_records",
    "alerts",
    "alert_events",
    "schedule",
)
SKIPPED = ("events", "replicas", "log_segments")
CHUNK_ROWS = 5000
# A table of at least this many rows is loaded without its plain indexes, which are built afterwards.
REBUILD_INDEXES_FROM = 20_000
_SQLITE_HEADER = b"SQLite format 3\x00"
_LEN = struct.Struct("<I")


class TransferError(RuntimeError):
    """The transfer was refused (a bad source or target, a target that holds data) or failed; the
    target holds nothing of it."""


@dataclass(frozen=True)
class LostBatch:
    """A logged batch whose features were gone from the source's log segments (not copied)."""

    batch_id: str
    rows: int
    created_us: int
    reason: str


@dataclass(frozen=True)
class TransferReport:
    """What ``copy_database`` copied: rows per table (in copy order, equal on both sides), the
    seconds each table took and the whole transfer's, and the logged batches left out because
    their features were lost."""

    source: str
    target: str  # the URL without its password
    tables: dict[str, int]
    table_seconds: dict[str, float]
    seconds: float
    lost_batches: tuple[LostBatch, ...] = field(default=())

    @property
    def rows(self) -> int:
        """Rows copied, over every table."""
        return sum(self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-ready), with the total ``rows`` and ``lost_predictions`` (the rows of
        the batches left out)."""
        out = dataclasses.asdict(self)
        out["rows"] = self.rows
        out["lost_predictions"] = sum(b.rows for b in self.lost_batches)
        return out


def copy_database(source: str, target: str, *, progress: Callable[[str, int], None] | None = None) -> TransferReport:
    """Copy the server state in the SQLite file ``source`` into the empty PostgreSQL database ``target``.

    ``source`` is opened as a server start would open it, so a file written by an older version is
    first upgraded to the current schema (in place: it stays usable by this version only). Stop the
    server on it first: the transfer refuses a source a running server holds. ``target`` (a
    ``postgresql://`` URL) gets the current schema if it has none; it must hold no rows of the
    server's tables. ``progress(table, rows copied so far)`` is called after each chunk.

    Every key value is kept, and each identity sequence on the target is moved past the largest
    copied value, so that rows made later on PostgreSQL never collide with copied ones. A logged
    batch's features are stored inline (read from the source's log segments where its row holds a
    reference; older JSON text re-encoded in the binary layout, reading back the same). A batch whose
    features are lost (a missing or damaged segment: ``LostPayload``) is left out: its probabilities
    are left out with it, and its prediction ids are unknown on the target. On PostgreSQL no stored
    value reads back as "lost" (a segment reference there fails to decode as a corrupt row, not as
    ``LostPayload``), and a value that reads back as a batch would make up features. The report
    lists the batches left out.

    Returns a :class:`TransferReport`. Raises :class:`TransferError` when the source is not a SQLite
    file, is in use by a running server, or has a table this version does not know; when the target
    is not a PostgreSQL URL or holds data; or when the copy fails (the target then holds none of it).
    Raises ``store.StoreError`` when a database cannot be opened (unreachable, a newer schema).
    """
    started = time.monotonic()
    _check_source_file(source)
    if not is_postgres_url(target):
        raise TransferError(f"the target must be a postgresql:// URL, not {target!r}")
    target_db = open_database(target)
    try:
        assert isinstance(target_db, PgDatabase)
        with target_db.read() as conn:
            held = _tables_with_rows(conn)
        if held:
            raise TransferError(_not_empty(target_db, held))
        source_db = open_database(source)
        try:
            assert isinstance(source_db, SqliteDatabase)
            tables, seconds, lost = _copy(source_db, target_db, progress)
        finally:
            source_db.close()
        _analyze(target_db, tables)
    finally:
        target_db.close()
    return TransferReport(
        source, target_db.location, tables, seconds, round(time.monotonic() - started, 3), tuple(lost)
    )


def run_cli(source: str, target: str, json_out: bool) -> int:
    """The ``migrate-db SOURCE TARGET [--json]`` command: copy, then print a summary (or the report
    as JSON) on stdout. Returns the exit code: 0 copied, 1 refused or failed (the reason on stderr)."""

    def show(table: str, rows: int) -> None:
        if not json_out and sys.stderr.isatty():
            print(f"\r  {table}: {rows:,} rows", end="", file=sys.stderr, flush=True)

    try:
        report = copy_database(source, target, progress=show)
    except (TransferError, StoreError, ServiceError) as exc:
        if not json_out and sys.stderr.isatty():
            print(file=sys.stderr)
        print(f"sahayak-rpc: {exc}", file=sys.stderr)
        return 1
    if not json_out and sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    if json_out:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"copied {report.source} to {report.target}: {report.rows:,} rows in {report.seconds:.2f} s")
    for table, rows in report.tables.items():
        spent = report.table_seconds.get(table, 0.0)
        rate = f"  {rows / spent:>10,.0f} rows/s" if rows >= 1000 and spent > 0 else ""
        print(f"  {table:<20} {rows:>10,}{rate}")
    if report.lost_batches:
        lost_rows = sum(b.rows for b in report.lost_batches)
        print(
            f"left out {len(report.lost_batches):,} logged batches ({lost_rows:,} predictions) whose features"
            " were lost from the log segments:"
        )
        for b in report.lost_batches[:10]:
            print(f"  {b.batch_id} ({b.rows} rows): {b.reason}")
        if len(report.lost_batches) > 10:
            print(f"  ... and {len(report.lost_batches) - 10:,} more (--json lists them all)")
    return 0


# --- checks --------------------------------------------------------------------------------


def _check_source_file(source: str) -> None:
    if is_postgres_url(source):
        raise TransferError(f"the source must be a SQLite database file, not a PostgreSQL URL ({source!r})")
    # open_database would create a missing file (and migrate anything it can open): look first.
    try:
        with open(source, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        raise TransferError(f"no database at {source}") from None
    except IsADirectoryError:
        raise TransferError(f"{source} is a directory, not a SQLite database file") from None
    except OSError as exc:
        raise TransferError(f"cannot read {source}: {exc.strerror}") from None
    if header != _SQLITE_HEADER:
        raise TransferError(f"{source} is not a SQLite database file")


def _tables_with_rows(conn: PgConn) -> list[str]:
    """The copied tables that hold a row on the target."""
    return [t for t in COPY_ORDER if conn.raw.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None]


def _not_empty(db: PgDatabase, held: list[str]) -> str:
    return (
        f"the target {db.location} already holds data (in {', '.join(held)}): a transfer goes into an empty"
        " database only, and this one was not changed. To start over, drop and recreate it"
        " (DROP DATABASE ...; CREATE DATABASE ...), then run the transfer again"
    )


def _check_not_served(db: SqliteDatabase, conn: SqliteConn) -> None:
    """Refuse a source that a running server holds: what it writes after the snapshot would be lost."""
    coordinator = db.coordinator()
    try:
        for (replica,) in conn.execute("SELECT id FROM replicas WHERE stopped_us = 0"):
            if coordinator.alive(int(replica)):
                raise TransferError(f"a server is running on {db.location} (replica {replica}): stop it first")
    finally:
        coordinator.close()


# --- the copy ------------------------------------------------------------------------------


def _source_tables(conn: SqliteConn) -> set[str]:
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {n for n in names if not n.startswith("sqlite_")}


def _columns(db: SqliteDatabase, conn: SqliteConn, pg: PgConn, table: str) -> tuple[list[str], list[str]]:
    """The source's columns of ``table`` and their PostgreSQL types (for binary COPY)."""
    source_cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    target_types = dict(
        pg.raw.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (table,),
        ).fetchall()
    )
    missing = [c for c in source_cols if c not in target_types]
    if missing:
        raise TransferError(
            f"{db.location}: {table}.{', '.join(missing)} has no place on PostgreSQL: this version cannot transfer it"
        )
    return source_cols, [str(target_types[c]) for c in source_cols]


def _copy(
    source_db: SqliteDatabase,
    target_db: PgDatabase,
    progress: Callable[[str, int], None] | None,
) -> tuple[dict[str, int], dict[str, float], list[LostBatch]]:
    tables: dict[str, int] = {}
    seconds: dict[str, float] = {}
    lost: list[LostBatch] = []
    current = "(start)"
    with source_db.read() as src:
        _check_not_served(source_db, src)
        unknown = _source_tables(src) - set(COPY_ORDER) - set(SKIPPED)
        if unknown:
            raise TransferError(
                f"{source_db.location} has tables this version does not know how to transfer:"
                f" {', '.join(sorted(unknown))}"
            )
        expected = {t: int(src.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in COPY_ORDER}
        try:
            # Partitions are DDL, made in transactions of their own before the copy's (which locks the
            # tables), a hundred days at a time (each takes locks; a transaction can hold a few thousand).
            for table in ("predictions", "prediction_batches"):
                current = f"{table} (partitions)"
                days = [int(d) * DAY_US for (d,) in src.execute(f"SELECT DISTINCT created_us / {DAY_US} FROM {table}")]
                for at in range(0, len(days), 100):
                    target_db.prepare_partitions(table, days[at : at + 100])
            with target_db.write() as pg:
                # Writers block until the copy commits; a server started on the target meanwhile waits
                # (or times out) instead of writing rows, such as its own signing key, under the copy.
                pg.raw.execute(f"LOCK TABLE {', '.join(COPY_ORDER)} IN EXCLUSIVE MODE")
                held = _tables_with_rows(pg)
                if held:
                    raise TransferError(_not_empty(target_db, held))
                for table in COPY_ORDER:
                    current = table
                    began = time.monotonic()
                    copied = _copy_table(source_db, src, pg, table, expected[table], progress, lost)
                    got = int(_scalar(pg.raw.execute(f"SELECT count(*) FROM {table}")))
                    want = expected[table] - (len(lost) if table == "prediction_batches" else 0)
                    if not copied == got == want:
                        raise TransferError(
                            f"{table}: {expected[table]} rows in the source, {copied} copied, {got} on the target"
                        )
                    tables[table] = got
                    seconds[table] = round(time.monotonic() - began, 3)
                current = "(sequences)"
                _move_sequences(src, pg)
        except TransferError:
            raise
        except (psycopg.Error, sqlite3.Error, ServiceError) as exc:
            raise TransferError(
                f"the transfer failed at {current}, and the target holds none of it"
                f" (run it again once the cause is mended): {str(exc).strip()}"
            ) from None
    return tables, seconds, lost


def _scalar(cursor: psycopg.Cursor[Any]) -> Any:
    row = cursor.fetchone()
    return row[0] if row is not None else None


def _copy_table(
    db: SqliteDatabase,
    src: SqliteConn,
    pg: PgConn,
    table: str,
    expected: int,
    progress: Callable[[str, int], None] | None,
    lost: list[LostBatch],
) -> int:
    columns, types = _columns(db, src, pg, table)
    blobs = [i for i, t in enumerate(types) if t == "bytea"]
    rows: Iterator[tuple[Any, ...]] = _chunks(src, table, columns)
    if table == "prediction_batches":
        rows = _batches(rows, columns, db.segments, lost)
    rebuild = _drop_plain_indexes(pg, table) if expected >= REBUILD_INDEXES_FROM else []
    copied = 0
    with pg.raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            for i in blobs:
                if type(row[i]) is str:
                    row = _bytes_in(row, blobs)
                    break
            copy.write_row(row)
            copied += 1
            if progress is not None and copied % CHUNK_ROWS == 0:
                progress(table, copied)
    for statement in rebuild:
        pg.raw.execute(statement)
    if progress is not None:
        progress(table, copied)
    return copied


def _drop_plain_indexes(pg: PgConn, table: str) -> list[str]:
    """Drop ``table``'s indexes that enforce nothing (not a key, not unique); returns the statements that
    make them again. Building an index once over the loaded rows is several times cheaper than keeping
    it up to date row by row; keys and unique indexes stay, so the load is checked as it goes."""
    found = pg.raw.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = %s::regclass AND NOT x.indisunique AND NOT x.indisprimary",
        (table,),
    ).fetchall()
    for name, _ in found:
        pg.raw.execute(f"DROP INDEX {name}")
    # A partitioned table's index reads "ON ONLY parent": made again on the parent and every partition.
    return [str(definition).replace(" ON ONLY ", " ON ", 1) for _, definition in found]


def _chunks(src: SqliteConn, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """The table's rows in rowid order (the key's, for an INTEGER PRIMARY KEY: no sort), CHUNK_ROWS at a time."""
    cursor = src.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
    while True:
        chunk = cursor.fetchmany(CHUNK_ROWS)
        if not chunk:
            return
        yield from chunk


def _bytes_in(row: tuple[Any, ...], blobs: Sequence[int]) -> tuple[Any, ...]:
    """SQLite keeps whatever it was given in a BLOB column; BYTEA takes bytes (text as its UTF-8)."""
    out = list(row)
    for i in blobs:
        if isinstance(out[i], str):
            out[i] = out[i].encode()
    return tuple(out)


def _batches(
    rows: Iterator[tuple[Any, ...]], columns: Sequence[str], segments: LogSegments | None, lost: list[LostBatch]
) -> Iterator[tuple[Any, ...]]:
    """Logged batches with their features inline: a segment reference resolved, older JSON text re-encoded
    (``decode_columns`` reads JSON only from text, and BYTEA gives bytes back). Lost ones are left out."""
    at = {
        name: columns.index(name)
        for name in ("batch_id", "row_count", "created_us", "columns_data", "probabilities_data")
    }
    for row in rows:
        data, probs, n = row[at["columns_data"]], row[at["probabilities_data"]], int(row[at["row_count"]])
        try:
            if is_ref(data):
                if segments is None:
                    raise LostPayload("a log segment reference in a database without log segments")
                data = segments.resolve(data)
            if isinstance(data, str):
                data = _json_columns(data, n)
            if isinstance(probs, str):
                probs = encode_probabilities(np.asarray(_json_list(probs), dtype=np.float64))
        except LostPayload as exc:
            lost.append(LostBatch(row[at["batch_id"]], n, int(row[at["created_us"]]), str(exc)))
            continue
        out = list(row)
        out[at["columns_data"]], out[at["probabilities_data"]] = data, probs
        yield tuple(out)


def _json_columns(text: str, n: int) -> bytes:
    """A batch logged as JSON text (before store/batchcodec.py's layout), in that layout: each column a
    ``strings`` column whose ``values`` are the JSON list as it was (numbers, booleans, null included),
    which ``decode_columns`` hands back as it is: the very list the JSON text decodes to."""
    decoded = _json(text, dict, "features", "an object of columns")
    specs = [
        {"name": name, "kind": "strings", "values": values, "offset": 0, "bytes": 0} for name, values in decoded.items()
    ]
    header = orjson.dumps({"n": n, "columns": specs})
    return MAGIC + _LEN.pack(len(header)) + header


def _json_list(text: str) -> list[float]:
    values: list[float] = _json(text, list, "probabilities", "a list")
    return values


def _json(text: str, kind: type, what: str, shape: str) -> Any:
    """An old batch's JSON text, read; LostPayload when it does not read as ``kind``."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LostPayload(f"its JSON {what} do not read: {exc}") from None
    if not isinstance(value, kind):
        raise LostPayload(f"its JSON {what} are not {shape}")
    return value


# Identity sequences that no copied row fills, but whose values the source used: the replicas' ids,
# which training_runs.worker names. A new replica on the target must not get the id of a worker that
# held a run in the source, or it would take that run for its own and it would never end.
_RESERVED = {
    "replicas": "SELECT max(m) FROM (SELECT max(id) AS m FROM replicas UNION ALL SELECT max(worker) FROM training_runs)"
}


def _move_sequences(src: SqliteConn, pg: PgConn) -> None:
    """Each copied table's identity (and ``predictions_seq``, owned by predictions.seq) past its largest
    copied value: the next row made on the target gets a larger key."""
    owned = pg.raw.execute(
        "SELECT c.relname, a.attname, pg_get_serial_sequence(quote_ident(c.relname), a.attname)"
        " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace AND a.attnum > 0"
        " AND NOT a.attisdropped AND pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NOT NULL",
        (list(COPY_ORDER) + list(_RESERVED),),
    ).fetchall()
    for table, column, sequence in owned:
        if table in _RESERVED:
            top = src.execute(_RESERVED[table]).fetchone()[0]
        else:
            top = _scalar(pg.raw.execute(f"SELECT max({column}) FROM {table}"))
        if top:
            pg.raw.execute("SELECT setval(%s, %s)", (sequence, int(top)))


def _analyze(db: PgDatabase, tables: dict[str, int]) -> None:
    """Fresh statistics, so that the first queries on the copied tables are planned for their sizes
    (autovacuum would get there, a minute or so later)."""
    filled = [t for t, n in tables.items() if n]
    if filled:
        with db.connection() as raw:
            raw.execute(f"ANALYZE {', '.join(filled)}")


__all__ = ["COPY_ORDER", "SKIPPED", "LostBatch", "TransferError", "TransferReport", "copy_database", "run_cli"]
