"""Live performance: realised metrics, estimates where labels lag, and trends."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from . import metrics as mt


@dataclass(frozen=True)
class Estimated:
    """Metrics expected from calibrated probabilities alone (the CBPE idea)."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    unlabelled_count: int


def estimate(probabilities: np.ndarray, threshold: float) -> Estimated:
    """Expected confusion matrix: a row predicted positive is a true positive with probability p."""
    p = np.asarray(probabilities, dtype=np.float64)
    n = len(p)
    if not n:
        nan = math.nan
        return Estimated(nan, nan, nan, nan, nan, 0)
    pos = p >= threshold
    tp = float(p[pos].sum())
    fp = float((1 - p[pos]).sum())
    fn = float(p[~pos].sum())
    tn = float((1 - p[~pos]).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Expected AUC: weight every row as a positive with p and a negative with 1 - p.
    y = np.concatenate([np.ones(n), np.zeros(n)])
    s = np.concatenate([p, p])
    w = np.concatenate([p, 1 - p])
    auc = float(roc_auc_score(y, s, sample_weight=w)) if 0 < p.sum() < n else math.nan
    return Estimated((tp + tn) / n, precision, recall, f1, auc, n)


def realised(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> mt.Metrics | None:
    if not len(labels):
        return None
    return mt.compute(labels, probabilities, threshold)


@dataclass(frozen=True)
class Trend:
    verdict: str  # improving | stable | degrading | insufficient_data
    slope_per_day: float
    p_value: float


def trend(times_s: list[float], values: list[float], min_points: int = 3, alpha: float = 0.05) -> Trend:
    """Least-squares slope of ``values`` over time and its two-sided t-test."""
    pts = [(t, v) for t, v in zip(times_s, values, strict=True) if not math.isnan(v)]
    if len(pts) < min_points:
        return Trend("insufficient_data", math.nan, math.nan)
    x = np.array([t for t, _ in pts]) / 86400.0
    y = np.array([v for _, v in pts])
    x = x - x.mean()
    sxx = float(np.sum(x * x))
    if sxx == 0:
        return Trend("insufficient_data", math.nan, math.nan)
    slope = float(np.sum(x * (y - y.mean())) / sxx)
    resid = y - y.mean() - slope * x
    dof = len(pts) - 2
    se = math.sqrt(float(np.sum(resid * resid)) / dof / sxx) if dof > 0 else math.inf
    if se == 0:
        p = 0.0 if slope != 0 else 1.0
    else:
        from scipy import stats

        p = float(2 * stats.t.sf(abs(slope / se), dof))
    if p >= alpha:
        return Trend("stable", slope, p)
    return Trend("improving" if slope > 0 else "degrading", slope, p)
