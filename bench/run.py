"""Benchmarks against a real server process: `python bench/run.py --json`.

Every figure is a median over repeated runs. Latencies are p50 of
sequential unary calls over loopback; the floor (`echo_p50_us`, a gRPC
health check on the same server) is measured in the same run, interleaved
with the other latencies, so ratios against it cancel machine noise.
bench/scaleout.py adds the scale-out figures (PostgreSQL with fsync on, replicas, ``serve --workers``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from sahayak_rpc.client import Client, OutcomeInput  # noqa: E402
from sahayak_rpc.demo_data import DEMO_MODEL_NAME, generate_outcomes  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(
        self, db: Path, env: dict[str, str] | None = None, tls_ca: bytes | None = None, tree: Path = ROOT
    ) -> None:
        """A server from the source ``tree`` (default this one; bench/ab.py passes other worktrees)."""
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "sahayak_rpc.cli",
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(db),
            "--log-level",
            "warning",
        ]
        # ``python -m`` puts the working directory first on sys.path: the tree's package is the one run.
        self.proc = subprocess.Popen(cmd, cwd=tree, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        channel = (
            grpc.secure_channel(self.target, grpc.ssl_channel_credentials(tls_ca))
            if tls_ca
            else grpc.insecure_channel(self.target)
        )
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)
        channel.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wait_log_drained(client: Client, timeout: float = 120) -> None:
    """Until the server's prediction-log queue is empty, so one block's logging does not bill the next."""
    deadline = time.monotonic() + timeout
    while client.server_status().queues.prediction_log and time.monotonic() < deadline:
        time.sleep(0.1)


def p50_us(call: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def make_model(client: Client, name: str) -> None:
    """A demo-schema model that trains only when asked (no scheduler runs mid-measurement)."""
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2
    from sahayak_rpc.demo_data import DEMO_SCHEMA

    settings = registry_pb2.ModelSettings()
    settings.training.schedule_enabled = False
    client.create_model(name, DEMO_SCHEMA.features, DEMO_SCHEMA.label, settings=settings)


def recommend_request(model: str, columnar: bool = True) -> Any:
    """The Recommend every latency figure sends: one artisan (the demo row of seed 7, its scheme features
    left out) and 100 candidate schemes, top 10, as columns or as rows."""
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2
    from sahayak_rpc.client import feature_columns, fill_features
    from sahayak_rpc.demo_data import SCHEMES, generate_outcomes

    row = generate_outcomes(1, seed=7)[0].features
    artisan = {k: v for k, v in row.items() if not k.startswith("scheme_")}
    candidates = [(f"{s.scheme_id}-{i}", s.features, s.benefit_inr) for i in range(5) for s in SCHEMES][:100]
    request = inference_pb2.RecommendRequest(model=model, top_k=10)
    fill_features(request.subject_features, artisan)
    if columnar:
        cc = request.candidate_columns
        cc.candidate_ids.extend([c[0] for c in candidates])
        cc.benefits.extend([c[2] for c in candidates])
        feature_columns([c[1] for c in candidates], cc.features)
        return request
    for cid, features, benefit in candidates:
        fill_features(request.candidates.add(candidate_id=cid, benefit=benefit).features, features)
    return request


def bench_latencies(client: Client, repeats: int, calls: int) -> dict[str, float]:
    health = client.health_stub
    check = health_pb2.HealthCheckRequest()
    row = generate_outcomes(1, seed=99)[0].features
    figures: dict[str, list[float]] = {"echo_p50_us": [], "record_outcome_p50_us": []}
    for _ in range(50):  # warm up channels, caches and the allocator
        health.Check(check)
        client.record_outcome(DEMO_MODEL_NAME, row, True)
    for _ in range(repeats):
        figures["echo_p50_us"].append(p50_us(lambda: health.Check(check), calls))
        figures["record_outcome_p50_us"].append(
            p50_us(lambda: client.record_outcome(DEMO_MODEL_NAME, row, True), calls)
        )
    out = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    out["record_outcome_vs_echo"] = round(
        statistics.median(r / e for r, e in zip(figures["record_outcome_p50_us"], figures["echo_p50_us"], strict=True)),
        3,
    )
    return out


def bench_import(client: Client, repeats: int, rows: int, rowwise: bool = True) -> dict[str, float]:
    """Columnar ImportOutcomes of ``rows`` generated outcomes (and, with ``rowwise``, once row by row)."""
    make_model(client, "bench-import")
    examples = generate_outcomes(rows, seed=1)
    rates: dict[str, list[float]] = {"import_rows_per_s": [], "import_rowwise_rows_per_s": []}
    for r in range(repeats):
        pairs = [("import_rows_per_s", True), ("import_rowwise_rows_per_s", False)]
        for key, columnar in pairs if r == 0 and rowwise else pairs[:1]:
            inputs = [
                OutcomeInput(
                    e.features,
                    e.label,
                    outcome_id=f"{key}-{r}-{e.outcome_id}",
                    entities=e.entities,
                    occurred_at=e.occurred_at,
                )
                for e in examples
            ]
            start = time.perf_counter()
            report = client.import_outcomes("bench-import", inputs, columnar=columnar)
            elapsed = time.perf_counter() - start
            if report.accepted != rows:
                raise RuntimeError(f"import accepted {report.accepted} of {rows}")
            rates[key].append(rows / elapsed)
    return {k: round(statistics.median(v)) for k, v in rates.items() if v}


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, n: int) -> dict[str, list[float]]:
    """p50 of each call, measured in alternating blocks so noise hits all alike."""
    out: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        for _ in range(50):
            fn()
    for _ in range(repeats):
        for key, fn in calls.items():
            out[key].append(p50_us(fn, n))
    return out


def ratio(a: list[float], b: list[float]) -> float:
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)


def batch_rate(
    client: Client, model: str, batch_rows: list[dict[str, Any]], repeats: int, key: str
) -> dict[str, object]:
    """1,000-row columnar PredictBatch calls to ``model``, as ``predict_batch_rows_per_s`` measures them."""
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2
    from sahayak_rpc.client import feature_columns

    request = inference_pb2.PredictBatchRequest(model=model)
    feature_columns(batch_rows, request.columns)
    for _ in range(5):
        client.inference.PredictBatch(request)
    rates = []
    for _ in range(repeats):
        wait_log_drained(client)
        start = time.perf_counter()
        calls = 0
        while calls < 200 and (calls < 20 or time.perf_counter() - start < 2.0):  # a tree batch is slower
            client.inference.PredictBatch(request)
            calls += 1
        rates.append(calls * len(batch_rows) / (time.perf_counter() - start))
    return {key: round(statistics.median(rates))}


def tree_model(client: Client, figures: dict[str, object]) -> str:
    """A model with a gradient-boosted champion: the demo model when trees won its run, else one
    trained on trees only."""
    if figures.get("train_family") == "gradient_boosting":
        return DEMO_MODEL_NAME
    name = "bench-trees"
    make_model(client, name)
    client.import_outcomes(
        name, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in generate_outcomes(20_000, seed=12)]
    )
    client.train(name, families=["gradient_boosting"], timeout=1800)
    return name


def bench_trees_inproc(repeats: int, calls: int) -> dict[str, object]:
    """Our batch scoring of 1,000 rows (ScoringModel.score: the walk and the calibrator, as a
    checked batch is scored) against scikit-learn's predict_proba on the same fitted model and rows,
    in alternating blocks: the model Trainer fits (training.tree_classifier), grown
    to the settings' max_iterations (500 trees) without early stopping, over 20,000 demo outcomes.
    predict_proba runs as a user would call it (its OpenMP threads on every core) and, for the
    ``_1thread`` figure, on one thread, as our walk runs."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from sahayak_rpc.demo_data import DEMO_SCHEMA
    from sahayak_rpc.encoding import RawEncoder
    from sahayak_rpc.scoring import Calibrator, ScoringModel, TreeScorer
    from sahayak_rpc.settings import ModelSettings
    from sahayak_rpc.training import export_trees, tree_classifier

    raw = RawEncoder.from_schema(DEMO_SCHEMA)
    examples = generate_outcomes(20_000, seed=13)
    settings = ModelSettings()
    hgb = tree_classifier(settings, raw).set_params(
        max_iter=settings.training.gradient_boosting.max_iterations, early_stopping=False, warm_start=False
    )
    hgb.fit(raw.transform([e.features for e in examples]), np.array([e.label for e in examples], dtype=int))
    model = ScoringModel(
        DEMO_SCHEMA,
        "gradient_boosting",
        0.5,
        Calibrator("none"),
        trees=TreeScorer(export_trees(hgb, len(raw.names)), raw),
    )
    X = raw.transform([e.features for e in generate_outcomes(1000, seed=8)])
    if not np.allclose(model.score(X), hgb.predict_proba(X)[:, 1], rtol=0, atol=1e-12):
        raise RuntimeError("our scores differ from predict_proba's")

    def one_thread() -> object:
        with threadpool_limits(limits=1):
            return hgb.predict_proba(X)

    calls_of = {"ours": lambda: model.score(X), "sklearn": lambda: hgb.predict_proba(X), "sklearn_1thread": one_thread}
    lat: dict[str, list[float]] = {k: [] for k in calls_of}
    for fn in calls_of.values():
        for _ in range(3):
            fn()
    for _ in range(max(repeats, 5)):
        # Alternating blocks of a median call each, a block at least 10 calls and ~0.3 s (predict_proba
        # on a busy machine can take a second a call: its threads wait for each other).
        for key, fn in calls_of.items():
            samples: list[float] = []
            begin = time.perf_counter()
            while len(samples) < 10 or (len(samples) < calls and time.perf_counter() - begin < 0.3):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
            lat[key].append(statistics.median(samples) * 1e6)
    return {
        "trees_batch_trees": int(hgb.n_iter_),
        "trees_batch_inproc_rows_per_s": round(1000 / (statistics.median(lat["ours"]) / 1e6)),
        "sklearn_batch_rows_per_s": round(1000 / (statistics.median(lat["sklearn"]) / 1e6)),
        "trees_batch_vs_sklearn": ratio(lat["sklearn"], lat["ours"]),
        "trees_batch_vs_sklearn_1thread": ratio(lat["sklearn_1thread"], lat["ours"]),
    }


def bench_learning(client: Client, repeats: int, calls: int, rows: int) -> dict[str, object]:
    """Training, incremental updates, Predict / PredictBatch / Recommend and the local scorer."""
    from sahayak_rpc.demo_data import generate_outcomes

    figures: dict[str, object] = {}
    # A full run with both families over `rows` demo outcomes.
    examples = generate_outcomes(rows, seed=1)
    client.import_outcomes(
        DEMO_MODEL_NAME,
        [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id, occurred_at=e.occurred_at) for e in examples],
    )
    run = client.train(DEMO_MODEL_NAME, timeout=1800)
    figures["train_outcomes"] = run.data.outcome_count
    figures["train_100k_s"] = round(run.duration.ToTimedelta().total_seconds(), 2)
    figures["train_family"] = (
        "gradient_boosting"
        if run.candidates[[c.selected for c in run.candidates].index(True)].family == 2
        else "logistic_regression"
    )

    # A second model whose champion is logistic regression.
    linear = "bench-linear"
    make_model(client, linear)
    examples = generate_outcomes(20_000, seed=5)
    client.import_outcomes(linear, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in examples])
    client.train(linear, families=["logistic_regression"])
    increments = []
    fresh = generate_outcomes(100 * repeats, seed=6)
    for r in range(repeats):
        batch = fresh[100 * r : 100 * (r + 1)]
        client.import_outcomes(
            linear, [OutcomeInput(e.features, e.label, outcome_id=f"inc-{e.outcome_id}") for e in batch]
        )
        inc = client.train(linear, incremental=True)
        increments.append(inc.duration.ToTimedelta().total_seconds() * 1000)
    figures["incremental_update_ms"] = round(statistics.median(increments), 1)

    row = generate_outcomes(1, seed=7)[0].features
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2
    from sahayak_rpc.client import fill_features

    # Requests are built once, like the health check's: the figures are the server's work.
    def predict_request(model: str) -> inference_pb2.PredictRequest:
        request = inference_pb2.PredictRequest(model=model)
        fill_features(request.features, row)
        return request

    check = health_pb2.HealthCheckRequest()
    health = client.health_stub
    stub = client.inference
    p_lin, p_tree = predict_request(linear), predict_request(DEMO_MODEL_NAME)
    r_lin, r_tree = recommend_request(linear), recommend_request(DEMO_MODEL_NAME)
    r_rows = recommend_request(linear, columnar=False)
    lat = interleaved(
        {
            "echo": lambda: health.Check(check),
            "predict_linear": lambda: stub.Predict(p_lin),
            "predict_trees": lambda: stub.Predict(p_tree),
            "recommend_linear": lambda: stub.Recommend(r_lin),
            "recommend_trees": lambda: stub.Recommend(r_tree),
            "recommend_rowwise": lambda: stub.Recommend(r_rows),
        },
        repeats,
        calls,
    )
    figures["echo2_p50_us"] = round(statistics.median(lat["echo"]), 1)
    figures["predict_p50_us"] = round(statistics.median(lat["predict_linear"]), 1)
    figures["predict_vs_echo"] = ratio(lat["predict_linear"], lat["echo"])
    figures["predict_trees_p50_us"] = round(statistics.median(lat["predict_trees"]), 1)
    figures["predict_trees_vs_echo"] = ratio(lat["predict_trees"], lat["echo"])
    figures["recommend_100_p50_us"] = round(statistics.median(lat["recommend_linear"]), 1)
    figures["recommend_100_vs_echo"] = ratio(lat["recommend_linear"], lat["echo"])
    figures["recommend_100_rowwise_p50_us"] = round(statistics.median(lat["recommend_rowwise"]), 1)
    figures["recommend_100_rowwise_vs_echo"] = ratio(lat["recommend_rowwise"], lat["echo"])
    figures["recommend_100_trees_p50_us"] = round(statistics.median(lat["recommend_trees"]), 1)
    figures["recommend_100_trees_vs_echo"] = ratio(lat["recommend_trees"], lat["echo"])

    batch_rows = [e.features for e in generate_outcomes(1000, seed=8)]
    from sahayak_rpc.client import feature_columns

    request = inference_pb2.PredictBatchRequest(model=linear)
    feature_columns(batch_rows, request.columns)
    rates = []
    for _ in range(5):
        client.inference.PredictBatch(request)
    for _ in range(repeats):
        # As oip_batch_rows_per_s: each block starts on an empty prediction log (not the backlog of the
        # Predict figures above) and is long enough to carry its own logging.
        wait_log_drained(client)
        start = time.perf_counter()
        for _ in range(200):
            client.inference.PredictBatch(request)
        rates.append(200 * 1000 / (time.perf_counter() - start))
    figures["predict_batch_rows_per_s"] = round(statistics.median(rates))
    figures.update(
        batch_rate(client, tree_model(client, figures), batch_rows, repeats, "predict_batch_trees_rows_per_s")
    )

    for key, model in (("local_score_p50_us", linear), ("local_score_trees_p50_us", DEMO_MODEL_NAME)):
        with client.local_scorer(model, report=False) as scorer:
            samples = [p50_us(lambda: scorer.predict(row), calls * 5) for _ in range(repeats)]
        figures[key] = round(statistics.median(samples), 2)
    return figures


def bench_monitoring(client: Client, repeats: int, calls: int) -> dict[str, object]:
    """Alert fan-out to 100 watchers, and Predict with the prediction log on and off."""
    import threading

    from sahayak_rpc._proto.sahayak.v1 import inference_pb2, monitor_pb2, registry_pb2
    from sahayak_rpc.demo_data import generate_outcomes

    figures: dict[str, object] = {}
    # 100 watchers; a training run whose candidate the gate rejects raises one alert.
    examples = generate_outcomes(2000, seed=9)
    fanouts = []
    for round_ in range(max(1, repeats // 2)):
        name = f"bench-alerts-{round_}"  # a fresh model per round: no cooldown in the way
        make_model(client, name)
        client.import_outcomes(name, [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in examples])
        patch = registry_pb2.Model(name=name)
        patch.settings.gate.min_accuracy = 0.999
        client.update_model(patch, ["settings.gate.min_accuracy"])
        received: list[float] = []
        lock = threading.Lock()
        streams = [
            client.monitor.WatchAlerts(monitor_pb2.WatchAlertsRequest(model=name), timeout=120) for _ in range(100)
        ]
        raise_times: list[float] = []

        def watch(stream: object) -> None:
            for event in stream:  # type: ignore[attr-defined]
                if event.event_type == monitor_pb2.ALERT_EVENT_TYPE_RAISED:
                    with lock:
                        received.append(time.time())
                        raise_times.append(event.alert.raise_time.ToMicroseconds() / 1e6)
                    return

        threads = [threading.Thread(target=watch, args=(s,), daemon=True) for s in streams]
        for t in threads:
            t.start()
        time.sleep(1.0)  # every watcher connected
        client.train(name, families=["logistic_regression"])
        deadline = time.monotonic() + 30
        while len(received) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        for s in streams:
            s.cancel()
        if len(received) == 100:
            fanouts.append((max(received) - min(raise_times)) * 1000)
    figures["watch_alerts_fanout_ms"] = round(statistics.median(fanouts), 1) if fanouts else None

    # Drift over a million logged predictions x the demo's 22 features.
    from sahayak_rpc.client import feature_columns

    drift_model = "bench-drift"
    make_model(client, drift_model)
    client.import_outcomes(
        drift_model,
        [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in generate_outcomes(5000, seed=10)],
    )
    client.train(drift_model, families=["logistic_regression"])
    batch = inference_pb2.PredictBatchRequest(model=drift_model)
    feature_columns([e.features for e in generate_outcomes(1000, seed=11)], batch.columns)
    for _ in range(1000):
        client.inference.PredictBatch(batch)
    wait_log_drained(client)
    drift_times = []
    for _ in range(max(1, repeats // 2)):
        start = time.perf_counter()
        report = client.monitor.DetectDrift(monitor_pb2.DetectDriftRequest(model=drift_model), timeout=600).report
        drift_times.append(time.perf_counter() - start)
    figures["drift_1m_s"] = round(statistics.median(drift_times), 2)
    figures["drift_1m_rows"] = report.prediction.current_count

    return figures


def small_linear_db(tmp: Path) -> Path:
    """A database of its own with a logistic ``bench-linear`` champion, for fresh server pairs.

    (Not the bench database: with a million logged predictions, each new server's
    start-up health check runs for seconds and lands in the measurement.)"""
    db = tmp / "pairs.db"
    if db.exists():
        return db
    setup = ServerProcess(db)
    try:
        with Client(setup.target) as c:
            make_model(c, "bench-linear")
            c.import_outcomes(
                "bench-linear",
                [OutcomeInput(e.features, e.label, outcome_id=e.outcome_id) for e in generate_outcomes(5000, seed=5)],
            )
            c.train("bench-linear", families=["logistic_regression"])
    finally:
        setup.stop()
    return db


def fresh_pairs(db: Path, a: dict[str, Any], b: dict[str, Any], repeats: int, calls: int) -> dict[str, Any]:
    """Predict on two fresh server processes over ``db``, interleaved, for three pairs (one with few
    repeats): two processes differ by more than one setting does (placement, wake-ups), so the figure
    is the median of the pairs' ratios. ``a`` / ``b``: ``env`` for the server, ``tls_ca`` and ``client``
    (Client keyword arguments) for the caller."""
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2
    from sahayak_rpc.client import fill_features

    request = inference_pb2.PredictRequest(model="bench-linear")
    fill_features(request.features, generate_outcomes(1, seed=7)[0].features)
    ratios, p50_a, p50_b = [], [], []
    for _ in range(1 if repeats < 5 else 3):
        first = ServerProcess(db, env=a.get("env"), tls_ca=a.get("tls_ca"))
        second = ServerProcess(db, env=b.get("env"), tls_ca=b.get("tls_ca"))
        time.sleep(3)  # let both start-up health checks finish
        try:
            with Client(first.target, **a.get("client", {})) as ca, Client(second.target, **b.get("client", {})) as cb:
                lat = interleaved(
                    {
                        "a": lambda: ca.inference.Predict(request, metadata=ca.metadata),
                        "b": lambda: cb.inference.Predict(request, metadata=cb.metadata),
                    },
                    repeats,
                    calls,
                )
        finally:
            first.stop()
            second.stop()
        ratios.append(ratio(lat["a"], lat["b"]))
        p50_a.append(statistics.median(lat["a"]))
        p50_b.append(statistics.median(lat["b"]))
    return {
        "ratio": round(statistics.median(ratios), 3),
        "ratios": ratios,
        "a_p50_us": round(statistics.median(p50_a), 1),
        "b_p50_us": round(statistics.median(p50_b), 1),
    }


def bench_security(tmp: Path, repeats: int, calls: int) -> dict[str, object]:
    """Predict through TLS with a bearer token against plaintext without (fresh pairs)."""
    from sahayak_rpc import auth
    from tests.certs import make_certs

    db = small_linear_db(tmp)
    certs = make_certs(tmp)
    token = auth.new_token()
    (tmp / "tokens.toml").write_text(auth.token_entry("bench", token, ["predict"]))
    secure = {
        "env": {
            "SAHAYAK_SERVER_TLS_CERT": str(certs.server_cert),
            "SAHAYAK_SERVER_TLS_KEY": str(certs.server_key),
            "SAHAYAK_AUTH_TOKENS_FILE": str(tmp / "tokens.toml"),
        },
        "tls_ca": certs.read("ca"),
        "client": {"token": token, "ca_cert": certs.read("ca")},
    }
    out = fresh_pairs(db, secure, {}, repeats, calls)
    return {
        "auth_predict_p50_us": out["a_p50_us"],
        "plain_predict_p50_us": out["b_p50_us"],
        "auth_predict_vs_plain": out["ratio"],
        "auth_predict_vs_plain_pairs": out["ratios"],
    }


def bench_logging(tmp: Path, repeats: int, calls: int) -> dict[str, object]:
    """Predict with the prediction log on against off (fresh pairs): what logging adds to a reply."""
    out = fresh_pairs(
        small_linear_db(tmp), {}, {"env": {"SAHAYAK_MONITORING_LOG_PREDICTIONS": "false"}}, repeats, calls
    )
    return {"predict_logged_vs_unlogged": out["ratio"], "predict_logged_vs_unlogged_pairs": out["ratios"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also our OIP endpoint against MLServer with tritonclient (bench/peers.py; "
        "builds two virtualenvs on first use)",
    )
    opts = parser.parse_args()
    repeats, calls, rows = (2, 200, 10_000) if opts.quick else (5, 1000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        # 100 WatchAlerts subscribers come from this one client (watch_alerts_fanout_ms).
        server = ServerProcess(Path(tmp) / "bench.db", env={"SAHAYAK_SERVER_MAX_STREAMS_PER_CLIENT": "256"})
        try:
            with Client(server.target) as client:
                make_model(client, DEMO_MODEL_NAME)
                figures: dict[str, object] = {}
                figures.update(bench_latencies(client, repeats, calls))
                figures.update(bench_import(client, max(1, repeats // 2), rows))
                figures.update(bench_learning(client, repeats, calls, rows))
                figures.update(bench_trees_inproc(repeats, calls))
                figures.update(bench_monitoring(client, repeats, calls))
                figures.update(bench_security(Path(tmp), repeats, calls))
                figures.update(bench_logging(Path(tmp), repeats, calls))
                if opts.peers:
                    from bench.peers import run_peers

                    figures.update(run_peers(server.target, opts.quick))
        finally:
            server.stop()
    # The soak runs its own server (bench/soak.py): memory growth under a mixed load.
    from bench.soak import run_soak

    soak = run_soak(10.0 if opts.quick else 60.0)
    figures["soak_rss_growth"] = soak["soak_rss_growth"]
    figures["soak_unexpected_errors"] = soak["unexpected_errors"]
    # Scale-out (bench/scaleout.py): PostgreSQL with fsync on, replicas, serve --workers N.
    from bench.scaleout import run_scaleout

    with tempfile.TemporaryDirectory() as tmp:
        figures.update(run_scaleout(Path(tmp), repeats, calls, rows, opts.quick))
    figures["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    figures["repeats"] = repeats
    if opts.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
