"""The raw-layout validator (app.inference.MatrixCheck over kernels.within_rules) names exactly the cells
that break the schema's rules, for float32 and float64, writable or read-only; a checked row reads back
as the row it encodes; and every family scores a checked matrix of either precision alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sahayak_rpc.app.inference import MatrixCheck
from sahayak_rpc.demo_data import DEMO_SCHEMA
from sahayak_rpc.encoding import RawEncoder
from sahayak_rpc.schema import FeatureType

CHECK = MatrixCheck(DEMO_SCHEMA)
FEATURES = DEMO_SCHEMA.features

# Values at and around every rule's edges, for every column alike.
EDGES = [
    math.nan,
    math.inf,
    -math.inf,
    -1.0,
    -0.5,
    0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    4.0,
    9.0,
    10.0,
    10.5,
    11.0,
    17.999,
    18.0,
    90.0,
    90.5,
    1000.0,
    1e100,
    1e101,
    -1e101,
    5e-324,
]


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
            values.append(
                math.nan
                if v is None
                else float(f.categories.index(v))
                if f.type is FeatureType.CATEGORICAL
                else float(v)
            )
        out.append(values)
    return out


ROWS = _encoded_rows()


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(ROWS), st.lists(st.tuples(st.integers(0, len(FEATURES) - 1), st.sampled_from(EDGES)), max_size=3)
)
def test_the_check_names_exactly_the_cells_that_break_a_rule(
    base: list[float], changes: list[tuple[int, float]]
) -> None:
    """A valid demo row with up to three cells replaced by edge values: the check names exactly the
    cells that break a rule, as the rules written out one value at a time say."""
    values = list(base)
    for j, v in changes:
        values[j] = v
    errors = CHECK.errors(np.array([values]), "features")
    broken = {j for j, (f, v) in enumerate(zip(FEATURES, values, strict=True)) if not _valid(f, v)}
    assert {int(e.field.split(", ")[1].split("]")[0]) for e in errors} == broken, (values, errors)


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
    assert RawEncoder.from_schema(DEMO_SCHEMA).to_row(values) == want
    assert not CHECK.errors(np.array([values]), "features")
    assert CHECK.errors(np.array([values[:-1]]), "features")[0].reason.startswith("needs shape")


@pytest.fixture(scope="module")
def models():
    """A logistic and a gradient-boosted ScoringModel of the demo schema."""
    from sahayak_rpc.demo_data import generate_outcomes
    from sahayak_rpc.settings import ModelSettings
    from sahayak_rpc.training import Trainer, TrainingData

    ex = generate_outcomes(1500, seed=4)
    data = TrainingData(
        [e.features for e in ex],
        np.array([int(e.label) for e in ex]),
        [e.outcome_id for e in ex],
        np.array([int(e.occurred_at.timestamp() * 1e6) for e in ex], dtype=np.int64),
    )
    run = Trainer(DEMO_SCHEMA, ModelSettings()).run(data, ["logistic_regression", "gradient_boosting"], "stratified")
    return [c.model for c in run.candidates]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(ROWS),
            st.lists(st.tuples(st.integers(0, len(FEATURES) - 1), st.sampled_from(EDGES)), max_size=2),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([np.float32, np.float64]),
    st.booleans(),
)
def test_a_checked_matrix_of_either_precision_scores_alike(models, rows: list, dtype: type, read_only: bool) -> None:
    """The check refuses the same cells of a float32 matrix as of its float64 copy (an OIP tensor may be
    either, and is a read-only view of the request), and a matrix it passes scores the same either way."""
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
    wide = np.asarray(x, dtype=np.float64)
    errors = CHECK.errors(x, "features")
    assert errors == CHECK.errors(wide, "features")
    if not errors:
        for model in models:
            np.testing.assert_array_equal(model.score(x), model.score(wide))
