"""Model quality on real tables, trained through the server's own API: `python bench/quality.py --json`.

For every binary-outcome table that an installed package ships (scikit-learn's
breast-cancer table; statsmodels' anes96 vote, fair affairs > 0 and modechoice
choice), with nothing fetched from the network:

1. cut the table into ``--folds`` fixed, stratified folds (seeded); each fold in
   turn is the held-out test split and the others are the training rows;
2. start a real server process (bench/run.py's ServerProcess), create a model whose
   schema is derived from the table's columns, import the training rows as
   outcomes, ``StartTraining``, and read the champion;
3. score the held-out rows through ``PredictBatch`` with that champion, and with a
   second model restricted to the logistic family (``families=[logistic_regression]``);
4. fit scikit-learn's ``LogisticRegression()`` (after a ``StandardScaler``: the
   same standardisation our logistic family applies) and
   ``HistGradientBoostingClassifier()`` with their defaults on the same training
   rows, and score the same held-out rows.

Accuracy, ROC AUC and log loss are averaged over the folds. ``quality_gap_pp`` is
the better scikit-learn default's accuracy minus our champion's, in points
(target <= 0.5); ``logistic_gap_pp`` is ``LogisticRegression()``'s minus our
logistic family's (target <= 1).

The models' gates are opened (accuracy >= 0, F1 >= 0, calibration error <= 1):
this measures the models, not the gate, and a table whose best model scores
under the default 0.75 accuracy must still get a champion to score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# Tables smaller than this are listed as skipped: a fold would hold a handful of rows.
MIN_ROWS = 200


@dataclass
class Table:
    """A binary-outcome table: feature columns (named as the table names them), 0/1 labels, and where it came from."""

    name: str
    source: str
    columns: list[str]  # feature names, in order: the table's own column names, as they are
    X: np.ndarray  # float64, NaN for missing
    y: np.ndarray  # 0/1
    label: str


def checked_names(columns: list[str]) -> list[str]:
    """The table's own column names, as the server takes them (schema.NAME_RE: capitals, spaces and dots
    as CSV headers and pandas columns have them). Raises ValueError for a name the server would refuse."""
    from sahayak_rpc.schema import NAME_RE, NAME_RULE

    bad = [c for c in columns if not NAME_RE.fullmatch(c)]
    if bad:
        raise ValueError(f"column names the server refuses ({NAME_RULE}): {bad}")
    return columns


def _table(name: str, source: str, frame: Any, y: Any, label: str, drop: tuple[str, ...] = ()) -> Table:
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    columns = checked_names([str(c) for c in frame.columns])
    X = frame.to_numpy(dtype=np.float64)
    return Table(name, source, columns, X, np.asarray(y, dtype=np.int64), label)


def load_tables() -> tuple[list[Table], list[dict[str, str]]]:
    """The bundled binary-outcome tables, and those skipped (with why)."""
    from sklearn.datasets import load_breast_cancer

    tables: list[Table] = []
    skipped: list[dict[str, str]] = []
    bc = load_breast_cancer(as_frame=True)
    # scikit-learn's target is 1 = benign; the label is "malignant" so that positives are the rarer class.
    tables.append(
        _table("breast_cancer", "sklearn.datasets.load_breast_cancer", bc.data, 1 - bc.target.to_numpy(), "malignant")
    )
    try:
        from statsmodels import datasets as smd
    except ImportError:
        skipped.append({"name": "statsmodels", "reason": "statsmodels is not installed (pip install statsmodels)"})
        return tables, skipped
    anes = smd.anes96.load_pandas().data
    tables.append(
        _table(
            "anes96",
            "statsmodels.datasets.anes96 (vote: 1 = Dole)",
            anes.drop(columns=["vote"]),
            anes["vote"].to_numpy(),
            "vote",
        )
    )
    fair = smd.fair.load_pandas().data
    # The statsmodels documentation's own binary outcome for this table: any affair.
    tables.append(
        _table(
            "fair",
            "statsmodels.datasets.fair (affairs > 0)",
            fair.drop(columns=["affairs"]),
            (fair["affairs"] > 0).to_numpy(),
            "affair",
        )
    )
    mode = smd.modechoice.load_pandas().data
    tables.append(
        _table(
            "modechoice",
            "statsmodels.datasets.modechoice (choice: the mode was chosen)",
            mode.drop(columns=["choice"]),
            mode["choice"].to_numpy(),
            "chosen",
            drop=("individual",),
        )
    )
    spector = smd.spector.load_pandas().data
    skipped.append({"name": "spector", "reason": f"{len(spector)} rows: too few to hold out a test split"})
    return [t for t in tables if len(t.y) >= MIN_ROWS], skipped


def folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` stratified, fixed test folds (index arrays) of ``y``."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(y)), y)]


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy (at 0.5), ROC AUC and log loss of probabilities ``p``."""
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return {
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "roc_auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def sklearn_defaults(X: np.ndarray, y: np.ndarray, Xt: np.ndarray) -> dict[str, np.ndarray]:
    """Held-out probabilities of scikit-learn's defaults fitted on (X, y)."""
    import warnings

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the defaults are part of the defaults
        lr = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
        out["sklearn_logistic"] = lr.predict_proba(Xt)[:, 1]
        hgb = HistGradientBoostingClassifier().fit(X, y)
        out["sklearn_hgb"] = hgb.predict_proba(Xt)[:, 1]
    return out


def _rows(table: Table, idx: np.ndarray) -> list[dict[str, float]]:
    """Feature rows for the server: a missing (NaN) value is left out of its row."""
    return [{c: float(v) for c, v in zip(table.columns, table.X[i], strict=True) if v == v} for i in idx]


def _settings() -> Any:
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2

    s = registry_pb2.ModelSettings()
    s.training.schedule_enabled = False  # trains when asked, never mid-measurement
    s.gate.min_accuracy, s.gate.min_f1, s.gate.max_calibration_error = 0.0, 0.0, 1.0
    return s


def _train_and_score(
    client: Any, name: str, table: Table, train: np.ndarray, test: np.ndarray, families: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Create ``name``, import the training rows, train, and score the test rows with its champion."""
    from sahayak_rpc.client import OutcomeInput
    from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec

    features = [FeatureSpec(c, FeatureType.NUMERIC) for c in table.columns]
    client.create_model(name, features, LabelSpec(table.label, "yes", "no"), settings=_settings())
    rows = _rows(table, train)
    report = client.import_outcomes(
        name,
        [OutcomeInput(r, bool(table.y[i]), outcome_id=f"{table.name}-{i}") for r, i in zip(rows, train, strict=True)],
    )
    if report.accepted != len(train):
        raise RuntimeError(f"{name}: the server accepted {report.accepted} of {len(train)} outcomes")
    run = client.train(name, families=families, timeout=1800)
    champion = client.get_model(name).champion_version
    if not champion:
        raise RuntimeError(f"{name}: no champion after run {run.run_id}: {run.end_reason}")
    probs = np.asarray(client.predict_batch(name, _rows(table, test), version=champion).probabilities)
    selected = [c for c in run.candidates if c.selected]
    info = {
        "run_seconds": run.duration.ToTimedelta().total_seconds(),
        "family": "gradient_boosting" if selected and selected[0].family == 2 else "logistic_regression",
        "l2": run.parameters.get("logistic_regression.l2", ""),
        "l2_search": run.parameters.get("logistic_regression.l2_search", ""),
        "tree_iterations": run.parameters.get("gradient_boosting.iterations", ""),
        "tree_stop": next((c.stop_reason for c in run.candidates if c.family == 2), 0),
    }
    return probs, info


def run_quality(
    k: int = 5, seed: int = 0, only: tuple[str, ...] = (), log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Train every table's folds through a fresh server process; returns the figures per table."""
    from bench.run import ServerProcess
    from sahayak_rpc._proto.sahayak.v1 import training_pb2
    from sahayak_rpc.client import Client

    tables, skipped = load_tables()
    out: dict[str, Any] = {"tables": {}, "skipped": skipped, "folds": k}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "quality.db")
        try:
            with Client(server.target, timeout=600) as client:
                for table in tables:
                    if only and table.name not in only:
                        continue
                    started = time.perf_counter()
                    per: dict[str, list[dict[str, float]]] = {}
                    infos: list[dict[str, Any]] = []
                    for f, test in enumerate(folds(table.y, k, seed)):
                        train = np.setdiff1d(np.arange(len(table.y)), test)
                        y = table.y[test]
                        ours, info = _train_and_score(client, f"q-{table.name}-{f}", table, train, test, [])
                        logistic, _ = _train_and_score(
                            client, f"q-{table.name}-{f}-lr", table, train, test, ["logistic_regression"]
                        )
                        infos.append(info)
                        preds = {
                            "ours": ours,
                            "ours_logistic": logistic,
                            **sklearn_defaults(table.X[train], table.y[train], table.X[test]),
                        }
                        for key, p in preds.items():
                            per.setdefault(key, []).append(scores(y, p))
                    result: dict[str, Any] = {
                        key: {m: round(statistics.fmean(s[m] for s in folds_), 4) for m in folds_[0]}
                        for key, folds_ in per.items()
                    }
                    acc = {key: v["accuracy"] for key, v in result.items()}
                    result.update(
                        {
                            "source": table.source,
                            "rows": len(table.y),
                            "features": len(table.columns),
                            "positives": int(table.y.sum()),
                            "quality_gap_pp": round(
                                (max(acc["sklearn_logistic"], acc["sklearn_hgb"]) - acc["ours"]) * 100, 2
                            ),
                            "logistic_gap_pp": round((acc["sklearn_logistic"] - acc["ours_logistic"]) * 100, 2),
                            "champion_families": [i["family"] for i in infos],
                            "l2": [i["l2"] for i in infos],
                            "l2_search": sorted({i["l2_search"] for i in infos}),
                            "tree_iterations": [i["tree_iterations"] for i in infos],
                            "tree_cap_bound": sum(
                                i["tree_stop"] == training_pb2.STOP_REASON_MAX_ITERATIONS for i in infos
                            ),
                            "run_seconds": round(statistics.fmean(i["run_seconds"] for i in infos), 2),
                            "seconds": round(time.perf_counter() - started, 1),
                        }
                    )
                    out["tables"][table.name] = result
                    log(f"{table.name}: gap {result['quality_gap_pp']} pp, logistic gap {result['logistic_gap_pp']} pp")
        finally:
            server.stop()
    gaps = [t["quality_gap_pp"] for t in out["tables"].values()]
    lgaps = [t["logistic_gap_pp"] for t in out["tables"].values()]
    out["quality_gap_pp_max"] = max(gaps) if gaps else None
    out["logistic_gap_pp_max"] = max(lgaps) if lgaps else None
    out["targets_met"] = bool(gaps) and max(gaps) <= 0.5 and max(lgaps) <= 1.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--folds", type=int, default=5, help="held-out folds per table (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    parser.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    opts = parser.parse_args()
    figures = run_quality(
        opts.folds, opts.seed, tuple(opts.table), log=(lambda m: print(m, file=sys.stderr)) if opts.json else print
    )
    if opts.json:
        print(json.dumps(figures, indent=2))
        return 0
    cols = ("accuracy", "roc_auc", "log_loss")
    for name, t in figures["tables"].items():
        print(f"\n{name} ({t['source']}; {t['rows']} rows, {t['features']} features, {figures['folds']} folds)")
        print(f"  {'model':34} " + " ".join(f"{c:>9}" for c in cols))
        for key, label in (
            ("ours", "ours: champion"),
            ("ours_logistic", "ours: logistic family alone"),
            ("sklearn_logistic", "StandardScaler+LogisticRegression()"),
            ("sklearn_hgb", "HistGradientBoostingClassifier()"),
        ):
            print(f"  {label:34} " + " ".join(f"{t[key][c]:9.4f}" for c in cols))
        print(
            f"  quality_gap_pp {t['quality_gap_pp']}  logistic_gap_pp {t['logistic_gap_pp']}  champions "
            f"{t['champion_families']}  l2 {t['l2']} ({','.join(t['l2_search'])})  tree iterations "
            f"{t['tree_iterations']} (cap bound {t['tree_cap_bound']}x)"
        )
    for s in figures["skipped"]:
        print(f"\nskipped {s['name']}: {s['reason']}")
    print(
        f"\nquality_gap_pp max {figures['quality_gap_pp_max']} (target <= 0.5), logistic_gap_pp max "
        f"{figures['logistic_gap_pp_max']} (target <= 1): {'met' if figures['targets_met'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
