"""The Open Inference Protocol (KServe V2) service, through our own generated stubs, against a real server."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from sahayak_rpc._proto.inference import open_inference_grpc_pb2 as pb
from sahayak_rpc._proto.inference import open_inference_grpc_pb2_grpc as pb_grpc
from sahayak_rpc._proto.sahayak.v1 import common_pb2, registry_pb2
from sahayak_rpc.demo_data import DEMO_MODEL_NAME as MODEL
from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes
from sahayak_rpc.schema import FeatureType, Schema

from .conftest import Running

WIDTH = len(DEMO_SCHEMA.features)


# --- the documented layout, written out independently of the server's code ---------

def encode(rows: Sequence[Mapping[str, Any]], schema: Schema = DEMO_SCHEMA, dtype: Any = np.float32) -> np.ndarray:
    """Rows as the ``features`` tensor: schema order; numeric value, boolean 0/1,
    categorical index into the declared categories, NaN for missing."""
    x = np.full((len(rows), len(schema.features)), np.nan, dtype=dtype)
    for i, row in enumerate(rows):
        for j, f in enumerate(schema.features):
            v = row.get(f.name)
            if v is None:
                continue
            x[i, j] = f.categories.index(v) if f.type is FeatureType.CATEGORICAL else float(v)
    return x


def decode(x: np.ndarray, schema: Schema = DEMO_SCHEMA) -> list[dict[str, Any]]:
    """The rows a tensor stands for (what Predict must be asked to compare)."""
    rows = []
    for values in x.astype(np.float64).tolist():
        row: dict[str, Any] = {}
        for f, v in zip(schema.features, values, strict=True):
            if math.isnan(v):
                continue
            if f.type is FeatureType.CATEGORICAL:
                row[f.name] = f.categories[int(v)]
            elif f.type is FeatureType.BOOLEAN:
                row[f.name] = v == 1.0
            else:
                row[f.name] = v
        rows.append(row)
    return rows


def infer_request(x: np.ndarray, *, raw: bool = True, version: str = "", outputs: Sequence[str] = (),
                  model: str = MODEL, datatype: str = "FP32", request_id: str = "") -> pb.ModelInferRequest:
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


def sample_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rows = [dict(e.features) for e in generate_outcomes(n, seed=seed)]
    # Make sure missing optional features are in the sample.
    for row, name in zip(rows, ("annual_income_inr", "education", "distance_to_office_km")):
        row.pop(name, None)
    return rows


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


def test_model_ready_means_a_servable_champion_or_version(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert oip.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready is True
    assert oip.ModelReady(pb.ModelReadyRequest(name=MODEL, version="1")).ready is True
    assert oip.ModelReady(pb.ModelReadyRequest(name=MODEL, version="999")).ready is False
    assert oip.ModelReady(pb.ModelReadyRequest(name="ghost")).ready is False
    trained.client.create_model("untrained-oip", DEMO_SCHEMA.features, DEMO_SCHEMA.label)
    assert oip.ModelReady(pb.ModelReadyRequest(name="untrained-oip")).ready is False
    err = _error(oip.ModelReady, pb.ModelReadyRequest(name=MODEL, version="v1"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "version" in err.details()


def test_model_metadata_describes_versions_tensors_and_the_layout(trained: Running,
                                                                  oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    meta, call = oip.ModelMetadata.with_call(pb.ModelMetadataRequest(name=MODEL))
    champion = trained.client.get_version(MODEL)
    assert meta.name == MODEL
    assert meta.versions == [str(v.version) for v in sorted(trained.client.list_versions(MODEL),
                                                               key=lambda v: v.version)]
    assert str(champion.version) in meta.versions
    assert meta.platform == f"sahayak_{family_name(champion.family)}"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("features", "FP32", [-1, WIDTH])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("probability", "FP32", [-1, 1]), ("label", "INT32", [-1, 1])]
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
def test_one_row_calls_answer_as_predict_does(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub,
                                              family: str) -> None:
    """A one-row tensor takes the server's single-row path: the same answer as Predict, for both families."""
    run = trained.client.train(MODEL, families=[family])
    version = run.produced_version
    assert version, run.end_reason
    rows = sample_rows(25, seed=23)
    x = encode(rows)
    labels = set()
    for i, row in enumerate(decode(x)):
        response = oip.ModelInfer(infer_request(x[i:i + 1], version=str(version)))
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
    ones = [outputs_of(oip.ModelInfer(infer_request(x[i:i + 1], version=str(version))))["probability"][0, 0]
            for i in range(len(x))]
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
def test_inferences_reach_the_prediction_log(trained: Running, oip: pb_grpc.GRPCInferenceServiceStub,
                                             n: int, i: int) -> None:
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
    logged, sent = json.loads(stored.features_json), decode(encode(rows[i:i + 1]))[0]
    assert logged.keys() == sent.keys()
    for name, value in sent.items():
        # Numbers are logged in the precision they came in: the same float32.
        same = np.float32(logged[name]) == np.float32(value) if isinstance(value, float) else logged[name] == value
        assert same, (name, logged[name], value)
    out = outputs_of(response)
    assert abs(stored.probability - float(out["probability"][i, 0])) <= 1e-6
    assert stored.label == int(out["label"][i, 0])


# --- errors ---------------------------------------------------------------------------

def test_unknown_model_is_not_found(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    err = _error(oip.ModelInfer, infer_request(encode(sample_rows(2, seed=16)), model="ghost"))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "ghost" in err.details()


@pytest.mark.parametrize("mutate, words", [
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
], ids=["width", "one-dimensional", "rows", "datatype", "input-name", "two-blobs", "two-inputs",
        "output-name", "version-text", "raw-and-typed"])
def test_malformed_requests_are_invalid_argument(oip: pb_grpc.GRPCInferenceServiceStub, mutate: Any, words: str) -> None:
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
    craft, age, bank, state, income = (names.index(n) for n in ("craft", "age", "has_bank_account", "state",
                                                                "annual_income_inr"))
    for col, value, words in [(craft, 10.0, "craft"), (craft, 1.5, "craft"), (craft, -1.0, "craft"),
                              (age, 5.0, "below the minimum"), (age, np.inf, "must be finite"),
                              (age, np.nan, "required feature is missing"), (bank, 2.0, "has_bank_account"),
                              (bank, 0.5, "a boolean is 0"), (state, np.nan, "state"),
                              (income, 1e101, "beyond the limit")]:
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
    call = trained.client.channel.unary_unary("/inference.GRPCInferenceService/ModelStatistics",
                                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=30)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert trained.client.health() == "SERVING"


def test_reflection_describes_the_service(trained: Running) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(trained.client.channel))
    service = pool.FindServiceByName("inference.GRPCInferenceService")
    assert {m.name for m in service.methods} == {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                 "ModelMetadata", "ModelInfer"}
    assert service.methods_by_name["ModelInfer"].input_type.fields_by_name["raw_input_contents"].number == 7
