"""Prometheus metrics, served over HTTP when [server] metrics_port is set (off by default)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store.predictions import SegmentTotals

# Loopback RPCs take a fraction of a millisecond; training takes seconds to minutes.
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
TRAINING_BUCKETS = (0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class _Callbacks(Collector):
    """Gauges and counters read when scraped: open alerts by severity, the prediction log's queue and what
    became of its rows, the log segments on disk."""

    def __init__(
        self,
        open_alerts: Callable[[], dict[str, int]],
        queue_rows: Callable[[], int],
        log_rows: Callable[[], dict[str, int]],
        segments: Callable[[], SegmentTotals],
    ) -> None:
        self._open_alerts = open_alerts
        self._queue_rows = queue_rows
        self._log_rows = log_rows
        self._segments = segments

    def collect(self) -> Iterator[Any]:
        alerts = GaugeMetricFamily("sahayak_open_alerts", "Alerts not resolved, by severity", labels=["severity"])
        for severity, count in sorted(self._open_alerts().items()):
            alerts.add_metric([severity], count)
        yield alerts
        yield GaugeMetricFamily(
            "sahayak_prediction_log_queue_rows",
            "Predictions waiting to be written to the log",
            value=self._queue_rows(),
        )
        rows = CounterMetricFamily(
            "sahayak_prediction_log_rows",
            "Predictions the log wrote, or dropped (a full queue, a full disk, a locked database)",
            labels=["result"],
        )
        for result, count in sorted(self._log_rows().items()):
            rows.add_metric([result], count)
        yield rows
        segments = self._segments()
        yield GaugeMetricFamily(
            "sahayak_log_segments", "Log segment files (logged batches' features)", value=segments.files
        )
        yield GaugeMetricFamily(
            "sahayak_log_segment_bytes", "Logged batches' features in log segments", value=segments.bytes
        )


class _ReplicaLabelled(CollectorRegistry):
    """The registry as scraped: every sample labelled with the replica that serves it, so that series from
    the replicas of one deployment (``--workers``, or several machines) never collide."""

    def __init__(self, registry: CollectorRegistry, replica: Callable[[], str]) -> None:
        super().__init__()
        self._registry = registry
        self._replica = replica

    def collect(self) -> Iterator[Any]:
        name = self._replica()
        for family in self._registry.collect():
            family.samples = [s._replace(labels={**s.labels, "replica": name}) for s in family.samples]
            yield family


class Metrics:
    def __init__(self) -> None:
        self.replica = ""  # this process's replica name, known once its port is
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sahayak_rpc_requests", "RPCs handled, by method and status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "sahayak_rpc_request_duration_seconds",
            "Time spent handling an RPC",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "sahayak_predictions", "Predictions served, by model and version", ["model", "version"], registry=r
        )
        self.training_runs = Counter(
            "sahayak_training_runs", "Training runs ended, by model and result", ["model", "result"], registry=r
        )
        self.training_duration = Histogram(
            "sahayak_training_run_duration_seconds",
            "Duration of training runs",
            ["model"],
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.drift_psi = Gauge(
            "sahayak_feature_drift_psi",
            "Latest PSI of each feature against the champion",
            ["model", "feature"],
            registry=r,
        )

    def add_callbacks(
        self,
        open_alerts: Callable[[], dict[str, int]],
        queue_rows: Callable[[], int],
        log_rows: Callable[[], dict[str, int]],
        segments: Callable[[], SegmentTotals],
    ) -> None:
        self.registry.register(_Callbacks(open_alerts, queue_rows, log_rows, segments))

    def serve(self, host: str, port: int) -> Any:
        """Start the HTTP endpoint (/metrics); returns the server."""
        server, _thread = start_http_server(
            port, addr=host, registry=_ReplicaLabelled(self.registry, lambda: self.replica)
        )
        return server
