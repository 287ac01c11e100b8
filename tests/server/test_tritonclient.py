"""The standard V2 client, tritonclient[grpc], against the real server.

tritonclient pins its own protobuf, so it runs in a virtual environment of
its own, made once (about 10 s, from PyPI) and cached under
~/.cache/sahayak-rpc/; the driver script (tests/oip_triton_driver.py) runs
there and prints JSON, and this test checks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sahayak_rpc._proto.sahayak.v1 import common_pb2
from sahayak_rpc.demo_data import DEMO_MODEL_NAME as MODEL
from sahayak_rpc.demo_data import DEMO_SCHEMA
from sahayak_rpc.schema import FeatureType

from ..helpers import Running
from ..oip_triton_driver import run_driver, triton_venv
from ..helpers import OIP_WIDTH as WIDTH, decode, encode, sample_rows


@pytest.fixture(scope="module")
def triton() -> Path:
    return triton_venv()


def test_tritonclient_talks_to_the_server(trained: Running, triton: Path, tmp_path: Path) -> None:
    x = encode(sample_rows(25, seed=31))
    np.save(tmp_path / "rows.npy", x)
    (tmp_path / "rows.json").write_text(json.dumps(decode(x)))
    out = run_driver(
        triton,
        "check",
        "--target",
        trained.target,
        "--model",
        MODEL,
        "--rows",
        str(tmp_path / "rows.npy"),
        "--named",
        str(tmp_path / "rows.json"),
    )

    assert out["live"] is True and out["ready"] is True
    assert out["model_ready"] is True and out["ghost_ready"] is False
    assert out["server_metadata"]["name"] == "sahayak-rpc"
    champion = trained.client.get_version(MODEL)
    meta = out["metadata"]
    assert meta["name"] == MODEL and str(champion.version) in meta["versions"]
    # tritonclient's JSON form writes int64 as strings.
    kinds = {FeatureType.NUMERIC: "FP64", FeatureType.BOOLEAN: "BOOL", FeatureType.CATEGORICAL: "BYTES"}
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", str(WIDTH)]}] + [
        {"name": f.name, "datatype": kinds[f.type], "shape": ["-1", "1"]} for f in DEMO_SCHEMA.features
    ]
    assert [o["name"] for o in meta["outputs"]] == ["probability", "label"]

    assert out["model_version"] == str(champion.version) and out["id"] == "driver-1"
    assert out["outputs"] == ["probability", "label"] and out["only_label_outputs"] == ["label"]
    assert out["probability_shape"] == [25, 1] and out["label_dtype"] == "int32"
    for i, row in enumerate(decode(x)):
        want = trained.client.predict(MODEL, row)
        assert abs(out["probability"][i] - want.probability) <= 1e-6, (i, row)
        assert out["label"][i] == (1 if want.label == common_pb2.LABEL_POSITIVE else 0)
        # The same rows as one input per feature, laid out from the metadata alone; BYTES as tritonclient sends them.
        assert abs(out["named_probability"][i] - want.probability) <= 1e-6, (i, row)
        assert out["named_label"][i] == out["label"][i]
    assert ["craft", "BYTES"] in out["named_inputs"] and ["has_bank_account", "BOOL"] in out["named_inputs"]

    # Errors reach the client as gRPC statuses with our messages.
    assert out["errors"]["unknown_model"].startswith("StatusCode.NOT_FOUND"), out["errors"]
    assert out["errors"]["bad_shape"].startswith("StatusCode.INVALID_ARGUMENT"), out["errors"]
    assert f"[n, {WIDTH}]" in out["errors"]["bad_shape"]


def test_the_client_venv_is_separate_from_the_servers(triton: Path) -> None:
    # tritonclient brings protobuf 6.x into its own venv; the server's keeps its 7.x and no tritonclient.
    import importlib.util

    import google.protobuf

    assert int(google.protobuf.__version__.split(".")[0]) >= 7
    assert importlib.util.find_spec("tritonclient") is None
    info = json.loads((triton / "sahayak-ready.json").read_text())
    assert any(r.startswith("tritonclient[grpc]") for r in info["requirements"])
