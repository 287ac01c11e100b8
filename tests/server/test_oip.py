"""The Open Inference Protocol (KServe V2) service, through our own generated stubs, against a real server."""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from sahayak_rpc._proto.inference import open_inference_grpc_pb2 as pb
from sahayak_rpc._proto.inference import open_inference_grpc_pb2_grpc as pb_grpc
from sahayak_rpc._proto.sahayak.v1 import common_pb2, registry_pb2
from sahayak_rpc.demo_data import DEMO_MODEL_NAME as MODEL
from sahayak_rpc.demo_data import DEMO_SCHEMA
from sahayak_rpc.schema import FeatureSpec, FeatureType, LabelSpec, Schema

from ..helpers import OIP_WIDTH, decode, encode, sample_rows, Running

WIDTH = OIP_WIDTH


# --- the documented layout, written out independently of the server's code ---------


def infer_request(
    x: np.ndarray,
    *,
    raw: bool = True,
    version: str = "",
    outputs: Sequence[str] = (),
    model: str = MODEL,
    datatype: str = "FP32",
    request_id: str = "",
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    tensor = request.inputs.add(name="features", datatype=datatype, shape=list(x.shape))
    if raw:
        request.raw_input_contents.append(x.astype("<f4" if datatype == "FP32" else "<f8").tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    else:
        tensor.contents.fp64_contents.extend(x.ravel().tolist())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Output tensors decoded from raw_output_contents (typed contents must stay empty)."""
    assert len(response.raw_output_contents) == len(response.outputs)
    out = {}
    for tensor, data in zip(response.outputs, response.raw_output_contents, strict=True):
        assert not tensor.HasField("contents")
        dtype = {"FP32": "<f4", "INT32": "<i4"}[tensor.datatype]
        out[tensor.name] = np.frombuffer(data, dtype=dtype).reshape(list(tensor.shape))
    return out


def family_name(family: int) -> str:
    return registry_pb2.ModelFamily.Name(family).removeprefix("MODEL_FAMILY_").lower()


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture
def oip(trained: Running) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(trained.client.channel)


def _error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


# --- health and metadata ------------------------------------------------------------


def test_server_is_live_and_ready_and_says_who_it_is(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert oip.ServerLive(pb.ServerLiveRequest()).live is True
    assert oip.ServerReady(pb.ServerReadyRequest()).ready is True
    meta = oip.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "sahayak-rpc"
    assert meta.version == trained.client.server_status().server_version
    assert trained.client.health("inference.GRPCInferenceService") == "SERVING"


def test_model_ready_means_a_servable_champion_or_version(
    trained: Running, oip: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert oip.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready is True
    assert oip.ModelReady(pb.ModelReadyRequest(name=MODEL, version="1")).ready is True
    assert oip.ModelReady(pb.ModelReadyRequest(name=MODEL, version="999")).ready is False
    assert oip.ModelReady(pb.ModelReadyRequest(name="ghost")).ready is False
    trained.client.create_model("untrained-oip", DEMO_SCHEMA.features, DEMO_SCHEMA.label)
    assert oip.ModelReady(pb.ModelReadyRequest(name="untrained-oip")).ready is False
    err = _error(oip.ModelReady, pb.ModelReadyRequest(name=MODEL, version="v1"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "version" in err.details()


def test_model_metadata_describes_versions_tensors_and_the_layout(
    trained: Running, oip: pb_grpc.GRPCInferenceServiceStub
) -> None:
    meta, call = oip.ModelMetadata.with_call(pb.ModelMetadataRequest(name=MODEL))
    champion = trained.client.get_version(MODEL)
    assert meta.name == MODEL
    assert meta.versions == [
        str(v.version) for v in sorted(trained.client.list_versions(MODEL), key=lambda v: v.version)
    ]
    assert str(champion.version) in meta.versions
    assert meta.platform == f"sahayak_{family_name(champion.family)}"
    # The whole-row tensor, then one input per feature, named as the feature (the other form).
    kinds = {FeatureType.NUMERIC: "FP64", FeatureType.BOOLEAN: "BOOL", FeatureType.CATEGORICAL: "BYTES"}
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("features", "FP32", [-1, WIDTH])] + [
        (f.name, kinds[f.type], [-1, 1]) for f in DEMO_SCHEMA.features
    ]
    assert ("craft", "BYTES", [-1, 1]) in [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    assert ("has_bank_account", "BOOL", [-1, 1]) in [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("probability", "FP32", [-1, 1]),
        ("label", "INT32", [-1, 1]),
    ]
    headers = dict(call.initial_metadata())
    layout = json.loads(headers["sahayak-input-layout"])
    assert [c["name"] for c in layout] == [f.name for f in DEMO_SCHEMA.features]
    craft = next(c for c in layout if c["name"] == "craft")
    assert craft["type"] == "categorical" and craft["categories"] == list(DEMO_SCHEMA.feature("craft").categories)
    assert next(c for c in layout if c["name"] == "has_bank_account")["type"] == "boolean"
    assert float(headers["sahayak-label-threshold"]) == pytest.approx(champion.decision_threshold)

    err = _error(oip.ModelMetadata, pb.ModelMetadataRequest(name="ghost"))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "ghost" in err.details()
    err = _error(oip.ModelMetadata, pb.ModelMetadataRequest(name=MODEL, version="999"))
    assert err.code() is grpc.StatusCode.NOT_FOUND


# --- inference ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_infer_equals_predict(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub, raw: bool) -> None:
    x = encode(sample_rows(40, seed=11))
    response = oip.ModelInfer(infer_request(x, raw=raw, request_id="req-7"))
    champion = trained.client.get_version(MODEL)
    assert (response.model_name, response.model_version, response.id) == (MODEL, str(champion.version), "req-7")
    assert [t.name for t in response.outputs] == ["probability", "label"]
    out = outputs_of(response)
    assert out["probability"].shape == (40, 1) and out["label"].shape == (40, 1)
    for i, row in enumerate(decode(x)):
        want = trained.client.predict(MODEL, row)
        assert abs(float(out["probability"][i, 0]) - want.probability) <= 1e-6, (i, row)
        assert out["label"][i, 0] == (1 if want.label == common_pb2.LABEL_POSITIVE else 0)
    # Not every row on one side of the threshold: the label output carries information.
    assert 0 < out["label"].sum() < 40


@pytest.mark.parametrize("family", ["logistic_regression", "gradient_boosting"])
def test_one_row_calls_answer_as_predict_does(
    trained: Running, oip: pb_grpc.GRPCInferenceServiceStub, family: str
) -> None:
    """A one-row tensor takes the server's single-row path: the same answer as Predict, for both families."""
    run = trained.client.train(MODEL, families=[family])
    version = run.produced_version
    assert version, run.end_reason
    rows = sample_rows(25, seed=23)
    x = encode(rows)
    labels = set()
    for i, row in enumerate(decode(x)):
        response = oip.ModelInfer(infer_request(x[i : i + 1], version=str(version)))
        out = outputs_of(response)
        want = trained.client.predict(MODEL, row, version=version)
        assert response.model_version == str(version)
        assert out["probability"].shape == (1, 1) and out["label"].shape == (1, 1)
        assert abs(float(out["probability"][0, 0]) - want.probability) <= 1e-6, (i, row)
        assert out["label"][0, 0] == (1 if want.label == common_pb2.LABEL_POSITIVE else 0)
        labels.add(int(out["label"][0, 0]))
    assert labels == {0, 1}
    # The one-row batch is what the batch path answers for the same row.
    many = outputs_of(oip.ModelInfer(infer_request(x, version=str(version))))["probability"][:, 0]
    ones = [
        outputs_of(oip.ModelInfer(infer_request(x[i : i + 1], version=str(version))))["probability"][0, 0]
        for i in range(len(x))
    ]
    assert np.allclose(many, ones, rtol=0, atol=1e-6)


def test_fp64_input_is_accepted_too(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    x = encode(sample_rows(5, seed=12), dtype=np.float64)
    for raw in (True, False):
        out = outputs_of(oip.ModelInfer(infer_request(x, raw=raw, datatype="FP64")))
        for i, row in enumerate(decode(x)):
            assert abs(float(out["probability"][i, 0]) - trained.client.predict(MODEL, row).probability) <= 1e-6


def test_requested_outputs_come_back_alone_and_in_order(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    x = encode(sample_rows(6, seed=13))
    full = outputs_of(oip.ModelInfer(infer_request(x)))
    only = oip.ModelInfer(infer_request(x, outputs=["label"]))
    assert [t.name for t in only.outputs] == ["label"] and len(only.raw_output_contents) == 1
    np.testing.assert_array_equal(outputs_of(only)["label"], full["label"])
    swapped = oip.ModelInfer(infer_request(x, outputs=["label", "probability"]))
    assert [t.name for t in swapped.outputs] == ["label", "probability"]
    np.testing.assert_array_equal(outputs_of(swapped)["probability"], full["probability"])


def test_explicit_version_selects_it(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    # A second version of the other family, so the two versions' scores differ.
    first = trained.client.get_version(MODEL)
    other = "gradient_boosting" if family_name(first.family) == "logistic_regression" else "logistic_regression"
    run = trained.client.train(MODEL, families=[other])
    assert run.produced_version, run.end_reason
    x = encode(sample_rows(300, seed=14))
    by_version = {}
    for version in (first.version, run.produced_version):
        response = oip.ModelInfer(infer_request(x, version=str(version)))
        assert response.model_version == str(version)
        by_version[version] = probs = outputs_of(response)["probability"][:, 0]
        for i, row in enumerate(decode(x)):
            assert abs(float(probs[i]) - trained.client.predict(MODEL, row, version=version).probability) <= 1e-6
    assert not np.allclose(by_version[first.version], by_version[run.produced_version])
    champion = trained.client.get_version(MODEL).version
    assert oip.ModelInfer(infer_request(x)).model_version == str(champion)


def test_an_empty_batch_is_answered_with_empty_outputs(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    out = outputs_of(oip.ModelInfer(infer_request(np.zeros((0, WIDTH), dtype=np.float32))))
    assert out["probability"].shape == (0, 1) and out["label"].shape == (0, 1)


@pytest.mark.parametrize("n, i", [(12, 3), (1, 0)], ids=["batch", "one-row"])
def test_inferences_reach_the_prediction_log(
    trained: Running, oip: pb_grpc.GRPCInferenceServiceStub, n: int, i: int
) -> None:
    """Row i of a logged inference reads back as sent under "<batch_id>:<i>"; a one-row tensor (logged
    as one prediction, as Predict logs) keeps that id, and has no row 1."""
    model_id = trained.server.catalog.get(MODEL).id
    trained.server.predlog.flush()
    before = trained.server.ctx.predictions.count(model_id)
    rows = sample_rows(n, seed=15 if n > 1 else 19)
    response = oip.ModelInfer(infer_request(encode(rows)))
    trained.server.predlog.flush()
    assert trained.server.ctx.predictions.count(model_id) == before + n
    batch_id = response.parameters["batch_id"].string_param
    stored = trained.server.ctx.predictions.get(f"{batch_id}:{i}")
    assert stored is not None and stored.prediction_id == f"{batch_id}:{i}"
    if n == 1:
        assert trained.server.ctx.predictions.get(f"{batch_id}:1") is None
    logged, sent = json.loads(stored.features_json), decode(encode(rows[i : i + 1]))[0]
    assert logged.keys() == sent.keys()
    for name, value in sent.items():
        # Numbers are logged in the precision they came in: the same float32.
        same = np.float32(logged[name]) == np.float32(value) if isinstance(value, float) else logged[name] == value
        assert same, (name, logged[name], value)
    out = outputs_of(response)
    assert abs(stored.probability - float(out["probability"][i, 0])) <= 1e-6
    assert stored.label == int(out["label"][i, 0])


# --- named inputs: one per feature -------------------------------------------------------


def length_prefixed(values: Sequence[bytes]) -> bytes:
    """V2's raw BYTES: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def named_request(
    rows: Sequence[Mapping[str, Any]],
    schema: Schema = DEMO_SCHEMA,
    *,
    raw: bool = True,
    model: str = MODEL,
    version: str = "",
    one_d: Sequence[str] = (),
    datatypes: Mapping[str, str] | None = None,
    leave_out: Sequence[str] = (),
) -> pb.ModelInferRequest:
    """Rows as one input per feature, as documented (written independently of the server's code): a numeric
    as FP64 (NaN missing), a boolean as BOOL, a categorical as its UTF-8 bytes ("" missing); shape [n, 1]
    ([n] for the names in ``one_d``); ``datatypes`` picks another accepted datatype for a feature."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    n = len(rows)
    for f in schema.features:
        if f.name in leave_out:
            continue
        values = [row.get(f.name) for row in rows]
        default = {FeatureType.NUMERIC: "FP64", FeatureType.BOOLEAN: "BOOL", FeatureType.CATEGORICAL: "BYTES"}
        datatype = (datatypes or {}).get(f.name, default[f.type])
        tensor = request.inputs.add(name=f.name, datatype=datatype, shape=[n] if f.name in one_d else [n, 1])
        if datatype == "BYTES":
            items = [b"" if v is None else str(v).encode() for v in values]
            if raw:
                request.raw_input_contents.append(length_prefixed(items))
            else:
                tensor.contents.bytes_contents.extend(items)
            continue
        dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "|b1"}[datatype]
        array = np.array([np.nan if v is None else float(v) for v in values]).astype(dtype)
        if raw:
            request.raw_input_contents.append(array.tobytes())
        else:
            field = {
                "FP64": "fp64_contents",
                "FP32": "fp32_contents",
                "INT64": "int64_contents",
                "INT32": "int_contents",
                "BOOL": "bool_contents",
            }[datatype]
            getattr(tensor.contents, field).extend(array.tolist())
    return request


def probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    return outputs_of(response)["probability"][:, 0].astype(np.float64)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_named_inputs_score_as_the_tensor_and_predict_batch(
    trained: Running, oip: pb_grpc.GRPCInferenceServiceStub, raw: bool
) -> None:
    rows = sample_rows(40, seed=41)
    named = oip.ModelInfer(named_request(rows, raw=raw))
    champion = trained.client.get_version(MODEL)
    assert (named.model_name, named.model_version) == (MODEL, str(champion.version))
    assert [t.name for t in named.outputs] == ["probability", "label"]
    tensor = oip.ModelInfer(infer_request(encode(rows, dtype=np.float64), datatype="FP64"))
    batch = trained.client.predict_batch(MODEL, rows)
    np.testing.assert_allclose(probabilities(named), probabilities(tensor), rtol=0, atol=1e-6)
    np.testing.assert_allclose(probabilities(named), batch.probabilities, rtol=0, atol=1e-6)
    labels = outputs_of(named)["label"][:, 0]
    np.testing.assert_array_equal(labels, outputs_of(tensor)["label"][:, 0])
    assert labels.tolist() == [1 if b == common_pb2.LABEL_POSITIVE else 0 for b in batch.labels]
    assert 0 < labels.sum() < 40
    # One row goes the single-row path: the same answer as Predict.
    one = oip.ModelInfer(named_request(rows[:1], raw=raw))
    assert abs(probabilities(one)[0] - trained.client.predict(MODEL, rows[0]).probability) <= 1e-6


def test_named_inputs_take_1d_shapes_and_the_other_datatypes(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    rows = sample_rows(12, seed=42)
    for row in rows:  # whole numbers, so that INT32 / INT64 / FP32 carry them exactly
        row["age"], row["prior_applications"] = float(int(row["age"])), float(int(row["prior_applications"]))
        row["documents_complete_share"] = 0.5
    want = probabilities(oip.ModelInfer(named_request(rows)))
    for raw in (True, False):
        other = named_request(
            rows,
            raw=raw,
            one_d=("age", "craft", "has_bank_account"),
            datatypes={
                "age": "INT64",
                "prior_applications": "INT32",
                "documents_complete_share": "FP32",
                "has_bank_account": "FP64",
                "has_artisan_card": "FP32",
                "scheme_women_priority": "INT32",
            },
        )
        np.testing.assert_allclose(probabilities(oip.ModelInfer(other)), want, rtol=0, atol=1e-6)


def test_missing_named_values(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    """An optional feature is missing when its input is left out, when a number is NaN, and when a
    category is the empty string: as Predict scores a row without it."""
    rows = sample_rows(8, seed=43)
    for row in rows:
        row.pop("education", None)
        row.pop("annual_income_inr", None)
    for request in (named_request(rows), named_request(rows, leave_out=("education", "annual_income_inr"))):
        got = probabilities(oip.ModelInfer(request))
        for i, row in enumerate(rows):
            assert abs(got[i] - trained.client.predict(MODEL, row).probability) <= 1e-6, (i, row)


def test_named_inputs_reach_the_prediction_log(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    rows = sample_rows(5, seed=44)
    trained.server.predlog.flush()
    response = oip.ModelInfer(named_request(rows))
    trained.server.predlog.flush()
    stored = trained.server.ctx.predictions.get(f"{response.parameters['batch_id'].string_param}:3")
    assert stored is not None
    logged = json.loads(stored.features_json or "{}")
    assert logged.keys() == rows[3].keys()
    assert all(logged[name] == value for name, value in rows[3].items()), (logged, rows[3])
    assert abs(stored.probability - float(probabilities(response)[3])) <= 1e-6


def _without(name: str) -> Any:
    def mutate(r: pb.ModelInferRequest) -> None:
        k = [t.name for t in r.inputs].index(name)
        del r.inputs[k]
        del r.raw_input_contents[k]

    return mutate


def _set(which: str, **fields: Any) -> Any:
    def mutate(r: pb.ModelInferRequest) -> None:
        tensor = next(t for t in r.inputs if t.name == which)
        for key, value in fields.items():
            if key == "shape":
                tensor.ClearField("shape")
                tensor.shape.extend(value)
            else:
                setattr(tensor, key, value)

    return mutate


def _raw(name: str, data: bytes) -> Any:
    def mutate(r: pb.ModelInferRequest) -> None:
        r.raw_input_contents[[t.name for t in r.inputs].index(name)] = data

    return mutate


def _value(name: str, row: int, value: Any) -> Any:
    """Rebuild the request with one value changed (rows are the mutate's second argument)."""

    def mutate(r: pb.ModelInferRequest, rows: list[dict[str, Any]]) -> None:
        rows[row][name] = value
        r.CopyFrom(named_request(rows))

    return mutate


def _mix(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="features", datatype="FP32", shape=[3, WIDTH])
    r.raw_input_contents.append(encode(sample_rows(3, seed=45)).tobytes())


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (_set("age", name="Age"), "inputs[0].name", "unknown input 'Age'"),
        (_set("craft", datatype="FP32"), "inputs[3].datatype", "send BYTES"),
        (_set("age", datatype="BYTES"), "inputs[0].datatype", "send FP64 (or FP32, INT64, INT32)"),
        (_set("has_bank_account", datatype="INT8"), "inputs[8].datatype", "send BOOL"),
        (_set("age", shape=[2, 1]), "inputs[1].shape", "has 3 rows and inputs[0] ('age') has 2"),
        (_set("state", shape=[2]), "inputs[4].shape", "has 2 rows and inputs[0] ('age') has 3"),
        (_set("state", shape=[3, 2]), "inputs[4].shape", "[n, 1] or [n]"),
        (_without("state"), "inputs", "no input for the required feature 'state'"),
        (_set("education", name="craft"), "inputs[7].name", "given twice (also inputs[3])"),
        (_mix, "inputs", "exactly one input"),
        (_raw("craft", b"\x09\0\0\0potter"), "raw_input_contents[3]", "element 0 declares 9 bytes; only 6 are left"),
        (_raw("craft", b""), "raw_input_contents[3]", "inside element 0's 4-byte length"),
        (_raw("has_bank_account", b"\1\2\0"), "has_bank_account[1]", "0 (false) or 1 (true)"),
        (_raw("age", b"\0" * 8), "raw_input_contents[0]", "needs 24"),
        (lambda r: r.raw_input_contents.pop(), "raw_input_contents", "has 21 entries for 22 inputs"),
        (_value("craft", 2, "goldsmith"), "craft[2]", "'goldsmith' is not one of the declared categories"),
        (_value("age", 1, 5.0), "age[1]", "5.0 is below the minimum 18.0"),
        (_value("state", 2, ""), "state[2]", "required feature is missing"),
        (_value("age", 0, None), "age[0]", "required feature is missing"),
    ],
    ids=[
        "unknown-name",
        "categorical-datatype",
        "numeric-datatype",
        "boolean-datatype",
        "rows",
        "rows-1d",
        "width",
        "missing-required",
        "duplicate",
        "mixed-with-features",
        "bytes-short",
        "bytes-empty",
        "bool-byte",
        "raw-size",
        "raw-count",
        "unknown-category",
        "below-minimum",
        "empty-required-category",
        "nan-required",
    ],
)
def test_bad_named_inputs_are_invalid_argument_naming_the_input(
    oip: pb_grpc.GRPCInferenceServiceStub, mutate: Any, field: str, words: str
) -> None:
    rows = sample_rows(3, seed=46)
    request = named_request(rows)
    if mutate.__code__.co_argcount == 2:
        mutate(request, rows)
    else:
        mutate(request)
    err = _error(oip.ModelInfer, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert f"{field}: " in err.details() and words in err.details(), err.details()


def test_typed_named_contents_must_match(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = named_request(sample_rows(3, seed=47), raw=False)
    request.inputs[3].contents.bytes_contents.pop()
    err = _error(oip.ModelInfer, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[3].contents.bytes_contents: has 2 elements" in err.details(), err.details()
    request = named_request(sample_rows(3, seed=47), raw=False)
    request.inputs[0].contents.fp32_contents.append(1.0)
    err = _error(oip.ModelInfer, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "inputs[0].contents.fp32_contents" in err.details()


NAMED_FEATURES = [
    FeatureSpec("Age Years", FeatureType.NUMERIC, required=True, min=0, max=100),
    FeatureSpec("Monthly Income", FeatureType.NUMERIC),
    FeatureSpec("is-member", FeatureType.BOOLEAN),
    FeatureSpec("Home Region", FeatureType.CATEGORICAL, categories=("North East", "South", "Dakṣiṇa")),
    FeatureSpec("features", FeatureType.NUMERIC),  # a feature may even be called "features"
]


def named_rows(n: int, seed: int) -> list[tuple[dict[str, Any], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        row: dict[str, Any] = {
            "Age Years": float(rng.randint(18, 80)),
            "Monthly Income": round(rng.uniform(1, 9), 2),
            "is-member": rng.random() < 0.5,
            "Home Region": rng.choice(("North East", "South", "Dakṣiṇa")),
            "features": round(rng.uniform(0, 5), 2),
        }
        z = 0.05 * row["Age Years"] + 0.5 * row["Monthly Income"] - 0.8 * row["features"] - 2.0
        z += 1.0 if row["is-member"] else 0.0
        z += 1.0 if row["Home Region"] == "South" else 0.0
        out.append((row, rng.random() < 1 / (1 + math.exp(-z))))
    return out


def test_names_with_capitals_spaces_and_features_itself(
    trained: Running, oip: pb_grpc.GRPCInferenceServiceStub
) -> None:
    from sahayak_rpc.client import OutcomeInput

    c = trained.client
    c.create_model("oip-names", NAMED_FEATURES, LabelSpec("Approved", "yes", "no"))
    c.import_outcomes("oip-names", [OutcomeInput(row, label) for row, label in named_rows(600, seed=48)])
    run = c.train("oip-names", families=["logistic_regression"])
    assert run.produced_version, run.end_reason
    version = str(run.produced_version)
    schema = Schema(tuple(NAMED_FEATURES), LabelSpec("Approved", "yes", "no"))

    # A feature named "features" takes that name: the tensor is not listed, the feature is, once.
    meta = oip.ModelMetadata(pb.ModelMetadataRequest(name="oip-names", version=version))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("Age Years", "FP64", [-1, 1]),
        ("Monthly Income", "FP64", [-1, 1]),
        ("is-member", "BOOL", [-1, 1]),
        ("Home Region", "BYTES", [-1, 1]),
        ("features", "FP64", [-1, 1]),
    ]

    rows = [row for row, _ in named_rows(20, seed=49)]
    rows[3].pop("Monthly Income")
    rows[4].pop("Home Region")
    got = probabilities(oip.ModelInfer(named_request(rows, schema, model="oip-names", version=version)))
    for i, row in enumerate(rows):
        assert abs(got[i] - c.predict("oip-names", row, version=int(version)).probability) <= 1e-6, (i, row)
    assert len(set(got.round(6).tolist())) > 10
    # The [n, 5] tensor still works for such a model: a one-input request of that shape is the tensor.
    tensor = oip.ModelInfer(
        infer_request(encode(rows, schema, dtype=np.float64), datatype="FP64", model="oip-names", version=version)
    )
    np.testing.assert_allclose(probabilities(tensor), got, rtol=0, atol=1e-6)
    # Errors name the input as sent, spaces and all.
    bad = named_request(rows, schema, model="oip-names", version=version)
    bad.inputs[0].name = "age years"
    err = _error(oip.ModelInfer, bad)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "unknown input 'age years'" in err.details()
    rows[5]["Age Years"] = 140.0
    err = _error(oip.ModelInfer, named_request(rows, schema, model="oip-names", version=version))
    assert "Age Years[5]: 140.0 is above the maximum 100.0" in err.details(), err.details()
    rows[5]["Age Years"], rows[6]["Home Region"] = 40.0, "dakṣiṇa"
    err = _error(oip.ModelInfer, named_request(rows, schema, model="oip-names", version=version))
    assert "Home Region[6]: 'dakṣiṇa' is not one of the declared categories" in err.details(), err.details()


# --- errors ---------------------------------------------------------------------------


def test_unknown_model_is_not_found(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    err = _error(oip.ModelInfer, infer_request(encode(sample_rows(2, seed=16)), model="ghost"))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "ghost" in err.details()


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([3, WIDTH - 1]), "[n, 22]"),
        (lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([3 * WIDTH]), "[n, 22]"),
        (lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([4, WIDTH]), "bytes"),
        (lambda r: setattr(r.inputs[0], "datatype", "INT32"), "FP32"),
        (lambda r: setattr(r.inputs[0], "name", "input__0"), "'features'"),
        (lambda r: r.raw_input_contents.append(b"\0" * 4), "entries"),
        (lambda r: r.inputs.add(name="extra", datatype="FP32", shape=[3, 1]), "exactly one input"),
        (lambda r: r.outputs.add(name="score"), "unknown output"),
        (lambda r: setattr(r, "model_version", "latest"), "version number"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), "not both"),
    ],
    ids=[
        "width",
        "one-dimensional",
        "rows",
        "datatype",
        "input-name",
        "two-blobs",
        "two-inputs",
        "output-name",
        "version-text",
        "raw-and-typed",
    ],
)
def test_malformed_requests_are_invalid_argument(
    oip: pb_grpc.GRPCInferenceServiceStub, mutate: Any, words: str
) -> None:
    request = infer_request(encode(sample_rows(3, seed=17)))
    mutate(request)
    err = _error(oip.ModelInfer, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert words in err.details()


def test_typed_contents_must_match_the_shape_and_datatype(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    x = encode(sample_rows(3, seed=18))
    request = infer_request(x, raw=False)
    request.inputs[0].contents.fp32_contents.pop()
    err = _error(oip.ModelInfer, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "fp32_contents" in err.details()
    request = infer_request(x, raw=False)
    request.inputs[0].contents.int_contents.append(1)
    err = _error(oip.ModelInfer, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "int_contents" in err.details()


@pytest.mark.parametrize("rows,bad", [(4, 2), (1, 0)], ids=["batch", "one-row"])
def test_bad_values_name_the_row_and_feature(oip: pb_grpc.GRPCInferenceServiceStub, rows: int, bad: int) -> None:
    names = [f.name for f in DEMO_SCHEMA.features]
    craft, age, bank, state, income = (
        names.index(n) for n in ("craft", "age", "has_bank_account", "state", "annual_income_inr")
    )
    for col, value, words in [
        (craft, 10.0, "craft"),
        (craft, 1.5, "craft"),
        (craft, -1.0, "craft"),
        (age, 5.0, "below the minimum"),
        (age, np.inf, "must be finite"),
        (age, np.nan, "required feature is missing"),
        (bank, 2.0, "has_bank_account"),
        (bank, 0.5, "a boolean is 0"),
        (state, np.nan, "state"),
        (income, 1e101, "beyond the limit"),
    ]:
        x = encode(sample_rows(rows, seed=19), dtype=np.float64)
        x[bad, col] = value
        err = _error(oip.ModelInfer, infer_request(x, datatype="FP64"))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (words, value, err.details())
        assert f"features[{bad}, {col}] ({names[col]})" in err.details() and words in err.details(), err.details()


def test_an_unknown_version_is_not_found(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    err = _error(oip.ModelInfer, infer_request(encode(sample_rows(2, seed=20)), version="999"))
    assert err.code() is grpc.StatusCode.NOT_FOUND


def test_a_model_without_champion_fails_precondition(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    if "untrained-oip2" not in {m.name for m in trained.client.list_models()}:
        trained.client.create_model("untrained-oip2", DEMO_SCHEMA.features, DEMO_SCHEMA.label)
    err = _error(oip.ModelInfer, infer_request(encode(sample_rows(2, seed=21)), model="untrained-oip2"))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and "champion" in err.details()


def test_rpcs_outside_the_core_protocol_are_unimplemented(trained: Running) -> None:
    # Triton's extensions (statistics, repository, shared memory...) are not served.
    call = trained.client.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelStatistics",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=30)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert trained.client.health() == "SERVING"


def test_reflection_describes_the_service(trained: Running) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(trained.client.channel))
    service = pool.FindServiceByName("inference.GRPCInferenceService")
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    assert service.methods_by_name["ModelInfer"].input_type.fields_by_name["raw_input_contents"].number == 7
