"""Benchmarks against a real server process: `python bench/run.py --json`.

Every figure is a median over repeated runs. Latencies are p50 of
sequential unary calls over loopback; the floor (`echo_p50_us`, a gRPC
health check on the same server) is measured in the same run, interleaved
with the other latencies, so ratios against it cancel machine noise.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from sahayak_rpc.client import Client, OutcomeInput  # noqa: E402
from sahayak_rpc.demo import ensure_demo_model  # noqa: E402
from sahayak_rpc.demo_data import DEMO_MODEL_NAME, generate_outcomes  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "sahayak_rpc.cli", "serve", "--port", str(self.port), "--db", str(db),
               "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
        channel = grpc.insecure_channel(self.target)
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


def p50_us(call: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


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
            p50_us(lambda: client.record_outcome(DEMO_MODEL_NAME, row, True), calls))
    out = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    out["record_outcome_vs_echo"] = round(statistics.median(
        r / e for r, e in zip(figures["record_outcome_p50_us"], figures["echo_p50_us"], strict=True)), 3)
    return out


def bench_import(client: Client, repeats: int, rows: int) -> dict[str, float]:
    examples = generate_outcomes(rows, seed=1)
    rates: dict[str, list[float]] = {"import_rows_per_s": [], "import_rowwise_rows_per_s": []}
    for r in range(repeats):
        for key, columnar in (("import_rows_per_s", True), ("import_rowwise_rows_per_s", False)):
            inputs = [OutcomeInput(e.features, e.label, outcome_id=f"{key}-{r}-{e.outcome_id}",
                                   entities=e.entities, occurred_at=e.occurred_at) for e in examples]
            start = time.perf_counter()
            report = client.import_outcomes(DEMO_MODEL_NAME, inputs, columnar=columnar)
            elapsed = time.perf_counter() - start
            if report.accepted != rows:
                raise RuntimeError(f"import accepted {report.accepted} of {rows}")
            rates[key].append(rows / elapsed)
    return {k: round(statistics.median(v)) for k, v in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    opts = parser.parse_args()
    repeats, calls, rows = (2, 200, 10_000) if opts.quick else (5, 1000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "bench.db")
        try:
            with Client(server.target) as client:
                ensure_demo_model(client)
                figures: dict[str, object] = {}
                figures.update(bench_latencies(client, repeats, calls))
                figures.update(bench_import(client, max(1, repeats // 2), rows))
        finally:
            server.stop()
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
