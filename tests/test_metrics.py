"""Prometheus /metrics: off by default; when on, the series a scrape should find."""

from __future__ import annotations

import urllib.request

from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import monitor_pb2

from .conftest import free_port, load_demo_rows, start_server, stop_server

MODEL = "scheme-sahayak"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


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
    assert 'sahayak_rpc_requests_total{code="OK",method="/sahayak.v1.InferenceService/Predict"} 150.0' in text
    assert 'sahayak_rpc_request_duration_seconds_bucket{le="0.001",method="/sahayak.v1.InferenceService/Predict"}' in text
    assert 'sahayak_predictions_total{model="scheme-sahayak",version="1"} 170.0' in text
    assert 'sahayak_training_runs_total{model="scheme-sahayak",result="succeeded"} 1.0' in text
    assert 'sahayak_training_run_duration_seconds_count{model="scheme-sahayak"} 1.0' in text
    assert 'sahayak_open_alerts{severity="critical"}' in text
    assert 'sahayak_feature_drift_psi{feature="age",model="scheme-sahayak"}' in text
    assert "sahayak_prediction_log_queue_rows 0.0" in text
    assert 'sahayak_prediction_log_rows_total{result="written"} 170.0' in text
    assert 'sahayak_prediction_log_rows_total{result="dropped"} 0.0' in text
    assert "sahayak_log_segments 1.0" in text  # the batch of 20 rows: its features, in a segment
    segment_bytes = float(text.split("\nsahayak_log_segment_bytes ")[1].split()[0])
    assert 20 * 21 < segment_bytes < 20 * 21 * 8 + 4096  # 21 features a row, at most 8 bytes each, and a header


def test_scrapes_during_a_load_see_the_counts_grow(tmp_path) -> None:
    """Scraped while four clients predict: every scrape parses, and the counters only grow."""
    import re
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
        pattern = re.compile(r'^sahayak_predictions_total\{model="scheme-sahayak",version="1"\} (\S+)$', re.M)
        try:
            for _ in range(5):
                text = scrape(port)
                m = pattern.search(text)
                assert m, "no predictions counter in the scrape"
                seen.append(float(m.group(1)))
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
