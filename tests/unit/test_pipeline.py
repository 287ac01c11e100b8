"""The training pipeline and the fast scorers, as pure logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier

from sahayak_rpc import gate, metrics, split
from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes
from sahayak_rpc.encoding import RawEncoder, fit_linear
from sahayak_rpc.schema import FeatureType
from sahayak_rpc.settings import ModelSettings, QualityGate
from sahayak_rpc.scoring import TreeScorer
from sahayak_rpc.training import NotEnoughData, Trainer, TrainingData, export_trees


def data(n: int, seed: int = 0) -> TrainingData:
    ex = generate_outcomes(n, seed=seed)
    return TrainingData(
        [e.features for e in ex],
        np.array([int(e.label) for e in ex]),
        [e.outcome_id for e in ex],
        np.array([int(e.occurred_at.timestamp() * 1e6) for e in ex], dtype=np.int64),
    )


@pytest.fixture(scope="module")
def trained():
    return Trainer(DEMO_SCHEMA, ModelSettings()).run(
        data(3000), ["logistic_regression", "gradient_boosting"], "stratified"
    )


def test_exported_trees_score_exactly_like_scikit_learn() -> None:
    d = data(2000, seed=3)
    raw = RawEncoder.from_schema(DEMO_SCHEMA)
    X = raw.transform(d.rows)
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features=raw.categorical_mask, random_state=0).fit(
        X, d.labels
    )
    scorer = TreeScorer(export_trees(model, X.shape[1]), raw)
    expected = model.decision_function(X)
    assert np.allclose(scorer.score(X), expected, atol=1e-9)
    singles = np.array([scorer.score(np.array([raw.row(r)]))[0] for r in d.rows[:300]])
    assert np.allclose(singles, expected[:300], atol=1e-9)
    # Missing values and categories never seen in training take the trees' missing branch: the raw
    # layout gives an unknown category the code after the last, and the trees take it as missing.
    odd = dict(d.rows[0])
    odd.pop("annual_income_inr", None)
    odd["state"] = "atlantis"
    state = raw.names.index("state")
    x = np.array([raw.row(odd)])
    assert x[0, state] == len(raw.categories[state])
    Xo = raw.transform([odd])
    assert np.isnan(Xo[0, state]) and np.isnan(raw.unknown_as_missing(x)[0, state])
    assert scorer.score(x)[0] == pytest.approx(model.decision_function(Xo)[0], abs=1e-9)


def test_explanations_add_up_to_the_score(trained) -> None:
    for cand in trained.candidates:
        scorer = cand.model.scorer
        X = scorer.raw.rows(trained.validation.rows[:50])
        raw, parts = scorer.contributions(X)
        assert np.array_equal(raw, scorer.score(X))  # the same sums, in the same order
        assert np.allclose(scorer.bias + parts.sum(axis=1), raw, atol=1e-9)
        assert parts.shape == (50, len(DEMO_SCHEMA.names))


def test_one_row_is_the_one_row_case_of_a_batch(trained) -> None:
    """Predict's path (explain_one) and a batch's (score, explain) give the same numbers to the bit."""
    for cand in trained.candidates:
        model = cand.model
        rows = trained.validation.rows[:200]
        X = model.raw.rows(rows)
        batch = model.score(X)
        probs, tops = model.explain(X, 3)
        assert np.array_equal(probs, batch)
        for i in (0, 17, 199):
            assert model.explain_one(rows[i], 3) == (batch[i], tops[i])
            assert model.predict_one(rows[i]) == batch[i]


def test_linear_scorer_matches_the_design_matrix(trained) -> None:
    [lin] = [c.model.linear for c in trained.candidates if c.model.linear is not None]
    rows = trained.validation.rows[:100]
    direct = lin.encoder.transform(rows) @ lin.weights + lin.intercept
    assert np.allclose(lin.score(lin.raw.rows(rows)), direct, atol=1e-9)


def test_the_run_reports_both_families_and_keeps_the_best(trained) -> None:
    fams = {c.family: c for c in trained.candidates}
    assert set(fams) == {"logistic_regression", "gradient_boosting"}
    assert sum(c.selected for c in trained.candidates) == 1
    assert trained.selected.metrics.log_loss == min(c.metrics.log_loss for c in trained.candidates)
    assert fams["logistic_regression"].stop_reason in ("converged", "max_iterations")
    assert fams["gradient_boosting"].stop_reason in ("early_stopping", "max_iterations")
    assert all(c.calibration in ("none", "sigmoid", "isotonic") for c in trained.candidates)
    assert len(trained.validation) == pytest.approx(600, abs=1)


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(NotEnoughData, match="at least 100"):
        Trainer(DEMO_SCHEMA, ModelSettings()).run(data(50), ["logistic_regression"], "stratified")


def test_the_split_is_stratified_and_reproducible() -> None:
    ids = [f"o{i}" for i in range(1001)]
    labels = np.array([1 if i % 4 == 0 else 0 for i in range(1001)])
    mask = split.stratified(ids, labels, 0.2, seed=5)
    assert mask.sum() == round(251 * 0.2) + round(750 * 0.2)
    assert labels[mask].mean() == pytest.approx(labels.mean(), abs=0.01)
    assert (mask == split.stratified(list(ids), labels, 0.2, seed=5)).all()
    assert not (mask == split.stratified(ids, labels, 0.2, seed=6)).all()


def test_the_time_ordered_split_validates_on_the_newest() -> None:
    times = np.array([5, 1, 4, 2, 3])
    mask = split.time_ordered(times, ["a", "b", "c", "d", "e"], 0.4)
    assert mask.tolist() == [True, False, True, False, False]


def test_metrics_on_a_known_case() -> None:
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.3, 0.7])
    m = metrics.compute(y, p)
    assert (m.true_positives, m.false_positives, m.true_negatives, m.false_negatives) == (2, 1, 2, 1)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.roc_auc == pytest.approx(6 / 9)  # 6 of the 9 (positive, negative) pairs are ordered right
    assert m.brier_score == pytest.approx(np.mean((p - y) ** 2))
    # ECE by hand: bins 0.2, 0.3, 0.4, 0.6, 0.7, 0.9 hold one row each.
    assert m.calibration_error == pytest.approx(np.mean(np.abs(y - p)))
    assert math.isnan(metrics.compute(np.array([1, 1]), np.array([0.5, 0.7])).roc_auc)


def test_ece_of_a_perfectly_calibrated_bin_is_zero() -> None:
    p = np.full(1000, 0.25)
    y = np.array([1] * 250 + [0] * 750)
    assert metrics.calibration_errors(y, p) == pytest.approx((0.0, 0.0))


def test_the_gate_checks_absolute_and_relative_bounds() -> None:
    good = metrics.compute(np.array([1, 0, 1, 0] * 50), np.array([0.9, 0.1, 0.8, 0.2] * 50))
    verdict = gate.evaluate(good, QualityGate())
    assert verdict.passed and [c.metric for c in verdict.checks] == ["accuracy", "f1", "calibration_error"]
    strict = gate.evaluate(good, QualityGate(min_accuracy=1.01))
    assert not strict.passed and "accuracy" in strict.reasons[0]
    worse = metrics.compute(np.array([1, 0, 1, 0] * 50), np.array([0.9, 0.1, 0.45, 0.55] * 50))
    relative = gate.evaluate(worse, QualityGate(min_accuracy=0, min_f1=0, max_calibration_error=1), good, 7)
    assert not relative.passed and relative.baseline_version == 7
    assert relative.checks[-1].metric == "roc_auc_drop"


def test_the_linear_encoder_imputes_and_scales_from_training_rows() -> None:
    d = data(500)
    enc = fit_linear(DEMO_SCHEMA, d.rows)
    X = enc.transform(d.rows)
    assert X.shape == (500, len(enc.columns))
    numeric = [i for i, name in enumerate(enc.columns) if name == "age"]
    assert abs(X[:, numeric[0]].mean()) < 1e-9 and X[:, numeric[0]].std() == pytest.approx(1.0)
    assert not np.isnan(X).any()


_ODD_VALUES = [
    None,
    float("nan"),
    float("inf"),
    -1.0,
    1e101,
    17.0,
    0.0,
    1.0,
    True,
    False,
    "weaver",
    "atlantis",
    "",
    5,
    "x" * 300,
]


def test_equal_contributions_rank_the_larger_name_first(trained) -> None:
    """With every weight zero every contribution ties: the top ones are the largest names."""
    import dataclasses

    from sahayak_rpc.scoring import LinearScorer

    model = next(c.model for c in trained.candidates if c.model.linear is not None)
    lin = model.linear
    flat = dataclasses.replace(
        model, linear=LinearScorer(lin.encoder, np.zeros_like(lin.weights), lin.intercept, lin.column_means, lin.raw)
    )
    _, top = flat.explain_one(trained.validation.rows[0], 3)
    assert [name for name, _ in top] == sorted(DEMO_SCHEMA.names, reverse=True)[:3]


def test_a_contribution_is_the_feature_s_share_of_the_design(trained) -> None:
    """Each linear contribution is the feature's own share of the fitted design: its weights times its
    encoded columns minus their training means (w . (x - mean) over its span), for present values,
    unknown categories (their own column, not the missing one) and missing values alike."""
    model = next(c.model for c in trained.candidates if c.model.linear is not None)
    lin, raw = model.linear, model.raw
    row = dict(trained.validation.rows[0])
    rows = [row, dict(row, state="atlantis"), {k: v for k, v in row.items() if k not in ("state", "age")}]
    _, parts = lin.contributions(raw.rows(rows))
    design = lin.encoder.transform(rows) - lin.column_means
    for name, start, end in lin.encoder.spans():
        expected = design[:, start:end] @ lin.weights[start:end]
        np.testing.assert_allclose(parts[:, raw.names.index(name)], expected, rtol=0, atol=1e-9)


def _columns(rows: list[dict], names: list[str]) -> list:
    """Rows as the server reads a columnar batch (client.feature_columns, then convert.columns_from_proto)."""
    from sahayak_rpc._proto.sahayak.v1 import common_pb2
    from sahayak_rpc.api.convert import columns_from_proto
    from sahayak_rpc.client import feature_columns

    target = common_pb2.FeatureColumns()
    assert feature_columns([{k: v for k, v in r.items() if k in names} for r in rows], target)
    return columns_from_proto(target)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_columnar_batch_as_one_matrix_is_checked_and_scored_as_column_by_column(trained, data) -> None:
    """SchemaPlan.columns_matrix plus MatrixCheck (PredictBatch's plain-columns decoder) passes exactly
    the batches check_columns passes without a word, and decodes them as the rows decoder does (the
    same scores to the bit); odd shapes and bad values (left to the long way) never slip through it."""
    import dataclasses

    from sahayak_rpc.app.inference import SchemaPlan
    from sahayak_rpc.schema import Column, SchemaError, check_columns, columns_to_rows

    plan = SchemaPlan(DEMO_SCHEMA)
    rows = [
        dict(r) for r in data.draw(st.lists(st.sampled_from(trained.validation.rows[:60]), min_size=1, max_size=12))
    ]
    for i, name, value in data.draw(
        st.lists(
            st.tuples(st.integers(0, len(rows) - 1), st.sampled_from(DEMO_SCHEMA.names), st.sampled_from(_ODD_VALUES)),
            max_size=3,
        )
    ):
        if value is None:
            rows[i].pop(name, None)
        elif isinstance(value, str) == (DEMO_SCHEMA.feature(name).type is FeatureType.CATEGORICAL):
            rows[i][name] = value  # feature_columns keeps one kind per column
    names = data.draw(st.sets(st.sampled_from(DEMO_SCHEMA.names), min_size=len(DEMO_SCHEMA.names) - 1))
    columns = _columns(rows, sorted(names))
    n = len(rows)
    shape = data.draw(st.sampled_from(["as is", "unknown", "repeated", "short", "strings", "bad code", "dictionary"]))
    coded = [i for i, c in enumerate(columns) if c.codes is not None]
    # An optional categorical matters most: a value the fast path misread as missing would pass there.
    optional = [i for i in coded if not DEMO_SCHEMA.feature(columns[i].name).required]
    j = data.draw(
        st.sampled_from(optional if optional and data.draw(st.booleans()) else coded)
        if shape in ("strings", "bad code", "dictionary") and coded
        else st.integers(0, len(columns) - 1)
    )
    if shape == "unknown":
        columns.append(Column("no_such_feature", numbers=np.zeros(n)))
    elif shape == "repeated":
        columns.append(columns[j])
    elif shape == "short" and n > 1:
        c = columns[j]
        columns[j] = dataclasses.replace(
            c, numbers=None if c.numbers is None else c.numbers[:-1], codes=None if c.codes is None else c.codes[:-1]
        )
    elif shape == "strings" and columns[j].codes is not None:
        columns[j] = Column(columns[j].name, strings=list(columns[j].decoded() or ()))
    elif shape == "bad code" and columns[j].codes is not None:
        codes = columns[j].codes.copy()
        size = len(columns[j].dictionary or ())
        codes[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([size, size + 3, -2]))
        columns[j] = dataclasses.replace(columns[j], codes=codes)
    elif shape == "dictionary" and columns[j].codes is not None:
        columns[j] = dataclasses.replace(columns[j], dictionary=["atlantis", *(columns[j].dictionary or ())[1:]])
    try:
        slow = check_columns(DEMO_SCHEMA, n, columns, "columns")
    except SchemaError:
        slow = None
    x = plan.columns_matrix(n, columns)
    fast_ok = x is not None and not plan.check.errors(x, "columns")
    if fast_ok:
        assert slow == {}, slow  # the fast path never takes what the long way refuses
        for cand in trained.candidates:
            by_rows = cand.model.raw.rows(columns_to_rows(DEMO_SCHEMA, n, columns))
            assert np.array_equal(cand.model.score(x), cand.model.score(by_rows))
    elif shape == "as is" and all(c.codes is not None or c.numbers is not None for c in columns):
        assert slow != {}  # a plain batch leaves the fast path only for a bad value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_compiled_forest_walks_as_the_python_reference(trained, data) -> None:
    """kernels.walk (numba) routes every row to the leaves TreeScorer.leaves_reference does, and sums
    them to the same raw score, to the bit: values at the trees' own thresholds (v <= threshold goes
    left), NaN (missing), every category index, and values far outside the data."""
    trees = next(c.model.trees for c in trained.candidates if c.model.trees is not None)
    t = trees.trees
    thresholds = sorted({t.threshold[i] for i, f in enumerate(t.feature) if f >= 0 and t.bitset[i] < 0})
    width = len(trees.raw.names)
    rows = []
    for _ in range(data.draw(st.integers(1, 8))):
        x = []
        for j, cats in enumerate(trees.raw.categories):
            if trees.raw.kinds[j] == "categorical":
                x.append(data.draw(st.sampled_from([math.nan, *map(float, range(len(cats)))])))
            elif trees.raw.kinds[j] == "boolean":
                x.append(data.draw(st.sampled_from([math.nan, 0.0, 1.0])))
            else:
                x.append(
                    data.draw(
                        st.one_of(
                            st.sampled_from([math.nan, -1e12, 1e12, 0.0]),
                            st.sampled_from(thresholds),
                            st.floats(-1e6, 1e6, allow_nan=False),
                        )
                    )
                )
        rows.append(x)
    leaves, raw = trees.walk(np.array(rows).reshape(len(rows), width))
    for i, x in enumerate(rows):
        expected = trees.leaves_reference(x)
        assert leaves[i].tolist() == expected
        z = t.baseline
        for leaf in expected:
            z += trees._leaf_value[leaf]
        assert raw[i] == z  # the same sums in the same order
        # The row as a Row (names, category words, True / False; missing left out) scores the same.
        cats = trees.raw.categories
        row = {
            name: (
                cats[j][int(v)]
                if trees.raw.kinds[j] == "categorical"
                else (v == 1.0 if trees.raw.kinds[j] == "boolean" else v)
            )
            for j, (name, v) in enumerate(zip(trees.raw.names, x))
            if v == v
        }
        assert trees.score(np.array([trees.raw.row(row)]))[0] == z


def test_the_compiled_forest_reads_every_bit_of_a_256_category_split() -> None:
    """A categorical split's set spans eight 32-bit words: codes 0-255 each go the way their bit says,
    in the compiled walk as in the reference; NaN by missing_left."""
    from sahayak_rpc.scoring import TreeArrays, TreeScorer

    left_set = {0, 5, 31, 32, 40, 63, 64, 100, 127, 128, 200, 255}
    bits = sum(1 << c for c in left_set)
    # One tree: node 0 splits the category (set 0), node 1 (left) is a leaf worth 1, node 2 (right) a
    # leaf worth -1.
    trees = TreeArrays(
        baseline=0.5,
        roots=(0,),
        feature=(0, -1, -1),
        threshold=(0.0, 0.0, 0.0),
        missing_left=(True, False, False),
        left=(1, -1, -1),
        right=(2, -1, -1),
        value=(0.0, 1.0, -1.0),
        bitset=(0, -1, -1),
        bitsets=(bits,),
    )
    scorer = TreeScorer(trees, RawEncoder(("c",), ("categorical",), (tuple(f"w{i}" for i in range(256)),)))
    codes = [math.nan, *map(float, range(256))]
    leaves, raw = scorer.walk(np.array(codes).reshape(-1, 1))
    for i, c in enumerate(codes):
        assert leaves[i].tolist() == scorer.leaves_reference([c]), c
        goes_left = c != c or int(c) in left_set
        assert raw[i] == (1.5 if goes_left else -0.5), c


@pytest.mark.parametrize("n", [0, 1, 7, "block - 1", "block", "2 block + 3"])
def test_the_compiled_forest_scores_any_batch_as_the_reference_with_or_without_leaves(trained, n) -> None:
    """The walk goes tree by tree over blocks of rows: a batch of any size (empty, one row, an odd
    count, across block edges) gets the reference's leaves and sums to the bit, and a plain score
    (score, no leaves kept) is the same score. Rows mix NaN, the trees' own thresholds, every
    category (and codes past the declared ones) and values far outside the data."""
    trees = next(c.model.trees for c in trained.candidates if c.model.trees is not None)
    t = trees.trees
    block = trees._walk_args[-1]
    size = {"block - 1": block - 1, "block": block, "2 block + 3": 2 * block + 3}.get(n, n)
    assert isinstance(size, int)
    rng = np.random.default_rng(size)
    thresholds = np.array(sorted({t.threshold[i] for i, f in enumerate(t.feature) if f >= 0 and t.bitset[i] < 0}))
    width = len(trees.raw.names)
    X = np.empty((size, width))
    for j, kind in enumerate(trees.raw.kinds):
        if kind == "categorical":
            col = rng.integers(0, len(trees.raw.categories[j]) + 3, size).astype(float)
        elif kind == "boolean":
            col = rng.integers(0, 2, size).astype(float)
        else:
            col = np.where(rng.random(size) < 0.5, rng.choice(thresholds, size), rng.normal(0, 1e3, size))
            col[rng.random(size) < 0.05] = rng.choice([-1e12, 1e12], 1)[0]
        col[rng.random(size) < 0.1] = np.nan
        X[:, j] = col
    leaves, raw = trees.walk(X)
    assert leaves.shape == (size, len(t.roots)) and raw.shape == (size,)
    none, plain = trees.walk(X, leaves=False)
    assert none.shape == (0, 0)
    np.testing.assert_array_equal(plain, raw)
    # A code past the declared categories is an unknown category: score takes it as missing.
    np.testing.assert_array_equal(trees.score(X), trees.walk(trees.raw.unknown_as_missing(X), leaves=False)[1])
    for i in sorted({*range(0, size, 97), size - 1} & set(range(size))):
        expected = trees.leaves_reference(X[i].tolist())
        assert leaves[i].tolist() == expected
        z = t.baseline
        for leaf in expected:
            z += trees._leaf_value[leaf]
        assert raw[i] == z


def test_the_compiled_forest_handles_a_tree_that_is_one_leaf_and_codes_out_of_range() -> None:
    """A tree with no split (its root a leaf) adds its value to every row; a categorical code outside
    0-255 (or infinite) goes right, as a bit that is not set; a numeric NaN goes by missing_left."""
    from sahayak_rpc.scoring import TreeArrays, TreeScorer

    # Tree 0: node 0 splits column 0 at 1.5 (NaN right), leaves 1 (left, 1.0) and 2 (right, -1.0).
    # Tree 1: node 3 is a leaf worth 0.25. Tree 2: node 4 splits category column 1 by set {0, 255}
    # (NaN left), leaves 5 (left, 10.0) and 6 (right, 20.0).
    trees = TreeArrays(
        baseline=0.5,
        roots=(0, 3, 4),
        feature=(0, -1, -1, -1, 1, -1, -1),
        threshold=(1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        missing_left=(False, False, False, False, True, False, False),
        left=(1, -1, -1, -1, 5, -1, -1),
        right=(2, -1, -1, -1, 6, -1, -1),
        value=(0.0, 1.0, -1.0, 0.25, 0.0, 10.0, 20.0),
        bitset=(-1, -1, -1, -1, 0, -1, -1),
        bitsets=(1 | 1 << 255,),
    )
    scorer = TreeScorer(
        trees, RawEncoder(("x", "c"), ("numeric", "categorical"), ((), tuple(f"w{i}" for i in range(256))))
    )
    X = np.array(
        [
            [1.5, 0.0],
            [1.6, 255.0],
            [math.nan, math.nan],
            [0.0, 256.0],
            [0.0, -1.0],
            [0.0, math.inf],
            [0.0, -math.inf],
            [0.0, 1.0],
        ]
    )
    leaves, raw = scorer.walk(X)
    assert leaves.tolist() == [[0, 2, 3], [1, 2, 3], [1, 2, 3], [0, 2, 4], [0, 2, 4], [0, 2, 4], [0, 2, 4], [0, 2, 4]]
    np.testing.assert_array_equal(
        raw, [0.5 + 1.0 + 0.25 + 10.0, 0.5 - 1.0 + 0.25 + 10.0, 0.5 - 1.0 + 0.25 + 10.0, *[0.5 + 1.0 + 0.25 + 20.0] * 5]
    )
    for i in (0, 1, 2):
        assert leaves[i].tolist() == scorer.leaves_reference(X[i].tolist())
    # score takes a code at or past the categories' count (an unknown category) as missing, as the
    # trees were trained: row 3's 256 and row 5's infinity go left with NaN; the rest as walked.
    scored = scorer.score(X)
    np.testing.assert_array_equal(scored[[0, 1, 2, 4, 6, 7]], raw[[0, 1, 2, 4, 6, 7]])
    np.testing.assert_array_equal(scored[[3, 5]], [0.5 + 1.0 + 0.25 + 10.0] * 2)
