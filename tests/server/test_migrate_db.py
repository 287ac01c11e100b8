"""migrate-db: a SQLite database built by a real server, moved to a real PostgreSQL, served from there."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc.store import open_database
from sahayak_rpc.store.backup import backup
from sahayak_rpc.store.batchcodec import decode_columns, decode_probabilities
from sahayak_rpc.store.predictions import PredictionRepository
from sahayak_rpc.store.segments import folder_for, segment_name
from sahayak_rpc.store.transfer import COPY_ORDER, TransferError, copy_database, run_cli
from sahayak_rpc._proto.sahayak.v1 import common_pb2, feedback_pb2, monitor_pb2, registry_pb2, training_pb2

from ..helpers import Running, load_demo_rows, start_server, stop_server
from ..pg_cluster import shared_cluster

MODEL = "scheme-sahayak"
FB = feedback_pb2
M = monitor_pb2
# Each table's key on PostgreSQL where it is an identity (or predictions_seq's column).
IDENTITY = {
    "models": "id",
    "outcomes": "seq",
    "model_versions": "id",
    "alias_events": "id",
    "training_runs": "seq",
    "predictions": "seq",
    "feedback": "seq",
    "performance_records": "id",
    "alerts": "seq",
    "alert_events": "seq",
}


@dataclass
class Source:
    """The SQLite database, and what its server answered before it stopped."""

    path: str
    row: dict[str, Any]
    probability: float
    models: list[Any]
    champion: int
    status: Any
    alias_history: list[tuple[list[Any], str]]  # (events, next_page_token) per page
    runs: list[tuple[list[Any], str]]
    alert_events: list[tuple[str, int, str]]  # (cursor, event type, alert id) from cursor 0
    feedback_summary: Any
    batches: list[str]  # batch ids, in logging order
    logged: dict[str, Any] = field(default_factory=dict)  # prediction id -> PredictionRepository.get on SQLite


def pages(call: Any, request: Any, items: str) -> list[tuple[list[Any], str]]:
    out = []
    while True:
        resp = call(request)
        out.append((list(getattr(resp, items)), resp.next_page_token))
        if not resp.next_page_token:
            return out
        request.page_token = resp.next_page_token


def alias_history(c: Any) -> list[tuple[list[Any], str]]:
    return pages(c.registry.ListAliasHistory, registry_pb2.ListAliasHistoryRequest(model=MODEL, page_size=2), "events")


def runs(c: Any) -> list[tuple[list[Any], str]]:
    return pages(c.training.ListTrainingRuns, training_pb2.ListTrainingRunsRequest(model=MODEL, page_size=1), "runs")


def watch(c: Any, cursor: str, n: int) -> list[tuple[str, int, str]]:
    call = c.monitor.WatchAlerts(M.WatchAlertsRequest(cursor=cursor), timeout=30)
    try:
        return [(e.cursor, e.event_type, e.alert.alert_id) for e in (next(call) for _ in range(n))]
    finally:
        call.cancel()


def summary(c: Any) -> Any:
    return c.feedback.GetFeedbackSummary(FB.GetFeedbackSummaryRequest(model=MODEL))


def status(c: Any) -> tuple[int, ...]:
    m = c.server_status().models[0]
    return m.serving_version, m.outcome_count, m.labels_since_training, m.open_alerts


def record_feedback(c: Any, **kw: Any) -> Any:
    return c.feedback.RecordFeedback(FB.RecordFeedbackRequest(feedback=FB.Feedback(model=MODEL, **kw)))


def record_performance(c: Any) -> None:
    request = M.RecordPerformanceRequest(
        model=MODEL, version=1, source="batch-job", metrics=common_pb2.ClassificationMetrics(accuracy=0.8)
    )
    request.window.start_time.FromSeconds(1_767_000_000)
    request.window.end_time.FromSeconds(1_767_086_400)
    assert c.monitor.RecordPerformance(request).record_id


def logged_by_store(db_target: str, ids: list[str]) -> dict[str, Any]:
    db = open_database(db_target)
    try:
        repo = PredictionRepository(db)
        return {pid: repo.get(pid) for pid in ids}
    finally:
        db.close()


def sqlite_counts(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COPY_ORDER}


def pg(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def pg_state(url: str) -> dict[str, Any]:
    """Rows per table, each identity's largest key, and every sequence's position."""
    with psycopg.connect(url) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COPY_ORDER}
        tops = {t: conn.execute(f"SELECT coalesce(max({k}), 0) FROM {t}").fetchone()[0] for t, k in IDENTITY.items()}
        seqs = dict(conn.execute("SELECT sequencename, last_value FROM pg_sequences").fetchall())
    return {"counts": counts, "tops": tops, "sequences": seqs}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    path = str(tmp_path_factory.mktemp("migrate") / "s.db")
    r = start_server(path)
    try:
        c = r.client
        load_demo_rows(c, 1500)
        assert c.train(MODEL).promoted
        # One family this time: not the champion's exact run again (that would register nothing).
        second = c.train(MODEL, families=["logistic_regression"])
        if not second.promoted:
            c.set_alias(MODEL, "champion", second.produced_version or 2, reason="try it", force=True)
        c.rollback(MODEL, reason="back to the first")
        c.set_alias(MODEL, "staging", 2, reason="for the canary", force=True)
        rows = [e.features for e in generate_outcomes(40, seed=5)]
        for row in rows[:5]:
            c.predict(MODEL, row)
        batches = [c.predict_batch(MODEL, rows[:20]).batch_id, c.predict_batch(MODEL, rows[20:]).batch_id]
        r.server.predlog.flush()
        # Feedback whose outcome takes its features from a batch row (in a log segment).
        done = record_feedback(
            c,
            feedback_id="fb-1",
            prediction_id=f"{batches[0]}:3",
            scheme_id="pmegp",
            interaction=FB.INTERACTION_APPLIED,
            outcome=FB.FEEDBACK_OUTCOME_APPROVED,
        )
        assert done.outcome_id == "feedback:fb-1"
        record_feedback(c, feedback_id="fb-2", scheme_id="pmegp", interaction=FB.INTERACTION_VIEWED)
        record_performance(c)
        model = r.server.catalog.get(MODEL)
        first = r.server.monitor.raise_alert(model, "data_quality", "x")
        c.monitor.AcknowledgeAlert(M.AcknowledgeAlertRequest(alert_id=first.alert_id, note="looking"))
        r.server.monitor.resolve(model, "data_quality")
        assert r.server.monitor.raise_alert(model, "no_recent_outcomes", "quiet") is not None
        with sqlite3.connect(path) as conn:
            n_events = conn.execute("SELECT count(*) FROM alert_events").fetchone()[0]
        assert n_events == 4
        src = Source(
            path=path,
            row=rows[0],
            probability=c.predict(MODEL, rows[0]).probability,
            models=list(c.list_models()),
            champion=c.get_version(MODEL, alias="champion").version,
            status=None,
            alias_history=alias_history(c),
            runs=runs(c),
            alert_events=watch(c, "0", n_events),
            feedback_summary=summary(c),
            batches=batches,
        )
        r.server.predlog.flush()
        src.status = status(c)
    finally:
        stop_server(r)
    assert src.champion == 1 and len(src.alias_history) == 2 and len(src.runs) == 2 and src.runs[0][1]
    # A batch logged as JSON text, as versions before the binary layout did (store/batchcodec.py).
    with sqlite3.connect(path) as conn:
        created = conn.execute("SELECT max(created_us) FROM prediction_batches").fetchone()[0]
        conn.execute(
            "INSERT INTO prediction_batches VALUES (?, 1, 1, 2, ?, ?, 0.5, ?, 'served')",
            (
                "legacy-1",
                '{"age": [40.0, null], "craft": ["weaver", ""], "has_bank_account": [true, null]}',
                "[0.25, 0.75]",
                created,
            ),
        )
    ids = [f"{b}:{i}" for b in batches for i in (0, 3, 7, 19)] + ["legacy-1:0", "legacy-1:1"]
    src.logged = logged_by_store(path, ids)
    assert all(v is not None and v.features_json is not None for v in src.logged.values())
    return src


def test_a_sqlite_database_moves_to_postgresql_and_serves_the_same(source: Source, capsys: Any) -> None:
    url = shared_cluster().create_database()
    assert run_cli(source.path, url, json_out=True) == 0
    report = json.loads(capsys.readouterr().out)
    counts = sqlite_counts(source.path)
    assert report["tables"] == counts == pg_state(url)["counts"]
    assert list(report["tables"]) == list(COPY_ORDER) and report["lost_batches"] == []
    assert counts["prediction_batches"] == 3 and counts["secrets"] == 1 and counts["alert_events"] == 4
    copied = pg_state(url)
    # Every sequence past the largest copied key, predictions_seq included.
    seqs = copied["sequences"]
    assert seqs["predictions_seq"] == copied["tops"]["predictions"] > 0
    assert seqs["outcomes_seq_seq"] == copied["tops"]["outcomes"] and seqs["alert_events_seq_seq"] == 4
    # Logged features read back the same through the store: segment references resolved, JSON re-encoded.
    assert logged_by_store(url, list(source.logged)) == source.logged
    with sqlite3.connect(source.path) as conn:
        legacy = conn.execute(
            "SELECT columns_data, probabilities_data FROM prediction_batches WHERE batch_id = 'legacy-1'"
        ).fetchone()
    [moved] = pg(url, "SELECT columns_data, probabilities_data FROM prediction_batches WHERE batch_id = 'legacy-1'")
    assert isinstance(legacy[0], str) and isinstance(moved[0], bytes)
    assert decode_columns(moved[0]) == decode_columns(legacy[0])
    assert decode_probabilities(moved[1]) == decode_probabilities(legacy[1]) == [0.25, 0.75]

    r = start_server(url)
    try:
        c = r.client
        assert list(c.list_models()) == source.models
        assert c.get_version(MODEL, alias="champion").version == source.champion
        assert c.predict(MODEL, source.row).probability == source.probability
        assert status(c) == source.status
        assert alias_history(c) == source.alias_history
        assert runs(c) == source.runs
        # A page token the SQLite server issued pages on here.
        token = source.runs[0][1]
        next_page = c.training.ListTrainingRuns(
            training_pb2.ListTrainingRunsRequest(model=MODEL, page_size=1, page_token=token)
        )
        assert list(next_page.runs) == source.runs[1][0]
        assert watch(c, "0", len(source.alert_events)) == source.alert_events
        assert summary(c) == source.feedback_summary

        # New rows on PostgreSQL: the batch's logged features feed a training outcome ...
        pid = f"{source.batches[0]}:7"
        done = record_feedback(
            c,
            feedback_id="fb-3",
            prediction_id=pid,
            scheme_id="pmegp",
            interaction=FB.INTERACTION_APPLIED,
            outcome=FB.FEEDBACK_OUTCOME_REJECTED,
        )
        model = r.server.catalog.get(MODEL)
        stored = r.server.ctx.outcomes.get(model.id, done.outcome_id)
        assert stored is not None and stored.features == orjson.loads(source.logged[pid].features_json)
        c.record_outcome(MODEL, source.row, True, outcome_id="after-move")
        c.predict(MODEL, source.row)
        c.predict_batch(MODEL, [source.row, source.row])
        r.server.predlog.flush()
        run = c.train(MODEL)
        assert run.produced_version == 3
        c.set_alias(MODEL, "staging", 1, reason="after the move")
        r.clock.advance(7200)
        new_alert = r.server.monitor.raise_alert(model, "data_quality", "y")
        assert new_alert is not None
        last_cursor = source.alert_events[-1][0]
        [(cursor, kind, alert_id)] = watch(c, last_cursor, 1)
        assert int(cursor) == int(last_cursor) + 1 and alert_id == new_alert.alert_id
        record_performance(c)
    finally:
        stop_server(r)
    after = pg_state(url)
    for table, key in IDENTITY.items():
        top = copied["tops"][table]
        # No new row took a copied key, and the tables written to got keys above the copied ones.
        kept = pg(url, f"SELECT count(*) FROM {table} WHERE {key} <= %s", (top,))[0][0]
        assert kept == copied["counts"][table], table
        if table != "models":
            assert after["tops"][table] > top, table
    assert pg(url, "SELECT count(DISTINCT seq) = count(*) FROM predictions")[0][0]

    # Again into the same database (it holds data now): refused, by the command in a process of its own.
    before = pg_state(url)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sahayak_rpc.store.transfer import run_cli;"
            " sys.exit(run_cli(sys.argv[1], sys.argv[2], False))",
            source.path,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 1, done.stderr
    assert "already holds data" in done.stderr and "drop and recreate" in done.stderr and not done.stdout
    assert pg_state(url) == before


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_lost_log_segment_payload_is_left_out_and_reported(source: Source, tmp_path: Path, capsys: Any) -> None:
    copy = str(tmp_path / "copy.db")
    backup(source.path, copy)
    damaged, intact = source.batches[1], source.batches[0]
    with sqlite3.connect(copy) as conn:
        ref = conn.execute("SELECT columns_data FROM prediction_batches WHERE batch_id = ?", (damaged,)).fetchone()[0]
        # And an old JSON row cut short (neither server can read it): reported the same way.
        conn.execute(
            "INSERT INTO prediction_batches SELECT 'legacy-cut', model_id, version, row_count,"
            " substr(columns_data, 1, 20), probabilities_data, threshold, created_us, source"
            " FROM prediction_batches WHERE batch_id = 'legacy-1'"
        )
    _, number, offset, length, _ = struct.unpack("<4sIQII", ref)
    flip_byte(folder_for(copy) / segment_name(number), offset + length // 2)
    assert logged_by_store(copy, [f"{damaged}:0"])[f"{damaged}:0"].features_json is None  # the SQLite server: lost

    url = shared_cluster().create_database()
    assert run_cli(copy, url, json_out=False) == 0
    out = capsys.readouterr().out
    assert "left out 2 logged batches (22 predictions)" in out and "CRC mismatch" in out
    assert "legacy-cut (2 rows): its JSON features do not read" in out
    counts = pg_state(url)["counts"]
    assert counts["prediction_batches"] == sqlite_counts(copy)["prediction_batches"] - 2 == 2
    assert counts["outcomes"] == sqlite_counts(copy)["outcomes"]
    assert logged_by_store(url, [f"{damaged}:0"]) == {f"{damaged}:0": None}
    intact_ids = [p for p in source.logged if p.startswith(intact)]
    assert logged_by_store(url, intact_ids) == {p: source.logged[p] for p in intact_ids}


def test_a_run_left_running_in_the_source_fails_on_postgresql_instead_of_hanging(
    source: Source, tmp_path: Path
) -> None:
    """A run whose worker (replica 1) died mid-run: on the target, replica ids go on past the source's, so
    no new replica takes that run for its own; the first one to start fails it, as SQLite's would."""
    copy = str(tmp_path / "copy.db")
    backup(source.path, copy)
    run_id = source.runs[0][0][0].run_id
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT max(id) FROM replicas").fetchone()[0] == 1
        conn.execute("UPDATE training_runs SET state = 'running', worker = 1, ended_us = 0 WHERE run_id = ?", (run_id,))
    url = shared_cluster().create_database()
    copy_database(copy, url)
    r = start_server(url)
    try:
        assert r.server.replica.id == 2
        run = r.client.get_run(run_id)
        assert run.state == training_pb2.TRAINING_RUN_STATE_FAILED, run
        assert "interrupted" in run.end_reason and "replica 1" in run.end_reason
    finally:
        stop_server(r)


def test_refusals_write_nothing(source: Source, tmp_path: Path) -> None:
    url = shared_cluster().create_database()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    for src, dst, says in [
        (str(tmp_path / "missing.db"), url, "no database at"),
        (str(text), url, "is not a SQLite database file"),
        (str(tmp_path), url, "is a directory"),
        (url, url, "must be a SQLite database file"),
        (source.path, str(tmp_path / "t.db"), "must be a postgresql:// URL"),
    ]:
        with pytest.raises(TransferError, match=says):
            copy_database(src, dst)
    # Refused before either database was opened: no file made, no schema made.
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "t.db").exists()
    assert pg(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    # A source that a running server holds: what it writes after the copy's snapshot would be lost.
    copy = str(tmp_path / "copy.db")
    backup(source.path, copy)
    r: Running = start_server(copy)
    try:
        with pytest.raises(TransferError, match="a server is running on"):
            copy_database(copy, url)
    finally:
        stop_server(r)
    assert sum(pg_state(url)["counts"].values()) == 0
    # A target some server started on already (it made its own signing key): refused.
    s = start_server(url)
    stop_server(s)
    with pytest.raises(TransferError, match=r"already holds data \(in secrets\)"):
        copy_database(copy, url)
