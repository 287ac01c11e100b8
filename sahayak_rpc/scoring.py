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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .encoding import MISSING, UNKNOWN, BooleanEncoding, CategoricalEncoding, LinearEncoder, NumericEncoding, RawEncoder
from .schema import Column, Row, Schema

Contribution = tuple[str, float]


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
            return np.interp(raw, np.asarray(self.x), np.asarray(self.y))
        return 1.0 / (1.0 + np.exp(-raw))

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

    def raw_columns(self, n: int, columns: Mapping[str, Column]) -> np.ndarray:
        z = np.full(n, self.bias)
        for name, slope, offset, missing in self._numeric:
            col = columns.get(name)
            if col is None or col.numbers is None:
                z += missing
                continue
            x = np.asarray(col.numbers, dtype=np.float64)
            z += np.where(np.isnan(x), missing, slope * x + offset)
        for name, table, unknown, missing in self._tables:
            col = columns.get(name)
            if col is None:
                z += missing
            elif col.strings is not None:
                get = table.get
                z += np.fromiter((get(s, unknown) if s else missing for s in col.strings), dtype=np.float64, count=n)
            else:  # a boolean as 0 / 1 / NaN
                x = np.asarray(col.numbers, dtype=np.float64)
                z += np.where(np.isnan(x), missing, np.where(x == 1, table[True], table[False]))
        return z

    def raw_rows(self, rows: Sequence[Row]) -> np.ndarray:
        return self.encoder.transform(rows) @ self.weights + self.intercept

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
    def __init__(self, trees: TreeArrays, raw: RawEncoder) -> None:
        self.trees = trees
        self.raw = raw
        t = trees
        # One tuple per node: a single index per step of the walk.
        self._nodes = [
            (t.feature[i], t.threshold[i], t.missing_left[i], t.left[i], t.right[i],
             t.bitsets[t.bitset[i]] if t.bitset[i] >= 0 else None, t.value[i])
            for i in range(len(t.feature))
        ]
        self.bias = t.baseline + sum(t.value[r] for r in t.roots)
        self._cat_index = [
            {c: float(i) for i, c in enumerate(cats)} if kind == "categorical" else None
            for kind, cats in zip(raw.kinds, raw.categories, strict=True)
        ]
        self._bool = [kind == "boolean" for kind in raw.kinds]
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

    def vector(self, row: Mapping[str, object]) -> list[float]:
        nan = math.nan
        out = []
        for name, index in zip(self.raw.names, self._cat_index, strict=True):
            v = row.get(name)
            if v is None:
                out.append(nan)
            elif index is not None:
                out.append(index.get(v, nan))
            else:
                out.append(float(v))  # type: ignore[arg-type]
        return out

    def raw_one(self, row: Mapping[str, object]) -> float:
        x = self.vector(row)
        nodes = self._nodes
        z = self.trees.baseline
        for n in self.trees.roots:
            f, thr, ml, lft, rgt, bits, val = nodes[n]
            while f >= 0:
                v = x[f]
                if v != v:
                    n = lft if ml else rgt
                elif bits is not None:
                    n = lft if (bits >> int(v)) & 1 else rgt
                else:
                    n = lft if v <= thr else rgt
                f, thr, ml, lft, rgt, bits, val = nodes[n]
            z += val
        return z

    def explain_one(self, row: Mapping[str, object]) -> tuple[float, list[Contribution]]:
        x = self.vector(row)
        nodes = self._nodes
        names = self.raw.names
        parts = [0.0] * len(names)
        z = self.trees.baseline
        for n in self.trees.roots:
            f, thr, ml, lft, rgt, bits, val = nodes[n]
            while f >= 0:
                v = x[f]
                if v != v:
                    n = lft if ml else rgt
                elif bits is not None:
                    n = lft if (bits >> int(v)) & 1 else rgt
                else:
                    n = lft if v <= thr else rgt
                feature, parent = f, val
                f, thr, ml, lft, rgt, bits, val = nodes[n]
                parts[feature] += val - parent
            z += val
        return z, list(zip(names, parts, strict=True))

    def raw_matrix(self, X: np.ndarray) -> np.ndarray:
        a = self._np
        n = X.shape[0]
        out = np.full(n, self.trees.baseline)
        rows = np.arange(n)
        for root in self.trees.roots:
            idx = np.full(n, root, dtype=np.int64)
            active = rows[a["feature"][idx] >= 0]
            while active.size:
                node = idx[active]
                feat = a["feature"][node]
                v = X[active, feat]
                nan = np.isnan(v)
                go_left = v <= a["threshold"][node]
                cat = a["bitset"][node] >= 0
                if cat.any():
                    codes = np.where(nan[cat], 0, v[cat]).astype(np.int64)
                    words = self._words[a["bitset"][node][cat], codes >> 5]
                    go_left[cat] = ((words >> (codes & 31).astype(np.uint64)) & np.uint64(1)).astype(bool)
                go_left = np.where(nan, a["missing_left"][node], go_left)
                idx[active] = np.where(go_left, a["left"][node], a["right"][node])
                active = active[a["feature"][idx[active]] >= 0]
            out += a["value"][idx]
        return out

    def matrix_from_columns(self, n: int, columns: Mapping[str, Column]) -> np.ndarray:
        X = np.full((n, len(self.raw.names)), np.nan)
        for j, (name, index) in enumerate(zip(self.raw.names, self._cat_index, strict=True)):
            col = columns.get(name)
            if col is None:
                continue
            if index is not None and col.strings is not None:
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
        raw, parts = self._scorer.explain_one(row)
        parts.sort(key=lambda p: -abs(p[1]))
        return self.calibrator.one(raw), parts[:top_k]

    def predict_rows(self, rows: Sequence[Row]) -> np.ndarray:
        if self.linear is not None:
            return self.calibrator.many(self.linear.raw_rows(rows))
        assert self.trees is not None
        return self.calibrator.many(self.trees.raw_matrix(self.trees.raw.transform(rows)))

    def predict_columns(self, n: int, columns: Mapping[str, Column]) -> np.ndarray:
        if self.linear is not None:
            return self.calibrator.many(self.linear.raw_columns(n, columns))
        assert self.trees is not None
        return self.calibrator.many(self.trees.raw_matrix(self.trees.matrix_from_columns(n, columns)))
