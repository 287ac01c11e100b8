"""The crash-safety harness in CI: SIGKILLs of a real server, nothing acknowledged lost.

50 kills on SQLite; 25 on PostgreSQL (a PostgreSQL server start costs more: a connection pool, the
migration check and the day partitions, so 25 kills keep the test near a minute; the mechanics
each kill exercises are the same).

The seed is random unless SAHAYAK_CRASH_SEED is set; it is printed and named in every failure,
so ``.venv/bin/python tests/crash_harness.py --kills 50 --seed N [--postgres]`` replays the kill
schedule.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from ..crash_harness import ACTIVITIES, Inspector, Ledger, run, snapshot

KILLS = 50
PG_KILLS = 25


def _seed() -> int:
    return int(os.environ.get("SAHAYAK_CRASH_SEED") or random.randrange(2**31))


def _assert_survived(summary: dict[str, Any], kills: int, where: str) -> None:
    assert summary["kills"] >= kills, where
    assert summary["lost"] == 0, f"{where}: {summary['lost_examples']}"
    assert summary["violations"] == [], where
    assert summary["ok"], where
    # Each kill landed in several activities; every activity was hit often.
    for activity in ACTIVITIES:
        assert summary["kills_during"][activity] >= 5, f"{where}: {summary['kills_during']}"
    # Every run a kill interrupted was found FAILED after the restart (a run still queued at the kill
    # is run after it instead: check_after_restart), and new runs were accepted.
    assert summary["interrupted_runs_failed"] + summary["queued_runs_at_kill"] == summary["kills_during"]["training"], (
        where
    )
    assert summary["start_training_accepted_after_restart"] == kills, where
    # Enough acknowledged writes of every kind for "none lost" to mean something.
    ack = summary["acknowledged"]
    # (Floors, not targets: a loaded machine acknowledges fewer writes between kills.)
    assert ack["outcomes"] >= 10 * kills and ack["feedback"] >= kills // 2, (where, ack)
    assert ack["logged_predictions"] >= 4 * kills, (where, ack)
    assert ack["imported_versions"] >= kills // 5 and ack["alias_moves"] >= 2 * kills // 5, (where, ack)
    assert ack["training_runs_started"] > kills, (where, ack)


def _assert_checker_can_fail(db: str) -> None:
    """Acknowledgements the database does not hold are reported lost."""
    with snapshot(db) as snap:
        ((oid, label, features),) = snap.rows("SELECT outcome_id, label, features_json FROM outcomes LIMIT 1")
    ledger = Ledger()
    ledger.outcomes["never-sent"] = ({"age": 30.0, "craft": "weaver"}, True)
    ledger.outcomes[oid] = (orjson.loads(features), not label)
    ledger.logged["never-logged"] = (1, 0.5, 1, {"age": 30.0})
    ledger.imported[10**6] = "never imported"
    lost = Inspector(db).inspect(ledger).lost
    assert len(lost) == 4, lost


@pytest.mark.slow
def test_fifty_kills_lose_no_acknowledged_write(tmp_path: Path) -> None:
    seed = _seed()
    summary = run(kills=KILLS, seed=seed, workdir=tmp_path, log=print)
    print(json.dumps(summary, indent=2))
    where = f"seed {seed}; replay: .venv/bin/python tests/crash_harness.py --kills {KILLS} --seed {seed}"
    _assert_survived(summary, KILLS, where)
    _assert_checker_can_fail(str(tmp_path / "crash.db"))


@pytest.mark.slow
def test_kills_on_postgresql_lose_no_acknowledged_write(tmp_path: Path) -> None:
    from ..pg_cluster import shared_cluster

    seed = _seed()
    cluster = shared_cluster()  # no PostgreSQL: PostgresUnavailable, a failure (never a skip)
    url = cluster.create_database()
    try:
        summary = run(kills=PG_KILLS, seed=seed, workdir=tmp_path, log=print, db=url)
        print(json.dumps(summary, indent=2))
        where = (
            f"seed {seed}; replay: .venv/bin/python tests/crash_harness.py --kills {PG_KILLS} --seed {seed} --postgres"
        )
        assert summary["backend"] == "postgresql", where
        _assert_survived(summary, PG_KILLS, where)
        _assert_checker_can_fail(url)
    finally:
        cluster.drop_database(url)
