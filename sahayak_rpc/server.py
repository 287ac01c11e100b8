"""Wires the server: services, health, reflection, interceptor, start and stop."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from importlib import metadata
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .api.feedback import FeedbackServicer
from .api.inference import InferenceServicer
from . import auth
from . import kernels
from .api.interceptor import Guard, RpcInterceptor
from .api.monitor import MonitorServicer
from .api.oip import OpenInferenceServicer
from .api.registry import ModelRegistryServicer
from .api.training import TrainingServicer
from .app.catalog import Catalog
from .app.context import AppContext
from .app.feedback import Feedback
from .app.inference import Inference
from .app.monitor import Monitor
from .app.ingest import Ingest
from .app.registry import Registry
from .app.training_runs import TrainingRunner
from .config import ServerConfig
from .runtime.clock import Clock, SystemClock
from .runtime.metrics import Metrics
from .runtime.predlog import PredictionLog
from .runtime.replica import Replica
from .runtime.scheduler import Scheduler
from .store import open_database
from ._proto.inference import open_inference_grpc_pb2, open_inference_grpc_pb2_grpc
from ._proto.sahayak.v1 import (
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

log = structlog.get_logger("sahayak_rpc.server")

SERVICES = {
    "sahayak.v1.TrainingService": (training_pb2, training_pb2_grpc.TrainingServiceServicer),
    "sahayak.v1.FeedbackService": (feedback_pb2, feedback_pb2_grpc.FeedbackServiceServicer),
    "sahayak.v1.MonitorService": (monitor_pb2, monitor_pb2_grpc.MonitorServiceServicer),
    "sahayak.v1.ModelRegistryService": (registry_pb2, registry_pb2_grpc.ModelRegistryServiceServicer),
    "sahayak.v1.InferenceService": (inference_pb2, inference_pb2_grpc.InferenceServiceServicer),
    "inference.GRPCInferenceService": (
        open_inference_grpc_pb2,
        open_inference_grpc_pb2_grpc.GRPCInferenceServiceServicer,
    ),
}


def server_version() -> str:
    try:
        return metadata.version("sahayak-rpc")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def implemented_methods(servicers: dict[str, Any]) -> list[str]:
    """Methods a servicer overrides: the rest answer UNIMPLEMENTED."""
    out = []
    for name, (pb2, base) in SERVICES.items():
        servicer = servicers.get(name)
        service = pb2.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]]
        for method in service.methods:
            impl = getattr(type(servicer), method.name, None) if servicer is not None else None
            if impl is not None and impl is not getattr(base, method.name):
                out.append(f"/{name}/{method.name}")
    return out


def _method_names(service: str) -> list[str]:
    from google.protobuf import descriptor_pool

    return [m.name for m in descriptor_pool.Default().FindServiceByName(service).methods]


def tls_credentials(cfg: ServerConfig) -> grpc.ServerCredentials:
    """Server TLS from PEM files; with a client CA, clients must present a certificate it signed."""

    def read(path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise OSError(f"cannot read {what} {path}: {exc.strerror}") from None

    pair = [(read(cfg.tls_key, "[server] tls_key"), read(cfg.tls_cert, "[server] tls_cert"))]
    if cfg.tls_client_ca:
        ca = read(cfg.tls_client_ca, "[server] tls_client_ca")
        return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


class Server:
    """One sahayak-rpc serving process: gRPC services over one database (SQLite, or PostgreSQL shared with
    other replicas: runtime/replica.py). ``worker_index`` numbers it among its machine's ``--workers``."""

    def __init__(
        self, config: ServerConfig, clock: Clock | None = None, scheduler: bool = True, worker_index: int = 0
    ) -> None:
        self._signals: list[str] = []  # received by handle_signals' handler (no I/O in a handler)
        self.config = config
        self.clock = clock or SystemClock()
        self.worker_index = worker_index
        self.db = open_database(
            config.db,
            synchronous=config.synchronous,
            busy_timeout_s=config.busy_timeout_s,
            max_pages=config.max_db_pages,
            pool_size=config.db_pool_size,
            application_name=f"sahayak-rpc {socket.gethostname()}/{os.getpid()}",
        )
        self.ctx = AppContext(config=config, clock=self.clock, db=self.db)
        self.catalog = Catalog(self.ctx)
        self.ingest = Ingest(self.ctx)
        self.registry = Registry(self.ctx)
        self.runner = TrainingRunner(self.ctx, self.catalog, self.registry, self.ingest)
        self.predlog = PredictionLog(self.ctx.predictions, enabled=config.log_predictions)
        self.inference = Inference(self.ctx, self.catalog, self.registry, self.predlog)
        self.monitor = Monitor(self.ctx, self.catalog, self.registry, self.runner)
        self.replica = Replica(
            self.ctx,
            self.db.coordinator(config.heartbeat_interval_s),
            self.catalog,
            self.registry,
            self.runner,
            self.monitor,
            version=server_version(),
            trains=config.training_worker,
            heartbeat_s=config.heartbeat_interval_s,
            run_timeout_s=config.run_heartbeat_timeout_s,
        )
        self.replica.register()
        self.registry.refresh_all(self.catalog.all())
        # It ticks every minute, or as often as the health check is due if that is more often.
        self.scheduler = Scheduler(
            self.ctx,
            self.catalog,
            self.runner,
            self.ingest,
            self.registry,
            interval_s=min(60.0, config.health_check_interval_s),
            leading=lambda: self.replica.leading,
        )
        self.ingest.on_threshold = self.scheduler.wake
        self.replica.on_schedule.append(self.scheduler.wake)
        self.scheduler.extra_tasks.append(self.monitor.periodic)
        self.metrics: Metrics | None = None
        self._metrics_http: Any = None
        if config.metrics_port:
            self.metrics = Metrics()
            self.metrics.add_callbacks(
                self.monitor.repo.open_alerts_by_severity,
                lambda: self.predlog.depth,
                lambda: {"written": self.predlog.written, "dropped": self.predlog.dropped},
                self.ctx.predictions.segment_totals,
            )
            self.inference.metrics = self.metrics
            self.monitor.metrics = self.metrics
            self.runner.add_listener(self._count_run)
        self._run_scheduler = scheduler
        tokens = auth.TokenStore(config.tokens_file) if config.tokens_file else None
        # The demo loader calls this server like any client does.
        self.internal_token = tokens.add_internal("server-internal", auth.ROLES) if tokens else None
        self.guard = Guard(tokens, config.open_reflection, config.max_streams_per_client, config.max_stream_messages)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        # The overall status starts out SERVING in grpc's servicer: not until start() has finished.
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = 0
        self._stopped = threading.Event()
        self._grpc: grpc.Server | None = None

        self.servicers: dict[str, Any] = {}
        self.servicers["sahayak.v1.ModelRegistryService"] = ModelRegistryServicer(self.ctx, self.catalog, self.registry)
        self.servicers["sahayak.v1.TrainingService"] = TrainingServicer(
            self.ctx, self.catalog, self.ingest, self.runner
        )
        self.servicers["sahayak.v1.MonitorService"] = MonitorServicer(
            self.ctx,
            self.catalog,
            self.ingest,
            self.registry,
            self.runner,
            self.scheduler,
            self.predlog,
            lambda: implemented_methods(self.servicers),
            server_version(),
            self.monitor,
            self.replica,
        )
        self.servicers["sahayak.v1.InferenceService"] = InferenceServicer(self.catalog, self.inference)
        self.servicers["inference.GRPCInferenceService"] = OpenInferenceServicer(
            self.ctx, self.catalog, self.registry, self.inference, server_version()
        )
        self.feedback = Feedback(self.ctx, self.ingest)
        self.servicers["sahayak.v1.FeedbackService"] = FeedbackServicer(self.ctx, self.catalog, self.feedback)

    def _count_run(self, run: Any) -> None:
        assert self.metrics is not None
        name = self.catalog.by_id(run.model_id).name
        self.metrics.training_runs.labels(name, run.state).inc()
        if "duration_s" in run.result:
            self.metrics.training_duration.labels(name).observe(float(run.result["duration_s"]))

    def start(self) -> int:
        cfg = self.config
        # The compiled scoring loops, ready before the port opens (loaded from numba's cache after the
        # first start on a machine; compiled, about two seconds, on that one).
        kernels.warm()
        options = [
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.max_connection_idle_ms", 30 * 60 * 1000),
            # A second server on the same port must fail, not share it silently; the workers of one
            # `serve --workers N` share theirs on purpose (the kernel spreads connections over them).
            ("grpc.so_reuseport", 1 if cfg.workers > 1 else 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="rpc"),
            interceptors=[RpcInterceptor(self.metrics, self.guard)],
            options=options,
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
        )
        adders: dict[str, Callable[[Any, grpc.Server], None]] = {
            "sahayak.v1.TrainingService": training_pb2_grpc.add_TrainingServiceServicer_to_server,
            "sahayak.v1.FeedbackService": feedback_pb2_grpc.add_FeedbackServiceServicer_to_server,
            "sahayak.v1.MonitorService": monitor_pb2_grpc.add_MonitorServiceServicer_to_server,
            "sahayak.v1.ModelRegistryService": registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
            "sahayak.v1.InferenceService": inference_pb2_grpc.add_InferenceServiceServicer_to_server,
            "inference.GRPCInferenceService": open_inference_grpc_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        }
        for name, add in adders.items():
            add(self.servicers[name], server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        served = [f"/{s}/{m}" for s in names if s != reflection.SERVICE_NAME for m in _method_names(s)]
        missing = auth.unmapped(served)
        if missing:  # a new RPC must say who may call it before it can be served
            raise RuntimeError(f"RPCs missing from the role table in sahayak_rpc/auth.py: {missing}")
        self.replica.recover()  # before the first call is answered
        address = f"{cfg.host}:{cfg.port}"
        try:
            if cfg.tls_cert:
                self.port = server.add_secure_port(address, tls_credentials(cfg))
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
        server.start()
        self._grpc = server
        if self.metrics is not None:
            metrics_port = cfg.metrics_port + self.worker_index  # one endpoint per worker
            try:
                self._metrics_http = self.metrics.serve(cfg.host, metrics_port)
            except OSError as exc:
                server.stop(0)
                raise OSError(f"cannot serve metrics on {cfg.host}:{metrics_port}: {exc}") from None
        replica_name = f"{socket.gethostname()}:{self.port}" + (f"/w{self.worker_index}" if cfg.workers > 1 else "")
        self.replica.start(replica_name, f"{cfg.host}:{self.port}")
        if self.metrics is not None:
            self.metrics.replica = replica_name
        if self._run_scheduler:
            self.scheduler.start()
        if cfg.training_worker:
            self.runner.start_worker()
        # Start-up objects (protobuf descriptors, models, caches) live as long as
        # the process: freeze them out of the collector's sweeps, and collect the
        # youngest generation less often; bulk ingest allocates in floods and most
        # of it dies by reference counting anyway. Worth ~10% on imports.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.started",
            host=cfg.host,
            port=self.port,
            db=self.db.location,
            version=server_version(),
            replica=self.replica.id,
            replica_name=replica_name,
            implemented=len(implemented_methods(self.servicers)),
        )
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Graceful: health NOT_SERVING, in-flight calls finish, streams end, the database closes."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.ctx.stopping.set()
        if self._grpc is not None:
            self._grpc.stop(self.config.shutdown_grace_s if grace is None else grace).wait()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self.scheduler.stop()
        self.runner.close()
        self.predlog.close()
        self.ingest.close()
        self.replica.stop()
        self.db.close()
        log.info("server.stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def handle_signals(self) -> threading.Event:
        """SIGTERM / SIGINT set the returned event (install before start: no window without them). The
        handler does no I/O: a second signal arriving while the first one's handler wrote a log line
        would re-enter the logger's lock on the same thread and hang the shutdown (two SIGTERMs, from
        a supervisor and from `timeout`, did). serve_forever logs the signals once it wakes."""
        done = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            self._signals.append(signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return done

    def serve_forever(self, done: threading.Event | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        done = done or self.handle_signals()
        # Short waits: Python runs a signal's handler only on the main thread, between bytecodes. When
        # the kernel hands SIGTERM to another of our threads, a main thread blocked in one long wait
        # would not run the handler until that wait ended (the crash harness saw a clean stop hang so).
        while not done.wait(0.5):
            pass
        log.info("server.signal", signal=",".join(self._signals) or "none")
        self.stop()
