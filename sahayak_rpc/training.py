"""The training pipeline: split, encode, fit each family, calibrate, evaluate, select.

Pure computation over rows already loaded: no database, no gRPC. Progress is
reported through a callback; ``cancelled()`` is polled between steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression, SGDClassifier
from threadpoolctl import threadpool_limits

from . import metrics as mt
from . import split as splitting
from .encoding import RawEncoder, fit_linear
from .schema import Row, Schema
from .scoring import Calibrator, LinearScorer, ScoringModel, TreeArrays, TreeScorer
from .settings import ModelSettings

ProgressFn = Callable[..., None]
_PROB_FLOOR = 1e-4
# Isotonic calibration is a candidate only on this many calibration rows or more: on fewer it
# overfits (scikit-learn's own advice), and on the bundled tables it cost the logistic family
# up to 0.9 points of accuracy against a sigmoid or no calibrator.
ISOTONIC_MIN_ROWS = 1000
# Trees stop when this many iterations in a row did not lower the loss on the calibration rows.
TREE_PATIENCE = 20
# Below this many training rows, the calibration rows (15% of them) are a large share of what a model
# could learn from: once they have chosen what they choose (the trees' iterations, the L2 strength,
# the calibrator), each family is fitted again on all the training rows, fit and calibration rows
# together, with those choices; the validation rows still judge the model that serves. On the
# bundled tables of bench/quality.py the trees fitted on 85% of the rows cost up to 1 point of
# accuracy. Above it, the calibration rows are 3,000+ and refitting would double the fit time
# for little.
REFIT_BELOW = 20_000
# Trees take a categorical feature natively only up to this many categories.
_MAX_TREE_CATEGORIES = 250


class Cancelled(Exception):
    """The run was cancelled while training."""


class NotEnoughData(ValueError):
    """Fewer rows (or classes) than training needs."""


@dataclass(frozen=True)
class TrainingData:
    rows: list[Row]
    labels: np.ndarray  # 0/1
    ids: list[str]
    times: np.ndarray  # occurred_at, microseconds

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, mask: np.ndarray) -> TrainingData:
        idx = np.flatnonzero(mask)
        return TrainingData([self.rows[i] for i in idx], self.labels[idx], [self.ids[i] for i in idx], self.times[idx])


@dataclass
class FittedCandidate:
    family: str
    model: ScoringModel
    calibration: str
    metrics: mt.Metrics
    stop_reason: str  # converged | max_iterations | early_stopping
    iterations: int
    final_loss: float
    fit_seconds: float
    feature_weights: list[tuple[str, float]]
    parameters: dict[str, str] = field(default_factory=dict)
    validation_prob: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selected: bool = False


@dataclass
class TrainingResult:
    candidates: list[FittedCandidate]
    selected: FittedCandidate
    validation: TrainingData
    train_count: int
    train_rows: list[Row] = field(default_factory=list)


# Part of every run's data digest: raise it when the same rows and settings would now train a
# different model (a change of the pipeline), so that such a run is not taken for a duplicate.
TRAINER_REVISION = 2


def data_digest(
    data: TrainingData, schema: Schema, settings: ModelSettings, families: Sequence[str], split: str
) -> str:
    """SHA-256 (hex) of what a full run trains on: its outcomes (ids and labels; an outcome's content is
    fixed by its id) and everything that shapes the model (the schema's features, the training settings
    other than scheduling, the decision threshold, the families, the split, TRAINER_REVISION). Two runs
    with the same digest train the same model; the gate's settings are not part of it."""
    t = settings.training
    spec = {
        "trainer": TRAINER_REVISION,
        "families": sorted(families),
        "split": split,
        "validation_fraction": t.validation_fraction,
        "random_seed": t.random_seed,
        "logistic_regression": dataclasses.asdict(t.logistic_regression),
        "gradient_boosting": dataclasses.asdict(t.gradient_boosting),
        "decision_threshold": settings.decision_threshold,
        "features": [dataclasses.asdict(f) for f in schema.features],
    }
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    h.update("\x1e".join(f"{oid}\x1f{int(label)}" for oid, label in zip(data.ids, data.labels, strict=True)).encode())
    return h.hexdigest()


def split_rows(data: TrainingData, settings: ModelSettings, split: str) -> np.ndarray:
    """The validation mask for this model's settings."""
    t = settings.training
    if split == "time_ordered":
        return splitting.time_ordered(data.times, data.ids, t.validation_fraction)
    return splitting.stratified(data.ids, data.labels, t.validation_fraction, t.random_seed)


def check_trainable(data: TrainingData, min_samples: int) -> None:
    if len(data) < min_samples:
        raise NotEnoughData(f"{len(data)} outcomes; training needs at least {min_samples}")
    positives = int(data.labels.sum())
    if positives < 5 or len(data) - positives < 5:
        raise NotEnoughData(
            f"{positives} positive and {len(data) - positives} negative outcomes; need at least 5 of each"
        )


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_calibrators(raw_cal: np.ndarray, y_cal: np.ndarray) -> list[Calibrator]:
    """Candidate calibrators fitted on held-out training rows: none, sigmoid, and isotonic from
    ISOTONIC_MIN_ROWS rows on (sigmoid and isotonic need both labels)."""
    out = [Calibrator("none")]
    if len(np.unique(y_cal)) == 2:
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw_cal.reshape(-1, 1), y_cal)
        out.append(Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0])))
        if len(y_cal) < ISOTONIC_MIN_ROWS:
            return out
        iso = IsotonicRegression(out_of_bounds="clip", y_min=_PROB_FLOOR, y_max=1 - _PROB_FLOOR).fit(raw_cal, y_cal)
        out.append(
            Calibrator("isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))
        )
    return out


def choose_calibrator(cands: list[Calibrator], raw_val: np.ndarray, y_val: np.ndarray) -> tuple[Calibrator, np.ndarray]:
    """The calibrator with the lowest log loss on the validation rows."""
    best: tuple[float, Calibrator, np.ndarray] | None = None
    for cal in cands:
        prob = cal.many(raw_val)
        loss = _log_loss(y_val, prob)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, cal, prob)
    assert best is not None
    return best[1], best[2]


def _input_layout(model: HistGradientBoostingClassifier, n_features: int) -> tuple[list[int], dict[int, list[int]]]:
    """How the model's internal columns map to ours, and its category codes to ours.

    With categorical features, scikit-learn reorders columns (categorical
    first) and re-codes categories by rank among those seen in training.
    """
    pre = getattr(model, "_preprocessor", None)
    if pre is None:
        return list(range(n_features)), {}
    order: list[int] = []
    codes: dict[int, list[int]] = {}
    for name, transformer, mask in pre.transformers_:
        if name == "remainder":
            continue
        cols = np.flatnonzero(mask).tolist()
        if name == "encoder":
            for col, cats in zip(cols, transformer.categories_, strict=True):
                codes[len(order) + cols.index(col)] = [int(c) for c in cats if c == c]
        order += cols
    return order, codes


def export_trees(model: HistGradientBoostingClassifier, n_features: int) -> TreeArrays:
    """Flatten a fitted HistGradientBoostingClassifier into TreeArrays over our column layout."""
    order, codes = _input_layout(model, n_features)
    feature: list[int] = []
    threshold: list[float] = []
    missing_left: list[bool] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    bitset: list[int] = []
    bitsets: list[int] = []
    roots: list[int] = []
    shrink = float(model.learning_rate)
    for [predictor] in model._predictors:
        nodes = predictor.nodes
        base = len(feature)
        roots.append(base)
        for node in nodes:
            leaf = bool(node["is_leaf"])
            internal = int(node["feature_idx"])
            feature.append(-1 if leaf else order[internal])
            threshold.append(float(node["num_threshold"]))
            missing_left.append(bool(node["missing_go_to_left"]))
            left.append(base + int(node["left"]) if not leaf else -1)
            right.append(base + int(node["right"]) if not leaf else -1)
            # Leaf values come shrunk by the learning rate, inner values do not.
            value.append(float(node["value"]) if leaf else float(node["value"]) * shrink)
            if not leaf and node["is_categorical"]:
                words = predictor.raw_left_cat_bitsets[int(node["bitset_idx"])]
                bits = sum(int(w) << (32 * i) for i, w in enumerate(words))
                # Re-express the set in our category codes.
                ours = sum(1 << code for rank, code in enumerate(codes[internal]) if (bits >> rank) & 1)
                bitset.append(len(bitsets))
                bitsets.append(ours)
            else:
                bitset.append(-1)
    return TreeArrays(
        baseline=float(np.ravel(model._baseline_prediction)[0]),
        roots=tuple(roots),
        feature=tuple(feature),
        threshold=tuple(threshold),
        missing_left=tuple(missing_left),
        left=tuple(left),
        right=tuple(right),
        value=tuple(value),
        bitset=tuple(bitset),
        bitsets=tuple(bitsets),
    )


def tree_importances(model: HistGradientBoostingClassifier, names: Sequence[str]) -> list[tuple[str, float]]:
    """Share of total split gain per feature."""
    gains = np.zeros(len(names))
    for [predictor] in model._predictors:
        nodes = predictor.nodes[predictor.nodes["is_leaf"] == 0]
        np.add.at(gains, nodes["feature_idx"], np.maximum(nodes["gain"], 0))
    total = gains.sum() or 1.0
    return [(n, float(g / total)) for n, g in zip(names, gains, strict=True)]


# Per-example L2 strengths (mean log loss + l2/2 |w|^2) that the logistic family tries when its
# ``l2`` setting is 0 ("auto"), strong to weak: the seed's 0.1 first, down past scikit-learn's
# default (C = 1, i.e. 1/n per example: 1e-5 for 100,000 rows).
L2_GRID = (0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
# Below this many training rows the calibration rows alone are too few to choose an L2 strength
# (on the bundled tables, 50-100 of them picked strengths 10-30x too strong in some folds):
# the choice is then made by 5-fold cross-validation over the training rows instead (fit and
# calibration rows; never the validation rows). Above it, the calibration rows number 3,000+.
L2_CV_BELOW = 20_000
L2_CV_FOLDS = 5


@dataclass(frozen=True)
class L2Choice:
    """The L2 strength a logistic fit used, and how it was chosen."""

    l2: float
    method: str  # "fixed" | "calibration_rows" | "cv5"
    path: tuple[tuple[float, float], ...]  # (l2, held-out log loss), in the order tried; empty when fixed
    iterations: int  # lbfgs iterations of the final fit

    def path_text(self) -> str:
        """``l2:loss`` pairs, comma-separated (the run's record)."""
        return ",".join(f"{l2:g}:{loss:.5f}" for l2, loss in self.path)


def l2_path_losses(
    X: np.ndarray,
    y: np.ndarray,
    Xh: np.ndarray,
    yh: np.ndarray,
    grid: Sequence[float],
    tolerance: float,
    max_iterations: int,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """Mean log loss on the held-out rows ``(Xh, yh)`` of L2-regularised logistic regression fitted on
    ``(X, y)`` for each per-example strength in ``grid`` (fitted strong to weak, each warm-started from
    the one before). ``check`` is called between fits (it raises to cancel). Raises ValueError for an
    empty grid or a strength <= 0."""
    if not grid or min(grid) <= 0:
        raise ValueError("the L2 grid needs strengths > 0")
    n = len(y)
    model = LogisticRegression(C=1.0 / (grid[0] * n), tol=tolerance, max_iter=max_iterations, warm_start=True)
    out = np.empty(len(grid))
    for i, l2 in enumerate(grid):
        if check is not None:
            check()
        model.set_params(C=1.0 / (l2 * n))  # the seed's L2 is per example; scikit-learn's C per total loss
        model.fit(X, y)
        out[i] = _log_loss(yh, 1.0 / (1.0 + np.exp(-(Xh @ model.coef_[0] + model.intercept_[0]))))
    return out


def choose_l2(
    X: np.ndarray,
    y: np.ndarray,
    Xc: np.ndarray,
    yc: np.ndarray,
    grid: Sequence[float],
    tolerance: float,
    max_iterations: int,
    seed: int = 0,
    check: Callable[[], None] | None = None,
) -> tuple[float, str, tuple[tuple[float, float], ...]]:
    """The strength in ``grid`` with the lowest held-out log loss: on the calibration rows ``(Xc, yc)``
    for a model fitted on ``(X, y)`` or, with fewer than ``L2_CV_BELOW`` rows in both together, pooled
    over ``L2_CV_FOLDS``-fold stratified cross-validation of both together (seeded). Ties go to the
    stronger strength. Returns the strength, the method ("calibration_rows" or "cv5") and the path."""
    if len(y) + len(yc) < L2_CV_BELOW:
        from sklearn.model_selection import StratifiedKFold

        Xa, ya = np.vstack([X, Xc]), np.concatenate([y, yc])
        folds = StratifiedKFold(L2_CV_FOLDS, shuffle=True, random_state=seed % 2**32)
        total = np.zeros(len(grid))
        for train, held in folds.split(Xa, ya):
            total += l2_path_losses(
                Xa[train], ya[train], Xa[held], ya[held], grid, tolerance, max_iterations, check
            ) * len(held)
        losses, method = total / len(ya), f"cv{L2_CV_FOLDS}"
    else:
        losses, method = l2_path_losses(X, y, Xc, yc, grid, tolerance, max_iterations, check), "calibration_rows"
    pick = int(np.argmin(losses))  # the first minimum: the strongest of equals
    return float(grid[pick]), method, tuple((float(l2), float(v)) for l2, v in zip(grid, losses, strict=True))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, tolerance: float, max_iterations: int) -> LogisticRegression:
    """L2-regularised logistic regression on ``(X, y)`` at the per-example strength ``l2`` (> 0)."""
    # The seed's L2 is per example (mean loss + l2/2 |w|^2); scikit-learn's C is per total loss.
    return LogisticRegression(C=1.0 / (l2 * len(y)), tol=tolerance, max_iter=max_iterations).fit(X, y)


# Families from the simplest; a later one must beat the pick so far beyond noise to replace it.
_SIMPLICITY = ("logistic_regression", "gradient_boosting")


def select_candidate(candidates: Sequence[FittedCandidate], labels: np.ndarray, seed: int = 0) -> FittedCandidate:
    """The candidate to keep: the simplest family, unless a more complex one has a lower validation log
    loss beyond noise (gate.compare: the lower bound of its log-loss gain over the pick so far > 0).

    Log loss judges discrimination and calibration together. On a few hundred rows, the trees'
    lower log loss is often noise, and the logistic model then generalises better (the bundled
    tables of bench/quality.py). Raises ValueError for no candidates.
    """
    from .gate import PairedScores, compare

    if not candidates:
        raise ValueError("no candidates")
    ordered = sorted(candidates, key=lambda c: _SIMPLICITY.index(c.family) if c.family in _SIMPLICITY else 99)
    pick = ordered[0]
    for cand in ordered[1:]:
        if len(cand.validation_prob) != len(labels) or len(pick.validation_prob) != len(labels):
            better = cand.metrics.log_loss < pick.metrics.log_loss
        else:
            better = (
                compare(PairedScores(labels, cand.validation_prob, pick.validation_prob), seed=seed).log_loss_low > 0
            )
        if better:
            pick = cand
    return pick


def tree_classifier(settings: ModelSettings, raw: RawEncoder) -> HistGradientBoostingClassifier:
    """The gradient-boosted classifier Trainer fits (max_iter 0: it grows in chunks up to the
    settings' max_iterations, stopping early on the calibration rows) for ``raw``'s layout."""
    p = settings.training.gradient_boosting
    native = raw.categorical_mask & np.array([len(c) <= _MAX_TREE_CATEGORIES for c in raw.categories])
    return HistGradientBoostingClassifier(
        learning_rate=p.learning_rate,
        max_iter=0,
        max_leaf_nodes=p.max_leaf_nodes,
        l2_regularization=p.l2,
        categorical_features=native if native.any() else None,
        early_stopping=True,
        n_iter_no_change=TREE_PATIENCE,
        warm_start=True,
        random_state=settings.training.random_seed,
    )


class Trainer:
    """Fits the enabled families on one data set and keeps the best on validation."""

    def __init__(
        self,
        schema: Schema,
        settings: ModelSettings,
        progress: ProgressFn | None = None,
        cancelled: Callable[[], bool] | None = None,
        threads: int = 1,
    ) -> None:
        self.threads = threads
        self.schema = schema
        self.settings = settings
        self._progress = progress or (lambda **_: None)
        self._cancelled = cancelled or (lambda: False)

    def _check(self) -> None:
        if self._cancelled():
            raise Cancelled("cancelled")

    def run(self, data: TrainingData, families: Sequence[str], split: str) -> TrainingResult:
        # OpenMP threads that outnumber free cores spin against each other (and
        # against the RPC threads): a fit that takes 2 s can take a minute.
        with threadpool_limits(limits=self.threads):
            return self._run(data, families, split)

    def _run(self, data: TrainingData, families: Sequence[str], split: str) -> TrainingResult:
        t = self.settings.training
        check_trainable(data, t.min_samples)
        valid_mask = split_rows(data, self.settings, split)
        train, valid = data.take(~valid_mask), data.take(valid_mask)
        # Calibrators (and the trees' early stopping) learn on a slice of the
        # training rows, so the validation rows judge everything unseen.
        cal_mask = splitting.stratified(train.ids, train.labels, 0.15, t.random_seed + 1)
        fit, cal = train.take(~cal_mask), train.take(cal_mask)
        if min(len(fit), len(cal), len(valid)) == 0 or len(np.unique(fit.labels)) < 2:
            raise NotEnoughData("the split left a part without rows of both labels")
        self._progress(phase="loading", message=f"{len(fit)} fit, {len(cal)} calibration, {len(valid)} validation rows")
        candidates = []
        for family in families:
            self._check()
            if family == "logistic_regression":
                candidates.append(self._fit_logistic(fit, cal, valid, train))
            elif family == "gradient_boosting":
                candidates.append(self._fit_trees(fit, cal, valid, train))
        best = select_candidate(candidates, valid.labels, t.random_seed)
        best.selected = True
        return TrainingResult(candidates, best, valid, len(train), train.rows)

    def _finish(
        self,
        family: str,
        scorer: LinearScorer | TreeScorer,
        raw_cal: np.ndarray,
        cal: TrainingData,
        raw_val: np.ndarray,
        valid: TrainingData,
        *,
        stop_reason: str,
        iterations: int,
        final_loss: float,
        fit_seconds: float,
        feature_weights: list[tuple[str, float]],
        parameters: dict[str, str],
    ) -> FittedCandidate:
        self._progress(phase="calibrating", family=family)
        calibrator, prob = choose_calibrator(fit_calibrators(raw_cal, cal.labels), raw_val, valid.labels)
        model = ScoringModel(
            self.schema,
            family,
            self.settings.decision_threshold,
            calibrator,
            linear=scorer if isinstance(scorer, LinearScorer) else None,
            trees=scorer if isinstance(scorer, TreeScorer) else None,
        )
        self._progress(phase="evaluating", family=family)
        m = mt.compute(valid.labels, prob, self.settings.decision_threshold)
        self._progress(
            phase="evaluating", family=family, metrics=m, message=f"{family}: calibration {calibrator.method}"
        )
        return FittedCandidate(
            family=family,
            model=model,
            calibration=calibrator.method,
            metrics=m,
            stop_reason=stop_reason,
            iterations=iterations,
            final_loss=final_loss,
            fit_seconds=fit_seconds,
            feature_weights=feature_weights,
            parameters=parameters,
            validation_prob=prob,
        )

    def _fit_logistic(
        self, fit: TrainingData, cal: TrainingData, valid: TrainingData, train: TrainingData
    ) -> FittedCandidate:
        """The logistic family: the L2 strength chosen (or fixed), fitted on the fit rows, its calibrator
        on the calibration rows; refitted on ``train`` (fit + calibration rows) below REFIT_BELOW rows."""
        p = self.settings.training.logistic_regression
        start = time.perf_counter()
        self._progress(phase="fitting", family="logistic_regression", message="encoding")
        encoder = fit_linear(self.schema, fit.rows)
        X = encoder.transform(fit.rows)
        Xc = encoder.transform(cal.rows)
        method, l2 = "fixed", p.l2
        path: tuple[tuple[float, float], ...] = ()
        if l2 <= 0:  # "auto"
            l2, method, path = choose_l2(
                X,
                fit.labels,
                Xc,
                cal.labels,
                L2_GRID,
                p.tolerance,
                p.max_iterations,
                self.settings.training.random_seed,
                check=self._check,
            )
        model = fit_logistic(X, fit.labels, l2, p.tolerance, p.max_iterations)
        choice = L2Choice(l2, method, path, int(np.max(model.n_iter_)))
        raw = RawEncoder.from_schema(self.schema)
        scorer = LinearScorer(encoder, model.coef_[0], float(model.intercept_[0]), X.mean(axis=0), raw)
        raw_cal = scorer.score(raw.rows(cal.rows))
        refit = len(train) < REFIT_BELOW
        if refit:
            self._check()
            encoder = fit_linear(self.schema, train.rows)
            X = encoder.transform(train.rows)
            model = fit_logistic(X, train.labels, l2, p.tolerance, p.max_iterations)
            scorer = LinearScorer(encoder, model.coef_[0], float(model.intercept_[0]), X.mean(axis=0), raw)
        loss = _log_loss(train.labels if refit else fit.labels, model.predict_proba(X)[:, 1])
        self._progress(
            phase="fitting",
            family="logistic_regression",
            iteration=choice.iterations,
            loss=loss,
            message=f"l2 {choice.l2:g} ({choice.method})",
        )
        raw_val = scorer.score(raw.rows(valid.rows))
        return self._finish(
            "logistic_regression",
            scorer,
            raw_cal,
            cal,
            raw_val,
            valid,
            stop_reason="converged" if choice.iterations < p.max_iterations else "max_iterations",
            iterations=choice.iterations,
            final_loss=loss,
            fit_seconds=time.perf_counter() - start,
            feature_weights=scorer.feature_weights(),
            parameters={
                "learning_rate": str(p.learning_rate),
                "l2": repr(choice.l2),
                "l2_search": choice.method,
                "l2_path": choice.path_text(),
                "tolerance": str(p.tolerance),
                "max_iterations": str(p.max_iterations),
                "solver": "lbfgs",
                "fitted_on": f"{len(train)} rows (fit + calibration)" if refit else f"{len(fit)} rows (fit)",
            },
        )

    def _fit_trees(
        self, fit: TrainingData, cal: TrainingData, valid: TrainingData, train: TrainingData
    ) -> FittedCandidate:
        """The trees: fitted on the fit rows until the calibration rows' loss stops falling, the calibrator
        on the calibration rows; below REFIT_BELOW rows refitted on ``train`` (fit + calibration rows) for
        the iterations that early stopping chose, scaled by the rows gained."""
        p = self.settings.training.gradient_boosting
        start = time.perf_counter()
        raw = RawEncoder.from_schema(self.schema)
        X, Xc = raw.transform(fit.rows), raw.transform(cal.rows)
        model = tree_classifier(self.settings, raw)
        # Fit in chunks so progress streams and a cancel takes effect between chunks.
        step = 50
        target = 0
        while target < p.max_iterations:
            self._check()
            target = min(p.max_iterations, target + step)
            model.set_params(max_iter=target)
            model.fit(X, fit.labels, X_val=Xc, y_val=cal.labels)
            loss = float(-model.validation_score_[-1])
            self._progress(phase="fitting", family="gradient_boosting", iteration=int(model.n_iter_), loss=loss)
            if model.n_iter_ < target:
                break
        iterations = int(model.n_iter_)
        best = int(np.argmax(model.validation_score_))  # validation_score_[0] is before the first iteration
        final_loss = float(-model.validation_score_[-1])
        raw_cal = TreeScorer(export_trees(model, len(raw.names)), raw).score(Xc)
        # Early stopping decided unless the last TREE_PATIENCE iterations were still improving at the cap.
        stopped = iterations < p.max_iterations or best < iterations - TREE_PATIENCE
        refit = len(train) < REFIT_BELOW
        if refit:
            self._check()
            iterations = max(1, round(max(best, 1) * len(train) / len(fit)))
            self._progress(
                phase="fitting",
                family="gradient_boosting",
                message=f"refitting on {len(train)} rows, {iterations} iterations",
            )
            model = clone(model).set_params(max_iter=iterations, early_stopping=False, warm_start=False)
            model.fit(np.vstack([X, Xc]), np.concatenate([fit.labels, cal.labels]))
        scorer = TreeScorer(export_trees(model, len(raw.names)), raw)
        raw_val = scorer.score(raw.rows(valid.rows))
        return self._finish(
            "gradient_boosting",
            scorer,
            raw_cal,
            cal,
            raw_val,
            valid,
            stop_reason="early_stopping" if stopped else "max_iterations",
            iterations=iterations,
            final_loss=final_loss,
            fit_seconds=time.perf_counter() - start,
            feature_weights=tree_importances(model, raw.names),
            parameters={
                "learning_rate": str(p.learning_rate),
                "max_iterations": str(p.max_iterations),
                "max_leaf_nodes": str(p.max_leaf_nodes),
                "l2": str(p.l2),
                "best_iteration": str(best),
                "fitted_on": f"{len(train)} rows (fit + calibration)" if refit else f"{len(fit)} rows (fit)",
            },
        )


def incremental_logistic(
    base: LinearScorer,
    schema: Schema,
    settings: ModelSettings,
    new: TrainingData,
    replay: TrainingData,
    cal: TrainingData,
    valid: TrainingData,
    epochs: int = 5,
    l2: float = 0.0,
) -> tuple[ScoringModel, mt.Metrics, int, float]:
    """Warm-start SGD from ``base`` on new labels plus a replay sample; same encoder.

    ``l2`` is the per-example L2 strength the base model was fitted with (its run's choice); 0 takes
    the model's fixed setting, or under "auto" the middle of L2_GRID. SGD minimises the same
    objective as the full fit (mean log loss + l2/2 |w|^2), so the update moves the base model
    towards that objective's optimum on the new and replayed rows.
    Returns the model, its validation metrics, the epochs run and the final loss.
    """
    p = settings.training.logistic_regression
    strength = incremental_l2(settings, l2)
    encoder = base.encoder
    rows = new.rows + replay.rows
    y = np.concatenate([new.labels, replay.labels])
    X = encoder.transform(rows)
    sgd = SGDClassifier(
        loss="log_loss",
        alpha=strength,
        learning_rate="constant",
        eta0=p.learning_rate,
        random_state=settings.training.random_seed,
    )
    sgd.partial_fit(X[:1], y[:1], classes=np.array([0, 1]))
    sgd.coef_ = base.weights.reshape(1, -1).copy()
    sgd.intercept_ = np.array([base.intercept])
    rng = np.random.default_rng(settings.training.random_seed)
    for _ in range(epochs):
        order = rng.permutation(len(rows))
        sgd.partial_fit(X[order], y[order])
    scorer = LinearScorer(encoder, sgd.coef_[0], float(sgd.intercept_[0]), base.column_means, base.raw)
    calibrator, prob = choose_calibrator(
        fit_calibrators(scorer.score(base.raw.rows(cal.rows)), cal.labels),
        scorer.score(base.raw.rows(valid.rows)),
        valid.labels,
    )
    model = ScoringModel(schema, "logistic_regression", settings.decision_threshold, calibrator, linear=scorer)
    loss = _log_loss(y, 1.0 / (1.0 + np.exp(-(X @ sgd.coef_[0] + sgd.intercept_[0]))))
    return model, mt.compute(valid.labels, prob, settings.decision_threshold), epochs, loss


def incremental_l2(settings: ModelSettings, base_l2: float = 0.0) -> float:
    """The L2 strength an incremental update uses: the base model's (> 0), else the fixed setting, else
    (a base of unknown strength under "auto") the middle of L2_GRID."""
    if base_l2 > 0 and math.isfinite(base_l2):
        return base_l2
    fixed = settings.training.logistic_regression.l2
    return fixed if fixed > 0 else L2_GRID[len(L2_GRID) // 2]


def recalibrate(model: ScoringModel, cal: TrainingData, valid: TrainingData) -> ScoringModel:
    """The same scorer with its calibrator refitted on recent rows."""
    scorer, raw = model.scorer, model.raw
    raw_cal, raw_val = scorer.score(raw.rows(cal.rows)), scorer.score(raw.rows(valid.rows))
    calibrator, _ = choose_calibrator(fit_calibrators(raw_cal, cal.labels), raw_val, valid.labels)
    return ScoringModel(model.schema, model.family, model.threshold, calibrator, linear=model.linear, trees=model.trees)
