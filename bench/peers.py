"""Peers: our Open Inference Protocol service against MLServer, both driven by tritonclient.

    python bench/peers.py --target 127.0.0.1:50051 [--quick]   # standalone, against a running server
    python bench/peers.py [--quick]                             # starts its own server (bench/run.py's)

``run_peers(target, quick)`` is what bench/run.py calls with ``--peers``. It
returns (medians over repeats; p50s of sequential calls):

- ``oip_live_p50_us``: ServerLive on our server, the empty-RPC floor (same run)
- ``oip_infer_p50_us``: single-row ModelInfer (FP32 [1, 22]) on our server
- ``oip_infer_vs_live``: the two above, as a ratio per repeat
- ``mlserver_infer_p50_us``: the same tritonclient loop against MLServer
  (mlserver + mlserver-sklearn, a scikit-learn LogisticRegression over the
  same FP32 [1, 22] input, saved with joblib)
- ``mlserver_live_p50_us``: MLServer's ServerLive
- ``oip_vs_mlserver``: oip_infer_p50_us / mlserver_infer_p50_us (below 1: we are faster)
- ``oip_overhead_vs_mlserver``: what an inference costs over an empty call (ModelInfer p50 minus
  ServerLive p50) on ours, over the same on MLServer: the part of the latency a server's inference
  path adds, without the gRPC floor that both servers pay alike
- ``oip_batch_rows_per_s``: sequential 1,000-row FP32 batches, raw input, on our server
  (every row logged to the prediction log, as served; each block starts with the log drained)
- ``oip_batch_unlogged_rows_per_s``: the same on a second server of ours started with
  ``[monitoring] log_predictions = false``: the protocol and scoring path alone
- ``mlserver_batch_rows_per_s``: the same against MLServer
- ``oip_batch_vs_mlserver``: oip_batch_rows_per_s / mlserver_batch_rows_per_s, both in this run
  (ours logged, as served; above 1: we are faster)

tritonclient and MLServer each live in a virtual environment of their own,
made once under ~/.cache/sahayak-rpc/ (MLServer pins protobuf < 7 and
uvloop 0.21; tritonclient brings its own protobuf; the server's .venv stays
as it is). Every server listens on loopback ephemeral ports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import run  # noqa: E402
from bench.run import free_port  # noqa: E402
from tests.oip_triton_driver import ensure_venv, run_driver, triton_venv  # noqa: E402

MODEL = "bench-oip"
PEER_MODEL = "peer-logistic"
# MLServer 1.7.1 needs protobuf < 7, and uvloop 0.21 (with >= 0.22 its inference worker fails at start).
MLSERVER_REQUIREMENTS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "protobuf==6.33.6", "uvloop==0.21.0")


def encode(rows: list[dict[str, Any]]) -> np.ndarray:
    """Rows as our V2 ``features`` tensor (docs/oip.md): schema order, numeric value,
    boolean 0/1, categorical index into the declared categories, NaN for missing."""
    from sahayak_rpc.demo_data import DEMO_SCHEMA
    from sahayak_rpc.schema import FeatureType

    feats = DEMO_SCHEMA.features
    x = np.full((len(rows), len(feats)), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, f in enumerate(feats):
            v = row.get(f.name)
            if v is not None:
                x[i, j] = f.categories.index(v) if f.type is FeatureType.CATEGORICAL else float(v)
    return x


def prepare_model(target: str, rows: int) -> None:
    """A demo-schema model with a logistic-regression champion on the server (made once)."""
    from sahayak_rpc._proto.sahayak.v1 import registry_pb2
    from sahayak_rpc.client import Client, OutcomeInput, SahayakError
    from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes

    with Client(target, timeout=600) as client:
        try:
            client.get_version(MODEL)
            return
        except SahayakError:
            pass
        settings = registry_pb2.ModelSettings()
        settings.training.schedule_enabled = False
        try:
            client.create_model(MODEL, DEMO_SCHEMA.features, DEMO_SCHEMA.label, settings=settings)
        except SahayakError:
            pass  # made by an earlier run that did not get to train
        examples = generate_outcomes(rows, seed=41)
        client.import_outcomes(
            MODEL, [OutcomeInput(e.features, e.label, outcome_id=f"peers-{e.outcome_id}") for e in examples]
        )
        run = client.train(MODEL, families=["logistic_regression"])
        if not run.produced_version:
            raise RuntimeError(f"training the bench model failed: {run.end_reason}")
        if not run.promoted:
            client.set_alias(MODEL, "champion", run.produced_version, reason="bench", force=True)


class MLServerProcess:
    """MLServer serving a scikit-learn LogisticRegression of the same input shape, on loopback."""

    def __init__(self, workdir: Path, x: np.ndarray, y: np.ndarray) -> None:
        self.venv = ensure_venv("venv-mlserver", MLSERVER_REQUIREMENTS, "SAHAYAK_MLSERVER_VENV")
        python = str(self.venv / "bin" / "python")
        models = workdir / "models" / PEER_MODEL
        models.mkdir(parents=True)
        np.save(workdir / "x.npy", x)
        np.save(workdir / "y.npy", y)
        # Fitted and saved in MLServer's own venv, with its scikit-learn: the file it loads is its own.
        fit = (
            "import sys, joblib, numpy as np\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "x = np.nan_to_num(np.load(sys.argv[1], allow_pickle=False))\n"
            "y = np.load(sys.argv[2], allow_pickle=False)\n"
            "joblib.dump(LogisticRegression(max_iter=2000).fit(x, y), sys.argv[3])\n"
        )
        subprocess.run(
            [python, "-c", fit, str(workdir / "x.npy"), str(workdir / "y.npy"), str(models / "model.joblib")],
            check=True,
            timeout=600,
        )
        (models / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": PEER_MODEL,
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib"},
                }
            )
        )
        self.port = free_port()
        (workdir / "models" / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "grpc_port": self.port,
                    "http_port": free_port(),
                    "metrics_port": free_port(),
                    "debug": False,
                }
            )
        )
        self.log = open(workdir / "mlserver.log", "wb")
        env = {**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "mlserver"), "start", str(workdir / "models")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        try:
            wait_model_ready(self.target, PEER_MODEL, self.proc, timeout=180)
        except Exception:
            self.stop()
            raise RuntimeError(
                "MLServer did not get ready; see its log:\n"
                + (workdir / "mlserver.log").read_text(errors="replace")[-3000:]
            ) from None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_model_ready(target: str, model: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll ModelReady (our own stubs: the wire is the same) until the model serves."""
    import grpc

    from sahayak_rpc._proto.inference import open_inference_grpc_pb2 as pb
    from sahayak_rpc._proto.inference import open_inference_grpc_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError(f"{model} on {target} not ready")
            time.sleep(0.25)


def wait_log_drained(target: str, timeout: float = 120) -> None:
    from sahayak_rpc.client import Client

    with Client(target) as client:
        run.wait_log_drained(client, timeout)


def _batches(
    tri: Path, target: str, model: str, files: list[str], args: list[str], repeats: int, drain: bool
) -> list[float]:
    """rows/s of sequential batch blocks, one driver run per block (after the log drained, if ``drain``)."""
    rates = []
    for _ in range(repeats):
        if drain:
            wait_log_drained(target)
        out = run_driver(
            tri,
            "bench",
            "--target",
            target,
            "--model",
            model,
            *files,
            *args,
            "--only",
            "batch",
            "--repeats",
            "1",
            "--warmup",
            "5",
            timeout=1800,
        )
        rates.append(out["batch_rows_per_s"])
    return rates


def run_peers(target: str, quick: bool) -> dict[str, Any]:
    """Our OIP service (on ``target``) against MLServer, with the same tritonclient loop."""
    from bench.run import ServerProcess
    from sahayak_rpc.demo_data import generate_outcomes

    repeats, calls, batches, rows = (2, 300, 50, 5_000) if quick else (5, 1000, 200, 20_000)
    prepare_model(target, rows)
    wait_model_ready(target, MODEL, None, timeout=60)
    tri = triton_venv()
    examples = generate_outcomes(rows, seed=42)
    x = encode([e.features for e in examples])
    y = np.array([e.label for e in examples], dtype=np.int64)
    figures: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one, batch = work / "one.npy", work / "batch.npy"
        np.save(one, x[:1])
        np.save(batch, x[:1000])
        files = ["--one", str(one), "--batch", str(batch)]
        sizes = ["--calls", str(calls), "--batches", str(batches)]
        wait_log_drained(target)
        ours = run_driver(
            tri,
            "bench",
            "--target",
            target,
            "--model",
            MODEL,
            *files,
            *sizes,
            "--only",
            "latency",
            "--repeats",
            str(repeats),
            timeout=1800,
        )
        logged = _batches(tri, target, MODEL, files, sizes, repeats, drain=True)
        # The same on a second server with the prediction log off: what the log costs.
        bare = ServerProcess(work / "unlogged.db", env={"SAHAYAK_MONITORING_LOG_PREDICTIONS": "false"})
        try:
            prepare_model(bare.target, rows)
            unlogged = _batches(tri, bare.target, MODEL, files, sizes, repeats, drain=False)
        finally:
            bare.stop()
        wait_log_drained(target)
        figures.update(
            oip_live_p50_us=ours["live_p50_us"],
            oip_infer_p50_us=ours["infer_p50_us"],
            oip_infer_vs_live=ours["infer_vs_live"],
            oip_batch_rows_per_s=round(statistics.median(logged)),
            oip_batch_unlogged_rows_per_s=round(statistics.median(unlogged)),
        )
        samples["oip"] = {
            **ours["samples"],
            "batch_rows_per_s": [round(r) for r in logged],
            "batch_unlogged_rows_per_s": [round(r) for r in unlogged],
        }
        # MLServer's scikit-learn model cannot take NaN: it gets the same rows with 0 for missing.
        np.save(one, np.nan_to_num(x[:1]))
        np.save(batch, np.nan_to_num(x[:1000]))
        peer = MLServerProcess(work / "mlserver", x, y)
        try:
            theirs = run_driver(
                tri,
                "bench",
                "--target",
                peer.target,
                "--model",
                PEER_MODEL,
                "--input",
                "input-0",
                "--output",
                "predict_proba",
                *files,
                *sizes,
                "--repeats",
                str(repeats),
                timeout=1800,
            )
        finally:
            peer.stop()
    figures.update(
        mlserver_live_p50_us=theirs["live_p50_us"],
        mlserver_infer_p50_us=theirs["infer_p50_us"],
        mlserver_batch_rows_per_s=round(theirs["batch_rows_per_s"]),
        oip_batch_vs_mlserver=round(statistics.median(logged) / theirs["batch_rows_per_s"], 3),
        oip_vs_mlserver=round(ours["infer_p50_us"] / theirs["infer_p50_us"], 3),
        oip_overhead_vs_mlserver=round(
            (ours["infer_p50_us"] - ours["live_p50_us"]) / (theirs["infer_p50_us"] - theirs["live_p50_us"]), 3
        ),
    )
    samples["mlserver"] = theirs["samples"]
    figures["peers_samples"] = samples
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="a running sahayak-rpc server (default: start one)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    opts = parser.parse_args()
    if opts.target:
        figures = run_peers(opts.target, opts.quick)
    else:
        from bench.run import ServerProcess

        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(Path(tmp) / "peers.db")
            try:
                figures = run_peers(server.target, opts.quick)
            finally:
                server.stop()
    figures["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
