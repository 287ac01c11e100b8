"""Scoring a row with a trained model: the hot path, without scikit-learn.

A model is precomputed into plain tables when it is loaded, so one row costs
a few dictionary look-ups (logistic regression) or one walk per tree
(gradient boosting), and a batch costs a few numpy operations per feature.
Every score is explained: each feature's contribution in log-odds,
relative to the training average (logistic) or to the trees' expected
value (path attribution for trees).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass

import numpy as np

from .encoding import MISSING, UNKNOWN, CategoricalEncoding, LinearEncoder, NumericEncoding, RawEncoder
from .schema import Column, FeatureType, Row, Schema, as_array

Contribution = tuple[str, float]


def top_contributions(parts: list[Contribution], k: int) -> list[Contribution]:
    """The ``k`` largest contributions by magnitude (ties: by name)."""
    # Plain tuples compare in C; a key function would cost a Python call per item.
    ranked = sorted([(-c if c < 0 else c, name, c) for name, c in parts], reverse=True)
    return [(name, c) for _, name, c in ranked[:k]]


def ranked(out: Sequence[float], k: int) -> tuple[float, list[int], list[float]]:
    """A ranking kernel's output (kernels.linear_explain, tree_explain: the raw score, k contributions,
    their k positions) as the score, the positions and the contributions."""
    return out[0], [int(i) for i in out[1 + k:1 + 2 * k]], list(out[1:1 + k])


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Calibrator:
    """Maps a raw log-odds score to a probability: none, sigmoid (Platt) or isotonic."""

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def one(self, raw: float) -> float:
        if self.method == "sigmoid":
            return _sigmoid(self.a * raw + self.b)
        if self.method == "isotonic":
            xs, ys = self.x, self.y
            if raw <= xs[0]:
                return ys[0]
            if raw >= xs[-1]:
                return ys[-1]
            i = bisect.bisect_right(xs, raw)
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 if x1 == x0 else y0 + (y1 - y0) * (raw - x0) / (x1 - x0)
        return _sigmoid(raw)

    def many(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))
        if self.method == "isotonic":
            xs, ys = self._arrays()
            return np.interp(raw, xs, ys)
        return 1.0 / (1.0 + np.exp(-raw))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_xy")
        if cached is None:
            cached = (np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64))
            object.__setattr__(self, "_xy", cached)  # frozen dataclass: a private memo
        return cached

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Calibrator:
        return cls(str(d["method"]), float(d["a"]), float(d["b"]),  # type: ignore[arg-type]
                   tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"]))  # type: ignore[attr-defined]


class LinearScorer:
    """Logistic regression folded into per-feature contribution tables."""

    def __init__(self, encoder: LinearEncoder, weights: np.ndarray, intercept: float, column_means: np.ndarray) -> None:
        self.encoder = encoder
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

        self._by_name: dict[str, tuple[float, float, float] | tuple[dict[object, float], float, float]] = {}
        for name, slope, offset, missing in self._numeric:
            self._by_name[name] = (slope, offset, missing)
        for name, table, unknown, missing in self._tables:
            self._by_name[name] = (table, unknown, missing)
        # The features in scoring order (numeric, then the others), and their positions by descending
        # name: ranking them with a stable sort breaks ties towards the larger name (top_contributions).
        self.names = tuple(e[0] for e in self._numeric) + tuple(e[0] for e in self._tables)
        self._by_name_desc = tuple(sorted(range(len(self.names)), key=self.names.__getitem__, reverse=True))

    def top(self, parts: Sequence[float], k: int) -> list[Contribution]:
        """The ``k`` largest of ``parts`` (one contribution per feature, in scoring order) by magnitude,
        ties by name as in top_contributions, without a tuple per feature."""
        size = list(map(abs, parts))
        names = self.names
        return [(names[i], parts[i]) for i in sorted(self._by_name_desc, key=size.__getitem__, reverse=True)[:k]]

    def contribution(self, name: str, value: object) -> float:
        """One feature's centred contribution for ``value`` (None: missing)."""
        a, b, missing = self._by_name[name]
        if value is None:
            return missing
        if isinstance(a, dict):
            return a.get(value, b)
        return a * value + b  # type: ignore[operator]

    def raw_one(self, row: Mapping[str, object]) -> float:
        z = self.bias
        for name, slope, offset, missing in self._numeric:
            v = row.get(name)
            z += missing if v is None else slope * v + offset  # type: ignore[operator]
        for name, table, unknown, missing in self._tables:
            v = row.get(name)
            z += missing if v is None else table.get(v, unknown)
        return z

    def explain_one(self, row: Mapping[str, object]) -> tuple[float, list[Contribution]]:
        z = self.bias
        parts: list[Contribution] = []
        for name, slope, offset, missing in self._numeric:
            v = row.get(name)
            c = missing if v is None else slope * v + offset  # type: ignore[operator]
            z += c
            parts.append((name, c))
        for name, table, unknown, missing in self._tables:
            v = row.get(name)
            c = missing if v is None else table.get(v, unknown)
            z += c
            parts.append((name, c))
        return z, parts

    def explain_top(self, row: Mapping[str, Any], k: int) -> tuple[float, list[Contribution]]:
        """explain_one then top_contributions, in one pass: the single-row Predict path."""
        z = self.bias
        get = row.get
        parts: list[float] = []
        add = parts.append
        for name, slope, offset, missing in self._numeric:
            v = get(name)
            c = missing if v is None else slope * v + offset
            z += c
            add(c)
        for name, table, unknown, missing in self._tables:
            v = get(name)
            c = missing if v is None else table.get(v, unknown)
            z += c
            add(c)
        return z, self.top(parts, k)

    def raw_columns(self, n: int, columns: Mapping[str, Column]) -> np.ndarray:
        z = np.full(n, self.bias)
        for name, slope, offset, missing in self._numeric:
            col = columns.get(name)
            if col is None or col.numbers is None:
                z += missing
                continue
            x = as_array(col.numbers, n)
            z += np.where(np.isnan(x), missing, slope * x + offset)
        for name, table, unknown, missing in self._tables:
            col = columns.get(name)
            if col is None:
                z += missing
            elif col.codes is not None:
                # Dictionary-encoded: a table over the dictionary (plus "missing" at -1), then one gather.
                lut = np.array([table.get(d, unknown) for d in col.dictionary or ()] + [missing])
                z += lut[col.codes]
            elif col.strings is not None:
                # A look-up table over the distinct values, then one C-level map over the rows.
                by_value = {v: table.get(v, unknown) for v in set(col.strings)}
                by_value[""] = missing
                z += np.fromiter(map(by_value.__getitem__, col.strings), dtype=np.float64, count=n)
            else:  # a boolean as 0 / 1 / NaN
                x = as_array(col.numbers, n)
                z += np.where(np.isnan(x), missing, np.where(x == 1, table[True], table[False]))
        return z

    def raw_rows(self, rows: Sequence[Row]) -> np.ndarray:
        return self.encoder.transform(rows) @ self.weights + self.intercept

    def raw_matrix(self, X: np.ndarray, raw: RawEncoder) -> np.ndarray:
        """Log-odds for a checked [n, F] matrix in ``raw``'s layout (see ScoringModel.predict_matrix).

        The contribution tables as vectors: numeric and boolean features are
        linear in the value (slope * x + offset; the missing value where NaN),
        so they are two matrix-vector products; categoricals are one gather.
        """
        plan = self.__dict__.get("_matrix_plan")
        if plan is None or plan[0] is not raw:
            plan = self.__dict__["_matrix_plan"] = (raw, *self._plan(raw))
        _, const, slope, missing_delta, cat_cols, cat_missing, cat_base, lut = plan
        missing = np.isnan(X)
        z = np.where(missing, 0.0, X) @ slope + missing @ missing_delta + const
        if len(cat_cols):
            C = X.take(cat_cols, axis=1)
            # np.take and a product with ones: ~3x faster than fancy indexing and .sum(axis=1) here.
            picked = np.take(lut, np.where(np.isnan(C), cat_missing, C).astype(np.intp) + cat_base)
            z += picked @ np.ones(len(cat_cols))
        return z

    def raw_checked(self, X: np.ndarray, raw: RawEncoder, lo: np.ndarray, hi: np.ndarray, whole: np.ndarray,
                    optional: np.ndarray) -> np.ndarray | None:
        """raw_matrix for an unchecked matrix, checked against the per-column rules (MatrixCheck's
        vectors) in the same compiled pass (kernels.linear_checked); None if any value breaks one."""
        from . import kernels

        plan = self.__dict__.get("_checked_matrix_plan")
        if plan is None or plan[0] is not raw:
            const, slope, missing_delta, cat_cols, cat_missing, cat_base, lut = self._plan(raw)
            lut_base = np.full(len(raw.names), -1, dtype=np.int64)
            lut_missing = np.zeros(len(raw.names), dtype=np.int64)
            lut_base[cat_cols] = cat_base
            lut_missing[cat_cols] = cat_missing.astype(np.int64)
            plan = self.__dict__["_checked_matrix_plan"] = (raw, slope, missing_delta, lut_base, lut_missing, lut,
                                                            float(const))
        _, slope, missing_delta, lut_base, lut_missing, lut, const = plan
        out = np.empty(X.shape[0], dtype=np.float64)
        if not kernels.linear_checked(X, lo, hi, whole, optional, slope, missing_delta, lut_base, lut_missing, lut,
                                      const, out):
            return None
        return out

    def explain_raw(self, x: np.ndarray, raw: RawEncoder, k: int) -> tuple[float, list[Contribution], list[int]]:
        """explain_top for one checked row in ``raw``'s layout (wire.PredictReader's), in one compiled
        pass (kernels.linear_explain): the raw score, to the bit, the ``k`` largest contributions,
        ranked as ``top`` ranks them, and their columns in ``x``."""
        ints, floats, lut, bias, names, columns = self.explain_tables(raw)
        if k > len(columns):
            k = len(columns)
        out = np.empty(1 + 2 * k)
        self.__dict__["_explain"](x, ints, floats, lut, bias, k, out)
        z, at, parts = ranked(out.tolist(), k)
        return z, [(names[i], c) for i, c in zip(at, parts)], [columns[i] for i in at]

    def explain_tables(self, raw: RawEncoder) -> tuple[Any, ...]:
        """What kernels.linear_explain takes to explain a row in ``raw``'s layout (ints, floats, lut,
        bias), then per feature in scoring order its name and its column in ``raw``'s layout."""
        plan = self.__dict__.get("_explain_plan")
        if plan is None or plan[0] is not raw:
            from . import kernels  # numba loads with the first use, not with every import

            self.__dict__["_explain"] = kernels.linear_explain
            ints, floats, lut, columns = self._explain_plan(raw)
            plan = self.__dict__["_explain_plan"] = (raw, (ints, floats, lut, self.bias, self.names, columns))
        return plan[1]

    def _explain_plan(self, raw: RawEncoder) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """explain_top's tables as kernels.linear_explain takes them. Per feature in scoring order: its
        column in ``raw``'s layout, where its table starts in the look-up table (-1 for a number), and
        the features by descending name (ints); slope, offset and the value when missing (floats);
        the look-up table over each category's index into its categories, or a boolean's 0 / 1."""
        where = {name: j for j, name in enumerate(raw.names)}
        columns, lut_base, floats = [], [], []
        lut: list[float] = []
        for name, slope, offset, missing in self._numeric:
            columns.append(where[name])
            lut_base.append(-1)
            floats.append((slope, offset, missing))
        for name, table, unknown, missing in self._tables:
            j = where[name]
            columns.append(j)
            lut_base.append(len(lut))
            floats.append((0.0, 0.0, missing))
            codes = raw.categories[j] if raw.kinds[j] == "categorical" else (False, True)
            lut += [table.get(c, unknown) for c in codes]
        ints = np.array([columns, lut_base, self._by_name_desc], dtype=np.int64).reshape(3, -1)
        return ints, np.array(floats).reshape(-1, 3).T.copy(), np.array(lut or [0.0]), columns

    def _plan(self, raw: RawEncoder) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                              np.ndarray]:
        width = len(raw.names)
        const = self.bias
        slope, missing_delta = np.zeros(width), np.zeros(width)
        cat_cols: list[int] = []
        cat_missing: list[float] = []
        cat_base: list[int] = []
        lut: list[float] = []
        for j, (name, kind, cats) in enumerate(zip(raw.names, raw.kinds, raw.categories, strict=True)):
            a, b, missing = self._by_name[name]
            if kind == "categorical":
                assert isinstance(a, dict)
                cat_cols.append(j)
                cat_missing.append(float(len(cats)))  # NaN picks the entry after the categories
                cat_base.append(len(lut))
                lut += [a.get(c, b) for c in cats] + [missing]
            elif kind == "boolean":
                assert isinstance(a, dict)
                slope[j] = a[True] - a[False]
                const += a[False]
                missing_delta[j] = missing - a[False]
            else:
                assert isinstance(a, float)
                slope[j] = a
                const += b
                missing_delta[j] = missing - b
        return (const, slope, missing_delta, np.array(cat_cols, dtype=np.intp), np.array(cat_missing),
                np.array(cat_base, dtype=np.intp), np.array(lut, dtype=np.float64))

    def feature_weights(self) -> list[Contribution]:
        """Each feature's largest absolute weight on the standardised design."""
        return [(name, float(np.max(np.abs(self.weights[s:e])))) for name, s, e in self.encoder.spans()]


def within_rules(X: np.ndarray, lo: np.ndarray, hi: np.ndarray, whole: np.ndarray, optional: np.ndarray) -> np.ndarray:
    """Per cell of a raw-layout matrix, whether it keeps its column's rules: a present value within
    [lo, hi] (so never infinite) and, where ``whole``, a whole number; NaN (missing) only where
    ``optional``. The vectorised form of kernels.linear_checked's checks (app.inference.MatrixCheck)."""
    ok = (X >= lo) & (X <= hi)  # False at NaN and infinities
    ok &= (X == np.floor(X)) | ~whole
    ok |= np.isnan(X) & optional
    return ok


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
                    built[i] = (t.feature[i], t.threshold[i], t.missing_left[i], built.pop(t.left[i]),
                                built.pop(t.right[i]), bits)
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
        self._cat_index = [
            {c: float(i) for i, c in enumerate(cats)} if kind == "categorical" else None
            for kind, cats in zip(raw.kinds, raw.categories, strict=True)
        ]
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
        # The compiled walk (kernels.py) over the same arrays, plus each node's leaf index (-1: inner).
        node_leaf = np.full(len(t.feature), -1, dtype=np.int64)
        for node, k in leaf_of.items():
            node_leaf[node] = k
        a = self._np
        self._walk_args = (np.asarray(t.roots, dtype=np.int64), a["feature"], a["threshold"], a["missing_left"],
                           a["left"], a["right"], a["bitset"], self._words, node_leaf, self._leaf_array,
                           float(t.baseline))
        self.walk(np.zeros((1, n_features)))  # compiled now (once per process), not on a request

    def walk(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For an [n, F] raw-layout matrix (NaN = missing): the leaf index each tree routes each row to
        ([n, trees]) and each row's raw score (baseline + its leaves' values, in tree order)."""
        from . import kernels  # numba loads with the first tree model, not with every import

        X = np.ascontiguousarray(X, dtype=np.float64)
        n = X.shape[0]
        leaves = np.empty((n, len(self.trees.roots)), dtype=np.int64)
        raw = np.empty(n, dtype=np.float64)
        kernels.walk(X, *self._walk_args, leaves, raw)
        return leaves, raw

    def vector(self, row: Mapping[str, Any]) -> list[float]:
        nan = math.nan
        out = []
        for name, index in zip(self.raw.names, self._cat_index, strict=True):
            v = row.get(name)
            if v is None:
                out.append(nan)
            elif index is not None:
                out.append(index.get(v, nan))
            else:
                out.append(float(v))
        return out

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

    def raw_one(self, row: Mapping[str, object]) -> float:
        return float(self.walk(np.array([self.vector(row)], dtype=np.float64))[1][0])

    def explain_one(self, row: Mapping[str, object]) -> tuple[float, list[Contribution]]:
        leaves, raw = self.walk(np.array([self.vector(row)], dtype=np.float64))
        return float(raw[0]), self.contributions_of(leaves[0], row)

    def explain_raw(self, x: np.ndarray, k: int) -> tuple[float, list[Contribution], list[int]] | None:
        """explain_one then top_contributions for one checked row in the raw layout (the first values
        of ``x``), in one compiled call (kernels.tree_explain): the raw score, the ``k`` largest
        contributions and their columns, the same to the bit. None without the leaf table."""
        if self._contrib is None:
            return None
        explain = self.__dict__.get("_explain")
        if explain is None:
            from . import kernels

            order = np.array(sorted(range(len(self.raw.names)), key=self.raw.names.__getitem__, reverse=True))
            explain = self.__dict__["_explain"] = (kernels.tree_explain, order)
        fn, order = explain
        k = min(max(k, 0), len(self.raw.names))
        out = np.empty(1 + 2 * k)
        fn(x, *self._walk_args, self._contrib, order, k, out)
        z, at, parts = ranked(out.tolist(), k)
        names = self.raw.names
        return z, [(names[j], c) for j, c in zip(at, parts)], at

    def contributions_of(self, leaves: Sequence[int] | np.ndarray, row: Mapping[str, object]) -> list[Contribution]:
        """Each feature's path attribution for the leaves a row reached."""
        if self._contrib is not None:
            parts = self._contrib[leaves].sum(axis=0).tolist()
        else:
            parts = self._walk_contributions(self.vector(row))
        return list(zip(self.raw.names, parts, strict=True))

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

    def raw_matrix(self, X: np.ndarray) -> np.ndarray:
        return self.walk(X)[1]

    def matrix_from_columns(self, n: int, columns: Mapping[str, Column]) -> np.ndarray:
        X = np.full((n, len(self.raw.names)), np.nan)
        for j, (name, index) in enumerate(zip(self.raw.names, self._cat_index, strict=True)):
            col = columns.get(name)
            if col is None:
                continue
            if index is not None and col.codes is not None:
                lut = np.array([index.get(d, math.nan) for d in col.dictionary or ()] + [math.nan])
                X[:, j] = lut[col.codes]
            elif index is not None and col.strings is not None:
                X[:, j] = [index.get(s, math.nan) if s else math.nan for s in col.strings]
            elif col.numbers is not None:
                X[:, j] = np.asarray(col.numbers, dtype=np.float64)
        return X


@dataclass
class ScoringModel:
    """A servable model: scorer + calibrator + decision threshold."""

    schema: Schema
    family: str
    threshold: float
    calibrator: Calibrator
    linear: LinearScorer | None = None
    trees: TreeScorer | None = None

    @property
    def _scorer(self) -> LinearScorer | TreeScorer:
        scorer = self.linear or self.trees
        assert scorer is not None
        return scorer

    def predict_one(self, row: Mapping[str, object]) -> float:
        return self.calibrator.one(self._scorer.raw_one(row))

    def explain_one(self, row: Mapping[str, object], top_k: int) -> tuple[float, list[Contribution]]:
        """The probability and the ``top_k`` largest contributions (by magnitude)."""
        if top_k <= 0:
            return self.predict_one(row), []
        if self.linear is not None:
            raw, top = self.linear.explain_top(row, top_k)
            return self.calibrator.one(raw), top
        raw, parts = self._scorer.explain_one(row)
        return self.calibrator.one(raw), top_contributions(parts, top_k)

    def explain_checked(self, row: Mapping[str, object], top_k: int) -> tuple[float, list[Contribution]] | None:
        """explain_one for a row that passes the schema's checks, checking it while scoring; None when
        anything about it is not plain (a bad value, an unknown name or category, a missing required
        feature, a tree model): the caller then checks the row the long way and uses explain_one.

        The single-row Predict path: one pass over the features instead of a check pass and a scoring
        pass, and the top-k ranked without a tuple per feature. The answer is explain_one's, to the
        bit (the same sums in the same order; ties between equal contributions go to the larger
        name, as in top_contributions)."""
        plan = self.__dict__.get("_checked_plan")
        if plan is None:
            plan = self.__dict__["_checked_plan"] = self._checked_plan()
        if not plan:
            return None
        linear, numeric, tables = plan
        get = row.get
        z = linear.bias
        parts: list[float] = []
        add = parts.append
        absent = 0
        # Two loops, numbers then the rest, as the scorer sums them: one loop with a kind test per
        # feature measured ~15% slower, and this is the whole of the single-row scoring cost.
        for name, slope, offset, missing, lo, hi, required in numeric:
            v = get(name)
            if v is None:
                if required:
                    return None
                absent += 1
                c = missing
            elif v.__class__ is float and lo <= v <= hi:  # a number (not a bool), in bounds, not NaN
                c = slope * v + offset
            else:
                return None
            z += c
            add(c)
        for name, table, missing, required, cls in tables:
            v = get(name)
            if v is None:
                if required:
                    return None
                absent += 1
                c = missing
            elif v.__class__ is cls and (c := table.get(v)) is not None:  # a declared category, or a bool
                pass
            else:
                return None
            z += c
            add(c)
        if len(row) + absent != len(parts):  # a name the schema does not have
            return None
        prob = self.calibrator.one(z)
        return prob, linear.top(parts, top_k) if top_k > 0 else []

    def explain_raw(self, x: np.ndarray, top_k: int) -> tuple[float, list[Contribution], list[int]] | None:
        """explain_one for one row in the raw layout (see predict_matrix) whose values were checked
        against the schema: the probability, the top_k contributions and their columns in ``x``; the
        same answer as explain_one, to the bit. None for trees too many to tabulate (TABLE_LIMIT)."""
        if self.linear is not None:
            z, top, columns = self.linear.explain_raw(x, self._raw_encoder(), max(top_k, 0))
        else:
            assert self.trees is not None
            explained = self.trees.explain_raw(x, top_k)
            if explained is None:
                return None
            z, top, columns = explained
        return self.calibrator.one(z), top, columns

    def explain_tables(self) -> tuple[Any, ...] | None:
        """A linear model's tables for explaining a raw-layout row as it is read (wire.PredictReader):
        kernels.linear_explain's ints, floats, lut and bias, then the features' names and columns."""
        return None if self.linear is None else self.linear.explain_tables(self._raw_encoder())

    def explained(self, explanation: Sequence[float]) -> tuple[float, list[tuple[float, int, float]]]:
        """explain_raw's answer from a row explained as it was read with explain_tables (wire.WireRow's
        explanation: the raw score, k contributions, k feature positions, k values): the probability
        and, per contribution, (contribution, the feature's column in the raw layout, its value there)."""
        assert self.linear is not None
        columns = self.linear.explain_tables(self._raw_encoder())[5]
        k = (len(explanation) - 1) // 3
        z, at, parts = ranked(explanation, k)
        return self.calibrator.one(z), [(c, columns[i], v) for c, i, v in zip(parts, at, explanation[1 + 2 * k:])]

    def _checked_plan(self) -> tuple[Any, ...]:
        """The linear scorer's contribution rules, in its scoring order, with the schema's checks, for
        explain_checked; empty for a tree model."""
        linear = self.linear
        if linear is None:
            return ()
        numeric = []
        for name, slope, offset, missing in linear._numeric:
            spec = self.schema.feature(name)
            if spec is None:
                return ()
            lo, hi = self.schema.bounds(name)
            numeric.append((name, slope, offset, missing, lo, hi, spec.required))
        tables = []
        for name, table, unknown, missing in linear._tables:
            spec = self.schema.feature(name)
            if spec is None:
                return ()
            # Only the declared values: an unknown category (allowed or not) takes the long way.
            categorical = spec.type is FeatureType.CATEGORICAL
            known = spec.categories if categorical else (True, False)
            tables.append((name, {v: table.get(v, unknown) for v in known}, missing, spec.required,
                           str if categorical else bool))
        if len(numeric) + len(tables) != len(self.schema.features):
            return ()
        return linear, tuple(numeric), tuple(tables)

    def predict_rows(self, rows: Sequence[Row]) -> np.ndarray:
        if self.linear is not None:
            return self.calibrator.many(self.linear.raw_rows(rows))
        assert self.trees is not None
        trees = self.trees
        return self.calibrator.many(trees.raw_matrix(np.array([trees.vector(r) for r in rows], dtype=np.float64)
                                                     .reshape(len(rows), len(trees.raw.names))))

    def rank(self, subject: Row, candidates: Sequence[Row], top_k: int) -> tuple[np.ndarray, Callable[[int], list[Contribution]]]:
        """Probabilities of subject + each candidate, and a function explaining candidate i.

        A linear model scores the subject's features once and each candidate's
        own features on top; trees walk each merged row.
        """
        lin = self.linear
        if lin is None:
            trees = self.trees
            assert trees is not None
            # One walk of every merged row; the leaves serve both the score and its explanation.
            X = np.array([trees.vector({**subject, **c}) for c in candidates], dtype=np.float64)
            walks, tree_raws = trees.walk(X.reshape(len(candidates), len(trees.raw.names)))
            probs = self.calibrator.many(tree_raws)

            def explain_tree(i: int) -> list[Contribution]:
                return top_contributions(trees.contributions_of(walks[i], {**subject, **candidates[i]}), top_k)

            return probs, explain_tree
        contribution = lin.contribution
        base_parts = {name: contribution(name, subject.get(name)) for name in lin._by_name}
        base = lin.bias + sum(base_parts.values())
        # The subject's contributions, largest first: a candidate's top k come from
        # its own features and the first k (plus overridden) of these.
        subject_order = sorted(base_parts.items(), key=lambda p: -abs(p[1]))
        raws = []
        own_parts: list[list[Contribution]] = []
        for cand in candidates:
            z = base
            own = [(name, contribution(name, value)) for name, value in cand.items()]
            for name, c in own:
                z += c - base_parts[name]
            raws.append(z)
            own_parts.append(own)
        probs = self.calibrator.many(np.array(raws, dtype=np.float64))

        def explain(i: int) -> list[Contribution]:
            own = own_parts[i]
            taken = {name for name, _ in own}
            pool = own + [p for p in subject_order[: top_k + len(taken)] if p[0] not in taken][:top_k]
            return top_contributions(pool, top_k)

        return probs, explain

    def predict_checked_matrix(self, X: np.ndarray, lo: np.ndarray, hi: np.ndarray, whole: np.ndarray,
                               optional: np.ndarray) -> np.ndarray | None:
        """predict_matrix for a matrix not yet checked against the per-column rules (lo <= value <= hi,
        a whole number where ``whole``, missing only where ``optional``: MatrixCheck's vectors); None
        if any value breaks one. A linear model checks and scores in one compiled pass."""
        if self.linear is not None:
            raw = self.linear.raw_checked(X, self._raw_encoder(), lo, hi, whole, optional)
            return None if raw is None else self.calibrator.many(raw)
        X = np.asarray(X, dtype=np.float64)
        return self.predict_matrix(X) if within_rules(X, lo, hi, whole, optional).all() else None

    def _raw_encoder(self) -> RawEncoder:
        raw = self.__dict__.get("_raw")
        if raw is None:
            raw = self.__dict__["_raw"] = RawEncoder.from_schema(self.schema)
        return raw

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Probabilities for an [n, F] float64 matrix in the trees' raw layout (encoding.RawEncoder over
        the schema: schema order, NaN for missing, a boolean as 0/1, a categorical as the index of its
        value in the schema's categories), whose values were checked against the schema."""
        if self.linear is not None:
            return self.calibrator.many(self.linear.raw_matrix(X, self._raw_encoder()))
        trees = self.trees
        assert trees is not None  # its raw layout is the schema's (artifact.load checks it)
        return self.calibrator.many(trees.raw_matrix(X))

    def predict_columns(self, n: int, columns: Mapping[str, Column]) -> np.ndarray:
        if self.linear is not None:
            return self.calibrator.many(self.linear.raw_columns(n, columns))
        assert self.trees is not None
        return self.calibrator.many(self.trees.raw_matrix(self.trees.matrix_from_columns(n, columns)))
