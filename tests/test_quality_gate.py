"""Model quality (issue 15): the L2 strength chosen on data, trees that stop by early stopping, the
refit on every training row, and a gate that protects the champion by a paired bootstrap.

The pure rules (gate.compare, gate.evaluate, training.choose_l2, training.data_digest) are tested
directly; what a run does with them is tested through a real server on both backends.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from sahayak_rpc import gate as gating
from sahayak_rpc import training as tr
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc.metrics import compute
from sahayak_rpc.settings import QualityGate
from sahayak_rpc._proto.sahayak.v1 import registry_pb2, training_pb2

from .conftest import database_for, eventually, load_demo_rows, start_server, stop_server

MODEL = "scheme-sahayak"
WEEK = 7 * 86400


def _scores(n: int = 600, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a model's probabilities that track them with ``noise``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = (2 * y - 1) * 1.0 + rng.normal(0, noise, n)
    return y, 1 / (1 + np.exp(-z))


# --- the bootstrap -----------------------------------------------------------------------------------


def test_the_same_model_twice_gains_nothing_and_is_not_better() -> None:
    y, p = _scores()
    c = gating.compare(gating.PairedScores(y, p, p.copy()))
    assert c.roc_auc == c.roc_auc_low == c.roc_auc_high == 0.0
    assert c.log_loss == c.log_loss_low == c.log_loss_high == 0.0


def test_point_gains_are_the_metrics_differences() -> None:
    y, good = _scores(seed=1, noise=0.7)
    _, poor = _scores(seed=1, noise=2.5)
    c = gating.compare(gating.PairedScores(y, good, poor))
    assert c.roc_auc == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, poor), abs=1e-12)
    assert c.log_loss == pytest.approx(log_loss(y, poor) - log_loss(y, good), abs=1e-9)
    # Clearly better: both lower bounds above zero; and the other way round, both upper bounds below.
    assert c.roc_auc_low > 0 and c.log_loss_low > 0
    back = gating.compare(gating.PairedScores(y, poor, good))
    assert back.roc_auc_high < 0 and back.log_loss_high < 0


def test_bounds_straddle_zero_for_a_difference_within_noise_and_are_seeded() -> None:
    y, p = _scores(n=300, seed=2)
    rng = np.random.default_rng(9)
    q = np.clip(p + rng.normal(0, 0.01, len(p)), 0.001, 0.999)
    a = gating.compare(gating.PairedScores(y, q, p), seed=4)
    assert a.log_loss_low < 0 < a.log_loss_high
    assert a.roc_auc_low <= 0 <= a.roc_auc_high
    assert gating.compare(gating.PairedScores(y, q, p), seed=4) == a
    assert gating.compare(gating.PairedScores(y, q, p), seed=5) != a


def test_one_class_rows_leave_roc_auc_undefined_and_mismatched_rows_are_refused() -> None:
    y = np.ones(50, dtype=int)
    c = gating.compare(gating.PairedScores(y, np.full(50, 0.9), np.full(50, 0.6)))
    assert np.isnan(c.roc_auc) and c.log_loss > 0 and c.log_loss_low > 0
    with pytest.raises(ValueError):
        gating.compare(gating.PairedScores(y, np.full(49, 0.9), np.full(50, 0.6)))
    with pytest.raises(ValueError):
        gating.compare(gating.PairedScores(y[:0], y[:0], y[:0]))


# --- the verdict -------------------------------------------------------------------------------------


OPEN = QualityGate(min_accuracy=0.0, min_f1=0.0, max_calibration_error=1.0)


def _verdict(cand: np.ndarray, champ: np.ndarray, y: np.ndarray, require: bool) -> gating.GateResult:
    return gating.evaluate(compute(y, cand, 0.5), OPEN, compute(y, champ, 0.5), 3,
                           paired=gating.PairedScores(y, cand, champ), require_improvement=require)


def test_a_manual_run_within_noise_passes_a_scheduled_one_keeps_the_champion() -> None:
    y, p = _scores(n=400, seed=3)
    q = np.clip(p + np.random.default_rng(1).normal(0, 0.01, len(p)), 0.001, 0.999)
    assert _verdict(q, p, y, require=False).passed
    kept = _verdict(q, p, y, require=True)
    assert not kept.passed
    assert any("not better than champion version 3 beyond noise" in r for r in kept.reasons)


def test_worse_beyond_noise_fails_even_within_the_roc_auc_allowance() -> None:
    y, good = _scores(n=2000, seed=6, noise=1.0)
    # Same ranking (ROC AUC identical), badly calibrated: worse in log loss beyond noise.
    z = np.log(good / (1 - good))
    overconfident = 1 / (1 + np.exp(-4 * z))
    v = _verdict(overconfident, good, y, require=False)
    assert not v.passed
    assert any("worse than champion version 3 beyond noise in log loss" in r for r in v.reasons)
    assert not any("ROC AUC" in r for r in v.reasons)


def test_better_beyond_noise_passes_a_scheduled_run() -> None:
    y, good = _scores(n=1000, seed=7, noise=0.8)
    _, poor = _scores(n=1000, seed=7, noise=2.0)
    assert _verdict(good, poor, y, require=True).passed


# --- choices made on data ----------------------------------------------------------------------------


def test_l2_strength_follows_the_data() -> None:
    rng = np.random.default_rng(0)
    # Many rows and a strong signal: a weak strength wins.
    X = rng.normal(size=(30_000, 5))
    y = (X @ np.array([3.0, -2.0, 1.5, 0.0, 1.0]) + rng.logistic(size=30_000) > 0).astype(int)
    l2, method, path = tr.choose_l2(X[:25_000], y[:25_000], X[25_000:], y[25_000:], tr.L2_GRID, 1e-4, 1000)
    assert method == "calibration_rows" and l2 <= 1e-3 and len(path) == len(tr.L2_GRID)
    # Few rows of pure noise: the strongest strength wins (cross-validated).
    Xn = rng.normal(size=(200, 20))
    yn = rng.integers(0, 2, 200)
    l2n, method_n, _ = tr.choose_l2(Xn[:170], yn[:170], Xn[170:], yn[170:], tr.L2_GRID, 1e-4, 1000)
    assert method_n == "cv5" and l2n == tr.L2_GRID[0]


def test_the_data_digest_names_the_rows_and_the_settings() -> None:
    import dataclasses

    from sahayak_rpc.demo_data import DEMO_SCHEMA
    from sahayak_rpc.settings import ModelSettings

    examples = generate_outcomes(50, seed=1)
    data = tr.TrainingData([dict(e.features) for e in examples], np.array([int(e.label) for e in examples]),
                           [e.outcome_id for e in examples], np.zeros(len(examples)))
    s = ModelSettings()

    def digest(d: tr.TrainingData = data, settings: ModelSettings = s,
               families: tuple[str, ...] = ("logistic_regression",)) -> str:
        return tr.data_digest(d, DEMO_SCHEMA, settings, families, "stratified")

    assert digest() == digest()
    assert digest() != digest(families=("logistic_regression", "gradient_boosting"))
    assert digest() != digest(settings=dataclasses.replace(s, training=dataclasses.replace(s.training, random_seed=8)))
    assert digest() != digest(d=data.take(np.arange(len(data)) > 0))
    flipped = tr.TrainingData(data.rows, 1 - data.labels, data.ids, data.times)
    assert digest() != digest(d=flipped)
    # The gate's settings shape no model: a stricter gate is the same training.
    assert digest() == digest(settings=dataclasses.replace(s, gate=QualityGate(min_accuracy=0.1)))


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
