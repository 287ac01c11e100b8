"""Metrics of a binary classifier: accuracy to calibration error."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

_EPS = 1e-15


@dataclass(frozen=True)
class Metrics:
    count: int
    positives: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier_score: float
    calibration_error: float
    max_calibration_error: float
    threshold: float
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metrics:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def calibration_errors(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """(ECE, MCE) over equal-width probability bins; empty bins are dropped."""
    if len(y) == 0:
        return math.nan, math.nan
    # Bin i holds [i/bins, (i+1)/bins); a probability of exactly 1 joins the last bin.
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    used = counts > 0
    gaps = np.abs(sum_y[used] - sum_p[used]) / counts[used]
    ece = float(np.sum(gaps * counts[used]) / len(y))
    return ece, float(gaps.max())


def compute(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> Metrics:
    """All metrics of probabilities ``prob`` against 0/1 labels ``y_true``."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    n = len(y)
    pred = p >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    tn = int(np.sum(~pred & ~pos))
    fn = int(np.sum(~pred & pos))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < tp + fn < n
    pc = np.clip(p, _EPS, 1 - _EPS)
    ece, mce = calibration_errors(y, p)
    return Metrics(
        count=n,
        positives=int(pos.sum()),
        accuracy=(tp + tn) / n if n else math.nan,
        precision=precision,
        recall=recall,
        f1=f1,
        roc_auc=float(roc_auc_score(y, p)) if both else math.nan,
        pr_auc=float(average_precision_score(y, p)) if both else math.nan,
        log_loss=float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))) if n else math.nan,
        brier_score=float(np.mean((p - y) ** 2)) if n else math.nan,
        calibration_error=ece,
        max_calibration_error=mce,
        threshold=threshold,
        true_positives=tp,
        false_positives=fp,
        true_negatives=tn,
        false_negatives=fn,
    )
