"""A short soak (bench/soak.py) against a real server process: no unexpected error, every workload moves.

The RSS bar (< 5% growth from the first full retrain's high-water mark) is for the 60 s run in
docs/reliability.md; over a few seconds the figure is noise, so it is reported here but not asserted.
"""

from __future__ import annotations

from bench.soak import PREDICT_THREADS, SETUP_OUTCOMES, WATCHERS, run_soak
from sahayak_rpc.client import OutcomeInput

from ..helpers import Running, good_row


def test_a_short_soak_has_no_unexpected_error_and_every_workload_makes_progress() -> None:
    report = run_soak(8)
    assert report["unexpected_errors"] == 0, report["unexpected"]
    rpc = report["rpc"]
    for name in (
        "Predict",
        "PredictBatch",
        "RecordOutcome",
        "ImportOutcomes",
        "RecordFeedback",
        "StartTraining",
        "GetServerStatus",
    ):
        assert rpc[name]["ok"] > 0 and rpc[name]["errors"] == 0, (name, rpc.get(name))
        assert rpc[name]["p50_ms"] <= rpc[name]["p99_ms"], (name, rpc[name])
    # Several prediction threads, each paced at 100/s, kept going for the whole run.
    assert rpc["Predict"]["ok"] >= 8 * 10 * PREDICT_THREADS, rpc["Predict"]
    # Ingest and feedback landed, and the server holds exactly what was acknowledged.
    assert report["outcomes_accepted"] > 0 and report["feedback_outcomes"] > 0
    assert report["outcomes_stored"] == SETUP_OUTCOMES + report["outcomes_accepted"] + report["feedback_outcomes"]
    # Training ran; an alert reached all 50 watchers, raised and acknowledged.
    assert report["training_runs"] >= 2 and report["alert_rounds"] >= 1
    assert report["watchers"] == WATCHERS == 50
    assert report["watchers_with_every_alert"] == WATCHERS and report["watch_events_missed"] == 0
    assert report["watch_events"] >= 2 * WATCHERS
    # The server was sampled throughout, stayed healthy and stopped cleanly.
    assert len(report["rss_series_mib"]) >= 10 and report["rss_end_mib"] > 0
    # Every training run is logged beside the RSS samples, the soak model's full ones among them.
    assert any(model == "soak" and kind == "full" for _, _, model, kind in report["training_log"])
    assert report["rss_baseline"] in ("first_retrain_hwm", "warmup_median") and report["rss_baseline_mib"] > 0
    assert report["health_after"] == "SERVING" and report["exit_code"] == 0


def test_the_loaded_model_cache_stays_bounded_however_many_versions_training_registers(
    running: Running, small_model: str
) -> None:
    """The leak the soak found: every registered version stayed in the registry's cache, unbounded."""
    from sahayak_rpc.app.registry import _LOADED_MAX

    rows = [
        OutcomeInput(
            good_row(age=18 + i % 70, income=float(1000 * i), has_card=i % 3 == 0), i % 2 == 0, outcome_id=f"o{i}"
        )
        for i in range(200)
    ]
    assert running.client.import_outcomes(small_model, rows).accepted == 200
    versions = set()
    for _ in range(_LOADED_MAX + 3):
        run = running.client.train(small_model, families=["logistic_regression"])
        versions.add(run.produced_version)
    assert len(versions) == _LOADED_MAX + 3
    cached = len(running.server.registry._loaded)
    assert cached <= _LOADED_MAX, cached
    # Any version still serves: an evicted one is loaded again from the store.
    for version in (min(versions), max(versions)):
        assert running.client.predict(small_model, good_row(), version=version).version == version
    cached = len(running.server.registry._loaded)
    assert cached <= _LOADED_MAX, cached
