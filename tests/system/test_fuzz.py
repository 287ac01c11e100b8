"""Property-based fuzzing of every RPC the server serves.

The RPC list is not written down here: it is every service in the generated
stubs under ``sahayak_rpc/_proto`` (any ``*_pb2.py``, so a service added
there is fuzzed without touching this file) plus the standard health and
reflection services, and a test checks that reflection lists nothing else.

For each method hypothesis generates requests from the method's input
descriptor (``tests/fuzz_strategies.py``), biased towards the live model
"scheme-sahayak", its real features and rows, real run / prediction / alert
ids and an exported artifact, so requests get past NOT_FOUND into the deep
code; then it sends raw bytes (noise, malformed wire encodings, damaged good
requests) through a generic ``channel.unary_unary`` with no serializer.

The property: no request is answered UNKNOWN, INTERNAL or DATA_LOSS (the
interceptor maps any exception of ours to INTERNAL, so that is a crash), no
unary call hangs, every reply parses, no error status is too big for the
client to read, and afterwards the server is SERVING, still predicts, and
what the fuzz stored does not break monitoring or training. The last test
checks the budget: at least MIN_REQUESTS requests over every method.

Reproducible: a fixed seed (printed; ``SAHAYAK_FUZZ_SEED`` changes it) and
no example database. ``SAHAYAK_FUZZ_SCALE=10`` runs ten times the examples;
``SAHAYAK_FUZZ_COLLECT=1`` reports every distinct failure at the end instead
of stopping at the first; ``SAHAYAK_FUZZ_VERBOSE=1`` (with ``-s``) prints the
answers per method, to see how deep the requests get.

The regression tests above the fuzz pin each server bug it found.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pbd
from google.protobuf import duration_pb2, message_factory, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import sahayak_rpc._proto as proto_root
from sahayak_rpc._proto.sahayak.v1 import (
    common_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    monitor_pb2,
    monitor_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from sahayak_rpc.api import convert
from sahayak_rpc.demo_data import DEMO_MODEL_NAME, DEMO_SCHEMA, SCHEMES
from sahayak_rpc.schema import FeatureType

from ..helpers import Running, load_demo_rows, start_server, stop_server
from ..fuzz_strategies import FeatureInfo, Hints, Walker, raw_bodies

SEED = int(os.environ.get("SAHAYAK_FUZZ_SEED", "20260101"))
SCALE = float(os.environ.get("SAHAYAK_FUZZ_SCALE", "1"))
# The whole run must send at least this many generated requests.
MIN_REQUESTS = 2000

FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
UNARY_TIMEOUT = 20.0  # a unary call still running after this is a hang
STREAM_TIMEOUT = 0.25  # a stream that legitimately waits ends in DEADLINE_EXCEEDED
STREAM_READ = 3  # messages read from a server stream before cancelling it

# Examples per method grow with the size of its request message (each example
# is one request; a server-streaming example sends a small batch of concurrent
# calls, so their deadlines overlap).
MIN_EXAMPLES, PER_FIELD, MAX_EXAMPLES = 30, 4, 110
RAW_EXAMPLES = 12
STREAM_EXAMPLES = 8
STREAM_BATCH = 4
# Expensive methods: fewer examples, and the strategy's budgets (Hints.budgets)
# limit how many of them do the expensive thing for real.
FEWER = {"StartTraining": 16}


# --- discovery ---------------------------------------------------------------


def _stub_modules() -> list[Any]:
    """Every generated *_pb2 module under sahayak_rpc/_proto, plus the standard services we serve."""
    root = Path(proto_root.__file__).parent
    modules = []
    for path in sorted(root.rglob("*_pb2.py")):
        rel = path.relative_to(root).with_suffix("")
        modules.append(importlib.import_module(".".join([proto_root.__name__, *rel.parts])))
    return [*modules, health_pb2, reflection_pb2]


def discover_methods() -> list[pbd.MethodDescriptor]:
    services: dict[str, pbd.ServiceDescriptor] = {}
    for module in _stub_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            services.setdefault(service.full_name, service)
    return [m for name in sorted(services) for m in services[name].methods]


METHODS = discover_methods()
METHOD_IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]


def _fields(d: pbd.Descriptor, depth: int = 0) -> int:
    """Fields of a message and of its messages, two levels down (well-known types count as one)."""
    n = 0
    for f in d.fields:
        n += 1
        sub = f.message_type
        if sub is not None and depth < 2 and not sub.full_name.startswith("google.protobuf.") and sub is not d:
            n += _fields(sub, depth + 1)
    return n


def examples_for(m: pbd.MethodDescriptor) -> int:
    return FEWER.get(m.name) or min(MAX_EXAMPLES, MIN_EXAMPLES + PER_FIELD * _fields(m.input_type))


def _path(m: pbd.MethodDescriptor) -> str:
    return f"/{m.containing_service.full_name}/{m.name}"


# --- the server under fuzz ---------------------------------------------------


@dataclass
class FuzzEnv:
    r: Running
    channel: grpc.Channel
    hints: Hints
    walker: Walker
    row: dict[str, Any]  # a valid demo row, for the final Predict
    counts: Counter[str]
    started: float


def _features() -> list[FeatureInfo]:
    kinds = {FeatureType.NUMERIC: "numeric", FeatureType.CATEGORICAL: "categorical", FeatureType.BOOLEAN: "boolean"}
    return [FeatureInfo(f.name, kinds[f.type], tuple(f.categories), f.min, f.max) for f in DEMO_SCHEMA.features]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEnv]:
    """A server of our own (fuzzing changes its state) with a trained champion and some history."""
    print(f"\nfuzz seed {SEED} (SAHAYAK_FUZZ_SEED), scale {SCALE}", file=sys.stderr)
    r = start_server(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    examples = load_demo_rows(r.client, 2500)
    run = r.client.train(DEMO_MODEL_NAME)
    assert run.promoted, run.end_reason
    c = r.client
    artifact = c.export_version(DEMO_MODEL_NAME)
    c.import_version(DEMO_MODEL_NAME, artifact, description="imported by the fuzz setup")  # version 2, not promoted
    c.create_model("fz-small", DEMO_SCHEMA.features[:4], DEMO_SCHEMA.label)
    rows = [dict(e.features) for e in examples[:300]]
    predictions = [c.predict(DEMO_MODEL_NAME, rows[i]).prediction_id for i in range(5)]
    subject = {k: v for k, v in rows[0].items() if not k.startswith("scheme_")}
    rec = c.recommend(DEMO_MODEL_NAME, subject, [(s.scheme_id, s.features, s.benefit_inr) for s in SCHEMES[:5]])
    channel = grpc.insecure_channel(
        r.target, options=[("grpc.max_send_message_length", 80 << 20), ("grpc.max_receive_message_length", 80 << 20)]
    )
    feedback_pb2_grpc.FeedbackServiceStub(channel).RecordFeedback(
        feedback_pb2.RecordFeedbackRequest(
            feedback=feedback_pb2.Feedback(
                feedback_id="fb-1",
                model=DEMO_MODEL_NAME,
                recommendation_id=rec.recommendation_id,
                prediction_id=rec.recommendations[0].prediction_id,
                scheme_id="pmegp",
                interaction=feedback_pb2.INTERACTION_APPLIED,
                outcome=feedback_pb2.FEEDBACK_OUTCOME_APPROVED,
                features={k: convert.value_to_proto(v) for k, v in rows[0].items()},
            )
        )
    )
    monitor = monitor_pb2_grpc.MonitorServiceStub(channel)
    checked = monitor.RunHealthCheck(monitor_pb2.RunHealthCheckRequest())
    alerts = [a.alert_id for res in checked.results for a in res.raised]
    alerts += [a.alert_id for a in monitor.ListAlerts(monitor_pb2.ListAlertsRequest()).alerts]
    runs = training_pb2_grpc.TrainingServiceStub(channel).ListTrainingRuns(training_pb2.ListTrainingRunsRequest())
    services = [m.containing_service.full_name for m in METHODS]
    hints = Hints(
        model_names=[DEMO_MODEL_NAME] * 8 + ["fz-small", "nope"],
        features=_features(),
        rows=rows,
        now_s=r.clock.now(),
        run_ids=[x.run_id for x in runs.runs],
        prediction_ids=predictions + [x.prediction_id for x in rec.recommendations],
        recommendation_ids=[rec.recommendation_id],
        alert_ids=sorted(set(alerts)),
        outcome_ids=[e.outcome_id for e in examples[:20]],
        page_tokens=[
            convert.encode_token(v) for v in ("fz-small", DEMO_MODEL_NAME, "1", "2", "0", "1767225600000000/1")
        ],
        artifacts=[artifact],
        services=sorted(set(services)),
        symbols=sorted(set(services)) + ["sahayak.v1.Outcome", "sahayak.v1.Nope"],
        budgets={"import_intact": 3},
    )
    env = FuzzEnv(r, channel, hints, Walker(hints), rows[0], Counter(), time.monotonic())
    try:
        yield env
    finally:
        channel.close()
        stop_server(r)


# --- sending -------------------------------------------------------------------


def _output_class(m: pbd.MethodDescriptor) -> Any:
    return message_factory.GetMessageClass(m.output_type)


LARGEST = [0]  # the largest request body sent, in bytes


def _serialize(msg: Any) -> bytes:
    data = msg if isinstance(msg, bytes) else msg.SerializeToString()
    LARGEST[0] = max(LARGEST[0], len(data))
    return data


def send(env: FuzzEnv, m: pbd.MethodDescriptor, payload: Any) -> tuple[grpc.StatusCode, str]:
    """One call of ``m`` with ``payload`` (a message, raw bytes, or a list of them for a client stream).

    Requests go through a generic multicallable with an identity serializer,
    replies come back as bytes and must parse as the method's output type.
    """
    env.counts[_path(m)] += 1
    path, ch = _path(m), env.channel
    out = _output_class(m)
    if m.client_streaming:
        items = [_serialize(p) for p in payload]
    else:
        body = _serialize(payload)
    try:
        if not m.client_streaming and not m.server_streaming:
            reply = ch.unary_unary(path)(body, timeout=UNARY_TIMEOUT)
            out.FromString(reply)
            return grpc.StatusCode.OK, ""
        if m.client_streaming and not m.server_streaming:
            reply = ch.stream_unary(path)(iter(items), timeout=UNARY_TIMEOUT)
            out.FromString(reply)
            return grpc.StatusCode.OK, ""
        if m.server_streaming and not m.client_streaming:
            call = ch.unary_stream(path)(body, timeout=STREAM_TIMEOUT)
        else:
            call = ch.stream_stream(path)(iter(items), timeout=STREAM_TIMEOUT)
        return _drain(call, out)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""


def _drain(call: Any, out: Any) -> tuple[grpc.StatusCode, str]:
    try:
        for n, reply in enumerate(call, 1):
            out.FromString(reply)
            if n >= STREAM_READ:
                break
        call.cancel()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as err:
        return err.code(), err.details() or ""


def _show(payload: Any) -> str:
    text = repr(payload)
    return text if len(text) < 3000 else text[:3000] + f"... ({len(text)} chars)"


CODES: Counter[tuple[str, str]] = Counter()
SAMPLES: Counter[tuple[str, str, str]] = Counter()
# SAHAYAK_FUZZ_COLLECT=1: record every failure and report them all at the end, instead of
# stopping (and shrinking) at the first one; for hunting bugs, not for CI.
COLLECT = os.environ.get("SAHAYAK_FUZZ_COLLECT") == "1"
FAILURES: dict[tuple[str, str], str] = {}


def check(m: pbd.MethodDescriptor, code: grpc.StatusCode, details: str, payload: Any) -> None:
    CODES[(m.name, code.name)] += 1
    SAMPLES[(m.name, code.name, details[:70])] += 1
    problem = ""
    if code in FORBIDDEN:
        problem = f"answered {code.name}: {details}"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not m.server_streaming:
        problem = f"hung (no answer in {UNARY_TIMEOUT} s)"
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size" in details:
        # The error status did not fit in the client's metadata budget: it never saw our answer.
        problem = f"sent an error status too large for the client to read: {details}"
    if not problem:
        return
    if COLLECT:
        key = re.sub(r"request id r\d+", "request id", problem)[:80]
        FAILURES.setdefault((_path(m), key), f"{problem}\nrequest: {_show(payload)}")
        return
    raise AssertionError(
        f"{_path(m)} {problem}\nrequest: {_show(payload)}\n"
        f"(fuzz seed {SEED}: SAHAYAK_FUZZ_SEED={SEED} replays this run)"
    )


def _settings(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def request_strategy(env: FuzzEnv, m: pbd.MethodDescriptor) -> st.SearchStrategy[Any]:
    one = env.walker.message(m.input_type)
    if m.client_streaming:
        return st.lists(one, min_size=1, max_size=3)
    return one


# --- regressions: bugs the fuzzer found, each pinned by its smallest request ------


def _code(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        reply = call(request, timeout=UNARY_TIMEOUT)
        if hasattr(reply, "__next__"):  # a server stream: its first message or its error
            next(reply, None)
            reply.cancel()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as err:
        return err.code(), err.details() or ""


def _invalid(call: Any, request: Any, field: str) -> None:
    code, details = _code(call, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and field in details, (code, details)


def _window(start_s: int, end_s: int) -> common_pb2.TimeWindow:
    return common_pb2.TimeWindow(
        start_time=timestamp_pb2.Timestamp(seconds=start_s), end_time=timestamp_pb2.Timestamp(seconds=end_s)
    )


def test_regression_trend_window_under_a_microsecond(fuzz: FuzzEnv) -> None:
    """A window of 1 ns became 0 us and a ZeroDivisionError (INTERNAL)."""
    monitor = monitor_pb2_grpc.MonitorServiceStub(fuzz.channel)
    request = monitor_pb2.GetPerformanceTrendRequest(
        model=DEMO_MODEL_NAME, range=_window(1_000, 2_000), window=duration_pb2.Duration(nanos=1)
    )
    _invalid(monitor.GetPerformanceTrend, request, "window")


def test_regression_timestamps_past_the_int64_range(fuzz: FuzzEnv) -> None:
    """Unchecked timestamps reached SQLite as microseconds past int64: OverflowError (INTERNAL)."""
    monitor = monitor_pb2_grpc.MonitorServiceStub(fuzz.channel)
    registry = registry_pb2_grpc.ModelRegistryServiceStub(fuzz.channel)
    huge = _window(-(2**62), 2**62)
    _invalid(
        monitor.GetPerformanceTrend,
        monitor_pb2.GetPerformanceTrendRequest(model=DEMO_MODEL_NAME, range=huge),
        "range.start_time",
    )
    _invalid(
        monitor.RecordPerformance,
        monitor_pb2.RecordPerformanceRequest(model=DEMO_MODEL_NAME, version=1, window=huge),
        "window.start_time",
    )
    data = registry_pb2.EvaluationData(
        outcomes=registry_pb2.OutcomeWindow(
            window=common_pb2.TimeWindow(start_time=timestamp_pb2.Timestamp(seconds=2**62))
        )
    )
    _invalid(
        registry.EvaluateModelVersion,
        registry_pb2.EvaluateModelVersionRequest(model=DEMO_MODEL_NAME, data=data),
        "data.outcomes.window.start_time",
    )
    _invalid(
        registry.CompareModelVersions,
        registry_pb2.CompareModelVersionsRequest(model=DEMO_MODEL_NAME, version_a=1, version_b=1, data=data),
        "data.outcomes.window.start_time",
    )


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "9" * 25, "-1"])
def test_regression_page_tokens_and_cursors_that_are_not_int64(fuzz: FuzzEnv, text: str) -> None:
    """str.isdigit() accepts "²" (int() then raised) and "٣"; a 25-digit number overflowed SQLite."""
    monitor = monitor_pb2_grpc.MonitorServiceStub(fuzz.channel)
    registry = registry_pb2_grpc.ModelRegistryServiceStub(fuzz.channel)
    training = training_pb2_grpc.TrainingServiceStub(fuzz.channel)
    token = convert.encode_token(text)
    _invalid(monitor.ListAlerts, monitor_pb2.ListAlertsRequest(page_token=token), "page_token")
    _invalid(
        registry.ListAliasHistory,
        registry_pb2.ListAliasHistoryRequest(model=DEMO_MODEL_NAME, page_token=token),
        "page_token",
    )
    _invalid(
        registry.ListModelVersions,
        registry_pb2.ListModelVersionsRequest(model=DEMO_MODEL_NAME, page_token=token),
        "page_token",
    )
    for pair in (f"{text}/1", f"1/{text}"):
        _invalid(
            training.ListTrainingRuns,
            training_pb2.ListTrainingRunsRequest(page_token=convert.encode_token(pair)),
            "page_token",
        )
    _invalid(monitor.WatchAlerts, monitor_pb2.WatchAlertsRequest(cursor=text), "cursor")


@pytest.mark.parametrize("version", [str(2**63), "9" * 5000])
def test_regression_oip_version_past_int64(fuzz: FuzzEnv, version: str) -> None:
    """An OIP version string past int64 overflowed SQLite; one of 5,000 digits made int() raise."""
    from sahayak_rpc._proto.inference import open_inference_grpc_pb2 as oip
    from sahayak_rpc._proto.inference import open_inference_grpc_pb2_grpc as oip_grpc

    stub = oip_grpc.GRPCInferenceServiceStub(fuzz.channel)
    _invalid(stub.ModelReady, oip.ModelReadyRequest(name=DEMO_MODEL_NAME, version=version), "version")
    _invalid(stub.ModelMetadata, oip.ModelMetadataRequest(name=DEMO_MODEL_NAME, version=version), "version")
    _invalid(stub.ModelInfer, oip.ModelInferRequest(model_name=DEMO_MODEL_NAME, model_version=version), "model_version")


def test_regression_an_empty_columnar_batch_does_not_break_drift(fuzz: FuzzEnv) -> None:
    """An empty PredictBatch was logged with a null column; every later drift read and health check crashed."""
    inference = inference_pb2_grpc.InferenceServiceStub(fuzz.channel)
    monitor = monitor_pb2_grpc.MonitorServiceStub(fuzz.channel)
    empty = common_pb2.FeatureColumns(row_count=0, columns=[common_pb2.FeatureColumn(name="age")])
    assert (
        len(
            inference.PredictBatch(
                inference_pb2.PredictBatchRequest(model=DEMO_MODEL_NAME, columns=empty), timeout=10
            ).probabilities
        )
        == 0
    )
    fuzz.r.server.predlog.flush()  # the log writes off the request path: make it land now
    report = monitor.DetectDrift(monitor_pb2.DetectDriftRequest(model=DEMO_MODEL_NAME), timeout=30).report
    assert report.features
    assert monitor.RunHealthCheck(monitor_pb2.RunHealthCheckRequest(model=DEMO_MODEL_NAME), timeout=30).results


def test_regression_numbers_too_large_to_train_on(fuzz: FuzzEnv) -> None:
    """Values past ±1e100 were stored, and then every training run of the model failed (the artifact's bound)."""
    from sahayak_rpc.client import OutcomeInput

    c = fuzz.r.client
    rows = [
        OutcomeInput({**row, "annual_income_inr": 1e300 * (i + 1)}, bool(i % 2), outcome_id=f"huge-{i}")
        for i, row in enumerate(fuzz.hints.rows[:40])
    ]
    report = c.import_outcomes(DEMO_MODEL_NAME, rows)  # columns by default
    assert (report.accepted, report.rejected) == (0, 40), report
    assert "annual_income_inr" in report.errors[0].field
    training = training_pb2_grpc.TrainingServiceStub(fuzz.channel)
    one = training_pb2.RecordOutcomeRequest(
        model=DEMO_MODEL_NAME,
        outcome=common_pb2.Outcome(
            outcome_id="huge-row",
            label=common_pb2.LABEL_POSITIVE,
            features={k: convert.value_to_proto(v) for k, v in {**fuzz.row, "scheme_max_benefit_inr": 1e101}.items()},
        ),
    )
    _invalid(training.RecordOutcome, one, "outcome.features.scheme_max_benefit_inr")
    run = c.train(DEMO_MODEL_NAME, timeout=300)
    assert run.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED, run.end_reason


@pytest.mark.parametrize(
    "keys",
    [["\U0001f600" * 3000], [f"{'k' * 150}{i}" for i in range(100)]],
    ids=["one-long-unicode-name", "a-hundred-long-names"],
)
def test_regression_an_error_too_big_for_the_metadata_budget(fuzz: FuzzEnv, keys: list[str]) -> None:
    """Errors echoing long input went past gRPC's 8/16 KiB metadata limit: the client saw RESOURCE_EXHAUSTED."""
    request = inference_pb2.PredictRequest(model=DEMO_MODEL_NAME)
    for key in keys:
        request.features[key].number_value = 1.0
    with pytest.raises(grpc.RpcError) as info:
        inference_pb2_grpc.InferenceServiceStub(fuzz.channel).Predict(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    status = rpc_status.from_call(info.value)
    assert status is not None and status.details, "the google.rpc details reach the client"
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad) and bad.field_violations[0].field.startswith("features.")


# --- the fuzz tests --------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_fuzz_generated_requests(fuzz: FuzzEnv, method: pbd.MethodDescriptor) -> None:
    """Generated requests of every field shape: never UNKNOWN / INTERNAL / DATA_LOSS, never a hang."""
    strategy = request_strategy(fuzz, method)

    if method.server_streaming:

        @_settings(STREAM_EXAMPLES)
        @seed(SEED)
        @given(st.lists(strategy, min_size=1, max_size=STREAM_BATCH))
        def run_batch(payloads: list[Any]) -> None:
            # Start every call first: their short deadlines run concurrently.
            calls = []
            for p in payloads:
                fuzz.counts[_path(method)] += 1
                path = _path(method)
                if method.client_streaming:
                    call = fuzz.channel.stream_stream(path)(iter([_serialize(x) for x in p]), timeout=STREAM_TIMEOUT)
                else:
                    call = fuzz.channel.unary_stream(path)(_serialize(p), timeout=STREAM_TIMEOUT)
                calls.append((call, p))
            for call, p in calls:
                code, details = _drain(call, _output_class(method))
                check(method, code, details, p)

        run_batch()
        return

    @_settings(examples_for(method))
    @seed(SEED)
    @given(strategy)
    def run_one(payload: Any) -> None:
        code, details = send(fuzz, method, payload)
        check(method, code, details, payload)

    run_one()


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_fuzz_raw_bytes(fuzz: FuzzEnv, method: pbd.MethodDescriptor) -> None:
    """Bodies that do not parse (or barely): INVALID_ARGUMENT or another honest code, never INTERNAL."""
    body = raw_bodies(fuzz.walker.message(method.input_type))
    strategy = st.lists(body, min_size=1, max_size=3) if method.client_streaming else body

    @_settings(RAW_EXAMPLES)
    @seed(SEED + 1)
    @given(strategy)
    def run_one(payload: Any) -> None:
        code, details = send(fuzz, method, payload)
        check(method, code, details, payload)

    run_one()


def test_unknown_method_is_unimplemented(fuzz: FuzzEnv) -> None:
    for path in ("/sahayak.v1.InferenceService/Nope", "/sahayak.v1.Nope/Predict", "/x"):
        fuzz.counts[path] += 1
        with pytest.raises(grpc.RpcError) as info:
            fuzz.channel.unary_unary(path)(b"\x00\x01", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_every_served_service_is_fuzzed(fuzz: FuzzEnv) -> None:
    """Reflection lists what the server serves; the fuzzer must cover all of it."""
    served = set(ProtoReflectionDescriptorDatabase(fuzz.channel).get_services())
    fuzzed = {m.containing_service.full_name for m in METHODS}
    assert served, "reflection listed no services"
    assert served <= fuzzed, f"served but not fuzzed: {sorted(served - fuzzed)}"
    assert {"sahayak.v1.InferenceService", "sahayak.v1.TrainingService"} <= fuzzed


def test_server_survived_the_fuzz(fuzz: FuzzEnv) -> None:
    """After everything above: still SERVING, still predicting, and the budget of requests was spent."""
    health = health_pb2_grpc.HealthStub(fuzz.channel)
    for service in ("", "sahayak.v1.InferenceService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    c = fuzz.r.client
    # Fuzzed SetAlias / DeleteAlias / RollbackModel may legitimately have left no
    # champion: name one, so that the Predict below checks serving, not the alias.
    if c.get_model(DEMO_MODEL_NAME).champion_version == 0:
        c.set_alias(DEMO_MODEL_NAME, "champion", 1, reason="after fuzz", force=True)
    p = c.predict(DEMO_MODEL_NAME, fuzz.row, explain_top_k=3)
    assert 0.0 <= p.probability <= 1.0 and p.version >= 1 and p.prediction_id
    assert p.label in (common_pb2.LABEL_POSITIVE, common_pb2.LABEL_NEGATIVE)
    batch = c.predict_batch(DEMO_MODEL_NAME, [fuzz.row, fuzz.row])
    assert len(batch.probabilities) == 2 and all(math.isfinite(x) for x in batch.probabilities)

    # What the fuzz stored (outcomes, logged predictions, feedback, alerts, versions)
    # must not break the paths that read it all back: monitoring and training.
    monitor = monitor_pb2_grpc.MonitorServiceStub(fuzz.channel)
    fuzz.r.server.predlog.flush()
    assert monitor.GetServerStatus(monitor_pb2.GetServerStatusRequest(), timeout=30).models
    assert monitor.RunHealthCheck(monitor_pb2.RunHealthCheckRequest(), timeout=120).results
    monitor.DetectDrift(monitor_pb2.DetectDriftRequest(model=DEMO_MODEL_NAME), timeout=60)
    assert monitor.GetMonitoringReport(
        monitor_pb2.GetMonitoringReportRequest(model=DEMO_MODEL_NAME), timeout=60
    ).markdown
    assert len(list(c.list_models(page_size=7))) >= 2
    c.update_model(registry_pb2.Model(name=DEMO_MODEL_NAME), ["settings"])  # fuzzed settings back to the defaults
    [status] = [s for s in c.server_status().models if s.model == DEMO_MODEL_NAME]
    if status.active_run_id:  # one the fuzz started
        c.wait_run(status.active_run_id, timeout=300)
    run = c.train(DEMO_MODEL_NAME, timeout=300)
    assert run.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED, run.end_reason

    total = sum(fuzz.counts.values())
    elapsed = time.monotonic() - fuzz.started
    per_method = {_path(m): fuzz.counts[_path(m)] for m in METHODS}
    print(f"\nlargest request {LARGEST[0]} bytes", file=sys.stderr)
    print(f"\nfuzz: {total} requests over {len(METHODS)} methods in {elapsed:.1f} s (seed {SEED})", file=sys.stderr)
    for path, n in sorted(per_method.items()):
        name = path.rsplit("/", 1)[1]
        codes = ", ".join(f"{c} {k}" for (mm, c), k in sorted(CODES.items()) if mm == name)
        print(f"  {n:5d} {path}: {codes}", file=sys.stderr)
    if os.environ.get("SAHAYAK_FUZZ_VERBOSE") == "1":
        for (name, code, text), n in sorted(SAMPLES.items()):
            print(f"  {name} {code} x{n}: {text!r}", file=sys.stderr)
    assert not FAILURES, "\n\n".join(f"{k[0]}: {v}" for k, v in FAILURES.items())
    if any(n == 0 for n in per_method.values()):
        pytest.skip(f"only part of the fuzz ran ({total} requests); the budget is checked on a full run")
    assert all(n >= 5 for n in per_method.values()), per_method
    assert total >= MIN_REQUESTS * min(1.0, SCALE), f"only {total} requests were sent"


def test_a_client_s_bad_bytes_are_its_mistake_and_a_deserializer_s_bug_is_ours() -> None:
    """The interceptor's deserializer: protobuf's DecodeError (a client's bytes) becomes a Malformed
    request, answered INVALID_ARGUMENT; any other exception is our bug and propagates, for grpcio to
    log with its stack and answer INTERNAL."""
    from sahayak_rpc.api.interceptor import Malformed, tolerant
    from sahayak_rpc._proto.sahayak.v1 import inference_pb2

    parse = tolerant(inference_pb2.PredictRequest.FromString)
    assert parse is not None
    assert isinstance(parse(b"\x0a\xff"), Malformed)  # a length past the end
    assert parse(inference_pb2.PredictRequest(model="m").SerializeToString()).model == "m"

    def buggy(data: bytes) -> object:
        raise KeyError("our bug")

    broken = tolerant(buggy)
    assert broken is not None
    with pytest.raises(KeyError):
        broken(b"")
