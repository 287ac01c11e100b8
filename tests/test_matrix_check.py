"""The raw-layout checks (app.inference.MatrixCheck): the one-row path agrees with the matrix path."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st

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
