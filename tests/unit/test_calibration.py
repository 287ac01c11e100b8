"""The calibration choice (none / sigmoid / isotonic): chosen on data, and applied to every score.

Each test fails if the choice is ignored: a model that served raw scores, or always one method,
or a training run that kept the first calibrator, answers differently here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sahayak_rpc.scoring import Calibrator
from sahayak_rpc.training import ISOTONIC_MIN_ROWS, choose_calibrator, fit_calibrators


def _labels_and_raw(n: int, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels drawn from sigmoid(z), and raw scores ``scale * z``: over-confident when scale > 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return y, scale * z


def test_an_over_confident_score_is_recalibrated_and_a_calibrated_one_is_left_alone() -> None:
    y, raw = _labels_and_raw(4000, scale=4.0)
    yv, raw_v = _labels_and_raw(4000, scale=4.0, seed=1)
    chosen, prob = choose_calibrator(fit_calibrators(raw, y), raw_v, yv)
    assert chosen.method in ("sigmoid", "isotonic")
    assert chosen.method != "none"
    np.testing.assert_array_equal(prob, chosen.many(raw_v))
    # The sigmoid found undoes the over-confidence: a slope near 1/4.
    sigmoid = next(c for c in fit_calibrators(raw, y) if c.method == "sigmoid")
    assert sigmoid.a == pytest.approx(0.25, abs=0.05)
    # Scores that are already probabilities' log-odds: no calibrator does much better than none.
    y1, raw1 = _labels_and_raw(4000, scale=1.0, seed=2)
    yv1, raw_v1 = _labels_and_raw(4000, scale=1.0, seed=3)
    kept, _ = choose_calibrator(fit_calibrators(raw1, y1), raw_v1, yv1)
    none_loss = _loss(yv1, Calibrator("none").many(raw_v1))
    assert _loss(yv1, kept.many(raw_v1)) <= none_loss + 1e-12


def test_isotonic_is_a_candidate_only_from_its_minimum_rows() -> None:
    y, raw = _labels_and_raw(ISOTONIC_MIN_ROWS - 1, scale=2.0)
    assert [c.method for c in fit_calibrators(raw, y)] == ["none", "sigmoid"]
    y, raw = _labels_and_raw(ISOTONIC_MIN_ROWS, scale=2.0)
    assert [c.method for c in fit_calibrators(raw, y)] == ["none", "sigmoid", "isotonic"]


def test_each_method_maps_a_score_as_it_says_and_the_model_applies_its_own() -> None:
    from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes
    from sahayak_rpc.settings import ModelSettings
    from sahayak_rpc.training import Trainer, TrainingData

    raw = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    assert np.allclose(Calibrator("none").many(raw), 1 / (1 + np.exp(-raw)))
    assert np.allclose(Calibrator("sigmoid", a=0.5, b=1.0).many(raw), 1 / (1 + np.exp(-(0.5 * raw + 1.0))))
    iso = Calibrator("isotonic", x=(-1.0, 1.0), y=(0.2, 0.6))
    assert np.allclose(iso.many(raw), [0.2, 0.3, 0.4, 0.5, 0.6])
    # Beyond the float range of exp, and one row as the one-row case of many.
    extreme = np.array([-800.0, -40.0, 40.0, 800.0])
    assert Calibrator("none").many(extreme).tolist() == pytest.approx([0.0, 4.248e-18, 1.0, 1.0], rel=1e-3)
    assert not np.isnan(Calibrator("sigmoid", a=2.0, b=0.0).many(extreme)).any()
    for calibrator in (Calibrator("none"), Calibrator("sigmoid", a=0.5, b=1.0), iso):
        assert [calibrator.many(raw[i : i + 1])[0] for i in range(len(raw))] == calibrator.many(raw).tolist()
    # In place (how a model calibrates the scores it has just made) as into a new array.
    for calibrator in (Calibrator("none"), Calibrator("sigmoid", a=0.5, b=1.0), iso):
        into = raw.copy()
        assert calibrator.many(into, out=into) is into and into.tolist() == calibrator.many(raw).tolist()
    # A strided (non-contiguous) or float32 array is taken as it is.
    wide = np.linspace(-2, 2, 40)
    assert np.array_equal(iso.many(wide[::3]), iso.many(wide[::3].copy()))
    assert np.allclose(iso.many(wide.astype(np.float32)), np.interp(wide.astype(np.float32), iso.x, iso.y))

    ex = generate_outcomes(600, seed=9)
    data = TrainingData(
        [e.features for e in ex], np.array([int(e.label) for e in ex]), [e.outcome_id for e in ex], np.zeros(len(ex))
    )
    model = Trainer(DEMO_SCHEMA, ModelSettings()).run(data, ["logistic_regression"], "stratified").selected.model
    X = model.raw.rows(data.rows[:50])
    scores = model.scorer.score(X)
    for calibrator in (Calibrator("none"), Calibrator("sigmoid", a=0.3, b=-0.2), iso):
        swapped = dataclasses.replace(model, calibrator=calibrator)
        np.testing.assert_array_equal(swapped.score(X), calibrator.many(scores))
        assert swapped.explain_one(data.rows[0], 2)[0] == swapped.score(X[:1])[0]


def _loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
