"""The database wrapper's own behaviour: checkpoints off the write path."""

from __future__ import annotations

import sqlite3

import pytest
from pathlib import Path

from sahayak_rpc.store.sqlite import BACKSTOP_PAGES
from sahayak_rpc.store.sqlite import SqliteDatabase as Database

from ..helpers import eventually


def test_checkpoints_run_on_their_own_thread_and_keep_every_commit(tmp_path: Path) -> None:
    """Commits leave their pages in the WAL; the checkpoint thread copies them into the database file
    by itself (the writer checkpoints only past the backstop), and nothing committed is lost."""
    db = Database(tmp_path / "c.db", checkpoint_interval_s=0.05)
    try:
        assert db._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
        with db.write() as conn:
            conn.execute("CREATE TABLE blobs (i INTEGER PRIMARY KEY, data BLOB)")
        for i in range(40):
            with db.write(durable=i % 2 == 0) as conn:
                conn.execute("INSERT INTO blobs VALUES (?, ?)", (i, bytes([i]) * 20_000))

        runs = db.checkpoints.runs

        def all_copied() -> bool:  # by a checkpoint that ran after the last commit
            last = db.checkpoints.last
            return db.checkpoints.runs > runs and last is not None and 0 < last.wal_frames == last.checkpointed

        eventually(all_copied, timeout=10)
        assert db.checkpoints.failures == 0
    finally:
        db.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        rows = conn.execute("SELECT i, length(data), substr(data, 1, 1) FROM blobs ORDER BY i").fetchall()
    assert rows == [(i, 20_000, bytes([i])) for i in range(40)]


def test_a_closed_database_stops_checkpointing(tmp_path: Path) -> None:
    db = Database(tmp_path / "d.db", checkpoint_interval_s=0.01)
    db.close()
    assert db.checkpoints.run() is None
    assert not db.checkpoints._thread.is_alive()


def test_an_older_database_is_upgraded_keeping_its_rows(tmp_path) -> None:
    """A file as the server before replicas left it (schema 8), with what migration 9 must carry over:
    outcomes and a run that had read some of them (labels since training), and two unresolved alerts of
    one rule (an older server could leave two when health checks raced)."""
    import sqlite3

    from sahayak_rpc.store.migrations import MIGRATIONS
    from sahayak_rpc.store.outcomes import OutcomeRepository

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:8]:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute("PRAGMA user_version = 8")
        conn.execute(
            "INSERT INTO models (name, schema_json, settings_json, created_us, updated_us)"
            " VALUES ('m', '{}', '{}', 1, 1)"
        )
        for k in range(5):
            conn.execute(
                "INSERT INTO outcomes (model_id, outcome_id, label, features_json, occurred_us, received_us,"
                " content_hash, source) VALUES (1, ?, 1, '{}', 1, 1, x'00', 'api')",
                (f"o{k}",),
            )
        conn.execute(
            "INSERT INTO training_runs (run_id, model_id, kind, trigger, state, created_us, through_seq,"
            " request_json) VALUES ('r1', 1, 'full', 'manual', 'succeeded', 1, 3, '{}')"
        )
        for k, raised in enumerate((10, 20)):
            conn.execute(
                "INSERT INTO alerts (alert_id, model_id, rule, severity, state, message, details_json,"
                " raised_us) VALUES (?, 1, 'data_quality', 'warning', 'open', 'x', '{}', ?)",
                (f"a{k}", raised),
            )
    db = Database(path)
    try:
        assert db.schema_version == len(MIGRATIONS)
        assert OutcomeRepository(db).totals(1).since_training == 2  # outcomes 4 and 5 came after the run
        states = dict(db.reader().execute("SELECT alert_id, state FROM alerts").fetchall())
        assert states == {"a0": "resolved", "a1": "open"}  # the newest stays open
        assert db.reader().execute("SELECT seq, run_id FROM training_runs").fetchall() == [(1, "r1")]
    finally:
        db.close()


def test_a_closed_database_answers_unavailable_to_readers_that_read_before(tmp_path: Path) -> None:
    """After close(), a thread whose reader was open gets Unavailable (SHUTTING_DOWN), as a new one does: a
    retryable answer, never a driver error that would reach a client as INTERNAL."""
    import threading

    from sahayak_rpc.errors import Unavailable

    db = Database(str(tmp_path / "c.db"))
    with db.read() as conn:
        conn.execute("SELECT 1").fetchone()
    db.reader().execute("SELECT 1")
    db.close()
    with pytest.raises(Unavailable):
        with db.read():
            pass
    with pytest.raises(Unavailable):
        db.reader().execute("SELECT 1")
    seen: list[BaseException] = []

    def fresh() -> None:
        try:
            db.reader().execute("SELECT 1")
        except BaseException as exc:  # noqa: BLE001 (what a new thread gets is the point)
            seen.append(exc)

    t = threading.Thread(target=fresh)
    t.start()
    t.join()
    assert len(seen) == 1 and isinstance(seen[0], Unavailable)
