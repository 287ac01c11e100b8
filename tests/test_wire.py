"""A single-row Predict read from its bytes and answered in bytes (sahayak_rpc.wire): held to the long
way (protobuf's parse, the schema's checks, explain_one, protobuf's response) request for request."""

from __future__ import annotations

import dataclasses
import math
import struct

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sahayak_rpc.api.convert import contributions_to_proto, row_from_proto
from sahayak_rpc.client import fill_features
from sahayak_rpc.app.inference import MatrixCheck
from sahayak_rpc.demo_data import DEMO_SCHEMA, generate_outcomes
from sahayak_rpc.schema import FeatureType
from sahayak_rpc.scoring import LinearScorer
from sahayak_rpc.training import Trainer
from sahayak_rpc.settings import ModelSettings
from sahayak_rpc.wire import PredictReader, PredictWriter, WireRow, model_name
from sahayak_rpc._proto.sahayak.v1 import common_pb2, inference_pb2

from .conftest import Running, load_demo_rows
from .test_pipeline import data as training_data

MODEL = "scheme-sahayak"
READER = PredictReader(DEMO_SCHEMA)
CHECK = MatrixCheck(DEMO_SCHEMA)
ROWS = [e.features for e in generate_outcomes(60, seed=3)]
# Values that break a rule or that only the long way takes: wrong kinds, bounds, NaN, infinities,
# unknown categories, empty strings, an empty FeatureValue (None), a long string.
ODD = [None, math.nan, math.inf, -math.inf, -1.0, 1e101, 17.0, 0.0, -0.0, 1.0, 5e-324, True, False, "weaver",
       "atlantis", "", "x" * 300, "é"]


def request_for(row: dict, **fields: object) -> inference_pb2.PredictRequest:
    """As the Python client writes it (fill_features), and None as an empty FeatureValue: missing."""
    request = inference_pb2.PredictRequest(model=MODEL, **fields)
    fill_features(request.features, row)
    for name in (name for name, value in row.items() if value is None):
        request.features[name].SetInParent()
    return request


def plain(request: inference_pb2.PredictRequest) -> bool:
    """What the reader must read: a valid row, every value set and every category declared, no entities,
    a version a float64 holds exactly."""
    row = row_from_proto(request.features)
    if DEMO_SCHEMA.validate_row(row) or request.entities or not request.model or abs(request.version) > 2**53:
        return False
    if any(fv.WhichOneof("kind") is None for fv in request.features.values()):
        return False
    return all(f.type is not FeatureType.CATEGORICAL or row.get(f.name) in (None, *f.categories)
               for f in DEMO_SCHEMA.features)


def read(data: bytes, tables: tuple | None = None, owner: object = None) -> WireRow | None:
    """As the server reads a Predict: the model's name from the front of the bytes, then the rest."""
    name = model_name(data)
    return None if name is None else READER.read(data, name, tables, owner)


def assert_read_as_protobuf_parses(data: bytes, got: WireRow) -> None:
    """A request the reader read is one protobuf parses to the same fields and a valid row of the same values."""
    parsed = inference_pb2.PredictRequest.FromString(data)
    assert (got.model, got.version, got.alias, got.explain_top_k) == \
        (parsed.model, parsed.version, parsed.alias, parsed.explain_top_k)
    assert not parsed.entities
    row = row_from_proto(parsed.features)
    assert not DEMO_SCHEMA.validate_row(row)
    assert CHECK.row_of(got.x) == row
    assert all(type(a) is type(b) for a, b in zip(CHECK.row_of(got.x).values(), [row[k] for k in CHECK.row_of(got.x)]))


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_reader_reads_exactly_the_plain_requests_and_as_protobuf_does(data) -> None:
    row = dict(data.draw(st.sampled_from(ROWS)))
    for name, value in data.draw(st.lists(st.tuples(st.sampled_from(DEMO_SCHEMA.names + ["no_such_feature", ""]),
                                                    st.sampled_from([*ODD, "drop"])), max_size=3)):
        if value == "drop":
            row.pop(name, None)
        else:
            row[name] = value
    fields = data.draw(st.fixed_dictionaries({}, optional={
        "version": st.sampled_from([1, 127, 128, 2**40, -1, -(2**63)]),
        "alias": st.sampled_from(["champion", "challenger", "é" * 3, "a" * 200]),
        "explain_top_k": st.sampled_from([1, 3, 22, 200, -1, -(2**31), 2**31 - 1]),
        "entities": st.sampled_from([{"artisan_id": "A1"}]),
    }))
    request = request_for(row, **fields)
    data_bytes = request.SerializeToString()
    got = read(data_bytes)
    if got is None:
        assert not plain(request), "a plain request missed the fast path"
    else:
        assert plain(request)
        assert_read_as_protobuf_parses(data_bytes, got)


def _mutations() -> st.SearchStrategy:
    byte = st.integers(0, 255)
    return st.lists(st.one_of(
        st.tuples(st.just("set"), st.integers(0, 10_000), byte),
        st.tuples(st.just("insert"), st.integers(0, 10_000), byte),
        st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 12)),
        st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
        st.tuples(st.just("repeat"), st.integers(0, 10_000), st.integers(1, 40)),
    ), min_size=1, max_size=4)


@settings(max_examples=1500, deadline=None)
@given(row=st.sampled_from(ROWS), mutations=_mutations())
def test_bytes_the_reader_reads_are_bytes_protobuf_parses_the_same(row, mutations) -> None:
    """Damaged requests (bytes changed, added, dropped, cut, a stretch repeated): whatever the reader
    reads, protobuf parses, to the same request, and its row passes the schema's checks."""
    buf = bytearray(request_for(row, explain_top_k=2).SerializeToString())
    for op, at, arg in mutations:
        at %= len(buf) + 1
        if op == "set" and at < len(buf):
            buf[at] = arg
        elif op == "insert":
            buf[at:at] = bytes([arg])
        elif op == "delete":
            del buf[at:at + arg]
        elif op == "truncate":
            del buf[at:]
        elif op == "repeat":
            buf[at:at] = buf[at:at + arg]
        if not buf:
            return
    got = read(bytes(buf))
    if got is not None:
        assert_read_as_protobuf_parses(bytes(buf), got)


def test_what_protobuf_would_take_differently_is_left_to_it() -> None:
    """A name twice (protobuf keeps the last), a oneof set twice, an unknown field, entities, the
    model's name twice: each read by protobuf, not by the reader."""
    row = ROWS[0]
    request = request_for(row)
    data = request.SerializeToString()
    assert read(data) is not None
    entry = inference_pb2.PredictRequest(features={"age": common_pb2.FeatureValue(number_value=40.0)}).SerializeToString()
    twice = b"\x09" + struct.pack("<d", 40.0) + b"\x09" + struct.pack("<d", 41.0)  # number_value twice
    odd_entry = b"\x0a\x03age\x12" + bytes([len(twice)]) + twice
    without_age = request_for({k: v for k, v in row.items() if k != "age"}).SerializeToString()
    odd = [
        data + entry,  # "age" again
        without_age + b"\x22" + bytes([len(odd_entry)]) + odd_entry,
        data + b"\x38\x01",  # field 7, unknown
        data + b"\x32\x09\x0a\x01a\x12\x04A1xx",  # an entities entry
        data + b"\x0a\x03abc",  # the model's name twice
        b"",
    ]
    boolean = next(f.name for f in DEMO_SCHEMA.features if f.type is FeatureType.BOOLEAN)
    two = request_for({k: v for k, v in row.items() if k != boolean}).SerializeToString()
    entry = b"\x0a" + bytes([len(boolean)]) + boolean.encode() + b"\x12\x02\x18\x02"  # bool_value as 2
    odd.append(two + b"\x22" + bytes([len(entry)]) + entry)
    for blob in odd:
        assert read(blob) is None
        if blob:
            inference_pb2.PredictRequest.FromString(blob)  # protobuf reads them all
    # A varint of ten bytes whose last carries bits past the 64th: both drop them.
    for last in (b"\x01", b"\x7f"):
        blob = data + b"\x10" + b"\xff" * 9 + last
        got = read(blob)
        assert got is not None and got.version == -1
        assert_read_as_protobuf_parses(blob, got)
    assert read(data + b"\x10" + b"\xff" * 10 + b"\x01") is None  # eleven bytes: protobuf refuses too
    with pytest.raises(Exception):
        inference_pb2.PredictRequest.FromString(data + b"\x10" + b"\xff" * 10 + b"\x01")


@pytest.fixture(scope="module")
def models():
    run = Trainer(DEMO_SCHEMA, ModelSettings()).run(training_data(3000), ["logistic_regression", "gradient_boosting"],
                                                     "stratified")
    linear = next(c.model for c in run.candidates if c.model.linear is not None)
    trees = next(c.model for c in run.candidates if c.model.trees is not None)
    return linear, trees


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_read_row_is_explained_as_explain_one_explains_it(models, data) -> None:
    """The compiled explanation of a read row is explain_one's to the bit, ranking ties included
    (a model with every weight zero ties every feature), for a linear model and for trees."""
    linear, trees = models
    lin = linear.linear
    flat = dataclasses.replace(linear, linear=LinearScorer(lin.encoder, np.zeros_like(lin.weights), lin.intercept,
                                                           lin.column_means))
    row = dict(data.draw(st.sampled_from(ROWS)))
    for name in data.draw(st.lists(st.sampled_from([f.name for f in DEMO_SCHEMA.features if not f.required]),
                                   max_size=4)):
        row.pop(name, None)
    got = read(request_for(row).SerializeToString())
    assert got is not None
    k = data.draw(st.sampled_from([0, 1, 3, 22, 40]))
    asked = data.draw(st.sampled_from([0, 1, 3, 22, 40, -1]))  # explain_top_k as sent: 0 means 3
    for model in (linear, flat):
        prob, parts, columns = model.explain_raw(got.x, k)
        assert (prob, parts) == model.explain_one(row, k)
        assert [DEMO_SCHEMA.features[j].name for j in columns] == [name for name, _ in parts]
        # Explained as it is read, with the explain_top_k the request asks for.
        answer = read(request_for(row, explain_top_k=asked).SerializeToString(), model.explain_tables(), "owner")
        assert answer is not None and answer.explained == "owner"
        prob, top = model.explained(answer.explanation)
        expected, parts, columns = model.explain_raw(got.x, 3 if asked == 0 else max(asked, 0))
        assert prob == expected and [c for c, _, _ in top] == [c for _, c in parts]
        assert [j for _, j, _ in top] == columns
        np.testing.assert_array_equal([v for _, _, v in top], [got.x[j] for j in columns])  # NaN: absent
        # A version of 0 and an empty alias written out (as protobufjs writes them) name the champion too.
        written = read(request_for(row, explain_top_k=asked).SerializeToString() + b"\x10\x00\x1a\x00",
                       model.explain_tables(), "owner")
        assert written is not None and written.explained == "owner"
        np.testing.assert_array_equal(written.explanation, answer.explanation)  # NaN: an absent value
        # Not when the request names a version or an alias: the answer may come from another model.
        for fields in ({"version": 2}, {"alias": "champion"}):
            answer = read(request_for(row, **fields).SerializeToString(), model.explain_tables(), "owner")
            assert answer is not None and answer.explained is None
    # Trees: the compiled walk and path attributions (kernels.tree_explain), to the bit too.
    prob, parts, columns = trees.explain_raw(got.x, k)
    assert (prob, parts) == trees.explain_one(row, k)
    assert [DEMO_SCHEMA.features[j].name for j in columns] == [name for name, _ in parts]
    assert trees.explain_tables() is None  # not explained as read: the request may name another version


@settings(max_examples=300, deadline=None)
@given(row=st.sampled_from(ROWS), drop=st.lists(st.sampled_from(DEMO_SCHEMA.names), max_size=4),
       prob=st.sampled_from([0.0, 0.5, 1e-300, 1.0]), version=st.sampled_from([1, 127, 128, 300, 2**40]),
       label=st.booleans(), pid=st.sampled_from(["p1", "p" + "a" * 200]))
def test_the_written_response_is_the_message_protobuf_builds(row, drop, prob, version, label, pid) -> None:
    row = {k: v for k, v in row.items() if k not in drop}
    x = [math.nan if (v := row.get(f.name)) is None else
         float(f.categories.index(v)) if f.type is FeatureType.CATEGORICAL else float(v)
         for f in DEMO_SCHEMA.features]
    columns = list(range(len(DEMO_SCHEMA.features)))
    parts = [(f.name, 0.25 * j - 1) for j, f in enumerate(DEMO_SCHEMA.features)]
    code = common_pb2.LABEL_POSITIVE if label else common_pb2.LABEL_NEGATIVE
    written = PredictWriter(DEMO_SCHEMA).write(pid, prob, code, version, [(c, j, x[j]) for (_, c), j in zip(parts, columns)])
    expected = inference_pb2.PredictResponse(prediction_id=pid, probability=prob, label=code, version=version)
    contributions_to_proto(parts, row, expected.contributions)
    assert inference_pb2.PredictResponse.FromString(written) == expected


@pytest.mark.parametrize("family", ["logistic_regression", "gradient_boosting"])
def test_predict_answers_and_logs_the_same_read_or_parsed(running: Running, family: str) -> None:
    """Over gRPC: the same rows sent plainly (read from the bytes) and with the model's name last
    (which only protobuf reads) get the same answers, and the log keeps the same rows."""
    import orjson

    c = running.client
    load_demo_rows(c, 1200)
    assert c.train(MODEL, families=[family]).promoted
    servicer = running.server.servicers["sahayak.v1.InferenceService"]
    call = c.channel.unary_unary("/sahayak.v1.InferenceService/Predict",
                                 response_deserializer=inference_pb2.PredictResponse.FromString)
    rows = [dict(e.features) for e in generate_outcomes(25, seed=9)]
    for i in range(0, 25, 4):
        rows[i].pop("education", None)
    for i, row in enumerate(rows):
        data = request_for(row, explain_top_k=[0, 1, 3, 30, -1][i % 5]).SerializeToString()
        cut = len(MODEL) + 2
        assert isinstance(servicer.read_predict(data), WireRow)
        assert isinstance(servicer.read_predict(data[cut:] + data[:cut]), inference_pb2.PredictRequest)
        fast, slow = call(data), call(data[cut:] + data[:cut])
        assert fast.prediction_id != slow.prediction_id
        assert (fast.probability, fast.label, fast.version) == (slow.probability, slow.label, slow.version)
        assert list(fast.contributions) == list(slow.contributions)
        running.server.predlog.flush()
        for answer in (fast, slow):
            stored = running.server.ctx.predictions.get(answer.prediction_id)
            assert stored is not None and orjson.loads(stored.features_json) == row and stored.probability == answer.probability


def test_bad_values_read_from_the_bytes_get_the_long_way_s_errors(running: Running) -> None:
    """A request the reader turns down is answered by the long way: its errors name the field."""
    c = running.client
    load_demo_rows(c, 1200)
    assert c.train(MODEL, families=["logistic_regression"]).promoted
    call = c.channel.unary_unary("/sahayak.v1.InferenceService/Predict",
                                 response_deserializer=inference_pb2.PredictResponse.FromString)
    row = dict(ROWS[0])
    for name, value, words in (("age", math.inf, "age"), ("craft", "atlantis", "craft"), ("no_such", 1.0, "no_such")):
        with pytest.raises(grpc.RpcError) as info:
            call(request_for({**row, name: value}).SerializeToString())
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        call(request_for(row, version=1, alias="champion").SerializeToString())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "alias" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        call(request_for(row, version=99).SerializeToString())
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
