"""Quality gates: may a candidate serve? (TFX-style blessing)

Absolute bounds on the candidate's own validation metrics, and a relative
bound against the current champion scored on the same validation rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .metrics import Metrics
from .settings import QualityGate


@dataclass(frozen=True)
class GateCheck:
    metric: str
    comparison: str  # ">=" or "<="
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
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "baseline_version": self.baseline_version, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> GateResult:
        if not d:
            return cls(False)
        return cls(bool(d["passed"]), tuple(GateCheck(**c) for c in d["checks"]),  # type: ignore[attr-defined]
                   int(d["baseline_version"]), tuple(d["reasons"]))  # type: ignore[arg-type,call-overload]


def evaluate(candidate: Metrics, gate: QualityGate, champion: Metrics | None = None, champion_version: int = 0) -> GateResult:
    """Judge ``candidate``; ``champion`` must be scored on the same rows."""
    checks = [
        _check("accuracy", ">=", gate.min_accuracy, candidate.accuracy),
        _check("f1", ">=", gate.min_f1, candidate.f1),
        _check("calibration_error", "<=", gate.max_calibration_error, candidate.calibration_error),
    ]
    if champion is not None:
        drop = champion.roc_auc - candidate.roc_auc
        if math.isnan(drop):  # one class only in the rows: compare log loss instead
            checks.append(_check("log_loss_increase", "<=", 0.0, candidate.log_loss - champion.log_loss))
        else:
            checks.append(_check("roc_auc_drop", "<=", gate.max_roc_auc_drop, drop))
    reasons = tuple(
        f"{c.metric} {c.value:.4f} is not {c.comparison} {c.threshold:.4f}" for c in checks if not c.passed
    )
    return GateResult(not reasons, tuple(checks), champion_version if champion is not None else 0, reasons)


def _check(metric: str, comparison: str, threshold: float, value: float) -> GateCheck:
    ok = value >= threshold if comparison == ">=" else value <= threshold
    return GateCheck(metric, comparison, threshold, value, bool(ok) and not math.isnan(value))
