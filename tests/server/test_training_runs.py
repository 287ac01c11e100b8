"""TrainingService runs over gRPC: start, watch, gate, cancel, list, restart."""

from __future__ import annotations

import grpc
import pytest

from sahayak_rpc.client import SahayakError
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc.store import open_database
from sahayak_rpc._proto.sahayak.v1 import registry_pb2, training_pb2

from ..helpers import Running, database_for, load_demo_rows, start_server, stop_server

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MODEL = "scheme-sahayak"


def test_too_few_outcomes_is_failed_precondition_and_starts_nothing(running: Running) -> None:
    load_demo_rows(running.client, 60)
    with pytest.raises(SahayakError) as info:
        running.client.start_training(MODEL)
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.reason == "NOT_ENOUGH_DATA" and "at least 100" in info.value.message
    assert list(running.client.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest()).runs) == []


def test_a_run_streams_its_progress_and_ends_with_a_champion(running: Running) -> None:
    load_demo_rows(running.client, 1500)
    run = running.client.start_training(MODEL, description="first")
    assert run.state in (training_pb2.TRAINING_RUN_STATE_QUEUED, training_pb2.TRAINING_RUN_STATE_RUNNING)
    events = list(running.client.watch_run(run.run_id, timeout=300))
    phases = [e.phase for e in events]
    assert phases[0] == training_pb2.TRAINING_PHASE_QUEUED and phases[-1] == training_pb2.TRAINING_PHASE_DONE
    assert training_pb2.TRAINING_PHASE_FITTING in phases and training_pb2.TRAINING_PHASE_GATING in phases
    fitting = [e for e in events if e.phase == training_pb2.TRAINING_PHASE_FITTING and e.iteration]
    assert fitting and all(e.loss > 0 for e in fitting)
    assert any(e.HasField("validation_metrics") for e in events)
    final = events[-1].run
    assert final.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED and final.promoted
    assert final.data.outcome_count == 1500 and final.data.validation_count == 300
    assert final.data.train_count == 1200 and final.data.HasField("first_outcome_time")
    assert final.duration.ToTimedelta().total_seconds() > 0
    assert {c.family for c in final.candidates} == {
        registry_pb2.MODEL_FAMILY_LOGISTIC_REGRESSION,
        registry_pb2.MODEL_FAMILY_GRADIENT_BOOSTING,
    }
    assert all(c.stop_reason != training_pb2.STOP_REASON_UNSPECIFIED for c in final.candidates)
    assert sum(c.selected for c in final.candidates) == 1
    assert final.gate.passed and final.produced_version == 1 and "promoted version 1" in final.end_reason
    assert running.client.get_run(run.run_id) == final
    version = running.client.get_version(MODEL)
    assert version.version == 1 and list(version.aliases) == ["champion"]
    assert version.lineage.training_run_id == run.run_id and version.lineage.outcome_count == 1500
    assert len(version.lineage.artifact_sha256) == 64 and version.feature_weights
    assert version.description == "first"
    assert running.client.get_model(MODEL).champion_version == 1
    # The version keeps a reference profile for drift checks, not the raw rows.
    profile = running.server.registry.versions.profile(running.server.catalog.get(MODEL).id, 1)
    assert profile["rows"] == 1200 and set(profile["features"]) >= {"age", "craft", "has_bank_account"}
    age = profile["features"]["age"]
    assert age["kind"] == "numeric" and abs(sum(age["shares"]) - 1) < 1e-9 and len(age["quantiles"]) == 101
    assert (
        abs(sum(profile["features"]["craft"]["shares"].values()) + profile["features"]["craft"]["missing_share"] - 1)
        < 1e-9
    )
    assert abs(sum(profile["prediction"]["shares"]) - 1) < 1e-9


def test_a_second_run_while_one_is_active_is_refused(running: Running) -> None:
    load_demo_rows(running.client, 1500)
    first = running.client.start_training(MODEL)
    with pytest.raises(SahayakError) as info:
        running.client.start_training(MODEL)
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION and info.value.reason == "RUN_ACTIVE"
    running.client.wait_run(first.run_id)


def test_a_candidate_below_the_gate_is_kept_as_rejected_and_does_not_serve(running: Running) -> None:
    load_demo_rows(running.client, 1500)
    assert running.client.train(MODEL).promoted
    patch = registry_pb2.Model(name=MODEL)
    patch.settings.gate.min_accuracy = 0.99
    running.client.update_model(patch, ["settings.gate.min_accuracy"])
    # One more outcome: a run on exactly the champion's rows would register nothing (test_quality_gate.py).
    running.client.record_outcome(MODEL, generate_outcomes(1, seed=5)[0].features, True)
    run = running.client.train(MODEL)
    assert run.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED and not run.promoted
    assert "rejected by the gate" in run.end_reason and "accuracy" in run.end_reason
    rejected = running.client.get_version(MODEL, version=run.produced_version)
    assert rejected.status == registry_pb2.MODEL_VERSION_STATUS_REJECTED
    assert not rejected.gate.passed and rejected.gate.reasons
    assert rejected.gate.baseline_version == 1
    assert [c.metric for c in rejected.gate.checks][-1] == "roc_auc_drop"
    assert running.client.get_version(MODEL).version == 1  # the champion did not move


def test_a_worse_family_loses_to_the_champion_on_the_same_rows(running: Running) -> None:
    load_demo_rows(running.client, 2000)
    assert running.client.train(MODEL, families=["gradient_boosting"]).promoted
    run = running.client.train(MODEL, families=["logistic_regression"])
    assert not run.promoted
    [check] = [c for c in run.gate.checks if c.metric == "roc_auc_drop"]
    assert not check.passed and check.value > 0.005


def test_cancel_a_queued_run(tmp_path, backend: str) -> None:
    r = start_server(
        database_for(backend, tmp_path, "q.db"), training_worker=False
    )  # no trainer here: runs stay queued
    try:
        load_demo_rows(r.client, 1500)
        run = r.client.start_training(MODEL)
        assert r.client.get_run(run.run_id).state == training_pb2.TRAINING_RUN_STATE_QUEUED
        assert r.client.server_status().queues.training == 1
        cancelled = r.client.training.CancelTrainingRun(training_pb2.CancelTrainingRunRequest(run_id=run.run_id)).run
        assert cancelled.state == training_pb2.TRAINING_RUN_STATE_CANCELLED
        assert r.client.wait_run(run.run_id).state == training_pb2.TRAINING_RUN_STATE_CANCELLED
        with pytest.raises(grpc.RpcError) as info:
            r.client.training.CancelTrainingRun(training_pb2.CancelTrainingRunRequest(run_id=run.run_id))
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert r.client.get_model(MODEL).champion_version == 0
        assert r.client.server_status().queues.training == 0
    finally:
        stop_server(r)


def test_unknown_runs_and_bad_requests(running: Running) -> None:
    with pytest.raises(SahayakError) as info:
        running.client.get_run("run-nope")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    load_demo_rows(running.client, 200)
    for request, field in [
        (training_pb2.StartTrainingRequest(model=MODEL, kind=9), "kind"),
        (training_pb2.StartTrainingRequest(model=MODEL, families=[0]), "families"),
        (training_pb2.StartTrainingRequest(model=MODEL, split=7), "split"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            running.client.training.StartTraining(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


def test_runs_list_newest_first_with_pages(running: Running) -> None:
    load_demo_rows(running.client, 300)
    ids = []
    for _ in range(3):
        ids.append(running.client.train(MODEL, families=["logistic_regression"]).run_id)
        running.clock.advance(1)
    page = running.client.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(model=MODEL, page_size=2))
    assert [r.run_id for r in page.runs] == ids[::-1][:2] and page.next_page_token
    rest = running.client.training.ListTrainingRuns(
        training_pb2.ListTrainingRunsRequest(model=MODEL, page_size=2, page_token=page.next_page_token)
    )
    assert [r.run_id for r in rest.runs] == ids[:1] and not rest.next_page_token
    ok = running.client.training.ListTrainingRuns(
        training_pb2.ListTrainingRunsRequest(state=training_pb2.TRAINING_RUN_STATE_FAILED)
    )
    assert list(ok.runs) == []


def test_a_run_interrupted_by_a_crash_is_failed_at_restart(tmp_path, backend: str) -> None:
    target = database_for(backend, tmp_path, "i.db")
    r = start_server(target)
    try:
        load_demo_rows(r.client, 200)
        model_id = r.server.catalog.get(MODEL).id
        worker = r.server.replica.id
    finally:
        stop_server(r)
    db = open_database(target)
    with db.write() as conn:  # what a kill -9 mid-run leaves behind: a run its (gone) worker held
        conn.execute(
            "INSERT INTO training_runs (run_id, model_id, kind, trigger, state, created_us, started_us,"
            " request_json, worker) VALUES ('run-x', ?, 'full', 'manual', 'running', 1, 2, '{}', ?)",
            (model_id, worker),
        )
    db.close()
    r = start_server(target)
    try:
        run = r.client.get_run("run-x")
        assert run.state == training_pb2.TRAINING_RUN_STATE_FAILED and "interrupted" in run.end_reason
        assert (
            r.client.train(MODEL, families=["logistic_regression"]).state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED
        )
    finally:
        stop_server(r)


def test_the_time_ordered_split_validates_on_the_newest_outcomes(running: Running) -> None:
    examples = load_demo_rows(running.client, 500)
    run = running.client.train(MODEL, families=["logistic_regression"], time_ordered=True)
    assert run.parameters["split"] == "time_ordered"
    newest = sorted(e.occurred_at for e in examples)[-100]
    assert run.data.validation_count == 100
    assert run.data.last_outcome_time.ToDatetime().replace(tzinfo=newest.tzinfo) >= newest
