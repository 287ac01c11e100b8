"""The gate's statistics (gate.compare, gate.evaluate: a paired bootstrap that protects the champion)
and the choices training makes on data (training.choose_l2, training.data_digest), as pure logic.
What a run does with them: tests/server/test_quality_gate.py."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from sahayak_rpc import gate as gating
from sahayak_rpc import training as tr
from sahayak_rpc.demo_data import generate_outcomes
from sahayak_rpc.metrics import compute
from sahayak_rpc.settings import QualityGate


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
    return gating.evaluate(
        compute(y, cand, 0.5),
        OPEN,
        compute(y, champ, 0.5),
        3,
        paired=gating.PairedScores(y, cand, champ),
        require_improvement=require,
    )


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
    data = tr.TrainingData(
        [dict(e.features) for e in examples],
        np.array([int(e.label) for e in examples]),
        [e.outcome_id for e in examples],
        np.zeros(len(examples)),
    )
    s = ModelSettings()

    def digest(
        d: tr.TrainingData = data, settings: ModelSettings = s, families: tuple[str, ...] = ("logistic_regression",)
    ) -> str:
        return tr.data_digest(d, DEMO_SCHEMA, settings, families, "stratified")

    assert digest() == digest()
    assert digest() != digest(families=("logistic_regression", "gradient_boosting"))
    assert digest() != digest(settings=dataclasses.replace(s, training=dataclasses.replace(s.training, random_seed=8)))
    assert digest() != digest(d=data.take(np.arange(len(data)) > 0))
    flipped = tr.TrainingData(data.rows, 1 - data.labels, data.ids, data.times)
    assert digest() != digest(d=flipped)
    # The gate's settings shape no model: a stricter gate is the same training.
    assert digest() == digest(settings=dataclasses.replace(s, gate=QualityGate(min_accuracy=0.1)))
