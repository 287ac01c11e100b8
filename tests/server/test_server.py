"""The server process: contract visibility, health, errors, logs, shutdown."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from structlog.testing import capture_logs

from sahayak_rpc import config
from sahayak_rpc.client import Client
from sahayak_rpc.server import SERVICES, Server
from sahayak_rpc._proto.sahayak.v1 import registry_pb2

from ..helpers import wait_serving as _wait_serving, Running, free_port, good_row, server_command

FIVE = {
    "sahayak.v1.TrainingService",
    "sahayak.v1.FeedbackService",
    "sahayak.v1.MonitorService",
    "sahayak.v1.ModelRegistryService",
    "sahayak.v1.InferenceService",
}


def test_reflection_lists_all_five_services_and_health(running: Running) -> None:
    db = ProtoReflectionDescriptorDatabase(running.client.channel)
    services = set(db.get_services())
    assert FIVE | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_reflection_describes_messages_for_grpcurl(running: Running) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(running.client.channel))
    method = pool.FindServiceByName("sahayak.v1.TrainingService").methods_by_name["RecordOutcome"]
    assert method.input_type.full_name == "sahayak.v1.RecordOutcomeRequest"
    assert "features" in pool.FindMessageTypeByName("sahayak.v1.Outcome").fields_by_name


def test_health_is_serving_overall_and_per_service(running: Running) -> None:
    for name in ["", *FIVE]:
        assert running.client.health(name) == "SERVING"


def test_every_rpc_of_the_contract_is_implemented(running: Running) -> None:
    implemented = set(running.client.server_status().implemented_methods)
    every = {
        f"/{name}/{m.name}"
        for name, (pb2, _) in SERVICES.items()
        for m in pb2.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]].methods
    }
    assert implemented == every


def test_a_method_the_server_does_not_have_is_unimplemented(running: Running) -> None:
    call = running.client.channel.unary_unary(
        "/sahayak.v1.InferenceService/Explode", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as info:
        call(b"")
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert running.client.health() == "SERVING"


def test_status_reports_uptime_on_the_injected_clock(running: Running) -> None:
    running.clock.advance(125)
    status = running.client.server_status()
    assert status.uptime.seconds == 125
    assert status.server_version


def test_one_log_line_per_rpc_with_method_code_latency_and_request_id(running: Running, small_model: str) -> None:
    with capture_logs() as logs:
        running.client.get_model(small_model)
        with pytest.raises(Exception):
            running.client.get_model("ghost")
        running.client.registry.GetModel(
            registry_pb2.GetModelRequest(name=small_model), metadata=[("x-request-id", "abc-123")]
        )
    rpc_lines = [entry for entry in logs if entry["event"] == "rpc"]
    assert [(e["method"], e["code"]) for e in rpc_lines] == [
        ("/sahayak.v1.ModelRegistryService/GetModel", "OK"),
        ("/sahayak.v1.ModelRegistryService/GetModel", "NOT_FOUND"),
        ("/sahayak.v1.ModelRegistryService/GetModel", "OK"),
    ]
    assert all(isinstance(e["latency_us"], int) and e["latency_us"] >= 0 for e in rpc_lines)
    assert rpc_lines[2]["request_id"] == "abc-123"
    assert rpc_lines[0]["request_id"] != rpc_lines[1]["request_id"]


def test_a_second_server_cannot_take_the_same_port(running: Running, tmp_path: Path) -> None:
    other = Server(config.load(env={}, port=running.server.port, db=str(tmp_path / "other.db")))
    with pytest.raises(OSError):
        other.start()
    other.db.close()


def test_messages_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    server = Server(config.load(env={}, port=0, db=str(tmp_path / "s.db"), max_message_bytes=4096))
    server.start()
    try:
        with Client(f"127.0.0.1:{server.port}") as c:
            request = registry_pb2.GetModelRequest(name="x" * 10_000)
            with pytest.raises(grpc.RpcError) as info:
                c.registry.GetModel(request)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert c.health() == "SERVING"
    finally:
        server.stop(grace=1)


@contextlib.contextmanager
def _serve(tmp_path: Path, db: str, env: dict) -> Iterator[subprocess.Popen[str]]:
    """``sahayak-rpc serve`` on a free port and ``tmp_path / db``, serving when this yields, its log in
    ``tmp_path / "server.log"`` (a file: an undrained pipe would stall the server once it filled);
    killed on the way out if it still runs."""
    port = free_port()
    with (tmp_path / "server.log").open("w") as log_file:
        proc = subprocess.Popen(
            server_command("serve", "--port", str(port), "--db", str(tmp_path / db)),
            stderr=log_file,
            text=True,
            env=env,
        )
        try:
            _wait_serving(port, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def _log_events(tmp_path: Path) -> list[dict]:
    """The JSON lines of _serve's log."""
    return [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")]


def test_sigterm_stops_gracefully_and_closes_the_database(tmp_path: Path, subprocess_env: dict) -> None:
    with _serve(tmp_path, "g.db", subprocess_env) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    events = [e["event"] for e in _log_events(tmp_path)]
    assert "replica.leader" in events  # (the only replica of its database leads it)
    assert events.index("server.started") < events.index("server.signal")
    assert events[-2:] == ["server.signal", "server.stopped"]
    # A cleanly closed WAL database leaves no -wal file behind.
    assert not (tmp_path / "g.db-wal").exists()


def test_signals_in_a_burst_still_stop_the_server(tmp_path: Path, subprocess_env: dict) -> None:
    """A supervisor and a wrapper (`timeout`, say) both sending SIGTERM, or Ctrl-C pressed again: the
    signals arrive back to back; the handler does no I/O, so none can re-enter the first one's log
    write and hang the stop (it did: the main thread blocked on the logger's lock in the handler)."""
    with _serve(tmp_path, "b.db", subprocess_env) as proc:
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    lines = _log_events(tmp_path)
    [signalled] = [e for e in lines if e["event"] == "server.signal"]
    assert set(signalled["signal"].split(",")) <= {"SIGTERM", "SIGINT"}  # (pending signals: lowest number first)
    assert lines[-1]["event"] == "server.stopped"


def test_sigterm_handed_to_another_thread_still_stops_the_server_promptly(tmp_path: Path, subprocess_env: dict) -> None:
    """The kernel may deliver a process's SIGTERM to any thread; Python runs the handler on the main
    thread only, between bytecodes. A main thread parked in one long wait ignored it for up to an
    hour (seen as a hung clean stop in the crash harness). Here the signal goes to a gRPC thread."""
    import ctypes
    import os
    import platform

    with _serve(tmp_path, "t.db", subprocess_env) as proc:
        threads = sorted(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
        assert threads
        tgkill = {"x86_64": 234, "aarch64": 131}[platform.machine()]  # the syscall's number
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(tgkill, proc.pid, threads[-1], signal.SIGTERM) == 0, ctypes.get_errno()
        started = time.monotonic()
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    assert [e["event"] for e in _log_events(tmp_path)][-2:] == ["server.signal", "server.stopped"]


def test_serve_refuses_a_bad_config_with_a_clear_message(tmp_path: Path, subprocess_env: dict) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gate]\nmin_f1 = 7\n")
    proc = subprocess.run(
        server_command("serve", "--config", str(bad), "--db", str(tmp_path / "x.db")),
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "gate.min_f1" in proc.stderr


def test_unexpected_input_types_never_crash_the_server(running: Running, small_model: str) -> None:
    # Raw bytes that are not a valid message: the server answers, and stays healthy.
    call = running.client.channel.unary_unary(
        "/sahayak.v1.TrainingService/RecordOutcome", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    for payload in [b"\xff\xff\xff", b"\x0a\x05abc", b"\x12" + b"\x80" * 20]:
        with pytest.raises(grpc.RpcError) as info:
            call(payload)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    running.client.record_outcome(small_model, good_row(), True)
    assert running.client.health() == "SERVING"


def test_serve_demo_trains_once_and_a_restart_keeps_its_champion(tmp_path: Path, subprocess_env: dict) -> None:
    """`serve --demo` ends with a champion; started again on the same database (every demo outcome
    already there) it keeps that champion rather than training a new version of the same data."""
    from sahayak_rpc.client import Client

    db = tmp_path / "demo.db"
    loaded = []
    for start in range(2):
        port = free_port()
        log_path = tmp_path / f"server{start}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                server_command("serve", "--port", str(port), "--db", str(db), "--demo", "--demo-outcomes", "600"),
                stderr=log_file,
                text=True,
                env=subprocess_env,
            )
            try:
                _wait_serving(port, proc)
                deadline = time.monotonic() + 120
                events: list[dict] = []
                while time.monotonic() < deadline and not any(e["event"].startswith("demo.") for e in events):
                    time.sleep(0.2)
                    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
                [demo] = [e for e in events if e["event"].startswith("demo.")]
                assert demo["event"] == "demo.loaded", demo
                loaded.append(demo)
                with Client(f"127.0.0.1:{port}") as client:
                    model = client.get_model("scheme-sahayak")
                    assert model.champion_version == 1
                    assert [v.version for v in client.list_versions("scheme-sahayak")] == [1]
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
    first, second = loaded
    assert first["accepted"] == 600 and first["training"]["promoted"] and not first["training_skipped"]
    assert second["accepted"] == 0 and second["duplicates"] == 600 and not second["training"]
    assert second["training_skipped"] == "no new outcomes; champion version 1 kept"


def test_serve_on_a_database_it_cannot_open_says_so_without_a_traceback(tmp_path: Path, subprocess_env: dict) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    proc = subprocess.run(
        server_command("serve", "--port", str(free_port()), "--db", str(blocker / "x.db")),
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"sahayak-rpc: cannot open database {blocker / 'x.db'}: unable to open database file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_client_commands_beside_a_server_find_it_by_its_port_variable(running, subprocess_env: dict) -> None:
    """As in the Docker image (whose HEALTHCHECK is a bare `sahayak-rpc health`): with no --target and
    no SAHAYAK_TARGET, the commands dial 127.0.0.1:$SAHAYAK_SERVER_PORT."""
    env = {**subprocess_env, "SAHAYAK_SERVER_PORT": str(running.server.port)}
    ok = subprocess.run(server_command("health"), capture_output=True, text=True, env=env, timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    elsewhere = {**env, "SAHAYAK_TARGET": f"127.0.0.1:{free_port()}"}  # an explicit target still wins
    refused = subprocess.run(
        server_command("health", "--timeout", "2"), capture_output=True, text=True, env=elsewhere, timeout=60
    )
    assert refused.returncode != 0
