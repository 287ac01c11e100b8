"""Reference profiles: what a model's training data looked like, in summary.

Stored with every trained version, so drift can be measured later against
the champion without the raw training rows: numeric features keep quantile
bin edges (from the reference itself), the share of rows per bin and 101
quantiles; categorical features keep category shares (with missing and
unseen); booleans their share of true; predictions a probability histogram.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .schema import FeatureType, FeatureValue, Row, Schema

BINS = 10
QUANTILES = np.linspace(0.0, 1.0, 101)


def _numeric(values: Sequence[FeatureValue | None]) -> dict[str, Any]:
    """A numeric feature's profile (its values validated as numbers; None where missing)."""
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    out: dict[str, Any] = {
        "kind": "numeric",
        "count": len(values),
        "missing_share": 1 - len(present) / len(values) if values else 0.0,
    }
    if not len(present):
        out.update(edges=[], shares=[], quantiles=[])
        return out
    # Inner edges at the reference's deciles (deduplicated): bins hold ~10% each.
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    out.update(
        edges=edges.tolist(),
        shares=(counts / len(present)).tolist(),
        quantiles=np.quantile(present, QUANTILES).tolist(),
        mean=float(present.mean()),
        std=float(present.std()),
    )
    return out


def _categorical(values: Sequence[object], categories: Sequence[str]) -> dict[str, Any]:
    counts = Counter(values)
    n = len(values) or 1
    shares = {c: counts.get(c, 0) / n for c in categories}
    unseen = sum(v for k, v in counts.items() if k is not None and k not in shares)
    return {
        "kind": "categorical",
        "count": len(values),
        "shares": shares,
        "missing_share": counts.get(None, 0) / n,
        "unseen_share": unseen / n,
    }


def build(schema: Schema, rows: Sequence[Row], probabilities: np.ndarray) -> dict[str, Any]:
    """The profile of ``rows`` (the training rows) and of ``probabilities`` (on held-out rows)."""
    features: dict[str, Any] = {}
    for spec in schema.features:
        values = [r.get(spec.name) for r in rows]
        if spec.type is FeatureType.NUMERIC:
            features[spec.name] = _numeric(values)
        elif spec.type is FeatureType.CATEGORICAL:
            features[spec.name] = _categorical(values, spec.categories)
        else:
            n = len(values) or 1
            trues = sum(1 for v in values if v is True)
            missing = sum(1 for v in values if v is None)
            features[spec.name] = {
                "kind": "boolean",
                "count": len(values),
                "true_share": trues / n,
                "missing_share": missing / n,
            }
    p = np.asarray(probabilities, dtype=np.float64)
    hist = np.bincount(np.minimum((p * BINS).astype(np.int64), BINS - 1), minlength=BINS) if len(p) else np.zeros(BINS)
    return {
        "rows": len(rows),
        "features": features,
        "prediction": {
            "shares": (hist / max(1, len(p))).tolist(),
            "quantiles": np.quantile(p, QUANTILES).tolist() if len(p) else [],
            "mean": float(p.mean()) if len(p) else 0.0,
        },
    }
