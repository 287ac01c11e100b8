"""Quality gates: may a candidate serve? (TFX-style blessing)

Absolute bounds on the candidate's own validation metrics, and a comparison with
the current champion scored on the same validation rows. The comparison accounts
for noise: a seeded, stratified paired bootstrap of the rows gives one-sided 95%
bounds on the candidate's gain in ROC AUC and in log loss over the champion.

* Every run: the candidate must not be worse beyond noise (the upper bound of each
  gain >= 0), and its ROC AUC must not drop by more than ``max_roc_auc_drop``.
* A run that did not come from a person asking (a scheduled retrain, new labels,
  drift or a performance breach) and every incremental update must also be better
  beyond noise: the lower bound of the log-loss gain > ``min_log_loss_gain``
  (0.001 by default: a gain smaller than that is real but worth no new champion).
  Otherwise the champion stays (the candidate is registered, not promoted, and
  the reason says why).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .metrics import Metrics
from .settings import QualityGate

# The bootstrap: resamples, and the one-sided level of its bounds (5th / 95th percentiles).
RESAMPLES = 1000
LEVEL = 0.95
_BATCH = 100  # resamples at a time (memory: _BATCH x rows counts)
_EPS = 1e-15


@dataclass(frozen=True)
class GateCheck:
    metric: str
    comparison: str  # ">=", "<=" or ">"
    threshold: float
    value: float
    passed: bool


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[GateCheck, ...] = ()
    baseline_version: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "baseline_version": self.baseline_version,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        if not d:
            return cls(False)
        return cls(
            bool(d["passed"]),
            tuple(GateCheck(**c) for c in d["checks"]),
            int(d["baseline_version"]),
            tuple(d["reasons"]),
        )


@dataclass(frozen=True)
class PairedScores:
    """The candidate's and the champion's probabilities on the same rows, with their 0/1 labels."""

    labels: np.ndarray
    candidate: np.ndarray
    champion: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """Candidate against champion on the same rows: point gains and their one-sided bootstrap bounds.

    Gains are positive when the candidate is better: ``roc_auc`` is the candidate's ROC AUC minus
    the champion's, ``log_loss`` the champion's log loss minus the candidate's. The ROC AUC fields
    are NaN when the rows hold one class only.
    """

    roc_auc: float
    roc_auc_low: float
    roc_auc_high: float
    log_loss: float
    log_loss_low: float
    log_loss_high: float
    resamples: int


def compare(scores: PairedScores, seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL) -> Comparison:
    """Paired bootstrap of the gains in ROC AUC and log loss of ``scores.candidate`` over ``scores.champion``.

    Each resample draws, with replacement and within each label (so both classes keep their counts
    and ROC AUC stays defined), as many rows as there are; both models are scored on the same draw.
    Deterministic for a seed. Returns the point gains and their ``level`` one-sided bounds (the
    ``1 - level`` and ``level`` quantiles). Raises ValueError when the arrays differ in length or
    are empty.
    """
    y = np.asarray(scores.labels).astype(np.int64)
    a = np.clip(np.asarray(scores.candidate, dtype=np.float64), _EPS, 1 - _EPS)
    b = np.clip(np.asarray(scores.champion, dtype=np.float64), _EPS, 1 - _EPS)
    n = len(y)
    if n == 0 or len(a) != n or len(b) != n:
        raise ValueError("the candidate's and the champion's scores need the same, non-empty rows")
    # Per-row log-loss gain: the champion's loss minus the candidate's.
    gain = np.where(y == 1, np.log(a) - np.log(b), np.log1p(-a) - np.log1p(-b))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    both = len(pos) > 0 and len(neg) > 0
    rng = np.random.default_rng(seed)
    auc_a, auc_b = (_AucPlan(p[pos], p[neg]) if both else None for p in (a, b))
    ll_gains: list[np.ndarray] = []
    auc_gains: list[np.ndarray] = []
    done = 0
    while done < resamples:
        size = min(_BATCH, resamples - done)
        # Each resample as a count per row, drawn within each label.
        wp, wn = (_counts(rng, len(members), size) for members in (pos, neg))
        ll_gains.append((wp @ gain[pos] + wn @ gain[neg]) / n)
        if auc_a is not None and auc_b is not None:
            auc_gains.append(auc_a.weighted(wp, wn) - auc_b.weighted(wp, wn))
        done += size
    ll = np.concatenate(ll_gains)
    lo, hi = 1 - level, level
    if auc_a is not None and auc_b is not None:
        ones_p, ones_n = np.ones((1, len(pos))), np.ones((1, len(neg)))
        point_auc = float(auc_a.weighted(ones_p, ones_n)[0] - auc_b.weighted(ones_p, ones_n)[0])
        auc = np.concatenate(auc_gains)
        auc_low, auc_high = float(np.quantile(auc, lo)), float(np.quantile(auc, hi))
    else:
        point_auc = auc_low = auc_high = math.nan
    return Comparison(
        roc_auc=point_auc,
        roc_auc_low=auc_low,
        roc_auc_high=auc_high,
        log_loss=float(gain.mean()),
        log_loss_low=float(np.quantile(ll, lo)),
        log_loss_high=float(np.quantile(ll, hi)),
        resamples=resamples,
    )


def _counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` resamples of ``n`` rows with replacement, as draw counts per row ([size, n])."""
    if n == 0:
        return np.zeros((size, 0))
    draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


class _AucPlan:
    """ROC AUC of one model under many weightings of its positive and negative rows (ties count one half)."""

    def __init__(self, p_pos: np.ndarray, p_neg: np.ndarray) -> None:
        self.neg_order = np.argsort(p_neg, kind="stable")
        sorted_neg = p_neg[self.neg_order]
        # Negatives scored below each positive, and at or below it (ties between the two).
        self.below = np.searchsorted(sorted_neg, p_pos, side="left")
        self.upto = np.searchsorted(sorted_neg, p_pos, side="right")

    def weighted(self, w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
        cum = np.zeros((w_neg.shape[0], w_neg.shape[1] + 1))
        np.cumsum(w_neg[:, self.neg_order], axis=1, out=cum[:, 1:])
        beaten = 0.5 * (cum[:, self.below] + cum[:, self.upto])
        return (w_pos * beaten).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def evaluate(
    candidate: Metrics,
    gate: QualityGate,
    champion: Metrics | None = None,
    champion_version: int = 0,
    *,
    paired: PairedScores | None = None,
    require_improvement: bool = False,
    seed: int = 0,
) -> GateResult:
    """Judge ``candidate`` against the absolute bounds of ``gate`` and, given one, the ``champion``.

    ``champion`` must be scored on the same rows as ``candidate``. With ``paired`` (both models'
    probabilities on those rows) the comparison is the seeded bootstrap of ``compare``: the
    candidate fails when it is worse beyond noise in ROC AUC or log loss, and, with
    ``require_improvement`` (scheduled and incremental runs), unless it is better beyond noise in
    log loss. Without ``paired`` only the point ROC AUC drop is checked. Returns the verdict with
    every check and a reason per failed one.
    """
    checks = [
        _check("accuracy", ">=", gate.min_accuracy, candidate.accuracy),
        _check("f1", ">=", gate.min_f1, candidate.f1),
        _check("calibration_error", "<=", gate.max_calibration_error, candidate.calibration_error),
    ]
    reasons = [f"{c.metric} {c.value:.4f} is not {c.comparison} {c.threshold:.4f}" for c in checks if not c.passed]
    if champion is not None:
        versus = f"champion version {champion_version}" if champion_version else "the champion"
        if paired is not None:
            cmp = compare(paired, seed=seed)
            pct = f"{LEVEL:.0%}"
            ll = _check("log_loss_gain_upper", ">=", 0.0, cmp.log_loss_high)
            checks.append(ll)
            if not ll.passed:
                reasons.append(
                    f"worse than {versus} beyond noise in log loss: the gain's {pct} upper bound is "
                    f"{cmp.log_loss_high:.4f} (point {cmp.log_loss:+.4f})"
                )
            if not math.isnan(cmp.roc_auc):
                auc = _check("roc_auc_gain_upper", ">=", 0.0, cmp.roc_auc_high)
                checks.append(auc)
                if not auc.passed:
                    reasons.append(
                        f"worse than {versus} beyond noise in ROC AUC: the gain's {pct} upper bound is "
                        f"{cmp.roc_auc_high:.4f} (point {cmp.roc_auc:+.4f})"
                    )
            if require_improvement:
                better = _check("log_loss_gain_lower", ">", gate.min_log_loss_gain, cmp.log_loss_low)
                checks.append(better)
                if not better.passed:
                    reasons.append(
                        f"not better than {versus} beyond noise (a run the server started, or an "
                        f"incremental one, keeps the champion): the log-loss gain's {pct} lower bound "
                        f"is {cmp.log_loss_low:.4f}, not over {gate.min_log_loss_gain:g} (point "
                        f"{cmp.log_loss:+.4f})"
                    )
        drop = champion.roc_auc - candidate.roc_auc
        if math.isnan(drop):  # one class only in the rows: compare log loss instead
            if paired is None:
                checks.append(_check("log_loss_increase", "<=", 0.0, candidate.log_loss - champion.log_loss))
        else:
            checks.append(_check("roc_auc_drop", "<=", gate.max_roc_auc_drop, drop))
        last = checks[-1]
        if not last.passed and last.metric in ("roc_auc_drop", "log_loss_increase"):
            reasons.append(f"{last.metric} {last.value:.4f} is not {last.comparison} {last.threshold:.4f}")
    return GateResult(not reasons, tuple(checks), champion_version if champion is not None else 0, tuple(reasons))


def _check(metric: str, comparison: str, threshold: float, value: float) -> GateCheck:
    if comparison == ">=":
        ok = value >= threshold
    elif comparison == ">":
        ok = value > threshold
    else:
        ok = value <= threshold
    return GateCheck(metric, comparison, threshold, value, bool(ok) and not math.isnan(value))
