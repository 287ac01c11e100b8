"""MonitorService: delayed labels, windowed performance, trends, drift, alerts, health checks, retention."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import common_pb2, monitor_pb2, training_pb2

from ..helpers import Running, database_for, eventually, load_demo_rows, start_server, stop_server

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MODEL = "scheme-sahayak"
M = monitor_pb2
DAY = 86400


@pytest.fixture
def served(tmp_path, backend: str) -> Running:
    r = start_server(database_for(backend, tmp_path, "m.db"))
    load_demo_rows(r.client, 1500)
    assert r.client.train(MODEL).promoted
    yield r
    stop_server(r)


def predict_all(r: Running, rows: list[dict]) -> list:
    out = [r.client.predict(MODEL, row) for row in rows]
    r.server.predlog.flush()
    return out


def shifted(rows: list[dict]) -> list[dict]:
    """The same artisans, much older and all potters: a drifted population."""
    return [{**row, "age": 86.0, "craft": "potter", "years_experience": 60.0} for row in rows]


def heavily_shifted(rows: list[dict]) -> list[dict]:
    """Most of the artisan's features moved at once: data-set drift."""
    return [
        {
            **row,
            "age": 86.0,
            "craft": "potter",
            "years_experience": 60.0,
            "state": "assam",
            "gender": "other",
            "social_category": "st",
            "education": "graduate",
            "has_bank_account": False,
            "has_artisan_card": False,
            "documents_complete_share": 0.05,
            "prior_applications": 9.0,
            "prior_approvals": 0.0,
            "distance_to_office_km": 95.0,
        }
        for row in rows
    ]


def test_delayed_labels_join_predictions_for_windowed_performance(served: Running) -> None:
    c = served.client
    examples = generate_outcomes(300, seed=40)
    preds = predict_all(served, [e.features for e in examples])
    # Labels arrive later for two thirds of the predictions, naming them.
    for e, p in list(zip(examples, preds))[:200]:
        c.record_outcome(
            MODEL, e.features, e.label, outcome_id=f"late-{p.prediction_id}", prediction_id=p.prediction_id
        )
    snap = c.monitor.GetPerformance(M.GetPerformanceRequest(model=MODEL)).snapshot
    assert (snap.prediction_count, snap.labelled_count) == (300, 200)
    expected = np.mean([(p.probability >= 0.5) == e.label for e, p in list(zip(examples, preds))[:200]])
    assert snap.realised.accuracy == pytest.approx(expected) and snap.realised.count == 200
    est = snap.estimated
    probs = np.array([p.probability for p in preds[200:]])
    assert est.unlabelled_count == 100
    assert est.accuracy == pytest.approx(np.mean(np.maximum(probs, 1 - probs)))
    last = c.monitor.GetPerformance(
        M.GetPerformanceRequest(model=MODEL, window=M.PerformanceWindow(last_n=50))
    ).snapshot
    assert last.labelled_count == 50 and last.realised.count == 50
    with pytest.raises(grpc.RpcError) as info:
        c.monitor.GetPerformance(M.GetPerformanceRequest(model=MODEL, window=M.PerformanceWindow(last_n=-1)))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_trend_finds_a_degrading_model(served: Running) -> None:
    c = served.client
    rows = [e.features for e in generate_outcomes(60, seed=41)]
    start = served.clock.now()
    for day in range(6):
        preds = predict_all(served, rows)
        for i, (row, p) in enumerate(zip(rows, preds)):
            right = i >= day * 10  # each day ten more predictions turn out wrong
            label = (p.probability >= 0.5) == right
            c.record_outcome(MODEL, row, label, outcome_id=f"d{day}-{i}", prediction_id=p.prediction_id)
        served.clock.advance(DAY)
    request = M.GetPerformanceTrendRequest(model=MODEL, window=duration_pb2.Duration(seconds=DAY))
    request.range.start_time.FromMicroseconds(int(start * 1e6))
    request.range.end_time.FromMicroseconds(int(served.clock.now() * 1e6))
    resp = c.monitor.GetPerformanceTrend(request)
    assert len(resp.windows) == 6 and resp.metric == "accuracy"
    assert [round(w.realised.accuracy, 3) for w in resp.windows] == [round(1 - d / 6, 3) for d in range(6)]
    assert resp.verdict == M.TREND_VERDICT_DEGRADING and resp.slope < 0 and resp.p_value < 0.05
    request.metric = "nonsense"
    with pytest.raises(grpc.RpcError):
        c.monitor.GetPerformanceTrend(request)


def test_record_performance_from_outside(served: Running) -> None:
    request = M.RecordPerformanceRequest(
        model=MODEL, version=1, source="batch-job", metrics=common_pb2.ClassificationMetrics(accuracy=0.8, f1=0.7)
    )
    request.window.start_time.FromSeconds(1_700_000_000)
    request.window.end_time.FromSeconds(1_700_086_400)
    assert served.client.monitor.RecordPerformance(request).record_id
    request.metrics.accuracy = 1.5
    with pytest.raises(grpc.RpcError) as info:
        served.client.monitor.RecordPerformance(request)
    assert "metrics.accuracy" in info.value.details()


def test_drift_is_found_per_feature_with_methods_and_thresholds(served: Running) -> None:
    c = served.client
    rows = [e.features for e in generate_outcomes(400, seed=42)]
    predict_all(served, rows)
    calm = c.monitor.DetectDrift(M.DetectDriftRequest(model=MODEL)).report
    assert calm.reference_version == 1 and not calm.dataset_drift
    assert {f.feature for f in calm.features} >= {"age", "craft", "has_bank_account"}
    age = next(f for f in calm.features if f.feature == "age")
    assert [s.method for s in age.statistics] == [
        M.DRIFT_METHOD_PSI,
        M.DRIFT_METHOD_KOLMOGOROV_SMIRNOV,
        M.DRIFT_METHOD_WASSERSTEIN,
    ]
    assert age.statistics[0].threshold == pytest.approx(0.2) and not age.drifted
    served.clock.advance(2 * DAY)
    predict_all(served, shifted(rows))
    window = M.PerformanceWindow(
        time_window=common_pb2.TimeWindow(start_time=timestamp_pb2.Timestamp(seconds=int(served.clock.now()) - 3600))
    )
    moved = c.monitor.DetectDrift(M.DetectDriftRequest(model=MODEL, window=window)).report
    drifted = {f.feature for f in moved.features if f.drifted}
    assert {"age", "craft", "years_experience"} <= drifted
    craft = next(f for f in moved.features if f.feature == "craft")
    assert [s.method for s in craft.statistics] == [M.DRIFT_METHOD_PSI, M.DRIFT_METHOD_JENSEN_SHANNON]
    assert moved.prediction.current_count == 400
    assert moved.drifted_share == pytest.approx(len(drifted) / len(moved.features))


def test_alerts_raise_stream_acknowledge_and_resolve_with_cooldown(served: Running) -> None:
    c = served.client
    rows = [e.features for e in generate_outcomes(300, seed=43)]
    events: list = []
    call = c.monitor.WatchAlerts(M.WatchAlertsRequest(model=MODEL), timeout=60)

    def read() -> None:
        try:
            for e in call:
                events.append(e)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    call.initial_metadata()  # the server sends headers once the watch listens: no event can slip by
    predict_all(served, shifted(rows))
    first = c.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0]
    rules = {a.rule for a in first.raised}
    assert M.ALERT_RULE_FEATURE_DRIFT in rules
    drift_alert = next(a for a in first.raised if a.rule == M.ALERT_RULE_FEATURE_DRIFT)
    assert drift_alert.state == M.ALERT_STATE_OPEN and drift_alert.severity >= M.ALERT_SEVERITY_WARNING
    # The same condition again: the open alert is not duplicated.
    again = c.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0]
    assert M.ALERT_RULE_FEATURE_DRIFT not in {a.rule for a in again.raised}
    acked = c.monitor.AcknowledgeAlert(M.AcknowledgeAlertRequest(alert_id=drift_alert.alert_id, note="on it")).alert
    assert acked.state == M.ALERT_STATE_ACKNOWLEDGED and acked.note == "on it"
    # A day later the shifted rows are out of the drift window and normal ones came in: resolved by itself.
    served.clock.advance(DAY + 60)
    predict_all(served, rows)
    cleared = c.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0]
    assert drift_alert.alert_id in {a.alert_id for a in cleared.resolved}
    # The cooldown (an hour) ran out long ago: a new breach is a new alert.
    predict_all(served, shifted(rows))
    fresh = c.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0].raised
    assert [a.alert_id != drift_alert.alert_id for a in fresh if a.rule == M.ALERT_RULE_FEATURE_DRIFT] == [True]
    eventually(lambda: len([e for e in events if e.alert.alert_id == drift_alert.alert_id]) >= 3, timeout=10)
    call.cancel()
    mine = [e.event_type for e in events if e.alert.alert_id == drift_alert.alert_id]
    assert mine == [M.ALERT_EVENT_TYPE_RAISED, M.ALERT_EVENT_TYPE_ACKNOWLEDGED, M.ALERT_EVENT_TYPE_RESOLVED]
    listed = c.monitor.ListAlerts(M.ListAlertsRequest(model=MODEL, state=M.ALERT_STATE_RESOLVED)).alerts
    assert drift_alert.alert_id in {a.alert_id for a in listed}
    with pytest.raises(grpc.RpcError) as info:
        c.monitor.AcknowledgeAlert(M.AcknowledgeAlertRequest(alert_id=drift_alert.alert_id))
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as info:
        c.monitor.AcknowledgeAlert(M.AcknowledgeAlertRequest(alert_id="alert-nope"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_one_cooldown_per_model_and_rule(served: Running) -> None:
    monitor = served.server.monitor
    model = served.server.catalog.get(MODEL)
    first = monitor.raise_alert(model, "data_quality", "one")
    assert first is not None
    assert monitor.raise_alert(model, "data_quality", "still open") is None
    assert monitor.raise_alert(model, "no_recent_outcomes", "another rule") is not None
    monitor.resolve(model, "data_quality")
    served.clock.advance(1800)
    assert monitor.raise_alert(model, "data_quality", "within the hour") is None
    served.clock.advance(1801)
    assert monitor.raise_alert(model, "data_quality", "after it") is not None


def test_watch_alerts_resumes_from_a_cursor_without_gaps_or_repeats(served: Running) -> None:
    c = served.client
    monitor = served.server.monitor
    model = served.server.catalog.get(MODEL)
    first = monitor.raise_alert(model, "candidate_rejected", "one")
    call = c.monitor.WatchAlerts(M.WatchAlertsRequest(cursor="0"), timeout=30)
    got = next(call)
    assert got.alert.alert_id == first.alert_id
    call.cancel()
    monitor.resolve(model, "candidate_rejected")
    served.clock.advance(7200)
    second = monitor.raise_alert(model, "candidate_rejected", "two")
    resumed = c.monitor.WatchAlerts(M.WatchAlertsRequest(cursor=got.cursor), timeout=30)
    a, b = next(resumed), next(resumed)
    resumed.cancel()
    assert (a.event_type, a.alert.alert_id) == (M.ALERT_EVENT_TYPE_RESOLVED, first.alert_id)
    assert (b.event_type, b.alert.alert_id) == (M.ALERT_EVENT_TYPE_RAISED, second.alert_id)
    assert int(b.cursor) > int(a.cursor) > int(got.cursor)


def test_a_slow_watcher_does_not_hold_up_the_others(served: Running) -> None:
    c = served.client
    model = served.server.catalog.get(MODEL)
    slow = c.monitor.WatchAlerts(M.WatchAlertsRequest(cursor="0"), timeout=30)  # never read
    fast = c.monitor.WatchAlerts(M.WatchAlertsRequest(cursor="0"), timeout=30)
    for i in range(20):
        served.server.monitor.raise_alert(model, "no_recent_outcomes", f"n{i}")
        served.server.monitor.resolve(model, "no_recent_outcomes")
        served.clock.advance(7200)
    seen = [next(fast) for _ in range(40)]
    assert len({e.alert.alert_id for e in seen}) == 20
    slow.cancel()
    fast.cancel()


def test_failed_and_rejected_training_raise_alerts(served: Running) -> None:
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2

    c = served.client
    patch = registry_pb2.Model(name=MODEL)
    patch.settings.gate.min_accuracy = 0.999
    c.update_model(patch, ["settings.gate.min_accuracy"])
    # One more outcome: a run on exactly the champion's rows would register nothing (test_quality_gate.py).
    c.record_outcome(MODEL, generate_outcomes(1, seed=5)[0].features, True)
    c.train(MODEL)
    alerts = c.monitor.ListAlerts(M.ListAlertsRequest(model=MODEL)).alerts
    assert M.ALERT_RULE_CANDIDATE_REJECTED in {a.rule for a in alerts}
    assert c.server_status().models[0].open_alerts >= 1


def test_critical_drift_starts_a_rate_limited_retrain(served: Running) -> None:
    c = served.client
    rows = heavily_shifted([e.features for e in generate_outcomes(300, seed=44)])
    predict_all(served, rows)
    result = c.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0]
    assert result.drift.dataset_drift and result.training_run_id
    run = c.wait_run(result.training_run_id)
    assert run.trigger == training_pb2.TRAINING_TRIGGER_DRIFT
    again = c.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0]
    assert again.training_run_id == ""  # within the cooldown


def test_the_scheduler_checks_health_every_interval_and_enforces_retention(tmp_path, backend: str) -> None:
    r = start_server(database_for(backend, tmp_path, "h.db"), scheduler=True)
    try:
        load_demo_rows(r.client, 1500)
        eventually(lambda: r.client.get_model(MODEL).champion_version)
        rows = [e.features for e in generate_outcomes(50, seed=45)]
        predict_all(r, rows)
        model_id = r.server.catalog.get(MODEL).id
        assert r.server.ctx.predictions.count(model_id) == 50
        r.clock.advance(8 * DAY)  # past the 7-day prediction retention
        eventually(lambda: r.server.ctx.predictions.count(model_id) == 0, timeout=30)
        alerts = r.client.monitor.ListAlerts(M.ListAlertsRequest(model=MODEL)).alerts
        assert M.ALERT_RULE_NO_RECENT_PREDICTIONS in {a.rule for a in alerts}
    finally:
        stop_server(r)


def test_the_report_sums_up_a_window(served: Running) -> None:
    predict_all(served, [e.features for e in generate_outcomes(120, seed=46)])
    report = served.client.monitor.GetMonitoringReport(M.GetMonitoringReportRequest(model=MODEL))
    assert report.performance.prediction_count == 120 and report.training_runs == 1 and report.promotions == 1
    assert report.drift.reference_version == 1
    assert report.markdown.startswith("# Monitoring report: scheme-sahayak") and "Predictions: 120" in report.markdown


def test_the_whole_loop_on_the_injected_clock(tmp_path, backend: str) -> None:
    """Serve, shift the inputs, the periodic check alerts a watcher and retrains, the alert resolves,
    a second breach within the cooldown stays quiet, and a resumed watcher misses nothing."""
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2

    r = start_server(database_for(backend, tmp_path, "loop.db"), scheduler=True)
    c = r.client
    try:
        load_demo_rows(c, 1500)
        eventually(lambda: c.get_model(MODEL).champion_version)
        patch = registry_pb2.Model(name=MODEL)
        patch.settings.monitoring.alert_cooldown.FromSeconds(3 * DAY)
        c.update_model(patch, ["settings.monitoring.alert_cooldown"])
        normal = [e.features for e in generate_outcomes(300, seed=50)]
        predict_all(r, normal)

        def check_now() -> None:
            r.clock.advance(301)  # past the 5-minute interval: the scheduler runs a health check

        def drift_alerts() -> list:
            return [
                a
                for a in c.monitor.ListAlerts(M.ListAlertsRequest(model=MODEL)).alerts
                if a.rule == M.ALERT_RULE_FEATURE_DRIFT
            ]

        watch = c.monitor.WatchAlerts(M.WatchAlertsRequest(model=MODEL), timeout=60)
        watch.initial_metadata()  # listening from here on
        seen: list = []
        predict_all(r, heavily_shifted(normal))
        check_now()
        for event in watch:
            seen.append(event)
            if event.alert.rule == M.ALERT_RULE_FEATURE_DRIFT:
                break
        watch.cancel()  # the subscriber goes away
        raised = seen[-1]
        assert raised.event_type == M.ALERT_EVENT_TYPE_RAISED and raised.alert.severity == M.ALERT_SEVERITY_CRITICAL
        runs = eventually(
            lambda: [
                x
                for x in c.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(model=MODEL)).runs
                if x.trigger == training_pb2.TRAINING_TRIGGER_DRIFT
            ]
        )
        c.wait_run(runs[0].run_id)

        r.clock.advance(DAY)  # the shifted rows leave the drift window
        predict_all(r, normal)
        check_now()
        eventually(lambda: drift_alerts()[0].state == M.ALERT_STATE_RESOLVED)

        predict_all(r, heavily_shifted(normal))  # a second breach, inside the 3-day cooldown
        check_now()
        time.sleep(0.5)
        check_now()
        time.sleep(0.5)
        assert len(drift_alerts()) == 1

        # Resuming from the cursor replays exactly what happened since, in order, once.
        expected = [
            (str(e.seq), e.event, e.alert.alert_id) for e in r.server.monitor.repo.events_after(int(raised.cursor))
        ]
        resumed = c.monitor.WatchAlerts(M.WatchAlertsRequest(model=MODEL, cursor=raised.cursor), timeout=60)
        got = [next(resumed) for _ in expected]
        resumed.cancel()
        names = {
            M.ALERT_EVENT_TYPE_RAISED: "raised",
            M.ALERT_EVENT_TYPE_ACKNOWLEDGED: "acknowledged",
            M.ALERT_EVENT_TYPE_RESOLVED: "resolved",
        }
        assert [(e.cursor, names[e.event_type], e.alert.alert_id) for e in got] == expected
        assert [x for x in expected if x[2] == raised.alert.alert_id] == [
            x for x in expected if x[2] == raised.alert.alert_id and x[1] == "resolved"
        ]
        assert len([x for x in expected if x[2] == raised.alert.alert_id]) == 1
    finally:
        stop_server(r)


def test_a_health_check_right_after_a_prediction_sees_it(served: Running) -> None:
    """The check flushes the prediction log first: no false 'no recent predictions' alert."""
    served.client.predict(MODEL, generate_outcomes(1, seed=3)[0].features)
    result = served.client.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0]
    assert M.ALERT_RULE_NO_RECENT_PREDICTIONS not in [a.rule for a in result.raised]
    assert result.last_prediction_time.seconds > 0


def test_a_live_watch_says_when_it_is_listening(served: Running) -> None:
    """Headers arrive before any event, so a client knows its watch has started."""
    call = served.client.monitor.WatchAlerts(M.WatchAlertsRequest(model=MODEL), timeout=30)
    got: list = []
    t = threading.Thread(target=lambda: got.append(call.initial_metadata()), daemon=True)
    t.start()
    t.join(10)
    try:
        assert got, "no headers before the first event"
    finally:
        call.cancel()


def test_the_prediction_log_writer_survives_an_item_that_fails_to_encode(served: Running) -> None:
    """A bad item costs its own rows, not the writer thread: later predictions are still logged."""
    log = served.server.predlog
    before = log.dropped

    def broken() -> list:
        raise ValueError("cannot encode")

    log.submit_many(3, broken)
    log.flush()
    assert log.dropped == before + 3
    pid = served.client.predict(MODEL, generate_outcomes(1, seed=9)[0].features).prediction_id
    log.flush()
    assert served.server.ctx.predictions.get(pid) is not None
    assert log._thread.is_alive()


def test_the_python_client_watches_alerts_and_resumes_from_a_cursor(served: Running) -> None:
    """Client.watch_alerts: a raised alert arrives; a watch from its cursor starts after it."""
    rows = [e.features for e in generate_outcomes(300, seed=31)]
    predict_all(served, shifted(rows))
    raised = served.client.monitor.RunHealthCheck(M.RunHealthCheckRequest(model=MODEL)).results[0].raised
    assert raised
    first = next(served.client.watch_alerts(MODEL, cursor="0", timeout=10))
    assert first.event_type == M.ALERT_EVENT_TYPE_RAISED and first.alert.alert_id in {a.alert_id for a in raised}
    served.client.monitor.AcknowledgeAlert(M.AcknowledgeAlertRequest(alert_id=first.alert.alert_id, note="seen"))
    events = served.client.watch_alerts(MODEL, cursor=first.cursor, timeout=10)
    after = next(e for e in events if e.alert.alert_id == first.alert.alert_id)
    assert after.event_type == M.ALERT_EVENT_TYPE_ACKNOWLEDGED
