"""The database wrapper's own behaviour: checkpoints off the write path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sahayak_rpc.store.sqlite import BACKSTOP_PAGES
from sahayak_rpc.store.sqlite import SqliteDatabase as Database

from .conftest import eventually


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
            return db.checkpoints.runs > runs and last is not None and 0 < last[1] == last[2]

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
