"""Per-model settings (thresholds, schedule, families) and their defaults.

The defaults are the seed's: weekly retrain, incremental update every 100
labels, 80/20 split, at least 100 samples, accuracy >= 0.75, F1 >= 0.70,
calibration error <= 0.20.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .schema import FieldError

FAMILIES = ("logistic_regression", "gradient_boosting")
SPLITS = ("stratified", "time_ordered")
DAY = 86400.0


@dataclass(frozen=True)
class LogisticRegressionParams:
    learning_rate: float = 0.01
    # Per-example L2 strength (mean log loss + l2/2 |w|^2). 0, the default, means "auto": the
    # trainer tries training.L2_GRID (0.1 down to 1e-6) and keeps the strength with the lowest
    # log loss on the calibration rows. A value > 0 is a fixed strength, used as given.
    l2: float = 0.0
    tolerance: float = 0.001
    max_iterations: int = 1000


@dataclass(frozen=True)
class GradientBoostingParams:
    # Slower and shallower than scikit-learn's defaults: on the demo data this
    # closes a third of the gap to the Bayes-optimal accuracy (measured over 6 seeds).
    learning_rate: float = 0.05
    # A cap, not the stopping rule: early stopping on the calibration rows decides (20 iterations
    # without improvement). The demo's 100,000 rows stop at ~430; 500 bound on larger tables.
    max_iterations: int = 2000
    max_leaf_nodes: int = 15
    l2: float = 0.0


@dataclass(frozen=True)
class TrainingSettings:
    retrain_interval_s: float = 7 * DAY
    incremental_every: int = 100
    validation_fraction: float = 0.2
    split: str = "stratified"
    min_samples: int = 100
    families: tuple[str, ...] = FAMILIES
    logistic_regression: LogisticRegressionParams = field(default_factory=LogisticRegressionParams)
    gradient_boosting: GradientBoostingParams = field(default_factory=GradientBoostingParams)
    random_seed: int = 0
    schedule_enabled: bool = True


@dataclass(frozen=True)
class QualityGate:
    min_accuracy: float = 0.75
    min_f1: float = 0.70
    max_calibration_error: float = 0.20
    max_roc_auc_drop: float = 0.005
    # What a run the server starts on its own (and every incremental update) must gain over the
    # champion in validation log loss, by the bootstrap's lower bound (gate.py): less keeps the champion.
    min_log_loss_gain: float = 0.001


@dataclass(frozen=True)
class MonitoringSettings:
    drift_psi_threshold: float = 0.2
    drift_share: float = 0.5
    alert_cooldown_s: float = 3600.0
    freshness_limit_s: float = DAY
    retrain_on_breach: bool = True


@dataclass(frozen=True)
class ModelSettings:
    decision_threshold: float = 0.5
    training: TrainingSettings = field(default_factory=TrainingSettings)
    gate: QualityGate = field(default_factory=QualityGate)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)


def check_settings(s: ModelSettings, prefix: str = "settings") -> list[FieldError]:
    """Values out of their sensible ranges (empty: usable)."""
    errors: list[FieldError] = []

    def need(ok: bool, path: str, reason: str) -> None:
        if not ok:
            errors.append(FieldError(f"{prefix}.{path}", reason))

    def unit(value: float, path: str, lo_open: bool = False, hi_open: bool = False) -> None:
        ok = math.isfinite(value) and (value > 0 if lo_open else value >= 0) and (value < 1 if hi_open else value <= 1)
        need(ok, path, f"must be in {'(' if lo_open else '['}0, 1{')' if hi_open else ']'}")

    t, g, m = s.training, s.gate, s.monitoring
    unit(s.decision_threshold, "decision_threshold", lo_open=True, hi_open=True)
    need(math.isfinite(t.retrain_interval_s) and t.retrain_interval_s >= 60, "training.retrain_interval", "must be at least 60s")
    need(0 <= t.incremental_every <= 10_000_000, "training.incremental_every", "must be 0 (off) or a positive count")
    need(math.isfinite(t.validation_fraction) and 0.05 <= t.validation_fraction <= 0.5, "training.validation_fraction", "must be in [0.05, 0.5]")
    need(t.split in SPLITS, "training.split", f"must be one of {', '.join(SPLITS)}")
    need(10 <= t.min_samples <= 100_000_000, "training.min_samples", "must be at least 10")
    need(bool(t.families) and all(f in FAMILIES for f in t.families), "training.families", f"must name at least one of {', '.join(FAMILIES)}")
    need(len(set(t.families)) == len(t.families), "training.families", "duplicate family")
    lr, gb = t.logistic_regression, t.gradient_boosting
    need(math.isfinite(lr.learning_rate) and 0 < lr.learning_rate <= 10, "training.logistic_regression.learning_rate", "must be in (0, 10]")
    need(math.isfinite(lr.l2) and lr.l2 >= 0, "training.logistic_regression.l2", "must be >= 0 (0: chosen on data)")
    need(math.isfinite(lr.tolerance) and 0 < lr.tolerance < 1, "training.logistic_regression.tolerance", "must be in (0, 1)")
    need(1 <= lr.max_iterations <= 100_000, "training.logistic_regression.max_iterations", "must be in [1, 100000]")
    need(math.isfinite(gb.learning_rate) and 0 < gb.learning_rate <= 1, "training.gradient_boosting.learning_rate", "must be in (0, 1]")
    need(1 <= gb.max_iterations <= 10_000, "training.gradient_boosting.max_iterations", "must be in [1, 10000]")
    need(2 <= gb.max_leaf_nodes <= 4096, "training.gradient_boosting.max_leaf_nodes", "must be in [2, 4096]")
    need(math.isfinite(gb.l2) and gb.l2 >= 0, "training.gradient_boosting.l2", "must be >= 0")
    unit(g.min_accuracy, "gate.min_accuracy")
    unit(g.min_f1, "gate.min_f1")
    unit(g.max_calibration_error, "gate.max_calibration_error")
    unit(g.max_roc_auc_drop, "gate.max_roc_auc_drop")
    unit(g.min_log_loss_gain, "gate.min_log_loss_gain")
    need(math.isfinite(m.drift_psi_threshold) and m.drift_psi_threshold > 0, "monitoring.drift_psi_threshold", "must be > 0")
    unit(m.drift_share, "monitoring.drift_share", lo_open=True)
    need(math.isfinite(m.alert_cooldown_s) and m.alert_cooldown_s >= 0, "monitoring.alert_cooldown", "must be >= 0")
    need(math.isfinite(m.freshness_limit_s) and m.freshness_limit_s >= 60, "monitoring.freshness_limit", "must be at least 60s")
    return errors


def to_dict(s: ModelSettings) -> dict[str, Any]:
    return dataclasses.asdict(s)


def from_dict(d: dict[str, Any], base: ModelSettings | None = None) -> ModelSettings:
    """Settings from a (possibly partial) dict, filling gaps from ``base``."""
    return _merge(base or ModelSettings(), d)


def _merge(obj: Any, d: dict[str, Any]) -> Any:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name not in d:
            continue
        current, value = getattr(obj, f.name), d[f.name]
        if dataclasses.is_dataclass(current):
            changes[f.name] = _merge(current, value)
        elif isinstance(current, tuple):
            changes[f.name] = tuple(value)
        elif isinstance(current, bool):
            changes[f.name] = bool(value)
        elif isinstance(current, int):
            changes[f.name] = int(value)
        elif isinstance(current, float):
            changes[f.name] = float(value)
        else:
            changes[f.name] = value
    return dataclasses.replace(obj, **changes)
