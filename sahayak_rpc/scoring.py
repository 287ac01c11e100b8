"""The model families and what serves them, without scikit-learn: the inference core's scorers.

Each family is one class with ``score(X)`` (log-odds of each row of a raw-layout matrix) and
``contributions(X)`` (the same, and each feature's contribution to it: its explanation), over
tables precomputed when the model is loaded, in compiled loops (kernels.py):

* ``LinearScorer``: logistic regression folded into per-feature contributions in log-odds,
  relative to the training average (kernels.linear);
* ``TreeScorer``: gradient-boosted trees, walked (kernels.walk), explained by path attribution
  (the change in the trees' expected value at each split, by the feature split on).

``ScoringModel`` adds the calibrator and the threshold, and ranks the contributions: one row (a
Predict) is the one-row case of a batch. A new family is a class with the same two methods and
``raw`` (its layout), loaded by artifact.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import kernels
from .encoding import MISSING, UNKNOWN, CategoricalEncoding, LinearEncoder, NumericEncoding, RawEncoder
from .schema import Row, Schema

Contribution = tuple[str, float]
_NO_PARTS = np.empty((0, 0))  # kernels.linear without contributions


def top_contributions(parts: list[Contribution], k: int) -> list[Contribution]:
    """The ``k`` largest contributions by magnitude (ties: by name)."""
    # Plain tuples compare in C; a key function would cost a Python call per item.
    ranked = sorted([(-c if c < 0 else c, name, c) for name, c in parts], reverse=True)
    return [(name, c) for _, name, c in ranked[:k]]


# Calibrator.method as the calibration kernel's code.
_METHOD_CODES = {"none": 0, "sigmoid": 1, "isotonic": 2}
_NO_POINTS = np.zeros(1)


@dataclass(frozen=True)
class Calibrator:
    """Maps a raw log-odds score to a probability: none (the logistic function), sigmoid (Platt: the
    logistic function of ``a * raw + b``) or isotonic (piecewise linear through the points ``x``, ``y``)."""

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def many(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The probabilities for a 1-D array of raw log-odds scores (kernels.calibrate: one compiled loop
        for a row or a million), in ``out`` when given (float64, ``raw``'s length; ``raw`` itself will do)."""
        raw = np.ascontiguousarray(raw, dtype=np.float64)
        if out is None:
            out = np.empty(len(raw))
        kernels.calibrate(raw, *self._kernel_args, out)
        return out

    @cached_property
    def _kernel_args(self) -> tuple[int, float, float, np.ndarray, np.ndarray]:
        """The calibration kernel's method code, a, b, and the isotonic points as arrays (worked out once)."""
        if self.method != "isotonic":
            return _METHOD_CODES[self.method], self.a, self.b, _NO_POINTS, _NO_POINTS
        xs, ys = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
        return _METHOD_CODES[self.method], self.a, self.b, xs, ys

    def to_dict(self) -> dict[str, object]:
        """The calibrator as an artifact stores it."""
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x), "y": list(self.y)}


class LinearScorer:
    """Logistic regression folded into per-feature contribution tables."""

    def __init__(
        self, encoder: LinearEncoder, weights: np.ndarray, intercept: float, column_means: np.ndarray, raw: RawEncoder
    ) -> None:
        self.encoder = encoder
        self.raw = raw
        self.weights = np.asarray(weights, dtype=np.float64)
        self.intercept = float(intercept)
        self.column_means = np.asarray(column_means, dtype=np.float64)
        # logit = bias + sum of centred contributions
        self.bias = self.intercept + float(self.weights @ self.column_means)
        self._numeric: list[tuple[str, float, float, float]] = []  # name, slope, offset, if missing
        self._tables: list[tuple[str, dict[object, float], float, float]] = []  # name, value->c, unknown, missing
        for enc, (_, start, end) in zip(encoder.encodings, encoder.spans(), strict=True):
            w = self.weights[start:end]
            m = self.column_means[start:end]
            if isinstance(enc, CategoricalEncoding):
                centre = float(w @ m)
                table: dict[object, float] = {lvl: float(w[i]) - centre for i, lvl in enumerate(enc.levels)}
                self._tables.append((enc.name, table, table[UNKNOWN], table[MISSING]))
            elif isinstance(enc, NumericEncoding):
                wz, wm = float(w[0]), float(w[1])
                slope = wz / enc.std
                offset = -wz * enc.mean / enc.std - wz * m[0] - wm * m[1]
                missing = slope * enc.impute + offset + wm
                self._numeric.append((enc.name, slope, offset, missing))
            else:
                wz, wm = float(w[0]), float(w[1])
                base = wz * m[0] + wm * m[1]
                table = {True: wz - base, False: -base}
                self._tables.append((enc.name, table, -base, wz * enc.impute + wm - base))

        # The contributions as kernels.linear takes them, per column of the raw layout: a number's slope
        # and offset; a categorical's or a boolean's table (its categories then the unknown one; false,
        # true) in ``self._lut``, where it starts and its size; the contribution when missing.
        numeric = {name: (slope, offset, missing) for name, slope, offset, missing in self._numeric}
        tables = {name: (table, unknown, missing) for name, table, unknown, missing in self._tables}
        plan = np.zeros((5, len(raw.names)))
        lut: list[float] = []
        for j, (name, kind, cats) in enumerate(zip(raw.names, raw.kinds, raw.categories, strict=True)):
            if kind == "numeric":
                plan[0, j], plan[1, j], plan[2, j] = numeric[name]
                plan[3, j] = -1.0
                continue
            table, unknown, missing = tables[name]
            entries = (
                [table.get(c, unknown) for c in cats] + [unknown]
                if kind == "categorical"
                else [table[False], table[True]]
            )
            plan[2:, j] = (missing, len(lut), len(entries))
            lut += entries
        self._plan = plan
        self._lut = np.array(lut or [0.0])

    def score(self, X: np.ndarray) -> np.ndarray:
        """The log-odds of each row of a raw-layout matrix whose values keep the schema's rules."""
        raw = np.empty(len(X))
        kernels.linear(X, self._plan, self._lut, self.bias, raw, _NO_PARTS)
        return raw

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``score``, and each feature's contribution to it ([n, F], schema order): its log-odds
        relative to the training average."""
        raw, parts = np.empty(len(X)), np.empty(X.shape)
        kernels.linear(X, self._plan, self._lut, self.bias, raw, parts)
        return raw, parts

    def feature_weights(self) -> list[Contribution]:
        """Each feature's largest absolute weight on the standardised design."""
        return [(name, float(np.max(np.abs(self.weights[s:e])))) for name, s, e in self.encoder.spans()]


@dataclass(frozen=True)
class TreeArrays:
    """Gradient-boosted trees as flat node arrays (all trees concatenated)."""

    baseline: float
    roots: tuple[int, ...]
    feature: tuple[int, ...]  # -1 at a leaf
    threshold: tuple[float, ...]
    missing_left: tuple[bool, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]  # leaf: its score; inner node: its (shrunk) value, for attribution
    bitset: tuple[int, ...]  # categorical split: index into bitsets; -1 for a numeric split
    bitsets: tuple[int, ...]  # each a 256-bit set of category codes that go left


class TreeScorer:
    """Gradient-boosted trees, walked in compiled code, explained by path attribution; built from
    ``TreeArrays`` over the schema's raw layout."""

    # Above this many leaf x feature cells, explanations accumulate along the
    # walk instead of from a precomputed table.
    TABLE_LIMIT = 4_000_000

    def __init__(self, trees: TreeArrays, raw: RawEncoder) -> None:
        self.trees = trees
        self.raw = raw
        t = trees
        n_features = len(raw.names)
        # Each tree as nested tuples: an inner node is (feature, threshold,
        # missing_left, left, right, bitset or None); a leaf is its leaf index.
        # One tuple unpack per step, no index arithmetic.
        leaf_of = {i: k for k, i in enumerate(i for i, f in enumerate(t.feature) if f < 0)}
        self._leaf_value = [t.value[i] for i in sorted(leaf_of, key=leaf_of.__getitem__)]
        built: dict[int, object] = {}
        for root in t.roots:
            stack = [(root, False)]
            while stack:
                i, ready = stack.pop()
                if t.feature[i] < 0:
                    built[i] = leaf_of[i]
                elif ready:
                    bits = t.bitsets[t.bitset[i]] if t.bitset[i] >= 0 else None
                    built[i] = (
                        t.feature[i],
                        t.threshold[i],
                        t.missing_left[i],
                        built.pop(t.left[i]),
                        built.pop(t.right[i]),
                        bits,
                    )
                else:
                    stack += [(i, True), (t.left[i], False), (t.right[i], False)]
        self._nested = [built.pop(r) for r in t.roots]
        self.bias = t.baseline + sum(t.value[r] for r in t.roots)
        # Path attribution: a leaf's contributions depend only on its path, so
        # they are summed once here, per leaf, into a table.
        self._contrib: np.ndarray | None = None
        if len(self._leaf_value) * n_features <= self.TABLE_LIMIT:
            table = np.zeros((len(self._leaf_value), n_features))
            for root in t.roots:
                stack2: list[tuple[int, dict[int, float]]] = [(root, {})]
                while stack2:
                    i, acc = stack2.pop()
                    if t.feature[i] < 0:
                        for f, c in acc.items():
                            table[leaf_of[i], f] = c
                        continue
                    f = t.feature[i]
                    for child in (t.left[i], t.right[i]):
                        step = dict(acc)
                        step[f] = step.get(f, 0.0) + t.value[child] - t.value[i]
                        stack2.append((child, step))
            self._contrib = table
        self._leaf_array = np.asarray(self._leaf_value, dtype=np.float64)
        self._np = {
            "feature": np.asarray(t.feature, dtype=np.int64),
            "threshold": np.asarray(t.threshold, dtype=np.float64),
            "missing_left": np.asarray(t.missing_left, dtype=bool),
            "left": np.asarray(t.left, dtype=np.int64),
            "right": np.asarray(t.right, dtype=np.int64),
            "value": np.asarray(t.value, dtype=np.float64),
            "bitset": np.asarray(t.bitset, dtype=np.int64),
        }
        words = [[(b >> (32 * w)) & 0xFFFFFFFF for w in range(8)] for b in t.bitsets] or [[0] * 8]
        self._words = np.asarray(words, dtype=np.uint64)
        # The compiled walk (kernels.walk) over the trees packed: the inner nodes only, in their order
        # (a child still after its parent), one int32 record each (feature, left, right, flags) beside
        # its threshold; a child or root < 0 is ~leaf: a step reads one 16-byte record and a threshold,
        # not seven arrays (docs/benchmarks.md, "Tree champions").
        a = self._np
        feature = a["feature"]
        inner = np.flatnonzero(feature >= 0)
        ref = np.empty(len(feature), dtype=np.int64)
        ref[inner] = np.arange(len(inner))
        for node, k in leaf_of.items():
            ref[node] = ~k
        nodes = np.empty((len(inner), 4), dtype=np.int32)
        nodes[:, 0] = feature[inner]
        nodes[:, 1] = ref[a["left"][inner]]
        nodes[:, 2] = ref[a["right"][inner]]
        nodes[:, 3] = a["missing_left"][inner] | ((a["bitset"][inner] + 1) << 1)
        # Rows a block: each tree is walked by a block of rows at a time, the block's values kept in
        # the nearer caches (~256 KiB of them).
        block = max(64, 32768 // max(1, n_features))
        self._walk_args = (
            ref[np.asarray(t.roots, dtype=np.int64)],
            nodes,
            np.ascontiguousarray(a["threshold"][inner]),
            self._words,
            self._leaf_array,
            float(t.baseline),
            block,
        )
        self.walk(np.zeros((1, n_features)))  # compiled now (once per process), not on a request

    def walk(self, X: np.ndarray, leaves: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """For an [n, F] raw-layout matrix (NaN = missing): the leaf index each tree routes each row to
        ([n, trees]; [0, 0] without ``leaves``) and each row's raw score (baseline + its leaves'
        values, in tree order)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        n = X.shape[0]
        out = np.empty((n, len(self.trees.roots)) if leaves else (0, 0), dtype=np.int64)
        raw = np.empty(n, dtype=np.float64)
        kernels.walk(X, *self._walk_args, out, raw)
        return out, raw

    def leaves(self, x: list[float]) -> list[int]:
        """The leaf each tree routes ``x`` to."""
        leaves: list[int] = self.walk(np.array([x], dtype=np.float64))[0][0].tolist()
        return leaves

    def leaves_reference(self, x: list[float]) -> list[int]:
        """``leaves`` in plain Python: the rules kernels.walk compiles, kept as the tests' reference."""
        out: list[Any] = []
        for node in self._nested:
            while node.__class__ is tuple:
                f, thr, ml, lft, rgt, bits = node
                v = x[f]
                if bits is None:
                    if v <= thr:
                        node = lft
                    elif v > thr:
                        node = rgt
                    else:  # NaN: missing
                        node = lft if ml else rgt
                elif v != v:
                    node = lft if ml else rgt
                else:
                    node = lft if (bits >> int(v)) & 1 else rgt
            out.append(node)
        return out

    def score(self, X: np.ndarray) -> np.ndarray:
        """The raw score (log-odds) of each row of a raw-layout matrix whose values keep the schema's
        rules (an unknown category taken as missing, as in training)."""
        return self.walk(self.raw.unknown_as_missing(X), leaves=False)[1]

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``score``, and each feature's path attribution ([n, F], schema order): the changes in the
        trees' expected value along the paths the row took, summed by the feature split on."""
        X = self.raw.unknown_as_missing(X)
        leaves, raw = self.walk(X)
        if not len(X):
            parts = np.zeros(X.shape)
        elif self._contrib is not None:  # row by row: a batch's [n, trees, F] at once would be large
            parts = np.stack([self._contrib[row].sum(axis=0) for row in leaves])
        else:
            parts = np.array([self._walk_contributions(x) for x in X.tolist()]).reshape(X.shape)
        return raw, parts

    def _walk_contributions(self, x: list[float]) -> list[float]:
        t = self.trees
        parts = [0.0] * len(self.raw.names)
        for n in t.roots:
            while t.feature[n] >= 0:
                f = t.feature[n]
                v = x[f]
                b = t.bitset[n]
                if v != v:
                    child = t.left[n] if t.missing_left[n] else t.right[n]
                elif b >= 0:
                    child = t.left[n] if (t.bitsets[b] >> int(v)) & 1 else t.right[n]
                else:
                    child = t.left[n] if v <= t.threshold[n] else t.right[n]
                parts[f] += t.value[child] - t.value[n]
                n = child
        return parts


@dataclass
class ScoringModel:
    """A servable model: a family's scorer, its calibrator and the decision threshold.

    Every inference entry point comes here the same way: its request decoded into the raw layout
    (encoding.RawEncoder: ``row``/``rows`` for rows, app.inference.SchemaPlan for columns, the OIP
    tensor or named inputs as they are), its values checked (schema.py's rules: Schema.validate_row
    for rows and columns, MatrixCheck for a matrix), then ``score`` or ``explain``.
    """

    schema: Schema
    family: str
    threshold: float
    calibrator: Calibrator
    linear: LinearScorer | None = None
    trees: TreeScorer | None = None

    @cached_property
    def scorer(self) -> LinearScorer | TreeScorer:
        """The family's scorer."""
        scorer = self.linear or self.trees
        assert scorer is not None
        return scorer

    @cached_property
    def raw(self) -> RawEncoder:
        """The raw layout of this model's schema."""
        return self.scorer.raw

    def score(self, X: np.ndarray) -> np.ndarray:
        """The probability of each row of an [n, F] raw-layout matrix (float32 or float64) whose values
        keep the schema's rules."""
        raw = self.scorer.score(X)
        return self.calibrator.many(raw, out=raw)

    def explain(self, X: np.ndarray, top_k: int) -> tuple[np.ndarray, list[list[Contribution]]]:
        """``score``, and each row's ``top_k`` largest contributions by magnitude (ties: the larger
        name first); none for ``top_k`` <= 0."""
        if top_k <= 0:
            return self.score(X), [[] for _ in range(len(X))]
        raw, parts = self.scorer.contributions(X)
        names = self.raw.names
        tops = [top_contributions(list(zip(names, p)), top_k) for p in parts.tolist()]
        return self.calibrator.many(raw, out=raw), tops

    def predict_rows(self, rows: Sequence[Row]) -> np.ndarray:
        """``score`` of rows that passed Schema.validate_row."""
        return self.score(self.raw.rows(rows))

    def predict_one(self, row: Mapping[str, object]) -> float:
        """``score`` of one row that passed Schema.validate_row."""
        return float(self.score(np.array([self.raw.row(row)]))[0])

    def explain_one(self, row: Mapping[str, object], top_k: int) -> tuple[float, list[Contribution]]:
        """``explain`` of one row that passed Schema.validate_row."""
        probs, tops = self.explain(np.array([self.raw.row(row)]), top_k)
        return float(probs[0]), tops[0]
