"""Log segments: logged batches' features in append-only files beside the database (store/segments.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import zlib
from contextlib import closing
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest

from sahayak_rpc._proto.sahayak.v1 import feedback_pb2 as FB
from sahayak_rpc._proto.sahayak.v1 import monitor_pb2 as M
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc.errors import Unavailable
from sahayak_rpc.store.sqlite import SqliteDatabase as Database
from sahayak_rpc.store.batchcodec import decode_columns
from sahayak_rpc.store.sqlite import Checkpointer
from sahayak_rpc.store.segments import HEADER, REF_SIZE, LogSegments, LostPayload, folder_for, is_ref

from ..helpers import Running, eventually, load_demo_rows, server_command, start_server, stop_server

MODEL = "scheme-sahayak"
DAY = 86400


def payloads(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.bytes(int(rng.integers(0, 5000))) for _ in range(n)]


# --- the files ------------------------------------------------------------------


def test_what_is_appended_reads_back_and_anything_else_passes_through(tmp_path: Path) -> None:
    seg = LogSegments(tmp_path / "s")
    data = payloads(200)
    refs = [seg.append(p, 1_000 + i)[0] for i, p in enumerate(data)]
    assert all(is_ref(r) and len(r) == REF_SIZE for r in refs) and len(set(refs)) == len(refs)
    assert [seg.resolve(r) for r in refs] == data
    assert seg.resolve(b"inline bytes") == b"inline bytes" and seg.resolve('{"a": [1]}') == '{"a": [1]}'
    # One file, the header, then the payloads back to back: each byte written once.
    assert seg.numbers() == [1]
    assert (tmp_path / "s" / "0000000001.seg").stat().st_size == len(HEADER) + sum(map(len, data))
    seg.close()
    again = LogSegments(tmp_path / "s")
    assert [again.resolve(r) for r in refs] == data  # readable by the next process
    assert again.append(b"x", 2_000)[1] == 2  # which appends to a segment of its own
    again.close()


def test_a_segment_ends_at_its_size_or_its_age(tmp_path: Path) -> None:
    seg = LogSegments(tmp_path / "s", max_bytes=10_000, max_span_us=60_000_000)
    numbers = [seg.append(b"a" * 3000, 0)[1] for _ in range(7)]
    assert numbers == [1, 1, 1, 2, 2, 2, 3]  # the header and three payloads fill 10,000 bytes
    assert seg.append(b"b", 60_000_000)[1] == 3
    assert seg.append(b"c", 60_000_001)[1] == 4  # the segment's first record is over a minute old
    assert seg.numbers() == [1, 2, 3, 4]
    seg.close()


def test_damaged_cut_or_missing_bytes_are_reported_lost_not_read(tmp_path: Path) -> None:
    seg = LogSegments(tmp_path / "s", max_bytes=len(HEADER) + 100)
    a, _ = seg.append(b"A" * 100, 0)
    b, _ = seg.append(b"B" * 100, 0)
    c, _ = seg.append(b"C" * 100, 0)
    seg.close()
    with open(tmp_path / "s" / "0000000001.seg", "r+b") as f:
        f.seek(len(HEADER) + 40)
        f.write(b"a")
    os.truncate(tmp_path / "s" / "0000000002.seg", len(HEADER) + 60)
    os.unlink(tmp_path / "s" / "0000000003.seg")
    reader = LogSegments(tmp_path / "s")
    with pytest.raises(LostPayload, match="0000000001.seg.*CRC mismatch"):
        reader.resolve(a)
    with pytest.raises(LostPayload, match="0000000002.seg.*cut short"):
        reader.resolve(b)
    with pytest.raises(LostPayload, match="0000000003.seg is missing"):
        reader.resolve(c)
    reader.close()


def test_removing_segments_leaves_the_rest_and_the_writer_moves_on(tmp_path: Path) -> None:
    seg = LogSegments(tmp_path / "s", max_bytes=len(HEADER) + 10)
    refs = [seg.append(bytes([i]) * 10, 0)[0] for i in range(3)]
    assert seg.numbers() == [1, 2, 3] and seg.resolve(refs[0]) == b"\0" * 10
    assert seg.remove([1, 3, 9]) == [1, 3, 9]  # 3 is being written: left first; 9 was never there
    assert seg.numbers() == [2] and seg.resolve(refs[1]) == b"\1" * 10
    with pytest.raises(LostPayload):
        seg.resolve(refs[0])
    assert seg.append(b"next", 0)[1] == 4  # a new file, under a number not used before
    seg.close()


def test_a_failed_write_leaves_no_partial_bytes(tmp_path: Path) -> None:
    """A write refused half-way (here by RLIMIT_FSIZE: EFBIG, as ENOSPC would refuse it) is cut back, so the
    next record starts where the refused one did. In a child process: the limit is process-wide."""
    script = f"""
import os, resource, signal
from sahayak_rpc.store.segments import LogSegments, HEADER
from sahayak_rpc.errors import Unavailable
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
seg = LogSegments({str(tmp_path / "s")!r})
first, _ = seg.append(b"1" * 1000, 0)
resource.setrlimit(resource.RLIMIT_FSIZE, (len(HEADER) + 1500, resource.RLIM_INFINITY))
try:
    seg.append(b"2" * 1000, 0)
    raise SystemExit("the write went through")
except Unavailable as exc:
    assert "storage unavailable" in exc.message, exc.message
assert os.path.getsize({str(tmp_path / "s" / "0000000001.seg")!r}) == len(HEADER) + 1000
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
third, number = seg.append(b"3" * 1000, 0)
assert number == 1 and seg.resolve(first) == b"1" * 1000 and seg.resolve(third) == b"3" * 1000
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_full_folder_is_a_storage_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("a file where the folder should be")
    seg = LogSegments(tmp_path / "s")
    with pytest.raises(Unavailable, match="storage unavailable: log segments in"):
        seg.append(b"x", 0)
    seg.close()


def test_sync_flushes_what_was_written_since_the_last_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(os.fstat(fd).st_size), real(fd)))
    seg = LogSegments(tmp_path / "s", max_bytes=len(HEADER) + 100)
    seg.append(b"a" * 60, 0)
    seg.sync()
    assert synced == [len(HEADER) + 60]
    seg.sync()
    assert synced == [len(HEADER) + 60]  # nothing new: no second fdatasync
    seg.append(b"b" * 30, 0)
    seg.append(b"c" * 60, 0)  # does not fit: segment 1 is left (with 90 bytes), segment 2 begun
    seg.sync()
    assert sorted(synced[1:]) == [len(HEADER) + 60, len(HEADER) + 90]
    seg.close()  # nothing since: nothing to sync
    assert len(synced) == 3


def test_each_checkpoint_first_syncs_the_segments(tmp_path: Path) -> None:
    calls: list[int] = []
    conn = sqlite3.connect(tmp_path / "c.db", check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    cp = Checkpointer(conn, interval_s=3600, before=lambda: calls.append(1))
    cp.run()
    cp.run()
    assert len(calls) == 2
    cp.close()


# --- in the database ------------------------------------------------------------


def test_a_page_cap_keeps_new_batches_inside_the_database_and_old_references_readable(tmp_path: Path) -> None:
    db = Database(tmp_path / "d.db", synchronous="normal")
    assert db.batches_to_segments and db.segments is not None
    assert db.segments.folder == folder_for(str(tmp_path / "d.db")) == tmp_path / "d.db-segments"
    db.close()
    capped = Database(tmp_path / "d.db", synchronous="normal", max_pages=100_000)
    assert not capped.batches_to_segments and capped.segments is not None
    capped.close()


# --- through the server -----------------------------------------------------------


def stored_batch(r: Running, batch_id: str) -> tuple[bytes, int]:
    with closing(sqlite3.connect(r.db_path)) as conn:
        data, count = conn.execute(
            "SELECT columns_data, row_count FROM prediction_batches WHERE batch_id = ?", (batch_id,)
        ).fetchone()
    return data, count


@pytest.fixture()
def champion(tmp_path: Path):
    r = start_server(tmp_path / "seg.db")
    load_demo_rows(r.client, 1500)
    assert r.client.train(MODEL, families=["logistic_regression"]).promoted
    yield r
    stop_server(r)


def test_a_served_batch_is_logged_to_a_segment_and_reads_back_whole(champion: Running) -> None:
    r = champion
    rows = [e.features for e in generate_outcomes(300, seed=61)]
    batch = r.client.predict_batch(MODEL, rows)
    r.server.predlog.flush()
    data, count = stored_batch(r, batch.batch_id)
    assert is_ref(data) and count == 300  # 24 bytes in the database ...
    folder = folder_for(str(r.db_path))
    [segment] = os.listdir(folder)
    size = (folder / segment).stat().st_size - len(HEADER)
    with closing(sqlite3.connect(r.db_path)) as conn:
        assert conn.execute("SELECT segment, bytes FROM log_segments").fetchall() == [(1, size)]
    # ... the features in the segment, as the batch codec wrote them, CRC and all.
    payload = (folder / segment).read_bytes()[len(HEADER) :]
    assert zlib.crc32(payload) == int.from_bytes(data[-4:], "little")
    assert len(decode_columns(payload)["age"]) == 300
    # Every row's prediction id finds its features, as served.
    for i in (0, 137, 299):
        logged = r.server.ctx.predictions.get(f"{batch.batch_id}:{i}")
        assert logged is not None and logged.probability == pytest.approx(batch.probabilities[i])
        want = {k: v for k, v in rows[i].items() if v is not None}
        assert orjson.loads(logged.features_json) == pytest.approx(want)
    # Drift reads them too.
    report = r.client.monitor.DetectDrift(M.DetectDriftRequest(model=MODEL)).report
    assert report.prediction.current_count == 300


def test_lost_features_are_skipped_by_drift_and_named_to_feedback(champion: Running) -> None:
    r = champion
    rows = [e.features for e in generate_outcomes(200, seed=62)]
    kept = r.client.predict_batch(MODEL, rows[:100])
    lost = r.client.predict_batch(MODEL, rows[100:])
    r.server.predlog.flush()
    data, _ = stored_batch(r, lost.batch_id)
    number, offset = int.from_bytes(data[4:8], "little"), int.from_bytes(data[8:16], "little")
    with open(folder_for(str(r.db_path)) / f"{number:010d}.seg", "r+b") as f:  # a byte of it goes bad
        f.seek(offset + 500)
        byte = f.read(1)
        f.seek(offset + 500)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = r.client.monitor.DetectDrift(M.DetectDriftRequest(model=MODEL)).report
    assert report.prediction.current_count == 100  # the damaged batch is left out, not misread
    request = FB.RecordFeedbackRequest(
        feedback=FB.Feedback(
            model=MODEL,
            feedback_id="lost-1",
            prediction_id=f"{lost.batch_id}:3",
            interaction=FB.INTERACTION_APPLIED,
            outcome=FB.FEEDBACK_OUTCOME_APPROVED,
        )
    )
    outcomes = r.client.server_status().models[0].outcome_count
    with pytest.raises(grpc.RpcError) as info:
        r.client.feedback.RecordFeedback(request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "feedback.features" in info.value.details() and "are lost" in info.value.details()
    assert r.client.server_status().models[0].outcome_count == outcomes
    request.feedback.feedback_id, request.feedback.prediction_id = "kept-1", f"{kept.batch_id}:3"
    assert r.client.feedback.RecordFeedback(request).outcome_id == "feedback:kept-1"
    fresh = r.client.predict_batch(MODEL, rows[:50])  # the log goes on
    r.server.predlog.flush()
    assert r.server.ctx.predictions.get(f"{fresh.batch_id}:49").features_json is not None


def test_retention_deletes_a_segment_once_all_its_records_expire(champion: Running) -> None:
    r = champion
    rows = [e.features for e in generate_outcomes(50, seed=63)]
    old = r.client.predict_batch(MODEL, rows)
    r.server.predlog.flush()
    folder = folder_for(str(r.db_path))
    assert sorted(os.listdir(folder)) == ["0000000001.seg"]
    r.clock.advance(3 * DAY)
    mid = r.client.predict_batch(MODEL, rows)  # over an hour later: a second segment
    r.server.predlog.flush()
    assert sorted(os.listdir(folder)) == ["0000000001.seg", "0000000002.seg"]
    r.clock.advance(5 * DAY)  # the first is 8 days old, past the 7-day retention; the second 5
    purged = r.server.monitor.retention()
    assert purged["log_segments"] == 1 and sorted(os.listdir(folder)) == ["0000000002.seg"]
    assert r.server.ctx.predictions.get(f"{old.batch_id}:0") is None
    assert r.server.ctx.predictions.get(f"{mid.batch_id}:0").features_json is not None
    r.clock.advance(3 * DAY)  # now the second, the one being written, goes too
    assert r.server.monitor.retention()["log_segments"] == 1 and os.listdir(folder) == []
    with closing(sqlite3.connect(r.db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM log_segments").fetchone()[0] == 0
    new = r.client.predict_batch(MODEL, rows)  # and the log starts a third
    r.server.predlog.flush()
    assert os.listdir(folder) == ["0000000003.seg"]
    assert r.server.ctx.predictions.get(f"{new.batch_id}:0").features_json is not None


def test_a_capped_server_logs_batches_inside_the_database(tmp_path: Path) -> None:
    r = start_server(tmp_path / "cap.db", max_db_pages=1_000_000)
    try:
        load_demo_rows(r.client, 1500)
        assert r.client.train(MODEL, families=["logistic_regression"]).promoted
        batch = r.client.predict_batch(MODEL, [e.features for e in generate_outcomes(20, seed=64)])
        r.server.predlog.flush()
        data, _ = stored_batch(r, batch.batch_id)
        assert not is_ref(data) and len(decode_columns(data)["age"]) == 20
        assert not folder_for(str(tmp_path / "cap.db")).exists()
    finally:
        stop_server(r)


# --- backups ----------------------------------------------------------------------


def backup_command(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(server_command("backup", *args), capture_output=True, text=True, env=env, timeout=120)


def every_batch_reads(db: Path) -> tuple[int, list[str]]:
    """How many logged batches the database holds, and those whose features do not read back."""
    from sahayak_rpc.store.segments import read_columns

    segments = LogSegments(folder_for(str(db)))
    bad = []
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT batch_id, row_count, columns_data FROM prediction_batches").fetchall()
    for batch_id, count, data in rows:
        try:
            if len(read_columns(segments, data)["age"]) != count:
                bad.append(f"{batch_id}: wrong length")
        except LostPayload as exc:
            bad.append(f"{batch_id}: {exc}")
    segments.close()
    return len(rows), bad


def test_a_backup_taken_while_batches_are_logged_holds_every_batch_it_lists(
    champion: Running, subprocess_env: dict
) -> None:
    r = champion
    rows = [e.features for e in generate_outcomes(200, seed=65)]
    # Small segments: the log moves on to new files while the backup runs.
    r.server.ctx.db.segments._max_bytes = 60_000
    stop = threading.Event()
    served: list[str] = []

    def serve() -> None:
        while not stop.is_set():
            served.append(r.client.predict_batch(MODEL, rows).batch_id)
            r.server.predlog.flush()

    writer = threading.Thread(target=serve)
    writer.start()
    try:
        eventually(lambda: len(served) >= 5, timeout=30)
        copy = r.db_path.parent / "copy.db"
        out = backup_command(subprocess_env, str(copy), "--db", str(r.db_path), "--json")
    finally:
        stop.set()
        writer.join()
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["path"] == str(copy) and result["segments"] >= 2 and result["segments_gone"] == 0
    count, bad = every_batch_reads(copy)
    assert count >= 5 and bad == []
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        listed = {n for (n,) in conn.execute("SELECT segment FROM log_segments")}
    assert {int(n[:-4]) for n in os.listdir(folder_for(str(copy)))} == listed
    # The copy serves: a server started on it finds the model, its champion and a logged batch's features.
    restored = start_server(copy)
    try:
        assert restored.client.get_model(MODEL).champion_version == 1
        first = restored.server.ctx.predictions.get(f"{served[0]}:7")
        assert first is not None and orjson.loads(first.features_json) == pytest.approx(
            {k: v for k, v in rows[7].items() if v is not None}
        )
    finally:
        stop_server(restored)


def test_a_backup_never_overwrites_and_names_what_is_missing(tmp_path: Path, subprocess_env: dict) -> None:
    missing = backup_command(subprocess_env, str(tmp_path / "copy.db"), "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and f"no database at {tmp_path / 'none.db'}" in missing.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "copy.db").exists()
    Database(tmp_path / "d.db", synchronous="normal").close()  # a stopped server's database: no WAL files
    (tmp_path / "taken.db").write_bytes(b"someone's file")
    taken = backup_command(subprocess_env, str(tmp_path / "taken.db"), "--db", str(tmp_path / "d.db"))
    assert taken.returncode == 1 and "taken.db already exists: a backup never overwrites" in taken.stderr
    assert (tmp_path / "taken.db").read_bytes() == b"someone's file"
    ok = backup_command(subprocess_env, str(tmp_path / "copy.db"), "--db", str(tmp_path / "d.db"))
    assert ok.returncode == 0 and "0 log segments" in ok.stdout, ok.stderr
    assert not folder_for(str(tmp_path / "copy.db")).exists()
    with closing(sqlite3.connect(tmp_path / "copy.db")) as conn:
        assert conn.execute("SELECT count(*) FROM models").fetchone()[0] == 0
