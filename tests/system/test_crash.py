"""Acknowledged outcomes survive a kill -9 of a real server process."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from sahayak_rpc.client import Client, OutcomeInput, SahayakError
from sahayak_rpc.store.sqlite import SqliteDatabase as Database

from ..helpers import SMALL_FEATURES, good_row, server_command
from ..helpers import free_port
from ..helpers import wait_serving as _wait_serving


def _start(db: Path, port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        server_command("serve", "--port", str(port), "--db", str(db), "--log-level", "warning"),
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    _wait_serving(port, proc)
    return proc


def _writer(target: str, prefix: str, acked: list[str], batches: list[list[str]], stop: threading.Event) -> None:
    """Record outcomes one by one, and small imports, until the server dies."""
    with Client(target, timeout=5) as c:
        i = 0
        while not stop.is_set():
            try:
                if i % 10 == 9:
                    ids = [f"{prefix}-b{i}-{k}" for k in range(50)]
                    c.import_outcomes(
                        "small",
                        [
                            OutcomeInput(good_row(age=float(20 + k)), k % 2 == 0, outcome_id=o)
                            for k, o in enumerate(ids)
                        ],
                    )
                    batches.append(ids)
                else:
                    oid = f"{prefix}-{i}"
                    c.record_outcome("small", good_row(income=float(i)), i % 3 == 0, outcome_id=oid)
                    acked.append(oid)
            except SahayakError:
                return
            i += 1


@pytest.mark.slow
def test_every_acknowledged_outcome_survives_kill_9(tmp_path: Path, subprocess_env: dict) -> None:
    db = tmp_path / "crash.db"
    port = free_port()
    acked: list[str] = []
    batches: list[list[str]] = []
    rng = random.Random(7)
    proc = _start(db, port, subprocess_env)
    with Client(f"127.0.0.1:{port}") as c:
        c.create_model("small", SMALL_FEATURES)
    for round_ in range(3):
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(f"127.0.0.1:{port}", f"r{round_}", acked, batches, stop))
        writer.start()
        # Kill at a random moment while writes are in flight.
        stop.wait(rng.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        writer.join(timeout=30)
        proc = _start(db, port, subprocess_env)
    try:
        assert len(acked) > 50, "the writer should have been acknowledged many times"
        with Client(f"127.0.0.1:{port}") as c:
            # Re-sending an acknowledged outcome must find it stored with the same content.
            for oid in rng.sample(acked, 40):
                i = int(oid.split("-")[1])
                resp = c.record_outcome("small", good_row(income=float(i)), i % 3 == 0, outcome_id=oid)
                assert resp.duplicate, oid
            status = c.server_status().models[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    database = Database(db)
    try:
        assert database.integrity_check() == "ok"
        repo_model = database.reader().execute("SELECT id FROM models WHERE name = 'small'").fetchone()[0]
        present = {
            r[0] for r in database.reader().execute("SELECT outcome_id FROM outcomes WHERE model_id = ?", (repo_model,))
        }
    finally:
        database.close()
    missing = [o for o in acked if o not in present]
    missing += [o for ids in batches for o in ids if o not in present]
    assert missing == []
    assert status.outcome_count == len(present)


def test_only_the_prediction_log_skips_the_fsync_and_only_for_its_own_commit(tmp_path: Path) -> None:
    """write(durable=False) runs that one transaction with synchronous=NORMAL; the
    connection is back to FULL afterwards, also when the transaction fails."""
    db = Database(tmp_path / "s.db", synchronous="full")

    def level(conn: object) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])  # type: ignore[attr-defined]

    with db.write(durable=False) as conn:
        assert level(conn) == 1  # NORMAL
    with db.write() as conn:
        assert level(conn) == 2  # FULL
    try:
        with db.write(durable=False) as conn:
            raise RuntimeError("the body failed")
    except RuntimeError:
        pass
    assert level(db._writer) == 2
    db.close()
