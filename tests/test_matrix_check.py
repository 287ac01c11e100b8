"""The raw-layout checks (app.inference.MatrixCheck): the one-row path agrees with the matrix path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sahayak_rpc.app.inference import MatrixCheck
from sahayak_rpc.demo_data import DEMO_SCHEMA
from sahayak_rpc.schema import FeatureType

CHECK = MatrixCheck(DEMO_SCHEMA)
FEATURES = DEMO_SCHEMA.features

# Values at and around every rule's edges, for every column alike.
EDGES = [math.nan, math.inf, -math.inf, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 4.0, 9.0, 10.0, 10.5, 11.0,
         17.999, 18.0, 90.0, 90.5, 1000.0, 1e100, 1e101, -1e101, 5e-324]


def _valid(f: object, v: float) -> bool:
    """The rules, written out one value at a time (what both paths must agree with)."""
    spec = f  # a FeatureSpec
    if math.isnan(v):
        return not spec.required  # type: ignore[attr-defined]
    if spec.type is FeatureType.NUMERIC:  # type: ignore[attr-defined]
        lo = -1e100 if spec.min is None else max(spec.min, -1e100)  # type: ignore[attr-defined]
        hi = 1e100 if spec.max is None else min(spec.max, 1e100)  # type: ignore[attr-defined]
        return lo <= v <= hi
    top = 1 if spec.type is FeatureType.BOOLEAN else len(spec.categories) - 1  # type: ignore[attr-defined]
    return math.isfinite(v) and v == int(v) and 0 <= v <= top


def _encoded_rows() -> list[list[float]]:
    from sahayak_rpc.demo_data import generate_outcomes

    out = []
    for e in generate_outcomes(40, seed=3):
        values = []
        for f in FEATURES:
            v = e.features.get(f.name)
            values.append(math.nan if v is None else float(f.categories.index(v)) if f.type is FeatureType.CATEGORICAL
                          else float(v))
        out.append(values)
    return out


ROWS = _encoded_rows()


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(ROWS),
       st.lists(st.tuples(st.integers(0, len(FEATURES) - 1), st.sampled_from(EDGES)), max_size=3))
def test_one_row_and_matrix_checks_agree(base: list[float], changes: list[tuple[int, float]]) -> None:
    """A valid demo row with up to three cells replaced by edge values: both paths take or refuse
    it alike, and the matrix path names exactly the cells that break a rule."""
    values = list(base)
    for j, v in changes:
        values[j] = v
    row = CHECK.row(values)
    errors = CHECK.errors(np.array([values]), "features")
    broken = {j for j, (f, v) in enumerate(zip(FEATURES, values, strict=True)) if not _valid(f, v)}
    assert (row is not None) == (not broken) == (not errors), (values, errors)
    assert {int(e.field.split(", ")[1].split("]")[0]) for e in errors} == broken


def test_a_valid_row_reads_as_the_row_it_encodes() -> None:
    values = [float("nan")] * len(FEATURES)
    want = {}
    for j, f in enumerate(FEATURES):
        if f.type is FeatureType.CATEGORICAL:
            values[j], want[f.name] = float(len(f.categories) - 1), f.categories[-1]
        elif f.type is FeatureType.BOOLEAN:
            values[j], want[f.name] = 1.0, True
        elif f.required:
            values[j] = want[f.name] = float(f.min or 0.0)
    assert CHECK.row(values) == want
    assert CHECK.row(values[:-1]) is None  # the wrong width is never a row


@pytest.fixture(scope="module")
def models():
    """A logistic and a gradient-boosted ScoringModel of the demo schema."""
    from sahayak_rpc.demo_data import generate_outcomes
    from sahayak_rpc.settings import ModelSettings
    from sahayak_rpc.training import Trainer, TrainingData

    ex = generate_outcomes(1500, seed=4)
    data = TrainingData([e.features for e in ex], np.array([int(e.label) for e in ex]), [e.outcome_id for e in ex],
                        np.array([int(e.occurred_at.timestamp() * 1e6) for e in ex], dtype=np.int64))
    run = Trainer(DEMO_SCHEMA, ModelSettings()).run(data, ["logistic_regression", "gradient_boosting"], "stratified")
    return [c.model for c in run.candidates]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(ROWS),
                          st.lists(st.tuples(st.integers(0, len(FEATURES) - 1), st.sampled_from(EDGES)), max_size=2)),
                min_size=1, max_size=6),
       st.sampled_from([np.float32, np.float64]), st.booleans())
def test_checked_scoring_refuses_exactly_what_the_check_names_and_scores_the_rest_alike(
        models, rows: list, dtype: type, read_only: bool) -> None:
    """ScoringModel.predict_checked_matrix (for a linear model one compiled pass, kernels.linear_checked)
    answers None exactly when MatrixCheck names a cell, and otherwise what predict_matrix answers; for
    float32 and float64 matrices, writable or not (an OIP tensor is a read-only view of the request)."""
    matrix = []
    for base, changes in rows:
        values = list(base)
        for j, v in changes:
            values[j] = v
        matrix.append(values)
    with np.errstate(over="ignore"):  # 1e101 is infinite in float32: a value to refuse like any other
        x = np.array(matrix, dtype=dtype)
    if read_only:
        x = np.frombuffer(x.tobytes(), dtype=dtype).reshape(x.shape)
    errors = CHECK.errors(np.asarray(x, dtype=np.float64), "features")
    for model in models:
        got = model.predict_checked_matrix(x, CHECK.lo, CHECK.hi, CHECK.whole, CHECK.optional)
        if errors:
            assert got is None
        else:
            assert got is not None
            assert np.allclose(got, model.predict_matrix(np.asarray(x, dtype=np.float64)), rtol=0, atol=1e-12)
