"""Storage faults, injected for real: a locked database and a full disk.

- Locked: the test opens the server's SQLite file itself and holds the write
  lock (BEGIN EXCLUSIVE), as another process or an operator's shell would.
- Full: the database lives on a small tmpfs that a filler file fills to ENOSPC
  (needs root's mount; skipped elsewhere), or the server's writer connection is
  capped with ``[server] max_db_pages`` (SQLite's own SQLITE_FULL path, runs
  anywhere) and the test takes the free pages with a table of its own.

Either way every write RPC must answer UNAVAILABLE / RESOURCE_EXHAUSTED with a
reason and a message a person understands (never INTERNAL or UNKNOWN), change
nothing, keep serving predictions, and work again, with no restart, once the
fault clears.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from sahayak_rpc.client import OutcomeInput, SahayakError, fill_features
from sahayak_rpc.demo_data import DEMO_MODEL_NAME, generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import feedback_pb2

from ..helpers import Running, eventually, load_demo_rows, start_server, stop_server

MODEL = DEMO_MODEL_NAME
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


# --- helpers ---------------------------------------------------------------


def snapshot(conn: sqlite3.Connection, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """A digest of every table's rows: equal snapshots mean nothing was written."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        if r[0] not in skip
    ]
    out = {}
    for table in tables:
        digest = hashlib.sha256()
        for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
            digest.update(repr(row).encode())
        out[table] = digest.hexdigest()
    return out


def rows(conn: sqlite3.Connection, sql: str, *args: object) -> int:
    return int(conn.execute(sql, args).fetchone()[0])


def open_db(path: Path) -> sqlite3.Connection:
    # Autocommit: each read sees the latest commit; BEGIN is explicit.
    return sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)


class Writes:
    """The write RPCs under test, each with fixed ids so a retry is the same request."""

    IMPORT_ROWS = 300

    def __init__(self, r: Running, prefix: str, version: int) -> None:
        self.r = r
        self.client = r.client
        self.prefix = prefix
        self.version = version
        examples = generate_outcomes(self.IMPORT_ROWS + 2, seed=zlib.crc32(prefix.encode()))
        self.one = examples[0]
        self.batch = [
            OutcomeInput(e.features, e.label, outcome_id=f"{prefix}-imp-{i}", occurred_at=e.occurred_at)
            for i, e in enumerate(examples[1:-1])
        ]
        self.feedback_row = examples[-1].features

    def record_outcome(self) -> Any:
        return self.client.record_outcome(MODEL, self.one.features, self.one.label, outcome_id=f"{self.prefix}-one")

    def import_outcomes(self) -> Any:
        report = self.client.import_outcomes(MODEL, self.batch, batch_size=len(self.batch))
        assert (report.accepted, report.rejected) == (self.IMPORT_ROWS, 0), report
        return report

    def start_training(self) -> Any:
        return self.client.start_training(MODEL, families=["logistic_regression"], description=self.prefix)

    def set_alias(self) -> Any:
        return self.client.set_alias(MODEL, f"{self.prefix}-alias", self.version, reason="fault test")

    def record_feedback(self) -> Any:
        f = feedback_pb2.Feedback(
            feedback_id=f"{self.prefix}-fb",
            model=MODEL,
            artisan_id="A1",
            scheme_id="pmegp",
            interaction=feedback_pb2.INTERACTION_APPLIED,
            outcome=feedback_pb2.FEEDBACK_OUTCOME_APPROVED,
        )
        fill_features(f.features, self.feedback_row)
        try:
            return self.client.feedback.RecordFeedback(feedback_pb2.RecordFeedbackRequest(feedback=f), timeout=30)
        except grpc.RpcError as err:
            raise SahayakError.from_rpc_error(err) from None

    def all(self) -> dict[str, Callable[[], Any]]:
        return {
            "RecordOutcome": self.record_outcome,
            "ImportOutcomes": self.import_outcomes,
            "StartTraining": self.start_training,
            "SetAlias": self.set_alias,
            "RecordFeedback": self.record_feedback,
        }


def refused(call: Callable[[], Any]) -> SahayakError:
    with pytest.raises(SahayakError) as info:
        call()
    return info.value


def prepare(r: Running) -> int:
    """The demo model with 1,000 outcomes and a champion; returns its version."""
    load_demo_rows(r.client, 1000)
    run = r.client.train(MODEL, families=["logistic_regression"])
    assert run.produced_version, run.end_reason
    if not run.promoted:
        r.client.set_alias(MODEL, "champion", run.produced_version, force=True)
    return run.produced_version


def status(r: Running) -> tuple[int, int]:
    [m] = [m for m in r.client.server_status().models if m.model == MODEL]
    return m.outcome_count, m.labels_since_training


def recovered(r: Running, writes: Writes, conn: sqlite3.Connection, outcomes_before: int) -> None:
    """The same requests succeed once the fault is gone, and store exactly what they should."""
    assert not writes.record_outcome().duplicate
    assert writes.import_outcomes().accepted == Writes.IMPORT_ROWS
    run = writes.start_training()
    assert r.client.wait_run(run.run_id, timeout=300).run_id == run.run_id
    assert writes.set_alias().version == writes.version
    fb = writes.record_feedback()
    assert fb.outcome_id == f"feedback:{writes.prefix}-fb" and not fb.duplicate
    # One outcome, the whole import, the feedback's outcome: nothing more, nothing half-done.
    assert rows(conn, "SELECT count(*) FROM outcomes") == outcomes_before + 1 + Writes.IMPORT_ROWS + 1
    assert (
        rows(conn, "SELECT count(*) FROM outcomes WHERE outcome_id LIKE ?", f"{writes.prefix}-imp-%")
        == Writes.IMPORT_ROWS
    )
    assert rows(conn, "SELECT count(*) FROM feedback WHERE feedback_id = ?", f"{writes.prefix}-fb") == 1
    assert rows(conn, "SELECT count(*) FROM training_runs WHERE description = ?", writes.prefix) == 1
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def predictions_logged(conn: sqlite3.Connection, ids: list[str]) -> bool:
    marks = ",".join("?" * len(ids))
    return rows(conn, f"SELECT count(*) FROM predictions WHERE prediction_id IN ({marks})", *ids) == len(ids)


# --- a locked database ---------------------------------------------------------


@pytest.fixture
def locked_server(tmp_path: Path) -> Iterator[Running]:
    # A short busy timeout keeps the test fast; the default is 5 s.
    r = start_server(tmp_path / "locked.db", busy_timeout_s=0.25)
    try:
        yield r
    finally:
        stop_server(r)


def test_a_locked_database_answers_unavailable_changes_nothing_and_recovers(locked_server: Running) -> None:
    r = locked_server
    version = prepare(r)
    writes = Writes(r, "locked", version)
    row = writes.one.features
    with closing(open_db(r.db_path)) as conn:
        before = snapshot(conn)
        counts = status(r)
        outcomes_before = rows(conn, "SELECT count(*) FROM outcomes")
        conn.execute("BEGIN EXCLUSIVE")  # WAL: blocks every writer, not the readers
        try:
            for name, call in writes.all().items():
                err = refused(call)
                assert err.code is UNAVAILABLE, (name, err)
                assert err.reason == "DATABASE_LOCKED", (name, err.reason)
                assert "database busy, retry" in err.message, (name, err.message)
            # Reads go on while the writers wait: predictions and status still answer.
            assert 0 <= r.client.predict(MODEL, row).probability <= 1
            assert status(r) == counts  # not even the in-memory label counter moved
            assert snapshot(conn) == before
        finally:
            conn.execute("ROLLBACK")
        # The prediction above may reach the log once the lock is gone (that write only waited).
        log = ("predictions", "prediction_batches")
        assert snapshot(conn, skip=log) == {k: v for k, v in before.items() if k not in log}
        recovered(r, writes, conn, outcomes_before)


def test_a_lock_released_within_the_busy_timeout_only_delays_the_write(tmp_path: Path) -> None:
    r = start_server(tmp_path / "wait.db", busy_timeout_s=5)
    try:
        load_demo_rows(r.client, 10)
        with closing(open_db(r.db_path)) as conn:
            conn.execute("BEGIN EXCLUSIVE")
            timer = threading.Timer(0.5, lambda: conn.execute("ROLLBACK"))
            timer.start()
            start = time.monotonic()
            try:
                resp = r.client.record_outcome(
                    MODEL, generate_outcomes(1, seed=5)[0].features, True, outcome_id="after-wait"
                )
            finally:
                timer.join()
            assert not resp.duplicate and time.monotonic() - start >= 0.4  # it waited for the lock
            assert rows(conn, "SELECT count(*) FROM outcomes WHERE outcome_id = 'after-wait'") == 1
    finally:
        stop_server(r)


# --- a full disk -----------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> int:
    """Write a file until the filesystem refuses more (ENOSPC); returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for chunk in (1 << 20, 4096, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def test_a_full_disk_answers_resource_exhausted_changes_nothing_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "48m") as disk:
        r = start_server(disk / "full.db")
        try:
            version = prepare(r)
            writes = Writes(r, "full", version)
            row = writes.one.features
            with closing(open_db(r.db_path)) as conn:
                # Start the WAL from nothing, so the next commit must take new space.
                assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
                before = snapshot(conn)
                counts = status(r)
                outcomes_before = rows(conn, "SELECT count(*) FROM outcomes")
                filler = disk / "filler"
                assert fill(filler) > 0
                assert os.statvfs(disk).f_bavail == 0
                dropped = r.server.predlog.dropped
                for name, call in writes.all().items():
                    err = refused(call)
                    assert err.code is EXHAUSTED, (name, err)
                    assert err.reason == "STORAGE_FULL", (name, err.reason)
                    assert "storage full" in err.message and "disk is full" in err.message, (name, err.message)
                # Predictions are still served; the log writer drops what it cannot store and lives on.
                served = [r.client.predict(MODEL, row).prediction_id for _ in range(5)]
                assert len(r.client.predict_batch(MODEL, [row] * 100).probabilities) == 100
                eventually(lambda: r.server.predlog.dropped >= dropped + 105, timeout=10)
                assert status(r) == counts
                assert snapshot(conn) == before
                assert not predictions_logged(conn, served[:1])

                filler.unlink()
                recovered(r, writes, conn, outcomes_before)
                # The log writer's own thread stores new predictions again, unprompted.
                fresh = [r.client.predict(MODEL, row).prediction_id for _ in range(5)]
                eventually(lambda: predictions_logged(conn, fresh), timeout=10)
                # A batch too: its features go to a log segment on the same disk, which refused them before.
                batch = r.client.predict_batch(MODEL, [row] * 100).batch_id
                eventually(lambda: r.server.ctx.predictions.get(f"{batch}:99") is not None, timeout=10)
                assert orjson.loads(r.server.ctx.predictions.get(f"{batch}:99").features_json)
        finally:
            stop_server(r)


def test_a_capped_database_answers_resource_exhausted_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    """SQLITE_FULL without root: the server's writer may not grow the file past ``max_db_pages``."""
    db = tmp_path / "capped.db"
    r = start_server(db)
    try:
        version = prepare(r)
    finally:
        stop_server(r)
    with closing(open_db(db)) as conn:
        # Someone else's data takes the space; deleting it later frees pages the server may reuse.
        conn.execute("CREATE TABLE fault_filler (b BLOB)")
        conn.executemany("INSERT INTO fault_filler VALUES (?)", [(os.urandom(3500),) for _ in range(3000)])
        pages = rows(conn, "PRAGMA page_count")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # 1: never below the current size, so: not one page more than the file has now.
    r = start_server(db, max_db_pages=1)
    try:
        writes = Writes(r, "capped", version)
        row = writes.one.features
        with closing(open_db(db)) as conn:
            before = snapshot(conn)
            counts = status(r)
            outcomes_before = rows(conn, "SELECT count(*) FROM outcomes")
            # 300 outcomes need new pages whatever the slack in the existing ones.
            err = refused(writes.import_outcomes)
            assert err.code is EXHAUSTED and err.reason == "STORAGE_FULL", err
            assert "storage full" in err.message and "disk is full" in err.message, err.message
            assert snapshot(conn) == before and status(r) == counts
            assert rows(conn, "PRAGMA page_count") == pages

            dropped = r.server.predlog.dropped
            batch = r.client.predict_batch(MODEL, [row] * 2000)  # served, but too big to log
            assert len(batch.probabilities) == 2000
            eventually(lambda: r.server.predlog.dropped >= dropped + 2000, timeout=10)
            assert snapshot(conn) == before

            conn.execute("DELETE FROM fault_filler")  # the space comes back, inside the file
            recovered(r, writes, conn, outcomes_before)
            assert rows(conn, "PRAGMA page_count") == pages  # the server reused pages, never grew the file
            fresh = [r.client.predict(MODEL, row).prediction_id for _ in range(5)]
            eventually(lambda: predictions_logged(conn, fresh), timeout=10)
    finally:
        stop_server(r)
