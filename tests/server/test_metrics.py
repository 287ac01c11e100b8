"""Prometheus /metrics: off by default; when on, the series a scrape should find."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import monitor_pb2

from ..helpers import free_port, load_demo_rows, start_server, stop_server

MODEL = "scheme-sahayak"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_metrics_are_off_unless_asked_for(running) -> None:
    assert running.server.metrics is None


def test_a_scrape_shows_rpcs_predictions_training_alerts_drift_and_the_log_queue(tmp_path) -> None:
    port = free_port()
    r = start_server(tmp_path / "p.db", metrics_port=port)
    try:
        load_demo_rows(r.client, 1200)
        assert r.client.train(MODEL).promoted
        for e in generate_outcomes(150, seed=60):
            r.client.predict(MODEL, e.features)
        r.client.predict_batch(MODEL, [e.features for e in generate_outcomes(20, seed=61)])
        r.server.predlog.flush()
        r.client.monitor.DetectDrift(monitor_pb2.DetectDriftRequest(model=MODEL))
        r.client.health()
        text = scrape(port)
    finally:
        stop_server(r)
    found = samples(text)
    # Every series names the replica that serves it (host:port), so that replicas' series never collide.
    replica = r.server.replica.name
    assert replica.endswith(f":{r.server.port}") and {dict(k[1]).get("replica") for k in found} == {replica}
    assert (
        value(
            found,
            "sahayak_rpc_requests_total",
            code="OK",
            method="/sahayak.v1.InferenceService/Predict",
            replica=replica,
        )
        == 150.0
    )
    assert (
        value(
            found,
            "sahayak_rpc_request_duration_seconds_bucket",
            le="0.001",
            method="/sahayak.v1.InferenceService/Predict",
            replica=replica,
        )
        is not None
    )
    assert value(found, "sahayak_predictions_total", model="scheme-sahayak", version="1", replica=replica) == 170.0
    assert (
        value(found, "sahayak_training_runs_total", model="scheme-sahayak", result="succeeded", replica=replica) == 1.0
    )
    assert value(found, "sahayak_training_run_duration_seconds_count", model="scheme-sahayak", replica=replica) == 1.0
    assert value(found, "sahayak_open_alerts", severity="critical", replica=replica) is not None
    assert value(found, "sahayak_feature_drift_psi", feature="age", model="scheme-sahayak", replica=replica) is not None
    assert value(found, "sahayak_prediction_log_queue_rows", replica=replica) == 0.0
    assert value(found, "sahayak_prediction_log_rows_total", result="written", replica=replica) == 170.0
    assert value(found, "sahayak_prediction_log_rows_total", result="dropped", replica=replica) == 0.0
    # The batch of 20 rows: its features, in a segment.
    assert value(found, "sahayak_log_segments", replica=replica) == 1.0
    segment_bytes = value(found, "sahayak_log_segment_bytes", replica=replica)
    assert segment_bytes is not None
    assert 20 * 21 < segment_bytes < 20 * 21 * 8 + 4096  # 21 features a row, at most 8 bytes each, and a header


def test_scrapes_during_a_load_see_the_counts_grow(tmp_path) -> None:
    """Scraped while four clients predict: every scrape parses, and the counters only grow."""
    import threading

    port = free_port()
    r = start_server(tmp_path / "l.db", metrics_port=port)
    try:
        load_demo_rows(r.client, 800)
        assert r.client.train(MODEL, families=["logistic_regression"]).promoted
        rows = [e.features for e in generate_outcomes(50, seed=62)]
        stop = threading.Event()
        errors: list[BaseException] = []

        def load() -> None:
            try:
                while not stop.is_set():
                    for row in rows:
                        r.client.predict(MODEL, row)
                    r.client.predict_batch(MODEL, rows)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        # One prediction before the first scrape, so the series exists however the threads are scheduled.
        r.client.predict(MODEL, rows[0])
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        seen: list[float] = []
        try:
            for _ in range(5):
                text = scrape(port)
                count = value(
                    samples(text), "sahayak_predictions_total", model=MODEL, version="1", replica=r.server.replica.name
                )
                assert count is not None, "no predictions counter in the scrape"
                seen.append(count)
                assert "sahayak_rpc_request_duration_seconds_bucket" in text
                assert "sahayak_prediction_log_queue_rows" in text
                stop.wait(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors
        assert seen == sorted(seen) and seen[-1] > seen[0] > 0
    finally:
        stop_server(r)
