"""A/B of server builds or settings, measured interleaved in one run.

    python bench/ab.py predict NAME=DIR[:ENV=VALUE,...] NAME=DIR[:...] ...
    python bench/ab.py recommend-100 NAME=DIR[:...] ...
    python bench/ab.py record-outcome NAME=DIR[:...] ...
    python bench/ab.py predict-batch NAME=DIR[:...] ...
    python bench/ab.py oip-latency NAME=DIR[:...] ...
    python bench/ab.py oip-batch NAME=DIR[:...] ...

Each NAME=DIR starts one server process from the source tree DIR (a ``git
worktree`` of another commit, or this one) with the environment variables
given, on a database of its own under a temporary directory, with the same
demo model and a logistic-regression champion. Then, in rounds, the same
load runs against every server in turn, so that the machine's noise hits
them alike:

- ``predict``: Predict p50 over a gRPC health check p50 on the same server
  (``predict_vs_echo`` of bench/run.py), 1,000 calls per block;
- ``recommend-100``: a columnar Recommend of 100 candidates, top 10, over the same
  (``recommend_100_vs_echo``);
- ``record-outcome``: RecordOutcome p50 (each call a new outcome) over the same
  (``record_outcome_vs_echo``);
- ``predict-batch``: 1,000-row columnar PredictBatch calls, rows/s
  (``predict_batch_rows_per_s``), each block after the prediction log drained;
- ``oip-latency``: single-row ModelInfer over ServerLive, through tritonclient
  (``oip_infer_vs_live`` of bench/peers.py);
- ``oip-batch``: 1,000-row FP32 ModelInfer batches through tritonclient, rows/s
  (``oip_batch_rows_per_s``), each block after the prediction log drained.

It prints one JSON object: per server, the median over rounds and every round.
For example, what the prediction log costs OIP batches:

    python bench/ab.py oip-batch on=. off=.:SAHAYAK_MONITORING_LOG_PREDICTIONS=false
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import MODEL  # noqa: E402
from bench.run import ServerProcess, batch_rate, interleaved, recommend_request  # noqa: E402


def parse_spec(text: str) -> tuple[str, Path, dict[str, str]]:
    """NAME=DIR[:ENV=VALUE,...]"""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR[:ENV=VALUE,...]")
    where, _, envs = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return name, Path(where or ".").resolve(), env


class Server(ServerProcess):
    def __init__(self, name: str, tree: Path, env: dict[str, str], db: Path) -> None:
        self.name = name
        super().__init__(db, env=env, tree=tree)

    def prepare(self) -> None:
        from bench.peers import prepare_model, wait_model_ready

        prepare_model(self.target, 5000)
        wait_model_ready(self.target, MODEL, self.proc, timeout=60)


def latency_rounds(servers: list[Server], rounds: int, calls: int, what: str) -> dict[str, Any]:
    """``what`` (predict, recommend_100, record_outcome) p50 over the health check's on each server, interleaved."""
    from grpc_health.v1 import health_pb2

    from sahayak_rpc._proto.sahayak.v1 import common_pb2, inference_pb2, training_pb2
    from sahayak_rpc.client import Client, fill_features
    from sahayak_rpc.demo_data import generate_outcomes

    row = generate_outcomes(1, seed=7)[0].features
    predict = inference_pb2.PredictRequest(model=MODEL)
    fill_features(predict.features, row)
    record = training_pb2.RecordOutcomeRequest(model=MODEL)  # (no outcome id: the server names each anew)
    record.outcome.label = common_pb2.LABEL_POSITIVE
    fill_features(record.outcome.features, row)
    recommend = recommend_request(MODEL)
    check = health_pb2.HealthCheckRequest()
    clients = {s.name: Client(s.target) for s in servers}
    calls_by_key = {}
    for name, c in clients.items():
        calls_by_key[f"{name}:echo"] = lambda c=c: c.health_stub.Check(check)
        calls_by_key[f"{name}:{what}"] = {
            "predict": lambda c=c: c.inference.Predict(predict),
            "recommend_100": lambda c=c: c.inference.Recommend(recommend),
            "record_outcome": lambda c=c: c.training.RecordOutcome(record),
        }[what]
    lat = interleaved(calls_by_key, rounds, calls)
    out = {}
    for name, c in clients.items():
        ratios = [round(p / e, 3) for p, e in zip(lat[f"{name}:{what}"], lat[f"{name}:echo"], strict=True)]
        out[name] = {
            f"{what}_vs_echo": statistics.median(ratios),
            "rounds": ratios,
            "echo_p50_us": round(statistics.median(lat[f"{name}:echo"]), 1),
            f"{what}_p50_us": round(statistics.median(lat[f"{name}:{what}"]), 1),
        }
        c.close()
    return out


def batch_rounds(servers: list[Server], rounds: int) -> dict[str, Any]:
    """1,000-row columnar PredictBatch rows/s on each server in turn, a block each per round."""
    from sahayak_rpc.client import Client
    from sahayak_rpc.demo_data import generate_outcomes

    rows = [e.features for e in generate_outcomes(1000, seed=8)]
    clients = {s.name: Client(s.target) for s in servers}
    samples: dict[str, list[int]] = {name: [] for name in clients}
    try:
        for _ in range(rounds):
            for name, c in clients.items():
                rate = batch_rate(c, MODEL, rows, 1, "rate")["rate"]
                samples[name].append(int(rate))  # type: ignore[call-overload]
    finally:
        for c in clients.values():
            c.close()
    return {name: {"predict_batch_rows_per_s": statistics.median(v), "rounds": v} for name, v in samples.items()}


def oip_rounds(servers: list[Server], rounds: int, calls: int, batch: bool, work: Path) -> dict[str, Any]:
    import numpy as np

    from bench.peers import encode, wait_log_drained
    from sahayak_rpc.demo_data import generate_outcomes
    from tests.oip_triton_driver import run_driver, triton_venv

    tri = triton_venv()
    x = encode([e.features for e in generate_outcomes(1000, seed=42)])
    np.save(work / "one.npy", x[:1])
    np.save(work / "batch.npy", x)
    files = ["--one", str(work / "one.npy"), "--batch", str(work / "batch.npy")]
    samples: dict[str, list[float]] = {s.name: [] for s in servers}
    for _ in range(rounds):
        for s in servers:
            if batch:
                wait_log_drained(s.target)
                out = run_driver(
                    tri,
                    "bench",
                    "--target",
                    s.target,
                    "--model",
                    MODEL,
                    *files,
                    "--batches",
                    "200",
                    "--only",
                    "batch",
                    "--repeats",
                    "1",
                    "--warmup",
                    "5",
                    timeout=900,
                )
                samples[s.name].append(round(out["batch_rows_per_s"]))
            else:
                out = run_driver(
                    tri,
                    "bench",
                    "--target",
                    s.target,
                    "--model",
                    MODEL,
                    *files,
                    "--calls",
                    str(calls),
                    "--only",
                    "latency",
                    "--repeats",
                    "1",
                    "--warmup",
                    "100",
                    timeout=900,
                )
                samples[s.name].append(out["infer_vs_live"])
    key = "oip_batch_rows_per_s" if batch else "oip_infer_vs_live"
    return {name: {key: statistics.median(v), "rounds": v} for name, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", choices=("predict", "recommend-100", "record-outcome", "predict-batch", "oip-latency", "oip-batch")
    )
    parser.add_argument("servers", nargs="+", type=parse_spec, help="NAME=DIR[:ENV=VALUE,...]")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1000, help="calls per latency block")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        servers = [Server(name, tree, env, work / f"{name}.db") for name, tree, env in opts.servers]
        try:
            for s in servers:
                s.prepare()
            if opts.mode in ("predict", "recommend-100", "record-outcome"):
                result = latency_rounds(servers, opts.rounds, opts.calls, opts.mode.replace("-", "_"))
            elif opts.mode == "predict-batch":
                result = batch_rounds(servers, opts.rounds)
            else:
                result = oip_rounds(servers, opts.rounds, opts.calls, opts.mode == "oip-batch", work)
        finally:
            for s in servers:
                s.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
