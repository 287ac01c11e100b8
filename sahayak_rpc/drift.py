"""Drift of live data against a version's reference profile (see profile.py).

Per feature: PSI over the reference's own bins (numeric: its deciles;
categorical: its categories plus missing and unseen), with a small epsilon
for empty bins; supporting statistics: Kolmogorov-Smirnov and a normalised
Wasserstein distance (numeric, from the stored quantiles), Jensen-Shannon
distance (categorical). A feature drifts when its PSI reaches the threshold;
the data set drifts when the share of drifted features reaches drift_share.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .profile import BINS, QUANTILES

EPSILON = 1e-4


@dataclass(frozen=True)
class Statistic:
    method: str  # psi | kolmogorov_smirnov | wasserstein | jensen_shannon
    value: float
    threshold: float
    drifted: bool


@dataclass
class FeatureDrift:
    feature: str
    statistics: list[Statistic] = field(default_factory=list)
    drifted: bool = False
    reference_count: int = 0
    current_count: int = 0
    missing_share: float = 0.0
    reference_missing_share: float = 0.0
    unseen_share: float = 0.0


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift
    dataset_drift: bool
    drifted_share: float
    drift_share_threshold: float
    current_count: int


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), EPSILON)
    c = np.maximum(np.asarray(current, dtype=np.float64), EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon(reference: Sequence[float], current: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1])."""
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    p, q = p / (p.sum() or 1), q / (q.sum() or 1)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


def _numeric(ref: dict[str, Any], present: np.ndarray, n: int, threshold: float) -> FeatureDrift:
    """``present``: the non-missing values of ``n`` rows."""
    out = FeatureDrift(
        "",
        reference_count=int(ref.get("count", 0)),
        current_count=n,
        missing_share=1 - len(present) / n if n else 0.0,
        reference_missing_share=float(ref.get("missing_share", 0.0)),
    )
    if not len(present) or not ref.get("quantiles"):
        return out
    edges = np.asarray(ref["edges"], dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    value = psi(ref["shares"], counts / len(present))
    out.statistics.append(Statistic("psi", value, threshold, value >= threshold))
    rq = np.asarray(ref["quantiles"], dtype=np.float64)
    # KS: the largest gap between the reference CDF (from its quantiles) and the current one.
    grid = np.unique(np.concatenate([rq, present]))
    ref_cdf = np.interp(grid, rq, QUANTILES, left=0.0, right=1.0)
    cur_cdf = np.searchsorted(np.sort(present), grid, side="right") / len(present)
    ks = float(np.max(np.abs(ref_cdf - cur_cdf)))
    out.statistics.append(Statistic("kolmogorov_smirnov", ks, 0.1, ks >= 0.1))
    # Wasserstein-1 between the quantile functions, in reference standard deviations.
    cq = np.quantile(present, QUANTILES)
    scale = float(ref.get("std") or 0.0) or 1.0
    w = float(np.mean(np.abs(cq - rq)) / scale)
    out.statistics.append(Statistic("wasserstein", w, 0.1, w >= 0.1))
    out.drifted = value >= threshold
    return out


def _categorical(
    ref: dict[str, Any], counts: Counter[object], total: int, threshold: float, boolean: bool
) -> FeatureDrift:
    """``counts`` of each value (None: missing) over ``total`` rows."""
    n = total or 1
    if boolean:
        ref_shares = {True: ref["true_share"], False: 1 - ref["true_share"] - ref["missing_share"]}
        unseen = 0.0
    else:
        ref_shares = dict(ref["shares"])
        unseen = sum(v for k, v in counts.items() if k is not None and k not in ref_shares) / n
    keys = list(ref_shares)
    r = [ref_shares[k] for k in keys] + [ref.get("missing_share", 0.0), ref.get("unseen_share", 0.0)]
    c = [counts.get(k, 0) / n for k in keys] + [counts.get(None, 0) / n, unseen]
    value = psi(r, c)
    js = jensen_shannon(r, c)
    out = FeatureDrift(
        "",
        [Statistic("psi", value, threshold, value >= threshold), Statistic("jensen_shannon", js, 0.1, js >= 0.1)],
        drifted=value >= threshold,
        reference_count=int(ref.get("count", 0)),
        current_count=total,
        missing_share=counts.get(None, 0) / n,
        reference_missing_share=float(ref.get("missing_share", 0.0)),
        unseen_share=unseen,
    )
    return out


def detect(
    profile: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    probabilities: Sequence[float],
    psi_threshold: float,
    drift_share: float,
) -> DriftReport:
    """Compare ``rows`` (and their probabilities) with a version's reference profile."""
    columns: dict[str, list[Chunk]] = {
        name: [ValuesChunk([r.get(name) for r in rows])] for name in profile.get("features", {})
    }
    return detect_columns(profile, columns, len(rows), probabilities, psi_threshold, drift_share)


@dataclass(frozen=True, slots=True)
class ValuesChunk:
    """Some rows of one feature's column: its values, None where missing."""

    values: Sequence[Any]


@dataclass(frozen=True, slots=True)
class CodesChunk:
    """Some rows of one categorical feature's column as codes into ``dictionary`` (-1: missing)."""

    dictionary: Sequence[str]
    codes: Sequence[int] | np.ndarray


Chunk = ValuesChunk | CodesChunk


def detect_columns(
    profile: dict[str, Any],
    columns: dict[str, list[Chunk]],
    n: int,
    probabilities: Sequence[float],
    psi_threshold: float,
    drift_share: float,
) -> DriftReport:
    """The same as detect, from columns in chunks (as the prediction log keeps them): no row objects."""
    features = []
    nan = math.nan
    for name, ref in profile.get("features", {}).items():
        chunks = columns.get(name, [])
        kind = ref.get("kind")
        if kind == "numeric":
            parts = []
            for chunk in chunks:
                # (Codes come for categorical features only: check_columns refuses them for another.)
                values = chunk.values if isinstance(chunk, ValuesChunk) else chunk.dictionary
                try:  # no missing values: numpy converts the list in C
                    arr = np.array(values, dtype=np.float64)
                except TypeError:
                    arr = np.fromiter((nan if v is None else v for v in values), dtype=np.float64, count=len(values))
                parts.append(arr[~np.isnan(arr)])
            present = np.concatenate(parts) if parts else np.zeros(0)
            fd = _numeric(ref, present, n, psi_threshold)
        else:
            counts: Counter[object] = Counter()
            for chunk in chunks:
                if isinstance(chunk, CodesChunk):
                    words = [*chunk.dictionary, None]  # code -1 is missing
                    tally = np.bincount(np.asarray(chunk.codes, dtype=np.int64) + 1, minlength=len(words))
                    for code, k in enumerate(tally.tolist()):
                        if k:
                            counts[words[code - 1] if code else None] += k
                else:
                    counts.update(chunk.values)
            if kind == "boolean":
                folded: Counter[object] = Counter()
                for value, k in counts.items():
                    folded[None if value is None else bool(value)] += k
                counts = folded
            counts[None] += n - sum(counts.values())  # rows with no value at all
            fd = _categorical(ref, counts, n, psi_threshold, boolean=kind == "boolean")
        fd.feature = name
        features.append(fd)
    pref = profile.get("prediction", {})
    p = np.asarray(probabilities, dtype=np.float64)
    prediction = FeatureDrift("prediction", current_count=len(p), reference_count=int(profile.get("rows", 0)))
    if len(p) and pref.get("shares"):
        hist = np.bincount(np.minimum((p * BINS).astype(np.int64), BINS - 1), minlength=BINS) / len(p)
        value = psi(pref["shares"], hist)
        prediction.statistics.append(Statistic("psi", value, psi_threshold, value >= psi_threshold))
        prediction.drifted = value >= psi_threshold
    drifted = sum(f.drifted for f in features)
    share = drifted / len(features) if features else 0.0
    return DriftReport(features, prediction, bool(features) and n > 0 and share >= drift_share, share, drift_share, n)
