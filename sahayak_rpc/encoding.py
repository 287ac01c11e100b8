"""Feature encoding from a model's schema.

Two layouts, both fitted on training rows only:

* the *linear* design (logistic regression): numeric features imputed with
  the training median and standardised, plus a missing-indicator column for
  optional ones; categorical features one-hot over the schema's categories
  plus ``<unknown>`` and ``<missing>``; booleans as 0/1 with the training
  mode imputed and a missing indicator;
* the *raw* layout (every request is decoded into it; the trees are fitted
  on it): one column per feature in schema order, numbers as they are,
  categories as their index in the schema (an unknown category, where the
  schema allows one, as the index after the last), booleans as 0/1, NaN for
  missing. The trees take an unknown category as missing
  (``RawEncoder.unknown_as_missing``), as they were trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .schema import FeatureType, FeatureValue, Row, Schema

UNKNOWN = "<unknown>"
MISSING = "<missing>"


@dataclass(frozen=True)
class NumericEncoding:
    name: str
    impute: float
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalEncoding:
    name: str
    levels: tuple[str, ...]  # the schema's categories, then UNKNOWN, MISSING


@dataclass(frozen=True)
class BooleanEncoding:
    name: str
    impute: float


Encoding = NumericEncoding | CategoricalEncoding | BooleanEncoding


@dataclass(frozen=True)
class LinearEncoder:
    encodings: tuple[Encoding, ...]

    @property
    def columns(self) -> list[str]:
        """Names of the design's columns, in order."""
        out: list[str] = []
        for enc in self.encodings:
            if isinstance(enc, CategoricalEncoding):
                out += [f"{enc.name}={level}" for level in enc.levels]
            else:
                out += [enc.name, f"{enc.name}{MISSING}"]
        return out

    def spans(self) -> list[tuple[str, int, int]]:
        """(feature, first column, end column) of each feature's block."""
        spans, start = [], 0
        for enc in self.encodings:
            width = len(enc.levels) if isinstance(enc, CategoricalEncoding) else 2
            spans.append((enc.name, start, start + width))
            start += width
        return spans

    def transform(self, rows: Sequence[Row]) -> np.ndarray:
        n = len(rows)
        blocks = []
        for enc in self.encodings:
            values = [r.get(enc.name) for r in rows]
            if isinstance(enc, CategoricalEncoding):
                index: dict[FeatureValue, int] = {level: i for i, level in enumerate(enc.levels)}
                unknown, missing = len(enc.levels) - 2, len(enc.levels) - 1
                codes = np.fromiter(
                    (missing if v is None else index.get(v, unknown) for v in values),
                    dtype=np.int64,
                    count=n,
                )
                block = np.zeros((n, len(enc.levels)))
                block[np.arange(n), codes] = 1.0
            else:
                raw = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
                miss = np.isnan(raw)
                filled = np.where(miss, enc.impute, raw)
                if isinstance(enc, NumericEncoding):
                    filled = (filled - enc.mean) / enc.std
                block = np.column_stack([filled, miss.astype(np.float64)])
            blocks.append(block)
        return np.hstack(blocks) if blocks else np.zeros((n, 0))

    def to_dict(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for enc in self.encodings:
            if isinstance(enc, NumericEncoding):
                out.append(
                    {"name": enc.name, "kind": "numeric", "impute": enc.impute, "mean": enc.mean, "std": enc.std}
                )
            elif isinstance(enc, CategoricalEncoding):
                out.append({"name": enc.name, "kind": "categorical", "levels": list(enc.levels)})
            else:
                out.append({"name": enc.name, "kind": "boolean", "impute": enc.impute})
        return out

    @classmethod
    def from_dict(cls, items: Sequence[Mapping[str, Any]]) -> LinearEncoder:
        """From to_dict's JSON (checked by artifact.py when it comes from an artifact)."""
        encodings: list[Encoding] = []
        for d in items:
            kind = d["kind"]
            if kind == "numeric":
                encodings.append(NumericEncoding(str(d["name"]), float(d["impute"]), float(d["mean"]), float(d["std"])))
            elif kind == "categorical":
                encodings.append(CategoricalEncoding(str(d["name"]), tuple(str(x) for x in d["levels"])))
            elif kind == "boolean":
                encodings.append(BooleanEncoding(str(d["name"]), float(d["impute"])))
            else:
                raise ValueError(f"unknown encoding kind {kind!r}")
        return cls(tuple(encodings))


def fit_linear(schema: Schema, rows: Sequence[Row]) -> LinearEncoder:
    """Learn imputation values and scales from the training rows."""
    encodings: list[Encoding] = []
    for spec in schema.features:
        values = [r.get(spec.name) for r in rows]
        if spec.type is FeatureType.CATEGORICAL:
            encodings.append(CategoricalEncoding(spec.name, (*spec.categories, UNKNOWN, MISSING)))
            continue
        present = np.array([float(v) for v in values if v is not None], dtype=np.float64)
        if spec.type is FeatureType.BOOLEAN:
            impute = 1.0 if len(present) and present.mean() >= 0.5 else 0.0
            encodings.append(BooleanEncoding(spec.name, impute))
            continue
        median = float(np.median(present)) if len(present) else 0.0
        filled = np.array([median if v is None else float(v) for v in values], dtype=np.float64)
        mean = float(filled.mean()) if len(filled) else 0.0
        std = float(filled.std()) if len(filled) else 1.0
        encodings.append(NumericEncoding(spec.name, median, mean, std if std > 1e-12 else 1.0))
    return LinearEncoder(tuple(encodings))


@dataclass(frozen=True)
class RawEncoder:
    """The raw layout (see the module's docstring): one float column per schema feature."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # "numeric" | "categorical" | "boolean"
    categories: tuple[tuple[str, ...], ...]  # per feature; empty unless categorical
    # Derived: per feature its name, and a categorical's value -> code (None for a number or a boolean).
    _coders: tuple[tuple[str, dict[str, float] | None, float], ...] = field(init=False, repr=False, compare=False)
    _categorical: np.ndarray = field(init=False, repr=False, compare=False)  # the categorical columns
    _unknown: np.ndarray = field(init=False, repr=False, compare=False)  # their unknown codes

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_coders",
            tuple(
                (name, {c: float(i) for i, c in enumerate(cats)} if kind == "categorical" else None, float(len(cats)))
                for name, kind, cats in zip(self.names, self.kinds, self.categories, strict=True)
            ),
        )
        cat = [j for j, kind in enumerate(self.kinds) if kind == "categorical"]
        object.__setattr__(self, "_categorical", np.array(cat, dtype=np.intp))
        object.__setattr__(self, "_unknown", np.array([len(self.categories[j]) for j in cat], dtype=np.float64))

    @classmethod
    def from_schema(cls, schema: Schema) -> RawEncoder:
        return cls(
            tuple(f.name for f in schema.features),
            tuple(f.type.name.lower() for f in schema.features),
            tuple(f.categories if f.type is FeatureType.CATEGORICAL else () for f in schema.features),
        )

    @property
    def categorical_mask(self) -> np.ndarray:
        return np.array([k == "categorical" for k in self.kinds])

    def row(self, row: Mapping[str, object]) -> list[float]:
        """One row (a Row whose values passed the schema's checks) in the raw layout: the decoder every
        row-shaped request goes through."""
        nan = math.nan
        out = []
        for name, codes, unknown in self._coders:
            v = row.get(name)
            if v is None:
                out.append(nan)
            elif codes is None:
                out.append(float(v))  # type: ignore[arg-type]  # a number, or a boolean as 1.0 / 0.0
            else:
                out.append(codes.get(v, unknown))  # type: ignore[call-overload]
        return out

    def to_row(self, values: Sequence[float]) -> Row:
        """The inverse of ``row`` for a checked raw-layout row: a number as itself, a boolean as True /
        False, a categorical as its value, missing left out (how the log records a row, and a
        contribution's value)."""
        out: Row = {}
        for v, name, kind, cats in zip(values, self.names, self.kinds, self.categories, strict=True):
            if v == v:  # not NaN: present
                out[name] = cats[int(v)] if kind == "categorical" else (v == 1.0 if kind == "boolean" else v)
        return out

    def rows(self, rows: Sequence[Row]) -> np.ndarray:
        """An [n, F] float64 matrix of ``row`` of each."""
        return np.array([self.row(r) for r in rows], dtype=np.float64).reshape(len(rows), len(self.names))

    def unknown_as_missing(self, X: np.ndarray) -> np.ndarray:
        """``X`` with every unknown category as missing (NaN), as the trees take it (a copy if it has any)."""
        if not len(self._categorical) or not len(X):
            return X
        codes = X[:, self._categorical]
        unknown = codes >= self._unknown
        if not unknown.any():
            return X
        codes[unknown] = math.nan
        X = np.array(X, dtype=np.float64)
        X[:, self._categorical] = codes
        return X

    def transform(self, rows: Sequence[Row]) -> np.ndarray:
        """The trees' training matrix of ``rows``: ``rows`` with unknown categories as missing."""
        return self.unknown_as_missing(self.rows(rows))
