"""Drive a V2 (Open Inference Protocol) server with the standard client, tritonclient[grpc].

tritonclient pins its own protobuf, so it lives in a virtual environment of
its own (``triton_venv()`` makes it once and caches it); the server's .venv
never sees it. This file is both:

- imported by the tests and by bench/peers.py (stdlib only at import time)
  for ``triton_venv()``, and
- run by that venv's python as a script, printing one JSON object::

    python oip_triton_driver.py check --target HOST:PORT --model NAME --rows X.npy [--named ROWS.json]
    python oip_triton_driver.py bench --target HOST:PORT --model NAME --one X1.npy --batch XB.npy

Inputs are .npy files (loaded with allow_pickle=False); ``--named`` takes a JSON
list of rows (feature name -> value), sent as one input per feature, laid out
from ``get_model_metadata`` alone, as a generic client would.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# What the client venv holds. tritonclient 2.73 brings grpcio and protobuf 6.x.
TRITON_REQUIREMENTS = ("tritonclient[grpc]==2.73.0", "numpy>=1.26")


def cache_root() -> Path:
    """Where helper virtual environments live: outside the work tree, so nothing there is ever committed."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sahayak-rpc"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not build the same venv at once
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_venv(name: str, requirements: Sequence[str], env_var: str = "") -> Path:
    """A virtual environment with exactly ``requirements`` installed, made once and reused.

    Its directory name carries a hash of the requirements and the Python
    version, so changing a pin makes a fresh one. ``env_var`` may name an
    environment variable holding a ready venv to use instead.
    """
    if env_var and os.environ.get(env_var):
        return Path(os.environ[env_var])
    key = hashlib.sha256(json.dumps([sys.version_info[:2], list(requirements)]).encode()).hexdigest()[:12]
    root = cache_root() / f"{name}-{key}"
    stamp = root / "sahayak-ready.json"
    python = root / "bin" / "python"
    with _locked(cache_root() / f"{name}.lock"):
        if stamp.exists() and python.exists():
            return root
        if root.exists():
            shutil.rmtree(root)  # a half-built one from an interrupted install
        venv.EnvBuilder(with_pip=True).create(root)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                *requirements,
            ],
            check=True,
        )
        stamp.write_text(json.dumps({"requirements": list(requirements)}))
    return root


def triton_venv() -> Path:
    """The tritonclient[grpc] venv (SAHAYAK_TRITON_VENV overrides)."""
    return ensure_venv("venv-triton", TRITON_REQUIREMENTS, "SAHAYAK_TRITON_VENV")


def run_driver(venv_dir: Path, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run this file in ``venv_dir`` with ``args``; its JSON answer."""
    proc = subprocess.run(
        [str(venv_dir / "bin" / "python"), str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


# --- the driver (runs inside the tritonclient venv) ---------------------------------


def _p50_us(call: Callable[[], object], n: int) -> float:
    # bench/run.py's p50_us, repeated: this half runs in the tritonclient venv, without our package.
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def _check(opts: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(opts.target)
    x = np.load(opts.rows, allow_pickle=False).astype(np.float32)
    inp = grpcclient.InferInput(opts.input, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(opts.model, [inp], model_version=opts.version, request_id="driver-1")
    response = result.get_response()
    only = client.infer(opts.model, [inp], outputs=[grpcclient.InferRequestedOutput("label")])
    named = _named(client, grpcclient, opts) if opts.named else {}
    errors = {}
    for name, call in {
        "unknown_model": lambda: client.infer("no-such-model", [inp]),
        "bad_shape": lambda: client.infer(opts.model, [_input(grpcclient, opts.input, x[:, :-1])]),
    }.items():
        try:
            call()
            errors[name] = "OK"
        except grpcclient.InferenceServerException as exc:
            errors[name] = f"{exc.status()}: {exc.message()}"
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(opts.model),
        "ghost_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(opts.model, as_json=True),
        "model_version": response.model_version,
        "id": response.id,
        "outputs": [o.name for o in response.outputs],
        "probability": result.as_numpy("probability").astype(float).ravel().tolist(),
        "probability_shape": list(result.as_numpy("probability").shape),
        "label": result.as_numpy("label").astype(int).ravel().tolist(),
        "label_dtype": str(result.as_numpy("label").dtype),
        "only_label_outputs": [o.name for o in only.get_response().outputs],
        "errors": errors,
        **named,
    }


def _named(client: Any, grpcclient: Any, opts: argparse.Namespace) -> dict[str, Any]:
    """Rows sent as one input per feature: each input's name, datatype and shape from ModelMetadata."""
    import numpy as np

    with open(opts.named) as f:
        rows = json.load(f)
    metadata = client.get_model_metadata(opts.model, as_json=True)
    inputs = []
    for spec in metadata["inputs"]:
        if spec["name"] == "features":
            continue  # the whole-row tensor: the other form
        values = [row.get(spec["name"]) for row in rows]
        if spec["datatype"] == "BYTES":
            array = np.array(["" if v is None else v for v in values], dtype=np.object_)
        elif spec["datatype"] == "BOOL":
            array = np.array(values, dtype=np.bool_)
        else:
            array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        shape = [len(rows) if int(d) == -1 else int(d) for d in spec["shape"]]
        inp = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
        inp.set_data_from_numpy(array.reshape(shape))
        inputs.append(inp)
    result = client.infer(opts.model, inputs, model_version=opts.version)
    return {
        "named_inputs": [(i.name(), i.datatype()) for i in inputs],
        "named_probability": result.as_numpy("probability").astype(float).ravel().tolist(),
        "named_label": result.as_numpy("label").astype(int).ravel().tolist(),
    }


def _input(grpcclient: Any, name: str, x: Any) -> Any:
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _bench(opts: argparse.Namespace) -> dict[str, Any]:
    """p50 of single-row ModelInfer and of ServerLive, and rows/s of sequential batches (median of repeats)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(opts.target)
    one = np.load(opts.one, allow_pickle=False).astype(np.float32)
    batch = np.load(opts.batch, allow_pickle=False).astype(np.float32)
    outputs = [grpcclient.InferRequestedOutput(opts.output)] if opts.output else None

    def infer(x: Any) -> Any:
        # What a client does per call: wrap the array, send, read the answer back as numpy.
        result = client.infer(opts.model, [_input(grpcclient, opts.input, x)], outputs=outputs)
        return result.as_numpy(opts.output or result.get_response().outputs[0].name)

    def live() -> object:
        return client.is_server_live()

    assert infer(one).shape[0] == 1
    assert infer(batch).shape[0] == len(batch)
    latency, throughput = opts.only in ("all", "latency"), opts.only in ("all", "batch")
    for _ in range(opts.warmup):
        infer(one)
        live()
    figures: dict[str, list[float]] = {}
    for _ in range(opts.repeats):
        # Interleaved blocks: machine noise hits every figure alike.
        if latency:
            figures.setdefault("live_p50_us", []).append(_p50_us(live, opts.calls))
            figures.setdefault("infer_p50_us", []).append(_p50_us(lambda: infer(one), opts.calls))
        if throughput:
            start = time.perf_counter()
            for _ in range(opts.batches):
                infer(batch)
            figures.setdefault("batch_rows_per_s", []).append(opts.batches * len(batch) / (time.perf_counter() - start))
    out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    out["samples"] = {k: [round(x, 1) for x in v] for k, v in figures.items()}
    if latency:
        out["infer_vs_live"] = round(
            statistics.median(a / b for a, b in zip(figures["infer_p50_us"], figures["live_p50_us"], strict=True)), 3
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "bench"):
        p = sub.add_parser(name)
        p.add_argument("--target", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--input", default="features", help="the input tensor's name")
    check = sub.choices["check"]
    check.add_argument("--rows", required=True, help=".npy of the FP32 [n, F] features")
    check.add_argument("--version", default="")
    check.add_argument("--named", default="", help=".json of rows to send as one input per feature")
    bench = sub.choices["bench"]
    bench.add_argument("--one", required=True, help=".npy of one row, [1, F]")
    bench.add_argument("--batch", required=True, help=".npy of a batch, [n, F]")
    bench.add_argument("--output", default="probability", help="the output to ask for ('' for all)")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--calls", type=int, default=1000, help="calls per latency block")
    bench.add_argument("--batches", type=int, default=200, help="batches per throughput block")
    bench.add_argument("--warmup", type=int, default=100)
    bench.add_argument("--only", choices=("all", "latency", "batch"), default="all")
    opts = parser.parse_args(argv)
    result = _check(opts) if opts.command == "check" else _bench(opts)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
