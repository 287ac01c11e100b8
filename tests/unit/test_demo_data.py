"""Tests for the synthetic Scheme Sahayak data generator."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from sahayak_rpc.demo_data import (
    DEMO_MODEL_NAME,
    DEMO_SCHEMA,
    SCHEMES,
    DemoExample,
    approval_probability,
    bayes_optimal_accuracy,
    expected_bayes_accuracy,
    generate_artisan,
    generate_outcomes,
)
from sahayak_rpc.schema import MODEL_NAME_RE, FeatureType

OPTIONAL = ("annual_income_inr", "education", "distance_to_office_km", "scheme_income_ceiling_inr")
GROUP = {f.name: f.group for f in DEMO_SCHEMA.features}
TYPE = {f.name: f.type for f in DEMO_SCHEMA.features}


@pytest.fixture(scope="module")
def big() -> list[DemoExample]:
    return generate_outcomes(20_000, seed=11)


@pytest.fixture(scope="module")
def probs(big: list[DemoExample]) -> np.ndarray:
    return np.array([e.probability for e in big])


@pytest.fixture(scope="module")
def labels(big: list[DemoExample]) -> np.ndarray:
    return np.array([e.label for e in big])


def test_model_name_and_schema_shape() -> None:
    assert MODEL_NAME_RE.match(DEMO_MODEL_NAME)
    assert DEMO_SCHEMA.label.name == "application_outcome"
    assert (DEMO_SCHEMA.label.positive_class, DEMO_SCHEMA.label.negative_class) == ("approved", "rejected")
    for spec in DEMO_SCHEMA.features:
        assert spec.group in ("artisan", "scheme")
        assert spec.description
        if spec.type is FeatureType.CATEGORICAL:
            assert spec.categories and not spec.allow_unknown_categories
    optional = {f.name for f in DEMO_SCHEMA.features if not f.required}
    assert optional == set(OPTIONAL)


def test_same_seed_same_output() -> None:
    assert generate_outcomes(300, seed=5) == generate_outcomes(300, seed=5)


def test_different_seeds_differ() -> None:
    a, b = generate_outcomes(300, seed=1), generate_outcomes(300, seed=2)
    assert [e.features for e in a] != [e.features for e in b]
    assert [e.outcome_id for e in a] != [e.outcome_id for e in b]


def test_ids_and_entities(big: list[DemoExample]) -> None:
    assert [e.outcome_id for e in big[:3]] == ["demo-11-0", "demo-11-1", "demo-11-2"]
    assert len({e.outcome_id for e in big}) == len(big)
    scheme_ids = {s.scheme_id for s in SCHEMES}
    for e in big[:1000]:
        assert set(e.entities) == {"artisan_id", "scheme_id"}
        assert e.entities["scheme_id"] in scheme_ids
        scheme = next(s for s in SCHEMES if s.scheme_id == e.entities["scheme_id"])
        assert {k: v for k, v in e.features.items() if k.startswith("scheme_")} == scheme.features


def test_every_row_valid(big: list[DemoExample]) -> None:
    required = {f.name for f in DEMO_SCHEMA.features if f.required}
    for e in big:
        assert DEMO_SCHEMA.validate_row(e.features) == []
        assert required <= e.features.keys()
        assert type(e.label) is bool and type(e.probability) is float


def test_values_have_exact_python_types(big: list[DemoExample]) -> None:
    kinds = {FeatureType.NUMERIC: float, FeatureType.CATEGORICAL: str, FeatureType.BOOLEAN: bool}
    for e in big[:2000]:
        for name, value in e.features.items():
            assert type(value) is kinds[TYPE[name]], name


def test_optional_features_are_sometimes_missing(big: list[DemoExample]) -> None:
    n = len(big)
    rates = {name: sum(name not in e.features for e in big) / n for name in OPTIONAL}
    assert 0.07 < rates["annual_income_inr"] < 0.14
    assert 0.03 < rates["education"] < 0.08
    assert 0.05 < rates["distance_to_office_km"] < 0.12
    assert 0.3 < rates["scheme_income_ceiling_inr"] < 0.95


def test_missing_income_lowers_approval(big: list[DemoExample], probs: np.ndarray) -> None:
    missing = np.array(["annual_income_inr" not in e.features for e in big])
    assert probs[missing].mean() < probs[~missing].mean() - 0.03


def test_expected_bayes_accuracy_and_positive_rate(probs: np.ndarray, labels: np.ndarray) -> None:
    assert 0.85 <= expected_bayes_accuracy(probs) <= 0.90
    assert 0.85 <= bayes_optimal_accuracy(probs, labels) <= 0.90
    assert 0.35 <= labels.mean() <= 0.65


def test_probabilities_are_open_unit_interval(probs: np.ndarray) -> None:
    assert np.all(probs > 0.0) and np.all(probs < 1.0)
    # Neither easy nor hopeless: plenty of rows on both sides and near the boundary.
    assert 0.05 < np.mean(np.abs(probs - 0.5) < 0.15) < 0.4


def test_labels_are_drawn_from_probabilities(probs: np.ndarray, labels: np.ndarray) -> None:
    assert abs(labels.mean() - probs.mean()) < 0.02
    for lo, hi in ((0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0)):
        band = (probs >= lo) & (probs < hi)
        assert band.sum() > 500
        assert abs(labels[band].mean() - probs[band].mean()) < 0.03


def test_probability_matches_true_model(big: list[DemoExample]) -> None:
    for e in big[:200]:
        assert math.isclose(approval_probability(e.features), e.probability, rel_tol=1e-12)


def test_timestamps_sorted_within_span() -> None:
    start = datetime(2025, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    span = timedelta(days=30)
    examples = generate_outcomes(2000, seed=4, start=start, span=span)
    times = [e.occurred_at for e in examples]
    assert times == sorted(times)
    assert all(t.tzinfo is UTC for t in times)
    assert start <= times[0] and times[-1] < start + span
    assert times[-1] - times[0] > span * 0.9


def test_default_start_is_fixed() -> None:
    a = generate_outcomes(50, seed=9)
    assert a[0].occurred_at.tzinfo is UTC
    assert a == generate_outcomes(50, seed=9)
    assert a[-1].occurred_at - a[0].occurred_at <= timedelta(days=180)


def test_bad_arguments() -> None:
    assert generate_outcomes(0) == []
    with pytest.raises(ValueError):
        generate_outcomes(-1)
    with pytest.raises(ValueError):
        generate_outcomes(5, start=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        generate_outcomes(5, span=timedelta(0))


def test_schemes_catalogue() -> None:
    ids = [s.scheme_id for s in SCHEMES]
    assert len(ids) == len(set(ids)) >= 15
    rng = np.random.default_rng(0)
    for scheme in SCHEMES:
        assert scheme.name and type(scheme.benefit_inr) is float
        assert scheme.benefit_inr == scheme.features["scheme_max_benefit_inr"]
        assert all(GROUP[k] == "scheme" for k in scheme.features)
        assert float(scheme.features["scheme_min_age"]) <= float(scheme.features["scheme_max_age"])
        row = {**generate_artisan(rng), **scheme.features}
        assert DEMO_SCHEMA.validate_row(row) == []


def test_generate_artisan_has_only_artisan_features() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        row = generate_artisan(rng)
        assert all(GROUP[k] == "artisan" for k in row)
        assert DEMO_SCHEMA.validate_row({**row, **SCHEMES[0].features}) == []
        assert float(row["prior_approvals"]) <= float(row["prior_applications"])
        assert float(row["years_experience"]) <= float(row["age"]) - 12.0


def _base_row() -> dict[str, float | str | bool]:
    """A solid, eligible applicant to a general loan scheme."""
    return {
        "age": 35.0,
        "annual_income_inr": 120_000.0,
        "years_experience": 12.0,
        "craft": "potter",
        "state": "gujarat",
        "gender": "female",
        "social_category": "obc",
        "education": "secondary",
        "has_bank_account": True,
        "has_artisan_card": True,
        "documents_complete_share": 1.0,
        "prior_applications": 2.0,
        "prior_approvals": 1.0,
        "distance_to_office_km": 8.0,
        **next(s for s in SCHEMES if s.scheme_id == "mudra_shishu").features,
    }


def test_true_model_effects() -> None:
    base = _base_row()
    assert DEMO_SCHEMA.validate_row(base) == []
    p = approval_probability(base)
    assert p > 0.6
    # Outside the age window approval nearly vanishes.
    assert approval_probability({**base, "age": 70.0}) < 0.05
    # Income above the scheme's ceiling sharply lowers approval; missing income lowers it a little.
    capped = {**base, "scheme_income_ceiling_inr": 100_000.0}
    assert approval_probability(capped) < p - 0.3
    no_income = {k: v for k, v in base.items() if k != "annual_income_inr"}
    assert approval_probability(no_income) < p
    # Incomplete paperwork hurts, with a threshold.
    assert approval_probability({**base, "documents_complete_share": 0.5}) < p - 0.3
    assert p - approval_probability({**base, "documents_complete_share": 0.875}) < 0.1


def test_true_model_interactions() -> None:
    base = _base_row()
    training = {**base, **next(s for s in SCHEMES if s.scheme_id == "pm_vishwakarma_training").features}

    def drop(row: dict[str, float | str | bool], **change: float | str | bool) -> float:
        """How many log-odds the change costs (log-odds so saturation near 0 or 1 does not hide it)."""
        return _logit(approval_probability(row)) - _logit(approval_probability({**row, **change}))

    # A bank account matters much more for loans than for training.
    assert drop(base, has_bank_account=False) > 5 * drop(training, has_bank_account=False) > 0
    # The artisan card matters more for PM Vishwakarma than for Mudra.
    assert drop(training, has_artisan_card=False) > 2 * drop(base, has_artisan_card=False) > 0
    # Craft-targeted schemes favour their own craft.
    kumhar = {**base, **next(s for s in SCHEMES if s.scheme_id == "kumhar_sashaktikaran").features}
    assert drop(kumhar, craft="weaver") > 2.0
    # Women-priority schemes favour women; gender does not matter elsewhere.
    stand_up = {**base, **next(s for s in SCHEMES if s.scheme_id == "stand_up_india").features}
    assert drop(stand_up, gender="male") > 1.0
    assert drop(base, gender="male") == 0.0


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_approval_probability_rejects_invalid_rows() -> None:
    with pytest.raises(ValueError, match="required feature is missing"):
        approval_probability({"age": 30.0})
    with pytest.raises(ValueError, match="unknown category"):
        approval_probability({**_base_row(), "craft": "glassblower"})


def test_bayes_accuracy_helpers() -> None:
    p = [0.9, 0.2, 0.5, 0.4]
    assert bayes_optimal_accuracy(p, [True, False, False, True]) == 0.5
    assert bayes_optimal_accuracy(np.array(p), np.array([True, False, True, False])) == 1.0
    assert math.isclose(expected_bayes_accuracy(p), (0.9 + 0.8 + 0.5 + 0.6) / 4)
    with pytest.raises(ValueError):
        bayes_optimal_accuracy([0.1], [True, False])
