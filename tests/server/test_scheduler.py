"""Continuous learning: the scheduler on an injected clock (a week in milliseconds)."""

from __future__ import annotations

import pytest

import time
from sahayak_rpc.client import OutcomeInput
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import registry_pb2, training_pb2

from ..helpers import database_for, eventually, load_demo_rows, start_server, stop_server

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MODEL = "scheme-sahayak"
WEEK = 7 * 86400


def runs(client) -> list:
    return list(client.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(model=MODEL)).runs)


def settled(client, count: int) -> list:
    """Wait until there are ``count`` runs and none is active."""

    def check() -> list | None:
        rs = runs(client)
        active = {training_pb2.TRAINING_RUN_STATE_QUEUED, training_pb2.TRAINING_RUN_STATE_RUNNING}
        return rs if len(rs) == count and not any(r.state in active for r in rs) else None

    return eventually(check)  # type: ignore[return-value]


def test_new_labels_train_then_update_incrementally_then_weekly(tmp_path, backend: str) -> None:
    r = start_server(database_for(backend, tmp_path, "s.db"), scheduler=True)
    c = r.client
    try:
        load_demo_rows(c, 1500)
        # No champion yet: enough new labels start a full run on their own.
        [first] = settled(c, 1)
        assert (first.kind, first.trigger) == (
            training_pb2.TRAINING_KIND_FULL,
            training_pb2.TRAINING_TRIGGER_NEW_LABELS,
        )
        assert first.promoted
        # An import stream defers automatic training until it ends: the run saw all of it.
        assert first.data.outcome_count == 1500
        status = c.server_status().models[0]
        assert status.serving_version == 1 and status.labels_since_training == 0
        assert status.next_retrain_time.ToSeconds() == first.create_time.ToSeconds() + WEEK

        # 99 new labels: nothing happens; the 100th starts an incremental update.
        more = generate_outcomes(100, seed=77)
        c.import_outcomes(MODEL, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in more[:99]])
        time.sleep(0.3)
        assert len(runs(c)) == 1
        assert c.server_status().models[0].labels_until_incremental == 1
        e = more[99]
        c.record_outcome(MODEL, e.features, e.label, outcome_id=e.outcome_id)
        second = settled(c, 2)[0]
        assert (second.kind, second.trigger) == (
            training_pb2.TRAINING_KIND_INCREMENTAL,
            training_pb2.TRAINING_TRIGGER_NEW_LABELS,
        )
        assert second.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED and second.produced_version == 2
        assert second.data.outcome_count >= 100 and second.parameters["new"] == "100"
        v2 = c.get_version(MODEL, version=2)
        assert v2.lineage.source == registry_pb2.VERSION_SOURCE_INCREMENTAL and v2.lineage.parent_version >= 1
        assert v2.gate.checks  # the same gate as a full run
        assert c.server_status().models[0].labels_since_training == 0

        # A week later the scheduled full retrain runs.
        r.clock.advance(WEEK + 1)
        third = settled(c, 3)[0]
        assert (third.kind, third.trigger) == (training_pb2.TRAINING_KIND_FULL, training_pb2.TRAINING_TRIGGER_SCHEDULE)
        assert third.data.outcome_count == 1600
        status = c.server_status().models[0]
        assert status.next_retrain_time.ToSeconds() == third.create_time.ToSeconds() + WEEK
    finally:
        stop_server(r)


def test_scheduling_can_be_turned_off_per_model(tmp_path, backend: str) -> None:
    r = start_server(database_for(backend, tmp_path, "s.db"), scheduler=True)
    try:
        from sahayak_rpc.demo import ensure_demo_model

        ensure_demo_model(r.client)
        patch = registry_pb2.Model(name=MODEL)
        patch.settings.training.schedule_enabled = False
        r.client.update_model(patch, ["settings.training.schedule_enabled"])
        load_demo_rows(r.client, 600)
        r.clock.advance(2 * WEEK)
        time.sleep(0.5)
        assert runs(r.client) == []
        assert not r.client.server_status().models[0].HasField("next_retrain_time")
    finally:
        stop_server(r)
