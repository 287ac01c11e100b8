"""Feature encoding from a model's schema.

Two layouts, both fitted on training rows only:

* the *linear* design (logistic regression): numeric features imputed with
  the training median and standardised, plus a missing-indicator column for
  optional ones; categorical features one-hot over the schema's categories
  plus ``<unknown>`` and ``<missing>``; booleans as 0/1 with the training
  mode imputed and a missing indicator;
* the *raw* layout (trees): one column per feature, numbers as they are,
  categories as their index in the schema, booleans as 0/1, and NaN for
  missing (and for unknown categories), which the trees route natively.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
                    dtype=np.int64, count=n,
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
                out.append({"name": enc.name, "kind": "numeric", "impute": enc.impute, "mean": enc.mean, "std": enc.std})
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
    """The trees' layout: one float column per schema feature, NaN for missing."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # "numeric" | "categorical" | "boolean"
    categories: tuple[tuple[str, ...], ...]  # per feature; empty unless categorical

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

    def transform(self, rows: Sequence[Row]) -> np.ndarray:
        n = len(rows)
        out = np.empty((n, len(self.names)), dtype=np.float64)
        nan = math.nan
        for j, (name, kind, cats) in enumerate(zip(self.names, self.kinds, self.categories, strict=True)):
            if kind == "categorical":
                index: dict[FeatureValue, float] = {c: float(i) for i, c in enumerate(cats)}
                out[:, j] = [nan if (v := r.get(name)) is None else index.get(v, nan) for r in rows]
            else:
                out[:, j] = [nan if (v := r.get(name)) is None else float(v) for r in rows]
        return out
