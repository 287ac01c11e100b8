"""Transport security, bearer tokens with roles, and per-client limits, against a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from sahayak_rpc import auth, cli, config
from sahayak_rpc.client import Client, OutcomeInput, SahayakError, outcome_to_proto
from sahayak_rpc._proto.sahayak.v1 import monitor_pb2, training_pb2

from ..certs import Certs, make_certs
from ..helpers import SMALL_FEATURES, SMALL_LABEL, Running, eventually, good_row, start_server, stop_server

TOKENS = {"p": ["predict"], "i": ["ingest"], "o": ["operate"], "all": ["predict", "ingest", "operate"]}
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def write_tokens(path: Path) -> dict[str, str]:
    tokens = {}
    text = ""
    for name, roles in TOKENS.items():
        tokens[name] = auth.new_token()
        text += auth.token_entry(name, tokens[name], roles)
    path.write_text(text)
    return tokens


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, dict[str, str]]]:
    d = tmp_path_factory.mktemp("auth")
    tokens = write_tokens(d / "tokens.toml")
    r = start_server(d / "a.db", tokens_file=str(d / "tokens.toml"))
    yield r, tokens
    stop_server(r)


# --- the role table ---------------------------------------------------------


def served_methods(target: str) -> list[tuple[str, bool, bool]]:
    """Every method of every service the live server lists by reflection: (path, client-streams, server-streams)."""
    with grpc.insecure_channel(target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    out = []
    for service in services:
        if "reflection" in service.lower():
            continue
        for m in descriptor_pool.Default().FindServiceByName(service).methods:
            out.append((f"/{service}/{m.full_name.rsplit('.', 1)[1]}", m.client_streaming, m.server_streaming))
    return out


def test_every_served_rpc_has_roles_in_the_table(secured: tuple[Running, dict[str, str]]) -> None:
    methods = served_methods(secured[0].target)
    assert len(methods) >= 40
    assert {m.split("/")[1] for m, _, _ in methods} >= {
        "sahayak.v1.TrainingService",
        "sahayak.v1.FeedbackService",
        "sahayak.v1.MonitorService",
        "sahayak.v1.ModelRegistryService",
        "sahayak.v1.InferenceService",
        "grpc.health.v1.Health",
    }
    assert auth.unmapped(m for m, _, _ in methods) == []


def call(
    channel: grpc.Channel, method: str, client_streams: bool, server_streams: bool, token: str | None
) -> grpc.StatusCode:
    """Calls ``method`` with an empty request; the status code it ends with."""
    md = [("authorization", f"Bearer {token}")] if token else []
    ident = lambda b: b  # noqa: E731 - raw bytes both ways
    kind = {
        (False, False): channel.unary_unary,
        (True, False): channel.stream_unary,
        (False, True): channel.unary_stream,
        (True, True): channel.stream_stream,
    }[(client_streams, server_streams)]
    stub = kind(method, request_serializer=ident, response_deserializer=ident)
    request = iter([b""]) if client_streams else b""
    try:
        if server_streams:
            responses = stub(request, timeout=1, metadata=md)
            next(responses, None)
            responses.cancel()
        else:
            stub(request, timeout=5, metadata=md)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_every_rpc_demands_its_role(secured: tuple[Running, dict[str, str]]) -> None:
    """Table-driven from the descriptors the server serves: a new RPC cannot escape it."""
    r, tokens = secured
    checked = 0
    with grpc.insecure_channel(r.target) as channel:
        for method, cs, ss in served_methods(r.target):
            needed = auth.required_roles(method)
            assert needed is not None, method
            if not needed:
                assert call(channel, method, cs, ss, None) not in DENIED, method
                continue
            assert call(channel, method, cs, ss, None) == grpc.StatusCode.UNAUTHENTICATED, method
            assert call(channel, method, cs, ss, "sk_not-a-real-token") == grpc.StatusCode.UNAUTHENTICATED, method
            for name, roles in TOKENS.items():
                code = call(channel, method, cs, ss, tokens[name])
                if needed & set(roles):
                    assert code not in DENIED, (method, name, code)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (method, name, code)
            checked += 1
    assert checked >= 40


def test_a_refused_call_changes_nothing(secured: tuple[Running, dict[str, str]]) -> None:
    r, tokens = secured
    with Client(r.target, token=tokens["i"]) as ingest, Client(r.target, token=tokens["p"]) as predict:
        with pytest.raises(SahayakError) as err:
            ingest.create_model("sneaky", SMALL_FEATURES, SMALL_LABEL)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "operate" in err.value.message
        assert "sneaky" not in [m.name for m in r.server.catalog.all()]
        with Client(r.target, token=tokens["o"]) as op:
            op.create_model("guarded", SMALL_FEATURES, SMALL_LABEL)
        with pytest.raises(SahayakError) as err:
            predict.record_outcome("guarded", good_row(), True, outcome_id="x1")
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert r.server.ctx.outcomes.get(r.server.catalog.get("guarded").id, "x1") is None
        ingest.record_outcome("guarded", good_row(), True, outcome_id="x1")
        assert r.server.ctx.outcomes.get(r.server.catalog.get("guarded").id, "x1") is not None


def test_health_and_reflection_stay_open(secured: tuple[Running, dict[str, str]]) -> None:
    r, _ = secured
    with grpc.insecure_channel(r.target) as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert "sahayak.v1.InferenceService" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_reflection_can_be_closed(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens.toml")
    r = start_server(tmp_path / "r.db", tokens_file=str(tmp_path / "tokens.toml"), open_reflection=False)
    try:
        with grpc.insecure_channel(r.target) as channel:
            with pytest.raises(grpc.RpcError) as err:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(r.target) as channel:
            stub = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            from grpc_reflection.v1alpha import reflection_pb2

            req = reflection_pb2.ServerReflectionRequest(list_services="")
            got = list(
                stub(iter([req.SerializeToString()]), metadata=[("authorization", f"Bearer {tokens['p']}")], timeout=5)
            )
            assert got
    finally:
        stop_server(r)


def test_tokens_never_appear_in_logs_but_their_names_do(secured: tuple[Running, dict[str, str]], capsys) -> None:
    r, tokens = secured
    with Client(r.target, token=tokens["o"]) as op:
        op.list_models()
        list(op.list_models())
    with Client(r.target, token="sk_wrong-token-value") as bad:
        with pytest.raises(SahayakError):
            list(bad.list_models())
    err = capsys.readouterr().err
    assert '"principal": "o"' in err
    assert '"code": "UNAUTHENTICATED"' in err
    for token in [*tokens.values(), "sk_wrong-token-value"]:
        assert token not in err


def test_a_changed_token_file_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first = auth.new_token()
    path.write_text(auth.token_entry("first", first, ["predict"]))
    store = auth.TokenStore(path, recheck_s=0)
    assert store.lookup(first) == auth.Principal("first", frozenset({"predict"}))
    second = auth.new_token()
    path.write_text(auth.token_entry("second", second, ["operate"]))  # the first is revoked
    assert store.lookup(first) is None
    assert store.lookup(second) is not None
    path.write_text("not toml [[")  # a broken edit keeps the last good tokens
    assert store.lookup(second) is not None


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[[tokens]]\nname = "a"\nsha256 = "abc"\nroles = ["predict"]\n', "sha256"),
        ('[[tokens]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nroles = ["admin"]\n', "roles"),
        ('[[tokens]]\nname = "a b"\nsha256 = "' + "0" * 64 + '"\nroles = ["predict"]\n', "name"),
        ('[[tokens]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nroles = ["predict"]\ntoken = "x"\n', "keys"),
        ("[other]\nx = 1\n", "only [[tokens]]"),
        (
            '[[tokens]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nroles = ["predict"]\n'
            '[[tokens]]\nname = "a"\nsha256 = "' + "1" * 64 + '"\nroles = ["predict"]\n',
            "twice",
        ),
    ],
)
def test_a_bad_token_file_names_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(auth.TokenFileError) as err:
        auth.parse_tokens(text, "t.toml")
    assert fragment in str(err.value)


def test_bearer_header_parsing() -> None:
    assert auth.bearer([("authorization", "Bearer abc")]) == "abc"
    assert auth.bearer([("authorization", "bearer  abc ")]) == "abc"
    assert auth.bearer([("authorization", "Basic abc")]) == ""
    assert auth.bearer([("x-other", "1")]) is None


def test_the_token_command_writes_a_hash_and_prints_the_token(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tokens.toml"
    assert cli.main(["token", "create", "--name", "web", "--roles", "predict,ingest", "--file", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sk_") and token not in path.read_text()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert auth.TokenStore(path).lookup(token) == auth.Principal("web", frozenset({"predict", "ingest"}))
    assert cli.main(["token", "create", "--name", "web", "--roles", "predict", "--file", str(path)]) == 2
    assert cli.main(["token", "create", "--name", "x", "--roles", "admin", "--file", str(path)]) == 2


def test_the_cli_sends_its_token(secured: tuple[Running, dict[str, str]], capsys) -> None:
    r, tokens = secured
    assert cli.main(["models", "--target", r.target]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert cli.main(["models", "--target", r.target, "--token", tokens["p"]]) == 0


# --- TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_tls_serves_verified_clients_and_refuses_plaintext(tmp_path: Path, certs: Certs) -> None:
    r = start_server(tmp_path / "tls.db", tls_cert=str(certs.server_cert), tls_key=str(certs.server_key))
    try:
        with Client(r.target, ca_cert=certs.read("ca"), timeout=5) as c:
            assert c.health() == "SERVING"
            c.create_model("small", SMALL_FEATURES, SMALL_LABEL)
        with Client(r.target, timeout=2) as plain:
            with pytest.raises(SahayakError) as err:
                plain.health()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        with Client(r.target, ca_cert=certs.read("stranger_cert"), timeout=2) as wrong_ca:
            with pytest.raises(SahayakError) as err:
                wrong_ca.health()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_server(r)


def test_mutual_tls_needs_a_client_certificate_from_the_ca(tmp_path: Path, certs: Certs) -> None:
    r = start_server(
        tmp_path / "mtls.db",
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca),
    )
    try:
        with Client(
            r.target,
            ca_cert=certs.read("ca"),
            client_cert=certs.read("client_cert"),
            client_key=certs.read("client_key"),
            timeout=5,
        ) as c:
            assert c.health() == "SERVING"
        for kwargs in ({}, {"client_cert": certs.read("stranger_cert"), "client_key": certs.read("stranger_key")}):
            with Client(r.target, ca_cert=certs.read("ca"), timeout=2, **kwargs) as c:
                with pytest.raises(SahayakError) as err:
                    c.health()
                assert err.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_server(r)


def test_tls_and_tokens_together_through_the_cli(tmp_path: Path, certs: Certs, capsys) -> None:
    tokens = write_tokens(tmp_path / "tokens.toml")
    r = start_server(
        tmp_path / "both.db",
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tokens_file=str(tmp_path / "tokens.toml"),
    )
    try:
        assert cli.main(["status", "--target", r.target, "--tls-ca", str(certs.ca), "--token", tokens["p"]]) == 0
        assert cli.main(["status", "--target", r.target, "--tls-ca", str(certs.ca)]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
    finally:
        stop_server(r)


def test_plaintext_beyond_loopback_must_be_asked_for(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(env={}, host="0.0.0.0")
    assert "tls_cert" in str(err.value) and "allow_plaintext" in str(err.value)
    assert config.load(env={}, host="0.0.0.0", allow_plaintext=True).host == "0.0.0.0"
    assert config.load(env={}, host="::1").host == "::1"
    assert config.load(env={"SAHAYAK_SERVER_HOST": "0.0.0.0", "SAHAYAK_SERVER_ALLOW_PLAINTEXT": "true"}).allow_plaintext
    with pytest.raises(config.ConfigError):
        config.load(env={}, tls_cert="a.pem")
    with pytest.raises(config.ConfigError):
        config.load(env={}, tls_client_ca="ca.pem")


# --- limits -------------------------------------------------------------------


def watch(client: Client) -> grpc.Future:
    call = client.monitor.WatchAlerts(monitor_pb2.WatchAlertsRequest(), metadata=client.metadata)
    return call


def test_a_client_holds_at_most_its_share_of_streams(tmp_path: Path) -> None:
    r = start_server(tmp_path / "s.db", max_streams_per_client=2)
    try:
        first, second = watch(r.client), watch(r.client)
        eventually(lambda: r.server.guard.open_streams() == 2, timeout=10)
        third = watch(r.client)
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams_per_client" in err.value.details()
        assert r.client.health() == "SERVING"  # unary calls are not streams
        first.cancel()
        eventually(lambda: r.server.guard.open_streams() == 1, timeout=10)  # a cancelled stream lets go
        fourth = watch(r.client)
        eventually(lambda: r.server.guard.open_streams() == 2, timeout=10)
        second.cancel()
        fourth.cancel()
        eventually(lambda: r.server.guard.open_streams() == 0, timeout=10)
    finally:
        stop_server(r)


def test_a_stream_past_its_deadline_stops_on_the_server(running: Running) -> None:
    call = running.client.monitor.WatchAlerts(monitor_pb2.WatchAlertsRequest(), timeout=0.3)
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    eventually(lambda: running.server.guard.open_streams() == 0, timeout=10)


def test_a_client_stream_has_a_message_limit_and_keeps_what_came_before(tmp_path: Path) -> None:
    r = start_server(tmp_path / "m.db", max_stream_messages=3)
    try:
        r.client.create_model("small", SMALL_FEATURES, SMALL_LABEL)

        def messages() -> Iterator[training_pb2.ImportOutcomesRequest]:
            for i in range(5):
                req = training_pb2.ImportOutcomesRequest(model="small")
                outcome_to_proto(OutcomeInput(good_row(), True, outcome_id=f"o{i}"), req.outcomes.add())
                yield req

        with pytest.raises(grpc.RpcError) as err:
            r.client.training.ImportOutcomes(messages(), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_stream_messages" in err.value.details()
        model = r.server.catalog.get("small")
        stored = [i for i in range(5) if r.server.ctx.outcomes.get(model.id, f"o{i}") is not None]
        assert stored == [0, 1, 2]
    finally:
        stop_server(r)


def test_overload_answers_resource_exhausted_instead_of_queueing(tmp_path: Path) -> None:
    r = start_server(tmp_path / "o.db", max_concurrent_rpcs=4)
    try:
        streams = [watch(r.client) for _ in range(4)]
        eventually(lambda: r.server.guard.open_streams() == 4, timeout=10)
        with pytest.raises(SahayakError) as err:
            r.client.health()
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        for s in streams:
            s.cancel()
        eventually(lambda: r.server.guard.open_streams() == 0, timeout=10)
        eventually(lambda: _healthy(r.client), timeout=10)
    finally:
        stop_server(r)


def _healthy(client: Client) -> bool:
    try:
        return client.health() == "SERVING"
    except SahayakError:
        return False


def test_concurrent_stream_accounting_is_exact_under_contention(tmp_path: Path) -> None:
    r = start_server(tmp_path / "c.db", max_streams_per_client=1000)
    try:
        calls: list[grpc.Future] = []
        lock = threading.Lock()

        def open_some() -> None:
            for _ in range(10):
                c = watch(r.client)
                with lock:
                    calls.append(c)

        threads = [threading.Thread(target=open_some) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        eventually(lambda: r.server.guard.open_streams() == 40, timeout=20)
        for c in calls:
            c.cancel()
        eventually(lambda: r.server.guard.open_streams() == 0, timeout=20)
    finally:
        stop_server(r)


def test_a_client_that_cancels_a_stream_is_not_logged_as_a_crash(running: Running, capsys) -> None:
    """A stream the client cancels while the server waits for its next message (reflection,
    ImportOutcomes) ends as CANCELLED in the log, not as a crash of ours."""
    from grpc_reflection.v1alpha import reflection_pb2

    req = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    gate = threading.Event()

    def requests() -> Iterator[bytes]:
        yield req
        gate.wait(10)  # the server now waits for a second message

    stub = running.client.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    call = stub(requests())
    assert next(call)
    time.sleep(0.3)  # the server is now blocked reading the next request
    call.cancel()
    gate.set()
    eventually(lambda: running.server.guard.open_streams() == 0, timeout=10)
    time.sleep(0.2)
    err = capsys.readouterr().err
    assert "ServerReflectionInfo" in err
    assert "rpc.crashed" not in err, [line for line in err.splitlines() if "crashed" in line or "Error" in line][:5]
