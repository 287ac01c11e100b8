"""Drift statistics as pure logic: definitions, sensitivity, false alarms."""

from __future__ import annotations

import numpy as np
import pytest

from sahayak_rpc import drift, metrics, profile
from sahayak_rpc.schema import FeatureSpec, FeatureType, Schema

SCHEMA = Schema(
    (
        FeatureSpec("income", FeatureType.NUMERIC),
        FeatureSpec("age", FeatureType.NUMERIC),
        FeatureSpec("craft", FeatureType.CATEGORICAL, categories=("weaver", "potter", "smith")),
        FeatureSpec("card", FeatureType.BOOLEAN),
    )
)


def sample(rng: np.random.Generator, n: int, income_shift: float = 0.0) -> tuple[list[dict], np.ndarray]:
    income = rng.lognormal(11 + income_shift, 0.5, n)
    age = rng.normal(40, 10, n)
    craft = rng.choice(["weaver", "potter", "smith"], n, p=[0.5, 0.3, 0.2])
    card = rng.random(n) < 0.6
    rows = [
        {"income": float(i), "age": float(a), "craft": str(c), "card": bool(k)}
        for i, a, c, k in zip(income, age, craft, card)
    ]
    return rows, rng.beta(2, 3, n)


def reference(seed: int = 0, n: int = 5000) -> dict:
    rows, probs = sample(np.random.default_rng(seed), n)
    return profile.build(SCHEMA, rows, probs)


def test_psi_matches_its_definition_on_the_reference_bins() -> None:
    ref = reference()
    rows, probs = sample(np.random.default_rng(1), 2000, income_shift=0.3)
    report = drift.detect(ref, rows, probs, 0.2, 0.5)
    income = next(f for f in report.features if f.feature == "income")
    edges = np.array(ref["features"]["income"]["edges"])
    x = np.array([r["income"] for r in rows])
    cur = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1) / len(x)
    r = np.maximum(np.array(ref["features"]["income"]["shares"]), 1e-4)
    c = np.maximum(cur, 1e-4)
    assert income.statistics[0].value == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    # KS: reference CDF from its stored quantiles against the current empirical CDF.
    q = np.array(ref["features"]["income"]["quantiles"])
    grid = np.unique(np.concatenate([q, x]))
    expected_ks = np.max(
        np.abs(
            np.interp(grid, q, np.linspace(0, 1, 101), left=0, right=1)
            - np.searchsorted(np.sort(x), grid, side="right") / len(x)
        )
    )
    assert income.statistics[1].value == pytest.approx(expected_ks)
    # Wasserstein: mean gap between quantile functions, in reference standard deviations.
    expected_w = np.mean(np.abs(np.quantile(x, np.linspace(0, 1, 101)) - q)) / ref["features"]["income"]["std"]
    assert income.statistics[2].value == pytest.approx(expected_w)


def test_categorical_psi_and_jensen_shannon_match_their_definitions() -> None:
    ref = reference()
    rows = [{"craft": c} for c in ["weaver"] * 200 + ["potter"] * 600 + ["smith"] * 100 + ["dyer"] * 100]
    f = next(x for x in drift.detect(ref, rows, np.full(1000, 0.4), 0.2, 0.5).features if x.feature == "craft")
    shares = ref["features"]["craft"]["shares"]
    r = np.array([shares["weaver"], shares["potter"], shares["smith"], 0.0, 0.0])
    c = np.array([0.2, 0.6, 0.1, 0.0, 0.1])
    rr, cc = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
    assert f.statistics[0].value == pytest.approx(float(np.sum((cc - rr) * np.log(cc / rr))))
    from scipy.spatial.distance import jensenshannon

    assert f.statistics[1].value == pytest.approx(float(jensenshannon(r, c, base=2)), abs=1e-9)
    assert f.unseen_share == pytest.approx(0.1)


def test_identical_distributions_show_no_drift() -> None:
    ref = reference()
    rows, probs = sample(np.random.default_rng(0), 5000)
    report = drift.detect(ref, rows, probs, 0.2, 0.5)
    assert not report.dataset_drift and not any(f.drifted for f in report.features)
    assert all(f.statistics[0].value < 1e-9 for f in report.features)


def test_a_shift_in_one_feature_is_found_on_that_feature_alone() -> None:
    ref = reference()
    rows, probs = sample(np.random.default_rng(3), 2000, income_shift=0.6)
    report = drift.detect(ref, rows, probs, 0.2, 0.5)
    assert [f.feature for f in report.features if f.drifted] == ["income"]
    assert not report.dataset_drift and report.drifted_share == pytest.approx(0.25)


def test_stationary_data_raises_few_false_alarms() -> None:
    ref = reference()
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(100):
        rows, probs = sample(rng, 500)
        report = drift.detect(ref, rows, probs, 0.2, 0.5)
        alarms += any(f.drifted for f in report.features) or report.prediction.drifted
    assert alarms <= 5


def test_prediction_drift_uses_the_probability_histogram() -> None:
    ref = reference()
    rows, _ = sample(np.random.default_rng(4), 2000)
    moved = drift.detect(ref, rows, np.random.default_rng(4).beta(5, 2, 2000), 0.2, 0.5)
    assert moved.prediction.drifted and moved.prediction.statistics[0].method == "psi"


def test_calibration_error_of_perfectly_calibrated_data_is_about_zero() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert metrics.compute(y, p).calibration_error < 0.005
