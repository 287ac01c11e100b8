"""Model quality through a real server on both backends (issue 15): a run records the L2 strength it
chose and where the trees stopped, a run on exactly the champion's rows registers nothing, a fixed
strength is used as given, and a scheduled run that is not better beyond noise keeps the champion.
The statistics themselves: tests/unit/test_gate.py."""

from __future__ import annotations

import pytest

from sahayak_rpc import training as tr
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc._proto.sahayak.v1 import registry_pb2, training_pb2

from ..helpers import database_for, eventually, load_demo_rows, start_server, stop_server

MODEL = "scheme-sahayak"
WEEK = 7 * 86400


# --- through the server ------------------------------------------------------------------------------


BOTH = pytest.mark.backends("sqlite", "postgresql")


@BOTH
def test_a_run_records_its_choices_and_a_second_run_on_the_same_rows_registers_nothing(tmp_path, backend) -> None:
    r = start_server(database_for(backend, tmp_path, "q.db"))
    c = r.client
    try:
        load_demo_rows(c, 1500)
        first = c.train(MODEL)
        assert first.promoted and first.produced_version == 1
        p = first.parameters
        assert p["logistic_regression.l2_search"] == "cv5"
        assert float(p["logistic_regression.l2"]) in tr.L2_GRID
        assert p["logistic_regression.l2_path"].count(":") == len(tr.L2_GRID)
        assert p["gradient_boosting.fitted_on"].endswith("(fit + calibration)")
        trees = next(x for x in first.candidates if x.family == registry_pb2.MODEL_FAMILY_GRADIENT_BOOSTING)
        assert trees.stop_reason == training_pb2.STOP_REASON_EARLY_STOPPING
        again = c.train(MODEL)
        assert again.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED
        assert again.produced_version == 0 and not again.promoted
        assert again.end_reason.startswith("unchanged: champion version 1")
        assert again.parameters["unchanged_from_version"] == "1"
        assert [v.version for v in c.list_versions(MODEL)] == [1]
        # A fixed strength is used as given.
        patch = registry_pb2.Model(name=MODEL)
        patch.settings.training.logistic_regression.l2 = 0.05
        c.update_model(patch, ["settings.training.logistic_regression.l2"])
        fixed = c.train(MODEL, families=["logistic_regression"])
        assert fixed.produced_version == 2
        assert fixed.parameters["logistic_regression.l2_search"] == "fixed"
        assert float(fixed.parameters["logistic_regression.l2"]) == 0.05
    finally:
        stop_server(r)


@BOTH
def test_a_scheduled_run_that_is_not_better_keeps_the_champion(tmp_path, backend) -> None:
    from sahayak_rpc.client import OutcomeInput

    r = start_server(database_for(backend, tmp_path, "q.db"), scheduler=True)
    c = r.client
    try:
        load_demo_rows(c, 1500)

        def settled(count: int) -> list:
            active = {training_pb2.TRAINING_RUN_STATE_QUEUED, training_pb2.TRAINING_RUN_STATE_RUNNING}

            def check() -> list | None:
                rs = list(c.training.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(model=MODEL)).runs)
                return rs if len(rs) == count and not any(x.state in active for x in rs) else None

            return eventually(check, timeout=120)  # type: ignore[return-value]

        [first] = settled(1)
        assert first.promoted and first.produced_version == 1
        # A few more outcomes (fewer than an incremental update needs), then the weekly retrain.
        more = generate_outcomes(5, seed=99)
        c.import_outcomes(MODEL, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in more])
        r.clock.advance(WEEK + 1)
        weekly = settled(2)[0]
        assert weekly.trigger == training_pb2.TRAINING_TRIGGER_SCHEDULE
        assert weekly.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED
        assert weekly.produced_version == 2 and not weekly.promoted
        assert "not better than champion version 1 beyond noise" in weekly.end_reason
        checks = {ch.metric for ch in weekly.gate.checks}
        assert {"log_loss_gain_upper", "roc_auc_gain_upper", "log_loss_gain_lower"} <= checks
        assert c.get_model(MODEL).champion_version == 1
        assert c.get_version(MODEL, version=2).gate.reasons
    finally:
        stop_server(r)
